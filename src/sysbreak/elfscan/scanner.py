"""Static discovery of the places where a module enters the kernel: ``syscall`` instructions, and calls (and tail
jumps) to the C library's generic ``syscall()`` function.

How it stays fast (a libc in a few tens of milliseconds, where ``objdump -d`` takes 0.4 s):

* Candidates are found by byte search, never by disassembling whole segments: ``0f 05`` for ``syscall``; for
  branches to ``syscall()`` (``e8``/``e9``/``0f 8x`` rel32 to its PLT stub or to libc's own function,
  ``ff 15``/``ff 25`` through a ``-fno-plt`` GOT slot), searches keyed on the upper bytes of the displacement
  a branch from each stretch of code to the target must have (see :func:`_branches_to`). Each hit is then
  checked exactly.
* Each candidate is then confirmed to be a real instruction (not two bytes inside another one) by decoding
  with capstone from the nearest earlier *synchronisation point*: a function start from ``.symtab``/``.dynsym``,
  an FDE start from ``.eh_frame_hdr`` (every compiled function has one, stripped or not), or a section start.
  Decoding from there is exactly what ``objdump -d`` does, but only over the few hundred bytes that matter;
  candidates that share a synchronisation point share one decode.
* The same decode gives the basic block before the site, from which the syscall number is read
  (:func:`sysbreak.elfscan.x86.last_write`).
"""

from __future__ import annotations

import bisect
import os
import re
import struct
import sys
from dataclasses import dataclass

from sysbreak.elfscan import x86
from sysbreak.elfscan.elf import R_X86_64_JUMP_SLOT, SHT_DYNSYM, SHT_SYMTAB, Code, ElfFile
from sysbreak.errors import SysbreakError, os_error

#: Bump when a change to discovery or inference would change what a scan returns (invalidates caches).
SCANNER_VERSION = 7

_CHUNK = 1 << 16
_ENDBR64 = b"\xf3\x0f\x1e\xfa"
# Decode at most this many bytes before a candidate; beyond it, synchronise by agreement (see _sync_start).
_MAX_SYNC_GAP = 4096


@dataclass(frozen=True)
class Early:
    """A safe place to read a syscall number that is not a constant: the instruction at ``vaddr`` (before the
    ``syscall`` instruction, in the same basic block, never the ``syscall`` itself) from which ``reg`` holds the
    number the kernel will see. ``sp_delta`` is rsp at the ``syscall`` instruction minus rsp at ``vaddr``;
    ``args`` names where the six kernel arguments are at ``vaddr`` (registers, ``"*sp+K"``), None when some are
    computed after it (then they are read after the ``syscall`` instruction, where the kernel preserved them)."""

    vaddr: int
    reg: str
    sp_delta: int
    args: tuple[str, ...] | None


@dataclass(frozen=True)
class RawSite:
    vaddr: int
    size: int
    kind: str
    nr: int | None
    symbol: str | None
    symbol_offset: int | None
    tail: bool
    generic: bool
    pre_vaddr: int | None = None  # see Site.pre_vaddr
    early: Early | None = None


@dataclass(frozen=True)
class RawScan:
    build_id: str | None
    first_load_vaddr: int
    sites: list[RawSite]


@dataclass
class _Cand:
    pos: int  # vaddr of the matched opcode byte(s)
    length: int  # bytes from pos to the end of the instruction
    kind: str  # "syscall" | "call"
    tail: bool


# A confirmed candidate: (candidate, instruction address, size, inferred number, pre_vaddr).
_Found = tuple[_Cand, int, int, "int | str", "int | None", "Early | None"]


class _Region:
    __slots__ = ("vaddr", "code", "name", "end")

    def __init__(self, vaddr: int, code: Code, name: str) -> None:
        self.vaddr = vaddr
        self.code = code
        self.name = name
        self.end = vaddr + len(code)


def scan_file(path: str) -> RawScan:
    """Everything :func:`sysbreak.sites.scan` reports, for the ELF file at ``path`` (raises SysbreakError)."""
    with ElfFile(path) as elf:
        return scan_elf(elf)


