"""``sysbreak run [OPTIONS] -- CMD [ARGS...]``: start a program under GDB and capture its memory-mapping calls.

What happens at the end of the capture (``--duration``, ``--max-events``, Ctrl-C, SIGTERM) follows the tools
that start a program to watch it, ``timeout``, ``perf stat --timeout`` and ``py-spy record --duration``: the
capture is closed, the breakpoints are removed, GDB detaches, and then sysbreak ends the program it started
(SIGTERM to its process group, SIGKILL 5 s later) and exits. ``--keep-running`` leaves the program running,
untraced, and exits at once; ``--wait`` waits for it to exit, passing Ctrl-C on to it. A program that exits
during the capture ends it, and sysbreak exits with the program's status.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Annotated

import typer

from sysbreak.cli.options import CaptureArgs, capture_command
from sysbreak.errors import ExitCode, SysbreakError

if TYPE_CHECKING:
    from sysbreak.driver.frontend import Frontend
    from sysbreak.driver.session import CaptureOptions, CaptureResult, CaptureSession

#: seconds between SIGTERM and SIGKILL when sysbreak ends the program it started
STOP_GRACE = 5.0

HELP = (
    "Start CMD under GDB and record every mmap/munmap/mremap/brk it makes, with full stacks.\n\n"
    "The capture ends when the program exits, when --duration is up or --max-events calls were caught (with "
    "-f, by the whole process tree together), or on "
    "Ctrl-C/SIGTERM/SIGHUP. sysbreak then removes its breakpoints and detaches. A program that exited on its "
    "own gives sysbreak its exit status (128+N if killed by signal N). Otherwise sysbreak ends the program it "
    f"started, as timeout(1) and py-spy record --duration do: SIGTERM, then SIGKILL after {STOP_GRACE:g} s, and "
    "exits 0. --keep-running leaves it running, untraced, and exits at once; --wait waits for it to exit "
    "(passing Ctrl-C, SIGTERM and SIGHUP on to it) and exits with its status.\n\n"
    "The program's standard input, output and error are sysbreak's; it runs in its own process group, so a "
    "Ctrl-C on the terminal reaches sysbreak, which ends the capture first. While the program writes to the "
    "terminal, sysbreak prints a plain progress line every few seconds on stderr instead of a live one."
)


def exit_code_of(status: int | None) -> int:
    """A program's exit status the way a shell reports it (128 + N when killed by signal N)."""
    if status is None:
        return 0
    return status if status >= 0 else 128 - status


def status_text(status: int | None) -> str:
    from sysbreak.driver.frontend import status_text as text

    return text(status)


def _limit_text(res: CaptureResult) -> str:
    from sysbreak.driver.frontend import end_reason_text

    return end_reason_text(res.end_reason, duration=res.duration, max_events=res.max_events, overshoot=res.overshoot)


def after_capture(
    front: Frontend, session: CaptureSession, res: CaptureResult, then: str, *, summary: bool = True
) -> int:
    """What ``run`` does once the capture is over and the program still runs: ``then`` is stop, wait or leave.
    Says it on the console at that moment; returns the exit code."""
    pid = res.pid
    if res.exit_status is not None or not res.target_alive:
        front.report(res, summary)
        if res.end_reason in ("gdb-died", "error") and res.exit_status is None:
            return ExitCode.FAILED
        return exit_code_of(res.exit_status)
    front.warnings(res)
    done = f"{_limit_text(res)}: the capture is complete, the breakpoints are removed and GDB has detached"
    if then == "leave":
        front.say(f"{done}; pid {pid} keeps running, untraced (--keep-running)")
        if summary:
            front.summary(res, after=f"pid {pid} keeps running, untraced")
        return ExitCode.OK
    if then == "wait":
        front.say(f"{done}; waiting for pid {pid} to exit (--wait; Ctrl-C is passed on to it)")
        status = session.wait_for_program()
        front.say(f"pid {pid} {status_text(status)}")
        if summary:
            front.summary(res, after=f"then the program {status_text(status)}")
        return exit_code_of(status)
    front.say(
        f"{done}; now ending pid {pid}, which sysbreak run started (SIGTERM, SIGKILL after {STOP_GRACE:g} s; "
        "--keep-running leaves it running)"
    )
    status = session.end_program(STOP_GRACE)
    front.say(f"pid {pid} {status_text(status)}")
    if summary:
        front.summary(res, after=f"then sysbreak ended the program (it {status_text(status)})")
    if res.end_reason in ("gdb-died", "error"):
        return ExitCode.FAILED
    return ExitCode.OK


def run_capture(argv: list[str], opts: CaptureOptions, then: str = "stop") -> tuple[CaptureResult, int]:
    """Run ``argv`` under a capture; returns the result and the exit code ``sysbreak run`` should end with."""
    from sysbreak.driver.frontend import Frontend
    from sysbreak.driver.session import CaptureSession

    front = Frontend(quiet=opts.quiet)
    session = CaptureSession(opts, argv=argv)
    res = front.capture(session, summary=False)
    return res, after_capture(front, session, res, then)


def register(app: typer.Typer) -> None:
    @app.command(
        "run",
        help=HELP,
        context_settings={"allow_interspersed_args": False},
        options_metavar="[OPTIONS] --",
        epilog=(
            "Examples:  sysbreak run --duration 30 -- ./server --port 8080   |   "
            "sysbreak run -s mmap --lib libucm -- python3 train.py"
        ),
    )
    @capture_command
    def command(
        cmd: Annotated[
            list[str], typer.Argument(metavar="CMD", help="After --: the program to run, then its arguments.")
        ],
        capture: CaptureArgs,
        keep_running: Annotated[
            bool,
            typer.Option(
                "--keep-running",
                help="When the capture ends before the program does, leave it running, untraced, and exit.",
            ),
        ] = False,
        wait: Annotated[
            bool,
            typer.Option(
                "--wait",
                help="When the capture ends before the program does, wait for it to exit; exit with its status.",
            ),
        ] = False,
        no_wait: Annotated[bool, typer.Option("--no-wait", hidden=True)] = False,  # the old --keep-running
        follow_children: Annotated[
            bool,
            typer.Option(
                "--follow-children",
                "-f",
                help=(
                    "Trace every descendant too (fork, vfork, posix_spawn, Python multiprocessing), each from its "
                    "first instruction, into the same capture directory (as strace -f)."
                ),
            ),
        ] = False,
    ) -> None:
        keep_running = keep_running or no_wait
        if keep_running and wait:
            raise SysbreakError("--keep-running and --wait contradict each other: give one")
        then = "leave" if keep_running else "wait" if wait else "stop"
        _res, code = run_capture(list(cmd), capture.options(follow_children=follow_children), then)
        sys.exit(code)
