"""From a capture (or an event log, or pmap/smaps files) to one :class:`~sysbreak.analysis.model.Analysis`.

Entry point: :func:`analyze`. It streams the event log once, replaying every call into a
:class:`~sysbreak.analysis.ledger.Replay` (memory: the live intervals and the stacks, never the events), and
interleaves the snapshots by time (events and snapshots share CLOCK_MONOTONIC): when the stream passes a
snapshot's time, the ledger is exactly the state the process was in when the snapshot was taken.

What the numbers mean
---------------------
*Owners of a region.* Each VMA of the last snapshot gets, per stack, the bytes of it that stack's live
intervals cover at the time of that snapshot. The kernel merges adjacent anonymous mappings into one VMA
(several owners in one region) and splits a mapping on ``mprotect`` (one owner over several regions): both
fall out of the byte overlap. ``unexplained_bytes`` = bytes of the VMA no live interval covers (mapped before
the capture, or by a call the capture did not watch).

*Regions through time.* ``first_size``/``first_rss``: the bytes (and Rss, pro-rated by overlap) of the first
snapshot's VMAs that overlap the region; the bytes of a first-snapshot VMA that no last-snapshot VMA covers
any more are added to the last-snapshot VMA that overlaps it most, so a VMA whose end was unmapped shows as
"shrank". ``status``: "new" (no overlap with the first snapshot), "grew"/"shrank"/"same" (size against
``first_size``), "gone" (a first-snapshot VMA that overlaps no last-snapshot VMA: ``size`` 0, owners as of the
first snapshot).

*Per stack* (:class:`~sysbreak.analysis.model.StackStats`): ``events``/``by_syscall`` count every call,
failed ones included; ``mapped_bytes``/``unmapped_bytes`` as in :mod:`~sysbreak.analysis.ledger`;
``live_bytes`` what it owns at the end of the log; ``rss_bytes`` = sum over last-snapshot VMAs of
``Rss * owned bytes / VMA size`` (0 when the snapshot has no Rss); ``growth_bytes`` = bytes it owns in the last
snapshot's VMAs that were mapped after the first snapshot (moved bytes keep the time they were first mapped),
plus the bytes it mapped after the last snapshot that are still live at the end of the log (a leak in the last
moments of a program that exits shows); with no snapshot: its live bytes (all of them were mapped during the
capture); with one snapshot: the bytes it owns in that snapshot plus those mapped after it and still live.
``growth_per_min`` divides by the minutes from the first snapshot to the end of the capture (the capture's
duration when there are fewer than two snapshots). ``label`` = the first frame outside libc, libucm, libucs,
ld-linux and libpthread (:data:`LABEL_SKIP`), as ``function (module+0xoff)`` (the first non-primitive frame when all
frames are in those libraries).

*Ranking* (``Analysis.stacks``): leak candidates first: by ``live_bytes`` (bytes mapped and never unmapped),
then ``growth_bytes``, then ``mapped_bytes``, then ``events``, then stack id.

*Timeline*: one :class:`~sysbreak.analysis.model.Sample` per snapshot (Rss from the index's ``rss_kb`` when
present, else from the file; ledger live bytes at that moment) and, between them, samples of the live bytes
alone (``rss_bytes`` None), at most :data:`MAX_SAMPLES`. ``Sample.t`` is seconds since the capture's ``t0``.

*Folding*: ``depth=N`` keeps the N frames nearest the syscall; ``group_outside=REGEX`` groups stacks by their
first frame whose module path does not match REGEX (``re.search``; a frame with no module counts as outside).
Stacks equal after either merge into one :class:`StackStats` whose ``id`` is the first member's id and whose
``stack_ids`` lists the members.
"""

from __future__ import annotations

import bisect
import json
import math
import os
import re
from collections.abc import Generator, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sysbreak.analysis.ledger import OWNER_SHIFT, Replay
from sysbreak.analysis.model import Analysis, Frame, PyFrame, Region, RegionOwner, Sample, StackStats
from sysbreak.capture import Capture, SnapshotRef, open_capture
from sysbreak.capture.decode import Batch, StreamSummary, stream
from sysbreak.errors import SysbreakError
from sysbreak.maps import Snapshot, Vma, parse_maps_file

