"""Where a module can enter the kernel, found statically (plain Python, no GDB), and what to break on there.

:func:`scan` lists a module's *sites*: every ``syscall`` instruction (exactly the ones ``objdump -d`` shows), and
every call or tail jump to the C library's generic ``syscall()`` function (through the PLT, through a GOT slot in
``-fno-plt`` code, or directly in libc itself and in static binaries), each with the syscall number read from the
instructions before it when it is a constant. :func:`plan` turns the sites into breakpoint *probes* for the
syscalls wanted; :func:`sites_table` and :func:`sites_json` render both for ``sysbreak sites`` (the CLI verb and
the GDB command).

Scans are cached on disk, one JSON file per build-id, under ``$SYSBREAK_CACHE_DIR``, else
``$XDG_CACHE_HOME/sysbreak/sites``, else ``~/.cache/sysbreak/sites``; a small index keyed by the file's
device, inode, size and mtime lets a warm look-up skip even opening the ELF file. A cache that cannot be written
is not an error, and a damaged cache file is ignored and written again.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import re
import tempfile
import threading
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sysbreak import syscalls
from sysbreak.elfscan.elf import ElfFile
from sysbreak.elfscan.scanner import SCANNER_VERSION, RawScan, scan_elf, scan_file

__all__ = [
    "ModuleScan",
    "Probe",
    "Site",
    "cache_dir",
    "plan",
    "scan",
    "sites_json",
    "sites_table",
]

CACHE_FORMAT = "sysbreak-sitescache/1"
SITES_FORMAT = "sysbreak-sites/1"

SYSCALL_ARG_REGS: tuple[str, ...] = ("rdi", "rsi", "rdx", "r10", "r8", "r9")
CALL_ARG_REGS: tuple[str, ...] = ("rsi", "rdx", "rcx", "r8", "r9", "*sp")
TAIL_CALL_ARG_REGS: tuple[str, ...] = ("rsi", "rdx", "rcx", "r8", "r9", "*sp+8")
# At a wrapper's first instruction the C arguments are where a tail jump left them (return address at $rsp).
WRAPPER_ENTRY_ARG_REGS = TAIL_CALL_ARG_REGS
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

    @property
    def next_vaddr(self) -> int:
        return self.vaddr + self.size


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

    ``nr_reg`` holds the syscall number at ``entry``. ``arg_regs`` name the six syscall arguments in kernel
    order; an item ``"*sp"`` means the 8 bytes at ``$rsp`` (the 7th C argument of ``syscall()``, read at the
    call instruction) and ``"*sp+8"`` the 8 bytes at ``$rsp + 8`` (the same argument at a tail jump, where
    ``$rsp`` points at the return address). ``condition_nrs`` is None when the breakpoint is unconditional (the
    site's constant number is wanted); otherwise the breakpoint must test ``nr_reg`` against these numbers.
    """

    site: Site
    entry: int
    exit: int | None
    nr_reg: str
    arg_regs: tuple[str, ...]
    condition_nrs: tuple[int, ...] | None


# ---------------------------------------------------------------------------------------------------------------
# scanning and the cache


def cache_dir() -> Path:
    """Where scans are cached: ``$SYSBREAK_CACHE_DIR``, else ``$XDG_CACHE_HOME/sysbreak/sites``, else
    ``~/.cache/sysbreak/sites``."""
    env = os.environ.get("SYSBREAK_CACHE_DIR")
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_CACHE_HOME")
    if xdg:
        return Path(xdg) / "sysbreak" / "sites"
    try:
        home = Path.home()
    except (RuntimeError, KeyError):
        home = Path(tempfile.gettempdir())
    return home / ".cache" / "sysbreak" / "sites"


_version: str | None = None


def _cache_version() -> str:
    """The cache's subdirectory: the scanner version and a digest of the scanner's source files' sizes and
    mtimes, so that a changed scanner never reads what an older one wrote."""
    global _version
    if _version is None:
        here = Path(__file__).parent / "elfscan"
        stamp = []
        for name in ("elf.py", "scanner.py", "x86.py"):
            try:
                st = (here / name).stat()
                stamp.append(f"{name}:{st.st_size}:{st.st_mtime_ns}")
            except OSError:
                stamp.append(name)
        _version = f"v{SCANNER_VERSION}-{hashlib.sha1(' '.join(stamp).encode()).hexdigest()[:12]}"
    return _version


