"""How long a newly forked child is stopped before it runs, when 8 workers fork at once, under ``run -f``.

``python -m benchmarks --only forkstop`` (or ``python -m benchmarks.forkstop [--repeat N] [--spares 0,1,8]``).

``fixtures/py/mp_pool.py 8``: ``multiprocessing.Pool(8)`` with the ``fork`` start method; each child prints how long
it was stopped between its parent's ``fork`` call and its own first Python code (``os.register_at_fork``), then
waits for the others and maps through raw ``syscall(SYS_mmap)``. Run natively and under ``sysbreak run -f
--spare-gdbs N`` for several N (the pool of GDBs started ahead for new children, driver/tree.py), interleaved;
the longest stop of the 8 children, median of the runs. Also: ``held_s`` (meta.json: the hand-over's part, until
the child's own GDB holds it) and the private memory (RssAnon) of one spare GDB.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks.common import ROOT, Config, Row

POOL = ROOT / "fixtures" / "py" / "mp_pool.py"
PYTHON = "/usr/bin/python3.11"
WORKERS = 8


def _sysbreak() -> list[str]:
    script = Path(sys.executable).with_name("sysbreak")
    return [str(script)] if script.exists() else [sys.executable, "-c", "from sysbreak.cli import main; main()"]


def measure(spares: int | None) -> tuple[float, float, int]:
    """(longest child stop s, longest held_s, children seen); ``spares`` None: native."""
    with tempfile.TemporaryDirectory(prefix="sb-forkstop-") as tmp:
        cap = Path(tmp) / "cap"
        argv = [PYTHON, str(POOL), str(WORKERS)]
        if spares is not None:
            argv = [*_sysbreak(), "run", "-f", "--spare-gdbs", str(spares), "-s", "mmap", "--exhaustive", "-i",
                    "0", "-q", "-o", str(cap), "--", *argv]  # fmt: skip
        out = subprocess.run(argv, capture_output=True, text=True, timeout=600).stdout
        stops = [float(ln.split()[2]) for ln in out.splitlines() if ln.startswith("FORKSTOP ")]
        held = 0.0
        if spares is not None:
            procs = json.loads((cap / "meta.json").read_text()).get("processes", [])
            held = max((p.get("held_s") or 0.0 for p in procs), default=0.0)
    return (max(stops) if stops else float("nan")), held, len(stops)


def spare_rss_kb() -> int | None:
    """RssAnon of one GDB started and loaded as a spare (no target)."""
    from sysbreak.driver import gdbenv
    from sysbreak.driver.session import CaptureOptions, launch_gdb

    with tempfile.TemporaryDirectory(prefix="sb-spare-") as tmp:
        mi = launch_gdb(gdbenv.find_gdb(None), Path(tmp), CaptureOptions())
        try:
            for line in Path(f"/proc/{mi.pid}/status").read_text().splitlines():
                if line.startswith("RssAnon:"):
                    return int(line.split()[1])
        finally:
            mi.close()
    return None


def rows(results: dict[int | None, list[tuple[float, float, int]]], rss: int | None) -> list[Row]:
    out = []
    for spares, runs in results.items():
        stop = statistics.median(r[0] for r in runs)
        seen = min(r[2] for r in runs)
        name = "native" if spares is None else f"run -f --spare-gdbs {spares}"
        note = f"{WORKERS} workers forked at once (Pool); median of {len(runs)}; {seen}/{WORKERS} reported"
        if spares is not None:
            note += f"; longest held_s {statistics.median(r[1] for r in runs):.2f} s"
        out.append(Row("forkstop", f"{name}: longest child stop", f"{stop:.3f} s", note=note))
    if rss is not None:
        out.append(Row("forkstop", "one spare GDB: private memory", f"{rss / 1024:.1f} MB", note="RssAnon"))
    return out


def run(cfg: Config) -> list[Row]:
    variants: list[int | None] = [None, 1, WORKERS]
    results: dict[int | None, list[tuple[float, float, int]]] = {v: [] for v in variants}
    for _ in range(cfg.repeat):
        for v in variants:  # interleaved: the machine's noise spreads over every variant
            results[v].append(measure(v))
    return rows(results, spare_rss_kb())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.forkstop", description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--spares", default=f"1,{WORKERS}", help="comma-separated --spare-gdbs values")
    args = ap.parse_args(argv)
    variants: list[int | None] = [None, *(int(x) for x in args.spares.split(","))]
    results: dict[int | None, list[tuple[float, float, int]]] = {v: [] for v in variants}
    for _ in range(args.repeat):
        for v in variants:
            results[v].append(measure(v))
    for r in rows(results, spare_rss_kb()):
        print(f"{r.measure:45s} {r.value:>12s}  {r.note}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
