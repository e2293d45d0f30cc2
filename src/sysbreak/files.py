"""Writing a file so that a reader never sees half of it."""

from __future__ import annotations

import contextlib
import os
import threading
from pathlib import Path


def atomic_write(path: str | os.PathLike[str], data: str | bytes, *, mode: int = 0o644, fsync: bool = False) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same directory and :func:`os.replace`.

    A reader sees the old file or the new one, never a part. ``fsync`` also makes the new content durable
    before the rename (meta.json). The temporary file is removed on every failure; ``OSError`` is raised as is
    (callers turn it into their one-line error with :func:`sysbreak.errors.os_error`)."""
    target = Path(path)
    tmp = target.with_name(f".{target.name}.{os.getpid()}-{threading.get_ident()}.tmp")
    payload = data.encode("utf-8") if isinstance(data, str) else data
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, mode)
        try:
            view = memoryview(payload)
            while view:
                view = view[os.write(fd, view) :]
            if fsync:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.chmod(tmp, mode)  # the umask narrowed os.open's mode
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
