"""Issue 8, log order = kernel order: where releases are caught (before the kernel acts), without GDB."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import FixturePaths

from sysbreak import sites
from sysbreak.arming import KERNEL_ARG_REGS, ProbeSpec, breakpoints_for
from sysbreak.elfscan import x86
from sysbreak.sites.model import CALL_ARG_REGS, SYSCALL_ARG_REGS, TAIL_CALL_ARG_REGS, ModuleScan

LIBC = Path("/lib/x86_64-linux-gnu/libc.so.6")
MUNMAP, MMAP, MREMAP = 11, 9, 25


@pytest.fixture(autouse=True)
def private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("SYSBREAK_CACHE_DIR", str(tmp_path / "cache"))
    sites.forget_memo()
    yield
    sites.forget_memo()


@pytest.fixture(scope="module")
def libc() -> ModuleScan:
    return sites.scan(str(LIBC), cache=False)


def _objdump_at(path: Path, vaddr: int) -> str:
    out = subprocess.run(
        ["objdump", "-d", "--no-show-raw-insn", f"--start-address={vaddr:#x}", f"--stop-address={vaddr + 16:#x}",
         str(path)],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    lines = [ln for ln in out.splitlines() if ln.strip().startswith(f"{vaddr:x}:")]
    assert lines, out
    return lines[0]


def test_libc_munmap_is_caught_before_its_syscall_at_the_mov_of_its_number(libc: ModuleScan) -> None:
    [site] = [s for s in libc.sites if s.symbol == "munmap"]
    assert site.pre_vaddr is not None and site.pre_vaddr < site.vaddr
    assert site.pre_vaddr == site.vaddr - (site.symbol_offset or 0)  # glibc: `mov $0xb,%eax` at munmap+0
    assert "mov    $0xb,%eax" in _objdump_at(LIBC, site.pre_vaddr)
    [probe] = sites.plan(libc, {MUNMAP})
    assert probe.before and probe.entry == site.pre_vaddr and probe.site == site
    assert probe.arg_regs == SYSCALL_ARG_REGS and probe.condition_nrs is None
    # the benchmark's "as before" placement: after the syscall, one stop
    [after] = sites.plan(libc, {MUNMAP}, releases_before=False)
    assert not after.before and after.entry == site.vaddr and after.exit == site.next_vaddr


def test_allocations_stay_after_their_syscall(libc: ModuleScan) -> None:
    # mmap and mremap need their return value: one breakpoint after the syscall, as always
    for nr in (MMAP, MREMAP):
        probes = sites.plan(libc, {nr})
        assert probes and not any(p.before for p in probes)
    [mremap] = [s for s in libc.sites if s.symbol == "mremap"]
    assert mremap.pre_vaddr == mremap.vaddr - 5  # `mov $0x19,%eax`, itself a jump target: still one block


def test_every_pre_vaddr_is_the_instruction_just_before_its_syscall(libc: ModuleScan) -> None:
    with_pre = [s for s in libc.sites if s.pre_vaddr is not None]
    assert len(with_pre) > 100
    assert all(s.kind == "syscall" for s in with_pre)
    for s in with_pre[:: max(1, len(with_pre) // 20)]:
        line = _objdump_at(LIBC, s.pre_vaddr or 0)
        assert "syscall" not in line and "j" not in line.split("\t")[-1][:1]
        # it ends where the syscall begins
        after = subprocess.run(
            ["objdump", "-d", "--no-show-raw-insn", f"--start-address={s.pre_vaddr:#x}",
             f"--stop-address={s.vaddr + 2:#x}", str(LIBC)],
            capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
        insns = [ln for ln in after.splitlines() if ln.startswith("  ") and ":" in ln]
        assert len(insns) == 2 and insns[1].strip().startswith(f"{s.vaddr:x}:") and "syscall" in insns[1]


def test_call_sites_of_munmap_are_caught_at_the_call(fixture_paths: FixturePaths) -> None:
    scan = sites.scan(str(fixture_paths.build / "race"), cache=False)
    [unmap] = [s for s in scan.sites if s.kind == "call" and s.nr == MUNMAP]
    [probe] = sites.plan(scan, {MUNMAP})
    assert probe.before and probe.entry == unmap.vaddr and probe.exit == unmap.next_vaddr
    assert probe.arg_regs == (TAIL_CALL_ARG_REGS if unmap.tail else CALL_ARG_REGS)
    assert [p.before for p in sites.plan(scan, {MMAP, MREMAP})] == [False, False]
    table = sites.sites_table([(scan, 0)], {MMAP, MUNMAP})
    assert [ln for ln in table.splitlines() if "11 munmap" in ln][0].endswith("break before")


def _fn(name: str, body: str) -> str:
    return f'  ".globl {name}\\n.type {name},@function\\n{name}:\\n{body}.size {name}, .-{name}\\n"\n'


ASM_SO = (
    '__asm__(\n  ".text\\n"\n'
    + _fn("plain", "  mov $11, %eax\\n  syscall\\n  ret\\n")
    + _fn("argset", "  mov $11, %eax\\n  mov $4096, %esi\\n  syscall\\n  ret\\n")
    + _fn("joined", "  test %edi, %edi\\n  je 1f\\n  nop\\n1:\\n  mov $11, %eax\\n  syscall\\n  ret\\n")
    + _fn("stackarg", "  mov $11, %eax\\n  pop %rdi\\n  syscall\\n  ret\\n")
    + _fn("late", "  mov %rdx, %r10\\n  mov $11, %eax\\n  syscall\\n  ret\\n")
    + ");\n"
)


def test_no_pre_site_where_an_argument_changes(tmp_path: Path) -> None:
    src = tmp_path / "asm.c"
    src.write_text(ASM_SO)
    so = tmp_path / "libasm.so"
    subprocess.run(["gcc", "-shared", "-fPIC", "-o", str(so), str(src)], check=True)
    scan = sites.scan(str(so), cache=False)
    by_symbol = {s.symbol: s for s in scan.sites}
    assert by_symbol["plain"].pre_vaddr == by_symbol["plain"].vaddr - 5
    assert by_symbol["late"].pre_vaddr == by_symbol["late"].vaddr - 5  # r10 written two instructions earlier
    assert by_symbol["joined"].pre_vaddr == by_symbol["joined"].vaddr - 5  # the branch lands on the mov: fine
    assert by_symbol["argset"].pre_vaddr is None  # rsi written just before the syscall
    assert by_symbol["stackarg"].pre_vaddr is None  # pop rdi
    probes = sites.plan(scan, {MUNMAP})
    assert {p.site.symbol for p in probes if p.before} == {"plain", "late", "joined"}
    assert {p.site.symbol for p in probes if not p.before} == {"argset", "stackarg"}  # after: the replay orders


@pytest.mark.parametrize(
    ("mnemonic", "op_str", "register", "writes"),
    [
        ("mov", "eax, 0xb", "rdi", False),
        ("mov", "eax, 0xb", "rax", True),
        ("mov", "rsi, rax", "rsi", True),
        ("mov", "qword ptr [rdi], 1", "rdi", False),
        ("push", "rdi", "rdi", False),
        ("pop", "rdi", "rdi", True),
        ("xchg", "rax, r10", "r10", True),
        ("xor", "r8d, r8d", "r8", True),
        ("cmp", "rdx, 5", "rdx", False),
        ("cqo", "", "rdx", True),
        ("rep stosq", "qword ptr [rdi], rax", "rdi", True),
        ("nop", "", "r9", False),
        ("syscall", "", "rax", True),
        ("test", "cl, 6", "rcx", False),
    ],
)
def test_may_write(mnemonic: str, op_str: str, register: str, writes: bool) -> None:
    assert x86.may_write(mnemonic, op_str, register) is writes


def test_before_breakpoints() -> None:
    syscall_site = ProbeSpec("syscall", 0x1005, 0x1000, 0x1007, MUNMAP, "rax", KERNEL_ARG_REGS, None, before=True)
    [bp] = breakpoints_for(syscall_site, 0x7F0000000000, wrapper_return=0x5555)
    assert bp.role == "before" and bp.address == 0x7F0000001000 and bp.site_address == 0x7F0000001005
    assert bp.arg_regs == KERNEL_ARG_REGS and bp.nr == MUNMAP and bp.condition_nrs is None
    assert not bp.synthetic_wrapper_frame and bp.return_address is None
    call_site = ProbeSpec("call", 0x2000, 0x2000, 0x2005, MUNMAP, "rdi", CALL_ARG_REGS, None, before=True)
    # at the call the arguments are where C put them: no need of the verified wrapper
    [bp] = breakpoints_for(call_site, 0x1000, wrapper_return=None)
    assert bp.role == "before" and bp.address == 0x3000 and bp.arg_regs == CALL_ARG_REGS
    assert bp.synthetic_wrapper_frame and bp.return_address == 0x3005
    tail = ProbeSpec("call", 0x2000, 0x2000, None, MUNMAP, "rdi", TAIL_CALL_ARG_REGS, None, before=True)
    [bp] = breakpoints_for(tail, 0, wrapper_return=None)
    assert bp.role == "before" and not bp.synthetic_wrapper_frame and bp.return_address is None
