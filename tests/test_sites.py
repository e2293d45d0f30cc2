"""Static site discovery on real files (libc, libucm, the fixtures, binaries built here), the plan rules, the cache,
and the shared table/JSON rendering."""

from __future__ import annotations

import json
import os
import re
import shutil
import struct
import subprocess
from pathlib import Path
from typing import Any

import pytest
from conftest import FixturePaths

from sysbreak import sites
from sysbreak.elfscan import elf as elfmod
from sysbreak.elfscan import scanner, x86
from sysbreak.errors import SysbreakError
from sysbreak.sites import ModuleScan, Probe, Site
from sysbreak.sites import cache as sites_cache

LIBC = Path("/lib/x86_64-linux-gnu/libc.so.6")
LIBUCM = Path("/lib/x86_64-linux-gnu/libucm.so.0")

needs_libucm = pytest.mark.skipif(not LIBUCM.exists(), reason="libucm (libucx-dev) is not installed")
needs_objdump = pytest.mark.skipif(shutil.which("objdump") is None, reason="objdump (binutils) is not installed")


pytestmark = pytest.mark.usefixtures("private_cache")


@pytest.fixture(scope="module")
def libc() -> ModuleScan:
    return sites.scan(str(LIBC), cache=False)


@pytest.fixture(scope="module")
def libc_objdump() -> str:
    if shutil.which("objdump") is None:
        pytest.skip("objdump (binutils) is not installed")
    return subprocess.run(["objdump", "-d", "--no-show-raw-insn", str(LIBC)], capture_output=True, text=True).stdout


def by_vaddr(scan: ModuleScan) -> dict[int, Site]:
    return {s.vaddr: s for s in scan.sites}


# ---------------------------------------------------------------------------------------------------------------
# libc


def test_libc_mmap_site_has_number_9(libc: ModuleScan) -> None:
    mmap_sites = [s for s in libc.sites if s.symbol in ("mmap", "mmap64", "__mmap") and s.kind == "syscall"]
    assert len(mmap_sites) == 1
    site = mmap_sites[0]
    assert site.nr == 9 and not site.generic and site.size == 2
    assert site.symbol == "mmap"  # aliases mmap/mmap64/__mmap: the short public name wins
    assert site.symbol_offset == site.vaddr - _dynsym_value(LIBC, "mmap64")
    for name, nr in (("munmap", 11), ("mremap", 25), ("brk", 12)):
        assert [s.nr for s in libc.sites if s.symbol == name] == [nr], name


def _dynsym_value(path: Path, name: str) -> int:
    out = subprocess.run(["readelf", "-Ws", "--dyn-syms", str(path)], capture_output=True, text=True).stdout
    for line in out.splitlines():
        parts = line.split()
        if len(parts) >= 8 and parts[7].split("@")[0] == name:
            return int(parts[1], 16)
    raise AssertionError(f"{name} not in {path}'s .dynsym")


def test_libc_syscall_wrapper_is_generic(libc: ModuleScan) -> None:
    generic = [s for s in libc.sites if s.generic]
    assert len(generic) == 1
    site = generic[0]
    assert site.symbol == "syscall" and site.kind == "syscall" and site.nr is None
    assert site.vaddr - (site.symbol_offset or 0) == _dynsym_value(LIBC, "syscall")
    # glibc's syscall(): mov rax, rdi ... syscall; the scanner sees the number come from rdi
    raw = scanner.scan_file(str(LIBC))
    assert [s for s in raw.sites if s.generic][0].vaddr == site.vaddr


def test_libc_sites_sorted_and_consistent(libc: ModuleScan) -> None:
    vaddrs = [s.vaddr for s in libc.sites]
    assert vaddrs == sorted(vaddrs) and len(set(vaddrs)) == len(vaddrs)
    assert libc.build_id and re.fullmatch(r"[0-9a-f]{40}", libc.build_id)
    assert libc.first_load_vaddr == 0
    for s in libc.sites:
        assert s.next_vaddr == s.vaddr + s.size
        assert (s.symbol is None) == (s.symbol_offset is None)
        if s.symbol_offset is not None:
            assert s.symbol_offset >= 0


