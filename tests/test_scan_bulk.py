"""The numpy searches of big modules (sysbreak.elfscan.bulk) find exactly what the pure-Python searches find, and
both find exactly the sites a full linear decode of every executable section (objdump's way) finds: on libc,
libucm, libpython and fixtures (a PLT build, a -fno-plt build whose calls go through the GOT, a static build)."""

from __future__ import annotations

import mmap
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import FixturePaths

from sysbreak.elfscan import scanner, x86
from sysbreak.elfscan.elf import R_X86_64_JUMP_SLOT, SHT_DYNSYM, SHT_SYMTAB, ElfFile, MappedBytes

LIBRARIES = {
    "libc": Path("/lib/x86_64-linux-gnu/libc.so.6"),
    "libucm": Path("/lib/x86_64-linux-gnu/libucm.so.0"),
    "libpython": Path("/usr/lib/x86_64-linux-gnu/libpython3.11.so.1.0"),
}
_PROG = (
    "#include <unistd.h>\n#include <sys/syscall.h>\n"
    "__attribute__((noinline)) long tail(long n) { return syscall(n, 1); }\n"  # jmp: a tail call
    "int main(int argc, char **argv) {\n"
    "  long r = syscall(SYS_getppid);\n"
    "  return (int)r + (int)tail(argc) + (int)syscall(SYS_gettid);\n}\n"
)
# (sites, calls, tail calls) at least, so that each search is really exercised
EXPECTED = {
    "libc": (300, 0, 0),  # (glibc 2.36: 526 sites)
    "libucm": (4, 4, 1),  # (UCX 1.13: 8 sites, 7 calls through the PLT, 2 of them tail calls)
    "libpython": (3, 3, 0),
    "mapper": (3, 3, 0),
    "fno-plt": (3, 3, 1),
    "static": (100, 3, 1),
}


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Path]]:
    if shutil.which("gcc") is None:
        yield {}
        return
    d = tmp_path_factory.mktemp("bulk")
    (d / "prog.c").write_text(_PROG)
    out = {}
    for name, flags in (("fno-plt", ["-fno-plt"]), ("static", ["-static"])):
        res = subprocess.run(["gcc", "-O2", *flags, "-o", str(d / name), str(d / "prog.c")], capture_output=True)
        if res.returncode == 0:
            out[name] = d / name
    yield out


def _path(which: str, fixture_paths: FixturePaths, built: dict[str, Path]) -> Path:
    if which == "mapper":
        return Path(fixture_paths.mapper)
    path = LIBRARIES.get(which) or built.get(which)
    if path is None or not path.exists():
        pytest.skip(f"{which} is not here")
    return path


FILES = ["libc", "libucm", "libpython", "mapper", "fno-plt", "static"]


def _scan(path: Path, mode: str, monkeypatch: pytest.MonkeyPatch) -> scanner.RawScan:
    monkeypatch.setenv("SYSBREAK_SCAN_BULK", mode)
    return scanner.scan_file(str(path))