LABEL_SKIP = re.compile(r"(?:^|/)(?:libc\.so|libc-[0-9.]+\.so|libucm\.so|libucs\.so|ld-linux|libpthread)")
MAX_SAMPLES = 1000
UNKNOWN_STACK = 0  # the id of the stack of events that name none
OLD, GROWING, AFTER_LAST = 0, 1, 2  # ledger epochs: mapped before the first snapshot, after it, after the last
EPOCH_MASK = (1 << OWNER_SHIFT) - 1


# --- stacks, folding and grouping -----------------------------------------------------------------------------------


def _basename(module: str | None) -> str:
    return os.path.basename(module) if module else "?"


def frame_name(f: Frame) -> str:
    """``function (module+0xoff)``, or ``module+0xoff`` when the function is unknown."""
    if f.module is None:
        where = f"{f.pc:#x}" if f.pc is not None else "?"
    else:
        where = f"{_basename(f.module)}+{f.offset:#x}" if f.offset is not None else _basename(f.module)
    return f"{f.function} ({where})" if f.function else where


# The system-call primitives themselves: never what a label should name (glibc's __GI___mmap64, __brk, ...).
_PRIMITIVE = re.compile(r"^(?:__GI_)?_*(?:mmap(?:64)?|munmap|mremap|brk|sbrk|syscall|mprotect)$")


def stack_label(frames: Sequence[Frame], skip: re.Pattern[str] = LABEL_SKIP) -> str:
    """The first frame whose module does not match ``skip``. When every frame is in those libraries (the dynamic
    loader mapping a library, libc's own allocator), the first frame that is not a system-call primitive, e.g.
    ``_dl_map_segments (ld-linux-x86-64.so.2+0x6a79)``; the innermost frame when all are primitives."""
    if not frames:
        return ""
    for f in frames:
        if f.module is None or not skip.search(f.module):
            return frame_name(f)
    for f in frames:
        if f.function and not _PRIMITIVE.match(f.function):
            return frame_name(f)
    return frame_name(frames[0])


def _frame_key(f: Frame) -> tuple[Any, ...]:
    if f.module is not None and f.offset is not None:
        return (f.module, f.offset)
    return (f.pc, f.function)


@dataclass
class _Group:
    id: int
    frames: tuple[Frame, ...]
    python: tuple[PyFrame, ...]
    members: list[int] = field(default_factory=list)


class _Stacks:
    """Raw stack ids -> group ids, applying ``depth`` and ``group_outside``."""

    def __init__(self, depth: int | None, group_outside: str | None) -> None:
        if depth is not None and depth < 1:
            raise SysbreakError(f"--depth must be 1 or more, not {depth}")
        self.depth = depth
        try:
            self.outside = re.compile(group_outside) if group_outside else None
        except re.error as e:
            raise SysbreakError(f"--group-outside {group_outside!r} is not a valid regular expression ({e})") from None
        self.folding = depth is not None or self.outside is not None
        self.group_of: dict[int, int] = {}  # raw id -> group id
        self.groups: dict[int, _Group] = {}
        self._by_key: dict[tuple[Any, ...], int] = {}

    def add(self, sid: int, frames: tuple[Frame, ...], python: tuple[PyFrame, ...]) -> None:
        if sid in self.group_of:
            return
        if not self.folding:
            self.group_of[sid] = sid
            self.groups[sid] = _Group(sid, frames, python, [sid])
            return
        key_frames = frames
        if self.outside is not None:
            key: tuple[Any, ...] = ("raw", sid)  # no frame outside: a group of its own
            for i, f in enumerate(frames):
                if f.module is None or not self.outside.search(f.module):
                    key_frames = frames[i:]
                    key = ("outside", _frame_key(f))
                    break
        else:
            key_frames = frames[: self.depth]
            key = ("depth", *(_frame_key(f) for f in key_frames))
        if self.depth is not None and self.outside is not None:
            key_frames = key_frames[: self.depth]
        gid = self._by_key.get(key)
        if gid is None:
            self._by_key[key] = sid
            self.group_of[sid] = sid
            self.groups[sid] = _Group(sid, key_frames, python, [sid])
            return
        g = self.groups[gid]
        self.group_of[sid] = gid
        g.members.append(sid)
        # Keep the frames all members share (from the key frame outwards), and Python frames only if equal.
        n = 0
        for a, b in zip(g.frames, key_frames, strict=False):
            if _frame_key(a) != _frame_key(b):
                break
            n += 1
        g.frames = g.frames[: max(n, 1)]
        if g.python != python:
            g.python = ()

    def gid(self, sid: int | None) -> int:
        if sid is None:
            sid = UNKNOWN_STACK
        g = self.group_of.get(sid)
        if g is None:  # an event whose stack record is missing (damaged line): a stack of its own
            self.group_of[sid] = sid
            self.groups[sid] = _Group(sid, (), (), [sid])
            g = sid
        return g


