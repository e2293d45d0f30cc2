"""Function names, inline chains and file:line from DWARF (``.debug_info`` / ``.debug_line``), read by pyelftools.

One compile unit is read the first time a pc in it is looked up, and kept (and pickled with its module) as
compact tables:

* per source file ("subfile", named the way GDB names a symtab: the line table's directory joined to the file
  name, or the compile unit's own name for its primary file), the line rows GDB records from the line program
  (GDB's rules: a file switch at an address ends the previous file's rows there, a row for line 0 ends a range);
* the nesting of functions and inlined calls as non-overlapping address segments, each with its chain of scopes
  innermost first; a scope has GDB's name for it (the demangled linkage name without parameters for C++, the
  linkage name for C functions that have one, else the DWARF name), the call site of an inlined call
  (``DW_AT_call_file``/``DW_AT_call_line``) and its entry pc (the start of its first range).

Look-ups follow GDB's ``find_pc_sect_line`` (the closest row at or below the pc over all subfiles of the unit,
preferring a statement row at one address, none when it is an end-of-range row).
"""

from __future__ import annotations

import bisect
from array import array
from dataclasses import dataclass, field
from typing import Any

from sysbreak.unwind.demangle import demangle, function_name

_SCOPE_TAGS = {"DW_TAG_namespace", "DW_TAG_class_type", "DW_TAG_structure_type", "DW_TAG_union_type"}
_DESCEND = {"DW_TAG_subprogram", "DW_TAG_inlined_subroutine", "DW_TAG_lexical_block"} | _SCOPE_TAGS
_CPP_LANGS = {0x04, 0x1A, 0x21, 0x2B, 0x2C}  # DW_LANG_C_plus_plus, _03, _11, _14, (0x2b/0x2c newer)


@dataclass
class Subfile:
    name: str
    addrs: array[int] = field(default_factory=lambda: array("Q"))
    lines: array[int] = field(default_factory=lambda: array("I"))
    stmts: bytearray = field(default_factory=bytearray)


@dataclass
class Scope:
    name: str | None
    call_file: str | None  # for an inlined call: where it was called from
    call_line: int | None
    entry: int  # the block's entry pc (start of its first range)
    inline: bool


@dataclass
class CuTable:
    """One compile unit: its line tables, and its functions, whose inline nesting is read per function on first
    use (a function's subtree of DIEs is the costly part; the unit's top level is cheap to list)."""

    offset: int
    cpp: bool
    base: int
    subfiles: list[Subfile] | None  # None: not decoded yet
    file_names: dict[int, str | None]
    func_starts: array[int]
    func_ends: array[int]
    func_dies: array[int]
    scopes: list[Scope] = field(default_factory=list)
    expanded: dict[int, tuple[array[int], array[int], list[tuple[int, ...]]]] = field(default_factory=dict)
    # call sites of the functions read so far (DW_TAG_call_site): by return address, (tail call?, target), the
    # target a link-time address or a symbol name; and each function's tail calls, by its entry address
    call_sites: dict[int, tuple[bool, int | str | None]] = field(default_factory=dict)
    tail_calls: dict[int, list[tuple[int, int | str | None]]] = field(default_factory=dict)

    def function_at(self, vaddr: int, index: DwarfIndex) -> int | None:
        """Read the function holding ``vaddr`` (if not yet); its entry address, or None."""
        i = bisect.bisect_right(self.func_starts, vaddr) - 1
        for j in range(i, max(i - 4, -1), -1):
            if self.func_starts[j] <= vaddr < self.func_ends[j]:
                die = int(self.func_dies[j])
                if die not in self.expanded:
                    self.expanded[die] = index.expand(self, die)
                return int(self.func_starts[j])
        return None

    def line_at(self, vaddr: int, index: DwarfIndex) -> tuple[str, int] | None:
        """GDB's ``find_pc_line``: (subfile name, line) at ``vaddr``, or None."""
        if self.subfiles is None:
            self.subfiles = index.read_lines(self)
        best: tuple[int, Subfile, int] | None = None  # (address, subfile, index)
        for sf in self.subfiles:
            addrs = sf.addrs
            i = bisect.bisect_right(addrs, vaddr) - 1
            if i < 0:
                continue
            # the closest row; at one address a real line beats another file's end-of-range row (measured
            # against GDB 13's find_pc_line on Go's runtime, where files switch at one address thousands of times)
            if best is None or addrs[i] > best[0] or (addrs[i] == best[0] and best[1].lines[best[2]] == 0):
                j = i
                if not sf.stmts[j]:
                    k = j
                    while k > 0 and addrs[k - 1] == addrs[k] and sf.lines[k - 1] != 0 and not sf.stmts[k]:
                        k -= 1
                    if sf.stmts[k]:
                        j = k
                best = (addrs[i], sf, j)
        if best is None:
            return None
        _a, sf, j = best
        line = sf.lines[j]
        if line == 0:
            return None
        return sf.name, line

    def chain_at(self, vaddr: int, index: DwarfIndex) -> list[Scope]:
        """The scopes holding ``vaddr``, innermost first (inlined calls, then the function); [] outside any."""
        i = bisect.bisect_right(self.func_starts, vaddr) - 1
        for j in range(i, max(i - 4, -1), -1):
            if self.func_starts[j] <= vaddr < self.func_ends[j]:
                die = int(self.func_dies[j])
                segs = self.expanded.get(die)
                if segs is None:
                    segs = self.expanded[die] = index.expand(self, die)
                starts, ends, chains = segs
                k = bisect.bisect_right(starts, vaddr) - 1
                if k >= 0 and vaddr < ends[k]:
                    return [self.scopes[n] for n in chains[k]]
                return []
        return []