def test_libc_syscall_instructions_equal_objdump(libc: ModuleScan, libc_objdump: str) -> None:
    out = libc_objdump
    expected = {int(m.group(1), 16) for m in re.finditer(r"^\s*([0-9a-f]+):\s+syscall\s*$", out, re.M)}
    assert len(expected) > 100
    assert {s.vaddr for s in libc.sites if s.kind == "syscall"} == expected


def test_numbers_agree_with_the_mov_objdump_shows(libc: ModuleScan, libc_objdump: str) -> None:
    """Where objdump shows `mov $N,%eax` right before a syscall, the inferred number is N (or unknown when a jump
    lands on the syscall) -- never another number."""
    out = libc_objdump
    lines = out.splitlines()
    sites_at = by_vaddr(libc)
    checked = 0
    for i, line in enumerate(lines):
        m = re.match(r"^\s*([0-9a-f]+):\s+syscall\s*$", line)
        if not m or i == 0:
            continue
        prev = re.match(r"^\s*[0-9a-f]+:\s+mov\s+\$0x([0-9a-f]+),%eax\s*$", lines[i - 1])
        if prev:
            site = sites_at[int(m.group(1), 16)]
            assert site.nr in (int(prev.group(1), 16), None), line
            checked += site.nr is not None
    assert checked > 200


# ---------------------------------------------------------------------------------------------------------------
# libucm, the fixtures, binaries built here


@needs_libucm
def test_libucm_calls_syscall_through_the_plt() -> None:
    scan = sites.scan(str(LIBUCM))
    calls = {s.symbol: s for s in scan.sites if s.kind == "call"}
    assert calls["ucm_orig_mmap_syscall"].nr == 9
    assert calls["ucm_orig_munmap_syscall"].nr == 11
    assert calls["ucm_orig_mremap_syscall"].nr == 25
    assert calls["ucm_orig_madvise_syscall"].nr == 28
    assert calls["ucm_orig_shmdt_syscall"].nr == 67
    assert calls["ucm_orig_mmap_syscall"].size == 5 and not calls["ucm_orig_mmap_syscall"].tail
    assert calls["ucm_orig_mremap_syscall"].tail  # jmp syscall@plt
    brk = [s for s in scan.sites if s.kind == "syscall"]
    assert [(s.symbol, s.nr) for s in brk] == [("ucm_brk_syscall", 12)]


@needs_libucm
@needs_objdump
def test_libucm_call_sites_equal_objdump() -> None:
    out = subprocess.run(["objdump", "-d", "--no-show-raw-insn", str(LIBUCM)], capture_output=True, text=True).stdout
    expected = {
        int(m.group(1), 16) for m in re.finditer(r"^\s*([0-9a-f]+):\s+(?:call|jmp)\s+\w+ <syscall@plt>", out, re.M)
    }
    assert len(expected) >= 7
    assert {s.vaddr for s in sites.scan(str(LIBUCM)).sites if s.kind == "call"} == expected


@needs_libucm
def test_without_section_headers_the_dynamic_tags_find_symbols_and_calls(tmp_path: Path) -> None:
    """A file whose section headers are gone (sstrip, packers) is read through its program headers and dynamic
    tags: the same sites, numbers and function names as with them (libucm calls syscall() through its PLT)."""
    raw = bytearray(LIBUCM.read_bytes())
    struct.pack_into("<Q", raw, 0x28, 0)  # e_shoff
    struct.pack_into("<HHH", raw, 0x3A, 0, 0, 0)  # e_shentsize, e_shnum, e_shstrndx
    bare = tmp_path / "libucm-noshdr.so"
    bare.write_bytes(bytes(raw))
    with elfmod.ElfFile(str(bare)) as f:
        assert f.sections == [] and "DT_SYMTAB" in f.dynamic_tags()
    full, stripped = sites.scan(str(LIBUCM), cache=False), sites.scan(str(bare), cache=False)
    assert stripped.build_id == full.build_id
    assert [(s.vaddr, s.kind, s.nr, s.tail, s.symbol) for s in stripped.sites] == [
        (s.vaddr, s.kind, s.nr, s.tail, s.symbol) for s in full.sites
    ]
    assert sum(s.kind == "call" for s in stripped.sites) >= 7


