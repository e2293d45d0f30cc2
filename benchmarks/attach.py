"""Attaching to a PyTorch CPU process without stalling it, seen from the target's side.

The target (benchmarks/torch_target.py) runs a native heartbeat thread (fixtures/build/libsbheartbeat.so) that
ticks every 1 ms and logs every gap over 2 ms: in all-stop mode every stop halts that thread too, so the gaps are
the pauses the process saw. Per run: start the target, `sysbreak attach PID`, wait until it is armed, let the
target map and unmap a 64 MiB tensor every 100 ms (captured events), make it dlopen libucs (it brings libucm and
libnuma, libraries with syscall sites: they get armed), Ctrl-C sysbreak. Rows (medians over the runs):

* attach pause: the longest heartbeat gap from the launch of `sysbreak attach` until 0.3 s after it armed;
* armed, cold / warm: from the launch of `sysbreak attach` to the moment it resumed the target armed (meta.json's
  ``t0``), with an empty scan cache (cold) or the cache the cold run left (warm);
* later pauses: the longest gap around the dlopen, around each captured allocation, and at the detach;
* GDB's peak RSS: VmHWM of the GDB process at the end of the capture;
* `import torch` under `sysbreak run` vs natively: the import time measured inside the program (warm cache).

Every gap includes the 1 ms period and the scheduling noise of this shared machine: the "native" row gives the
longest gap the same target shows with nothing attached, over the same length of time.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.common import ROOT, Config, Row, fmt_s, median, run_timed, sysbreak_cmd, verdict

TARGET = Path(__file__).resolve().parent / "torch_target.py"
HEARTBEAT = ROOT / "fixtures" / "build" / "libsbheartbeat.so"
ATTACH_PAUSE_S = 0.100
LATER_PAUSE_S = 0.020
ARMED_COLD_S = 2.0
ARMED_WARM_S = 0.5
IMPORT_RATIO = 1.5
GDB_RSS_MB = 300.0
SECTION = "attach (torch)"


def torch_available() -> bool:
    return importlib.util.find_spec("torch") is not None


def dlopen_library() -> str:
    """A library the target has not loaded and whose dependencies have syscall sites (so they get armed): libucs
    (it brings libucm and libnuma)."""
    for cand in ("/usr/lib/x86_64-linux-gnu/libucs.so.0", "/usr/lib/libucs.so.0"):
        if os.path.exists(cand):
            return cand
    return str(ROOT / "fixtures" / "build" / "libsbstripped.so")


class Target:
    """One torch_target.py process and its control directory."""

    def __init__(self, tmp: Path, use_torch: bool = True) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="target-", dir=tmp))
        args = [sys.executable, str(TARGET), str(self.dir)] + ([] if use_torch else ["--no-torch"])
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self.info: dict[str, Any] = {}

    def wait_ready(self, timeout: float = 180.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        ready = self.dir / "ready"
        while not ready.exists():
            if self.proc.poll() is not None:
                err = (self.proc.stderr.read().decode(errors="replace") if self.proc.stderr else "").strip()
                raise RuntimeError(f"the torch target exited {self.proc.returncode}: {err[-200:]}")
            if time.monotonic() > deadline:
                raise RuntimeError("the torch target did not get ready")
            time.sleep(0.05)
        self.info = json.loads(ready.read_text())
        return self.info

    @property
    def pid(self) -> int:
        return int(self.info["pid"])

    def gaps(self) -> list[tuple[float, float]]:
        out = []
        with contextlib.suppress(OSError):
            for line in (self.dir / "heartbeat.log").read_text().splitlines():
                a, _, b = line.partition(" ")
                with contextlib.suppress(ValueError):
                    out.append((float(a), float(b)))
        return out

    def max_gap(self, lo: float, hi: float) -> float:
        """The longest logged gap overlapping [lo, hi] (the 1 ms period when none was logged)."""
        return max((b - a for a, b in self.gaps() if b >= lo and a <= hi), default=0.001)

    def allocs(self) -> list[tuple[float, float]]:
        out = []
        with contextlib.suppress(OSError):
            for line in (self.dir / "allocs.log").read_text().splitlines():
                a, _, b = line.partition(" ")
                with contextlib.suppress(ValueError):
                    out.append((float(a), float(b)))
        return out

    def dlopen(self, lib: str, timeout: float = 60.0) -> tuple[float, float]:
        (self.dir / "dlopen").write_text(lib)
        done = self.dir / "dlopened"
        deadline = time.monotonic() + timeout
        while not done.exists() or not done.read_text().strip():
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise RuntimeError("the torch target did not dlopen the library")
            time.sleep(0.01)
        a, b = done.read_text().split()
        return float(a), float(b)

    def stop(self) -> None:
        (self.dir / "stop").touch()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def _meta(out: Path) -> dict[str, Any]:
    try:
        data = json.loads((out / "meta.json").read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _vm_hwm_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except (OSError, ValueError):
        return None
    return None


def one_attach(tmp: Path, cache: Path, timeout: float = 180.0) -> dict[str, Any]:
    """One attach run; returns its measures (seconds, MB) or {"error": why}."""
    target = Target(tmp)
    res: dict[str, Any] = {}
    sb: subprocess.Popen[bytes] | None = None
    try:
        info = target.wait_ready()
        res["threads"] = info.get("threads")
        time.sleep(1.0)
        t_quiet = time.monotonic()
        time.sleep(1.0)
        res["native_gap"] = target.max_gap(t_quiet, time.monotonic())
        out = tmp / f"capture-{os.getpid()}-{time.monotonic_ns()}"
        env = dict(os.environ, SYSBREAK_CACHE_DIR=str(cache))
        t_launch = time.monotonic()
        sb = subprocess.Popen(
            [*sysbreak_cmd(), "attach", str(target.pid), "-o", str(out), "--quiet"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=env,
            start_new_session=True,
        )
        first_t0 = None
        armed_t = None
        deadline = time.monotonic() + timeout
        while armed_t is None:
            if sb.poll() is not None:
                err = (sb.stderr.read().decode(errors="replace") if sb.stderr else "").strip()
                return {"error": f"sysbreak attach exited {sb.returncode}: {err[-150:]}"}
            if time.monotonic() > deadline:
                return {"error": "sysbreak attach did not arm in time"}
            meta = _meta(out)
            if "t0" in meta:
                if first_t0 is None:
                    first_t0 = meta["t0"]
                elif meta["t0"] != first_t0:
                    armed_t = float(meta["t0"])
                    res["modules"] = len(meta.get("modules") or [])
                    res["gdb_pid"] = meta.get("gdb_pid")
            time.sleep(0.01)
        res["armed"] = armed_t - t_launch
        time.sleep(1.5)  # allocations every 100 ms: captured events
        res["attach_pause"] = target.max_gap(t_launch, armed_t + 0.3)
        d0, d1 = target.dlopen(dlopen_library())
        res["dlopen_pause"] = target.max_gap(d0 - 0.002, d1 + 0.002)
        res["dlopen_s"] = d1 - d0
        time.sleep(1.0)
        allocs = [(a, b) for a, b in target.allocs() if a > armed_t + 0.4 and not (d0 - 0.05 <= b and a <= d1 + 0.05)]
        res["event_pause"] = max((target.max_gap(a, b) for a, b in allocs), default=None)
        res["allocs"] = len(allocs)
        if res.get("gdb_pid"):
            res["gdb_rss_mb"] = _vm_hwm_mb(int(res["gdb_pid"]))
        t_int = time.monotonic()
        res["allocs_armed"] = len([1 for a, b in target.allocs() if a > armed_t and b < t_int])
        os.kill(sb.pid, signal.SIGINT)
        try:
            sb.wait(60)
        except subprocess.TimeoutExpired:
            return {**res, "error": "sysbreak attach did not stop within 60 s of Ctrl-C"}
        time.sleep(0.2)
        res["detach_pause"] = target.max_gap(t_int, time.monotonic())
        res["events"] = _events_of(out / "events.jsonl", 64 << 20)
        if target.proc.poll() is not None:
            return {**res, "error": f"the target died (status {target.proc.returncode})"}
        return res
    except RuntimeError as exc:
        return {"error": str(exc)}
    finally:
        if sb is not None and sb.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(sb.pid, signal.SIGKILL)
            sb.wait()
        target.stop()


def _events_of(log: Path, length: int) -> int:
    """How many mmap calls of at least ``length`` bytes the log holds (the target's tensors; glibc adds a page)."""
    n = 0
    with contextlib.suppress(OSError), open(log, encoding="utf-8") as fh:
        for line in fh:
            if '"syscall"' not in line:
                continue
            with contextlib.suppress(ValueError):
                rec = json.loads(line)
                if rec.get("name") == "mmap" and (rec.get("args") or [0, 0])[1] >= length:
                    n += 1
    return n


_IMPORT = "import time; t = time.perf_counter(); import torch; print('IMPORT', time.perf_counter() - t)"


def _import_time(cmd: list[str], timeout: float) -> tuple[float | None, float, str]:
    t = run_timed(cmd, timeout=timeout)
    for line in t.stdout.splitlines():
        if line.startswith("IMPORT "):
            return float(line.split()[1]), t.seconds, ""
    why = "timeout" if t.timed_out else (t.stderr.strip().splitlines() or ["?"])[-1][:100]
    return None, t.seconds, why


def import_rows(cfg: Config, tmp: Path, cache: Path) -> list[Row]:
    native_cmd = [sys.executable, "-c", _IMPORT]
    env_cache = dict(os.environ, SYSBREAK_CACHE_DIR=str(cache))
    native: list[float] = []
    under: list[float] = []
    walls: list[float] = []
    why = ""
    for r in range(cfg.repeat + 1):
        out = tmp / f"import-{r}"
        shutil.rmtree(out, ignore_errors=True)
        cmd = ["env", f"SYSBREAK_CACHE_DIR={cache}", *sysbreak_cmd(), "run", "-o", str(out), "--quiet", "--"]
        got, wall, why = _import_time([*cmd, *native_cmd], cfg.timeout)
        if r == 0:  # the first run fills the scan cache
            continue
        if got is None:
            break
        under.append(got)
        walls.append(wall)
        n, _, _ = _import_time(native_cmd, cfg.timeout)
        if n is not None:
            native.append(n)
    del env_cache
    if not under or not native:
        return [Row(SECTION, "import torch under sysbreak run", "n/a", target=f"<= {IMPORT_RATIO}x native", note=why)]
    ratio = median(under) / median(native)
    return [
        Row(SECTION, "import torch, native", fmt_s(median(native)), note=f"median of {len(native)}, in-process"),
        Row(
            SECTION,
            "import torch under sysbreak run",
            fmt_s(median(under)),
            f"{ratio:.2f}x native",
            f"<= {IMPORT_RATIO}x native",
            verdict(ratio <= IMPORT_RATIO),
            f"median of {len(under)}, warm scan cache; whole `sysbreak run` {fmt_s(median(walls))}",
        ),
    ]


def _ms(s: float | None) -> str:
    return "n/a" if s is None else f"{s * 1000:.1f} ms"


def run(cfg: Config) -> list[Row]:
    if not torch_available():
        return [Row(SECTION, "(all rows)", "n/a", note="torch is not installed (make bench installs torch==2.13.0)")]
    if not HEARTBEAT.exists():
        subprocess.run(["make", "-s", "-C", str(ROOT / "fixtures"), "build/libsbheartbeat.so"], check=True)
    tmp = Path(tempfile.mkdtemp(prefix="attach-", dir=ROOT / "benchmarks" / "results"))
    try:
        return _rows(cfg, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _rows(cfg: Config, tmp: Path) -> list[Row]:
    cold: list[dict[str, Any]] = []
    warm: list[dict[str, Any]] = []
    errors: list[str] = []
    warm_cache = tmp / "cache-warm"
    for _ in range(cfg.repeat):
        cache = Path(tempfile.mkdtemp(prefix="cache-cold-", dir=tmp))
        for kind, dest, c in (("cold", cold, cache), ("warm", warm, cache)):
            got = one_attach(tmp, c, cfg.timeout)
            print(f"  attach {kind}: {json.dumps(got)}", file=sys.stderr, flush=True)
            if "error" in got:
                errors.append(got["error"])
            if "armed" in got:
                dest.append(got)
        if warm_cache.exists():
            shutil.rmtree(cache, ignore_errors=True)
        else:
            cache.rename(warm_cache)
    rows: list[Row] = []
    runs = cold + warm
    if not runs:
        return [Row(SECTION, "attach", "n/a", note=(errors or ["?"])[0][:160])]

    def med(key: str, among: list[dict[str, Any]] = runs) -> float | None:
        vals = [r[key] for r in among if isinstance(r.get(key), (int, float))]
        return median(vals) if vals else None

    n = f"median of {len(runs)} ({len(cold)} cold + {len(warm)} warm)"
    mods = med("modules")
    rows.append(
        Row(
            SECTION,
            "target",
            f"{mods:.0f} modules" if mods else "?",
            note=f"torch_target.py: {med('threads') or '?':.0f} threads, heartbeat every 1 ms",
        )
    )
    rows.append(Row(SECTION, "longest gap, nothing attached", _ms(med("native_gap")), note="the machine's own noise"))
    pause = med("attach_pause")
    rows.append(
        Row(
            SECTION,
            "longest pause during attach",
            _ms(pause),
            target=f"<= {ATTACH_PAUSE_S * 1000:.0f} ms",
            verdict=verdict(pause is not None and pause <= ATTACH_PAUSE_S),
            note=n,
        )
    )
    for kind, among, goal in (("cold", cold, ARMED_COLD_S), ("warm", warm, ARMED_WARM_S)):
        m = med("armed", among)
        rows.append(
            Row(
                SECTION,
                f"attach to armed, {kind}",
                "n/a" if m is None else fmt_s(m),
                target=f"<= {goal} s",
                verdict=verdict(m is not None and m <= goal),
                note=f"median of {len(among)}; {'empty' if kind == 'cold' else 'filled'} scan cache",
            )
        )
    for key, what in (
        ("dlopen_pause", "pause at a dlopen (libucs+libucm+libnuma)"),
        ("event_pause", "pause per captured event (64 MiB tensor)"),
        ("detach_pause", "pause at the detach (Ctrl-C)"),
    ):
        m = med(key)
        is_goal = key != "detach_pause"
        rows.append(
            Row(
                SECTION,
                what,
                _ms(m),
                target=f"<= {LATER_PAUSE_S * 1000:.0f} ms" if is_goal else "",
                verdict=verdict(m is not None and m <= LATER_PAUSE_S) if is_goal else "",
                note=n,
            )
        )
    ev = med("events")
    al = med("allocs_armed")
    rows.append(
        Row(SECTION, "tensor mmaps captured", f"{ev or 0:.0f}", note=f"the target made {al or 0:.0f} while armed")
    )
    rss = med("gdb_rss_mb")
    rows.append(
        Row(
            SECTION,
            "GDB peak RSS",
            "n/a" if rss is None else f"{rss:.0f} MB",
            target=f"<= {GDB_RSS_MB:.0f} MB",
            verdict=verdict(rss is not None and rss <= GDB_RSS_MB),
            note="VmHWM of gdb at the end of the capture",
        )
    )
    if errors:
        rows.append(Row(SECTION, "failed runs", str(len(errors)), note=errors[0][:160]))
    rows += import_rows(cfg, tmp, warm_cache)
    return rows
