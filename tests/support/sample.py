"""A hand-made :class:`Analysis` of a leaking process, for the reporter tests (test-only: not part of the package).

It has what real captures have: a libucm mmap leak that owns most of the growth, a C++ stack under Python frames,
a stripped library, a brk user, a stack that unmapped everything it mapped, and regions that are new, grew, shrank,
went away or stayed the same. ``hostile=True`` gives one stack names that would be markup if not escaped.
"""

from __future__ import annotations

from sysbreak.analysis.model import Analysis, Frame, PyFrame, Region, RegionOwner, Sample, StackStats
from sysbreak.analysis.rank import order

KiB = 1024
MiB = 1024 * KiB

LIBC = "/usr/lib/x86_64-linux-gnu/libc.so.6"
LIBUCM = "/usr/lib/x86_64-linux-gnu/libucm.so.0.0.0"
EXE = "/srv/app/fixtures/build/ucm_leak"
LIBPY = "/usr/lib/x86_64-linux-gnu/libpython3.11.so.1.0"
LIBSTDCXX = "/usr/lib/x86_64-linux-gnu/libstdc++.so.6"
LIBDEC = "/srv/app/build/libdecoder.so"
STRIPPED = "/srv/app/fixtures/build/libsbstripped.so"

BASE_LIBC = 0x7FFFF7C00000
BASE_UCM = 0x7FFFF7F80000
BASE_EXE = 0x555555554000


def _f(
    base: int, module: str, offset: int, function: str | None, file: str | None = None, line: int | None = None
) -> Frame:
    return Frame(pc=base + offset, module=module, offset=offset, function=function, file=file, line=line)