def test_stripped_library(fixture_paths: FixturePaths) -> None:
    path = fixture_paths.libsbstripped
    with elfmod.ElfFile(str(path)) as f:
        assert f.section(".symtab") is None and f.section(".dynsym") is not None
    scan = sites.scan(str(path))
    assert [(s.kind, s.nr, s.symbol, s.generic) for s in scan.sites] == [
        ("syscall", 9, "sb_lib_map", False),
        ("syscall", None, "sb_lib_syscall1", True),  # mov rax, rdi; syscall: a generic wrapper of its own
    ]


def test_site_without_symbol_is_module_plus_offset(libc: ModuleScan) -> None:
    unnamed = next(s for s in libc.sites if s.symbol is None)
    table = sites.sites_table([(libc, None)], [unnamed.nr or 9], show_all=True)
    line = next(ln for ln in table.splitlines() if ln.strip().startswith(f"{unnamed.vaddr:#x} "))
    assert f"libc.so.6+{unnamed.vaddr:#x}" in line
    assert line.split()[2] == "-"


def test_mapper_fixture_calls_to_syscall(fixture_paths: FixturePaths) -> None:
    scan = sites.scan(str(fixture_paths.mapper))
    calls = [s for s in scan.sites if s.kind == "call"]
    numbers = {s.nr for s in calls}
    assert {9, 11, 110} <= numbers  # raw mmap, raw munmap, getppid through syscall()
    assert all(s.symbol for s in calls)
    probes = sites.plan(scan, [9, 11])
    assert {p.site.nr for p in probes} == {9, 11}  # getppid gets no breakpoint at all


def _build(tmp_path: Path, name: str, *flags: str) -> Path:
    src = tmp_path / "prog.c"
    src.write_text(
        "#include <unistd.h>\n#include <sys/syscall.h>\n#include <sys/mman.h>\n"
        "int main(int argc, char **argv) {\n"
        "  long r = syscall(SYS_getppid);\n"
        "  void *p = mmap(0, 4096, 3, 0x22, -1, 0);\n"
        "  return (int)r + (p != 0) + (int)syscall(argc, 1, 2);\n}\n"
    )
    out = tmp_path / name
    res = subprocess.run(["gcc", "-O2", *flags, "-o", str(out), str(src)], capture_output=True, text=True)
    if res.returncode != 0:
        pytest.skip(f"cannot build with gcc {' '.join(flags)}: {res.stderr.strip()[:200]}")
    return out


@pytest.mark.parametrize("flags", [(), ("-fno-plt",), ("-fcf-protection=full", "-Wl,-z,now"), ("-static",)], ids=str)
def test_calls_to_syscall_in_every_kind_of_build(tmp_path: Path, flags: tuple[str, ...]) -> None:
    if shutil.which("gcc") is None:
        pytest.skip("no gcc")
    path = _build(tmp_path, "prog", *flags)
    scan = sites.scan(str(path))
    main_calls = [s for s in scan.sites if s.kind == "call" and s.symbol == "main"]
    assert sorted((s.nr is None, s.nr) for s in main_calls) == [(False, 110), (True, None)]
    if "-static" in flags:
        generic = [s for s in scan.sites if s.generic]
        assert [s.symbol for s in generic] == ["syscall"]
        assert any(s.symbol in ("mmap", "mmap64", "__mmap") and s.nr == 9 for s in scan.sites)


# ---------------------------------------------------------------------------------------------------------------
# errors


def _elf_header(ei_class: int = 2, machine: int = 62) -> bytes:
    ident = b"\x7fELF" + bytes([ei_class, 1, 1, 0]) + bytes(8)
    return (ident + struct.pack("<HHI", 3, machine, 1)).ljust(128, b"\0")


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        (None, "no such file"),
        (b"", "not an ELF file"),
        (b"#!/bin/sh\necho hello\n" * 10, "not an ELF file"),
        (_elf_header(machine=183), "an ELF file for AArch64, not x86-64"),
        (_elf_header(ei_class=1, machine=3), "32-bit"),
    ],
)
def test_bad_files_raise_one_line(tmp_path: Path, content: bytes | None, needle: str) -> None:
    path = tmp_path / "target"
    if content is not None:
        path.write_bytes(content)
    for use_cache in (True, False):
        with pytest.raises(SysbreakError) as info:
            sites.scan(str(path), cache=use_cache)
        assert needle in str(info.value) and "\n" not in str(info.value)


