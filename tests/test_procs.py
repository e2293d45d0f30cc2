"""Process trees: exec chains followed under one pid, children traced from their first instruction, several
processes in one capture directory. Real gdb, real processes."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pytest
from conftest import FixturePaths, Spawn, run_sysbreak, sysbreak_argv

from sysbreak.capture import read_events
from sysbreak.capture.schema import StackRecord
from sysbreak.driver.restore import int3_addresses, read_entries

pytestmark = pytest.mark.gdb


def records(log: Path) -> list[dict[str, Any]]:
    """The log's records; stack records with the frames the format's reader gives (raw stacks unwound)."""
    frames = {r.id: [asdict(f) for f in r.frames] for r in read_events(log) if isinstance(r, StackRecord)}
    recs = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    for r in recs:
        if r.get("type") == "stack" and r.get("id") in frames:
            r["frames"] = frames[r["id"]]
    return recs


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


@pytest.mark.parametrize("mode", ["--all-stop", "--non-stop"])
def test_vfork_and_posix_spawn_children_are_traced_before_their_exec(tmp_path: Path, mode: str) -> None:
    """Each child from its first instruction, vfork ones too: a vfork child's raw syscall(SYS_mmap) calls before
    its exec, a posix_spawn child's file action (openat) before its exec, a vfork child that _exits without one.
    They share the parent's memory until then, so their calls are the parent's mappings: logged in its log under
    its pid, with the child's pid as tid."""
    cap = tmp_path / "cap"
    argv = ["run", "-f", mode, "-s", "mmap", "-s", "openat", "-o", cap, "--", PROCTREE, "vforkmap"]
    res = run_sysbreak(*argv, timeout=120)
    assert res.returncode == 0, res.stderr  # the children's exit statuses were as expected (0, 0, 3)
    procs = processes(cap)
    root, kids = procs[0], sorted(procs[1:], key=lambda p: p["pid"])
    assert [k["how"] for k in kids] == ["vfork", "vfork", "vfork"]
    assert [k["end"] for k in kids] == ["exited with status 0", "exited with status 0", "exited with status 3"]
    vforked, spawned, quitter = (k["pid"] for k in kids)
    recs = records(cap / "events.jsonl")
    calls = [r for r in recs if r["type"] == "syscall"]
    assert all(r["pid"] == root["pid"] for r in calls)
    before_exec = [r for r in calls if r["tid"] == vforked]
    assert [r["name"] for r in before_exec] == ["mmap"] * 3
    assert all("leak_here" in stack_functions(recs, r) for r in before_exec)
    assert [r["name"] for r in calls if r["tid"] == spawned] == ["openat"]  # posix_spawn's file action
    assert [r["name"] for r in calls if r["tid"] == quitter] == ["mmap"]
    for k in kids[:2]:  # and after the exec, in their own GDB: the new image's calls
        assert k["argv"][-1] == "leaf"
        assert len(calls_in(cap, k, "leak_here")) == 2, k
    assert "Cannot insert breakpoint" not in (cap / "gdb-mi.log").read_text()


def test_spare_gdbs_are_ready_for_a_burst_of_children(tmp_path: Path) -> None:
    """`--spare-gdbs 4`: `run` starts the program once 4 GDBs are started and loaded, so each of the 4 children
    forked (or vforked + exec'd) at once gets one: held for its attach only, never for a GDB's start."""
    cap = tmp_path / "cap"
    res = run_sysbreak("run", "-f", "--spare-gdbs", "4", "-s", "mmap", "-o", cap, "--", PROCTREE, "kinds", timeout=120)
    assert res.returncode == 0, res.stderr
    kids = processes(cap)[1:]
    assert len(kids) == 4
    assert all(k.get("gdb_spare") for k in kids), [(k["pid"], k["how"], k.get("gdb_spare")) for k in kids]
    for k in kids:
        assert len(calls_in(cap, k, "leak_here")) == 2, k
    assert not list((cap / "procs").glob(".spare-*"))  # the ones left were quit and their directories removed


