"""`sysbreak attach`/`run` start their GDB first (sysbreak.driver.prestart): the capture uses it, and a command
that fails leaves no GDB and no hidden directory behind. Real gdb, real processes."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from conftest import FixturePaths, Spawn
from support.cli import error_line, run_sysbreak

from sysbreak.driver.prestart import PREFIX, Guess


def meta(capture: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((capture / "meta.json").read_text())
    return data


def holders_of(where: Path) -> list[int]:
    """The processes with a file under ``where`` open (a GDB started ahead has its MI log there)."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if target.startswith(str(where) + os.sep):
                found.append(int(pid))
                break
    return found


def assert_nothing_left(where: Path) -> None:
    assert not list(where.glob(PREFIX + "*")), "the GDB started ahead left its directory"
    assert holders_of(where) == [], "a process (the GDB started ahead) still has a file under the test directory"


# ------------------------------------------------------------------------------------------ pure logic
@pytest.mark.parametrize(
    ("args", "gdb_path", "non_stop", "output", "help_"),
    [
        (["123"], None, False, None, False),
        (["-p", "1", "-o", "out", "--non-stop"], None, True, "out", False),
        (["--output=x/y", "--gdb", "/opt/gdb", "--all-stop", "1"], "/opt/gdb", False, "x/y", False),
        (["-ocap", "--gdb=cuda-gdb", "1"], "cuda-gdb", False, "cap", False),
        (["--", "prog", "-o", "theirs", "--non-stop"], None, False, None, False),  # run: the program's arguments
        (["1", "--help"], None, False, None, True),
    ],
)
def test_the_guess_reads_what_a_gdb_start_depends_on(
    args: list[str], gdb_path: str | None, non_stop: bool, output: str | None, help_: bool
) -> None:
    g = Guess(args)
    assert (g.gdb, g.non_stop, g.output, g.help) == (gdb_path, non_stop, output, help_)


# ------------------------------------------------------------------------------------------ real gdb
gdb = pytest.mark.gdb


@gdb
def test_a_bad_pid_gives_its_one_line_error_and_leaves_no_gdb(tmp_path: Path) -> None:
    res = run_sysbreak("attach", "999999999", "-o", tmp_path / "x")
    assert res.returncode == 3
    assert "no process with pid 999999999 exists" in error_line(res)
    assert not (tmp_path / "x").exists()
    assert_nothing_left(tmp_path)


@gdb
def test_a_bad_option_after_the_gdb_start_leaves_no_gdb(
    fixture_paths: FixturePaths, spawn: Spawn, tmp_path: Path
) -> None:
    server = spawn([fixture_paths.leaky_server, "--interval-ms", "50"])
    res = run_sysbreak("attach", server.pid, "--lib", "[", "-o", tmp_path / "x")
    assert res.returncode == 2
    assert "--lib" in error_line(res)
    assert_nothing_left(tmp_path)
    assert server.popen.poll() is None


@gdb
def test_attach_and_run_use_the_gdb_started_first(fixture_paths: FixturePaths, spawn: Spawn, tmp_path: Path) -> None:
    server = spawn([fixture_paths.leaky_server, "--interval-ms", "50"])
    out = tmp_path / "attach"
    res = run_sysbreak("attach", server.pid, "-o", out, "--duration", "0.5", "--quiet")
    assert res.returncode == 0, res.stderr
    m = meta(out)
    assert m.get("gdb_prestarted") is True
    # its logs were moved into the capture directory, whole: they start with GDB's first command
    assert (out / "gdb.log").read_text().splitlines()[0].endswith("-gdb-set mi-async on")
    assert "^done" in (out / "gdb-mi.log").read_text()
    assert m["end_reason"] == "duration"
    assert_nothing_left(tmp_path)
    assert server.popen.poll() is None

    out = tmp_path / "run"
    res = run_sysbreak("run", "-o", out, "--quiet", "--", "/bin/true")
    assert res.returncode == 0, res.stderr
    assert meta(out).get("gdb_prestarted") is True
    assert_nothing_left(tmp_path)
