"""The offline unwinder against GDB's own ``bt`` (issue 10's oracle test).

One real gdb run per fixture stops at syscall sites (and at function entries on the way), and at each stop
records GDB's frames (pc, function, file:line, inline or not: what ``bt`` prints) together with what the capture
copies at a stop: the registers, the raw stack from $rsp to the end of its mapping, and /proc/PID/maps. The
process is then killed, and :class:`sysbreak.unwind.Unwinder` unwinds every record offline, without GDB; the
frames must be identical, frame by frame, inlined calls included (GDB shows an inlined call as a frame of its
own at its caller's pc; so does the unwinder, and the event log's merging of same-named inline duplicates is
applied to both sides alike).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
from gdbutil import BUILD, ROOT, build_fixtures

from sysbreak.unwind import ModuleCache, Unwinder, merge_inline_duplicates

pytestmark = pytest.mark.gdb

DUMP = ROOT / "tests" / "oracle_dump.py"
# the system's CPython (its debug info comes from python3.X-dbg, installed by scripts/setup.sh)
PYTHON = next(p for p in ("/usr/bin/python3.11", "/usr/bin/python3") if Path(p).exists())


def _gdb_dumps(tmp_path: Path, commands: list[str], program: list[str]) -> list[dict[str, Any]]:
    out = tmp_path / "stops.jsonl"
    argv = ["gdb", "-nx", "-q", "-batch", "-ex", "set pagination off", "-ex", "set breakpoint pending on"]
    argv += ["-ex", "set debuginfod enabled off", "-ex", f"source {DUMP}"]
    for c in commands:
        argv += ["-ex", c.replace("DUMP", f"sb-oracle-dump {out}")]
    argv += ["-ex", "kill", "--args", *program]
    res = subprocess.run(argv, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    if not out.exists():
        pytest.fail(f"gdb recorded no stop:\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}")
    return [json.loads(line) for line in out.read_text().splitlines()]


def _gdb_frames(rec: dict[str, Any], *, trim_guesses: bool = False) -> list[tuple[Any, ...]]:
    frames = [(f["pc"], f["function"], f["file"], f["line"], f["inline"]) for f in rec["frames"]]
    if trim_guesses:
        # past the last frame with CFI GDB's heuristic unwinder may go on into stack garbage ("0x1 in ?? ()"):
        # those frames are cut at the first pc outside executable memory; the unwinder stops before them
        # (docs/unwinding.md)
        code = []
        for line in rec["maps"].splitlines():
            parts = line.split()
            if len(parts) >= 2 and "x" in parts[1]:
                lo, hi = (int(x, 16) for x in parts[0].split("-"))
                code.append((lo, hi))
        for i, f in enumerate(frames):
            if i and not any(lo <= f[0] - 1 < hi for lo, hi in code):
                return frames[:i]
    return frames


def _ours(rec: dict[str, Any], modules: ModuleCache) -> list[tuple[Any, ...]]:
    u = Unwinder(rec["maps"], exe=rec["exe"], modules=modules)
    res = u.unwind(rec["regs"], bytes.fromhex(rec["stack"]), rec["stack_start"])
    return [(f.pc, f.function, f.file, f.line, f.inline) for f in res.frames]


def _show(frames: list[tuple[Any, ...]]) -> str:
    return "\n".join(f"#{i:<2} {pc:#x} {fn} {file}:{line}{' [inline]' if inl else ''}"
                     for i, (pc, fn, file, line, inl) in enumerate(frames))  # fmt: skip


# Shared by the tests here, and kept in the default build-id cache (next to the site scans' cache): each module
# (CPython's DWARF...) is read once, and a later run of the suite starts warm. test_unwind.py tests the cold path.
_MODULES = ModuleCache()


@pytest.fixture(autouse=True)
def _save_cache() -> Any:
    yield
    _MODULES.save()


def _check(recs: list[dict[str, Any]], want_stops: int, trim_guesses: bool = False) -> list[list[tuple[Any, ...]]]:
    assert len(recs) == want_stops, f"gdb stopped {len(recs)} times, expected {want_stops}"
    modules = _MODULES
    all_frames = []
    for rec in recs:
        theirs = _gdb_frames(rec, trim_guesses=trim_guesses)
        ours = _ours(rec, modules)
        assert ours == theirs, f"GDB's bt:\n{rec['bt']}\n\ngdb frames:\n{_show(theirs)}\n\nours:\n{_show(ours)}"
        # the event log's merging of inline duplicates gives the same on both sides
        assert [(f.pc, f.function) for f in merge_inline_duplicates(_as_frames(ours))] == [
            (f.pc, f.function) for f in merge_inline_duplicates(_as_frames(theirs))
        ]
        all_frames.append(ours)
        # a shorter copy of the stack gives fewer frames, never different ones
        stack = bytes.fromhex(rec["stack"])
        u = Unwinder(rec["maps"], exe=rec["exe"], modules=modules)
        for cut in (len(stack) // 2, 512, 64):
            res = u.unwind(rec["regs"], stack[:cut], rec["stack_start"])
            short = [(f.pc, f.function, f.file, f.line, f.inline) for f in res.frames]
            assert short == ours[: len(short)], f"window {cut}: {_show(short)}"
            assert len(short) == len(ours) or res.stop == "window", (cut, res.stop)
    return all_frames


def _as_frames(rows: list[tuple[Any, ...]]) -> list[Any]:
    from sysbreak.unwind import UnwoundFrame

    return [UnwoundFrame(pc, None, None, fn, file, line, inl) for pc, fn, file, line, inl in rows]


@pytest.fixture(scope="module", autouse=True)
def _fixtures() -> None:
    build_fixtures()


def test_libucm_through_syscall(tmp_path: Path) -> None:
    """ucm_leak: mmap -> libucm (no debug info, a static function GDB shows as ??) -> libc's syscall()."""
    recs = _gdb_dumps(tmp_path, ["break leak_region", "run", "catch syscall mmap", "continue", "DUMP"],
                      [str(BUILD / "ucm_leak"), "2"])  # fmt: skip
    (frames,) = _check(recs, 1)
    names = [f[1] for f in frames]
    assert names[0] == "syscall" and "ucm_mmap" in names and names[-2:] == ["leak_region", "main"]
    assert None in names  # libucm's static function: no symbol covers it, like GDB's "??"


