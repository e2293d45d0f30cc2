"""The exact key of a raw stack window, computed incrementally (plain Python, no ``gdb``).

A raw stack (registers + the bytes from ``$rsp`` up, notes/attach.md) is written to the event log once per
*call path*; later events of the same path name its record. The key of a window is the pc, the window's length
and every 8-byte word in it that points into executable code, with its position (:func:`full_key`): two
different recorded paths have a different return address somewhere, so they get different keys; stale code
pointers in dead slots can only make two equal paths look different (a record too many), never the reverse.

Computing that key word by word costs about 1 ms for a 32 KiB window in Python, which was most of the cost of a
captured event (``import torch``: 2,935 stops). But between two stops of one thread most of its stack (the
outer frames) is byte-for-byte what it was: :class:`StackKeyer` keeps each thread's last window and its code
pointers, finds from the top down (in C-speed block comparisons) how far the two windows are identical, and
looks at the words of the part that changed only. The key is the same function of the window's bytes as
:func:`full_key` (positions counted from the end of the stack's mapping rather than from ``$rsp``, with the
window's cut from that end: a bijection, tested against :func:`full_key`).
"""

from __future__ import annotations

import bisect
import struct
from collections.abc import Iterable

#: 2 MiB buckets of executable address space: a fast first test of each stack word
BUCKET_SHIFT = 21
#: the first comparison of two windows' tops; each next one doubles, a mismatch is narrowed down to MIN_BLOCK
FIRST_BLOCK = 1024
MIN_BLOCK = 128
#: threads whose last window is kept (a process with more threads rescans the least recently seen ones)
MAX_THREADS = 4096

Key = tuple[int, int, int, tuple[int, ...], tuple[int, ...]]


class CodeRanges:
    """The executable address ranges of a process: is a word a code pointer?"""

    def __init__(self, ranges: Iterable[tuple[int, int]] = ()) -> None:
        execs = sorted(ranges)
        self.ranges = execs
        self.starts = [r[0] for r in execs]
        self.ends = [r[1] for r in execs]
        self.buckets = frozenset(
            b for lo, hi in execs for b in range(lo >> BUCKET_SHIFT, ((hi - 1) >> BUCKET_SHIFT) + 1)
        )

    def __contains__(self, value: int) -> bool:
        if value >> BUCKET_SHIFT not in self.buckets:
            return False
        j = bisect.bisect_right(self.starts, value) - 1
        return j >= 0 and value < self.ends[j]

    def scan(self, data: bytes, start: int, lo: int, hi: int) -> tuple[list[int], list[int]]:
        """The code pointers among the words of ``data`` (which starts at address ``start``) at addresses
        ``[lo, hi)``, highest address first: (addresses, values)."""
        if hi <= lo:
            return [], []
        words = struct.unpack_from(f"<{(hi - lo) // 8}Q", data, lo - start)
        buckets, starts, ends = self.buckets, self.starts, self.ends
        shift = BUCKET_SHIFT
        # the bucket test in a comprehension (1.7x the speed of the same test in the loop below)
        near = [i for i in range(len(words) - 1, -1, -1) if words[i] >> shift in buckets]
        addrs: list[int] = []
        vals: list[int] = []
        bisect_right = bisect.bisect_right
        for i in near:
            v = words[i]
            j = bisect_right(starts, v) - 1
            if j >= 0 and v < ends[j]:
                addrs.append(lo + 8 * i)
                vals.append(v)
        return addrs, vals


