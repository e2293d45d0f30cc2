"""Scan: sysbreak.sites.scan() cold (fresh SYSBREAK_CACHE_DIR) and warm, against `objdump -d FILE | grep syscall`.

Each cold scan is timed twice: as a lone `sysbreak sites FILE` does it (numpy not imported: modules under 8 MB
are searched in pure Python), and with numpy already imported ("bulk"), as in an attach's pre-scan of a whole
process, where one big module has loaded it (sysbreak.elfscan.scanner.use_bulk). libtorch_cpu.so (torch 2.13,
434 MB) is scanned when torch is installed; objdump is not run on it (minutes for its 280 MB of code).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

from benchmarks.common import NOT_BUILT, ROOT, Config, Row, fmt_s, median, run_timed, verdict

FILES = (
    "/lib/x86_64-linux-gnu/libc.so.6",
    "/usr/lib/x86_64-linux-gnu/libpython3.11.so.1.0",
    "/usr/lib/x86_64-linux-gnu/libucm.so.0",
)
TARGET_COLD = 0.1  # x objdump
BIG = "libtorch_cpu.so"
TARGET_WARM_MS = 5.0

# Timed inside a fresh interpreter: only the scan() call, not the start-up or the imports. The ELF layer imports
# pyelftools on first use (a warm look-up never needs it): a cold probe imports it before the clock starts, and
# what that import costs, once per process, is its own row (IMPORT_PROBE).
PROBE = """
import json, sys, time
try:
    from sysbreak.sites import scan
    if sys.argv[2].startswith("cold"):
        from sysbreak.elfscan.elf import load_library
        load_library()
    if sys.argv[2] == "cold-bulk":
        from sysbreak.elfscan.scanner import load_bulk
        load_bulk()
except ImportError as exc:
    print(json.dumps({"error": "import: %s" % exc})); sys.exit(0)
t = time.perf_counter()
s = scan(sys.argv[1], cache=True)
dt = time.perf_counter() - t
print(json.dumps({"s": dt, "sites": len(s.sites)}))
"""


IMPORT_PROBE = """
import json, sys, time
import sysbreak.sites
t = time.perf_counter()
try:
    from sysbreak.elfscan.elf import load_library
    load_library()
except ImportError as exc:
    print(json.dumps({"error": "import: %s" % exc})); sys.exit(0)