def scan_elf(elf: ElfFile) -> RawScan:
    """:func:`scan_file` on an open file."""
    try:
        return _scan_elf(elf)
    except (struct.error, IndexError, ValueError, OverflowError, MemoryError) as err:
        raise SysbreakError(f"{elf.path}: damaged ELF file ({type(err).__name__}: {err})") from None
    except OSError as err:
        raise os_error(err, f"{elf.path}: cannot read it") from None


def _scan_elf(elf: ElfFile) -> RawScan:
    build_id = elf.build_id()
    first = elf.first_load_vaddr()
    regions = _regions(elf)
    symtab = elf.functions(SHT_SYMTAB)
    dynsym = elf.functions(SHT_DYNSYM)
    # Code calls through a GOT slot of its own only when built with -fno-plt, and such slots are GLOB_DAT
    # (the JUMP_SLOT slot is the PLT stub's); the stubs are found through every slot.
    slots = elf.got_slots("syscall")
    fdes = elf.fde_starts()
    if not regions:
        return RawScan(build_id, first, [])

    local: set[int] = set()
    local_ranges: list[tuple[int, int]] = []
    for index in (symtab, dynsym):
        if index is not None:
            for start, size in index.named("syscall"):
                local.add(start)
                local_ranges.append((start, start + max(size, 1)))

    got = {slot for slot, rtype in slots.items() if rtype != R_X86_64_JUMP_SLOT}
    stubs = _plt_stubs(regions, set(slots))
    direct = local | stubs

    cands: list[_Cand] = []
    for r in regions:
        code = r.code
        if use_bulk(len(code), BULK_MIN_BYTES):
            from sysbreak.elfscan import bulk

            cands.extend(_Cand(r.vaddr + p, 2, "syscall", False) for p in bulk.pair_offsets(code, 0x0F, 0x05))
            continue
        pos = code.find(b"\x0f\x05")
        while pos >= 0:
            cands.append(_Cand(r.vaddr + pos, 2, "syscall", False))
            pos = code.find(b"\x0f\x05", pos + 1)
    if direct or got:
        for r in regions:
            if r.name.startswith(".plt"):
                continue  # stubs, not call sites
            cands.extend(_branches_to(r, direct, got))

    if not cands:
        return RawScan(build_id, first, [])

    # FDE starts are function starts, but not always instruction boundaries: glibc's __restore_rt has its FDE
    # one byte early, inside the padding before it, for the unwinder's sake. Compiled functions are 16-byte
    # aligned, so only aligned FDE starts are trusted; other code decodes from an earlier point (as objdump does).
    indexes = [i.starts for i in (symtab, dynsym) if i is not None]
    sync_points = _sync_points(fdes, [*indexes, [r.vaddr for r in regions]])

    found = _confirm(regions, cands, sync_points)

    sites = []
    for cand, insn_addr, insn_size, value, pre, early in found:
        symbol = None
        offset = None
        hit = symtab.lookup(insn_addr) if symtab is not None else None
        if hit is None and dynsym is not None:
            hit = dynsym.lookup(insn_addr)
        if hit is not None:
            symbol, start = hit
            offset = insn_addr - start
        in_wrapper = any(lo <= insn_addr < hi for lo, hi in local_ranges)
        if cand.kind == "syscall":
            # the number is copied from the first argument (`mov rax, rdi`): a generic wrapper of its own
            generic = in_wrapper or symbol == "syscall" or value == x86.FROM_RDI
        else:
            generic = False
            if in_wrapper:
                continue  # the wrapper's own internal branches, if any, are not call sites
        nr = value if isinstance(value, int) else None
        sites.append(RawSite(insn_addr, insn_size, cand.kind, nr, symbol, offset, cand.tail, generic, pre, early))
    sites.sort(key=lambda s: s.vaddr)
    return RawScan(build_id, first, sites)


def _regions(elf: ElfFile) -> list[_Region]:
    """The executable sections; a big one (searched in bulk) mapped, not copied (see :meth:`ElfFile.map`)."""
    return [
        _Region(v, elf.map(off, size) if use_bulk(size, BULK_MIN_BYTES) else elf.read(off, size), name)
        for v, off, size, name in elf.exec_regions()
    ]


