"""The snapshot plan: which snapshots the replay meets, in time order, and which are the first and the last.

The capture's smaps snapshots (of the analysed process) and the hand-given ``--maps`` files become one list of
:class:`Slot` in CLOCK_MONOTONIC order; the first and the last usable ones are parsed now (the replay matches
the ledger against them), the others only give a point of the time line.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sysbreak.capture.reader import Capture, SnapshotRef
from sysbreak.errors import SysbreakError
from sysbreak.maps import Snapshot, parse_maps_file


@dataclass
class Slot:
    """One snapshot in the time line of the analysis."""

    t: float  # CLOCK_MONOTONIC; math.inf for a maps file with no usable time (taken after the log)
    name: str
    ref: SnapshotRef | None = None
    snap: Snapshot | None = None  # parsed: the first and the last, and hand-given files
    rss: int | None = None
    role: str = ""  # "first", "last", "both" or ""


@dataclass
class SnapshotPlan:
    slots: list[Slot]
    first: int | None  # index in ``slots`` of the first usable snapshot
    last: int | None  # and of the last (== first when there is one)

    @property
    def two(self) -> bool:
        """There is a first and a different last snapshot: growth between them can be measured."""
        return self.first is not None and self.last is not None and self.last != self.first


def _iso_to_epoch(s: Any) -> float | None:
    if not isinstance(s, str) or not s:
        return None
    try:
        return datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def parse_ref(ref: SnapshotRef, warnings: list[str]) -> Snapshot | None:
    """The snapshot file ``ref`` names, parsed; None (and a warning) when it cannot be."""
    try:
        snap = parse_maps_file(ref.path, t=ref.t)
    except SysbreakError as e:
        warnings.append(f"snapshot skipped: {e}")
        return None
    warnings.extend(snap.warnings)
    return snap


def _tail_time(path: str) -> float | None:
    """The largest ``t`` among the last complete lines of an event log (read from its end, cheaply)."""
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - 65536))
            chunk = fh.read()
    except OSError:
        return None
    best: float | None = None
    for line in chunk.split(b"\n")[1:]:
        try:
            obj = json.loads(line)
        except (ValueError, RecursionError):
            continue
        if isinstance(obj, dict) and type(obj.get("t")) in (int, float):
            best = obj["t"] if best is None else max(best, obj["t"])
    return best


def _capture_slots(cap: Capture, pid: int | None, warnings: list[str]) -> list[Slot]:
    slots: list[Slot] = []
    others: set[int] = set()
    for ref in cap.snapshots:
        assert ref.t is not None
        if ref.pid is not None and pid is not None and ref.pid != pid:
            others.add(ref.pid)  # a capture of several processes: this analysis is of the main one
            continue
        slots.append(Slot(t=ref.t, name=os.path.basename(ref.path), ref=ref))
    if others:
        warnings.append(
            f"the capture holds snapshots of {len(others)} other process{'es' if len(others) > 1 else ''} "
            f"({', '.join(map(str, sorted(others)))}); this report is of pid {pid}"
        )
    return slots


def _manual_slots(
    maps_files: Sequence[str | os.PathLike[str]],
    cap: Capture | None,
    meta: dict[str, Any],
    header: dict[str, Any] | None,
    t0: float | None,
    t1_meta: float | None,
    warnings: list[str],
) -> list[Slot]:
    """The ``--maps`` files: their time from their mtime when it fits the capture, else after the whole log."""
    wall0 = _iso_to_epoch(meta.get("started")) or _iso_to_epoch(header.get("wall0") if header else None)
    end_t = _tail_time(cap.events_path) if cap is not None and cap.events_path else None
    manual: list[Slot] = []
    for mf in maps_files:
        snap = parse_maps_file(mf)  # errors here are the user's input: let them through
        warnings.extend(snap.warnings)
        mt = math.inf
        if wall0 is not None and t0 is not None:
            try:
                mt = t0 + (os.stat(mf).st_mtime - wall0)
            except OSError:
                mt = math.inf
        manual.append(Slot(t=mt, name=os.fspath(mf), snap=snap))
    times = [sl.t for sl in manual]
    lo = t0 - 60 if t0 is not None else -math.inf
    hi = (end_t if end_t is not None else (t1_meta or math.inf)) + 60
    if any(not lo <= t <= hi for t in times) or times != sorted(times):
        if wall0 is not None and t0 is not None:
            warnings.append("the --maps files' times do not fit the capture: they are taken as after the log")
        for sl in manual:
            sl.t = math.inf
    for sl in manual:
        if sl.snap is not None:
            sl.snap.t = None if sl.t == math.inf else sl.t
    return manual


def plan_snapshots(
    cap: Capture | None,
    maps_files: Sequence[str | os.PathLike[str]],
    *,
    pid: int | None,
    meta: dict[str, Any],
    header: dict[str, Any] | None,
    t0: float | None,
    t1_meta: float | None,
    warnings: list[str],
) -> SnapshotPlan:
    """The snapshots of ``pid`` in ``cap`` plus the ``maps_files``, in time order, first and last parsed."""
    slots = _capture_slots(cap, pid, warnings) if cap is not None else []
    if maps_files:
        slots.extend(_manual_slots(maps_files, cap, meta, header, t0, t1_meta, warnings))
    slots.sort(key=lambda s: s.t)  # stable: hand-given files keep their order among equal times

    # Parse the first and the last usable snapshot now (the last one first: a half-written last file falls
    # back to the one before it).
    first_i = last_i = None
    for i, s in enumerate(slots):
        if s.snap is None and s.ref is not None:
            s.snap = parse_ref(s.ref, warnings)
        if s.snap is not None:
            first_i = i
            break
    for i in range(len(slots) - 1, -1, -1):
        s = slots[i]
        if s.snap is None and s.ref is not None:
            s.snap = parse_ref(s.ref, warnings)
        if s.snap is not None and (not s.snap.truncated or i == first_i):
            last_i = i
            break
        if s.snap is not None and s.snap.truncated:
            warnings.append(f"the last snapshot {s.name} was cut short; the one before it is used as the last")
            s.snap = None
    if first_i is not None and last_i is not None and last_i < first_i:
        last_i = first_i
    if first_i is not None:
        slots[first_i].role = "first"
    if last_i is not None:
        slots[last_i].role = "both" if last_i == first_i else "last"
    return SnapshotPlan(slots, first_i, last_i)
