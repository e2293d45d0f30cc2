"""Addresses of a few named symbols of an ELF file, through its dynamic symbol hash table (pyelftools).

For when GDB has no symbol files loaded (``sysbreak run``/``attach``): CPython's ``_PyRuntime`` & co.
(:mod:`sysbreak.gdb.pyframes`) and the dynamic linker's ``_dl_debug_state`` and ``_r_debug`` (the library-load
breakpoint of :mod:`sysbreak.gdb.tracer`). A lookup in ``.gnu.hash`` costs milliseconds where building
pyelftools' name table of a large ``.symtab`` costs seconds. Plain Python: no ``gdb`` import.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

_CACHE: dict[tuple[str, int, int, tuple[str, ...]], dict[str, int]] = {}


def dynamic_symbols(path: str, names: Iterable[str]) -> dict[str, int]:
    """``{name: st_value}`` (file addresses, add the load bias) of the ``names`` defined in ``path``'s dynamic
    symbol table; names not found are left out. Remembered per file (path, inode, mtime): `sysbreak prepare`
    looks them up before the attach, so the stop only finds them here. Raises OSError / pyelftools' errors on
    unreadable files."""
    wanted = tuple(names)
    st = os.stat(path)
    key = (path, st.st_ino, st.st_mtime_ns, wanted)
    hit = _CACHE.get(key)
    if hit is not None:
        return dict(hit)
    got = _lookup(path, wanted)
    _CACHE[key] = dict(got)
    return got


def _lookup(path: str, names: tuple[str, ...]) -> dict[str, int]:
    from elftools.elf.elffile import ELFFile
    from elftools.elf.hash import ELFHashSection, GNUHashSection
    from elftools.elf.sections import SymbolTableSection

    got: dict[str, int] = {}
    with open(path, "rb") as fh:
        elf = ELFFile(fh)
        table = elf.get_section_by_name(".gnu.hash") or elf.get_section_by_name(".hash")
        dynsym = elf.get_section_by_name(".dynsym")
        for name in names:
            if isinstance(table, (GNUHashSection, ELFHashSection)):
                sym = table.get_symbol(name)
            elif isinstance(dynsym, SymbolTableSection):
                found = dynsym.get_symbol_by_name(name)
                sym = found[0] if found else None
            else:
                sym = None
            if sym is not None and sym["st_shndx"] != "SHN_UNDEF":
                got[name] = int(sym["st_value"])
    return got
