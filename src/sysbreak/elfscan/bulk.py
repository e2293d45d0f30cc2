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

_CHUNK = 8 << 20


def pair_offsets(code: bytes, b0: int, b1: int) -> list[int]:
    """Every offset ``p`` of ``code`` with ``code[p] == b0`` and ``code[p + 1] == b1``, ascending."""
    arr = np.frombuffer(code, dtype=np.uint8)
    n = len(code)
    out: list[int] = []
    for lo in range(0, n - 1, _CHUNK):
        m = min(lo + _CHUNK, n - 1) - lo
        a = arr[lo : lo + m + 1]
        out.extend((np.flatnonzero((a[:m] == b0) & (a[1:] == b1)) + lo).tolist())
    return out


def rel32_branches(code: bytes, base: int, direct: Iterable[int], got: Iterable[int]) -> list[tuple[int, int, int]]:
    """``(offset, opcode length, opcode byte)`` of every branch in ``code`` (placed at ``base``) to an address of
    ``direct`` (``e8``/``e9`` rel32, ``0f 80``-``0f 8f`` rel32) or through a slot of ``got`` (``ff 15``/``ff 25``
    ``[rip + disp32]``), ascending by offset. The displacement ends the instruction, so its length is opcode
    length + 4."""
    n = len(code)
    if n < 6:
        return []
    arr = np.frombuffer(code, dtype=np.uint8)
    # disp[q]: the little-endian int32 at offset q, for every q (an unaligned view one byte apart: no copy)
    disp: Any = np.ndarray(shape=(n - 3,), dtype="<i4", buffer=code, offset=0, strides=(1,))
    wanted_direct = np.array(sorted(direct), dtype=np.int64)
    wanted_got = np.array(sorted(got), dtype=np.int64)
    found: list[tuple[int, int, int]] = []
    for lo in range(0, n - 1, _CHUNK):
        m = min(lo + _CHUNK, n - 1) - lo
        a = arr[lo : lo + m + 1]
        first, second = a[:m], a[1:]
        forms: list[tuple[Any, int, Any]] = []
        if len(wanted_direct):
            forms.append((np.flatnonzero((first & 0xFE) == 0xE8), 1, wanted_direct))  # call / jmp rel32
            jcc = (first == 0x0F) & ((second & 0xF0) == 0x80)
            forms.append((np.flatnonzero(jcc), 2, wanted_direct))
        if len(wanted_got):
            ff = (first == 0xFF) & ((second == 0x15) | (second == 0x25))
            forms.append((np.flatnonzero(ff), 2, wanted_got))  # call / jmp [rip + disp32]
        for idx, oplen, wanted in forms:
            length = oplen + 4
            p = idx + lo
            p = p[p + length <= n]
            if not len(p):
                continue
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
