"""`sysbreak sites` (not built yet)."""

from __future__ import annotations

import typer

from sysbreak.errors import SysbreakError


def register(app: typer.Typer) -> None:
    @app.command("sites")
    def command() -> None:
        """Not built yet."""
        raise SysbreakError("'sysbreak sites' is not built yet")
