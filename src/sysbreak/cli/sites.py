"""``sysbreak sites TARGET``: list where a program or a running process can enter the kernel, and what
``sysbreak run``/``attach`` would break on there. Static: no GDB, nothing is stopped or traced."""

from __future__ import annotations

import json
import os
import re
import sys
from typing import TYPE_CHECKING, Annotated

import typer

from sysbreak.errors import ExitCode, SysbreakError

if TYPE_CHECKING:
    from sysbreak import sites

_HELP = """\
List the places where a program can enter the kernel, and what `sysbreak run` / `sysbreak attach` would put a
breakpoint on there. Nothing is run or stopped: the files are read from disk (and /proc/PID/maps for a PID).

TARGET is an ELF file (an executable, a shared library such as /lib/x86_64-linux-gnu/libucm.so.0, a static
binary) or the PID of a running process, in which case every file mapped executable into it is listed, with
run-time addresses. (For a file whose name is all digits, write ./1234.)

A site is a `syscall` instruction, or a call (or tail jump) to libc's syscall() function, as UCX's libucm does
for mmap. Each line shows: address (run-time for a PID, else as objdump shows it), module+offset, the enclosing
function, the kind (syscall, call, tailjmp), the syscall number when it is a constant in the code ("?" when
not), and the action:

\b
  break after / before   an unconditional breakpoint: the site makes a wanted syscall (a constant, also
                         through push/pop, copies, or the same value on every path into its block)
  break if rdi in {...}  a call to syscall() whose number is only known at run time: the breakpoint tests it
  break at F+0x10 if rax in {...}, and after
                         a syscall instruction whose number is not a constant: caught BEFORE it (never on it),
                         where a register holds the number (a wrapper's first instruction: Go's Syscall6, AX),
                         and after it for the result
  skip (getppid)         the site always makes another syscall: no breakpoint, no cost
  skip (generic; ...)    libc's syscall() itself: its callers are probed instead, or it with --exhaustive
  skip (number unknown)  UNCOVERED: no constant and no safe place before it; captures and reports list these

--wrappers also follows the functions that take the number in a register up their direct callers and lists
the numbers the callers pass.

By default only the sites that get a breakpoint are listed, with one line per module counting the skipped ones;
--all lists every site.
"""

_EPILOG = """\
Examples:

  sysbreak sites /lib/x86_64-linux-gnu/libucm.so.0

  sysbreak sites 4242 --lib 'libc|libucm'

  sysbreak sites ./app -s mmap,munmap --all

  sysbreak sites 4242 -f json > sites.json

Exit status: 0 on success, 2 for bad input (not an ELF file, unknown syscall, bad regex), 3 for a process that
cannot be read.
"""


def _is_pid(target: str) -> bool:
    return target.isdigit() and not target.startswith("0")


def _modules(target: str, lib: re.Pattern[str] | None) -> tuple[list[tuple[sites.ModuleScan, int | None]], list[str]]:
    """Scans (with biases) of the target's modules, and notes about those that could not be scanned."""
    from sysbreak import sites

    notes: list[str] = []
    if _is_pid(target):
        pid = int(target)
        candidates = sites.mapped_modules(pid)
        chosen = [(p, b) for p, b in candidates if lib is None or lib.search(p)]
        if not chosen:
            if lib is not None:
                raise SysbreakError(f"no executable file mapped into PID {pid} matches --lib {lib.pattern!r}")
            raise SysbreakError(
                f"PID {pid} has no executable file mappings (exited, or a kernel thread?)", ExitCode.TARGET
            )
        out: list[tuple[sites.ModuleScan, int | None]] = []
        readables = []
        for path, _base in chosen:
            readable = path
            if not os.path.exists(path) and os.path.exists(f"/proc/{pid}/root{path}"):
                readable = f"/proc/{pid}/root{path}"  # another mount namespace (a container)
            readables.append(readable)
        from sysbreak.sites.prescan import fill_cache

        # the cold ones first, biggest first, on one lane per CPU (a torch process: 10-15 s -> a few s)
        fill_cache(readables)
        for (path, base), readable in zip(chosen, readables, strict=True):
            try:
                scan = sites.scan(readable)
            except SysbreakError as err:
                notes.append(f"skipped {path}: {err}")
                continue
            if readable != path:
                scan = sites.ModuleScan(path, scan.build_id, scan.first_load_vaddr, scan.sites)
            out.append((scan, scan.load_bias(base) if base is not None else None))
        return out, notes
    if lib is not None and not lib.search(target):
        raise SysbreakError(f"{target} does not match --lib {lib.pattern!r}")
    return [(sites.scan(target), None)], notes


