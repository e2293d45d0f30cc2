"""The tracer: arms probes in every loaded module (and in modules loaded later), turns hits into events.

Data flows one way: ``sites.scan`` -> ``sites.plan`` -> ``arming.breakpoints_for`` -> :class:`ProbeBreakpoint`
-> hit -> :class:`~sysbreak.capture.EventLogWriter`. See :mod:`sysbreak.arming` for why a wanted call costs
exactly one stop.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import IO, Any

import gdb

from sysbreak import __version__, maps, syscalls
from sysbreak.arming import (
    GLIBC_SYSCALL_WRAPPER,
    Breakpoint,
    PendingCall,
    PendingCalls,
    ProbeSpec,
    breakpoints_for,
    describe_call,
    describe_ret,
    to_signed,
    to_unsigned,
)
from sysbreak.capture import EventLogWriter
from sysbreak.capture.budget import Budget
from sysbreak.errors import SysbreakError
from sysbreak.gdb.probes import COUNTS as probe_counts
from sysbreak.gdb.probes import ProbeBreakpoint
from sysbreak.gdb.probes import errors as probe_errors
from sysbreak.gdb.stacks import ModuleMap, StackReader
from sysbreak.maps import Vma
from sysbreak.sites.model import uncovered_fields


@dataclass
class Config:
    syscalls: list[int]
    lib: str | None = None
    log: str | None = None
    python_stacks: bool = False
    exhaustive: bool = False
    quiet: bool = False
    max_events: int = 0
    budget_file: str | None = None  # the --max-events count shared by every GDB of a process tree
    restore_file: str | None = None
    max_depth: int = 64
    stack_cache: bool = True
    releases_before: bool = True  # munmap logged before the kernel acts (docs/event-log.md, "Order")
    raw_stacks: bool = False  # copy registers + the raw stack window; unwind offline (GDB has no symbols)


@dataclass
class ArmedModule:
    path: str
    base: int
    bias: int
    build_id: str | None
    sites: int
    breakpoints: list[ProbeBreakpoint] = field(default_factory=list)
    without_wrapper: bool = False  # call sites armed before libc's syscall() was verified (two stops each)
    exec_sites: list[int] = field(default_factory=list)  # syscall instructions that may be execve (ExecGuard)


def file_mappings(vmas: list[Vma]) -> list[tuple[int, int, int, str, str]]:
    """(start, end, file offset, perms, path) of every file-backed mapping of ``vmas`` (deleted files left out)."""
    return [(v.start, v.end, v.offset or 0, v.perms, v.path) for v in vmas if v.path.startswith("/") and not v.deleted]


def read_maps(pid: int) -> list[tuple[int, int, int, str, str]]:
    """:func:`file_mappings` of /proc/PID/maps, through the one maps parser of :mod:`sysbreak.maps`."""
    return file_mappings(maps.read_maps(pid).vmas)


class _TracerProbe(ProbeBreakpoint):
    def __init__(self, tracer: Tracer, spec: Breakpoint) -> None:
        self.tracer = tracer
        self.spec = spec
        self.site = tracer.site_record(spec)  # fixed while the breakpoint lives: computed once, not per event
        # a release logged here: where a failure of the call goes (a FailProbe is there), None when not watched
        self.fail_pc: int | None = None
        super().__init__(spec.address)


class ExitOnlyProbe(_TracerProbe):
    """After a site with a wanted constant number: arguments, result and stack in one stop."""

    def hit(self) -> bool:
        return self.tracer.on_exit_only(self)


class BeforeProbe(_TracerProbe):
    """Before a release with a wanted constant number: logged before the kernel acts (see docs/event-log.md)."""

    def hit(self) -> bool:
        return self.tracer.on_before(self)


class EntryProbe(_TracerProbe):
    def hit(self) -> bool:
        return self.tracer.on_entry(self)


class ExitProbe(_TracerProbe):
    def hit(self) -> bool:
        return self.tracer.on_exit(self)


#: execve, execveat (x86-64)
EXEC_NRS = frozenset({59, 322})


class ExecGuard(ProbeBreakpoint):
    """ON a syscall instruction that may be execve, while the driver holds a vfork child in this GDB: stops the
    target when that child (and only it: the parent waits in vfork, the rest of it is not resumed) is about to
    exec, so that the breakpoints come out before GDB 13 inserts them, at the parent's addresses, into the new
    image (:func:`sysbreak.gdb.commands._on_stop` then steps it through the execve)."""

    def __init__(self, tid: int, address: int) -> None:
        self.tid = tid
        super().__init__(address)

    def hit(self) -> bool:
        if gdb.selected_thread().ptid[1] != self.tid:
            return False
        return int(gdb.newest_frame().read_register("rax")) & 0xFFFFFFFF in EXEC_NRS


class FailProbe(_TracerProbe):
    """On the error branch after a release's ``syscall`` instruction (:mod:`sysbreak.sites.failpath`): only a
    failed call runs it (where the code has no such branch: on the instruction after the ``syscall``). The release
    was logged before it entered the kernel; this logs that it failed."""

    def hit(self) -> bool:
        return self.tracer.on_fail(self)


_PROBE_CLASS = {
    "exit-only": ExitOnlyProbe,
    "before": BeforeProbe,
    "entry": EntryProbe,
    "exit": ExitProbe,
    "fail": FailProbe,
}


@dataclass
class OpenRelease:
    """A release a thread logged before it entered the kernel, until its result is known: its error branch
    (``fail_pc``) was not run before the thread's next hit."""

    seq: int
    addr: int
    length: int
    fail_pc: int
    ret: int | None  # the return address the error branch sees at [rsp] (calls of syscall()); None: not checked


