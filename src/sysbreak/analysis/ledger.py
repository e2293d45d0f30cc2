"""The ledger: which captured call owns each live byte of the address space, replayed from the syscalls.

:class:`Ledger` is an interval map (a :class:`sortedcontainers.SortedList` of starts and a dict from start to
``(end, owner)``) of disjoint half-open ranges; adjacent ranges of the same owner are merged, so it holds as
many entries as there are distinct live runs, whatever the number of events. Owners are plain ints chosen by
the caller.

:class:`Replay` applies ``mmap``/``munmap``/``mremap``/``brk`` to a ledger with the kernel's semantics:

``mmap``
    ``ret`` is the address, ``args[1]`` the length (rounded up to the page size). Whatever the ledger had in
    that range loses those bytes (``MAP_FIXED`` replaces mappings; without it the kernel only returns free
    space, so a hit means an ``munmap`` was missed and is counted in :attr:`Replay.stale_bytes`).
``munmap``
    removes ``[args[0], args[0] + length)``: holes and splits; bytes not in the ledger are ignored.
``mremap``
    ``args`` = old_addr, old_size, new_size, flags, new_addr; ``ret`` the new address. Shrinking unmaps the
    tail; moving carries the bytes to the new place with their ORIGINAL owner (``MREMAP_DONTUNMAP`` leaves the
    old range mapped as well: the original owner then holds both, the copy counted as mapped by it); growth
    belongs to the mremap's caller. ``old_size == 0`` duplicates a shared mapping: a new mapping of
    ``new_size`` owned by the caller.
``brk``
    ``ret`` is the new program break. The first break seen starts the heap range; growth (page-rounded)
    belongs to the growing call, a shrink unmaps. A ``brk(0)`` query that finds the break moved by a call the
    log did not catch re-synchronises without attributing (:attr:`Replay.brk_unseen_bytes`).

Failed calls (``ret`` in -4095..-1, or ``null`` when the return was not seen) change nothing.

Accounting per *stack* (``owner >> OWNER_SHIFT``; the low bits of an owner are the caller's epoch, see
:mod:`sysbreak.analysis.replay`): ``mapped`` (bytes its calls mapped) and ``unmapped`` (bytes it owned
that went away, whoever removed them). For every stack ``mapped - unmapped`` equals the bytes it owns.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterator

from sortedcontainers import SortedList

PAGE = 4096
MAP_FIXED = 0x10
MAP_FIXED_NOREPLACE = 0x100000
MREMAP_MAYMOVE = 1
MREMAP_FIXED = 2
MREMAP_DONTUNMAP = 4
_U64 = 1 << 64
OWNER_SHIFT = 2  # an owner is ``stack << OWNER_SHIFT | epoch`` (epoch < 4)
EPOCH_MASK = (1 << OWNER_SHIFT) - 1

Piece = tuple[int, int, int]  # (start, end, owner)


def _floor_public(sl: SortedList, x: int) -> int | None:
    for k in sl.irange(maximum=x, reverse=True):
        return int(k)
    return None


def _floor_fast(sl: SortedList, x: int) -> int | None:
    """The largest element <= x, or None: one bisect in SortedList's index of sublists and one in a sublist.

    (Reads SortedList's documented-in-source layout, ``_maxes`` and ``_lists``: three times faster than
    ``irange``; :func:`_floor_public` is used instead if a sortedcontainers version lacks them.)
    """
    maxes = sl._maxes
    if not maxes:
        return None
    pos = bisect_right(maxes, x)
    if pos == len(maxes):
        return int(maxes[-1])
    sub = sl._lists[pos]
    i = bisect_right(sub, x)
    if i:
        return int(sub[i - 1])
    return int(maxes[pos - 1]) if pos else None


_probe = SortedList([1, 2, 3])
_floor = _floor_fast if hasattr(_probe, "_maxes") and hasattr(_probe, "_lists") else _floor_public
del _probe


class Ledger:
    """Disjoint ``[start, end)`` ranges, each with an int owner; adjacent equal owners merge."""

    __slots__ = ("_starts", "_iv", "live")

    def __init__(self) -> None:
        self._starts: SortedList = SortedList()  # range starts, in order
        self._iv: dict[int, tuple[int, int]] = {}  # start -> (end, owner)
        self.live = 0  # total bytes covered

    def __len__(self) -> int:
        return len(self._iv)

    def __iter__(self) -> Iterator[Piece]:
        iv = self._iv
        for start in self._starts:
            end, owner = iv[start]
            yield start, end, owner

    def _overlapping(self, start: int, end: int) -> list[int]:
        """Starts of the ranges that overlap ``[start, end)``, in order."""
        first = start
        k = _floor(self._starts, start)
        if k is not None and self._iv[k][0] > start:
            first = k
        return list(self._starts.irange(first, end, inclusive=(True, False)))

    def pieces(self, start: int, end: int) -> list[Piece]:
        """The owned parts of ``[start, end)``, clipped to it, in address order."""
        if start >= end:
            return []
        iv = self._iv
        out: list[Piece] = []
        for s in self._overlapping(start, end):
            e, o = iv[s]
            out.append((max(s, start), min(e, end), o))
        return out

    def take(self, start: int, hit: tuple[int, int]) -> None:
        """Remove the whole range that starts at ``start`` (``hit`` is its ``(end, owner)``)."""
        del self._iv[start]
        self._starts.remove(start)
        self.live -= hit[0] - start

    def remove(self, start: int, end: int) -> list[Piece]:
        """Remove ``[start, end)``; returns the removed parts (clipped), splitting ranges that stick out."""
        iv = self._iv
        if start >= end or not iv:
            return []
        starts = self._starts
        # Fast path: the request is exactly one range (the common munmap).
        hit = iv.get(start)
        if hit is not None and hit[0] == end:
            del iv[start]
            starts.remove(start)
            self.live -= end - start
            return [(start, end, hit[1])]
        out: list[Piece] = []
        for s in self._overlapping(start, end):
            e, o = iv.pop(s)
            starts.remove(s)
            cs, ce = max(s, start), min(e, end)
            out.append((cs, ce, o))
            self.live -= ce - cs
            if s < start:
                iv[s] = (start, o)
                starts.add(s)
            if e > end:
                iv[end] = (e, o)
                starts.add(end)
        return out

    def assign(self, start: int, end: int, owner: int) -> list[Piece]:
        """Give ``[start, end)`` to ``owner``; returns what it replaced (clipped), as :meth:`remove` does."""
        if start >= end:
            return []
        iv = self._iv
        starts = self._starts
        replaced: list[Piece] = []
        left = _floor(starts, end - 1)  # the last range starting before ``end``
        if left is not None and iv[left][0] > start:  # something overlaps: make room
            replaced = self.remove(start, end)
            left = _floor(starts, start)
        self.live += end - start
        # Merge with same-owner neighbours: the range starting at ``end``, the one ending at ``start``.
        right = iv.get(end)
        if right is not None and right[1] == owner:
            del iv[end]
            starts.remove(end)
            end = right[0]
        if left is not None:
            le, lo = iv[left]
            if le == start and lo == owner:
                iv[left] = (end, owner)
                return replaced
        iv[start] = (end, owner)
        starts.add(start)
        return replaced

    def owned(self) -> dict[int, int]:
        """Bytes per owner."""
        out: dict[int, int] = {}
        for start, (end, owner) in self._iv.items():
            out[owner] = out.get(owner, 0) + end - start
        return out

    def check(self) -> None:
        """Assert the invariants (tests): disjoint, sorted, non-empty, merged, ``live`` right."""
        assert list(self._starts) == sorted(self._iv), "index out of step"
        prev_end, prev_owner, total = -1, None, 0
        for start, end, owner in self:
            assert start < end, (start, end)
            assert start >= prev_end, (prev_end, start)
            assert not (start == prev_end and owner == prev_owner), ("unmerged", start)
            prev_end, prev_owner = end, owner
            total += end - start
        assert total == self.live, (total, self.live)


def page_up(n: int) -> int:
    return (n + PAGE - 1) & ~(PAGE - 1)


def failed(ret: int | None) -> bool:
    """A syscall return that means failure (``-errno``, signed or as unsigned 64-bit), or an unseen return."""
    return ret is None or -4095 <= ret < 0 or ret >= _U64 - 4095


class Replay:
    """Applies syscalls to a :class:`Ledger` and keeps the per-stack byte accounting (see the module doc)."""

    def __init__(self) -> None:
        self.ledger = Ledger()
        self.brk: int | None = None
        self.mapped: dict[int, int] = {}  # stack -> bytes
        self.unmapped: dict[int, int] = {}  # stack -> bytes
        self.stale_bytes = 0  # bytes a non-fixed mmap/mremap found still owned: an unmap the log missed
        self.brk_unseen_bytes = 0  # heap growth seen only through a brk(0) query
        self.bad_events = 0  # successful calls with impossible arguments (ignored)
        self._apply = {"mmap": self.mmap, "munmap": self.munmap, "mremap": self.mremap, "brk": self.brk_call}

    def apply(self, name: str, args: list[int] | tuple[int, ...], ret: int | None, owner: int) -> None:
        """Apply one syscall made by ``owner`` (``stack << OWNER_SHIFT | epoch``). Unknown names and failures: nothing.

        ``args`` are ints (at least four); the per-call methods take ``a0..a3`` directly (the hot path).
        """
        if failed(ret):
            return
        fn = self._apply.get(name)
        if fn is not None:
            assert ret is not None
            fn(args[0], args[1], args[2], args[3], ret, owner)

    def _lost(self, pieces: list[Piece]) -> None:
        unmapped = self.unmapped
        for s, e, o in pieces:
            sid = o >> OWNER_SHIFT
            unmapped[sid] = unmapped.get(sid, 0) + e - s

    def _gain(self, owner: int, n: int) -> None:
        sid = owner >> OWNER_SHIFT
        self.mapped[sid] = self.mapped.get(sid, 0) + n

    def _valid(self, start: int, length: int) -> bool:
        if start < 0 or start % PAGE or start + length > _U64:
            self.bad_events += 1
            return False
        return True

    def mmap(self, a0: int, a1: int, a2: int, a3: int, ret: int, owner: int) -> None:
        length = (a1 + 4095) & -4096
        if length <= 0 or ret < 0 or ret & 4095 or ret + length > _U64:
            if length > 0:
                self.bad_events += 1
            return
        replaced = self.ledger.assign(ret, ret + length, owner)
        if replaced:
            self._lost(replaced)
            if not a3 & (MAP_FIXED | MAP_FIXED_NOREPLACE):
                self.stale_bytes += sum(e - s for s, e, _ in replaced)
        mapped = self.mapped
        sid = owner >> OWNER_SHIFT
        mapped[sid] = mapped.get(sid, 0) + length

    def munmap(self, a0: int, a1: int, a2: int, a3: int, ret: int, owner: int) -> None:
        start, length = a0, (a1 + 4095) & -4096
        if length <= 0 or start < 0 or start & 4095 or start + length > _U64:
            if length > 0:
                self.bad_events += 1
            return
        ledger = self.ledger
        # Fast path: exactly one whole range (most munmaps).
        hit = ledger._iv.get(start)
        if hit is not None and hit[0] == start + length:
            ledger.take(start, hit)
            sid = hit[1] >> OWNER_SHIFT
            unmapped = self.unmapped
            unmapped[sid] = unmapped.get(sid, 0) + length
            return
        removed = ledger.remove(start, start + length)
        if removed:
            self._lost(removed)

    def mremap(self, a0: int, a1: int, a2: int, a3: int, ret: int, owner: int) -> None:
        old, old_size, new_size, flags = a0, page_up(a1), page_up(a2), a3
        new = ret
        if new_size == 0 or not self._valid(old, old_size) or not self._valid(new, new_size):
            return
        ledger = self.ledger
        if old_size == 0:  # a second mapping of the same shared pages
            self._lost(ledger.assign(new, new + new_size, owner))
            self._gain(owner, new_size)
            return
        keep = min(old_size, new_size)
        if new == old:  # in place
            if new_size < old_size:
                self._lost(ledger.remove(old + new_size, old + old_size))
            elif new_size > old_size:
                replaced = ledger.assign(old + old_size, old + new_size, owner)
                self._lost(replaced)
                self.stale_bytes += sum(e - s for s, e, _ in replaced)
                self._gain(owner, new_size - old_size)
            return
        if flags & MREMAP_DONTUNMAP:
            moving = ledger.pieces(old, old + keep)
            for s, e, o in moving:  # the original owner now holds a second copy
                self._gain(o, e - s)
        else:
            taken = ledger.remove(old, old + old_size)
            moving = [(s, min(e, old + keep), o) for s, e, o in taken if s < old + keep]
            self._lost([(max(s, old + keep), e, o) for s, e, o in taken if e > old + keep])
        replaced = ledger.remove(new, new + new_size)
        if replaced:
            self._lost(replaced)
            if not flags & MREMAP_FIXED:
                self.stale_bytes += sum(e - s for s, e, _ in replaced)
        delta = new - old
        for s, e, o in moving:
            ledger.assign(s + delta, e + delta, o)
        if new_size > old_size:
            ledger.assign(new + old_size, new + new_size, owner)
            self._gain(owner, new_size - old_size)

    def brk_call(self, a0: int, a1: int, a2: int, a3: int, ret: int, owner: int) -> None:
        if ret >= _U64 or ret < 0:
            return
        old, self.brk = self.brk, ret
        if old is None:
            return
        a_old, a_new = page_up(old), page_up(ret)
        if a_new > a_old:
            if a0 == 0:  # a query that finds growth we did not see
                self.brk_unseen_bytes += a_new - a_old
                return
            self._lost(self.ledger.assign(a_old, a_new, owner))
            self._gain(owner, a_new - a_old)
        elif a_new < a_old:
            self._lost(self.ledger.remove(a_new, a_old))
