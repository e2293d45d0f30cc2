"""The modules of a live process that can hold sites, from the one maps parser (:func:`sysbreak.maps.read_maps`)."""

from __future__ import annotations

from sysbreak import maps
from sysbreak.maps import Vma

__all__ = ["mapped_modules", "module_bases"]


def module_bases(vmas: list[Vma]) -> list[tuple[str, int | None]]:
    """``(path, base)`` for every file that ``vmas`` (one maps snapshot, in address order) shows with an executable
    mapping, in address order. ``base`` is the start of the file's mapping at offset 0 (what
    :meth:`~sysbreak.sites.model.ModuleScan.load_bias` wants), None when there is none. ``[vdso]``, anonymous
    mappings and deleted files are left out."""
    bases: dict[str, int | None] = {}
    executable: set[str] = set()
    for v in vmas:
        if not v.path.startswith("/") or v.deleted:
            continue
        if v.path not in bases:
            bases[v.path] = None
        if v.offset == 0 and bases[v.path] is None:
            bases[v.path] = v.start
        if "x" in v.perms:
            executable.add(v.path)
    return [(path, base) for path, base in bases.items() if path in executable]


def mapped_modules(pid: int) -> list[tuple[str, int | None]]:
    """:func:`module_bases` of ``/proc/PID/maps``. Raises :class:`~sysbreak.errors.SysbreakError` (exit code 3)
    when the process cannot be read."""
    return module_bases(maps.read_maps(pid).vmas)
