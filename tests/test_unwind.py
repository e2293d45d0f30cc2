"""Unit tests of sysbreak.unwind on real ELF files, without gdb: CFI rows against binutils' readelf, the PLT
expression, GDB's C++ names, minimal-symbol rules, load bias in this very process, the no-CFI prologue analysis,
JIT code, and the build-id cache."""

from __future__ import annotations

import bisect
import ctypes
import re
import struct
import subprocess
from pathlib import Path

import pytest
from gdbutil import BUILD, build_fixtures

from sysbreak.unwind import MapEntry, ModuleCache, Unwinder
from sysbreak.unwind.cfi import CFA_EXPR, CFA_REG, EXPRESSION, OFFSET, REGISTER, SAME_VALUE, VAL_OFFSET
from sysbreak.unwind.core import RBP, RSP, _analyze_prologue
from sysbreak.unwind.demangle import demangle, function_name
from sysbreak.unwind.expr import ExprError, evaluate

LIBC = "/lib/x86_64-linux-gnu/libc.so.6"
LIBUCM = "/lib/x86_64-linux-gnu/libucm.so.0"
REGNAMES = ["rax", "rdx", "rcx", "rbx", "rsi", "rdi", "rbp", "rsp"] + [f"r{i}" for i in range(8, 16)] + ["ra"]


@pytest.fixture(scope="module", autouse=True)
def _fixtures() -> None:
    build_fixtures()


@pytest.fixture
def modules(tmp_path: Path) -> ModuleCache:
    cache = ModuleCache(tmp_path / "cache")
    yield cache
    cache.close()


# -- CFI ------------------------------------------------------------------------------------------------------------


def _readelf_rows(path: str) -> list[tuple[int, str, dict[str, str]]]:
    """(pc, CFA, {column: rule}) of every row ``readelf --debug-dump=frames-interp`` prints for FDEs."""
    out = subprocess.run(["readelf", "-wF", path], capture_output=True, text=True, check=False).stdout  # warns on libc
    rows: list[tuple[int, str, dict[str, str]]] = []
    columns: list[str] = []
    in_fde = False
    for line in out.splitlines():
        if " FDE " in line:
            in_fde = True
            columns = []
        elif " CIE " in line:
            in_fde = False
        elif line.strip().startswith("LOC"):
            columns = line.split()[2:]
        elif in_fde and columns and re.match(r"^[0-9a-f]{16} ", line):
            parts = re.sub(r"\br\d+ \((\w+)\)", r"\1", line).split()  # "r9 (r9)": a register rule
            rows.append((int(parts[0], 16), parts[1], dict(zip(columns, parts[2:], strict=False))))
    return rows


def _ours_as_readelf(rule: tuple) -> str:
    _reg, kind, arg = rule
    if kind == OFFSET:
        return f"c{arg:+d}"
    if kind == SAME_VALUE:
        return "s"
    if kind == REGISTER:
        return REGNAMES[arg]
    if kind == EXPRESSION:
        return "exp"
    if kind == VAL_OFFSET:
        return f"v{arg:+d}"
    return "u"


@pytest.mark.parametrize("path", [LIBUCM, LIBC, str(BUILD / "ucm_leak")])
def test_cfi_rows_match_readelf(path: str, modules: ModuleCache) -> None:
    """Every row of every FDE: the CFA rule and each register's rule, as binutils decodes them."""
    info = modules.get(path)
    assert info is not None and info.eh_frame is not None
    rows = _readelf_rows(path)
    assert len(rows) > 3
    if len(rows) > 5000:  # libc: every 4th FDE's rows (decoding all 3,700 FDEs takes seconds in pyelftools)
        starts = list(info.eh_frame.starts)
        rows = [r for r in rows if (bisect.bisect_right(starts, r[0]) - 1) % 4 == 0]
    for pc, cfa_text, cols in rows:
        fde = info.fde(pc)
        assert fde is not None, f"{path}: no FDE at {pc:#x}"
        row = fde.row_at(pc)
        assert row is not None
        cfa = row[1]
        if cfa[0] == CFA_EXPR:
            assert cfa_text == "exp", (hex(pc), cfa)
        else:
            assert cfa[0] == CFA_REG and cfa_text == f"{REGNAMES[cfa[1]]}{cfa[2]:+d}", (hex(pc), cfa)
        rules = {REGNAMES[r[0]]: _ours_as_readelf(r) for r in row[2] if r[0] < len(REGNAMES)}
        for col, text in cols.items():
            assert rules.get(col, "u") == text, f"{path} {pc:#x} {col}: readelf {text}, ours {rules.get(col)}"


