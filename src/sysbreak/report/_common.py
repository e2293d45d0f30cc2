"""Helpers every reporter shares: human sizes and durations, frame names, ranks, the headline sentence."""

from __future__ import annotations

import io
import os

from rich.console import Console

from sysbreak.analysis.model import Analysis, Frame, PyFrame, Region, StackStats

_UNITS = ("KiB", "MiB", "GiB", "TiB", "PiB")
#: the shortest span over which a growth rate (bytes per minute) is shown: below it, a rate is extrapolation
MIN_RATE_SECONDS = 5.0


def human_bytes(n: int | float | None, *, signed: bool = False) -> str:
    """``412.0 MiB``, ``4.0 KiB``, ``512 B``; ``-`` for None. ``signed`` puts ``+`` before a positive value."""
    if n is None:
        return "-"
    sign = "-" if n < 0 else ("+" if signed and n > 0 else "")
    value = float(abs(n))
    if value < 1024:
        return f"{sign}{int(value)} B"
    for unit in _UNITS:
        value /= 1024
        if value < 1024 or unit == _UNITS[-1]:
            return f"{sign}{value:.1f} {unit}"
    raise AssertionError("unreachable")  # pragma: no cover


def human_rate(per_min: float | None) -> str:
    """Growth per minute: ``+6.9 MiB/min``; ``-`` for None or 0."""
    if not per_min:
        return "-"
    return f"{human_bytes(round(per_min), signed=True)}/min"


def human_duration(seconds: float) -> str:
    """``0.25 s``, ``60 s``, ``2.5 min``, ``1.2 h``."""
    if seconds < 10:
        text = f"{seconds:.2f}".rstrip("0").rstrip(".")
        return f"{text} s"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 2 * 3600:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def plural(n: int, word: str, words: str | None = None) -> str:
    return f"{n:,} {word if n == 1 else (words or word + 's')}"


def module_name(module: str | None) -> str | None:
    """The base name of a module path (``/usr/lib/libc.so.6`` -> ``libc.so.6``)."""
    if not module:
        return None
    return os.path.basename(module) or module


def module_offset(frame: Frame) -> str:
    """``libc.so.6+0x10f89d``; ``0x7f..`` when only the pc is known; ``??`` when nothing is."""
    mod = module_name(frame.module)
    if mod and frame.offset is not None:
        return f"{mod}+{frame.offset:#x}"
    if mod:
        return mod
    if frame.pc is not None:
        return f"{frame.pc:#x}"
    return "??"


def frame_name(frame: Frame) -> str:
    """The function when known, else ``module+0xoff``."""
    return frame.function or module_offset(frame)


def source_location(file: str | None, line: int | None) -> str:
    if not file:
        return ""
    return f"{file}:{line}" if line is not None else file


def py_location(frame: PyFrame) -> str:
    return source_location(frame.file, frame.line)


def stack_label(stack: StackStats) -> str:
    """The analysis' label, or one made from the first named frame when it left it empty."""
    if stack.label:
        return stack.label
    for frame in stack.frames:
        if frame.function:
            return f"{frame.function} ({module_offset(frame)})"
    if stack.frames:
        return module_offset(stack.frames[0])
    return f"stack {stack.id}"


def ranks(analysis: Analysis) -> dict[int, int]:
    """Stack id -> rank (1 = most important) in the analysis' order."""
    return {stack.id: rank for rank, stack in enumerate(analysis.stacks, start=1)}


def growing(analysis: Analysis) -> list[Region]:
    return [region for region in analysis.regions if region.growth > 0]


def region_growth(analysis: Analysis) -> int:
    """Bytes the regions that grew (or are new) gained between the first and the last snapshot."""
    return sum(region.growth for region in growing(analysis))


def rss_change(analysis: Analysis) -> int | None:
    """Process RSS last minus first, from the timeline; None when fewer than two samples carry an RSS."""
    values = [sample.rss_bytes for sample in analysis.timeline if sample.rss_bytes is not None]
    if len(values) < 2:
        return None
    return values[-1] - values[0]


def pmap_mode(perms: str) -> str:
    """smaps ``rw-p`` -> pmap ``rw---``; ``r--s`` -> ``r--s-``; a 5-character pmap mode is kept."""
    if len(perms) == 4:
        return perms[:3] + ("s" if perms[3] == "s" else "-") + "-"
    return perms


def interesting(region: Region) -> bool:
    """A region worth showing by default: it changed, or a captured stack owns part of it."""
    return region.status != "same" or bool(region.owners) or region.growth != 0


def _pct(part: float, whole: float) -> str:
    if whole <= 0:
        return "0%"
    pct = 100.0 * part / whole
    if 0 < pct < 1:
        return "<1%"
    return f"{min(pct, 100.0):.0f}%"


def headline(analysis: Analysis) -> str:
    """One sentence: what grew, by how much, in how long, and which stack owns most of it."""
    rank_of = ranks(analysis)
    when = f"in {human_duration(analysis.duration)}" if analysis.duration > 0 else "between the first and last snapshot"
    grew = growing(analysis)
    total = region_growth(analysis)
    if grew:
        text = f"{plural(len(grew), 'region')} grew by {human_bytes(total)} {when}"
        rss = rss_change(analysis)
        if rss is not None:
            text += f" (process RSS {human_bytes(rss, signed=True)})"
        owners = [stack for stack in analysis.stacks if stack.growth_bytes > 0]
        if owners:
            best = max(owners, key=lambda stack: (stack.growth_bytes, -rank_of[stack.id]))
            share = _pct(best.growth_bytes, total)
            return f"{text}; stack #{rank_of[best.id]} {stack_label(best)} owns {share} of it"
        if analysis.events == 0:
            return f"{text}; no call stack was captured to attribute it to"
        return f"{text}; none of the {plural(analysis.events, 'captured event')} explains it"
    live = sum(stack.live_bytes for stack in analysis.stacks)
    span = f"in {human_duration(analysis.duration)}" if analysis.duration > 0 else "captured"
    if analysis.regions:
        text = "no region grew " + (when if analysis.duration > 0 else "between the first and last snapshot")
    else:
        text = f"{plural(analysis.events, 'event')} {span}"
    if live > 0:
        best = max(analysis.stacks, key=lambda stack: (stack.live_bytes, -rank_of[stack.id]))
        text += (
            f"; {human_bytes(live)} mapped by captured stacks is still live, "
            f"{_pct(best.live_bytes, live)} of it from stack #{rank_of[best.id]} {stack_label(best)}"
        )
    else:
        text += "; nothing the captured stacks mapped is still live"
    return text[0].upper() + text[1:]


def text_console(out: io.StringIO, *, color: bool, width: int | None) -> Console:
    """The rich console both text reports print into: plain text unless ``color`` (a real terminal)."""
    return Console(
        file=out,
        width=width or (100 if color else 200),
        color_system="auto" if color else None,
        force_terminal=color,
        no_color=not color,
        highlight=False,
        emoji=False,
        markup=False,
        legacy_windows=False,
    )
