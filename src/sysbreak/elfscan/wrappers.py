"""Wrapper chains: functions that take the syscall number from an argument register, and their callers.

A ``syscall`` instruction whose number is still in a register its function received it in (the site's early
probe point is the function's first instruction: Go's ``runtime/internal/syscall.Syscall6`` takes it in rax,
a ``mov rax, rdi`` wrapper in rdi) makes that function a *wrapper*. Its direct callers (``call``/``jmp`` rel32 to
its start, found like calls to ``syscall()``) are decoded and the register traced back in their basic block, and
across blocks (:func:`sysbreak.elfscan.x86.trace`, the scanner's cross-block constants): a constant makes the
call a *wrapper call* with a known number; a value the caller itself received in a register (or a stack slot)
at its own entry makes the caller a wrapper too, one link further up the chain (Go: ``syscall.RawSyscall6``
passes AX through to ``runtime/internal/syscall.Syscall6``), and so on, six links deep. Values kept in stack
slots are followed over straight-line code, across calls (Go's ``syscall.Syscall6`` spills AX around
``runtime.entersyscall``; the ABI0 wrappers of ``golang.org/x/sys/unix`` take the number at ``[rsp + 8]``).

The probes stay at the innermost wrapper (its early probe reads the number the kernel will get, whoever called
it: callers through function pointers and from other modules are invisible here); the chains say where the
numbers come from, for ``sysbreak sites``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from sysbreak.elfscan import x86
from sysbreak.elfscan.elf import SHT_DYNSYM, SHT_SYMTAB, ElfFile
from sysbreak.elfscan.scanner import _branches_to, _Function, _jump_targets, _Region, _regions, _Starts, _sync_points

__all__ = ["WrapperCall", "wrapper_calls"]

MAX_LINKS = 6


@dataclass(frozen=True)
class WrapperCall:
    """A direct call (or tail jump) at ``vaddr`` to the wrapper starting at ``target``."""

    vaddr: int
    target: int  # the wrapper's first instruction
    reg: str  # the register the wrapper takes the number in
    nr: int | None  # the number the caller passes, when it is a constant
    caller_reg: str | None  # the caller passes what it received in this register: it is a wrapper itself
    link: int  # 1: calls a wrapper that holds a syscall instruction; 2: calls a caller of one...


def wrapper_calls(elf: ElfFile, wrappers: dict[int, str]) -> list[WrapperCall]:
    """The calls into ``wrappers`` (function start -> number register), followed up the chains."""
    regions = _regions(elf)
    indexes = [elf.functions(sh_type) for sh_type in (SHT_SYMTAB, SHT_DYNSYM)]
    starts = _Starts(
        _sync_points(elf.fde_starts(), [i.starts for i in indexes if i is not None] + [[r.vaddr for r in regions]])
    )
    out: list[WrapperCall] = []
    seen: set[int] = set(wrappers)
    frontier = dict(wrappers)
    for link in range(1, MAX_LINKS + 1):
        if not frontier:
            break
        nxt: dict[int, str] = {}
        for r in regions:
            if r.name.startswith(".plt"):
                continue
            for cand in _branches_to(r, set(frontier), set()):
                call = _follow(r, cand.pos, starts, frontier, link)
                if call is None:
                    continue
                out.append(call)
                if call.caller_reg is not None:
                    lo, _hi = starts.around(call.vaddr)
                    if lo not in seen:
                        seen.add(lo)
                        nxt[lo] = call.caller_reg
        frontier = nxt
    out.sort(key=lambda c: c.vaddr)
    return out


def _follow(r: _Region, pos: int, starts: _Starts, frontier: dict[int, str], link: int) -> WrapperCall | None:
    """Decode the function around the branch at ``pos`` and trace the wrapper's number back from it."""
    f = _Function.of(r, pos, starts)
    k = f.index.get(pos)
    if k is None and pos - 1 in f.index:
        k = f.index[pos - 1]  # bnd call / bnd jmp
    if k is None:
        return None  # not an instruction boundary: bytes inside another instruction
    addr, size, _first = f.w.rows[k]
    mnemonic = f.base(k)
    if not (mnemonic == "call" or mnemonic.startswith("j")):
        return None
    targets = _jump_targets(r.code, r.vaddr, [f.w.rows[k]]) if mnemonic != "call" else set()
    target = x86.direct_target(f.text(k)[1]) if mnemonic == "call" else next(iter(targets), None)
    if target not in frontier:
        return None
    reg = frontier[target]
    if reg.startswith("*sp"):
        # the wrapper reads its number from its stack at entry; here, before the call pushes the return address
        # (a tail jump pushes nothing), that slot is 8 bytes lower
        slot = _offset(reg) - (8 if mnemonic == "call" else 0)
        nr, caller = _value_at(f, k, f"*sp+{slot}")
        return WrapperCall(addr, target, reg, nr, caller, link)
    b = k
    while b > 0 and not f.flow(b - 1) and b not in f.preds:
        b -= 1
    # (an empty block: the branch is the block's first instruction, the value is what came into it)
    t = x86.trace([f.text(i) for i in range(b, k)], reg) if b < k else x86.Trace(None, reg, 0)
    if t.const is None and t.at == 0 and t.reg is not None and b > 0:
        const = f.const_at(f.w.rows[b][0], t.reg)
        if const is not None:
            t = x86.Trace(const, None, None)
    if t.const is not None:
        return WrapperCall(addr, target, reg, t.const, None, link)
    if t.at == 0 and b == 0:
        return WrapperCall(addr, target, reg, None, t.reg, link)
    # kept on the stack across calls (Go's syscall.Syscall6 spills AX around runtime.entersyscall)
    nr, caller = _value_at(f, k, reg)
    return WrapperCall(addr, target, reg, nr, caller, link)