def _sync_points(fdes: list[int], starts: list[list[int]]) -> list[int]:
    """The decode starts, ascending: the 16-byte aligned FDE starts and every start of ``starts``."""
    if use_bulk(len(fdes) + sum(len(s) for s in starts), BULK_MIN_ENTRIES):
        from sysbreak.elfscan import bulk

        return bulk.sync_points(fdes, starts, 16)
    sync = {f for f in fdes if not f & 15}
    for s in starts:
        sync.update(s)
    return sorted(sync)


#: Regions at least this big are searched with numpy (:mod:`sysbreak.elfscan.bulk`), and symbol tables or sets
#: of synchronisation points with at least this many entries handled with it; smaller ones in pure Python
#: (importing numpy, ~80-140 ms here, costs more than a whole libc scan). Once numpy is imported (a big module
#: was scanned, or the caller has many modules to scan: :func:`load_bulk`), everything but the tiniest tables
#: goes through it (measured on torch's 63 other modules: 0.72-0.79 s against 1.47-1.98 s in pure Python).
BULK_MIN_BYTES = 8 << 20
BULK_MIN_ENTRIES = 50_000
_LOADED_MIN_BYTES = 64 << 10
_LOADED_MIN_ENTRIES = 2_000


def load_bulk() -> None:
    """Import numpy now: for a caller about to scan many modules (the import then pays for itself)."""
    from sysbreak.elfscan import bulk  # noqa: F401


def use_bulk(size: int, threshold: int) -> bool:
    """Whether a table of ``size`` (bytes or entries; ``threshold`` is :data:`BULK_MIN_BYTES` or
    :data:`BULK_MIN_ENTRIES`) goes through :mod:`sysbreak.elfscan.bulk`. Both ways give the same result
    (tests/test_scan_bulk.py); ``SYSBREAK_SCAN_BULK=always|never`` forces one (tests, benchmarks)."""
    force = os.environ.get("SYSBREAK_SCAN_BULK")
    if force in ("always", "never"):
        return force == "always"
    if size >= threshold:
        return True
    if "sysbreak.elfscan.bulk" in sys.modules:
        return size >= (_LOADED_MIN_BYTES if threshold == BULK_MIN_BYTES else _LOADED_MIN_ENTRIES)
    return False


def _plt_stubs(regions: list[_Region], got: set[int]) -> set[int]:
    """Entry addresses of the PLT stubs (``.plt``, ``.plt.sec``, ``.plt.got``) that jump through ``syscall``'s
    GOT slot. A stub is entered at its ``endbr64`` when it has one, else at its (``bnd``) ``jmp``."""
    out: set[int] = set()
    if not got:
        return out
    for r in regions:
        if not r.name.startswith((".plt", "LOAD@")):
            continue  # (LOAD@: a file without section headers, whose PLT is somewhere in its code segment)
        code = r.code
        if use_bulk(len(code), BULK_MIN_BYTES):
            from sysbreak.elfscan import bulk  # (libtorch_cpu's .plt: 43,000 stubs, 60 ms in the loop below)

            jumps = [p for p, _oplen, _op in bulk.rel32_branches(code, r.vaddr, (), got) if code[p + 1] == 0x25]
        else:
            jumps = []
            pos = code.find(b"\xff\x25")
            while pos >= 0:
                if pos + 6 <= len(code):
                    disp = int.from_bytes(code[pos + 2 : pos + 6], "little", signed=True)
                    if r.vaddr + pos + 6 + disp in got:
                        jumps.append(pos)
                pos = code.find(b"\xff\x25", pos + 1)
        for pos in jumps:
            start = pos
            if start >= 1 and code[start - 1] == 0xF2:
                start -= 1
            out.add(r.vaddr + start)
            if start >= 4 and code[start - 4 : start] == _ENDBR64:
                out.add(r.vaddr + start - 4)
    return out


# Branch encodings with a 32-bit displacement: (regex for the opcode, opcode length, is a call, through memory).
_REL32_FORMS = (
    (0xE8, rb"\xe8", 1, True, False),  # call rel32
    (0xE9, rb"\xe9", 1, False, False),  # jmp rel32 (a tail call)
    (0x0F, rb"\x0f[\x80-\x8f]", 2, False, False),  # jcc rel32 (a conditional tail call)
    (0xFF, rb"\xff[\x15\x25]", 2, True, True),  # call/jmp [rip + disp32] (through a GOT slot: -fno-plt code)
)


