"""The ledger: which captured call owns each live byte of the address space, replayed from the syscalls.

:class:`Ledger` is an interval map (a dict from start to ``end, owner`` and the links to the neighbours, and a
sorted index of starts searched with :mod:`bisect`) of disjoint half-open ranges; adjacent ranges of the same owner are
merged, so it holds as many entries as there are distinct live runs, whatever the number of events. Owners are
plain ints chosen by the caller.

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

Failed calls (``ret`` in -4095..-1, or ``null`` when the return was not seen) change nothing. A ``munmap`` logged
before it entered the kernel (:meth:`Replay.munmap_before`, docs/event-log.md "Order") has no return value: it is
applied unless its arguments make the kernel refuse it (EINVAL), which is checked here.

*Kernel order.* The kernel gives a call without ``MAP_FIXED`` (an ``mmap``, a moving ``mremap``, ``brk`` growth)
only free address space. When such a range lands on bytes the ledger still holds, the release that freed them
must have been logged later: :attr:`Replay.resolve` (set by :mod:`sysbreak.analysis.replay`) is asked to apply
it first; whatever it cannot explain is counted in :attr:`Replay.stale_bytes`, with the calls involved in
:attr:`Replay.stale_hits`.

Accounting per *stack* (``owner >> OWNER_SHIFT``; the low bits of an owner are the caller's epoch, see
:mod:`sysbreak.analysis.replay`): ``mapped`` (bytes its calls mapped) and ``unmapped`` (bytes it owned
that went away, whoever removed them). For every stack ``mapped - unmapped`` equals the bytes it owns, and
``peak`` is the most it owned at any moment (taken after each call that gave it bytes, as memray's high-water
mark).
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right, insort
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

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


class Ledger:
    """Disjoint ``[start, end)`` ranges, each with an int owner; adjacent equal owners merge.

    Layout: ``_iv`` maps a range's start to its node ``[end, owner, prev start, next start]`` (the ranges form a
    linked list in address order, from ``_head``), ``_ends`` maps a range's end to its start, and the starts are
    kept in order for the queries the links cannot answer (:meth:`_floor`) in two sorted plain lists searched
    with :mod:`bisect`: ``_starts``, rebuilt now and then, and ``_fresh``, the starts added since, kept short
    and negated (in descending address order: the kernel hands out new mappings below the last ones, so a new
    start usually goes at its end, moving nothing). When ``_fresh`` outgrows ``fresh_min`` plus a sixteenth of
    ``_starts`` the two are merged (a concatenation when all the fresh starts are below the others, else one C
    sort of two sorted runs). Most calls find their neighbours through the dicts: a new mapping
    usually touches one (the kernel hands out address space next to the last mapping), the ranges after a first
    one are reached through the links. A removed start stays in the lists as a tombstone (in ``_dead``) until the
    same start is used again or the tombstones outnumber the ranges (then the lists are rebuilt from ``_iv``):
    the common munmap does not touch them at all.

    (Measured on the 1,000,000-event benchmark log, 2026-12-01: sortedcontainers' ``SortedList.add`` cost 2.1 us
    and a floor through ``irange`` 3.8 us, against 0.3-0.5 us here; ``SortedList.bisect_right`` makes every
    later ``add`` keep a positional index up to date. The benchmark makes some 590,000 insertions and 80,000
    floor queries.)
    """

    __slots__ = ("_starts", "_fresh", "_dead", "_iv", "_ends", "_head", "live")

    compact_min = 64  # tombstones kept at least, whatever the number of ranges (tests lower it)
    fresh_min = 1024  # starts ``_fresh`` may hold before a merge, at least (tests lower it)

    def __init__(self) -> None:
        self._starts: list[int] = []  # range starts in order, and tombstones (``_dead``)
        self._fresh: list[int] = []  # the same, negated, for the starts added since ``_starts`` was last rebuilt
        self._dead: set[int] = set()  # starts in ``_starts`` or ``_fresh`` that no range has any more
        self._iv: dict[int, list[Any]] = {}  # start -> [end, owner, prev start | None, next start | None]
        self._ends: dict[int, int] = {}  # end -> start
        self._head: int | None = None  # the lowest start
        self.live = 0  # total bytes covered

    def __len__(self) -> int:
        return len(self._iv)

    def __iter__(self) -> Iterator[Piece]:
        iv = self._iv
        k = self._head
        while k is not None:
            node = iv[k]
            yield k, node[0], node[1]
            k = node[3]

    # --- the index and the linked list: every change of a range goes through these ------------------------------

    def _floor(self, x: int) -> int | None:
        """The start of the last range starting at or before ``x``, or None."""
        if x in self._iv:
            return x
        dead = self._dead
        best: int | None = None
        keys = self._starts
        i = bisect_right(keys, x)
        while i:
            k = keys[i - 1]
            if k not in dead:
                best = k
                break
            i -= 1
        keys = self._fresh  # negated: the first one at or after -x is the highest start at or below x
        i = bisect_left(keys, -x)
        n = len(keys)
        while i < n:
            k = -keys[i]
            if k not in dead:
                if best is None or k > best:
                    best = k
                break
            i += 1
        return best

    def _index_add(self, start: int) -> None:
        if start in self._dead:
            self._dead.remove(start)
            return
        fresh = self._fresh
        insort(fresh, -start)
        if len(fresh) > self.fresh_min + (len(self._starts) >> 4):
            self._merge()

    def _merge(self) -> None:
        """``_fresh`` into ``_starts``."""
        new = [-k for k in reversed(self._fresh)]
        starts = self._starts
        if not starts or new[-1] < starts[0]:  # all below the others (the usual case)
            self._starts = new + starts
        elif new[0] > starts[-1]:
            self._starts = starts + new
        else:
            self._starts = sorted(starts + new)  # two sorted runs: one merge pass
        self._fresh.clear()

    def _index_remove(self, start: int) -> None:
        dead = self._dead
        dead.add(start)
        if len(dead) > self.compact_min and len(dead) > len(self._iv):
            self._rebuild()

    def _rebuild(self) -> None:
        """The index from ``_iv`` alone: no tombstones."""
        self._starts = sorted(self._iv)
        self._fresh.clear()
        self._dead.clear()

    def _link(self, prev: int | None, start: int, end: int, owner: int) -> None:
        """Add ``[start, end)`` right after the range starting at ``prev`` (None: before every range)."""
        iv = self._iv
        if prev is None:
            nxt = self._head
            self._head = start
        else:
            pnode = iv[prev]
            nxt = pnode[3]
            pnode[3] = start
        if nxt is not None:
            iv[nxt][2] = start
        iv[start] = [end, owner, prev, nxt]
        self._ends[end] = start
        self._index_add(start)
        self.live += end - start

    def _unlink(self, start: int) -> list[Any]:
        """Remove the range starting at ``start``; returns its node."""
        iv = self._iv
        node = iv.pop(start)
        prev, nxt = node[2], node[3]
        if prev is None:
            self._head = nxt
        else:
            iv[prev][3] = nxt
        if nxt is not None:
            iv[nxt][2] = prev
        del self._ends[node[0]]
        self._index_remove(start)
        self.live -= node[0] - start
        return node

    def _set_end(self, start: int, end: int) -> None:
        """Move the end of the range starting at ``start`` (it stays disjoint from its neighbours)."""
        node = self._iv[start]
        del self._ends[node[0]]
        self.live += end - node[0]
        node[0] = end
        self._ends[end] = start

    # --- queries and changes ------------------------------------------------------------------------------------------

    def _overlapping(self, start: int, end: int) -> list[int]:
        """Starts of the ranges that overlap ``[start, end)``, in order."""
        iv = self._iv
        k = self._floor(start)
        if k is None:
            k = self._head
        elif iv[k][0] <= start:  # the range before ``start`` ends before it: the next one may overlap
            k = iv[k][3]
        out: list[int] = []
        while k is not None and k < end:
            out.append(k)
            k = iv[k][3]
        return out

    def pieces(self, start: int, end: int) -> list[Piece]:
        """The owned parts of ``[start, end)``, clipped to it, in address order."""
        if start >= end:
            return []
        iv = self._iv
        out: list[Piece] = []
        for s in self._overlapping(start, end):
            e, o = iv[s][0], iv[s][1]
            out.append((max(s, start), min(e, end), o))
        return out

    def remove(self, start: int, end: int) -> list[Piece]:
        """Remove ``[start, end)``; returns the removed parts (clipped), splitting ranges that stick out."""
        iv = self._iv
        if start >= end or not iv:
            return []
        # Fast path: the request is exactly one range (the common munmap).
        hit = iv.get(start)
        if hit is not None and hit[0] == end:
            self._unlink(start)
            return [(start, end, hit[1])]
        out: list[Piece] = []
        for s in self._overlapping(start, end):
            node = iv[s]
            e, o = node[0], node[1]
            out.append((max(s, start), min(e, end), o))
            if s < start:
                self._set_end(s, start)
                if e > end:  # a hole in the middle of it
                    self._link(s, end, e, o)
            elif e > end:  # its tail stays: it now starts at ``end``
                prev = node[2]
                self._unlink(s)
                self._link(prev, end, e, o)
            else:
                self._unlink(s)
        return out

    def assign(self, start: int, end: int, owner: int) -> list[Piece]:
        """Give ``[start, end)`` to ``owner``; returns what it replaced (clipped), as :meth:`remove` does."""
        if start >= end:
            return []
        iv = self._iv
        # ``prev``: the last range starting before ``end``, found through a neighbour when there is one.
        right = iv.get(end)
        if right is not None:
            prev = right[2]
        else:
            prev = self._ends.get(start)  # a range that ends where this one starts
            if prev is None:
                prev = self._floor(end - 1)
            else:
                nxt = iv[prev][3]
                while nxt is not None and nxt < end:
                    prev, nxt = nxt, iv[nxt][3]
        replaced: list[Piece] = []
        if prev is not None and iv[prev][0] > start:  # something overlaps: make room
            # If ``prev`` starts before ``start`` it is the only overlap, cut at ``start``: still the one before.
            keep = prev if prev < start else None
            replaced = self.remove(start, end)
            prev = keep if keep is not None else self._floor(start - 1)
            right = iv.get(end)
        # Merge with same-owner neighbours: the range ending at ``start``, the one starting at ``end``.
        left_ok = prev is not None and iv[prev][0] == start and iv[prev][1] == owner
        if right is not None and right[1] == owner:
            right_end = right[0]
            self._unlink(end)
            if left_ok:
                assert prev is not None
                self._set_end(prev, right_end)
            else:
                self._link(prev, start, right_end, owner)
        elif left_ok:
            assert prev is not None
            self._set_end(prev, end)
        else:  # the common mmap: :meth:`_link` written out
            if prev is None:
                nxt = self._head
                self._head = start
            else:
                pnode = iv[prev]
                nxt = pnode[3]
                pnode[3] = start
            if nxt is not None:
                iv[nxt][2] = start
            iv[start] = [end, owner, prev, nxt]
            self._ends[end] = start
            if start in self._dead:
                self._dead.remove(start)
            else:
                fresh = self._fresh
                insort(fresh, -start)
                if len(fresh) > self.fresh_min + (len(self._starts) >> 4):
                    self._merge()
            self.live += end - start
        return replaced

    def owned(self) -> dict[int, int]:
        """Bytes per owner."""
        out: dict[int, int] = {}
        for start, node in self._iv.items():
            owner = node[1]
            out[owner] = out.get(owner, 0) + node[0] - start
        return out

    def check(self) -> None:
        """Assert the invariants (tests): disjoint, sorted, non-empty, merged, linked, indexed, ``live`` right."""
        iv = self._iv
        keys = self._starts + [-k for k in self._fresh]
        assert self._starts == sorted(self._starts) and self._fresh == sorted(self._fresh), "index not sorted"
        assert len(set(keys)) == len(keys), "index has a start twice"
        assert sorted(set(keys) - self._dead) == sorted(iv), "index out of step"
        assert self._dead <= set(keys) and not self._dead & set(iv), "tombstones out of step"
        assert self._ends == {node[0]: s for s, node in iv.items()}, "ends out of step"
        order = sorted(iv)
        assert self._head == (order[0] if order else None), "head"
        for i, s in enumerate(order):
            assert iv[s][2] == (order[i - 1] if i else None), ("prev link", s)
            assert iv[s][3] == (order[i + 1] if i + 1 < len(order) else None), ("next link", s)
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


STALE_HITS_KEPT = 8
_TID_BITS = 32
_LEN_BITS = 65  # a length is at most 2**64 (page-rounded)


_TID_LIMIT = 1 << _TID_BITS
_SEQ_SHIFT = _TID_BITS + _LEN_BITS


def _pack(seq: int | None, tid: int | None, length: int) -> int | tuple[Any, Any, int]:
    """``(seq, tid, length)`` as one int when they fit (the usual case), else as that tuple."""
    if seq is not None and tid is not None and seq >= 0 and 0 <= tid < _TID_LIMIT:
        return (seq << _SEQ_SHIFT) | (tid << _LEN_BITS) | length
    return (seq, tid, length)


def _unpack(packed: int | tuple[Any, Any, int]) -> tuple[Any, Any, int]:
    if type(packed) is int:
        tid = (packed >> _LEN_BITS) & ((1 << _TID_BITS) - 1)
        return packed >> (_TID_BITS + _LEN_BITS), tid, packed & ((1 << _LEN_BITS) - 1)
    assert isinstance(packed, tuple)
    return packed


@dataclass
class StaleHit:
    """A call the kernel placed on bytes the ledger still held, that no release in the log explains."""

    seq: int | None  # the call's seq and thread (None when the log has none)
    tid: int | None
    start: int  # the bytes still held: [start, end)
    end: int
    holders: list[tuple[int | None, int | None]] = field(default_factory=list)  # (seq, tid) that mapped them


class Replay:
    """Applies syscalls to a :class:`Ledger` and keeps the per-stack byte accounting (see the module doc)."""

    def __init__(self) -> None:
        self.ledger = Ledger()
        self.brk: int | None = None
        self.mapped: dict[int, int] = {}  # stack -> bytes
        self.unmapped: dict[int, int] = {}  # stack -> bytes
        self.peak: dict[int, int] = {}  # stack -> the most bytes it owned at once (mapped - unmapped, after a gain)
        self.stale_bytes = 0  # bytes a non-fixed mmap/mremap found still owned, that no logged release explains
        self.stale_calls = 0  # the calls that found them
        self.stale_hits: list[StaleHit] = []  # the first STALE_HITS_KEPT of them
        self.brk_unseen_bytes = 0  # heap growth seen only through a brk(0) query
        self.bad_events = 0  # successful calls with impossible arguments (ignored)
        self.refused_releases = 0  # munmaps logged before the kernel acted whose arguments it refuses (EINVAL)
        # Set by the caller: called with [start, end) when a call the kernel placed lands on bytes the ledger holds,
        # to apply first the releases logged later that freed them (sysbreak.analysis.replay).
        self.resolve: Callable[[int, int], None] | None = None
        # The item being applied (sysbreak.capture.decode's tuple: tid at [8], seq at [9]), for diagnostics, and
        # what is left of the item that last mapped at each start address: its seq, tid and the bytes it mapped,
        # packed into one int (:func:`_pack`; not the item: the benchmark log's 450,000 addresses kept 110 MB of
        # items alive, 30 MB as packed ints).
        self.cur: tuple[Any, ...] | None = None
        self.origin: dict[int, int | tuple[Any, Any, int]] = {}
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

    def forget_all(self) -> None:
        """The process exec'd: its whole address space is gone (every live mapping counts as unmapped)."""
        self._lost(self.ledger.remove(0, _U64))
        self.brk = None

    def _lost(self, pieces: list[Piece]) -> None:
        unmapped = self.unmapped
        for s, e, o in pieces:
            sid = o >> OWNER_SHIFT
            unmapped[sid] = unmapped.get(sid, 0) + e - s

    def _gain(self, owner: int, n: int) -> None:
        sid = owner >> OWNER_SHIFT
        m = self.mapped[sid] = self.mapped.get(sid, 0) + n
        held = m - self.unmapped.get(sid, 0)
        if held > self.peak.get(sid, 0):
            self.peak[sid] = held

    def _landed(self, start: int, end: int, owner: int, replaced: list[Piece]) -> list[Piece]:
        """A range the kernel chose, ``[start, end)``, was just given to ``owner`` over ``replaced`` (bytes the
        ledger still held). Undo, let :attr:`resolve` apply the releases that freed them, redo; what is still
        replaced then is stale, and returned."""
        if self.resolve is not None:
            ledger = self.ledger
            ledger.remove(start, end)
            for s, e, o in replaced:
                ledger.assign(s, e, o)
            self.resolve(start, end)
            replaced = ledger.assign(start, end, owner)
        if replaced:
            self._stale(replaced)
        return replaced

    def _stale(self, pieces: list[Piece]) -> None:
        n = sum(e - s for s, e, _ in pieces)
        self.stale_bytes += n
        self.stale_calls += 1
        if len(self.stale_hits) < STALE_HITS_KEPT:
            cur = self.cur
            hit = StaleHit(
                cur[9] if cur is not None and len(cur) > 9 else None,
                cur[8] if cur is not None and len(cur) > 8 else None,
                min(s for s, _, _ in pieces),
                max(e for _, e, _ in pieces),
            )
            for s, _e, _o in pieces:
                src = self._holder(s)
                holder = (src[0], src[1]) if src is not None else (None, None)
                if holder not in hit.holders:
                    hit.holders.append(holder)
            self.stale_hits.append(hit)

    def _holder(self, addr: int) -> tuple[Any, Any, int] | None:
        """``(seq, tid, length)`` of the latest call that mapped ``addr`` (a slow search, for the few stale hits
        described): the one that mapped at ``addr`` itself, else the one with the highest seq whose range holds it."""
        src = self.origin.get(addr)
        if src is not None:
            return _unpack(src)
        best: tuple[Any, Any, int] | None = None
        for start, packed in self.origin.items():
            it = _unpack(packed)
            if start <= addr < start + it[2] and (best is None or (it[0] or 0) > (best[0] or 0)):
                best = it
        return best

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
            if not a3 & (MAP_FIXED | MAP_FIXED_NOREPLACE):
                replaced = self._landed(ret, ret + length, owner, replaced)
            self._lost(replaced)
        cur = self.cur
        if cur is not None:  # _pack written out (the hot path)
            seq, tid = cur[9], cur[8]
            if seq is not None and tid is not None and seq >= 0 and 0 <= tid < _TID_LIMIT:
                self.origin[ret] = (seq << _SEQ_SHIFT) | (tid << _LEN_BITS) | length
            else:
                self.origin[ret] = (seq, tid, length)
        mapped = self.mapped
        sid = owner >> OWNER_SHIFT
        m = mapped[sid] = mapped.get(sid, 0) + length
        held = m - self.unmapped.get(sid, 0)
        if held > self.peak.get(sid, 0):
            self.peak[sid] = held

    def munmap(self, a0: int, a1: int, a2: int, a3: int, ret: int, owner: int) -> None:
        start, length = a0, (a1 + 4095) & -4096
        if length <= 0 or start < 0 or start & 4095 or start + length > _U64:
            if length > 0:
                self.bad_events += 1
            return
        ledger = self.ledger
        # Fast path: exactly one whole range (most munmaps).
        iv = ledger._iv
        hit = iv.get(start)
        if hit is not None and hit[0] == start + length:
            # Ledger.take written out (the hot path)
            del iv[start]
            prev, nxt = hit[2], hit[3]
            if prev is None:
                ledger._head = nxt
            else:
                iv[prev][3] = nxt
            if nxt is not None:
                iv[nxt][2] = prev
            del ledger._ends[hit[0]]
            ledger.live -= length
            dead = ledger._dead
            dead.add(start)
            if len(dead) > ledger.compact_min and len(dead) > len(iv):
                ledger._rebuild()
            sid = hit[1] >> OWNER_SHIFT
            unmapped = self.unmapped
            unmapped[sid] = unmapped.get(sid, 0) + length
            return
        removed = ledger.remove(start, start + length)
        if removed:
            self._lost(removed)

    def munmap_before(self, a0: int, a1: int, a2: int, a3: int, ret: int, owner: int) -> None:
        """A munmap logged before it entered the kernel (no return value): applied unless the kernel refuses its
        arguments with EINVAL (an address not page-aligned, a zero length, a range past the address space)."""
        if not a1 or a0 & 4095 or a0 + ((a1 + 4095) & -4096) > _U64:
            self.refused_releases += 1
            return
        self.munmap(a0, a1, a2, a3, ret, owner)

    def mremap(self, a0: int, a1: int, a2: int, a3: int, ret: int, owner: int) -> None:
        old, old_size, new_size, flags = a0, page_up(a1), page_up(a2), a3
        new = ret
        if new_size == 0 or not self._valid(old, old_size) or not self._valid(new, new_size):
            return
        ledger = self.ledger
        cur = self.cur
        if cur is not None:
            self.origin[new] = _pack(cur[9], cur[8], new_size)
        if old_size == 0:  # a second mapping of the same shared pages
            replaced = ledger.assign(new, new + new_size, owner)
            if replaced and not flags & MREMAP_FIXED:
                replaced = self._landed(new, new + new_size, owner, replaced)
            self._lost(replaced)
            self._gain(owner, new_size)
            return
        keep = min(old_size, new_size)
        if new == old:  # in place
            if new_size < old_size:
                self._lost(ledger.remove(old + new_size, old + old_size))
            elif new_size > old_size:
                replaced = ledger.assign(old + old_size, old + new_size, owner)
                if replaced:
                    replaced = self._landed(old + old_size, old + new_size, owner, replaced)
                self._lost(replaced)
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
        if replaced and not flags & MREMAP_FIXED and self.resolve is not None:
            for s, e, o in replaced:  # put back; the releases that freed them first
                ledger.assign(s, e, o)
            self.resolve(new, new + new_size)
            replaced = ledger.remove(new, new + new_size)
        if replaced:
            self._lost(replaced)
            if not flags & MREMAP_FIXED:
                self._stale(replaced)
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
            replaced = self.ledger.assign(a_old, a_new, owner)
            if replaced:
                replaced = self._landed(a_old, a_new, owner, replaced)
            self._lost(replaced)
            cur = self.cur
            if cur is not None:
                self.origin[a_old] = _pack(cur[9], cur[8], 0)  # (only a stale hit at the old break names it)
            self._gain(owner, a_new - a_old)
        elif a_new < a_old:
            self._lost(self.ledger.remove(a_new, a_old))
