"""Go: its own SYSCALL instructions, the number in AX through wrapper chains (issue 8).

fixtures/src/gomapper maps 20 x 1 MiB with ``syscall.Mmap`` and 1 MiB with ``golang.org/x/sys/unix.Mmap``; the Go
runtime maps its heap through ``runtime.sysMmap``. ``syscall.Mmap`` reaches the kernel in
``runtime/internal/syscall.Syscall6``, whose number is whatever its callers left in AX (Go's register ABI): no
constant at the site, so it is probed at the function's first instruction, where rax holds the number, and after
its SYSCALL for the result. Go is statically linked and runs on its own stacks; GDB unwinds them through the
DWARF Go emits, so the Go callers are on the stack.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
from conftest import Spawn, run_sysbreak
from gdbutil import BUILD, build_fixtures

from sysbreak import sites
from sysbreak.capture import read_events
from sysbreak.capture.schema import StackRecord

pytestmark = pytest.mark.gdb

MIB = 1 << 20


@pytest.fixture(scope="module")
def gomapper() -> Path:
    build_fixtures()
    return BUILD / "gomapper"


def test_scan_finds_the_go_sites(gomapper: Path) -> None:
    scan = sites.scan(str(gomapper), cache=False)
    by_symbol = {s.symbol: s for s in scan.sites}
    inner = by_symbol["runtime/internal/syscall.Syscall6"]
    assert inner.nr is None and not inner.uncovered
    assert inner.early_vaddr == inner.vaddr - (inner.symbol_offset or 0)  # its first instruction
    assert inner.early_reg == "rax" and inner.early_sp_delta == 0
    # where the kernel's rdi, rsi, rdx, r10, r8, r9 are at that instruction: Go's a1..a6 in BX, CX, DI, SI, R8, R9
    assert inner.early_args == ("rbx", "rcx", "rdi", "rsi", "r8", "r9")
    assert any(s.symbol == "runtime.sysMmap.abi0" and s.nr == 9 for s in scan.sites)
    # syscall.rawSyscallNoError (Getpid, Gettid...): MOVQ trap+0(FP), AX right before SYSCALL: the number is read
    # from its stack slot at the function's first instruction, the arguments from theirs
    (raw,) = [s for s in scan.sites if s.symbol == "syscall.rawSyscallNoError.abi0"]
    assert (raw.early_vaddr, raw.early_reg) == (raw.vaddr - (raw.symbol_offset or 0), "*sp+8")
    assert raw.early_args == ("*sp+16", "*sp+24", "*sp+32", "r10", "r8", "r9")
    assert [s for s in scan.sites if s.uncovered] == []
    (probe,) = [p for p in sites.plan(scan, [9]) if p.site is inner]
    assert probe.entry == inner.early_vaddr and probe.entry != inner.vaddr and probe.condition_nrs == (9,)


def _capture(out: Path, program: list[str], *extra: str) -> dict[str, Any]:
    res = run_sysbreak("run", "-o", out, "-q", "-s", "mmap", "-s", "munmap", *extra, "--", *program, timeout=60)
    assert res.returncode == 0, res.stderr
    stacks: dict[int, list[str | None]] = {  # through the format's reader: raw stacks are unwound there
        r.id: [f.function for f in r.frames] for r in read_events(out / "events.jsonl") if isinstance(r, StackRecord)
    }
    events = []
    for line in (out / "events.jsonl").read_text().splitlines():
        rec = json.loads(line)
        if rec.get("type") == "syscall":
            events.append({**rec, "functions": stacks[rec["stack"]]})
    return {"events": events, "stdout": res.stdout}


@pytest.mark.parametrize("mode", [(), ("--exhaustive",), ("--non-stop",)], ids=["callsite", "exhaustive", "non-stop"])
def test_go_mmaps_are_caught_with_the_go_caller_on_the_stack(
    tmp_path: Path, gomapper: Path, mode: tuple[str, ...]
) -> None:
    got = _capture(tmp_path / "cap", [str(gomapper), "-n", "20"], *mode)
    assert f"MAPPED {21 * MIB}" in got["stdout"]
    events = [e for e in got["events"] if e["name"] == "mmap"]
    via_syscall = [e for e in events if "main.mapWithSyscall" in e["functions"]]
    via_unix = [e for e in events if "main.mapWithUnix" in e["functions"]]
    assert len(via_syscall) == 20 and len(via_unix) == 1
    for e in via_syscall + via_unix:
        assert e["args"][:4] == [0, MIB, 3, 0x22] and e["ret"] > 0  # NULL, 1 MiB, READ|WRITE, PRIVATE|ANONYMOUS
        assert e["functions"][0] == "runtime/internal/syscall.Syscall6"
        assert e["functions"][-1] in ("main.main", "runtime.main", "runtime.goexit")
    assert "syscall.Mmap" in via_syscall[0]["functions"] and "golang.org/x/sys/unix.Mmap" in via_unix[0]["functions"]
    assert len({e["ret"] for e in via_syscall}) == 20
    # the runtime's own heap mappings, through runtime.sysMmap (a constant 9 at its SYSCALL)
    runtime = [e for e in events if e["functions"][0] == "runtime.sysMmap"]
    assert len(runtime) >= 10 and all(e["ret"] > 0 for e in runtime)
    assert "runtime.mallocinit" in {f for e in runtime for f in e["functions"]}
    assert len(events) == len(via_syscall) + len(via_unix) + len(runtime)


def test_strace_sees_no_more_go_mmaps_than_the_capture(tmp_path: Path, gomapper: Path) -> None:
    """The same program under strace: every mmap strace sees has a captured event (the runtime may make one
    more or less from run to run, and a few more under load, so each tool counts its own run: the user's 21 are
    exact)."""
    res = subprocess.run(
        ["strace", "-f", "-qq", "-e", "trace=mmap", "-o", str(tmp_path / "st"), str(gomapper), "-n", "20"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert res.returncode == 0, res.stderr
    seen = [ln for ln in (tmp_path / "st").read_text().splitlines() if "mmap(" in ln]
    got = _capture(tmp_path / "cap", [str(gomapper), "-n", "20"])
    assert sum(e["name"] == "mmap" for e in got["events"]) >= len(seen) - 3
    assert sum(1 for ln in seen if f"mmap(NULL, {MIB}, PROT_READ|PROT_WRITE, MAP_PRIVATE|MAP_ANONYMOUS" in ln) >= 21


def test_attach_to_a_running_go_program(tmp_path: Path, gomapper: Path, spawn: Spawn) -> None:
    """Attached to a Go program that maps every 30 ms: its syscall.Mmap calls are caught, it runs on, and
    exits normally once sysbreak has left (no breakpoint byte left behind)."""
    proc = spawn([str(gomapper), "-n", "100", "-every-ms", "30"])
    proc.wait_lines(2, prefix="MAP")
    out = tmp_path / "cap"
    res = run_sysbreak("attach", proc.pid, "-q", "-s", "mmap", "--max-events", "5", "--duration", "20", "-o", out)
    assert res.returncode == 0, res.stderr
    got = [json.loads(ln) for ln in (out / "events.jsonl").read_text().splitlines()]
    stacks = {  # through the format's reader: raw stacks are unwound there
        r.id: [f.function for f in r.frames] for r in read_events(out / "events.jsonl") if isinstance(r, StackRecord)
    }
    events = [r for r in got if r.get("type") == "syscall"]
    assert len(events) == 5
    assert all("main.mapWithSyscall" in stacks[e["stack"]] and e["args"][1] == MIB for e in events)
    assert proc.popen.wait(timeout=30) == 0


def test_go_getpid_through_a_stack_slot_is_caught(tmp_path: Path, gomapper: Path) -> None:
    got = _capture(tmp_path / "cap", [str(gomapper), "-n", "1", "-getpid", "30"], "-s", "getpid")
    mine = [e for e in got["events"] if e["name"] == "getpid" and "syscall.Getpid" in e["functions"]]
    assert len(mine) == 30 and all(e["ret"] > 0 and "main.main" in e["functions"] for e in mine)
