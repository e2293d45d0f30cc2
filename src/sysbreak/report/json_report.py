"""The JSON report, format ``sysbreak-report/2`` (documented in docs/report-json.md), and reading it back."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from sysbreak.analysis.model import Analysis, BlindSpots, Frame, Hint, PyFrame, Region, RegionOwner, Sample, StackStats
from sysbreak.errors import SysbreakError
from sysbreak.report._common import (
    candidates,
    headline,
    idle_line,
    libraries_line,
    library_stacks,
    region_kind,
    rss_change,
    stack_label,
)

FORMAT = "sysbreak-report/2"
READS = ("sysbreak-report/1", FORMAT)  # what from_dict accepts: version 1 is read as it was written


def _plain(value: Any) -> Any:
    """A JSON-able copy of a value of a model field (dataclasses become objects, tuples lists)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_plain(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


_EXTRAS: dict[tuple[type, frozenset[str]], tuple[str, ...]] = {}


def _extra_fields(cls: type, known: frozenset[str]) -> tuple[str, ...]:
    names = _EXTRAS.get((cls, known))
    if names is None:
        names = _EXTRAS[(cls, known)] = tuple(f.name for f in dataclasses.fields(cls) if f.name not in known)
    return names


def _with_extras(obj: Any, known: frozenset[str], out: dict[str, Any]) -> dict[str, Any]:
    """Add the fields the analysis gained after this reporter was written, under their own names.

    The contract only ever grows (docs/report-json.md): a field added to the model shows up in the report without
    a reporter change, unless its name is already taken by a documented key.
    """
    for name in _extra_fields(type(obj), known):
        if name not in out:
            out[name] = _plain(getattr(obj, name))
    return out


_FRAME_FIELDS = frozenset({"pc", "module", "offset", "function", "file", "line"})
_PYFRAME_FIELDS = frozenset({"file", "line", "function"})
_STACK_FIELDS = frozenset(
    {"id", "frames", "python", "events", "by_syscall", "mapped_bytes", "unmapped_bytes", "live_bytes", "rss_bytes"}
    | {"growth_bytes", "growth_per_min", "first_t", "last_t", "label", "stack_ids"}
    | {"first_rss_bytes", "rss_growth_bytes", "anon_rss_bytes", "file_rss_bytes", "reserved_bytes", "after_last_bytes"}
    | {"peak_bytes", "rss_growth_per_min", "kind", "series", "pids"}
    | {"by_pid"}
)
_REGION_FIELDS = frozenset(
    {"start", "end", "perms", "path", "size", "rss", "first_size", "first_rss", "status", "owners"}
    | {"unexplained_bytes", "pid"}
)
_OWNER_FIELDS = frozenset({"stack_id", "bytes"})
_SAMPLE_FIELDS = frozenset({"t", "rss_bytes", "live_bytes"})
_ANALYSIS_FIELDS = frozenset(
    {"source", "pid", "exe", "syscalls", "t0", "t1", "events", "by_syscall", "stacks", "regions", "timeline"}
    | {"snapshots", "warnings", "sort", "hints", "processes"}
    | {"process_rss"}
)


def _tool() -> str:
    from sysbreak import __version__

    return f"sysbreak {__version__}"


def frame_dict(frame: Frame) -> dict[str, Any]:
    return _with_extras(
        frame,
        _FRAME_FIELDS,
        {
            "function": frame.function,
            "module": frame.module,
            "offset": frame.offset,
            "file": frame.file,
            "line": frame.line,
            "pc": frame.pc,
        },
    )


def pyframe_dict(frame: PyFrame) -> dict[str, Any]:
    return _with_extras(frame, _PYFRAME_FIELDS, {"file": frame.file, "line": frame.line, "function": frame.function})


def stack_dict(stack: StackStats, rank: int) -> dict[str, Any]:
    return _with_extras(
        stack,
        _STACK_FIELDS,
        {
            "id": stack.id,
            "rank": rank,
            "label": stack_label(stack),
            "events": stack.events,
            "by_syscall": dict(stack.by_syscall),
            "mapped_bytes": stack.mapped_bytes,
            "unmapped_bytes": stack.unmapped_bytes,
            "kind": stack.kind,
            "live_bytes": stack.live_bytes,
            "peak_bytes": stack.peak_bytes,
            "rss_bytes": stack.rss_bytes,
            "first_rss_bytes": stack.first_rss_bytes,
            "rss_growth_bytes": stack.rss_growth_bytes,
            "anon_rss_bytes": stack.anon_rss_bytes,
            "file_rss_bytes": stack.file_rss_bytes,
            "virtual_bytes": stack.virtual_bytes,
            "reserved_bytes": stack.reserved_bytes,
            "after_last_bytes": stack.after_last_bytes,
            "rss_growth_per_min": stack.rss_growth_per_min,
            "growth_bytes": stack.growth_bytes,
            "growth_per_min": stack.growth_per_min,
            "first_t": stack.first_t,
            "last_t": stack.last_t,
            "frames": [frame_dict(frame) for frame in stack.frames],
            "python": [pyframe_dict(frame) for frame in stack.python],
            "stack_ids": list(stack.stack_ids),
            "series": [[t, n] for t, n in stack.series],
            "pids": list(stack.pids),
            "by_pid": {str(pid): _per_process(part) for pid, part in sorted(stack.by_pid.items())},
        },
    )


#: the numbers each process has of its own in a merged stack's ``by_pid`` (written and read back alike)
PER_PROCESS = (
    "events",
    "live_bytes",
    "rss_bytes",
    "rss_growth_bytes",
    "after_last_bytes",
    "peak_bytes",
    "mapped_bytes",
    "growth_bytes",
)


def _per_process(stack: StackStats) -> dict[str, Any]:
    """One process's own numbers for a merged stack (``by_pid``)."""
    return {name: getattr(stack, name) for name in PER_PROCESS}


def region_dict(region: Region, exe: str | None = None) -> dict[str, Any]:
    rss_growth = None
    if region.rss is not None:
        rss_growth = region.rss - (region.first_rss or 0)
    return _with_extras(
        region,
        _REGION_FIELDS,
        {
            "start": region.start,
            "end": region.end,
            "start_hex": f"{region.start:#x}",
            "end_hex": f"{region.end:#x}",
            "perms": region.perms,
            "path": region.path,
            "size": region.size,
            "rss": region.rss,
            "first_size": region.first_size,
            "first_rss": region.first_rss,
            "status": region.status,
            "kind": region_kind(region, exe),
            "growth": region.growth,
            "rss_growth": rss_growth,
            "owners": [
                _with_extras(owner, _OWNER_FIELDS, {"stack": owner.stack_id, "bytes": owner.bytes})
                for owner in region.owners
            ],
            "unexplained_bytes": region.unexplained_bytes,
            "pid": region.pid,
        },
    )


def to_dict(analysis: Analysis, *, top: int | None = None) -> dict[str, Any]:
    """The report as plain JSON-able data. ``top`` keeps only the N most important stacks."""
    stacks = analysis.stacks if top is None else analysis.stacks[:top]
    regions = analysis.regions
    doc = {
        "format": FORMAT,
        "tool": _tool(),
        "headline": headline(analysis),
        "source": analysis.source,
        "pid": analysis.pid,
        "processes": [dict(p) for p in analysis.processes],
        "process_rss": {str(pid): [[t, n] for t, n in line] for pid, line in analysis.process_rss.items()},
        "exe": analysis.exe,
        "syscalls": list(analysis.syscalls),
        "t0": analysis.t0,
        "t1": analysis.t1,
        "duration_s": analysis.duration,
        "snapshots": analysis.snapshots,
        "sort": analysis.sort,
        "totals": {
            "events": analysis.events,
            "by_syscall": dict(analysis.by_syscall),
            "stacks": len(analysis.stacks),
            "mapped_bytes": sum(stack.mapped_bytes for stack in analysis.stacks),
            "live_bytes": sum(stack.live_bytes for stack in analysis.stacks),
            "regions": len(regions),
            "region_bytes": sum(region.size for region in regions),
            "region_rss_bytes": sum(region.rss or 0 for region in regions),
            "growth_bytes": sum(region.growth for region in regions if region.growth > 0),
            "rss_growth_bytes": rss_change(analysis),
            "unexplained_bytes": sum(region.unexplained_bytes for region in regions),
            "candidates": len(candidates(analysis)),
            "rss_growth_of_candidates": sum(max(0, s.rss_growth_bytes) for s in candidates(analysis)),
        },
        "folded": {
            "idle": idle_line(analysis),
            "libraries": libraries_line(analysis),
            "library_stacks": [s.id for s in library_stacks(analysis)],
        },
        "hints": [
            {"culprit": h.culprit, "text": h.text, "doc": h.doc, "stacks": list(h.stack_ids), "bytes": h.bytes}
            for h in analysis.hints
        ],
        "stacks": [stack_dict(stack, rank) for rank, stack in enumerate(stacks, start=1)],
        "regions": [region_dict(region, analysis.exe) for region in regions],
        "timeline": [
            _with_extras(
                sample, _SAMPLE_FIELDS, {"t": sample.t, "rss_bytes": sample.rss_bytes, "live_bytes": sample.live_bytes}
            )
            for sample in analysis.timeline
        ],
        "warnings": list(analysis.warnings),
    }
    return _with_extras(analysis, _ANALYSIS_FIELDS, doc)


_compact = json.JSONEncoder(ensure_ascii=False, separators=(", ", ": ")).encode


def dumps(doc: dict[str, Any]) -> str:
    """The document with its top-level keys one per line and each stack, region and sample on a line of its own:
    readable, friendly to grep and diff, and fast to write for captures with many thousands of stacks."""
    parts = []
    for key, value in doc.items():
        if isinstance(value, list) and value and isinstance(value[0], dict):
            items = ",\n    ".join(_compact(item) for item in value)
            parts.append(f"  {_compact(key)}: [\n    {items}\n  ]")
        else:
            parts.append(f"  {_compact(key)}: {_compact(value)}")
    return "{\n" + ",\n".join(parts) + "\n}\n"


def render_json(analysis: Analysis, *, top: int | None = None) -> str:
    return dumps(to_dict(analysis, top=top))


# -- reading a saved report back (for `sysbreak report saved.json --format html` and `sysbreak diff`) ----------


def is_report(data: object) -> bool:
    return isinstance(data, dict) and str(data.get("format", "")).startswith("sysbreak-report/")


def _extra_kwargs(cls: type, known: frozenset[str], data: dict[str, Any]) -> dict[str, Any]:
    """Constructor arguments for the fields the model gained since this reader was written (plain values)."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if f.name in known or f.name not in data:
            continue
        value = data[f.name]
        if isinstance(value, list) and str(f.type).startswith("tuple"):
            value = tuple(value)
        out[f.name] = value
    return out


def _opt_float(x: Any) -> float | None:
    return None if x is None else float(x)


def _stack_from(s: dict[str, Any]) -> StackStats:
    """One ``stacks`` entry read back, with each process's own numbers (``by_pid``) when it has them."""
    stack = StackStats(
        id=int(s["id"]),
        frames=tuple(
            Frame(
                pc=f.get("pc"),
                module=f.get("module"),
                offset=f.get("offset"),
                function=f.get("function"),
                file=f.get("file"),
                line=f.get("line"),
            )
            for f in s.get("frames", [])
        ),
        python=tuple(PyFrame(file=p["file"], line=p.get("line"), function=p["function"]) for p in s.get("python", [])),
        events=int(s.get("events", 0)),
        by_syscall={str(k): int(v) for k, v in s.get("by_syscall", {}).items()},
        mapped_bytes=int(s.get("mapped_bytes", 0)),
        unmapped_bytes=int(s.get("unmapped_bytes", 0)),
        live_bytes=int(s.get("live_bytes", 0)),
        rss_bytes=int(s.get("rss_bytes", 0)),
        growth_bytes=int(s.get("growth_bytes", 0)),
        growth_per_min=_opt_float(s.get("growth_per_min", 0.0)),
        rss_growth_per_min=_opt_float(s.get("rss_growth_per_min")),
        series=[(float(t), int(n)) for t, n in s.get("series", [])],
        first_t=s.get("first_t"),
        last_t=s.get("last_t"),
        label=str(s.get("label", "")),
        stack_ids=tuple(int(i) for i in s.get("stack_ids", [])),
        first_rss_bytes=int(s.get("first_rss_bytes", 0)),
        rss_growth_bytes=int(s.get("rss_growth_bytes", 0)),
        anon_rss_bytes=int(s.get("anon_rss_bytes", 0)),
        file_rss_bytes=int(s.get("file_rss_bytes", 0)),
        reserved_bytes=int(s.get("reserved_bytes", 0)),
        after_last_bytes=int(s.get("after_last_bytes", 0)),
        peak_bytes=int(s.get("peak_bytes", 0)),
        kind=str(s.get("kind", "candidate" if int(s.get("live_bytes", 0)) else "idle")),
        pids=tuple(int(p) for p in s.get("pids", [])),
        **_extra_kwargs(StackStats, _STACK_FIELDS, s),
    )
    by_pid = s.get("by_pid") or {}
    if by_pid:
        stack.by_pid = {int(pid): _part_from(stack, int(pid), part) for pid, part in by_pid.items()}
    return stack


def _part_from(stack: StackStats, pid: int, part: dict[str, Any]) -> StackStats:
    """A merged stack's numbers in one process (``by_pid``): the stack's frames and label, that process's sums."""
    one = StackStats(id=stack.id, frames=stack.frames, python=stack.python, label=stack.label, pids=(pid,))
    for name in PER_PROCESS:
        setattr(one, name, int(part.get(name, 0)))
    return one


def _blind_spots_from(data: Any) -> BlindSpots | None:
    if data is None:
        return None
    return BlindSpots(
        unexplained_growth_bytes=int(data.get("unexplained_growth_bytes", 0)),
        regions=int(data.get("regions", 0)),
        uncovered_sites=[dict(x) for x in data.get("uncovered_sites", [])],
        uncovered_count=int(data.get("uncovered_count", 0)),
        unscanned_modules=[dict(x) for x in data.get("unscanned_modules", [])],
        summary=str(data.get("summary", "")),
        unchecked_releases=int(data.get("unchecked_releases", 0)),
    )


def from_dict(data: dict[str, Any], *, name: str = "report") -> Analysis:
    """Rebuild the :class:`Analysis` a ``sysbreak-report/2`` (or ``/1``) document was made from, as far as it can."""
    fmt = data.get("format")
    if fmt not in READS:
        raise SysbreakError(f"{name} is a {fmt!r} report; this sysbreak reads {' and '.join(map(repr, READS))}")
    v1 = fmt == READS[0]
    try:
        stacks = [_stack_from(s) for s in data.get("stacks", [])]
        regions = [
            Region(
                start=int(r["start"]),
                end=int(r["end"]),
                perms=str(r.get("perms", "")),
                path=str(r.get("path", "")),
                size=int(r.get("size", 0)),
                rss=r.get("rss"),
                first_size=int(r.get("first_size", 0)),
                first_rss=r.get("first_rss"),
                status=str(r.get("status", "same")),
                owners=[RegionOwner(stack_id=int(o["stack"]), bytes=int(o["bytes"])) for o in r.get("owners", [])],
                unexplained_bytes=int(r.get("unexplained_bytes", 0)),
                pid=r.get("pid"),
            )
            for r in data.get("regions", [])
        ]
        timeline = [
            Sample(t=float(p["t"]), rss_bytes=p.get("rss_bytes"), live_bytes=int(p.get("live_bytes", 0)))
            for p in data.get("timeline", [])
        ]
        totals = data.get("totals", {})
        return Analysis(
            source=str(data.get("source", name)),
            pid=data.get("pid"),
            exe=data.get("exe"),
            syscalls=list(data.get("syscalls", [])),
            t0=data.get("t0"),
            t1=data.get("t1"),
            events=int(totals.get("events", 0)),
            by_syscall={str(k): int(v) for k, v in totals.get("by_syscall", {}).items()},
            stacks=stacks,
            regions=regions,
            timeline=timeline,
            snapshots=int(data.get("snapshots", 0)),
            warnings=[str(w) for w in data.get("warnings", [])],
            sort="live" if v1 else str(data.get("sort", "rss-growth")),  # version 1 ranked by live bytes
            processes=[dict(p) for p in data.get("processes", []) if isinstance(p, dict)],
            process_rss={
                int(pid): [(float(t), int(n)) for t, n in line] for pid, line in (data.get("process_rss") or {}).items()
            },
            blind_spots=_blind_spots_from(data.get("blind_spots")),
            reordered={str(k): int(v) for k, v in (data.get("reordered") or {}).items()},
            **_extra_kwargs(Analysis, _ANALYSIS_FIELDS | {"blind_spots", "reordered"}, data),
            hints=[
                Hint(
                    culprit=str(h["culprit"]),
                    text=str(h["text"]),
                    doc=str(h.get("doc", "")),
                    stack_ids=tuple(int(i) for i in h.get("stacks", [])),
                    bytes=int(h.get("bytes", 0)),
                )
                for h in data.get("hints", [])
            ],
        )
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise SysbreakError(f"{name} is not a valid {FORMAT} report ({type(exc).__name__}: {exc})") from None
