"""Wrapper chains: functions that take the syscall number from an argument register, and their callers.

A ``syscall`` instruction whose number is still in a register its function received it in (the site's early
probe point is the function's first instruction: Go's ``runtime/internal/syscall.Syscall6`` takes it in rax,
a ``mov rax, rdi`` wrapper in rdi) makes that function a *wrapper*. Its direct callers (``call``/``jmp`` rel32 to
its start, found like calls to ``syscall()``) are decoded and the register traced back in their basic block, and
across blocks (:func:`sysbreak.elfscan.x86.trace`, the scanner's cross-block constants): a constant makes the
call a *wrapper call* with a known number; a value the caller itself received in a register at its own entry
makes the caller a wrapper too, one link further up the chain (Go: ``syscall.RawSyscall6`` passes AX through to
``runtime/internal/syscall.Syscall6``), and so on, a few links deep.

The probes stay at the innermost wrapper (its early probe reads the number the kernel will get, whoever called
it: callers through function pointers and from other modules are invisible here); the chains say where the
numbers come from, for ``sysbreak sites``. A chain stops where the number goes through memory (Go's
``syscall.Syscall6`` keeps it on its stack across ``runtime.entersyscall``).
"""

from __future__ import annotations

from dataclasses import dataclass

from sysbreak.elfscan import x86
from sysbreak.elfscan.elf import SHT_DYNSYM, SHT_SYMTAB, ElfFile
from sysbreak.elfscan.scanner import _branches_to, _Function, _jump_targets, _Region, _Starts

__all__ = ["WrapperCall", "wrapper_calls"]

MAX_LINKS = 4


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
    regions = [_Region(v, elf.read(off, size), name) for v, off, size, name in elf.exec_regions()]
    sync = {f for f in elf.fde_starts() if not f & 15}
    for sh_type in (SHT_SYMTAB, SHT_DYNSYM):
        index = elf.functions(sh_type)
        if index is not None:
            sync.update(index.starts)
    sync.update(r.vaddr for r in regions)
    starts = _Starts(sorted(sync))
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
    """Decode the function around the branch at ``pos`` and trace the wrapper's number register back from it."""
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
    b = k
    while b > 0 and not f.flow(b - 1) and b not in f.preds:
        b -= 1
    # (an empty block: the branch is the block's first instruction, the value is what came into it)
    t = x86.trace([f.text(i) for i in range(b, k)], reg) if b < k else x86.Trace(None, reg, 0)
    if t.const is None and t.at == 0 and t.reg is not None and b > 0:
        const = f.const_at(f.w.rows[b][0], t.reg)
        if const is not None:
            t = x86.Trace(const, None, None)
    caller_reg = t.reg if t.const is None and t.at == 0 and b == 0 else None
    return WrapperCall(addr, target, reg, t.const, caller_reg, link)


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
