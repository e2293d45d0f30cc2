"""A synthetic capture directory of any size, for benchmarks and tests: :func:`synthetic_capture` (test-only code).

It simulates a process whose threads map and unmap anonymous memory from a few dozen call stacks (through
libucm and libc, as in the seed's situation), a few of which leak; some calls fail, some munmaps are partial,
some regions are remapped or moved, the heap grows and shrinks with brk, and some regions are made read-only
(so the kernel would split them). Snapshots are smaps texts of the simulated address space in which adjacent
anonymous mappings with equal permissions are merged into one VMA, as the kernel does.

The returned :class:`SyntheticTruth` says what the analysis should find.
"""

from __future__ import annotations

import json
import os
import random
from dataclasses import dataclass, field
from typing import Any

from sysbreak.capture import CAPTURE_FORMAT, EventLogWriter

PAGE = 4096
LIBC = "/usr/lib/x86_64-linux-gnu/libc.so.6"
LIBUCM = "/usr/lib/x86_64-linux-gnu/libucm.so.0.0.0"
LIBUCS = "/usr/lib/x86_64-linux-gnu/libucs.so.0.0.0"
APP = "/srv/app/bin/server"
LIBAPP = "/srv/app/lib/libworker.so"
_BASES = {LIBC: 0x7FFFF7C00000, LIBUCM: 0x7FFFF7F80000, LIBUCS: 0x7FFFF7E00000, APP: 0x555555554000}
_BASES[LIBAPP] = 0x7FFFF7800000
_HEAP = 0x555555600000
_TOP = 0x7F0000000000


_SITE = {"pc": _BASES[LIBC] + 0x10F89D, "module": LIBC, "offset": 0x10F89D, "kind": "call"}


class _Writer(EventLogWriter):
    """The real writer, minus the flush after every line (the generator is not a crashing GDB)."""

    def _write(self, record: dict[str, Any]) -> None:
        self._fh.write(json.dumps(record, separators=(",", ":")) + "\n")

    def event(self, **fields: Any) -> None:
        super().event(**fields, site=_SITE)  # as the tracer writes them: with the site


@dataclass
class SyntheticTruth:
    events: int = 0  # syscall records written
    snapshots: int = 0
    leak_stacks: list[int] = field(default_factory=list)  # stack ids that never unmap
    leaked_bytes: dict[int, int] = field(default_factory=dict)  # stack id -> live bytes at the end


def _frames(rng: random.Random, i: int, leak: bool) -> list[dict[str, Any]]:
    def fr(module: str, off: int, fn: str | None) -> dict[str, Any]:
        return {"pc": _BASES[module] + off, "module": module, "offset": off, "function": fn, "file": None, "line": None}

    frames = [fr(LIBC, 0x10F89D, "syscall"), fr(LIBUCM, 0x9E1B, "ucm_orig_mmap"), fr(LIBUCM, 0xA100, "ucm_mmap")]
    if i % 3 == 0:
        frames.append(fr(LIBUCS, 0x20000 + 16 * i, "ucs_mpool_grow"))
    name = f"leak_site_{i}" if leak else f"work_site_{i}"
    frames.append(fr(LIBAPP, 0x1000 + 0x40 * i, name))
    for k in range(rng.randint(2, 8)):
        frames.append(fr(APP, 0x2000 + 0x10 * ((i * 7 + k) % 97), f"caller_{(i + k) % 13}"))
    frames.append(fr(LIBC, 0x271CA, "__libc_start_call_main"))
    return frames