def test_cpython_mmap_module(tmp_path: Path) -> None:
    """python3.11 (separate debug file from python3.11-dbg) calling mmap through the mmap module: inlined calls
    in ceval.c, libc's inlined INLINE_SYSCALL, _start at the end (Py_BytesMain is reached by a tail call)."""
    recs = _gdb_dumps(tmp_path, ["break new_mmap_object", "run", "DUMP", "catch syscall mmap", "continue", "DUMP"],
                      [PYTHON, "-c", "import mmap; mmap.mmap(-1, 4096)"])  # fmt: skip
    frames = _check(recs, 2)
    assert any(f[4] for f in frames[1]), "expected inlined frames in CPython's stack"
    assert frames[1][-1][1] == "_start"


def test_cpython_ctypes(tmp_path: Path) -> None:
    """The interpreter calling libc's mmap through ctypes: libffi's assembly (CFI, no debug info) and _ctypes."""
    code = (
        "import ctypes; libc = ctypes.CDLL(None); libc.mmap.restype = ctypes.c_void_p; "
        "libc.mmap(None, 4096, 3, 34, -1, 0)"
    )
    recs = _gdb_dumps(
        tmp_path, ["break ffi_call", "run", "catch syscall mmap", "continue", "DUMP"], [PYTHON, "-c", code]
    )
    (frames,) = _check(recs, 1)
    assert any(f[1] and f[1].startswith("ffi_call") for f in frames)


