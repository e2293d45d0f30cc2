"""Compare two analyses (say before and after ``UCX_MEM_MMAP_HOOK_MODE=none``) stack by stack.

Stacks are matched by their *frame signature*, never by ids, pcs or labels (ids and pcs change from run to run,
ASLR moves every module, and a label names one frame only): for every native frame *outside the allocator and hook
layers* (:func:`sysbreak.analysis.labels.in_layers`: libc, the loader, libucm/libucs, ...) its function and module
base name, or, when the function is unknown, the module base name and the offset in it (the same in every run of
the same build); then every Python frame's function and file base name. Leaving the layers out is what matches the
program's own stack across a change that removes a layer: with ``UCX_MEM_MMAP_HOOK_MODE=none`` the same
``register_kv_block`` reaches the kernel through libc instead of libucm. A stack made only of layer frames (the
dynamic loader's) is matched by all its frames. Stacks of one analysis with the same signature are added together.

Captures of several processes (``run -f``, ``attach --children``) are compared as their merged trees: a stack is
matched whichever processes made it (pids change from run to run), and each side says the processes it was seen
in (``pids``; in text and HTML as ``COMM-PID``, the collapsed reporter's process frames), with a ``processes``
total per side.

The headline says what changed in the process's RSS growth (per minute when the captures differ in length by more
than 10%), then the matched stack whose resident growth changed most (live bytes without snapshots).
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass, field
from typing import Any

from rich import box
from rich.table import Table
from rich.text import Text

from sysbreak.analysis.labels import in_layers
from sysbreak.analysis.model import Analysis, Frame, PyFrame, StackStats
from sysbreak.report._common import (
    MIN_RATE_SECONDS,
    human_bytes,
    human_duration,
    module_name,
    plural,
    region_growth,
    rss_change,
    rss_span,
    stack_label,
    text_console,
)

FORMAT = "sysbreak-diff/2"
DEFAULT_TOP = 20

Signature = tuple[tuple[Any, ...], ...]


def _frame_part(frame: Frame) -> tuple[Any, ...]:
    if frame.function:
        return ("fn", frame.function, module_name(frame.module))
    return ("at", module_name(frame.module), frame.offset if frame.module else None)


def signature(stack: StackStats) -> Signature:
    """What identifies a stack across runs (see the module docstring)."""
    own = [f for f in stack.frames if not in_layers(f)]
    parts: list[tuple[Any, ...]] = [_frame_part(f) for f in (own or stack.frames)]
    for py in stack.python:
        parts.append(("py", py.function, os.path.basename(py.file)))
    return tuple(parts)


@dataclass
class Side:
    """One analysis' numbers for one matched stack."""

    ids: list[int] = field(default_factory=list)
    pids: list[int] = field(default_factory=list)  # the processes it was seen in, in this analysis
    live_bytes: int = 0
    rss_bytes: int = 0
    rss_growth_bytes: int = 0
    peak_bytes: int = 0
    growth_bytes: int = 0
    mapped_bytes: int = 0
    events: int = 0
    kind: str = "candidate"

    def add(self, stack: StackStats) -> None:
        if not self.ids:
            self.kind = stack.kind
        elif stack.kind == "candidate":
            self.kind = "candidate"
        self.ids.append(stack.id)
        self.pids = sorted({*self.pids, *stack.pids})
        self.live_bytes += stack.live_bytes
        self.rss_bytes += stack.rss_bytes
        self.rss_growth_bytes += stack.resident_growth
        self.peak_bytes = max(self.peak_bytes, stack.peak_bytes)
        self.growth_bytes += stack.growth_bytes
        self.mapped_bytes += stack.mapped_bytes
        self.events += stack.events