def synthetic_capture(
    directory: str | os.PathLike[str],
    events: int,
    snapshots: int,
    *,
    stacks: int = 64,
    leak_stacks: int = 4,
    seed: int = 1,
    duration: float = 600.0,
    live_target: int = 4000,
) -> SyntheticTruth:
    """Write a capture directory with ``events`` syscall records and ``snapshots`` smaps snapshots.

    ``live_target`` is about how many mappings are live at once (the churn keeps it there); the leaking stacks
    add to it. Times run from 1000.0 to ``1000.0 + duration`` (CLOCK_MONOTONIC seconds).
    """
    rng = random.Random(seed)
    d = os.fspath(directory)
    os.makedirs(os.path.join(d, "snapshots"), exist_ok=True)
    t0 = 1000.0
    meta = {
        "format": CAPTURE_FORMAT,
        "pid": 4242,
        "cmdline": ["/srv/app/bin/server"],
        "exe": APP,
        "t0": t0,
        "started": "2026-11-23T10:00:00+00:00",
        "syscalls": ["mmap", "munmap", "mremap", "brk"],
        "mode": "callsite",
        "modules": [],
    }
    truth = SyntheticTruth(events=events, snapshots=snapshots)
    w = _Writer(os.path.join(d, "events.jsonl"), append=False)
    w.header(arch="x86_64", pid=4242, exe=APP, syscalls=meta["syscalls"], mode="callsite", t0=t0,
             wall0=meta["started"], tool="sysbreak synthetic", gdb="none")  # fmt: skip
    leakers = set(range(1, leak_stacks + 1))
    truth.leak_stacks = sorted(leakers)
    stack_frames = {i: _frames(rng, i, i in leakers) for i in range(1, stacks + 1)}

    def sid_of(i: int) -> int:
        return w.stack_id((i,), stack_frames[i], [])

    live: dict[int, tuple[int, int, bool]] = {}  # start -> (size, stack, readonly)
    order: list[int] = []  # starts of live non-leak mappings, for random picks
    pos: dict[int, int] = {}
    top = _TOP
    brk0 = _HEAP + 0x21000
    brk = brk0
    w.event(t=t0, tid=4243, nr=12, name="brk", args=[0, 0, 0, 0, 0, 0], ret=brk, stack=sid_of(stacks))

    def add(start: int, size: int, sid: int, ro: bool) -> None:
        live[start] = (size, sid, ro)
        if sid not in leakers:
            pos[start] = len(order)
            order.append(start)

    def drop(start: int) -> tuple[int, int, bool]:
        size, sid, ro = live.pop(start)
        if start in pos:
            i = pos.pop(start)
            last = order.pop()
            if last != start:
                order[i] = last
                pos[last] = i
        return size, sid, ro

    snap_times = [t0 + duration * k / max(1, snapshots - 1) for k in range(snapshots)] if snapshots else []
    index = open(os.path.join(d, "snapshots", "index.jsonl"), "w", encoding="utf-8")  # noqa: SIM115
    next_snap = 0
    dt = duration / max(1, events)

    def snapshot(k: int, t: float) -> None:
        name = f"smaps-{k + 1:06d}.txt"
        text, rss_kb = _smaps_text(live, brk0, brk)
        with open(os.path.join(d, "snapshots", name), "w", encoding="utf-8") as fh:
            fh.write(text)
        index.write(json.dumps({"seq": k + 1, "t": t, "wall": "", "file": name, "rss_kb": rss_kb}) + "\n")

    for n in range(events):
        t = t0 + n * dt
        while next_snap < len(snap_times) and snap_times[next_snap] <= t:
            snapshot(next_snap, snap_times[next_snap])
            next_snap += 1
        r = rng.random()
        tid = 4243 + n % 4
        if r < 0.02:  # a leak
            i = rng.choice(truth.leak_stacks) if truth.leak_stacks else rng.randint(1, stacks)
            size = PAGE * rng.randint(1, 16)
            top -= size
            add(top, size, i, False)
            w.event(t=t, tid=tid, nr=9, name="mmap", args=[0, size, 3, 0x22, 2**64 - 1, 0], ret=top, stack=sid_of(i))
        elif r < 0.03:  # a failure
            i = rng.randint(1, stacks)
            w.event(t=t, tid=tid, nr=9, name="mmap", args=[0, 1 << 40, 3, 0x22, 2**64 - 1, 0], ret=-12,
                    stack=sid_of(i))  # fmt: skip
        elif r < 0.06:  # brk (never from a leaking stack: their truth is their mmaps)
            i = rng.randint(leak_stacks + 1, stacks) if stacks > leak_stacks else 1
            new = max(brk0, brk + rng.choice((-1, 1, 1)) * PAGE * rng.randint(1, 8))
            w.event(t=t, tid=tid, nr=12, name="brk", args=[new, 0, 0, 0, 0, 0], ret=new, stack=sid_of(i))
            brk = new
        elif r < 0.10 and order:  # mremap: grow in place or move
            i = rng.randint(leak_stacks + 1, stacks) if stacks > leak_stacks else 1
            old = rng.choice(order)
            size, owner, ro = live[old]
            new_size = size + PAGE * rng.randint(-1, 4) if size > PAGE else size + PAGE
            if new_size <= size and rng.random() < 0.5:
                dest = old  # shrink in place
            else:
                top -= new_size  # move (growing in place would need to know the gap above)
                dest = top
            drop(old)
            add(dest, new_size, owner, ro)
            w.event(t=t, tid=tid, nr=25, name="mremap", args=[old, size, new_size, 1, 0, 0], ret=dest,
                    stack=sid_of(i))  # fmt: skip
        elif len(order) > live_target or (r < 0.55 and order):  # munmap, sometimes partial
            start = rng.choice(order)
            size, owner, ro = live[start]
            i = rng.randint(leak_stacks + 1, stacks) if stacks > leak_stacks else 1
            if size > PAGE and rng.random() < 0.2:
                cut = PAGE * rng.randint(1, size // PAGE - 1)
                drop(start)
                add(start + cut, size - cut, owner, ro)
                w.event(t=t, tid=tid, nr=11, name="munmap", args=[start, cut, 0, 0, 0, 0], ret=0, stack=sid_of(i))
            else:
                drop(start)
                w.event(t=t, tid=tid, nr=11, name="munmap", args=[start, size, 0, 0, 0, 0], ret=0, stack=sid_of(i))
        else:  # churn: map
            i = rng.randint(leak_stacks + 1, stacks) if stacks > leak_stacks else 1
            size = PAGE * rng.choice((1, 2, 4, 8, 16, 32, 64, 256))
            ro = rng.random() < 0.1
            top -= size
            add(top, size, i, ro)
            w.event(t=t, tid=tid, nr=9, name="mmap", args=[0, size, 1 if ro else 3, 0x22, 2**64 - 1, 0], ret=top,
                    stack=sid_of(i))  # fmt: skip
    t_end = t0 + events * dt
    while next_snap < len(snap_times):
        snapshot(next_snap, max(snap_times[next_snap], t_end))
        next_snap += 1
    index.close()
    truth.events = w.seq
    w.end("detach", t_end)
    w.close()
    for size, sid, _ in live.values():
        if sid in leakers:
            truth.leaked_bytes[sid] = truth.leaked_bytes.get(sid, 0) + size
    meta |= {"t1": t_end, "ended": "2026-11-23T10:10:00+00:00", "end_reason": "detach"}
    with open(os.path.join(d, "meta.json"), "w", encoding="utf-8") as fh:
        json.dump(meta, fh)
    return truth


_LIB_VMAS = [
    (_BASES[APP], 0x5000, "r-xp", APP),
    (_BASES[LIBAPP], 0x40000, "r-xp", LIBAPP),
    (_BASES[LIBC], 0x1BD000, "r-xp", LIBC),
    (_BASES[LIBUCS], 0x60000, "r-xp", LIBUCS),
    (_BASES[LIBUCM], 0x20000, "r-xp", LIBUCM),
    (0x7FFFFFFDE000, 0x21000, "rw-p", "[stack]"),
]


def _vma_text(start: int, end: int, perms: str, path: str, rss: int) -> str:
    size_kb, rss_kb = (end - start) // 1024, rss // 1024
    head = f"{start:x}-{end:x} {perms} 00000000 {'fe:00 1234' if path.startswith('/') else '00:00 0'}"
    return (
        f"{head:<73}{path}\n"
        f"Size:           {size_kb:8d} kB\nKernelPageSize:        4 kB\nMMUPageSize:           4 kB\n"
        f"Rss:            {rss_kb:8d} kB\nPss:            {rss_kb:8d} kB\nShared_Clean:          0 kB\n"
        f"Shared_Dirty:          0 kB\nPrivate_Clean:         0 kB\nPrivate_Dirty:  {rss_kb:8d} kB\n"
        f"Referenced:     {rss_kb:8d} kB\nAnonymous:      {rss_kb:8d} kB\nSwap:                  0 kB\n"
        f"Locked:                0 kB\nTHPeligible:           0\nVmFlags: rd wr mr mw me ac\n"
    )


def _smaps_text(live: dict[int, tuple[int, int, bool]], brk0: int, brk: int) -> tuple[str, int]:
    """smaps of the simulated process; adjacent anonymous mappings with the same permissions merge."""
    vmas: list[tuple[int, int, str, str, int]] = [(s, s + n, p, path, n // 2) for s, n, p, path in _LIB_VMAS]
    heap_end = (brk + PAGE - 1) & ~(PAGE - 1)
    vmas.append((_HEAP, heap_end, "rw-p", "[heap]", heap_end - _HEAP))
    cur: list[Any] | None = None
    anon: list[tuple[int, int, str, str, int]] = []
    for start in sorted(live):
        size, _sid, ro = live[start]
        perms = "r--p" if ro else "rw-p"
        rss = 0 if ro else size
        if cur is not None and cur[1] == start and cur[2] == perms:
            cur[1] = start + size
            cur[4] += rss
        else:
            if cur is not None:
                anon.append((cur[0], cur[1], cur[2], cur[3], cur[4]))
            cur = [start, start + size, perms, "", rss]
    if cur is not None:
        anon.append((cur[0], cur[1], cur[2], cur[3], cur[4]))
    vmas.extend(anon)
    vmas.sort()
    parts = [_vma_text(*v) for v in vmas]
    return "".join(parts), sum(v[4] for v in vmas) // 1024