def test_a_vfork_child_that_execs_unseen_by_the_exec_guard_is_still_handed_over(tmp_path: Path) -> None:
    """The child execs through a syscall instruction in a page made at run time (no scan covers it): GDB 13 then
    puts the parent's breakpoints into the new image and stops both processes without a record; the watchdog
    hands the child over at its exec all the same (the detach takes GDB's bytes out), and says so."""
    cap = tmp_path / "cap"
    res = run_sysbreak("run", "-f", "-s", "mmap", "-o", cap, "--", PROCTREE, "vforkjit", timeout=120)
    assert res.returncode == 0, res.stderr  # the child ("leaf") exited 0, the parent ran on through its code
    assert "CHILD STATUS 0" in res.stdout and "PARENT DONE" in res.stdout
    procs = processes(cap)
    assert [p["how"] for p in procs] == ["root", "vfork"]
    assert procs[1]["end"] == "exited with status 0" and procs[1]["argv"][-1] == "leaf"
    assert len(calls_in(cap, procs[1], "leak_here")) == 2  # its new image traced by its own GDB
    assert "exec'd unseen by the exec guard" in res.stderr


@pytest.mark.parametrize("how", ["SIGINT", "SIGKILL"])
def test_a_capture_ended_while_a_vfork_child_is_held_leaves_both_running(tmp_path: Path, how: str) -> None:
    """Ctrl-C, or SIGKILL of sysbreak, while the parent's GDB holds a vfork child before its exec: the child is
    detached with the breakpoints out of the memory it shares with its parent, runs on to its exec, the parent
    waits for it and exits 0: no 0xCC left, nothing stopped."""
    cap = tmp_path / "cap"
    argv = [*sysbreak_argv(), "run", "-f", "--keep-running", "-s", "mmap", "-o", str(cap)]
    out = open(tmp_path / "out.txt", "w")  # noqa: SIM115 - the program keeps sysbreak's streams: a file
    proc = subprocess.Popen([*argv, "--", str(PROCTREE), "vforkslow"], stdout=out, stderr=subprocess.STDOUT)
    out.close()
    root = child = 0
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not child:  # the parent's GDB holds the vfork child
            with contextlib.suppress(OSError, ValueError, KeyError, IndexError):
                meta = json.loads((cap / "meta.json").read_text())
                root, gdb = meta["pid"], meta["gdb_pid"]
                kids = Path(f"/proc/{root}/task/{root}/children").read_text().split()
                if kids and f"TracerPid:\t{gdb}\n" in Path(f"/proc/{kids[0]}/status").read_text():
                    child = int(kids[0])
            time.sleep(0.05)
        assert child, (tmp_path / "out.txt").read_text()
        time.sleep(0.5)  # it maps a page every 100 ms, traced by its parent's GDB
        assert "following pid" not in (tmp_path / "out.txt").read_text()  # still held: before its exec
        entries = read_entries(cap / "restore.jsonl", root)
        proc.send_signal(getattr(signal, how))
        proc.wait(timeout=60)
        deadline = time.monotonic() + 30
        while "PARENT DONE" not in (tmp_path / "out.txt").read_text() and time.monotonic() < deadline:
            time.sleep(0.05)
        said = (tmp_path / "out.txt").read_text()
        assert "CHILD STATUS 0" in said, said  # the child ran on and exec'd "leaf", which exited 0
        assert "PARENT DONE" in said, said  # the parent ran on through the code its breakpoints were in
        with contextlib.suppress(OSError):  # the parent may be gone already (or a zombie): then it exited
            status = Path(f"/proc/{root}/status").read_text()
            if "State:\tZ" not in status:
                assert "TracerPid:\t0\n" in status and "State:\tT" not in status and "State:\tt" not in status
                assert int3_addresses(root, entries) == []
    finally:
        proc.kill()
        kill_all([p for p in (root, child) if p])


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


