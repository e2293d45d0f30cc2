"""Building the bundled demo program (``sysbreak/demo/leaky_server.c``) into a cache directory."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from sysbreak.errors import ExitCode, SysbreakError, os_error
from sysbreak.files import atomic_write

CFLAGS = ["-O1", "-g", "-fno-omit-frame-pointer"]
UCM_HEADER = "/usr/include/ucm/api/ucm.h"


@dataclass
class DemoBuild:
    binary: Path
    with_ucm: bool
    warning: str = ""


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "sysbreak" / "demo"


def source_text() -> bytes:
    return resources.files("sysbreak").joinpath("demo", "leaky_server.c").read_bytes()


def _compile(cc: str, src: Path, out: Path, extra: list[str]) -> subprocess.CompletedProcess[str]:
    tmp = out.with_name(out.name + f".tmp{os.getpid()}")
    res = subprocess.run(
        [cc, *CFLAGS, "-o", str(tmp), str(src), *extra], capture_output=True, text=True, check=False, timeout=120
    )
    if res.returncode == 0:
        os.replace(tmp, out)
    else:
        tmp.unlink(missing_ok=True)
    return res


def build(directory: Path | None = None) -> DemoBuild:
    """Compile the demo (once per source version) with libucm, or without it (``-DSB_NO_UCM``) when it is absent."""
    cc = shutil.which("gcc") or shutil.which("cc")
    if cc is None:
        raise SysbreakError("sysbreak demo needs a C compiler to build its program: apt-get install gcc", ExitCode.TOOL)
    text = source_text()
    key = hashlib.sha256(text + " ".join(CFLAGS).encode()).hexdigest()[:12]
    d = directory or cache_dir()
    try:
        d.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise os_error(exc, f"cannot create the demo's cache directory {d}") from None
    src = d / f"leaky_server-{key}.c"
    if not src.exists():
        try:
            atomic_write(src, text)  # another sysbreak demo may be compiling it right now
        except OSError as exc:
            raise os_error(exc, f"cannot write the demo's source to {src}") from None
    with_ucm = d / f"leaky_server-{key}"
    without = d / f"leaky_server-{key}-noucm"
    if with_ucm.exists():
        return DemoBuild(with_ucm, True)
    why = "libucm's header is not installed"
    if os.path.exists(UCM_HEADER):
        res = _compile(cc, src, with_ucm, ["-lucm", "-lucs"])
        if res.returncode == 0:
            return DemoBuild(with_ucm, True)
        why = "linking with libucm failed: " + (res.stderr.strip().splitlines() or ["?"])[-1]
    warning = (
        f"{why}, so the demo maps memory with plain mmap() instead of through UCX's libucm "
        "(apt-get install libucx-dev for the real thing)"
    )
    if without.exists():
        return DemoBuild(without, False, warning)
    res = _compile(cc, src, without, ["-DSB_NO_UCM"])
    if res.returncode != 0:
        last = (res.stderr.strip().splitlines() or ["?"])[-1]
        raise SysbreakError(f"could not compile the demo program with {cc}: {last}", ExitCode.TOOL)
    return DemoBuild(without, False, warning)
