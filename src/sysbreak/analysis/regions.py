"""Regions: the VMAs of the last snapshot (and the first snapshot's that are gone), with the stacks that own them.

:func:`match_snapshot` records, when the replay reaches a snapshot, the bytes each stack's live intervals cover
in each of its VMAs; :func:`regions` compares the first and the last matched snapshot (see "Owners of a region"
and "Regions through time" in :mod:`sysbreak.analysis.pipeline`).
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field

from sysbreak.analysis.ledger import EPOCH_MASK, OWNER_SHIFT, Replay
from sysbreak.analysis.model import Region, RegionOwner
from sysbreak.capture.residency import parse_resident, resident_in
from sysbreak.maps import Snapshot, Vma


def match_vma(vma: Vma, replay: Replay) -> tuple[dict[int, int], dict[int, int]]:
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
class Matched:
    snap: Snapshot
    owners: list[dict[int, int]]  # per VMA, bytes per stack
    new: list[dict[int, int]]
    # per VMA, resident bytes per stack from the snapshot's resident pages (None: pro-rate the VMA's Rss)
    resident: list[dict[int, int] | None] = field(default_factory=list)

    def rss_of(self, i: int, stack: int, owned: int) -> int:
        """Resident bytes of ``stack`` (which owns ``owned`` bytes) in VMA ``i``: exact where the snapshot has
        that VMA's resident pages, else its Rss pro-rated by bytes (exact too when it is wholly resident or not
        at all)."""
        res = self.resident[i] if i < len(self.resident) else None
        if res is not None:
            return res.get(stack, 0)
        v = self.snap.vmas[i]
        return prorate(v.rss, owned, v.end - v.start)


def prorate(rss: int | None, part: int, whole: int) -> int:
    if rss is None or whole <= 0:
        return 0
    return (rss * part + whole // 2) // whole


def prorated_vmas(m: Matched) -> int:
    """VMAs of a matched snapshot whose Rss is shared out among several owners by bytes (an estimate): partly
    resident, owned by two stacks or more, and without the snapshot's resident pages."""
    n = 0
    for i, (v, owned) in enumerate(zip(m.snap.vmas, m.owners, strict=True)):
        has_pages = i < len(m.resident) and m.resident[i] is not None
        if not has_pages and len(owned) > 1 and v.rss is not None and 0 < v.rss < v.end - v.start:
            n += 1
    return n


def match_snapshot(snap: Snapshot, replay: Replay, resident: str | None = None) -> Matched:
    """The owners of every VMA of ``snap`` in the ledger as it is now; ``resident``: the snapshot's resident-pages
    file (:mod:`sysbreak.capture.residency`), whose VMAs get each owner's resident bytes exactly."""
    m = Matched(snap, [], [])
    covered: set[tuple[int, int]] = set()
    runs: list[tuple[int, int]] = []
    if resident is not None:
        try:
            with open(resident, encoding="ascii", errors="replace") as fh:
                vmas, runs = parse_resident(fh.read())
            covered = set(vmas)
        except OSError:
            covered = set()
    starts = [r[0] for r in runs]
    for v in snap.vmas:
        o, n = match_vma(v, replay)
        m.owners.append(o)
        m.new.append(n)
        if (v.start, v.end) in covered:
            res: dict[int, int] = {}
            for s, e, owner in replay.ledger.pieces(v.start, v.end):
                sid = owner >> OWNER_SHIFT
                res[sid] = res.get(sid, 0) + resident_in(runs, starts, s, e)
            m.resident.append(res)
        else:
            m.resident.append(None)
    return m


def regions(first: Matched | None, last: Matched) -> list[Region]:
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
                    r.first_rss = (r.first_rss or 0) + prorate(fv.rss, part, fsize)
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