def _attr_str(die: Any, name: str) -> str | None:
    a = die.attributes.get(name)
    if a is None:
        return None
    v = a.value
    if isinstance(v, bytes):
        return v.decode("utf-8", "replace")
    return str(v) if v is not None else None


def _follow(die: Any) -> Any | None:
    for ref in ("DW_AT_abstract_origin", "DW_AT_specification"):
        if ref in die.attributes:
            try:
                return die.get_DIE_from_attribute(ref)
            except Exception:  # noqa: BLE001 - a dangling reference
                return None
    return None


def _qualified(die: Any, name: str) -> str:
    parts = [name]
    p = die.get_parent()
    while p is not None and p.tag in _SCOPE_TAGS:
        pn = _attr_str(p, "DW_AT_name")
        if pn is None:
            pn = "(anonymous namespace)" if p.tag == "DW_TAG_namespace" else None
        if pn is None:
            break
        parts.append(pn)
        p = p.get_parent()
    return "::".join(reversed(parts))


def scope_name(die: Any, cpp: bool) -> str | None:
    """GDB's name for the function of a subprogram or inlined-subroutine DIE."""
    linkage = name = None
    decl = die
    cur = die
    for _ in range(8):
        if linkage is None:
            linkage = _attr_str(cur, "DW_AT_linkage_name") or _attr_str(cur, "DW_AT_MIPS_linkage_name")
        if name is None:
            name = _attr_str(cur, "DW_AT_name")
        nxt = _follow(cur)
        if nxt is None:
            break
        decl = cur = nxt
    if linkage is not None:
        if linkage.startswith("_Z"):
            dm = demangle(linkage)
            if dm != linkage:
                return function_name(dm)
        return linkage
    if name is None:
        return None
    return _qualified(decl, name) if cpp else name


class _Files:
    """GDB's subfile names for the file numbers of one line program."""

    def __init__(self, lp: Any, cu_name: str | None, comp_dir: str | None) -> None:
        self.version = int(lp.header["version"])
        self.entries = list(lp.header.get("file_entry") or [])
        self.dirs = [d.decode("utf-8", "replace") if isinstance(d, bytes) else str(d)
                     for d in (lp.header.get("include_directory") or [])]  # fmt: skip
        self.comp_dir = comp_dir or ""
        self.by_id: dict[str, str] = {}
        self.order: list[str] = []  # display names in creation order
        self.primary: str | None = self._register(cu_name) if cu_name else None
        self._cache: dict[int, str | None] = {}

    def _ident(self, name: str) -> str:
        if name.startswith("/") or not self.comp_dir:
            return name
        return self.comp_dir.rstrip("/") + "/" + name

    def _register(self, name: str) -> str:
        ident = self._ident(name)
        shown = self.by_id.get(ident)
        if shown is None:
            shown = self.by_id[ident] = name
            self.order.append(shown)
        return shown

    def name(self, index: int) -> str | None:
        if index in self._cache:
            return self._cache[index]
        i = index if self.version >= 5 else index - 1
        shown = None
        if 0 <= i < len(self.entries):
            fe = self.entries[i]
            fname = fe.name.decode("utf-8", "replace") if isinstance(fe.name, bytes) else str(fe.name)
            d = int(fe.dir_index)
            di = d if self.version >= 5 else d - 1
            if not fname.startswith("/") and 0 <= di < len(self.dirs):
                fname = self.dirs[di] + "/" + fname
            shown = self._register(fname)
        self._cache[index] = shown
        return shown


