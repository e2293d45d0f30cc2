"""analyze(): ground truth from hand-made logs (written with EventLogWriter) and hand-made smaps snapshots."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from support.synthetic import synthetic_capture

from sysbreak.analysis import analyze
from sysbreak.analysis.model import Analysis, Frame, Region, StackStats
from sysbreak.analysis.stacks import frame_description, label_from_frames
from sysbreak.capture import EventLogWriter
from sysbreak.errors import SysbreakError

P = 4096
A = 0x7F0000000000
LIBC = "/usr/lib/x86_64-linux-gnu/libc.so.6"
LIBUCM = "/usr/lib/x86_64-linux-gnu/libucm.so.0.0.0"
APP = "/srv/app"
NEG1 = 2**64 - 1


def fr(module: str, off: int, fn: str | None) -> dict[str, Any]:
    return {"pc": 0x1000000 + off, "module": module, "offset": off, "function": fn, "file": None, "line": None}


STACKS = {
    "leak": [fr(LIBC, 0x100, "syscall"), fr(LIBUCM, 0x200, "ucm_mmap"), fr(APP, 0x1189, "leak_region"),
             fr(APP, 0x1250, "main")],
    "churn": [fr(LIBC, 0x100, "syscall"), fr(LIBUCM, 0x200, "ucm_mmap"), fr(APP, 0x1400, "scratch"),
              fr(APP, 0x1250, "main")],
    "mover": [fr(LIBC, 0x300, "mremap"), fr(APP, 0x1500, "grow_table"), fr(APP, 0x1250, "main")],
    "heap": [fr(LIBC, 0x400, "brk"), fr(LIBC, 0x410, "sbrk"), fr(LIBC, 0x420, "malloc"), fr(APP, 0x1600, "load"),
             fr(APP, 0x1250, "main")],
    "stripped": [fr("/srv/libx.so", 0x1139, None), fr(APP, 0x1250, "main")],
}  # fmt: skip


class Log:
    def __init__(self, path: Path, t0: float = 100.0) -> None:
        self.w = EventLogWriter(path, append=False)
        self.w.header(arch="x86_64", pid=42, exe=APP, syscalls=["mmap", "munmap", "mremap", "brk"], mode="callsite",
                      t0=t0, wall0="2026-11-23T10:00:00+00:00", tool="test", gdb="none")  # fmt: skip
        self.ids: dict[str, int] = {}

    def sid(self, name: str) -> int:
        sid = self.w.stack_id((name,), STACKS[name], [])
        self.ids[name] = sid
        return sid

    def mmap(self, t: float, addr: int, length: int, who: str, flags: int = 0x22, ret: int | None = None) -> None:
        self.w.event(t=t, tid=43, nr=9, name="mmap", args=[0, length, 3, flags, NEG1, 0],
                     ret=addr if ret is None else ret, stack=self.sid(who))  # fmt: skip

    def munmap(self, t: float, addr: int, length: int, who: str) -> None:
        self.w.event(t=t, tid=43, nr=11, name="munmap", args=[addr, length, 0, 0, 0, 0], ret=0, stack=self.sid(who))

    def mremap(self, t: float, old: int, old_size: int, new_size: int, flags: int, ret: int, who: str) -> None:
        self.w.event(t=t, tid=43, nr=25, name="mremap", args=[old, old_size, new_size, flags, 0, 0], ret=ret,
                     stack=self.sid(who))  # fmt: skip

    def brk(self, t: float, req: int, ret: int, who: str) -> None:
        self.w.event(t=t, tid=43, nr=12, name="brk", args=[req, 0, 0, 0, 0, 0], ret=ret, stack=self.sid(who))

    def close(self, t: float | None = None) -> None:
        if t is not None:
            self.w.end("detach", t)
        self.w.close()


def smaps(vmas: list[tuple[int, int, str, str, int | None]]) -> str:
    out = []
    for start, end, perms, path, rss in vmas:
        dev = "fe:00 77" if path.startswith("/") else "00:00 0"
        out.append(f"{start:x}-{end:x} {perms} 00000000 {dev:<10} {path}".rstrip() + "\n")
        out.append(f"Size: {(end - start) // 1024} kB\n")
        if rss is not None:
            out.append(f"Rss: {rss // 1024} kB\nPss: {rss // 1024} kB\n")
        out.append("VmFlags: rd wr mr mw me ac\n")
    return "".join(out)


def write_capture(d: Path, snaps: list[tuple[float, str]], *, meta: dict[str, Any] | None = None) -> None:
    (d / "snapshots").mkdir(parents=True, exist_ok=True)
    m = {"format": "sysbreak-capture/1", "pid": 42, "exe": APP, "t0": 100.0, "t1": 200.0, "end_reason": "exit",
         "started": "2026-11-23T10:00:00+00:00", "syscalls": ["mmap", "munmap", "mremap", "brk"]}  # fmt: skip
    if meta is not None:
        m = meta
    (d / "meta.json").write_text(json.dumps(m))
    with (d / "snapshots" / "index.jsonl").open("w") as fh:
        for i, (t, text) in enumerate(snaps, 1):
            name = f"smaps-{i:06d}.txt"
            (d / "snapshots" / name).write_text(text)
            fh.write(json.dumps({"seq": i, "t": t, "wall": "", "file": name}) + "\n")


def by_label(a: Analysis) -> dict[str, StackStats]:
    return {s.label.split(" ")[0]: s for s in a.stacks}


def region_at(a: Analysis, start: int, status: str | None = None) -> Region:
    return [r for r in a.regions if r.start == start and (status is None or r.status == status)][0]


HEAP = 0x555555559000
LIB = (0x555555554000, 0x555555555000, "r-xp", APP, 4096)


def scenario(tmp: Path) -> Path:
    """The story the assertions below check, page by page."""
    d = tmp / "cap"
    d.mkdir()
    log = Log(d / "events.jsonl")
    log.brk(100.5, 0, HEAP + 0x21000, "heap")  # the heap as found: [HEAP, HEAP+0x21000)
    log.mmap(101.0, A + 16 * P, 4 * P, "churn")  # mapped before the first snapshot, unmapped later
    # first snapshot at t=102
    log.mmap(103.0, A, 8 * P, "leak")  # leak: 8 pages
    log.mmap(103.5, A + 8 * P, 2 * P, "churn")  # adjacent: the kernel merges it with the leak's VMA
    log.mmap(104.0, A + 0x100000, 4 * P, "leak", ret=-12)  # failed: nothing
    log.munmap(105.0, A + 16 * P, 4 * P, "churn")  # [A+16P, A+20P) goes away: a "gone" region
    log.mmap(106.0, A + 32 * P, 4 * P, "churn")
    log.mremap(107.0, A + 32 * P, 4 * P, 6 * P, 1, A + 64 * P, "mover")  # moved: 4 pages keep churn, 2 new: mover
    log.brk(108.0, HEAP + 0x31000, HEAP + 0x31000, "heap")  # +16 pages of heap
    log.mmap(109.0, A + 96 * P, 6 * P, "stripped")  # later split by mprotect into 2 VMAs
    log.close(110.0)
    first = smaps([LIB, (HEAP, HEAP + 0x21000, "rw-p", "[heap]", 0x21000), (A + 16 * P, A + 20 * P, "rw-p", "", 4 * P)])
    last = smaps(
        [
            LIB,
            (HEAP, HEAP + 0x31000, "rw-p", "[heap]", 0x31000),
            (A, A + 10 * P, "rw-p", "", 10 * P),  # leak 8 + churn 2, merged
            (A + 64 * P, A + 70 * P, "rw-p", "", 3 * P),
            (A + 96 * P, A + 98 * P, "r--p", "", 0),  # mprotect split
            (A + 98 * P, A + 102 * P, "rw-p", "", 4 * P),
            (A + 200 * P, A + 201 * P, "rw-p", "", P),  # not explained by any event
        ]
    )
    write_capture(d, [(102.0, first), (111.0, last)])
    return d


def test_scenario_ledger_numbers(tmp_path: Path) -> None:
    a = analyze(scenario(tmp_path))
    s = by_label(a)
    leak, churn, mover, heap, stripped = s["leak_region"], s["scratch"], s["grow_table"], s["load"], s["libx.so+0x1139"]
    assert leak.live_bytes == 8 * P and leak.mapped_bytes == 8 * P and leak.unmapped_bytes == 0
    assert leak.events == 2 and leak.by_syscall == {"mmap": 2}
    assert churn.mapped_bytes == 10 * P and churn.unmapped_bytes == 4 * P and churn.live_bytes == 6 * P
    assert mover.mapped_bytes == 2 * P and mover.live_bytes == 2 * P and mover.by_syscall == {"mremap": 1}
    assert heap.mapped_bytes == 16 * P and heap.live_bytes == 16 * P and heap.events == 2
    assert stripped.live_bytes == 6 * P
    assert a.events == 10 and a.by_syscall == {"mmap": 6, "brk": 2, "munmap": 1, "mremap": 1}
    assert a.pid == 42 and a.exe == APP and a.t0 == 100.0 and a.t1 == 111.0 and a.snapshots == 2
    assert leak.first_t == 103.0 and leak.last_t == 104.0
    for st in a.stacks:
        assert st.mapped_bytes - st.unmapped_bytes == st.live_bytes
    # the one page at A + 200P that no event explains is said, with its bytes (the heap's unexplained bytes are the
    # ones it had before the capture: not growth)
    assert a.warnings == [
        # the merged VMA at A (leak 8 pages + churn 2, 10 of 10 resident) is wholly resident: exact, not said; the
        # moved one at A + 64P (3 of 6 pages resident, two owners) has no resident-pages record: said
        "1 partly resident VMA of the last snapshot holds several stacks' mappings and no record of which pages are "
        "resident (a capture without resident-*.txt): their RSS is shared out by bytes, an estimate",
        "4096 bytes (4.0 KiB) of growth in 1 region are explained by no captured call; the capture does not list "
        "the sites it could not watch (made by an older sysbreak)",
    ]
    assert a.blind_spots is not None and (a.blind_spots.unexplained_growth_bytes, a.blind_spots.regions) == (P, 1)


def test_scenario_regions(tmp_path: Path) -> None:
    a = analyze(scenario(tmp_path))
    ids = {st.label.split(" ")[0]: st.id for st in a.stacks}
    merged = region_at(a, A)
    assert merged.status == "new" and merged.size == 10 * P and merged.first_size == 0
    assert [(o.stack_id, o.bytes) for o in merged.owners] == [(ids["leak_region"], 8 * P), (ids["scratch"], 2 * P)]
    assert merged.unexplained_bytes == 0 and merged.rss == 10 * P
    moved = region_at(a, A + 64 * P)
    assert [(o.stack_id, o.bytes) for o in moved.owners] == [(ids["scratch"], 4 * P), (ids["grow_table"], 2 * P)]
    gone = region_at(a, A + 16 * P)
    assert gone.status == "gone" and gone.size == 0 and gone.first_size == 4 * P and gone.first_rss == 4 * P
    assert [(o.stack_id, o.bytes) for o in gone.owners] == [(ids["scratch"], 4 * P)]  # as of the first snapshot
    heap = region_at(a, HEAP)
    assert heap.path == "[heap]" and heap.status == "grew" and heap.growth == 16 * P
    assert [(o.stack_id, o.bytes) for o in heap.owners] == [(ids["load"], 16 * P)]
    assert heap.unexplained_bytes == 0x21000
    split = [r for r in a.regions if r.start in (A + 96 * P, A + 98 * P)]
    assert [[(o.stack_id, o.bytes) for o in r.owners] for r in split] == [
        [(ids["libx.so+0x1139"], 2 * P)],
        [(ids["libx.so+0x1139"], 4 * P)],
    ]
    alien = region_at(a, A + 200 * P)
    assert alien.owners == [] and alien.unexplained_bytes == P and alien.status == "new"
    lib = region_at(a, LIB[0])
    assert lib.status == "same" and lib.path == APP and lib.first_size == P
    assert [r.start for r in a.regions] == sorted(r.start for r in a.regions)
    for r in a.regions:
        total = r.size if r.status != "gone" else r.first_size
        assert sum(o.bytes for o in r.owners) + r.unexplained_bytes == total


def test_scenario_rss_growth_and_ranking(tmp_path: Path) -> None:
    a = analyze(scenario(tmp_path))
    s = by_label(a)
    leak, churn, mover, heap, stripped = s["leak_region"], s["scratch"], s["grow_table"], s["load"], s["libx.so+0x1139"]
    assert leak.rss_bytes == 8 * P and churn.rss_bytes == 2 * P + 2 * P  # 10 pages resident in the merged VMA
    assert mover.rss_bytes == P  # 3 of 6 pages resident, pro-rated: 2/6 of them
    assert stripped.rss_bytes == 4 * P  # the r--p part has none
    # growth: bytes owned in the last snapshot that were mapped after the first snapshot
    assert leak.growth_bytes == 8 * P and churn.growth_bytes == 6 * P and mover.growth_bytes == 2 * P
    assert heap.growth_bytes == 16 * P and stripped.growth_bytes == 6 * P
    assert leak.growth_per_min == pytest.approx(8 * P * 60 / 9.0)
    # resident bytes per stack at each end: churn owned the 4 resident pages that later went away at the first
    assert [(x.first_rss_bytes, x.rss_bytes, x.rss_growth_bytes) for x in (heap, leak, stripped, mover, churn)] == [
        (0, 16 * P, 16 * P),
        (0, 8 * P, 8 * P),
        (0, 4 * P, 4 * P),
        (0, P, P),
        (4 * P, 4 * P, 0),
    ]
    assert (heap.anon_rss_bytes, heap.file_rss_bytes, stripped.reserved_bytes) == (16 * P, 0, 0)
    assert leak.peak_bytes == 8 * P and churn.peak_bytes == 6 * P  # 4 + 2, then 4 gone before the last 4 came
    # per minute of its own time: from its first call (t=103) to the end (t=111), not from the first snapshot
    assert leak.rss_growth_per_min == pytest.approx(8 * P * 60 / 8.0)
    assert heap.rss_growth_per_min == pytest.approx(16 * P * 60 / 9.0)  # its first call predates the snapshot
    # ranking: resident growth first (the default), then resident bytes
    assert a.sort == "rss-growth"
    assert [st.label.split(" ")[0] for st in a.stacks] == [
        "load",
        "leak_region",
        "libx.so+0x1139",
        "grow_table",
        "scratch",
    ]
    # --sort live: live bytes first, then growth
    (tmp_path / "b").mkdir()
    assert [st.label.split(" ")[0] for st in analyze(scenario(tmp_path / "b"), sort="live").stacks] == [
        "load",
        "leak_region",
        "scratch",
        "libx.so+0x1139",
        "grow_table",
    ]
    assert leak.label == "leak_region (srv+0x1189)".replace("srv", os.path.basename(APP))
    # timeline: the two snapshots, relative to t0, with the ledger live bytes at their time
    snaps = [smp for smp in a.timeline if smp.rss_bytes is not None]
    assert [(smp.t, smp.live_bytes) for smp in snaps] == [(2.0, 4 * P), (11.0, (8 + 6 + 2 + 16 + 6) * P)]
    assert snaps[1].rss_bytes == P + 0x31000 + 10 * P + 3 * P + 4 * P + P
    others = [smp for smp in a.timeline if smp.rss_bytes is None]
    assert others and all(0 <= smp.t <= 11 for smp in others)


def test_no_snapshots_growth_is_live(tmp_path: Path) -> None:
    log = Log(tmp_path / "e.jsonl")
    log.mmap(100.0, A, 4 * P, "leak")
    log.mmap(130.0, A + 8 * P, 2 * P, "churn")
    log.munmap(131.0, A + 8 * P, P, "churn")
    log.close(160.0)
    a = analyze(tmp_path / "e.jsonl")
    s = by_label(a)
    assert s["leak_region"].growth_bytes == 4 * P and s["scratch"].growth_bytes == P
    assert s["leak_region"].growth_per_min == pytest.approx(4 * P)  # 60 s of capture
    assert a.regions == [] and a.snapshots == 0 and a.t0 == 100.0 and a.t1 == 160.0


def test_fixed_overwrite_and_stale_warning(tmp_path: Path) -> None:
    log = Log(tmp_path / "e.jsonl")
    log.mmap(100.0, A, 8 * P, "leak")
    log.mmap(101.0, A + 2 * P, 2 * P, "churn", flags=0x12)  # MAP_FIXED: takes 2 of the leak's pages
    log.mmap(102.0, A + 6 * P, P, "stripped")  # not fixed over a live range: a missed munmap
    log.close(103.0)
    a = analyze(tmp_path / "e.jsonl")
    s = by_label(a)
    assert s["leak_region"].live_bytes == 5 * P and s["leak_region"].unmapped_bytes == 3 * P
    assert s["scratch"].live_bytes == 2 * P
    [stale] = [w for w in a.warnings if "still held" in w]
    # how many bytes, which call (seq, tid) got them and which call mapped them, and the cause
    assert stale.startswith(f"{P} bytes were given by the kernel to 1 call(s) while the ledger still held them")
    assert f"seq 3 (tid 43) got [{A + 6 * P:#x}, {A + 7 * P:#x}) still held from seq 1 (tid 43)" in stale
    assert "a release the capture did not see" in stale


def test_depth_folding_and_group_outside(tmp_path: Path) -> None:
    log = Log(tmp_path / "e.jsonl")
    log.mmap(100.0, A, 4 * P, "leak")
    log.mmap(101.0, A + 8 * P, 2 * P, "churn")
    log.close(102.0)
    plain = analyze(tmp_path / "e.jsonl")
    assert len(plain.stacks) == 2
    folded = analyze(tmp_path / "e.jsonl", depth=2)  # both are syscall <- ucm_mmap
    assert len(folded.stacks) == 1
    st = folded.stacks[0]
    assert st.live_bytes == 6 * P and st.events == 2 and len(st.frames) == 2 and sorted(st.stack_ids) == [1, 2]
    assert st.label == "ucm_mmap (libucm.so.0.0.0+0x200)"
    deep = analyze(tmp_path / "e.jsonl", depth=3)
    assert len(deep.stacks) == 2
    grouped = analyze(tmp_path / "e.jsonl", group_outside="libucm|libc")
    assert {s.label for s in grouped.stacks} == {"leak_region (srv+0x1189)".replace("srv", "app"),
                                                 "scratch (app+0x1400)"}  # fmt: skip
    grouped = analyze(tmp_path / "e.jsonl", group_outside="libucm|libc|app")
    assert len(grouped.stacks) == 2  # no frame outside: each stack on its own
    with pytest.raises(SysbreakError, match="regular expression"):
        analyze(tmp_path / "e.jsonl", group_outside="(")
    with pytest.raises(SysbreakError, match="depth"):
        analyze(tmp_path / "e.jsonl", depth=0)


def test_group_outside_merges_callers_of_one_function(tmp_path: Path) -> None:
    log = Log(tmp_path / "e.jsonl")
    STACKS["leak2"] = [fr(LIBC, 0x100, "syscall"), fr(LIBUCM, 0x280, "ucm_mmap_other"), fr(APP, 0x1189, "leak_region"),
                       fr(APP, 0x1300, "other_main")]  # fmt: skip
    try:
        log.mmap(100.0, A, 4 * P, "leak")
        log.mmap(101.0, A + 8 * P, 2 * P, "leak2")
        log.close(102.0)
    finally:
        del STACKS["leak2"]
    g = analyze(tmp_path / "e.jsonl", group_outside="libucm|libc")
    assert len(g.stacks) == 1
    st = g.stacks[0]
    assert st.live_bytes == 6 * P and st.frames[0].function == "leak_region" and len(st.frames) == 1


def test_maps_files_only(tmp_path: Path) -> None:
    f1, f2 = tmp_path / "a.txt", tmp_path / "b.txt"
    f1.write_text(smaps([(A, A + 4 * P, "rw-p", "", 4 * P), (A + 8 * P, A + 9 * P, "rw-p", "", P)]))
    f2.write_text(smaps([(A, A + 6 * P, "rw-p", "", 5 * P)]))
    a = analyze(None, maps_files=[f1, f2])
    assert a.stacks == [] and a.snapshots == 2
    grew = region_at(a, A)
    assert grew.status == "grew" and grew.first_size == 4 * P and grew.size == 6 * P and grew.unexplained_bytes == 6 * P
    assert region_at(a, A + 8 * P).status == "gone"
    with pytest.raises(SysbreakError):
        analyze(None)


def test_maps_files_with_a_log_use_mtime(tmp_path: Path) -> None:
    log = Log(tmp_path / "e.jsonl")
    log.mmap(100.5, A, 4 * P, "leak")
    log.mmap(105.0, A + 4 * P, 4 * P, "leak")
    log.close(110.0)
    first, last = tmp_path / "first.pmap", tmp_path / "last.pmap"
    first.write_text(smaps([(A, A + 4 * P, "rw-p", "", 4 * P)]))
    last.write_text(smaps([(A, A + 8 * P, "rw-p", "", 8 * P)]))
    from datetime import datetime

    wall0 = datetime.fromisoformat("2026-11-23T10:00:00+00:00").timestamp()
    os.utime(first, (wall0 + 2, wall0 + 2))  # t = 102
    os.utime(last, (wall0 + 9, wall0 + 9))  # t = 109
    a = analyze(tmp_path / "e.jsonl", maps_files=[first, last])
    st = a.stacks[0]
    assert st.live_bytes == 8 * P and st.growth_bytes == 4 * P  # half was there at the first file's time
    assert region_at(a, A).status == "grew"
    # Without usable times the files count as taken after the log: no growth between them for the ledger.
    os.utime(first, (wall0 + 5000, wall0 + 5000))
    a = analyze(tmp_path / "e.jsonl", maps_files=[first, last])
    assert any("do not fit" in w for w in a.warnings)
    assert a.stacks[0].growth_bytes == 0


def test_cut_short_capture(tmp_path: Path) -> None:
    d = tmp_path / "cap"
    d.mkdir()
    log = Log(d / "events.jsonl")
    log.mmap(101.0, A, 4 * P, "leak")
    log.mmap(103.0, A + 4 * P, 4 * P, "leak")
    log.close()  # no end record
    with (d / "events.jsonl").open("a") as fh:
        fh.write('{"type":"syscall","seq":3,"t":104.0,"name":"mm')
    s1 = smaps([(A, A + 4 * P, "rw-p", "", 4 * P)])
    s2 = smaps([(A, A + 8 * P, "rw-p", "", 8 * P)])
    s3 = smaps([(A, A + 8 * P, "rw-p", "", 8 * P), (A + 9 * P, A + 10 * P, "rw-p", "", P)])
    write_capture(d, [(102.0, s1), (104.0, s2), (105.0, s3[: len(s3) - 5])], meta={"format": "sysbreak-capture/1"})
    with (d / "snapshots" / "index.jsonl").open("a") as fh:
        fh.write(json.dumps({"seq": 4, "t": 106.0, "file": "smaps-000004.txt"}) + "\n")  # never written
    a = analyze(d)
    assert any("no 'end' record" in w for w in a.warnings)
    assert any("cut short" in w and "smaps-000003" in w for w in a.warnings)
    assert any("smaps-000004.txt is missing" in w for w in a.warnings)
    st = a.stacks[0]
    assert st.live_bytes == 8 * P and st.growth_bytes == 4 * P and st.rss_bytes == 8 * P
    assert region_at(a, A).size == 8 * P


def test_missing_stack_records_and_null_stack(tmp_path: Path) -> None:
    path = tmp_path / "e.jsonl"
    w = EventLogWriter(path, append=False)
    w.header(arch="x86_64", pid=1, t0=0.0)
    w.event(t=1.0, tid=1, nr=9, name="mmap", args=[0, P, 3, 0x22, NEG1, 0], ret=A, stack=7)
    w.event(t=2.0, tid=1, nr=9, name="mmap", args=[0, P, 3, 0x22, NEG1, 0], ret=A + 4 * P, stack=None)
    w.close()
    a = analyze(path)
    labels = sorted(s.label for s in a.stacks)
    assert labels == ["(no stack)", "stack 7 (its frames are not in the log)"]


def test_damaged_event_fields_are_skipped(tmp_path: Path) -> None:
    log = Log(tmp_path / "e.jsonl")
    log.mmap(100.0, A, 4 * P, "leak")
    log.close(101.0)
    with (tmp_path / "e.jsonl").open("a") as fh:
        for rec in (
            {"type": "syscall", "name": "mmap", "args": [0, "x", 3, 34, 0, 0], "ret": A + 64 * P, "stack": 1},
            {"type": "syscall", "name": "mmap", "args": [0, P, 3, 34], "ret": A + 64 * P, "stack": 1, "t": 100},
            {"type": "syscall", "name": "munmap", "args": [A, P], "ret": 0, "stack": "1"},
            {"type": "syscall", "name": "mmap", "args": [0, -5, 0, 0, 0, 0], "ret": A + 80 * P, "stack": 1},
            {"type": "syscall", "name": "mmap", "args": [0, P, 0, 0, 0, 0], "ret": A + 1, "stack": 1},
        ):
            fh.write(json.dumps(rec) + "\n")
    a = analyze(tmp_path / "e.jsonl")
    st = a.stacks[0]
    assert st.live_bytes == 5 * P  # the short args line is padded and counts; the bad ones do not
    assert any("bad fields" in w for w in a.warnings)
    assert any("impossible arguments" in w for w in a.warnings)


def test_labels() -> None:
    frames = tuple(Frame(**{k: v for k, v in f.items() if k != "file" and k != "line"}) for f in STACKS["heap"])
    assert label_from_frames(frames) == "load (app+0x1600)"
    assert label_from_frames(frames[:3]) == "malloc (libc.so.6+0x420)"  # all in libc: the first non-primitive
    ld = "/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2"
    loader = (fr(ld, 0x20CA1, "__mmap64"), fr(ld, 0x6A79, "_dl_map_segments"), fr(ld, 0x1AB78, "_start"))
    loader_frames = tuple(Frame(**{k: v for k, v in f.items() if k not in ("file", "line")}) for f in loader)
    assert label_from_frames(loader_frames) == "_dl_map_segments (ld-linux-x86-64.so.2+0x6a79)"
    assert frame_description(Frame(pc=0x10, module=None, offset=None, function=None)) == "0x10"
    assert frame_description(Frame(pc=1, module="/x/libsb.so", offset=0x1139, function=None)) == "libsb.so+0x1139"
    assert label_from_frames(()) == ""


def test_synthetic_capture_truth(tmp_path: Path) -> None:
    truth = synthetic_capture(tmp_path / "syn", 20000, 6, live_target=300)
    a = analyze(tmp_path / "syn")
    leaks = {st.label: st for st in a.stacks if st.label.startswith("leak_site_")}
    assert len(leaks) == len(truth.leak_stacks)
    for i, n in truth.leaked_bytes.items():
        st = [s for s in leaks.values() if s.label.startswith(f"leak_site_{i} ")][0]
        assert st.live_bytes == n and st.unmapped_bytes == 0
    assert {s.label.split(" ")[0] for s in a.stacks[: len(leaks)]} == {f"leak_site_{i}" for i in truth.leak_stacks}
    assert a.warnings == []
    assert a.snapshots == 6 and a.events == truth.events
    for st in a.stacks:
        assert st.mapped_bytes - st.unmapped_bytes == st.live_bytes
    for r in a.regions:
        total = r.size if r.status != "gone" else r.first_size
        assert sum(o.bytes for o in r.owners) + r.unexplained_bytes == total
        if r.path == "[anon]" and r.status != "gone":
            assert r.unexplained_bytes == 0  # every anonymous mapping of the simulation is explained
    rss = [smp.rss_bytes for smp in a.timeline if smp.rss_bytes is not None]
    assert len(rss) == 6


def test_mapped_after_the_last_snapshot_counts_as_growth(tmp_path: Path) -> None:
    # A short program: its leak happens after the last snapshot the driver could take before it exited.
    d = tmp_path / "cap"
    d.mkdir()
    log = Log(d / "events.jsonl")
    log.mmap(101.0, A, 4 * P, "churn")  # before the first snapshot: not growth
    log.mmap(103.0, A + 8 * P, 2 * P, "stripped")  # between: growth, in the last snapshot
    log.mmap(106.0, A + 16 * P, 8 * P, "leak")  # after the last snapshot, never unmapped: growth
    log.mmap(106.5, A + 32 * P, 8 * P, "mover")  # after the last snapshot, then unmapped: not growth
    log.munmap(107.0, A + 32 * P, 8 * P, "mover")
    log.close(108.0)
    s1 = smaps([(A, A + 4 * P, "rw-p", "", 4 * P)])
    s2 = smaps([(A, A + 4 * P, "rw-p", "", 4 * P), (A + 8 * P, A + 10 * P, "rw-p", "", 2 * P)])
    write_capture(d, [(102.0, s1), (104.0, s2)])
    a = analyze(d)
    s = by_label(a)
    assert s["scratch"].growth_bytes == 0 and s["libx.so+0x1139"].growth_bytes == 2 * P
    assert s["leak_region"].growth_bytes == 8 * P and s["leak_region"].rss_bytes == 0
    assert s["grow_table"].growth_bytes == 0
    assert s["leak_region"].growth_per_min == pytest.approx(8 * P * 60 / 6.0)  # first snapshot -> end of capture
    assert a.stacks[0].label.startswith("leak_region")


REAL = Path(__file__).resolve().parent.parent / "fixtures" / "procfs" / "capture-ucm_leak"


def test_real_capture_of_ucm_leak() -> None:
    # `sysbreak run -- ucm_leak 8 2`: regions of (i+1)*64 KiB, the even ones leaked (LEAKED 1048576), the odd
    # ones unmapped; mmap goes through libucm, which reaches the kernel with syscall().
    a = analyze(REAL)
    leak = [s for s in a.stacks if s.label.startswith("leak_region ")]
    assert len(leak) == 1
    st = leak[0]
    assert st.live_bytes == 1048576 and st.growth_bytes == 1048576
    assert st.mapped_bytes == sum((i + 1) * 65536 for i in range(8))
    assert st.unmapped_bytes == sum((i + 1) * 65536 for i in range(1, 8, 2))
    assert st.by_syscall == {"mmap": 8}
    assert any("libucm" in (f.module or "") for f in st.frames)
    assert a.pid is not None and a.snapshots == 4
    # captured before snapshots recorded resident pages: the one merged, partly resident VMA is said to be estimated
    assert a.warnings == [
        "1 partly resident VMA of the last snapshot holds several stacks' mappings and no record of which pages are "
        "resident (a capture without resident-*.txt): their RSS is shared out by bytes, an estimate"
    ]
    for s in a.stacks:
        assert s.mapped_bytes - s.unmapped_bytes == s.live_bytes
    assert analyze(REAL, parallel=True).stacks == a.stacks  # the worker process decodes the same


def test_parallel_decoding_matches_and_reports_errors(tmp_path: Path) -> None:
    log = Log(tmp_path / "e.jsonl")
    log.mmap(100.0, A, 4 * P, "leak")
    log.mmap(101.0, A + 8 * P, 2 * P, "churn")
    log.close()
    with (tmp_path / "e.jsonl").open("a") as fh:
        fh.write("garbage\n")
        fh.write('{"type":"syscall","name":"munmap","args":[1,2],"ret":0,"stack":"x"}\n')
        fh.write('{"type":"syscall","seq":9,"t":10')
    one = analyze(tmp_path / "e.jsonl", parallel=False)
    two = analyze(tmp_path / "e.jsonl", parallel=True)
    assert one.stacks == two.stacks and one.warnings == two.warnings and len(one.warnings) == 4
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"type":"header","format":"sysbreak-events/7"}\n')
    with pytest.raises(SysbreakError, match="not supported"):
        analyze(bad, parallel=True)


@pytest.mark.slow
def test_big_log_streams_in_bounded_memory(tmp_path: Path) -> None:
    # 300k events, 30 snapshots: decoded by the worker process; the peak RSS of both stays small.
    import subprocess
    import sys

    synthetic_capture(tmp_path / "big", 300_000, 30)
    code = (
        "import resource, sys, time\n"
        "from sysbreak.analysis import analyze\n"
        "t = time.perf_counter(); a = analyze(sys.argv[1]); dt = time.perf_counter() - t\n"
        "me = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "kid = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss\n"
        "print(a.events, dt, me, kid)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "big")], capture_output=True, text=True, check=True
    )
    events, dt, me_kb, kid_kb = out.stdout.split()
    assert int(events) > 300_000
    assert int(me_kb) < 500 * 1024 and int(kid_kb) < 500 * 1024
    assert int(events) / float(dt) > 10_000  # a floor for gross regressions only: machines differ


def test_records_with_the_same_frames_are_one_stack(tmp_path: Path) -> None:
    """A log of raw stacks keys each record by its bytes: the same call path with other local values comes as
    another record. The analysis makes them one stack (stack_ids lists the records), so they are one row."""
    d = tmp_path / "cap"
    d.mkdir()
    log = Log(d / "events.jsonl")
    log.mmap(101.0, A, 4 * P, "leak")
    log.mmap(102.0, A + 8 * P, 4 * P, "leak")
    log.close(103.0)
    lines = (d / "events.jsonl").read_text().splitlines()
    first_stack = next(json.loads(ln) for ln in lines if json.loads(ln).get("type") == "stack")
    twin = {**first_stack, "id": 999}
    # the second event's stack: the same frames under another id
    out = []
    seen = 0
    for ln in lines:
        rec = json.loads(ln)
        if rec.get("type") == "syscall" and rec.get("stack") == first_stack["id"]:
            seen += 1
            if seen == 2:
                out.append(json.dumps(twin))
                rec["stack"] = 999
        out.append(json.dumps(rec))
    (d / "events.jsonl").write_text("\n".join(out) + "\n")
    a = analyze(d / "events.jsonl")
    leaks = [s for s in a.stacks if s.label.startswith("leak_region")]
    assert len(leaks) == 1 and leaks[0].live_bytes == 8 * P and sorted(leaks[0].stack_ids) == [first_stack["id"], 999]
