"""``sysbreak attach -p PID [-p PID...] [--children]``: one GDB per process captures its calls, then detaches."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from sysbreak.cli.options import CaptureArgs, capture_command
from sysbreak.errors import ExitCode, SysbreakError


def chosen_pids(positional: list[str] | None, option: list[str] | None) -> list[int]:
    """The PIDs given as arguments and/or ``-p/--pid PID`` (repeated, or comma-separated as ``strace -p 1,2``), in
    order, each once."""
    words = [w for arg in [*(positional or []), *(option or [])] for w in arg.split(",") if w.strip()]
    if not words:
        raise SysbreakError("give the process to attach to: sysbreak attach -p PID")
    pids: list[int] = []
    for word in words:
        try:
            pid = int(word)
        except ValueError:
            raise SysbreakError(f"{word!r} is not a process id") from None
        if pid <= 0:
            raise SysbreakError(f"{pid} is not a process id")
        if pid not in pids:
            pids.append(pid)
    return pids


def register(app: typer.Typer) -> None:
    @app.command(
        "attach",
        help=(
            "Attach to PID (or several: one GDB each) and record every mmap/munmap/mremap/brk it makes, with full "
            "stacks, then detach; --children adds every descendant, running now or started later.\n\n"
            "The capture ends when --duration is up or --max-events calls were caught (by all the processes "
            "together), when the process exits, "
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
            list[str] | None,
            typer.Argument(
                metavar="[PID...]", help="Process id(s) to attach to (or -p PID, repeated).", show_default=False
            ),
        ] = None,
        pid: Annotated[
            list[str] | None,
            typer.Option(
                "--pid", "-p", metavar="PID", help="Process id to attach to (repeat it, or 1,2,3).", show_default=False
            ),
        ] = None,
        children: Annotated[
            bool,
            typer.Option(
                "--children",
                help=(
                    "Also trace every descendant of the processes: those running now and those they start later "
                    "(fork, vfork, posix_spawn, multiprocessing), into the same capture directory."
                ),
            ),
        ] = False,
    ) -> None:
        from sysbreak.driver.frontend import Frontend
        from sysbreak.driver.session import CaptureSession

        targets = chosen_pids(pid_arg, pid)
        session = CaptureSession(capture.options(follow_children=children), pid=targets[0], more_pids=targets[1:])
        res = Frontend(quiet=capture.quiet).capture(session)
        sys.exit(ExitCode.FAILED if res.end_reason in ("gdb-died", "error") else ExitCode.OK)