print(json.dumps({"s": time.perf_counter() - t, "sites": 0}))
"""


def _probe(path: str, cache_dir: Path, timeout: float, kind: str = "warm", code: str = PROBE) -> dict[str, float | str]:
    env = dict(os.environ, SYSBREAK_CACHE_DIR=str(cache_dir))
    t = run_timed([sys.executable, "-c", code, path, kind], timeout=timeout, env=env)
    if t.rc != 0:
        return {"error": (t.stderr.strip().splitlines() or ["timeout" if t.timed_out else "?"])[-1][:120]}
    try:
        return dict(json.loads(t.stdout.strip().splitlines()[-1]))
    except (ValueError, IndexError):
        return {"error": "no result"}


def run(cfg: Config) -> list[Row]:
    rows: list[Row] = []
    tmp = Path(tempfile.mkdtemp(prefix="scan-", dir=ROOT / "benchmarks" / "results"))
    try:
        for f in FILES:
            rows.extend(_one(cfg, os.path.realpath(f), f, tmp))
        big = _libtorch_cpu()
        if big is not None:
            rows.extend(_big(cfg, big, tmp))
        rows.append(_import_row(cfg, tmp))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return rows


def _libtorch_cpu() -> str | None:
    import importlib.util

    spec = importlib.util.find_spec("torch")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / "lib" / BIG
    return str(path) if path.exists() else None


def _big(cfg: Config, path: str, tmp: Path) -> list[Row]:
    cold: list[float] = []
    warm: list[float] = []
    sites = "?"
    for r in range(cfg.repeat):
        cache = tmp / f"cache-big-{r}"
        c = _probe(path, cache, cfg.timeout, "cold")
        w = _probe(path, cache, cfg.timeout, "warm")
        if "error" in c or "error" in w:
            return [Row("scan", f"{BIG}: scan cold", "n/a", note=str(c.get("error") or w.get("error")))]
        cold.append(float(c["s"]))
        warm.append(float(w["s"]))
        sites = str(c["sites"])
    return [
        Row("scan", f"{BIG}: scan cold", fmt_s(median(cold)), note=f"{sites} sites; 434 MB, 280 MB of code (bulk)"),
        Row("scan", f"{BIG}: scan warm (new process)", f"{median(warm) * 1e3:.2f} ms"),
    ]


def _one(cfg: Config, path: str, label: str, tmp: Path) -> list[Row]:
    section = "scan"
    name = Path(label).name
    if not os.path.exists(path):
        return [Row(section, name, "n/a", note="file not present")]
    objdump: list[float] = []
    grep_lines = "?"
    for _ in range(cfg.repeat):
        t = run_timed(["bash", "-c", 'objdump -d "$1" | grep -c syscall', "_", path], timeout=cfg.timeout)
        objdump.append(t.seconds)
        grep_lines = t.stdout.strip() or grep_lines
    obj = median(objdump)
    cold: list[float] = []
    cold_bulk: list[float] = []
    warm: list[float] = []
    sites = "?"
    for r in range(cfg.repeat):
        cache = tmp / f"cache-{name}-{r}"
        b = _probe(path, tmp / f"cache-{name}-{r}-bulk", cfg.timeout, "cold-bulk")
        c = _probe(path, cache, cfg.timeout, "cold")
        w = _probe(path, cache, cfg.timeout, "warm")
        if "error" not in b:
            cold_bulk.append(float(b["s"]))
        if "error" in c or "error" in w:
            err = str(c.get("error") or w.get("error"))
            value = NOT_BUILT if "import" in err else "n/a"
            return [
                Row(section, f"{name}: objdump -d | grep syscall", fmt_s(obj), note=f"{grep_lines} lines"),
                Row(section, f"{name}: sysbreak.sites.scan", value, note=err),
            ]
        cold.append(float(c["s"]))
        warm.append(float(w["s"]))
        sites = str(c["sites"])
    cm, wm = median(cold), median(warm)
    bm = median(cold_bulk) if cold_bulk else None
    return [
        Row(section, f"{name}: objdump -d | grep syscall", fmt_s(obj), note=f"{grep_lines} matching lines"),
        Row(
            section,
            f"{name}: scan cold",
            fmt_s(cm),
            f"{cm / obj:.3f}x objdump",
            f"<= {TARGET_COLD}x objdump",
            verdict(cm / obj <= TARGET_COLD),
            note=f"{sites} sites",
        ),
        Row(
            section,
            f"{name}: scan cold, bulk (numpy loaded)",
            "n/a" if bm is None else fmt_s(bm),
            "" if bm is None else f"{bm / obj:.3f}x objdump",
            f"<= {TARGET_COLD}x objdump",
            "" if bm is None else verdict(bm / obj <= TARGET_COLD),
            note="as in an attach's pre-scan",
        ),
        Row(
            section,
            f"{name}: scan warm (new process)",
            f"{wm * 1e3:.2f} ms",
            f"{wm / obj:.4f}x objdump",
            f"<= {TARGET_WARM_MS:.0f} ms",
            verdict(wm * 1e3 <= TARGET_WARM_MS),
        ),
    ]


def _import_row(cfg: Config, tmp: Path) -> Row:
    name = "pyelftools import (once per process, cold scans only)"
    times: list[float] = []
    for _ in range(cfg.repeat):
        got = _probe("-", tmp / "unused", cfg.timeout, "import", IMPORT_PROBE)
        if "error" in got:
            return Row("scan", name, NOT_BUILT if "import" in str(got["error"]) else "n/a", note=str(got["error"]))
        times.append(float(got["s"]))
    return Row("scan", name, f"{median(times) * 1e3:.1f} ms", note="not in the cold rows; warm look-ups never pay it")
