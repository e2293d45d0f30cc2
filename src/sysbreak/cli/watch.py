"""`sysbreak watch PID [PID...]`: which regions of a process grow, from /proc/PID/smaps alone (no ptrace)."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Annotated

import typer

from sysbreak.errors import ExitCode, SysbreakError

HELP = (
    "Watch the memory map of running processes grow, without tracing them.\n\n"
    "Reads /proc/PID/smaps every --interval seconds (what `watch pmap -x PID` shows, with nothing attached: the "
    "processes are never stopped, so it is safe on any production machine) and shows, live, the total RSS with a "
    "sparkline, how much of it is anonymous and how much file-backed, and the regions that grow, how fast. It ends "
    "(after --duration, --count snapshots, when every process has exited, or on Ctrl-C) by saying whether the "
    "growth is in anonymous mappings, which `sysbreak attach PID` can attribute to call stacks."
)

EPILOG = (
    "Examples:\n\n"
    "  sysbreak watch 4242\n\n"
    "  sysbreak watch 4242 4243 --interval 5 --duration 600\n\n"
    "  sysbreak watch 4242 -d 60 -o watch-4242 && sysbreak report watch-4242"
)


def register(app: typer.Typer) -> None:
    @app.command("watch", help=HELP, epilog=EPILOG)
    def command(
        pids: Annotated[
            list[int], typer.Argument(metavar="PID...", help="The processes to watch.", show_default=False)
        ],
        interval: Annotated[
            float, typer.Option("--interval", "-i", metavar="SECONDS", help="Time between two snapshots.")
        ] = 1.0,
        duration: Annotated[
            float | None,
            typer.Option(
                "--duration",
                "-d",
                metavar="SECONDS",
                help="Stop after this long (default: Ctrl-C).",
                show_default=False,
            ),
        ] = None,
        count: Annotated[
            int | None,
            typer.Option(
                "--count", "-n", metavar="N", help="Stop after N snapshots of each process.", show_default=False
            ),
        ] = None,
        output: Annotated[
            Path | None,
            typer.Option(
                "--output",
                "-o",
                metavar="DIR",
                help="Also write the snapshots into this capture directory, for `sysbreak report DIR`.",
                show_default=False,
            ),
        ] = None,
        top: Annotated[int, typer.Option(metavar="N", help="Regions shown per process.")] = 8,
    ) -> None:
        if interval <= 0:
            raise SysbreakError(f"--interval must be more than 0, not {interval:g}", ExitCode.USAGE)
        if duration is not None and duration < 0:
            raise SysbreakError(f"--duration must be 0 or more, not {duration:g}", ExitCode.USAGE)
        if count is not None and count < 1:
            raise SysbreakError(f"--count must be 1 or more, not {count}", ExitCode.USAGE)
        if top < 1:
            raise SysbreakError(f"--top must be 1 or more, not {top}", ExitCode.USAGE)

        from rich.console import Console

        from sysbreak.watch import summary, watch

        # a pipe or a file gets a wide console: the Mapping column (paths) would otherwise be squeezed out
        console = Console(highlight=False, markup=False, width=None if sys.stdout.isatty() else 160)
        started = time.monotonic()
        result = watch(pids, interval=interval, duration=duration, count=count, output=output, top=top, console=console)
        console.print(summary(result, top=top, started=started, interval=interval), soft_wrap=True)
