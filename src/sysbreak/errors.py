"""The one exception type users see as a one-line message (never a traceback), the exit codes, and the one
helper that turns an :class:`OSError` into such a message."""

from __future__ import annotations

import enum
import os


class ExitCode(enum.IntEnum):
    """The exit statuses of every ``sysbreak`` command (documented in the README)."""

    OK = 0
    #: the command ran but could not do its job (GDB died during a capture, ``doctor`` found a problem)
    FAILED = 1
    #: bad usage or input: an unknown option, a bad regex, a file that is not what it should be
    USAGE = 2
    #: a target that cannot be traced or read (no such process, permission, ptrace refused)
    TARGET = 3
    #: a missing tool (gdb, gdb without Python, a C compiler for the demo)
    TOOL = 4
    #: ended by Ctrl-C before it could finish (the shell's 128 + SIGINT)
    INTERRUPTED = 130


class SysbreakError(Exception):
    """A problem the user can act on. ``str(err)`` is a complete one-line sentence; ``exit_code`` an
    :class:`ExitCode` (``USAGE`` unless said otherwise)."""

    def __init__(self, message: str, exit_code: int = ExitCode.USAGE) -> None:
        super().__init__(message)
        self.exit_code = int(exit_code)


def os_reason(exc: OSError) -> str:
    """What went wrong, as the C library says it (``Permission denied``), never a Python repr."""
    if exc.strerror:
        return exc.strerror
    if exc.errno:
        return os.strerror(exc.errno)
    return str(exc) or type(exc).__name__


def os_error(exc: OSError, doing: str, exit_code: int = ExitCode.USAGE) -> SysbreakError:
    """The one-line error for ``exc``: ``"{doing}: {reason}"``, e.g. ``cannot read /x: Permission denied``.

    Use it as ``raise os_error(exc, f"cannot read {path}") from None``."""
    return SysbreakError(f"{doing}: {os_reason(exc)}", exit_code)
