"""The event-log writer used inside GDB (``sysbreak-events/3``, docs/event-log.md).

Plain Python, no ``gdb`` import: the in-GDB layer hands plain dicts and ints to :class:`EventLogWriter`.
Every record is one line, written and flushed at once, so a crash of GDB loses at most the line in flight.
"""

from __future__ import annotations

import base64
import json
import os
from typing import IO, Any

from sysbreak.capture.schema import EVENTS_FORMAT

_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), check_circular=False).encode


class EventLogWriter:
    """Appends records to an event log; interns stacks so a repeated stack costs one integer."""

    def __init__(self, path: str | os.PathLike[str], *, append: bool = True) -> None:
        self.path = os.fspath(path)
        self._fh: IO[str] = open(self.path, "a" if append else "w", encoding="utf-8")  # noqa: SIM115
        self._stacks: dict[tuple[Any, ...], int] = {}
        self.seq = 0

    def _write(self, record: dict[str, Any]) -> None:
        self._fh.write(_dumps(record) + "\n")
        self._fh.flush()

    def header(self, **fields: Any) -> None:
        self._write({"type": "header", "format": EVENTS_FORMAT, **fields})

    def module(self, **fields: Any) -> None:
        self._write({"type": "module", **fields})

    def note(self, message: str, t: float) -> None:
        self._write({"type": "note", "t": t, "message": message})

    def exec(self, **fields: Any) -> None:
        """The process replaced its image (execve): every mapping before this record is gone."""
        self._write({"type": "exec", **fields})

    def stack_id(self, key: tuple[Any, ...], frames: list[dict[str, Any]], python: list[dict[str, Any]]) -> int:
        """Return the id of the stack identified by ``key``, writing its record the first time it is seen.

        ``key`` is any hashable that identifies the stack cheaply (the tuple of pcs plus Python frames).
        """
        sid = self._stacks.get(key)
        if sid is None:
            sid = len(self._stacks) + 1
            self._stacks[key] = sid
            self._write({"type": "stack", "id": sid, "frames": frames, "python": python})
        return sid

    def raw_stack(
        self, key: tuple[Any, ...], frames: list[dict[str, Any]], python: list[dict[str, Any]], raw: dict[str, Any]
    ) -> int:
        """Like :meth:`stack_id` for a stack not unwound yet: ``frames`` are the frames known at capture time (a
        synthetic ``syscall`` frame, or none), ``raw`` holds ``regs``, ``stack`` (bytes from ``$rsp``),
        ``truncated`` and optionally ``pc0`` (docs/event-log.md, ``raw``)."""
        sid = self._stacks.get(key)
        if sid is None:
            sid = len(self._stacks) + 1
            self._stacks[key] = sid
            # The stack's base64 is spliced in as the raw object's last member rather than handed to the JSON
            # encoder, which scans every character of it for escapes (220 us for a 21 KB stack against 86 us;
            # base64 needs none): the same JSON, read back the same.
            rest = {k: v for k, v in raw.items() if k != "stack"}
            head = _dumps({"type": "stack", "id": sid, "frames": frames, "python": python, "raw": rest})
            fh = self._fh
            fh.write(head[:-2] + (',"stack":"' if rest else '"stack":"'))
            fh.write(base64.b64encode(raw["stack"]).decode("ascii"))
            fh.write('"}}\n')
            fh.flush()
        return sid

    def known_stack(self, key: tuple[Any, ...]) -> int | None:
        return self._stacks.get(key)

    def event(self, **fields: Any) -> None:
        self.seq += 1
        self._write({"type": "syscall", "seq": self.seq, **fields})

    def result(self, **fields: Any) -> None:
        """The result of a call logged before it entered the kernel (``of``: its seq), when it failed."""
        self._write({"type": "result", **fields})

    def end(self, reason: str, t: float) -> None:
        self._write({"type": "end", "t": t, "events": self.seq, "reason": reason})

    def close(self) -> None:
        if not self._fh.closed:
            self._fh.close()
