"""Process trees: one analysis per process of a capture, merged into one report (or one process alone).

A capture of several processes (``run -f``, ``attach PID PID``, ``attach --children``; docs/capture-dir.md) holds
one capture directory per process: the top one for the first process and ``procs/PID/`` for each other, each with
its own event log and smaps snapshots. Address spaces are separate, so each process is replayed on its own ledger
against its own snapshots (:func:`sysbreak.analysis.pipeline.analyze`). The merged report then lists every stack
once, however many processes made it: the same frames (module, offset, function, and the Python frames) in
several processes are one stack whose numbers are the sums and whose ``pids`` name those processes; its
``by_pid`` keeps each process's own numbers (the collapsed reporter's per-process lines). Regions keep the ``pid``
of the process they belong to.

The merged time line is the tree's: each process's samples moved onto the merged clock (the earliest ``t0``; all
processes' ``t0`` are CLOCK_MONOTONIC of one machine), and at each moment any process sampled, the tree's RSS and
live bytes are the sums of every process's value at its latest sample at or before that moment (a process counts
from its first snapshot on, and at its last one after it). ``process_rss`` keeps each process's own RSS line, and
a merged stack's ``series`` is the same sum over the processes it was seen in.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

from sysbreak.analysis import rank
from sysbreak.analysis.blindspots import unchecked_text
from sysbreak.analysis.model import Analysis, BlindSpots, Sample, StackStats
from sysbreak.errors import SysbreakError

_SUMMED = (
    "events",
    "mapped_bytes",
    "unmapped_bytes",
    "live_bytes",
    "rss_bytes",
    "growth_bytes",
    "first_rss_bytes",
    "rss_growth_bytes",
    "anon_rss_bytes",
    "file_rss_bytes",
    "reserved_bytes",
    "after_last_bytes",
    "peak_bytes",  # the sum of each process's high-water mark: an upper bound of the tree's
)


def process_list(meta: dict[str, Any]) -> list[dict[str, Any]]:
    """The processes of a capture's meta.json: ``processes`` (capture format 2), or the one process of format 1."""
    procs = meta.get("processes")
    if isinstance(procs, list) and procs:
        return [p for p in procs if isinstance(p, dict) and isinstance(p.get("pid"), int)]
    if isinstance(meta.get("pid"), int):
        argv = meta.get("cmdline")
        return [
            {"pid": meta["pid"], "ppid": meta.get("ppid"), "argv": argv if isinstance(argv, list) else [], "dir": "."}
        ]
    return []


def _public(p: dict[str, Any]) -> dict[str, Any]:
    keep = ("pid", "ppid", "argv", "exe", "how", "started", "ended", "end", "events")
    return {k: p.get(k) for k in keep if k in p}


def analyze_processes(source: str | os.PathLike[str], *, pid: int | None = None, **kwargs: Any) -> Analysis:
    """The analysis of a capture directory: merged over its processes, or of process ``pid`` alone."""
    from sysbreak.analysis.pipeline import analyze
    from sysbreak.capture import open_capture

    src = os.fspath(source)
    procs = process_list(open_capture(src).meta) if os.path.isdir(src) else []
    if procs and not all("dir" in p for p in procs):
        # `sysbreak watch PID PID`: one directory of snapshots of several processes; the analysis is of `pid`'s
        if pid is not None and pid not in {p["pid"] for p in procs}:
            raise SysbreakError(f"--pid {pid}: no such process in {src}")
        one = analyze(src, **kwargs)
        if one.pid is not None:
            _tag(one, one.pid)
        one.processes = [_public(p) for p in procs]
        return one
    if pid is not None:
        chosen = [p for p in procs if p["pid"] == pid]
        if not chosen:
            known = ", ".join(str(p["pid"]) for p in procs) or "none listed"
            raise SysbreakError(f"--pid {pid}: no such process in {src} (its processes: {known})")
        procs = chosen
    if len(procs) <= 1:
        sub = os.path.join(src, str(procs[0].get("dir") or ".")) if procs else src
        one = analyze(os.path.normpath(sub) if procs else src, **kwargs)
        one.source = src
        if procs:
            _tag(one, procs[0]["pid"])
            one.processes = [_public(procs[0])]
        elif one.pid is not None:
            _tag(one, one.pid)
            one.processes = [{"pid": one.pid, "ppid": None, "argv": []}]
        return one
    parts = []
    for p in procs:
        sub = os.path.normpath(os.path.join(src, str(p.get("dir") or ".")))
        if not os.path.isdir(sub):
            continue
        part = analyze(sub, **kwargs)
        _tag(part, p["pid"])
        parts.append((p, part))
    merged = merge([a for _, a in parts], sort=kwargs.get("sort") or rank.DEFAULT_SORT)
    merged.source = src
    merged.processes = [_public(p) for p in procs]
    return merged


