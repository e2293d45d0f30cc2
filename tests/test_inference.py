"""Syscall numbers inferred from the code (issue 8): push/pop, xor, register copies, constants that reach a block
from every predecessor, and the place before a syscall instruction where a number that is not a constant is read.

Unit tests decode real machine code (the bytes are given with the assembly they encode) with capstone, as the
scanner does; fixtures/src/consts.c is the real program, scanned and captured with real gdb.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from conftest import run_sysbreak
from gdbutil import BUILD, build_fixtures

from sysbreak import sites
from sysbreak.arming import GLIBC_SYSCALL_WRAPPER
from sysbreak.capture import read_events
from sysbreak.capture.schema import StackRecord
from sysbreak.elfscan import scanner, x86


def block(hexbytes: str, address: int = 0x1000) -> list[tuple[str, str]]:
    w = x86.decode(bytes.fromhex(hexbytes), address)
    return [w.text(k) for k in range(len(w.rows))]


@pytest.mark.parametrize(
    ("code", "register", "expected"),
    [
        ("6a03 5f", "rdi", 3),  # push 3; pop rdi  (MKL: then jmp syscall@plt)
        ("6a09 58", "rax", 9),  # push 9; pop rax
        ("bb0b000000 53 58", "rax", 11),  # mov ebx, 11; push rbx; pop rax
        ("6a03 6a04 59 5f", "rdi", 3),  # push 3; push 4; pop rcx; pop rdi: balanced pushes and pops between
        ("6a03 6a04 59 5f", "rcx", 4),
        ("31ff", "rdi", 0),  # xor edi, edi
        ("4531d2", "r10", 0),  # xor r10d, r10d
        ("29c0", "rax", 0),  # sub eax, eax
        ("41b914000000 4489c8", "rax", 20),  # mov r9d, 0x14; mov eax, r9d
        ("bf05000000 4889f8", "rax", 5),  # mov edi, 5; mov rax, rdi: a copy of a known constant
    ],
)
def test_constants(code: str, register: str, expected: int) -> None:
    assert x86.trace(block(code), register).const == expected
    assert x86.last_write(block(code), register) == expected


@pytest.mark.parametrize(
    ("code", "register"),
    [
        ("6a03 48891c24 5f", "rdi"),  # push 3; mov [rsp], rbx; pop rdi: the slot was overwritten
        ("6a03 4883c408 5f", "rdi"),  # push 3; add rsp, 8; pop rdi: not the pushed slot
        ("6a03 ff33 5f", "rdi"),  # push 3; push [rbx]; pop rdi: pops the unknown one
        ("b809000000 b001", "rax"),  # mov eax, 9; mov al, 1: a partial write
        ("8b03", "rax"),  # mov eax, [rbx]
        ("", "rax"),
    ],
)
def test_no_wrong_constant(code: str, register: str) -> None:
    assert x86.trace(block(code), register).const is None
    assert x86.last_write(block(code), register) == x86.UNKNOWN


def test_where_a_number_that_is_not_a_constant_is_final() -> None:
    # mov eax, [rbx]; mov ecx, eax; nop; mov eax, ecx: from instruction 1 on, rax (then rcx) carries it
    t = x86.trace(block("8b03 89c1 90 89c8"), "rax")
    assert (t.const, t.reg, t.at) == (None, "rax", 1)
    # written by the last instruction: no place before the syscall holds it
    assert x86.trace(block("90 8b03"), "rax").at is None
    # through memory: no register holds it
    assert x86.trace(block("ff33 58"), "rax").at is None


def test_go_syscall6() -> None:
    """runtime/internal/syscall.Syscall6 (Go 1.19): mov r10, rsi; mov rdx, rdi; mov rsi, rcx; mov rdi, rbx; syscall."""
    code = block("4989f2 4889fa 4889ce 4889df")
    t = x86.trace(code, "rax")
    assert (t.const, t.reg, t.at, t.from_rdi) == (None, "rax", 0, False)  # AX at the function's entry
    assert [x86.locate_at(code, r, 0) for r in x86.KERNEL_ARGS] == ["rbx", "rcx", "rdi", "rsi", "r8", "r9"]
    assert x86.stack_delta(code, 0) == 0


def test_glibc_syscall_wrapper() -> None:
    code = block(GLIBC_SYSCALL_WRAPPER[:-2].hex())
    t = x86.trace(code, "rax")
    assert (t.reg, t.at, t.from_rdi) == ("rdi", 0, True)
    assert x86.last_write(code, "rax") == x86.FROM_RDI
    assert [x86.locate_at(code, r, 0) for r in x86.KERNEL_ARGS] == ["rsi", "rdx", "rcx", "r8", "r9", "*sp+8"]


def test_number_kept_on_the_stack() -> None:
    """Go's syscall.rawSyscallNoError.abi0: mov rdi, [rsp+0x10]; mov rsi, [rsp+0x18]; mov rdx, [rsp+0x20];
    mov rax, [rsp+8]; syscall: no register holds the number before the last load, its stack slot does."""
    code = block("488b7c2410 488b742418 488b542420 488b442408")
    assert x86.trace(code, "rax").at is None
    assert x86.locate_at(code, "rax", 0, low32=True) == "*sp+8"
    assert [x86.locate_at(code, r, 0) for r in x86.KERNEL_ARGS] == ["*sp+16", "*sp+24", "*sp+32", "r10", "r8", "r9"]
    # a 32-bit load is the number (the kernel reads 32 bits), never an argument
    code32 = block("8b442408")  # mov eax, dword ptr [rsp + 8]
    assert x86.locate_at(code32, "rax", 0, low32=True) == "*sp+8" and x86.locate_at(code32, "rax", 0) is None
    # a store to the stack in between: the slot may have changed
    assert x86.locate_at(block("48891c24 488b442408"), "rax", 0, low32=True) is None


def test_stack_delta() -> None:
    assert x86.stack_delta(block("53 b809000000"), 0) == -8  # push rbx
    assert x86.stack_delta(block("4883ec10 5b"), 0) == -8  # sub rsp, 0x10; pop rbx
    assert x86.stack_delta(block("4889ec"), 0) is None  # mov rsp, rbp


def _function(hexcode: str, base: int = 0x1000) -> scanner._Function:
    code = bytes.fromhex(hexcode)
    return scanner._Function.of(scanner._Region(base, code, ".text"), base, scanner._Starts([base]))


def test_constant_from_every_predecessor() -> None:
    # mov ebp, 0xca; test rdi, rdi; je L; xor esi, esi; L: mov eax, ebp; syscall; ret
    f = _function("bdca000000 4885ff 7402 31f6 89e8 0f05 c3")
    assert f.const_at(0x100C, "rbp") == 0xCA
    # ... where the other path loads another value: mov ebp, 0xca; test; je L; mov ebp, 0xcb; L: mov eax, ebp
    f = _function("bdca000000 4885ff 7405 bdcb000000 89e8 0f05 c3")
    assert f.const_at(0x100F, "rbp") is None


def test_constant_across_a_call_and_a_loop() -> None:
    # 0: mov ebx, 9; 5: call 0x20; a: L: mov eax, ebx; c: syscall; e: test eax, eax; 10: jne L; 12: ret; pad; 20: ret
    code = "bb09000000 e816000000 89d8 0f05 85c0 75f8 c3" + "90" * 13 + "c3"
    f = _function(code)
    assert f.const_at(0x100A, "rbx") == 9  # callee-saved: the call leaves it; the loop back passes it along
    # the same with ecx (caller-saved): a call may change it
    code = "b909000000 e816000000 89c8 0f05 85c0 75f8 c3" + "90" * 13 + "c3"
    assert _function(code).const_at(0x100A, "rcx") is None


def test_indirect_jump_gives_up() -> None:
    # mov ebp, 0xca; jmp rax; mov eax, ebp; syscall: a computed jump may land anywhere
    f = _function("bdca000000 ffe0 89e8 0f05 c3")
    assert f.const_at(0x1007, "rbp") is None


# ---------------------------------------------------------------------------------------------------------------
# the real fixture


@pytest.fixture(scope="module")
def consts() -> Path:
    build_fixtures()
    return BUILD / "consts"


def test_fixture_numbers_are_inferred(consts: Path) -> None:
    scan = sites.scan(str(consts), cache=False)
    by = {s.symbol: s for s in scan.sites}
    assert (by["sb_push_munmap"].kind, by["sb_push_munmap"].tail, by["sb_push_munmap"].nr) == ("call", True, 11)
    assert (by["sb_cross_mmap"].kind, by["sb_cross_mmap"].nr) == ("syscall", 9)
    probes = {p.site.symbol: p for p in sites.plan(scan, [9, 11])}
    # no conditioned stop at these two (the fixture's wrapper sb_inner is conditioned at its first instruction,
    # and sb_uncovered_mmap cannot be watched)
    assert probes["sb_push_munmap"].condition_nrs is None and probes["sb_cross_mmap"].condition_nrs is None
    assert set(probes) == {"sb_push_munmap", "sb_cross_mmap", "sb_inner"}


@pytest.mark.gdb
def test_fixture_capture_costs_one_stop_per_call(tmp_path: Path, consts: Path) -> None:
    res = run_sysbreak("run", "-o", tmp_path / "cap", "-q", "-s", "mmap", "-s", "munmap", "--", consts, "5", timeout=60)
    assert res.returncode == 0, res.stderr
    assert "DONE 5" in res.stdout
    records = [json.loads(ln) for ln in (tmp_path / "cap" / "events.jsonl").read_text().splitlines()]
    stacks = {  # through the format's reader: raw stacks are unwound there
        r.id: [f.function for f in r.frames]
        for r in read_events(tmp_path / "cap" / "events.jsonl")
        if isinstance(r, StackRecord)
    }
    ours = [r for r in records if r.get("type") == "syscall" and (r["site"]["module"] or "").endswith("/consts")]
    maps = [r for r in ours if r["name"] == "mmap"]
    unmaps = [r for r in ours if r["name"] == "munmap"]
    assert len(maps) == 5 and len(unmaps) == 5
    assert all(r["args"][1] == 4096 and r["ret"] > 0 for r in maps)
    assert sorted(r["args"][0] for r in unmaps) == sorted(r["ret"] for r in maps)
    assert all("sb_cross_mmap" in stacks[r["stack"]] for r in maps)
    assert all("main" in stacks[r["stack"]] for r in unmaps)


@pytest.mark.gdb
def test_uncovered_site_is_listed_and_unexplained_growth_warned_in_every_format(tmp_path: Path, consts: Path) -> None:
    """sb_uncovered_mmap loads its number from memory right before its syscall: no breakpoint can watch it. The
    capture lists it (meta.json), and the 4 MiB it maps are warned about, with the site, in text, json and html."""
    cap = tmp_path / "cap"
    res = run_sysbreak("run", "-o", cap, "-q", "-i", "0.2", "-s", "mmap", "--", consts, "--uncovered", "4", timeout=60)
    assert res.returncode == 0, res.stderr
    assert f"UNCOVERED {4 << 20}" in res.stdout
    meta = json.loads((cap / "meta.json").read_text())
    (mod,) = [m for m in meta["modules"] if m["path"].endswith("/consts")]
    assert mod["uncovered_count"] == 1 and mod["uncovered"][0]["symbol"] == "sb_uncovered_mmap"
    site = f"consts+{mod['uncovered'][0]['offset']:#x} (sb_uncovered_mmap+0x"

    doc = json.loads(run_sysbreak("report", cap, "-f", "json").stdout)
    spots = doc["blind_spots"]
    assert spots["unexplained_growth_bytes"] >= 4 << 20 and spots["regions"] >= 1
    assert any(s["symbol"] == "sb_uncovered_mmap" for s in spots["uncovered_sites"])
    (warning,) = [w for w in doc["warnings"] if "explained by no captured call" in w]
    assert site in warning
    text = run_sysbreak("report", cap).stdout
    assert "explained by no captured call" in text and site in text.replace("\n", " ")
    html = tmp_path / "r.html"
    assert run_sysbreak("report", cap, "-f", "html", "-o", html).returncode == 0
    assert "explained by no captured call" in html.read_text() and "sb_uncovered_mmap" in html.read_text()


def test_blind_spots_sentence() -> None:
    from sysbreak.analysis.blindspots import blind_spots
    from sysbreak.analysis.model import Region

    grown = Region(0x1000, 0x201000, "rw-p", "[anon]", 2 << 20, first_size=1 << 20, status="grew")
    grown.unexplained_bytes = 1 << 20  # all of its first MiB was there before; the growth is explained
    assert blind_spots([grown], []) == (None, None)
    grown.unexplained_bytes = (1 << 20) + 8192
    stack = Region(0x7000, 0x9000, "rw-p", "[stack]", 8192, status="grew", unexplained_bytes=8192)
    mods = [
        {
            "path": "/lib/libfoo.so",
            "uncovered": [{"offset": 0x1234, "symbol": "f", "symbol_offset": 9}],
            "uncovered_count": 40,
        },
        {"path": "/opt/packed.bin", "error": "/opt/packed.bin: damaged ELF file"},
        {"path": "/lib/libc.so.6", "uncovered": [], "uncovered_count": 0},
    ]
    spots, warning = blind_spots([grown, stack], mods)
    assert spots is not None and (spots.unexplained_growth_bytes, spots.regions, spots.uncovered_count) == (8192, 1, 40)
    assert spots.unscanned_modules == [{"path": "/opt/packed.bin", "error": "/opt/packed.bin: damaged ELF file"}]
    assert warning == (
        "8192 bytes (8.0 KiB) of growth in 1 region are explained by no captured call; 40 syscall sites of the armed"
        " modules could not be watched (number unknown, no safe place before them): libfoo.so+0x1234 (f+0x9) and 39"
        " more; mapped files that could not be scanned: /opt/packed.bin (/opt/packed.bin: damaged ELF file)"
    )
    _spots, warning = blind_spots([grown], mods[2:])
    assert warning is not None and "every syscall site of the armed modules was watched" in warning
    # nothing grew unexplained: no warning, but what could not be watched is still said (reports print a note)
    grown.unexplained_bytes = 1 << 20
    spots, warning = blind_spots([grown], mods[:1])
    assert warning is None and spots is not None and spots.unexplained_growth_bytes == 0
    assert spots.summary.startswith("40 syscall sites of the armed modules could not be watched")
    assert spots.summary.endswith("; no growth is unexplained")


def test_wrapper_chain_callers_constants(consts: Path, gomapper_path: Path) -> None:
    """sb_inner takes mmap's number in rdi; sb_mid tail-calls it with its own rdi (a wrapper of the wrapper);
    sb_outer calls sb_mid(9, ...): followed up the chain, the constant 9 is found two links up. In Go,
    RawSyscall6 passes AX on to runtime/internal/syscall.Syscall6, and syscall.Getrlimit's 97 is three links up."""
    from sysbreak.elfscan.wrappers import described

    scan = sites.scan(str(consts), cache=False)
    (inner,) = [s for s in scan.sites if s.symbol == "sb_inner"]
    assert (inner.early_vaddr, inner.early_reg) == (inner.vaddr - (inner.symbol_offset or 0), "rdi")
    calls = {c["symbol"]: c for c in described(str(consts), {inner.early_vaddr: "rdi"})}
    assert calls["sb_mid"]["caller_reg"] == "rdi" and calls["sb_mid"]["link"] == 1
    assert (
        calls["sb_outer"]["nr"] == 9
        and calls["sb_outer"]["link"] == 2
        and calls["sb_outer"]["target_symbol"] == "sb_mid"
    )

    go = sites.scan(str(gomapper_path))
    (syscall6,) = [s for s in go.sites if s.symbol == "runtime/internal/syscall.Syscall6"]
    assert syscall6.early_vaddr is not None
    gcalls = described(str(gomapper_path), {syscall6.early_vaddr: "rax"})
    by = {c["symbol"]: c for c in gcalls}
    assert by["syscall.RawSyscall6"]["caller_reg"] == "rax"
    assert by["syscall.Getrlimit"]["nr"] == 97 and by["syscall.Getrlimit"]["link"] >= 2
    # syscall.Syscall6 keeps AX in a stack slot across runtime.entersyscall: followed, syscall.mmap passes 9
    assert by["syscall.Syscall6"]["caller_reg"] == "rax"
    assert (by["syscall.mmap"]["nr"], by["syscall.mmap"]["target_symbol"]) == (9, "syscall.Syscall6")
    # x/sys: ABI0 wrappers take the number in their stack slot (*sp+8 at entry), through a tail jump
    assert by["syscall.Syscall6.abi0"]["caller_reg"] == "*sp+8"
    assert by["golang.org/x/sys/unix.Syscall6.abi0"]["caller_reg"] == "*sp+8"
    assert by["golang.org/x/sys/unix.mmap"]["nr"] == 9 and by["golang.org/x/sys/unix.mmap"]["link"] == 5


