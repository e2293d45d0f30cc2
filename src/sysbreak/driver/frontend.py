"""What ``sysbreak run``/``attach`` print while they capture, and the lines they end with.

Progress goes to stderr and only to a terminal, in one of two ways:

* a live status line, redrawn in place, when no traced program writes to that terminal (``attach`` to a
  process whose output goes elsewhere, ``sysbreak demo``);
* plain lines, one every few seconds, when the program does (``sysbreak run`` keeps the program's stdout and
  stderr on the terminal): a redrawn line would be torn up by the program's own output and scroll.

With stderr not a terminal (a log file, CI) nothing is printed until the summary, as strace and perf do.
"""

from __future__ import annotations

import os
import shlex
import signal
import stat
import sys
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sysbreak.driver.session import CaptureResult, CaptureSession, Progress

#: plain progress lines: the first after this many seconds of capture, then one every PLAIN_EVERY seconds
PLAIN_FIRST = 1.0
PLAIN_EVERY = 5.0


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


def _calls(n: int, counts: dict[str, int], order: list[str]) -> str:
    detail = counts_text(counts, order)
    return f"{n} call{'s' if n != 1 else ''}" + (f" ({detail})" if detail else "")


def progress_text(p: Progress, order: list[str], *, hint: bool = True) -> str:
    if p.phase != "capturing":
        what = {"attaching": "attaching to", "arming": "placing breakpoints in", "stopping": "detaching from"}
        return f"sysbreak: {what.get(p.phase, p.phase)} pid {p.pid} ..."
    line = f"sysbreak: pid {p.pid}  {p.elapsed:5.1f} s  {_calls(p.events, p.counts, order)}  RSS {human_kb(p.rss_kb)}"
    return line + ("   Ctrl-C ends the capture" if hint else "")


def end_reason_text(
    reason: str, *, duration: float | None = None, max_events: int | None = None, overshoot: int = 0
) -> str:
    """Why a capture ended, as the end of "the capture ran until ...": ``the program exited``."""
    if reason == "duration":
        return f"--duration {duration:g} s was up" if duration else "--duration was up"
    if reason == "max-events":
        if not max_events:
            return "--max-events was reached"
        more = f" ({overshoot} more already in flight were kept)" if overshoot else ""
        return f"--max-events {max_events} calls were caught{more}"
    texts = {
        "exited": "the program exited",
        "interrupted": "you pressed Ctrl-C (SIGINT)",
        "terminated": "sysbreak got SIGTERM",
        "hangup": "sysbreak got SIGHUP (terminal closed)",
        "gdb-died": "GDB died",
        "error": "an error stopped it",
        "clear": "`sysbreak clear` removed the breakpoints",
    }
    return texts.get(reason, reason)


def summary_line(res: CaptureResult, *, after: str | None = None) -> str:
    """One sentence: what was caught, for how long, why it ended, and what became of the process."""
    rss = ""
    if res.rss_first_kb is not None and res.rss_last_kb is not None:
        rss = f"; RSS {human_kb(res.rss_first_kb)} -> {human_kb(res.rss_last_kb)}"
    snaps = f"{res.snapshots} smaps snapshot{'s' if res.snapshots != 1 else ''}"
    if after is None:
        if res.target_alive:
            after = "the process runs on, untraced"
        elif res.exit_status is not None:
            after = f"it {status_text(res.exit_status)}"
        else:
            after = "the process has exited"
    why = end_reason_text(res.end_reason, duration=res.duration, max_events=res.max_events, overshoot=res.overshoot)
    return (
        f"sysbreak: caught {_calls(res.events, res.counts, res.syscalls)} from pid {res.pid}{_more(res)} "
        f"in {res.elapsed:.1f} s, "
        f"until {why}{rss}; {snaps}; {after}"
    )


def status_text(status: int | None) -> str:
    """A program's end the way a person says it: ``exited with status 3``, ``was killed by SIGTERM``."""
    if status is None:
        return "has exited"
    if status >= 0:
        return f"exited with status {status}"
    try:
        return f"was killed by {signal.Signals(-status).name}"
    except ValueError:
        return f"was killed by signal {-status}"


def _more(res: CaptureResult) -> str:
    """ " and 3 more processes" when the capture followed a process tree (driver/tree.py)."""
    n = len(res.processes) - 1
    return f" and {n} more process{'es' if n != 1 else ''}" if n > 0 else ""