# (dev, inode, size, mtime_ns) -> scan, for repeated look-ups in one process
_memo: dict[tuple[int, int, int, int], ModuleScan] = {}


def scan(path: str, *, cache: bool = True) -> ModuleScan:
    """The sites of the ELF file at ``path`` (an x86-64 executable, shared library or static binary).

    With ``cache`` (the default), a file scanned before, here or by an earlier process, is not parsed again.
    Raises :class:`sysbreak.errors.SysbreakError` (one line) when the file does not exist, cannot be read, is
    not an ELF file, or is not x86-64.
    """
    path = os.fspath(path)
    if not cache:
        return _from_raw(path, scan_file(path))
    try:
        st = os.stat(path)
    except OSError:
        return _from_raw(path, scan_file(path))  # raises the right one-line error
    key = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
    hit = _memo.get(key)
    if hit is None:
        root = cache_dir() / _cache_version()
        stat_name = hashlib.sha1(repr(key).encode()).hexdigest()[:32]
        hit = _load_indexed(root, stat_name, path)
        if hit is None:
            with ElfFile(path) as elf:
                if (elf.stat.st_ino, elf.stat.st_size, elf.stat.st_mtime_ns) != key[1:]:
                    # replaced between the stat and the open: file what was read under what was read
                    key = (elf.stat.st_dev, elf.stat.st_ino, elf.stat.st_size, elf.stat.st_mtime_ns)
                    stat_name = hashlib.sha1(repr(key).encode()).hexdigest()[:32]
                # Not seen at this path, size and mtime; maybe the same build under another name, or a copy.
                build_id = elf.build_id()
                if build_id and _HEX.fullmatch(build_id):
                    hit = _load(root / f"{build_id}.json", path)
                    if hit is not None and hit.build_id != build_id:
                        hit = None
                if hit is None:
                    hit = _from_raw(path, scan_elf(elf))
            _store(root, stat_name, hit)
        _memo[key] = hit
    if hit.path != path:
        hit = dataclasses.replace(hit, path=path)
    return hit


def _from_raw(path: str, raw: RawScan) -> ModuleScan:
    sites = tuple(Site(s.vaddr, s.size, s.kind, s.nr, s.symbol, s.symbol_offset, s.tail, s.generic) for s in raw.sites)
    return ModuleScan(path, raw.build_id, raw.first_load_vaddr, sites)


_HEX = re.compile(r"[0-9a-f]{2,128}")


def _data_name(scan_: ModuleScan, stat_name: str) -> str:
    if scan_.build_id and _HEX.fullmatch(scan_.build_id):
        return f"{scan_.build_id}.json"
    return f"nobid-{stat_name}.json"


def _load_indexed(root: Path, stat_name: str, path: str) -> ModuleScan | None:
    """The cached scan the stat index points at, or None (missing, unreadable or damaged: rescan)."""
    try:
        data_name = (root / "by-stat" / stat_name).read_text(encoding="ascii").strip()
        if not data_name or "/" in data_name or data_name.startswith("."):
            return None
    except (OSError, UnicodeError):
        return None
    return _load(root / data_name, path)


def _load(data_file: Path, path: str) -> ModuleScan | None:
    try:
        return _decode(json.loads(data_file.read_text(encoding="utf-8")), path)
    except (OSError, ValueError, TypeError, KeyError, IndexError, UnicodeError):
        return None


def _decode(doc: Any, path: str) -> ModuleScan:
    if not isinstance(doc, dict) or doc.get("format") != CACHE_FORMAT or doc.get("scanner") != SCANNER_VERSION:
        raise ValueError("not a cache file of this scanner")
    build_id = doc["build_id"]
    first = doc["first_load_vaddr"]
    if not (build_id is None or isinstance(build_id, str)) or not isinstance(first, int):
        raise ValueError("bad header")
    sites = []
    for vaddr, size, kind, nr, symbol, symbol_offset, tail, generic in doc["sites"]:
        if not (isinstance(vaddr, int) and isinstance(size, int) and kind in ("syscall", "call")):
            raise ValueError("bad site")
        if not (nr is None or isinstance(nr, int)) or not (symbol is None or isinstance(symbol, str)):
            raise ValueError("bad site")
        if not (symbol_offset is None or isinstance(symbol_offset, int)):
            raise ValueError("bad site")
        sites.append(Site(vaddr, size, kind, nr, symbol, symbol_offset, bool(tail), bool(generic)))
    return ModuleScan(path, build_id, first, tuple(sites))


