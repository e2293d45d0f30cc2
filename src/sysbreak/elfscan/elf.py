"""The parts of an x86-64 ELF file that site discovery needs, read with pyelftools.

pyelftools reads the ELF header, the program and section headers, the notes (the GNU build-id) and the dynamic
tags. The big tables are decoded here in bulk instead, with one :func:`struct.iter_unpack` (or a byte search)
over the raw bytes of their section: a libc's ``.symtab``/``.dynsym`` hold thousands of symbols and its
relocation tables thousands of entries; one pyelftools object per entry costs 150-260 ms for a libc (issue 13) where the
bulk decode costs about a millisecond (see notes/sites.md). Those tables are the function symbols, the
GOT slots of the relocations against one symbol, and the function starts listed in ``.eh_frame_hdr``.

A file without section headers (``sstrip``-ed, or some packers) is still read through its program headers: the
executable ``PT_LOAD`` segments are the code, ``PT_NOTE`` the build-id, and the dynamic tags of ``PT_DYNAMIC``
(``DT_SYMTAB``, ``DT_STRTAB``, ``DT_RELA``, ``DT_JMPREL``, ...) locate the dynamic symbols and relocations.

pyelftools is imported when the first file is opened, so a warm cache look-up never pays for it.
"""

from __future__ import annotations

import bisect
import contextlib
import mmap
import os
import stat
import struct
from array import array
from dataclasses import dataclass
from typing import IO, Any

from sysbreak.errors import SysbreakError, os_error

PT_LOAD = "PT_LOAD"
PT_NOTE = "PT_NOTE"
PT_DYNAMIC = "PT_DYNAMIC"
PT_GNU_EH_FRAME = "PT_GNU_EH_FRAME"
PF_X = 1
SHT_SYMTAB = "SHT_SYMTAB"
SHT_DYNSYM = "SHT_DYNSYM"
SHT_RELA = "SHT_RELA"
SHT_NOBITS = "SHT_NOBITS"
SHT_NOTE = "SHT_NOTE"
SHF_EXECINSTR = 4
STT_FUNC = 2
STT_GNU_IFUNC = 10
STB_LOCAL, STB_GLOBAL, STB_WEAK = 0, 1, 2
R_X86_64_64, R_X86_64_GLOB_DAT, R_X86_64_JUMP_SLOT = 1, 6, 7
PAGE = 4096
SYM_SIZE = 24  # Elf64_Sym
RELA_SIZE = 24  # Elf64_Rela
_BIND_RANK = {STB_GLOBAL: 0, STB_WEAK: 1}  # then local: the name preferred among aliases

# pyelftools' e_machine names -> what users call them
_MACHINES = {
    "EM_386": "i386",
    "EM_ARM": "ARM",
    "EM_AARCH64": "AArch64",
    "EM_RISCV": "RISC-V",
    "EM_PPC64": "PowerPC64",
    "EM_S390": "s390",
    "EM_MIPS": "MIPS",
}


@dataclass(frozen=True)
class Segment:
    type: str | int  # pyelftools' name ("PT_LOAD"), or the number when it has none
    flags: int
    offset: int
    vaddr: int
    filesz: int
    memsz: int


@dataclass(frozen=True)
class Section:
    index: int
    name: str
    type: str | int  # pyelftools' name ("SHT_SYMTAB"), or the number when it has none
    flags: int
    addr: int
    offset: int
    size: int
    link: int
    entsize: int


class MappedBytes:
    """``size`` bytes of a file mapping from ``offset``, read like ``bytes``: ``len``, an index gives an int, a
    slice gives ``bytes``, ``find``; :meth:`buffer` gives numpy (sysbreak.elfscan.bulk) the mapping itself,
    without a copy."""

    __slots__ = ("_mm", "_off", "_n")

    def __init__(self, mm: mmap.mmap, offset: int, size: int) -> None:
        self._mm, self._off, self._n = mm, offset, size

    def __len__(self) -> int:
        return self._n

    def __getitem__(self, key: int | slice) -> Any:
        if isinstance(key, slice):
            start, stop, step = key.indices(self._n)
            if step != 1:
                raise ValueError("MappedBytes: slices of step 1 only")
            return self._mm[self._off + start : self._off + max(start, stop)]
        if key < 0:
            key += self._n
        if not 0 <= key < self._n:
            raise IndexError("MappedBytes index out of range")
        return self._mm[self._off + key]

    def find(self, sub: bytes, start: int = 0, end: int | None = None) -> int:
        start = max(0, start + self._n if start < 0 else start)
        end = self._n if end is None else min(self._n, end + self._n if end < 0 else end)
        pos = self._mm.find(sub, self._off + start, self._off + end)
        return pos - self._off if pos >= 0 else -1

    def buffer(self) -> tuple[mmap.mmap, int]:
        """The mapping and the offset of these bytes in it."""
        return self._mm, self._off


