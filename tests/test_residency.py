"""Resident pages from /proc/PID/pagemap (sysbreak.capture.residency), on this very process."""

from __future__ import annotations

import ctypes
import mmap
import os

from sysbreak.capture.residency import (
    PAGE,
    format_resident,
    parse_resident,
    partial_vmas,
    read_resident,
    resident_in,
)


def test_runs_of_a_partly_touched_mapping() -> None:
    m = mmap.mmap(-1, 16 * PAGE, flags=mmap.MAP_PRIVATE)
    try:
        base = ctypes.addressof(ctypes.c_char.from_buffer(m))
        for page in (0, 1, 2, 7, 15):
            m[page * PAGE] = 1
        runs = read_resident(os.getpid(), [(base, base + 16 * PAGE)])
        assert runs == [
            (base, base + 3 * PAGE),
            (base + 7 * PAGE, base + 8 * PAGE),
            (base + 15 * PAGE, base + 16 * PAGE),
        ]
        text = format_resident([(base, base + 16 * PAGE)], runs)
        assert parse_resident(text) == ([(base, base + 16 * PAGE)], runs)
        starts = [r[0] for r in runs]
        assert resident_in(runs, starts, base, base + 16 * PAGE) == 5 * PAGE
        assert resident_in(runs, starts, base + 2 * PAGE, base + 8 * PAGE) == 2 * PAGE
        with open(f"/proc/{os.getpid()}/smaps", encoding="utf-8") as fh:
            vmas = partial_vmas(fh.read())  # anonymous and partly resident (the kernel may have merged it)
        assert any(s <= base and base + 16 * PAGE <= e for s, e in vmas)
    finally:
        del base
        m.close()


def test_shared_anonymous_memory_counts_as_anonymous() -> None:
    m = mmap.mmap(-1, 4 * PAGE)  # MAP_SHARED | MAP_ANONYMOUS: smaps calls it /dev/zero (deleted)
    try:
        m[0] = 1
        with open(f"/proc/{os.getpid()}/smaps", encoding="utf-8") as fh:
            text = fh.read()
        assert "/dev/zero (deleted)" in text
        from sysbreak.maps import parse_smaps

        zero = [v for v in parse_smaps(text).vmas if v.path.startswith("/dev/zero")]
        assert zero and all(v.is_anonymous for v in zero)
    finally:
        m.close()


def test_unreadable_or_damaged() -> None:
    assert read_resident(99999999, [(0x1000, 0x2000)]) is None
    assert parse_resident("# vmas zz-1\nnot a range\n10-20\n30-30\n") == ([], [(0x10, 0x20)])
    assert partial_vmas("garbage that is not smaps\n") == []
