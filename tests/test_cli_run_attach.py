"""`sysbreak run` and `sysbreak attach` end to end: real gdb, real fixture processes, the capture directory."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import FixturePaths, Spawn
from support.cli import AS_NOBODY, error_line, run_sysbreak, sysbreak_argv, wait_for_first_syscall

from sysbreak.capture import read_events
from sysbreak.capture.schema import StackRecord
from sysbreak.driver import process
from sysbreak.driver.restore import int3_addresses, read_entries

pytestmark = pytest.mark.gdb


def records(capture: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (capture / "events.jsonl").read_text().splitlines()]


def events(capture: Path) -> list[dict[str, Any]]:
    return [r for r in records(capture) if r["type"] == "syscall"]


def meta(capture: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((capture / "meta.json").read_text())
    return data


def snapshot_index(capture: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (capture / "snapshots" / "index.jsonl").read_text().splitlines()]


def stack_functions(capture: Path, event: dict[str, Any]) -> list[str]:
    """The functions of an event's stack as the format's reader gives them (raw stacks unwound)."""
    stacks = {r.id: r for r in read_events(capture / "events.jsonl") if isinstance(r, StackRecord)}
    return [f.function or "" for f in stacks[event["stack"]].frames]


def assert_no_int3(pid: int, capture: Path) -> None:
    entries = read_entries(capture / "restore.jsonl", pid)
    assert entries, "the restore file lists no breakpoint address"
    assert int3_addresses(pid, entries) == []


# --------------------------------------------------------------------------------------------- attach
def test_attach_writes_the_capture_dir_and_the_server_runs_on(
    fixture_paths: FixturePaths, spawn: Spawn, tmp_path: Path
) -> None:
    server = spawn([fixture_paths.leaky_server, "--interval-ms", "50"])
    server.wait_lines(2)
    out = tmp_path / "cap"
    res = run_sysbreak("attach", server.pid, "--duration", "1.5", "--interval", "0.5", "-o", out)
    assert res.returncode == 0, res.stderr
    last = res.stdout.strip().splitlines()[-1]
    assert f"sysbreak report {out}" in last
    m = meta(out)
    assert m["format"] == "sysbreak-capture/2"
    assert m["pid"] == server.pid and m["command"] == "attach"
    assert m["cmdline"][0].endswith("leaky_server")
    assert m["syscalls"] == ["mmap", "munmap", "mremap", "brk"]
    assert m["end_reason"] == "duration" and m["target_alive"] is True
    assert m["t1"] > m["t0"] and m["ended"] and m["gdb"].startswith("GNU gdb")
    recs = records(out)
    assert recs[0]["type"] == "header" and recs[-1]["type"] == "end"
    evs = events(out)
    block = [e for e in evs if e["name"] == "mmap" and e["args"][1] == 256 * 1024]
    assert block, "no 256 KiB KV block mmap caught"
    assert "register_kv_block" in stack_functions(out, block[0])
    assert any("libucm" in (e["site"].get("module") or "") for e in block)
    assert m["events"] == len(evs)
    snaps = snapshot_index(out)
    assert len(snaps) >= 3
    for s in snaps:
        assert "\nRss:" in (out / "snapshots" / s["file"]).read_text()
    assert snaps[-1]["rss_kb"] > snaps[0]["rss_kb"], "the leaking server's RSS did not grow between snapshots"
    assert (out / "gdb.log").read_text()
    server.assert_alive_and_beating()
    assert_no_int3(server.pid, out)
    again = run_sysbreak("attach", server.pid, "--duration", "0.5", "-o", tmp_path / "again", "-q")
    assert again.returncode == 0, again.stderr
    assert events(tmp_path / "again")
    server.assert_alive_and_beating()


def test_attach_max_events_stops_and_detaches(fixture_paths: FixturePaths, spawn: Spawn, tmp_path: Path) -> None:
    server = spawn([fixture_paths.leaky_server, "--interval-ms", "20"])
    server.wait_lines(1)
    out = tmp_path / "cap"
    res = run_sysbreak("attach", server.pid, "--max-events", "5", "--duration", "20", "-o", out, "-s", "mmap")
    assert res.returncode == 0, res.stderr
    assert len(events(out)) == 5
    assert all(e["name"] == "mmap" for e in events(out))
    assert meta(out)["end_reason"] == "max-events"
    server.assert_alive_and_beating()
    assert_no_int3(server.pid, out)


def test_attach_until_the_process_exits(fixture_paths: FixturePaths, spawn: Spawn, tmp_path: Path) -> None:
    server = spawn([fixture_paths.leaky_server, "--ticks", "80", "--interval-ms", "50"])
    server.wait_lines(1)
    out = tmp_path / "cap"
    res = run_sysbreak("attach", server.pid, "-q", "-o", out)
    assert res.returncode == 0, res.stderr
    m = meta(out)
    assert m["end_reason"] == "exited" and m["target_alive"] is False
    assert m["target_exit"] == "exited with status 0"
    assert events(out)
    assert server.popen.wait(timeout=10) == 0 and server.count() == 80


# --------------------------------------------------------------------------------------------- run
def test_run_catches_the_raw_and_libc_mappings_with_their_return_values(
    fixture_paths: FixturePaths, tmp_path: Path
) -> None:
    out = tmp_path / "cap"
    res = run_sysbreak("run", "-o", out, "-q", "--", fixture_paths.mapper, "6", "6", "2")
    assert res.returncode == 0, res.stderr
    printed = [ln.split() for ln in res.stdout.splitlines() if ln.startswith(("RAW ", "LIBC "))]
    assert len(printed) == 12
    mmaps = {(e["ret"], e["args"][1]) for e in events(out) if e["name"] == "mmap"}
    for _kind, addr, length, _fate in printed:
        assert (int(addr, 16), int(length)) in mmaps, f"{addr} {length} not caught"
    m = meta(out)
    assert m["command"] == "run" and m["end_reason"] == "exited" and m["target_alive"] is False
    assert m["exe"].endswith("/mapper")


def test_run_passes_the_exit_status_through(tmp_path: Path) -> None:
    res = run_sysbreak("run", "-o", tmp_path / "a", "-q", "--", "sh", "-c", "exit 3")
    assert res.returncode == 3, res.stderr
    res = run_sysbreak("run", "-o", tmp_path / "b", "-q", "--", "sh", "-c", "kill -TERM $$")
    assert res.returncode == 128 + signal.SIGTERM, res.stderr


def test_run_duration_ends_the_capture_then_the_program(fixture_paths: FixturePaths, tmp_path: Path) -> None:
    # the default, as timeout(1) and py-spy record --duration: detach, then end the program sysbreak started
    out = tmp_path / "cap"
    t0 = time.monotonic()
    res = run_sysbreak("run", "--duration", "0.7", "-o", out, "--", fixture_paths.leaky_server, "--interval-ms", "50")
    assert res.returncode == 0, res.stderr
    assert time.monotonic() - t0 < 15
    m = meta(out)
    assert m["end_reason"] == "duration" and m["target_alive"] is True  # alive (and untraced) when GDB left
    pid = m["pid"]
    assert not process.alive(pid)
    said = res.stderr
    assert "--duration 0.7 s was up: the capture is complete, the breakpoints are removed and GDB has detached" in said
    assert f"now ending pid {pid}, which sysbreak run started (SIGTERM" in said
    assert f"pid {pid} was killed by SIGTERM" in said
    summary = res.stdout.strip().splitlines()[-2]
    assert "until --duration 0.7 s was up" in summary and "then sysbreak ended the program" in summary
    assert "stopped by" not in res.stdout + res.stderr


def test_run_wait_waits_for_the_program_after_the_duration(fixture_paths: FixturePaths, tmp_path: Path) -> None:
    out = tmp_path / "cap"
    t0 = time.monotonic()
    res = run_sysbreak(
        "run", "--duration", "0.7", "--wait", "-o", out, "--", fixture_paths.leaky_server, "--ticks", "40",
        "--interval-ms", "50",
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert "heartbeat 40" in res.stdout
    assert meta(out)["end_reason"] == "duration"
    assert time.monotonic() - t0 >= 2.0
    assert f"waiting for pid {meta(out)['pid']} to exit" in res.stderr
    assert "then the program exited with status 0" in res.stdout


def test_run_keep_running_and_wait_contradict(tmp_path: Path) -> None:
    res = run_sysbreak("run", "--keep-running", "--wait", "-o", tmp_path / "x", "--", "true")
    assert res.returncode == 2
    assert "--keep-running and --wait contradict each other" in error_line(res)


@pytest.mark.parametrize("flag", ["--keep-running", "--no-wait"])
def test_run_keep_running_leaves_the_program_running(fixture_paths: FixturePaths, tmp_path: Path, flag: str) -> None:
    out = tmp_path / "cap"
    hb = tmp_path / "stdout.txt"
    err = tmp_path / "stderr.txt"
    argv = [*sysbreak_argv(), "run", "--duration", "0.8", flag, "-o", str(out), "--"]
    argv += [str(fixture_paths.leaky_server), "--interval-ms", "50"]
    # the program keeps sysbreak's stdout and stderr: files, so that nothing waits for their end
    with open(hb, "w") as fh, open(err, "w") as eh:
        proc = subprocess.Popen(argv, stdout=fh, stderr=eh, stdin=subprocess.DEVNULL)
    try:
        assert proc.wait(timeout=60) == 0, err.read_text()
        assert meta(out)["target_alive"] is True
        assert f"pid {meta(out)['pid']} keeps running, untraced (--keep-running)" in err.read_text()
        n = hb.read_text().count("heartbeat")
        time.sleep(0.4)
        assert hb.read_text().count("heartbeat") > n, "the program stopped beating after sysbreak left"
        assert_no_int3(meta(out)["pid"], out)
    finally:
        proc.kill()
        proc.wait()
        if (out / "meta.json").exists():
            with contextlib.suppress(ProcessLookupError):
                os.kill(meta(out)["pid"], signal.SIGKILL)


@pytest.mark.parametrize("mode", ["--all-stop", "--non-stop"])
def test_run_multithreaded_in_both_stop_modes(fixture_paths: FixturePaths, tmp_path: Path, mode: str) -> None:
    out = tmp_path / "cap"
    res = run_sysbreak("run", mode, "-o", out, "-q", "--", fixture_paths.mapper_mt, "4", "20")
    assert res.returncode == 0, res.stderr
    assert "DONE 80 40" in res.stdout
    page = os.sysconf("SC_PAGESIZE")
    raw = [e for e in events(out) if e["name"] == "mmap" and e["args"][1] == page and e["site"]["kind"] == "call"]
    unmaps = [e for e in events(out) if e["name"] == "munmap" and e["args"][1] == page]
    assert len(raw) >= 80 and len(unmaps) >= 40
    assert len({e["tid"] for e in raw}) >= 4
    assert meta(out)["stop_mode"] == mode.lstrip("-")


# --------------------------------------------------------------------------------------------- bad input
def test_no_such_process(tmp_path: Path) -> None:
    res = run_sysbreak("attach", "999999999", "-o", tmp_path / "x")
    assert res.returncode == 3
    assert "no process with pid 999999999 exists" in error_line(res)
    assert not (tmp_path / "x").exists()


def test_zombie_or_exited_process(tmp_path: Path) -> None:
    child = subprocess.Popen(["true"])
    deadline = time.monotonic() + 5
    while Path(f"/proc/{child.pid}/status").read_text().find("State:\tZ") < 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    try:
        res = run_sysbreak("attach", child.pid, "-o", tmp_path / "x")
        assert res.returncode == 3
        assert "has already exited" in error_line(res)
    finally:
        child.wait()


def test_process_that_exits_while_sysbreak_starts(tmp_path: Path) -> None:
    child = subprocess.Popen(["sleep", "0.15"])
    try:
        res = run_sysbreak("attach", child.pid, "-o", tmp_path / "x")
        assert res.returncode == 3
        assert "exited" in error_line(res)
    finally:
        child.wait()


def test_process_of_another_user(fixture_paths: FixturePaths, spawn: Spawn, nobody_dir: Path) -> None:
    server = spawn([fixture_paths.leaky_server, "--interval-ms", "100"])  # runs as root
    server.wait_lines(1)
    res = run_sysbreak("attach", server.pid, "-o", nobody_dir / "x", prefix=AS_NOBODY)
    assert res.returncode == 3
    line = error_line(res)
    assert f"process {server.pid} (leaky_server) belongs to user 'root' (uid 0)" in line
    assert "run sysbreak as that user, or as root" in line
    server.assert_alive_and_beating()


def test_ptrace_not_permitted(spawn: Spawn, nobody_dir: Path) -> None:
    # A process of the same user that made itself non-dumpable: only CAP_SYS_PTRACE may trace it.
    code = "import ctypes, time; ctypes.CDLL(None).prctl(4, 0, 0, 0, 0); print('ready', flush=True); time.sleep(60)"
    target = spawn([*AS_NOBODY, sys.executable, "-c", code])
    target.wait_lines(1, prefix="ready")
    res = run_sysbreak("attach", target.pid, "-o", nobody_dir / "x", prefix=AS_NOBODY)
    assert res.returncode == 3
    line = error_line(res)
    assert f"the kernel did not let GDB trace process {target.pid} (ptrace: Operation not permitted)" in line
    assert "CAP_SYS_PTRACE" in line or "ptrace_scope" in line
    assert target.popen.poll() is None


def test_output_directory_not_writable(fixture_paths: FixturePaths, spawn: Spawn, nobody_dir: Path) -> None:
    server = spawn([*AS_NOBODY, fixture_paths.leaky_server, "--interval-ms", "100"])
    server.wait_lines(1)
    res = run_sysbreak("attach", server.pid, "-o", "/root/sysbreak-no-way/cap", prefix=AS_NOBODY)
    assert res.returncode == 2
    assert "cannot create the capture directory '/root/sysbreak-no-way/cap': Permission denied" in error_line(res)
    server.assert_alive_and_beating()


def test_output_directory_not_empty(fixture_paths: FixturePaths, spawn: Spawn, tmp_path: Path) -> None:
    server = spawn([fixture_paths.leaky_server, "--interval-ms", "100"])
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "something").write_text("x")
    res = run_sysbreak("attach", server.pid, "-o", tmp_path / "full")
    assert res.returncode == 2
    assert "already exists and is not empty" in error_line(res)


def test_gdb_missing(tmp_path: Path) -> None:
    res = run_sysbreak("attach", os.getpid(), "--gdb", "/nonexistent", "-o", tmp_path / "x")
    assert res.returncode == 4
    assert "gdb was not found at '/nonexistent'" in error_line(res)
    res = run_sysbreak("run", "--gdb", "/nonexistent", "-o", tmp_path / "y", "--", "true")
    assert res.returncode == 4
    assert not (tmp_path / "y").exists()


def test_gdb_without_python(
    fixture_paths: FixturePaths, spawn: Spawn, tmp_path: Path, gdb_without_python: Path
) -> None:
    server = spawn([fixture_paths.leaky_server, "--interval-ms", "100"])
    res = run_sysbreak("attach", server.pid, "--gdb", gdb_without_python, "-o", tmp_path / "x")
    assert res.returncode == 4
    assert "was built without Python scripting, which sysbreak needs" in error_line(res)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-s", "mmapp"], "unknown x86-64 syscall 'mmapp'; did you mean mmap"),
        (["--lib", "lib(ucm"], "--lib 'lib(ucm' is not a valid regular expression"),
        (["--duration", "0"], "--duration must be more than 0 seconds"),
        (["--max-events", "0"], "--max-events must be at least 1"),
    ],
)
def test_bad_options(tmp_path: Path, args: list[str], message: str) -> None:
    res = run_sysbreak("run", *args, "-o", tmp_path / "x", "--", "true")
    assert res.returncode == 2
    assert message in error_line(res)
    assert not (tmp_path / "x").exists()


def test_run_command_not_found(tmp_path: Path) -> None:
    res = run_sysbreak("run", "-o", tmp_path / "x", "--", "no-such-program-sysbreak")
    assert res.returncode == 2
    assert "command not found: no-such-program-sysbreak" in error_line(res)


# --------------------------------------------------------------------------------------------- demo
def test_demo_builds_captures_and_reports(tmp_path: Path) -> None:
    env = dict(os.environ, XDG_CACHE_HOME=str(tmp_path / "cache"))
    res = run_sysbreak("demo", "--duration", "3", "--keep", tmp_path / "demo", env=env)
    assert res.returncode == 0, res.stderr
    assert "register_kv_block" in res.stdout  # the leaking stack is in the report
    assert f"sysbreak report {tmp_path / 'demo'}" in res.stdout
    m = meta(tmp_path / "demo")
    assert m["end_reason"] == "duration"
    assert not process.alive(m["pid"]), "the demo server was left running"
    assert list((tmp_path / "cache" / "sysbreak" / "demo").glob("leaky_server-*"))


def test_ctrl_c_during_run_ends_the_capture_then_the_program(fixture_paths: FixturePaths, tmp_path: Path) -> None:
    out = tmp_path / "cap"
    sb = subprocess.Popen(
        [*sysbreak_argv(), "run", "-o", str(out), "--", str(fixture_paths.leaky_server), "--interval-ms", "50"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
        start_new_session=True,
    )
    try:
        wait_for_first_syscall(out)
        sb.send_signal(signal.SIGINT)
        stdout, stderr = sb.communicate(timeout=60)
        assert sb.returncode == 0, stderr
        m = meta(out)
        assert m["end_reason"] == "interrupted" and m["target_alive"] is True
        assert not process.alive(m["pid"])
        assert "you pressed Ctrl-C (SIGINT): the capture is complete" in stderr
        assert f"pid {m['pid']} was killed by SIGTERM" in stderr
        assert "then sysbreak ended the program" in stdout
    finally:
        if sb.poll() is None:
            sb.kill()
            sb.wait()
        if (out / "meta.json").exists() and process.alive(meta(out)["pid"]):
            os.kill(meta(out)["pid"], signal.SIGKILL)
