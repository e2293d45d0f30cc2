"""Helpers every reporter shares: human sizes and durations, frame names, ranks, the headline sentence."""

from __future__ import annotations

import io
import os
import re

from rich.console import Console

from sysbreak.analysis.model import Analysis, Frame, PyFrame, Region, StackStats

_UNITS = ("KiB", "MiB", "GiB", "TiB", "PiB")
#: the shortest span over which a growth rate (bytes per minute) is shown: below it, a rate is extrapolation
MIN_RATE_SECONDS = 5.0
_ELF_PATH = re.compile(r"\.so(?:\.[0-9]+)*$|\.so\.[0-9][^/]*$")


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


def rss_span(analysis: Analysis) -> float:
    """Seconds from the first to the last sample that carries an RSS (0 with fewer than two)."""
    times = [sample.t for sample in analysis.timeline if sample.rss_bytes is not None]
    return times[-1] - times[0] if len(times) >= 2 else 0.0


def rate_text(delta: int | float, seconds: float) -> str:
    """``+6.9 MiB/min`` over ``seconds``, or ``""`` when the span is too short to support a rate."""
    if seconds < MIN_RATE_SECONDS or not delta:
        return ""
    return human_rate(delta * 60.0 / seconds)


def pmap_mode(perms: str) -> str:
    """smaps ``rw-p`` -> pmap ``rw---``; ``r--s`` -> ``r--s-``; a 5-character pmap mode is kept."""
    if len(perms) == 4:
        return perms[:3] + ("s" if perms[3] == "s" else "-") + "-"
    return perms


def interesting(region: Region) -> bool:
    """A region worth showing by default: it changed, or a captured stack owns part of it."""
    return region.status != "same" or bool(region.owners) or region.growth != 0


def region_kind(region: Region, exe: str | None = None) -> str:
    """``anon`` (no file behind it), ``library`` (a file mapping of an executable or a shared library: its
    segments), ``file`` (another file), ``special`` (``[vdso]``, ``[vvar]``, ``[vsyscall]``)."""
    p = region.path
    if p in ("", "[anon]", "[heap]") or p.startswith(
        ("[stack", "[anon:", "[anon_shmem:", "/dev/zero (deleted)", "/SYSV")
    ):
        return "anon"
    if p.startswith("["):
        return "special"
    name = p[: -len(" (deleted)")] if p.endswith(" (deleted)") else p
    if name == exe or (exe and os.path.basename(name) == os.path.basename(exe)) or _ELF_PATH.search(name):
        return "library"
    return "file"


def candidates(analysis: Analysis) -> list[StackStats]:
    return [s for s in analysis.stacks if s.kind == "candidate"]


def idle_stacks(analysis: Analysis) -> list[StackStats]:
    return [s for s in analysis.stacks if s.kind == "idle"]


def library_stacks(analysis: Analysis) -> list[StackStats]:
    return [s for s in analysis.stacks if s.kind == "library"]


def libraries_line(analysis: Analysis) -> str:
    """The one line that stands for every stack of the dynamic loader, or ``""`` when there is none."""
    libs = library_stacks(analysis)
    if not libs:
        return ""
    exe = analysis.exe
    owned = {s.id for s in libs}
    names = {
        os.path.basename(r.path)
        for r in analysis.regions
        if r.status != "gone" and region_kind(r, exe) == "library" and any(o.stack_id in owned for o in r.owners)
    }
    live = sum(s.live_bytes for s in libs)
    rss = sum(s.rss_bytes for s in libs)
    files = f", {plural(len(names), 'file')} mapped" if names else ""
    return (
        f"libraries loaded: {plural(len(libs), 'stack')} of the dynamic loader{files}, {human_bytes(live)} live, "
        f"{human_bytes(rss)} resident (segments of executables and libraries: not a leak candidate)"
    )


def idle_line(analysis: Analysis) -> str:
    """The one line that stands for every stack holding nothing now, or ``""``."""
    idle = idle_stacks(analysis)
    if not idle:
        return ""
    mapped = sum(s.mapped_bytes for s in idle)
    calls: dict[str, int] = {}
    for s in idle:
        for name, n in s.by_syscall.items():
            calls[name] = calls.get(name, 0) + n
    what = ", ".join(f"{name} {n:,}" for name, n in sorted(calls.items(), key=lambda kv: (-kv[1], kv[0])))
    peak = max((s.peak_bytes for s in idle), default=0)
    verb = "holds" if len(idle) == 1 else "hold"
    text = f"{plural(len(idle), 'stack')} {verb} nothing now ({what or 'no calls'})"
    if mapped:
        return (
            f"{text}: {human_bytes(mapped)} mapped and all of it unmapped again (the largest peak {human_bytes(peak)})"
        )
    return f"{text}: they mapped nothing"


def _pct(part: float, whole: float) -> str:
    if whole <= 0:
        return "0%"
    pct = 100.0 * part / whole
    if 0 < pct < 1:
        return "<1%"
    return f"{min(pct, 100.0):.0f}%"


def _split(stack: StackStats) -> str:
    """``anonymous`` / ``file-backed`` / ``3.0 MiB anonymous, 1.0 MiB file-backed`` for what it holds resident."""
    a, f = stack.anon_rss_bytes, stack.file_rss_bytes
    if a and f:
        return f"{human_bytes(a)} anonymous, {human_bytes(f)} file-backed"
    return "file-backed" if f else "anonymous"


