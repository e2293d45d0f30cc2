"""The option conventions of gdb, strace, perf and py-spy, through the real `sysbreak` entry point."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from conftest import FixturePaths, Spawn, run_sysbreak

from sysbreak.errors import ExitCode, SysbreakError, os_error

VERBS = ("sites", "run", "attach", "report", "diff", "doctor", "demo")


def test_version() -> None:
    import sysbreak

    for flag in ("--version", "-V"):
        res = run_sysbreak(flag)
        assert res.returncode == 0, res.stderr
        assert res.stdout.strip() == f"sysbreak {sysbreak.__version__}"


@pytest.mark.parametrize("verb", [None, *VERBS, "watch"])
def test_help_has_no_type_placeholders_for_flags(verb: str | None) -> None:
    res = run_sysbreak(*([verb] if verb else []), "--help")
    assert res.returncode == 0, res.stderr
    assert "<bool>" not in res.stdout and "BOOLEAN" not in res.stdout
    assert "╭" not in res.stdout  # plain help, as gdb/strace/perf print it


def test_hidden_aliases_work_but_are_not_advertised(fixture_paths: FixturePaths) -> None:
    demo = run_sysbreak("demo", "--help").stdout
    assert "-d, --duration SECONDS" in demo and "--seconds" not in demo
    sites = run_sysbreak("sites", "--help").stdout
    assert "-f, --format text|json" in sites and "--json" not in sites
    old = run_sysbreak("sites", fixture_paths.libsbstripped, "--json")
    new = run_sysbreak("sites", fixture_paths.libsbstripped, "-f", "json")
    assert old.returncode == new.returncode == 0 and old.stdout == new.stdout
    bad = run_sysbreak("sites", fixture_paths.libsbstripped, "-f", "xml")
    assert bad.returncode == 2 and "sysbreak: error: --format 'xml': sysbreak sites writes text or json" in bad.stderr
    run_help = run_sysbreak("run", "--help").stdout
    assert "--keep-running" in run_help and "--no-wait" not in run_help


def test_report_help_says_where_break_log_runs() -> None:
    out = run_sysbreak("report", "--help").stdout
    assert "inside gdb by the GDB command `sysbreak break --log FILE`" in " ".join(out.split())


def test_attach_takes_the_pid_as_p_or_as_argument(fixture_paths: FixturePaths, spawn: Spawn, tmp_path: Path) -> None:
    helptext = run_sysbreak("attach", "--help").stdout
    assert "-p, --pid PID" in helptext
    res = run_sysbreak("attach", "-o", tmp_path / "x")
    assert res.returncode == 2 and "give the process to attach to: sysbreak attach -p PID" in res.stderr
    res = run_sysbreak("attach", "-p", "x1", "-o", tmp_path / "x")
    assert res.returncode == 2 and "'x1' is not a process id" in res.stderr
    assert "Traceback" not in res.stderr

    server = spawn([fixture_paths.leaky_server, "--interval-ms", "50"])
    server.wait_lines(1)
    for i, how in enumerate((["-p", str(server.pid)], ["--pid", str(server.pid)], [str(server.pid)])):
        res = run_sysbreak("attach", *how, "-d", "0.3", "-q", "-o", tmp_path / f"c{i}")
        assert res.returncode == 0, res.stderr
        assert f"from pid {server.pid}" in res.stdout
    server.assert_alive_and_beating()


def test_usage_errors_are_click_lines_with_status_2() -> None:
    res = run_sysbreak("sites", "--no-such-option")
    assert res.returncode == ExitCode.USAGE
    assert "No such option: --no-such-option" in res.stderr and "Traceback" not in res.stderr
    res = run_sysbreak("bogus-verb")
    assert res.returncode == 2 and "No such command 'bogus-verb'" in res.stderr


def test_exit_codes_and_os_errors() -> None:
    assert [int(c) for c in ExitCode] == [0, 1, 2, 3, 4, 130]
    err = os_error(PermissionError(13, "Permission denied"), "cannot read /x", ExitCode.TARGET)
    assert isinstance(err, SysbreakError) and str(err) == "cannot read /x: Permission denied" and err.exit_code == 3
    assert str(os_error(OSError("odd"), "cannot write /y")) == "cannot write /y: odd"
    assert re.fullmatch(r"cannot open /z: .+", str(os_error(OSError(2, ""), "cannot open /z")))
