"""The tripwire (sysbreak.tripwire): a robust process-shared mutex that a real holder process keeps locked, and
whose waiter the kernel wakes the moment the holder dies, whatever kills it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from sysbreak import tripwire
from sysbreak.tripwire import Tripwire

pytestmark = pytest.mark.skipif(not tripwire.available(), reason="needs glibc >= 2.30 (pthread_mutex_clocklock)")

HOLDER = "import sys, time; from sysbreak.tripwire import hold; hold(int(sys.argv[1])); print('held', flush=True); "


def start_holder(wire: Tripwire, then: str) -> subprocess.Popen[str]:
    child = subprocess.Popen(
        [sys.executable, "-c", HOLDER + then, str(wire.fd)],
        pass_fds=(wire.fd,),
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None
    assert child.stdout.readline() == "held\n"
    wire.close_fd()
    return child


def test_a_held_tripwire_is_busy_and_a_wait_times_out() -> None:
    wire = Tripwire()
    child = start_holder(wire, "time.sleep(60)")
    try:
        assert wire.held()
        assert wire.wait(0.05) is False
        assert wire.held()  # a timed-out wait takes nothing
    finally:
        child.kill()
        child.wait()


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGSEGV, signal.SIGTERM])
def test_the_waiter_wakes_when_the_holder_is_killed(sig: signal.Signals) -> None:
    wire = Tripwire()
    child = start_holder(wire, "time.sleep(60)")
    os.kill(child.pid, sig)
    assert wire.wait(10) is True
    assert child.wait(10) == -sig
    assert wire.wait(0) is True  # once gone, always gone


def test_the_waiter_wakes_when_the_holder_exits_holding_it() -> None:
    wire = Tripwire()
    child = start_holder(wire, "sys.exit(0)")
    assert wire.wait(10) is True
    assert child.wait(10) == 0


def test_nobody_holds_a_fresh_tripwire() -> None:
    wire = Tripwire()
    try:
        assert wire.held() is False
    finally:
        wire.close_fd()