@pytest.mark.parametrize("method", ["spawn", "fork", "forkserver"])
def test_run_follow_children_multiprocessing_workers(tmp_path: Path, method: str) -> None:
    """vLLM-style: a multiprocessing parent with each start method; one worker leaks through raw syscall()
    (ctypes: a call through a pointer, hence --exhaustive), one through libucm (pymalloc arenas). `spawn`
    workers are vforked + exec'd by the parent, `fork` workers forked by it, `forkserver` workers forked by the
    fork server (itself spawned by the parent): each is caught from its first instruction."""
    cap = tmp_path / "cap"
    argv = ["/usr/bin/python3.11", MP_WORKERS, method, "4"]
    res = run_sysbreak("run", "-f", "-s", "mmap", "--exhaustive", "-i", "0", "-o", cap, "--", *argv, timeout=240)
    assert res.returncode == 0, res.stderr
    assert "PARENT DONE 0 0" in res.stdout
    said = dict(line.split()[1:3] for line in res.stdout.splitlines() if line.startswith("WORKER "))
    assert set(said) == {"raw", "ucm"}, res.stdout
    procs = processes(cap)
    by_pid = {p["pid"]: p for p in procs}
    root = procs[0]
    workers = {name: by_pid[int(pid)] for name, pid in said.items()}  # both workers are in the capture
    for p in workers.values():
        assert p["end"] == "exited with status 0", p
        if method == "spawn":
            assert p["ppid"] == root["pid"] and p["how"] == "vfork"
            assert any("spawn_main" in a for a in p["argv"])
        elif method == "fork":
            assert p["ppid"] == root["pid"] and p["how"] == "fork"
        else:
            server = by_pid[p["ppid"]]  # forked by the fork server, which the parent started
            assert p["how"] == "fork" and server["ppid"] == root["pid"] and server["how"] == "vfork"
            assert any("forkserver" in a for a in server["argv"])
    counts: dict[str, tuple[int, int]] = {}
    for name, p in workers.items():
        recs = records(cap / p["dir"] / "events.jsonl")
        stacks = {r["id"]: r for r in recs if r["type"] == "stack"}
        raw = ucm = 0
        for e in (r for r in recs if r["type"] == "syscall"):
            assert e["pid"] == p["pid"]
            mods = [f.get("module") or "" for f in stacks[e["stack"]]["frames"]]
            if e["args"][1] == 65536 and any("libffi" in m for m in mods):
                raw += 1
            if any("libucm" in m for m in mods):
                ucm += 1
        counts[name] = (raw, ucm)
    assert counts["raw"][0] == 4  # leak_raw's four 64 KiB regions, in the raw worker, every one
    assert counts["ucm"][1] >= 1  # the ucm worker's arenas, through libucm


# --------------------------------------------------------------------------------------------- attach several
def assert_untouched(cap: Path, proc: dict[str, Any]) -> None:
    """The process runs on: not traced, not stopped, and not one breakpoint byte left in its code."""
    pid = proc["pid"]
    status = {
        k: v.strip() for k, _, v in (ln.partition(":") for ln in Path(f"/proc/{pid}/status").read_text().splitlines())
    }
    assert status["TracerPid"] == "0", proc
    exit_code = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[-1]
    assert not status["State"].startswith(("T", "t", "Z")), (proc, status["State"], f"exit code {exit_code}")
    entries = read_entries(cap / proc["dir"] / "restore.jsonl", pid)
    assert entries, f"no breakpoint was ever placed in {pid}"
    assert int3_addresses(pid, entries) == []


