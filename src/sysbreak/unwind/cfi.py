"""Call frame information (``.eh_frame`` / ``.debug_frame``): the rules that recover a caller's registers at a pc.

pyelftools parses the entries (CIE/FDE headers, augmentations, pointer encodings, instruction lists) and decodes
them into tables (``get_decoded()``). Two things are done around it:

* only the FDEs that are needed are parsed: ``.eh_frame_hdr`` holds a sorted table of every FDE's start address
  and offset, so finding the FDE of a pc costs one bisect and one entry parse, even in a 400 MB ``libtorch_cpu``.
  A section without that table (``.debug_frame``) is parsed once in full to a sorted range index;
* the decoded rows are turned into small tuples (picklable, so that :mod:`sysbreak.unwind.modules` keeps them in
  the on-disk cache). ``DW_CFA_GNU_args_size`` (a hint for exception unwinding that changes no rule) is dropped
  before decoding because pyelftools 0.33 refuses to decode a table holding it.

A row is ``(pc, cfa, rules)``: ``cfa`` is ``(CFA_REG, reg, offset)`` or ``(CFA_EXPR, expression bytes)``, and
``rules`` a tuple of ``(register, kind, argument)`` for every register the row has a rule for.
"""

from __future__ import annotations

import bisect
import struct
from array import array
from dataclasses import dataclass, field
from typing import Any

CFA_REG, CFA_EXPR = 0, 1
UNDEFINED, SAME_VALUE, OFFSET, VAL_OFFSET, REGISTER, EXPRESSION, VAL_EXPRESSION = range(7)
_RULE_KINDS = {
    "UNDEFINED": UNDEFINED,
    "SAME_VALUE": SAME_VALUE,
    "OFFSET": OFFSET,
    "VAL_OFFSET": VAL_OFFSET,
    "REGISTER": REGISTER,
    "EXPRESSION": EXPRESSION,
    "VAL_EXPRESSION": VAL_EXPRESSION,
}
MASK64 = (1 << 64) - 1
_GNU_ARGS_SIZE = 0x2E

Rule = tuple[int, int, Any]
Row = tuple[int, tuple[Any, ...], tuple[Rule, ...]]


@dataclass
class Fde:
    """One decoded FDE: the pc range it covers, its rows (sorted by pc), whether its CIE marks a signal frame
    (augmentation ``S``), and the column of the return address."""

    start: int
    end: int
    rows: tuple[Row, ...]
    signal: bool = False
    ra_column: int = 16

    def row_at(self, pc: int) -> Row | None:
        """The row in effect at ``pc`` (the last one starting at or below it)."""
        rows = self.rows
        lo, hi = 0, len(rows)
        while lo < hi:
            mid = (lo + hi) // 2
            if rows[mid][0] <= pc:
                lo = mid + 1
            else:
                hi = mid
        return rows[lo - 1] if lo else None


def _expr_bytes(value: Any) -> bytes:
    return bytes(value) if value is not None else b""


def decode_entry(entry: Any) -> Fde | None:
    """A pyelftools FDE decoded into an :class:`Fde` (None for a CIE or a terminator)."""
    from elftools.dwarf.callframe import FDE

    if not isinstance(entry, FDE):
        return None
    cie: Any = entry.cie
    # DW_CFA_GNU_args_size (0x2e) changes no rule; pyelftools 0.33 refuses to decode a table holding it
    if any(int(i.opcode) == _GNU_ARGS_SIZE for i in entry.instructions):
        entry.instructions = [i for i in entry.instructions if int(i.opcode) != _GNU_ARGS_SIZE]
    if any(int(i.opcode) == _GNU_ARGS_SIZE for i in cie.instructions):
        cie.instructions = [i for i in cie.instructions if int(i.opcode) != _GNU_ARGS_SIZE]
    table = entry.get_decoded().table
    rows: list[Row] = []
    for line in table:
        cfa_rule = line["cfa"]
        if cfa_rule.expr is not None:
            cfa: tuple[Any, ...] = (CFA_EXPR, _expr_bytes(cfa_rule.expr))
        elif cfa_rule.reg is not None:
            cfa = (CFA_REG, int(cfa_rule.reg), int(cfa_rule.offset or 0))
        else:
            cfa = (CFA_REG, -1, 0)  # no CFA rule: the row cannot be used
        rules: list[Rule] = []
        for key, rule in line.items():
            if key in ("pc", "cfa"):
                continue
            kind = _RULE_KINDS.get(rule.type)
            if kind is None:
                continue
            arg = rule.arg
            if kind in (EXPRESSION, VAL_EXPRESSION):
                arg = _expr_bytes(arg)
            elif arg is not None:
                arg = int(arg)
            rules.append((int(key), kind, arg))
        rows.append((int(line["pc"]) & MASK64, cfa, tuple(sorted(rules))))
    start = int(entry.header["initial_location"]) & MASK64
    aug = cie.header.get("augmentation") or b""
    ra = cie.header.get("return_address_register", 16)
    return Fde(start, start + int(entry.header["address_range"]), tuple(rows), b"S" in bytes(aug), int(ra))


