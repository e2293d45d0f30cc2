"""What the unwinder knows about one ELF file: load segments, CFI, function symbols, its debug file and DWARF.

A :class:`ModuleInfo` is built once per file content (keyed by GNU build-id and file size, else by device,
inode, size and mtime) and pickled into the cache directory that site scans use (``<sites cache>/unwind-v1-*/``),
so that a later process starts warm. Everything costly is lazy: FDEs are decoded, and DWARF compile units
read, the first time a pc needs them; what was decoded is written back to the cache by
:meth:`ModuleCache.save`.

Function symbols are bulk-decoded from ``.symtab``/``.dynsym`` (of the file and of its separate debug file) with
:mod:`struct` over the section bytes pyelftools returns, sorted once, and found by bisect with GDB's rules for
minimal symbols (the innermost symbol at or below the pc in the pc's section; a sized symbol that ends below the
pc does not cover it; a zero-sized one covers up to the next symbol).
"""

from __future__ import annotations

import bisect
import contextlib
import hashlib
import os
import pickle
import struct
import tempfile
from array import array
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sysbreak.unwind.cfi import CfiTable, Fde
from sysbreak.unwind.demangle import demangle

CACHE_VERSION = 1
DEBUG_DIRS = ("/usr/lib/debug",)
PT_LOAD = 1
PT_INTERP = 3
STT_NOTYPE, STT_OBJECT, STT_FUNC, STT_SECTION, STT_FILE = 0, 1, 2, 3, 4
STT_GNU_IFUNC = 10
STB_LOCAL, STB_GLOBAL, STB_WEAK = 0, 1, 2
SHN_UNDEF, SHN_ABS = 0, 0xFFF1
SHF_EXECINSTR = 4
_BIND_RANK = {STB_GLOBAL: 0, STB_WEAK: 1}


@dataclass
class Symbols:
    """Function (and code label) symbols sorted by address: parallel arrays. Names stay in the files' string
    tables (``strtabs``: path, file offset, size) and are read when a look-up returns them, demangled as GDB
    shows minimal symbols: a 400,000-symbol ``libtorch_cpu.so`` keeps a small cache entry."""

    starts: array[int] = field(default_factory=lambda: array("Q"))
    sizes: array[int] = field(default_factory=lambda: array("Q"))
    sections: array[int] = field(default_factory=lambda: array("I"))  # index into ModuleInfo.code_sections
    tabs: array[int] = field(default_factory=lambda: array("B"))  # index into strtabs
    offs: array[int] = field(default_factory=lambda: array("I"))  # offset of the name in its string table
    strtabs: list[tuple[str, int, int]] = field(default_factory=list)
    main: int | None = None  # the address of the function called "main"

    def __len__(self) -> int:
        return len(self.starts)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state.pop("_names", None)
        state.pop("_by_name", None)
        return state

    def raw_name(self, i: int) -> str:
        """The name of symbol ``i`` as its string table has it (mangled)."""
        cache: dict[int, str] = self.__dict__.setdefault("_names", {})
        hit = cache.get(i)
        if hit is not None:
            return hit
        path, base, size = self.strtabs[self.tabs[i]]
        off = self.offs[i]
        name = ""
        try:
            fd = os.open(path, os.O_RDONLY)
            try:
                buf = b""
                while off + len(buf) < size:
                    chunk = os.pread(fd, min(4096, size - off - len(buf)), base + off + len(buf))
                    if not chunk:
                        break
                    buf += chunk
                    if b"\0" in chunk:
                        break
            finally:
                os.close(fd)
            name = buf.split(b"\0", 1)[0].decode("utf-8", "replace")
        except OSError:
            pass
        cache[i] = name
        return name

    def lookup(self, vaddr: int, section: int) -> tuple[str, int] | None:
        """GDB's ``lookup_minimal_symbol_by_pc_section``: the name and start of the symbol covering ``vaddr``."""
        starts, sizes, secs = self.starts, self.sizes, self.sections
        hi = bisect.bisect_right(starts, vaddr) - 1
        best_zero = -1
        while hi >= 0:
            if secs[hi] != section:
                hi -= 1
                continue
            if sizes[hi] == 0:
                if best_zero == -1:
                    best_zero = hi
                hi -= 1
                continue
            break
        if best_zero != -1 and (hi < 0 or sizes[hi] == 0):
            hi = best_zero
        if hi >= 0 and sizes[hi] != 0 and vaddr >= starts[hi] + sizes[hi]:
            if best_zero == -1:
                return None
            hi = best_zero
        if hi < 0:
            return None
        return demangle(self.raw_name(hi)), int(starts[hi])

    def address_of(self, name: str) -> int | None:
        """The address of the function with this raw (mangled) name; a global one where several share it, None
        when that leaves more than one (a static name in several units)."""
        index: dict[str, list[tuple[int, int]]] | None = self.__dict__.get("_by_name")
        if index is None:
            index = {}
            tables: dict[int, bytes] = {}
            for t, (path, base, size) in enumerate(self.strtabs):
                try:
                    fd = os.open(path, os.O_RDONLY)
                    try:
                        tables[t] = os.pread(fd, size, base)
                    finally:
                        os.close(fd)
                except OSError:
                    tables[t] = b""
            for i in range(len(self.starts)):
                tab = tables.get(self.tabs[i], b"")
                off = self.offs[i]
                end = tab.find(b"\0", off)
                raw = tab[off : end if end >= 0 else len(tab)].decode("utf-8", "replace")
                index.setdefault(raw, []).append((int(self.starts[i]), i))
            self.__dict__["_by_name"] = index
        hits = sorted({a for a, _i in index.get(name, [])})
        return hits[0] if len(hits) == 1 else None

    def index_of(self, name: str) -> int | None:
        """The index of the (first) symbol with this raw name: a scan, for tests and tools."""
        for i in range(len(self.starts)):
            if self.raw_name(i) == name:
                return i
        return None