def _line_subfiles(lp: Any, files: _Files) -> list[Subfile]:
    """GDB's line tables for one line program (lnp_state_machine::record_line and buildsym's record_line)."""
    tables: dict[str, Subfile] = {}

    def record(sf: str, line: int, addr: int, stmt: bool) -> None:
        t = tables.get(sf)
        if t is None:
            t = tables[sf] = Subfile(sf)
        if line == 0:
            last_line = None
            while t.addrs:
                last_line = t.lines[-1]
                if t.addrs[-1] != addr:
                    break
                t.addrs.pop()
                t.lines.pop()
                t.stmts.pop()
            if last_line is None or last_line == 0:
                return
        t.addrs.append(addr)
        t.lines.append(line)
        t.stmts.append(1 if stmt else 0)

    # GDB's lnp_state_machine, per sequence: the subfile and line last recorded, the address of the previous
    # row, whether a statement row was seen at that address, and whether the line ever had a discriminator
    last_sf: str | None = None
    last_line = 0
    last_addr: int | None = None
    stmt_at_addr = False
    prev_row_line: int | None = None
    nz_disc = False
    for entry in lp.get_entries():
        st = entry.state
        if st is None:
            continue
        sf = files.name(st.file) or "<unknown>"
        addr = st.address
        end = bool(st.end_sequence)
        disc = int(getattr(st, "discriminator", 0) or 0)
        new_line = prev_row_line is None or st.line != prev_row_line
        nz_disc = (disc != 0) if new_line else (nz_disc or disc != 0)
        prev_row_line = st.line
        file_changed = last_sf != sf
        ignore = (file_changed and not end and last_addr == addr and not st.is_stmt and stmt_at_addr) or (
            not end and st.line == 0
        )
        if ((file_changed and not ignore) or end) and last_sf is not None:
            record(last_sf, 0, addr, True)
        if not end and not ignore:
            # dwarf_record_line_p: a repeated line of one file is dropped once it has had a discriminator
            if file_changed or st.line != last_line or not nz_disc:
                record(sf, st.line, addr, bool(st.is_stmt))
            last_sf = sf
            last_line = st.line
        if last_addr != addr:
            stmt_at_addr = False
            last_addr = addr
        stmt_at_addr = stmt_at_addr or bool(st.is_stmt)
        if end:
            last_sf = None
            last_line = 0
            last_addr = None
            stmt_at_addr = False
            prev_row_line = None
            nz_disc = False
    # GDB sorts each table by address, an end-of-range row first among rows at one address (stable otherwise)
    out = []
    for t in tables.values():
        order = sorted(range(len(t.addrs)), key=lambda k: (t.addrs[k], t.lines[k] != 0))
        t.addrs = array("Q", (t.addrs[k] for k in order))
        t.lines = array("I", (t.lines[k] for k in order))
        t.stmts = bytearray(t.stmts[k] for k in order)
        out.append(t)
    # GDB's order of the unit's symtabs (which one wins when two have a row at one address): the primary file
    # first, then the others in the order of the line table's file entries (dwarf_decode_lines allocates a
    # symtab per file entry, in order)
    rank: dict[str, int] = {}
    for k in range(len(files.entries) + 1):
        n = files.name(k)
        if n is not None and n not in rank:
            rank[n] = k
    out.sort(key=lambda t: (t.name != files.primary, rank.get(t.name, 1 << 30)))
    return out


