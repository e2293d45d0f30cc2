"""sysbreak for GDB: `source /path/to/gdb_scripts/sysbreak.py` inside gdb or cuda-gdb, then `help sysbreak`.

GDB's embedded Python is not your virtualenv's Python, so this file finds the sysbreak package and its
dependencies (capstone, pyelftools) itself, in this order:
  1. $SYSBREAK_PYTHONPATH (os.pathsep-separated directories, set by `sysbreak run`/`attach`),
  2. this checkout's src/ and its .venv's site-packages (what `make setup` creates),
  3. $VIRTUAL_ENV's site-packages,
  4. whatever GDB's Python already has.
If something is still missing it says exactly what and how to fix it, and registers nothing.
"""

import glob
import os
import sys


def _candidates():
    env = os.environ.get("SYSBREAK_PYTHONPATH")
    if env:
        yield from (p for p in env.split(os.pathsep) if p)
    here = os.path.dirname(os.path.abspath(os.path.realpath(__file__)))
    root = os.path.dirname(here)
    yield os.path.join(root, "src")
    pyver = f"python{sys.version_info[0]}.{sys.version_info[1]}"
    for venv in (os.path.join(root, ".venv"), os.environ.get("VIRTUAL_ENV")):
        if venv:
            yield from sorted(glob.glob(os.path.join(venv, "lib", pyver, "site-packages")))
            yield from sorted(glob.glob(os.path.join(venv, "lib", "python3*", "site-packages")))


def _setup_path():
    # In the order of _candidates, ahead of everything else: a candidate already on sys.path (GDB's Python
    # honours $PYTHONPATH) is moved to the front, not left behind a later candidate (another checkout's src/).
    wanted = []
    for path in _candidates():
        if os.path.isdir(path) and path not in wanted:
            wanted.append(path)
    for path in reversed(wanted):
        while path in sys.path:
            sys.path.remove(path)
        sys.path.insert(0, path)


def _missing():
    missing = []
    for module, package in (("sysbreak", "sysbreak"), ("capstone", "capstone"), ("elftools", "pyelftools")):
        try:
            if module == "capstone":
                # found, not imported: importing capstone's Python binding (every architecture's module) took
                # 0.15-0.5 s of every GDB start here, and sysbreak calls capstone's C library directly
                # (elfscan/x86.py), loading it only when a module has to be decoded
                import importlib.util

                if importlib.util.find_spec(module) is None:
                    raise ImportError(f"No module named {module!r}")
            else:
                __import__(module)
        except Exception as exc:  # noqa: BLE001 - report any import failure
            missing.append(f"{package} ({type(exc).__name__}: {exc})")
    return missing


_setup_path()
_problems = _missing()
if _problems:
    import gdb

    _ver = sys.version.split()[0]
    gdb.write(
        f"sysbreak: cannot load, GDB's Python ({_ver}) cannot import: {'; '.join(_problems)}. Run `make setup` "
        "in the sysbreak checkout, or set SYSBREAK_PYTHONPATH to the directories holding them (e.g. a venv's "
        f"site-packages built for Python {sys.version_info[0]}.{sys.version_info[1]}).\n",
        gdb.STDERR,
    )
else:
    import sysbreak.gdb

    sysbreak.gdb.register()