def _tag(a: Analysis, pid: int) -> None:
    for st in a.stacks:
        st.pids = (pid,)
    for r in a.regions:
        r.pid = pid


def _stack_key(st: StackStats) -> tuple[Any, ...]:
    return (
        tuple((f.module, f.offset, f.function) for f in st.frames),
        tuple((f.file, f.line, f.function) for f in st.python),
    )


def step_sum(series: list[list[tuple[float, int]]]) -> list[tuple[float, int]]:
    """At each time any of ``series`` (each in time order) has a point: the sum of every series' latest value at or
    before that time (a series adds 0 before its first point)."""
    times = sorted({t for one in series for t, _ in one})
    at = [0] * len(series)
    current = [0] * len(series)
    out: list[tuple[float, int]] = []
    for t in times:
        for i, one in enumerate(series):
            while at[i] < len(one) and one[at[i]][0] <= t:
                current[i] = one[at[i]][1]
                at[i] += 1
        out.append((t, sum(current)))
    return out


def _tree_timeline(parts: list[tuple[float, Analysis]]) -> list[Sample]:
    """The tree's samples from each (shift onto the merged clock, process analysis) (see the module docstring)."""
    rss = [[(s.t + shift, s.rss_bytes) for s in a.timeline if s.rss_bytes is not None] for shift, a in parts]
    live = [sorted((s.t + shift, s.live_bytes) for s in a.timeline) for shift, a in parts]
    rss_at = dict(step_sum([sorted(one) for one in rss]))
    out = [Sample(t=t, rss_bytes=None, live_bytes=n) for t, n in step_sum(live) if t not in rss_at]
    live_at = dict(step_sum(live))
    out += [Sample(t=t, rss_bytes=n, live_bytes=live_at.get(t, 0)) for t, n in rss_at.items()]
    out.sort(key=lambda x: (x.t, x.rss_bytes is None))
    return out


