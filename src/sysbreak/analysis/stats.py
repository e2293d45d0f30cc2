"""Per-stack statistics: what each (grouped) stack did, owns and grew, and the ranking of the stacks.

The numbers are defined in the "Per stack" and "Ranking" paragraphs of :mod:`sysbreak.analysis.pipeline`.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field

from sysbreak.analysis.ledger import EPOCH_MASK, OWNER_SHIFT
from sysbreak.analysis.model import StackStats
from sysbreak.analysis.replay import AFTER_LAST, LogReplay
from sysbreak.analysis.snapshots import SnapshotPlan
from sysbreak.analysis.stacks import StackGroups
from sysbreak.capture.decode import StreamSummary

MIN_RATE_SECONDS = 5.0  # the shortest span a growth rate is computed over: below it, a rate is extrapolation
_ELF_PATH = re.compile(r"\.so(?:\.[0-9]+)*$|\.so\.[0-9][^/]*$")


def is_elf_path(path: str, exe: str | None) -> bool:
    """A file mapping of an executable or a shared library (by its name: the file may be gone)."""
    return path == exe or bool(_ELF_PATH.search(os.path.basename(path)))


@dataclass
class GroupCounts:
    """The decoder's per-stack counts, summed per group."""

    counts: dict[tuple[int, str], int] = field(default_factory=dict)  # (group, syscall) -> calls
    first_t: dict[int, float] = field(default_factory=dict)
    last_t: dict[int, float] = field(default_factory=dict)

    def by_syscall(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for (_g, name), c in self.counts.items():
            out[name] = out.get(name, 0) + c
        return out


def group_counts(summary: StreamSummary, stacks: StackGroups) -> GroupCounts:
    gc = GroupCounts()
    gid = stacks.gid
    for (sid, name), c in summary.counts.items():
        g = gid(sid)
        gc.counts[(g, name)] = gc.counts.get((g, name), 0) + c
    for sid, ft in summary.first_t.items():
        g = gid(sid)
        gc.first_t[g] = min(ft, gc.first_t.get(g, ft))
    for sid, lt in summary.last_t.items():
        g = gid(sid)
        gc.last_t[g] = max(lt, gc.last_t.get(g, lt))
    return gc


def growth_period(plan: SnapshotPlan, t1: float | None, duration: float) -> float:
    """Seconds growth is counted over: from the first snapshot to the end of the capture (else the duration)."""
    period = 0.0
    if plan.two:
        assert plan.first is not None and plan.last is not None
        a, b = plan.slots[plan.first].t, plan.slots[plan.last].t
        if math.isfinite(a) and math.isfinite(b):
            period = max(b, t1 if t1 is not None else b) - a
    if period <= 0:
        period = duration
    return period


def stack_statistics(
    gc: GroupCounts,
    stacks: StackGroups,
    run: LogReplay,
    period: float,
    *,
    exe: str | None = None,
    elf_bytes: dict[int, int] | None = None,
    period_end: float | None = None,
) -> dict[int, StackStats]:
    """A :class:`StackStats` for every group that made a call or owns bytes. ``elf_bytes``, when given, receives
    the live bytes of each group in file mappings of ELF objects at the last snapshot (libraries loaded)."""
    stats: dict[int, StackStats] = {}
    elf = elf_bytes if elf_bytes is not None else {}

    def stat(g: int) -> StackStats:
        s = stats.get(g)
        if s is None:
            grp = stacks.group(g)
            s = StackStats(id=g, frames=grp.frames, python=grp.python)
            s.stack_ids = tuple(grp.members)
            s.label = stacks.label(grp)
            stats[g] = s
        return s

    replay = run.replay
    for (g, name), c in gc.counts.items():
        st = stat(g)
        st.events += c
        st.by_syscall[name] = st.by_syscall.get(name, 0) + c
    for g, ft in gc.first_t.items():
        stat(g).first_t = ft
    for g, lt in gc.last_t.items():
        stat(g).last_t = lt
    for g, n in replay.mapped.items():
        stat(g).mapped_bytes += n
    for g, n in replay.unmapped.items():
        stat(g).unmapped_bytes += n
    for o, n in replay.ledger.owned().items():
        st = stat(o >> OWNER_SHIFT)
        st.live_bytes += n
        if o & EPOCH_MASK == AFTER_LAST:  # mapped after the last snapshot and still there: growth too
            st.growth_bytes += n
            st.after_last_bytes += n
    for g, n in replay.peak.items():
        stat(g).peak_bytes = n
    last = run.matched_last
    if last is not None:
        for i, (v, owned, new) in enumerate(zip(last.snap.vmas, last.owners, last.new, strict=True)):
            anon = v.is_anonymous
            special = v.path.startswith("[") and not anon
            in_elf = not anon and not special and is_elf_path(v.name, exe)
            for g, n in owned.items():
                st = stat(g)
                r = last.rss_of(i, g, n)
                st.rss_bytes += r
                if anon:
                    st.anon_rss_bytes += r
                elif not special:
                    st.file_rss_bytes += r
                if v.perms.startswith("---"):
                    st.reserved_bytes += n
                if in_elf:
                    elf[g] = elf.get(g, 0) + n
            for g, n in new.items():
                stat(g).growth_bytes += n
        first = run.matched_first
        if first is not None and first is not last:
            for i, owned in enumerate(first.owners):
                for g, n in owned.items():
                    stat(g).first_rss_bytes += first.rss_of(i, g, n)
        for st in stats.values():
            st.rss_growth_bytes = st.rss_bytes - st.first_rss_bytes
    else:
        for st in stats.values():
            st.growth_bytes = st.live_bytes
    resident = last is not None and last.snap.rss is not None
    for st in stats.values():
        st.growth_per_min = st.growth_bytes * 60.0 / period if period >= MIN_RATE_SECONDS else None
        if resident:
            # over the stack's own time in the growth period: from its first call (when later than the period's
            # start) to the end, so a stack that began late and grows fast is seen to
            own = period
            if period_end is not None and st.first_t is not None:
                own = min(period, period_end - st.first_t)
            st.rss_growth_per_min = st.rss_growth_bytes * 60.0 / own if own >= MIN_RATE_SECONDS else None
    return stats


def ranked(stats: dict[int, StackStats]) -> list[StackStats]:
    """The stacks worth a row: those that made a call or own bytes (ordered later by :mod:`sysbreak.analysis.rank`)."""
    return [s for s in stats.values() if s.events or s.live_bytes or s.rss_bytes]
