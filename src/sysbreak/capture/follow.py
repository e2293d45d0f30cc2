"""Following an event log (docs/event-log.md) as the in-GDB layer writes it: counts per syscall, modules, the end."""

from __future__ import annotations

import os
from collections import Counter
from typing import Any

from sysbreak.capture.reader import decode_line
from sysbreak.capture.schema import failed_return


class EventTail:
    """Reads the lines appended to an event log since the last :meth:`poll` (a cut-short last line waits)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)
        self._offset = 0
        self._partial = b""
        self.counts: Counter[str] = Counter()
        self.events = 0
        self.failed = 0  # calls whose ret was an -errno
        self.modules: list[dict[str, Any]] = []
        self.notes: list[str] = []
        self.end: dict[str, Any] | None = None
        self.header: dict[str, Any] | None = None

    def poll(self) -> list[dict[str, Any]]:
        """Consume new complete lines; returns the records other than syscall and stack ones."""
        try:
            with open(self.path, "rb") as fh:
                fh.seek(self._offset)
                data = fh.read()
        except FileNotFoundError:
            return []
        if not data:
            return []
        self._offset += len(data)
        data = self._partial + data
        *lines, self._partial = data.split(b"\n")
        other: list[dict[str, Any]] = []
        for raw in lines:
            if not raw.strip():
                continue
            try:
                rec = decode_line(raw.decode("utf-8", "replace"))
            except (ValueError, RecursionError):
                continue  # a damaged line: the readers skip it too
            if type(rec) is not dict:
                continue
            rtype = rec.get("type")
            if rtype == "syscall":
                self._count(rec)
            elif rtype == "stack":
                continue
            else:
                if rtype == "module":
                    self.modules.append(rec)
                elif rtype == "note":
                    self.notes.append(str(rec.get("message", "")))
                elif rtype == "end":
                    self.end = rec
                elif rtype == "header" and self.header is None:
                    self.header = rec
                other.append(rec)
        return other

    def _count(self, rec: dict[str, Any]) -> None:
        """Count a call for the progress line: any syscall record, named by ``name`` (or ``nr``), however damaged
        its other fields (the readers are stricter; this only shows that calls arrive)."""
        self.events += 1
        self.counts[str(rec.get("name", rec.get("nr", "?")))] += 1
        ret = rec.get("ret")
        if type(ret) is int and failed_return(ret):
            self.failed += 1

    def summary(self, order: list[str] | None = None) -> str:
        """``mmap 12, munmap 3`` in the order of ``order`` first, then the rest by count."""
        names = [n for n in (order or []) if n in self.counts]
        names += [n for n, _ in self.counts.most_common() if n not in names]
        return ", ".join(f"{n} {self.counts[n]}" for n in names) if names else "no events yet"