@pytest.fixture(scope="module")
def gomapper_path() -> Path:
    build_fixtures()
    return BUILD / "gomapper"


@pytest.mark.gdb
def test_wrapper_chain_capture(tmp_path: Path, consts: Path) -> None:
    res = run_sysbreak("run", "-o", tmp_path / "cap", "-q", "-s", "mmap", "--", consts, "--chain", "3", timeout=60)
    assert res.returncode == 0, res.stderr
    assert "CHAIN 3" in res.stdout
    records = [json.loads(ln) for ln in (tmp_path / "cap" / "events.jsonl").read_text().splitlines()]
    stacks = {  # through the format's reader: raw stacks are unwound there
        r.id: [f.function for f in r.frames]
        for r in read_events(tmp_path / "cap" / "events.jsonl")
        if isinstance(r, StackRecord)
    }
    ours = [r for r in records if r.get("type") == "syscall" and "sb_inner" in stacks[r["stack"]]]
    assert len(ours) == 3 and all(r["args"][:4] == [0, 4096, 3, 0x22] and r["ret"] > 0 for r in ours)
    assert all("sb_outer" in stacks[r["stack"]] and "main" in stacks[r["stack"]] for r in ours)


def test_sites_cli_wrappers(consts: Path) -> None:
    res = run_sysbreak("sites", consts, "-s", "mmap", "--wrappers", "-f", "json")
    assert res.returncode == 0, res.stderr
    (mod,) = json.loads(res.stdout)["modules"]
    assert any(c["symbol"] == "sb_outer" and c["nr"] == 9 for c in mod["wrapper_calls"])
    text = run_sysbreak("sites", consts, "-s", "mmap", "--wrappers").stdout
    assert "sb_outer+0x" in text and "passes 9 mmap in rdi" in text and "a wrapper itself" in text


