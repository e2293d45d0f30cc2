"""Shared pieces of the benchmark harness: paths, timed child processes, the result rows, machine facts."""

from __future__ import annotations

import contextlib
import datetime
import os
import platform
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
WORKLOAD = ROOT / "fixtures" / "build" / "workload"
NOT_BUILT = "n/a (not built yet)"


class NotBuilt(Exception):
    """A piece of sysbreak the benchmark needs has not landed yet."""


@dataclass
class Row:
    """One line of the result table."""

    section: str
    measure: str
    value: str
    ratio: str = ""
    target: str = ""
    verdict: str = ""  # PASS, MISS or "" (no target)
    note: str = ""


@dataclass
class Config:
    quick: bool
    repeat: int
    baseline_repeat: int = 1  # the gdb baselines take about a minute each on the default workload
    calls: int = 200_000
    maps: int = 2_000
    depth: int = 20
    timeout: float = 180.0
    threads: tuple[int, ...] = (1, 8)
    event_maps: tuple[int, int] = (100, 400)
    exhaustive_every: int = 20  # K generic calls between two mappings
    exhaustive_maps: int = 100
    report_events: int = 1_000_000
    report_snapshots: int = 100
    rows: list[Row] = field(default_factory=list)

    @classmethod
    def make(cls, quick: bool, repeat: int | None, baseline_repeat: int | None = None) -> Config:
        if quick:
            return cls(
                quick=True,
                repeat=repeat or 1,
                calls=2_000,
                maps=20,
                timeout=60.0,
                threads=(1,),
                event_maps=(10, 30),
                exhaustive_every=10,
                exhaustive_maps=10,
                report_events=20_000,
                report_snapshots=10,
            )
        return cls(quick=False, repeat=repeat or 3, baseline_repeat=baseline_repeat or 1)


@dataclass
class Timed:
    seconds: float
    rc: int | None  # None: killed at the timeout
    stdout: str
    stderr: str
    cpu: float = 0.0  # user + system CPU seconds of the command and every descendant it waited for

    @property
    def timed_out(self) -> bool:
        return self.rc is None


def run_timed(cmd: list[str], *, timeout: float, env: dict[str, str] | None = None, cwd: Path | None = None) -> Timed:
    """Run ``cmd`` in its own session; at the timeout kill its whole process group (gdb, strace, the workload)."""
    t = time.perf_counter()
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu0 = ru.ru_utime + ru.ru_stime
    proc = subprocess.Popen(
        cmd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=cwd,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=timeout)
        rc: int | None = proc.returncode
    except subprocess.TimeoutExpired:
        _kill_group(proc)
        out, err = proc.communicate()
        rc = None
    dt = time.perf_counter() - t
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = ru.ru_utime + ru.ru_stime - cpu0
    _kill_group(proc)  # anything the command left behind in its group (a detached gdb, a stray inferior)
    return Timed(dt, rc, out, err, cpu)


def _kill_group(proc: subprocess.Popen[str]) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    if proc.poll() is None:
        proc.wait()


def median(xs: list[float]) -> float:
    return statistics.median(xs)


def p95(xs: list[float]) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, max(0, round(0.95 * (len(s) - 1))))]


def fmt_s(seconds: float) -> str:
    return f"{seconds:.3f} s" if seconds < 10 else f"{seconds:.1f} s"


def fmt_us(us: float) -> str:
    return f"{us:.0f} us" if us >= 10 else f"{us:.1f} us"


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def ensure_workload() -> None:
    subprocess.run(["make", "-s", "-C", str(ROOT / "fixtures"), "build/workload"], check=True)


def sysbreak_cmd() -> list[str]:
    exe = Path(sys.executable).parent / "sysbreak"
    if exe.exists():
        return [str(exe)]
    found = shutil.which("sysbreak")
    if found:
        return [found]
    return [sys.executable, "-c", "import sys; from sysbreak.cli import main; sys.argv[0] = 'sysbreak'; main()"]


def _first_line(cmd: list[str]) -> str:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.SubprocessError):
        return "?"
    return out.splitlines()[0].strip() if out else "?"


def machine() -> dict[str, str]:
    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        load = Path("/proc/loadavg").read_text().split()[:3]
    except OSError:
        load = ["?"]
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": cpu,
        "cores": str(os.cpu_count()),
        "kernel": platform.release(),
        "gdb": _first_line(["gdb", "--version"]),
        "strace": _first_line(["strace", "-V"]),
        "python": platform.python_version(),
        "load": " ".join(load),
    }
