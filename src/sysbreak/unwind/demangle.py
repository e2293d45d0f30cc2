"""C++ names as GDB prints them.

GDB demangles with libiberty's demangler (``DMGL_PARAMS | DMGL_ANSI``); libstdc++'s ``abi::__cxa_demangle`` is the
same demangler with the same output for function names, so it is called through :mod:`ctypes` (no wrapper
package, no ``c++filt`` process). Where libstdc++ is missing, names stay mangled.

For a function that DWARF describes, GDB prints the demangled name without its parameters (``cp_remove_params``):
:func:`remove_params` does that (and drops a template function's return type, which only appears with them).
"""

from __future__ import annotations

import ctypes
import functools
from typing import Any

_lib: Any = None
_loaded = False


def _cxa() -> Any:
    global _lib, _loaded
    if not _loaded:
        _loaded = True
        for name in ("libstdc++.so.6", None):
            if name is None:
                from ctypes import util  # slow to import, and find_library runs ldconfig: only if the soname failed

                name = util.find_library("stdc++")
            if not name:
                continue
            try:
                lib = ctypes.CDLL(name)
                fn = lib.__cxa_demangle
            except (OSError, AttributeError):
                continue
            fn.restype = ctypes.c_void_p
            fn.argtypes = [ctypes.c_char_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.POINTER(ctypes.c_int)]
            libc = ctypes.CDLL(None)
            libc.free.argtypes = [ctypes.c_void_p]
            _lib = (fn, libc.free)
            break
    return _lib


@functools.lru_cache(maxsize=65536)
def demangle(name: str) -> str:
    """``name`` demangled when it is an Itanium C++ name (``_Z...``), else unchanged."""
    if not name.startswith("_Z"):
        return name
    lib = _cxa()
    if lib is None:
        return name
    fn, free = lib
    status = ctypes.c_int(0)
    ptr = fn(name.encode(), None, None, ctypes.byref(status))
    if not ptr or status.value != 0:
        return name
    try:
        return ctypes.string_at(ptr).decode("utf-8", "replace")
    finally:
        free(ptr)


_QUALIFIERS = (" const", " volatile", " &&", " &", " noexcept")


def _gdb_can_parse(name: str) -> bool:
    """Whether GDB's C++ name parser (cp-name-parser.y) accepts ``name``: where it does not, ``cp_remove_params``
    fails and GDB prints the full demangled name, parameters included. Measured with GDB 13 on
    fixtures/src/templates.cc: lambdas (``{lambda(long)#1}``) and function types inside template arguments
    (``std::function<void* (long)>``) are refused."""
    if "{" in name:
        return False
    depth = 0
    for c in name:
        if c == "<":
            depth += 1
        elif c == ">":
            depth = max(0, depth - 1)
        elif c == "(" and depth > 0:
            return False
    return True


def _split_params(name: str) -> tuple[str, str] | None:
    """``RET ns::f<T>(args) const`` -> (``RET ns::f<T>``, ``(args) const``); None when there is no parameter list."""
    s = name.rstrip()
    changed = True
    while changed:
        changed = False
        for q in _QUALIFIERS:
            if s.endswith(q):
                s = s[: -len(q)].rstrip()
                changed = True
    if not s.endswith(")"):
        return None
    depth = 0
    i = len(s) - 1
    while i >= 0:
        c = s[i]
        if c == ")":
            depth += 1
        elif c == "(":
            depth -= 1
            if depth == 0:
                break
        i -= 1
    if i <= 0:
        return None
    head = s[:i]
    if head.endswith("::operator") or head == "operator":  # operator()(...): the first () was the name
        return None
    return head, name[i:]


def _drop_return_type(head: str) -> str:
    """GDB's ``DMGL_RET_DROP``: a template function's return type (``void* ns::f<int>`` -> ``ns::f<int>``)."""
    if not head.endswith(">"):
        return head
    depth = 0
    cut = -1
    for j, c in enumerate(head):
        if head.startswith("operator", j) and (j == 0 or not (head[j - 1].isalnum() or head[j - 1] == "_")):
            break  # everything from an operator name on belongs to the name
        if c in "<(":
            depth += 1
        elif c in ">)":
            depth -= 1
        elif c == " " and depth == 0:
            cut = j
    return head[cut + 1 :] if cut >= 0 else head


def function_name(demangled: str) -> str:
    """GDB's name of a C++ function described by DWARF: the demangled linkage name without the return type of a
    template function (``DMGL_RET_DROP``), and without its parameters when GDB's name parser accepts it."""
    split = _split_params(demangled)
    if split is None:
        return demangled
    head, tail = split
    head = _drop_return_type(head)
    probe = head.replace("operator<<", "").replace("operator<", "").replace("operator>", "")
    if not _gdb_can_parse(probe + tail):
        return head + tail
    return head


remove_params = function_name
