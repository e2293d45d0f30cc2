"""Native (and optionally Python) stacks at a breakpoint hit, with every pc symbolised once and cached.

Unwinding is the expensive part of a captured call: GDB's unwinder costs about 20 us per frame here
(``frame.older()``; notes/mechanisms.md), 400-600 us for a 20-30 frame stack, while the stop itself costs
150-250 us. Leaks are the same call path mapping again and again, so :class:`StackReader` keys each stack
cheaply and exactly, and unwinds only stacks it has not seen:

* the thread's *base* is learned from its first unwind: the stack pointer of the outermost frame recorded
  (``_start``, ``start_thread``, or the last frame within ``max-depth``). Every return address that decides
  which frames get recorded lies in ``[$rsp, base)``: the one into frame k+1 sits just below frame k+1's
  stack pointer;
* one ``read_memory`` of ``[$rsp, base)`` (at most :data:`STACK_WINDOW` bytes; deeper stacks are always
  unwound), and the key is the pc, the depth, and every word there that points into executable code, with its
  offset. Two different recorded paths have a different return address at some offset, so they get different
  keys; stale code pointers in dead stack slots can only make two equal paths look different (a redundant
  unwind), never the reverse. A path whose outermost recorded frame lies above the base raises it (and is
  unwound: its key is computed over the new, longer window).

Code that is not in a file mapping (JIT) is not part of the key: two paths that differ only in JIT frames
would share a cached stack. ``set sysbreak stack-cache off`` unwinds every stack.
"""

from __future__ import annotations

import bisect
import struct
from typing import Any

import gdb

from sysbreak import maps
from sysbreak.maps import Vma
from sysbreak.stackkey import CodeRanges, StackKeyer
from sysbreak.tracee import Tracee, for_pid

EVAL_FRAME = "_PyEval_EvalFrameDefault"
STACK_WINDOW = 16384
#: the registers a raw stack keeps: the pc, the stack pointer and the callee-saved registers (what CFI needs to
#: recover the callers' frames; the others are dead across calls)
RAW_REGS = ("rip", "rsp", "rbp", "rbx", "r12", "r13", "r14", "r15")
#: the most of a thread's stack a raw stack copies, from $rsp up (deeper callers are cut: ``truncated``)
RAW_WINDOW = 32768
_BUCKET = 21  # 2 MiB buckets of executable address space, for a fast first test of each stack word
# The outermost frames of a thread: nothing above them is real (GDB unwinds on into garbage without CFI).
OUTERMOST = frozenset({"_start", "_dl_start_user", "clone", "clone3", "__clone", "__clone3"})


class ModuleMap:
    """pc -> (module path, offset as objdump shows it), from the file mappings of /proc/PID/maps."""

    def __init__(self) -> None:
        self._starts: list[int] = []
        self._rows: list[tuple[int, int, str]] = []
        self._bias: dict[str, int] = {}

    def update(self, rows: list[tuple[int, int, str]], bias: dict[str, int]) -> None:
        self._rows = sorted(rows)
        self._starts = [r[0] for r in self._rows]
        self._bias = dict(bias)

    def lookup(self, pc: int) -> tuple[str | None, int | None]:
        i = bisect.bisect_right(self._starts, pc) - 1
        if i >= 0:
            start, end, path = self._rows[i]
            if pc < end:
                bias = self._bias.get(path)
                return path, (pc - bias) if bias is not None else None
        return None, None


