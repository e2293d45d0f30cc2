"""python -m benchmarks [--quick] [--repeat N] [--only overhead,event,scan,report,startup,unwind,attach] [--output FILE]

Measures sysbreak against native, strace -k and gdb baselines, prints one table with a PASS/MISS column per
target and the machine it ran on, and writes the same as markdown to benchmarks/results/latest.md.
Parts of sysbreak that have not landed yet show "n/a (not built yet)"; nothing here raises for them.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

from benchmarks import attach, event, forkstop, overhead, procs, report, scan, startup, unwind
from benchmarks.common import RESULTS, Config, Row, ensure_workload, machine

SECTIONS: dict[str, Callable[[Config], list[Row]]] = {
    "overhead": overhead.run,
    "event": event.run,
    "scan": scan.run,
    "report": report.run,
    "startup": startup.run,
    "unwind": unwind.run,
    "procs": procs.run,
    "forkstop": forkstop.run,
    "attach": attach.run,
}
HEAD = ("section", "measure", "value", "ratio", "target", "result", "note")


def _cells(r: Row) -> tuple[str, ...]:
    return (r.section, r.measure, r.value, r.ratio, r.target, r.verdict, r.note)


def plain_table(rows: list[Row]) -> str:
    cells = [HEAD, *(_cells(r) for r in rows)]
    widths = [max(len(c[i]) for c in cells) for i in range(len(HEAD))]
    lines = ["  ".join(c[i].ljust(widths[i]) for i in range(len(HEAD))).rstrip() for c in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def markdown_table(rows: list[Row]) -> str:
    out = ["| " + " | ".join(HEAD) + " |", "|" + "---|" * len(HEAD)]
    for r in rows:
        out.append("| " + " | ".join(c.replace("|", "\\|") for c in _cells(r)) + " |")
    return "\n".join(out)


def bytecode_as_installed() -> None:
    """sysbreak (and GDB's Python, which inherits the environment) run with their bytecode cached, as from an
    installed package: a PYTHONDONTWRITEBYTECODE in the caller's environment would make every timed command
    compile its modules again, in the driver and in GDB's `source sysbreak.py` (measured on `sysbreak run` of an
    empty workload at load 9: 0.75-0.79 s of CPU without bytecode, 0.56-0.68 s with it; wall 1.7-2.1 s against
    1.2-1.5 s). The bytecode goes under benchmarks/results/pycache, not into the source tree."""
    import os

    if os.environ.pop("PYTHONDONTWRITEBYTECODE", None) is not None:
        os.environ.setdefault("PYTHONPYCACHEPREFIX", str(RESULTS / "pycache"))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.split("\n\n")[1])
    ap.add_argument("--quick", action="store_true", help="tiny sizes, one repeat: a smoke run of every part")
    ap.add_argument("--repeat", type=int, default=None, help="repeats per measurement (default 3, --quick 1)")
    ap.add_argument(
        "--baseline-repeat", type=int, default=None, help="repeats of the two slow gdb baselines (default 1)"
    )
    ap.add_argument("--only", default="", help="comma-separated parts: " + ",".join(SECTIONS))
    ap.add_argument("--output", type=Path, default=RESULTS / "latest.md", help="markdown file to write")
    args = ap.parse_args(argv)
    only = [s.strip() for s in args.only.split(",") if s.strip()] or list(SECTIONS)
    unknown = [s for s in only if s not in SECTIONS]
    if unknown:
        ap.error(f"unknown part(s): {', '.join(unknown)} (choose from {', '.join(SECTIONS)})")
    cfg = Config.make(args.quick, args.repeat, args.baseline_repeat)
    RESULTS.mkdir(parents=True, exist_ok=True)
    bytecode_as_installed()
    mach = machine()
    started = time.perf_counter()
    rows: list[Row] = []
    if {"overhead", "event"} & set(only):
        try:
            ensure_workload()
        except Exception as exc:  # no compiler, no libucm: the workload parts cannot run
            print(f"benchmarks: cannot build fixtures/build/workload: {exc}", file=sys.stderr)
            rows += [
                Row(s, "workload", "n/a", note="fixtures/build/workload did not build")
                for s in ("overhead", "event")
                if s in only
            ]
            only = [s for s in only if s not in ("overhead", "event")]
    for name in only:
        t = time.perf_counter()
        print(f"benchmarks: {name} ...", file=sys.stderr, flush=True)
        try:
            got = SECTIONS[name](cfg)
        except Exception as exc:  # a part that breaks must not take the others with it
            traceback.print_exc()
            got = [Row(name, "(error)", "n/a", note=f"{type(exc).__name__}: {exc}"[:160])]
        rows += got
        print(f"benchmarks: {name} done in {time.perf_counter() - t:.0f} s", file=sys.stderr, flush=True)
    total = time.perf_counter() - started
    head = (
        f"sysbreak benchmarks{' (--quick)' if cfg.quick else ''}, repeat {cfg.repeat}, {mach['date']}, "
        f"{total:.0f} s\nmachine: {mach['cpu']}, {mach['cores']} cores, kernel {mach['kernel']}, "
        f"{mach['gdb']}, {mach['strace']}, python {mach['python']}, load {mach['load']} at start"
    )
    print(head)
    print(plain_table(rows))
    missed = [r for r in rows if r.verdict == "MISS"]
    passed = [r for r in rows if r.verdict == "PASS"]
    print(f"targets: {len(passed)} PASS, {len(missed)} MISS")
    md = [
        "# sysbreak benchmarks",
        "",
        *(f"    {line}" for line in head.splitlines()),
        "",
        markdown_table(rows),
        "",
        f"Targets: {len(passed)} PASS, {len(missed)} MISS. Produced by `python -m benchmarks"
        f"{' --quick' if cfg.quick else ''}` (benchmarks/README.md says what each row measures).",
        "",
    ]
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text("\n".join(md), encoding="utf-8")
    args.output.with_suffix(".json").write_text(
        json.dumps(
            {
                "machine": mach,
                "quick": cfg.quick,
                "repeat": cfg.repeat,
                "seconds": total,
                "rows": [asdict(r) for r in rows],
            },
            indent=1,
        ),
        encoding="utf-8",
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
