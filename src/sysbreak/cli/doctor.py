"""``sysbreak doctor``: check that a capture can work on this machine, and say how to fix what cannot."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from sysbreak.errors import ExitCode


def register(app: typer.Typer) -> None:
    @app.command(
        "doctor",
        help=(
            "Check that sysbreak can capture here: GDB present and built with Python, GDB's Python able to import "
            "sysbreak, capstone and pyelftools, sysbreak's GDB commands loading, ptrace allowed (Yama "
            "ptrace_scope, root or CAP_SYS_PTRACE, a real attach to a test process), and, with --pid, that PID "
            "can be traced. One line per check; exits 1 when a capture cannot work."
        ),
    )
    def command(
        gdb: Annotated[str | None, typer.Option("--gdb", metavar="PATH", help="GDB to check (default: gdb).")] = None,
        pid: Annotated[
            int | None, typer.Option("--pid", "-p", help="Also check that this process can be traced.")
        ] = None,
    ) -> None:
        from sysbreak.driver.doctor import run_checks

        checks = run_checks(gdb=gdb, pid=pid)
        for check in checks:
            print(check.line())
        failed = [c for c in checks if c.failed]
        if failed:
            print(f"sysbreak doctor: {len(failed)} problem(s); a capture cannot work until they are fixed")
            sys.exit(ExitCode.FAILED)
        print("sysbreak doctor: everything a capture needs is here")
