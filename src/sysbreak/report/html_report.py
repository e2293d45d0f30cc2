"""The HTML report: one self-contained file (inline CSS, inline SVG plot, no network), rendered with jinja2.

Autoescaping is on for everything: function names such as ``std::vector<char>`` or a hostile
``<script>alert(1)</script>`` are shown as text, never interpreted as markup.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import jinja2

from sysbreak.analysis.model import Analysis, Region, Sample
from sysbreak.report._common import (
    headline,
    human_bytes,
    human_duration,
    human_rate,
    interesting,
    module_offset,
    pmap_mode,
    py_location,
    ranks,
    region_growth,
    rss_change,
    source_location,
    stack_label,
)
from sysbreak.report.text import by_syscall_text, change_text

DEFAULT_TOP = 50
MAX_PLOT_POINTS = 1500

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


def plot(timeline: list[Sample]) -> Plot:
    p = Plot()
    samples = sorted(timeline, key=lambda s: s.t)
    if len(samples) < 2 or samples[-1].t <= samples[0].t:
        return p
    p.empty = False
    t_first = samples[0].t
    span = samples[-1].t - t_first
    vmax = max(max((s.rss_bytes or 0) for s in samples), max(s.live_bytes for s in samples), 1)
    y_values, y_labels = _byte_ticks(vmax)
    top_value = y_values[-1]

    def x(t: float) -> float:
        return round(p.x0 + (t - t_first) / span * (p.x1 - p.x0), 1)

    def y(v: float) -> float:
        return round(p.y0 - v / top_value * (p.y0 - p.y1), 1)

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


def _region_row(region: Region, rank_of: dict[int, int], labels: dict[int, str]) -> dict[str, Any]:
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
        "owners": [
            {
                "id": owner.stack_id,
                "rank": rank_of.get(owner.stack_id),
                "label": labels.get(owner.stack_id, f"stack id {owner.stack_id}"),
                "bytes": owner.bytes,
            }
            for owner in sorted(region.owners, key=lambda o: -o.bytes)
        ],
        "unexplained": region.unexplained_bytes,
    }


def render_html(analysis: Analysis, *, top: int | None = None) -> str:
    """The whole report as one HTML document (a str)."""
    from sysbreak import __version__

    top = DEFAULT_TOP if top is None else top
    rank_of = ranks(analysis)
    labels = {stack.id: stack_label(stack) for stack in analysis.stacks}
    total_live = sum(stack.live_bytes for stack in analysis.stacks)
    max_live = max((stack.live_bytes for stack in analysis.stacks), default=0)
    stacks = [
        {
            "id": stack.id,
            "rank": rank,
            "label": labels[stack.id],
            "live": stack.live_bytes,
            "rss": stack.rss_bytes,
            "growth": stack.growth_bytes,
            "rate": stack.growth_per_min,
            "mapped": stack.mapped_bytes,
            "unmapped": stack.unmapped_bytes,
            "events": stack.events,
            "by_syscall": by_syscall_text(stack.by_syscall),
            "share": (100.0 * stack.live_bytes / total_live) if total_live else 0.0,
            "bar": (100.0 * stack.live_bytes / max_live) if max_live else 0.0,
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
        for rank, stack in enumerate(analysis.stacks[:top], start=1)
    ]
    shown = [_region_row(r, rank_of, labels) for r in analysis.regions if interesting(r)]
    others = [_region_row(r, rank_of, labels) for r in analysis.regions if not interesting(r)]
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
    template = _environment().get_template("report.html.j2")
    return template.render(
        a=analysis,
        headline=headline(analysis),
        by_syscall=by_syscall_text(analysis.by_syscall),
        summary=summary,
        stacks=stacks,
        stack_count=len(analysis.stacks),
        regions=shown,
        other_regions=others,
        plot=plot(analysis.timeline),
        version=__version__,
    )