SymEntries = dict[tuple[int, bytes], tuple[int, int, int, int, int]]


def _read_symbols(elf: Any, path: str, code_sections: list[tuple[int, int, str]], into: SymEntries,
                  strtabs: list[tuple[str, int, int]]) -> None:  # fmt: skip
    """Add the code symbols of every symbol table of ``elf`` (the file at ``path``) to ``into``:
    (start, raw name) -> (size, bind, section, string table, name offset)."""
    for secname in (".symtab", ".dynsym"):
        sec = elf.get_section_by_name(secname)
        if sec is None or sec.header["sh_type"] == "SHT_NOBITS" or sec.header["sh_entsize"] != 24:
            continue
        try:
            strsec = elf.get_section(sec.header["sh_link"])
            strtab = strsec.data()
            data = sec.data()
        except Exception:  # noqa: BLE001 - a damaged table is skipped, the other may still serve
            continue
        if strsec.header["sh_type"] == "SHT_NOBITS" or strsec.compressed:
            continue
        tab = len(strtabs)
        strtabs.append((path, int(strsec.header["sh_offset"]), len(strtab)))
        starts = [c[0] for c in code_sections]
        ends = [c[1] for c in code_sections]
        wanted = {STT_FUNC, STT_GNU_IFUNC, STT_NOTYPE}
        find = strtab.find
        for st_name, st_info, _other, shndx, value, size in struct.iter_unpack("<IBBHQQ", data[: len(data) // 24 * 24]):
            if not st_name or not value or (st_info & 15) not in wanted or shndx in (SHN_UNDEF, SHN_ABS):
                continue
            j = bisect.bisect_right(starts, value) - 1
            if j < 0 or value >= ends[j]:
                continue  # not in a code section: data, or a label outside .text
            end = find(b"\0", st_name)
            raw = strtab[st_name : end if end >= 0 else len(strtab)]
            if not raw:
                continue
            key = (value, raw)
            old = into.get(key)
            if old is None or (old[0] == 0 and size):
                into[key] = (size, st_info >> 4, j, tab, st_name)


def _build_symbols(entries: SymEntries, strtabs: list[tuple[str, int, int]]) -> Symbols:
    # GDB keeps one of the names at an address; bisect finds the last of equal starts, so the preferred name
    # (global, then weak, then local) is put last among equals
    rows = sorted(entries.items(), key=lambda kv: (kv[0][0], -_BIND_RANK.get(kv[1][1], 2)))
    out = Symbols()
    out.starts = array("Q", (r[0][0] for r in rows))
    out.sizes = array("Q", (r[1][0] for r in rows))
    out.sections = array("I", (r[1][2] for r in rows))
    out.tabs = array("B", (r[1][3] for r in rows))
    out.offs = array("I", (r[1][4] for r in rows))
    out.strtabs = strtabs
    mains = [start for (start, raw), v in entries.items() if raw == b"main" and v[1] != STB_LOCAL]
    out.main = min(mains) if mains else None
    return out


def _build_id(elf: Any) -> str | None:
    for sec in elf.iter_sections():
        if sec.header["sh_type"] != "SHT_NOTE":
            continue
        with contextlib.suppress(Exception):
            for note in sec.iter_notes():
                if note["n_type"] == "NT_GNU_BUILD_ID":
                    return str(note["n_desc"])
    return None


def _debuglink(elf: Any) -> str | None:
    sec = elf.get_section_by_name(".gnu_debuglink")
    if sec is None:
        return None
    data = sec.data()
    end = data.find(b"\0")
    return data[:end].decode("utf-8", "replace") if end > 0 else None


def find_debug_file(path: str, build_id: str | None, debuglink: str | None, debug_dirs: tuple[str, ...]) -> str | None:
    """The separate debug file GDB would read: ``DIR/.build-id/xx/rest.debug``, else the ``.gnu_debuglink`` name
    next to the file, in its ``.debug/`` folder, or under ``DIR`` + the file's folder."""
    cands: list[str] = []
    if build_id and len(build_id) > 2:
        cands += [os.path.join(d, ".build-id", build_id[:2], build_id[2:] + ".debug") for d in debug_dirs]
    if debuglink:
        folder = os.path.dirname(os.path.realpath(path))
        cands += [os.path.join(folder, debuglink), os.path.join(folder, ".debug", debuglink)]
        cands += [os.path.join(d + folder, debuglink) for d in debug_dirs]
    real = os.path.realpath(path)
    for c in cands:
        if os.path.isfile(c) and os.path.realpath(c) != real:
            if build_id:
                try:
                    from elftools.elf.elffile import ELFFile

                    with open(c, "rb") as fh:
                        if _build_id(ELFFile(fh)) != build_id:
                            continue
                except Exception:  # noqa: BLE001 - an unreadable candidate is skipped
                    continue
            return c
    return None


@dataclass
class ModuleInfo:
    """One ELF file as the unwinder sees it. Addresses are link-time (``vaddr``) addresses."""

    path: str
    key: str
    build_id: str | None
    e_type: str
    entry: int
    interp: bool
    loads: list[tuple[int, int, int, int, int]]  # (p_offset, p_vaddr, p_filesz, p_memsz, p_flags)
    code_sections: list[tuple[int, int, str]]  # (start, end, name), sorted
    symbols: Symbols
    eh_frame: CfiTable | None
    debug_frame: CfiTable | None
    debug_path: str | None  # the file holding .debug_info/.debug_line (this one or the separate debug file)
    dwarf: Any = None  # sysbreak.unwind.dwarf.DwarfIndex, built on first use
    dwarf_tried: bool = False
    dirty: bool = True

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["dirty"] = False
        return state

    @property
    def is_dirty(self) -> bool:
        return (
            self.dirty
            or bool(self.eh_frame and self.eh_frame.dirty)
            or bool(self.debug_frame and self.debug_frame.dirty)
            or bool(self.dwarf is not None and self.dwarf.dirty)
        )

    def section_of(self, vaddr: int) -> int:
        i = bisect.bisect_right(self.code_sections, (vaddr, 1 << 64)) - 1
        if i >= 0 and vaddr < self.code_sections[i][1]:
            return i
        return -1

    def bias_for(self, map_start: int, map_offset: int) -> int | None:
        """The load bias of a mapping of this file starting at ``map_start`` from file offset ``map_offset``."""
        for p_offset, p_vaddr, p_filesz, _memsz, _flags in self.loads:
            lo = p_offset & ~0xFFF
            if lo <= map_offset < max(p_offset + p_filesz, lo + 1):
                return map_start - (p_vaddr - (p_offset - map_offset))
        return None

    def fde(self, vaddr: int) -> Fde | None:
        """The FDE covering ``vaddr``: ``.eh_frame`` first, then ``.debug_frame`` (as GDB looks them up)."""
        if self.eh_frame is not None:
            f = self.eh_frame.find(vaddr)
            if f is not None:
                return f
        if self.debug_frame is not None:
            return self.debug_frame.find(vaddr)
        return None

    def function(self, vaddr: int) -> tuple[str, int] | None:
        """The minimal-symbol name and start of the function holding ``vaddr``."""
        sec = self.section_of(vaddr)
        if sec < 0:
            return None
        return self.symbols.lookup(vaddr, sec)

    def read_code(self, vaddr: int, n: int) -> bytes | None:
        """``n`` bytes of the file's loaded image at ``vaddr`` (for the prologue check of the frame-pointer walk)."""
        for p_offset, p_vaddr, p_filesz, _memsz, _flags in self.loads:
            if p_vaddr <= vaddr and vaddr + n <= p_vaddr + p_filesz:
                try:
                    with open(self.path, "rb") as fh:
                        fh.seek(p_offset + vaddr - p_vaddr)
                        return fh.read(n)
                except OSError:
                    return None
        return None

    def get_dwarf(self) -> Any:
        if not self.dwarf_tried:
            self.dwarf_tried = True
            self.dirty = True
            if self.debug_path is not None:
                from sysbreak.unwind.dwarf import DwarfIndex

                try:
                    self.dwarf = DwarfIndex.build(self.debug_path)
                except Exception:  # noqa: BLE001 - damaged or unsupported DWARF: symbols only
                    self.dwarf = None
        return self.dwarf

    def close(self) -> None:
        for t in (self.eh_frame, self.debug_frame):
            if t is not None:
                t.close()
        if self.dwarf is not None:
            self.dwarf.close()


def load_module(path: str, key: str, debug_dirs: tuple[str, ...] = DEBUG_DIRS) -> ModuleInfo:
    """Read ``path`` into a :class:`ModuleInfo` (symbols decoded, CFI indexed, nothing decoded yet)."""
    from elftools.elf.elffile import ELFFile

    with open(path, "rb") as fh:
        elf = ELFFile(fh)
        loads = []
        interp = False
        for seg in elf.iter_segments():
            h = seg.header
            if h["p_type"] == "PT_LOAD":
                loads.append((h["p_offset"], h["p_vaddr"], h["p_filesz"], h["p_memsz"], h["p_flags"]))
            elif h["p_type"] == "PT_INTERP":
                interp = True
        code = sorted(
            (s.header["sh_addr"], s.header["sh_addr"] + s.header["sh_size"], s.name)
            for s in elf.iter_sections()
            if s.header["sh_flags"] & SHF_EXECINSTR and s.header["sh_addr"]
        )
        build_id = _build_id(elf)
        has_debug = elf.get_section_by_name(".debug_info") is not None and elf.get_section_by_name(".debug_line")
        debug_path: str | None = path if has_debug else None
        dbg = None if debug_path is not None else find_debug_file(path, build_id, _debuglink(elf), debug_dirs)
        entries: SymEntries = {}
        strtabs: list[tuple[str, int, int]] = []
        _read_symbols(elf, path, code, entries, strtabs)
        eh = CfiTable.build(elf, path, ".eh_frame")
        dframe = CfiTable.build(elf, path, ".debug_frame")
        e_type = str(elf.header["e_type"])
        entry = int(elf.header["e_entry"])
    if dbg is not None:
        debug_path = dbg
        with open(dbg, "rb") as dfh:
            debug_elf = ELFFile(dfh)
            _read_symbols(debug_elf, dbg, code, entries, strtabs)
            if dframe is None:
                dframe = CfiTable.build(debug_elf, dbg, ".debug_frame")
    return ModuleInfo(
        path=path,
        key=key,
        build_id=build_id,
        e_type=e_type,
        entry=entry,
        interp=interp,
        loads=loads,
        code_sections=code,
        symbols=_build_symbols(entries, strtabs),
        eh_frame=eh,
        debug_frame=dframe,
        debug_path=debug_path,
    )


def default_cache_dir() -> Path:
    """``<the sites cache dir>/unwind-v1``."""
    try:
        from sysbreak.sites.cache import cache_dir

        base = cache_dir()
    except Exception:  # noqa: BLE001 - the sites package moved or failed: a private folder still works
        base = Path(tempfile.gettempdir()) / "sysbreak-cache"
    return base / f"unwind-v{CACHE_VERSION}-{_code_stamp()}"


def _code_stamp() -> str:
    here = Path(__file__).parent
    parts = []
    for name in ("cfi.py", "modules.py", "dwarf.py", "demangle.py"):
        try:
            st = (here / name).stat()
            parts.append(f"{name}:{st.st_size}:{st.st_mtime_ns}")
        except OSError:
            parts.append(name)
    return hashlib.sha1(" ".join(parts).encode()).hexdigest()[:10]


def _stat_key(path: str) -> tuple[str, tuple[int, int, int, int]] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return path, (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


class ModuleCache:
    """The :class:`ModuleInfo` of every file seen, in memory and pickled on disk by build-id.

    ``cache_dir=None`` uses :func:`default_cache_dir`; ``persist=False`` keeps everything in memory only.
    """

    def __init__(
        self, cache_dir: str | os.PathLike[str] | None = None, *, persist: bool = True, debug_dirs=DEBUG_DIRS
    ) -> None:
        self.dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        self.persist = persist
        self.debug_dirs = tuple(debug_dirs)
        self._by_stat: dict[tuple[str, tuple[int, int, int, int]], ModuleInfo | None] = {}
        self._stats: dict[str, tuple[str, tuple[int, int, int, int]]] = {}
        self.loaded_from_disk = 0
        self.built = 0

    def get(self, path: str) -> ModuleInfo | None:
        """The module of ``path`` (None when it is not a readable ELF file)."""
        sk = _stat_key(path)
        if sk is None:
            return None
        if sk in self._by_stat:
            return self._by_stat[sk]
        info = self._load(path, sk[1])
        self._by_stat[sk] = info
        return info

    def _key_of(self, path: str, st: tuple[int, int, int, int]) -> str | None:
        try:
            from elftools.elf.elffile import ELFFile

            with open(path, "rb") as fh:
                bid = _build_id(ELFFile(fh))
        except Exception:  # noqa: BLE001 - not an ELF file
            return None
        if not bid:
            return "stat-" + hashlib.sha1(repr((path, st)).encode()).hexdigest()[:20]
        # the build-id and the size: a stripped copy shares its original's build-id but not what it can tell
        # (GDB names its frames from its own tables and its debug file only)
        return f"{bid}-{st[2]:x}"

    def _alias(self, path: str, st: tuple[int, int, int, int]) -> Path:
        """A small file naming the cache entry of this path as it is now (device, inode, size, mtime): a warm
        look-up reads it instead of opening the ELF file for its build-id."""
        return self.dir / f"stat-{hashlib.sha1(repr((path, st)).encode()).hexdigest()[:24]}.key"

    def _load(self, path: str, st: tuple[int, int, int, int]) -> ModuleInfo | None:
        key = None
        if self.persist:
            with contextlib.suppress(OSError, UnicodeDecodeError):
                key = self._alias(path, st).read_text().strip() or None
        if key is None:
            key = self._key_of(path, st)
        if key is None:
            return None
        self._stats[key] = (path, st)
        if self.persist:
            f = self.dir / f"{key}.pkl"
            try:
                with open(f, "rb") as fh:
                    info = pickle.load(fh)
                if isinstance(info, ModuleInfo) and info.key == key:
                    old_path = info.path  # the same build at another path: its own tables are read from here
                    info.path = path
                    for t in (info.eh_frame, info.debug_frame):
                        if t is not None and t.path == old_path:
                            t.path = path
                    syms = info.symbols
                    syms.strtabs = [(path if p == old_path else p, o, n) for p, o, n in syms.strtabs]
                    if info.debug_path == old_path:
                        info.debug_path = path
                        if info.dwarf is not None:
                            info.dwarf.path = path
                    self.loaded_from_disk += 1
                    return info
            except FileNotFoundError:
                pass
            except Exception:  # noqa: BLE001 - a damaged cache file is rebuilt
                pass
        try:
            info = load_module(path, key, self.debug_dirs)
        except Exception:  # noqa: BLE001 - not an ELF file we can read: the pc stays module+offset
            return None
        self.built += 1
        return info

    def modules(self) -> list[ModuleInfo]:
        return [m for m in self._by_stat.values() if m is not None]

    def save(self) -> int:
        """Write every module that learned something since it was loaded; returns how many were written. A cache
        that cannot be written is not an error."""
        if not self.persist:
            return 0
        n = 0
        for info in self.modules():
            if not info.is_dirty:
                continue
            try:
                self.dir.mkdir(parents=True, exist_ok=True)
                fd, tmp = tempfile.mkstemp(dir=self.dir, prefix=".tmp-", suffix=".pkl")
                with os.fdopen(fd, "wb") as fh:
                    pickle.dump(info, fh, protocol=pickle.HIGHEST_PROTOCOL)
                os.replace(tmp, self.dir / f"{info.key}.pkl")
                seen = self._stats.get(info.key)
                if seen is not None:
                    alias = self._alias(*seen)
                    alias_tmp = alias.with_suffix(".tmp")
                    alias_tmp.write_text(info.key)
                    os.replace(alias_tmp, alias)
            except OSError:
                continue
            info.dirty = False
            for t in (info.eh_frame, info.debug_frame):
                if t is not None:
                    t.dirty = False
            if info.dwarf is not None:
                info.dwarf.dirty = False
            n += 1
        return n

    def close(self) -> None:
        for info in self.modules():
            info.close()