def _encode(scan_: ModuleScan) -> dict[str, Any]:
    return {
        "format": CACHE_FORMAT,
        "scanner": SCANNER_VERSION,
        "build_id": scan_.build_id,
        "first_load_vaddr": scan_.first_load_vaddr,
        "sites": [[s.vaddr, s.size, s.kind, s.nr, s.symbol, s.symbol_offset, s.tail, s.generic] for s in scan_.sites],
    }


def _store(root: Path, stat_name: str, scan_: ModuleScan) -> None:
    """Write the scan and its index entry; silently do nothing where the cache cannot be written."""
    try:
        (root / "by-stat").mkdir(parents=True, exist_ok=True)
        data_name = _data_name(scan_, stat_name)
        _write_atomic(root / data_name, json.dumps(_encode(scan_), separators=(",", ":")))
        _write_atomic(root / "by-stat" / stat_name, data_name + "\n")
    except OSError:
        pass


def _write_atomic(target: Path, text: str) -> None:
    tmp = target.with_name(f".tmp-{os.getpid()}-{threading.get_ident()}-{target.name}")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_CLOEXEC", 0), 0o644)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


# ---------------------------------------------------------------------------------------------------------------
# planning


def plan(scan: ModuleScan, wanted: Collection[int], *, exhaustive: bool = False) -> list[Probe]:
    """The breakpoints that catch the syscalls ``wanted`` (numbers) made from ``scan``'s module.

    * A ``syscall`` instruction with a known number gets an unconditional probe when the number is wanted, and
      none otherwise. With an unknown number that is not taken from the caller, none at all: the tracer never
      puts a breakpoint ON a ``syscall`` instruction (stepping a blocking call over it with the other threads
      held deadlocks the process; see :mod:`sysbreak.tracing`).
    * A generic wrapper (glibc's ``syscall()``, or any function that copies its first argument into rax) is
      probed only when ``exhaustive``, at its first instruction (``entry`` = the function start, ``nr_reg``
      rdi, the C arguments in :data:`WRAPPER_ENTRY_ARG_REGS`), conditioned on the number; by default its
      callers are probed instead. A wrapper whose start is unknown (stripped, unnamed) or far from its
      ``syscall`` instruction cannot be probed safely and is skipped.
    * A call to ``syscall()`` with a known number: an unconditional probe when wanted, none otherwise (so a hot
      ``syscall(SYS_getppid)`` costs nothing); with an unknown number, a probe conditioned on ``rdi``.
    * ``exhaustive`` drops every call probe: the conditioned wrapper (in libc, which must be planned too)
      catches those calls, and keeping both would count each call twice.
    """
    want = tuple(sorted(set(wanted)))
    if not want:
        return []
    wanted_set = set(want)
    probes = []
    for site in scan.sites:
        action = _action(site, wanted_set, exhaustive)
        if action is None:
            continue
        conditioned = action == "cond"
        if site.kind == "syscall" and site.generic:
            start = site.vaddr - (site.symbol_offset or 0)
            probes.append(Probe(site, start, site.next_vaddr, "rdi", WRAPPER_ENTRY_ARG_REGS, want))
        elif site.kind == "syscall":
            probes.append(
                Probe(site, site.vaddr, site.next_vaddr, "rax", SYSCALL_ARG_REGS, want if conditioned else None)
            )
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


def _action(site: Site, wanted: set[int], exhaustive: bool) -> str | None:
    """``"break"`` (unconditional), ``"cond"`` (conditioned on the number register) or None (no probe)."""
    if site.kind == "syscall":
        if site.generic:
            return "cond" if exhaustive and _wrapper_start_known(site) else None
        if site.nr is not None:
            return "break" if site.nr in wanted else None
        return None  # never ON a syscall instruction whose number is unknown
    if exhaustive:
        return None
    if site.nr is not None:
        return "break" if site.nr in wanted else None
    return "cond"


