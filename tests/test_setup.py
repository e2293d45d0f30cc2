"""scripts/setup.sh's steps, run for real in bash: it says what it does, and it puts `sysbreak` on PATH."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LIB = ROOT / "scripts" / "setup-lib.sh"
VENV_SYSBREAK = ROOT / ".venv" / "bin" / "sysbreak"


def bash(script: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", "-c", f"set -euo pipefail; . {LIB}; {script}"],
        capture_output=True,
        text=True,
        timeout=60,
        # the caller's own SYSBREAK_NO_LINK (say a set-up run with it) must not change what is tested
        env={**{k: v for k, v in os.environ.items() if k != "SYSBREAK_NO_LINK"}, **(env or {})},
        check=False,
    )


def test_setup_hides_no_step_behind_quiet_flags() -> None:
    text = (ROOT / "scripts" / "setup.sh").read_text()
    assert "-qq" not in text and "pip install -q" not in text and ">/dev/null\n" not in text.split("need=()")[1]


def test_run_logged_shows_matching_lines_as_they_come_and_everything_on_failure() -> None:
    res = bash("run_logged '^Get:' sh -c 'echo Get:1 one; echo noise; echo Get:2 two'")
    assert res.returncode == 0
    assert res.stdout.splitlines() == ["setup:   Get:1 one", "setup:   Get:2 two"]
    res = bash("run_logged '^Get:' sh -c 'echo Get:1 one; echo the reason it broke; exit 7'; echo not reached")
    assert res.returncode == 7
    assert "setup: FAILED (exit status 7)" in res.stdout and "the reason it broke" in res.stdout
    assert "not reached" not in res.stdout


def test_link_cli_puts_sysbreak_on_path_and_it_runs(tmp_path: Path) -> None:
    ro = tmp_path / "readonly-bin"
    ro.mkdir()
    ro.chmod(0o555)
    home = tmp_path / "home"
    home.mkdir()
    env = {"HOME": str(home), "SYSBREAK_LINK_DIRS": f"{ro} {home}/.local/bin"}
    if os.geteuid() == 0:  # root writes anywhere: make the first one a place with a real file to keep
        (ro / "sysbreak").write_text("#!/bin/sh\necho not ours\n")
    res = bash(f"link_cli {VENV_SYSBREAK}", env)
    assert res.returncode == 0, res.stderr
    link = home / ".local" / "bin" / "sysbreak"
    assert link.is_symlink() and link.resolve() == VENV_SYSBREAK.resolve()
    assert f"setup: linked {link} -> {VENV_SYSBREAK}" in res.stdout
    assert "is not on your PATH" in res.stdout  # and says how to add it
    if os.geteuid() == 0:
        assert "not replacing" in res.stdout and (ro / "sysbreak").read_text().endswith("not ours\n")
    # the README's bare `sysbreak`, found on PATH through the link: the real entry point
    run = subprocess.run(
        ["sysbreak", "--version"],
        capture_output=True,
        text=True,
        env={**os.environ, "PATH": f"{link.parent}:/usr/bin:/bin"},
        check=False,
    )
    assert run.returncode == 0 and run.stdout.startswith("sysbreak "), run.stderr
    again = bash(f"link_cli {VENV_SYSBREAK}", {**env, "PATH": f"{link.parent}:/usr/bin:/bin"})
    assert "type `sysbreak` to run it" in again.stdout


def test_link_cli_says_how_to_run_it_when_nothing_is_writable(tmp_path: Path) -> None:
    res = bash(f"link_cli {VENV_SYSBREAK}", {"SYSBREAK_LINK_DIRS": str(tmp_path / "missing")})
    assert res.returncode == 0
    assert f"run it as {VENV_SYSBREAK}" in res.stdout and "export PATH=" in res.stdout
    res = bash(f"link_cli {VENV_SYSBREAK}", {"SYSBREAK_NO_LINK": "1"})
    assert "SYSBREAK_NO_LINK=1" in res.stdout
