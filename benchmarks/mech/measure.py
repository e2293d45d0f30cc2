"""Phase-1 mechanism measurements: what one GDB breakpoint hit costs, mechanism by mechanism.

    python -m benchmarks.mech.measure [--n 10000] [--repeat 5] [--only a_py_rax,c_cond_local]

Builds benchmarks/mech/mech.c, then for every variant (a gdb command file in benchmarks/mech/gdb/) runs

    gdb -nx -batch -x common.gdb -x VARIANT.gdb --args mech N DEPTH THREADS

once with N calls and once with 0 calls (same gdb, same setup, nothing hit), and reports
(t(N) - t(0)) / hits - native cost per call, as the median over --repeat pairs (the pairs are interleaved
across variants so machine noise spreads evenly).  Prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
import timeit
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
GDB_DIR = HERE / "gdb"
BUILD = HERE.parent / "results" / "build"
PROG = BUILD / "mech"


@dataclass
class Variant:
    name: str
    what: str
    threads: int = 1
    stops_per_call: int = 1  # catch syscall stops twice per call (entry and return)
    samples: list[float] = field(default_factory=list)


VARIANTS = [
    Variant("base_local", "no breakpoint (floor for local variants)"),
    Variant("a0_py_nothing", "Python stop() that reads nothing, returns False"),
    Variant("a_py_rax", "a) Python stop() reads $rax, returns False"),
    Variant("b_py_stack", "b) Python stop(): 7 regs + frame walk (23 frames: pc, name, find_sal)"),
    Variant("b_py_pcs", "b) pcs only: 7 regs + frame walk reading frame.pc()"),
    Variant("b_py_names", "b) 7 regs + frame walk reading pc + name (no find_sal)"),
    Variant("b_py_mem", "7 regs + one 8 KiB read_memory(rsp) instead of a frame walk"),
    Variant("b_py_stack_json", "b) + json.dumps + write + flush per hit"),
    Variant("b_py_bt", "b') 7 regs + gdb.execute('bt', to_string=True)"),
    Variant("c_cond_local", "c) break *ADDR if $rax == 9 (false), gdb evaluates"),
    Variant("c_commands", "naive: break *ADDR + commands silent/continue"),
    Variant("e_ai_on_cond", "e) c) with always-inserted on"),
    Variant("e_ai_on_py", "e) a) with always-inserted on"),
    Variant("h_two_py", "h) two Python bps (syscall insn + insn after), per call", stops_per_call=2),
    Variant("h_two_cond", "h) two native false conditions, per call", stops_per_call=2),
    Variant("g_catch_cond", "g) catch syscall getppid, condition 0 (per syscall)"),
    Variant("g_catch_cmds", "g) catch syscall getppid + commands silent/continue (per syscall)"),
    Variant("g_catch_other", "g) catch syscall mmap while the loop calls getppid"),
    Variant("d_base_remote", "gdbserver (stdio pipe), no breakpoint (floor for d)"),
    Variant("d_cond_remote_host", "d) gdbserver, false condition, condition-evaluation host"),
    Variant("d_cond_remote_target", "d) gdbserver, false condition, condition-evaluation target"),
    Variant("d_py_remote", "d) gdbserver, Python stop() reads $rax"),
    Variant("base_local_mt8", "8 threads, no breakpoint (floor for f)", threads=8),
    Variant("a_py_rax_mt8", "f) a) all-stop, 8 threads hitting", threads=8),
    Variant("f_nonstop_py_mt8", "f) a) non-stop, 8 threads hitting", threads=8),
    Variant("c_cond_local_mt8", "f) c) all-stop, 8 threads hitting", threads=8),
    Variant("f_nonstop_cond_mt8", "f) c) non-stop, 8 threads hitting", threads=8),
    Variant("base_nonstop_mt8", "non-stop, 8 threads, no breakpoint (floor)", threads=8),
    Variant("i_after_gdb", "i) sysbreak probe after the syscall (on ret), GDB's step-over"),
    Variant("i_after_emulated", "i) the same, stepped past by emulation (sysbreak.emulate)"),
    Variant("i_after_gdb_mt8", "i) GDB's step-over, all-stop, 8 threads hitting", threads=8),
    Variant("i_after_emulated_mt8", "i) emulated, all-stop, 8 threads hitting", threads=8),
    Variant("i_after_gdb_nonstop_mt8", "i) GDB's step-over, non-stop, 8 threads hitting", threads=8),
    Variant("i_after_emulated_nonstop_mt8", "i) emulated, non-stop, 8 threads hitting", threads=8),
]


def floor_of(v: Variant) -> str | None:
    if v.name.startswith("base"):
        return None
    if v.name.startswith("d_"):
        return "d_base_remote"
    if v.threads > 1:
        return "base_nonstop_mt8" if "nonstop" in v.name else "base_local_mt8"
    return "base_local"


def build() -> None:
    BUILD.mkdir(parents=True, exist_ok=True)
    src = HERE / "mech.c"
    if not PROG.exists() or PROG.stat().st_mtime < src.stat().st_mtime:
        cmd = ["gcc", "-g", "-O1", "-fno-omit-frame-pointer", "-Wall", "-pthread", "-o", str(PROG), str(src)]
        subprocess.run(cmd, check=True)


def gdb_file(v: Variant) -> str:
    stem = v.name.removesuffix("_mt8")
    return f"{stem}.gdb"


def command(v: Variant, n_per_thread: int, depth: int) -> list[str]:
    return [
        "gdb", "-nx", "-batch", "-x", "common.gdb", "-x", gdb_file(v),
        "--args", str(PROG), str(n_per_thread), str(depth), str(v.threads),
    ]  # fmt: skip


def timed(cmd: list[str], cwd: Path | None = None) -> float:
    t = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=300)
    dt = time.perf_counter() - t
    if proc.returncode != 0 or (cmd[0] == "gdb" and "exited normally" not in proc.stdout + proc.stderr):
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    return dt


def native_per_call(n: int, repeat: int) -> float:
    diffs = []
    for _ in range(repeat):
        t0 = timed([str(PROG), "0", "20", "1"])
        tn = timed([str(PROG), str(n * 10), "20", "1"])
        diffs.append((tn - t0) / (n * 10))
    return statistics.median(diffs)


def micro() -> dict[str, float]:
    """Per-event costs measured in plain Python (no gdb): json.dumps of one event record."""
    frames = [
        {"pc": 0x7FFFF7E00000 + i, "module": "/lib/x86_64-linux-gnu/libc.so.6", "offset": 1054759 + i,
         "function": f"descend_{i}", "file": None, "line": None}
        for i in range(20)
    ]  # fmt: skip
    site = {"pc": 140737353661915, "module": "/usr/lib/libucm.so.0", "offset": 40411, "kind": "call"}
    event = {"type": "syscall", "seq": 17, "t": 8813.002, "tid": 4250, "nr": 9, "name": "mmap",
             "args": [0, 1048576, 3, 34, 18446744073709551615, 0], "ret": 140737346076672, "stack": 3,
             "site": site}  # fmt: skip
    stack = {"type": "stack", "id": 3, "frames": frames, "python": []}
    enc = json.JSONEncoder(separators=(",", ":"), check_circular=False).encode
    out = {}
    for label, obj in (("json event (interned stack)", event), ("json stack record, 20 frames", stack)):
        n = 20000
        out[label] = min(timeit.repeat(lambda o=obj: enc(o), number=n, repeat=5)) / n * 1e6
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.mech.measure")
    ap.add_argument("--n", type=int, default=10000, help="breakpoint hits per run (split across threads)")
    ap.add_argument("--depth", type=int, default=20)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--only", default="", help="comma-separated variant names (floors are added)")
    args = ap.parse_args(argv)
    build()
    variants = VARIANTS
    if args.only:
        want = set(args.only.split(","))
        want |= {floor_of(v) for v in VARIANTS if v.name in want} - {None}
        variants = [v for v in VARIANTS if v.name in want]
    zero: dict[str, list[float]] = {v.name: [] for v in variants}
    full: dict[str, list[float]] = {v.name: [] for v in variants}
    native = native_per_call(args.n, args.repeat)
    for r in range(args.repeat):
        for v in variants:
            per_thread = args.n // v.threads
            zero[v.name].append(timed(command(v, 0, args.depth), cwd=GDB_DIR))
            full[v.name].append(timed(command(v, per_thread, args.depth), cwd=GDB_DIR))
        print(f"repeat {r + 1}/{args.repeat} done", file=sys.stderr)
    print(f"native: {native * 1e6:.3f} us per call; N = {args.n} calls per run, depth {args.depth}, "
          f"median of {args.repeat} (t(N) - t(0)) pairs\n")  # fmt: skip
    print("| variant | what | us per call (minus native) | us per stop | min..max us/call | t(0) s |")
    print("|---|---|---:|---:|---|---:|")
    for v in variants:
        per = [(f - z) / args.n - native for f, z in zip(full[v.name], zero[v.name], strict=True)]
        med = statistics.median(per) * 1e6
        spc = 2 if v.name.startswith("g_catch") and v.name != "g_catch_other" else v.stops_per_call
        print(
            f"| {v.name} | {v.what} | {med:.1f} | {med / spc:.1f} | {min(per) * 1e6:.0f}..{max(per) * 1e6:.0f} "
            f"| {statistics.median(zero[v.name]):.2f} |"
        )
    print()
    for label, us in micro().items():
        print(f"- {label}: {us:.1f} us (plain python {sys.version.split()[0]})")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONDONTWRITEBYTECODE", "1")
    sys.exit(main())