def _branches_to(r: _Region, direct: set[int], got: set[int]) -> list[_Cand]:
    """Candidate branches in region ``r`` whose target is in ``direct`` (``call``/``jmp``/``jcc`` rel32) or that
    go through a GOT slot in ``got`` (``call``/``jmp [rip + disp32]``), plus short jumps to ``direct``.

    A branch at offset ``p`` reaches target ``t`` when its displacement is ``t - (base + p + length)``: it
    depends on ``p``, so no single byte pattern finds them all, but its upper bytes change slowly with ``p``:

    * far from ``t`` (more than 64 KiB), the upper 16 bits take at most two values over a 64 KiB stretch: one
      regular expression per stretch, starting with the literal opcode byte (so that ``re`` searches in C at
      memchr speed), finds the few branches that can match;
    * near ``t``, where nearly every short branch would match that, the upper 24 bits are constant over each
      256-byte stretch: ``bytes.find`` of those three bytes finds the candidates.

    Every candidate is then checked exactly.
    """
    code = r.code
    base = r.vaddr
    n = len(code)
    hits: dict[int, _Cand] = {}
    if use_bulk(n, BULK_MIN_BYTES):
        from sysbreak.elfscan import bulk

        for p, oplen, op in bulk.rel32_branches(code, base, direct, got):
            # jmp / jcc rel32 and jmp [rip + disp32] are tail calls
            tail = op != 0xE8 and not (op == 0xFF and code[p + 1] == 0x15)
            hits[p] = _Cand(base + p, oplen + 4, "call", tail)
    else:
        _rel32_search(r, direct, got, hits)
    # Short jumps (jmp rel8, jcc rel8) can only reach a target within 128 bytes.
    for target in direct:
        if not base <= target < r.end:
            continue
        for p in range(max(0, target - base - 129), min(n - 1, target - base + 127)):
            op = code[p]
            if op == 0xEB or 0x70 <= op <= 0x7F:
                disp = code[p + 1] - 256 if code[p + 1] > 127 else code[p + 1]
                if base + p + 2 + disp == target:
                    hits.setdefault(p, _Cand(base + p, 2, "call", True))
    return [hits[p] for p in sorted(hits)]


def _rel32_search(r: _Region, direct: set[int], got: set[int], hits: dict[int, _Cand]) -> None:
    """The rel32 and ``[rip + disp32]`` branches of :func:`_branches_to`, found by byte searches keyed on the
    displacement's upper bytes (pure Python; see :func:`_branches_to`)."""
    code = r.code
    assert isinstance(code, bytes)  # (only big regions are mapped, and those are searched in bulk)
    base = r.vaddr
    n = len(code)
    for first_byte, opcode, oplen, is_call, indirect in _REL32_FORMS:
        targets = got if indirect else direct
        if not targets:
            continue
        length = oplen + 4

        def check(p: int, first_byte: int = first_byte, oplen: int = oplen, length: int = length,
                  is_call: bool = is_call, indirect: bool = indirect, targets: set[int] = targets) -> None:  # fmt: skip
            if p < 0 or p + length > n or code[p] != first_byte or p in hits:
                return
            second = code[p + 1]
            if oplen == 2 and not (second in (0x15, 0x25) if first_byte == 0xFF else 0x80 <= second <= 0x8F):
                return
            (disp,) = struct.unpack_from("<i", code, p + oplen)
            if base + p + length + disp in targets:
                hits[p] = _Cand(base + p, length, "call", not is_call or (indirect and second == 0x25))

        near: list[tuple[int, int]] = []
        for target in targets:
            k = target - base - length  # the displacement at p is k - p
            lo, hi = max(0, k - 0xFFFF), min(n, k + 0x10000)
            if lo >= hi:
                continue
            near.append((lo, hi))
            p_hi = hi
            while p_hi > lo:
                c = (k - (p_hi - 1)) >> 8  # displacement >> 8, the same for p in [p_lo, p_hi)
                p_lo = max(lo, k - 256 * c - 255)
                upper = ((c << 8) & 0xFFFFFFFF).to_bytes(4, "little")[1:]
                q = code.find(upper, p_lo + oplen + 1, p_hi + oplen + 4)
                while q >= 0:
                    check(q - oplen - 1)
                    q = code.find(upper, q + 1, p_hi + oplen + 4)
                p_hi = p_lo
        for lo, hi in _outside(near, n):
            for c_lo in range(lo, hi, _CHUNK):
                c_hi = min(hi, c_lo + _CHUNK)
                halves = set()
                for target in targets:
                    halves.add(((target - (base + c_lo + length)) & 0xFFFFFFFF) >> 16)
                    halves.add(((target - (base + c_hi - 1 + length)) & 0xFFFFFFFF) >> 16)
                alternatives = b"|".join(re.escape(struct.pack("<H", h)) for h in sorted(halves))
                rx = re.compile(opcode + b"..(?:" + alternatives + b")", re.DOTALL)
                end = min(n, c_hi + length)
                for m in rx.finditer(code, c_lo, end):
                    p = m.start()
                    if p >= c_hi:
                        break
                    check(p)
                    for q in range(p + 1, m.end()):
                        # finditer does not return overlapping matches: re-check every start inside this match.
                        if code[q] == first_byte and q < c_hi and rx.match(code, q, end):
                            check(q)


