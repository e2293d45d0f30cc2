"""The replay: the decoded event log applied to a ledger in log order, meeting the snapshots on the way.

Events and snapshots share CLOCK_MONOTONIC: when the stream passes a snapshot's time, the ledger is exactly the
state the process was in when the snapshot was taken, so the first and the last snapshot are matched against it
then (:func:`~sysbreak.analysis.regions.match_snapshot`). Memory: the live intervals and the stacks, never the
events. Batches come from :mod:`sysbreak.capture.decode`.

Ledger owners are ``group << OWNER_SHIFT | epoch``; the epoch says when the bytes were mapped: :data:`OLD`
(before the first snapshot), :data:`GROWING` (between the first and the last), :data:`AFTER_LAST`. With fewer than
two snapshots nothing is "before".
"""

from __future__ import annotations

import math
from collections.abc import Generator

from sysbreak.analysis.ledger import OWNER_SHIFT, Replay
from sysbreak.analysis.model import Sample
from sysbreak.analysis.regions import Matched, match_snapshot
from sysbreak.analysis.snapshots import Slot, SnapshotPlan, parse_ref
from sysbreak.analysis.stacks import StackGroups
from sysbreak.capture.decode import Batch, StreamSummary

OLD, GROWING, AFTER_LAST = 0, 1, 2  # ledger epochs (see the module doc)
MAX_SAMPLES = 1000  # live-bytes samples kept between snapshots for the time line
MAX_SERIES = 200  # points of the per-stack live-bytes series (one per snapshot, thinned past this)

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
                m = match_snapshot(snap, self.replay)
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

    def run(self, batches: Batches | None) -> None:
        """Apply every batch (items: see :mod:`sysbreak.capture.decode`), then the snapshots after the log."""
        slots = self.plan.slots
        slot_i = 0
        if batches is not None:
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
            next_slot_t = slots[0].t if slots else math.inf
            ops = (None, replay.mmap, replay.munmap, replay.mremap, replay.brk_call)
            while True:
                try:
                    batch = next(batches)
                except StopIteration as stop:
                    self.summary = stop.value
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
                        ops[code](a0, a1, a2, a3, ret, (g << OWNER_SHIFT) | epoch)  # type: ignore[misc]
                    elif code == "stack":
                        stacks.add(item[1], item[2], item[3])
                    elif code == "header":
                        hpid = item[1].get("pid")
                        if isinstance(hpid, int):
                            self.pids.add(hpid)
                    elif code == "end":
                        self.end_t = item[1]
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

    def stack_series(self, gid: int, t0: float | None, end: float) -> list[tuple[float, int]]:
        """(seconds since ``t0``, live bytes of group ``gid``) at the snapshots; ``end`` for a time not known."""
        base = t0 if t0 is not None else 0.0
        return [(t - base if math.isfinite(t) else end, d.get(gid, 0)) for t, d in self.series]


def chain_first(first: Batch, rest: Batches) -> Batches:
    """``first`` (a batch already taken from ``rest``), then the rest; returns ``rest``'s summary."""
    if first:
        yield first
    return (yield from rest)
