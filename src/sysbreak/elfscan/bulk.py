"""Whole-table arithmetic with numpy, for the big modules only.

A 280 MB ``.text`` (libtorch_cpu.so of torch 2.13) is too big for byte searches driven from Python: ``0f 05``
alone takes 0.3 s with ``bytes.find`` (``0f`` is everywhere in x86 code), and the displacement-keyed searches
for branches to ``syscall()`` took 8 s. Here each question is one pass of vectorised comparisons over the region,
in chunks (so the temporaries stay a few tens of MB):

* :func:`pair_offsets`: every offset of a two-byte opcode (``syscall`` is ``0f 05``);
* :func:`rel32_branches`: every ``call``/``jmp``/``jcc`` rel32 and ``call``/``jmp [rip + disp32]`` whose
  target is a wanted address: the target of a branch at ``p`` is ``base + p + length + disp32``, computed for
  every offset whose opcode bytes match;
* :func:`function_symbols`, :func:`sorted_union`: the symbol tables and synchronisation points (hundreds of
  thousands of entries) filtered and sorted in bulk.

Every function is exhaustive: it answers exactly what the pure-Python searches of :mod:`sysbreak.elfscan.scanner`
answer (tests/test_sites.py compares the two on real libraries). numpy is imported only by a scan that needs
it (its import, ~80-140 ms here, is more than a whole libc scan); small modules never do.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

_CHUNK = 1 << 20  # (temporaries that stay in the caches: 8 MiB chunks were slower)


def _views(code: Any) -> tuple[Any, Any]:
    """``code`` (``bytes`` or :class:`sysbreak.elfscan.elf.MappedBytes`) as a uint8 array, and the little-endian
    int32 at every offset (an unaligned view one byte apart), both without a copy."""
    n = len(code)
    buf, off = code.buffer() if hasattr(code, "buffer") else (code, 0)
    arr = np.frombuffer(buf, dtype=np.uint8, count=n, offset=off)
    disp = np.ndarray(shape=(max(0, n - 3),), dtype="<i4", buffer=buf, offset=off, strides=(1,))
    return arr, disp


def pair_offsets(code: Any, b0: int, b1: int) -> list[int]:
    """Every offset ``p`` of ``code`` with ``code[p] == b0`` and ``code[p + 1] == b1``, ascending."""
    arr, _disp = _views(code)
    n = len(code)
    out: list[int] = []
    for lo in range(0, n - 1, _CHUNK):
        m = min(lo + _CHUNK, n - 1) - lo
        a = arr[lo : lo + m + 1]
        hit = a[:m] == b0
        hit &= a[1:] == b1
        out.extend((np.flatnonzero(hit) + lo).tolist())
    return out


_MAX_TOP_VALUES = 6  # more distinct top bytes than this (many targets): no top-byte prefilter


def _opcodes(arr: Any, lo: int, hi: int, form: int) -> Any:
    """The mask of offsets ``[lo, hi)`` holding the opcode bytes of ``form``: 0 ``e8``/``e9`` (call/jmp rel32),
    1 ``0f 80``-``0f 8f`` (jcc rel32), 2 ``ff 15``/``ff 25`` (call/jmp [rip + disp32])."""
    a = arr[lo:hi]
    if form == 0:
        m = a & 0xFE
        return m == 0xE8
    second = arr[lo + 1 : hi + 1]
    if form == 1:
        m = a == 0x0F
        s = second & 0xF0
        m &= s == 0x80
        return m
    m = second == 0x15
    m |= second == 0x25
    m &= a == 0xFF
    return m


def rel32_branches(code: Any, base: int, direct: Iterable[int], got: Iterable[int]) -> list[tuple[int, int, int]]:
    """``(offset, opcode length, opcode byte)`` of every branch in ``code`` (placed at ``base``) to an address of
    ``direct`` (``e8``/``e9`` rel32, ``0f 80``-``0f 8f`` rel32) or through a slot of ``got`` (``ff 15``/``ff 25``
    ``[rip + disp32]``), ascending by offset. The displacement ends the instruction, so its length is opcode
    length + 4.

    Per chunk of code, the displacement a branch at ``p`` needs to reach target ``t`` is ``t - base - length -
    p``: over a 1 MiB chunk its top byte takes at most two values per target, so the offsets whose opcode bytes
    match AND whose fourth displacement byte is one of those are the only candidates (a far target's top byte
    is rare in code: few survive); each is then checked exactly."""
    n = len(code)
    if n < 6:
        return []
    arr, disp = _views(code)  # disp[q]: the int32 at offset q
    direct_l, got_l = sorted(set(direct)), sorted(set(got))
    forms = [(0, 1, direct_l), (1, 2, direct_l), (2, 2, got_l)]
    found: list[tuple[int, int, int]] = []
    for form, oplen, ts in forms:
        if not ts:
            continue
        wanted = np.array(ts, dtype=np.int64)
        length = oplen + 4
        last = n - length  # the last offset a whole instruction fits at
        for lo in range(0, last + 1, _CHUNK):
            hi = min(lo + _CHUNK, last + 1)  # offsets [lo, hi)
            m = _opcodes(arr, lo, hi, form)
            tops = set()
            for t in ts:
                k = t - base - length
                tops.add(((k - lo) >> 24) & 0xFF)
                tops.add(((k - (hi - 1)) >> 24) & 0xFF)
            if len(tops) <= _MAX_TOP_VALUES:
                top = arr[lo + oplen + 3 : hi + oplen + 3]
                values = sorted(tops)
                tm = top == values[0]
                for v in values[1:]:
                    tm |= top == v
                m &= tm
            p = np.flatnonzero(m)
            if not len(p):
                continue
            p += lo
            target = disp[p + oplen].astype(np.int64) + p + (base + length)
            for q in p[np.isin(target, wanted)].tolist():
                found.append((q, oplen, code[q]))
    found.sort()
    return found


# An Elf64_Sym: st_name, st_info, st_other, st_shndx, st_value, st_size.
_SYM = np.dtype([("name", "<u4"), ("info", "u1"), ("other", "u1"), ("shndx", "<u2"), ("value", "<u8"), ("size", "<u8")])


def function_symbols(table: bytes, kinds: tuple[int, ...]) -> tuple[list[int], list[int], list[int], list[int]]:
    """The columns ``start, size, name offset, bind`` of the defined symbols of type ``kinds`` with a non-zero
    value in the raw symbol ``table``, in the order Python sorts ``(start, size, name offset, bind)`` tuples."""
    syms = np.frombuffer(table, dtype=_SYM, count=len(table) // _SYM.itemsize)
    kind = syms["info"] & 0xF
    keep = np.isin(kind, np.array(kinds, dtype=np.uint8)) & (syms["shndx"] != 0) & (syms["value"] != 0)
    s = syms[keep]
    value, size, name = s["value"], s["size"], s["name"]
    bind = s["info"] >> 4
    order = np.lexsort((bind, name, size, value))  # the last key sorts first
    return value[order].tolist(), size[order].tolist(), name[order].tolist(), bind[order].tolist()


def sync_points(fdes: list[int], starts: Iterable[list[int]], aligned: int) -> list[int]:
    """The distinct values of the FDE starts ``fdes`` that are multiples of ``aligned`` and of all ``starts``
    lists, ascending."""
    f = np.array(fdes, dtype=np.uint64)
    a = np.sort(np.concatenate([f[(f % aligned) == 0], *(np.array(s, dtype=np.uint64) for s in starts)]))
    if len(a):
        a = a[np.concatenate([np.ones(1, dtype=bool), a[1:] != a[:-1]])]
    return a.tolist()


def entries_named(strtab: Any, names: list[int], want: bytes) -> list[int]:
    """The indexes ``i`` of ``names`` (string-table offsets) at which ``strtab`` holds ``want`` (a NUL-terminated
    name), ascending: the entries a search of every offset of ``want`` in the table would have matched."""
    arr, _disp = _views(strtab)
    offs = np.array(names, dtype=np.int64)
    idx = np.flatnonzero(offs + len(want) <= len(strtab))
    at = offs[idx]
    hit = np.ones(len(idx), dtype=bool)
    for j, b in enumerate(want):
        hit &= arr[at + j] == b
    return idx[hit].tolist()
