"""What ``sysbreak run``/``attach`` print: a live progress line on a terminal, one summary line otherwise."""

from __future__ import annotations

import shlex
import sys
from typing import IO

from rich.console import Console
from rich.live import Live
from rich.text import Text

from sysbreak.driver.session import CaptureResult, CaptureSession, Progress


def human_kb(kb: int | None) -> str:
    if kb is None:
        return "?"
    value = float(kb) * 1024
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"  # pragma: no cover


def counts_text(counts: dict[str, int], order: list[str]) -> str:
    names = [n for n in order if n in counts] + sorted(n for n in counts if n not in order)
    return ", ".join(f"{n} {counts[n]}" for n in names)


def progress_text(p: Progress, order: list[str]) -> str:
    if p.phase != "capturing":
        what = {"attaching": "attaching to", "arming": "placing breakpoints in", "stopping": "detaching from"}
        return f"sysbreak: {what.get(p.phase, p.phase)} pid {p.pid} ..."
    detail = counts_text(p.counts, order)
    events = f"{p.events} event{'s' if p.events != 1 else ''}" + (f" ({detail})" if detail else "")
    return f"sysbreak: pid {p.pid}  {p.elapsed:5.1f} s  {events}  RSS {human_kb(p.rss_kb)}   Ctrl-C stops"


_REASONS = {
    "duration": "--duration reached",
    "max-events": "--max-events reached",
    "exited": "the program exited",
    "interrupted": "interrupted (Ctrl-C)",
    "terminated": "terminated (SIGTERM)",
    "hangup": "hung up (SIGHUP)",
    "gdb-died": "GDB died",
    "error": "an error",
    "clear": "cleared",
}


def summary_line(res: CaptureResult) -> str:
    detail = counts_text(res.counts, res.syscalls)
    events = f"{res.events} event{'s' if res.events != 1 else ''}" + (f" ({detail})" if detail else "")
    rss = ""
    if res.rss_first_kb is not None and res.rss_last_kb is not None:
        rss = f"; RSS {human_kb(res.rss_first_kb)} -> {human_kb(res.rss_last_kb)}"
    state = "runs on" if res.target_alive else "is gone"
    return (
        f"sysbreak: captured {events} from pid {res.pid} in {res.elapsed:.1f} s, stopped by "
        f"{_REASONS.get(res.end_reason, res.end_reason)}{rss}; {res.snapshots} smaps snapshot(s); "
        f"the process {state}"
    )


def next_line(res: CaptureResult) -> str:
    return f"capture: {res.directory}   next: sysbreak report {shlex.quote(str(res.directory))}"


class Frontend:
    """Drives a :class:`CaptureSession` with a progress display; prints the summary and the next command."""

    def __init__(self, quiet: bool = False, out: IO[str] | None = None, err: IO[str] | None = None) -> None:
        self.quiet = quiet
        self.out = out or sys.stdout
        self.err = err or sys.stderr
        self.live_ok = not quiet and self.out.isatty()
        self.console = Console(file=self.out, highlight=False) if self.live_ok else None
        self._live: Live | None = None
        self._order: list[str] = []

    def say(self, message: str) -> None:
        if self.quiet:
            return
        if self._live is not None and self.console is not None:
            self.console.print(Text(f"sysbreak: {message}"))
        else:
            print(f"sysbreak: {message}", file=self.err, flush=True)

    def _progress(self, p: Progress) -> None:
        if self._live is not None:
            self._live.update(Text(progress_text(p, self._order), style="bold" if p.phase == "capturing" else ""))

    def capture(self, session: CaptureSession, summary: bool = True) -> CaptureResult:
        self._order = session.syscalls
        session.say = self.say
        if self.live_ok and self.console is not None:
            session.on_progress = self._progress
            with Live(
                Text("sysbreak: starting ..."), console=self.console, refresh_per_second=8, transient=True
            ) as live:
                self._live = live
                try:
                    res = session.execute()
                finally:
                    self._live = None
        else:
            res = session.execute()
        self.report(res, summary)
        return res

    def report(self, res: CaptureResult, summary: bool = True) -> None:
        for warning in res.warnings:
            print(f"sysbreak: warning: {warning}", file=self.err, flush=True)
        if not summary:
            return
        print(summary_line(res), file=self.out, flush=True)
        print(next_line(res), file=self.out, flush=True)
