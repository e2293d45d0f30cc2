"""The site model: where a module can enter the kernel (:class:`Site`), the sites of one ELF file
(:class:`ModuleScan`), and the breakpoint planned for one site (:class:`Probe`). Plain data, no I/O."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = [
    "CALL_ARG_REGS",
    "LOGGED_BEFORE",
    "SYSCALL_ARG_REGS",
    "TAIL_CALL_ARG_REGS",
    "WRAPPER_ENTRY_ARG_REGS",
    "WRAPPER_MAX_OFFSET",
    "ModuleScan",
    "Probe",
    "Site",
]

SYSCALL_ARG_REGS: tuple[str, ...] = ("rdi", "rsi", "rdx", "r10", "r8", "r9")
CALL_ARG_REGS: tuple[str, ...] = ("rsi", "rdx", "rcx", "r8", "r9", "*sp")
TAIL_CALL_ARG_REGS: tuple[str, ...] = ("rsi", "rdx", "rcx", "r8", "r9", "*sp+8")
# At a wrapper's first instruction the C arguments are where a tail jump left them (return address at $rsp).
WRAPPER_ENTRY_ARG_REGS = TAIL_CALL_ARG_REGS
# Releases: logged BEFORE the kernel acts, at a breakpoint before the site (Probe.before), so that no allocation
# that reuses the range can be logged ahead of them (docs/event-log.md, "Order"). An allocation is logged after.
LOGGED_BEFORE = frozenset({11})  # munmap
# A generic wrapper's syscall instruction this close to its start has no room to change rdi before copying it
# to rax (glibc's is at +23): rdi at the first instruction is the number.
WRAPPER_MAX_OFFSET = 64


@dataclass(frozen=True)
class Site:
    """One place where the module can enter the kernel.

    ``kind`` is ``"syscall"`` (a ``syscall`` instruction) or ``"call"`` (a call, or with ``tail`` a jump, to
    libc's ``syscall()``). ``nr`` is the syscall number when the instructions before the site load a constant
    into ``eax``/``rax`` (``edi``/``rdi`` for a call), else None. ``generic`` marks a ``syscall`` instruction in
    a generic wrapper, whose number comes from its caller: libc's ``syscall()`` itself (whose callers are call
    sites), or any code that copies the number from its first argument (``mov rax, rdi; ...; syscall``).
    """

    vaddr: int  # ELF virtual address of the instruction, as objdump shows it
    size: int  # instruction length in bytes
    kind: str  # "syscall" or "call"
    nr: int | None  # statically inferred syscall number; None when unknown
    symbol: str | None  # enclosing function from .symtab, else .dynsym; None when stripped and unnamed
    symbol_offset: int | None  # vaddr - symbol start
    tail: bool = False  # kind "call" through a tail jump (jmp syscall@plt): no return address here
    generic: bool = False  # a syscall instruction in a generic wrapper (number from the caller: mov rax, rdi)
    # kind "syscall": the instruction just before it, when it is in the same basic block and writes none of the
    # six argument registers: a breakpoint there sees the call with its final arguments before the kernel acts
    # (and is not ON the syscall instruction, see sysbreak.arming). None when there is no such instruction.
    pre_vaddr: int | None = None
    # A syscall instruction whose number is not a constant: the instruction before it (same basic block, never the
    # syscall itself) from which early_reg holds the number; rsp at the syscall minus rsp there; where the six kernel
    # arguments are there (None: read them after the syscall instruction). early_vaddr None: no such place.
    early_vaddr: int | None = None
    early_reg: str | None = None
    early_sp_delta: int = 0
    early_args: tuple[str, ...] | None = None

    @property
    def next_vaddr(self) -> int:
        return self.vaddr + self.size

    @property
    def callers_probed(self) -> bool:
        """libc's ``syscall()`` itself: its callers are the call sites (probed instead of it by default)."""
        return self.kind == "syscall" and self.generic and self.symbol == "syscall"

    @property
    def uncovered(self) -> bool:
        """A ``syscall`` instruction that no probe can watch: its number is not a constant and there is no safe
        place before it to read the number (see :mod:`sysbreak.sites.planning`)."""
        return self.kind == "syscall" and self.nr is None and not self.callers_probed and self.early_vaddr is None


#: at most this many uncovered sites are listed per module (``uncovered_count`` has them all)
UNCOVERED_LISTED = 32


def uncovered_fields(scan: ModuleScan) -> dict[str, Any]:
    """The ``uncovered`` and ``uncovered_count`` fields of an event log's ``module`` record (docs/event-log.md):
    the sites no probe can watch (:attr:`Site.uncovered`), as ``{"offset", "symbol", "symbol_offset"}``."""
    out = [s for s in scan.sites if s.uncovered]
    listed = [{"offset": s.vaddr, "symbol": s.symbol, "symbol_offset": s.symbol_offset} for s in out[:UNCOVERED_LISTED]]
    return {"uncovered": listed, "uncovered_count": len(out)}


@dataclass(frozen=True)
class ModuleScan:
    """The sites of one ELF file."""

    path: str
    build_id: str | None
    first_load_vaddr: int  # lowest PT_LOAD p_vaddr rounded down to the page size
    sites: tuple[Site, ...]  # sorted by vaddr

    def load_bias(self, mapped_base: int) -> int:
        """The load bias (runtime address = vaddr + bias), from ``mapped_base``: the start address of the
        module's mapping with file offset 0 in ``/proc/PID/maps``."""
        return mapped_base - self.first_load_vaddr


@dataclass(frozen=True)
class Probe:
    """A breakpoint to place for one site.

    ``entry`` is where the arguments are read (the site itself) and ``exit`` where the return value is in
    ``rax`` (the instruction after the site; None for a tail jump, which never comes back here: catch the
    return at the caller's return address instead). For a ``call`` site the value there is what ``syscall()``
    returns: -1 with ``errno`` set on failure, not ``-errno``.

    ``nr_reg`` holds the syscall number at ``entry``. ``sp_delta`` is rsp at ``exit`` minus rsp at ``entry`` (the
    pair is matched by thread and stack pointer); with ``args_at_exit`` the kernel arguments are read at ``exit``
    (where the kernel preserved rdi, rsi, rdx, r10, r8 and r9) instead of at ``entry``. ``arg_regs`` name the six
    syscall arguments in kernel
    order; an item ``"*sp"`` means the 8 bytes at ``$rsp`` (the 7th C argument of ``syscall()``, read at the
    call instruction) and ``"*sp+8"`` the 8 bytes at ``$rsp + 8`` (the same argument at a tail jump, where
    ``$rsp`` points at the return address). ``condition_nrs`` is None when the breakpoint is unconditional (the
    site's constant number is wanted); otherwise the breakpoint must test ``nr_reg`` against these numbers.

    ``before``: a release (:data:`LOGGED_BEFORE`) with a constant number gets its one breakpoint at ``entry``
    BEFORE the kernel acts: for a ``syscall`` instruction the instruction before it (:attr:`Site.pre_vaddr`), for a
    call the ``call``/``jmp`` itself (neither can block). There the arguments are final and the call is logged
    without a return value; ``exit`` is then only the address frames name as the return address.
    """

    site: Site
    entry: int
    exit: int | None
    nr_reg: str
    arg_regs: tuple[str, ...]
    condition_nrs: tuple[int, ...] | None
    before: bool = False  # one breakpoint at ``entry``, before the site: the call is logged there, unreturned
    sp_delta: int = 0
    args_at_exit: bool = False
