"""A small, fast reader for the parts of 64-bit little-endian x86-64 ELF files that site discovery needs.

pyelftools would do, but importing it alone costs about 40 ms and walking a libc's symbol and relocation tables
with it costs as much again, which is the whole budget of a cold scan. What is needed here is little: the
program and section headers, the GNU build-id note, the function symbols of ``.symtab``/``.dynsym``, the GOT
slots of the relocations against one symbol, and the function starts listed in ``.eh_frame_hdr``. All of it is
read with :mod:`struct` from ``pread`` calls on the file.
"""

from __future__ import annotations

import bisect
import contextlib
import os
import stat
import struct
from array import array
from dataclasses import dataclass

from sysbreak.errors import SysbreakError

EM_X86_64 = 62
PT_LOAD = 1
PT_NOTE = 4
PT_GNU_EH_FRAME = 0x6474E550
PF_X = 1
SHT_SYMTAB = 2
SHT_RELA = 4
SHT_NOBITS = 8
SHT_DYNSYM = 11
SHF_EXECINSTR = 4
STT_FUNC = 2
STT_GNU_IFUNC = 10
STB_LOCAL, STB_GLOBAL, STB_WEAK = 0, 1, 2
R_X86_64_64, R_X86_64_GLOB_DAT, R_X86_64_JUMP_SLOT = 1, 6, 7
PAGE = 4096
_BIND_RANK = {STB_GLOBAL: 0, STB_WEAK: 1}  # then local: the name preferred among aliases

_MACHINES = {3: "i386", 40: "ARM", 183: "AArch64", 243: "RISC-V", 21: "PowerPC64", 22: "s390", 8: "MIPS"}


@dataclass(frozen=True)
class Segment:
    type: int
    flags: int
    offset: int
    vaddr: int
    filesz: int
    memsz: int


@dataclass(frozen=True)
class Section:
    index: int
    name: str
    type: int
    flags: int
    addr: int
    offset: int
    size: int
    link: int
    entsize: int


class FunctionIndex:
    """The function symbols of one symbol table, for "which function holds this address" look-ups.

    Names are decoded only for the symbols a look-up returns, so building the index of a libc's 3,000
    ``.dynsym`` entries costs well under a millisecond.
    """

    def __init__(self, strtab: bytes, entries: list[tuple[int, int, int, int]]) -> None:
        # entries: (start, size, name offset, bind)
        entries.sort()
        self._strtab = strtab
        self._entries = entries
        self.starts = [e[0] for e in entries]

    def __len__(self) -> int:
        return len(self._entries)

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
            start, size, name_off, bind = self._entries[i]
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
        """``(start, size)`` of the functions called exactly ``name`` (string tables share suffixes, so every
        place the name occurs in the string table is a possible ``st_name``)."""
        want = name.encode() + b"\0"
        offsets = set()
        pos = self._strtab.find(want)
        while pos >= 0:
            offsets.add(pos)
            pos = self._strtab.find(want, pos + 1)
        if not offsets:
            return []
        return [(e[0], e[1]) for e in self._entries if e[2] in offsets]