# --- snapshots --------------------------------------------------------------------------------------------------------


@dataclass
class _Slot:
    """One snapshot in the time line of the analysis."""

    t: float  # CLOCK_MONOTONIC; math.inf for a maps file with no usable time (taken after the log)
    name: str
    ref: SnapshotRef | None = None
    snap: Snapshot | None = None  # parsed: the first and the last, and hand-given files
    rss: int | None = None
    role: str = ""  # "first", "last", "both" or ""


def _iso_to_epoch(s: Any) -> float | None:
    if not isinstance(s, str) or not s:
        return None
    try:
        return datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def _parse_ref(ref: SnapshotRef, warnings: list[str]) -> Snapshot | None:
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


def _match(vma: Vma, replay: Replay) -> tuple[dict[int, int], dict[int, int]]:
    """Bytes of ``vma`` per stack, and of those the bytes mapped after the first snapshot (epoch not 0)."""
    owned: dict[int, int] = {}
    new: dict[int, int] = {}
    for s, e, o in replay.ledger.pieces(vma.start, vma.end):
        sid = o >> OWNER_SHIFT
        owned[sid] = owned.get(sid, 0) + e - s
        if o & EPOCH_MASK:
            new[sid] = new.get(sid, 0) + e - s
    return owned, new


@dataclass
class _Matched:
    snap: Snapshot
    owners: list[dict[int, int]]  # per VMA, bytes per stack
    new: list[dict[int, int]]


