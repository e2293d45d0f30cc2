"""The lines `sysbreak run`/`attach` end with, said as a person would say them (no gdb needed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from sysbreak.driver.frontend import end_reason_text, status_text, summary_line
from sysbreak.driver.session import CaptureResult


def result(**kw: object) -> CaptureResult:
    base: dict[str, object] = dict(
        directory=Path("cap"),
        pid=42,
        end_reason="duration",
        events=3,
        counts={"munmap": 1, "mmap": 2},
        elapsed=30.04,
        rss_first_kb=128,
        rss_last_kb=18 * 1024,
        snapshots=1,
        target_alive=True,
        syscalls=["mmap", "munmap"],
        duration=30.0,
    )
    base.update(kw)
    return CaptureResult(**base)  # type: ignore[arg-type]


def test_summary_reads_as_a_sentence() -> None:
    line = summary_line(result())
    assert line == (
        "sysbreak: caught 3 calls (mmap 2, munmap 1) from pid 42 in 30.0 s, until --duration 30 s was up; "
        "RSS 128.0 KiB -> 18.0 MiB; 1 smaps snapshot; the process runs on, untraced"
    )
    one = summary_line(result(events=1, counts={"mmap": 1}, end_reason="exited", target_alive=False, exit_status=0))
    assert (
        "caught 1 call (mmap 1)" in one and "until the program exited" in one and one.endswith("exited with status 0")
    )


@pytest.mark.parametrize(
    ("reason", "words"),
    [
        ("exited", "the program exited"),
        ("max-events", "--max-events 5 calls were caught"),
        ("interrupted", "you pressed Ctrl-C (SIGINT)"),
        ("terminated", "sysbreak got SIGTERM"),
        ("hangup", "sysbreak got SIGHUP (terminal closed)"),
        ("gdb-died", "GDB died"),
        ("error", "an error stopped it"),
    ],
)
def test_every_end_is_said_plainly(reason: str, words: str) -> None:
    assert end_reason_text(reason, max_events=5) == words
    line = summary_line(result(end_reason=reason, max_events=5))
    assert f"until {words};" in line and "stopped by" not in line


def test_status_text() -> None:
    assert status_text(3) == "exited with status 3"
    assert status_text(-15) == "was killed by SIGTERM"
    assert status_text(None) == "has exited"
