"""The driver's plain-Python parts: event-log tailing, the capture directory, the restore file, quoting."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from sysbreak.capture import directory as capdir
from sysbreak.capture.follow import EventTail
from sysbreak.capture.residency import partial_vmas
from sysbreak.driver import process
from sysbreak.driver.mi import mi_quote
from sysbreak.driver.restore import INT3, int3_addresses, read_entries, restore
from sysbreak.driver.session import _describe_exit, _gdb_quote, _is_exit_record, validate_syscalls
from sysbreak.errors import SysbreakError
from sysbreak.maps import sum_rss_kb


def test_event_tail_counts_and_waits_for_a_cut_line(tmp_path: Path) -> None:
    log = tmp_path / "events.jsonl"
    tail = EventTail(log)
    assert tail.poll() == []  # no file yet
    header = {"type": "header", "format": "sysbreak-events/1", "pid": 1}
    ev = {"type": "syscall", "seq": 1, "name": "mmap", "ret": 4096}
    with open(log, "w") as fh:
        fh.write(json.dumps(header) + "\n" + json.dumps(ev) + "\n" + '{"type":"syscall","name":"mu')
    other = tail.poll()
    assert [r["type"] for r in other] == ["header"]
    assert tail.events == 1 and tail.counts == {"mmap": 1}
    with open(log, "a") as fh:
        fh.write('nmap","ret":-12}\n{"type":"module","path":"/lib/x.so"}\n{"type":"end","reason":"clear"}\n')
    tail.poll()
    assert tail.counts == {"mmap": 1, "munmap": 1} and tail.failed == 1
    assert tail.modules == [{"type": "module", "path": "/lib/x.so"}]
    assert tail.end == {"type": "end", "reason": "clear"}
    assert tail.summary(["munmap", "mmap"]) == "munmap 1, mmap 1"


def test_capture_dir_create_and_atomic_meta(tmp_path: Path) -> None:
    d = capdir.create(tmp_path / "a" / "b")
    assert (d / "snapshots").is_dir()
    meta = capdir.Meta(d, pid=1)
    meta.update(end_reason="duration")
    assert json.loads((d / "meta.json").read_text()) == {
        "format": "sysbreak-capture/2",
        "pid": 1,
        "end_reason": "duration",
    }
    assert [p.name for p in d.iterdir() if p.name.startswith(".")] == []  # no temporary file left
    (d / "x").write_text("")
    with pytest.raises(SysbreakError, match="already exists and is not empty"):
        capdir.create(d)
    with pytest.raises(SysbreakError, match="exists and is not a directory"):
        capdir.create(d / "x")
    with pytest.raises(SysbreakError, match="cannot create the capture directory .*Not a directory"):
        capdir.create(d / "x" / "y")
    assert capdir.default_name(42).startswith("sysbreak-capture-42-")


def test_snapshots_of_our_own_process(tmp_path: Path) -> None:
    d = capdir.create(tmp_path / "cap")
    snap = capdir.Snapshotter(d, os.getpid(), 0.05)
    assert snap.take()
    snap.start()
    time.sleep(0.3)
    snap.close()
    lines = [json.loads(ln) for ln in (d / "snapshots" / "index.jsonl").read_text().splitlines()]
    assert len(lines) >= 3
    assert [ln["seq"] for ln in lines] == list(range(1, len(lines) + 1))
    first = (d / "snapshots" / lines[0]["file"]).read_text()
    assert "Rss:" in first and sum_rss_kb(first) == lines[0]["rss_kb"] > 0
    assert snap.take() is None  # closed: nothing more is written


def test_snapshot_of_a_gone_process(tmp_path: Path) -> None:
    child = subprocess.Popen(["true"])
    child.wait()
    snap = capdir.Snapshotter(capdir.create(tmp_path / "cap"), child.pid, 1)
    assert snap.take() is None and snap.seq == 0
    snap.close()


def test_smaps_of_a_process_gone_before_its_pagemap_is_no_snapshot(tmp_path: Path) -> None:
    """smaps read while the process lived, pagemap after it had gone: no snapshot (its last RSS would be shared out
    by bytes, an estimate), as for an exiting process whose smaps is empty. A live one keeps its resident pages."""
    raw = Path("/proc/self/smaps").read_bytes()
    assert partial_vmas(raw.decode()), "this test needs a partly resident anonymous VMA in its own smaps"
    child = subprocess.Popen(["true"])
    child.wait()
    snap = capdir.Snapshotter(capdir.create(tmp_path / "cap"), child.pid, 1)
    assert snap.write(raw, time.monotonic(), "now") is None and snap.seq == 0
    assert snap.write(raw, time.monotonic(), "now", pid=os.getpid()) is not None
    line = json.loads((snap.dir / "index.jsonl").read_text())
    assert line["seq"] == 1 and line["resident"]
    snap.close()


def test_restore_puts_back_an_int3_we_wrote(tmp_path: Path) -> None:
    # Overwrite the first byte of a process's ELF header (mapped, never executed) with int3, then restore it.
    child = subprocess.Popen(["sleep", "30"])
    try:
        while process.cmdline(child.pid) != ["sleep", "30"]:  # wait for the exec
            time.sleep(0.01)
        exe = os.readlink(f"/proc/{child.pid}/exe")
        base = next(
            int(ln.split("-")[0], 16) for ln in Path(f"/proc/{child.pid}/maps").read_text().splitlines() if exe in ln
        )
        with open(f"/proc/{child.pid}/mem", "r+b", buffering=0) as mem:
            mem.seek(base)
            assert mem.read(1) == b"\x7f"
            mem.seek(base)
            mem.write(bytes([INT3]))
        rf = tmp_path / "restore.jsonl"
        rf.write_text(
            json.dumps({"pid": child.pid, "addr": base, "orig": "7f"})
            + "\n"
            + json.dumps({"pid": child.pid + 1, "addr": base + 1, "orig": "45"})  # another process: ignored
            + "\n"
            + '{"pid": 1, "addr": '  # cut short: ignored
        )
        entries = read_entries(rf, child.pid)
        assert [(e.addr, e.orig) for e in entries] == [(base, b"\x7f")]
        assert int3_addresses(child.pid, entries) == [base]
        res = restore(child.pid, rf)
        assert (res.checked, res.restored, res.errors) == (1, 1, [])
        assert int3_addresses(child.pid, entries) == []
        deadline = time.monotonic() + 5
        while process.read_status(child.pid)["State"].startswith("T"):  # resumed after the SIGSTOP
            assert time.monotonic() < deadline, "left stopped"
            time.sleep(0.01)
        assert restore(child.pid, rf).restored == 0  # nothing left to do
    finally:
        child.kill()
        child.wait()


def test_procfs_checks() -> None:
    with pytest.raises(SysbreakError, match="no process with pid 999999999 exists"):
        process.check_traceable(999999999)
    with pytest.raises(SysbreakError, match="cannot attach to itself"):
        process.check_traceable(os.getpid())
    child = subprocess.Popen(["sleep", "30"])
    try:
        while process.cmdline(child.pid) != ["sleep", "30"]:  # wait for the exec
            time.sleep(0.01)
        info = process.check_traceable(child.pid)
        assert info.name == "sleep" and info.tracer == 0
        assert process.alive(child.pid) and process.cmdline(child.pid) == ["sleep", "30"]
        assert (process.rss_kb(child.pid) or 0) > 0
    finally:
        child.kill()
        child.wait()
    assert not process.alive(child.pid)


def test_quoting_and_exit_records() -> None:
    assert mi_quote('a "b"\\c\n') == '"a \\"b\\"\\\\c\\n"'
    assert _gdb_quote("libucm") == "libucm"
    assert _gdb_quote("lib ucm|x") == '"lib ucm|x"'
    assert _describe_exit({"payload": {"reason": "exited", "exit-code": "012"}}) == ("exited with status 10", 10)
    assert _describe_exit({"payload": {"reason": "exited-normally"}}) == ("exited with status 0", 0)
    assert _describe_exit({"payload": {"reason": "exited-signalled", "signal-name": "SIGKILL"}}) == (
        "was killed by SIGKILL",
        -9,
    )
    assert _describe_exit({"payload": {"id": "i1", "exit-code": "03"}}) == ("exited with status 3", 3)
    # which records say how the process ended: a killed process's =thread-group-exited has no exit code (the
    # *stopped after it names the signal); a library event's *stopped (no reason) says nothing
    assert _is_exit_record({"message": "thread-group-exited", "payload": {"id": "i1", "exit-code": "0"}})
    assert not _is_exit_record({"message": "thread-group-exited", "payload": {"id": "i1"}})
    assert _is_exit_record({"message": "stopped", "payload": {"reason": "exited-signalled", "signal-name": "SIGSEGV"}})
    assert not _is_exit_record({"message": "stopped", "payload": {}})
    assert validate_syscalls([]) == ["mmap", "munmap", "mremap", "brk"]
    assert validate_syscalls(["mmap,9", "SYS_brk"]) == ["mmap", "brk"]
    with pytest.raises(SysbreakError, match="did you mean mmap"):
        validate_syscalls(["mmapp"])