@dataclass
class StackChange:
    signature: Signature
    label: str
    frames: tuple[Frame, ...]
    python: tuple[PyFrame, ...]
    a: Side | None = None
    b: Side | None = None

    @property
    def status(self) -> str:
        if self.a is None:
            return "only_b"
        if self.b is None:
            return "only_a"
        return "both"

    def _delta(self, name: str) -> int:
        after = getattr(self.b, name) if self.b is not None else 0
        before = getattr(self.a, name) if self.a is not None else 0
        return int(after - before)

    @property
    def live_delta(self) -> int:
        return self._delta("live_bytes")

    @property
    def rss_growth_delta(self) -> int:
        return self._delta("rss_growth_bytes")

    @property
    def kind(self) -> str:
        kinds = {side.kind for side in (self.a, self.b) if side is not None}
        return "candidate" if "candidate" in kinds else ("library" if "library" in kinds else "idle")

    @property
    def growth_delta(self) -> int:
        return self._delta("growth_bytes")

    @property
    def events_delta(self) -> int:
        return self._delta("events")

    @property
    def mapped_delta(self) -> int:
        return self._delta("mapped_bytes")

    @property
    def rss_delta(self) -> int:
        return self._delta("rss_bytes")


@dataclass
class Totals:
    source: str
    duration: float
    events: int
    by_syscall: dict[str, int]
    stacks: int
    live_bytes: int
    mapped_bytes: int
    growth_bytes: int  # bytes the regions that are new or grew gained
    rss_growth_bytes: int | None  # process RSS, last snapshot minus first
    rss_span: float  # seconds between the first and the last snapshot
    unexplained_bytes: int
    processes: int = 1  # the processes of the capture (several: run -f, attach --children)

    @staticmethod
    def of(analysis: Analysis) -> Totals:
        return Totals(
            source=analysis.source,
            duration=analysis.duration,
            events=analysis.events,
            by_syscall=dict(analysis.by_syscall),
            stacks=len(analysis.stacks),
            live_bytes=sum(s.live_bytes for s in analysis.stacks),
            mapped_bytes=sum(s.mapped_bytes for s in analysis.stacks),
            growth_bytes=region_growth(analysis),
            rss_growth_bytes=rss_change(analysis),
            rss_span=rss_span(analysis),
            unexplained_bytes=sum(r.unexplained_bytes for r in analysis.regions),
            processes=max(1, len(analysis.processes)),
        )


@dataclass
class AnalysisDiff:
    a: Analysis
    b: Analysis
    a_totals: Totals
    b_totals: Totals
    stacks: list[StackChange]  # biggest change first

    @property
    def only_a(self) -> list[StackChange]:
        return [c for c in self.stacks if c.status == "only_a"]

    @property
    def only_b(self) -> list[StackChange]:
        return [c for c in self.stacks if c.status == "only_b"]

    @property
    def common(self) -> list[StackChange]:
        return [c for c in self.stacks if c.status == "both"]

    @property
    def several_processes(self) -> bool:
        """Whether either side is a capture of several processes (then each stack says its processes)."""
        return max(self.a_totals.processes, self.b_totals.processes) > 1


def diff(a: Analysis, b: Analysis) -> AnalysisDiff:
    """Match the stacks of ``a`` and ``b`` by signature and compute what changed from ``a`` to ``b``."""
    changes: dict[Signature, StackChange] = {}
    for side, analysis in (("a", a), ("b", b)):
        for stack in analysis.stacks:
            key = signature(stack)
            change = changes.get(key)
            if change is None:
                change = changes[key] = StackChange(key, stack_label(stack), stack.frames, stack.python)
            numbers = getattr(change, side)
            if numbers is None:
                numbers = Side()
                setattr(change, side, numbers)
            numbers.add(stack)
    kind_order = {"candidate": 0, "idle": 1, "library": 2}
    order = sorted(
        changes.values(),
        key=lambda c: (
            kind_order.get(c.kind, 1),
            -abs(c.rss_growth_delta),
            -abs(c.live_delta),
            -abs(c.growth_delta),
            -abs(c.events_delta),
            c.label,
        ),
    )
    return AnalysisDiff(a=a, b=b, a_totals=Totals.of(a), b_totals=Totals.of(b), stacks=order)


def _pct(before: float, after: float) -> str:
    if before == 0:
        return "new" if after else "no change"
    return f"{100.0 * (after - before) / abs(before):+.0f}%"


