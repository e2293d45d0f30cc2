"""``sysbreak watch``: follow /proc/PID/smaps over time, with no ptrace at all.

This is the first step of the story (seed 001: ``watch pmap -x PID``): before attaching a debugger to a production
server, see whether its RSS grows and *where*: which regions, how fast, anonymous or file-backed. Reading
``/proc/PID/smaps`` needs only the right to read it (the process's user, or root); it never stops the process.

Pure logic (testable without a live process): :func:`compare` matches the regions of two snapshots by address
overlap (the kernel merges adjacent anonymous mappings into one VMA whose start moves, so a region is not its
start address), :class:`Watched` keeps one process's history, :func:`verdict` says whether the growth is worth an
``attach``. :func:`watch` is the loop the CLI runs: a rich ``Live`` view on a terminal, plain lines elsewhere,
snapshots written into a capture directory (``sysbreak-capture/2``, ``command: "watch"``) that ``sysbreak report``
reads.
"""

from __future__ import annotations

import bisect
import os
import signal
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

from rich import box
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

from sysbreak.errors import ExitCode, SysbreakError
from sysbreak.maps import Snapshot, Vma, parse_smaps
from sysbreak.report._common import MIN_RATE_SECONDS, human_bytes, human_duration, plural

SPARK = "▁▂▃▄▅▆▇█"
SPARK_WIDTH = 40
DEFAULT_TOP = 8
#: the share of the RSS growth that must be in anonymous mappings for ``attach`` to be worth it
ANON_SHARE = 0.5
#: growth below this is noise (a buffer, a page of stack), not a leak to chase
MIN_GROWTH = 1 << 20


def kind_of(vma: Vma) -> str:
    """``anon`` (no file behind it: unnamed, ``[heap]``, ``[stack]``, ``[anon:...]``), ``file``, or ``special``
    (``[vdso]``, ``[vvar]``, ``[vsyscall]``)."""
    if vma.is_anonymous:
        return "anon"
    if vma.path.startswith("["):
        return "special"
    return "file"


@dataclass
class RegionChange:
    """One VMA of the newer snapshot against the bytes of the older one it overlaps."""

    start: int
    end: int
    perms: str
    path: str  # as pmap names it ("[anon]" for an unnamed anonymous mapping)
    kind: str  # see kind_of
    size: int
    rss: int
    first_size: int  # bytes of the older snapshot's VMAs this one overlaps (0: new)
    first_rss: int  # their Rss, pro-rated by overlap

    @property
    def rss_growth(self) -> int:
        return self.rss - self.first_rss

    @property
    def size_growth(self) -> int:
        return self.size - self.first_size

    @property
    def status(self) -> str:
        if self.first_size == 0:
            return "new"
        if self.size > self.first_size or self.rss > self.first_rss:
            return "grew"
        if self.size < self.first_size or self.rss < self.first_rss:
            return "shrank"
        return "same"


