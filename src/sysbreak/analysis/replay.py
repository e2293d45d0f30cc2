"""The replay: the decoded event log applied to a ledger in log order, meeting the snapshots on the way.

Events and snapshots share CLOCK_MONOTONIC: when the stream passes a snapshot's time, the ledger is exactly the
state the process was in when the snapshot was taken, so the first and the last snapshot are matched against it
then (:func:`~sysbreak.analysis.regions.match_snapshot`). Memory: the live intervals and the stacks, never the
events. Batches come from :mod:`sysbreak.capture.decode`.

*Kernel order.* Releases are logged before they act (``munmap``, docs/event-log.md "Order"), allocations after,
so the log order is the kernel's for them. A release still logged after the call returned (an ``mremap`` that
moves or shrinks, a ``brk`` shrink, a ``munmap`` at a site with no instruction before its ``syscall`` to stop at,
every release of a ``sysbreak-events/1`` log) can be logged after an allocation of another thread that reused
its range: GDB reports the pending stops of threads in any order. Such a release R, made by thread U, was then in
flight when the allocation E was logged: the kernel had freed the range (E got it) but U had not reached its
breakpoint after the call yet, so R is U's NEXT record after E. When E (a call the kernel placed: no
``MAP_FIXED``) lands on bytes the ledger still holds, :meth:`LogReplay.resolve` therefore looks at the next
record of every other thread, up to :data:`LOOKAHEAD` records ahead, and applies first those that are releases
logged after the call and that free the bytes E landed on; they are skipped at their own place. Sound: the
kernel never gives such a call bytes that are still mapped, so those bytes were freed before E in kernel order,
and moving R before the records between E and R changes none of them (a call between them that the kernel
placed cannot have got R's range while it was still mapped, and R is U's next record). What stays unexplained
is reported (:attr:`~sysbreak.analysis.ledger.Replay.stale_hits`).

Ledger owners are ``group << OWNER_SHIFT | epoch``; the epoch says when the bytes were mapped: :data:`OLD`
(before the first snapshot), :data:`GROWING` (between the first and the last), :data:`AFTER_LAST`. With fewer than
two snapshots nothing is "before".
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Generator, Iterator
from typing import Any

from sysbreak.analysis.ledger import OWNER_SHIFT, Replay, page_up
from sysbreak.analysis.model import Sample
from sysbreak.analysis.regions import Matched, match_snapshot
from sysbreak.analysis.snapshots import Slot, SnapshotPlan, parse_ref
from sysbreak.analysis.stacks import StackGroups
from sysbreak.capture.decode import CODES, MUNMAP_BEFORE, OTHER, Batch, StreamSummary

OLD, GROWING, AFTER_LAST = 0, 1, 2  # ledger epochs (see the module doc)
MAX_SAMPLES = 1000  # live-bytes samples kept between snapshots for the time line
MAX_SERIES = 200  # points of the per-stack live-bytes series (one per snapshot, thinned past this)
LOOKAHEAD = 4096  # records looked at after an allocation that landed on live bytes, for the release that freed them
RESOLVE_BUDGET = 2_000_000  # records looked at in all, at most (~1 s: a log with no munmap traced stays fast)
_MUNMAP, _MREMAP, _BRK = CODES["munmap"], CODES["mremap"], CODES["brk"]

Batches = Generator[Batch, None, StreamSummary]


class LogReplay:
    """One pass of the log through a :class:`~sysbreak.analysis.ledger.Replay`; the results are its attributes."""

    def __init__(self, plan: SnapshotPlan, stacks: StackGroups, warnings: list[str]) -> None:
        self.plan = plan
        self.stacks = stacks
        self.warnings = warnings
        self.replay = Replay()
        self.epoch = OLD if plan.two else GROWING
        self.samples: list[Sample] = []  # one per snapshot used
        self.live_samples: list[tuple[float, int]] = []  # (t, ledger live bytes) between snapshots
        self.matched_first: Matched | None = None
        self.matched_last: Matched | None = None
        self.pids: set[int] = set()  # pids of the log's headers
        self.end_t: float | None = None  # time of the log's end record
        self.used_snapshots = 0
        self.summary = StreamSummary()
        self.series: list[tuple[float, dict[int, int]]] = []  # (t, live bytes per group) at snapshots
        self._series_every = 1
        self.reordered: dict[str, int] = {}  # releases applied before the allocation logged ahead of them, by name
        self._batch: Batch = []  # the batch being applied (the item being applied is ``replay.cur``)
        self._anchor: tuple[Any, ...] | None = None  # the main loop's item while resolve() runs
        self._ahead: deque[Batch] = deque()  # batches taken from the stream ahead of time (see resolve)
        self._batches: Batches | None = None
        self._budget = RESOLVE_BUDGET
        self._ops: tuple[Any, ...] = ()
        self.replay.resolve = self.resolve

    def take_snapshot(self, slot: Slot) -> None:
        """The replay has reached ``slot``'s time: match it if it is the first or the last, sample the time line."""
        snap = slot.snap
        rss = slot.rss
        if snap is None and slot.ref is not None:
            if slot.ref.rss_kb is not None:
                rss = slot.ref.rss_kb * 1024
            else:
                snap = parse_ref(slot.ref, self.warnings)
        if snap is not None:
            rss = snap.rss
            if slot.role:
                m = match_snapshot(snap, self.replay, slot.ref.resident if slot.ref is not None else None)
                if slot.role in ("first", "both"):
                    self.matched_first = m
                    self.epoch = GROWING
                if slot.role in ("last", "both"):
                    self.matched_last = m
                    self.epoch = AFTER_LAST
            elif slot.ref is not None:
                slot.snap = None  # intermediate: keep no VMAs
        if snap is None and rss is None:
            return  # the file could not be read (warned): no point in the time line
        self.used_snapshots += 1
        if self.used_snapshots % self._series_every == 0 or slot.role in ("last", "both"):
            held, gone = self.replay.mapped, self.replay.unmapped
            self.series.append((slot.t, {g: n - gone.get(g, 0) for g, n in held.items()}))
            if len(self.series) > MAX_SERIES:
                del self.series[1::2]
                self._series_every *= 2
        t = slot.t if slot.t != math.inf else math.nan
        self.samples.append(Sample(t=t, rss_bytes=rss, live_bytes=self.replay.ledger.live))

    def _next_batch(self) -> Batch | None:
        if self._ahead:
            return self._ahead.popleft()
        return self._pull()

    def _pull(self) -> Batch | None:
        if self._batches is None:
            return None
        try:
            return next(self._batches)
        except StopIteration as stop:
            self.summary = stop.value
            self._batches = None
            return None

    def _following(self, cur: tuple[Any, ...]) -> Iterator[tuple[Batch, int]]:
        """(batch, index) of every item after ``cur`` (an item of the batch being applied), taking batches from
        the stream as needed."""
        batch = self._batch
        pos = next((i for i, it in enumerate(batch) if it is cur), len(batch))
        for j in range(pos + 1, len(batch)):
            yield batch, j
        k = 0
        while True:
            if k == len(self._ahead):
                more = self._pull()
                if more is None:
                    return
                self._ahead.append(more)
            nxt = self._ahead[k]
            for j in range(len(nxt)):
                yield nxt, j
            k += 1

    def resolve(self, start: int, end: int) -> None:
        """The item being applied, a call the kernel placed at ``[start, end)``, landed on bytes the ledger still
        holds: apply first the releases logged later that freed them (see the module doc).

        A release pulled ahead is applied at the place of the main loop's item (the *anchor*): when its own new
        range (an mremap that moved) lands on live bytes in turn, the releases that can explain it are again the
        next records of the other threads after the anchor: it happened before the anchor in kernel order, and
        so did what it needed."""
        replay = self.replay
        cur = replay.cur
        if cur is None or cur[8] is None or self._budget <= 0:
            return
        outermost = self._anchor is None
        if outermost:
            self._anchor = cur
        try:
            self._resolve(start, end, cur)
        finally:
            if outermost:
                self._anchor = None

    def _resolve(self, start: int, end: int, cur: tuple[Any, ...]) -> None:
        replay = self.replay
        ledger = replay.ledger
        anchor = self._anchor
        assert anchor is not None
        seen = {anchor[8], cur[8]}
        looked = 0
        for batch, j in self._following(anchor):
            looked += 1
            if looked > LOOKAHEAD:
                break
            it = batch[j]
            code = it[0]
            if type(code) is not int:
                if code in ("header", "exec"):
                    break  # another process, or a new image: nothing after it freed bytes of this one
                if code == "stack":  # a definition the records pulled ahead may use
                    self.stacks.add(it[1], it[2], it[3])
                continue
            tid = it[8]
            if tid is None or tid in seen:
                continue
            seen.add(tid)  # only a thread's NEXT record can be in flight
            freed = self._freed(it)
            if freed is None or freed[0] >= end or freed[1] <= start:
                continue
            batch[j] = (OTHER, *it[1:])  # applied now, not at its place (the thread's order stays visible)
            name = "munmap" if code == _MUNMAP else "mremap" if code == _MREMAP else "brk"
            self.reordered[name] = self.reordered.get(name, 0) + 1
            replay.cur = it
            try:
                self._apply_item(it)
            finally:
                replay.cur = cur
            if not ledger.pieces(start, end):
                break
        self._budget -= looked

    def _freed(self, it: tuple[Any, ...]) -> tuple[int, int] | None:
        """The range a record logged after its call frees, or None (not a release, or logged before it acted)."""
        code, a0, a1, a2, _a3, ret = it[0], it[1], it[2], it[3], it[4], it[5]
        if code == _MUNMAP:
            return a0, a0 + page_up(a1)
        if code == _MREMAP:
            if ret != a0:
                return a0, a0 + page_up(a1)  # moved (a DONTUNMAP move frees nothing, but then nothing overlaps)
            if page_up(a2) < page_up(a1):
                return a0 + page_up(a2), a0 + page_up(a1)
            return None
        if code == _BRK and self.replay.brk is not None and ret < self.replay.brk:
            return page_up(ret), page_up(self.replay.brk)
        return None

    def _apply_item(self, it: tuple[Any, ...]) -> None:
        sid = it[7]
        g = self.stacks.group_of.get(sid) if sid is not None else None
        if g is None:
            g = self.stacks.gid(sid)
        self._ops[it[0]](it[1], it[2], it[3], it[4], it[5], (g << OWNER_SHIFT) | self.epoch)

    def run(self, batches: Batches | None) -> None:
        """Apply every batch (items: see :mod:`sysbreak.capture.decode`), then the snapshots after the log."""
        slots = self.plan.slots
        slot_i = 0
        if batches is not None:
            self._batches = batches
            replay = self.replay
            ledger = replay.ledger
            stacks = self.stacks
            gid_of = stacks.group_of
            gid = stacks.gid
            take_snapshot = self.take_snapshot
            live_samples = self.live_samples
            sample_step = 0.0
            last_sample_t = -math.inf
            epoch = self.epoch

            def nothing(*_args: Any) -> None:
                return None

            ops: list[Callable[..., None]] = [nothing] * (max(MUNMAP_BEFORE, *CODES.values()) + 1)
            ops[CODES["mmap"]] = replay.mmap
            ops[_MUNMAP] = replay.munmap
            ops[_MREMAP] = replay.mremap
            ops[_BRK] = replay.brk_call
            ops[MUNMAP_BEFORE] = replay.munmap_before
            self._ops = tuple(ops)
            next_slot_t = slots[0].t if slots else math.inf
            while True:
                batch = self._next_batch()
                if batch is None:
                    break
                self._batch = batch
                for item in batch:
                    code = item[0]
                    if type(code) is int:
                        if not code:
                            continue  # a failed call, or one applied ahead of its place (resolve)
                        replay.cur = item
                        _, a0, a1, a2, a3, ret, et, sid, _tid, _seq = item
                        if et is not None:
                            if et > next_slot_t:
                                while slot_i < len(slots) and slots[slot_i].t < et:
                                    take_snapshot(slots[slot_i])
                                    slot_i += 1
                                next_slot_t = slots[slot_i].t if slot_i < len(slots) else math.inf
                                epoch = self.epoch
                            if et - last_sample_t >= sample_step:
                                live_samples.append((et, ledger.live))
                                last_sample_t = et
                                if len(live_samples) > MAX_SAMPLES:
                                    live_samples = live_samples[::2]
                                    sample_step = max(sample_step * 2, (et - live_samples[0][0]) / MAX_SAMPLES)
                        g = gid_of.get(sid) if sid is not None else None
                        if g is None:
                            g = gid(sid)
                        ops[code](a0, a1, a2, a3, ret, (g << OWNER_SHIFT) | epoch)
                    elif code == "stack":
                        stacks.add(item[1], item[2], item[3])
                    elif code == "header":
                        hpid = item[1].get("pid")
                        if isinstance(hpid, int):
                            self.pids.add(hpid)
                    elif code == "end":
                        self.end_t = item[1]
                    elif code == "exec":
                        replay.forget_all()
            replay.cur = None
            self.live_samples = live_samples
        while slot_i < len(slots):
            self.take_snapshot(slots[slot_i])
            slot_i += 1

    def timeline(self, t0: float | None, t1: float | None) -> list[Sample]:
        """The samples (snapshots and live bytes between them) in time order, ``t`` in seconds since ``t0``."""
        base = t0 if t0 is not None else 0.0
        tl = [Sample(t=lt - base, rss_bytes=None, live_bytes=n) for lt, n in self.live_samples]
        for smp in self.samples:
            if math.isnan(smp.t):
                smp.t = (t1 if t1 is not None else base) - base
            else:
                smp.t = smp.t - base
            tl.append(smp)
        tl.sort(key=lambda x: (x.t, x.rss_bytes is None))
        return tl

    def stack_series(
        self, gid: int, t0: float | None, end: float, resident_share: float = 1.0
    ) -> list[tuple[float, int]]:
        """(seconds since ``t0``, live bytes of group ``gid``) at the snapshots; ``end`` for a time not known."""
        base = t0 if t0 is not None else 0.0
        return [(t - base if math.isfinite(t) else end, round(d.get(gid, 0) * resident_share)) for t, d in self.series]


def chain_first(first: Batch, rest: Batches) -> Batches:
    """``first`` (a batch already taken from ``rest``), then the rest; returns ``rest``'s summary."""
    if first:
        yield first
    return (yield from rest)
