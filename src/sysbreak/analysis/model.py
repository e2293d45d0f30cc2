"""The one analysis result every reporter renders (text, json, html, collapsed) and ``diff`` compares.

Contract between :mod:`sysbreak.analysis` (producer) and :mod:`sysbreak.report` (consumers): fields may be
added, never renamed or removed without changing the JSON report's format version. Reporters never re-read the
event log; everything they show is here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sysbreak.capture.schema import Frame, PyFrame

__all__ = ["Analysis", "BlindSpots", "Frame", "PyFrame", "Region", "RegionOwner", "Sample", "StackStats"]


@dataclass
class StackStats:
    """What one call stack (or one group of stacks after folding/grouping) did during the capture."""

    id: int
    frames: tuple[Frame, ...]
    python: tuple[PyFrame, ...] = ()
    events: int = 0
    by_syscall: dict[str, int] = field(default_factory=dict)
    mapped_bytes: int = 0  # bytes its successful calls mapped (mmap length, mremap growth, brk growth)
    unmapped_bytes: int = 0  # bytes of mappings it created that were unmapped later (by anyone)
    live_bytes: int = 0  # bytes it created that are still mapped at the end of the log
    rss_bytes: int = 0  # resident bytes (last snapshot) of the live bytes it owns, pro-rated by overlap
    growth_bytes: int = 0  # growth (first -> last snapshot) of the regions it owns, attributed to it
    growth_per_min: float | None = 0.0  # growth_bytes per minute of capture; None when the span is too short
    first_t: float | None = None
    last_t: float | None = None
    label: str = ""  # a short human name: the first interesting frame, e.g. "leak_region (ucm_leak+0x1189)"
    stack_ids: tuple[int, ...] = ()  # the log's stack ids merged into this one (--depth, --group-outside)
    # Resident memory (from the smaps snapshots; 0 without them), see sysbreak.analysis.attribute:
    first_rss_bytes: int = 0  # resident bytes of what it owned at the first snapshot
    rss_growth_bytes: int = 0  # rss_bytes - first_rss_bytes: what it added to the process's RSS
    anon_rss_bytes: int = 0  # the part of rss_bytes in anonymous mappings
    file_rss_bytes: int = 0  # the part of rss_bytes in file-backed mappings
    reserved_bytes: int = 0  # live bytes in PROT_NONE mappings (reservations: never resident)
    after_last_bytes: int = 0  # live bytes mapped after the last snapshot: growth whose residency no snapshot saw
    peak_bytes: int = 0  # the most bytes it held mapped at any moment of the capture (a high-water mark)
    rss_growth_per_min: float | None = None  # rss_growth_bytes per minute; None when the span is too short
    kind: str = "candidate"  # "candidate" (holds memory), "idle" (holds nothing now), "library" (loads libraries)
    series: list[tuple[float, int]] = field(
        default_factory=list
    )  # (t since start, estimated resident bytes), top stacks
    pids: tuple[int, ...] = ()  # the processes it was seen in (sysbreak.analysis.processes)
    # a merged stack of several processes: each process's own numbers for it (empty in one process's analysis)
    by_pid: dict[int, StackStats] = field(default_factory=dict)

    @property
    def resident_growth(self) -> int:
        """What ranks a stack by default: its resident growth plus the bytes it mapped after the last snapshot."""
        return self.rss_growth_bytes + self.after_last_bytes

    @property
    def virtual_bytes(self) -> int:
        """Live bytes that are not resident: reservations, untouched pages, PROT_NONE."""
        return max(0, self.live_bytes - self.rss_bytes)


@dataclass
class RegionOwner:
    stack_id: int
    bytes: int  # bytes of this region covered by live mappings of that stack


@dataclass
class Region:
    """One VMA of the last snapshot (or one that disappeared), annotated with the stacks that own it."""

    start: int
    end: int
    perms: str
    path: str  # as pmap shows the mapping: a file path, "[heap]", "[stack]", "[anon]" ...
    size: int  # bytes in the last snapshot
    rss: int | None = None  # bytes resident in the last snapshot (None when the snapshot had no Rss)
    first_size: int = 0  # bytes covered in the first snapshot (0: the region is new)
    first_rss: int | None = None
    status: str = "same"  # "new", "grew", "shrank", "same", "gone"
    owners: list[RegionOwner] = field(default_factory=list)
    unexplained_bytes: int = 0  # bytes no captured event explains (mapped before the capture, or unwatched)
    pid: int | None = None  # the process whose address space it is in

    @property
    def growth(self) -> int:
        return self.size - self.first_size


@dataclass
class Sample:
    """One point of the time series shown as a plot."""

    t: float  # seconds since the start of the capture
    rss_bytes: int | None  # process RSS from the snapshot at that time (None between snapshots)
    live_bytes: int  # bytes mapped by captured events and still live at that time


@dataclass
class BlindSpots:
    """Growth no captured call explains, and what the capture could not watch (:mod:`sysbreak.analysis.blindspots`)."""

    unexplained_growth_bytes: int  # bytes of new or grown regions that no captured call explains
    regions: int  # how many regions hold them
    uncovered_sites: list[dict[str, Any]] = field(default_factory=list)  # module, offset, symbol, symbol_offset
    uncovered_count: int = 0  # uncovered sites in all armed modules (more than listed when a module had many)
    unscanned_modules: list[dict[str, Any]] = field(default_factory=list)  # path, error
    summary: str = ""  # one sentence: the warning when growth is unexplained, else what could not be watched
    # munmaps logged before they entered the kernel at sites whose failure the capture cannot watch: taken as done
    unchecked_releases: int = 0


@dataclass
class Hint:
    """A known culprit whose frames own the growth, and what its documentation says to do about it."""

    culprit: str  # "ucx", "glibc-malloc", "cpython-obmalloc", "jemalloc", "tcmalloc", "go-runtime"
    text: str  # one factual line
    doc: str  # where that comes from (a URL)
    stack_ids: tuple[int, ...] = ()  # the stacks whose frames matched
    bytes: int = 0  # what those stacks own (resident growth, or live bytes without snapshots)


@dataclass
class Analysis:
    source: str  # what was analysed: a capture directory, an events log, pmap files
    pid: int | None = None
    exe: str | None = None
    syscalls: list[str] = field(default_factory=list)
    t0: float | None = None
    t1: float | None = None
    events: int = 0
    by_syscall: dict[str, int] = field(default_factory=dict)
    stacks: list[StackStats] = field(default_factory=list)  # sorted by importance, most important first
    regions: list[Region] = field(default_factory=list)  # in address order
    timeline: list[Sample] = field(default_factory=list)
    snapshots: int = 0
    warnings: list[str] = field(default_factory=list)
    # growth no captured call explains, and what the capture could not watch (sysbreak.analysis.blindspots)
    blind_spots: BlindSpots | None = None
    sort: str = "rss-growth"  # the order of ``stacks`` (see sysbreak.analysis.rank.SORTS)
    hints: list[Hint] = field(default_factory=list)  # known culprits whose frames own the growth
    # releases logged after an allocation that reused their range, replayed before it (kernel order), by syscall
    reordered: dict[str, int] = field(default_factory=dict)
    # munmaps logged before they entered the kernel that then failed (a `result` record): replayed as nothing
    failed_releases: int = 0
    processes: list[dict[str, Any]] = field(default_factory=list)  # pid, ppid, argv (, exe, how, end) per process
    # a merged analysis of several processes: each one's RSS at its snapshots, (seconds since t0, bytes), by pid
    process_rss: dict[int, list[tuple[float, int]]] = field(default_factory=dict)

    @property
    def duration(self) -> float:
        if self.t0 is None or self.t1 is None:
            return 0.0
        return max(0.0, self.t1 - self.t0)
