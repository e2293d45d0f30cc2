"""The records of the event log and the names of the capture directory: the one definition of both formats.

``sysbreak-events/3`` (docs/event-log.md) and ``sysbreak-capture/2`` (docs/capture-dir.md), older versions still
read, are defined here once; the writers (:mod:`sysbreak.capture.writer`, :mod:`sysbreak.capture.directory`), the
typed reader (:mod:`sysbreak.capture.reader`), the batch decoder (:mod:`sysbreak.capture.decode`) and the tail follower
(:mod:`sysbreak.capture.follow`) all take them from here. :class:`Frame` and :class:`PyFrame` are part of the
event log's ``stack`` record; the analysis result (:mod:`sysbreak.analysis.model`) reuses them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

EVENTS_FORMAT = "sysbreak-events/3"
#: The event-log versions the readers accept: /3 adds raw stacks (``stack`` records with ``raw``: registers and
#: stack bytes, unwound when read); /2 adds ``when: "before"`` (a release logged before the kernel acted, ``ret``
#: null); a /1 log has every call logged after it returned.
EVENTS_FORMATS_READ = ("sysbreak-events/3", "sysbreak-events/2", "sysbreak-events/1")
CAPTURE_FORMAT = "sysbreak-capture/2"
#: The capture-directory versions the readers accept: /2 holds a process tree (meta.json ``processes``, one
#: ``procs/PID/`` directory per process after the first); a /1 directory is one process.
CAPTURE_FORMATS_READ = ("sysbreak-capture/2", "sysbreak-capture/1")

# The files of a capture directory (docs/capture-dir.md).
EVENTS = "events.jsonl"
META = "meta.json"
SNAPSHOTS = "snapshots"
SNAPSHOT_INDEX = "index.jsonl"  # inside SNAPSHOTS
GDB_LOG = "gdb.log"
GDB_MI = "gdb-mi.log"
RESTORE = "restore.jsonl"
BUDGET = "budget"  # the --max-events count of the whole tree, one byte per call (capture/budget.py)

_U64_FAIL = (1 << 64) - 4095


def failed_return(ret: int | None) -> bool:
    """A ``ret`` that is not a success: unknown (None), a signed ``-errno``, or an unsigned ``-errno``."""
    return ret is None or -4095 <= ret < 0 or ret >= _U64_FAIL


@dataclass(frozen=True)
class Frame:
    """One native frame, innermost first in a stack. Unknown parts are None."""

    pc: int | None
    module: str | None
    offset: int | None
    function: str | None
    file: str | None = None
    line: int | None = None


@dataclass(frozen=True)
class PyFrame:
    """One CPython frame (innermost first)."""

    file: str
    line: int | None
    function: str


@dataclass(slots=True)
class HeaderRecord:
    format: str
    pid: int | None = None
    arch: str | None = None
    exe: str | None = None
    syscalls: list[str] = field(default_factory=list)
    mode: str | None = None
    t0: float | None = None
    wall0: str | None = None
    tool: str | None = None
    gdb: str | None = None


@dataclass(slots=True)
class ModuleRecord:
    path: str
    base: int | None = None
    bias: int | None = None
    build_id: str | None = None
    sites: int | None = None
    breakpoints: int | None = None


@dataclass(slots=True)
class StackRecord:
    id: int
    frames: tuple[Frame, ...]
    python: tuple[PyFrame, ...] = ()


@dataclass(slots=True)
class SyscallRecord:
    name: str  # "mmap", "munmap", "mremap", "brk", or another syscall's name
    args: tuple[int, ...]  # six unsigned arguments in kernel order (padded with 0 when the log has fewer)
    ret: int | None  # signed; None when the return was not seen, or for a call logged before it entered the kernel
    t: float | None = None
    stack: int | None = None
    seq: int | None = None
    tid: int | None = None
    nr: int | None = None
    site: dict[str, Any] | None = None
    when: str | None = None  # "before": logged before the kernel acted (a release; docs/event-log.md, "Order")

    @property
    def failed(self) -> bool:
        """The call did not succeed (``-errno``), or its return is unknown. A release logged before the kernel
        acted counts as done: it succeeds unless its arguments are invalid, which the replay checks."""
        if self.when == "before":
            return False
        return failed_return(self.ret)


@dataclass(slots=True)
class NoteRecord:
    message: str
    t: float | None = None


@dataclass(slots=True)
class EndRecord:
    t: float | None = None
    events: int | None = None
    reason: str | None = None


Record = HeaderRecord | ModuleRecord | StackRecord | SyscallRecord | NoteRecord | EndRecord
