"""Rendering sites and their probes for ``sysbreak sites`` (the CLI verb and the GDB command): a plain-text table
and a JSON document (``sysbreak-sites/1``)."""

from __future__ import annotations

import os
from collections.abc import Collection, Sequence
from typing import Any

from sysbreak import syscalls
from sysbreak.sites.model import LOGGED_BEFORE, ModuleScan, Site
from sysbreak.sites.planning import plan, site_action, skip_reason

__all__ = ["SITES_FORMAT", "sites_json", "sites_table"]

SITES_FORMAT = "sysbreak-sites/1"


def _describe(site: Site, wanted: set[int], exhaustive: bool) -> dict[str, Any]:
    action = site_action(site, wanted, exhaustive)
    reg = "rax" if site.kind == "syscall" and not site.generic else "rdi"
    nrs = ",".join(str(n) for n in sorted(wanted))
    if site.kind == "syscall" and site.early_reg is not None:
        reg = site.early_reg
    if action == "break" and site.nr in LOGGED_BEFORE and (site.kind == "call" or site.pre_vaddr is not None):
        text = "break before"
    elif action == "break":
        text = "break after"
    elif action == "cond" and site.callers_probed:
        text = f"break at {site.symbol or 'entry'} if rdi in {{{nrs}}}"
    elif action == "cond" and site.kind == "syscall" and site.early_vaddr is not None:
        text = f"break at {_early_place(site)} if {reg} in {{{nrs}}}, and after"
    elif action == "cond":
        text = f"break if {reg} in {{{nrs}}}"
    else:
        text = f"skip ({skip_reason(site, exhaustive)})"
    return {"action": action, "text": text, "reg": reg}


def _early_place(site: Site) -> str:
    """Where the probe before a syscall instruction sits: ``Syscall6+0x0`` (function+offset), else the vaddr."""
    assert site.early_vaddr is not None
    if (
        site.symbol is not None
        and site.symbol_offset is not None
        and site.symbol_offset >= site.vaddr - site.early_vaddr
    ):
        start = site.vaddr - site.symbol_offset
        return f"{site.symbol}+{site.early_vaddr - start:#x}"
    return f"{site.early_vaddr:#x}"


def _module_label(path: str) -> str:
    return os.path.basename(path) or path


def _nr_text(site: Site) -> str:
    if site.generic:
        return "? (from caller)"
    if site.nr is None:
        return "?"
    return f"{site.nr} {syscalls.name(site.nr)}"


def _skipped_summary(skipped: dict[str, int]) -> str:
    """``(489 more sites skipped: 487 make other syscalls (61 futex, 19 rt_sigprocmask, ...), 1 generic)``."""
    total = sum(skipped.values())
    labels = {
        "generic; --exhaustive": "in a generic wrapper, number from the caller (probed with --exhaustive)",
        "caught in syscall(); --exhaustive": "calls caught in the syscall() wrapper instead",
        "number unknown": "UNCOVERED: number not inferred and no safe place before the syscall instruction to read it"
        " (never a breakpoint ON it: it could deadlock threads)",
        "generic; start unknown": "in a generic wrapper whose start is unknown",
    }
    special = {labels.get(k, k): v for k, v in skipped.items() if k in labels or k == "nothing wanted"}
    others = {k: v for k, v in skipped.items() if k not in labels and k != "nothing wanted"}
    parts = []
    if others:
        n = sum(others.values())
        ranked = sorted(others.items(), key=lambda kv: (-kv[1], kv[0]))
        names = ", ".join(f"{count} {name}" for name, count in ranked[:4])
        more = ", ..." if len(ranked) > 4 else ""
        parts.append(f"{n} make{'s' if n == 1 else ''} other syscalls ({names}{more})")
    parts.extend(f"{count} {reason}" for reason, count in special.items())
    return f"({total} more site{'s' if total != 1 else ''} skipped: {'; '.join(parts)})"


def sites_table(
    modules: Sequence[tuple[ModuleScan, int | None]],
    wanted: Collection[int],
    *,
    exhaustive: bool = False,
    show_all: bool = True,
) -> str:
    """A plain-text table (no markup, GDB prints it) of each module's sites and what :func:`plan` does with them.

    ``modules`` pairs each scan with its load bias (None when not loaded: addresses are then the ELF virtual
    addresses). Per module: a heading (path, build-id, bias, counts), then one line per site: address,
    module+offset, function+offset, kind, inferred number, action (``break``, ``break if rax in {9,11}``,
    ``skip (getppid)``, ``skip (generic; --exhaustive)``...). With ``show_all`` false, the sites that get no
    probe are summed up in one line per module instead of listed, and the modules without any site in one
    line at the end.
    """
    wanted_set = set(wanted)
    lines: list[str] = []
    empty: list[str] = []
    for scan_, bias in modules:
        if not scan_.sites and not show_all:
            empty.append(_module_label(scan_.path))
            continue
        probes = plan(scan_, wanted_set, exhaustive=exhaustive)
        head = scan_.path
        head += f"  build-id {scan_.build_id}" if scan_.build_id else "  (no build-id)"
        if bias is not None:
            head += f"  bias {bias:#x}"
        head += f"  {len(scan_.sites)} site{'s' if len(scan_.sites) != 1 else ''}, {len(probes)} probe"
        head += "s" if len(probes) != 1 else ""
        lines.append(head)
        label = _module_label(scan_.path)
        rows: list[tuple[str, ...]] = []
        skipped: dict[str, int] = {}
        for site in scan_.sites:
            d = _describe(site, wanted_set, exhaustive)
            if d["action"] is None and not show_all:
                reason = skip_reason(site, exhaustive)
                skipped[reason] = skipped.get(reason, 0) + 1
                continue
            addr = site.vaddr + bias if bias is not None else site.vaddr
            func = f"{site.symbol}+{site.symbol_offset:#x}" if site.symbol else "-"
            kind = "tailjmp" if site.kind == "call" and site.tail else site.kind
            rows.append((f"{addr:#x}", f"{label}+{site.vaddr:#x}", func, kind, _nr_text(site), d["text"]))
        if rows:
            widths = [max(len(r[i]) for r in rows) for i in range(5)]
            for r in rows:
                cells = [r[i].ljust(widths[i]) for i in range(5)]
                lines.append("  " + "  ".join(cells) + "  " + r[5])
        if skipped:
            lines.append("  " + _skipped_summary(skipped))
        if not scan_.sites:
            lines.append("  (no syscall instructions and no calls to syscall())")
    if empty:
        n = len(empty)
        lines.append(f"({n} more module{'s' if n != 1 else ''} with no sites: {', '.join(empty)})")
    return "\n".join(lines) + ("\n" if lines else "")