class StackReader:
    def __init__(self, modules: ModuleMap, *, max_depth: int = 64, python: bool = False, cache: bool = True) -> None:
        self.modules = modules
        self.max_depth = max_depth
        self.python = python
        self.cache = cache
        self.hits = self.misses = self.uncacheable = 0
        self._by_key: dict[tuple[int, ...], tuple[tuple[int, ...], list[dict[str, Any]], bool]] = {}
        self._pid = 0
        self._base: dict[int, int] = {}  # thread id -> stack pointer of its outermost recorded frame
        self._exec: list[tuple[int, int]] = []
        self._exec_starts: list[int] = []
        self._exec_buckets: frozenset[int] = frozenset()
        # symbolised frames by (pc, frame type): an inlined function and the function it was inlined into
        # share a pc and differ in type (INLINE_FRAME vs NORMAL_FRAME)
        self._sym: dict[tuple[int, int], dict[str, Any]] = {}
        self._pyframes: Any = None
        self._rw: list[tuple[int, int]] = []
        self._rw_starts: list[int] = []
        self._stack_end: dict[int, tuple[int, int]] = {}  # thread id -> the mapping holding its stack
        self.keyer = StackKeyer()  # raw stacks' keys, each thread's from what changed since its last stop
        self._tracee: Tracee | None = None  # registers and memory read directly (sysbreak.tracee)
        if python:
            from sysbreak.gdb import pyframes

            self._pyframes = pyframes

    def set_maps(self, pid: int, vmas: list[Vma]) -> None:
        """The executable ranges of the process, from its maps (code pointers are recognised by them), and the
        writable ones (a raw stack is copied up to the end of the mapping that holds $rsp)."""
        execs = sorted((v.start, v.end) for v in vmas if "x" in v.perms)
        self._rw = sorted((v.start, v.end) for v in vmas if "w" in v.perms)
        self._rw_starts = [r[0] for r in self._rw]
        if pid != self._pid or self._tracee is None:
            if self._tracee is not None:
                self._tracee.close()
            self._tracee = for_pid(pid) if pid else None
            self.keyer.forget()
        self._pid = pid
        if execs != self._exec:
            self.keyer.set_code(CodeRanges(execs))
        self._exec, self._exec_starts = execs, [r[0] for r in execs]
        self._exec_buckets = frozenset(b for lo, hi in execs for b in range(lo >> _BUCKET, ((hi - 1) >> _BUCKET) + 1))

    def close(self) -> None:
        if self._tracee is not None:
            self._tracee.close()
            self._tracee = None

    def thread_regs(self, tid: int) -> dict[str, int] | None:
        """Every register of the stopped thread ``tid`` in one ptrace request (:mod:`sysbreak.tracee`), or None
        when that is not possible here (the caller then reads them through a GDB frame)."""
        return self._tracee.regs(tid) if self._tracee is not None else None

    def read(self, address: int, size: int) -> bytes:
        """Target memory: straight from /proc/PID/mem once ptrace proved the target is ours, else through GDB."""
        tracee = self._tracee
        if tracee is not None and tracee.direct:
            try:
                data = tracee.read(address, size)
            except OSError:
                data = b""
            if len(data) == size:
                return data
        return bytes(gdb.selected_inferior().read_memory(address, size))

    def _key(self, pc: int, sp: int, base: int, data: bytes | None = None) -> tuple[int, ...]:
        n = base - sp
        if data is None:
            data = bytes(gdb.selected_inferior().read_memory(sp, n))
        words = struct.unpack_from(f"<{n // 8}Q", data)
        buckets, starts, execs = self._exec_buckets, self._exec_starts, self._exec
        key = [pc, n]
        for i, v in enumerate(words):
            if v >> _BUCKET in buckets:
                j = bisect.bisect_right(starts, v) - 1
                if j >= 0 and v < execs[j][1]:
                    key.append(i)
                    key.append(v)
        return tuple(key)

    def _describe(self, frame: Any, pc: int) -> dict[str, Any]:
        module, offset = self.modules.lookup(pc)
        try:
            name = frame.name()
        except gdb.error:
            name = None
        file = line = None
        try:
            sal = frame.find_sal()
            if sal is not None and sal.symtab is not None:
                file = sal.symtab.filename
                line = sal.line or None
        except gdb.error:
            pass
        return {"pc": pc, "module": module, "offset": offset, "function": name, "file": file, "line": line}

    # ------------------------------------------------------------------------------------------- raw stacks
    def _mapping_end(self, tid: int, sp: int) -> int | None:
        """The end of the writable mapping that holds ``sp`` (a thread's stack), cached per thread."""
        cached = self._stack_end.get(tid)
        if cached is not None and cached[0] <= sp < cached[1]:
            return cached[1]
        for attempt in range(2):
            i = bisect.bisect_right(self._rw_starts, sp) - 1
            if i >= 0 and sp < self._rw[i][1]:
                self._stack_end[tid] = self._rw[i]
                return self._rw[i][1]
            if attempt == 0 and self._pid:  # a thread started after the last read of the maps
                try:
                    self.set_maps(self._pid, maps.read_maps(self._pid).vmas)
                except Exception:  # noqa: BLE001 - no maps: no window
                    return None
        return None

    def capture_raw(self, regs: Any, tid: int) -> tuple[tuple[Any, ...], dict[str, Any], list[dict[str, Any]]]:
        """What an offline unwinder needs, copied while the thread is stopped: (key, raw, python frames).

        ``regs`` maps register names to values (:meth:`thread_regs`, or a GDB frame's registers). ``raw`` is
        ``{"regs": {name: value}, "stack": bytes from $rsp, "truncated": bool}``: the registers of
        :data:`RAW_REGS` and one read of the stack from ``$rsp`` to the end of its mapping (at most
        :data:`RAW_WINDOW` bytes). No unwinding and no symbol lookup happen here. ``key`` identifies the call path
        exactly (:mod:`sysbreak.stackkey`: the pc, the window and every word in it that points into executable
        code, with its position): two events with the same key unwind to the same frames.
        """
        kept = {name: int(regs[name]) & 0xFFFFFFFFFFFFFFFF for name in RAW_REGS}
        sp = kept["rsp"]
        end = self._mapping_end(tid, sp)
        data = b""
        truncated = False
        if end is not None and sp % 8 == 0:
            n = min(end - sp, RAW_WINDOW)
            truncated = end - sp > RAW_WINDOW
            try:
                data = self.read(sp, n)
            except gdb.MemoryError:
                data = b""
        key: tuple[Any, ...] = (kept["rip"], sp)
        if data and end is not None:
            key = self.keyer.key(tid, kept["rip"], sp, end, data)
        python: list[dict[str, Any]] = []
        if self._pyframes is not None:
            python = self._pyframes.thread_frames(tid)
        return key, {"regs": kept, "stack": data, "truncated": truncated}, python

    def describe_pc(self, pc: int, function: str | None) -> dict[str, Any]:
        """A frame record for a pc that is not on the unwound stack (a synthetic frame)."""
        module, offset = self.modules.lookup(pc)
        return {"pc": pc, "module": module, "offset": offset, "function": function, "file": None, "line": None}

    def capture(
        self, newest: Any = None, tid: int = 0
    ) -> tuple[tuple[int, ...], list[dict[str, Any]], list[dict[str, Any]]]:
        """Unwind from the newest frame: (pcs, frame records, python frames), innermost first.

        Pass the ``gdb.newest_frame()`` the caller already has (each call of it costs about 30 us) and the
        thread id (stack keys are per thread).
        """
        frame = newest if newest is not None else gdb.newest_frame()
        key = None
        sp = 0
        if self.cache and self._pid:
            try:
                sp = int(frame.read_register("rsp"))
                base = self._base.get(tid, 0)
                if sp % 8 == 0 and 0 < base - sp <= STACK_WINDOW:
                    key = self._key(frame.pc(), sp, base)
            except (gdb.error, gdb.MemoryError):
                key = None
            if key is None:
                self.uncacheable += 1
            else:
                cached = self._by_key.get(key)
                if cached is not None:
                    self.hits += 1
                    pcs_c, frames_c, had_eval = cached
                    python_c: list[dict[str, Any]] = []
                    if had_eval and self._pyframes is not None:
                        python_c = self._pyframes.python_frames([frame])  # only its emptiness is looked at
                    return pcs_c, frames_c, python_c
                self.misses += 1
        pcs_t, frames_t, python_t, had_eval_t, outer_sp = self._unwind(frame)
        if self.cache and self._pid and sp and outer_sp:
            base = self._base.get(tid, 0)
            if not 0 < base - sp <= STACK_WINDOW or outer_sp > base:  # first unwind here, a new thread, deeper
                self._base[tid] = outer_sp
            if key is not None and outer_sp <= base:
                if len(self._by_key) >= 100_000:
                    self._by_key.clear()
                self._by_key[key] = (pcs_t, frames_t, had_eval_t)
        return pcs_t, frames_t, python_t

    def _unwind(self, frame: Any) -> tuple[tuple[int, ...], list[dict[str, Any]], list[dict[str, Any]], bool, int]:
        """The full unwind, and the stack pointer of the outermost frame recorded (0 when unknown)."""
        sym = self._sym
        outer: Any = None
        pcs: list[int] = []
        frames: list[dict[str, Any]] = []
        eval_frames: list[Any] = []
        prev_inline = False
        while frame is not None and len(pcs) < self.max_depth:
            pc = frame.pc()
            if pc < 0x1000:  # a null or tiny "return address": the unwinder ran off the stack
                break
            ftype = frame.type()
            key = (pc, ftype)
            rec = sym.get(key)
            if rec is None:
                rec = sym[key] = self._describe(frame, pc)
            prev = frames[-1] if frames else None
            # GDB shows an inlined call and the function it was inlined into as two frames at one pc; when both
            # have the same name and line (glibc's INLINE_SYSCALL) they read as one. Recursion (equal frames
            # that are not inline) is kept.
            if not (prev_inline and prev is not None and (prev["pc"], prev["function"]) == (pc, rec["function"])):
                pcs.append(pc)
                frames.append(rec)
            prev_inline = ftype == gdb.INLINE_FRAME
            outer = frame
            if self.python and rec["function"] == EVAL_FRAME:
                eval_frames.append(frame)
            if rec["function"] in OUTERMOST:
                break
            try:
                frame = frame.older()
            except gdb.error:
                break
        python: list[dict[str, Any]] = []
        if eval_frames and self._pyframes is not None:
            python = self._pyframes.python_frames(eval_frames)
        outer_sp = 0
        if outer is not None:
            try:
                outer_sp = int(outer.read_register("rsp"))
            except gdb.error:
                outer_sp = 0
        return tuple(pcs), frames, python, bool(eval_frames), outer_sp