def test_eh_frame_hdr_index_is_lazy(modules: ModuleCache) -> None:
    info = modules.get(LIBC)
    assert info is not None and info.eh_frame is not None
    assert len(info.eh_frame) > 3000 and info.eh_frame.ends is None  # the .eh_frame_hdr table, nothing parsed
    assert len(info.eh_frame.decoded) == 0
    fn = info.symbols.index_of("mmap")
    assert fn is not None and info.fde(int(info.symbols.starts[fn]) + 1) is not None
    assert len(info.eh_frame.decoded) == 1


def test_plt_cfa_expression(modules: ModuleCache) -> None:
    """The PLT's DW_CFA_def_cfa_expression: rsp + 8, + 8 more once the entry's push has run (offset >= 11)."""
    info = modules.get(str(BUILD / "ucm_leak"))
    assert info is not None
    plt = next(s for s in info.code_sections if s[2] == ".plt")
    entry = plt[0] + 16  # the first PLT entry after PLT0
    fde = info.fde(entry)
    assert fde is not None
    row = fde.row_at(entry)
    assert row is not None and row[1][0] == CFA_EXPR
    for k in range(16):
        cfa = evaluate(row[1][1], lambda r, k=k: {RSP: 0x1000, 16: entry + k}.get(r), lambda a: None)
        assert cfa == 0x1000 + (16 if k >= 11 else 8)


def test_expression_errors_stop_rather_than_guess() -> None:
    with pytest.raises(ExprError):
        evaluate(bytes([0x77, 0x08, 0x06]), lambda r: None, lambda a: None)  # breg7 with rsp unknown, deref
    with pytest.raises(ExprError):
        evaluate(bytes([0x76, 0x00, 0x06]), lambda r: 0x5000, lambda a: None)  # deref outside the copy
    assert evaluate(bytes([0x76, 0x78, 0x06]), lambda r: 0x5008, lambda a: 42 if a == 0x5000 else None) == 42


# -- names ------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mangled", "gdb_name"),
    [
        # what GDB 13 printed for fixtures/src/templates.cc (tests/test_unwind_oracle.py)
        ("_ZN2sb9map_pagesIlEEPvT_", "sb::map_pages<long>"),
        ("_ZN2sb5DepthILi0EE2goEl", "sb::Depth<0>::go"),
        ("_ZNK2sb4PoolIjE4growEv", "sb::Pool<unsigned int>::grow"),
        ("_ZNKSt8functionIFPvlEEclEl", "std::function<void* (long)>::operator()(long) const"),
        ("main", "main"),
        ("__GI___mmap64", "__GI___mmap64"),
    ],
)
def test_gdb_function_names(mangled: str, gdb_name: str) -> None:
    assert function_name(demangle(mangled)) == gdb_name


def test_minimal_symbol_names_are_demangled_with_parameters(modules: ModuleCache) -> None:
    info = modules.get(str(BUILD / "templates"))
    assert info is not None
    at = info.symbols.index_of("_ZNK2sb4PoolIjE4growEv")
    assert at is not None
    start = int(info.symbols.starts[at])
    assert info.function(start) == ("sb::Pool<unsigned int>::grow() const", start)


