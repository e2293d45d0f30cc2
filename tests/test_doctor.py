"""`sysbreak doctor`: one line per check, FAIL with the fix, non-zero exit when a capture cannot work."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import AS_NOBODY, run_sysbreak

pytestmark = pytest.mark.gdb


def lines(out: str) -> dict[str, str]:
    """check name -> its status word, from the doctor's output."""
    found = {}
    for line in out.splitlines():
        status, _, rest = line.partition(" ")
        if status in ("ok", "FAIL", "info", "skip"):
            found[rest.strip().split(":")[0]] = status
    return found


def test_doctor_passes_here() -> None:
    res = run_sysbreak("doctor")
    assert res.returncode == 0, res.stdout + res.stderr
    checks = lines(res.stdout)
    for name in ("gdb", "gdb Python", "gdb imports", "extension", "ptrace policy", "ptrace attach"):
        assert checks.get(name) == "ok", res.stdout
    assert checks.get("libucm") == "info"
    assert res.stdout.strip().splitlines()[-1] == "sysbreak doctor: everything a capture needs is here"


def test_doctor_missing_gdb() -> None:
    res = run_sysbreak("doctor", "--gdb", "/nonexistent")
    assert res.returncode == 1
    assert "FAIL  gdb: gdb was not found at '/nonexistent' -- fix: install GDB" in res.stdout
    assert "Traceback" not in res.stderr


def test_doctor_gdb_without_python(gdb_without_python: Path) -> None:
    res = run_sysbreak("doctor", "--gdb", gdb_without_python)
    assert res.returncode == 1
    assert f"FAIL  gdb Python: {gdb_without_python} was built without Python scripting -- fix:" in res.stdout


def test_doctor_reports_the_module_gdb_cannot_import(tmp_path: Path) -> None:
    # A GDB whose Python cannot import capstone: sysbreak's own path is given, but the venv's site-packages is hidden.
    fake = tmp_path / "gdb-nocapstone"
    fake.write_text('#!/bin/sh\nexec gdb -iex "python import sys; sys.modules[\'capstone\'] = None" "$@"\n')
    fake.chmod(0o755)
    res = run_sysbreak("doctor", "--gdb", fake)
    assert res.returncode == 1
    line = next(ln for ln in res.stdout.splitlines() if ln.startswith("FAIL  gdb imports"))
    assert "cannot import capstone" in line and "pip install capstone" in line


def test_doctor_checks_a_pid() -> None:
    res = run_sysbreak("doctor", "--pid", "999999999")
    assert res.returncode == 1
    assert "FAIL  pid 999999999: no process with pid 999999999 exists" in res.stdout


def test_doctor_as_another_user_about_a_root_process() -> None:
    res = run_sysbreak("doctor", "--pid", "1", prefix=AS_NOBODY)
    assert res.returncode == 1
    assert "belongs to user 'root'" in res.stdout