#: offset of ``r_state`` in glibc's ``struct r_debug`` (x86-64); RT_CONSISTENT is 0
R_STATE_OFFSET = 24
DYNAMIC_LINKER_SYMBOLS = ("_dl_debug_state", "_r_debug")


def is_dynamic_linker(path: str) -> bool:
    return os.path.basename(path).startswith(("ld-linux", "ld64", "ld-"))


class SolibProbe(ProbeBreakpoint):
    """On the dynamic linker's notification function (``_dl_debug_state``, what ``r_debug.r_brk`` points to),
    for when GDB tracks no shared libraries (``set sysroot`` to nowhere: GDB opens none of them at attach).

    ld.so calls it before and after it changes the link map. Only when the map is consistent again and
    /proc/PID/maps changed does :meth:`hit` stop the target: the stop handler then arms the new modules (before
    their initialisers run, as they run after this call) and resumes (:func:`sysbreak.gdb.commands._on_stop`)."""

    def __init__(self, tracer: Tracer, address: int, r_debug: int | None) -> None:
        self.tracer = tracer
        self.r_debug = r_debug
        super().__init__(address)

    def hit(self) -> bool:
        t = self.tracer
        if not t.active or t.limit_reached:
            return False
        if self.r_debug is not None:
            state = int.from_bytes(
                bytes(gdb.selected_inferior().read_memory(self.r_debug + R_STATE_OFFSET, 4)), "little"
            )
            if state != 0:  # RT_ADD / RT_DELETE: the link map is being changed; the consistent call follows
                return False
        return t.maps_changed(remember=False)


class _FrameRegs:
    """Registers read one by one through GDB's newest frame (when ptrace from here is not possible)."""

    def __init__(self, frame: Any) -> None:
        self.frame = frame
        self._cache: dict[str, int] = {}

    def __getitem__(self, name: str) -> int:
        value = self._cache.get(name)
        if value is None:
            value = self._cache[name] = to_unsigned(int(self.frame.read_register(name)))
        return value


class _Hit:
    """One breakpoint hit: the thread, its registers (a dict from one ptrace request, or read through GDB's
    frame) and GDB's newest frame, made only when something needs it (GDB's own unwinder, or no ptrace)."""

    __slots__ = ("tid", "regs", "_frame")

    def __init__(self, tid: int, regs: dict[str, int] | None) -> None:
        self.tid = tid
        self._frame: Any = None
        self.regs: Any = regs if regs is not None else _FrameRegs(self.frame())

    def frame(self) -> Any:
        if self._frame is None:
            self._frame = gdb.newest_frame()
        return self._frame


