"""Which pages of a snapshot's partly resident anonymous VMAs are resident: ``snapshots/resident-*.txt``.

smaps gives one Rss per VMA. When the kernel has merged the mappings of several stacks into one VMA and only part of
it is resident, the Rss of each stack's part is not in smaps; pro-rating it by bytes is a guess. So, right after
copying smaps, the snapshotter reads ``/proc/PID/pagemap`` (8 bytes per page, bit 63 "present"; readable by whoever
may read smaps, no ptrace attach) for those VMAs only: anonymous, 0 < Rss < Size. A VMA wholly resident or not at all
needs nothing (every part of it is resident, or none), nor does a file mapping (its pages are shared with the page
cache). The file lists the resident runs, one ``start-end`` (hex, half-open) per line, in address order, and only
within the VMAs it covers, named on its first line: ``# vmas start-end start-end ...``. The analysis takes a stack's
resident bytes in such a VMA from the runs (exact) instead of pro-rating.

It is read a few milliseconds after smaps: a page faulted in (or reclaimed) in between can differ from smaps' count.
"""

from __future__ import annotations

import os
import re

from sysbreak.maps import parse_smaps

PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
MAX_PAGES = 1 << 20  # pages read per snapshot at most (4 GiB of 4 KiB pages, 8 MiB of pagemap; notes/reports.md)
_RUN = re.compile(rb"\x01+")
_PRESENT = bytes((1 if i & 0x80 else 0) for i in range(256))  # the high byte of an entry -> 1 when bit 63 is set

Range = tuple[int, int]


def partial_vmas(smaps_text: str) -> list[Range]:
    """The anonymous VMAs of an smaps text that are partly resident (0 < Rss < Size)."""
    try:
        snap = parse_smaps(smaps_text)
    except Exception:  # noqa: BLE001 - a text the parser refuses: no residency, the snapshot still counts
        return []
    return [(v.start, v.end) for v in snap.vmas if v.is_anonymous and v.rss and 0 < v.rss < v.end - v.start]


def read_resident(pid: int, vmas: list[Range]) -> list[Range] | None:
    """The resident runs of ``vmas`` of a live process, or None when its pagemap cannot be read."""
    out: list[Range] = []
    budget = MAX_PAGES
    try:
        fh = open(f"/proc/{pid}/pagemap", "rb", buffering=0)  # noqa: SIM115
    except OSError:
        return None
    with fh:
        for start, end in vmas:
            pages = (end - start) // PAGE
            if pages > budget:
                return None
            budget -= pages
            try:
                fh.seek(start // PAGE * 8)
                data = fh.read(pages * 8)
            except OSError:
                return None
            present = data[7::8].translate(_PRESENT)  # the byte holding bit 63 of each entry
            for m in _RUN.finditer(present):
                out.append((start + m.start() * PAGE, start + m.end() * PAGE))
    return out


def format_resident(vmas: list[Range], runs: list[Range]) -> str:
    head = "# vmas " + " ".join(f"{s:x}-{e:x}" for s, e in vmas)
    return head + "\n" + "".join(f"{s:x}-{e:x}\n" for s, e in runs)


def parse_resident(text: str) -> tuple[list[Range], list[Range]]:
    """(the VMAs covered, the resident runs) of a resident file; what does not parse is skipped."""
    vmas: list[Range] = []
    runs: list[Range] = []
    for line in text.splitlines():
        if line.startswith("# vmas"):
            parts = line.split()[2:]
        elif line.startswith("#"):
            continue
        else:
            parts = [line.strip()]
        for part in parts:
            a, sep, b = part.partition("-")
            try:
                r = (int(a, 16), int(b, 16))
            except ValueError:
                continue
            if sep and r[0] < r[1]:
                (vmas if line.startswith("#") else runs).append(r)
    runs.sort()
    return vmas, runs


def resident_in(runs: list[Range], starts: list[int], start: int, end: int) -> int:
    """Bytes of ``[start, end)`` inside the sorted, disjoint ``runs`` (``starts``: their starts, for bisect)."""
    import bisect

    i = max(0, bisect.bisect_right(starts, start) - 1)
    total = 0
    while i < len(runs) and runs[i][0] < end:
        s, e = runs[i]
        ov = min(e, end) - max(s, start)
        if ov > 0:
            total += ov
        i += 1
    return total
