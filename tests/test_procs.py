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


# --------------------------------------------------------------------------------------------- children
PROCTREE = Path(__file__).resolve().parent.parent / "fixtures" / "build" / "proctree"
MP_WORKERS = Path(__file__).resolve().parent.parent / "fixtures" / "py" / "mp_workers.py"


def processes(cap: Path) -> list[dict[str, Any]]:
    meta = json.loads((cap / "meta.json").read_text())
    procs: list[dict[str, Any]] = meta["processes"]
    return procs


def calls_in(cap: Path, proc: dict[str, Any], function: str) -> list[dict[str, Any]]:
    recs = records(cap / proc["dir"] / "events.jsonl")
    return [r for r in recs if r["type"] == "syscall" and function in stack_functions(recs, r)]


def test_run_follow_children_traces_a_fork_chain(tmp_path: Path, fixture_paths: FixturePaths) -> None:
    cap = tmp_path / "cap"
    res = run_sysbreak("run", "-f", "-s", "mmap", "-o", cap, "--", PROCTREE, "chain", "3", timeout=120)
    assert res.returncode == 0, res.stderr
    procs = processes(cap)
    assert len(procs) == 4
    assert [p["how"] for p in procs] == ["root", "fork", "fork", "fork"]
    for parent, child in zip(procs, procs[1:], strict=False):
        assert child["ppid"] == parent["pid"]  # each link is the child of the one before
    for p in procs:
        assert p["end"] == "exited with status 0"
        ours = calls_in(cap, p, "leak_here")
        assert len(ours) == 2, p  # every process's own calls, from its first instruction on
        assert {e["pid"] for e in ours} == {p["pid"]}
    assert "and 3 more processes" in res.stdout + res.stderr


def test_run_follow_children_fork_vfork_posix_spawn_clone(tmp_path: Path, fixture_paths: FixturePaths) -> None:
    cap = tmp_path / "cap"
    res = run_sysbreak("run", "-f", "-s", "mmap", "-o", cap, "--", PROCTREE, "kinds", timeout=120)
    assert res.returncode == 0, res.stderr  # every child exited 0: none met a breakpoint byte it could not handle
    procs = processes(cap)
    assert len(procs) == 5
    root = procs[0]
    kids = procs[1:]
    assert all(k["ppid"] == root["pid"] for k in kids)
    assert sorted(k["how"] for k in kids) == ["fork", "fork", "vfork", "vfork"]  # clone(SIGCHLD) is a fork
    assert sorted(k["argv"][-1] for k in kids) == ["kinds", "kinds", "leaf", "leaf"]  # vfork/spawn: after exec
    for p in procs:
        assert len(calls_in(cap, p, "leak_here")) == 2, p


def test_run_without_follow_children_leaves_children_alone(tmp_path: Path, fixture_paths: FixturePaths) -> None:
    cap = tmp_path / "cap"
    res = run_sysbreak("run", "-s", "mmap", "-o", cap, "--", PROCTREE, "chain", "1", timeout=60)
    assert res.returncode == 0, res.stderr
    assert not (cap / "procs").exists()
    assert len(calls_in(cap, {"dir": "."}, "leak_here")) == 2  # the root's own, none of the child's


def test_run_follow_children_through_a_shell(tmp_path: Path, fixture_paths: FixturePaths) -> None:
    """`sh -c './ucm_leak N'`: the shell forks (vfork) and the child execs the program."""
    cap = tmp_path / "cap"
    script = f"{fixture_paths.ucm_leak} 5 > /dev/null; true"
    res = run_sysbreak("run", "-f", "-s", "mmap", "-o", cap, "--", "sh", "-c", script, timeout=120)
    assert res.returncode == 0, res.stderr
    procs = processes(cap)
    leaker = [p for p in procs if p["argv"][:1] == [str(fixture_paths.ucm_leak)]]
    assert len(leaker) == 1
    assert len(calls_in(cap, leaker[0], "leak_region")) == 5  # through libucm and raw syscall()


def test_run_follow_children_multiprocessing_spawn_workers(tmp_path: Path) -> None:
    """vLLM-style: a multiprocessing `spawn` parent; one worker leaks through raw syscall() (ctypes: a call
    through a pointer, hence --exhaustive), one through libucm (pymalloc arenas)."""
    cap = tmp_path / "cap"
    argv = ["/usr/bin/python3.11", MP_WORKERS, "spawn", "4"]
    res = run_sysbreak("run", "-f", "-s", "mmap", "--exhaustive", "-i", "0", "-o", cap, "--", *argv, timeout=240)
    assert res.returncode == 0, res.stderr
    procs = processes(cap)
    workers = {p["pid"]: p for p in procs if any("spawn_main" in a for a in p["argv"])}
    assert len(workers) == 2
    assert all(p["ppid"] == procs[0]["pid"] and p["how"] == "vfork" for p in workers.values())
    raw = ucm = 0
    for p in workers.values():
        recs = records(cap / p["dir"] / "events.jsonl")
        stacks = {r["id"]: r for r in recs if r["type"] == "stack"}
        for e in (r for r in recs if r["type"] == "syscall"):
            mods = [f.get("module") or "" for f in stacks[e["stack"]]["frames"]]
            if e["args"][1] == 65536 and any("libffi" in m for m in mods):
                raw += 1
            if any("libucm" in m for m in mods):
                ucm += 1
    assert raw == 4  # leak_raw's four 64 KiB regions, in the raw worker
    assert ucm >= 1  # the ucm worker's arenas, through libucm
