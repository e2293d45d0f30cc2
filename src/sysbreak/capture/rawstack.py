"""Raw stacks (``sysbreak-events/3``): registers and stack bytes copied in the stop, turned into frames here.

A ``stack`` record with ``raw`` (docs/event-log.md) was not unwound while the target was stopped: GDB had no
symbol files loaded (``sysbreak run``/``attach`` keep the stop short that way). Readers turn it into frames when
they read it: the frames the record lists (known at capture time: libc's ``syscall`` frame of a call site), then
the frames an offline unwinder recovers from ``raw`` with the mappings the log's ``module`` records give:
:mod:`sysbreak.unwind` (CFI from ``.eh_frame``/``.debug_frame``, symbol tables, DWARF lines, cached by build
id). The unwinder is found at run time, by name, so that this floor-1 module does not import it; without
it (or when it fails) a raw stack degrades to the one frame sure without unwinding: the pc, as module + offset.
Never a guessed frame.
"""

from __future__ import annotations

import base64
import bisect
import contextlib
import importlib
from dataclasses import dataclass
from typing import Any

from sysbreak.capture.schema import Frame


@dataclass(frozen=True)
class RawStack:
    regs: dict[str, int]
    stack: bytes  # the thread's stack from regs["rsp"] up
    truncated: bool  # the stack went on above the copied window
    pc0: int | None  # frame 0's pc as reported (the syscall instruction), when not regs["rip"]


def parse_raw(obj: Any) -> RawStack:
    """The ``raw`` member of a stack record; TypeError/ValueError when damaged."""
    if not isinstance(obj, dict):
        raise TypeError("raw")
    regs = obj.get("regs")
    if not isinstance(regs, dict) or not all(isinstance(k, str) and type(v) is int for k, v in regs.items()):
        raise TypeError("raw.regs")
    if "rip" not in regs or "rsp" not in regs:
        raise TypeError("raw.regs")
    data = obj.get("stack") or ""
    if not isinstance(data, str):
        raise TypeError("raw.stack")
    pc0 = obj.get("pc0")
    if pc0 is not None and type(pc0) is not int:
        raise TypeError("raw.pc0")
    return RawStack(regs=dict(regs), stack=base64.b64decode(data, validate=True), truncated=bool(obj.get("truncated")),
                    pc0=pc0)  # fmt: skip


class ModuleTable:
    """The modules of one process as the log's ``module`` records give them (path, load bias, and since /3 the
    file's mappings): pc -> (path, offset), and the offline unwinder built from them."""

    def __init__(self) -> None:
        self.modules: list[tuple[int, str, int, str | None]] = []  # (base, path, bias, build id), sorted by base
        self._bases: list[int] = []
        self.maps: list[tuple[int, int, str, int, str]] = []  # (start, end, perms, offset, path)
        self.exe: str | None = None
        self._unwinder: Any = None
        self._stale = True

    def add(self, path: str, base: int | None, bias: int | None, build_id: str | None, maps: Any = None) -> None:
        if base is None or bias is None:
            return
        self.modules = sorted({m[1]: m for m in [*self.modules, (base, path, bias, build_id)]}.values())
        self._bases = [m[0] for m in self.modules]
        if isinstance(maps, list):
            rows = [
                (int(r[0]), int(r[1]), str(r[3]), int(r[2]), path)
                for r in maps
                if isinstance(r, list) and len(r) == 4 and all(type(x) is int for x in r[:3])
            ]
            self.maps = sorted([m for m in self.maps if m[4] != path] + rows)
        self._stale = True

    def lookup(self, pc: int) -> tuple[str, int] | None:
        """The module whose base is the highest at or below ``pc`` (maps of a process do not interleave)."""
        i = bisect.bisect_right(self._bases, pc) - 1
        if i < 0:
            return None
        _base, path, bias, _bid = self.modules[i]
        return path, pc - bias

    def unwinder(self) -> Any:
        """A :class:`sysbreak.unwind.Unwinder` over the mappings known so far (None without the unwinder or
        without mappings: a /2 log, or a /3 log whose module records lack them)."""
        if not self.maps:
            return None
        if self._unwinder is None:
            cls = _unwinder_class()
            if cls is None:
                return None
            self._unwinder = cls((), exe=self.exe)
            self._stale = True
        if self._stale:
            from sysbreak.unwind import MapEntry

            self._unwinder.set_maps([MapEntry(a, b, perms, off, path) for a, b, perms, off, path in self.maps])
            self._stale = False
        return self._unwinder


def _unwinder_class() -> Any:
    try:
        mod = importlib.import_module("sysbreak.unwind")
    except ImportError:
        return None
    return getattr(mod, "Unwinder", None)


_UNWINDER: list[Any] = []


def unwinder_available() -> bool:
    """Whether an offline unwinder is installed (else raw stacks degrade to frame 0)."""
    if not _UNWINDER:
        _UNWINDER.append(_unwinder_class())
    return _UNWINDER[0] is not None


def frames(top: tuple[Frame, ...], raw: RawStack, modules: ModuleTable, max_depth: int = 64) -> tuple[Frame, ...]:
    """The frames of a raw stack record: ``top``, then the unwound ones (frame 0 reported at ``pc0``)."""
    got: list[Frame] = []
    unwinder = modules.unwinder() if unwinder_available() else None
    if unwinder is not None:
        try:
            res = unwinder.unwind(raw.regs, raw.stack, raw.regs["rsp"])
            got = [
                Frame(r["pc"], r["module"], r["offset"], r["function"], r["file"], r["line"])
                for r in res.records()[:max_depth]
            ]
        except Exception:  # noqa: BLE001 - an unwinder bug must not lose the capture: degrade to frame 0
            got = []
    if not got:
        got = [Frame(pc=raw.regs["rip"], module=None, offset=None, function=None)]
    if got[0].module is None:  # not in a mapping the unwinder knows: module + offset from the module records
        hit = modules.lookup(got[0].pc or raw.regs["rip"])
        if hit is not None:
            f = got[0]
            got[0] = Frame(f.pc, hit[0], hit[1], f.function, f.file, f.line)
    if raw.pc0 is not None:
        rip = raw.regs["rip"]
        hit = modules.lookup(raw.pc0)
        for i, f in enumerate(got):
            if f.pc != rip:
                break
            got[i] = Frame(pc=raw.pc0, module=hit[0] if hit else f.module, offset=hit[1] if hit else None,
                           function=f.function, file=f.file, line=f.line)  # fmt: skip
    return (*top, *got)


def save(modules: ModuleTable) -> None:
    """Keep what the unwinder decoded (CFI, DWARF) in its build-id cache, for the next reader."""
    if modules._unwinder is not None:
        with contextlib.suppress(Exception):
            modules._unwinder.modules.save()
