"""sysbreak.gdb.pyframes: CPython 3.11 frames at a syscall breakpoint.

The decoders are checked against CPython itself (``code.co_lines()``); the rest runs a real gdb on a real
CPython (fixtures/py/ucm_arenas.py, whose pymalloc arenas are mapped through libucm -> syscall()) with the
helper fixtures/py/gdb_pyframes_probe.py, and on a C program (not CPython).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import types
from pathlib import Path
from typing import Any

import pytest

from sysbreak.gdb import pyframes

ROOT = Path(__file__).resolve().parent.parent
FIXTURE = ROOT / "fixtures" / "py" / "ucm_arenas.py"
PROBE = ROOT / "fixtures" / "py" / "gdb_pyframes_probe.py"
SYSTEM_PY311 = Path("/usr/bin/python3.11")
HAVE_GDB = shutil.which("gdb") is not None
HAVE_UCM = Path("/usr/lib/x86_64-linux-gnu/libucm.so.0").exists() or Path("/usr/include/ucm/api/ucm.h").exists()

needs_gdb = pytest.mark.skipif(not (HAVE_GDB and HAVE_UCM), reason="needs gdb and libucm (scripts/setup.sh)")


def marker_line(tag: str) -> int:
    for no, text in enumerate(FIXTURE.read_text().splitlines(), 1):
        if text.rstrip().endswith(f"# {tag}") or f"# {tag}:" in text:
            return no
    raise AssertionError(f"no {tag} marker in {FIXTURE}")


# ------------------------------------------------------------------------------------ decoders (no gdb)


def _all_codes(code: types.CodeType) -> list[types.CodeType]:
    out = [code]
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            out.extend(_all_codes(const))
    return out


TRICKY = (
    """
def f(a,
      b):
    x = (a +
         b)
    y = [i * 2
         for i in range(3)
         if i]
    try:
        z = 1 / 0
    except ZeroDivisionError:
        z = None
    finally:
        pass
    with open(__file__) as fh:
        pass
    return lambda q: (q,
                      x, y, z)
"""
    + "\n" * 300
    + """
def far_away():
    return 1
