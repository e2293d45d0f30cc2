"""``sysbreak attach -p PID``: attach GDB to a running process, capture its memory-mapping calls, detach."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from sysbreak.cli.options import CaptureArgs, capture_command
from sysbreak.errors import ExitCode, SysbreakError


def chosen_pid(positional: int | None, option: int | None) -> int:
    """The PID given as ``-p/--pid PID`` (gdb -p, strace -p, perf -p, py-spy --pid) or as the argument."""
    if positional is None and option is None:
        raise SysbreakError("give the process to attach to: sysbreak attach -p PID")
    if positional is not None and option is not None and positional != option:
        raise SysbreakError(f"two different processes given: {positional} and -p {option}; give one")
    pid = option if option is not None else positional
    assert pid is not None
    if pid <= 0:
        raise SysbreakError(f"{pid} is not a process id")
    return pid


def register(app: typer.Typer) -> None:
    @app.command(
        "attach",
        help=(
            "Attach to PID and record every mmap/munmap/mremap/brk it makes, with full stacks, then detach.\n\n"
            "The capture ends when --duration is up or --max-events calls were caught, when the process exits, "
            "or on Ctrl-C/SIGTERM/SIGHUP. Then sysbreak removes every breakpoint and detaches; the process runs "
            "on untouched. Even if sysbreak is killed (SIGKILL), GDB detaches on its own; if GDB itself dies, "
            "sysbreak puts the original bytes back."
        ),
        epilog="Example:  sysbreak attach -p 4242 --duration 60 -o leak.capture   then   sysbreak report leak.capture",
    )
    @capture_command
    def command(
        capture: CaptureArgs,
        pid_arg: Annotated[
            int | None,
            typer.Argument(metavar="[PID]", help="Process id to attach to (or -p PID).", show_default=False),
        ] = None,
        pid: Annotated[
            int | None,
            typer.Option("--pid", "-p", metavar="PID", help="Process id to attach to.", show_default=False),
        ] = None,
    ) -> None:
        from sysbreak.driver.frontend import Frontend
        from sysbreak.driver.session import CaptureSession

        target = chosen_pid(pid_arg, pid)
        session = CaptureSession(capture.options(), pid=target)
        res = Frontend(quiet=capture.quiet).capture(session)
        sys.exit(ExitCode.FAILED if res.end_reason in ("gdb-died", "error") else ExitCode.OK)
