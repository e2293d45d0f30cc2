# The two commands a newcomer needs (see README.md):
#   make demo   set everything up, then capture and report a bundled leaking program
#   make test   set everything up, then lint, type-check and run the whole test suite
.PHONY: setup demo test lint bench

setup:
	@./scripts/setup.sh

demo: setup
	.venv/bin/sysbreak demo

lint: setup
	.venv/bin/ruff check src tests benchmarks gdb_scripts
	.venv/bin/ruff format --check src tests benchmarks gdb_scripts
	.venv/bin/mypy

test: lint
	.venv/bin/python -m pytest -q

# The attach benchmark (benchmarks/attach.py) needs PyTorch; tests never do. torch==2.13.0 is the CPU wheel pip
# finds on this kind of machine (no download); elsewhere pip fetches it.
bench: setup
	@.venv/bin/python -c 'import torch' 2>/dev/null || .venv/bin/python -m pip install -q torch==2.13.0
	.venv/bin/python -m benchmarks
