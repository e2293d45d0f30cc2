"""The event log's ``syscall`` lines decoded and type-checked in one C call each, by msgspec: the batch decoder's
hot path (:mod:`sysbreak.capture.decode`, through :meth:`sysbreak.capture.reader.EventReader.raw`).

Its own module so that only the analysis imports msgspec (30-60 ms): GDB's side of sysbreak writes the log and
never reads it. The rules stay :func:`sysbreak.capture.reader.syscall_fields`'; a line this refuses goes to them.
"""

from __future__ import annotations

from typing import Any

import msgspec


class FastSyscall(msgspec.Struct, gc=False):
    """A ``syscall`` line as the writer writes it, decoded in one C call (msgspec) by :func:`decode_syscall_line`."""

    type: str
    name: str
    args: tuple[int, int, int, int, int, int]
    ret: int | None = None
    t: float | int | None = None
    stack: int | None = None
    tid: Any = None
    seq: Any = None
    when: Any = None
    checked: Any = None


_FAST_SYSCALL = msgspec.json.Decoder(FastSyscall)


def decode_syscall_line(line: str) -> FastSyscall | None:
    """The fast path of ``syscall_fields`` for a whole ``syscall`` line: its fields when they are what the
    writer writes (a name, six unsigned 64-bit ``args``, an int or null ``ret`` and ``stack``, a number or null
    ``t``; ``tid``, ``seq`` and ``when`` anything), else None: the caller then decodes the line with
    :func:`~sysbreak.capture.reader.decode_line` and judges it with
    :func:`~sysbreak.capture.reader.syscall_fields` (which accepts all this accepts, and more).

    The same JSON as ``decode_line`` (the last of duplicate keys wins, whitespace around the object, unknown keys
    ignored); what only Python's decoder takes (NaN, lone surrogates, numbers out of a double's range) is
    left to it. ``t`` comes back as the JSON number it was (an int is the caller's to turn into a float)."""
    try:
        rec = _FAST_SYSCALL.decode(line)
    except (ValueError, RecursionError):  # msgspec's DecodeError and ValidationError are ValueErrors
        return None
    a0, a1, a2, a3, a4, a5 = rec.args
    if rec.type != "syscall" or (a0 | a1 | a2 | a3 | a4 | a5) >> 64:  # (negative ints too)
        return None
    return rec
