"""``sysbreak demo``: build a small leaking server, capture it for a few seconds, print the report."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from sysbreak.errors import SysbreakError

if TYPE_CHECKING:
    from sysbreak.driver.session import CaptureResult


def _say(message: str) -> None:
    print(f"sysbreak demo: {message}", file=sys.stderr, flush=True)


def _report(res: CaptureResult) -> bool:
    """Print the text report of the capture (its summary line when it cannot be analysed)."""
    from sysbreak.driver.frontend import summary_line
    from sysbreak.report import load_analysis, render

    try:
        analysis = load_analysis(res.directory)
    except SysbreakError as err:
        _say(f"no report: {err}")
        print(summary_line(res))
        return False
    color = sys.stdout.isatty()
    width = shutil.get_terminal_size((100, 24)).columns if color else None
    sys.stdout.write(render(analysis, "text", top=3, color=color, width=width))
    sys.stdout.flush()
    return True


def register(app: typer.Typer) -> None:
    @app.command(
        "demo",
        help=(
            "See sysbreak find a leak in a few seconds: builds a small server (a stand-in for a UCX decode worker "
            "whose registered KV blocks are never released; its mmap() calls go through libucm's raw syscall(), "
            "invisible to LD_PRELOAD heap profilers), captures it with `sysbreak run --duration SECONDS`, and prints "
            "the report."
        ),
    )
    def command(
        duration: Annotated[
            float, typer.Option("--duration", "-d", metavar="SECONDS", help="How long to capture.")
        ] = 4.0,
        seconds: Annotated[
            float | None, typer.Option("--seconds", "-t", hidden=True)  # the old name of --duration
        ] = None,
        keep: Annotated[
            Path | None,
            typer.Option("--keep", metavar="DIR", help="Keep the capture in DIR (default: a temporary directory)."),
        ] = None,
    ) -> None:
        from sysbreak.driver import demo as demo_build
        from sysbreak.driver.frontend import Frontend, human_kb
        from sysbreak.driver.session import CaptureOptions, CaptureSession

        if seconds is not None:
            duration = seconds
        if duration <= 0:
            raise SysbreakError("--duration must be more than 0 seconds")
        _say("building the demo server (leaky_server.c) ...")
        built = demo_build.build()
        if built.warning:
            _say(f"warning: {built.warning}")
        tmp = None
        if keep is None:
            tmp = tempfile.mkdtemp(prefix="sysbreak-demo-")
            out = Path(tmp) / "capture"
        else:
            out = keep
        argv = [str(built.binary), "--interval-ms", "50", "--block-kb", "256"]
        _say(
            f"running it under sysbreak for {duration:g} s: every 50 ms it registers a 256 KiB KV block "
            + ("through libucm" if built.with_ucm else "with mmap()")
            + " and never releases it"
        )
        opts = CaptureOptions(duration=duration, output=str(out), interval=0.5, program_stdout=subprocess.DEVNULL)
        session = CaptureSession(opts, argv=argv)
        try:
            # the demo server prints nothing to the terminal but errors: a live status line is safe
            res = Frontend(program_writes_here=False).capture(session, summary=False)
        finally:
            session.end_program(grace=2.0)
        try:
            rss = ""
            if res.rss_first_kb is not None and res.rss_last_kb is not None:
                rss = f"; its RSS grew from {human_kb(res.rss_first_kb)} to {human_kb(res.rss_last_kb)}"
            _say(f"caught {res.events} calls in {res.elapsed:.1f} s{rss}. The report:\n")
            _report(res)
            if keep is not None:
                print(f"\ncapture kept in {keep}; see it again with: sysbreak report {keep}")
            else:
                print("\n(the capture was temporary; keep one with: sysbreak demo --keep DIR)")
        finally:
            if tmp is not None:
                shutil.rmtree(tmp, ignore_errors=True)
