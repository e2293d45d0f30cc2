"""Helpers for tests that drive a real gdb with the sysbreak extension against real processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from support.fixtures import build_fixtures

__all__ = ["BUILD", "ROOT", "SCRIPT", "build_fixtures", "gdb_env", "read_log", "run_gdb"]

ROOT = Path(__file__).resolve().parent.parent
BUILD = ROOT / "fixtures" / "build"
SCRIPT = ROOT / "gdb_scripts" / "sysbreak.py"


def gdb_env() -> dict[str, str]:
    env = dict(os.environ)
    env["SYSBREAK_PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p and os.path.isdir(p))
    return env


def run_gdb(
    commands: list[str], program: list[str], *, timeout: float = 120, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    """gdb -batch with the extension sourced, then ``commands``; ``program`` is given with --args."""
    argv = ["gdb", "-nx", "-q", "-batch", "-ex", "set pagination off", "-ex", f"source {SCRIPT}"]
    for c in commands:
        argv += ["-ex", c]
    argv += ["--args", *program]
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=gdb_env(), input=stdin or "")


def read_log(path: Path) -> dict[str, Any]:
    """The records of an event log: stacks by id, events, modules, the end record."""
    stacks: dict[int, dict[str, Any]] = {}
    events: list[dict[str, Any]] = []
    modules: list[dict[str, Any]] = []
    end = None
    headers = []
    for line in path.read_text().splitlines():
        rec = json.loads(line)
        kind = rec["type"]
        if kind == "stack":
            stacks[rec["id"]] = rec
        elif kind == "syscall":
            events.append(rec)
        elif kind == "module":
            modules.append(rec)
        elif kind == "end":
            end = rec
        elif kind == "header":
            headers.append(rec)
    return {"stacks": stacks, "events": events, "modules": modules, "end": end, "headers": headers}


def functions(log: dict[str, Any], event: dict[str, Any]) -> list[str | None]:
    return [f["function"] for f in log["stacks"][event["stack"]]["frames"]]


def events_through(log: dict[str, Any], function: str, name: str | None = None) -> list[dict[str, Any]]:
    return [e for e in log["events"] if function in functions(log, e) and (name is None or e["name"] == name)]