def kill_all(pids: list[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def test_attach_several_processes(tmp_path: Path, fixture_paths: FixturePaths, spawn: Spawn) -> None:
    servers = [spawn([fixture_paths.leaky_server, "--ticks", "400", "--interval-ms", "20"]) for _ in range(2)]
    for s in servers:
        s.wait_lines(1)
    cap = tmp_path / "cap"
    res = run_sysbreak("attach", servers[0].pid, "-p", servers[1].pid, "-d", "2", "-s", "mmap", "-o", cap)
    assert res.returncode == 0, res.stderr
    procs = processes(cap)
    assert [p["pid"] for p in procs] == [servers[0].pid, servers[1].pid]
    assert [p["how"] for p in procs] == ["root", "attach"]
    for p in procs:
        assert p["end"] == "detached, running on"
        assert calls_in(cap, p, "register_kv_block"), p  # each server's leak, in its own log
        assert_untouched(cap, p)
    for s in servers:
        s.assert_alive_and_beating()


def test_attach_children_follows_a_worker_started_after_the_attach(tmp_path: Path, spawn: Spawn) -> None:
    root = spawn([PROCTREE, "late"])
    root.wait_lines(2, prefix="PID")  # the root and its early child run
    cap = tmp_path / "cap"
    argv = [*sysbreak_argv(), "attach", "-p", str(root.pid), "--children", "-s", "mmap", "-o", str(cap)]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # both are traced: now the root starts its late worker
            with contextlib.suppress(OSError, ValueError, KeyError):
                procs = processes(cap)
                if len(procs) == 2 and all((cap / p["dir"] / "events.jsonl").exists() for p in procs):
                    break
            time.sleep(0.05)
        os.kill(root.pid, signal.SIGUSR1)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert root.popen.wait(timeout=10) == 0
    roles = {p["how"]: p for p in processes(cap)}
    assert sorted(roles) == ["attach", "fork", "root"]  # root, the early child found running, the late one forked
    assert roles["fork"]["ppid"] == root.pid and roles["attach"]["ppid"] == root.pid
    assert len(calls_in(cap, roles["fork"], "leak_here")) == 2  # the late worker, from its first instruction
    assert calls_in(cap, roles["attach"], "leak_here")
    assert roles["root"]["end"] == roles["fork"]["end"] == "exited with status 0"
    assert roles["attach"]["end"] == "was killed by SIGTERM"


def test_attach_rejects_a_bad_pid_among_several(tmp_path: Path, spawn: Spawn, fixture_paths: FixturePaths) -> None:
    server = spawn([fixture_paths.leaky_server, "--ticks", "400", "--interval-ms", "20"])
    server.wait_lines(1)
    res = run_sysbreak("attach", "-p", f"{server.pid},4194000", "-o", tmp_path / "cap")
    assert res.returncode != 0
    assert "Traceback" not in res.stderr
    assert len([ln for ln in res.stderr.splitlines() if "error" in ln]) == 1
    assert "4194000" in res.stderr
    server.assert_alive_and_beating()


# --------------------------------------------------------------------------------------------- faults, 3 processes
def _crash_tree(tmp_path: Path, *extra: str) -> tuple[subprocess.Popen[str], Path]:
    """`run -f --keep-running -- proctree crash` in the background: root, a child that dies of SIGSEGV, a steady one."""
    cap = tmp_path / "cap"
    argv = [*sysbreak_argv(), "run", "-f", "--keep-running", "-s", "mmap", "-i", "0.5", "-o", str(cap), *extra]
    # the survivors keep sysbreak's standard streams: files, not pipes, so that waiting for sysbreak never hangs
    out = open(tmp_path / "out.txt", "w")  # noqa: SIM115
    proc = subprocess.Popen([*argv, "--", str(PROCTREE), "crash"], stdout=out, stderr=subprocess.STDOUT, text=True)
    out.close()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # the three are traced and the crasher is gone
        try:
            procs = processes(cap)
        except (OSError, ValueError, KeyError):
            procs = []
        ended = [p for p in procs if "end" in p]
        if len(procs) == 3 and ended and all((cap / p["dir"] / "events.jsonl").exists() for p in procs):
            return proc, cap
        time.sleep(0.1)
    proc.kill()
    pytest.fail(f"the tree was not traced within 60 s: {(tmp_path / 'out.txt').read_text()}")


def _survivors(cap: Path) -> list[dict[str, Any]]:
    procs = processes(cap)
    crasher = [p for p in procs if p.get("end") == "was killed by SIGSEGV"]
    assert len(crasher) == 1, [(p["pid"], p["how"], p.get("end")) for p in procs]  # the crasher is told apart
    return [p for p in procs if p is not crasher[0]]


@pytest.mark.parametrize("how", ["duration", "max-events", "SIGINT", "SIGTERM"])
def test_process_tree_ends_cleanly(tmp_path: Path, fixture_paths: FixturePaths, how: str) -> None:
    extra = {"duration": ["-d", "4"], "max-events": ["-n", "60"]}.get(how, [])
    proc, cap = _crash_tree(tmp_path, *extra)
    pids: list[int] = []
    try:
        pids = [p["pid"] for p in processes(cap)]
        if how.startswith("SIG"):
            time.sleep(0.5)
            proc.send_signal(getattr(signal, how))
        proc.wait(timeout=60)
        meta = json.loads((cap / "meta.json").read_text())
        err = (tmp_path / "out.txt").read_text()
        assert meta["end_reason"] == {"SIGINT": "interrupted", "SIGTERM": "terminated"}.get(how, how), err
        survivors = _survivors(cap)
        assert len(survivors) == 2
        for p in survivors:
            assert p["end"] == "detached, running on"
            assert_untouched(cap, p)
        if how == "max-events":  # one budget for the whole tree, the calls in flight counted apart
            assert meta["events_total"] == sum(p.get("events", 0) for p in processes(cap))
            assert meta["events_total"] == 60 + meta["max_events_overshoot"]
            assert 0 <= meta["max_events_overshoot"] <= len(processes(cap)) - 1
    finally:
        proc.kill()
        kill_all(pids)


def test_max_events_is_one_budget_for_the_whole_tree(tmp_path: Path, fixture_paths: FixturePaths) -> None:
    """`run -f -n 60` over three children mapping every 0.5 ms: the capture ends when the TREE has caught 60 calls
    (each process used to stop at 60 of its own: 68-85 in all, measured), the overshoot is the calls that other
    processes were stopped at when the 60th came (at most one each: a GDB that numbers a call past the budget
    disarms at once), and every process runs on, untraced, with its original bytes."""
    cap = tmp_path / "cap"
    argv = [*sysbreak_argv(), "run", "-f", "--keep-running", "-n", "60", "-s", "mmap", "-i", "0", "-o", str(cap)]
    with open(tmp_path / "out.txt", "w") as out:  # the survivors keep sysbreak's streams: a file, never a pipe
        proc = subprocess.run([*argv, "--", str(PROCTREE), "storm", "3"], stdout=out, stderr=subprocess.STDOUT)
    procs = processes(cap)
    try:
        said = (tmp_path / "out.txt").read_text()
        assert proc.returncode == 0, said
        meta = json.loads((cap / "meta.json").read_text())
        assert meta["end_reason"] == "max-events", said
        assert meta["max_events"] == 60
        # (a child forked as the capture ended is let go before its GDB armed anything: no log of its own)
        traced = [p for p in procs if (cap / p["dir"] / "events.jsonl").exists()]
        logged = {p["pid"]: len([r for r in records(cap / p["dir"] / "events.jsonl") if r["type"] == "syscall"])
                  for p in traced}  # fmt: skip
        assert {p["pid"]: p["events"] for p in traced} == logged  # each process's count is its log's
        assert meta["events_total"] == sum(logged.values())
        over = meta["max_events_overshoot"]
        assert meta["events_total"] == 60 + over
        assert 0 <= over <= len(procs) - 1
        assert (cap / "budget").stat().st_size == meta["events_total"]  # every call numbered once in the tree
        assert "--max-events 60 calls were caught" in said
        if over:
            assert f"{over} more already in flight were kept" in said
        assert len(traced) >= 2 and sum(1 for n in logged.values() if n) >= 2  # the budget was shared
        assert 0 <= over <= len(traced) - 1
        for p in procs:
            if p in traced or p["how"] == "root":
                assert p["end"] == "detached, running on"
                assert_untouched(cap, p)
            else:  # forked while the capture was ending: let go before its GDB armed, never traced
                status = Path(f"/proc/{p['pid']}/status").read_text()
                assert "TracerPid:\t0\n" in status and "State:\tT" not in status and "State:\tt" not in status
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(procs[0]["pid"], signal.SIGKILL)  # its own process group: a child forked after the end too
        kill_all([p["pid"] for p in procs])


def test_process_tree_survives_sigkill_of_sysbreak(tmp_path: Path, fixture_paths: FixturePaths) -> None:
    proc, cap = _crash_tree(tmp_path)
    pids = [p["pid"] for p in processes(cap)]
    try:
        proc.kill()  # SIGKILL: every GDB reads end of file and detaches its process
        proc.wait()
        time.sleep(3)
        for p in _survivors(cap):
            assert_untouched(cap, p)
    finally:
        kill_all(pids)


def test_process_tree_survives_sigkill_of_a_childs_gdb(tmp_path: Path, fixture_paths: FixturePaths) -> None:
    proc, cap = _crash_tree(tmp_path, "-d", "4")
    pids = [p["pid"] for p in processes(cap)]
    try:
        steady = [p for p in processes(cap) if p["how"] == "fork" and "end" not in p][0]
        gdb_pid = json.loads((cap / steady["dir"] / "meta.json").read_text())["gdb_pid"]
        # Killed while the process sleeps between two calls (it maps a page every 200 ms): a GDB killed while a
        # thread sits in a breakpoint stop lets the kernel deliver that SIGTRAP, which no one outside GDB can
        # save (README "Limits"); the first stops after the attach are the slow ones, so wait for a few calls.
        deadline = time.monotonic() + 30
        while len(calls_in(cap, steady, "leak_here")) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        stat = Path(f"/proc/{steady['pid']}/stat")
        while stat.read_text().rpartition(")")[2].split()[0] != "S" and time.monotonic() < deadline:
            time.sleep(0.001)
        os.kill(gdb_pid, signal.SIGKILL)
        proc.wait(timeout=60)
        procs = {p["pid"]: p for p in processes(cap)}
        assert procs[steady["pid"]]["end"].startswith("its GDB died")
        for p in _survivors(cap):
            assert_untouched(cap, p)  # the bytes GDB left were put back; the others were detached cleanly
    finally:
        proc.kill()
        kill_all(pids)


def test_children_forked_while_breakpoints_are_in_never_see_them(tmp_path: Path, fixture_paths: FixturePaths) -> None:
    """Without -f, GDB detaches each forked child: it must take the breakpoint bytes out of the child's copy of the
    code first (the child has no tracer to handle an int3)."""
    cap = tmp_path / "cap"
    argv = [*sysbreak_argv(), "run", "-s", "mmap", "-s", "munmap", "-d", "3", "-o", str(cap)]
    proc = subprocess.Popen([*argv, "--", str(PROCTREE), "busy"], stdout=subprocess.PIPE, text=True)
    checked = 0
    try:
        assert proc.stdout is not None
        root = None
        for line in proc.stdout:
            words = line.split()
            if words[:2] == ["PID", "root"]:
                root = int(words[2])
            elif words[:2] == ["PID", "forked"] and root is not None and (cap / "restore.jsonl").exists():
                entries = read_entries(cap / "restore.jsonl", root)
                with contextlib.suppress(OSError):  # it may be gone already
                    assert int3_addresses(int(words[2]), entries) == []
                    checked += 1
        proc.wait(timeout=30)
    finally:
        proc.kill()
    assert checked >= 5
    assert proc.returncode == 0


# --------------------------------------------------------------------------------------------- reports
@pytest.fixture(scope="module")
def chain_capture(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`run -f -- proctree chain 2`: three processes, each mapping through leak_here()."""
    subprocess.run(["make", "-s", "-C", str(PROCTREE.parent.parent)], check=True)
    cap = tmp_path_factory.mktemp("chain") / "cap"
    res = run_sysbreak("run", "-f", "-s", "mmap", "-o", cap, "--", PROCTREE, "chain", "2", timeout=120)
    assert res.returncode == 0, res.stderr
    return cap


def test_json_report_lists_the_processes_and_the_pids_of_every_stack(chain_capture: Path) -> None:
    res = run_sysbreak("report", chain_capture, "-f", "json")
    assert res.returncode == 0, res.stderr
    doc = json.loads(res.stdout)
    procs = processes(chain_capture)
    assert [(p["pid"], p["ppid"], p["argv"]) for p in doc["processes"]] == [
        (p["pid"], p["ppid"], p["argv"]) for p in procs
    ]
    pids = {p["pid"] for p in procs}
    assert all(s["pids"] and set(s["pids"]) <= pids for s in doc["stacks"])
    leaks = [s for s in doc["stacks"] if s["frames"] and s["frames"][1]["function"] == "leak_here"]
    assert {p for s in leaks for p in s["pids"]} == pids  # every process's leak is in the merged report
    assert sum(s["by_syscall"].get("mmap", 0) for s in leaks) == 6
    assert doc["totals"]["events"] == sum(p["events"] for p in procs)
    assert {r["pid"] for r in doc["regions"]} == pids


def test_text_and_html_reports_show_the_process_of_each_stack(chain_capture: Path, tmp_path: Path) -> None:
    pids = [str(p["pid"]) for p in processes(chain_capture)]
    res = run_sysbreak("report", chain_capture, "--sort", "events", env={**os.environ, "COLUMNS": "200"})
    assert res.returncode == 0, res.stderr
    assert "Processes" in res.stdout and all(p in res.stdout for p in pids)
    assert "pids" in res.stdout
    html = tmp_path / "r.html"
    res = run_sysbreak("report", chain_capture, "-f", "html", "-o", html)
    assert res.returncode == 0, res.stderr
    text = html.read_text()
    assert "Processes" in text and "&middot; pid " in text and all(p in text for p in pids)


def test_report_pid_filters_one_process(chain_capture: Path) -> None:
    procs = processes(chain_capture)
    child = procs[1]
    res = run_sysbreak("report", chain_capture, "-f", "json", "--pid", child["pid"])
    assert res.returncode == 0, res.stderr
    doc = json.loads(res.stdout)
    assert [p["pid"] for p in doc["processes"]] == [child["pid"]]
    assert all(s["pids"] == [child["pid"]] for s in doc["stacks"])
    assert doc["totals"]["events"] == child["events"]
    bad = run_sysbreak("report", chain_capture, "--pid", "1")
    assert bad.returncode != 0 and "Traceback" not in bad.stderr
    assert "--pid 1: no such process" in bad.stderr


def test_a_one_process_capture_of_format_1_still_reads(tmp_path: Path) -> None:
    old = Path(__file__).resolve().parent.parent / "fixtures" / "procfs" / "capture-ucm_leak"
    assert json.loads((old / "meta.json").read_text()).get("format", "sysbreak-capture/1") == "sysbreak-capture/1"
    res = run_sysbreak("report", old, "-f", "json")
    assert res.returncode == 0, res.stderr
    doc = json.loads(res.stdout)
    assert [p["pid"] for p in doc["processes"]] == [doc["pid"]]
    assert all(s["pids"] == [doc["pid"]] for s in doc["stacks"])


def test_an_exec_ends_every_mapping_of_the_old_image(tmp_path: Path) -> None:
    """The ledger forgets the process's mappings at an exec record: the old image's are not live any more."""
    from sysbreak.analysis import analyze
    from sysbreak.capture import EventLogWriter

    log = tmp_path / "events.jsonl"
    w = EventLogWriter(log)
    w.header(arch="x86_64", pid=7, exe="/bin/env", syscalls=["mmap"], mode="callsite", t0=1.0)
    frame = {"pc": 4096, "module": "/bin/x", "offset": 0, "function": "f", "file": None, "line": None}
    before = w.stack_id(("a",), [{**frame, "function": "in_env"}], [])
    after = w.stack_id(("b",), [{**frame, "function": "in_prog"}], [])
    site = {"pc": 4096, "module": "/bin/x", "offset": 0, "kind": "syscall"}
    mmap = [0, 1 << 20, 3, 0x22, (1 << 64) - 1, 0]
    w.event(t=1.1, pid=7, tid=7, nr=9, name="mmap", args=mmap, ret=0x7F0000000000, stack=before, site=site)
    w.exec(t=1.2, pid=7, exe="/bin/prog", argv=["/bin/prog"], removed=3)
    w.event(t=1.3, pid=7, tid=7, nr=9, name="mmap", args=mmap, ret=0x7F0000000000, stack=after, site=site)
    w.end("detach", 1.4)
    w.close()
    live = {s.frames[0].function: s.live_bytes for s in analyze(str(log)).stacks}
    assert live == {"in_env": 0, "in_prog": 1 << 20}  # the same address, mapped again in the new image


def test_collapsed_report_starts_each_line_with_its_process(chain_capture: Path) -> None:
    procs = processes(chain_capture)
    res = run_sysbreak("report", chain_capture, "-f", "collapsed")
    assert res.returncode == 0, res.stderr
    leaks = sorted(line for line in res.stdout.splitlines() if ";main;leak_here;" in line)
    assert leaks == sorted(f"proctree-{p['pid']};main;leak_here;syscall 8192" for p in procs)  # 2 pages each
    merged = run_sysbreak("report", chain_capture, "-f", "collapsed", "--no-process-frames")
    assert "main;leak_here;syscall 24576" in merged.stdout.splitlines()
    bad = run_sysbreak("report", chain_capture, "--process-frames")
    assert bad.returncode != 0 and "Traceback" not in bad.stderr and "collapsed only" in bad.stderr


def test_a_saved_json_report_of_a_tree_reads_back_whole(chain_capture: Path, tmp_path: Path) -> None:
    """`report saved.json` and `diff a.json b.json` keep what the JSON carries: each stack's by_pid, process_rss."""
    saved = tmp_path / "tree.json"
    first = run_sysbreak("report", chain_capture, "-f", "json")
    assert first.returncode == 0, first.stderr
    saved.write_text(first.stdout)
    doc = json.loads(first.stdout)
    assert len(doc["process_rss"]) == 3 and any(len(s["by_pid"]) == 3 for s in doc["stacks"])
    again = run_sysbreak("report", saved, "-f", "json")
    assert again.returncode == 0, again.stderr
    assert again.stdout == first.stdout  # render, read back, render: the same document
    for args in (["-f", "collapsed"], ["-f", "collapsed", "--weight", "events"]):
        a, b = run_sysbreak("report", chain_capture, *args), run_sysbreak("report", saved, *args)
        assert a.returncode == b.returncode == 0, a.stderr + b.stderr
        assert b.stdout == a.stdout  # each process's own numbers, as from the capture
    pid = doc["processes"][1]["pid"]
    bad = run_sysbreak("report", saved, "--pid", pid)  # the saved report is the merged tree: said, not ignored
    assert bad.returncode != 0 and "Traceback" not in bad.stderr and "--pid picks a process" in bad.stderr
    from_caps = run_sysbreak("diff", chain_capture, chain_capture, "-f", "json")
    from_json = run_sysbreak("diff", saved, saved, "-f", "json")
    assert from_json.returncode == 0, from_json.stderr
    assert json.loads(from_json.stdout)["stacks"] == json.loads(from_caps.stdout)["stacks"]


def test_diff_of_two_trees_matches_stacks_and_names_the_processes(chain_capture: Path) -> None:
    res = run_sysbreak("diff", chain_capture, chain_capture, "-f", "json")
    assert res.returncode == 0, res.stderr
    doc = json.loads(res.stdout)
    pids = [p["pid"] for p in processes(chain_capture)]
    assert [p["pid"] for p in doc["a"]["processes"]] == pids
    leak = [s for s in doc["stacks"] if any(f["function"] == "leak_here" for f in s["frames"])]
    assert len(leak) == 1 and leak[0]["status"] == "both"  # one stack of three processes, matched
    assert leak[0]["a"]["pids"] == leak[0]["b"]["pids"] == sorted(pids)
    text = run_sysbreak("diff", chain_capture, chain_capture, env={**os.environ, "COLUMNS": "250"})
    assert text.returncode == 0, text.stderr
    assert "processes A" in text.stdout and f"proctree-{pids[0]}" in text.stdout


def test_the_merged_time_line_adds_up_every_process(chain_capture: Path, tmp_path: Path) -> None:
    procs = processes(chain_capture)
    merged = json.loads(run_sysbreak("report", chain_capture, "-f", "json").stdout)
    last_rss = 0
    for p in procs:  # each process's own report: its RSS at its last snapshot
        own = json.loads(run_sysbreak("report", chain_capture, "-f", "json", "--pid", p["pid"]).stdout)
        rss = [s["rss_bytes"] for s in own["timeline"] if s["rss_bytes"] is not None]
        assert rss, p
        last_rss += rss[-1]
    tree = [s["rss_bytes"] for s in merged["timeline"] if s["rss_bytes"] is not None]
    assert tree[-1] == last_rss  # the tree's RSS at the end: every process's, added up
    html = tmp_path / "r.html"
    assert run_sysbreak("report", chain_capture, "-f", "html", "-o", html).returncode == 0
    text = html.read_text()
    assert f"RSS of the tree: its {len(procs)} processes added up" in text
    assert all(f"proctree-{p['pid']}" in text for p in procs)
