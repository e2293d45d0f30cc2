"""Unwind: sysbreak.unwind's offline unwind of real stops, against GDB's own unwind of the same stops.

Real gdb stops each fixture at a syscall (tests/oracle_dump.py records GDB's frames, the registers, the raw stack
and the maps, and times GDB walking the same stack again with its frame cache flushed: GDB's per-event cost with
symbols loaded). Then, in fresh interpreters, the same stops are unwound offline and symbolised:

* cold: nothing cached anywhere (every module read, its CFI indexed, the compile units the pcs need read);
* warm from disk: a new process with the build-id cache the cold run wrote (what a report process pays);
* warm: the same Unwinder again (what each further event with known pcs costs): CPU time, median.

Also the cold costs per module: symbols + CFI index (``load_module``), every FDE decoded, and the pickle the
cache keeps, for libc, libpython3.11 and (when torch is installed) libtorch_cpu.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks.common import ROOT, Config, Row, median, run_timed

DUMP = ROOT / "tests" / "oracle_dump.py"
BUILD = ROOT / "fixtures" / "build"
PYTHON = next((p for p in ("/usr/bin/python3.11", "/usr/bin/python3") if os.path.exists(p)), sys.executable)

STOPS = {
    "libucm (ucm_leak)": (
        ["break leak_region", "run", "catch syscall mmap", "continue"],
        [str(BUILD / "ucm_leak"), "2"],
    ),
    "20-deep recursion": (["break main", "run", "break mmap", "continue"], [str(BUILD / "recurse")]),
    "C++ templates": (["break main", "run", "catch syscall mmap", "continue"], [str(BUILD / "templates")]),
    "CPython mmap module": (
        ["break new_mmap_object", "run", "catch syscall mmap", "continue"],
        [PYTHON, "-c", "import mmap; mmap.mmap(-1, 4096)"],
    ),
}

PROBE = r"""
import json, sys, time
from sysbreak.unwind import ModuleCache, Unwinder
import sysbreak.maps, sysbreak.unwind.dwarf, sysbreak.unwind.demangle as dm  # first-use imports, not the cache
dm.demangle("_Z1fv")
recs = [json.loads(l) for l in open(sys.argv[1])]
cache_dir, persist, repeat = sys.argv[2], sys.argv[3] == "1", int(sys.argv[4])
modules = ModuleCache(cache_dir, persist=persist)
out = []
for rec in recs:
    stack = bytes.fromhex(rec["stack"])
    c, w = time.process_time(), time.perf_counter()
    u = Unwinder(rec["maps"], exe=rec["exe"], modules=modules)
    res = u.unwind(rec["regs"], stack, rec["stack_start"])
    first_cpu, first_wall = time.process_time() - c, time.perf_counter() - w
    warm = []
    for _ in range(repeat):
        c = time.process_time()
        for _ in range(20):
            u.unwind(rec["regs"], stack, rec["stack_start"])
        warm.append((time.process_time() - c) / 20)
    ok = [(f.pc, f.function, f.file, f.line, f.inline) for f in res.frames] == [
        (f["pc"], f["function"], f["file"], f["line"], f["inline"]) for f in rec["frames"]]
    out.append({"first_cpu": first_cpu, "first_wall": first_wall, "warm": sorted(warm)[len(warm) // 2],
                "frames": len(res.frames), "physical": len(res.physical), "same": ok})
t = time.perf_counter()
modules.save()
print(json.dumps({"stops": out, "save_s": time.perf_counter() - t, "built": modules.built,
                  "loaded": modules.loaded_from_disk}))
"""

MODULE_PROBE = r"""
import json, os, pickle, sys, time
from sysbreak.unwind.modules import load_module
path = sys.argv[1]
c, w = time.process_time(), time.perf_counter()
m = load_module(path, "bench")
load_cpu, load_wall = time.process_time() - c, time.perf_counter() - w
n = len(m.eh_frame) if m.eh_frame is not None else 0
blob = pickle.dumps(m, protocol=pickle.HIGHEST_PROTOCOL)
c = time.process_time()
pickle.loads(blob)
unpickle = time.process_time() - c
full = full_blob = full_unpickle = None
if n < 20000:
    c = time.process_time()
    m.eh_frame.decode_all()
    full = time.process_time() - c
    full_blob = len(pickle.dumps(m, protocol=pickle.HIGHEST_PROTOCOL))
print(json.dumps({"load_cpu": load_cpu, "load_wall": load_wall, "fdes": n, "symbols": len(m.symbols),
                  "decode_all_cpu": full, "pickle_bytes": len(blob), "unpickle_cpu": unpickle,
                  "full_pickle_bytes": full_blob}))
"""


def _record(tmp: Path, timeout: float, times: int, quick: bool) -> tuple[Path, list[str], list[dict[str, object]]]:
    out = tmp / "stops.jsonl"
    names: list[str] = []
    for name, (cmds, program) in list(STOPS.items())[: 1 if quick else None]:
        argv = ["gdb", "-nx", "-q", "-batch", "-ex", "set pagination off", "-ex", "set breakpoint pending on"]
        argv += ["-ex", "set debuginfod enabled off", "-ex", f"source {DUMP}"]
        for c in [*cmds, f"sb-oracle-dump {out} {times}"]:
            argv += ["-ex", c]
        argv += ["-ex", "kill", "--args", *program]
        before = len(out.read_text().splitlines()) if out.exists() else 0
        run_timed(argv, timeout=timeout)
        after = len(out.read_text().splitlines()) if out.exists() else 0
        if after == before + 1:
            names.append(name)
    recs = [json.loads(line) for line in out.read_text().splitlines()] if out.exists() else []
    return out, names, recs


def _probe(code: str, args: list[str], timeout: float) -> dict[str, object]:
    t = run_timed([sys.executable, "-c", code, *args], timeout=timeout, env=dict(os.environ))
    if t.rc != 0:
        return {"error": (t.stderr.strip().splitlines() or ["timeout" if t.timed_out else "?"])[-1][:160]}
    try:
        return dict(json.loads(t.stdout.strip().splitlines()[-1]))
    except (ValueError, IndexError):
        return {"error": "no result"}


def _us(s: float) -> str:
    return f"{s * 1e6:.0f} us"


def run(cfg: Config) -> list[Row]:
    section = "unwind"
    try:
        import sysbreak.unwind  # noqa: F401
    except ImportError:
        return [Row(section, "offline unwind", "n/a (not built yet)")]
    subprocess.run(["make", "-s", "-C", str(ROOT / "fixtures")], capture_output=True, check=False)
    tmp = Path(tempfile.mkdtemp(prefix="unwind-", dir=ROOT / "benchmarks" / "results"))
    rows: list[Row] = []
    try:
        out, names, recs = _record(tmp, cfg.timeout, 5 if not cfg.quick else 1, cfg.quick)
        if not recs:
            return [Row(section, "offline unwind", "n/a", note="gdb recorded no stop")]
        repeat = max(cfg.repeat, 3)
        cold: list[dict] = []
        disk: list[dict] = []
        for r in range(cfg.repeat):
            cache = tmp / f"cache-{r}"
            c = _probe(PROBE, [str(out), str(cache), "1", str(repeat)], cfg.timeout)
            d = _probe(PROBE, [str(out), str(cache), "1", str(repeat)], cfg.timeout)
            if "error" in c or "error" in d:
                return [Row(section, "offline unwind", "n/a", note=str(c.get("error") or d.get("error")))]
            cold.append(c)
            disk.append(d)
        for i, name in enumerate(names):
            rec = recs[i]
            walks = [float(x) for x in rec.get("gdb_walks_s", [])]  # type: ignore[union-attr]
            gdb_walk = median(walks) if walks else None
            c_cpu = median([float(x["stops"][i]["first_cpu"]) for x in cold])  # type: ignore[index]
            c_wall = median([float(x["stops"][i]["first_wall"]) for x in cold])  # type: ignore[index]
            d_cpu = median([float(x["stops"][i]["first_cpu"]) for x in disk])  # type: ignore[index]
            w_cpu = median([float(x["stops"][i]["warm"]) for x in disk])  # type: ignore[index]
            st = disk[0]["stops"][i]  # type: ignore[index]
            same = all(x["stops"][i]["same"] for x in cold + disk)  # type: ignore[index]
            frames = f"{st['frames']} frames ({st['physical']} real)"
            rows.append(Row(section, f"{name}: GDB's own unwind (frame cache flushed)",
                            _us(gdb_walk) if gdb_walk else "n/a", note=frames + ", symbols loaded"))  # fmt: skip
            rows.append(Row(section, f"{name}: offline, warm (CPU)", _us(w_cpu),
                            f"{w_cpu / gdb_walk:.2f}x GDB" if gdb_walk else "", "<= 1x GDB's",
                            ("PASS" if gdb_walk and w_cpu <= gdb_walk else "MISS") if gdb_walk else "",
                            note="identical to GDB's frames" if same else "FRAMES DIFFER from GDB's"))  # fmt: skip
            rows.append(Row(section, f"{name}: offline, warm from disk cache (new process, CPU)", _us(d_cpu),
                            note="the process's first unwind: loads the cache entries it needs"))  # fmt: skip
            rows.append(Row(section, f"{name}: offline, cold (nothing cached)", f"{c_wall:.2f} s",
                            note=f"CPU {c_cpu:.2f} s: modules read, CFI indexed, DWARF units read"))  # fmt: skip
        files = ["/lib/x86_64-linux-gnu/libc.so.6", "/usr/lib/x86_64-linux-gnu/libpython3.11.so.1.0"]
        try:
            import torch  # noqa: F401 - only where it is installed

            files.append(str(Path(torch.__file__).parent / "lib" / "libtorch_cpu.so"))
        except ImportError:
            rows.append(Row(section, "libtorch_cpu.so", "n/a", note="torch not installed"))
        for f in files if not cfg.quick else files[:1]:
            got = [_probe(MODULE_PROBE, [f], cfg.timeout) for _ in range(cfg.repeat)]
            if any("error" in g for g in got):
                rows.append(Row(section, Path(f).name, "n/a", note=str(got[0].get("error"))))
                continue
            load = median([float(g["load_cpu"]) for g in got])  # type: ignore[arg-type]
            g0 = got[0]
            what = f"{g0['symbols']} symbols, {g0['fdes']} FDEs, {Path(f).stat().st_size >> 20} MB file"
            rows.append(Row(section, f"{Path(f).name}: symbols + CFI index, cold (CPU)", f"{load * 1e3:.0f} ms",
                            note=what))  # fmt: skip
            if g0["decode_all_cpu"] is not None:
                full = median([float(g["decode_all_cpu"]) for g in got])  # type: ignore[arg-type]
                rows.append(Row(section, f"{Path(f).name}: every FDE decoded (CPU)", f"{full * 1e3:.0f} ms",
                                note=f"never needed: FDEs are decoded when a pc needs them (all: pickle "
                                     f"{int(g0['full_pickle_bytes']) >> 10} KiB)"))  # type: ignore[call-overload]  # fmt: skip
            unp = median([float(g["unpickle_cpu"]) for g in got])  # type: ignore[arg-type]
            rows.append(Row(section, f"{Path(f).name}: load its cache entry (CPU)", f"{unp * 1e3:.1f} ms",
                            note=f"pickle {int(g0['pickle_bytes']) >> 10} KiB"))  # type: ignore[call-overload]  # fmt: skip
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return rows