"""
    + "".join(f"\nv{i} = {i}" for i in range(200))
)


@pytest.mark.skipif(sys.version_info[:2] != (3, 11), reason="the location table format of CPython 3.11")
def test_decode_linetable_matches_co_lines() -> None:
    import argparse
    import json.decoder
    import threading

    sources = [(Path(m.__file__ or "").read_text(), m.__file__) for m in (threading, argparse, json.decoder)]
    sources += [(TRICKY, "<tricky>"), (FIXTURE.read_text(), str(FIXTURE))]
    checked = 0
    for src, name in sources:
        for code in _all_codes(compile(src, str(name), "exec")):
            starts, lines = pyframes.decode_linetable(code.co_linetable, code.co_firstlineno)
            for start, end, line in code.co_lines():
                for unit in range(start // 2, end // 2):
                    got = pyframes.line_at(starts, lines, code.co_firstlineno, unit)
                    assert got == line, (name, code.co_qualname, unit)
                    checked += 1
            assert pyframes.line_at(starts, lines, code.co_firstlineno, -1) == code.co_firstlineno
    assert checked > 10_000


def test_decode_linetable_stops_on_garbage() -> None:
    starts, lines = pyframes.decode_linetable(b"\x01\x02", 10)  # no entry start byte: nothing decoded
    assert starts == [0] and lines == [None]


def test_decode_str_kinds() -> None:
    assert pyframes.decode_str(1, True, b"grow") == "grow"
    assert pyframes.decode_str(1, False, "caf\xe9".encode("latin-1")) == "caf\xe9"
    assert pyframes.decode_str(2, False, "π_step".encode("utf-16-le")) == "π_step"
    assert pyframes.decode_str(4, False, "𝔡ecode".encode("utf-32-le")) == "𝔡ecode"


def test_builtin_layout_has_every_field() -> None:
    assert set(pyframes.BUILTIN_311) >= {
        "frame.f_code",
        "frame.previous",
        "frame.prev_instr",
        "code.co_linetable",
        "code.co_code_adaptive",
        "tstate.native_thread_id",
        "runtime.tstate_current",
    }


# ------------------------------------------------------------------------------------ real gdb


def _gdb(
    args: list[str], commands: list[str], out: Path, env: dict[str, str] | None = None, early: tuple[str, ...] = ()
) -> dict[str, Any]:
    cmd = ["gdb", "-batch", "-nx"]
    for c in early:  # before the program is loaded
        cmd += ["-iex", c]
    for c in [
        "set pagination off",
        "set confirm off",
        "set startup-with-shell off",
        "set breakpoint pending on",
        f"source {PROBE}",
        *commands,
    ]:
        cmd += ["-ex", c]
    cmd += ["--args", *args]
    full_env = dict(os.environ, SB_SRC=str(ROOT / "src"), PF_OUT=str(out), DEBUGINFOD_URLS="", **(env or {}))
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=60, env=full_env, stdin=subprocess.DEVNULL)
    if not out.exists():
        pytest.fail(f"gdb wrote no result (rc {res.returncode}):\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(out.read_text())
    result["console"] = res.stdout + res.stderr
    return result


ARM = ["tbreak ucm_set_event_handler", "run", "python pf_arm()", "continue", "python pf_dump()"]


NO_DEBUG_INFO = ("set debug-file-directory /nonexistent",)  # as if python3.11-dbg were not installed


def _run_fixture(python: Path, tmp_path: Path, *fixture_args: str, early: tuple[str, ...] = ()) -> dict[str, Any]:
    out = tmp_path / "pf.json"
    r = _gdb([str(python), str(FIXTURE), *fixture_args], ARM, out, early=early)
    assert r["errors"] == [], r["errors"]
    assert r["availability"] is None, r["availability"]
    assert "DONE" in r["console"], r["console"][-2000:]
    for t in r["timings"]:
        print(f"python_frames: {t['frames']} frames, {t['us']:.1f} us per call ({r['describe']})")
    return r


def _grow_hits(r: dict[str, Any]) -> list[dict[str, Any]]:
    """The mmap calls made while grow_kv_cache runs (pymalloc arenas of 1 MiB among them)."""
    return [h for h in r["hits"] if any(p["function"] == "grow_kv_cache" for p in h["python"])]


def _check_grow_stack(hit: dict[str, Any], depth: int, generator: bool = False) -> list[dict[str, Any]]:
    """Check the frames from grow_kv_cache out to the outermost nest(); return the frames outside those."""
    py = list(hit["python"])
    assert hit["evals"] >= 1
    assert py.pop(0) == {"file": str(FIXTURE), "line": marker_line("GROW-LINE"), "function": "grow_kv_cache"}
    if generator:
        assert py.pop(0) == {"file": str(FIXTURE), "line": marker_line("GEN-LINE"), "function": "produce"}
        assert py.pop(0) == {"file": str(FIXTURE), "line": marker_line("NEXT-LINE"), "function": "nest"}
    else:
        assert py.pop(0) == {"file": str(FIXTURE), "line": marker_line("CALL-LINE"), "function": "nest"}
    for _ in range(depth):
        assert py.pop(0) == {"file": str(FIXTURE), "line": marker_line("NEST-LINE"), "function": "nest"}
    return py


@needs_gdb
@pytest.mark.gdb
@pytest.mark.skipif(not SYSTEM_PY311.exists(), reason="needs Debian's /usr/bin/python3.11")
def test_arena_mmap_through_libucm_names_the_python_line(tmp_path: Path) -> None:
    r = _run_fixture(SYSTEM_PY311, tmp_path, "--depth", "3")
    assert r["describe"].startswith("CPython 3.11.")
    hits = _grow_hits(r)
    arenas = [h for h in hits if h["length"] == 1 << 20]
    assert len(arenas) >= 5, [h["length"] for h in r["hits"]]
    for hit in hits:
        rest = _check_grow_stack(hit, 3)
        assert rest == [
            {"file": str(FIXTURE), "line": marker_line("MAIN-CALL"), "function": "main"},
            {"file": str(FIXTURE), "line": marker_line("MODULE-CALL"), "function": "<module>"},
        ]
    assert all(t["us"] < 2000 for t in r["timings"]), r["timings"]


@needs_gdb
@pytest.mark.gdb
@pytest.mark.skipif(not SYSTEM_PY311.exists(), reason="needs Debian's /usr/bin/python3.11")
def test_release_build_without_debug_info_in_a_python_thread(tmp_path: Path) -> None:
    """No debug info for the interpreter: the built-in 3.11 offsets; the mmap happens in a threading.Thread,
    under a generator's frame (which is not on the thread's data stack)."""
    r = _run_fixture(SYSTEM_PY311, tmp_path, "--depth", "1", "--thread", "--generator", early=NO_DEBUG_INFO)
    assert r["describe"].endswith("built-in CPython 3.11 offsets (no debug info)"), r["describe"]
    hits = _grow_hits(r)
    assert len([h for h in hits if h["length"] == 1 << 20]) >= 5
    main_tids = {h["tid"] for h in r["hits"] if h["python"] and h["python"][0]["function"] == "install_ucm_hooks"}
    for hit in hits:
        assert hit["tid"] not in main_tids
        rest = _check_grow_stack(hit, 1, generator=True)
        assert rest[0] == {
            "file": str(FIXTURE),
            "line": marker_line("THREAD-CALL"),
            "function": "main.<locals>.<lambda>",
        }
        tail = rest[1:]
        assert [p["function"] for p in tail] == ["Thread.run", "Thread._bootstrap_inner", "Thread._bootstrap"]
        threading_py = Path(tail[0]["file"])
        assert threading_py.name == "threading.py"
        src = threading_py.read_text().splitlines()
        for frame, needle in zip(tail, ["self._target(", "self.run()", "self._bootstrap_inner()"], strict=True):
            assert needle in src[frame["line"] - 1], (frame, src[frame["line"] - 1])


@needs_gdb
@pytest.mark.gdb
@pytest.mark.skipif(not Path("/usr/bin/python3.11d").exists(), reason="needs python3.11d (Debian: python3.11-dbg)")
def test_debug_build(tmp_path: Path) -> None:
    r = _run_fixture(Path("/usr/bin/python3.11d"), tmp_path)
    assert r["describe"].endswith("read with debug info"), r["describe"]
    hits = _grow_hits(r)
    assert len([h for h in hits if h["length"] == 1 << 20]) >= 5
    for hit in hits:
        assert [p["function"] for p in _check_grow_stack(hit, 0)] == ["main", "<module>"]


def _other_311() -> Path | None:
    """A CPython 3.11 other than Debian's (e.g. the venv's, built from source with a shared libpython)."""
    exe = Path(sys.executable).resolve()
    if sys.version_info[:2] == (3, 11) and exe != SYSTEM_PY311.resolve() and sys.implementation.name == "cpython":
        return exe
    return None


@needs_gdb
@pytest.mark.gdb
@pytest.mark.skipif(_other_311() is None, reason="needs a second CPython 3.11 (the test runner's own)")
def test_shared_libpython_build(tmp_path: Path) -> None:
    python = _other_311()
    assert python is not None
    r = _run_fixture(python, tmp_path, "--depth", "2")
    assert r["describe"].startswith("CPython 3.11.")
    hits = _grow_hits(r)
    assert hits
    for hit in hits:
        assert [p["function"] for p in _check_grow_stack(hit, 2)] == ["main", "<module>"]


@needs_gdb
@pytest.mark.gdb
def test_availability_on_a_c_program(tmp_path: Path, fixture_paths: Any) -> None:
    r = _gdb([str(fixture_paths.mapper), "1", "1"], ["break main", "run", "python pf_avail()"], tmp_path / "c.json")
    why = r["availability"]
    assert why is not None and "\n" not in why
    assert why.startswith("the inferior is not CPython"), why


def _other_cpython() -> tuple[Path, str] | None:
    """A CPython other than 3.11 on PATH, or one that pyenv installed (its shims only run the selected one)."""
    names = ("python3.12", "python3.13", "python3.10")
    candidates = [(shutil.which(name), name) for name in names]
    pyenv = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv")) / "versions"
    candidates += [(str(p), p.name) for name in names for p in sorted(pyenv.glob(f"*/bin/{name}"))]
    for exe, name in candidates:
        if not exe:
            continue
        try:
            res = subprocess.run(
                [exe, "-c", "import sys; print(sys.implementation.name, sys.executable)"],
                capture_output=True,
                text=True,
                timeout=10,
            )
        except (OSError, subprocess.TimeoutExpired):
            continue
        parts = res.stdout.split()
        if res.returncode == 0 and len(parts) == 2 and parts[0] == "cpython":
            return Path(parts[1]), name.removeprefix("python")
    return None


@needs_gdb
@pytest.mark.gdb
@pytest.mark.skipif(_other_cpython() is None, reason="needs a CPython other than 3.11")
def test_availability_on_another_cpython(tmp_path: Path) -> None:
    found = _other_cpython()
    assert found is not None
    exe, version = found
    r = _gdb([str(exe), "-c", "pass"], ["break main", "run", "python pf_avail()"], tmp_path / "o.json")
    why = r["availability"]
    assert why is not None and "\n" not in why
    if version == "3.10":
        assert why.startswith("CPython older than 3.11 found"), why
    else:
        assert re.match(rf"CPython {re.escape(version)}\.\d+ found in .*3\.11 only", why), why


# ------------------------------------------------------------------------------------ end to end


@needs_gdb
@pytest.mark.gdb
@pytest.mark.skipif(not SYSTEM_PY311.exists(), reason="needs Debian's /usr/bin/python3.11")
def test_sysbreak_break_python_stacks_log(tmp_path: Path) -> None:
    """`sysbreak break mmap --python-stacks --log F` on the fixture: the stack records carry the Python frames."""
    log = tmp_path / "events.jsonl"
    cmd = ["gdb", "-batch", "-nx"]
    for c in [
        "set pagination off",
        "set confirm off",
        "set startup-with-shell off",
        f"source {ROOT / 'gdb_scripts' / 'sysbreak.py'}",
        f"sysbreak break mmap --python-stacks --quiet --log {log}",
        "run",
    ]:
        cmd += ["-ex", c]
    cmd += ["--args", str(SYSTEM_PY311), str(FIXTURE), "--depth", "1"]
    env = dict(os.environ, DEBUGINFOD_URLS="")
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=60, env=env, stdin=subprocess.DEVNULL)
    console = res.stdout + res.stderr
    assert "sysbreak: cannot load" not in console, console[-3000:]
    assert log.exists(), f"sysbreak break wrote no log: did the extension load?\n{console[-3000:]}"
    assert "DONE" in console, console[-3000:]
    records = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    stacks = {r["id"]: r for r in records if r["type"] == "stack"}
    arena_calls = [
        r
        for r in records
        if r["type"] == "syscall"
        and r["name"] == "mmap"
        and r["args"][1] == 1 << 20
        and any(p["function"] == "grow_kv_cache" for p in stacks[r["stack"]]["python"])
    ]
    seen = [
        (r["site"]["module"], [p["function"] for p in stacks[r["stack"]]["python"]])
        for r in records
        if r["type"] == "syscall" and r["args"][1] == 1 << 20
    ]
    assert arena_calls, (seen, console[-3000:])
    for call in arena_calls:
        stack = stacks[call["stack"]]
        modules = [Path(f["module"] or "").name for f in stack["frames"]]
        assert any(m.startswith("libucm.so") for m in modules), modules  # mapped through libucm
        py = stack["python"]
        assert py[0] == {"file": str(FIXTURE), "line": marker_line("GROW-LINE"), "function": "grow_kv_cache"}
        assert [p["function"] for p in py] == ["grow_kv_cache", "nest", "nest", "main", "<module>"]
    assert "internal error" not in console, console[-3000:]