def test_directory_is_not_an_elf(tmp_path: Path) -> None:
    with pytest.raises(SysbreakError, match="directory"):
        sites.scan(str(tmp_path))


def test_unreadable_file(tmp_path: Path) -> None:
    path = tmp_path / "secret.so"
    shutil.copy(LIBC, path)
    path.chmod(0)
    if os.geteuid() != 0:
        with pytest.raises(SysbreakError, match="permission denied"):
            sites.scan(str(path), cache=False)
        return
    # root reads everything: check in a forked child that has dropped to nobody (everything it needs is
    # already imported, so it reads nothing of root's but the file under test)
    sites.scan(LIBC, cache=False)
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 3
        try:
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)
            sites.scan(str(path), cache=False)
            code = 1
        except SysbreakError as err:
            code = 0 if "permission denied" in str(err) and "\n" not in str(err) else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, status


def test_damaged_headers(tmp_path: Path) -> None:
    path = tmp_path / "damaged.so"
    head = bytearray(_elf_header())
    struct.pack_into("<Q", head, 32, 1 << 40)  # e_phoff far outside the file
    struct.pack_into("<HH", head, 54, 56, 4)  # e_phentsize, e_phnum
    path.write_bytes(bytes(head))
    with pytest.raises(SysbreakError, match="damaged ELF file"):
        sites.scan(str(path))


# ---------------------------------------------------------------------------------------------------------------
# the cache


def test_cache_miss_then_hit_without_parsing(fixture_paths: FixturePaths, monkeypatch: pytest.MonkeyPatch) -> None:
    path = str(fixture_paths.libsbstripped)
    first = sites.scan(path)
    assert list(sites.cache_dir().glob("v*/*.json"))
    sites.forget_memo()

    def boom(_path: str) -> None:
        raise AssertionError("the ELF file was parsed on a warm look-up")

    monkeypatch.setattr(sites_cache, "scan_file", boom)
    monkeypatch.setattr(sites_cache, "ElfFile", boom)
    monkeypatch.setattr(sites_cache, "scan_elf", boom)
    assert sites.scan(path) == first
    assert sites.scan(path) is sites.scan(path)  # in-process memo