_SIZES = {"byte": 1, "word": 2, "dword": 4, "qword": 8, "xmmword": 16, "ymmword": 32, "zmmword": 64}
_MEM = re.compile(r"(byte|word|dword|qword|xmmword|ymmword|zmmword) ptr \[([^\]]*)\]")
_RSP_K = re.compile(r"rsp(?: ([+-]) (0x[0-9a-f]+|\d+))?")


def _offset(loc: str) -> int:
    return int(loc[4:] or 0) if loc.startswith("*sp+") else 0


def _rsp_operand(op: str) -> tuple[int, int] | None | bool:
    """``(offset, size)`` of a ``[rsp + K]`` memory operand; True for memory through another register; None when
    ``op`` is not memory."""
    m = _MEM.fullmatch(op)
    if m is None:
        return None
    inner = _RSP_K.fullmatch(m.group(2))
    if inner is None:
        return True
    k = int(inner.group(2), 0) if inner.group(2) else 0
    return (-k if inner.group(1) == "-" else k), _SIZES[m.group(1)]


def _value_at(f: _Function, k: int, loc: str) -> tuple[int | None, str | None]:
    """What ``loc`` (a register, or ``*sp+K`` relative to rsp at instruction ``k``) holds when ``k`` runs, from a
    walk back over the straight-line code before it: ``(constant, None)``, ``(None, where)`` when it is what the
    function received at its entry (a register, or ``*sp+K`` relative to rsp there), else ``(None, None)``.

    Stack slots survive calls (a callee does not write its caller's locals: what Go's spill code assumes);
    registers do not. A jump target, a jump or anything else that changes rsp on the way gives up."""
    i = k - 1
    while i >= 0:
        if i + 1 in f.preds:
            return None, None  # other paths join here
        m = f.base(i)
        text = f.text(i)[1]
        ops = text.split(", ") if text else []
        if f.flow(i) and m != "call":
            return None, None
        slot = loc.startswith("*sp")
        k_slot = _offset(loc) if slot else 0
        if m == "call":
            if not slot:
                return None, None
        elif m == "push" and len(ops) == 1:
            if slot:
                if k_slot == 0:  # this push wrote the slot
                    value = x86._immediate(ops[0])
                    if value is not None:
                        return value & 0xFFFFFFFFFFFFFFFF, None
                    src = x86._GPR.get(ops[0])
                    if src is None or src[1] != 64:
                        return None, None
                    loc = src[0]
                else:
                    loc = f"*sp+{k_slot - 8}"
            # (a register: a push does not change it)
        elif m == "pop" and len(ops) == 1:
            dst = x86._GPR.get(ops[0])
            if not slot and dst is not None and dst[0] == loc:
                loc = "*sp+0"
            elif slot:
                loc = f"*sp+{k_slot + 8}"
        elif ops and x86._GPR.get(ops[0], ("", 0))[0] == "rsp":
            value = x86._immediate(ops[1]) if len(ops) == 2 else None
            if value is None or m not in ("sub", "add"):
                return None, None
            if slot:
                # before ``sub rsp, N`` the same address was N bytes further from rsp (``add rsp, -0x80`` too)
                k_slot += -value if m == "sub" else value
                if k_slot < 0:
                    return None, None
                loc = f"*sp+{k_slot}"
        elif slot:
            dest = _rsp_operand(ops[0]) if ops else None
            if isinstance(dest, tuple) and m not in x86._READS_FIRST:
                lo, size = dest
                if lo == k_slot and size == 8 and m == "mov" and len(ops) == 2:
                    value = x86._immediate(ops[1])
                    if value is not None:
                        return value & 0xFFFFFFFFFFFFFFFF, None
                    src = x86._GPR.get(ops[1])
                    if src is None or src[1] != 64:
                        return None, None
                    loc = src[0]
                elif lo < k_slot + 8 and k_slot < lo + size:
                    return None, None  # a partial or other write over the slot
        else:
            if ops and len(ops) == 2 and m == "mov" and x86._GPR.get(ops[0], ("", 0)) == (loc, 64):
                spill = _rsp_operand(ops[1])
                if isinstance(spill, tuple) and spill[1] == 8:
                    loc = f"*sp+{spill[0]}"  # reloaded from a stack slot
                    i -= 1
                    continue
            t = x86.trace([f.text(i)], loc)
            if t.const is not None:
                return t.const, None
            if t.reg is None or t.at != 0:
                return None, None
            loc = t.reg
        i -= 1
    if loc.startswith("*sp") and _offset(loc) < 8:
        return None, None  # [rsp] at the entry is the return address
    return None, loc


def described(path: str, wrappers: dict[int, str]) -> list[dict[str, object]]:
    """:func:`wrapper_calls` of the ELF file at ``path``, each with the function names of the call and of its
    target (from ``.symtab``, else ``.dynsym``): JSON-able dicts for ``sysbreak sites --wrappers``."""
    with ElfFile(path) as elf:
        calls = wrapper_calls(elf, wrappers)
        indexes = [i for i in (elf.functions(SHT_SYMTAB), elf.functions(SHT_DYNSYM)) if i is not None]

    def name(vaddr: int) -> tuple[str | None, int | None]:
        for index in indexes:
            hit = index.lookup(vaddr)
            if hit is not None:
                return hit[0], vaddr - hit[1]
        return None, None

    out: list[dict[str, object]] = []
    for c in calls:
        symbol, offset = name(c.vaddr)
        out.append(
            {
                "vaddr": c.vaddr,
                "symbol": symbol,
                "symbol_offset": offset,
                "target": c.target,
                "target_symbol": name(c.target)[0],
                "reg": c.reg,
                "nr": c.nr,
                "caller_reg": c.caller_reg,
                "link": c.link,
            }
        )
    return out