def merge(parts: list[Analysis], *, sort: str = rank.DEFAULT_SORT) -> Analysis:
    """One analysis of several processes' (each stack tagged with its pid): equal stacks summed, ids renumbered."""
    if not parts:
        raise ValueError("nothing to merge")
    root = parts[0]
    out = Analysis(source=root.source, pid=root.pid, exe=root.exe, syscalls=list(root.syscalls))
    t0s = [a.t0 for a in parts if a.t0 is not None]
    t1s = [a.t1 for a in parts if a.t1 is not None]
    out.t0 = min(t0s) if t0s else None
    out.t1 = max(t1s) if t1s else None
    clock0 = out.t0

    def shift(a: Analysis) -> float:
        return (a.t0 - clock0) if a.t0 is not None and clock0 is not None else 0.0

    if len(parts) == 1:
        out.timeline = list(root.timeline)
    else:
        out.timeline = _tree_timeline([(shift(a), a) for a in parts])
    series_of: dict[int, list[list[tuple[float, int]]]] = {}
    by_key: dict[tuple[Any, ...], StackStats] = {}
    unexplained = regions_unexplained = unchecked = 0
    for a in parts:
        tag = a.stacks[0].pids[0] if a.stacks and a.stacks[0].pids else a.pid
        moved = shift(a)
        if tag is not None and len(parts) > 1:
            out.process_rss[tag] = [(s.t + moved, s.rss_bytes) for s in a.timeline if s.rss_bytes is not None]
        remap: dict[int, int] = {}
        for st in a.stacks:
            key = _stack_key(st)
            m = by_key.get(key)
            if m is None:
                m = dataclasses.replace(st, id=len(by_key) + 1, by_syscall=dict(st.by_syscall), series=list(st.series))
                m.by_pid = {tag: st} if tag is not None else {}
                by_key[key] = m
            else:
                if tag is not None:
                    mine = m.by_pid.get(tag)
                    if mine is None:
                        m.by_pid[tag] = st
                    else:  # the same frames twice in one process: that process's numbers are their sums
                        both = dataclasses.replace(mine)
                        for name in _SUMMED:
                            setattr(both, name, getattr(mine, name) + getattr(st, name))
                        m.by_pid[tag] = both
                for name in _SUMMED:
                    setattr(m, name, getattr(m, name) + getattr(st, name))
                for k, v in st.by_syscall.items():
                    m.by_syscall[k] = m.by_syscall.get(k, 0) + v
                for name in ("growth_per_min", "rss_growth_per_min"):
                    mine, theirs = getattr(m, name), getattr(st, name)
                    setattr(m, name, theirs if mine is None else mine if theirs is None else mine + theirs)
                m.first_t = min((x for x in (m.first_t, st.first_t) if x is not None), default=None)
                m.last_t = max((x for x in (m.last_t, st.last_t) if x is not None), default=None)
                m.pids = tuple(sorted({*m.pids, *st.pids}))
                if st.kind == "candidate":
                    m.kind = "candidate"
            remap[st.id] = m.id
            if st.series:
                series_of.setdefault(m.id, []).append([(t + moved, n) for t, n in st.series])
        for r in a.regions:
            owners = [dataclasses.replace(o, stack_id=remap.get(o.stack_id, o.stack_id)) for o in r.owners]
            out.regions.append(dataclasses.replace(r, owners=owners))
        for h in a.hints:
            if not any(x.culprit == h.culprit for x in out.hints):
                out.hints.append(dataclasses.replace(h, stack_ids=tuple(remap.get(i, i) for i in h.stack_ids)))
        out.events += a.events
        for k, v in a.by_syscall.items():
            out.by_syscall[k] = out.by_syscall.get(k, 0) + v
        out.snapshots += a.snapshots
        out.warnings += [w if a is root else f"pid {tag}: {w}" for w in a.warnings]
        if a.blind_spots is not None:
            unexplained += a.blind_spots.unexplained_growth_bytes
            regions_unexplained += a.blind_spots.regions
            unchecked += a.blind_spots.unchecked_releases
        out.failed_releases += a.failed_releases
        for name, n in a.reordered.items():
            out.reordered[name] = out.reordered.get(name, 0) + n
    if root.blind_spots is not None or unexplained or unchecked:
        base = root.blind_spots or BlindSpots(0, 0)
        out.blind_spots = dataclasses.replace(
            base, unexplained_growth_bytes=unexplained, regions=regions_unexplained, unchecked_releases=unchecked
        )
        if unchecked != base.unchecked_releases:  # the sentence says the tree's count
            roots = unchecked_text(base.unchecked_releases) if base.unchecked_releases else ""
            said = base.summary.replace(roots, unchecked_text(unchecked)) if roots else base.summary
            if not roots:
                said = "; ".join(x for x in (said, unchecked_text(unchecked)) if x)
            out.blind_spots.summary = said
    out.by_syscall = dict(sorted(out.by_syscall.items(), key=lambda kv: -kv[1]))
    out.stacks = list(by_key.values())
    if len(parts) > 1:
        for m in out.stacks:
            lines = series_of.get(m.id, [])
            m.series = step_sum(lines) if len(lines) > 1 else (lines[0] if lines else [])
    return rank.resort(out, sort)
