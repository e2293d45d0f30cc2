"""The in-gdb commands as a gdb user meets them: settings, errors, completion, and what they say after the end."""

from __future__ import annotations

from pathlib import Path

import pytest
from gdbutil import BUILD, build_fixtures, run_gdb

pytestmark = pytest.mark.gdb


@pytest.fixture(scope="module", autouse=True)
def _fixtures() -> None:
    build_fixtures()


def _lines(out: str) -> list[str]:
    return [ln for ln in out.splitlines() if not ln.startswith("sysbreak: [")]


def test_show_sysbreak_lists_every_setting_and_bad_words_are_one_line() -> None:
    res = run_gdb(
        ["set sysbreak max-depth 12", "show sysbreak", "sysbreak bogus", "show sysbreak nonsense"],
        [str(BUILD / "mapper"), "1", "1"],
    )
    out = res.stdout + res.stderr
    for name, value in [
        ("quiet", "off"),
        ("max-depth", "12"),
        ("python-stacks", "off"),
        ("exhaustive", "off"),
        ("detach-on-exit", "off"),
        ("log", '""'),
        ("stack-cache", "on"),
    ]:
        assert any(ln.split()[:3] == ["sysbreak", name, value] for ln in out.splitlines()), (name, out)
    bogus = [ln for ln in out.splitlines() if "bogus" in ln]
    assert bogus == ["sysbreak: no command 'bogus'; the commands are break, sites, status and clear (help sysbreak)"]
    assert "Catch the system calls" not in out  # not the whole help
    assert "show sysbreak: no setting 'nonsense'" in out


def test_help_lists_every_break_option() -> None:
    res = run_gdb(["help sysbreak", "help sysbreak break"], [str(BUILD / "mapper"), "1", "1"])
    top = res.stdout.split("List of sysbreak subcommands")[0]
    for option in ("--lib", "--log", "--python-stacks", "--exhaustive", "--quiet", "--max-events", "--restore-file"):
        assert option in top, option
    assert "show sysbreak" in top


def test_options_and_syscall_names_complete() -> None:
    res = run_gdb(
        [
            "complete sysbreak break mun",
            "complete sysbreak break --l",
            "complete sysbreak break mmap,mre",
            "complete sysbreak sites --e",
            "complete sysbreak st",
            f"complete sysbreak break --log {BUILD}/ucm_le",
            "break leak_region",
            "run",
            "complete sysbreak break --lib libuc",
            "kill",
        ],
        [str(BUILD / "ucm_leak"), "1"],
    )
    got = res.stdout.splitlines()
    for line in (
        "sysbreak break munmap",
        "sysbreak break --lib",
        "sysbreak break --log",
        "sysbreak break mmap,mremap",
        "sysbreak sites --exhaustive",
        "sysbreak status",
        f"sysbreak break --log {BUILD}/ucm_leak",
        "sysbreak break --lib libucm.so.0",
        "sysbreak break --lib libucs.so.0",
    ):
        assert line in got, (line, res.stdout, res.stderr)
    assert "sysbreak break --lexhaustive" not in got and "sysbreak break munlockall" in got


def test_after_the_program_exits_status_and_clear_say_what_happened(tmp_path: Path) -> None:
    log = tmp_path / "ev.jsonl"
    res = run_gdb(
        [f"sysbreak break mmap --log {log}", "run", "sysbreak status", "sysbreak clear"],
        [str(BUILD / "ucm_leak"), "1"],
    )
    out = _lines(res.stdout)
    exited = [ln for ln in out if ln.startswith("sysbreak: the program exited")]
    assert exited and "breakpoint(s) are gone with it" in exited[0] and f"log closed: {log}" in exited[0]
    status = next(ln for ln in out if ln.startswith("sysbreak: not armed"))
    assert "the program exited, and its" in status and "breakpoint(s) went with it" in status
    assert f"log: {log}" in status and "cleared" not in status
    clear = next(ln for ln in out if ln.startswith("sysbreak: nothing to clear"))
    assert "the program exited" in clear


def test_clear_while_armed_and_status_of_a_cleared_tracer() -> None:
    res = run_gdb(
        ["break leak_region", "sysbreak break mmap", "run", "sysbreak clear", "sysbreak status", "kill"],
        [str(BUILD / "ucm_leak"), "1"],
    )
    out = _lines(res.stdout)
    assert any(ln.startswith("sysbreak: removed ") and "the original bytes are back" in ln for ln in out), out
    assert any("not armed: `sysbreak clear` removed its" in ln for ln in out), out


def test_break_says_where_it_records(tmp_path: Path) -> None:
    res = run_gdb(
        ["sysbreak break mmap", "sysbreak status", "sysbreak clear", "sysbreak break mmap --quiet", "sysbreak clear",
         f"sysbreak break mmap --log {tmp_path / 'l.jsonl'}"],
        [str(BUILD / "mapper"), "1", "1"],
    )  # fmt: skip
    out = res.stdout
    assert "sysbreak: armed, catching mmap (callsite mode); the breakpoints are placed when the program runs" in out
    assert "not recording to a file: calls are printed on the console only (--log FILE keeps them)" in out
    assert "recording nowhere: no --log and --quiet" in out
    assert f"recording to {tmp_path / 'l.jsonl'}" in out


def test_sites_lib_before_the_library_is_loaded() -> None:
    res = run_gdb(
        ["sysbreak sites --lib libucm", "break main", "run", "sysbreak sites --lib libnotloaded", "kill"],
        [str(BUILD / "mapper"), "1", "1"],
    )
    err = res.stderr
    assert "sysbreak sites: no module matching --lib 'libucm' is loaded yet: the program is not running" in err
    line = next(ln for ln in err.splitlines() if "libnotloaded" in ln)
    assert "is loaded yet (loaded: mapper, " in line and "libc.so.6" in line


def test_loading_the_extension_does_not_import_capstones_binding() -> None:
    """The loader only checks that capstone is there: importing its Python binding (every architecture's module)
    took 0.15-0.5 s of every GDB start, and sysbreak decodes through capstone's C library directly."""
    out = run_gdb(["python import sys; print('binding:', 'capstone' in sys.modules)", "help sysbreak"], ["/bin/true"])
    assert "binding: False" in out.stdout, out.stdout + out.stderr
    assert "sysbreak: cannot load" not in out.stdout + out.stderr
    assert "sysbreak break" in out.stdout


def test_prepare_loads_before_the_attach_what_arming_decodes_with() -> None:
    """What the arming inside the attach's stop needs (capstone's binding for the step-over emulation, its C
    library for scans of libraries loaded later) is loaded by `sysbreak prepare PID`, before the attach."""
    import subprocess

    target = subprocess.Popen(["sleep", "30"])
    try:
        out = run_gdb(
            [
                f"sysbreak prepare {target.pid}",
                "python import sys; from sysbreak.elfscan import x86; "
                "print('loaded:', 'capstone' in sys.modules, x86._engine is not None)",
            ],
            ["/bin/true"],
        )
    finally:
        target.kill()
        target.wait()
    assert "loaded: True True" in out.stdout, out.stdout + out.stderr
