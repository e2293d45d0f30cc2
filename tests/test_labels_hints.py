"""Labels that tell stacks apart, the loader's stacks, and hints for known culprits (pure logic)."""

from __future__ import annotations

from sysbreak.analysis.hints import culprit_of, hints_for
from sysbreak.analysis.labels import Labelled, distinct_labels, label_from_frames, loads_libraries
from sysbreak.analysis.model import Frame, StackStats
from sysbreak.analysis.rank import kind_of, label_all, order

LIBC = "/usr/lib/x86_64-linux-gnu/libc.so.6"
LD = "/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2"
UCM = "/usr/lib/x86_64-linux-gnu/libucm.so.0.0.0"
UCS = "/usr/lib/x86_64-linux-gnu/libucs.so.0.0.0"
APP = "/srv/leaky_server"
GO = "/srv/goalloc"
PY = "/usr/bin/python3.11"
C10 = "/site-packages/torch/lib/libc10.so"
TORCH = "/site-packages/torch/lib/libtorch_cpu.so"


def f(module: str, offset: int, function: str | None) -> Frame:
    return Frame(pc=0x1000 + offset, module=module, offset=offset, function=function)


def test_labels_skip_allocator_and_hook_layers() -> None:
    ucm = (f(LIBC, 0x1, "syscall"), f(UCM, 0x2, "ucm_orig_mmap"), f(UCS, 0x3, "ucs_mpool_grow"), f(APP, 0x10, "main"))
    assert label_from_frames(ucm) == "main (leaky_server+0x10)"
    go = (f(GO, 0x45EDC2, "runtime.sysMmap"), f(GO, 0x400, "runtime.mallocgc"), f(GO, 0x500, "main.leak"))
    assert label_from_frames(go) == "main.leak (goalloc+0x500)"
    py = (
        f(LIBC, 0x1, "mmap64"),
        f(PY, 0x20, "_PyObject_ArenaMmap"),
        f(PY, 0x21, "new_arena"),
        f(PY, 0x30, "list_append"),
    )
    assert label_from_frames(py) == "list_append (python3.11+0x30)"
    c10 = (
        f(LIBC, 0x1, "posix_memalign"),
        f(C10, 0x40, "c10::alloc_cpu(unsigned long)"),
        f(C10, 0x41, "c10::DefaultCPUAllocator::allocate(unsigned long)"),
        f(TORCH, 0x50, "at::detail::empty_generic(...)"),
        f(TORCH, 0x60, "at::native::randn(...)"),
    )
    assert label_from_frames(c10) == "at::native::randn(...) (libtorch_cpu.so+0x60)"
    # all in the layers: the first frame that is not a system-call primitive
    assert label_from_frames((f(LD, 0x1, "__mmap64"), f(LD, 0x6A79, "_dl_map_segments"))) == (
        "_dl_map_segments (ld-linux-x86-64.so.2+0x6a79)"
    )


def test_colliding_labels_get_the_first_differing_frame() -> None:
    # the same caller, different paths through libucs: told apart inward
    a = (f(LIBC, 0x1, "syscall"), f(UCS, 0x100, "ucs_mpool_grow"), f(APP, 0x14FD, "main"))
    b = (f(LIBC, 0x1, "syscall"), f(UCS, 0x200, "ucs_rcache_create"), f(APP, 0x14FD, "main"))
    # the same function called from two places: told apart outward
    c = (f(LIBC, 0x1, "mmap64"), f(APP, 0x30, "alloc_block"), f(APP, 0x40, "serve"), f(APP, 0x50, "main"))
    d = (f(LIBC, 0x1, "mmap64"), f(APP, 0x30, "alloc_block"), f(APP, 0x60, "reload"), f(APP, 0x50, "main"))
    todo = [Labelled(i, fr, (), 0, label_from_frames(fr)) for i, fr in enumerate((a, b, c, d))]
    for t in todo:
        t.index = next(i for i, x in enumerate(t.frames) if x.module == APP)
    distinct_labels(todo)
    assert [t.label for t in todo] == [
        "main (leaky_server+0x14fd) into ucs_mpool_grow (libucs.so.0.0.0+0x100)",
        "main (leaky_server+0x14fd) into ucs_rcache_create (libucs.so.0.0.0+0x200)",
        "alloc_block (leaky_server+0x30) via serve (leaky_server+0x40)",
        "alloc_block (leaky_server+0x30) via reload (leaky_server+0x60)",
    ]
    # identical frames: the stack id, as a last resort
    same = [Labelled(i, a, (), 2, "main (leaky_server+0x14fd)") for i in (7, 8)]
    distinct_labels(same)
    assert [t.label for t in same] == ["main (leaky_server+0x14fd) [stack 7]", "main (leaky_server+0x14fd) [stack 8]"]


def test_go_stacks_that_all_start_in_sys_mmap_are_told_apart() -> None:
    callers = ("main.leak", "main.cache", "runtime.gcBgMarkWorker", "runtime.bgsweep")
    stacks = [
        StackStats(
            id=i,
            frames=(
                f(GO, 0x45EDC2, "runtime.sysMmap"),
                f(GO, 0x45E000, "runtime.sysReserve"),
                f(GO, 0x500 + i, caller),
            ),
            live_bytes=1,
        )
        for i, caller in enumerate(callers)
    ]
    label_all(stacks)
    assert [s.label for s in stacks] == [
        "main.leak (goalloc+0x500)",
        "main.cache (goalloc+0x501)",
        "runtime.sysMmap (goalloc+0x45edc2) via runtime.gcBgMarkWorker (goalloc+0x502)",
        "runtime.sysMmap (goalloc+0x45edc2) via runtime.bgsweep (goalloc+0x503)",
    ]


