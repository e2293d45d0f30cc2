"""``sysbreak run [OPTIONS] -- CMD [ARGS...]``: start a program under GDB and capture its memory-mapping calls.

The options shared with ``sysbreak attach`` are defined here too (``CaptureOpts``).
"""

from __future__ import annotations

import signal
import sys
from dataclasses import dataclass
from typing import Annotated

import typer

from sysbreak.driver.frontend import Frontend
from sysbreak.driver.session import CaptureOptions, CaptureResult, CaptureSession

SyscallOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--syscall",
        "-s",
        metavar="NAME",
        help="System call to catch (repeat it, or separate with commas). Default: mmap,munmap,mremap,brk.",
    ),
]
LibOpt = Annotated[
    str | None, typer.Option("--lib", metavar="REGEX", help="Only place breakpoints in modules whose path matches.")
]
DurationOpt = Annotated[
    float | None, typer.Option("--duration", "-d", metavar="SECONDS", help="Stop capturing after this long.")
]
MaxEventsOpt = Annotated[
    int | None, typer.Option("--max-events", "-n", metavar="N", help="Stop capturing after N calls.")
]
OutputOpt = Annotated[
    str | None,
    typer.Option(
        "--output",
        "-o",
        metavar="DIR",
        help="Capture directory to create. Default: sysbreak-capture-PID-YYYYmmdd-HHMMSS.",
    ),
]
IntervalOpt = Annotated[
    float,
    typer.Option(
        "--interval", "-i", metavar="SECONDS", help="Seconds between /proc/PID/smaps snapshots (0: first and last)."
    ),
]
PyStacksOpt = Annotated[bool, typer.Option("--python-stacks/--no-python-stacks", help="Also record CPython frames.")]
ExhaustiveOpt = Annotated[
    bool,
    typer.Option(
        "--exhaustive", help="Also stop in libc's generic syscall() wrapper (callers not found statically; slower)."
    ),
]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress line; only the final lines.")]
GdbOpt = Annotated[
    str | None, typer.Option("--gdb", metavar="PATH", help="GDB to use (e.g. cuda-gdb). Default: gdb on PATH.")
]
NonStopOpt = Annotated[
    bool,
    typer.Option(
        "--non-stop/--all-stop",
        help=(
            "GDB's non-stop mode (only the thread that hit a breakpoint pauses) or all-stop (every thread pauses; "
            "the default: with 8 threads on 2 cores non-stop measured no faster, see notes/mechanisms.md)."
        ),
    ),
]


@dataclass
class CaptureOpts:
    syscall: list[str] | None
    lib: str | None
    duration: float | None
    max_events: int | None
    output: str | None
    interval: float
    python_stacks: bool
    exhaustive: bool
    quiet: bool
    gdb: str | None
    non_stop: bool

    def options(self, wait: bool = True) -> CaptureOptions:
        return CaptureOptions(
            syscalls=list(self.syscall or []),
            lib=self.lib,
            duration=self.duration,
            max_events=self.max_events,
            output=self.output,
            interval=self.interval,
            python_stacks=self.python_stacks,
            exhaustive=self.exhaustive,
            quiet=self.quiet,
            gdb=self.gdb,
            non_stop=self.non_stop,
            wait=wait,
        )


def exit_code_of(status: int | None) -> int:
    """A program's exit status the way a shell reports it (128 + N when killed by signal N)."""
    if status is None:
        return 0
    return status if status >= 0 else 128 - status


def run_capture(argv: list[str], opts: CaptureOptions) -> tuple[CaptureResult, int]:
    """Run ``argv`` under a capture; returns the result and the exit code ``sysbreak run`` should end with."""
    front = Frontend(quiet=opts.quiet)
    session = CaptureSession(opts, argv=argv)
    res = front.capture(session)
    if res.exit_status is not None or not res.target_alive:
        return res, exit_code_of(res.exit_status)
    if not opts.wait:
        front.say(f"pid {res.pid} runs on; not waiting for it (--no-wait)")
        return res, 0
    front.say(f"capture done; pid {res.pid} runs on, waiting for it to exit (Ctrl-C is passed on to it)")
    status = session.wait_for_program()
    if status is not None and not opts.quiet:
        how = f"exited with status {status}" if status >= 0 else f"was killed by {signal.Signals(-status).name}"
        front.say(f"pid {res.pid} {how}")
    return res, exit_code_of(status)


def register(app: typer.Typer) -> None:
    @app.command(
        "run",
        help=(
            "Start CMD under GDB and record every mmap/munmap/mremap/brk it makes, with full stacks.\n\n"
            "The capture ends when the program exits, at --duration or --max-events, or on "
            "Ctrl-C/SIGTERM/SIGHUP. Then sysbreak removes its breakpoints and detaches: the program RUNS ON, "
            "untouched. sysbreak waits for it to exit and exits with its status (128+N if killed by signal "
            "N), passing Ctrl-C, SIGTERM and SIGHUP on to it while it waits; with --no-wait it leaves at "
            "once and the program keeps running.\n\n"
            "The program runs in its own process group, so a Ctrl-C on the terminal reaches sysbreak only "
            "(it stops the capture, not the program); standard input, output and error are sysbreak's."
        ),
        context_settings={"allow_interspersed_args": False},
        epilog=(
            "Examples:  sysbreak run --duration 30 -- ./server --port 8080   |   "
            "sysbreak run -s mmap --lib libucm -- python3 train.py"
        ),
    )
    def command(
        cmd: Annotated[
            list[str], typer.Argument(metavar="CMD", help="After --: the program to run, then its arguments.")
        ],
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
        wait: Annotated[
            bool,
            typer.Option(
                "--wait/--no-wait",
                help="After a limit, wait for the program to exit (and exit with its status), or leave at once.",
            ),
        ] = True,
    ) -> None:
        opts = CaptureOpts(
            syscall, lib, duration, max_events, output, interval, python_stacks, exhaustive, quiet, gdb, non_stop
        ).options(wait=wait)
        _res, code = run_capture(list(cmd), opts)
        sys.exit(code)