def _wrapper_start_known(site: Site) -> bool:
    return site.symbol_offset is not None and site.symbol_offset <= WRAPPER_MAX_OFFSET


def _skip_reason(site: Site, exhaustive: bool) -> str:
    if site.kind == "syscall" and site.generic:
        return "generic; --exhaustive" if not exhaustive else "generic; start unknown"
    if site.kind == "syscall" and site.nr is None:
        return "number unknown"
    if site.kind == "call" and exhaustive:
        return "caught in syscall(); --exhaustive"
    if site.nr is not None:
        return syscalls.name(site.nr)
    return "nothing wanted"


# ---------------------------------------------------------------------------------------------------------------
# rendering


def _describe(site: Site, wanted: set[int], exhaustive: bool) -> dict[str, Any]:
    action = _action(site, wanted, exhaustive)
    reg = "rax" if site.kind == "syscall" and not site.generic else "rdi"
    if action == "break":
        text = "break after"
    elif action == "cond" and site.generic:
        text = f"break at {site.symbol or 'entry'} if rdi in {{{','.join(str(n) for n in sorted(wanted))}}}"
    elif action == "cond":
        text = f"break if {reg} in {{{','.join(str(n) for n in sorted(wanted))}}}"
    else:
        text = f"skip ({_skip_reason(site, exhaustive)})"
    return {"action": action, "text": text, "reg": reg}


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
        "number unknown": "number not inferred (no breakpoint ON a syscall instruction: it could deadlock threads)",
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
                reason = _skip_reason(site, exhaustive)
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
               "action": "break" | "break-if" | "skip",
               "reason": null | "getppid" | "generic" | "exhaustive" | "number unknown" | "nothing wanted",
               "probe": null | {"entry": vaddr, "exit": vaddr | null, "nr_reg": "rax" | "rdi",
                                "arg_regs": ["rdi", ...], "condition_nrs": [9, 11] | null}}]}]}

    Integers are plain JSON integers; addresses are unsigned.
    """
    wanted_set = set(wanted)
    out_modules = []
    for scan_, bias in modules:
        probes = {p.site.vaddr: p for p in plan(scan_, wanted_set, exhaustive=exhaustive)}
        sites = []
        for site in scan_.sites:
            action = _action(site, wanted_set, exhaustive)
            probe = probes.get(site.vaddr) if action is not None else None
            if action is None:
                if site.kind == "syscall" and site.generic:
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


# ---------------------------------------------------------------------------------------------------------------
# live processes


def mapped_modules(pid: int) -> list[tuple[str, int | None]]:
    """The ELF candidates of a live process: ``(path, base)`` for every file that ``/proc/PID/maps`` shows with an
    executable mapping, in address order. ``base`` is the start of the file's mapping at offset 0 (what
    :meth:`ModuleScan.load_bias` wants), None when there is none. ``[vdso]``, anonymous mappings and deleted
    files are left out. Raises :class:`SysbreakError` (exit code 3) when the process cannot be read."""
    from sysbreak.errors import SysbreakError

    try:
        with open(f"/proc/{pid}/maps", encoding="utf-8", errors="surrogateescape") as fh:
            text = fh.read()
    except FileNotFoundError:
        raise SysbreakError(f"no process with PID {pid}", 3) from None
    except PermissionError:
        raise SysbreakError(f"cannot read /proc/{pid}/maps: permission denied (another user's process?)", 3) from None
    except OSError as err:
        raise SysbreakError(f"cannot read /proc/{pid}/maps: {err.strerror or err}", 3) from None
    bases: dict[str, int | None] = {}
    executable: set[str] = set()
    for line in text.splitlines():
        parts = line.split(None, 5)
        if len(parts) < 6 or not parts[5].startswith("/") or parts[5].endswith(" (deleted)"):
            continue
        path = parts[5]
        start = int(parts[0].split("-", 1)[0], 16)
        if path not in bases:
            bases[path] = None
        if int(parts[2], 16) == 0 and bases[path] is None:
            bases[path] = start
        if "x" in parts[1]:
            executable.add(path)
    return [(path, base) for path, base in bases.items() if path in executable]
