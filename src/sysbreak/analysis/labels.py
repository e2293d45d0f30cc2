"""Stack labels that tell stacks apart.

A label is the first frame, from the innermost, that is outside the *allocator and hook layers* (:data:`LAYER_MODULES`
and :data:`LAYER_FUNCTIONS`): libc and libpthread, the dynamic loader, UCX's libucm/libucs, jemalloc, tcmalloc,
CPython's obmalloc and PyMem layer, NumPy's data allocator, c10's (PyTorch) CPU allocator, the Go runtime (with Go's
``internal/`` packages and the ``syscall`` and ``x/sys/unix`` wrappers), and ``operator new``. It is written
``function (module+0xoffset)``. When every frame is in those layers, the first frame that is not a system-call
primitive is used (``_dl_map_segments (ld-linux-x86-64.so.2+0x6a79)``).

Two stacks with the same label get, each, the first frame where they differ (:func:`distinct_labels`): looking
outward from the labelled frame first (``main (app+0x14fd) via serve (app+0x1520)``: the same function called from
different places), then inward (``main (app+0x14fd) into ucs_mpool_grow (libucs.so.0+0x3a8c0)``: the same caller,
different paths through a library). This repeats until the labels differ (:data:`MAX_ROUNDS` at most); stacks whose
frames are all equal (they differ in Python frames only, or in frames a ``--depth`` cut) get the innermost Python
frame that differs, and as a last resort the stack id.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from typing import Any

from sysbreak.capture.schema import Frame, PyFrame

LAYER_MODULES = re.compile(
    r"(?:^|/)(?:libc\.so|libc-[0-9.]+\.so|libpthread|libdl\.so|ld-linux|ld\.so|ld-[0-9.]+\.so|libucm\.so|libucs\.so"
    r"|libjemalloc\.so|libtcmalloc(?:_minimal)?\.so)"
)
LAYER_FUNCTIONS = re.compile(
    # CPython: obmalloc arenas, the PyMem/PyObject allocator entry points, object allocation helpers
    r"^(?:_PyObject_ArenaMmap|_PyObject_ArenaMalloc|new_arena|allocate_from_new_pool|pymalloc_alloc"
    r"|_?PyObject_(?:Malloc|Calloc|Realloc)|_?PyMem_\w+|_PyObject_GC_\w+|gc_alloc|PyType_GenericAlloc"
    r"|_PyType_AllocNoTrack|_PyObject_New\w*|_PyLong_New|PyUnicode_New|PyBytes_FromStringAndSize"
    # NumPy's data allocator
    r"|default_(?:malloc|calloc|realloc)|PyDataMem_\w+|npy_alloc_cache\w*"
    # operator new / new[] (mangled or demangled)
    r"|_Zn[wa]m\w*|operator new(?:\[\])?\b.*"
    # the Go runtime, its internal packages, and the syscall wrappers (syscall, golang.org/x/sys/unix)
    r"|runtime[./\[]\S*|internal/\S+|syscall\.\S+|golang\.org/x/sys/unix\.\S+)$"
    # PyTorch's c10 CPU allocator and at::empty
    r"|^c10::(?:alloc_cpu|\w*Allocator\w*::)|^at::detail::empty_(?:generic|cpu)"
)
# The system-call primitives themselves: never what a label should name (glibc's __GI___mmap64, __brk, ...).
PRIMITIVE = re.compile(r"^(?:__GI_)?_*(?:mmap(?:64)?|munmap|mremap|brk|sbrk|syscall|mprotect)$")
LOADER = re.compile(r"(?:^|/)(?:ld-linux[^/]*|ld\.so[^/]*|ld-[0-9.]+\.so)$")
MAX_ROUNDS = 2  # frames added to a label at most; then the stack id


def _basename(module: str | None) -> str:
    return os.path.basename(module) if module else "?"


def frame_description(f: Frame) -> str:
    """``function (module+0xoff)``, or ``module+0xoff`` when the function is unknown."""
    if f.module is None:
        where = f"{f.pc:#x}" if f.pc is not None else "?"
    else:
        where = f"{_basename(f.module)}+{f.offset:#x}" if f.offset is not None else _basename(f.module)
    return f"{f.function} ({where})" if f.function else where


def in_layers(f: Frame) -> bool:
    """The frame belongs to an allocator or hook layer (or is a system-call primitive)."""
    if f.module is not None and LAYER_MODULES.search(f.module):
        return True
    return bool(f.function and (LAYER_FUNCTIONS.search(f.function) or PRIMITIVE.match(f.function)))


def label_index(frames: Sequence[Frame], skip: re.Pattern[str] | None = None) -> int:
    """Index of the frame a label names (see the module doc); ``skip`` replaces the layers by a module pattern
    (``--group-outside``). -1 for no frames."""
    if not frames:
        return -1
    for i, f in enumerate(frames):
        if skip is not None:
            if f.module is None or not skip.search(f.module):
                return i
        elif not in_layers(f):
            return i
    for i, f in enumerate(frames):
        if f.function and not PRIMITIVE.match(f.function):
            return i
    return 0


def label_from_frames(frames: Sequence[Frame], skip: re.Pattern[str] | None = None) -> str:
    """The label of a stack on its own (no disambiguation): see the module doc."""
    i = label_index(frames, skip)
    return frame_description(frames[i]) if i >= 0 else ""


def loads_libraries(frames: Sequence[Frame]) -> bool:
    """The dynamic loader itself made the call (its first frame that is not a libc primitive is in ld.so): it is
    mapping the segments of an ELF object, or its own bookkeeping, not the program's data."""
    for f in frames:
        if f.module is not None and LOADER.search(f.module):
            return True
        if f.function and PRIMITIVE.match(f.function):
            continue
        return False
    return False


