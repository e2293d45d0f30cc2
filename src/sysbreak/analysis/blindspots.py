"""Blind spots: growth that no captured call explains, next to what the capture could not watch.

A region that is new or grew between the first and the last snapshot, by bytes that no live mapping of a
captured call covers (``Region.unexplained_bytes``), is memory the capture did not see being mapped. The capture
says what it could not watch: per armed module, the ``syscall`` instructions whose number is not a constant and
that have no safe place before them to read it (``uncovered`` in meta.json's ``modules``, from the event log's
``module`` records), and the mapped files it could not scan at all (``error``). Together they become one warning
that every report format prints, and :class:`BlindSpots` (``blind_spots`` in the JSON report).

Stacks grow by page faults, not system calls, so ``[stack]`` regions are left out.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from typing import Any

from sysbreak.analysis.model import BlindSpots, Region

__all__ = ["BlindSpots", "blind_spots"]

_NOT_MAPPED_BY_CALLS = ("[stack", "[vvar", "[vdso", "[vsyscall")
_LISTED = 8  # sites named in the warning sentence (the JSON has them all)


def blind_spots(
    regions: Sequence[Region], modules: Iterable[Any], *, unchecked_releases: int = 0
) -> tuple[BlindSpots | None, str | None]:
    """The blind spots of a capture and the warning that names them (None when no region grew unexplained).

    The blind spots are None when nothing grew unexplained and the capture could watch every site of its
    modules; otherwise their ``summary`` says what could not be watched (reports print it as a note), and with
    unexplained growth it is the warning. ``modules`` are meta.json's ``modules`` entries (dicts; anything else
    is ignored)."""
    # the bytes a region had at the first snapshot may all be unexplained (mapped before the capture): what is
    # unexplained beyond them came with the growth
    grown = [
        min(r.unexplained_bytes - r.first_size, r.growth)
        for r in regions
        if r.status in ("new", "grew") and not r.path.startswith(_NOT_MAPPED_BY_CALLS)
    ]
    grown = [n for n in grown if n > 0]
    spots = BlindSpots(sum(grown), len(grown), unchecked_releases=unchecked_releases)
    modules = list(modules)
    known = False
    for m in modules:
        if not isinstance(m, dict) or not isinstance(m.get("path"), str):
            continue
        known = known or "uncovered" in m or "error" in m
        if isinstance(m.get("error"), str):
            spots.unscanned_modules.append({"path": m["path"], "error": m["error"]})
            continue
        listed = [u for u in m.get("uncovered") or [] if isinstance(u, dict) and isinstance(u.get("offset"), int)]
        count = m.get("uncovered_count")
        spots.uncovered_count += count if isinstance(count, int) and count >= len(listed) else len(listed)
        for u in listed:
            spots.uncovered_sites.append(
                {
                    "module": m["path"],
                    "offset": u["offset"],
                    "symbol": u.get("symbol") if isinstance(u.get("symbol"), str) else None,
                    "symbol_offset": u.get("symbol_offset") if isinstance(u.get("symbol_offset"), int) else None,
                }
            )
    if not grown:
        if not spots.uncovered_count and not spots.unscanned_modules and not spots.unchecked_releases:
            return None, None
        real = bool(spots.uncovered_count) + bool(spots.unscanned_modules) + bool(spots.unchecked_releases)
        spots.summary = "; ".join(_what(spots, known)[:real]) + "; no growth is unexplained"
        return spots, None
    spots.summary = _sentence(spots, known)
    return spots, spots.summary


def unchecked_text(n: int) -> str:
    """The blind spot of munmaps logged before they acted whose failure could not be watched."""
    return (
        f"{n} munmap call{'s were' if n != 1 else ' was'} taken as done without {'their' if n != 1 else 'its'} "
        "result (logged before entering the kernel, where sysbreak did not watch for its failure: a capture made "
        "before sysbreak did, or a syscall() that is not glibc's): if one failed (ENOMEM at vm.max_map_count, "
        "EINVAL on a hugetlb range, EPERM on a sealed mapping), its bytes stayed mapped but count as released"
    )


def _site_text(site: dict[str, Any]) -> str:
    where = f"{os.path.basename(site['module'])}+{site['offset']:#x}"
    if site["symbol"]:
        where += f" ({site['symbol']}+{site['symbol_offset'] or 0:#x})"
    return where


def _sentence(spots: BlindSpots, known: bool) -> str:
    n = spots.regions
    size = spots.unexplained_growth_bytes
    mib = f" ({size / (1 << 20):.1f} MiB)" if size >= 1 << 20 else f" ({size / 1024:.1f} KiB)" if size >= 1024 else ""
    head = f"{size} bytes{mib} of growth in {n} region{'s' if n != 1 else ''} are explained by no captured call"
    parts = _what(spots, known)
    return head + "; " + "; ".join(parts)


def _what(spots: BlindSpots, known: bool) -> list[str]:
    """What the capture could not watch, as sentence parts."""
    parts = []
    if spots.uncovered_count:
        names = ", ".join(_site_text(s) for s in spots.uncovered_sites[:_LISTED])
        more = spots.uncovered_count - min(len(spots.uncovered_sites), _LISTED)
        parts.append(
            f"{spots.uncovered_count} syscall site{'s' if spots.uncovered_count != 1 else ''} of the armed modules "
            f"could not be watched (number unknown, no safe place before them): {names}"
            + (f" and {more} more" if more > 0 else "")
        )
    if spots.unscanned_modules:
        names = ", ".join(f"{m['path']} ({m['error']})" for m in spots.unscanned_modules[:_LISTED])
        parts.append(f"mapped files that could not be scanned: {names}")
    watched = bool(parts)
    if spots.unchecked_releases:
        parts.append(unchecked_text(spots.unchecked_releases))
    if not watched and not known:
        parts.append("the capture does not list the sites it could not watch (made by an older sysbreak)")
    elif not watched:
        parts.append(
            "every syscall site of the armed modules was watched: the bytes were mapped by a system call not asked "
            "for (-s), by code no armed module holds (JIT code, a module left out by --lib), or before the arming"
        )
    return parts