def sites_json(
    modules: Sequence[tuple[ModuleScan, int | None]], wanted: Collection[int], *, exhaustive: bool = False
) -> dict[str, Any]:
    """The same as :func:`sites_table`, as a JSON-able dict (every site, skipped ones included)::

        {"format": "sysbreak-sites/1",
         "syscalls": [{"nr": 9, "name": "mmap"}, ...],          # the wanted ones
         "exhaustive": false,
         "modules": [
           {"path": "/usr/lib/x86_64-linux-gnu/libc.so.6", "build_id": "93ac..." | null,
            "first_load_vaddr": 0, "bias": 139637976727552 | null,
            "site_count": 526, "probe_count": 5,
            "sites": [
              {"vaddr": 1055153, "address": 139637977782705 | null,   # vaddr + bias
               "size": 2, "kind": "syscall" | "call", "tail": false, "generic": false,
               "nr": 9 | null, "name": "mmap" | null,
               "symbol": "mmap" | null, "symbol_offset": 17 | null,
               "early": null | {"vaddr": vaddr, "reg": "rax"},   # where a number that is not a constant is read
               "uncovered": false,                             # number unknown and no "pre": no probe can watch it
               "action": "break" | "break-if" | "skip",
               "reason": null | "getppid" | "generic" | "exhaustive" | "number unknown" | "nothing wanted",
               "probe": null | {"entry": vaddr, "exit": vaddr | null, "nr_reg": "rax" | "rdi",
                                "arg_regs": ["rdi", ...], "condition_nrs": [9, 11] | null,
                                "sp_delta": 0, "args_at_exit": false}}]}]}

    Integers are plain JSON integers; addresses are unsigned.
    """
    wanted_set = set(wanted)
    out_modules = []
    for scan_, bias in modules:
        probes = {p.site.vaddr: p for p in plan(scan_, wanted_set, exhaustive=exhaustive)}
        sites = []
        for site in scan_.sites:
            action = site_action(site, wanted_set, exhaustive)
            probe = probes.get(site.vaddr) if action is not None else None
            if action is None:
                if site.callers_probed:
                    reason: str | None = "generic"
                elif site.kind == "call" and exhaustive:
                    reason = "exhaustive"
                elif site.nr is not None:
                    reason = syscalls.name(site.nr)
                elif site.kind == "syscall":
                    reason = "number unknown"
                else:
                    reason = "nothing wanted"
            else:
                reason = None
            sites.append(
                {
                    "vaddr": site.vaddr,
                    "address": site.vaddr + bias if bias is not None else None,
                    "size": site.size,
                    "kind": site.kind,
                    "tail": site.tail,
                    "generic": site.generic,
                    "nr": site.nr,
                    "name": syscalls.name(site.nr) if site.nr is not None else None,
                    "symbol": site.symbol,
                    "symbol_offset": site.symbol_offset,
                    "early": None if site.early_vaddr is None else {"vaddr": site.early_vaddr, "reg": site.early_reg},
                    "uncovered": site.uncovered,
                    "action": {"break": "break", "cond": "break-if", None: "skip"}[action],
                    "reason": reason,
                    "probe": None
                    if probe is None
                    else {
                        "entry": probe.entry,
                        "exit": probe.exit,
                        "nr_reg": probe.nr_reg,
                        "arg_regs": list(probe.arg_regs),
                        "condition_nrs": list(probe.condition_nrs) if probe.condition_nrs is not None else None,
                        "sp_delta": probe.sp_delta,
                        "args_at_exit": probe.args_at_exit,
                    },
                }
            )
        out_modules.append(
            {
                "path": scan_.path,
                "build_id": scan_.build_id,
                "first_load_vaddr": scan_.first_load_vaddr,
                "bias": bias,
                "site_count": len(scan_.sites),
                "probe_count": len(probes),
                "sites": sites,
            }
        )
    return {
        "format": SITES_FORMAT,
        "syscalls": [{"nr": nr, "name": syscalls.name(nr)} for nr in sorted(wanted_set)],
        "exhaustive": exhaustive,
        "modules": out_modules,
    }
