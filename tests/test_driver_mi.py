"""The GDB/MI session against a real gdb (no sysbreak extension needed)."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import pytest

from sysbreak.driver.mi import GdbGone, MiError, MiSession

pytestmark = pytest.mark.gdb


@pytest.fixture
def session(tmp_path: Path):  # type: ignore[no-untyped-def]
    s = MiSession(
        ["gdb", "--interpreter=mi3", "-nx", "-q"], mi_path=str(tmp_path / "mi"), log_path=str(tmp_path / "log")
    )
    yield s
    s.close()


def test_commands_errors_and_console_output(session: MiSession, tmp_path: Path) -> None:
    assert session.command("-gdb-set mi-async on")["message"] == "done"
    assert session.console_output("python print(6 * 7)").strip() == "42"
    with pytest.raises(MiError) as err:
        session.console("no-such-command")
    assert 'Undefined command: "no-such-command"' in err.value.message
    log = (tmp_path / "log").read_text()
    assert "-interpreter-exec console" in log and "42" in log


def test_attach_continue_interrupt_detach(session: MiSession) -> None:
    target = subprocess.Popen(["sleep", "30"])
    try:
        session.command("-gdb-set mi-async on")
        session.command(f"-target-attach {target.pid}")
        assert session.wait_async(lambda r: r.get("message") == "stopped", 10) is not None
        assert session.command("-exec-continue")["message"] == "running"
        session.command("-exec-interrupt")
        rec = session.wait_async(lambda r: r.get("message") == "stopped", 10)
        assert rec is not None and rec["payload"]["signal-name"] == "SIGINT"
        session.command("-target-detach")
        time.sleep(0.1)
        assert target.poll() is None  # detached and running: the SIGINT was GDB's, never passed on
    finally:
        target.kill()
        target.wait()


def test_gdb_death_is_reported(session: MiSession) -> None:
    session.command("-gdb-version")
    session.proc.send_signal(signal.SIGKILL)
    session.proc.wait()
    with pytest.raises(GdbGone):
        session.command("-gdb-version", timeout=5)
    assert not session.alive()


def test_reads_only_what_this_gdb_writes(tmp_path: Path) -> None:
    mi = tmp_path / "mi"
    mi.write_text('101^error,msg="stale"\n')  # a record from an earlier gdb must not answer our command 101
    s = MiSession(["gdb", "--interpreter=mi3", "-nx", "-q"], mi_path=str(mi), log_path=str(tmp_path / "log"))
    try:
        assert s.command("-gdb-set confirm off")["message"] == "done"
    finally:
        s.close()