def _rss_phrase(growth: int, seconds: float, per_min: bool) -> str:
    if per_min and seconds > 0:
        value = f"{human_bytes(growth * 60.0 / seconds)}/min"
    else:
        value = human_bytes(growth)
        if seconds > 0:
            value += f" in {human_duration(seconds)}"
    return value


def diff_headline(d: AnalysisDiff) -> str:
    """One sentence: how the process's RSS growth changed from A to B, and the matched stack whose resident growth
    (live bytes without snapshots) changed most, with both sides' numbers."""
    ta, tb = d.a_totals, d.b_totals
    resident = ta.rss_growth_bytes is not None and tb.rss_growth_bytes is not None
    if resident:
        assert ta.rss_growth_bytes is not None and tb.rss_growth_bytes is not None
        sa, sb = ta.rss_span or ta.duration, tb.rss_span or tb.duration
        per_min = min(sa, sb) >= MIN_RATE_SECONDS and abs(sa - sb) > 0.1 * max(
            sa, sb
        )  # captures of different lengths: compare per minute
        va, vb = float(ta.rss_growth_bytes), float(tb.rss_growth_bytes)
        if per_min:
            va, vb = va * 60 / sa, vb * 60 / sb
        text = (
            f"Process RSS growth went from {_rss_phrase(ta.rss_growth_bytes, sa, per_min)} in A to "
            f"{_rss_phrase(tb.rss_growth_bytes, sb, per_min)} in B ({_pct(va, vb)})"
        )
    elif d.a.regions and d.b.regions:
        text = (
            f"Region growth went from {human_bytes(ta.growth_bytes)} in A to {human_bytes(tb.growth_bytes)} in B "
            f"({_pct(ta.growth_bytes, tb.growth_bytes)})"
        )
    else:
        text = (
            f"Live bytes of captured stacks went from {human_bytes(ta.live_bytes)} in A to "
            f"{human_bytes(tb.live_bytes)} in B ({_pct(ta.live_bytes, tb.live_bytes)})"
        )
    cands = [c for c in d.stacks if c.kind == "candidate"]
    if resident:
        moved = [c for c in cands if c.rss_growth_delta != 0]
        if moved:
            top = max(moved, key=lambda c: abs(c.rss_growth_delta))
            before = human_bytes(top.a.rss_growth_bytes, signed=True) if top.a is not None else "absent"
            after = human_bytes(top.b.rss_growth_bytes, signed=True) if top.b is not None else "absent"
            text += f"; biggest change: {top.label}, RSS growth {before} -> {after}"
    else:
        moved = [c for c in cands if c.live_delta != 0]
        if moved:
            top = max(moved, key=lambda c: abs(c.live_delta))
            before = human_bytes(top.a.live_bytes) if top.a is not None else "absent"
            after = human_bytes(top.b.live_bytes) if top.b is not None else "absent"
            text += f"; biggest change: {top.label}, live {before} -> {after}"
    text += f"; {plural(len(d.only_a), 'stack')} only in A, {len(d.only_b):,} only in B"
    return text


# -- rendering ----------------------------------------------------------------------------------------------------


def _side_dict(side: Side | None) -> dict[str, Any] | None:
    if side is None:
        return None
    out: dict[str, Any] = {
        "ids": side.ids,
        "kind": side.kind,
        "live_bytes": side.live_bytes,
        "rss_bytes": side.rss_bytes,
        "rss_growth_bytes": side.rss_growth_bytes,
        "peak_bytes": side.peak_bytes,
        "growth_bytes": side.growth_bytes,
        "mapped_bytes": side.mapped_bytes,
        "events": side.events,
    }
    if side.pids:  # analyses of a capture directory (their stacks know their processes)
        out["pids"] = side.pids
    return out


