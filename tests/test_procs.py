"""Process trees: exec chains followed under one pid, children traced from their first instruction, several
processes in one capture directory. Real gdb, real processes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from conftest import FixturePaths, run_sysbreak

pytestmark = pytest.mark.gdb


def records(log: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in log.read_text().splitlines() if line.strip()]


def stack_functions(recs: list[dict[str, Any]], event: dict[str, Any]) -> list[str]:
    stacks = {r["id"]: r for r in recs if r["type"] == "stack"}
    return [f.get("function") or "" for f in stacks[event["stack"]]["frames"]]


# --------------------------------------------------------------------------------------------- exec
def test_run_follows_an_exec_through_env(tmp_path: Path) -> None:
    """`env X=1 /bin/echo hello` used to leave echo frozen in execve (GDB re-inserted env's breakpoints)."""
    out = tmp_path / "cap"
    res = run_sysbreak("run", "-o", out, "--", "env", "X=1", "/bin/echo", "hello", timeout=60)
    assert res.returncode == 0, res.stderr
    assert res.stdout.splitlines()[0] == "hello"
    recs = records(out / "events.jsonl")
    execs = [r for r in recs if r["type"] == "exec"]
    assert [e["exe"] for e in execs] == ["/usr/bin/echo"]
    assert execs[0]["argv"] == ["/bin/echo", "hello"]
    after = recs[recs.index(execs[0]) + 1 :]
    loaded = [r for r in after if r["type"] == "module"]
    assert any(r["path"].endswith("/echo") for r in loaded)  # the new image was scanned and armed
    assert any(r["type"] == "syscall" and r["name"] == "mmap" for r in after)  # ... and its calls caught
    assert all(r["pid"] == execs[0]["pid"] for r in recs if r["type"] == "syscall")
    assert "Cannot insert breakpoint" not in (out / "gdb.log").read_text()


def test_run_follows_an_exec_chain_through_sh_and_env(tmp_path: Path, fixture_paths: FixturePaths) -> None:
    out = tmp_path / "cap"
    res = run_sysbreak("run", "-o", out, "--", "sh", "-c", f"exec env X=1 {fixture_paths.ucm_leak} 3", timeout=60)
    assert res.returncode == 0, res.stderr
    recs = records(out / "events.jsonl")
    assert [Path(r["exe"]).name for r in recs if r["type"] == "exec"] == ["env", "ucm_leak"]
    leaks = [r for r in recs if r["type"] == "syscall" and "leak_region" in stack_functions(recs, r)]
    assert len(leaks) == 3  # every mapping of the last image, through libucm
    assert "Cannot insert breakpoint" not in (out / "gdb.log").read_text()