def _key(f: Frame | None) -> Any:
    if f is None:
        return None
    if f.module is not None and f.offset is not None:
        return (f.module, f.offset)
    return (f.pc, f.function)


class Labelled:
    """What :func:`distinct_labels` needs of a stack."""

    __slots__ = ("id", "frames", "python", "index", "label")

    def __init__(self, id: int, frames: tuple[Frame, ...], python: tuple[PyFrame, ...], index: int, label: str) -> None:
        self.id = id
        self.frames = frames
        self.python = python
        self.index = index
        self.label = label


def _split(group: list[Labelled], out_depth: int, in_depth: int) -> tuple[int, int] | None:
    """Find the first depth at which the members' frames differ, outward from their labelled frame, then inward;
    append that frame to each member's label. Returns the (outward, inward) depths reached, None when none differ."""
    longest = max(len(m.frames) - m.index for m in group)
    for d in range(out_depth, longest):
        keys = [_key(m.frames[m.index + d]) if m.index + d < len(m.frames) else None for m in group]
        if len(set(keys)) > 1:
            for m in group:
                i = m.index + d
                m.label += f" via {frame_description(m.frames[i])}" if i < len(m.frames) else " (outermost)"
            return d + 1, in_depth
    deepest = max(m.index for m in group)
    for d in range(in_depth, deepest + 1):
        keys = [_key(m.frames[m.index - d]) if m.index - d >= 0 else None for m in group]
        if len(set(keys)) > 1:
            for m in group:
                i = m.index - d
                m.label += f" into {frame_description(m.frames[i])}" if i >= 0 else " (innermost)"
            return longest, d + 1
    return None


def distinct_labels(stacks: Sequence[Labelled]) -> None:
    """Make the ``label`` of every stack differ from the others' (see the module doc), in place."""
    pending: list[tuple[list[Labelled], int, int]] = []
    by_label: dict[str, list[Labelled]] = {}
    for s in stacks:
        by_label.setdefault(s.label, []).append(s)
    pending = [(g, 1, 1) for g in by_label.values() if len(g) > 1]
    rounds = 0
    while pending and rounds < MAX_ROUNDS:
        rounds += 1
        nxt: list[tuple[list[Labelled], int, int]] = []
        for group, out_d, in_d in pending:
            depths = _split(group, out_d, in_d)
            if depths is None:
                _last_resort(group)
                continue
            sub: dict[str, list[Labelled]] = {}
            for m in group:
                sub.setdefault(m.label, []).append(m)
            nxt.extend((g, depths[0], depths[1]) for g in sub.values() if len(g) > 1)
        pending = nxt
    for group, _, _ in pending:
        _last_resort(group)


def _last_resort(group: list[Labelled]) -> None:
    pys = [m.python[0] if m.python else None for m in group]
    if len({(p.file, p.line, p.function) if p else None for p in pys}) == len(group):
        for m, p in zip(group, pys, strict=True):
            m.label += f" from {p.function} ({os.path.basename(p.file)}:{p.line})" if p else " (no Python frame)"
        return
    for m in group:
        m.label += f" [stack {m.id}]"