def next_line(res: CaptureResult) -> str:
    return f"capture: {res.directory}   next: sysbreak report {shlex.quote(str(res.directory))}"


def _tty_rdev(fd: int) -> int | None:
    try:
        st = os.fstat(fd)
    except OSError:
        return None
    return st.st_rdev if stat.S_ISCHR(st.st_mode) and os.isatty(fd) else None


def writes_to_terminal(pid: int, rdev: int) -> bool:
    """Whether process ``pid`` has the terminal ``rdev`` as its stdout or stderr (it would print over a
    redrawn status line)."""
    for fd in (1, 2):
        try:
            st = os.stat(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if stat.S_ISCHR(st.st_mode) and st.st_rdev == rdev:
            return True
    return False


class Frontend:
    """Drives a :class:`CaptureSession` with progress on stderr; prints the summary and the next command."""

    def __init__(
        self,
        quiet: bool = False,
        out: IO[str] | None = None,
        err: IO[str] | None = None,
        *,
        program_writes_here: bool | None = None,
    ) -> None:
        """``program_writes_here``: whether the traced program writes to sysbreak's terminal (None: find out,
        from the session: a ``run`` program keeps sysbreak's streams, an attached one is looked up in /proc)."""
        self.quiet = quiet
        self.out = out or sys.stdout
        self.err = err or sys.stderr
        self.program_writes_here = program_writes_here
        self._tty: int | None = None
        if not quiet:
            try:
                self._tty = _tty_rdev(self.err.fileno())
            except (AttributeError, OSError, ValueError):
                self._tty = None
        self._live: Any = None
        self._console: Any = None
        self._order: list[str] = []
        self._next_plain = PLAIN_FIRST

    def say(self, message: str) -> None:
        if self.quiet:
            return
        if self._live is not None and self._console is not None:
            from rich.text import Text

            self._console.print(Text(f"sysbreak: {message}"))
        else:
            print(f"sysbreak: {message}", file=self.err, flush=True)

    def _shared(self, session: CaptureSession) -> bool:
        if self.program_writes_here is not None:
            return self.program_writes_here
        assert self._tty is not None
        if session.argv is not None:  # run: the program has sysbreak's stdout (unless redirected) and stderr
            ours = [_tty_rdev(2)]
            if session.opts.program_stdout is None:
                ours.append(_tty_rdev(1))
            return self._tty in ours
        return writes_to_terminal(session.pid, self._tty)

    def _live_progress(self, p: Progress) -> None:
        if self._live is not None:
            from rich.text import Text

            self._live.update(Text(progress_text(p, self._order), style="bold" if p.phase == "capturing" else ""))

    def _plain_progress(self, p: Progress) -> None:
        if p.phase != "capturing" or p.elapsed < self._next_plain:
            return
        while self._next_plain <= p.elapsed:
            self._next_plain = PLAIN_EVERY if self._next_plain < PLAIN_EVERY else self._next_plain + PLAIN_EVERY
        print(progress_text(p, self._order, hint=False), file=self.err, flush=True)

    def capture(self, session: CaptureSession, summary: bool = True) -> CaptureResult:
        self._order = session.syscalls
        session.say = self.say
        if self._tty is None:
            res = session.execute()
        elif self._shared(session):
            session.on_progress = self._plain_progress
            res = session.execute()
        else:
            res = self._run_live(session)
        self.report(res, summary)
        return res

    def _run_live(self, session: CaptureSession) -> CaptureResult:
        from rich.console import Console
        from rich.live import Live
        from rich.text import Text

        self._console = Console(file=self.err, highlight=False)
        session.on_progress = self._live_progress
        with Live(Text("sysbreak: starting ..."), console=self._console, refresh_per_second=8, transient=True) as live:
            self._live = live
            try:
                return session.execute()
            finally:
                self._live = None

    def warnings(self, res: CaptureResult) -> None:
        for warning in res.warnings:
            print(f"sysbreak: warning: {warning}", file=self.err, flush=True)

    def report(self, res: CaptureResult, summary: bool = True, *, after: str | None = None) -> None:
        self.warnings(res)
        if summary:
            self.summary(res, after=after)

    def summary(self, res: CaptureResult, *, after: str | None = None) -> None:
        print(summary_line(res, after=after), file=self.out, flush=True)
        print(next_line(res), file=self.out, flush=True)