def test_symbols_cover_like_gdb(modules: ModuleCache) -> None:
    """Every sized function of libucm's .dynsym covers its own range; past its end (a static function without a
    symbol) nothing does, as GDB's ``??`` shows."""
    info = modules.get(LIBUCM)
    assert info is not None
    out = subprocess.run(["nm", "-D", "--defined-only", "-S", LIBUCM], capture_output=True, text=True).stdout
    checked = 0
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 4 and parts[2] in "Tt" and int(parts[1], 16):
            start, size = int(parts[0], 16), int(parts[1], 16)
            for a in (start, start + size - 1):
                hit = info.function(a)
                assert hit is not None and hit[1] == start, (parts[3], hex(a), hit)
            checked += 1
    assert checked > 50
    gaps = [a for a in range(info.code_sections[0][0], info.code_sections[-1][1], 64) if info.function(a) is None]
    assert gaps, "libucm has static functions that no exported symbol covers"


def test_load_bias_in_this_process(modules: ModuleCache) -> None:
    """libc as mapped in this very process: bias from /proc/self/maps, then mmap's address - bias is its
    symbol's value, and the look-up names it."""
    maps = Path("/proc/self/maps").read_text()
    u = Unwinder(maps, modules=modules)
    libc = ctypes.CDLL(LIBC)
    addr = ctypes.cast(libc.mmap, ctypes.c_void_p).value
    assert addr is not None
    m = u._mapping(addr)
    assert m is not None and m.executable
    info, bias = u._module(m)
    assert info is not None and bias is not None
    name, start = info.function(addr - bias) or ("", 0)
    assert start == addr - bias and name in ("mmap", "mmap64", "__mmap", "__mmap64")
    frames = u.describe(info, addr - bias, True)
    assert frames[-1][0] is not None and "mmap" in frames[-1][0]


# -- no CFI, JIT ------------------------------------------------------------------------------------------------------


def test_prologue_analysis() -> None:
    # endbr64; push rbp; mov rbp,rsp; sub rsp,0x18
    code = bytes.fromhex("f30f1efa554889e54883ec18")
    assert _analyze_prologue(code[:4], 0x1000, 0x1004) == (False, 0, {})
    assert _analyze_prologue(code[:5], 0x1000, 0x1005) == (False, 8, {RBP: 16})
    assert _analyze_prologue(code, 0x1000, 0x100C) == (True, 0, {RBP: 16})
    # push rbx; push r12; sub rsp,0x10  (no frame pointer)
    code = bytes.fromhex("53415448" + "83ec10")
    assert _analyze_prologue(code, 0x2000, 0x2007) == (False, 0x20, {3: 16, 12: 24})
    # and rsp,-16 (stack realignment) and an epilogue before the pc are not followed
    assert _analyze_prologue(bytes.fromhex("4883e4f0"), 0x3000, 0x3004) is None
    assert _analyze_prologue(bytes.fromhex("535bc3"), 0x3000, 0x3003) is None


def _fake_maps(path: str, base: int) -> list[MapEntry]:
    """The mappings the kernel would make for ``path`` loaded at ``base`` (one per PT_LOAD)."""
    from elftools.elf.elffile import ELFFile

    rows = []
    with open(path, "rb") as fh:
        for seg in ELFFile(fh).iter_segments():
            h = seg.header
            if h["p_type"] != "PT_LOAD":
                continue
            lo = h["p_vaddr"] & ~0xFFF
            hi = (h["p_vaddr"] + h["p_memsz"] + 0xFFF) & ~0xFFF
            f = h["p_flags"]
            perms = ("r" if f & 4 else "-") + ("w" if f & 2 else "-") + ("x" if f & 1 else "-") + "p"
            rows.append(MapEntry(base + lo, base + hi, perms, h["p_offset"] & ~0xFFF, path))
    return rows


def _symbol(path: str, name: str) -> int:
    out = subprocess.run(["nm", "-D", "--defined-only", path], capture_output=True, text=True).stdout
    out += subprocess.run(["nm", "--defined-only", path], capture_output=True, text=True).stdout
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[2] == name:
            return int(parts[0], 16)
    raise AssertionError(f"{name} not in {path}")