def sample_analysis(*, hostile: bool = False) -> Analysis:
    t0 = 8812.25
    ucm = StackStats(
        id=7,
        frames=(
            _f(BASE_LIBC, LIBC, 0x10F89D, "syscall"),
            _f(BASE_UCM, LIBUCM, 0x9E1B, "ucm_orig_mmap", "ucm/util/reloc.c", 102),
            _f(BASE_UCM, LIBUCM, 0xA100, "ucm_mmap", "ucm/event/event.c", 188),
            _f(BASE_EXE, EXE, 0x1189, "leak_region", "fixtures/src/ucm_leak.c", 31),
            _f(BASE_EXE, EXE, 0x1250, "main", "fixtures/src/ucm_leak.c", 57),
            _f(BASE_LIBC, LIBC, 0x271CA, "__libc_start_call_main"),
        ),
        events=410,
        by_syscall={"mmap": 400, "munmap": 10},
        mapped_bytes=410 * MiB,
        unmapped_bytes=10 * MiB,
        live_bytes=400 * MiB,
        rss_bytes=399 * MiB,
        growth_bytes=400 * MiB,
        growth_per_min=400 * MiB,
        first_t=t0 + 0.5,
        last_t=t0 + 59.5,
        label="leak_region (ucm_leak+0x1189)",
    )
    cxx_fn = "std::vector<char, std::allocator<char> >::_M_default_append(unsigned long)"
    cxx = StackStats(
        id=3,
        frames=(
            _f(BASE_LIBC, LIBC, 0x11B6A0, "mmap64"),
            _f(BASE_LIBC, LIBC, 0xA2B1C, "sysmalloc"),
            _f(BASE_LIBC, LIBC, 0xA3F10, "_int_malloc"),
            _f(BASE_LIBC, LIBC, 0xA4C5A, "malloc"),
            _f(0x7FFFF7800000, LIBSTDCXX, 0xAE2CC, "operator new(unsigned long)"),
            _f(0x7FFFF7400000, LIBDEC, 0x4410, cxx_fn, "/usr/include/c++/12/bits/vector.tcc", 650),
            _f(0x7FFFF7400000, LIBDEC, 0x3A80, "Decoder::step<float>(int)", "src/decoder.cc", 88),
            _f(0x7FFFF7400000, LIBDEC, 0x2F00, "decoder_step", "src/module.c", 40),
            _f(0x7FFFF7000000, LIBPY, 0x1F0A30, "_PyEval_EvalFrameDefault"),
            _f(0x7FFFF7000000, LIBPY, 0x2A1100, "PyEval_EvalCode"),
            _f(0x7FFFF7000000, LIBPY, 0x2F5E00, "Py_RunMain"),
            _f(0x555555554000, "/usr/bin/python3.11", 0x1130, "main"),
        ),
        python=(
            PyFrame("/srv/app/worker.py", 41, "decode_step"),
            PyFrame("/srv/app/worker.py", 12, "run"),
            PyFrame("/srv/app/main.py", 3, "<module>"),
        ),
        events=64,
        by_syscall={"mmap": 48, "munmap": 16},
        mapped_bytes=96 * MiB,
        unmapped_bytes=36 * MiB,
        live_bytes=60 * MiB,
        rss_bytes=58 * MiB,
        growth_bytes=28 * MiB,
        growth_per_min=28 * MiB,
        first_t=t0 + 2.0,
        last_t=t0 + 58.0,
        label="Decoder::step<float>(int) (libdecoder.so+0x3a80)",
    )
    stripped = StackStats(
        id=12,
        frames=(
            Frame(pc=0x7FFFF7FB1139, module=STRIPPED, offset=0x1139, function=None),
            Frame(pc=0x7FFFF7FB1200, module=STRIPPED, offset=0x1200, function=None),
            _f(BASE_EXE, EXE, 0x1300, "main"),
        ),
        events=2,
        by_syscall={"mmap": 2},
        mapped_bytes=8 * MiB,
        live_bytes=8 * MiB,
        rss_bytes=2 * MiB,
        first_t=t0 + 0.1,
        last_t=t0 + 0.2,
        label="libsbstripped.so+0x1139",
    )
    heap = StackStats(
        id=1,
        frames=(
            _f(BASE_LIBC, LIBC, 0x11A1B0, "brk"),
            _f(BASE_LIBC, LIBC, 0x11A230, "sbrk"),
            _f(BASE_LIBC, LIBC, 0xA2D00, "sysmalloc"),
            _f(BASE_LIBC, LIBC, 0xA4C5A, "malloc"),
            _f(BASE_EXE, EXE, 0x1250, "main"),
        ),
        events=5,
        by_syscall={"brk": 5},
        mapped_bytes=128 * KiB,
        live_bytes=128 * KiB,
        rss_bytes=128 * KiB,
        growth_bytes=128 * KiB,
        growth_per_min=128 * KiB,
        first_t=t0 + 0.0,
        last_t=t0 + 30.0,
        label="malloc (libc.so.6+0xa4c5a)",
    )
    churn = StackStats(
        id=5,
        frames=(
            _f(BASE_LIBC, LIBC, 0x11B6A0, "mmap64"),
            _f(BASE_EXE, EXE, 0x1400, "scratch_buffer", "fixtures/src/ucm_leak.c", 70),
            _f(BASE_EXE, EXE, 0x1250, "main"),
        ),
        events=400,
        by_syscall={"mmap": 200, "munmap": 200},
        mapped_bytes=200 * MiB,
        unmapped_bytes=200 * MiB,
        first_t=t0 + 1.0,
        last_t=t0 + 59.0,
        label="scratch_buffer (ucm_leak+0x1400)",
    )
    # resident numbers, as the analysis gives them (first snapshot -> last), and the kinds
    for st, first_rss, peak in ((ucm, 0, 405 * MiB), (cxx, 30 * MiB, 64 * MiB), (stripped, 2 * MiB, 8 * MiB)):
        st.first_rss_bytes, st.peak_bytes = first_rss, peak
    heap.first_rss_bytes, heap.peak_bytes = 4 * KiB, 128 * KiB
    churn.peak_bytes, churn.kind = 8 * MiB, "idle"
    for st in (ucm, cxx, stripped, heap):
        st.rss_growth_bytes = st.rss_bytes - st.first_rss_bytes
        st.anon_rss_bytes = st.rss_bytes
        st.rss_growth_per_min = float(st.rss_growth_bytes)  # a 60 s capture
    stacks = [ucm, cxx, stripped, heap, churn]
    if hostile:
        evil = StackStats(
            id=99,
            frames=(
                Frame(
                    pc=0x7FFFF7A00010,
                    module="/tmp/\"evil\"&'lib'.so",
                    offset=0x10,
                    function="<script>alert(1)</script>",
                ),
                Frame(pc=0x7FFFF7A00020, module="/tmp/evil.so", offset=0x20, function='<img src=x onerror="alert(2)">'),
            ),
            python=(PyFrame("</details><b>x.py", 1, "<svg onload=alert(3)>"),),
            events=1,
            by_syscall={"mmap": 1},
            mapped_bytes=4 * KiB,
            live_bytes=4 * KiB,
            label="<script>alert(1)</script>",
            peak_bytes=4 * KiB,
        )
        stacks.append(evil)
    stacks = order(stacks, "rss-growth")

    regions = [
        Region(BASE_EXE, BASE_EXE + 4 * KiB, "r--p", EXE, 4 * KiB, 4 * KiB, 4 * KiB, 4 * KiB),
        Region(
            0x555555559000,
            0x55555557A000,
            "rw-p",
            "[heap]",
            132 * KiB,
            132 * KiB,
            4 * KiB,
            4 * KiB,
            "grew",
            [RegionOwner(1, 128 * KiB)],
            4 * KiB,
        ),
        Region(
            0x7FFFD0000000,
            0x7FFFD0000000 + 60 * MiB,
            "rw-p",
            "[anon]",
            60 * MiB,
            58 * MiB,
            32 * MiB,
            30 * MiB,
            "grew",
            [RegionOwner(3, 56 * MiB)],
            4 * MiB,
        ),
        Region(
            0x7FFFE0000000,
            0x7FFFE0000000 + 400 * MiB,
            "rw-p",
            "[anon]",
            400 * MiB,
            399 * MiB,
            0,
            None,
            "new",
            [RegionOwner(7, 400 * MiB)],
            0,
        ),
        Region(
            0x7FFFF6000000,
            0x7FFFF6000000 + 16 * MiB,
            "rw-p",
            "[anon]",
            12 * MiB,
            3 * MiB,
            16 * MiB,
            5 * MiB,
            "shrank",
            [RegionOwner(3, 4 * MiB), RegionOwner(12, 8 * MiB)],
            0,
        ),
        Region(0x7FFFF7000000, 0x7FFFF7200000, "rw-p", "[anon]", 0, None, 2 * MiB, 2 * MiB, "gone"),
        Region(BASE_LIBC, BASE_LIBC + 0x28000, "r--p", LIBC, 160 * KiB, 160 * KiB, 160 * KiB, 160 * KiB),
        Region(BASE_LIBC + 0x28000, BASE_LIBC + 0x1BD000, "r-xp", LIBC, 1620 * KiB, 900 * KiB, 1620 * KiB, 880 * KiB),
        Region(BASE_UCM, BASE_UCM + 0x2D000, "r-xp", LIBUCM, 180 * KiB, 120 * KiB, 180 * KiB, 120 * KiB),
        Region(0x7FFFFFFDE000, 0x7FFFFFFFF000, "rw-p", "[stack]", 132 * KiB, 20 * KiB, 132 * KiB, 16 * KiB),
    ]
    if hostile:
        regions.append(
            Region(
                0x7FFFF7A00000,
                0x7FFFF7A01000,
                "rw-p",
                "<script>alert(4)</script>",
                4 * KiB,
                4 * KiB,
                0,
                None,
                "new",
                [RegionOwner(99, 4 * KiB)],
            )
        )
        regions.sort(key=lambda r: r.start)
    timeline = []
    for i in range(13):
        t = 5.0 * i
        timeline.append(Sample(t=t, rss_bytes=int((12 + 37.5 * i) * MiB), live_bytes=int(max(0, 36.7 * i - 4) * MiB)))
    for i in range(12):  # the live bytes also move between snapshots
        timeline.append(Sample(t=5.0 * i + 2.5, rss_bytes=None, live_bytes=int((36.7 * i + 14) * MiB)))
    timeline.sort(key=lambda s: s.t)
    warnings = ["the log has no 'end' record: the capture was cut short (everything before the cut is used)"]
    if hostile:
        warnings.append("<b>bold</b> & <script>alert(5)</script>")
    by_syscall: dict[str, int] = {}
    for stack in stacks:
        for name, count in stack.by_syscall.items():
            by_syscall[name] = by_syscall.get(name, 0) + count
    return Analysis(
        source="/srv/app/sysbreak-capture-4242",
        pid=4242,
        exe=EXE,
        syscalls=["mmap", "munmap", "mremap", "brk"],
        t0=t0,
        t1=t0 + 60.0,
        events=sum(stack.events for stack in stacks),
        by_syscall=by_syscall,
        stacks=stacks,
        regions=regions,
        timeline=timeline,
        snapshots=13,
        warnings=warnings,
    )
