"""`sysbreak report` (not built yet)."""

from __future__ import annotations

import typer

from sysbreak.errors import SysbreakError


def register(app: typer.Typer) -> None:
    @app.command("report")
    def command() -> None:
        """Not built yet."""
        raise SysbreakError("'sysbreak report' is not built yet")
