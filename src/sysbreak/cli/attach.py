"""``sysbreak attach PID``: attach GDB to a running process, capture its memory-mapping calls, detach."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from sysbreak.cli.run import (
    CaptureOpts,
    DurationOpt,
    ExhaustiveOpt,
    GdbOpt,
    IntervalOpt,
    LibOpt,
    MaxEventsOpt,
    NonStopOpt,
    OutputOpt,
    PyStacksOpt,
    QuietOpt,
    SyscallOpt,
)
from sysbreak.driver.frontend import Frontend
from sysbreak.driver.session import CaptureSession


def register(app: typer.Typer) -> None:
    @app.command(
        "attach",
        help=(
            "Attach to PID and record every mmap/munmap/mremap/brk it makes, with full stacks, then detach.\n\n"
            "The capture ends at --duration or --max-events, when the process exits, or on "
            "Ctrl-C/SIGTERM/SIGHUP. Then sysbreak removes every breakpoint and detaches; the process runs on "
            "untouched. Even if sysbreak is killed (SIGKILL), GDB detaches on its own; if GDB itself dies, "
            "sysbreak puts the original bytes back."
        ),
        epilog="Example:  sysbreak attach 4242 --duration 60 -o leak.capture   then   sysbreak report leak.capture",
    )
    def command(
        pid: Annotated[int, typer.Argument(metavar="PID", help="Process id to attach to.")],
        syscall: SyscallOpt = None,
        lib: LibOpt = None,
        duration: DurationOpt = None,
        max_events: MaxEventsOpt = None,
        output: OutputOpt = None,
        interval: IntervalOpt = 1.0,
        python_stacks: PyStacksOpt = False,
        exhaustive: ExhaustiveOpt = False,
        quiet: QuietOpt = False,
        gdb: GdbOpt = None,
        non_stop: NonStopOpt = False,
    ) -> None:
        opts = CaptureOpts(
            syscall, lib, duration, max_events, output, interval, python_stacks, exhaustive, quiet, gdb, non_stop
        ).options()
        session = CaptureSession(opts, pid=pid)
        res = Frontend(quiet=quiet).capture(session)
        sys.exit(1 if res.end_reason in ("gdb-died", "error") else 0)