def _outside(spans: list[tuple[int, int]], n: int) -> list[tuple[int, int]]:
    """The parts of ``[0, n)`` that none of ``spans`` covers."""
    out = []
    pos = 0
    for lo, hi in sorted(spans):
        if lo > pos:
            out.append((pos, lo))
        pos = max(pos, hi)
    if pos < n:
        out.append((pos, n))
    return out


def _confirm(regions: list[_Region], cands: list[_Cand], sync_points: list[int]) -> list[_Found]:
    """Decode from synchronisation points to keep the candidates that are real instructions.

    Returns ``(candidate, instruction address, instruction size, inferred number, pre)`` for each one kept; the
    number is an int or one of :data:`x86.UNKNOWN` / :data:`x86.FROM_RDI`, ``pre`` as :attr:`RawSite.pre_vaddr`,
    and ``early`` (syscall instructions whose number is not a constant) the place before it to read the number
    (see :class:`Early`).
    """
    starts = _Starts(sync_points)
    cands.sort(key=lambda c: c.pos)
    region_starts = [r.vaddr for r in regions]
    # Group the candidates by the decode start they need.
    groups: dict[tuple[int, int], list[_Cand]] = {}
    for c in cands:
        ri = bisect.bisect_right(region_starts, c.pos) - 1
        r = regions[ri]
        lowest = c.pos - 1  # a call may carry one prefix byte (bnd)
        si = bisect.bisect_right(sync_points, lowest) - 1
        start = sync_points[si] if si >= 0 else r.vaddr
        if start < r.vaddr:
            start = r.vaddr
        groups.setdefault((ri, start), []).append(c)

    out: list[_Found] = []
    for (ri, start), group in groups.items():
        r = regions[ri]
        last = group[-1].pos + group[-1].length
        if group[0].pos - start > _MAX_SYNC_GAP:
            # Far from any known boundary (hand-written code without CFI): decode each candidate from a start
            # where several trial decodes agree.
            for c in group:
                s = _sync_start(r, c.pos)
                out.extend(_decode_group(r, s, [c], c.pos + c.length, starts))
            continue
        out.extend(_decode_group(r, start, group, last, starts))
    return out


def _sync_start(r: _Region, pos: int) -> int:
    """A decode start for a candidate at ``pos`` far from any known function start (hand-written code without
    CFI). x86 decoding re-synchronises within a few instructions, so decodes begun at several points 64 to 128
    bytes back nearly always agree on whether ``pos`` is an instruction boundary; a start that sides with the
    majority is returned."""
    if pos - r.vaddr <= 256:
        return r.vaddr
    votes: list[tuple[bool, int]] = []
    for back in (128, 111, 96, 81, 64):
        s = pos - back
        hit = False
        for addr, size, _first in x86.decode(r.code[s - r.vaddr : pos + 16 - r.vaddr], s).rows:
            if addr == pos:
                hit = True
            if addr + size > pos:
                break
        votes.append((hit, s))
    majority = sum(1 for hit, _s in votes if hit) * 2 > len(votes)
    return next(s for hit, s in votes if hit == majority)


