"""The ``--max-events`` budget of a capture, shared by every GDB of a process tree (docs/capture-dir.md).

One file, ``budget`` at the top of the capture directory: every caught call appends one byte to it. Each GDB
(one per process, driver/tree.py) opens it with ``O_APPEND``; the kernel appends under the inode lock and leaves
the writer's own file offset just past its byte, so ``lseek(fd, 0, SEEK_CUR)`` after the write is the call's
number in the whole tree: 1, 2, ... N, no two alike, without a lock or a round trip through sysbreak. The call
that gets number N ends the capture of its process (and sysbreak, which watches the file's size, ends the
others); a call numbered above N was already stopped at its breakpoint in another process when N was reached
(in flight): it is logged like any other and counted as the overshoot in ``meta.json``.

Plain Python: the extension (in GDB) takes numbers, the driver reads the count.
"""

from __future__ import annotations

import os

from sysbreak.capture.schema import BUDGET

__all__ = ["BUDGET", "Budget", "taken"]


class Budget:
    """A process's handle on the shared budget file."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)

    def take(self) -> int:
        """Count one call; returns its number in the whole tree (1 for the first)."""
        os.write(self._fd, b".")
        return os.lseek(self._fd, 0, os.SEEK_CUR)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def taken(path: str | os.PathLike[str]) -> int:
    """How many calls the whole tree has counted so far (0 when the file does not exist yet)."""
    try:
        return os.stat(path).st_size
    except OSError:
        return 0
