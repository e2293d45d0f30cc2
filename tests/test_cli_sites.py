"""`sysbreak sites` on the command line: ELF files, live processes, JSON, and one clear line for every bad input."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import FixturePaths, Spawn
from support.cli import AS_NOBODY, one_error, run_in_process, run_sysbreak

LIBC = "/lib/x86_64-linux-gnu/libc.so.6"
LIBUCM = "/lib/x86_64-linux-gnu/libucm.so.0"
needs_libucm = pytest.mark.skipif(not Path(LIBUCM).exists(), reason="libucm (libucx-dev) is not installed")

Run = Callable[..., tuple[int, str, str]]


pytestmark = pytest.mark.usefixtures("private_cache")


@pytest.fixture
def run(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Run:
    """``sysbreak sites ARGS...`` through the real entry point, in-process: (exit code, stdout, stderr)."""
    return lambda *args: run_in_process(capsys, monkeypatch, "sites", *args)


@needs_libucm
def test_elf_file(run: Run) -> None:
    code, out, err = run(LIBUCM)
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0] == "syscalls: mmap, munmap, mremap, brk  (mode: call sites)"
    assert lines[1].startswith(f"{LIBUCM}  build-id ") and "4 probes" in lines[1]
    mmap_line = next(ln for ln in lines if "ucm_orig_mmap_syscall+" in ln)
    assert " call " in mmap_line and "9 mmap" in mmap_line and mmap_line.endswith("break after")
    assert any("tailjmp" in ln and "25 mremap" in ln for ln in lines)
    assert "skipped: 4 make other syscalls" in lines[-1]
    assert "gettid" not in "\n".join(lines[:-1])  # skipped sites are only counted


@needs_libucm
def test_all_and_syscall_choice(run: Run) -> None:
    code, out, _ = run(LIBUCM, "-s", "gettid,madvise", "--all")
    assert code == 0
    assert "syscalls: gettid, madvise" in out
    assert any("ucm_get_tid" in ln and ln.endswith("break after") for ln in out.splitlines())
    assert any("ucm_orig_mmap_syscall" in ln and ln.endswith("skip (mmap)") for ln in out.splitlines())


def test_exhaustive_on_libc(run: Run) -> None:
    code, out, _ = run(LIBC, "--exhaustive", "--all")
    assert code == 0
    assert "(mode: exhaustive)" in out
    wrapper = next(ln for ln in out.splitlines() if " syscall+0x" in ln)
    assert wrapper.endswith("break at syscall if rdi in {9,11,12,25}") and "? (from caller)" in wrapper


def test_json(run: Run, fixture_paths: FixturePaths) -> None:
    code, out, _ = run(fixture_paths.libsbstripped, "-f", "json", "-s", "mmap")
    assert code == 0
    doc = json.loads(out)
    assert doc["format"] == "sysbreak-sites/1"
    (mod,) = doc["modules"]
    assert mod["path"] == str(fixture_paths.libsbstripped) and mod["bias"] is None
    assert [(s["nr"], s["action"], s["reason"]) for s in mod["sites"]] == [
        (9, "break", None),
        (None, "break-if", None),  # a wrapper of its own (mov rax, rdi): read rdi at its first instruction
    ]
    assert mod["sites"][1]["probe"]["entry"] == mod["sites"][1]["early"]["vaddr"] < mod["sites"][1]["vaddr"]
    code, out, _ = run(fixture_paths.libsbstripped, "--json", "-s", "mmap", "--exhaustive")
    (mod,) = json.loads(out)["modules"]
    assert mod["sites"][1]["action"] == "break-if" and mod["sites"][1]["probe"]["condition_nrs"] == [9]


def test_live_pid(run: Run, spawn: Spawn) -> None:
    proc = spawn(["sleep", "30"])
    code, out, err = run(proc.pid, "--lib", r"/libc\.so")
    assert code == 0, err
    maps = Path(f"/proc/{proc.pid}/maps").read_text().splitlines()
    libc_path = next(ln.split()[5] for ln in maps if "libc.so" in ln)
    base = next(int(ln.split("-")[0], 16) for ln in maps if ln.endswith(libc_path) and ln.split()[2] == "00000000")
    lines = out.splitlines()
    assert lines[1].startswith(libc_path) and f"bias {base:#x}" in lines[1]
    mmap_line = next(ln for ln in lines if " mmap+0x" in ln)
    runtime, module_offset = mmap_line.split()[:2]
    assert int(runtime, 16) == base + int(module_offset.split("+")[1], 16)
    assert "sleep" not in out  # filtered out by --lib

    code, out, _ = run(proc.pid, "--format", "json")
    doc = json.loads(out)
    paths = [m["path"] for m in doc["modules"]]
    assert libc_path in paths and any(p.endswith("/sleep") for p in paths)
    assert all(m["bias"] is not None for m in doc["modules"])
    assert not any("[vdso]" in p for p in paths)


@pytest.mark.parametrize(
    ("args", "needles", "exit_code"),
    [
        (["/no/such/file"], ["/no/such/file: no such file"], 2),
        (["/etc/hostname"], ["not an ELF file"], 2),
        (["/etc"], ["directory"], 2),
        ([LIBC, "-s", "mmapp"], ["unknown x86-64 syscall 'mmapp'", "did you mean mmap"], 2),
        ([LIBC, "--lib", "("], ["bad --lib regex '('"], 2),
        ([LIBC, "--lib", "libpython"], ["does not match --lib"], 2),
        (["999999999"], ["no process", "999999999"], 3),
    ],
)
def test_bad_input_is_one_line(run: Run, args: list[str], needles: list[str], exit_code: int) -> None:
    code, out, err = run(*args)
    one_error(code, err, *needles, exit_code=exit_code)
    assert out == ""


def test_lib_matching_nothing_in_a_pid(run: Run, spawn: Spawn) -> None:
    proc = spawn(["sleep", "30"])
    code, _out, err = run(proc.pid, "--lib", "no-such-library")
    one_error(code, err, f"no executable file mapped into PID {proc.pid} matches --lib 'no-such-library'")


def test_usage_errors_are_short(run: Run) -> None:
    code, _out, err = run()
    assert code == 2 and "Traceback" not in err and "TARGET" in err
    code, _out, err = run(LIBC, "--no-such-option")
    assert code == 2 and "Traceback" not in err and "No such option" in err


def test_help_for_a_stranger(run: Run) -> None:
    code, out, _ = run("--help")
    assert code == 0
    for needle in ("TARGET", "PID", "--syscall", "--lib", "--exhaustive", "--format", "--all", "libucm", "skip"):
        assert needle in out, needle


def test_unreadable_file_as_another_user(tmp_path: Path, fixture_paths: FixturePaths) -> None:
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("needs root and setpriv to run as nobody")
    secret = tmp_path / "secret.so"
    shutil.copy(fixture_paths.libsbstripped, secret)
    secret.chmod(0o600)
    tmp_path.chmod(0o755)
    res = run_sysbreak("sites", secret, prefix=AS_NOBODY, env={**os.environ, "SYSBREAK_CACHE_DIR": "/nonexistent/x"})
    if "Permission denied" in res.stderr and "python" in res.stderr.lower():
        pytest.skip("nobody cannot run this checkout's python")
    one_error(res.returncode, res.stderr, "permission denied")


def test_real_command_line(fixture_paths: FixturePaths, tmp_path: Path) -> None:
    res = run_sysbreak("sites", fixture_paths.libsbstripped, env={**os.environ, "SYSBREAK_CACHE_DIR": str(tmp_path)})
    assert res.returncode == 0, res.stderr
    assert "sb_lib_map+0x" in res.stdout and "9 mmap" in res.stdout
    line = next(ln for ln in res.stdout.splitlines() if "sb_lib_syscall1+0x" in ln)
    assert line.endswith("break at sb_lib_syscall1+0x0 if rdi in {9,11,12,25}, and after")
    res = run_sysbreak(
        "sites", fixture_paths.libsbstripped, "--exhaustive", env={**os.environ, "SYSBREAK_CACHE_DIR": str(tmp_path)}
    )
    line = next(ln for ln in res.stdout.splitlines() if "sb_lib_syscall1+0x" in ln)
    assert line.endswith("break at sb_lib_syscall1+0x0 if rdi in {9,11,12,25}, and after") and "? (from caller)" in line
