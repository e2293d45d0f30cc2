"""Offline unwinding and symbolisation: the registers and raw stack bytes copied at a stop, plus the process's
module map, become the frames GDB's ``bt`` would show, without GDB and outside the stop.

    from sysbreak.unwind import Unwinder
    u = Unwinder(maps_text)                       # /proc/PID/maps as read at (or after) the stop
    res = u.unwind({"rip": ..., "rsp": ..., "rbp": ...}, stack_bytes, stack_start)
    [f.record() for f in res.frames]              # event-log frames, innermost first, inlined calls included
    u.save()                                      # keep decoded CFI / DWARF in the build-id cache

See docs/unwinding.md for how it works and where it stops.
"""

from sysbreak.unwind.core import (
    CALLEE_SAVED,
    REGS,
    MapEntry,
    Physical,
    Result,
    Unwinder,
    UnwoundFrame,
    merge_inline_duplicates,
    parse_maps,
)
from sysbreak.unwind.modules import ModuleCache, ModuleInfo, default_cache_dir

__all__ = [
    "CALLEE_SAVED",
    "REGS",
    "MapEntry",
    "ModuleCache",
    "ModuleInfo",
    "Physical",
    "Result",
    "UnwoundFrame",
    "Unwinder",
    "default_cache_dir",
    "merge_inline_duplicates",
    "parse_maps",
]