def test_cache_shared_by_build_id_across_paths(
    tmp_path: Path, fixture_paths: FixturePaths, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = str(fixture_paths.libsbstripped)
    first = sites.scan(original)
    copy = tmp_path / "copy.so"
    shutil.copy(original, copy)
    sites.forget_memo()
    monkeypatch.setattr(sites_cache, "scan_elf", lambda _e: (_ for _ in ()).throw(AssertionError("rescanned")))
    second = sites.scan(str(copy))
    assert second.path == str(copy) and second.sites == first.sites and second.build_id == first.build_id


def test_corrupt_cache_is_ignored_and_rewritten(fixture_paths: FixturePaths) -> None:
    path = str(fixture_paths.libsbstripped)
    good = sites.scan(path)
    (data,) = sites.cache_dir().glob("v*/*.json")
    for garbage in ("{not json", json.dumps({"format": "sysbreak-sitescache/1", "scanner": -1}), '{"sites": 3}'):
        data.write_text(garbage)
        sites.forget_memo()
        assert sites.scan(path) == good
        assert json.loads(data.read_text())["sites"]  # rewritten whole
    (index,) = sites.cache_dir().glob("v*/by-stat/*")
    index.write_text("../../etc/passwd\n")
    sites.forget_memo()
    assert sites.scan(path) == good


def test_unwritable_cache_does_not_fail(
    fixture_paths: FixturePaths, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    monkeypatch.setenv("SYSBREAK_CACHE_DIR", str(blocker / "cache"))  # mkdir fails, even for root
    scan = sites.scan(str(fixture_paths.libsbstripped))
    assert len(scan.sites) == 2


def test_cache_off_and_default_locations(
    fixture_paths: FixturePaths, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sites.scan(str(fixture_paths.libsbstripped), cache=False)
    assert not sites.cache_dir().exists()
    monkeypatch.delenv("SYSBREAK_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert sites.cache_dir() == tmp_path / "xdg" / "sysbreak" / "sites"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert sites.cache_dir() == tmp_path / "home" / ".cache" / "sysbreak" / "sites"


def test_changed_file_is_rescanned(tmp_path: Path, fixture_paths: FixturePaths) -> None:
    path = tmp_path / "lib.so"
    shutil.copy(fixture_paths.libsbstripped, path)
    assert len(sites.scan(str(path)).sites) == 2
    path.write_bytes(b"not an elf any more")
    with pytest.raises(SysbreakError, match="not an ELF file"):
        sites.scan(str(path))


# ---------------------------------------------------------------------------------------------------------------
# plan


def _site(
    vaddr: int,
    kind: str,
    nr: int | None,
    *,
    tail: bool = False,
    generic: bool = False,
    symbol: str = "f",
    offset: int = 0,
    **pre: Any,
) -> Site:
    return Site(vaddr, 2 if kind == "syscall" else 5, kind, nr, symbol, offset, tail, generic, **pre)


SYNTH = ModuleScan(
    "/synthetic/libx.so",
    "ab" * 20,
    0,
    (
        _site(0x100, "syscall", 9),  # wanted constant
        _site(0x200, "syscall", 110),  # other constant
        _site(0x300, "syscall", None),  # unknown, no safe place before it: uncovered
        _site(0x400, "syscall", None, generic=True, symbol="syscall"),  # libc's syscall() wrapper
        _site(0x500, "call", 11),  # wanted constant call
        _site(0x600, "call", 110),  # getppid call in a hot loop
        _site(0x700, "call", None),  # unknown call
        _site(0x800, "call", 25, tail=True),  # tail jump
        # unknown number, read before the syscall instruction (Go's Syscall6: rax from the function start)
        _site(
            0x900,
            "syscall",
            None,
            offset=0xC,
            early_vaddr=0x8F4,
            early_reg="rax",
            early_args=("rbx", "rcx", "rdi", "rsi", "r8", "r9"),
        ),
        # the same where the arguments are computed late: read after the syscall instruction; a push between
        _site(0xA00, "syscall", None, early_vaddr=0x9F0, early_reg="r12", early_sp_delta=-8),
    ),
)


def _plan(wanted: list[int], exhaustive: bool = False) -> dict[int, Probe]:
    return {p.site.vaddr: p for p in sites.plan(SYNTH, wanted, exhaustive=exhaustive)}


def test_plan_syscall_instructions() -> None:
    p = _plan([9, 11, 25])
    assert p[0x100].condition_nrs is None and p[0x100].nr_reg == "rax"
    assert p[0x100].entry == 0x100 and p[0x100].exit == 0x102
    assert p[0x100].arg_regs == ("rdi", "rsi", "rdx", "r10", "r8", "r9")
    assert 0x200 not in p  # not wanted: no probe at all
    assert 0x300 not in p  # unknown number: never a breakpoint ON a syscall instruction (deadlock risk)
    assert SYNTH.sites[2].uncovered and not any(s.uncovered for s in SYNTH.sites[3:])
    assert 0x400 not in p  # the generic wrapper is skipped by default


def test_plan_before_syscall_instructions() -> None:
    """A number that is not a constant is read BEFORE the syscall instruction, where the register holds it."""
    p = _plan([9, 11])
    go = p[0x900]
    assert (go.entry, go.exit, go.nr_reg, go.condition_nrs) == (0x8F4, 0x902, "rax", (9, 11))
    assert go.arg_regs == ("rbx", "rcx", "rdi", "rsi", "r8", "r9") and not go.args_at_exit and go.sp_delta == 0
    late = p[0xA00]
    assert (late.entry, late.nr_reg, late.sp_delta, late.args_at_exit, late.arg_regs) == (0x9F0, "r12", -8, True, ())
    assert p[0x900].entry != 0x900 and p[0xA00].entry != 0xA00  # never on the syscall instruction


def test_plan_calls() -> None:
    p = _plan([9, 11, 25])
    assert p[0x500].condition_nrs is None and p[0x500].nr_reg == "rdi"
    assert p[0x500].entry == 0x500 and p[0x500].exit == 0x505
    assert p[0x500].arg_regs == ("rsi", "rdx", "rcx", "r8", "r9", "*sp")
    assert 0x600 not in p  # syscall(SYS_getppid) costs nothing
    assert p[0x700].condition_nrs == (9, 11, 25) and p[0x700].nr_reg == "rdi"
    assert p[0x800].exit is None and p[0x800].condition_nrs is None  # tail jump: no return here
    assert p[0x800].arg_regs[-1] == "*sp+8"  # at a jmp, [rsp] is the return address


def test_plan_exhaustive() -> None:
    p = _plan([9, 11, 25], exhaustive=True)
    assert set(p) == {0x100, 0x400, 0x900, 0xA00}  # no call probes; the wrapper conditioned at its first instruction
    w = p[0x400]
    assert w.condition_nrs == (9, 11, 25) and w.nr_reg == "rdi"
    assert w.entry == 0x400 - (w.site.symbol_offset or 0) and w.exit == 0x402
    assert w.arg_regs == ("rsi", "rdx", "rcx", "r8", "r9", "*sp+8")


def test_plan_wanted_order_and_empty() -> None:
    assert _plan([25, 9, 9])[0x700].condition_nrs == (9, 25)
    assert sites.plan(SYNTH, []) == []
    assert set(_plan([110])) == {0x200, 0x600, 0x700, 0x900, 0xA00}


def test_load_bias() -> None:
    scan = ModuleScan("/x", None, 0x400000, ())
    assert scan.load_bias(0x400000) == 0
    assert SYNTH.load_bias(0x7F0000000000) == 0x7F0000000000


# ---------------------------------------------------------------------------------------------------------------
# rendering


def test_sites_table() -> None:
    text = sites.sites_table([(SYNTH, 0x7F0000000000)], [9, 11, 25], show_all=True)
    lines = text.splitlines()
    assert lines[0].startswith("/synthetic/libx.so  build-id abab")
    assert "bias 0x7f0000000000" in lines[0] and "10 sites, 6 probes" in lines[0]
    rows = {ln.split()[0]: ln for ln in lines[1:]}
    assert rows["0x7f0000000100"].endswith("  break after") and "9 mmap" in rows["0x7f0000000100"]
    assert "libx.so+0x100" in rows["0x7f0000000100"] and "f+0x0" in rows["0x7f0000000100"]
    assert rows["0x7f0000000200"].endswith("skip (getppid)")
    assert rows["0x7f0000000300"].endswith("skip (number unknown)")
    assert rows["0x7f0000000400"].endswith("skip (generic; --exhaustive)")
    assert rows["0x7f0000000700"].endswith("break if rdi in {9,11,25}")
    assert " tailjmp " in rows["0x7f0000000800"]
    assert rows["0x7f0000000900"].endswith("break at f+0x0 if rax in {9,11,25}, and after")
    assert "\x1b" not in text and "[bold" not in text


def test_sites_table_hides_skipped_by_default() -> None:
    text = sites.sites_table([(SYNTH, None)], [9, 11, 25], show_all=False)
    assert "0x200" not in text and "0x100" in text
    assert "(4 more sites skipped: 2 make other syscalls (2 getppid); " in text
    assert "1 UNCOVERED: number not inferred and no safe place before the syscall instruction" in text
    assert "1 in a generic wrapper, number from the caller" in text


def test_sites_json() -> None:
    doc = sites.sites_json([(SYNTH, 0x1000)], [9, 11, 25])
    json.dumps(doc)
    assert doc["format"] == "sysbreak-sites/1" and doc["exhaustive"] is False
    assert doc["syscalls"][0] == {"nr": 9, "name": "mmap"}
    (mod,) = doc["modules"]
    assert mod["site_count"] == 10 and mod["probe_count"] == 6 and mod["bias"] == 0x1000
    by = {s["vaddr"]: s for s in mod["sites"]}
    assert by[0x100]["action"] == "break" and by[0x100]["address"] == 0x1100
    assert by[0x100]["probe"]["condition_nrs"] is None
    assert by[0x200]["action"] == "skip" and by[0x200]["reason"] == "getppid" and by[0x200]["probe"] is None
    assert by[0x300]["action"] == "skip" and by[0x300]["reason"] == "number unknown" and by[0x300]["uncovered"]
    assert by[0x900]["early"] == {"vaddr": 0x8F4, "reg": "rax"} and by[0x900]["probe"]["entry"] == 0x8F4
    assert by[0xA00]["probe"]["args_at_exit"] is True and by[0xA00]["probe"]["sp_delta"] == -8
    assert by[0x700]["action"] == "break-if" and by[0x700]["probe"]["condition_nrs"] == [9, 11, 25]
    assert by[0x400]["reason"] == "generic"
    assert by[0x800]["probe"]["exit"] is None and by[0x800]["tail"] is True


# ---------------------------------------------------------------------------------------------------------------
# the decoder and the number analysis


def test_direct_capstone_matches_the_binding() -> None:
    import capstone

    md = capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_64)
    md.syntax = capstone.CS_OPT_SYNTAX_INTEL
    code = LIBC.read_bytes()[0x101800:0x101A00]
    w = x86.decode(code, 0x101800)
    ours = [(a, n, w.mnemonic(k), w.op_str(k)) for k, (a, n, _f) in enumerate(w.rows)]
    assert ours == list(md.disasm_lite(code, 0x101800))
    assert isinstance(x86.engine(), x86._DirectCapstone)


def test_decode_skips_bad_bytes_like_objdump() -> None:
    w = x86.decode(bytes.fromhex("90 06 90 b8 09 00 00 00 0f 05") + bytes(16), 0x10)
    assert [r[0] for r in w.rows][:4] == [0x10, 0x12, 0x13, 0x18]


@pytest.mark.parametrize(
    ("block", "register", "expected"),
    [
        ([("mov", "eax, 9")], "rax", 9),
        ([("mov", "eax, 0xe7"), ("mov", "rdi, rbx")], "rax", 0xE7),
        ([("xor", "eax, eax")], "rax", 0),
        ([("mov", "rax, 0xf")], "rax", 15),
        ([("mov", "rax, 0xffffffffffffffff")], "rax", x86.UNKNOWN),
        ([("mov", "eax, 0xffffffff")], "rax", 0xFFFFFFFF),
        ([("mov", "rax, rdi")], "rax", x86.FROM_RDI),
        ([("mov", "r9d, 0x14"), ("nop", "dword ptr [rax]"), ("mov", "eax, r9d")], "rax", 20),
        ([("mov", "edx, 0x3c"), ("xor", "edi, edi"), ("mov", "eax, edx")], "rax", 60),
        ([("mov", "edx, 0x3c"), ("cqo", ""), ("mov", "eax, edx")], "rax", x86.UNKNOWN),
        ([("mov", "eax, 9"), ("mov", "al, 1")], "rax", x86.UNKNOWN),
        ([("mov", "eax, 9"), ("cdqe", "")], "rax", x86.UNKNOWN),
        ([("mov", "eax, 9"), ("xchg", "rdx, rax")], "rax", x86.UNKNOWN),
        ([("mov", "eax, 9"), ("cmp", "eax, 5"), ("test", "eax, eax"), ("push", "rax")], "rax", 9),
        ([("mov", "eax, 9"), ("add", "eax, 1")], "rax", x86.UNKNOWN),
        ([("mov", "eax, dword ptr [rbx]")], "rax", x86.UNKNOWN),
        ([], "rax", x86.UNKNOWN),
        ([("mov", "edi, 9"), ("xor", "eax, eax")], "rdi", 9),
        ([("mov", "edi, 0xb"), ("rep stosq", "qword ptr [rdi], rax")], "rdi", x86.UNKNOWN),
        ([("mov", "edi, 0xb"), ("movsx", "eax, byte ptr [rsi]"), ("movsd", "xmm0, xmm1")], "rdi", 0xB),
        ([("mov", "edi, ebx")], "rdi", x86.UNKNOWN),
        ([("mov", "ebx, 0x19"), ("mov", "edi, ebx")], "rdi", 25),
        ([("mov", "ecx, 9"), ("syscall", ""), ("mov", "eax, ecx")], "rax", x86.UNKNOWN),
    ],
)
def test_last_write(block: list[tuple[str, str]], register: str, expected: int | str) -> None:
    assert x86.last_write(block, register) == expected


def test_fde_sync_points_are_only_trusted_when_aligned(libc: ModuleScan) -> None:
    """glibc's __restore_rt has its FDE one byte before the function; the sigreturn site still decodes right."""
    with elfmod.ElfFile(str(LIBC)) as f:
        fdes = f.fde_starts()
    assert len(fdes) > 1000 and any(x & 15 for x in fdes)
    assert any(s.nr == 15 for s in libc.sites)  # rt_sigreturn in __restore_rt


@needs_objdump
def test_without_symbols_or_unwind_tables_still_equals_objdump(monkeypatch: pytest.MonkeyPatch) -> None:
    """With no function starts at all (no symbols, no .eh_frame_hdr: hand-written or fully stripped code), sites
    are still confirmed by decoding from section starts or by majority vote of nearby decode starts."""
    ld = Path("/lib64/ld-linux-x86-64.so.2")
    if not ld.exists():
        pytest.skip("no ld.so at the usual place")
    monkeypatch.setattr(elfmod.ElfFile, "fde_starts", lambda self: [])
    monkeypatch.setattr(elfmod.ElfFile, "functions", lambda self, sh_type: None)
    out = subprocess.run(["objdump", "-d", "--no-show-raw-insn", str(ld)], capture_output=True, text=True).stdout
    expected = {int(m.group(1), 16) for m in re.finditer(r"^\s*([0-9a-f]+):\s+syscall\s*$", out, re.M)}
    raw = scanner.scan_file(str(ld))
    assert {s.vaddr for s in raw.sites if s.kind == "syscall"} == expected
    assert all(s.symbol is None for s in raw.sites)


def test_truncated_and_corrupted_files_never_crash(tmp_path: Path, fixture_paths: FixturePaths) -> None:
    """Whatever the damage, a scan returns or raises SysbreakError (one line), nothing else."""
    import random

    original = Path(fixture_paths.libsbstripped).read_bytes()
    rng = random.Random(1234)
    path = tmp_path / "damaged.so"
    variants = [original[:n] for n in (64, 100, 1000, len(original) // 2, len(original) - 1)]
    (shoff,) = struct.unpack_from("<Q", original, 40)
    zones = [(0, 64), (64, 64 + 56 * 11), (shoff, len(original)), (0, len(original))]  # headers, tables, all
    for i in range(120):
        data = bytearray(original)
        lo, hi = zones[i % len(zones)]
        for _ in range(rng.randint(1, 12)):
            data[rng.randrange(lo, hi)] = rng.choice((0, 0xFF, rng.randrange(256)))
        variants.append(bytes(data))
    for data in variants:
        path.write_bytes(data)
        try:
            sites.scan(str(path), cache=False)
        except SysbreakError as err:
            assert "\n" not in str(err)


def test_sites_table_collapses_modules_without_sites() -> None:
    empty = ModuleScan("/usr/lib/libm.so.6", None, 0, ())
    text = sites.sites_table([(empty, 0x1000), (SYNTH, None)], [9], show_all=False)
    assert text.splitlines()[-1] == "(1 more module with no sites: libm.so.6)"
    assert "/usr/lib/libm.so.6" not in text
    text = sites.sites_table([(empty, 0x1000)], [9], show_all=True)
    assert text.splitlines() == [
        "/usr/lib/libm.so.6  (no build-id)  bias 0x1000  0 sites, 0 probes",
        "  (no syscall instructions and no calls to syscall())",
    ]