def _die_ranges(die: Any, cu: Any, dwarf: Any, base: int) -> list[tuple[int, int]]:
    attrs = die.attributes
    if "DW_AT_low_pc" in attrs and "DW_AT_high_pc" in attrs:
        lo = int(attrs["DW_AT_low_pc"].value)
        hi_attr = attrs["DW_AT_high_pc"]
        hi = int(hi_attr.value)
        if hi_attr.form not in ("DW_FORM_addr", "DW_FORM_addrx", "DW_FORM_addrx1", "DW_FORM_addrx2", "DW_FORM_addrx4"):
            hi += lo
        return [(lo, hi)] if hi > lo else []
    if "DW_AT_ranges" in attrs:
        rl = dwarf.range_lists()
        if rl is None:
            return []
        try:
            entries = rl.get_range_list_at_offset(attrs["DW_AT_ranges"].value, cu=cu)
        except TypeError:
            entries = rl.get_range_list_at_offset(attrs["DW_AT_ranges"].value)
        except Exception:  # noqa: BLE001
            return []
        out = []
        cur_base = base
        for e in entries:
            if hasattr(e, "base_address"):
                cur_base = int(e.base_address)
                continue
            lo, hi = int(e.begin_offset), int(e.end_offset)
            if not getattr(e, "is_absolute", False):
                lo += cur_base
                hi += cur_base
            if hi > lo:
                out.append((lo, hi))
        return out
    if "DW_AT_low_pc" in attrs:
        lo = int(attrs["DW_AT_low_pc"].value)
        return [(lo, lo + 1)]
    return []


def read_cu(dwarf: Any, cu: Any) -> CuTable:
    """The line tables and the list of functions of one unit (their inline nesting is read by expand_function)."""
    top = cu.get_top_DIE()
    cu_name = _attr_str(top, "DW_AT_name")
    comp_dir = _attr_str(top, "DW_AT_comp_dir")
    lang = top.attributes.get("DW_AT_language")
    cpp = lang is not None and int(lang.value) in _CPP_LANGS
    base = int(top.attributes["DW_AT_low_pc"].value) if "DW_AT_low_pc" in top.attributes else 0
    lp = dwarf.line_program_for_CU(cu)  # its header only: the rows are decoded on the first line look-up
    files = _Files(lp, cu_name, comp_dir) if lp is not None else None
    subfiles: list[Subfile] | None = None if lp is not None else []
    names: dict[int, str | None] = {}
    if files is not None:
        for k in range(len(files.entries) + 1):
            names[k] = files.name(k)
    funcs: list[tuple[int, int, int]] = []

    def index(die: Any) -> None:
        for child in die.iter_children():
            tag = child.tag
            if tag == "DW_TAG_subprogram":
                if "DW_AT_declaration" not in child.attributes:
                    for lo, hi in _die_ranges(child, cu, dwarf, base):
                        funcs.append((lo, hi, child.offset))
            elif tag in _SCOPE_TAGS:
                index(child)

    index(top)
    funcs.sort()
    return CuTable(
        cu.cu_offset,
        cpp,
        base,
        subfiles,
        names,
        array("Q", (f[0] for f in funcs)),
        array("Q", (f[1] for f in funcs)),
        array("Q", (f[2] for f in funcs)),
    )