class Tracer:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.wanted = frozenset(config.syscalls)
        from sysbreak.sites.model import LOGGED_BEFORE

        self.log_before = LOGGED_BEFORE if config.releases_before else frozenset()
        self.lib_re = re.compile(config.lib) if config.lib else None
        self.modules = ModuleMap()
        self.stacks = StackReader(
            self.modules, max_depth=config.max_depth, python=config.python_stacks, cache=config.stack_cache
        )
        self.armed: dict[str, ArmedModule] = {}
        self.skipped: dict[str, str] = {}
        self.unscanned: dict[str, str] = {}  # path -> why it could not be scanned
        self.pending = PendingCalls()
        self.counts: dict[str, int] = {}
        self.events = 0
        self.limit_reached = False
        # one count for the whole tree (capture/budget.py): a call's number there decides the --max-events end
        self.budget = Budget(config.budget_file) if config.max_events and config.budget_file else None
        self.budget_number = 0  # the tree-wide number of this process's last call
        self.active = True
        self.pid = 0
        self.inferior_num = 0  # GDB's number of the traced inferior (1 unless several were made)
        self.wrapper_return: int | None = None
        self.wrapper_pc: int | None = None
        self.image = 0  # bumped at every exec: stacks of two images never share an interned id
        self.writer = EventLogWriter(config.log) if config.log else None
        self._restore: IO[str] | None = (
            open(config.restore_file, "a", encoding="utf-8") if config.restore_file else None  # noqa: SIM115
        )
        self._header_written = False
        self.raw = config.raw_stacks
        self._maps_text: bytes | None = None  # /proc/PID/maps as last armed from (skip the work when unchanged)
        self._vma_lines: dict[str, Vma] = {}  # each line of /proc/PID/maps at the last arming, parsed
        self._vma_pid = 0
        self._raw_serial = 0
        self.solib_probe_wanted = False  # arming happens at stops of our own SolibProbe (GDB tracks no solibs)
        self.exec_guards: list[ExecGuard] = []  # while a vfork child is held (sysbreak exec-guard)
        self.solib_probe: SolibProbe | None = None
        self.wrapper_fail: int | None = None  # the error branch of libc's syscall() (a failed call runs it)
        self._fail_at: dict[int, FailProbe] = {}  # error branches watched, by address
        self.open_releases: dict[int, OpenRelease] = {}  # by thread: releases logged before, result not known yet
        self.failed_releases = 0
        self.fail_hits = 0  # stops at the error branches (a success never runs one)

    # ----------------------------------------------------------------------------------------------- arming
    def _write_header(self) -> None:
        if self.writer is None or self._header_written:
            return
        inf = gdb.selected_inferior()
        exe = None
        try:
            exe = os.readlink(f"/proc/{inf.pid}/exe")
        except OSError:
            exe = inf.progspace.filename if inf.progspace else None
        self.writer.header(
            arch="x86_64",
            pid=inf.pid,
            exe=exe,
            syscalls=[syscalls.name(n) for n in self.config.syscalls],
            mode="exhaustive" if self.config.exhaustive else "callsite",
            t0=time.monotonic(),
            wall0=datetime.now(timezone.utc).isoformat(timespec="seconds"),
            tool=f"sysbreak {__version__}",
            gdb=gdb.VERSION,
        )
        self._header_written = True

    def owns(self, inf: Any) -> bool:
        """Whether ``inf`` is the process this tracer traces. Another inferior is a vfork child that the driver
        has this GDB hold from its vfork to its exec (it shares the traced process's memory, so the breakpoints
        catch its calls there, logged under the traced pid); nothing of its own (its new image's modules, its
        exit) is this tracer's."""
        return not self.pid or (inf is not None and inf.pid == self.pid)

    def maps_changed(self, remember: bool = True) -> bool:
        """Whether /proc/PID/maps differs from what the modules were last armed from (one read, no parsing);
        ``remember`` makes what was read the new reference (arming does it itself)."""
        inf = gdb.selected_inferior()
        if inf is None or inf.pid == 0:
            return False
        try:
            with open(f"/proc/{inf.pid}/maps", "rb") as fh:
                text = fh.read()
        except OSError:
            return True
        if text == self._maps_text and inf.pid == self.pid:
            return False
        if remember:
            self._maps_text = text
        return True

    def _read_vmas(self, pid: int) -> list[Vma]:
        """/proc/PID/maps, each line parsed once: at a library's arming only its few new lines are parsed, the
        ~200 others are the Vmas of the last arming (parsing all of them was 4-5 ms of each dlopen's stop)."""
        try:
            with open(f"/proc/{pid}/maps", encoding="utf-8", errors="replace", newline="\n") as fh:
                lines = fh.read().splitlines(keepends=True)
        except OSError as err:
            raise SysbreakError(f"cannot read /proc/{pid}/maps: {err.strerror or err}") from None
        known = self._vma_lines if pid == self._vma_pid else {}
        new = [line for line in lines if line not in known and line.strip()]
        if new:
            parsed = maps.parse_maps("".join(new), source=f"/proc/{pid}/maps").vmas  # sorted: /proc's order
            known = {**known, **dict(zip(new, parsed, strict=True))}
        self._vma_lines = {line: known[line] for line in lines if line in known}
        self._vma_pid = pid
        return list(self._vma_lines.values())

    def arm_new_modules(self) -> list[str]:
        """Scan and arm every mapped ELF file not armed yet. Returns the one-line notes to print."""
        if not self.active:
            return []
        inf = gdb.selected_inferior()
        if inf is None or inf.pid == 0:
            return []
        if not self.owns(inf):
            return []  # a vfork child this GDB holds until its exec (driver/session.py): its own GDB arms it
        if inf.pid != self.pid:
            self.pid = inf.pid
            self.inferior_num = inf.num
        self._write_header()
        self.maps_changed()  # remember what this arming starts from
        try:
            vmas = self._read_vmas(inf.pid)  # read once: for the modules here, for the stack reader below
        except SysbreakError as exc:
            return [str(exc)]
        files = file_mappings(vmas)
        from sysbreak import sites

        by_path: dict[str, list[tuple[int, int, int, str, str]]] = {}
        for row in files:
            by_path.setdefault(row[4], []).append(row)
        scans: dict[str, Any] = {}
        biases: dict[str, int] = {}
        for path, rows in by_path.items():
            if not any("x" in r[3] for r in rows):
                continue
            base = min((r[0] for r in rows if r[2] == 0), default=rows[0][0])
            try:
                scan = sites.scan(path)
            except SysbreakError as exc:
                if path not in self.unscanned and self.writer is not None:
                    # a blind spot: whatever this file maps is not seen (reports name it)
                    self.writer.module(path=path, base=base, error=str(exc))
                self.unscanned[path] = str(exc)
                continue
            scans[path] = scan
            biases[path] = scan.load_bias(base)
        self.modules.update([(r[0], r[1], r[4]) for r in files if r[4] in biases], biases)
        self.stacks.set_maps(inf.pid, vmas)
        notes = []
        if self.solib_probe_wanted and self.solib_probe is None:
            self._place_solib_probe(scans, biases)
        if self.wrapper_return is None:
            self._find_wrapper(scans, biases)
            if self.wrapper_return is not None:
                # libc arrived after modules with call sites were armed (at `run`, GDB reports ld.so and the
                # executable first): re-arm those so each of their calls costs one stop, not two
                for path in [p for p, m in self.armed.items() if m.without_wrapper]:
                    for bp in self.armed.pop(path).breakpoints:
                        bp.remove()

        for path, scan in scans.items():
            if path in self.armed or path in self.skipped:
                continue
            if self.lib_re is not None and not self.lib_re.search(path):
                self.skipped[path] = "does not match --lib"
                if self.writer is not None and self.raw:  # an offline unwinder needs every module's bias
                    self.writer.module(
                        path=path,
                        base=min(r[0] for r in by_path[path]),
                        bias=biases[path],
                        build_id=scan.build_id,
                        sites=len(scan.sites),
                        breakpoints=0,
                        maps=[[r[0], r[1], r[2], r[3]] for r in by_path[path]],
                    )
                continue
            notes.append(self._arm(path, scan, biases[path], by_path[path]))
        return [n for n in notes if n]

    def _place_solib_probe(self, scans: dict[str, Any], biases: dict[str, int]) -> None:
        """Put :class:`SolibProbe` on the dynamic linker's ``_dl_debug_state`` (found in its dynamic symbols)."""
        from sysbreak.gdb.elfsyms import dynamic_symbols

        for path in scans:
            if not is_dynamic_linker(path):
                continue
            try:
                syms = dynamic_symbols(path, DYNAMIC_LINKER_SYMBOLS)
            except Exception:  # noqa: BLE001 - unreadable: no library-load arming (said in status)
                continue
            if "_dl_debug_state" not in syms:
                continue
            addr = syms["_dl_debug_state"] + biases[path]
            r_debug = syms["_r_debug"] + biases[path] if "_r_debug" in syms else None
            if not self._remember_original(addr):
                return
            self.solib_probe = SolibProbe(self, addr, r_debug)
            return

    def _find_wrapper(self, scans: dict[str, Any], biases: dict[str, int]) -> None:
        """Find libc's syscall() and check it is glibc's, whose registers after return hold the kernel args."""
        if self.wrapper_return is not None:
            return
        for path, scan in scans.items():
            if "libc.so" not in os.path.basename(path) and "libc-" not in os.path.basename(path):
                continue
            for site in scan.sites:
                if site.kind == "syscall" and site.generic and site.symbol == "syscall":
                    start = site.vaddr - (site.symbol_offset or 0) + biases[path]
                    try:
                        code = bytes(gdb.selected_inferior().read_memory(start, len(GLIBC_SYSCALL_WRAPPER)))
                    except gdb.MemoryError:
                        continue
                    if code == GLIBC_SYSCALL_WRAPPER:
                        self.wrapper_return = site.next_vaddr + biases[path]
                        self.wrapper_pc = site.vaddr + biases[path]
                        self.wrapper_fail = self._fail_target(self.wrapper_return)
                    return

    def _arm(self, path: str, scan: Any, bias: int, rows: list[tuple[int, int, int, str, str]]) -> str:
        from sysbreak import sites

        probes = sites.plan(
            scan, self.wanted, exhaustive=self.config.exhaustive, releases_before=self.config.releases_before
        )
        armed = ArmedModule(path, min(r[0] for r in rows), bias, scan.build_id, len(scan.sites))
        armed.exec_sites = [
            site.vaddr + bias
            for site in scan.sites
            if site.kind == "syscall" and (site.nr is None or site.nr in EXEC_NRS)
        ]
        self.armed[path] = armed
        specs: list[Breakpoint] = []
        need_wrapper_exit = False
        for probe in probes:
            probe_spec = ProbeSpec(
                kind=probe.site.kind,
                site=probe.site.vaddr,
                entry=probe.entry,
                exit=probe.exit,
                nr=probe.site.nr,
                nr_reg=probe.nr_reg,
                arg_regs=probe.arg_regs,
                condition_nrs=probe.condition_nrs,
                before=probe.before,
                sp_delta=probe.sp_delta,
                args_at_exit=probe.args_at_exit,
            )
            specs.extend(breakpoints_for(probe_spec, bias, wrapper_return=self.wrapper_return))
            if probe.site.kind == "call" and self.wrapper_return is None:
                # (a release before the call is logged in one stop all the same, but its failure is watched in
                # libc's syscall(): armed again once libc is known)
                armed.without_wrapper = True
            if probe.exit is None and not probe.before:
                need_wrapper_exit = True
        if need_wrapper_exit and self.wrapper_return is not None and not self._has_wrapper_exit():
            wrapper_site = self.wrapper_pc or self.wrapper_return
            specs.append(Breakpoint(address=self.wrapper_return, role="exit", site_address=wrapper_site))
        for bp_spec in specs:
            self._place(armed, bp_spec)
        if self.writer is not None:
            self.writer.module(
                path=path,
                base=armed.base,
                bias=bias,
                build_id=scan.build_id,
                sites=len(scan.sites),
                breakpoints=len(armed.breakpoints),
                **uncovered_fields(scan),
                maps=[[r[0], r[1], r[2], r[3]] for r in rows],  # what an offline unwinder needs (/3)
            )
        if armed.breakpoints:
            return f"armed {len(armed.breakpoints)} breakpoint(s) in {os.path.basename(path)}"
        return ""

    def _has_wrapper_exit(self) -> bool:
        return any(
            bp.spec.address == self.wrapper_return and bp.spec.role == "exit"
            for m in self.armed.values()
            for bp in m.breakpoints
            if isinstance(bp, _TracerProbe)
        )

    def _remember_original(self, address: int) -> bool:
        """Append the byte at ``address`` to the restore file (before a breakpoint goes there); False when it
        cannot be read (then no breakpoint goes there)."""
        if self._restore is None:
            return True
        try:
            orig = bytes(gdb.selected_inferior().read_memory(address, 1)).hex()
        except gdb.MemoryError:
            return False
        self._restore.write(json.dumps({"pid": self.pid, "addr": address, "orig": orig}) + "\n")
        self._restore.flush()
        return True

    def _place(self, armed: ArmedModule, spec: Breakpoint) -> None:
        if not self._remember_original(spec.address):
            return
        bp = _PROBE_CLASS[spec.role](self, spec)
        armed.breakpoints.append(bp)
        if spec.role == "before" or (spec.role == "entry" and self._may_log_before(spec)):
            bp.fail_pc = self._watch_failure(armed, spec)

    def _may_log_before(self, spec: Breakpoint) -> bool:
        """Whether an entry breakpoint may log a release before it enters the kernel (see :meth:`on_entry`)."""
        if not spec.arg_regs or not self.log_before:
            return False
        if spec.nr is not None:
            return spec.nr in self.log_before
        return spec.condition_nrs is None or any(n in self.log_before for n in spec.condition_nrs)

    def _fail_target(self, after: int) -> int | None:
        """The error branch of the code at ``after`` (right after a syscall instruction), from the target's memory."""
        from sysbreak.sites.failpath import BYTES, fail_target

        try:
            code = bytes(gdb.selected_inferior().read_memory(after, BYTES))
        except gdb.MemoryError:
            return None
        return fail_target(code, after)

    @staticmethod
    def _is_syscall_instruction(address: int) -> bool:
        try:
            return bytes(gdb.selected_inferior().read_memory(address, 2)) == b"\x0f\x05"
        except gdb.MemoryError:
            return True  # unreadable: no breakpoint there

    def _watch_failure(self, armed: ArmedModule, spec: Breakpoint) -> int | None:
        """A breakpoint on the error branch of the site of ``spec`` (one per branch), so that a release logged
        before it entered the kernel is known to have failed; returns its address, None when not watched."""
        if spec.site_kind == "call" or spec.site_address == self.wrapper_pc:
            target = self.wrapper_fail  # inside libc's syscall(), shared by all its callers
        else:
            after = spec.site_address + 2  # a syscall instruction is 2 bytes
            # No error branch right after it (code that keeps the result without testing it): the instruction
            # after the syscall then, which every return runs: one more stop per call, at such sites only (an
            # entry probe's site has its exit breakpoint there already: no more stops at all).
            target = self._fail_target(after) or after
        if target is None or self._is_syscall_instruction(target):  # never ON a syscall instruction
            return None
        placed = self._fail_at.get(target)
        if placed is not None and placed.is_valid():
            return target
        fail = Breakpoint(address=target, role="fail", site_address=target)
        if not self._remember_original(target):
            return None
        bp = FailProbe(self, fail)
        armed.breakpoints.append(bp)
        self._fail_at[target] = bp
        return target

    def breakpoint_count(self) -> int:
        return sum(len(m.breakpoints) for m in self.armed.values())

    # ----------------------------------------------------------------------------------------------- hits
    def site_record(self, spec: Breakpoint) -> dict[str, Any]:
        module, offset = self.modules.lookup(spec.site_address)
        return {"pc": spec.site_address, "module": module, "offset": offset, "kind": spec.site_kind}

    def _raw_stack(self, spec: Breakpoint, exit_only: bool, hit: _Hit) -> int:
        """The stack as registers + raw stack bytes, unwound and symbolised later, outside the stop."""
        key, raw, python = self.stacks.capture_raw(hit.regs, hit.tid)
        top: list[dict[str, Any]] = []
        if exit_only:
            if spec.synthetic_wrapper_frame and self.wrapper_pc is not None:
                top = [self.stacks.describe_pc(self.wrapper_pc, "syscall")]  # inside libc's syscall()
            else:
                raw["pc0"] = spec.site_address  # frame 0 is the syscall instruction, not the one after it
        if not self.stacks.cache:
            self._raw_serial += 1
            key = (*key, self._raw_serial)
        full = (
            self.image,
            key,
            tuple(f["pc"] for f in top),
            tuple((p["file"], p["line"], p["function"]) for p in python),
        )
        if self.writer is None:
            return 0
        sid = self.writer.known_stack(full)
        if sid is None:
            sid = self.writer.raw_stack(full, top, python, raw)
        return sid

    def _stack(self, spec: Breakpoint, exit_only: bool, hit: _Hit) -> int:
        if self.raw:
            return self._raw_stack(spec, exit_only, hit)
        pcs, frames, python = self.stacks.capture(hit.frame(), hit.tid)
        if spec.role == "before" and frames and spec.synthetic_wrapper_frame:
            # at the call: the caller's pc as the return address, libc's syscall() above it, as after the call
            ret_pc = spec.return_address or pcs[0]
            module, offset = self.modules.lookup(ret_pc)
            frames = [{**frames[0], "pc": ret_pc, "module": module, "offset": offset}, *frames[1:]]
            pcs = (ret_pc, *pcs[1:])
            if self.wrapper_pc is not None:
                frames = [self.stacks.describe_pc(self.wrapper_pc, "syscall"), *frames]
                pcs = (self.wrapper_pc, *pcs)
        elif (exit_only or spec.role == "before" and spec.site_kind == "syscall") and frames:
            if spec.synthetic_wrapper_frame and self.wrapper_pc is not None:
                # call site: the stack as GDB shows it inside syscall(): libc's syscall first, then the caller
                frames = [self.stacks.describe_pc(self.wrapper_pc, "syscall"), *frames]
                pcs = (self.wrapper_pc, *pcs)
            else:
                # after a syscall instruction: frame 0 (and the inline frames that share its pc) is the
                # instruction that entered the kernel
                exit_pc = pcs[0]
                module, offset = self.modules.lookup(spec.site_address)
                frames = list(frames)
                new_pcs = list(pcs)
                for i, pc in enumerate(pcs):
                    if pc != exit_pc:
                        break
                    frames[i] = {**frames[i], "pc": spec.site_address, "module": module, "offset": offset}
                    new_pcs[i] = spec.site_address
                pcs = tuple(new_pcs)
        key = (self.image, pcs, tuple((p["file"], p["line"], p["function"]) for p in python))
        if self.writer is None:
            return 0
        sid = self.writer.known_stack(key)
        if sid is None:
            sid = self.writer.stack_id(key, frames, python)
        return sid

    def _hit(self, probe: _TracerProbe) -> _Hit:
        """The registers of the thread that hit ``probe``: one ptrace request when this GDB traces it
        (:mod:`sysbreak.tracee`), else through GDB's newest frame."""
        tid = gdb.selected_thread().ptid[1]
        if self.open_releases and not isinstance(probe, FailProbe):
            # the thread got here: its release logged before (if any) returned without running its error branch
            # (a later failure of another call through the same branch is not the release's)
            self.open_releases.pop(tid, None)
        regs = self.stacks.thread_regs(tid)
        if regs is not None:
            regs["rip"] = probe.spec.address  # the thread is at the breakpoint (the kernel said int3 + 1)
            probe.hit_regs = regs  # for the step past the instruction (ProbeBreakpoint.stop)
            return _Hit(tid, regs)
        return _Hit(tid, None)

    def _regs(self, hit: _Hit, names: tuple[str, ...]) -> list[int]:
        out = []
        regs = hit.regs
        for reg in names:
            if reg.startswith("*sp"):  # "*sp" or "*sp+N": 8 bytes on the stack
                sp = regs["rsp"] + int(reg[4:] or 0)
                out.append(int.from_bytes(self.stacks.read(sp, 8), "little"))
            else:
                out.append(regs[reg])
        return out

    def on_exit_only(self, probe: _TracerProbe) -> bool:
        if self.limit_reached:
            return False
        hit = self._hit(probe)
        spec = probe.spec
        ret = to_signed(hit.regs["rax"])
        if hit.regs["rcx"] != spec.rcx_after and not (spec.accept_failed and ret == -1):
            return False  # a branch to this address, not the return from a syscall
        t = time.monotonic()
        args = self._regs(hit, spec.arg_regs)
        sid = self._stack(spec, exit_only=True, hit=hit)
        nr = spec.nr if spec.nr is not None else -1
        return self._emit(t, hit.tid, nr, args, ret, sid, probe.site)

    def on_before(self, probe: _TracerProbe) -> bool:
        """A release about to enter the kernel: logged now, so that it precedes every allocation that reuses its
        range (those are logged after they return). No return value: ``ret`` is null, ``when`` "before"."""
        if self.limit_reached:
            return False
        t = time.monotonic()
        hit = self._hit(probe)
        spec = probe.spec
        args = self._regs(hit, spec.arg_regs)
        sid = self._stack(spec, exit_only=False, hit=hit)
        nr = spec.nr if spec.nr is not None else -1
        return self._emit(t, hit.tid, nr, args, None, sid, probe.site, before=True, probe=probe, hit=hit)

    def on_fail(self, probe: _TracerProbe) -> bool:
        """A thread runs the error branch after a release's syscall instruction: if it is the release this thread
        logged before it entered the kernel (same branch, same arguments in rdi and rsi, which the kernel
        preserved, and for syscall() the same caller), that call failed: say so in the log (a ``result``)."""
        self.fail_hits += 1
        tid = gdb.selected_thread().ptid[1]
        rel = self.open_releases.get(tid)
        if rel is None:
            return False
        if rel.fail_pc != probe.spec.address:  # another call's error branch: the release had returned
            del self.open_releases[tid]
            return False
        hit = self._hit(probe)
        ret = to_signed(hit.regs["rax"])
        if not -4095 <= ret < 0:
            del self.open_releases[tid]  # (the instruction after a syscall without an error branch: it worked)
            return False
        if hit.regs["rdi"] != rel.addr or hit.regs["rsi"] != rel.length:
            return False
        if rel.ret is not None and self._regs(hit, ("*sp",))[0] != rel.ret:
            return False
        del self.open_releases[tid]
        self.failed_releases += 1
        if self.writer is not None:
            self.writer.result(
                t=time.monotonic(), pid=self.pid, tid=tid, of=rel.seq, ret=ret, addr=rel.addr, length=rel.length
            )
        if not self.config.quiet:
            gdb.write(f"sysbreak: [{tid}] the munmap logged as #{rel.seq} failed: {describe_ret(ret)}\n")
        return False

    def on_entry(self, probe: _TracerProbe) -> bool:
        if self.limit_reached:
            return False
        t = time.monotonic()
        hit = self._hit(probe)
        spec = probe.spec
        # the kernel takes the number as an int: the low 32 bits of rax
        if spec.nr is not None:
            nr = spec.nr
        elif spec.nr_reg and spec.nr_reg.startswith("*sp"):  # kept on the stack until just before the syscall
            nr = self._regs(hit, (spec.nr_reg,))[0] & 0xFFFFFFFF
        else:
            nr = hit.regs[spec.nr_reg or "rax"] & 0xFFFFFFFF
        if spec.condition_nrs is not None and nr not in spec.condition_nrs:
            return False
        args = self._regs(hit, spec.arg_regs)
        sp = hit.regs["rsp"] + spec.sp_delta  # rsp where the paired exit will see it
        sid = self._stack(spec, exit_only=False, hit=hit)
        if nr in self.log_before and spec.arg_regs:
            # a release: logged now, before the kernel acts; its exit is not waited for (a probe that reads the
            # arguments only after the syscall instruction logs the release there instead)
            return self._emit(t, hit.tid, nr, args, None, sid, probe.site, before=True, probe=probe, hit=hit)
        self.pending.push(hit.tid, sp, PendingCall(t, hit.tid, nr, args, sid, probe.site))
        return False

    def on_exit(self, probe: _TracerProbe) -> bool:
        if not self.pending.calls:
            return False
        hit = self._hit(probe)
        call = self.pending.pop(hit.tid, hit.regs["rsp"])
        if call is None:
            return False
        ret = to_signed(hit.regs["rax"])
        # a probe before a syscall instruction that set its arguments late: the kernel preserved them
        args = self._regs(hit, probe.spec.arg_regs) if probe.spec.arg_regs else call.args
        return self._emit(call.t, hit.tid, call.nr, args, ret, call.stack, call.site)

    def _emit(
        self,
        t: float,
        tid: int,
        nr: int,
        args: list[int],
        ret: int | None,
        sid: int,
        site: dict[str, Any],
        before: bool = False,
        probe: _TracerProbe | None = None,
        hit: _Hit | None = None,
    ) -> bool:
        name = syscalls.name(nr)
        self.events += 1
        self.counts[name] = self.counts.get(name, 0) + 1
        open_releases = self.open_releases  # (this thread's earlier one was closed by _hit)
        watched = before and probe is not None and probe.fail_pc is not None
        if self.writer is not None:
            fields: dict[str, Any] = {"t": t, "pid": self.pid, "tid": tid, "nr": nr, "name": name, "args": args}
            fields.update(ret=ret, stack=sid)
            if before:
                fields["when"] = "before"
                if watched:
                    fields["checked"] = True  # a failure would be logged (a `result` record)
            fields["site"] = site  # last: readers that skip it decode the rest fast (capture.reader.raw)
            self.writer.event(**fields)
        if watched and probe is not None and probe.fail_pc is not None:
            spec = probe.spec
            check_ret = None
            if spec.site_kind == "call" or spec.site_address == self.wrapper_pc:
                # the error branch is libc's syscall(), shared by all its callers: [rsp] there names this caller
                check_ret = spec.return_address
                if check_ret is None and hit is not None:  # a tail jump, or the wrapper's entry: [rsp] now
                    check_ret = self._regs(hit, ("*sp",))[0]
            seq = self.writer.seq if self.writer is not None else self.events
            open_releases[tid] = OpenRelease(seq, args[0], args[1], probe.fail_pc, check_ret)
        if not self.config.quiet:
            call = describe_call(name, args, ret).removesuffix(" = ?") if before else describe_call(name, args, ret)
            gdb.write(f"sysbreak: [{tid}] {call}  {self._where(site)}\n")
        if self.config.max_events and self._counted() >= self.config.max_events:
            self.limit_reached = True
            return True  # stop the inferior: the stop handler disarms (breakpoints can't change during a hit)
        return False

    def _counted(self) -> int:
        """How many calls count against --max-events now, this one included: the whole tree's with a budget
        file, else this process's. A number above the limit is a call that was in flight in this process when
        another one reached it: logged all the same (the driver reports the overshoot)."""
        if self.budget is None:
            return self.events
        try:
            self.budget_number = self.budget.take()
        except OSError:  # the file is gone (directory removed): this process's own count
            return self.events
        return self.budget_number

    def _where(self, site: dict[str, Any]) -> str:
        module = site.get("module")
        off = site.get("offset")
        if module is None or off is None:
            return f"at {site['pc']:#x}"
        return f"at {os.path.basename(module)}+{off:#x}"

    # ----------------------------------------------------------------------------------------------- exec
    def on_exec(self) -> str:
        """The process replaced its image (execve, same pid). GDB has already marked every breakpoint of the old
        image as not inserted (its memory is gone), so they are deleted without a byte written; the new image is
        armed as its modules appear (the executable and ld.so now, the libraries as they load). Left alone, GDB
        would re-insert them at the old addresses in the new image: an error stop ("Cannot insert breakpoint")
        when the address is unmapped there, a corrupted instruction when it is mapped."""
        t = time.monotonic()
        removed = 0
        for armed in self.armed.values():
            for bp in armed.breakpoints:
                bp.remove()
                removed += 1
        self.armed.clear()
        self.skipped.clear()
        self._fail_at.clear()
        self.open_releases.clear()
        self.wrapper_fail = None
        if self.solib_probe is not None:  # on the old ld.so: placed again on the new one as it is armed
            self.solib_probe.remove()
            self.solib_probe = None
            removed += 1
        self._maps_text = None
        self.flush_pending()  # calls that entered the kernel in the old image: their return is never seen
        self.wrapper_return = self.wrapper_pc = None
        self.modules = ModuleMap()
        self.stacks.close()  # its /proc/PID/mem is the old image's
        self.stacks = StackReader(
            self.modules,
            max_depth=self.config.max_depth,
            python=self.config.python_stacks,
            cache=self.config.stack_cache,
        )
        self.image += 1
        pid = gdb.selected_inferior().pid or self.pid
        exe = None
        with contextlib.suppress(OSError):
            exe = os.readlink(f"/proc/{pid}/exe")
        argv: list[str] = []
        with contextlib.suppress(OSError), open(f"/proc/{pid}/cmdline", "rb") as fh:
            argv = [a.decode("utf-8", "replace") for a in fh.read().split(b"\0")[:-1]]
        if self.writer is not None:
            self.writer.exec(t=t, pid=pid, exe=exe, argv=argv, removed=removed)
        return f"process {pid} executed {exe or '?'}: {removed} breakpoint(s) of the old image dropped"

    def set_enabled(self, on: bool) -> int:
        """Enable or disable every breakpoint placed (GDB takes a disabled one's byte out; it stays placed and
        is put back by enabling it). The driver disables them around a vfork child's exec: GDB 13 would insert
        them, at the traced process's addresses, into the child's new image. Returns how many changed."""
        bps: list[Any] = [bp for m in self.armed.values() for bp in m.breakpoints] + self.exec_guards
        if self.solib_probe is not None:
            bps.append(self.solib_probe)
        n = 0
        for bp in bps:
            if bp.is_valid() and bp.enabled != on:
                bp.enabled = on
                n += 1
        return n

    def guard_exec(self, tid: int) -> int:
        """An :class:`ExecGuard` for thread ``tid`` on every syscall instruction of the armed modules that may be
        execve (a constant 59/322, or a number from a register). Returns how many."""
        self.unguard_exec()
        for addr in sorted({a for m in self.armed.values() for a in m.exec_sites}):
            if self._remember_original(addr):
                self.exec_guards.append(ExecGuard(tid, addr))
        return len(self.exec_guards)

    def unguard_exec(self) -> None:
        for bp in self.exec_guards:
            bp.remove()
        self.exec_guards.clear()

    # ----------------------------------------------------------------------------------------------- ending
    def flush_pending(self) -> None:
        for call in self.pending.drain():
            self._emit(call.t, call.tid, call.nr, call.args, None, call.stack, call.site)

    def disarm(self, reason: str) -> int:
        """Delete every breakpoint placed (restoring the original bytes) and close the log. Idempotent."""
        if not self.active:
            return 0
        self.active = False
        removed = 0
        for armed in self.armed.values():
            for bp in armed.breakpoints:
                bp.remove()
                removed += 1
            armed.breakpoints.clear()
        if self.solib_probe is not None:
            self.solib_probe.remove()
            self.solib_probe = None
            removed += 1
        removed += len(self.exec_guards)
        self.unguard_exec()
        self.limit_reached = True
        self.flush_pending()
        self.stacks.close()
        if self.writer is not None:
            if self.fail_hits:  # what watching the releases' failures cost: a stop each (docs/event-log.md)
                self.writer.note(
                    f"{self.fail_hits} stop(s) at the error branches after release sites, "
                    f"{self.failed_releases} of them a failed release",
                    time.monotonic(),
                )
            self.writer.end(reason, time.monotonic())
            self.writer.close()
        if self._restore is not None:
            self._restore.close()
        if self.budget is not None:
            self.budget.close()
        return removed

    def status(self) -> dict[str, Any]:
        return {
            "active": self.active,
            "pid": self.pid,
            "syscalls": [syscalls.name(n) for n in self.config.syscalls],
            "mode": "exhaustive" if self.config.exhaustive else "callsite",
            "log": self.config.log,
            "events": self.events,
            "by_syscall": dict(self.counts),
            "pending": len(self.pending),
            # where a release logged before it acted is seen to fail (a stop only when a call fails there)
            "failure_watch": {
                "breakpoints": len(self._fail_at),
                "hits": self.fail_hits,
                "failed_releases": self.failed_releases,
            },
            "breakpoints": self.breakpoint_count(),
            "modules": [
                {"path": m.path, "base": m.base, "sites": m.sites, "breakpoints": len(m.breakpoints)}
                for m in self.armed.values()
            ],
            "glibc_wrapper_verified": self.wrapper_return is not None,
            "raw_stacks": self.raw,
            "library_breakpoint": self.solib_probe.address if self.solib_probe is not None else None,
            "internal_errors": probe_errors()[:5],
            "step_over": dict(probe_counts),
            "stack_cache": {
                "enabled": self.stacks.cache,
                "hits": self.stacks.hits,
                "misses": self.stacks.misses,
                "uncacheable": self.stacks.uncacheable,
            },
        }
