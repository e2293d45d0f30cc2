"""Planning: which breakpoint probes catch the wanted syscalls at a module's sites."""

from __future__ import annotations

from collections.abc import Collection

from sysbreak import syscalls
from sysbreak.sites.model import (
    CALL_ARG_REGS,
    LOGGED_BEFORE,
    SYSCALL_ARG_REGS,
    TAIL_CALL_ARG_REGS,
    WRAPPER_ENTRY_ARG_REGS,
    WRAPPER_MAX_OFFSET,
    ModuleScan,
    Probe,
    Site,
)

__all__ = ["plan", "site_action", "skip_reason"]


def plan(
    scan: ModuleScan, wanted: Collection[int], *, exhaustive: bool = False, releases_before: bool = True
) -> list[Probe]:
    """The breakpoints that catch the syscalls ``wanted`` (numbers) made from ``scan``'s module.

    * A ``syscall`` instruction with a known number gets an unconditional probe when the number is wanted, and
      none otherwise.
    * A ``syscall`` instruction whose number is not a constant gets a probe BEFORE it, never on it (stepping a
      blocking call over a breakpoint with the other threads held deadlocks the process; see notes/arming.md): at
      the instruction of the same basic block from which a register holds the number (``Site.early_vaddr``: the
      function start of a wrapper that takes it from an argument register, such as Go's
      ``runtime/internal/syscall.Syscall6`` (rax) or a ``mov rax, rdi`` wrapper), conditioned on the number,
      paired with a breakpoint after the ``syscall`` instruction for the result. A site with no such place is
      *uncovered* (``Site.uncovered``): it gets no probe, and captures list it.
    * libc's ``syscall()`` itself is probed that way only when ``exhaustive``; by default its callers are.
    * A call to ``syscall()`` with a known number: an unconditional probe when wanted, none otherwise (so a hot
      ``syscall(SYS_getppid)`` costs nothing); with an unknown number, a probe conditioned on ``rdi``.
    * A release (:data:`LOGGED_BEFORE`) with a known number is caught BEFORE its site (:attr:`Probe.before`)
      where there is a place for it, unless ``releases_before`` is False.
    * ``exhaustive`` drops every call probe: the conditioned wrapper (in libc, which must be planned too)
      catches those calls, and keeping both would count each call twice.
    """
    want = tuple(sorted(set(wanted)))
    if not want:
        return []
    wanted_set = set(want)
    probes = []
    for site in scan.sites:
        action = site_action(site, wanted_set, exhaustive)
        if action is None:
            continue
        conditioned = action == "cond"
        if releases_before and not conditioned and site.nr in LOGGED_BEFORE and not site.generic:
            if site.kind == "call":
                regs = TAIL_CALL_ARG_REGS if site.tail else CALL_ARG_REGS
                exit_ = None if site.tail else site.next_vaddr
                probes.append(Probe(site, site.vaddr, exit_, "rdi", regs, None, before=True))
                continue
            if site.pre_vaddr is not None:
                probes.append(Probe(site, site.pre_vaddr, site.next_vaddr, "rax", SYSCALL_ARG_REGS, None, before=True))
                continue
            # no instruction to stop at before it: caught after it returns, like an allocation (the replay puts
            # it back in kernel order, see sysbreak.analysis.ledger)
        if site.kind == "syscall" and conditioned and site.early_vaddr is not None and site.early_reg is not None:
            probes.append(
                Probe(
                    site,
                    site.early_vaddr,
                    site.next_vaddr,
                    site.early_reg,
                    site.early_args if site.early_args is not None else (),
                    want,
                    sp_delta=site.early_sp_delta,
                    args_at_exit=site.early_args is None,
                )
            )
        elif site.kind == "syscall" and conditioned:  # libc's syscall() scanned without a pre point
            start = site.vaddr - (site.symbol_offset or 0)
            probes.append(Probe(site, start, site.next_vaddr, "rdi", WRAPPER_ENTRY_ARG_REGS, want))
        elif site.kind == "syscall":
            probes.append(Probe(site, site.vaddr, site.next_vaddr, "rax", SYSCALL_ARG_REGS, None))
        else:
            probes.append(
                Probe(
                    site,
                    site.vaddr,
                    None if site.tail else site.next_vaddr,
                    "rdi",
                    TAIL_CALL_ARG_REGS if site.tail else CALL_ARG_REGS,
                    want if conditioned else None,
                )
            )
    return probes


def site_action(site: Site, wanted: set[int], exhaustive: bool) -> str | None:
    """``"break"`` (unconditional), ``"cond"`` (conditioned on the number register) or None (no probe)."""
    if site.kind == "syscall":
        if site.nr is not None:
            return "break" if site.nr in wanted else None
        if site.callers_probed:
            if not exhaustive:
                return None
            return "cond" if site.early_vaddr is not None or _wrapper_start_known(site) else None
        return "cond" if site.early_vaddr is not None else None  # never ON the syscall instruction
    if exhaustive:
        return None
    if site.nr is not None:
        return "break" if site.nr in wanted else None
    return "cond"


def _wrapper_start_known(site: Site) -> bool:
    return site.symbol_offset is not None and site.symbol_offset <= WRAPPER_MAX_OFFSET


def skip_reason(site: Site, exhaustive: bool) -> str:
    if site.callers_probed:
        return "generic; --exhaustive" if not exhaustive else "generic; start unknown"
    if site.uncovered:
        return "number unknown"
    if site.kind == "call" and exhaustive:
        return "caught in syscall(); --exhaustive"
    if site.nr is not None:
        return syscalls.name(site.nr)
    return "nothing wanted"