def _totals_dict(t: Totals, analysis: Analysis) -> dict[str, Any]:
    return {
        "source": t.source,
        "pid": analysis.pid,
        "exe": analysis.exe,
        "duration_s": t.duration,
        "events": t.events,
        "by_syscall": t.by_syscall,
        "stacks": t.stacks,
        "live_bytes": t.live_bytes,
        "mapped_bytes": t.mapped_bytes,
        "growth_bytes": t.growth_bytes,
        "rss_growth_bytes": t.rss_growth_bytes,
        "unexplained_bytes": t.unexplained_bytes,
        "processes": [{k: p.get(k) for k in ("pid", "ppid", "argv") if k in p} for p in analysis.processes],
    }


def diff_to_dict(d: AnalysisDiff, *, top: int | None = None) -> dict[str, Any]:
    ta, tb = d.a_totals, d.b_totals
    changes = d.stacks if top is None else d.stacks[:top]
    rss_delta = None
    if ta.rss_growth_bytes is not None and tb.rss_growth_bytes is not None:
        rss_delta = tb.rss_growth_bytes - ta.rss_growth_bytes
    return {
        "format": FORMAT,
        "headline": diff_headline(d),
        "a": _totals_dict(ta, d.a),
        "b": _totals_dict(tb, d.b),
        "delta": {
            "events": tb.events - ta.events,
            "live_bytes": tb.live_bytes - ta.live_bytes,
            "mapped_bytes": tb.mapped_bytes - ta.mapped_bytes,
            "growth_bytes": tb.growth_bytes - ta.growth_bytes,
            "rss_growth_bytes": rss_delta,
            "stacks_only_in_a": len(d.only_a),
            "stacks_only_in_b": len(d.only_b),
            "stacks_in_both": len(d.common),
        },
        "stacks": [
            {
                "status": c.status,
                "kind": c.kind,
                "label": c.label,
                "frames": [{"function": f.function, "module": f.module, "offset": f.offset} for f in c.frames],
                "python": [{"function": p.function, "file": p.file} for p in c.python],
                "a": _side_dict(c.a),
                "b": _side_dict(c.b),
                "delta": {
                    "live_bytes": c.live_delta,
                    "rss_bytes": c.rss_delta,
                    "rss_growth_bytes": c.rss_growth_delta,
                    "growth_bytes": c.growth_delta,
                    "mapped_bytes": c.mapped_delta,
                    "events": c.events_delta,
                },
            }
            for c in changes
        ],
    }


_STATUS = {"only_a": "only A", "only_b": "only B", "both": ""}


def _num(side: Side | None, name: str, *, is_bytes: bool = True) -> str:
    if side is None:
        return "-"
    value = getattr(side, name)
    return human_bytes(value) if is_bytes else f"{value:,}"


def idle_line(d: AnalysisDiff) -> str:
    """One line for the matched stacks that hold nothing on either side (they are not rows), or ``""``."""
    idle = [c for c in d.stacks if c.kind == "idle"]
    if not idle:
        return ""
    calls_a = sum(c.a.events for c in idle if c.a is not None)
    calls_b = sum(c.b.events for c in idle if c.b is not None)
    only_a = sum(1 for c in idle if c.status == "only_a")
    only_b = sum(1 for c in idle if c.status == "only_b")
    return (
        f"{plural(len(idle), 'stack')} {'holds' if len(idle) == 1 else 'hold'} nothing on either side "
        f"({only_a} only in A, {only_b} only in B; {calls_a:,} calls in A, {calls_b:,} in B)"
    )


def side_processes(side: Side | None, analysis: Analysis, limit: int = 3) -> str:
    """The processes one side of a stack was seen in, as ``COMM-PID`` names (``-`` when absent on that side)."""
    from sysbreak.report.collapsed import process_frame

    if side is None:
        return "-"
    names = [process_frame(pid, analysis.processes) for pid in side.pids]
    shown = ", ".join(names[:limit])
    return shown + (f" +{len(names) - limit}" if len(names) > limit else "")


def _signed(side: Side | None, name: str) -> str:
    if side is None:
        return "-"
    return human_bytes(getattr(side, name), signed=True)


