"""The typed readers of the event log (docs/event-log.md) and of a capture directory (docs/capture-dir.md).

:func:`read_events` streams typed records (the dataclasses of :mod:`sysbreak.capture.schema`:
:class:`HeaderRecord`, :class:`ModuleRecord`, :class:`StackRecord`, :class:`SyscallRecord`, :class:`NoteRecord`,
:class:`EndRecord`) from a log, collecting the damaged lines it skips in ``reader.warnings``; :func:`open_capture`
opens a capture directory or a bare log and gives its meta, its event stream and its snapshot list. Both tolerate
what a capture cut short leaves behind.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from sysbreak import syscalls
from sysbreak.capture import rawstack
from sysbreak.capture.schema import (
    CAPTURE_FORMATS_READ,
    EVENTS,
    EVENTS_FORMAT,
    EVENTS_FORMATS_READ,
    META,
    SNAPSHOT_INDEX,
    SNAPSHOTS,
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
from sysbreak.errors import SysbreakError, os_error, os_reason

MAX_WARNINGS = 50  # warnings kept word for word; the others are only counted

_DECODER = json.JSONDecoder()


def decode_line(line: str) -> Any:
    """One JSON document on one line (surrounding whitespace allowed); ValueError otherwise."""
    try:
        obj, end = _DECODER.raw_decode(line)
    except ValueError:
        return json.loads(line)  # leading whitespace: rare, let the full decoder judge
    if end != len(line) and not line[end:].isspace():
        raise ValueError("extra data after the JSON object")
    return obj


def _is_int(x: Any) -> bool:
    return type(x) is int


def _num(x: Any) -> float | None:
    return float(x) if type(x) in (int, float) else None


def _opt_int(x: Any) -> int | None:
    return x if type(x) is int else None


def _opt_str(x: Any) -> str | None:
    return x if isinstance(x, str) else None


def _frame(d: Any) -> Frame:
    if not isinstance(d, dict):
        raise TypeError("frame")
    return Frame(
        pc=_opt_int(d.get("pc")),
        module=_opt_str(d.get("module")),
        offset=_opt_int(d.get("offset")),
        function=_opt_str(d.get("function")),
        file=_opt_str(d.get("file")),
        line=_opt_int(d.get("line")),
    )


def _pyframe(d: Any) -> PyFrame:
    if not isinstance(d, dict) or not isinstance(d.get("file"), str):
        raise TypeError("python frame")
    return PyFrame(file=d["file"], line=_opt_int(d.get("line")), function=_opt_str(d.get("function")) or "?")


def _stack_frames(obj: dict[str, Any]) -> tuple[tuple[Frame, ...], tuple[PyFrame, ...]]:
    frames, python = obj.get("frames"), obj.get("python") or []
    if not isinstance(frames, list) or not isinstance(python, list):
        raise TypeError("frames")
    return tuple(_frame(f) for f in frames), tuple(_pyframe(f) for f in python)


_U64 = 1 << 64
SyscallFields = tuple[str, list[int], int | None, float | None, int | None]


def syscall_fields(obj: dict[str, Any], arch: str | None = None) -> SyscallFields:
    """``(name, args, ret, t, stack)`` of a decoded ``syscall`` line, checked once, by the rules of docs/event-log.md.

    The one place these rules live: the typed reader (:meth:`EventReader.syscall`) and the batch decoder
    (:mod:`sysbreak.capture.decode`) both call it. ``args`` are six unsigned 64-bit ints (fewer are padded with
    0); ``ret`` an int or null; ``name`` a string, or from ``nr`` on ``arch`` when missing; ``stack`` an int or
    null; ``t`` a number (else None). Raises TypeError naming the first field that breaks them.
    """
    args = obj.get("args")
    if type(args) is list and len(args) == 6:  # as the writer writes it: checked without a loop
        a0, a1, a2, a3, a4, a5 = args
        # six ints (bools are not: their type is bool), none negative or of 65 bits or more
        if (
            not (type(a0) is type(a1) is type(a2) is type(a3) is type(a4) is type(a5) is int)
            or (a0 | a1 | a2 | a3 | a4 | a5) >> 64
        ):
            raise TypeError("args")
    elif type(args) is list and len(args) < 6:
        for a in args:
            if type(a) is not int or not 0 <= a < _U64:
                raise TypeError("args")
        args = args + [0] * (6 - len(args))
    else:
        raise TypeError("args")
    ret = obj.get("ret")
    if ret is not None and type(ret) is not int:
        raise TypeError("ret")
    name = obj.get("name")
    if type(name) is not str:
        nr = obj.get("nr")
        name = syscalls.known_name(nr, arch) if type(nr) is int else None
        if name is None:
            raise TypeError("name")
    stack = obj.get("stack")
    if stack is not None and type(stack) is not int:
        raise TypeError("stack")
    t = obj.get("t")
    if type(t) is not float:
        t = float(t) if type(t) is int else None
    return name, args, ret, t, stack


def decode_syscall_line(line: str) -> Any:
    """The fast path of :func:`syscall_fields` for a whole ``syscall`` line, through msgspec
    (:func:`sysbreak.capture.fastline.decode_syscall_line`, which says what it takes): a
    :class:`~sysbreak.capture.fastline.FastSyscall` or None. msgspec is imported on first use only: GDB's side
    of sysbreak (the writer) never needs it."""
    from sysbreak.capture import fastline

    return fastline.decode_syscall_line(line)


_LAZY_DECODE = decode_syscall_line


class EventReader:
    """Streams the records of one event log, line by line (the file is never read whole).

    It is an iterator (one pass over the file; make another reader for another pass) of :data:`Record`
    dataclasses: :class:`HeaderRecord`, :class:`ModuleRecord`, :class:`StackRecord`, :class:`SyscallRecord`,
    :class:`NoteRecord`, :class:`EndRecord`. Unknown record types and unknown keys are ignored. A line that is
    not valid JSON, or whose known keys have the wrong types (a line damaged mid-write), is skipped and
    described in :attr:`warnings` (the first :data:`MAX_WARNINGS`; :attr:`skipped` counts them all). A file
    that does not start with a ``sysbreak-events/3`` (or /2, /1) header raises :class:`SysbreakError` when iteration
    starts (unless ``allow_empty`` and the file is empty; :func:`read_events` checks it at once).
    After a full pass, :attr:`ended` says whether an ``end`` record was seen.
    """

    def __init__(self, path: str | os.PathLike[str], *, allow_empty: bool = False) -> None:
        self.path = os.fspath(path)
        self.allow_empty = allow_empty
        self.warnings: list[str] = []
        self.skipped = 0
        self.header: HeaderRecord | None = None
        self.ended = False
        self.lines = 0
        self._records: Iterator[Record] | None = None
        self.modules = rawstack.ModuleTable()  # from the module records read so far: raw stacks need them

    def warn(self, message: str) -> None:
        self.skipped += 1
        if len(self.warnings) < MAX_WARNINGS:
            self.warnings.append(message)
        elif len(self.warnings) == MAX_WARNINGS:
            self.warnings.append(f"{self.path}: more damaged lines follow (see the count of skipped lines)")

    def raw(self, *, skip_site: bool = False, fast: bool = False) -> Iterator[tuple[int, Any]]:
        """``(line number, decoded object)`` for every line that is a JSON object, the header checked first.

        The fast path the analysis uses; :meth:`__iter__` builds typed records on top of it. With ``skip_site``,
        a ``syscall`` line written as the writer writes it (``"site"`` last, a flat object) is decoded without
        its ``site``, which is most of the decoding time; any other line is decoded whole. With ``fast``, a
        ``syscall`` line that :func:`decode_syscall_line` takes comes as a ``FastSyscall`` instead of a
        dict (the batch decoder's hot path); the others as without it.
        """
        try:
            fh = open(self.path, encoding="utf-8", errors="replace", newline="\n")  # noqa: SIM115
        except FileNotFoundError:
            raise SysbreakError(f"{self.path}: no such file") from None
        except IsADirectoryError:
            raise SysbreakError(f"{self.path}: is a directory (give a capture directory to 'open_capture')") from None
        except OSError as e:
            raise os_error(e, f"{self.path}: cannot read it") from None
        decode = decode_line
        with fh:
            try:
                first = fh.readline(1 << 20)
            except OSError as e:
                raise os_error(e, f"{self.path}: cannot read it") from None
            if not first:
                if self.allow_empty:
                    self.warnings.append(f"{self.path}: empty event log (the capture stopped before it began)")
                    return
                raise SysbreakError(f"{self.path}: empty file, not a sysbreak event log")
            header = self._check_header(first)
            self.lines = 1
            if header is None:  # allow_empty and a cut-short header: nothing more can be trusted
                return
            yield 1, header
            lineno = 1
            prefix = '{"type":"syscall",'
            site = ',"site":{'
            scan = _DECODER.raw_decode
            fast_decode = None
            if fast:  # (the module's own function, unless a test replaced it: straight to msgspec's)
                fast_decode = decode_syscall_line
                if fast_decode is _LAZY_DECODE:
                    from sysbreak.capture import fastline

                    fast_decode = fastline.decode_syscall_line
            for line in fh:
                lineno += 1
                if fast_decode is not None and line.startswith(prefix):
                    rec = fast_decode(line)
                    if rec is not None:
                        yield lineno, rec
                        continue
                try:
                    if skip_site and line.startswith(prefix):
                        k = line.find(site, 40)
                        if k > 0 and line.endswith("}}\n") and line.count("{", k) == 1:
                            obj = scan(line[:k] + "}")[0]
                        else:
                            obj = decode(line)
                    else:
                        obj = decode(line)
                except (ValueError, RecursionError):
                    if line.endswith("\n"):
                        self.warn(f"{self.path}, line {lineno}: damaged line skipped")
                    else:
                        self.warn(f"{self.path}, line {lineno}: the last line is cut short and was skipped")
                    continue
                if type(obj) is not dict:
                    self.warn(f"{self.path}, line {lineno}: not a JSON object, skipped")
                    continue
                yield lineno, obj
            self.lines = lineno

    def _check_header(self, first: str) -> dict[str, Any] | None:
        try:
            obj = decode_line(first)
        except (ValueError, RecursionError):
            obj = None
        if not isinstance(obj, dict) or obj.get("type") != "header":
            if self.allow_empty and not first.endswith("\n") and first.startswith('{"type":"header"'):
                self.warnings.append(f"{self.path}: the header line is cut short; no events")
                return None
            raise SysbreakError(
                f"{self.path}: not a sysbreak event log (the first line is not a {EVENTS_FORMAT} header)"
            )
        fmt = obj.get("format")
        if fmt not in EVENTS_FORMATS_READ:
            raise SysbreakError(
                f"{self.path}: event log format {fmt!r} is not supported (this sysbreak reads "
                f"{' and '.join(EVENTS_FORMATS_READ)})"
            )
        return obj

    def __iter__(self) -> Iterator[Record]:
        if self._records is None:
            self._records = self._read_records()
        return self._records

    def __next__(self) -> Record:
        return next(iter(self))

    def _read_records(self) -> Iterator[Record]:
        for lineno, obj in self.raw():
            try:
                rec = self.record(obj)
            except (TypeError, ValueError, KeyError, AttributeError):
                self.warn(
                    f"{self.path}, line {lineno}: a {str(obj.get('type'))[:20]!r} record with bad fields, skipped"
                )
                continue
            if rec is not None:
                yield rec
        rawstack.save(self.modules)

    def record(self, obj: dict[str, Any]) -> Record | None:
        """The typed record for one decoded line (None for an unknown type); TypeError etc. when damaged."""
        kind = obj.get("type")
        if kind == "syscall":
            return self.syscall(obj)
        if kind == "stack":
            sid = obj["id"]
            if not _is_int(sid):
                raise TypeError("id")
            frames, python = _stack_frames(obj)
            raw = obj.get("raw")
            if raw is not None:  # sysbreak-events/3: registers + stack bytes, unwound here (capture/rawstack.py)
                frames = rawstack.frames(frames, rawstack.parse_raw(raw), self.modules)
            return StackRecord(id=sid, frames=frames, python=python)
        if kind == "header":
            h = HeaderRecord(
                format=str(obj.get("format")),
                pid=_opt_int(obj.get("pid")),
                arch=_opt_str(obj.get("arch")),
                exe=_opt_str(obj.get("exe")),
                syscalls=[s for s in obj.get("syscalls") or [] if isinstance(s, str)],
                mode=_opt_str(obj.get("mode")),
                t0=_num(obj.get("t0")),
                wall0=_opt_str(obj.get("wall0")),
                tool=_opt_str(obj.get("tool")),
                gdb=_opt_str(obj.get("gdb")),
            )
            if h.format not in EVENTS_FORMATS_READ:
                raise ValueError("format")
            if self.header is None:
                self.header = h
                self.modules.exe = h.exe
            return h
        if kind == "module":
            path = obj["path"]
            if not isinstance(path, str):
                raise TypeError("path")
            self.modules.add(
                path,
                _opt_int(obj.get("base")),
                _opt_int(obj.get("bias")),
                _opt_str(obj.get("build_id")),
                obj.get("maps"),
            )
            return ModuleRecord(
                path=path,
                base=_opt_int(obj.get("base")),
                bias=_opt_int(obj.get("bias")),
                build_id=_opt_str(obj.get("build_id")),
                sites=_opt_int(obj.get("sites")),
                breakpoints=_opt_int(obj.get("breakpoints")),
            )
        if kind == "exec":  # a new image: the modules raw stacks are unwound with start again (no typed record)
            self.modules = rawstack.ModuleTable()
            self.modules.exe = _opt_str(obj.get("exe"))
            return None
        if kind == "note":
            return NoteRecord(message=str(obj.get("message", "")), t=_num(obj.get("t")))
        if kind == "end":
            self.ended = True
            return EndRecord(
                t=_num(obj.get("t")), events=_opt_int(obj.get("events")), reason=_opt_str(obj.get("reason"))
            )
        return None

    def syscall(self, obj: dict[str, Any]) -> SyscallRecord:
        name, args, ret, t, stack = syscall_fields(obj, self.header.arch if self.header is not None else None)
        nr = _opt_int(obj.get("nr"))
        site = obj.get("site")
        return SyscallRecord(
            name=name,
            args=tuple(args),
            ret=ret,
            t=t,
            stack=stack,
            seq=_opt_int(obj.get("seq")),
            tid=_opt_int(obj.get("tid")),
            nr=nr,
            site=site if isinstance(site, dict) else None,
            when=obj.get("when") if obj.get("when") == "before" else None,
        )


def read_events(path: str | os.PathLike[str], *, allow_empty: bool = False) -> EventReader:
    """An :class:`EventReader` over ``path``: an iterator of the records (one pass); ``warnings`` fill as it goes.

    The first line is checked at once: a file that is not a ``sysbreak-events/1`` log raises
    :class:`SysbreakError` here, not at the first ``next()``.
    """
    reader = EventReader(path, allow_empty=allow_empty)
    probe = EventReader(path, allow_empty=allow_empty)
    next(iter(probe.raw()), None)
    return reader


@dataclass(slots=True)
class SnapshotRef:
    """One line of ``snapshots/index.jsonl``: when a snapshot was taken and where its smaps text is."""

    seq: int | None
    t: float | None
    path: str  # absolute path of the smaps file (it may be missing or half written)
    rss_kb: int | None = None
    wall: str | None = None
    pid: int | None = None  # the process it is of (index lines of captures with several processes carry it)
    resident: str | None = None  # absolute path of its resident-pages file (sysbreak.capture.residency), if any


class Capture:
    """An opened capture directory (or a bare event log): meta, event stream, snapshot list.

    ``meta`` is the decoded ``meta.json`` (``{}`` for a bare log or a missing/damaged meta); ``events()`` a fresh
    :class:`EventReader` (call it once per pass); ``snapshots`` the :class:`SnapshotRef` list in time order,
    only those whose file exists; ``warnings`` what was odd (cut short, missing files).
    """

    def __init__(self, path: str, events_path: str | None, meta: dict[str, Any], snapshots: list[SnapshotRef]):
        self.path = path
        self.events_path = events_path
        self.meta = meta
        self.snapshots = snapshots
        self.warnings: list[str] = []
        self.is_dir = os.path.isdir(path)

    def events(self) -> EventReader:
        if self.events_path is None:
            raise SysbreakError(f"{self.path}: the capture has no event log")
        return EventReader(self.events_path, allow_empty=self.is_dir)

    @property
    def cut_short(self) -> bool:
        """meta.json has no end: the capture was not stopped cleanly."""
        return self.is_dir and ("t1" not in self.meta or "end_reason" not in self.meta)


def _read_meta(path: str, warnings: list[str]) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as fh:
            meta = json.load(fh)
    except FileNotFoundError:
        warnings.append(f"{path}: missing (the capture was cut short at its start)")
        return {}
    except (OSError, ValueError, RecursionError):
        warnings.append(f"{path}: unreadable or damaged, ignored")
        return {}
    if not isinstance(meta, dict):
        warnings.append(f"{path}: not a JSON object, ignored")
        return {}
    fmt = meta.get("format")
    if fmt is not None and fmt not in CAPTURE_FORMATS_READ:
        raise SysbreakError(
            f"{path}: capture format {fmt!r} is not supported (this sysbreak reads {', '.join(CAPTURE_FORMATS_READ)})"
        )
    return meta


def _read_index(snapdir: str, warnings: list[str]) -> list[SnapshotRef]:
    index = os.path.join(snapdir, SNAPSHOT_INDEX)
    refs: list[SnapshotRef] = []
    try:
        fh = open(index, "rb")  # noqa: SIM115
    except FileNotFoundError:
        return refs
    except OSError as e:
        warnings.append(f"{index}: cannot read it: {os_reason(e)}")
        return refs
    with fh:
        for lineno, line in enumerate(fh, 1):
            try:
                obj = json.loads(line)
                name = obj["file"]
                if not isinstance(name, str) or "/" in name or name in ("", ".", ".."):
                    raise TypeError("file")
                ref = SnapshotRef(
                    seq=_opt_int(obj.get("seq")),
                    t=_num(obj.get("t")),
                    path=os.path.join(snapdir, name),
                    rss_kb=_opt_int(obj.get("rss_kb")),
                    wall=_opt_str(obj.get("wall")),
                    pid=_opt_int(obj.get("pid")),
                    resident=_resident_path(snapdir, obj.get("resident")),
                )
            except (ValueError, TypeError, KeyError, AttributeError, RecursionError):
                warnings.append(f"{index}, line {lineno}: damaged, skipped")
                continue
            if not os.path.isfile(ref.path):
                warnings.append(f"{index}, line {lineno}: {name} is missing, skipped")
                continue
            refs.append(ref)
    timed = [r for r in refs if r.t is not None]
    if len(timed) != len(refs):
        warnings.append(f"{index}: {len(refs) - len(timed)} snapshot(s) without a time, skipped")
    timed.sort(key=lambda r: (r.t, r.seq or 0))
    return timed


def _resident_path(snapdir: str, name: object) -> str | None:
    if not isinstance(name, str) or "/" in name or name in ("", ".", ".."):
        return None
    path = os.path.join(snapdir, name)
    return path if os.path.isfile(path) else None


def open_capture(path: str | os.PathLike[str]) -> Capture:
    """Open a capture directory (``meta.json``, ``events.jsonl``, ``snapshots/``) or a bare event log.

    Raises :class:`SysbreakError` for a path that is neither. A capture cut short is accepted: a missing
    ``meta.json`` end, a missing ``end`` record, an index line naming a missing file (skipped, with a warning);
    a half-written smaps file is left for the parser (:func:`sysbreak.maps.parse_maps_file` drops a cut line).
    """
    p = os.fspath(path)
    if os.path.isdir(p):
        warnings: list[str] = []
        events_path: str | None = os.path.join(p, EVENTS)
        has_meta = os.path.exists(os.path.join(p, META))
        assert events_path is not None
        meta = _read_meta(os.path.join(p, META), warnings)
        if not os.path.isfile(events_path):
            if not has_meta and not os.path.isdir(os.path.join(p, SNAPSHOTS)):
                raise SysbreakError(f"{p}: not a sysbreak capture directory (no meta.json, no events.jsonl)")
            if meta.get("command") != "watch":  # `sysbreak watch` writes snapshots only
                warnings.append(f"{events_path}: missing; only the snapshots can be analysed")
            events_path = None
        snaps = _read_index(os.path.join(p, SNAPSHOTS), warnings)
        cap = Capture(p, events_path, meta, snaps)
        cap.warnings.extend(warnings)
        if meta and cap.cut_short:
            cap.warnings.append(f"{p}: the capture was cut short (meta.json has no end)")
        return cap
    if not os.path.exists(p):
        raise SysbreakError(f"{p}: no such file or directory")
    cap = Capture(p, p, {}, [])
    # Check now that it is an event log, so that a wrong file is reported before any work.
    reader = EventReader(p)
    next(iter(reader.raw()), None)
    return cap
