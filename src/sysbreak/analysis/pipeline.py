"""From a capture (or an event log, or pmap/smaps files) to one :class:`~sysbreak.analysis.model.Analysis`.

Entry point: :func:`analyze`, which runs the phases in order:

1. open the capture and its decoded event stream (:mod:`sysbreak.capture`, :mod:`sysbreak.capture.decode`);
2. the snapshot plan (:mod:`sysbreak.analysis.snapshots`): the snapshots in time order, first and last parsed;
3. the replay (:mod:`sysbreak.analysis.replay`): the log streamed once into a
   :class:`~sysbreak.analysis.ledger.Replay` (memory: the live intervals and the stacks, never the events), the
   snapshots interleaved by time (events and snapshots share CLOCK_MONOTONIC): when the stream passes a
   snapshot's time, the ledger is exactly the state the process was in when the snapshot was taken, and the
   first and last snapshots are matched against it (:mod:`sysbreak.analysis.regions`);
4. the per-stack statistics (:mod:`sysbreak.analysis.stats`, stacks grouped by :mod:`sysbreak.analysis.stacks`),
   the regions, kinds, labels, ranking and hints (:mod:`sysbreak.analysis.rank`) and the time line.

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
duration when there are fewer than two snapshots), and is None under
:data:`~sysbreak.analysis.stats.MIN_RATE_SECONDS`. Resident numbers: ``first_rss_bytes`` the same pro-rating at the
first snapshot, ``rss_growth_bytes`` = ``rss_bytes - first_rss_bytes``, ``anon_rss_bytes``/``file_rss_bytes``
its split by the kind of VMA, ``reserved_bytes`` its live bytes in PROT_NONE VMAs, ``after_last_bytes`` what it
mapped after the last snapshot and still holds. ``peak_bytes``: the ledger's high-water mark
(:mod:`~sysbreak.analysis.ledger`). ``label``: :mod:`sysbreak.analysis.labels` (the first frame outside the
allocator and hook layers, made distinct among the stacks of a kind). ``series``: for the first candidates, their
live bytes at each snapshot (at most :data:`~sysbreak.analysis.replay.MAX_SERIES`) times the share of their live
bytes resident at the last snapshot: an estimate of their resident bytes through time, exact at the end (the
plot's lines; measuring every snapshot would parse and match each one, 0.4 s a snapshot on the benchmark capture).

*Kinds and ranking* (``Analysis.stacks``): :mod:`sysbreak.analysis.rank`: candidates by the ``sort`` (resident
growth by default), then the stacks holding nothing now, then the dynamic loader's; ``Analysis.hints`` from
:mod:`sysbreak.analysis.hints`.

*Timeline*: one :class:`~sysbreak.analysis.model.Sample` per snapshot (Rss from the index's ``rss_kb`` when
present, else from the file; ledger live bytes at that moment) and, between them, samples of the live bytes
alone (``rss_bytes`` None), at most :data:`~sysbreak.analysis.replay.MAX_SAMPLES`. ``Sample.t`` is seconds since
the capture's ``t0``.

*Folding*: ``depth=N`` keeps the N frames nearest the syscall; ``group_outside=REGEX`` groups stacks by their
first frame whose module path does not match REGEX (``re.search``; a frame with no module counts as outside).
Stacks equal after either merge into one :class:`StackStats` whose ``id`` is the first member's id and whose
``stack_ids`` lists the members.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable
from typing import Any

from sysbreak.analysis import rank
from sysbreak.analysis.blindspots import blind_spots, unchecked_text
from sysbreak.analysis.ledger import Replay
from sysbreak.analysis.model import Analysis, BlindSpots
from sysbreak.analysis.regions import prorated_vmas, regions
from sysbreak.analysis.replay import LogReplay, chain_first
from sysbreak.analysis.snapshots import plan_snapshots
from sysbreak.analysis.stacks import StackGroups
from sysbreak.analysis.stats import group_counts, growth_period, ranked, stack_statistics
from sysbreak.capture import Capture, open_capture
from sysbreak.capture.decode import Batch, StreamSummary, stream
from sysbreak.errors import SysbreakError


def analyze(
    source: str | os.PathLike[str] | None,
    *,
    maps_files: Iterable[str | os.PathLike[str]] = (),
    depth: int | None = None,
    group_outside: str | None = None,
    parallel: bool | None = None,
    sort: str = rank.DEFAULT_SORT,
    _failed: frozenset[tuple[int, int]] = frozenset(),
) -> Analysis:
    """Analyse a capture directory or an event log, with (or, for ``source=None``, only) hand-given maps files.

    ``maps_files``: pmap -x/-X, smaps or maps outputs in the order they were taken; used with the capture's
    snapshots. Their time: CLOCK_MONOTONIC from the file's mtime when the capture's start wall time and ``t0``
    are known, else they count as taken after the whole log, in the given order.
    ``depth``: fold stacks to the N frames nearest the syscall. ``group_outside``: group stacks by their first
    frame whose module does not match this regular expression. ``parallel``: decode the log in a second
    process (default: when it is big, see :mod:`sysbreak.capture.decode`). ``sort``: the order of the stacks
    (:data:`sysbreak.analysis.rank.SORTS`). See the module doc for every number.
    """
    rank.check_sort(sort)
    warnings: list[str] = []
    stacks = StackGroups(depth, group_outside)
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

    # 1. The event stream. Its first batch holds the header alone (checked by the reader); an empty log has none.
    header: dict[str, Any] | None = None
    events_path = cap.events_path if cap is not None else None
    source_stream = (
        stream(events_path, cap is not None and cap.is_dir, parallel=parallel, failed=_failed) if events_path else None
    )
    pending: Batch = []
    summary = StreamSummary()
    if source_stream is not None:
        try:
            pending = next(source_stream)
        except StopIteration as stop:
            summary = stop.value
            source_stream = None
        if pending and pending[0][0] == "header":
            header = pending[0][1]
    t0 = t0_meta if t0_meta is not None else (_num(header.get("t0")) if header else None)

    # 2. The snapshot plan.
    plan = plan_snapshots(
        cap, maps_files, pid=analysis.pid, meta=meta, header=header, t0=t0, t1_meta=t1_meta, warnings=warnings
    )
    if header is not None:
        if isinstance(header.get("pid"), int) and analysis.pid is None:
            analysis.pid = header["pid"]
        if analysis.exe is None and isinstance(header.get("exe"), str):
            analysis.exe = header["exe"]
        if not analysis.syscalls and isinstance(header.get("syscalls"), list):
            analysis.syscalls = [s for s in header["syscalls"] if isinstance(s, str)]

    # 3. The replay.
    run = LogReplay(plan, stacks, warnings)
    run.run(chain_first(pending, source_stream) if source_stream is not None else None)
    if source_stream is not None:
        summary = run.summary
    if summary.late_seqs and not _failed:
        # a release's failure came too late to undo it in this pass (docs/event-log.md, "Failures"): once more,
        # with those releases known failed at their own place (rare: the failing thread's stop came more than
        # HOLD_BACK records after its release)
        return analyze(
            source,
            maps_files=maps_files,
            depth=depth,
            group_outside=group_outside,
            parallel=parallel,
            sort=sort,
            _failed=frozenset(summary.late_seqs),
        )
    gc = group_counts(summary, stacks)

    # 4. Totals and times.
    by_syscall = gc.by_syscall()
    analysis.events = sum(by_syscall.values())
    analysis.by_syscall = dict(sorted(by_syscall.items(), key=lambda kv: -kv[1]))
    analysis.snapshots = run.used_snapshots
    snap_times = [s.t for s in plan.slots if s.t != math.inf]
    if t0 is None:
        cands = [x for x in (summary.t_first, snap_times[0] if snap_times else None) if x is not None]
        t0 = min(cands) if cands else None
    t1 = run.end_t if run.end_t is not None else t1_meta
    ends = [x for x in (t1, summary.t_last, snap_times[-1] if snap_times else None) if x is not None]
    t1 = max(ends) if ends else None
    analysis.t0, analysis.t1 = t0, t1
    warnings.extend(_replay_warnings(summary, run, events_path is not None, analysis.syscalls))

    # 5. Per stack, regions, time line.
    elf_bytes: dict[int, int] = {}
    period = growth_period(plan, t1, analysis.duration)
    stats = stack_statistics(gc, stacks, run, period, exe=analysis.exe, elf_bytes=elf_bytes, period_end=t1)
    last = run.matched_last
    if last is not None:
        analysis.regions = regions(run.matched_first, last)
        if last.snap.rss is None:
            warnings.append("the snapshots have no Rss (maps or plain pmap): resident bytes are unknown")
        else:
            guessed = prorated_vmas(last)
            if guessed:
                warnings.append(
                    f"{guessed} partly resident VMA{'s' if guessed > 1 else ''} of the last snapshot "
                    f"{'hold' if guessed > 1 else 'holds'} several stacks' mappings and no record of which pages "
                    "are resident (a capture without resident-*.txt): their RSS is shared out by bytes, an estimate"
                )
        mods = meta.get("modules")
        analysis.blind_spots, blind_warning = blind_spots(
            analysis.regions, mods if isinstance(mods, list) else [], unchecked_releases=summary.unchecked_releases
        )
        if blind_warning:
            warnings.append(blind_warning)
    elif summary.unchecked_releases:  # no snapshots to compare with: this blind spot is said all the same
        analysis.blind_spots = BlindSpots(0, 0, unchecked_releases=summary.unchecked_releases)
        analysis.blind_spots.summary = unchecked_text(summary.unchecked_releases)
    rank.finish(
        analysis,
        ranked(stats),
        sort=sort,
        elf_bytes=elf_bytes,
        label_skip=stacks.outside,
        has_snapshots=last is not None and last.snap.rss is not None,
    )
    analysis.timeline = run.timeline(t0, t1)
    end = analysis.timeline[-1].t if analysis.timeline else 0.0
    for st in [s for s in analysis.stacks if s.kind == "candidate"][: rank.SERIES_STACKS]:
        # its live bytes at each snapshot, times the share of them resident at the last: an estimate of its
        # resident bytes through time that is exact at the end (measuring every snapshot would parse each one)
        share = st.rss_bytes / st.live_bytes if st.live_bytes > 0 and last is not None else 1.0
        st.series = run.stack_series(st.id, t0, end, min(1.0, share))
    analysis.warnings = warnings
    analysis.reordered = dict(run.reordered)
    analysis.failed_releases = summary.failed_releases
    return analysis


def stale_warning(replay: Replay, traced: list[str]) -> str:
    """The warning for bytes the kernel gave a call while the ledger still held them (after the replay put every
    release logged later back in kernel order, see sysbreak.analysis.replay): how many, which calls, the cause."""
    hits = replay.stale_hits
    calls = []
    for h in hits[:3]:
        who = f"seq {h.seq} (tid {h.tid})" if h.seq is not None else "a call"
        held = ", ".join(f"seq {s} (tid {t})" if s is not None else "an earlier call" for s, t in h.holders[:3])
        calls.append(f"{who} got [{h.start:#x}, {h.end:#x}) still held from {held}")
    more = f" and {replay.stale_calls - len(calls)} more" if replay.stale_calls > len(calls) else ""
    tids = sorted({t for h in hits for t in [h.tid, *(t for _s, t in h.holders)] if t is not None})
    missing = [n for n in ("munmap", "mremap") if traced and n not in traced]
    if missing:
        cause = f"{' and '.join(missing)} {'was' if len(missing) == 1 else 'were'} not traced (add -s {missing[0]})"
    else:
        cause = (
            "a release the capture did not see: an munmap/mremap made where sysbreak has no breakpoint (a syscall "
            "site whose number was not inferred, see `sysbreak sites`), or a release by another syscall (shmdt, "
            "an exec)"
        )
    return (
        f"{replay.stale_bytes} bytes were given by the kernel to {replay.stale_calls} call(s) while the ledger still "
        f"held them, and no release in the log explains it: {'; '.join(calls)}{more}"
        f"{' (threads ' + ', '.join(map(str, tids)) + ')' if tids else ''}. Cause: {cause}"
    )


def _num(x: Any) -> float | None:
    return float(x) if type(x) in (int, float) else None


def _replay_warnings(summary: StreamSummary, run: LogReplay, had_log: bool, traced: list[str]) -> list[str]:
    """What the decoding and the replay found odd, in the order a reader should see it."""
    warnings: list[str] = []
    replay = run.replay
    if had_log:
        warnings.extend(summary.warnings)
        if not summary.ended and summary.lines > 0:
            warnings.append("the log has no 'end' record: the capture was cut short (all before the cut is used)")
    if len(run.pids) > 1:
        warnings.append(f"the log holds several processes ({', '.join(map(str, sorted(run.pids)))}); analysed as one")
    if summary.out_of_order:
        warnings.append(f"{summary.out_of_order} events are out of time order; snapshots are matched in log order")
    if summary.late_failures:
        n = summary.late_failures
        warnings.append(
            f"{n} munmap call{'s' if n != 1 else ''} logged before entering the kernel failed, but the failure was "
            f"logged too far after {'them' if n != 1 else 'it'} to be undone: {summary.late_failure_bytes} bytes "
            "still mapped count as released"
        )
    if replay.stale_bytes:
        warnings.append(stale_warning(replay, traced))
    if replay.brk_unseen_bytes:
        warnings.append(f"the heap grew by {replay.brk_unseen_bytes} bytes through brk calls the capture did not see")
    if replay.bad_events:
        warnings.append(f"{replay.bad_events} successful calls had impossible arguments and were ignored")
    return warnings