def _prorate(rss: int | None, part: int, whole: int) -> int:
    if rss is None or whole <= 0:
        return 0
    return (rss * part + whole // 2) // whole


# --- the entry point --------------------------------------------------------------------------------------------------


def analyze(
    source: str | os.PathLike[str] | None,
    *,
    maps_files: Iterable[str | os.PathLike[str]] = (),
    depth: int | None = None,
    group_outside: str | None = None,
    parallel: bool | None = None,
) -> Analysis:
    """Analyse a capture directory or an event log, with (or, for ``source=None``, only) hand-given maps files.

    ``maps_files``: pmap -x/-X, smaps or maps outputs in the order they were taken; used with the capture's
    snapshots. Their time: CLOCK_MONOTONIC from the file's mtime when the capture's start wall time and ``t0``
    are known, else they count as taken after the whole log, in the given order.
    ``depth``: fold stacks to the N frames nearest the syscall. ``group_outside``: group stacks by their first
    frame whose module does not match this regular expression. ``parallel``: decode the log in a second
    process (default: when it is big, see :mod:`sysbreak.capture.decode`). See the module doc for every number.
    """
    warnings: list[str] = []
    stacks = _Stacks(depth, group_outside)
    cap: Capture | None = None
    if source is not None:
        cap = open_capture(source)
        warnings.extend(cap.warnings)
    maps_files = list(maps_files)
    if cap is None and not maps_files:
        raise SysbreakError("nothing to analyse: give a capture directory, an event log or --maps files")
    src_name = os.fspath(source) if source is not None else ", ".join(os.fspath(p) for p in maps_files)
    analysis = Analysis(source=src_name)
    meta = cap.meta if cap is not None else {}
    if isinstance(meta.get("pid"), int):
        analysis.pid = meta["pid"]
    if isinstance(meta.get("exe"), str):
        analysis.exe = meta["exe"]
    if isinstance(meta.get("syscalls"), list):
        analysis.syscalls = [s for s in meta["syscalls"] if isinstance(s, str)]
    t0_meta = meta.get("t0") if type(meta.get("t0")) in (int, float) else None
    t1_meta = meta.get("t1") if type(meta.get("t1")) in (int, float) else None

    header: dict[str, Any] | None = None
    events_path = cap.events_path if cap is not None else None
    source_stream = stream(events_path, cap is not None and cap.is_dir, parallel=parallel) if events_path else None
    pending: Batch = []
    summary = StreamSummary()
    if source_stream is not None:
        # The first batch holds the header alone (checked by the reader); an empty log has none.
        try:
            pending = next(source_stream)
        except StopIteration as stop:
            summary = stop.value
            source_stream = None
        if pending and pending[0][0] == "header":
            header = pending[0][1]
    t0 = t0_meta if t0_meta is not None else (_num(header.get("t0")) if header else None)

    # The snapshots, in time order.
    slots: list[_Slot] = []
    if cap is not None:
        others: set[int] = set()
        for ref in cap.snapshots:
            assert ref.t is not None
            if ref.pid is not None and analysis.pid is not None and ref.pid != analysis.pid:
                others.add(ref.pid)  # a capture of several processes: this analysis is of the main one
                continue
            slots.append(_Slot(t=ref.t, name=os.path.basename(ref.path), ref=ref))
        if others:
            warnings.append(
                f"the capture holds snapshots of {len(others)} other process{'es' if len(others) > 1 else ''} "
                f"({', '.join(map(str, sorted(others)))}); this report is of pid {analysis.pid}"
            )
    if maps_files:
        wall0 = _iso_to_epoch(meta.get("started")) or _iso_to_epoch(header.get("wall0") if header else None)
        end_t = _tail_time(cap.events_path) if cap is not None and cap.events_path else None
        manual: list[_Slot] = []
        for mf in maps_files:
            snap = parse_maps_file(mf)  # errors here are the user's input: let them through
            warnings.extend(snap.warnings)
            mt = math.inf
            if wall0 is not None and t0 is not None:
                try:
                    mt = t0 + (os.stat(mf).st_mtime - wall0)
                except OSError:
                    mt = math.inf
            manual.append(_Slot(t=mt, name=os.fspath(mf), snap=snap))
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
        slots.extend(manual)
    slots.sort(key=lambda s: s.t)  # stable: hand-given files keep their order among equal times

    # Parse the first and the last usable snapshot now (the last one first: a half-written last file falls
    # back to the one before it).
    first_i = last_i = None
    for i, s in enumerate(slots):
        if s.snap is None and s.ref is not None:
            s.snap = _parse_ref(s.ref, warnings)
        if s.snap is not None:
            first_i = i
            break
    for i in range(len(slots) - 1, -1, -1):
        s = slots[i]
        if s.snap is None and s.ref is not None:
            s.snap = _parse_ref(s.ref, warnings)
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
    # Epochs (the low bits of a ledger owner): 0 mapped before the first snapshot, 1 between the first and the
    # last, 2 after the last. With fewer than two snapshots, nothing is "before".
    epoch = OLD if first_i is not None and last_i is not None and last_i != first_i else GROWING

    replay = Replay()
    ledger = replay.ledger
    gid_of = stacks.group_of
    gid = stacks.gid
    samples: list[Sample] = []
    live_samples: list[tuple[float, int]] = []
    sample_step = 0.0
    last_sample_t = -math.inf
    matched_first: _Matched | None = None
    matched_last: _Matched | None = None
    pids: set[int] = set()
    end_t_rec: float | None = None
    slot_i = 0
    next_slot_t = slots[0].t if slots else math.inf
    if header is not None:
        if isinstance(header.get("pid"), int) and analysis.pid is None:
            analysis.pid = header["pid"]
        if analysis.exe is None and isinstance(header.get("exe"), str):
            analysis.exe = header["exe"]
        if not analysis.syscalls and isinstance(header.get("syscalls"), list):
            analysis.syscalls = [s for s in header["syscalls"] if isinstance(s, str)]

    used_snaps = [0]

    def take_snapshot(slot: _Slot) -> None:
        nonlocal matched_first, matched_last, epoch
        snap = slot.snap
        rss = slot.rss
        if snap is None and slot.ref is not None:
            if slot.ref.rss_kb is not None:
                rss = slot.ref.rss_kb * 1024
            else:
                snap = _parse_ref(slot.ref, warnings)
        if snap is not None:
            rss = snap.rss
            if slot.role:
                m = _Matched(snap, [], [])
                for v in snap.vmas:
                    o, n = _match(v, replay)
                    m.owners.append(o)
                    m.new.append(n)
                if slot.role in ("first", "both"):
                    matched_first = m
                    epoch = GROWING
                if slot.role in ("last", "both"):
                    matched_last = m
                    epoch = AFTER_LAST
            elif slot.ref is not None:
                slot.snap = None  # intermediate: keep no VMAs
        if snap is None and rss is None:
            return  # the file could not be read (warned): no point in the time line
        used_snaps[0] += 1
        samples.append(Sample(t=slot.t if slot.t != math.inf else math.nan, rss_bytes=rss, live_bytes=ledger.live))

    # The replay. Items: see sysbreak.capture.decode.
    ops = (None, replay.mmap, replay.munmap, replay.mremap, replay.brk_call)
    if source_stream is not None:
        batch_iter = _chain_first(pending, source_stream)
        while True:
            try:
                batch = next(batch_iter)
            except StopIteration as stop:
                summary = stop.value
                break
            for item in batch:
                code = item[0]
                if type(code) is int:
                    _, a0, a1, a2, a3, ret, et, sid = item
                    if et is not None:
                        if et > next_slot_t:
                            while slot_i < len(slots) and slots[slot_i].t < et:
                                take_snapshot(slots[slot_i])
                                slot_i += 1
                            next_slot_t = slots[slot_i].t if slot_i < len(slots) else math.inf
                        if et - last_sample_t >= sample_step:
                            live_samples.append((et, ledger.live))
                            last_sample_t = et
                            if len(live_samples) > MAX_SAMPLES:
                                live_samples = live_samples[::2]
                                sample_step = max(sample_step * 2, (et - live_samples[0][0]) / MAX_SAMPLES)
                    g = gid_of.get(sid) if sid is not None else None
                    if g is None:
                        g = gid(sid)
                    ops[code](a0, a1, a2, a3, ret, (g << OWNER_SHIFT) | epoch)  # type: ignore[misc]
                elif code == "stack":
                    stacks.add(item[1], item[2], item[3])
                elif code == "header":
                    hpid = item[1].get("pid")
                    if isinstance(hpid, int):
                        pids.add(hpid)
                elif code == "end":
                    end_t_rec = item[1]
    while slot_i < len(slots):
        take_snapshot(slots[slot_i])
        slot_i += 1
    counts: dict[tuple[int, str], int] = {}
    first_t: dict[int, float] = {}
    last_t: dict[int, float] = {}
    by_syscall: dict[str, int] = {}
    for (sid, name), c in summary.counts.items():
        g = gid(sid)
        counts[(g, name)] = counts.get((g, name), 0) + c
    for sid, ft in summary.first_t.items():
        g = gid(sid)
        first_t[g] = min(ft, first_t.get(g, ft))
    for sid, lt in summary.last_t.items():
        g = gid(sid)
        last_t[g] = max(lt, last_t.get(g, lt))
    t_first_event, t_last_event, out_of_order = summary.t_first, summary.t_last, summary.out_of_order

    # --- totals and times
    for (_g, name), c in counts.items():
        by_syscall[name] = by_syscall.get(name, 0) + c
    analysis.events = sum(by_syscall.values())
    analysis.by_syscall = dict(sorted(by_syscall.items(), key=lambda kv: -kv[1]))
    analysis.snapshots = used_snaps[0]
    snap_times = [s.t for s in slots if s.t != math.inf]
    if t0 is None:
        cands = [x for x in (t_first_event, snap_times[0] if snap_times else None) if x is not None]
        t0 = min(cands) if cands else None
    t1 = end_t_rec if end_t_rec is not None else t1_meta
    ends = [x for x in (t1, t_last_event, snap_times[-1] if snap_times else None) if x is not None]
    t1 = max(ends) if ends else None
    analysis.t0, analysis.t1 = t0, t1
    if events_path is not None:
        warnings.extend(summary.warnings)
        if not summary.ended and summary.lines > 0:
            warnings.append("the log has no 'end' record: the capture was cut short (all before the cut is used)")
    if len(pids) > 1:
        warnings.append(f"the log holds several processes ({', '.join(map(str, sorted(pids)))}); analysed as one")
    if out_of_order:
        warnings.append(f"{out_of_order} events are out of time order; snapshots are matched in log order")
    if replay.stale_bytes:
        warnings.append(
            f"{replay.stale_bytes} bytes were mapped over ranges the ledger still held: an unmap the capture did "
            "not see (a syscall path not watched?)"
        )
    if replay.brk_unseen_bytes:
        warnings.append(f"the heap grew by {replay.brk_unseen_bytes} bytes through brk calls the capture did not see")
    if replay.bad_events:
        warnings.append(f"{replay.bad_events} successful calls had impossible arguments and were ignored")

    # --- per stack
    stats: dict[int, StackStats] = {}

    def stat(g: int) -> StackStats:
        s = stats.get(g)
        if s is None:
            grp = stacks.groups.get(g) or _Group(g, (), (), [g])
            s = StackStats(id=g, frames=grp.frames, python=grp.python)
            s.stack_ids = tuple(grp.members)
            s.label = _label(grp, stacks)
            stats[g] = s
        return s

    for (g, name), c in counts.items():
        st = stat(g)
        st.events += c
        st.by_syscall[name] = st.by_syscall.get(name, 0) + c
    for g, ft in first_t.items():
        stat(g).first_t = ft
    for g, lt in last_t.items():
        stat(g).last_t = lt
    for g, n in replay.mapped.items():
        stat(g).mapped_bytes += n
    for g, n in replay.unmapped.items():
        stat(g).unmapped_bytes += n
    for o, n in ledger.owned().items():
        st = stat(o >> OWNER_SHIFT)
        st.live_bytes += n
        if o & EPOCH_MASK == AFTER_LAST:  # mapped after the last snapshot and still there: growth too
            st.growth_bytes += n

    # --- regions
    if matched_last is not None:
        analysis.regions = _regions(matched_first, matched_last)
        for v, owned, new in zip(matched_last.snap.vmas, matched_last.owners, matched_last.new, strict=True):
            size = v.end - v.start
            for g, n in owned.items():
                stat(g).rss_bytes += _prorate(v.rss, n, size)
            for g, n in new.items():
                stat(g).growth_bytes += n
        if matched_last.snap.rss is None:
            warnings.append("the snapshots have no Rss (maps or plain pmap): resident bytes are unknown")
    else:
        for st in stats.values():
            st.growth_bytes = st.live_bytes
    period = 0.0  # growth is counted from the first snapshot to the end of the capture
    if first_i is not None and last_i is not None and last_i != first_i:
        a, b = slots[first_i].t, slots[last_i].t
        if math.isfinite(a) and math.isfinite(b):
            period = max(b, t1 if t1 is not None else b) - a
    if period <= 0:
        period = analysis.duration
    for st in stats.values():
        st.growth_per_min = st.growth_bytes * 60.0 / period if period > 0 else 0.0
    analysis.stacks = sorted(
        (s for s in stats.values() if s.events or s.live_bytes or s.rss_bytes),
        key=lambda s: (-s.live_bytes, -s.growth_bytes, -s.mapped_bytes, -s.events, s.id),
    )

    # --- timeline
    base = t0 if t0 is not None else 0.0
    tl = [Sample(t=lt - base, rss_bytes=None, live_bytes=n) for lt, n in live_samples]
    for smp in samples:
        if math.isnan(smp.t):
            smp.t = (t1 if t1 is not None else base) - base
        else:
            smp.t = smp.t - base
        tl.append(smp)
    tl.sort(key=lambda x: (x.t, x.rss_bytes is None))
    analysis.timeline = tl
    analysis.warnings = warnings
    return analysis


def _chain_first(first: Batch, rest: Generator[Batch, None, StreamSummary]) -> Generator[Batch, None, StreamSummary]:
    if first:
        yield first
    return (yield from rest)


def _num(x: Any) -> float | None:
    return float(x) if type(x) in (int, float) else None


def _label(grp: _Group, stacks: _Stacks) -> str:
    if grp.id == UNKNOWN_STACK and not grp.frames:
        return "(no stack)"
    if not grp.frames:
        return f"stack {grp.id} (its frames are not in the log)"
    if stacks.outside is not None:
        return stack_label(grp.frames, stacks.outside)
    return stack_label(grp.frames)


def _regions(first: _Matched | None, last: _Matched) -> list[Region]:
    """Regions of the last snapshot (plus the first snapshot's that are gone), in address order."""
    lvmas = last.snap.vmas
    regions: list[Region] = []
    for v, owned in zip(lvmas, last.owners, strict=True):
        size = v.end - v.start
        r = Region(
            start=v.start,
            end=v.end,
            perms=v.perms,
            path=v.display_path,
            size=size,
            rss=v.rss,
            first_size=size if first is None or first is last else 0,
            first_rss=v.rss if first is None or first is last else None,
            owners=[RegionOwner(g, n) for g, n in sorted(owned.items(), key=lambda kv: (-kv[1], kv[0]))],
            unexplained_bytes=size - sum(owned.values()),
        )
        regions.append(r)
    if first is not None and first is not last:
        has_rss = first.snap.rss is not None
        for r in regions:
            r.first_rss = 0 if has_rss else None
        starts = [v.start for v in lvmas]
        for fv, fowned in zip(first.snap.vmas, first.owners, strict=True):
            fsize = fv.end - fv.start
            i = max(0, bisect.bisect_right(starts, fv.start) - 1)
            overlaps: list[tuple[int, int]] = []  # (region index, bytes)
            while i < len(lvmas) and lvmas[i].start < fv.end:
                lv = lvmas[i]
                ov = min(lv.end, fv.end) - max(lv.start, fv.start)
                if ov > 0:
                    overlaps.append((i, ov))
                i += 1
            if not overlaps:
                regions.append(
                    Region(
                        start=fv.start,
                        end=fv.end,
                        perms=fv.perms,
                        path=fv.display_path,
                        size=0,
                        rss=None,
                        first_size=fsize,
                        first_rss=fv.rss,
                        status="gone",
                        owners=[RegionOwner(g, n) for g, n in sorted(fowned.items(), key=lambda kv: (-kv[1], kv[0]))],
                        unexplained_bytes=fsize - sum(fowned.values()),
                    )
                )
                continue
            covered = sum(ov for _, ov in overlaps)
            main = max(overlaps, key=lambda x: x[1])[0]
            for idx, ov in overlaps:
                part = ov + (fsize - covered if idx == main else 0)
                r = regions[idx]
                r.first_size += part
                if has_rss:
                    r.first_rss = (r.first_rss or 0) + _prorate(fv.rss, part, fsize)
        for r in regions:
            if r.status == "gone":
                continue
            if r.first_size == 0:
                r.status = "new"
                r.first_rss = None if not has_rss else 0
            elif r.size > r.first_size:
                r.status = "grew"
            elif r.size < r.first_size:
                r.status = "shrank"
    regions.sort(key=lambda r: (r.start, r.status == "gone"))
    return regions