def _nocfi_scene() -> tuple[list[MapEntry], dict[str, int], bytes, int, int]:
    """A stop at the `syscall` of libsbnocfi.so's sb_lib_map (no CFI), called from dlopener's main."""
    exe, lib = str(BUILD / "dlopener"), str(BUILD / "libsbnocfi.so")
    exe_base, lib_base = 0x555555554000, 0x7FFFF7FC0000
    maps = _fake_maps(exe, exe_base) + _fake_maps(lib, lib_base)
    maps.append(MapEntry(0x7FFFFFFDE000, 0x7FFFFFFFF000, "rw-p", 0, "[stack]"))
    dis = subprocess.run(["objdump", "-d", "--no-show-raw-insn", exe], capture_output=True, text=True).stdout
    main_at = _symbol(exe, "main")
    # the return address of main's first indirect call (the call through dlsym's pointer)
    calls = [int(m.group(1), 16) for m in re.finditer(r"^\s*([0-9a-f]+):\s+call\s+\*%", dis, re.M)]
    call = next(c for c in calls if c > main_at)
    ret = exe_base + call + 2  # "call *%rax"/"*%rdx" is 2 bytes
    syscall_at = lib_base + _symbol(lib, "sb_lib_map") + 0x20  # the syscall is in the body: frameless leaf
    rsp = 0x7FFFFFFFE000
    rbp = rsp + 0x80
    stack = bytearray(0x200)
    struct.pack_into("<Q", stack, 0, ret)  # frameless leaf: the return address is at [rsp]
    struct.pack_into("<QQ", stack, 0x80, 0, 0)  # main's frame: saved rbp 0, return 0 (never reached: main stops)
    regs = {"rip": syscall_at, "rsp": rsp, "rbp": rbp, "rbx": 0, "r12": 0, "r13": 0, "r14": 0, "r15": 0}
    return maps, regs, bytes(stack), rsp, ret


def test_frame_without_cfi_and_stripped(modules: ModuleCache) -> None:
    maps, regs, stack, rsp, ret = _nocfi_scene()
    u = Unwinder(maps, exe=str(BUILD / "dlopener"), modules=modules)
    res = u.unwind(regs, stack, rsp)
    assert [(f.function, f.how) for f in res.frames] == [("sb_lib_map", "regs"), ("main", "fp")]
    assert res.frames[1].pc == ret and res.frames[1].file == "src/dlopener.c" and res.stop == "main"
    frame = res.frames[1].to_frame()  # the capture schema's Frame, as the event log's records() give it
    assert (frame.pc, frame.function, frame.file) == (ret, "main", "src/dlopener.c")
    assert res.records()[1] == {"pc": ret, "module": str(BUILD / "dlopener"), "offset": frame.offset,
                                "function": "main", "file": "src/dlopener.c", "line": frame.line}  # fmt: skip
    assert res.frames[0].module == str(BUILD / "libsbnocfi.so") and res.frames[0].offset == regs["rip"] - 0x7FFFF7FC0000


def test_jit_code_is_module_plus_nothing(modules: ModuleCache) -> None:
    """A pc in anonymous executable memory: one frame with no module, and the unwind stops (no guess)."""
    maps = [MapEntry(0x10000000, 0x10010000, "r-xp", 0, ""), MapEntry(0x7FFF0000, 0x7FFF1000, "rw-p", 0, "[stack]")]
    stack = struct.pack("<QQ", 0x10000010, 0x10000020)
    res = Unwinder(maps, modules=modules).unwind({"rip": 0x10000100, "rsp": 0x7FFF0000, "rbp": 0x7FFF0000}, stack,
                                                   0x7FFF0000)  # fmt: skip
    assert [(f.pc, f.module, f.offset, f.function) for f in res.frames] == [(0x10000100, None, None, None)]
    assert res.stop == "no-module"


def test_return_address_outside_code_stops(modules: ModuleCache) -> None:
    maps, regs, stack, rsp, _ret = _nocfi_scene()
    bad = bytearray(stack)
    struct.pack_into("<Q", bad, 0, 0x7FFFFFFFE100)  # "returns" into the stack
    res = Unwinder(maps, exe=str(BUILD / "dlopener"), modules=modules).unwind(regs, bytes(bad), rsp)
    assert [f.function for f in res.frames] == ["sb_lib_map"] and res.stop == "bad-return"