def render_diff_text(d: AnalysisDiff, *, top: int | None = None, color: bool = False, width: int | None = None) -> str:
    top = DEFAULT_TOP if top is None else top
    out = io.StringIO()
    console = text_console(out, color=color, width=width)
    console.print(Text(diff_headline(d), style="bold"), soft_wrap=True)
    console.print()
    ta, tb = d.a_totals, d.b_totals
    totals = Table(box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False, header_style="bold")
    totals.add_column("")
    totals.add_column("A", overflow="fold")
    totals.add_column("B", overflow="fold")
    totals.add_column("change", justify="right")

    def row(name: str, va: int | None, vb: int | None, *, is_bytes: bool = True) -> None:
        fmt = human_bytes if is_bytes else (lambda v: f"{v:,}")
        delta = ""
        if va is not None and vb is not None:
            delta = human_bytes(vb - va, signed=True) if is_bytes else (f"{vb - va:+,}" if vb != va else "0")
        totals.add_row(name, "-" if va is None else fmt(va), "-" if vb is None else fmt(vb), delta)

    totals.add_row("source", ta.source, tb.source, "")
    totals.add_row("duration", human_duration(ta.duration), human_duration(tb.duration), "")
    row("events", ta.events, tb.events, is_bytes=False)
    row("stacks", ta.stacks, tb.stacks, is_bytes=False)
    if d.several_processes:
        row("processes", ta.processes, tb.processes, is_bytes=False)
    row("live bytes", ta.live_bytes, tb.live_bytes)
    row("mapped bytes", ta.mapped_bytes, tb.mapped_bytes)
    row("region growth", ta.growth_bytes, tb.growth_bytes)
    row("process RSS growth", ta.rss_growth_bytes, tb.rss_growth_bytes)
    row("unexplained", ta.unexplained_bytes, tb.unexplained_bytes)
    for name in sorted(set(ta.by_syscall) | set(tb.by_syscall)):
        row(f"  {name} calls", ta.by_syscall.get(name, 0), tb.by_syscall.get(name, 0), is_bytes=False)
    console.print(totals)
    console.print()

    rows = [c for c in d.stacks if c.kind != "idle"]
    shown = rows[:top]
    console.print(
        Text(
            f"Stacks by size of change ({len(shown)} of {len(rows)} holding memory; {len(d.common)} in both, "
            f"{len(d.only_a)} only in A, {len(d.only_b)} only in B)",
            style="bold underline",
        )
    )
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False, header_style="bold")
    table.add_column("", no_wrap=True)
    table.add_column("stack", overflow="fold")
    for name in ("RSS growth A", "RSS growth B", "change", "live A", "live B", "events A", "events B"):
        table.add_column(name, justify="right", no_wrap=True)
    if d.several_processes:
        table.add_column("processes A", overflow="fold")
        table.add_column("processes B", overflow="fold")
    for change in shown:
        extra = [side_processes(change.a, d.a), side_processes(change.b, d.b)] if d.several_processes else []
        table.add_row(
            Text(_STATUS[change.status] + (" (libraries)" if change.kind == "library" else ""), style="bold"),
            change.label,
            _signed(change.a, "rss_growth_bytes"),
            _signed(change.b, "rss_growth_bytes"),
            human_bytes(change.rss_growth_delta, signed=True) if change.rss_growth_delta else "0",
            _num(change.a, "live_bytes"),
            _num(change.b, "live_bytes"),
            _num(change.a, "events", is_bytes=False),
            _num(change.b, "events", is_bytes=False),
            *extra,
        )
    console.print(table)
    line = idle_line(d)
    if line:
        console.print(Text("  " + line, style="dim"), soft_wrap=True)
    text = out.getvalue()
    return "\n".join(line.rstrip() for line in text.splitlines()) + "\n"


def render_diff(
    d: AnalysisDiff, fmt: str = "text", *, top: int | None = None, color: bool = False, width: int | None = None
) -> str:
    """The diff in one of the registered diff formats (``text``, ``json`` = ``sysbreak-diff/2``, ``html``)."""
    from sysbreak.report.reporters import DiffOptions, get_diff_reporter

    return get_diff_reporter(fmt).render(d, DiffOptions(top=top, color=color, width=width))
