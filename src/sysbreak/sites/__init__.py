"""Where a module can enter the kernel, found statically (plain Python, no GDB), and what to break on there.

A module's *sites* are every ``syscall`` instruction (exactly the ones ``objdump -d`` shows) and every call or tail
jump to the C library's generic ``syscall()`` function (through the PLT, through a GOT slot in ``-fno-plt`` code,
or directly in libc itself and in static binaries), each with the syscall number read from the instructions
before it when it is a constant. One job per module:

* :mod:`~sysbreak.sites.model`: the data (:class:`Site`, :class:`ModuleScan`, :class:`Probe`);
* :mod:`~sysbreak.sites.cache`: :func:`scan`, the scan of one ELF file, cached on disk by build-id;
* :mod:`~sysbreak.sites.planning`: :func:`plan`, the breakpoint probes for the syscalls wanted;
* :mod:`~sysbreak.sites.render`: :func:`sites_table` and :func:`sites_json` for ``sysbreak sites``;
* :mod:`~sysbreak.sites.live`: :func:`mapped_modules`, the modules of a live process.

The names below are re-exported for ``from sysbreak import sites; sites.scan(path)``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sysbreak.sites.cache import cache_dir, forget_memo, scan
from sysbreak.sites.model import ModuleScan, Probe, Site
from sysbreak.sites.planning import plan
from sysbreak.sites.render import sites_json, sites_table

if TYPE_CHECKING:
    from sysbreak.sites.live import mapped_modules

__all__ = [
    "ModuleScan",
    "Probe",
    "Site",
    "cache_dir",
    "forget_memo",
    "mapped_modules",
    "plan",
    "scan",
    "sites_json",
    "sites_table",
]


def __getattr__(name: str) -> Any:
    # the live-process reader (and /proc parsing with it) only when a PID is given: `sysbreak sites FILE` and a
    # scan inside GDB do not import it
    if name == "mapped_modules":
        from sysbreak.sites.live import mapped_modules

        return mapped_modules
    raise AttributeError(f"module 'sysbreak.sites' has no attribute {name!r}")