class ElfFile:
    """One ELF file, open for reading. Use as a context manager (it closes the file).

    Reads are ``pread`` calls rather than slices of a memory map: a map of a file that another process
    truncates meanwhile would kill the interpreter with SIGBUS.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self._fd = -1
        try:
            fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        except FileNotFoundError:
            raise SysbreakError(f"{path}: no such file") from None
        except IsADirectoryError:
            raise SysbreakError(f"{path}: is a directory, not an ELF file") from None
        except PermissionError:
            raise SysbreakError(f"{path}: permission denied (cannot read it)") from None
        except OSError as err:
            raise SysbreakError(f"{path}: cannot open: {err.strerror or err}") from None
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
            self._parse_header()
        except SysbreakError:
            self.close()
            raise
        except (struct.error, IndexError, ValueError, OverflowError):
            self.close()
            raise SysbreakError(f"{path}: damaged ELF file (headers point outside the file)") from None
        except OSError as err:
            self.close()
            raise SysbreakError(f"{path}: cannot read it: {err.strerror or err}") from None

    def close(self) -> None:
        if self._fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> ElfFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- headers -----------------------------------------------------------------------------------------------

    def _parse_header(self) -> None:
        head = self.read(0, 64)
        if head[:4] != b"\x7fELF":
            raise SysbreakError(f"{self.path}: not an ELF file")
        if head[4] != 2 or head[5] != 1:
            bits = {1: "32-bit", 2: "64-bit"}.get(head[4], "odd-class")
            order = {1: "little-endian", 2: "big-endian"}.get(head[5], "odd-endian")
            raise SysbreakError(f"{self.path}: a {bits} {order} ELF file, not x86-64")
        (e_type, e_machine, _v, self.entry, e_phoff, e_shoff, _f, _eh, e_phentsize, e_phnum, e_shentsize, e_shnum,
         e_shstrndx) = struct.unpack_from("<HHIQQQIHHHHHH", head, 16)  # fmt: skip
        if e_machine != EM_X86_64:
            arch = _MACHINES.get(e_machine, f"machine {e_machine}")
            raise SysbreakError(f"{self.path}: an ELF file for {arch}, not x86-64")
        self.e_type = e_type
        self.segments: list[Segment] = []
        if e_phoff and e_phentsize >= 56:
            table = self.read(e_phoff, e_phnum * e_phentsize)
            for i in range(e_phnum):
                p_type, p_flags, p_offset, p_vaddr, _pa, p_filesz, p_memsz, _al = struct.unpack_from(
                    "<IIQQQQQQ", table, i * e_phentsize
                )
                self.segments.append(Segment(p_type, p_flags, p_offset, p_vaddr, p_filesz, p_memsz))
        self.sections: list[Section] = []
        if e_shoff and e_shentsize >= 64 and e_shnum and e_shoff + e_shnum * e_shentsize <= self.size:
            table = self.read(e_shoff, e_shnum * e_shentsize)
            raw = [struct.unpack_from("<IIQQQQIIQQ", table, i * e_shentsize) for i in range(e_shnum)]
            names = b""
            if e_shstrndx < len(raw):
                s = raw[e_shstrndx]
                names = self.read(s[4], s[5])
            for i, (sh_name, sh_type, sh_flags, sh_addr, sh_offset, sh_size, sh_link, _in, _al, sh_entsize) in (
                enumerate(raw)
            ):  # fmt: skip
                end = names.find(b"\0", sh_name)
                nm = names[sh_name : end if end >= 0 else len(names)].decode("ascii", "replace")
                self.sections.append(
                    Section(i, nm, sh_type, sh_flags, sh_addr, sh_offset, sh_size, sh_link, sh_entsize)
                )

    # -- simple facts ------------------------------------------------------------------------------------------

    def read(self, offset: int, size: int) -> bytes:
        """``size`` bytes at ``offset`` (fewer at the end of the file; none outside it)."""
        size = min(size, self.size - offset)
        if offset < 0 or size <= 0:
            return b""
        return os.pread(self._fd, size, offset)

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
        blobs: list[bytes] = []
        for seg in self.segments:
            if seg.type == PT_NOTE:
                blobs.append(self.read(seg.offset, seg.filesz))
        if not blobs:
            blobs = [self.read(s.offset, s.size) for s in self.sections if s.type == 7]  # SHT_NOTE
        for blob in blobs:
            pos = 0
            while pos + 12 <= len(blob):
                namesz, descsz, ntype = struct.unpack_from("<III", blob, pos)
                pos += 12
                name = blob[pos : pos + namesz]
                pos += (namesz + 3) & ~3
                desc = blob[pos : pos + descsz]
                pos += (descsz + 3) & ~3
                if ntype == 3 and name.rstrip(b"\0") == b"GNU" and desc:
                    return desc.hex()
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

    # -- symbols -----------------------------------------------------------------------------------------------

    def _symtab(self, sh_type: int) -> tuple[Section, bytes, bytes] | None:
        for s in self.sections:
            if s.type == sh_type and s.size and s.link < len(self.sections):
                strsec = self.sections[s.link]
                return s, self.read(s.offset, s.size - s.size % 24), self.read(strsec.offset, strsec.size)
        return None

    def functions(self, sh_type: int) -> FunctionIndex | None:
        """The defined function symbols of ``.symtab`` (``SHT_SYMTAB``) or ``.dynsym`` (``SHT_DYNSYM``)."""
        found = self._symtab(sh_type)
        if found is None:
            return None
        _sec, table, strtab = found
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
        want = symbol.encode() + b"\0"
        offsets = set()
        pos = strtab.find(want)
        while pos >= 0:
            offsets.add(pos)
            pos = strtab.find(want, pos + 1)
        if not offsets:
            return {}
        indexes = [i for i, (st_name,) in enumerate(struct.iter_unpack("<I20x", table)) if st_name in offsets]
        slots: dict[int, int] = {}
        for sec in self.sections:
            if sec.type != SHT_RELA or sec.link != dynsec.index or not sec.size:
                continue
            rela = self.read(sec.offset, sec.size)
            for idx in indexes:
                for rtype in (R_X86_64_JUMP_SLOT, R_X86_64_GLOB_DAT, R_X86_64_64):
                    pattern = struct.pack("<Q", (idx << 32) | rtype)
                    pos = rela.find(pattern)
                    while pos >= 0:
                        if pos % 24 == 8:
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
