"""The C fixture programs (fixtures/, built by ``make -C fixtures``): built once per test process."""

from __future__ import annotations

import functools
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent
BUILD = ROOT / "fixtures" / "build"


@functools.cache
def build_fixtures() -> Path:
    """``make -s -C fixtures`` (once per process; make itself skips what is up to date); returns the build dir.
    A failed build fails with make's own output."""
    res = subprocess.run(["make", "-s", "-C", str(ROOT / "fixtures")], capture_output=True, text=True, check=False)
    if res.returncode != 0:
        raise RuntimeError(f"make -C fixtures failed:\n{res.stdout}\n{res.stderr}")
    return BUILD
