"""The event-log and capture-directory formats, owned in one place (docs/event-log.md, docs/capture-dir.md).

=========================================  ====================================================================
:mod:`sysbreak.capture.schema`             format names (``sysbreak-events/3``, ``sysbreak-capture/2``), file
                                           names, the record dataclasses (with :class:`Frame`, :class:`PyFrame`)
:mod:`sysbreak.capture.writer`             :class:`EventLogWriter`, the event-log writer used inside GDB
:mod:`sysbreak.capture.directory`          writing a capture directory: ``meta.json``, the smaps snapshots
:mod:`sysbreak.capture.reader`             the typed readers: :func:`read_events`, :func:`open_capture`
:mod:`sysbreak.capture.decode`             the fast batch decoder the analysis replays (in a worker process)
:mod:`sysbreak.capture.fastline`           a ``syscall`` line decoded and checked by msgspec (the decoder's
                                           hot path; imported by the analysis only)
:mod:`sysbreak.capture.follow`             :class:`~sysbreak.capture.follow.EventTail`, following a log as
                                           it is written (progress of ``run``/``attach``)
=========================================  ====================================================================

Plain Python, no ``gdb`` import, and nothing from the analysis: this is the bottom floor every other part stands
on. The names most callers need are re-exported here.
"""

from __future__ import annotations

from sysbreak.capture.reader import (
    MAX_WARNINGS,
    Capture,
    EventReader,
    SnapshotRef,
    open_capture,
    read_events,
)
from sysbreak.capture.schema import (
    CAPTURE_FORMAT,
    EVENTS_FORMAT,
    EVENTS_FORMATS_READ,
    EndRecord,
    Frame,
    HeaderRecord,
    ModuleRecord,
    NoteRecord,
    PyFrame,
    Record,
    StackRecord,
    SyscallRecord,
)
from sysbreak.capture.writer import EventLogWriter

__all__ = [
    "CAPTURE_FORMAT",
    "EVENTS_FORMAT",
    "EVENTS_FORMATS_READ",
    "MAX_WARNINGS",
    "Capture",
    "EndRecord",
    "EventLogWriter",
    "EventReader",
    "Frame",
    "HeaderRecord",
    "ModuleRecord",
    "NoteRecord",
    "PyFrame",
    "Record",
    "SnapshotRef",
    "StackRecord",
    "SyscallRecord",
    "open_capture",
    "read_events",
]
