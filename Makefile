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

bench: setup
	.venv/bin/python -m benchmarks