def full_key(pc: int, data: bytes, code: CodeRanges) -> tuple[int, ...]:
    """The key as defined, word by word (the reference :class:`StackKeyer` is tested against): the pc, the
    window's length, then (word index from ``$rsp``, value) of every code pointer."""
    key = [pc, len(data)]
    for i, (v,) in enumerate(struct.iter_unpack("<Q", data[: len(data) // 8 * 8])):
        if v in code:
            key += (i, v)
    return tuple(key)


class _Window:
    __slots__ = ("sp", "top", "data", "offs", "vals", "gen")

    def __init__(self, sp: int, top: int, data: bytes, offs: list[int], vals: list[int], gen: int) -> None:
        self.sp, self.top, self.data, self.offs, self.vals, self.gen = sp, top, data, offs, vals, gen


class StackKeyer:
    """Keys of raw stack windows, each thread's computed from what changed since its last window."""

    def __init__(self, code: CodeRanges | None = None) -> None:
        self.code = code or CodeRanges()
        self._gen = 0
        self._last: dict[int, _Window] = {}
        self.words_scanned = 0  # statistics: words looked at one by one, and words reused from a last window
        self.words_reused = 0

    def set_code(self, code: CodeRanges) -> None:
        """New executable ranges (a library came or went): every thread's next window is scanned in full."""
        self.code = code
        self._gen += 1

    def forget(self, tid: int | None = None) -> None:
        if tid is None:
            self._last.clear()
        else:
            self._last.pop(tid, None)

    def key(self, tid: int, pc: int, sp: int, top: int, data: bytes) -> Key:
        """The key of the window ``data`` = the bytes at ``[sp, sp + len(data))`` of thread ``tid``, whose stack
        mapping ends at ``top`` (``sp + len(data) <= top``; ``sp`` and ``top`` 8-byte aligned)."""
        n = len(data) // 8 * 8
        hi = sp + n
        code = self.code
        last = self._last.pop(tid, None)  # re-inserted below: the dict stays in least-recently-seen order
        lo_common = t = 0
        if last is not None and last.top == top and last.gen == self._gen:
            lo_common = max(sp, last.sp)
            t = min(hi, last.sp + len(last.data))
        if last is not None and lo_common < t:
            low = _equal_down_to(data, sp, last.data, last.sp, lo_common, t)
            # [low, t) is identical in both windows: its code pointers are the last window's
            above_a, above_v = code.scan(data, sp, t, hi)
            below_a, below_v = code.scan(data, sp, sp, low)
            offs_last = last.offs
            # offsets from top, ascending (addresses descending): keep those of addresses in [low, t)
            i = bisect.bisect_right(offs_last, top - t)
            j = bisect.bisect_right(offs_last, top - low)
            offs = [top - a for a in above_a] + offs_last[i:j] + [top - a for a in below_a]
            vals = above_v + last.vals[i:j] + below_v
            scanned = (hi - t) + (low - sp)
            self.words_scanned += scanned // 8
            self.words_reused += (n - scanned) // 8
        else:
            addrs, vals = code.scan(data, sp, sp, hi)
            offs = [top - a for a in addrs]
            self.words_scanned += n // 8
        self._last[tid] = _Window(sp, top, data[:n], offs, vals, self._gen)
        if len(self._last) > MAX_THREADS:
            self._last.pop(next(iter(self._last)))
        return (pc, n, top - hi, tuple(offs), tuple(vals))


def _equal_down_to(a: bytes, a_start: int, b: bytes, b_start: int, lo: int, hi: int) -> int:
    """The lowest address ``low`` in ``[lo, hi]`` (a multiple of 8 away from ``hi``) such that ``a`` and ``b``
    (buffers starting at ``a_start`` and ``b_start``) hold the same bytes at every address of ``[low, hi)``;
    ``hi`` when they differ right below it. Blocks compared from ``hi`` down, doubling, then halved at the first
    difference down to :data:`MIN_BLOCK` bytes (the caller scans what is left word by word)."""
    low = hi
    block = FIRST_BLOCK
    narrowing = False
    while low > lo:
        size = min(block, low - lo)
        if a[low - size - a_start : low - a_start] == b[low - size - b_start : low - b_start]:
            low -= size
            if not narrowing:
                block *= 2
            continue
        if size <= MIN_BLOCK:
            break
        narrowing = True  # the difference is in this block: halve until it is MIN_BLOCK bytes wide
        block = max(MIN_BLOCK, size // 2 // 8 * 8)
    return low