def _wrapper_calls(modules: list[tuple[sites.ModuleScan, int | None]]) -> dict[str, list[dict[str, object]]]:
    """Per module path, the calls into its wrappers (functions whose syscall number is still in the register
    they received it in: the site's early probe is their first instruction), followed up the chains."""
    from sysbreak.elfscan.wrappers import described

    out = {}
    for scan, _bias in modules:
        found = {
            s.early_vaddr: s.early_reg
            for s in scan.sites
            if s.early_vaddr is not None
            and s.early_reg is not None
            and s.symbol_offset is not None
            and s.early_vaddr == s.vaddr - s.symbol_offset
            and not s.callers_probed  # libc's syscall(): its callers are the call sites already
        }
        if found:
            out[scan.path] = described(scan.path, found)
    return out


def _wrapper_text(path: str, calls: list[dict[str, object]]) -> str:
    from sysbreak import syscalls

    label = os.path.basename(path)
    lines = [f"{path}: calls into wrappers (the number is caught at the wrapper, whoever calls it)"]
    for c in calls:
        where = f"{c['symbol']}+{c['symbol_offset']:#x}" if c["symbol"] else "-"
        target = c["target_symbol"] or f"{c['target']:#x}"
        if c["nr"] is not None:
            what = f"passes {c['nr']} {syscalls.name(int(str(c['nr'])))} in {c['reg']}"
        elif c["caller_reg"] is not None:
            what = f"passes on its own {c['caller_reg']}: a wrapper itself"
        else:
            what = f"passes an unknown {c['reg']}"
        lines.append(f"  {label}+{c['vaddr']:#x}  {where}  -> {target}  (link {c['link']})  {what}")
    if not calls:
        lines.append("  (no direct calls found: called through pointers, or from other modules)")
    return "\n".join(lines) + "\n"


def register(app: typer.Typer) -> None:
    @app.command("sites", help=_HELP, epilog=_EPILOG)
    def command(
        target: Annotated[
            str,
            typer.Argument(metavar="TARGET", help="An ELF file, or the PID of a running process.", show_default=False),
        ],
        syscall: Annotated[
            list[str] | None,
            typer.Option(
                "--syscall",
                "-s",
                metavar="NAME",
                help="Syscall wanted, by name or number (repeat it, or separate with commas). "
                "Default: mmap,munmap,mremap,brk.",
            ),
        ] = None,
        lib: Annotated[
            str | None,
            typer.Option(
                "--lib", metavar="REGEX", help="Only modules whose path matches this Python regex (searched anywhere)."
            ),
        ] = None,
        exhaustive: Annotated[
            bool,
            typer.Option(
                "--exhaustive",
                help="Plan as `run --exhaustive` does: break (conditionally) in generic wrappers such as "
                "libc's syscall() instead of at their callers.",
            ),
        ] = False,
        fmt: Annotated[
            str,
            typer.Option(
                "--format",
                "-f",
                metavar="text|json",
                help="text: a table; json: format sysbreak-sites/1 (every site included).",
            ),
        ] = "text",
        as_json: Annotated[bool, typer.Option("--json", hidden=True)] = False,  # the old spelling of -f json
        show_all: Annotated[
            bool, typer.Option("--all", "-a", help="List the skipped sites too, not just a count of them.")
        ] = False,
        wrappers: Annotated[
            bool,
            typer.Option(
                "--wrappers",
                "-w",
                help="Also follow the functions that take the number in a register (Go's Syscall6: AX) up their "
                "chains of direct callers, and list the numbers the callers pass (decodes the callers: slower).",
            ),
        ] = False,
    ) -> None:
        if fmt not in ("text", "json"):
            raise SysbreakError(f"--format {fmt!r}: sysbreak sites writes text or json")
        from sysbreak import sites, syscalls

        wanted = syscalls.parse_list(syscall or [])
        pattern = None
        if lib is not None:
            try:
                pattern = re.compile(lib)
            except re.error as err:
                raise SysbreakError(f"bad --lib regex {lib!r}: {err}") from None
        modules, notes = _modules(target, pattern)
        for note in notes:
            print(f"sysbreak: note: {note}", file=sys.stderr)
        chains = _wrapper_calls(modules) if wrappers else {}
        if as_json or fmt == "json":
            doc = sites.sites_json(modules, wanted, exhaustive=exhaustive)
            for mod in doc["modules"]:
                if wrappers:
                    mod["wrapper_calls"] = chains.get(mod["path"], [])
            sys.stdout.write(json.dumps(doc, indent=1) + "\n")
            return
        names = ", ".join(syscalls.name(n) for n in wanted)
        mode = "exhaustive" if exhaustive else "call sites"
        sys.stdout.write(f"syscalls: {names}  (mode: {mode})\n")
        sys.stdout.write(sites.sites_table(modules, wanted, exhaustive=exhaustive, show_all=show_all))
        for path, calls in chains.items():
            sys.stdout.write(_wrapper_text(path, calls))
        total_sites = sum(len(m.sites) for m, _b in modules)
        total_probes = sum(len(sites.plan(m, wanted, exhaustive=exhaustive)) for m, _b in modules)
        if len(modules) > 1:
            sys.stdout.write(
                f"{len(modules)} modules, {total_sites} sites, {total_probes} breakpoint"
                f"{'s' if total_probes != 1 else ''}\n"
            )