#: The bytes of a region of code: a copy, or a view of the file's mapping.
Code = bytes | MappedBytes


class FunctionIndex:
    """The function symbols of one symbol table, for "which function holds this address" look-ups.

    Names are decoded only for the symbols a look-up returns, so building the index of a libc's 3,000
    ``.dynsym`` entries costs well under a millisecond.
    """

    def __init__(self, strtab: Code, entries: list[tuple[int, int, int, int]]) -> None:
        # entries: (start, size, name offset, bind)
        entries.sort()
        self._strtab = strtab
        self.starts = [e[0] for e in entries]
        self._sizes = [e[1] for e in entries]
        self._names = [e[2] for e in entries]
        self._binds = [e[3] for e in entries]

    @classmethod
    def from_columns(
        cls, strtab: Code, starts: list[int], sizes: list[int], names: list[int], binds: list[int]
    ) -> FunctionIndex:
        """An index of columns already sorted as ``(start, size, name offset, bind)`` tuples would be (no tuple
        per symbol: for libtorch_cpu's 380,000 symbols those cost 0.2 s)."""
        self = cls.__new__(cls)
        self._strtab, self.starts, self._sizes, self._names, self._binds = strtab, starts, sizes, names, binds
        return self

    def __len__(self) -> int:
        return len(self.starts)

    def _name(self, offset: int) -> str:
        end = self._strtab.find(b"\0", offset)
        return self._strtab[offset : end if end >= 0 else len(self._strtab)].decode("utf-8", "replace")

    def lookup(self, vaddr: int) -> tuple[str, int] | None:
        """The best name of the function whose ``[start, start + size)`` holds ``vaddr``, and its start."""
        i = bisect.bisect_right(self.starts, vaddr) - 1
        best: tuple[tuple[bool, int, int, str], str, int] | None = None
        best_start = None
        steps = 0
        while i >= 0 and steps < 64:
            start, size, name_off, bind = self.starts[i], self._sizes[i], self._names[i], self._binds[i]
            if best_start is not None and start != best_start:
                break  # aliases share a start; the innermost covering start wins
            if start <= vaddr < start + size:
                name = self._name(name_off)
                if name:
                    rank = _BIND_RANK.get(bind, 2)
                    key = (name.startswith("_"), rank, len(name), name)
                    if best is None or key < best[0]:
                        best = (key, name, start)
                    best_start = start
            i -= 1
            steps += 1
        return (best[1], best[2]) if best else None

    def named(self, name: str) -> list[tuple[int, int]]:
        """``(start, size)`` of the functions called exactly ``name``."""
        from sysbreak.elfscan.scanner import BULK_MIN_ENTRIES, use_bulk

        if use_bulk(len(self._names), BULK_MIN_ENTRIES):
            from sysbreak.elfscan import bulk  # (libtorch_cpu: 0.15 s of finds in its 76 MB .strtab otherwise)

            hits = bulk.entries_named(self._strtab, self._names, name.encode() + b"\0")
            return [(self.starts[i], self._sizes[i]) for i in hits]
        offsets = _name_offsets(self._strtab, name)
        if not offsets:
            return []
        return [(self.starts[i], self._sizes[i]) for i, n in enumerate(self._names) if n in offsets]


def _name_offsets(strtab: Code, name: str) -> set[int]:
    """Every offset of ``strtab`` where the NUL-terminated ``name`` starts (string tables share suffixes, so any
    of them can be an ``st_name``)."""
    want = name.encode() + b"\0"
    offsets = set()
    pos = strtab.find(want)
    while pos >= 0:
        offsets.add(pos)
        pos = strtab.find(want, pos + 1)
    return offsets


def load_library() -> None:
    """Import pyelftools now (the first :class:`ElfFile` does it otherwise): for timing it apart."""
    _elftools()


def _elftools() -> tuple[Any, Any, Any]:
    from elftools.common.utils import struct_parse
    from elftools.elf.elffile import ELFFile
    from elftools.elf.notes import iter_notes

    return ELFFile, struct_parse, iter_notes


