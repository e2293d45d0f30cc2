"""``sysbreak demo``: build a small leaking server, capture it for a few seconds, print the report."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Annotated

import typer

from sysbreak.driver import demo as demo_build
from sysbreak.driver.frontend import Frontend, human_kb, summary_line
from sysbreak.driver.session import CaptureOptions, CaptureResult, CaptureSession
from sysbreak.errors import SysbreakError


def _say(message: str) -> None:
    print(f"sysbreak demo: {message}", file=sys.stderr, flush=True)


def _report(res: CaptureResult) -> bool:
    """Print the text report of the capture (its summary line when it cannot be analysed)."""
    from sysbreak.cli.report import load_analysis
    from sysbreak.report import render

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
            "invisible to LD_PRELOAD heap profilers), captures it with `sysbreak run --duration N`, and prints the "
            "report."
        ),
    )
    def command(
        seconds: Annotated[float, typer.Option("--seconds", "-t", help="How long to capture.")] = 4.0,
        keep: Annotated[
            Path | None,
            typer.Option("--keep", metavar="DIR", help="Keep the capture in DIR (default: a temporary directory)."),
        ] = None,
    ) -> None:
        if seconds <= 0:
            raise SysbreakError("--seconds must be more than 0", 2)
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
            f"running it under sysbreak for {seconds:g} s: every 50 ms it registers a 256 KiB KV block "
            + ("through libucm" if built.with_ucm else "with mmap()")
            + " and never releases it"
        )
        opts = CaptureOptions(
            duration=seconds, output=str(out), interval=0.5, wait=False, program_stdout=subprocess.DEVNULL
        )
        session = CaptureSession(opts, argv=argv)
        try:
            res = Frontend().capture(session, summary=False)
        finally:
            if session.child is not None and session.child.poll() is None:
                session.child.send_signal(signal.SIGTERM)
                session.child.wait()
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