def _decode_group(r: _Region, start: int, group: list[_Cand], last: int, starts: _Starts) -> list[_Found]:
    """Decode ``[start, last)`` once and check every candidate of ``group`` (all inside it) against it.
    ``starts`` are known function starts: a basic block never extends back over one."""
    out: list[_Found] = []
    code = r.code
    w = x86.decode(code[start - r.vaddr : min(r.end, last + 16) - r.vaddr], start)
    rows = w.rows
    index = {row[0]: k for k, row in enumerate(rows)}
    targets: set[int] | None = None
    for c in group:
        k = index.get(c.pos)
        if k is None and c.kind == "call":
            k = index.get(c.pos - 1)  # a prefixed branch: bnd call / bnd jmp
        if k is None:
            continue
        addr, size, _first = rows[k]
        if addr + size != c.pos + c.length:
            continue
        mnemonic = x86.base_mnemonic(w.mnemonic(k))
        if c.kind == "syscall":
            if mnemonic != "syscall":
                continue
        elif not (mnemonic == "call" or mnemonic[0] == "j"):
            continue
        if targets is None:
            targets = _jump_targets(code, r.vaddr, [row for row in rows if row[2] in _BRANCH_FIRST])
        # The basic block before the site: back to the previous branch, or to a known branch target.
        j = k
        while j > 0 and rows[j][0] not in targets and not starts.has(rows[j][0]) and not w.is_control_flow(j - 1):
            j -= 1
        family = x86.RAX if c.kind == "syscall" else x86.RDI
        block = [w.text(i) for i in range(j, k)]
        # The place to catch the call before it enters the kernel: the instruction just before the syscall, when
        # it is in the same block (so every path to the syscall passes it and nothing branches in between) and
        # leaves the six argument registers alone (so they hold what the kernel will read).
        t = x86.trace(block, family)
        if t.const is None and t.at == 0 and t.reg is not None and not starts.has(rows[j][0]):
            # the value comes from before the block: the same constant on every path into it?
            const = _Function.of(r, rows[j][0], starts).const_at(rows[j][0], t.reg)
            if const is not None:
                t = x86.Trace(const, None, None)
        pre = None  # (planned only for sites with a constant number: see sysbreak.sites.planning)
        if c.kind == "syscall" and j < k and t.const is not None:
            mnemonic, op_str = block[-1]
            if not x86.may_write_any(mnemonic, op_str, x86.KERNEL_ARGS):
                pre = rows[k - 1][0]
        value: int | str = t.const if t.const is not None else (x86.FROM_RDI if t.from_rdi else x86.UNKNOWN)
        early = None
        at, where = t.at, t.reg
        if c.kind == "syscall" and t.const is None and (at is None or where is None) and block:
            # loaded from the stack right before the syscall (Go's asm: MOVQ trap+0(FP), AX): read that slot at the
            # block's first instruction instead
            slot = x86.locate_at(block, family, 0, low32=True)
            if slot is not None and slot.startswith("*sp"):
                at, where = 0, slot
        if c.kind == "syscall" and t.const is None and at is not None and where is not None:
            delta = x86.stack_delta(block, at)
            if delta is not None:
                located = [x86.locate_at(block, reg, at) for reg in x86.KERNEL_ARGS]
                args = tuple(a for a in located if a is not None)
                early = Early(rows[j + at][0], where, delta, args if len(args) == 6 else None)
        out.append((c, addr, size, value, pre, early))
    return out


# Registers a call leaves alone (System V ABI; Go's compiler keeps nothing in registers across a call anyway).
_CALLEE_SAVED = frozenset({"rbx", "rbp", "r12", "r13", "r14", "r15"})
_NO_FALLTHROUGH = frozenset({"jmp", "ret", "retf", "iretq", "ud2", "hlt", "int3", "ljmp"})
_MAX_FUNCTION = 1 << 16
_PADDING = frozenset({"nop", "int3", "xchg"})  # (xchg ax, ax is a 2-byte nop)