@pytest.mark.parametrize("which", FILES)
def test_bulk_searches_find_exactly_the_same_sites(
    which: str, fixture_paths: FixturePaths, built: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _path(which, fixture_paths, built)
    fast = _scan(path, "always", monkeypatch)
    slow = _scan(path, "never", monkeypatch)
    assert fast == slow  # every field of every site: numbers, early probes, names
    assert fast.sites


_RIP = re.compile(r"\[rip ([+-]) (0x[0-9a-f]+)\]")


def _rip_target(op_str: str, next_insn: int) -> int | None:
    m = _RIP.search(op_str)
    return None if m is None else next_insn + int(m.group(2), 16) * (1 if m.group(1) == "+" else -1)


def _full_decode(path: Path) -> set[tuple[int, str, bool]]:
    """``(address, kind, tail)`` of every syscall instruction and every call/jmp/jcc to ``syscall()`` (its PLT
    stubs, its own code, its GOT slots), by decoding every executable section linearly from its start, as
    ``objdump -d`` does, reading each branch's target from capstone's text."""
    with ElfFile(str(path)) as elf:
        regions = [(v, elf.read(off, size), name) for v, off, size, name in elf.exec_regions()]
        slots = elf.got_slots("syscall")
        local: list[tuple[int, int]] = []
        for sh_type in (SHT_SYMTAB, SHT_DYNSYM):
            index = elf.functions(sh_type)
            if index is not None:
                local += [(s, s + max(n, 1)) for s, n in index.named("syscall")]
    got = {slot for slot, rtype in slots.items() if rtype != R_X86_64_JUMP_SLOT}
    decoded = []
    for vaddr, code, name in regions:
        w = x86.decode(code, vaddr)
        decoded.append((name, w))
    stubs: set[int] = set()
    for name, w in decoded:
        if not name.startswith(".plt"):
            continue
        for k, (addr, size, _c) in enumerate(w.rows):
            if x86.base_mnemonic(w.mnemonic(k)) == "jmp" and _rip_target(w.op_str(k), addr + size) in slots:
                stubs.add(addr)
                if k and w.mnemonic(k - 1) == "endbr64":
                    stubs.add(w.rows[k - 1][0])
    direct = {lo for lo, _hi in local} | stubs
    out: set[tuple[int, str, bool]] = set()
    for name, w in decoded:
        for k, (addr, size, first) in enumerate(w.rows):
            if first not in b"sjcbn":
                continue
            mnemonic = x86.base_mnemonic(w.mnemonic(k))
            if mnemonic == "syscall":
                out.add((addr, "syscall", False))
                continue
            if name.startswith(".plt") or not (mnemonic == "call" or mnemonic[0] == "j"):
                continue
            if any(lo <= addr < hi for lo, hi in local):
                continue  # syscall()'s own branches
            op = w.op_str(k)
            target = x86.direct_target(op)
            if target in direct or (op.startswith("qword ptr") and _rip_target(op, addr + size) in got):
                out.add((addr, "call", mnemonic != "call"))
    return out


@pytest.mark.parametrize("which", FILES)
def test_sites_equal_a_full_decode(
    which: str, fixture_paths: FixturePaths, built: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _path(which, fixture_paths, built)
    fast = _scan(path, "always", monkeypatch)
    found = {(s.vaddr, s.kind, s.tail) for s in fast.sites}
    assert found == _full_decode(path)
    calls = [f for f in found if f[1] == "call"]
    counts = (len(found), len(calls), sum(1 for f in calls if f[2]))
    assert all(got >= least for got, least in zip(counts, EXPECTED[which], strict=True)), counts


def test_may_write_any_is_any_may_write_on_real_code() -> None:
    """The one-parse check before a syscall agrees with the per-register one on every instruction of 256 KiB of
    libc (and of a few hand-picked ones)."""
    with ElfFile(str(LIBRARIES["libc"])) as elf:
        vaddr, off, _size, _name = next(r for r in elf.exec_regions() if r[3] == ".text")
        w = x86.decode(elf.read(off, 256 << 10), vaddr)
    texts = {w.text(k) for k in range(len(w.rows))}
    texts |= {
        ("rep stosq", "qword ptr [rdi], rax"),
        ("imul", "rdx"),
        ("xchg", "rsi, rax"),
        ("lodsb", ""),
        ("int", "0x80"),
    }
    assert len(texts) > 10_000
    for mnemonic, op_str in texts:
        for regs in (x86.KERNEL_ARGS, ("rax",), ("rcx", "rdx")):
            assert x86.may_write_any(mnemonic, op_str, regs) == any(x86.may_write(mnemonic, op_str, r) for r in regs), (
                mnemonic,
                op_str,
                regs,
            )


def test_mapped_bytes_read_like_bytes(tmp_path: Path) -> None:
    import random

    data = bytes(random.Random(7).randrange(256) for _ in range(5000)) + b"\x0f\x05tail\x0f\x05"
    (tmp_path / "f").write_bytes(b"HEAD" * 100 + data)
    fd = os.open(tmp_path / "f", os.O_RDONLY)
    try:
        mm = mmap.mmap(fd, 0, prot=mmap.PROT_READ)
    finally:
        os.close(fd)
    m = MappedBytes(mm, 400, len(data))
    assert len(m) == len(data)
    for k in (0, 1, 17, len(data) - 1, -1, -len(data)):
        assert m[k] == data[k]
    for a, b in ((0, 10), (5, 3), (4990, 6000), (-6, None), (None, 4), (100, -100)):
        assert m[a:b] == data[a:b]
    for sub, a, b in ((b"\x0f\x05", 0, None), (b"\x0f\x05", 5001, None), (b"tail", -20, -2), (b"zz\x00", 0, 100)):
        assert m.find(sub, a, b) == data.find(sub, a, b)
    with pytest.raises(IndexError):
        m[len(data)]
