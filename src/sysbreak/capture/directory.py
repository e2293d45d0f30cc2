"""Writing the capture directory (``sysbreak-capture/2``, docs/capture-dir.md): meta.json and the /proc snapshots.

The event log inside it is written by :mod:`sysbreak.capture.writer` (in GDB); reading is
:mod:`sysbreak.capture.reader`.

Everything here is incremental: meta.json is replaced atomically (write + fsync + rename), each snapshot file is
complete before its line is appended to ``snapshots/index.jsonl``, so a capture cut short at any moment is
readable.
"""

from __future__ import annotations

import errno
import json
import os
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from sysbreak.capture.residency import format_resident, partial_vmas, read_resident
from sysbreak.capture.schema import (
    BUDGET,
    CAPTURE_FORMAT,
    EVENTS,
    GDB_LOG,
    GDB_MI,
    META,
    RESTORE,
    SNAPSHOT_INDEX,
    SNAPSHOTS,
)
from sysbreak.errors import ExitCode, SysbreakError, os_reason
from sysbreak.files import atomic_write
from sysbreak.maps import sum_rss_kb

__all__ = [
    "BUDGET",
    "EVENTS",
    "GDB_LOG",
    "GDB_MI",
    "META",
    "RESTORE",
    "SNAPSHOTS",
    "Meta",
    "Snapshotter",
    "create",
    "default_name",
    "now_wall",
]


def now_wall() -> str:
    return datetime.now(timezone.utc).astimezone().isoformat(timespec="milliseconds")


def default_name(pid: int) -> str:
    return f"sysbreak-capture-{pid}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"


def create(path: str | os.PathLike[str]) -> Path:
    """Make the capture directory (and ``snapshots/``); a one-line error when that is impossible."""
    out = Path(path)
    try:
        if out.exists() and not out.is_dir():
            raise SysbreakError(
                f"cannot write the capture to '{out}': it exists and is not a directory", ExitCode.USAGE
            )
        if out.is_dir() and any(out.iterdir()):
            raise SysbreakError(
                f"'{out}' already exists and is not empty: give another directory with --output", ExitCode.USAGE
            )
        (out / SNAPSHOTS).mkdir(parents=True, exist_ok=True)
        probe = out / ".sysbreak-write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        reason = os_reason(exc)
        hint = "choose another place with --output"
        if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            hint = "choose a writable place with --output"
        raise SysbreakError(f"cannot create the capture directory '{out}': {reason}; {hint}", ExitCode.USAGE) from None
    return out


class Meta:
    """meta.json, kept in memory and rewritten atomically on every :meth:`update`."""

    def __init__(self, directory: Path, **fields: Any) -> None:
        self.path = directory / META
        self.data: dict[str, Any] = {"format": CAPTURE_FORMAT, **fields}
        self._lock = threading.Lock()
        self.write()

    def update(self, **fields: Any) -> None:
        with self._lock:
            self.data.update(fields)
        self.write()

    def write(self) -> None:
        with self._lock:
            text = json.dumps(self.data, indent=2, ensure_ascii=False) + "\n"
            atomic_write(self.path, text, fsync=True)


def _exited(pid: int) -> bool:
    """Whether process ``pid`` is gone or has no memory left (a zombie's statm is all zeros)."""
    try:
        with open(f"/proc/{pid}/statm", "rb") as fh:
            return fh.read().split()[:1] in ([], [b"0"])
    except OSError:
        return True


class Snapshotter:
    """Copies /proc/PID/smaps into the capture every ``interval`` seconds from a thread (plus on demand)."""

    def __init__(self, directory: Path, pid: int, interval: float, *, several: bool = False) -> None:
        self.dir = directory / SNAPSHOTS
        self.pid = pid
        self.interval = interval
        self.several = several  # snapshots of several processes: the pid goes into each file's name
        self.seq = 0
        self.first_rss_kb: int | None = None
        self.last_rss_kb: int | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._index = open(self.dir / SNAPSHOT_INDEX, "a", encoding="utf-8")  # noqa: SIM115

    def take(self) -> int | None:
        """One snapshot now; returns its RSS in kB, or None when the process is gone."""
        try:
            with open(f"/proc/{self.pid}/smaps", "rb") as fh:
                raw = fh.read()
        except OSError:
            return None
        t = time.monotonic()
        wall = now_wall()
        if not raw:  # a process that is exiting has no mappings left
            return None
        return self.write(raw, t, wall)

    def write(self, raw: bytes, t: float, wall: str, pid: int | None = None) -> int | None:
        """Add one snapshot (the raw smaps text of ``pid``, default this writer's, read at ``t``); its RSS in kB."""
        pid = self.pid if pid is None else pid
        text = raw.decode("utf-8", "replace")
        rss = sum_rss_kb(text)
        vmas = partial_vmas(text)
        runs = read_resident(pid, vmas) if vmas else None
        if runs is None and vmas and _exited(pid):
            # The process went between its smaps and its pagemap: like an exiting one with no mappings left, this
            # is no snapshot (one without its resident pages would make the last RSS an estimate, not exact).
            return None
        with self._lock:
            if self._index.closed:
                return None
            self.seq += 1
            name = f"smaps-{pid}-{self.seq:06d}.txt" if self.several else f"smaps-{self.seq:06d}.txt"
            with open(self.dir / name, "wb") as fh:
                fh.write(raw)
            line = {"seq": self.seq, "t": t, "wall": wall, "file": name, "rss_kb": rss, "pid": pid}
            if runs is not None:
                resident = name.replace("smaps-", "resident-", 1)
                with open(self.dir / resident, "w", encoding="ascii") as fh:
                    fh.write(format_resident(vmas, runs))
                line["resident"] = resident
            self._index.write(json.dumps(line) + "\n")
            self._index.flush()
            if pid == self.pid:
                if self.first_rss_kb is None:
                    self.first_rss_kb = rss
                self.last_rss_kb = rss
        return rss

    def start(self) -> None:
        if self.interval <= 0 or self._thread is not None:
            return
        self._thread = threading.Thread(target=self._loop, name="sysbreak-snapshots", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self.take()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def close(self) -> None:
        self.stop()
        with self._lock:
            self._index.close()