class _Starts:
    """The known function starts (synchronisation points), as a set and sorted."""

    def __init__(self, points: list[int]) -> None:
        self.sorted = points
        self.functions: dict[tuple[int, int], _Function] = {}  # decoded whole, for this scan only
        # a set for a look-up per instruction walked; a big module's 700,000 starts are bisected instead (the set
        # took 40 ms to build there, more than all its look-ups)
        self._set = frozenset(points) if len(points) < BULK_MIN_ENTRIES else None

    def has(self, addr: int) -> bool:
        """``addr`` is a known function start."""
        if self._set is not None:
            return addr in self._set
        i = bisect.bisect_left(self.sorted, addr)
        return i < len(self.sorted) and self.sorted[i] == addr

    def around(self, addr: int) -> tuple[int, int]:
        """The function start at or before ``addr`` and the next one after it (its end)."""
        i = bisect.bisect_right(self.sorted, addr)
        return (self.sorted[i - 1] if i else addr), (self.sorted[i] if i < len(self.sorted) else addr + _MAX_FUNCTION)


class _Function:
    """One function, decoded whole, for a constant that reaches a basic block from its predecessors.

    A register's value at a block start is a constant when every predecessor (the instruction falling through
    into it, every direct jump to it in the function) ends with that constant in it: :func:`x86.trace` over the
    predecessor's block, recursively, a call passing only callee-saved registers through. Loops are met
    optimistically (a back edge that only passes the value along adds nothing). The function's entry, an
    indirect jump anywhere in it (a switch table: unknown targets), or a disagreement gives no constant.
    Branches from outside the function into its middle (a ``.cold`` part jumping back) are not seen.
    """

    @classmethod
    def of(cls, r: _Region, addr: int, starts: _Starts) -> _Function:
        lo, hi = starts.around(addr)
        lo, hi = max(lo, r.vaddr), min(hi, r.end, lo + _MAX_FUNCTION)
        key = (r.vaddr, lo)
        got = starts.functions.get(key)
        if got is None:
            got = starts.functions[key] = cls(r, lo, hi)
        return got

    def __init__(self, r: _Region, lo: int, hi: int) -> None:
        self.start = lo
        w = self.w = x86.decode(r.code[lo - r.vaddr : hi - r.vaddr], lo)
        rows = w.rows
        self._texts: list[tuple[str, str] | None] = [None] * len(rows)  # decoded to text on first look
        self.index = {row[0]: k for k, row in enumerate(rows)}
        self.preds: dict[int, list[int]] = {}
        branch_rows = [row for row in rows if row[2] in _BRANCH_FIRST]
        # a computed jump (jmp reg / jmp [mem]: FF /4, after bnd/notrack/REX prefixes): its targets are unknown
        self.indirect = any(_is_indirect_jmp(r.code, row[0] - r.vaddr, row[1]) for row in branch_rows)
        for target, src_k in _jump_targets_from(r.code, r.vaddr, branch_rows, self.index):
            k = self.index.get(target)
            if k is not None:
                self.preds.setdefault(k, []).append(src_k)
        self._memo: dict[tuple[int, str], int | None] = {}
        self._busy: set[tuple[int, str]] = set()

    def text(self, k: int) -> tuple[str, str]:
        t = self._texts[k]
        if t is None:
            t = self._texts[k] = self.w.text(k)
        return t

    def base(self, k: int) -> str:
        return x86.base_mnemonic(self.text(k)[0])

    def flow(self, k: int) -> bool:
        """Instruction ``k`` ends a basic block (jump, call, return...)."""
        return self.w.is_control_flow(k)

    def const_at(self, addr: int, reg: str) -> int | None:
        k = self.index.get(addr)
        if k is None or self.indirect:
            return None
        value = self._const(k, reg, 0)
        return None if value == _LOOP else value

    def _const(self, k: int, reg: str, depth: int) -> int | None:
        """The constant ``reg`` holds when instruction ``k`` starts (the start of a block), or None (also for a
        loop back to a block being computed: :data:`_LOOP`)."""
        if k == 0 or depth > 24:
            return None  # the function's entry: anything
        key = (k, reg)
        if key in self._memo:
            return self._memo[key]
        if key in self._busy:
            return _LOOP
        self._busy.add(key)
        preds = list(self.preds.get(k, ()))
        if self.base(k - 1) not in _NO_FALLTHROUGH:
            preds.append(k - 1)
        if not preds and self.base(k) in _PADDING:
            self._busy.discard(key)
            return _LOOP  # alignment padding after a jump or return: never runs, adds nothing
        values: set[int | None] = set()
        for p in preds:
            values.add(self._at_end(p, reg, depth))
            if None in values:
                break
        self._busy.discard(key)
        values.discard(_LOOP)
        if not values:
            return _LOOP  # only loops back (or padding): no information from this block yet
        result = values.pop() if len(values) == 1 else None
        if not self._busy or result is not None:
            self._memo[key] = result  # (a None met inside a loop may be a _LOOP: computed again from the top)
        return result

    def _at_end(self, p: int, reg: str, depth: int) -> int | None:
        """The constant ``reg`` holds after predecessor instruction ``p``, where control leaves it for its
        successor."""
        if self.base(p) == "call":
            if reg not in _CALLEE_SAVED:
                return None
            end = p  # the block before the call, which passes reg through
        elif self.flow(p):
            end = p  # a jump: writes no register
        else:
            end = p + 1
        b = end
        while b > 0 and not self.flow(b - 1) and (b == end or b not in self.preds):
            b -= 1
        if b == end:
            return self._const(b, reg, depth + 1)
        t = x86.trace([self.text(i) for i in range(b, end)], reg)
        if t.const is not None:
            return t.const
        if t.at == 0 and t.reg is not None:
            return self._const(b, t.reg, depth + 1)
        return None


