"""Finding GDB, checking it can run sysbreak's extension, and the commands that load the extension into it."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import sysbreak
from sysbreak.errors import ExitCode, SysbreakError

#: what GDB prints when it was built without Python
NO_PYTHON_TEXT = "Python scripting is not supported in this copy of GDB"

#: the modules GDB's Python must be able to import, and the pip distribution that provides each
REQUIRED_MODULES = {"sysbreak": "sysbreak", "capstone": "capstone", "elftools": "pyelftools"}

_MISSING_RE = re.compile(r"No module named '([^']+)'")


def package_dir() -> Path:
    """The directory that holds the ``sysbreak`` package (``src/`` in a checkout, site-packages when installed)."""
    return Path(sysbreak.__file__).resolve().parent.parent


def repo_script() -> Path | None:
    """``gdb_scripts/sysbreak.py`` of the checkout this package runs from, if it runs from a checkout.

    ``$SYSBREAK_GDB_SCRIPT`` names another script to source instead (for developing the in-GDB layer)."""
    override = os.environ.get("SYSBREAK_GDB_SCRIPT")
    if override:
        return Path(override)
    candidate = package_dir().parent / "gdb_scripts" / "sysbreak.py"
    return candidate if candidate.is_file() else None


def gdb_python_path() -> list[str]:
    """The entries of this interpreter's ``sys.path`` that GDB's Python needs to import sysbreak and its deps."""
    entries = [str(package_dir())]
    for entry in sys.path:
        if not entry or not os.path.isdir(entry):
            continue
        if os.path.basename(entry) in ("site-packages", "dist-packages") and entry not in entries:
            entries.append(entry)
    return entries


def gdb_env(base: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ if base is None else base)
    env["SYSBREAK_PYTHONPATH"] = os.pathsep.join(gdb_python_path())
    # GDB must not pick up a PYTHONHOME/PYTHONPATH meant for another interpreter (e.g. our venv's)
    env.pop("PYTHONHOME", None)
    env.pop("PYTHONPATH", None)
    env.setdefault("LC_ALL", "C.UTF-8")
    return env


def _py_list(entries: list[str]) -> str:
    return "[" + ", ".join(repr(e) for e in entries) + "]"


def load_commands() -> list[str]:
    """The GDB CLI commands that load sysbreak's in-GDB extension: the checkout's script if there is one, else an
    import of ``sysbreak.gdb`` from the installed package."""
    script = repo_script()
    if script is not None:
        return [f"source {script}"]
    return [
        f"python import sys; sys.path[:0] = {_py_list(gdb_python_path())}; import sysbreak.gdb; sysbreak.gdb.register()"
    ]


def extension_available() -> bool:
    """Whether this installation has an in-GDB extension to load at all."""
    if repo_script() is not None:
        return True
    return (package_dir() / "sysbreak" / "gdb" / "__init__.py").is_file()


def find_gdb(path: str | None) -> str:
    """Resolve ``--gdb`` (or ``gdb`` on PATH) to an executable, or raise a one-line error."""
    if path:
        resolved = shutil.which(path) if os.sep not in path else path
        if resolved is None or not os.path.exists(resolved):
            raise SysbreakError(
                f"gdb was not found at '{path}': give the path of a GDB built with Python (--gdb PATH), "
                "or install one (Debian/Ubuntu: apt-get install gdb)",
                ExitCode.TOOL,
            )
        if os.path.isdir(resolved) or not os.access(resolved, os.X_OK):
            raise SysbreakError(f"'{resolved}' is not an executable program: give a GDB with --gdb PATH", ExitCode.TOOL)
        return resolved
    found = shutil.which("gdb")
    if found is None:
        raise SysbreakError(
            "gdb was not found on PATH: install it (Debian/Ubuntu: apt-get install gdb) or give its path with --gdb",
            ExitCode.TOOL,
        )
    return found


def gdb_argv(gdb: str) -> list[str]:
    return [gdb, "--interpreter=mi3", "-nx", "-q"]


@dataclass
class GdbProbe:
    """What a quick batch run of GDB found out."""

    gdb: str
    version: str  # first line of `gdb --version`
    python: str | None  # version of GDB's Python, None when GDB has no Python
    missing: list[str]  # modules GDB's Python could not import
    error: str  # anything else that went wrong (empty when fine)


def _run_batch(gdb: str, commands: list[str], timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
    argv = [gdb, "-nx", "-q", "-batch"]
    for cmd in commands:
        argv += ["-ex", cmd]
    return subprocess.run(
        argv, capture_output=True, text=True, timeout=timeout, env=gdb_env(), stdin=subprocess.DEVNULL, check=False
    )


def probe_gdb(gdb: str) -> GdbProbe:
    """Run GDB once in batch mode: its version, its Python, and whether that Python imports what sysbreak needs."""
    probe = GdbProbe(gdb=gdb, version="", python=None, missing=[], error="")
    try:
        ver = subprocess.run(
            [gdb, "--version"], capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL, check=False
        )
    except OSError as exc:
        probe.error = f"cannot run '{gdb}': {exc.strerror or exc}"
        return probe
    except subprocess.TimeoutExpired:
        probe.error = f"'{gdb} --version' did not finish within 30 s"
        return probe
    probe.version = (ver.stdout.splitlines() or [""])[0].strip()
    if ver.returncode != 0 or "gdb" not in (ver.stdout + ver.stderr).lower():
        probe.error = f"'{gdb}' does not look like GDB ('--version' printed: {probe.version or ver.stderr.strip()!r})"
        return probe
    path = gdb_python_path()
    code = (
        "import sys; print('SBPY', sys.version.split()[0]); "
        f"sys.path[:0] = {_py_list(path)}\n"
        "for m in " + repr(list(REQUIRED_MODULES)) + ":\n"
        " try: __import__(m)\n"
        " except Exception as e: print('SBMISSING', m, type(e).__name__, e)\n"
    )
    try:
        res = _run_batch(gdb, [f"python exec({code!r})"])
    except subprocess.TimeoutExpired:
        probe.error = f"'{gdb}' did not finish a one-line Python command within 30 s"
        return probe
    out = res.stdout + res.stderr
    if NO_PYTHON_TEXT in out:
        return probe
    for line in out.splitlines():
        if line.startswith("SBPY "):
            probe.python = line.split()[1]
        elif line.startswith("SBMISSING "):
            probe.missing.append(line.split()[1])
    if probe.python is None:
        probe.error = f"GDB's Python did not run: {out.strip()[-300:]!r}"
    return probe


def _probe_stamp(gdb: str) -> Path | None:
    """Where a successful probe of this GDB (same binary, same Python path, same sysbreak) is remembered."""
    import hashlib

    from sysbreak.sites import cache_dir

    exe = shutil.which(gdb) if os.sep not in gdb else gdb
    if not exe:
        return None
    try:
        st = os.stat(exe)
    except OSError:
        return None
    ident = repr((os.path.realpath(exe), st.st_size, st.st_mtime_ns, gdb_python_path(), sysbreak.__version__))
    return cache_dir().parent / "gdb-probes" / hashlib.sha1(ident.encode()).hexdigest()


def check_gdb(gdb: str) -> GdbProbe:
    """:func:`probe_gdb`, raising a one-line :class:`SysbreakError` for anything that stops a capture.

    A probe that passed is remembered per GDB binary (path, size, mtime) and Python path, so later captures do
    not pay its two GDB start-ups (~0.2 s); a failure is never remembered, so its message is always current.
    """
    stamp = _probe_stamp(gdb)
    if stamp is not None and extension_available():
        try:
            version, _, python = stamp.read_text(encoding="utf-8", errors="replace").partition("\n")
        except OSError:  # not probed yet, or a cache we may not read: probe
            pass
        else:
            return GdbProbe(gdb=gdb, version=version.strip(), python=python.strip() or "?", missing=[], error="")
    probe = probe_gdb(gdb)
    if probe.error:
        raise SysbreakError(probe.error, ExitCode.TOOL)
    if probe.python is None:
        raise SysbreakError(
            f"'{gdb}' was built without Python scripting, which sysbreak needs: use a GDB with Python "
            "(Debian/Ubuntu: apt-get install gdb) or give one with --gdb PATH",
            ExitCode.TOOL,
        )
    if probe.missing:
        raise SysbreakError(missing_modules_message(probe), ExitCode.TOOL)
    if not extension_available():
        raise SysbreakError(
            "this sysbreak installation has no in-GDB extension (gdb_scripts/sysbreak.py or sysbreak.gdb): "
            "reinstall sysbreak",
            ExitCode.TOOL,
        )
    if stamp is not None:
        with contextlib.suppress(OSError):
            stamp.parent.mkdir(parents=True, exist_ok=True)
            stamp.write_text(f"{probe.version}\n{probe.python}\n", encoding="utf-8")
    return probe


def missing_modules_message(probe: GdbProbe) -> str:
    names = ", ".join(probe.missing)
    dists = " ".join(REQUIRED_MODULES.get(m, m) for m in probe.missing)
    gdb_py = ".".join((probe.python or "?").split(".")[:2])
    ours = f"{sys.version_info.major}.{sys.version_info.minor}"
    where = os.pathsep.join(gdb_python_path())
    if gdb_py != ours:
        fix = (
            f"GDB embeds Python {gdb_py} but sysbreak runs on Python {ours}; install sysbreak in a Python {gdb_py} "
            f"environment (python{gdb_py} -m venv ...; pip install sysbreak)"
        )
    else:
        fix = f"install it: {sys.executable} -m pip install {dists}"
    return f"GDB's Python ({probe.python}) cannot import {names} from {where}: {fix}"