def test_cpp_templates(tmp_path: Path) -> None:
    """C++: class template member, function template, lambda through std::function, template recursion."""
    cmds = ["break main", "run", "break mmap", "continue", "DUMP", "catch syscall mmap", "continue", "DUMP"]
    frames = _check(_gdb_dumps(tmp_path, cmds, [str(BUILD / "templates")]), 2)
    names = [f[1] for f in frames[1]]
    assert "sb::map_pages<long>" in names and "sb::Pool<unsigned int>::grow" in names
    assert sum(1 for n in names if n and n.startswith("sb::Depth<")) == 4


def test_cpp_without_debug_info(tmp_path: Path) -> None:
    """The C++ fixture stripped of DWARF: names from the symbol table, demangled with their parameters."""
    cmds = ["break main", "run", "catch syscall mmap", "continue", "DUMP"]
    (frames,) = _check(_gdb_dumps(tmp_path, cmds, [str(BUILD / "templates_nodebug")]), 1)
    names = [f[1] for f in frames]
    assert "sb::Pool<unsigned int>::grow() const" in names and all(f[2] is None for f in frames[2:])


def test_twenty_deep_recursion(tmp_path: Path) -> None:
    cmds = ["break main", "run", "break mmap", "continue", "DUMP", "catch syscall mmap", "continue", "DUMP"]
    frames = _check(_gdb_dumps(tmp_path, cmds, [str(BUILD / "recurse")]), 2)
    assert sum(1 for f in frames[1] if f[1] == "descend") == 21


def test_dlopened_stripped_library(tmp_path: Path) -> None:
    """dlopener: a stop inside dlopen (ld.so mapping the library), then in the dlopened, stripped
    libsbstripped.so (.dynsym names only, .eh_frame kept) at its function's entry and at its syscall."""
    cmds = ["break dlopen", "run", "catch syscall mmap", "continue", "DUMP", "delete", "break sb_lib_map",
            "continue", "DUMP", "catch syscall mmap", "continue", "DUMP"]  # fmt: skip
    lib = BUILD / "libsbstripped.so"
    frames = _check(_gdb_dumps(tmp_path, cmds, [str(BUILD / "dlopener"), str(lib), "2", "0"]), 3)
    assert frames[0][-1][1] == "main" and any(f[1] and "dl_map_object" in f[1] for f in frames[0])
    assert frames[2][0][1] == "sb_lib_map" and frames[2][0][2] is None and frames[2][-1][1] == "main"


def test_library_without_cfi(tmp_path: Path) -> None:
    """libsbnocfi.so: the same library built without unwind tables (and stripped): GDB analyses the prologue;
    the unwinder reads the function's instructions with capstone and reaches the same caller."""
    cmds = ["break dlopen", "run", "delete", "break sb_lib_map", "continue", "DUMP", "catch syscall mmap",
            "continue", "DUMP"]  # fmt: skip
    lib = BUILD / "libsbnocfi.so"
    frames = _check(_gdb_dumps(tmp_path, cmds, [str(BUILD / "dlopener"), str(lib), "2", "0"]), 2)
    assert [f[1] for f in frames[1]] == ["sb_lib_map", "main"]


def test_thread_stack_ends_at_clone3(tmp_path: Path) -> None:
    """A thread's stack: thread_map -> start_thread -> clone3, whose CFI marks the return address undefined."""
    cmds = ["break thread_map", "run", "DUMP", "catch syscall mmap", "continue", "DUMP"]
    frames = _check(_gdb_dumps(tmp_path, cmds, [str(BUILD / "mapper_mt"), "2", "2"]), 2)
    # (the second stop may be the other thread's breakpoint: GDB reports pending stops in any order)
    assert all(f[-1][1] == "clone3" and any(x[1] == "thread_map" for x in f) for f in frames)


def test_signal_handler_and_tail_call_frames(tmp_path: Path) -> None:
    """mmap inside a SIGUSR1 handler: the signal trampoline (__restore_rt, named at its pc), the interrupted
    frame (its pc is not a return address), and GDB's tail-call frame (__pthread_kill_internal jumped to
    __pthread_kill_implementation: found from DWARF call sites, shown alone at the jump's return address)."""
    cmds = ["handle SIGUSR1 nostop noprint pass", "break on_usr1", "run", "catch syscall mmap", "continue", "DUMP"]
    (frames,) = _check(_gdb_dumps(tmp_path, cmds, [str(BUILD / "sighandler")]), 1)
    names = [f[1] for f in frames]
    assert "__restore_rt" in names and "on_usr1" in names and names[-1] == "main"


