"""Start-up: whole `sysbreak` commands as a user types them, against `objdump -d FILE | grep syscall`.

Each row times the real entry point (.venv/bin/sysbreak) from exec to exit, interleaved with objdump in the same
run, medians of --repeat (at least 5: a start-up is short and this machine is shared). `sites` runs with a fresh,
empty SYSBREAK_CACHE_DIR each time (a cold cache: the ELF file is read and disassembled), then once more warm.
Besides wall time, each row gives the CPU time (user + system, of the command and its children): on a loaded
machine the wall time of a short command mostly measures the run queue, its CPU time does not.
"""

from __future__ import annotations

import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import Config, Row, fmt_s, median, verdict

LIBC = "/lib/x86_64-linux-gnu/libc.so.6"
TARGET_SITES = 0.5  # x objdump -d libc.so.6 | grep syscall, for the whole `sysbreak sites libc.so.6` command


def sysbreak_cmd() -> list[str]:
    script = Path(sys.executable).with_name("sysbreak")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "from sysbreak.cli import main; main()"]


def timed(cmd: list[str], timeout: float, env: dict[str, str] | None = None) -> tuple[float, float, int]:
    """(wall seconds, CPU seconds of it and its children, exit status) of one run of ``cmd``."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    proc = subprocess.run(
        cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, timeout=timeout
    )
    wall = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, proc.returncode


def run(cfg: Config) -> list[Row]:
    section = "startup"
    repeat = 1 if cfg.quick else max(cfg.repeat, 5)
    libc = os.path.realpath(LIBC)
    if not os.path.exists(libc):
        return [Row(section, "sysbreak sites libc.so.6", "n/a", note=f"{LIBC} not present")]
    tmp = Path(tempfile.mkdtemp(prefix="startup-"))
    sb = sysbreak_cmd()
    names = ("objdump", "cold", "warm", "help", "version", "python")
    wall: dict[str, list[float]] = {n: [] for n in names}
    cpu: dict[str, list[float]] = {n: [] for n in names}
    try:
        for r in range(repeat):
            env = dict(os.environ, SYSBREAK_CACHE_DIR=str(tmp / f"cache-{r}"))
            cmds = {
                "objdump": (["bash", "-c", 'objdump -d "$1" | grep -c syscall', "_", libc], None),
                "cold": ([*sb, "sites", libc], env),
                "warm": ([*sb, "sites", libc], env),
                "help": ([*sb, "--help"], None),
                "version": ([*sb, "--version"], None),
                "python": ([sys.executable, "-c", "pass"], None),
            }
            for name, (cmd, e) in cmds.items():
                w, c, rc = timed(cmd, cfg.timeout, e)
                if rc != 0 and name != "objdump":
                    return [Row(section, f"sysbreak {' '.join(cmd[len(sb) :])}", "n/a", note=f"exit status {rc}")]
                wall[name].append(w)
                cpu[name].append(c)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    w = {n: median(v) for n, v in wall.items()}
    c = {n: median(v) for n, v in cpu.items()}

    def note(name: str) -> str:
        return f"CPU {fmt_s(c[name])}; median of {repeat}"

    ratio = w["cold"] / w["objdump"]
    cpu_ratio = c["cold"] / c["objdump"] if c["objdump"] > 0 else float("nan")
    return [
        Row(section, "objdump -d libc.so.6 | grep syscall", fmt_s(w["objdump"]), note=note("objdump") + ", same run"),
        Row(
            section,
            "sysbreak sites libc.so.6 (cold cache, whole command)",
            fmt_s(w["cold"]),
            f"{ratio:.2f}x objdump",
            f"<= {TARGET_SITES}x objdump",
            verdict(ratio <= TARGET_SITES),
            note=f"{note('cold')}; CPU ratio {cpu_ratio:.2f}x",
        ),
        Row(
            section,
            "sysbreak sites libc.so.6 (warm cache)",
            fmt_s(w["warm"]),
            f"{w['warm'] / w['objdump']:.2f}x objdump",
            note=note("warm"),
        ),
        Row(section, "sysbreak --help", fmt_s(w["help"]), note=note("help")),
        Row(section, "sysbreak --version", fmt_s(w["version"]), note=note("version")),
        Row(section, "python -c pass (the floor)", fmt_s(w["python"]), note=note("python")),
    ]
