"""The progress display on a real terminal (a pty): it never shares a line with the traced program's output."""

from __future__ import annotations

import os
import re
import select
import subprocess
import time
from pathlib import Path

import pytest
from conftest import FixturePaths, Spawn, sysbreak_argv

pytestmark = pytest.mark.gdb

ESC = "\x1b["


def run_on_pty(argv: list[str], timeout: float = 60, also: list[str] | None = None) -> tuple[int, str]:
    """Run ``argv`` with stdin, stdout and stderr on a fresh pty; returns its status and everything it printed.
    ``also``: a program started first on the same pty (its pid replaces ``{pid}`` in ``argv``), killed at the end."""
    master, slave = os.openpty()
    env = dict(os.environ, TERM="xterm-256color", COLUMNS="120", LINES="30")
    other = None
    if also:
        other = subprocess.Popen(also, stdin=subprocess.DEVNULL, stdout=slave, stderr=slave, start_new_session=True)
        time.sleep(0.3)
        argv = [a.replace("{pid}", str(other.pid)) for a in argv]
    proc = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, env=env, start_new_session=True)
    os.close(slave)
    chunks: list[bytes] = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.2)
            if ready:
                try:
                    data = os.read(master, 65536)
                except OSError:  # EIO: every writer closed the pty
                    break
                if not data:
                    break
                chunks.append(data)
            elif proc.poll() is not None:
                break
            if other is not None and proc.poll() is not None:  # the other program keeps the pty open: drain, go
                end = time.monotonic() + 0.5
                while time.monotonic() < end:
                    if select.select([master], [], [], 0.1)[0]:
                        chunks.append(os.read(master, 65536))
                break
        code = proc.wait(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        for p in (proc, other):
            if p is not None and p.poll() is None:
                p.kill()
                p.wait()
        os.close(master)
    return code, b"".join(chunks).decode("utf-8", "replace")


def test_run_on_a_terminal_prints_plain_progress_lines_between_the_programs_lines(
    fixture_paths: FixturePaths, tmp_path: Path
) -> None:
    argv = [*sysbreak_argv(), "run", "-d", "2.5", "-o", str(tmp_path / "cap"), "--"]
    code, out = run_on_pty([*argv, str(fixture_paths.leaky_server), "--interval-ms", "100"])
    assert code == 0, out
    assert ESC not in out, "a redrawn status line on the terminal the program writes to"
    lines = out.replace("\r\n", "\n").split("\n")
    assert not any("\r" in ln for ln in lines), "a carriage return: something redrew a line"
    beats = [ln for ln in lines if ln.startswith("heartbeat")]
    assert len(beats) >= 10 and all(re.fullmatch(r"heartbeat \d+", ln) for ln in beats), beats
    progress = [ln for ln in lines if re.match(r"sysbreak: pid \d+ +\d+\.\d s  \d+ calls? ", ln)]
    assert progress, out  # at least the one after 1 s
    assert all("RSS" in ln and "heartbeat" not in ln for ln in progress)


def test_attach_on_a_terminal_draws_a_live_line_when_the_process_writes_elsewhere(
    fixture_paths: FixturePaths, spawn: Spawn, tmp_path: Path
) -> None:
    server = spawn([fixture_paths.leaky_server, "--interval-ms", "50"])  # its stdout is a pipe, not our terminal
    server.wait_lines(1)
    code, out = run_on_pty([*sysbreak_argv(), "attach", "-p", str(server.pid), "-d", "1.5", "-o", str(tmp_path / "c")])
    assert code == 0, out
    assert ESC in out and "Ctrl-C ends the capture" in out  # the live line, redrawn in place
    assert "heartbeat" not in out
    assert f"from pid {server.pid}" in out
    server.assert_alive_and_beating()


def test_attach_prints_plain_lines_when_the_process_writes_to_the_same_terminal(
    fixture_paths: FixturePaths, tmp_path: Path
) -> None:
    argv = [*sysbreak_argv(), "attach", "-p", "{pid}", "-d", "2", "-o", str(tmp_path / "c")]
    code, out = run_on_pty(argv, also=[str(fixture_paths.leaky_server), "--interval-ms", "100"])
    assert code == 0, out
    assert ESC not in out, out
    lines = out.replace("\r\n", "\n").split("\n")
    assert any(re.fullmatch(r"heartbeat \d+", ln) for ln in lines), out
    assert any(re.match(r"sysbreak: pid \d+ +\d+\.\d s  \d+ calls? ", ln) for ln in lines), out


def test_progress_is_silent_when_stderr_is_not_a_terminal(fixture_paths: FixturePaths, tmp_path: Path) -> None:
    res = subprocess.run(
        [*sysbreak_argv(), "run", "-d", "1.5", "-o", str(tmp_path / "cap"), "--", str(fixture_paths.leaky_server)],
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert res.returncode == 0, res.stderr
    assert ESC not in res.stderr and not re.search(r"sysbreak: pid \d+ +\d", res.stderr)
