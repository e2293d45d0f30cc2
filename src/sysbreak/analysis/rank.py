"""The last phase of an analysis: what kind each stack is, its label, the order of the stacks, and the hints.

*Kinds.* ``library``: the dynamic loader made the call (:func:`~sysbreak.analysis.labels.loads_libraries`), or
everything it holds is a file mapping of an ELF object (an executable or a shared library): libraries being
loaded, never a leak candidate. ``idle``: it holds nothing now (no live bytes, no resident bytes). ``candidate``:
the others.

*Order* (``Analysis.stacks``): the candidates by the chosen sort (:data:`SORTS`), then the idle stacks (by bytes
mapped, then events), then the library stacks (by resident bytes). Ranks are positions in that list, so stack #1 is
always the first candidate, whatever the format. The keys, each falling back to the next on a tie:

``rss-growth`` (the default)
    resident growth (``rss_growth_bytes``, plus ``after_last_bytes``: what it mapped after the last snapshot, which
    no snapshot saw resident or not: a short program's last moments), resident bytes, live bytes, events;
``rss``
    resident bytes at the last snapshot, then resident growth, live bytes;
``live``
    live bytes (mapped and never unmapped), then address-space growth, mapped bytes (the order of format 1);
``peak``
    the high-water mark of live bytes;
``growth``
    address-space growth (``growth_bytes``: bytes mapped after the first snapshot and still there);
``rate``
    resident growth per minute of the stack's own time (from its first call, when later than the first snapshot,
    to the end: a stack that started late and grows fast comes first), then address-space growth per minute;
``events``
    calls made.

With no snapshot, resident bytes are unknown (0) and ``rss-growth`` falls through to live bytes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from sysbreak.analysis.hints import hints_for
from sysbreak.analysis.labels import Labelled, distinct_labels, label_from_frames, label_index, loads_libraries
from sysbreak.analysis.model import Analysis, StackStats
from sysbreak.errors import SysbreakError

SORTS = ("rss-growth", "rss", "live", "peak", "growth", "rate", "events")
DEFAULT_SORT = "rss-growth"
SERIES_STACKS = 8  # stacks whose live bytes over time are kept (the HTML plot draws the first of them)


def _rate(x: float | None) -> float:
    return x if x is not None else float("-inf")


_KEYS: dict[str, Callable[[StackStats], tuple[Any, ...]]] = {
    "rss-growth": lambda s: (-s.resident_growth, -s.rss_bytes, -s.live_bytes, -s.events, s.id),
    "rss": lambda s: (-s.rss_bytes, -s.rss_growth_bytes, -s.live_bytes, -s.events, s.id),
    "live": lambda s: (-s.live_bytes, -s.growth_bytes, -s.mapped_bytes, -s.events, s.id),
    "peak": lambda s: (-s.peak_bytes, -s.live_bytes, -s.mapped_bytes, -s.events, s.id),
    "growth": lambda s: (-s.growth_bytes, -s.live_bytes, -s.mapped_bytes, -s.events, s.id),
    "rate": lambda s: (-_rate(s.rss_growth_per_min), -_rate(s.growth_per_min), -s.live_bytes, s.id),
    "events": lambda s: (-s.events, -s.live_bytes, -s.mapped_bytes, s.id),
}


def check_sort(sort: str) -> str:
    if sort not in _KEYS:
        raise SysbreakError(f"--sort {sort!r}: choose one of {', '.join(SORTS)}")
    return sort


def kind_of(stack: StackStats, elf_bytes: int = 0) -> str:
    """``library``, ``idle`` or ``candidate`` (see the module doc); ``elf_bytes``: live bytes of the stack in file
    mappings of ELF objects at the last snapshot."""
    if loads_libraries(stack.frames) or (stack.live_bytes > 0 and elf_bytes >= stack.live_bytes):
        return "library"
    if stack.live_bytes <= 0 and stack.rss_bytes <= 0:
        return "idle"
    return "candidate"


def order(stacks: Sequence[StackStats], sort: str = DEFAULT_SORT) -> list[StackStats]:
    """Candidates by ``sort``, then idle stacks, then library stacks (see the module doc)."""
    key = _KEYS[check_sort(sort)]
    cands = sorted((s for s in stacks if s.kind == "candidate"), key=key)
    idle = sorted((s for s in stacks if s.kind == "idle"), key=lambda s: (-s.mapped_bytes, -s.events, s.id))
    libs = sorted((s for s in stacks if s.kind == "library"), key=_KEYS["rss"])
    return cands + idle + libs


def resort(analysis: Analysis, sort: str) -> Analysis:
    """Put ``analysis.stacks`` in the order of ``sort`` (also for a report read back from JSON)."""
    analysis.stacks = order(analysis.stacks, sort)
    analysis.sort = sort
    return analysis


def label_all(stacks: Sequence[StackStats], skip: Any = None) -> None:
    """Give every stack with frames its label, distinct from the other labels of its kind (the rows a report
    shows are the candidates; idle and library stacks are folded, so a collision with them confuses no one)."""
    by_kind: dict[str, list[Labelled]] = {}
    for s in stacks:
        if not s.frames:
            continue
        i = label_index(s.frames, skip)
        by_kind.setdefault(s.kind, []).append(Labelled(s.id, s.frames, s.python, i, label_from_frames(s.frames, skip)))
    by_id = {s.id: s for s in stacks}
    for todo in by_kind.values():
        distinct_labels(todo)
        for t in todo:
            by_id[t.id].label = t.label


def growth_weight(has_snapshots: bool) -> Callable[[StackStats], int]:
    """What "owning the growth" means: resident growth with snapshots, live bytes without."""
    if has_snapshots:
        return lambda s: s.resident_growth if s.kind == "candidate" else 0
    return lambda s: s.live_bytes if s.kind == "candidate" else 0


def finish(
    analysis: Analysis,
    stacks: Sequence[StackStats],
    *,
    sort: str = DEFAULT_SORT,
    elf_bytes: dict[int, int] | None = None,
    label_skip: Any = None,
    has_snapshots: bool = False,
) -> None:
    """Kinds, labels, order and hints (the module doc); sets ``analysis.stacks``, ``sort`` and ``hints``."""
    elf_bytes = elf_bytes or {}
    for s in stacks:
        s.kind = kind_of(s, elf_bytes.get(s.id, 0))
    label_all(stacks, label_skip)
    analysis.stacks = order(stacks, sort)
    analysis.sort = sort
    analysis.hints = hints_for(analysis.stacks, growth_weight(has_snapshots))
