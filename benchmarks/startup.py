"""Start-up: whole `sysbreak` commands as a user types them, against `objdump -d FILE | grep syscall`.

Each row times the real entry point (.venv/bin/sysbreak) from exec to exit, interleaved with objdump in the same
run, medians of --repeat (at least 5: a start-up is short and this machine is shared). `sites` runs with a fresh,
empty SYSBREAK_CACHE_DIR each time (a cold cache: the ELF file is read and disassembled), then once more warm.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

from benchmarks.common import Config, Row, fmt_s, median, run_timed, verdict

LIBC = "/lib/x86_64-linux-gnu/libc.so.6"
TARGET_SITES = 0.5  # x objdump -d libc.so.6 | grep syscall, for the whole `sysbreak sites libc.so.6` command


def sysbreak_cmd() -> list[str]:
    script = Path(sys.executable).with_name("sysbreak")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "from sysbreak.cli import main; main()"]


def run(cfg: Config) -> list[Row]:
    section = "startup"
    repeat = 1 if cfg.quick else max(cfg.repeat, 5)
    libc = os.path.realpath(LIBC)
    if not os.path.exists(libc):
        return [Row(section, "sysbreak sites libc.so.6", "n/a", note=f"{LIBC} not present")]
    tmp = Path(tempfile.mkdtemp(prefix="startup-"))
    sb = sysbreak_cmd()
    helps: list[float] = []
    versions: list[float] = []
    cold: list[float] = []
    warm: list[float] = []
    objdump: list[float] = []
    python: list[float] = []
    try:
        for r in range(repeat):
            cache = tmp / f"cache-{r}"
            env = dict(os.environ, SYSBREAK_CACHE_DIR=str(cache))
            t = run_timed(["bash", "-c", 'objdump -d "$1" | grep -c syscall', "_", libc], timeout=cfg.timeout)
            objdump.append(t.seconds)
            t = run_timed([*sb, "sites", libc], timeout=cfg.timeout, env=env)
            if t.rc != 0:
                return [Row(section, "sysbreak sites libc.so.6", "n/a", note=(t.stderr.strip() or "failed")[-120:])]
            cold.append(t.seconds)
            warm.append(run_timed([*sb, "sites", libc], timeout=cfg.timeout, env=env).seconds)
            helps.append(run_timed([*sb, "--help"], timeout=cfg.timeout).seconds)
            versions.append(run_timed([*sb, "--version"], timeout=cfg.timeout).seconds)
            python.append(run_timed([sys.executable, "-c", "pass"], timeout=cfg.timeout).seconds)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    obj, c, w, py = median(objdump), median(cold), median(warm), median(python)
    note = f"median of {repeat}; `python -c pass` takes {fmt_s(py)}"
    return [
        Row(section, "objdump -d libc.so.6 | grep syscall", fmt_s(obj), note=f"median of {repeat}, same run"),
        Row(
            section,
            "sysbreak sites libc.so.6 (cold cache, whole command)",
            fmt_s(c),
            f"{c / obj:.2f}x objdump",
            f"<= {TARGET_SITES}x objdump",
            verdict(c / obj <= TARGET_SITES),
            note=note,
        ),
        Row(section, "sysbreak sites libc.so.6 (warm cache)", fmt_s(w), f"{w / obj:.2f}x objdump", note=note),
        Row(section, "sysbreak --help", fmt_s(median(helps)), note=note),
        Row(section, "sysbreak --version", fmt_s(median(versions)), note=note),
    ]