def test_build_id_cache_makes_a_second_process_warm(tmp_path: Path) -> None:
    maps, regs, stack, rsp, _ret = _nocfi_scene()
    cold = ModuleCache(tmp_path / "c")
    first = Unwinder(maps, exe=str(BUILD / "dlopener"), modules=cold)
    a = first.unwind(regs, stack, rsp).frames
    assert cold.built == 2 and first.save() == 2
    assert first.save() == 0  # nothing new learned
    cold.close()
    warm = ModuleCache(tmp_path / "c")
    b = Unwinder(maps, exe=str(BUILD / "dlopener"), modules=warm).unwind(regs, stack, rsp).frames
    assert a == b and warm.built == 0 and warm.loaded_from_disk == 2
    info = warm.get(str(BUILD / "dlopener"))
    assert info is not None and info.dwarf is not None and info.dwarf.cus  # the compile unit came from the cache
    warm.close()
    # a damaged cache file is rebuilt, not an error
    for f in (tmp_path / "c").glob("*.pkl"):
        f.write_bytes(b"garbage")
    again = ModuleCache(tmp_path / "c")
    assert Unwinder(maps, exe=str(BUILD / "dlopener"), modules=again).unwind(regs, stack, rsp).frames == a
    assert again.built == 2
    again.close()


def test_garbage_stacks_never_raise(modules: ModuleCache) -> None:
    """Random registers and stack bytes over this process's real mappings: frames or a stop reason, never an
    exception, and every frame after the first is in executable memory."""
    import os
    import random

    fds = len(os.listdir("/proc/self/fd"))
    maps = Path("/proc/self/maps").read_text()
    u = Unwinder(maps, modules=modules)
    code = [m for m in u._maps if m.executable and ("libc.so" in m.path or "ld-linux" in m.path)]
    rng = random.Random(7)
    for i in range(120):
        m = rng.choice(code)
        rip = rng.randrange(m.start, m.end)
        stack = bytearray(rng.randbytes(512))
        for k in range(0, 512, 8):  # sprinkle plausible return addresses
            if rng.random() < 0.3:
                c = rng.choice(code)
                struct.pack_into("<Q", stack, k, rng.randrange(c.start, c.end))
        rsp = 0x7FFF00000000
        regs = {"rip": rip, "rsp": rsp, "rbp": rsp + rng.randrange(0, 600), "rbx": rng.getrandbits(64)}
        res = u.unwind(regs, bytes(stack), rsp, symbolize=i % 30 == 0)
        assert res.physical and res.stop
        assert all(u.code_at(p.pc) or u.code_at(p.pc - 1) for p in res.physical)
    assert len(os.listdir("/proc/self/fd")) <= fds  # modules keep no file open (a process may map hundreds)


def test_replaced_or_deleted_file_is_not_read(modules: ModuleCache) -> None:
    """A mapping whose file was deleted, or whose path now has another inode (a library upgraded since):
    reading the file at that path would give wrong frames, so the pc stays a bare frame and the unwind stops."""
    maps, regs, stack, rsp, _ret = _nocfi_scene()
    lib = str(BUILD / "libsbnocfi.so")
    for change in ({"path": lib + " (deleted)"}, {"inode": Path(lib).stat().st_ino + 1}):
        moved = [MapEntry(**{**m.__dict__, **change}) if m.path == lib else m for m in maps]
        res = Unwinder(moved, exe=str(BUILD / "dlopener"), modules=modules).unwind(regs, stack, rsp)
        assert [(f.function, f.offset) for f in res.frames] == [(None, None)] and res.stop == "no-module"
    same = [MapEntry(**{**m.__dict__, "inode": Path(lib).stat().st_ino}) if m.path == lib else m for m in maps]
    res = Unwinder(same, exe=str(BUILD / "dlopener"), modules=modules).unwind(regs, stack, rsp)
    assert [f.function for f in res.frames] == ["sb_lib_map", "main"]