def expand_function(
    dwarf: Any, cu: Any, table: CuTable, die_offset: int
) -> tuple[array[int], array[int], list[tuple[int, ...]]]:
    """The inline nesting of one function: segments of its address ranges with their scope chains."""
    root = cu.get_DIE_from_refaddr(die_offset)
    scopes = table.scopes
    names = table.file_names
    intervals: list[tuple[int, int, int, int]] = []  # (lo, hi, depth, scope index)

    def add(die: Any, depth: int) -> bool:
        ranges = _die_ranges(die, cu, dwarf, table.base)
        if not ranges:
            return False
        inline = die.tag == "DW_TAG_inlined_subroutine"
        call_file = call_line = None
        if inline:
            cf = die.attributes.get("DW_AT_call_file")
            if cf is not None:
                call_file = names.get(int(cf.value))
            cl = die.attributes.get("DW_AT_call_line")
            call_line = int(cl.value) if cl is not None else None
        k = len(scopes)
        scopes.append(Scope(scope_name(die, table.cpp), call_file, call_line, ranges[0][0], inline))
        for lo, hi in ranges:
            intervals.append((lo, hi, depth, k))
        return True

    tails: list[tuple[int, int | str | None]] = []

    def call_site(die: Any) -> None:
        attrs = die.attributes
        ret = attrs.get("DW_AT_call_return_pc") or attrs.get("DW_AT_low_pc")
        if ret is None:
            return
        tail = "DW_AT_call_tail_call" in attrs or "DW_AT_GNU_tail_call" in attrs
        target: int | str | None = None
        ref = "DW_AT_call_origin" if "DW_AT_call_origin" in attrs else "DW_AT_abstract_origin"
        if ref in attrs:
            try:
                origin = die.get_DIE_from_attribute(ref)
            except Exception:  # noqa: BLE001 - a dangling reference: an unknown target
                origin = None
            if origin is not None:
                if "DW_AT_low_pc" in origin.attributes:
                    target = int(origin.attributes["DW_AT_low_pc"].value)
                else:
                    target = _linkage_or_name(origin)
        table.call_sites[int(ret.value)] = (tail, target)
        if tail:
            tails.append((int(ret.value), target))

    def walk(die: Any, depth: int) -> None:
        for child in die.iter_children():
            tag = child.tag
            if tag in ("DW_TAG_call_site", "DW_TAG_GNU_call_site"):
                call_site(child)
                continue
            if tag not in _DESCEND:
                continue
            d = depth
            if tag == "DW_TAG_inlined_subroutine" and add(child, depth + 1):
                d = depth + 1
            walk(child, d)

    if add(root, 1):
        walk(root, 1)
        table.tail_calls[_entry(root, cu, dwarf, table.base)] = tails
    return _segments(intervals)


def _entry(die: Any, cu: Any, dwarf: Any, base: int) -> int:
    ranges = _die_ranges(die, cu, dwarf, base)
    return ranges[0][0] if ranges else 0


def _linkage_or_name(die: Any) -> str | None:
    """The symbol name a call target's declaration stands for (its linkage name, else its name)."""
    cur = die
    for _ in range(8):
        name = _attr_str(cur, "DW_AT_linkage_name") or _attr_str(cur, "DW_AT_MIPS_linkage_name")
        if name:
            return name
        nxt = _follow(cur)
        if nxt is None:
            break
        cur = nxt
    return _attr_str(die, "DW_AT_name")


def _segments(intervals: list[tuple[int, int, int, int]]) -> tuple[array[int], array[int], list[tuple[int, ...]]]:
    """Non-overlapping segments with the chain of scopes (innermost first) of nested intervals."""
    points = sorted({p for lo, hi, _d, _k in intervals for p in (lo, hi)})
    starts_at: dict[int, list[tuple[int, int, int]]] = {}
    for lo, hi, d, k in intervals:
        starts_at.setdefault(lo, []).append((hi, d, k))
    active: list[tuple[int, int, int]] = []  # (hi, depth, k)
    seg_starts, seg_ends = array("Q"), array("Q")
    chains: list[tuple[int, ...]] = []
    for i, p in enumerate(points[:-1]):
        active = [a for a in active if a[0] > p]
        active.extend(starts_at.get(p, ()))
        if not active:
            continue
        by_depth: dict[int, int] = {}
        for _hi, d, k in active:
            by_depth[d] = k  # a later (deeper-listed) interval at one depth wins
        chain = tuple(by_depth[d] for d in sorted(by_depth, reverse=True))
        nxt = points[i + 1]
        if chains and seg_ends[-1] == p and chains[-1] == chain:
            seg_ends[-1] = nxt
        else:
            seg_starts.append(p)
            seg_ends.append(nxt)
            chains.append(chain)
    return seg_starts, seg_ends, chains