@pytest.mark.gdb
def test_glibc_futex_numbers_from_other_blocks_match_strace(tmp_path: Path) -> None:
    """glibc's pthread_barrier_wait keeps futex's 202 in a callee-saved register set blocks before its syscall:
    inferred across blocks, its calls are caught after the syscall (one stop each), about as many as strace sees in
    another run, each with futex's arguments."""
    build_fixtures()
    prog = str(BUILD / "mapper_mt")
    st = tmp_path / "strace.txt"
    res = subprocess.run(["strace", "-f", "-qq", "-e", "trace=futex", "-o", str(st), prog], capture_output=True)
    assert res.returncode == 0
    seen = [ln for ln in st.read_text().splitlines() if "resumed>" not in ln and "futex(" in ln]
    cap = tmp_path / "cap"
    res2 = run_sysbreak("run", "-q", "-s", "futex", "-o", cap, "--", prog, timeout=60)
    assert res2.returncode == 0, res2.stderr
    records = [json.loads(ln) for ln in (cap / "events.jsonl").read_text().splitlines()]
    futex = [r for r in records if r.get("type") == "syscall" and r["name"] == "futex"]
    # (how many threads must wait at the barrier depends on timing: the two runs differ by a call or two)
    assert seen and abs(len(futex) - len(seen)) <= 3
    libc = sites.scan("/lib/x86_64-linux-gnu/libc.so.6")
    barrier = {s.vaddr for s in libc.sites if s.symbol == "pthread_barrier_wait" and s.nr == 202}
    at_barrier = [r for r in futex if r["site"]["offset"] in barrier]
    assert at_barrier
    # they are futex calls: FUTEX_WAIT or FUTEX_WAKE (private) on a 4-byte aligned word, as strace shows them
    assert all(r["args"][1] in (0x80, 0x81) and r["args"][0] % 4 == 0 for r in at_barrier)