SORT_TITLE = {
    "rss-growth": "by resident growth",
    "rss": "by resident bytes",
    "live": "by live bytes",
    "peak": "by peak bytes",
    "growth": "by address-space growth",
    "rate": "by resident growth per minute",
    "events": "by calls",
}


def sort_title(analysis: Analysis) -> str:
    """How the stacks are ordered, in words; says so when resident bytes are unknown (no snapshot with Rss), since
    the resident keys then all tie and live bytes decide."""
    if analysis.sort in ("rss-growth", "rss", "rate") and rss_change(analysis) is None:
        return "by live bytes (no snapshots with Rss: resident bytes unknown)"
    return SORT_TITLE.get(analysis.sort, "")


def stack_claim(analysis: Analysis, stack: StackStats, rank: int = 1) -> str:
    """What stack #rank does, in the terms of the analysis' sort (so the headline names what ranked it)."""
    who = f"stack #{rank} {stack_label(stack)}"
    sort = analysis.sort
    if sort in ("rss-growth", "rss", "rate") and rss_change(analysis) is None:
        sort = "live"  # no snapshot with Rss: resident bytes are unknown, so say what is known
    live_total = sum(s.live_bytes for s in candidates(analysis))
    if sort == "rss-growth":
        grown = stack.resident_growth
        if grown <= 0:
            return f"no captured stack added resident memory; {who} holds {human_bytes(stack.rss_bytes)} resident"
        rss = rss_change(analysis)
        whole = rss if rss is not None and rss > 0 else sum(max(0, s.resident_growth) for s in candidates(analysis))
        text = f"{who} added {human_bytes(stack.rss_growth_bytes)} of it"
        if stack.rss_growth_bytes > 0:
            text += f" ({_pct(stack.rss_growth_bytes, whole)}, {_split(stack)})"
        if stack.after_last_bytes:
            text += f" and mapped {human_bytes(stack.after_last_bytes)} more after the last snapshot"
        return text
    if sort == "rss":
        return f"{who} holds {human_bytes(stack.rss_bytes)} resident ({_split(stack)})"
    if sort == "peak":
        return f"{who} peaked at {human_bytes(stack.peak_bytes)} mapped ({human_bytes(stack.live_bytes)} still live)"
    if sort == "growth":
        return f"{who} mapped {human_bytes(stack.growth_bytes)} after the first snapshot that is still mapped"
    if sort == "rate":
        rate = human_rate(stack.rss_growth_per_min) if stack.rss_growth_per_min else "-"
        return f"{who} grew the RSS by {rate}"
    if sort == "events":
        return f"{who} made {plural(stack.events, 'call')}"
    return f"{who} holds {human_bytes(stack.live_bytes)} live ({_pct(stack.live_bytes, live_total)} of the live bytes)"


def headline(analysis: Analysis) -> str:
    """One sentence: how the process's RSS changed, in how long, and what stack #1 (the first row of every format)
    did, in the terms of the analysis' sort."""
    rss = rss_change(analysis)
    span = rss_span(analysis) or analysis.duration
    when = f"in {human_duration(span)}" if span > 0 else "between the first and last snapshot"
    # a merged tree: its time line adds up every process's RSS (sysbreak.analysis.processes)
    what = f"the RSS of its {len(analysis.processes)} processes" if len(analysis.processes) > 1 else "process RSS"
    if rss is not None:
        if rss > 0:
            text = f"{what} grew by {human_bytes(rss)} {when}"
            rate = rate_text(rss, span)
            if rate:
                text += f" ({rate})"
        elif rss < 0:
            text = f"{what} shrank by {human_bytes(-rss)} {when}"
        else:
            text = f"{what} did not change {when}"
    elif analysis.regions:
        grew = growing(analysis)
        text = f"{plural(len(grew), 'region')} grew by {human_bytes(region_growth(analysis))} {when}"
    else:
        span_text = f"in {human_duration(analysis.duration)}" if analysis.duration > 0 else "captured"
        text = f"{plural(analysis.events, 'event')} {span_text}"
    cands = candidates(analysis)
    if cands:
        text += "; " + stack_claim(analysis, cands[0], 1)
        if analysis.sort == "rss-growth" and rss is not None and rss > 0:
            # When no stack owns much of it, say where the rest is: many small owners, or libraries being loaded.
            extra = []
            if len(cands) > 1 and cands[0].resident_growth < 0.25 * rss:
                total = sum(max(0, s.resident_growth) for s in cands)
                extra.append(f"{plural(len(cands), 'stack')} added {human_bytes(total)} in all")
            libs = sum(max(0, s.rss_growth_bytes) for s in library_stacks(analysis))
            if libs >= 0.1 * rss:
                extra.append(f"libraries loaded {human_bytes(libs)}")
            if extra:
                text += "; " + ", ".join(extra)
    elif analysis.events == 0 and not analysis.stacks:
        grown = (rss is not None and rss > 0) or bool(growing(analysis))
        text += "; no call stack was captured" + (" to attribute it to" if grown else "")
        if analysis.snapshots and analysis.pid is not None:
            text += f" (snapshots only: `sysbreak attach {analysis.pid}` records the stacks)"
    elif rss is not None and rss > 0:
        text += f"; none of the {plural(analysis.events, 'captured event')} holds memory now"
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
