"""Hints: known culprits of RSS growth, recognised by the frames of the stacks that own it.

A stack belongs to a culprit when, walking its frames from the innermost, the first frame that belongs to *any*
known allocator or hook layer (below) is one of that culprit's; the system-call primitives themselves (``mmap64``,
``syscall``, ...) are passed over. A hint is given when the stacks of a culprit own at least :data:`MIN_SHARE` of
the growth (resident growth when the capture has snapshots, else live bytes). Each hint is one factual line with
the documentation it comes from; it never claims more than that documentation says.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from sysbreak.analysis.model import Frame, Hint, StackStats

MIN_SHARE = 0.10


@dataclass(frozen=True)
class Culprit:
    name: str
    module: re.Pattern[str] | None  # matched against the module's base name
    function: re.Pattern[str] | None  # matched against the function name (with the module, if both are given)
    both: bool  # True: module AND function must match; False: either does
    text: str
    doc: str


_LIBC = re.compile(r"^libc(?:\.so|-[0-9.]+\.so)")
CULPRITS: tuple[Culprit, ...] = (
    Culprit(
        "ucx",
        re.compile(r"^libuc[ms]\.so"),
        None,
        False,
        "UCX's libucm hooks mmap/munmap and its registration cache queues unmapped regions instead of releasing "
        "them (UCX_RCACHE_MAX_UNRELEASED, default inf): UCX_MEM_MMAP_HOOK_MODE=none turns the mmap hooks off, "
        "UCX_RCACHE_MAX_UNRELEASED=1024 bounds the queue (`ucx_info -cf` documents both)",
        "https://github.com/openucx/ucx/wiki/Memory-hooks",
    ),
    Culprit(
        "glibc-malloc",
        _LIBC,
        re.compile(
            r"^(?:__GI_+)?(?:__libc_)?(?:malloc|calloc|realloc|memalign|posix_memalign|aligned_alloc|valloc|pvalloc)$"
            r"|^(?:sysmalloc|_int_malloc|_int_realloc|_int_memalign|new_heap|alloc_new_heap|grow_heap|_int_new_arena"
            r"|arena_get2|tcache_init)(?:\.\w+)?$"
        ),
        True,
        "glibc malloc maps this memory: every thread may get its own arena (up to 8 per core, each reserving "
        "64 MiB), and memory freed inside an arena stays resident until malloc_trim(0); MALLOC_ARENA_MAX=2 "
        "(or GLIBC_TUNABLES=glibc.malloc.arena_max=2) caps the arenas",
        "https://www.gnu.org/software/libc/manual/html_node/Memory-Allocation-Tunables.html",
    ),
    Culprit(
        "cpython-obmalloc",
        re.compile(r"^(?:python[0-9.]*|libpython[0-9.]*\.so)"),
        re.compile(
            r"^(?:_PyObject_ArenaMmap|_PyObject_ArenaMalloc|new_arena|allocate_from_new_pool|pymalloc_alloc"
            r"|_PyObject_Malloc|_PyObject_Calloc|_PyObject_Realloc|PyObject_Malloc|PyObject_Calloc|PyObject_Realloc)$"
        ),
        True,  # its functions in the interpreter: any other CPython frame is not the allocator
        "CPython's small-object allocator (pymalloc) maps 1 MiB arenas and returns one to the system only when "
        "every object in it is freed, so a few survivors keep a whole arena resident; PYTHONMALLOC=malloc routes "
        "small objects through malloc instead (to tell the two apart)",
        "https://docs.python.org/3/c-api/memory.html#the-pymalloc-allocator",
    ),
    Culprit(
        "jemalloc",
        re.compile(r"^libjemalloc\.so"),
        re.compile(r"^(?:je_\w+|extent_alloc_mmap|pages_map|os_pages_map)$"),
        False,
        "jemalloc keeps freed pages for opt.dirty_decay_ms (10 s by default) before it returns them; "
        "MALLOC_CONF=background_thread:true,dirty_decay_ms:1000 returns them sooner, narenas:N caps the arenas",
        "https://jemalloc.net/jemalloc.3.html",
    ),
    Culprit(
        "tcmalloc",
        re.compile(r"^libtcmalloc(?:_minimal)?\.so"),
        None,
        False,
        "tcmalloc keeps freed memory in its page heap and returns it to the system gradually "
        "(TCMALLOC_RELEASE_RATE, default 1.0; 0 never returns it); MallocExtension::ReleaseFreeMemory() returns "
        "it at once",
        "https://gperftools.github.io/gperftools/tcmalloc.html",
    ),
    Culprit(
        "go-runtime",
        None,
        re.compile(r"^runtime\.(?:sysMmap|sysReserve|sysAlloc|sysMap|sysReserveOS|sysAllocOS|sysMapOS|mmap)$"),
        False,
        "the Go runtime maps this memory for its heap and returns freed pages to the system lazily (its "
        "scavenger); GOMEMLIMIT sets a soft limit it collects toward, debug.FreeOSMemory() returns pages at once",
        "https://go.dev/doc/gc-guide#Memory_limit",
    ),
)

# System-call primitives: never a culprit's frame, whatever library they are in.
_PRIMITIVE = re.compile(r"^(?:__GI_)?_*(?:mmap(?:64)?|munmap|mremap|brk|sbrk|syscall|mprotect)$")


def _matches(c: Culprit, module: str | None, function: str | None) -> bool:
    mod_ok = c.module is not None and module is not None and bool(c.module.search(module))
    fn_ok = c.function is not None and function is not None and bool(c.function.search(function))
    if c.both:
        return mod_ok and fn_ok
    return mod_ok or fn_ok


def culprit_of(frames: Sequence[Frame]) -> Culprit | None:
    """The culprit owning the innermost allocator/hook frame of a stack, or None."""
    for f in frames:
        if f.function and _PRIMITIVE.match(f.function) and (f.module is None or _LIBC.search(_base(f.module))):
            continue
        module = _base(f.module) if f.module else None
        for c in CULPRITS:
            if _matches(c, module, f.function):
                return c
    return None


def _base(module: str) -> str:
    return os.path.basename(module) or module


def hints_for(stacks: Iterable[StackStats], weight: Callable[[StackStats], int]) -> list[Hint]:
    """The hints for the culprits whose stacks own at least :data:`MIN_SHARE` of the positive ``weight``."""
    total = 0
    owned: dict[str, tuple[Culprit, list[int], int]] = {}
    for s in stacks:
        w = weight(s)
        if w <= 0:
            continue
        total += w
        c = culprit_of(s.frames)
        if c is None:
            continue
        _, ids, n = owned.get(c.name, (c, [], 0))
        ids.append(s.id)
        owned[c.name] = (c, ids, n + w)
    out = [
        Hint(culprit=c.name, text=c.text, doc=c.doc, stack_ids=tuple(ids), bytes=n)
        for c, ids, n in owned.values()
        if total > 0 and n >= MIN_SHARE * total
    ]
    out.sort(key=lambda h: (-h.bytes, h.culprit))
    return out