@dataclass
class DwarfIndex:
    """The compile units of one file by address; units are read on first use and kept."""

    path: str
    cu_starts: array[int]
    cu_ends: array[int]
    cu_offsets: array[int]
    cus: dict[int, CuTable | None] = field(default_factory=dict)
    dirty: bool = True

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state.pop("_dwarf", None)
        state["dirty"] = False
        return state

    @classmethod
    def build(cls, path: str) -> DwarfIndex | None:
        idx = cls(path, array("Q"), array("Q"), array("Q"))
        dwarf = idx._dwarf_info()
        if dwarf is None:
            return None
        spans: list[tuple[int, int, int]] = []
        aranges = dwarf.get_aranges()
        if aranges is not None and aranges.entries:
            spans = [(int(e.begin_addr), int(e.begin_addr) + int(e.length), int(e.info_offset))
                     for e in aranges.entries if e.length]  # fmt: skip
        else:
            for cu in dwarf.iter_CUs():
                top = cu.get_top_DIE()
                base = int(top.attributes["DW_AT_low_pc"].value) if "DW_AT_low_pc" in top.attributes else 0
                for lo, hi in _die_ranges(top, cu, dwarf, base):
                    spans.append((lo, hi, cu.cu_offset))
        spans.sort()
        idx.cu_starts = array("Q", (s[0] for s in spans))
        idx.cu_ends = array("Q", (s[1] for s in spans))
        idx.cu_offsets = array("Q", (s[2] for s in spans))
        return idx

    def _dwarf_info(self) -> Any:
        d = getattr(self, "_dwarf", None)
        if d is None:
            from elftools.elf.elffile import ELFFile

            # pyelftools copies the debug sections into memory: the file is closed once they are read
            with open(self.path, "rb") as fh:
                elf = ELFFile(fh)
                if elf.get_section_by_name(".debug_info") is None:
                    return None
                d = elf.get_dwarf_info(relocate_dwarf_sections=elf.header["e_type"] == "ET_REL")
            self._dwarf = d
        return d

    def close(self) -> None:
        self.__dict__.pop("_dwarf", None)

    def expand(self, table: CuTable, die_offset: int) -> tuple[array[int], array[int], list[tuple[int, ...]]]:
        self.dirty = True
        empty: tuple[array[int], array[int], list[tuple[int, ...]]] = (array("Q"), array("Q"), [])
        try:
            dwarf = self._dwarf_info()
            if dwarf is None:
                return empty
            return expand_function(dwarf, dwarf.get_CU_at(table.offset), table, die_offset)
        except Exception:  # noqa: BLE001 - a function pyelftools cannot read: its name comes from the symbols
            return empty

    def read_lines(self, table: CuTable) -> list[Subfile]:
        """The line tables of one unit (pyelftools decodes its whole line program: the costly part of a unit)."""
        self.dirty = True
        try:
            dwarf = self._dwarf_info()
            if dwarf is None:
                return []
            cu = dwarf.get_CU_at(table.offset)
            top = cu.get_top_DIE()
            lp = dwarf.line_program_for_CU(cu)
            if lp is None:
                return []
            files = _Files(lp, _attr_str(top, "DW_AT_name"), _attr_str(top, "DW_AT_comp_dir"))
            return _line_subfiles(lp, files)
        except Exception:  # noqa: BLE001 - a line program pyelftools cannot read: no file:line there
            return []

    def call_site(self, ret: int) -> tuple[bool, int | str | None] | None:
        """The call site whose return address is ``ret`` (the function holding it is read if needed)."""
        cu = self.cu_at(ret - 1)
        if cu is None or cu.function_at(ret - 1, self) is None:
            return None
        return cu.call_sites.get(ret)

    def tail_calls(self, entry: int) -> list[tuple[int, int | str | None]] | None:
        """The tail calls made by the function entered at ``entry``; None when DWARF has no such function."""
        cu = self.cu_at(entry)
        if cu is None or cu.function_at(entry, self) != entry:
            return None
        return cu.tail_calls.get(entry, [])

    def cu_at(self, vaddr: int) -> CuTable | None:
        i = bisect.bisect_right(self.cu_starts, vaddr) - 1
        # aranges of different units may nest or overlap: look back a little for a span holding vaddr
        for j in range(i, max(i - 8, -1), -1):
            if self.cu_starts[j] <= vaddr < self.cu_ends[j]:
                off = int(self.cu_offsets[j])
                if off not in self.cus:
                    try:
                        dwarf = self._dwarf_info()
                        self.cus[off] = read_cu(dwarf, dwarf.get_CU_at(off)) if dwarf is not None else None
                    except Exception:  # noqa: BLE001 - a unit pyelftools cannot read: symbols only there
                        self.cus[off] = None
                    self.dirty = True
                return self.cus[off]
        return None
