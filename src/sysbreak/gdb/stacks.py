"""Native (and optionally Python) stacks at a breakpoint hit, with every pc symbolised once and cached."""

from __future__ import annotations

import bisect
from typing import Any

import gdb

EVAL_FRAME = "_PyEval_EvalFrameDefault"
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
    def __init__(self, modules: ModuleMap, *, max_depth: int = 64, python: bool = False) -> None:
        self.modules = modules
        self.max_depth = max_depth
        self.python = python
        # symbolised frames by (pc, frame type): an inlined function and the function it was inlined into
        # share a pc and differ in type (INLINE_FRAME vs NORMAL_FRAME)
        self._sym: dict[tuple[int, int], dict[str, Any]] = {}
        self._pyframes: Any = None
        if python:
            from sysbreak.gdb import pyframes

            self._pyframes = pyframes

    def forget_symbols(self) -> None:
        self._sym.clear()

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

    def describe_pc(self, pc: int, function: str | None) -> dict[str, Any]:
        """A frame record for a pc that is not on the unwound stack (a synthetic frame)."""
        module, offset = self.modules.lookup(pc)
        return {"pc": pc, "module": module, "offset": offset, "function": function, "file": None, "line": None}

    def capture(self, newest: Any = None) -> tuple[tuple[int, ...], list[dict[str, Any]], list[dict[str, Any]]]:
        """Unwind from the newest frame: (pcs, frame records, python frames), innermost first.

        Pass the ``gdb.newest_frame()`` the caller already has: each call of it costs about 30 us.
        """
        sym = self._sym
        pcs: list[int] = []
        frames: list[dict[str, Any]] = []
        eval_frames: list[Any] = []
        frame = newest if newest is not None else gdb.newest_frame()
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
        return tuple(pcs), frames, python
