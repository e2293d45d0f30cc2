"""The C library through ctypes, loaded once for the whole package (plain Python, no ``gdb``).

Its users (``tracee``: registers and memory of a stopped thread from GDB's Python; ``driver.ptrace``: a vfork
child carried to its exec; ``tripwire``: GDB's death seen by the kernel's robust-mutex wake-up) share one handle
and one typed ``ptrace``; each sets the types of the other functions it calls, once. ``driver.restore``'s
write-back keeps its own ``ctypes.PyDLL`` on purpose: its calls must keep the GIL.
"""

from __future__ import annotations

import ctypes

_lib: ctypes.CDLL | None = None


def libc() -> ctypes.CDLL:
    """The process's C library (``errno`` kept for ``ctypes.get_errno``), with ``ptrace`` typed."""
    global _lib
    if _lib is None:
        lib = ctypes.CDLL(None, use_errno=True)
        lib.ptrace.restype = ctypes.c_long
        lib.ptrace.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p]
        _lib = lib
    return _lib
