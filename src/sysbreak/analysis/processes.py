"""Process trees: one analysis per process of a capture, merged into one report (or one process alone).

A capture of several processes (``run -f``, ``attach PID PID``, ``attach --children``; docs/capture-dir.md) holds
one capture directory per process: the top one for the first process and ``procs/PID/`` for each other, each with
its own event log and smaps snapshots. Address spaces are separate, so each process is replayed on its own ledger
against its own snapshots (:func:`sysbreak.analysis.pipeline.analyze`). The merged report then lists every stack
once, however many processes made it: the same frames (module, offset, function, and the Python frames) in
several processes are one stack whose numbers are the sums and whose ``pids`` name those processes; its
``by_pid`` keeps each process's own numbers (the collapsed reporter's per-process lines). Regions keep the ``pid``
of the process they belong to.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

from sysbreak.analysis import rank
from sysbreak.analysis.model import Analysis, BlindSpots, StackStats
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
    out.timeline = list(root.timeline)  # the first process's; each process's own is in its --pid report
    by_key: dict[tuple[Any, ...], StackStats] = {}
    unexplained = regions_unexplained = 0
    for a in parts:
        tag = a.stacks[0].pids[0] if a.stacks and a.stacks[0].pids else a.pid
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
    if root.blind_spots is not None or unexplained:
        base = root.blind_spots or BlindSpots(0, 0)
        out.blind_spots = dataclasses.replace(base, unexplained_growth_bytes=unexplained, regions=regions_unexplained)
    out.by_syscall = dict(sorted(out.by_syscall.items(), key=lambda kv: -kv[1]))
    out.stacks = list(by_key.values())
    return rank.resort(out, sort)