def test_the_loader_and_library_files_are_libraries_not_candidates() -> None:
    loader = StackStats(id=1, frames=(f(LD, 0x1, "__mmap64"), f(LD, 0x2, "_dl_map_segments")), live_bytes=10)
    ctor = StackStats(  # a library's constructor run by the loader maps its own data: not the loader's doing
        id=2, frames=(f(LIBC, 0x1, "mmap64"), f(UCS, 0x2, "ucs_init"), f(LD, 0x3, "call_init")), live_bytes=5
    )
    idle = StackStats(id=3, frames=(f(LIBC, 0x1, "munmap"), f(APP, 0x2, "main")), events=1)
    assert loads_libraries(loader.frames) and not loads_libraries(ctor.frames)
    assert (kind_of(loader), kind_of(ctor), kind_of(idle)) == ("library", "candidate", "idle")
    dlopen_by_hand = StackStats(id=4, frames=(f(LIBC, 0x1, "mmap64"), f(APP, 0x2, "my_loader")), live_bytes=8)
    assert kind_of(dlopen_by_hand, elf_bytes=8) == "library"  # all it holds maps ELF files
    for s, k in ((loader, "library"), (ctor, "candidate"), (idle, "idle"), (dlopen_by_hand, "library")):
        s.kind = k
    assert [s.id for s in order([loader, idle, dlopen_by_hand, ctor])] == [2, 3, 1, 4]


def test_culprits_by_their_innermost_layer_frame() -> None:
    assert culprit_of((f(LIBC, 0x1, "syscall"), f(UCM, 0x2, "ucm_orig_mmap"), f(APP, 0x3, "main"))).name == "ucx"
    glibc = (f(LIBC, 0x1, "__GI___mmap64"), f(LIBC, 0x2, "alloc_new_heap"), f(LIBC, 0x3, "__GI___libc_malloc"))
    assert culprit_of(glibc).name == "glibc-malloc"  # type: ignore[union-attr]
    stripped_libc = (f(LIBC, 0x1, None), f(LIBC, 0x2, "malloc"), f(APP, 0x3, "main"))
    assert culprit_of(stripped_libc).name == "glibc-malloc"  # type: ignore[union-attr]
    py = (f(LIBC, 0x1, "mmap64"), f(PY, 0x2, "_PyObject_ArenaMmap"), f(PY, 0x3, "new_arena"))
    assert culprit_of(py).name == "cpython-obmalloc"  # type: ignore[union-attr]
    je = (f("/usr/lib/libjemalloc.so.2", 0x1, None), f(APP, 0x2, "main"))
    assert culprit_of(je).name == "jemalloc"  # type: ignore[union-attr]
    tc = (f(LIBC, 0x1, "mmap64"), f("/usr/lib/libtcmalloc.so.4", 0x1, "TCMalloc_SystemAlloc"))
    assert culprit_of(tc).name == "tcmalloc"  # type: ignore[union-attr]
    go = (f(GO, 0x1, "runtime.sysMmap"), f(GO, 0x2, "main.main"))
    assert culprit_of(go).name == "go-runtime"  # type: ignore[union-attr]
    assert culprit_of((f(LIBC, 0x1, "mmap64"), f(APP, 0x2, "main"))) is None
    # glibc's realloc (named __GI___libc_realloc with debug info) under a CPython list: glibc, not pymalloc
    realloc = (f(LIBC, 0x1, "__GI___mremap"), f(LIBC, 0x2, "mremap_chunk"), f(LIBC, 0x3, "__GI___libc_realloc"))
    assert culprit_of((*realloc, f(PY, 0x4, "list_resize"))).name == "glibc-malloc"  # type: ignore[union-attr]
    assert culprit_of((f(LIBC, 0x1, "mmap64"), f(PY, 0x4, "list_resize"))) is None  # a CPython frame, not pymalloc


def test_a_hint_only_when_the_culprit_owns_the_growth() -> None:
    ucx = StackStats(id=1, frames=(f(LIBC, 0x1, "syscall"), f(UCM, 0x2, "ucm_mmap"), f(APP, 3, "main")))
    app = StackStats(id=2, frames=(f(LIBC, 0x1, "mmap64"), f(APP, 0x4, "main")))
    ucx.rss_growth_bytes, app.rss_growth_bytes = 95, 5
    hints = hints_for([ucx, app], lambda s: s.rss_growth_bytes)
    assert [(h.culprit, h.stack_ids, h.bytes) for h in hints] == [("ucx", (1,), 95)]
    assert "UCX_MEM_MMAP_HOOK_MODE=none" in hints[0].text and "UCX_RCACHE_MAX_UNRELEASED" in hints[0].text
    assert hints[0].doc.startswith("https://")
    ucx.rss_growth_bytes = 5
    app.rss_growth_bytes = 95
    assert hints_for([ucx, app], lambda s: s.rss_growth_bytes) == []  # 5% is not "owning the growth"
