"""`sysbreak attach` (not built yet)."""

from __future__ import annotations

import typer

from sysbreak.errors import SysbreakError


def register(app: typer.Typer) -> None:
    @app.command("attach")
    def command() -> None:
        """Not built yet."""
        raise SysbreakError("'sysbreak attach' is not built yet")
