"""`sysbreak doctor` (not built yet)."""

from __future__ import annotations

import typer

from sysbreak.errors import SysbreakError


def register(app: typer.Typer) -> None:
    @app.command("doctor")
    def command() -> None:
        """Not built yet."""
        raise SysbreakError("'sysbreak doctor' is not built yet")