class ElfFile:
    """One ELF file, open for reading. Use as a context manager (it closes the file).

    The headers are read through pyelftools from a buffered file; table data with ``pread``, never from a memory
    map (a map of a file that another process truncates meanwhile would kill the interpreter with SIGBUS).
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self._fd = -1
        self._fh: IO[bytes] | None = None
        self._dyn: dict[str, int] | None = None
        try:
            fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        except FileNotFoundError:
            raise SysbreakError(f"{path}: no such file") from None
        except IsADirectoryError:
            raise SysbreakError(f"{path}: is a directory, not an ELF file") from None
        except PermissionError:
            raise SysbreakError(f"{path}: permission denied (cannot read it)") from None
        except OSError as err:
            raise os_error(err, f"{path}: cannot open it") from None
        self._fd = fd
        try:
            st = os.fstat(fd)
            self.stat = st
            self.size = st.st_size
            if stat.S_ISDIR(st.st_mode):
                raise SysbreakError(f"{path}: is a directory, not an ELF file")
            if not stat.S_ISREG(st.st_mode):
                raise SysbreakError(f"{path}: not a regular file, so not an ELF file")
            if st.st_size < 64:
                raise SysbreakError(f"{path}: not an ELF file (too short)")
            self._parse_headers()
        except SysbreakError:
            self.close()
            raise
        except OSError as err:
            self.close()
            raise os_error(err, f"{path}: cannot read it") from None
        except Exception as err:  # pyelftools' ELFError, struct.error, and whatever a damaged header provokes
            self.close()
            raise SysbreakError(f"{path}: damaged ELF file ({type(err).__name__}: {_first_line(err)})") from None

    def close(self) -> None:
        if self._fh is not None:
            with contextlib.suppress(OSError):
                self._fh.close()  # closes the descriptor too
            self._fh = None
            self._fd = -1
        if self._fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> ElfFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- headers -----------------------------------------------------------------------------------------------

    def _parse_headers(self) -> None:
        head = self.read(0, 20)
        if head[:4] != b"\x7fELF":
            raise SysbreakError(f"{self.path}: not an ELF file")
        if head[4] != 2 or head[5] != 1:
            bits = {1: "32-bit", 2: "64-bit"}.get(head[4], "odd-class")
            order = {1: "little-endian", 2: "big-endian"}.get(head[5], "odd-endian")
            raise SysbreakError(f"{self.path}: a {bits} {order} ELF file, not x86-64")
        elf_file, struct_parse, self._iter_notes = _elftools()
        self._fh = os.fdopen(self._fd, "rb", closefd=True)
        elf = elf_file(self._fh)
        self._elf = elf
        machine = elf["e_machine"]
        if machine != "EM_X86_64":
            arch = _MACHINES.get(machine, f"machine {machine}") if isinstance(machine, str) else f"machine {machine}"
            raise SysbreakError(f"{self.path}: an ELF file for {arch}, not x86-64")
        self.e_type = elf["e_type"]
        self.entry = elf["e_entry"]
        # The headers are parsed with pyelftools' own structures (elf.structs), not through get_segment() and
        # get_section(): those build a section object per header, and the hash-table sections (and the
        # dynamic segment, which finds them) decode their whole table when built: 40 ms for a libc.
        self._parse = lambda struct_, offset: struct_parse(struct_, self._fh, offset)
        self.segments: list[Segment] = []
        phoff, phnum, phentsize = elf["e_phoff"], elf["e_phnum"], elf["e_phentsize"]
        if phoff and phnum and phentsize >= 56:
            if phoff + phnum * phentsize > self.size:
                raise SysbreakError(f"{self.path}: damaged ELF file (program headers point outside the file)")
            for i in range(phnum):
                h = self._parse(elf.structs.Elf_Phdr, phoff + i * phentsize)
                self.segments.append(Segment(h.p_type, h.p_flags, h.p_offset, h.p_vaddr, h.p_filesz, h.p_memsz))
        self.sections: list[Section] = []
        shoff, shentsize = elf["e_shoff"], elf["e_shentsize"]
        shnum = elf.num_sections() if shoff and shentsize >= 64 else 0
        if shnum and shoff + shnum * shentsize <= self.size:
            headers = [self._parse(elf.structs.Elf_Shdr, shoff + i * shentsize) for i in range(shnum)]
            names = b""
            shstrndx = elf.get_shstrndx()
            if shstrndx < len(headers):
                names = self.read(headers[shstrndx].sh_offset, headers[shstrndx].sh_size)
            for i, h in enumerate(headers):
                end = names.find(b"\0", h.sh_name)
                name = names[h.sh_name : end if end >= 0 else len(names)].decode("ascii", "replace")
                self.sections.append(
                    Section(i, name, h.sh_type, h.sh_flags, h.sh_addr, h.sh_offset, h.sh_size, h.sh_link,
                            h.sh_entsize)
                )  # fmt: skip

    # -- simple facts ------------------------------------------------------------------------------------------

    def read(self, offset: int, size: int) -> bytes:
        """``size`` bytes at ``offset`` (fewer at the end of the file; none outside it)."""
        size = min(size, self.size - offset)
        if offset < 0 or size <= 0:
            return b""
        return os.pread(self._fd, size, offset)

    def map(self, offset: int, size: int) -> bytes | MappedBytes:
        """What :meth:`read` returns, from a read-only shared mapping of the file instead of a copy (for the big
        executable sections: libtorch_cpu's 280 MB ``.text`` is read in 0.25 s, mapped with ``MAP_POPULATE`` in
        0.07 s, and the copy's 280 MB of private memory are not needed); a copy where the file cannot be mapped.
        The mapping outlives the file's closing."""
        size = min(size, self.size - offset)
        if offset < 0 or size <= 0:
            return b""
        start = offset - offset % mmap.ALLOCATIONGRANULARITY  # (only these pages: MAP_POPULATE maps them all)
        try:
            mm = mmap.mmap(
                self._fd,
                offset + size - start,
                flags=mmap.MAP_SHARED | getattr(mmap, "MAP_POPULATE", 0),
                prot=mmap.PROT_READ,
                offset=start,
            )
        except (OSError, ValueError, OverflowError):
            return self.read(offset, size)
        return MappedBytes(mm, offset - start, size)

    def section(self, name: str) -> Section | None:
        for s in self.sections:
            if s.name == name:
                return s
        return None

    def loads(self) -> list[Segment]:
        return [s for s in self.segments if s.type == PT_LOAD]

    def first_load_vaddr(self) -> int:
        loads = self.loads()
        if not loads:
            return 0
        return min(s.vaddr for s in loads) & ~(PAGE - 1)

    def build_id(self) -> str | None:
        """The GNU build-id (hex), from the notes (read by pyelftools) of the ``PT_NOTE`` segments, else of the
        ``SHT_NOTE`` sections."""
        holders = [(s.offset, s.filesz) for s in self.segments if s.type == PT_NOTE]
        if not holders:
            holders = [(s.offset, s.size) for s in self.sections if s.type == SHT_NOTE]
        for offset, size in holders:
            if offset + size > self.size:
                continue
            try:
                for note in self._iter_notes(self._elf, offset, size):
                    if note.n_type == "NT_GNU_BUILD_ID" and note.n_name == "GNU" and note.n_desc:
                        desc = note.n_desc
                        return desc if isinstance(desc, str) else bytes(desc).hex()
            except Exception:  # a damaged note: no build-id from this holder (pyelftools raises many kinds)
                continue
        return None

    def exec_regions(self) -> list[tuple[int, int, int, str]]:
        """``(vaddr, file offset, size, name)`` of the code to search: the executable sections (what
        ``objdump -d`` disassembles) inside executable PT_LOAD segments; the executable segments themselves
        when the file has no section headers."""
        xloads = [s for s in self.loads() if s.flags & PF_X]
        out = []
        if self.sections:
            for s in self.sections:
                if not (s.flags & SHF_EXECINSTR) or s.type == SHT_NOBITS or s.size == 0:
                    continue
                if xloads and not any(seg.vaddr <= s.addr < seg.vaddr + seg.filesz for seg in xloads):
                    continue
                out.append((s.addr, s.offset, s.size, s.name))
        else:
            out = [(seg.vaddr, seg.offset, seg.filesz, f"LOAD@{seg.vaddr:#x}") for seg in xloads if seg.filesz]
        return sorted(out)

    # -- the dynamic section (for files without section headers) ---------------------------------------------

    def dynamic_tags(self) -> dict[str, int]:
        """The dynamic tags of ``PT_DYNAMIC`` (the first value of each, by pyelftools' name), decoded with
        pyelftools' ``Elf_Dyn``; empty for static files."""
        if self._dyn is None:
            tags: dict[str, int] = {}
            seg = next((s for s in self.segments if s.type == PT_DYNAMIC), None)
            if seg is not None:
                with contextlib.suppress(Exception):  # a damaged dynamic segment: the tags read so far
                    for i in range(min(seg.filesz, self.size - seg.offset) // 16):
                        entry = self._parse(self._elf.structs.Elf_Dyn, seg.offset + 16 * i)
                        if entry.d_tag == "DT_NULL":
                            break
                        if isinstance(entry.d_tag, str) and entry.d_tag not in tags:
                            tags[entry.d_tag] = int(entry.d_val)
            self._dyn = tags
        return self._dyn

    def _vaddr_offset(self, vaddr: int) -> int | None:
        """The file offset of ``vaddr``, through the PT_LOAD segment holding it."""
        for seg in self.loads():
            if seg.vaddr <= vaddr < seg.vaddr + seg.filesz:
                return seg.offset + vaddr - seg.vaddr
        return None

    def _dynamic_symtab(self) -> tuple[bytes, bytes] | None:
        """``.dynsym`` and ``.dynstr`` located by the dynamic tags: the symbol table ends where the string table
        starts (``DT_STRTAB`` follows ``DT_SYMTAB`` in what GNU ld, gold, lld and mold write)."""
        tags = self.dynamic_tags()
        symtab, strtab, strsz = tags.get("DT_SYMTAB"), tags.get("DT_STRTAB"), tags.get("DT_STRSZ")
        if symtab is None or strtab is None or strsz is None:
            return None
        sym_off, str_off = self._vaddr_offset(symtab), self._vaddr_offset(strtab)
        if sym_off is None or str_off is None:
            return None
        if strtab <= symtab:
            return None  # not the layout linkers write: no way to tell the table's length without its hash
        count = (strtab - symtab) // SYM_SIZE
        return self.read(sym_off, count * SYM_SIZE), self.read(str_off, strsz)

    def _dynamic_relas(self) -> list[bytes]:
        tags = self.dynamic_tags()
        out = []
        for addr_tag, size_tag in (("DT_RELA", "DT_RELASZ"), ("DT_JMPREL", "DT_PLTRELSZ")):
            addr, size = tags.get(addr_tag), tags.get(size_tag)
            if addr is None or not size or (addr_tag == "DT_JMPREL" and tags.get("DT_PLTREL") not in (None, 7)):
                continue
            off = self._vaddr_offset(addr)
            if off is not None:
                out.append(self.read(off, size - size % RELA_SIZE))
        return out

    # -- symbols -----------------------------------------------------------------------------------------------

    def _symtab(self, sh_type: str) -> tuple[Section | None, bytes, Code] | None:
        for s in self.sections:
            if s.type == sh_type and s.size and s.link < len(self.sections):
                strsec = self.sections[s.link]
                from sysbreak.elfscan.scanner import BULK_MIN_BYTES, use_bulk

                # (a big string table is mapped: libtorch_cpu's .strtab is 76 MB, of which a scan reads a few names)
                strtab = (self.map if use_bulk(strsec.size, BULK_MIN_BYTES) else self.read)(strsec.offset, strsec.size)
                return s, self.read(s.offset, s.size - s.size % SYM_SIZE), strtab
        if sh_type == SHT_DYNSYM and not self.sections:
            found = self._dynamic_symtab()
            if found is not None:
                return None, found[0], found[1]
        return None

    def functions(self, sh_type: str) -> FunctionIndex | None:
        """The defined function symbols of ``.symtab`` (``SHT_SYMTAB``) or ``.dynsym`` (``SHT_DYNSYM``; found by
        the dynamic tags when there are no section headers), decoded in bulk."""
        found = self._symtab(sh_type)
        if found is None:
            return None
        _sec, table, strtab = found
        from sysbreak.elfscan.scanner import BULK_MIN_ENTRIES, use_bulk

        if use_bulk(len(table) // SYM_SIZE, BULK_MIN_ENTRIES):
            from sysbreak.elfscan import bulk  # (libtorch_cpu's 380,000 symbols: 0.3 s here, 0.03 s there)

            return FunctionIndex.from_columns(strtab, *bulk.function_symbols(table, (STT_FUNC, STT_GNU_IFUNC)))
        entries = []
        for st_name, st_info, _other, st_shndx, st_value, st_size in struct.iter_unpack("<IBBHQQ", table):
            kind = st_info & 0xF
            if kind in (STT_FUNC, STT_GNU_IFUNC) and st_shndx != 0 and st_value:
                entries.append((st_value, st_size, st_name, st_info >> 4))
        return FunctionIndex(strtab, entries)

    def got_slots(self, symbol: str) -> dict[int, int]:
        """The GOT slots that the dynamic linker fills with ``symbol``'s address: slot address -> relocation type
        (``R_X86_64_JUMP_SLOT`` for the PLT's slot, ``R_X86_64_GLOB_DAT`` or ``R_X86_64_64`` for slots that code
        built with ``-fno-plt`` calls through)."""
        dyn = self._symtab(SHT_DYNSYM)
        if dyn is None:
            return {}
        dynsec, table, strtab = dyn
        offsets = _name_offsets(strtab, symbol)
        if not offsets:
            return {}
        indexes = [i for i, (st_name,) in enumerate(struct.iter_unpack("<I20x", table)) if st_name in offsets]
        if dynsec is not None:
            relas = [
                self.read(sec.offset, sec.size)
                for sec in self.sections
                if sec.type == SHT_RELA and sec.link == dynsec.index and sec.size
            ]
        else:
            relas = self._dynamic_relas()
        slots: dict[int, int] = {}
        for rela in relas:
            # r_info = (symbol index << 32) | type: a byte search for the few wanted values, not a full decode
            for idx in indexes:
                for rtype in (R_X86_64_JUMP_SLOT, R_X86_64_GLOB_DAT, R_X86_64_64):
                    pattern = struct.pack("<Q", (idx << 32) | rtype)
                    pos = rela.find(pattern)
                    while pos >= 0:
                        if pos % RELA_SIZE == 8:
                            slots[struct.unpack_from("<Q", rela, pos - 8)[0]] = rtype
                        pos = rela.find(pattern, pos + 1)
        return slots

    # -- unwind tables -----------------------------------------------------------------------------------------

    def fde_starts(self) -> list[int]:
        """Start addresses of every FDE in the binary search table of ``.eh_frame_hdr`` (function starts, also
        of stripped and ``.cold`` parts): exact instruction boundaries to start decoding from."""
        hdr = self.section(".eh_frame_hdr")
        if hdr is not None:
            vaddr, offset, size = hdr.addr, hdr.offset, hdr.size
        else:
            seg = next((s for s in self.segments if s.type == PT_GNU_EH_FRAME), None)
            if seg is None:
                return []
            vaddr, offset, size = seg.vaddr, seg.offset, seg.filesz
        blob = self.read(offset, size)
        if len(blob) < 8 or blob[0] != 1:
            return []
        ptr_enc, count_enc, table_enc = blob[1], blob[2], blob[3]
        pos = 4
        try:
            _ptr, pos = _read_encoded(blob, pos, ptr_enc, vaddr)
            count, pos = _read_encoded(blob, pos, count_enc, vaddr)
        except (ValueError, struct.error):
            return []
        if count is None or count <= 0 or table_enc == 0xFF:
            return []
        if table_enc == 0x3B:  # DW_EH_PE_datarel | DW_EH_PE_sdata4: the encoding every linker writes
            raw = blob[pos : pos + count * 8]
            if len(raw) < count * 8:
                return []
            pairs = array("i")
            pairs.frombytes(raw)
            return [vaddr + loc for loc in pairs[0::2]]
        out = []
        try:
            for _ in range(count):
                loc, pos = _read_encoded(blob, pos, table_enc, vaddr)
                _fde, pos = _read_encoded(blob, pos, table_enc, vaddr)
                if loc is not None:
                    out.append(loc)
        except (ValueError, struct.error):
            return out
        return out


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0][:160] if text else "?"


_ENC_FORMATS = {0x02: "<H", 0x03: "<I", 0x04: "<Q", 0x0A: "<h", 0x0B: "<i", 0x0C: "<q"}


def _read_encoded(blob: bytes, pos: int, enc: int, base_vaddr: int) -> tuple[int | None, int]:
    """Read one DWARF EH pointer encoded as ``enc`` from ``blob`` (the ``.eh_frame_hdr``) at ``pos``."""
    if enc == 0xFF:
        return None, pos
    fmt = _ENC_FORMATS.get(enc & 0x0F)
    if fmt is None:
        raise ValueError(f"unsupported pointer encoding {enc:#x}")
    (value,) = struct.unpack_from(fmt, blob, pos)
    app = enc & 0x70
    if app == 0x10:  # pcrel
        value += base_vaddr + pos
    elif app == 0x30:  # datarel (relative to the start of .eh_frame_hdr)
        value += base_vaddr
    elif app != 0:
        raise ValueError(f"unsupported pointer application {app:#x}")
    return value & 0xFFFFFFFFFFFFFFFF, pos + struct.calcsize(fmt)
