"""The HTML report: one self-contained file (inline CSS, inline SVG plot, no network), rendered with jinja2.

Autoescaping is on for everything: function names such as ``std::vector<char>`` or a hostile
``<script>alert(1)</script>`` are shown as text, never interpreted as markup.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import jinja2

from sysbreak.analysis.model import Analysis, Region, Sample, StackStats
from sysbreak.report._common import (
    candidates,
    headline,
    human_bytes,
    human_duration,
    human_rate,
    idle_line,
    libraries_line,
    module_offset,
    pmap_mode,
    py_location,
    region_growth,
    rss_change,
    sort_title,
    source_location,
    stack_label,
)
from sysbreak.report.collapsed import process_frame
from sysbreak.report.diff import AnalysisDiff
from sysbreak.report.text import by_syscall_text, change_text, region_order

DEFAULT_TOP = 50
MAX_PLOT_POINTS = 1500
PLOT_STACKS = 5  # stacks drawn as their own line in the plot
OPEN_ROWS = 10  # stack rows shown before the rest fold into a <details>
OPEN_REGIONS = 40  # region rows shown before the rest fold
PROCESS_COLORS = ("#e8590c", "#3b5bdb", "#a61e4d", "#087f5b", "#5f3dc4")  # one RSS line per process
STACK_COLORS = ("#2b8a3e", "#9c36b5", "#1098ad", "#c2255c", "#5c940d")

_UNIT_NAMES = ("B", "KiB", "MiB", "GiB", "TiB", "PiB")


@dataclass
class Plot:
    """Geometry of the RSS / live-bytes plot, in SVG user units (the template only places it)."""

    width: int = 880
    height: int = 280
    left: int = 72
    right: int = 16
    top: int = 14
    bottom: int = 34
    x_ticks: list[tuple[float, str]] = field(default_factory=list)
    y_ticks: list[tuple[float, str]] = field(default_factory=list)
    rss_points: str = ""
    rss_markers: list[tuple[float, float, str]] = field(default_factory=list)
    live_path: str = ""
    live_area: str = ""
    stack_lines: list[dict[str, Any]] = field(default_factory=list)  # {rank, label, color, path}
    # a tree of processes: one RSS line per process (the biggest), {label, color, points, dots, last}
    process_lines: list[dict[str, Any]] = field(default_factory=list)
    processes: int = 0  # how many processes the RSS line adds up (0: one process)
    live_clipped: str = ""  # the largest live bytes, when the live line is clipped at the top of the scale
    empty: bool = True

    @property
    def x0(self) -> int:
        return self.left

    @property
    def x1(self) -> int:
        return self.width - self.right

    @property
    def y0(self) -> int:  # the baseline (value 0)
        return self.height - self.bottom

    @property
    def y1(self) -> int:
        return self.top


def _nice_step(span: float, target: int, steps: tuple[float, ...] = (1, 2, 2.5, 5)) -> float:
    if span <= 0:
        return 1.0
    raw = span / target
    power = 10 ** math.floor(math.log10(raw))
    for mult in (*steps, 10):
        if mult * power >= raw:
            return mult * power
    return 10 * power  # pragma: no cover


def _byte_ticks(vmax: int) -> tuple[list[float], list[str]]:
    k = 0
    while k < len(_UNIT_NAMES) - 1 and vmax / 1024 ** (k + 1) >= 1:
        k += 1
    unit = 1024**k
    step = _nice_step(vmax / unit, 5, (1, 2, 5)) * unit
    if k == 0:
        step = max(1.0, math.ceil(step))
    values = [0.0]
    while values[-1] < vmax:  # the top tick is at or above the largest value
        values.append(values[-1] + step)
    return values, [f"{val / unit:g} {_UNIT_NAMES[k]}" if val else "0" for val in values]


def _time_ticks(span: float) -> tuple[list[float], list[str]]:
    nice = (0.1, 0.2, 0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 14400, 21600, 43200, 86400)
    step = next((s for s in nice if span / s <= 8), nice[-1])
    values: list[float] = []
    t = 0.0
    while t <= span * 1.0001:
        values.append(round(t, 6))
        t += step
    if step >= 3600:
        labels = [f"{t / 3600:g} h" for t in values]
    elif step >= 60:
        labels = [f"{t / 60:g} min" for t in values]
    else:
        labels = [f"{t:g} s" for t in values]
    return values, labels


def _downsample(samples: list[Sample]) -> list[Sample]:
    """At most MAX_PLOT_POINTS live-byte samples, keeping the highest value of each bucket (peaks stay visible)."""
    if len(samples) <= MAX_PLOT_POINTS:
        return samples
    t_first, t_last = samples[0].t, samples[-1].t
    span = (t_last - t_first) or 1.0
    buckets: dict[int, Sample] = {}
    for sample in samples:
        index = min(MAX_PLOT_POINTS - 1, int((sample.t - t_first) / span * MAX_PLOT_POINTS))
        kept = buckets.get(index)
        if kept is None or sample.live_bytes >= kept.live_bytes:
            buckets[index] = sample
    result = [buckets[index] for index in sorted(buckets)]
    if result[-1] is not samples[-1]:
        result.append(samples[-1])
    return result


def plot(
    timeline: list[Sample],
    stacks: list[tuple[int, StackStats]] = (),  # type: ignore[assignment]
    processes: list[tuple[str, list[tuple[float, int]]]] = (),  # type: ignore[assignment]
) -> Plot:
    """The plot of total RSS and live bytes, with one line per stack of ``stacks`` ((rank, stack)) that has a
    series: its live bytes at each snapshot; for a tree of processes (``processes``: (name, its RSS at its
    snapshots)), the RSS line is the tree's and the biggest processes get a line each."""
    p = Plot()
    samples = sorted(timeline, key=lambda s: s.t)
    if len(samples) < 2 or samples[-1].t <= samples[0].t:
        return p
    p.empty = False
    t_first = samples[0].t
    span = samples[-1].t - t_first
    drawn = [(rank, st) for rank, st in stacks if len(st.series) >= 2][:PLOT_STACKS]
    procs = sorted((p for p in processes if p[1]), key=lambda p: -p[1][-1][1])[:PLOT_STACKS]
    p.processes = len(processes) if len(processes) > 1 else 0
    resident_max = max(
        max((s.rss_bytes or 0) for s in samples),
        max((n for _, st in drawn for _, n in st.series), default=0),
        max((n for _, line in procs for _, n in line), default=0),
    )
    live_max = max(s.live_bytes for s in samples)
    vmax = max(resident_max, live_max, 1)
    if resident_max > 0 and live_max > 1.5 * resident_max:
        # live bytes far above the RSS are address space (reservations, untouched): scale to what is resident
        # and clip the live line at the top, saying so in the legend
        vmax = resident_max
        p.live_clipped = human_bytes(live_max)
    y_values, y_labels = _byte_ticks(vmax)
    top_value = y_values[-1]

    def x(t: float) -> float:
        return round(p.x0 + (t - t_first) / span * (p.x1 - p.x0), 1)

    def y(v: float) -> float:
        return round(p.y0 - min(v, top_value) / top_value * (p.y0 - p.y1), 1)

    p.y_ticks = [(y(v), label) for v, label in zip(y_values, y_labels, strict=True)]
    t_values, t_labels = _time_ticks(span)
    p.x_ticks = [(x(t_first + t), label) for t, label in zip(t_values, t_labels, strict=True)]

    rss = [s for s in samples if s.rss_bytes is not None]
    p.rss_points = " ".join(f"{x(s.t)},{y(s.rss_bytes or 0)}" for s in rss)
    if len(rss) <= 120:
        p.rss_markers = [
            (x(s.t), y(s.rss_bytes or 0), f"RSS {human_bytes(s.rss_bytes)} at {human_duration(s.t - t_first)}")
            for s in rss
        ]
    live = _downsample(samples)
    parts = [f"M{x(live[0].t)},{y(live[0].live_bytes)}"]
    for sample in live[1:]:
        parts.append(f"H{x(sample.t)}V{y(sample.live_bytes)}")
    p.live_path = "".join(parts)
    p.live_area = f"{p.live_path}V{p.y0}H{x(live[0].t)}Z"
    for i, (rank, st) in enumerate(drawn):
        pts = " ".join(f"{x(min(max(t, t_first), t_first + span))},{y(n)}" for t, n in st.series)
        p.stack_lines.append(
            {
                "rank": rank,
                "id": st.id,
                "label": stack_label(st),
                "color": STACK_COLORS[i % len(STACK_COLORS)],
                "points": pts,
                "last": human_bytes(st.series[-1][1]),
            }
        )
    if p.processes:
        for i, (name, line) in enumerate(procs):
            clamp = [(x(min(max(t, t_first), t_first + span)), y(n)) for t, n in line]
            p.process_lines.append(
                {
                    "label": name,
                    "color": PROCESS_COLORS[i % len(PROCESS_COLORS)],
                    "points": " ".join(f"{px},{py}" for px, py in clamp) if len(clamp) >= 2 else "",
                    "dots": clamp[:120],
                    "last": human_bytes(line[-1][1]),
                }
            )
    return p


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("sysbreak.report", "templates"),
        autoescape=True,  # every value, in every template, whatever its file name
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["bytes"] = human_bytes
    env.filters["sbytes"] = lambda n: human_bytes(n, signed=True)
    env.filters["rate"] = human_rate
    env.filters["duration"] = human_duration
    env.filters["kb"] = lambda n: "-" if n is None else str(n // 1024)
    return env


def _owners(region: Region, shown: dict[int, int], by_id: dict[int, StackStats]) -> list[dict[str, Any]]:
    """The owners listed above by rank (linked), the others folded: never a link to a stack that is not shown."""
    out: list[dict[str, Any]] = []
    libs = others = 0
    nlibs = nothers = 0
    for owner in sorted(region.owners, key=lambda o: -o.bytes):
        if owner.stack_id in shown:
            out.append(
                {
                    "id": owner.stack_id,
                    "rank": shown[owner.stack_id],
                    "label": stack_label(by_id[owner.stack_id]),
                    "bytes": owner.bytes,
                }
            )
        elif getattr(by_id.get(owner.stack_id), "kind", "") == "library":
            libs += owner.bytes
            nlibs += 1
        else:
            others += owner.bytes
            nothers += 1
    if libs:
        out.append({"id": None, "rank": None, "label": "libraries loaded", "bytes": libs})
    if others:
        what = f"{nothers} stack{'s' if nothers > 1 else ''} not listed above"
        out.append({"id": None, "rank": None, "label": what, "bytes": others})
    return out


def _region_row(region: Region, shown: dict[int, int], by_id: dict[int, StackStats]) -> dict[str, Any]:
    return {
        "start": f"{region.start:016x}",
        "range": f"{region.start:#x}-{region.end:#x}",
        "size": region.size if region.status != "gone" else region.first_size,
        "rss": region.rss,
        "mode": pmap_mode(region.perms),
        "perms": region.perms,
        "path": region.path,
        "status": region.status,
        "change": change_text(region),
        "owners": _owners(region, shown, by_id),
        "unexplained": region.unexplained_bytes,
    }


def render_html(analysis: Analysis, *, top: int | None = None) -> str:
    """The whole report as one HTML document (a str)."""
    from sysbreak import __version__

    top = DEFAULT_TOP if top is None else top
    cands = candidates(analysis)
    listed = cands[:top]
    shown = {stack.id: rank for rank, stack in enumerate(listed, start=1)}
    by_id = {stack.id: stack for stack in analysis.stacks}
    total_live = sum(stack.live_bytes for stack in cands)
    max_rss = max((max(stack.resident_growth, stack.rss_bytes) for stack in listed), default=0)
    stacks = [
        {
            "id": stack.id,
            "rank": rank,
            "label": stack_label(stack),
            "live": stack.live_bytes,
            "peak": stack.peak_bytes,
            "rss": stack.rss_bytes,
            "rss_growth": stack.rss_growth_bytes,
            "late": stack.after_last_bytes,
            "virtual": stack.virtual_bytes,
            "growth": stack.growth_bytes,
            "rate": stack.rss_growth_per_min,
            "mapped": stack.mapped_bytes,
            "unmapped": stack.unmapped_bytes,
            "anon": stack.anon_rss_bytes,
            "file": stack.file_rss_bytes,
            "events": stack.events,
            "by_syscall": by_syscall_text(stack.by_syscall),
            "pids": ", ".join(str(p) for p in stack.pids) if len(analysis.processes) > 1 else "",
            "share": (100.0 * stack.live_bytes / total_live) if total_live else 0.0,
            "bar": (100.0 * max(stack.resident_growth, stack.rss_bytes) / max_rss) if max_rss else 0.0,
            "frames": [
                {
                    "function": frame.function,
                    "where": module_offset(frame),
                    "module": frame.module,
                    "source": source_location(frame.file, frame.line),
                    "pc": f"{frame.pc:#x}" if frame.pc is not None else "",
                }
                for frame in stack.frames
            ],
            "python": [{"function": f.function, "where": py_location(f)} for f in stack.python],
            "merged": list(stack.stack_ids),
        }
        for rank, stack in enumerate(listed, start=1)
    ]
    ordered, libs = region_order(analysis, False)
    rows = [_region_row(r, shown, by_id) for r in ordered]
    picked = {id(r) for r in ordered} | {id(r) for r in libs}
    lib_rows = [_region_row(r, shown, by_id) for r in libs]
    others = [_region_row(r, shown, by_id) for r in analysis.regions if id(r) not in picked]
    live_regions = [r for r in analysis.regions if r.status != "gone"]
    summary = {
        "growth": region_growth(analysis),
        "grew": sum(1 for r in analysis.regions if r.growth > 0),
        "rss_change": rss_change(analysis),
        "live": total_live,
        "unexplained": sum(r.unexplained_bytes for r in analysis.regions),
        "total_kb": sum(r.size for r in live_regions) // 1024,
        "total_rss_kb": sum(r.rss or 0 for r in live_regions) // 1024
        if any(r.rss is not None for r in live_regions)
        else None,
    }
    folded = [line for line in (idle_line(analysis), libraries_line(analysis)) if line]
    if len(cands) > len(listed):
        rest = cands[len(listed) :]
        folded.insert(
            0,
            f"{len(rest)} more stacks holding {human_bytes(sum(x.live_bytes for x in rest))} live "
            f"(--top {len(cands)} lists them)",
        )
    hints = [
        {
            "text": h.text,
            "doc": h.doc,
            "ranks": sorted(shown[i] for i in h.stack_ids if i in shown),
            "count": len(h.stack_ids),
        }
        for h in analysis.hints
    ]
    template = _environment().get_template("report.html.j2")
    return template.render(
        a=analysis,
        headline=headline(analysis),
        by_syscall=by_syscall_text(analysis.by_syscall),
        summary=summary,
        stacks=stacks[:OPEN_ROWS],
        more_stacks=stacks[OPEN_ROWS:],
        stack_count=len(cands),
        sort_title=sort_title(analysis),
        folded=folded,
        hints=hints,
        regions=rows[:OPEN_REGIONS],
        more_regions=rows[OPEN_REGIONS:],
        lib_regions=lib_rows,
        other_regions=others,
        plot=plot(
            analysis.timeline,
            [(shown[st.id], st) for st in listed],
            [(process_frame(pid, analysis.processes), line) for pid, line in analysis.process_rss.items()],
        ),
        version=__version__,
    )


def render_diff_html(d: AnalysisDiff, *, top: int | None = None) -> str:
    """``sysbreak diff -f html``: the comparison as one self-contained page."""
    from sysbreak import __version__
    from sysbreak.report.diff import DEFAULT_TOP as DIFF_TOP
    from sysbreak.report.diff import diff_headline, side_processes
    from sysbreak.report.diff import idle_line as diff_idle_line

    top = DIFF_TOP if top is None else top
    ta, tb = d.a_totals, d.b_totals

    def side(x: Any, name: str) -> int | None:
        return None if x is None else int(getattr(x, name))

    rows = [
        {
            "status": {"only_a": "only A", "only_b": "only B", "both": "both"}[c.status],
            "kind": c.kind,
            "label": c.label,
            "rss_a": side(c.a, "rss_growth_bytes"),
            "rss_b": side(c.b, "rss_growth_bytes"),
            "rss_delta": c.rss_growth_delta,
            "live_a": side(c.a, "live_bytes"),
            "live_b": side(c.b, "live_bytes"),
            "events_a": side(c.a, "events"),
            "events_b": side(c.b, "events"),
            "frames": [f"{f.function or '??'} ({module_offset(f)})" for f in c.frames],
            "processes": (
                f"A: {side_processes(c.a, d.a)}; B: {side_processes(c.b, d.b)}" if d.several_processes else ""
            ),
        }
        for c in d.stacks
        if c.kind != "idle"
    ]
    totals = [
        ("source", ta.source, tb.source, ""),
        ("duration", human_duration(ta.duration), human_duration(tb.duration), ""),
        (
            "process RSS growth",
            _opt(ta.rss_growth_bytes),
            _opt(tb.rss_growth_bytes),
            _delta(ta.rss_growth_bytes, tb.rss_growth_bytes),
        ),
        ("live bytes", human_bytes(ta.live_bytes), human_bytes(tb.live_bytes), _delta(ta.live_bytes, tb.live_bytes)),
        (
            "region growth",
            human_bytes(ta.growth_bytes),
            human_bytes(tb.growth_bytes),
            _delta(ta.growth_bytes, tb.growth_bytes),
        ),
        ("events", f"{ta.events:,}", f"{tb.events:,}", f"{tb.events - ta.events:+,}"),
        ("stacks", f"{ta.stacks:,}", f"{tb.stacks:,}", f"{tb.stacks - ta.stacks:+,}"),
    ]
    if d.several_processes:
        totals.append(("processes", f"{ta.processes:,}", f"{tb.processes:,}", f"{tb.processes - ta.processes:+,}"))
    template = _environment().get_template("diff.html.j2")
    return template.render(
        headline=diff_headline(d),
        totals=totals,
        rows=rows[:top],
        more=rows[top:],
        counts={"both": len(d.common), "only_a": len(d.only_a), "only_b": len(d.only_b)},
        idle=diff_idle_line(d),
        version=__version__,
    )


def _opt(n: int | None) -> str:
    return "-" if n is None else human_bytes(n, signed=True)


def _delta(a: int | None, b: int | None) -> str:
    return "" if a is None or b is None else human_bytes(b - a, signed=True)