@dataclass
class CfiTable:
    """The FDEs of one CFI section of one file, by pc. Pickled into the module cache without its open file.

    ``starts``/``offsets`` index every FDE (from ``.eh_frame_hdr`` or a full parse); ``ends`` is filled for a full
    parse (a hdr table gives starts only: the range is read from the FDE itself). ``decoded`` keeps the FDEs
    decoded so far, by section offset.
    """

    path: str
    section: str  # ".eh_frame" or ".debug_frame"
    starts: array[int] = field(default_factory=lambda: array("Q"))
    offsets: array[int] = field(default_factory=lambda: array("Q"))
    ends: array[int] | None = None
    decoded: dict[int, Fde | None] = field(default_factory=dict)
    dirty: bool = False

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state.pop("_cfi", None)
        state["dirty"] = False
        return state

    def __len__(self) -> int:
        return len(self.starts)

    # -- building ------------------------------------------------------------------------------------------------

    @classmethod
    def build(cls, elf: Any, path: str, section: str) -> CfiTable | None:
        """The table of ``section`` of the open pyelftools ``elf``, or None when the file has no such section."""
        sec = elf.get_section_by_name(section)
        if sec is None or sec.header["sh_type"] == "SHT_NOBITS" or sec.header["sh_size"] == 0:
            return None
        table = cls(path, section)
        if section == ".eh_frame" and table._index_from_hdr(elf, sec):
            return table
        table._cfi = _make_cfi(elf, section)  # kept: the parsed entries are reused when rows are decoded
        entries = table._cfi.get_entries()
        from elftools.dwarf.callframe import FDE

        spans = sorted(
            (int(e.header["initial_location"]) & MASK64, int(e.header["address_range"]), e.offset)
            for e in entries
            if isinstance(e, FDE)
        )
        table.starts = array("Q", (s for s, _r, _o in spans))
        table.ends = array("Q", (min(s + r, MASK64) for s, r, _o in spans))
        table.offsets = array("Q", (o for _s, _r, o in spans))
        return table

    def _index_from_hdr(self, elf: Any, eh_frame: Any) -> bool:
        hdr = elf.get_section_by_name(".eh_frame_hdr")
        if hdr is None:
            return False
        data = hdr.data()
        # version 1; eh_frame_ptr as pcrel|sdata4, fde_count as udata4, table as datarel|sdata4 pairs: what every
        # GNU linker writes. Anything else: parse the whole section instead.
        if len(data) < 12 or data[0] != 1 or data[2] != 0x03 or data[3] != 0x3B:
            return False
        (count,) = struct.unpack_from("<I", data, 8)
        if 12 + 8 * count > len(data):
            return False
        pairs = array("i")
        pairs.frombytes(data[12 : 12 + 8 * count])
        if struct.pack("=i", 1) != struct.pack("<i", 1):  # pragma: no cover - big-endian host
            pairs.byteswap()
        base = int(hdr.header["sh_addr"])
        sec_addr = int(eh_frame.header["sh_addr"])
        self.starts = array("Q", ((base + v) & MASK64 for v in pairs[0::2]))
        self.offsets = array("Q", ((base + v - sec_addr) & MASK64 for v in pairs[1::2]))
        return True

    def _cfi_object(self) -> Any:
        """pyelftools' CallFrameInfo over an in-memory copy of the section (the file is open only to read it: a
        process with hundreds of libraries must not cost hundreds of open files)."""
        cfi = getattr(self, "_cfi", None)
        if cfi is None:
            from elftools.elf.elffile import ELFFile

            with open(self.path, "rb") as fh:
                cfi = _make_cfi(ELFFile(fh), self.section)
            self._cfi = cfi
        return cfi

    def close(self) -> None:
        self.__dict__.pop("_cfi", None)

    # -- look-up ---------------------------------------------------------------------------------------------------

    def find(self, vaddr: int) -> Fde | None:
        """The decoded FDE covering ``vaddr`` (a link-time address), or None."""
        i = bisect.bisect_right(self.starts, vaddr) - 1
        if i < 0:
            return None
        if self.ends is not None and vaddr >= self.ends[i]:
            return None
        off = int(self.offsets[i])
        if off in self.decoded:
            fde = self.decoded[off]
        else:
            try:
                entry = self._cfi_object()._parse_entry_at(off)
                fde = decode_entry(entry)
            except Exception:  # noqa: BLE001 - a damaged entry is "no CFI here", never a crash of the capture
                fde = None
            self.decoded[off] = fde
            self.dirty = True
        if fde is None or not fde.start <= vaddr < fde.end:
            return None
        return fde

    def decode_all(self) -> int:
        """Decode every FDE (for tests and the cold-parse measurement); returns how many decoded."""
        return sum(1 for s in self.starts if self.find(int(s)) is not None)


def _make_cfi(elf: Any, section: str) -> Any:
    import io

    from elftools.dwarf.callframe import CallFrameInfo
    from elftools.dwarf.structs import DWARFStructs

    sec: Any = elf.get_section_by_name(section)
    data = sec.data()
    return CallFrameInfo(
        stream=io.BytesIO(data),
        size=len(data),
        address=int(sec.header["sh_addr"]),
        base_structs=DWARFStructs(little_endian=elf.little_endian, dwarf_format=32, address_size=elf.elfclass // 8),
        for_eh_frame=section == ".eh_frame",
    )