def _prorate(value: int, part: int, whole: int) -> int:
    return (value * part + whole // 2) // whole if whole > 0 else 0


def compare(first: Snapshot, now: Snapshot) -> list[RegionChange]:
    """Every VMA of ``now`` with the size and Rss (pro-rated by overlap) of the ``first`` VMAs it overlaps."""
    old = first.vmas
    starts = [v.start for v in old]
    out: list[RegionChange] = []
    for v in now.vmas:
        i = max(0, bisect.bisect_right(starts, v.start) - 1)
        fsize = frss = 0
        while i < len(old) and old[i].start < v.end:
            o = old[i]
            ov = min(o.end, v.end) - max(o.start, v.start)
            if ov > 0:
                fsize += ov
                frss += _prorate(o.rss or 0, ov, o.end - o.start)
            i += 1
        out.append(
            RegionChange(
                start=v.start,
                end=v.end,
                perms=v.perms,
                path=v.display_path,
                kind=kind_of(v),
                size=v.end - v.start,
                rss=v.rss or 0,
                first_size=fsize,
                first_rss=frss,
            )
        )
    return out


@dataclass
class Point:
    t: float  # CLOCK_MONOTONIC
    rss: int
    anon_rss: int
    file_rss: int
    size: int  # virtual size


def point_of(snap: Snapshot) -> Point:
    anon = file = size = 0
    for v in snap.vmas:
        size += v.end - v.start
        kind = kind_of(v)
        if kind == "anon":
            anon += v.rss or 0
        elif kind == "file":
            file += v.rss or 0
    return Point(t=snap.t or 0.0, rss=snap.rss or 0, anon_rss=anon, file_rss=file, size=size)


@dataclass
class Watched:
    """One process under watch: its first and latest snapshot and the totals of every one."""

    pid: int
    name: str = ""
    first: Snapshot | None = None
    last: Snapshot | None = None
    history: list[Point] = field(default_factory=list)
    exited: str | None = None  # why it can no longer be read ("exited")

    def add(self, snap: Snapshot) -> None:
        if self.first is None:
            self.first = snap
        self.last = snap
        self.history.append(point_of(snap))

    @property
    def span(self) -> float:
        return self.history[-1].t - self.history[0].t if len(self.history) >= 2 else 0.0

    def changes(self) -> list[RegionChange]:
        if self.first is None or self.last is None:
            return []
        return compare(self.first, self.last)


def rate_text(delta: int, span: float) -> str:
    """``+6.9 MiB/min`` when the span is long enough to support a rate (:data:`MIN_RATE_SECONDS`), else ``""``."""
    if span < MIN_RATE_SECONDS or delta == 0:
        return ""
    return f"{human_bytes(round(delta * 60 / span), signed=True)}/min"


def sparkline(values: Sequence[int], width: int = SPARK_WIDTH) -> str:
    """The last ``width`` values as block characters, scaled from their minimum to their maximum."""
    vals = list(values)[-width:]
    if not vals:
        return ""
    lo, hi = min(vals), max(vals)
    if hi == lo:
        return SPARK[0] * len(vals)
    top = len(SPARK) - 1
    return "".join(SPARK[round((v - lo) * top / (hi - lo))] for v in vals)


def top_changes(w: Watched, n: int = DEFAULT_TOP) -> list[RegionChange]:
    """The regions whose Rss or size changed most, biggest Rss growth first; unchanged ones are left out."""
    changed = [c for c in w.changes() if c.status != "same"]
    changed.sort(key=lambda c: (-abs(c.rss_growth), -abs(c.size_growth), c.start))
    return changed[:n]


def verdict(w: Watched) -> str:
    """One sentence: did RSS grow, where, and is the growth in anonymous mappings worth an ``attach``."""
    who = f"pid {w.pid}" + (f" ({w.name})" if w.name else "")
    if len(w.history) < 2:
        gone = f" before a second snapshot ({w.exited})" if w.exited else ""
        return f"{who}: only one snapshot{gone}; watch longer to see growth"
    a, b = w.history[0], w.history[-1]
    growth = b.rss - a.rss
    span = w.span
    when = f"in {human_duration(span)}"
    end = f" ({w.exited})" if w.exited else ""
    if growth <= 0:
        vgrowth = b.size - a.size
        virt = f"; its virtual size changed by {human_bytes(vgrowth, signed=True)}" if vgrowth else ""
        return (
            f"{who}: RSS did not grow {when} ({human_bytes(a.rss)} -> {human_bytes(b.rss)}){virt}{end}; "
            "nothing to attach for yet"
        )
    rate = rate_text(growth, span)
    head = f"{who}: RSS grew by {human_bytes(growth)} {when}" + (f" ({rate})" if rate else "")
    if growth < MIN_GROWTH:
        return f"{head}{end}: less than {human_bytes(MIN_GROWTH)}, too little to chase; watch longer"
    anon = b.anon_rss - a.anon_rss
    file = b.file_rss - a.file_rss
    grown = [c for c in top_changes(w, 3) if c.rss_growth > 0]
    where = ", ".join(f"{c.path} {c.start:#x} {human_bytes(c.rss_growth, signed=True)}" for c in grown)
    if anon > 0 and anon >= ANON_SHARE * growth:
        share = min(100, round(100 * anon / growth))
        return (
            f"{head}; {share}% of it ({human_bytes(anon)}) in anonymous mappings ({where}){end}: worth a "
            f"`sysbreak attach {w.pid}` to see the call stacks that map them"
        )
    return (
        f"{head}, mostly in file-backed mappings (+{human_bytes(max(file, 0))} file, "
        f"{human_bytes(anon, signed=True)} anonymous; {where}){end}: pages of mapped files and libraries, which no "
        "mmap call stack explains; an `attach` is not the next step"
    )


# --- the view -----------------------------------------------------------------------------------------------------


def _kb(n: int) -> str:
    return f"{n // 1024:,}"


def render(ws: Sequence[Watched], *, top: int = DEFAULT_TOP, started: float, interval: float) -> RenderableType:
    """The whole view: per process a totals line with a sparkline, then the regions that changed most."""
    parts: list[RenderableType] = []
    now = time.monotonic()
    parts.append(
        Text(
            f"sysbreak watch: {plural(len(ws), 'process', 'processes')}, a snapshot of /proc/PID/smaps every "
            f"{interval:g} s for {human_duration(now - started)} (no ptrace; the processes are never stopped)",
            style="bold",
        )
    )
    for w in ws:
        parts.append(Text(""))
        if not w.history:
            parts.append(Text(f"pid {w.pid}: no snapshot yet" + (f" ({w.exited})" if w.exited else "")))
            continue
        a, b = w.history[0], w.history[-1]
        span = w.span
        growth = b.rss - a.rss
        rate = rate_text(growth, span)
        line = Text.assemble(
            (f"pid {w.pid}" + (f" {w.name}" if w.name else ""), "bold"),
            f"  RSS {human_bytes(b.rss)} ",
            (
                f"({human_bytes(growth, signed=True)}" + (f", {rate}" if rate else "") + ")",
                "bold red" if growth > 0 else "",
            ),
            f"  anon {human_bytes(b.anon_rss)} ({human_bytes(b.anon_rss - a.anon_rss, signed=True)})",
            f"  file {human_bytes(b.file_rss)} ({human_bytes(b.file_rss - a.file_rss, signed=True)})",
            f"  virtual {human_bytes(b.size)}",
            ("  " + sparkline([p.rss for p in w.history]), "cyan"),
            (f"  [{w.exited}]" if w.exited else "", "yellow"),
        )
        parts.append(line)
        changes = top_changes(w, top)
        if not changes:
            parts.append(Text("  no region changed since the first snapshot", style="dim"))
            continue
        table = Table(box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False, header_style="bold")
        for name, justify in (
            ("Address", "left"),
            ("Kbytes", "right"),
            ("RSS kB", "right"),
            ("RSS change", "right"),
            ("rate", "right"),
            ("kind", "left"),
            ("Mode", "left"),
            ("Mapping", "left"),
        ):
            table.add_column(name, justify=justify, no_wrap=name != "Mapping", overflow="fold")  # type: ignore[arg-type]
        for c in changes:
            status = c.status
            change = human_bytes(c.rss_growth, signed=True) if c.rss_growth else "0"
            if status == "new":
                change = f"new {change}"
            elif c.rss_growth == 0 and c.size_growth:
                change = f"virtual {human_bytes(c.size_growth, signed=True)}"
            table.add_row(
                f"{c.start:016x}",
                _kb(c.size),
                _kb(c.rss),
                Text(change, style="bold red" if c.rss_growth > 0 else ("green" if c.rss_growth < 0 else "")),
                rate_text(c.rss_growth, span),
                c.kind,
                c.perms,
                Text(c.path),  # a path is text, never markup ("[anon]", "[heap]" would vanish as tags)
            )
        parts.append(table)
    return Group(*parts)


# --- the loop ----------------------------------------------------------------------------------------------------


def _comm(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/comm", encoding="utf-8", errors="replace") as fh:
            return fh.read().strip()
    except OSError:
        return ""


def read_raw(pid: int) -> tuple[bytes | None, str | None]:
    """The raw text of /proc/PID/smaps, or (None, why) when it cannot be read (any more)."""
    try:
        with open(f"/proc/{pid}/smaps", "rb") as fh:
            raw = fh.read()
    except FileNotFoundError:
        return None, "exited"
    except ProcessLookupError:
        return None, "exited"
    except PermissionError:
        return None, f"not allowed to read /proc/{pid}/smaps (run as its user, or as root)"
    except OSError as e:
        return None, f"cannot read /proc/{pid}/smaps ({e.strerror})"
    if not raw:  # a process that is exiting (a zombie) has no mappings left
        return None, "exited"
    return raw, None


def check_pids(pids: Sequence[int]) -> None:
    """A clear error, before anything starts, for a pid that is not there or whose smaps cannot be read."""
    if not pids:
        raise SysbreakError("give at least one PID to watch", ExitCode.USAGE)
    if len(set(pids)) != len(pids):
        raise SysbreakError("a PID is given twice", ExitCode.USAGE)
    for pid in pids:
        if pid <= 0:
            raise SysbreakError(f"{pid} is not a process id", ExitCode.USAGE)
        raw, why = read_raw(pid)
        if raw is None:
            if why == "exited":
                raise SysbreakError(f"no process {pid}", ExitCode.TARGET)
            raise SysbreakError(f"pid {pid}: {why}", ExitCode.TARGET)


@dataclass
class WatchResult:
    watched: list[Watched]
    reason: str  # "duration", "count", "exited", "interrupted", "terminated"
    output: Path | None


class _Stop(Exception):
    pass


def watch(
    pids: Sequence[int],
    *,
    interval: float = 1.0,
    duration: float | None = None,
    count: int | None = None,
    output: str | os.PathLike[str] | None = None,
    top: int = DEFAULT_TOP,
    console: Console | None = None,
    live: bool | None = None,
    on_snapshot: Callable[[Watched], None] | None = None,
) -> WatchResult:
    """Snapshot every pid's smaps every ``interval`` seconds until ``duration`` seconds, ``count`` snapshots,
    every process gone, or SIGINT/SIGTERM. ``live``: redraw in place (default: when the console is a terminal);
    otherwise one line per process and snapshot is printed. Returns what was seen."""
    from sysbreak import __version__
    from sysbreak.capture import directory as capdir
    from sysbreak.driver.process import cmdline, exe

    check_pids(pids)
    if interval <= 0:
        raise SysbreakError(f"--interval must be more than 0, not {interval:g}", ExitCode.USAGE)
    console = console or Console(stderr=False, highlight=False)
    live = console.is_terminal if live is None else live
    out_dir: Path | None = None
    meta: capdir.Meta | None = None
    writer: capdir.Snapshotter | None = None
    if output is not None:
        out_dir = capdir.create(output)
        meta = capdir.Meta(
            out_dir,
            command="watch",
            pid=pids[0],
            pids=list(pids),
            cmdline=cmdline(pids[0]),
            exe=exe(pids[0]),
            processes=[{"pid": p, "argv": cmdline(p), "exe": exe(p)} for p in pids],
            started=capdir.now_wall(),
            t0=time.monotonic(),
            tool=f"sysbreak {__version__}",
            syscalls=[],
            interval=interval,
            duration=duration,
        )
        writer = capdir.Snapshotter(out_dir, pids[0], interval=0, several=len(pids) > 1)
    ws = [Watched(pid=p, name=_comm(p)) for p in pids]
    started = time.monotonic()
    reason = "exited"
    taken = 0

    def on_signal(signum: int, frame: FrameType | None) -> None:
        raise _Stop("interrupted" if signum == signal.SIGINT else "terminated")

    old_handlers: dict[int, Any] = {}
    try:
        for sig in (signal.SIGINT, signal.SIGTERM):
            old_handlers[sig] = signal.signal(sig, on_signal)
    except ValueError:  # not the main thread: no signal handling (tests)
        pass

    def one_round() -> bool:
        """Snapshot every live process; False when none is left."""
        nonlocal taken
        alive = False
        for w in ws:
            if w.exited:
                continue
            raw, why = read_raw(w.pid)
            t = time.monotonic()
            if raw is None:
                w.exited = why
                if not live:
                    console.print(f"pid {w.pid}: {why}", highlight=False)
                continue
            alive = True
            text = raw.decode("utf-8", "replace")
            try:
                snap = parse_smaps(text, source=f"/proc/{w.pid}/smaps", t=t)
            except SysbreakError as e:  # a kernel that prints something new: say it, keep watching the others
                w.exited = f"unreadable smaps: {e}"
                continue
            snap.pid = w.pid
            w.add(snap)
            if writer is not None:
                writer.write(raw, t, capdir.now_wall(), pid=w.pid)
            if on_snapshot is not None:
                on_snapshot(w)
            if not live:
                a, b = w.history[0], w.history[-1]
                console.print(
                    f"{human_duration(t - started):>8}  pid {w.pid}  RSS {human_bytes(b.rss)} "
                    f"({human_bytes(b.rss - a.rss, signed=True)})  anon {human_bytes(b.anon_rss)}  "
                    f"file {human_bytes(b.file_rss)}  {sparkline([p.rss for p in w.history], 20)}",
                    highlight=False,
                    soft_wrap=True,
                )
        taken += 1
        return alive

    view: Live | None = None
    try:
        if live:
            view = Live(console=console, refresh_per_second=4, transient=True, auto_refresh=False)
            view.start()
        next_t = time.monotonic()
        while True:
            if not one_round():
                reason = "exited"
                break
            if view is not None:
                view.update(render(ws, top=top, started=started, interval=interval), refresh=True)
            if count is not None and taken >= count:
                reason = "count"
                break
            next_t += interval
            if duration is not None and next_t - started > duration + 1e-6:
                # one last snapshot at the end of the duration
                pause = started + duration - time.monotonic()
                if pause > 0:
                    time.sleep(pause)
                one_round()
                reason = "duration"
                break
            pause = next_t - time.monotonic()
            if pause > 0:
                time.sleep(pause)
            else:
                next_t = time.monotonic()
    except _Stop as stop:
        reason = str(stop)
    finally:
        if view is not None:
            view.stop()
        for signum, handler in old_handlers.items():
            signal.signal(signum, handler)
        if writer is not None:
            writer.close()
        if meta is not None:
            meta.update(
                ended=capdir.now_wall(),
                t1=time.monotonic(),
                end_reason=reason,
                events=0,
                target_alive=not ws[0].exited,
                snapshots=sum(len(w.history) for w in ws),
            )
    return WatchResult(watched=ws, reason=reason, output=out_dir)


def summary(result: WatchResult, *, top: int = DEFAULT_TOP, started: float, interval: float) -> RenderableType:
    """What is printed when the watch ends: the last view, then one verdict per process."""
    verdicts = [Text(verdict(w), style="bold") for w in result.watched]
    parts: list[RenderableType] = [render(result.watched, top=top, started=started, interval=interval), Text("")]
    parts.extend(verdicts)
    if result.output is not None:
        parts.append(Text(f"snapshots written to {result.output}: `sysbreak report {result.output}` reads them"))
    return Group(*parts)
