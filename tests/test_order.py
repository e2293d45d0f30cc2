"""Issue 8, log order = kernel order: where releases are caught (before the kernel acts), without GDB."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
from conftest import FixturePaths, Spawn, run_sysbreak

from sysbreak import sites
from sysbreak.analysis import analyze
from sysbreak.analysis.model import Analysis
from sysbreak.arming import KERNEL_ARG_REGS, ProbeSpec, breakpoints_for
from sysbreak.capture import EventLogWriter
from sysbreak.elfscan import x86
from sysbreak.sites.model import CALL_ARG_REGS, SYSCALL_ARG_REGS, TAIL_CALL_ARG_REGS, ModuleScan

LIBC = Path("/lib/x86_64-linux-gnu/libc.so.6")
MUNMAP, MMAP, MREMAP = 11, 9, 25


pytestmark = pytest.mark.usefixtures("private_cache")


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


def test_no_jump_in_libc_lands_between_a_pre_instruction_and_its_syscall(libc: ModuleScan) -> None:
    # every path to such a syscall passes the breakpoint before it: objdump's direct jumps never target it
    out = subprocess.run(["objdump", "-d", "--no-show-raw-insn", str(LIBC)], capture_output=True, text=True).stdout
    targets = {int(t, 16) for t in re.findall(r"\tj\w+\s+([0-9a-f]+) <", out)}
    assert len(targets) > 10_000
    with_pre = [s for s in libc.sites if s.pre_vaddr is not None]
    assert with_pre and not [hex(s.vaddr) for s in with_pre if s.vaddr in targets]


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


# ---------------------------------------------------------------------------------------------------------------
# the replay: releases logged after an allocation that reused their range are applied in kernel order

P = 4096
X = 0x7F0000100000
Y = 0x7F0000200000
NEG1 = (1 << 64) - 1


class Log:
    """A hand-written event log: each call names its thread and stack label."""

    def __init__(self, path: Path, fmt: str | None = None) -> None:
        self.path = path
        self.w = EventLogWriter(path, append=False)
        self.w.header(arch="x86_64", pid=7, exe="/srv/app", syscalls=["mmap", "munmap", "mremap", "brk"],
                      mode="callsite", t0=1.0, wall0="2026-12-01T08:00:00+00:00", tool="test", gdb="none")  # fmt: skip
        if fmt is not None:  # an older log: rewrite the header's format
            self.fmt = fmt
        self.t = 1.0

    def _sid(self, who: str) -> int:
        frame = {"pc": 0x1000 + len(who), "module": "/srv/app", "offset": len(who), "function": who}
        return self.w.stack_id((who,), [frame], [])

    def ev(self, tid: int, name: str, args: list[int], ret: int | None, who: str, **extra: Any) -> None:
        self.t += 0.001
        nr = {"mmap": 9, "munmap": 11, "mremap": 25, "brk": 12}[name]
        self.w.event(t=self.t, tid=tid, nr=nr, name=name, args=[*args, *[0] * (6 - len(args))], ret=ret,
                     stack=self._sid(who), **extra)  # fmt: skip

    def mmap(self, tid: int, ret: int, length: int, who: str, flags: int = 0x22) -> None:
        self.ev(tid, "mmap", [0, length, 3, flags, NEG1, 0], ret, who)

    def munmap(self, tid: int, addr: int, length: int, who: str, *, before: bool) -> None:
        if before:
            self.ev(tid, "munmap", [addr, length], None, who, when="before")
        else:
            self.ev(tid, "munmap", [addr, length], 0, who)

    def close(self) -> Path:
        self.w.end("exited", self.t + 1)
        self.w.close()
        if getattr(self, "fmt", None):
            text = self.path.read_text().replace("sysbreak-events/3", self.fmt, 1)
            self.path.write_text(text)
        return self.path


def live_by(a: Analysis) -> dict[str, int]:
    out: dict[str, int] = {}
    for s in a.stacks:
        name = s.frames[0].function if s.frames else "?"
        out[name or "?"] = out.get(name or "?", 0) + s.live_bytes
    return {k: v for k, v in out.items() if v}


def stale(a: Analysis) -> list[str]:
    return [w for w in a.warnings if "still held" in w]


@pytest.mark.parametrize("fmt", [None, "sysbreak-events/1"])
def test_munmap_logged_after_the_mmap_that_reused_its_range_is_replayed_first(tmp_path: Path, fmt: str | None) -> None:
    log = Log(tmp_path / "e.jsonl", fmt)
    log.mmap(1, X, 16 * P, "a_map")
    log.mmap(2, X, 16 * P, "b_map")  # thread 2 got X: thread 1's munmap had happened, its stop not yet reported
    log.mmap(3, Y, P, "c_map")  # another thread's call in between
    log.munmap(1, X, 16 * P, "a_unmap", before=False)  # thread 1's next record
    a = analyze(log.close())
    assert live_by(a) == {"b_map": 16 * P, "c_map": P}
    assert stale(a) == [] and a.reordered == {"munmap": 1}


def test_mremap_move_logged_after_the_mmap_that_got_its_old_range(tmp_path: Path) -> None:
    log = Log(tmp_path / "e.jsonl")
    log.mmap(1, X, 16 * P, "a_map")
    log.mmap(2, X, 16 * P, "b_map")  # got thread 1's old range: thread 1's mremap had moved it
    log.ev(1, "mremap", [X, 16 * P, 32 * P, 1], Y, "a_grow")  # MREMAP_MAYMOVE, moved to Y
    a = analyze(log.close())
    # the moved bytes keep their first owner, the growth is the mremap's
    assert live_by(a) == {"b_map": 16 * P, "a_map": 16 * P, "a_grow": 16 * P}
    assert stale(a) == [] and a.reordered == {"mremap": 1}


def test_mremap_whose_new_range_needs_another_release_first(tmp_path: Path) -> None:
    log = Log(tmp_path / "e.jsonl")
    log.mmap(1, X, 16 * P, "a_map")
    log.mmap(3, Y, 32 * P, "c_map")
    log.mmap(2, X, 16 * P, "b_map")  # needs thread 1's mremap first ...
    log.ev(1, "mremap", [X, 16 * P, 32 * P, 1], Y, "a_grow")  # ... which needs thread 3's munmap of Y first
    log.munmap(3, Y, 32 * P, "c_unmap", before=False)
    a = analyze(log.close())
    assert live_by(a) == {"b_map": 16 * P, "a_map": 16 * P, "a_grow": 16 * P}
    assert stale(a) == [] and a.reordered == {"mremap": 1, "munmap": 1}


def test_a_pulled_mremap_that_needs_an_earlier_logged_one(tmp_path: Path) -> None:
    # seen in a 16-thread capture: thread 3 got thread 2's old range; thread 2's mremap (logged after thread 1's)
    # moved into thread 1's old range, so thread 1's mremap must come first although logged between them
    a_old, b_old, c_new, b_new = X + 16 * P, X + 64 * P, X + 80 * P, X  # [X, X+32P) overlaps a_old
    log = Log(tmp_path / "e.jsonl")
    log.mmap(1, a_old, 16 * P, "a_map")
    log.mmap(2, b_old, 16 * P, "b_map")
    log.mmap(3, b_old, 16 * P, "c_map")  # the anchor: needs thread 2's mremap
    log.ev(1, "mremap", [a_old, 16 * P, 32 * P, 1], c_new, "a_grow")
    log.ev(2, "mremap", [b_old, 16 * P, 32 * P, 1], b_new, "b_grow")  # needs thread 1's, logged before it
    a = analyze(log.close())
    assert live_by(a) == {"c_map": 16 * P, "a_map": 16 * P, "a_grow": 16 * P, "b_map": 16 * P, "b_grow": 16 * P}
    assert stale(a) == [] and a.reordered == {"mremap": 2}


def test_brk_shrink_logged_after_an_mmap_that_got_the_freed_heap_top(tmp_path: Path) -> None:
    heap = X
    log = Log(tmp_path / "e.jsonl")
    log.ev(1, "brk", [0], heap, "a_brk")  # the first break seen
    log.ev(1, "brk", [heap + 32 * P], heap + 32 * P, "a_brk")  # heap grows by 32 pages
    log.mmap(2, heap + 16 * P, 16 * P, "b_map")  # got the top half: thread 1's brk had shrunk the heap
    log.ev(1, "brk", [heap + 16 * P], heap + 16 * P, "a_brk")  # ... logged after it
    a = analyze(log.close())
    assert live_by(a) == {"a_brk": 16 * P, "b_map": 16 * P}
    assert stale(a) == [] and a.reordered == {"brk": 1}


def test_only_a_threads_next_record_can_be_in_flight(tmp_path: Path) -> None:
    log = Log(tmp_path / "e.jsonl")
    log.mmap(1, X, 16 * P, "a_map")
    log.mmap(2, X, 16 * P, "b_map")
    log.mmap(1, Y, P, "a_other")  # thread 1 went on: its munmap below came later, it did not free X for thread 2
    log.munmap(1, X, 16 * P, "a_unmap", before=False)
    a = analyze(log.close())
    assert a.reordered == {}
    [w] = stale(a)
    assert w.startswith(f"{16 * P} bytes were given by the kernel to 1 call(s)")
    assert f"seq 2 (tid 2) got [{X:#x}, {X + 16 * P:#x}) still held from seq 1 (tid 1)" in w
    assert "(threads 1, 2)" in w


def test_a_release_logged_before_it_acted_is_never_moved(tmp_path: Path) -> None:
    log = Log(tmp_path / "e.jsonl")
    log.mmap(1, X, 16 * P, "a_map")
    log.mmap(2, X, 16 * P, "b_map")  # impossible if thread 1's munmap was logged before it acted: stale
    log.munmap(1, X, 16 * P, "a_unmap", before=True)
    a = analyze(log.close())
    assert a.reordered == {} and len(stale(a)) == 1


def test_map_fixed_over_a_range_another_thread_just_unmapped(tmp_path: Path) -> None:
    log = Log(tmp_path / "e.jsonl")
    log.mmap(1, X, 16 * P, "a_map")
    log.munmap(1, X + 4 * P, 4 * P, "a_unmap", before=True)
    log.mmap(2, X + 4 * P, 4 * P, "b_fixed", flags=0x32)  # MAP_FIXED, after thread 1 handed the range over
    a = analyze(log.close())
    assert live_by(a) == {"a_map": 12 * P, "b_fixed": 4 * P}
    assert stale(a) == [] and a.reordered == {}


def test_release_before_with_arguments_the_kernel_refuses(tmp_path: Path) -> None:
    log = Log(tmp_path / "e.jsonl")
    log.mmap(1, X, 16 * P, "a_map")
    log.munmap(1, X + 1, P, "a_unmap", before=True)  # EINVAL: not page-aligned
    log.munmap(1, X, 0, "a_unmap", before=True)  # EINVAL: zero length
    log.munmap(1, X + 8 * P, 8 * P, "a_unmap", before=True)
    a = analyze(log.close())
    assert live_by(a) == {"a_map": 8 * P}
    assert a.by_syscall == {"munmap": 3, "mmap": 1} and a.warnings == []


def test_without_munmap_traced_the_warning_says_so(tmp_path: Path) -> None:
    log = Log(tmp_path / "e.jsonl")
    log.mmap(1, X, 16 * P, "a_map")
    log.mmap(1, X, 16 * P, "a_map")
    path = log.close()
    path.write_text(path.read_text().replace('["mmap","munmap","mremap","brk"]', '["mmap"]', 1))
    [w] = stale(analyze(path))
    assert w.endswith("Cause: munmap and mremap were not traced (add -s munmap)")


# ---------------------------------------------------------------------------------------------------------------
# real threads under real GDB: exact live bytes, 20 rounds out of 20 (fixtures/src/race.c)

LIVE_RE = re.compile(r"^LIVE round=(\d+) bytes=(\d+)$", re.M)
TOTAL_RE = re.compile(r"^LIVE total=(\d+) rounds=(\d+) threads=(\d+)$", re.M)


def _truth(out: str) -> tuple[dict[int, int], int]:
    rounds = {int(r): int(n) for r, n in LIVE_RE.findall(out)}
    total = TOTAL_RE.search(out)
    assert total and len(rounds) == int(total[2]) == 20, out[-500:]
    return rounds, int(total[1])


def _check_exact(capture: Path, out: str) -> None:
    truth, total = _truth(out)
    a = analyze(capture)
    got: dict[int, int] = {}
    for s in a.stacks:
        depth = sum(1 for f in s.frames if f.function == "round_frame")
        if depth:
            got[depth] = got.get(depth, 0) + s.live_bytes
    exact = [r for r in truth if got.get(r) == truth[r]]
    assert len(exact) == 20, f"exact in {len(exact)} of 20 rounds: got {got}, true {truth}"
    assert sum(got.values()) == total
    assert not [w for w in a.warnings if "still held" in w], a.warnings
    # the log keeps the order by itself for every munmap: none had to be moved (mremaps may be, see replay.py)
    assert "munmap" not in a.reordered, a.reordered
    recs = [json.loads(ln) for ln in (capture / "events.jsonl").read_text().splitlines()]
    munmaps = [r for r in recs if r.get("name") == "munmap"]
    assert len(munmaps) >= 20 * 16 * 4 and all(r["when"] == "before" and r["ret"] is None for r in munmaps)
    assert recs[0]["format"] == "sysbreak-events/3"


@pytest.mark.gdb
@pytest.mark.parametrize("stop_mode", ["all-stop", "non-stop"])
def test_sixteen_threads_racing_exact_live_bytes(fixture_paths: FixturePaths, tmp_path: Path, stop_mode: str) -> None:
    cap = tmp_path / "cap"
    extra = ["--non-stop"] if stop_mode == "non-stop" else []
    res = run_sysbreak("run", *extra, "-q", "-o", cap, "--", fixture_paths.build / "race", timeout=180)
    assert res.returncode == 0, res.stderr
    _check_exact(cap, res.stdout)


@pytest.mark.gdb
def test_sixteen_threads_racing_exact_live_bytes_attached(
    fixture_paths: FixturePaths, spawn: Spawn, tmp_path: Path
) -> None:
    proc = spawn([fixture_paths.build / "race", "-w"])
    proc.wait_lines(1, prefix="READY")
    cap = tmp_path / "cap"
    res = run_sysbreak("attach", proc.pid, "-q", "-o", cap, timeout=180)
    assert res.returncode == 0, res.stderr
    assert proc.popen.wait(timeout=30) == 0
    proc.wait_lines(1, prefix="LIVE total")
    _check_exact(cap, "\n".join(proc.lines) + "\n")
