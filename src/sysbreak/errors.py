"""The one exception type users see as a one-line message (never a traceback)."""

from __future__ import annotations


class SysbreakError(Exception):
    """A problem the user can act on. ``str(err)`` is a complete one-line sentence.

    ``exit_code`` follows the shell conventions the CLI documents: 2 for bad usage or input, 3 for a target
    that cannot be traced (no such process, permission), 4 for a missing tool (gdb, gdb without Python).
    """

    def __init__(self, message: str, exit_code: int = 2) -> None:
        super().__init__(message)
        self.exit_code = exit_code