_LOOP = -(1 << 70)  # a marker, never a constant: the value is being computed further up (a loop)


_BRANCH_FIRST = frozenset(b"jbnl")  # jmp/jcc, bnd jmp, notrack jmp, loop (and some non-branches: bt, neg, lea...)
_BRANCH_PREFIXES = frozenset({0xF2, 0x3E, 0x2E})  # bnd, notrack / branch hints


def _is_indirect_jmp(code: Code, off: int, size: int) -> bool:
    end = off + size
    while off < end - 1 and (code[off] in _BRANCH_PREFIXES or 0x40 <= code[off] <= 0x4F):
        off += 1
    return code[off] == 0xFF and off + 1 < end and (code[off + 1] >> 3) & 7 == 4


def _jump_targets_from(code: Code, base: int, rows: list[x86.Row], index: dict[int, int]) -> list[tuple[int, int]]:
    """``(target, index of the jump)`` for the direct jumps among ``rows``."""
    out = []
    for row in rows:
        target = _jump_target(code, base, row)
        if target is not None:
            out.append((target, index[row[0]]))
    return out


def _jump_targets(code: Code, base: int, rows: list[x86.Row]) -> set[int]:
    """The targets of the direct jumps among ``rows`` (from the instruction bytes: rel8 or rel32 forms)."""
    targets = set()
    for row in rows:
        target = _jump_target(code, base, row)
        if target is not None:
            targets.add(target)
    return targets


def _jump_target(code: Code, base: int, row: x86.Row) -> int | None:
    addr, size, _first = row
    off = addr - base
    end = off + size
    op = code[off]
    while op in _BRANCH_PREFIXES and off < end - 1:
        off += 1
        op = code[off]
    if 0x70 <= op <= 0x7F or op == 0xEB or 0xE0 <= op <= 0xE3:  # jcc, jmp, loop*, jrcxz rel8
        rel = code[end - 1]
        return addr + size + (rel - 256 if rel > 127 else rel)
    if op == 0xE9 or (op == 0x0F and 0x80 <= code[off + 1] <= 0x8F):  # jmp, jcc rel32
        # (a slice, not struct.unpack_from: code may be a MappedBytes, which has no buffer interface)
        return addr + size + int.from_bytes(code[end - 4 : end], "little", signed=True)
    return None