def test_go_runtime(tmp_path: Path) -> None:
    """A Go program (statically linked, .debug_frame only, Go's DWARF): the runtime's own mmap at start-up,
    whose stack GDB unwinds past runtime.rt0_go into guessed frames; the unwinder stops at rt0_go."""
    go = BUILD / "gomapper"
    assert go.exists(), "fixtures/build/gomapper missing: scripts/setup.sh installs Go (golang-go)"
    recs = _gdb_dumps(tmp_path, ["catch syscall mmap", "run", "continue", "DUMP"], [str(go), "-n", "1"])
    (frames,) = _check(recs, 1, trim_guesses=True)
    assert frames[0][1] == "runtime.sysMmap" and frames[-1][1] == "runtime.rt0_go"


LINE_PROBE = """
import gdb, json, sys
rows = json.load(open(sys.argv[-2] if False else PATH_IN))
out = []
for a in rows:
    sal = gdb.find_pc_line(a)
    out.append([a, sal.symtab.filename if sal.symtab is not None else None, sal.line or None])
json.dump(out, open(PATH_OUT, "w"))
"""


@pytest.mark.parametrize(
    "path",
    [str(BUILD / "gomapper"), "/lib/x86_64-linux-gnu/libc.so.6", str(BUILD / "templates"), PYTHON],
    ids=["go", "libc", "c++", "cpython"],
)
def test_line_tables_match_gdb_find_pc_line(path: str, tmp_path: Path) -> None:
    """file:line at a few hundred addresses of a few compile units (row starts, the byte after, others in
    between), against GDB's own ``find_pc_line`` on the same file (no process needed)."""
    import random

    assert Path(path).exists(), f"{path} is missing (scripts/setup.sh installs what these tests read)"
    info = _MODULES.get(path)
    assert info is not None
    dwarf = info.get_dwarf()
    assert dwarf is not None, f"{path}: no DWARF (its debug file is missing?)"
    rng = random.Random(3)
    spans = sorted(range(len(dwarf.cu_starts)), key=lambda i: dwarf.cu_ends[i] - dwarf.cu_starts[i])
    chosen = [spans[len(spans) // 2], spans[-1], *rng.sample(spans, min(2, len(spans)))]
    addrs: set[int] = set()
    for i in chosen:
        lo, hi = int(dwarf.cu_starts[i]), int(dwarf.cu_ends[i])
        cu = dwarf.cu_at(lo)
        assert cu is not None
        cu.line_at(lo, dwarf)
        rows = sorted({a for sf in cu.subfiles or [] for a in sf.addrs if lo <= a < hi})
        for a in rng.sample(rows, min(60, len(rows))):
            addrs.update((a, a + 1))
        addrs.update(rng.randrange(lo, hi) for _ in range(30))
    want_in, want_out = tmp_path / "addrs.json", tmp_path / "lines.json"
    want_in.write_text(json.dumps(sorted(addrs)))
    script = tmp_path / "probe.py"
    script.write_text(LINE_PROBE.replace("PATH_IN", repr(str(want_in))).replace("PATH_OUT", repr(str(want_out))))
    subprocess.run(["gdb", "-nx", "-q", "-batch", "-ex", "set debuginfod enabled off", "-ex", f"source {script}", path],
                   capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)  # fmt: skip
    theirs = json.loads(want_out.read_text())
    bad = []
    for a, file, line in theirs:
        cu = dwarf.cu_at(a)
        got = cu.line_at(a, dwarf) if cu is not None else None
        ours = (got[0], got[1]) if got else (None, None)
        if ours != (file, line):
            bad.append(f"{a:#x}: gdb {file}:{line}, ours {ours[0]}:{ours[1]}")
    assert not bad, f"{len(bad)} of {len(theirs)} differ:\n" + "\n".join(bad[:20])
