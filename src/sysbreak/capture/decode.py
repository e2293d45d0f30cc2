"""The fast batch decoder of the event log (docs/event-log.md): compact batches for the ledger, decoded in a second
process when the log is big.

Decoding JSON is most of the cost of an analysis; replaying the ledger is the rest, and it must run in log
order. So a big log is decoded by a worker process (``python -m sysbreak.capture.decode LOG``) while the main
process replays: the worker writes pickled batches of compact items to a pipe, a thread of the main process
reads them ahead (the pipe's buffer plus :data:`READ_AHEAD` chunks bound the memory in flight), the main process
applies them. A small log (or where no process can be started) is decoded in
process, by the same code.

Items of a batch, in log order:

* ``(code, a0, a1, a2, a3, ret, t, stack, tid, seq)`` for every ``syscall`` record: ``code`` is one of
  :data:`CODES` for a *successful* mmap/munmap/mremap/brk, :data:`MUNMAP_BEFORE` for a munmap logged before it
  entered the kernel (``ret`` 0; docs/event-log.md, "Order"), :data:`OTHER` for anything else (a failed call,
  an unseen return, another syscall: the replay changes nothing, but the thread's order of calls needs it);
  ``t``, ``stack``, ``tid`` and ``seq`` may be None;
* ``("stack", id, frames, python)`` for a stack record;
* ``("header", obj)`` for a header (the decoded object), ``("end", t)`` for an end record, ``("exec", t)`` for an
  exec of the process (its address space replaced).

Everything else a per-stack report needs (calls per stack and syscall, failed ones included, first and last
times) is counted on the decoding side and returned once, at the end, as a :class:`StreamSummary`.
"""

from __future__ import annotations

import contextlib
import fcntl
import io
import os
import pickle
import queue
import subprocess
import sys
import threading
import traceback
from collections.abc import Generator
from dataclasses import dataclass, field
from typing import IO, Any

import sysbreak
from sysbreak.capture import rawstack
from sysbreak.capture.fastline import FastSyscall
from sysbreak.capture.reader import EventReader, syscall_fields
from sysbreak.capture.schema import StackRecord
from sysbreak.errors import SysbreakError

CODES = {"mmap": 1, "munmap": 2, "mremap": 3, "brk": 4}
MUNMAP_BEFORE = 5
OTHER = 0
BATCH = 2048  # items per batch (about 80 KB pickled)
PIPE_BYTES = 1 << 20  # the pipe's buffer: the most an unprivileged process may ask for by default
PARALLEL_MIN_BYTES = 16 << 20  # below this, starting a process costs more than it saves
# chunks (each at most a pipe's buffer, PIPE_BYTES) read ahead of the main process (see _ReadAhead): with msgspec
# the worker decodes faster than the main process replays, so this only has to cover the start (the snapshots
# parsed before the replay, 0.4-0.8 s: some 125 batches); 16 held 12 MB more for nothing
READ_AHEAD = 4
_U64_FAIL = (1 << 64) - 4095

Batch = list[tuple[Any, ...]]


#: a batch is cut before a release logged before it acted whose result may still come this many items later, so
#: that a failure record finds it in the batch it patches (see :func:`batches`)
HOLD_BACK = 512


@dataclass
class StreamSummary:
    counts: dict[tuple[int | None, str], int] = field(default_factory=dict)  # (stack id, syscall) -> calls
    first_t: dict[int | None, float] = field(default_factory=dict)  # stack id -> time of its first call
    last_t: dict[int | None, float] = field(default_factory=dict)
    t_first: float | None = None  # first and last event times
    t_last: float | None = None
    out_of_order: int = 0  # events whose time is before an earlier event's
    warnings: list[str] = field(default_factory=list)
    skipped: int = 0
    ended: bool = False
    lines: int = 0
    # munmaps logged before they entered the kernel (docs/event-log.md "Order"): that failed (a `result`
    # record; replayed as nothing), whose failure came too late to undo (replayed as done: the bytes), and
    # whose failure the capture could not watch (no `checked`: taken as done)
    failed_releases: int = 0
    late_failures: int = 0
    late_failure_bytes: int = 0
    late_seqs: list[tuple[int, int]] = field(default_factory=list)  # (header number, seq) of those: a second pass
    unchecked_releases: int = 0


def batches(
    path: str, allow_empty: bool, failed: frozenset[tuple[int, int]] = frozenset()
) -> Generator[Batch, None, StreamSummary]:
    """Decode ``path`` into batches (see the module doc); returns the summary when exhausted.

    ``failed``: the (header number, seq) of releases known to have failed (a first pass found their result too
    late to undo them, :attr:`StreamSummary.late_seqs`): decoded as OTHER at their own place."""
    reader = EventReader(path, allow_empty=allow_empty)
    summary = StreamSummary()
    counts = summary.counts
    first_t = summary.first_t
    last_t = summary.last_t
    codes = CODES
    items: Batch = []
    prev_t = -1e300
    fields = syscall_fields
    arch: str | None = None
    t_first: float | None = None
    t_last: float | None = None
    munmap_before = MUNMAP_BEFORE
    # seq -> index in ``items`` of the munmaps logged before they acted whose failure is watched: a `result`
    # record turns the item into OTHER (the call did nothing) while it is still in the batch not yet given out
    watched: dict[int, int] = {}
    headers = 0  # seq numbers start again after each header (a new writer)
    fast_type = FastSyscall
    for lineno, obj in reader.raw(skip_site=True, fast=True):
        if type(obj) is fast_type:  # the hot path: a line as the writer writes it, its fields checked by msgspec
            name: Any = obj.name
            a0, a1, a2, a3 = obj.args[:4]
            ret: Any = obj.ret
            et: Any = obj.t
            if type(et) is int:  # (as syscall_fields does)
                et = float(et)
            sid: Any = obj.stack
            tid: Any = obj.tid
            seq: Any = obj.seq
            when: Any = obj.when
            checked: Any = obj.checked
        else:
            typ = obj.get("type")
            if typ == "syscall":
                # The rules are capture.reader.syscall_fields'; this is their fast path for a line that msgspec's
                # refused (it accepts nothing they refuse: tests/test_capture.py checks both agree).
                name = obj.get("name")
                args: Any = obj.get("args")
                ret = obj.get("ret")
                et = obj.get("t")
                sid = obj.get("stack")
                ok = (
                    type(name) is str
                    and type(args) is list
                    and len(args) == 6
                    and (ret is None or type(ret) is int)
                    and (et is None or type(et) is float)
                    and (sid is None or type(sid) is int)
                )
                if ok:
                    a0, a1, a2, a3, a4, a5 = args
                    ok = type(a0) is type(a1) is type(a2) is type(a3) is type(a4) is type(a5) is int and not (
                        (a0 | a1 | a2 | a3 | a4 | a5) >> 64
                    )
                if not ok:
                    try:
                        name, args, ret, et, sid = fields(obj, arch)
                    except TypeError:
                        reader.warn(f"{reader.path}, line {lineno}: a 'syscall' record with bad fields, skipped")
                        continue
                    a0, a1, a2, a3 = args[0], args[1], args[2], args[3]
                tid = obj.get("tid")
                seq = obj.get("seq")
                when = obj.get("when")
                checked = obj.get("checked")
            else:
                if typ == "result":
                    # a release logged before it entered the kernel failed (docs/event-log.md, "result")
                    of, rret = obj.get("of"), obj.get("ret")
                    if type(of) is not int or type(rret) is not int or not (-4095 <= rret < 0):
                        continue
                    at = watched.pop(of, None)
                    if failed and (headers, of) in failed:
                        continue  # undone at its own place (counted there)
                    if at is not None and items[at][9] == of:
                        summary.failed_releases += 1
                        items[at] = (OTHER, *items[at][1:])
                    else:  # its record was given out to the replay already: it was replayed as done
                        summary.late_failures += 1
                        summary.late_seqs.append((headers, of))
                        length = obj.get("length")
                        summary.late_failure_bytes += length if type(length) is int else 0
                elif typ == "stack":
                    try:
                        srec = reader.record(obj)
                    except (TypeError, ValueError, KeyError, AttributeError):
                        reader.warn(f"{reader.path}, line {lineno}: a 'stack' record with bad fields, skipped")
                        continue
                    if isinstance(srec, StackRecord):
                        items.append(("stack", srec.id, srec.frames, srec.python))
                elif typ in ("module", "exec"):  # the reader keeps the module table raw stacks are unwound with
                    try:
                        reader.record(obj)
                    except (TypeError, ValueError, KeyError, AttributeError):
                        reader.warn(f"{reader.path}, line {lineno}: a 'module' record with bad fields, skipped")
                elif typ == "header":
                    watched.clear()  # a new writer numbers its records from 1 again
                    headers += 1
                    if arch is None and isinstance(obj.get("arch"), str):
                        arch = obj["arch"]
                    items.append(("header", obj))
                    if lineno == 1:  # let the consumer see the header at once
                        yield items
                        items = []
                elif typ == "exec":  # the process replaced its image: every mapping is gone
                    t = obj.get("t")
                    et = float(t) if isinstance(t, (int, float)) and not isinstance(t, bool) else None
                    items.append(("exec", et))
                elif typ == "end":
                    reader.ended = True
                    t = obj.get("t")
                    et = float(t) if isinstance(t, (int, float)) and not isinstance(t, bool) else None
                    items.append(("end", et))
                continue  # (not a syscall record)
        if type(tid) is not int or type(seq) is not int:  # (only the order of the replay needs them)
            tid = tid if type(tid) is int else None
            seq = seq if type(seq) is int else None
        key = (sid, name)
        counts[key] = counts.get(key, 0) + 1
        if et is not None:
            if et < prev_t:
                summary.out_of_order += 1
            else:
                prev_t = et
            if t_first is None:
                t_first = et
            t_last = et
            if sid not in first_t:
                first_t[sid] = et
            last_t[sid] = et
        if ret is None:
            # a release logged before it entered the kernel (docs/event-log.md, "Order"), or a call whose
            # return was not seen (it may not have happened: nothing to replay)
            code = 0
            if name == "munmap" and when == "before":
                code = munmap_before
                if failed and (headers, seq) in failed:
                    code = 0  # (a second pass: it failed, its result came too late for the first)
                    summary.failed_releases += 1
                elif checked is True and seq is not None:
                    watched[seq] = len(items)
                else:
                    summary.unchecked_releases += 1
            ret = 0
        elif -4095 <= ret < 0 or ret >= _U64_FAIL:
            code = 0
        else:
            code = codes.get(name, 0)
        items.append((code, a0, a1, a2, a3, ret, et, sid, tid, seq))
        if len(items) >= BATCH:
            # cut before the latest releases whose result may still come (kept for the next batch)
            cut = min((i for i in watched.values() if i >= len(items) - HOLD_BACK), default=len(items))
            yield items[:cut]
            items = items[cut:]
            watched = {q: i - cut for q, i in watched.items() if i >= cut}
    if items:
        yield items
    summary.t_first, summary.t_last = t_first, t_last
    rawstack.save(reader.modules)
    summary.warnings = reader.warnings
    summary.skipped = reader.skipped
    summary.ended = reader.ended
    summary.lines = reader.lines
    return summary


def _worker(path: str, allow_empty: bool, out: IO[bytes], failed: frozenset[tuple[int, int]] = frozenset()) -> None:
    """The decoding process: pickled messages on ``out``, one per batch, then the summary (or the error)."""
    dump = pickle.dump
    try:
        gen = batches(path, allow_empty, failed)
        while True:
            try:
                batch = next(gen)
            except StopIteration as stop:
                dump(("done", stop.value), out, protocol=pickle.HIGHEST_PROTOCOL)
                break
            dump(("batch", batch), out, protocol=pickle.HIGHEST_PROTOCOL)
    except SysbreakError as e:
        dump(("error", str(e), e.exit_code), out)
    except BrokenPipeError:  # the main process stopped reading
        return
    except BaseException:  # a bug: hand it to the main process, which raises it
        dump(("crash", traceback.format_exc()), out)
    out.flush()


class _ReadAhead(io.RawIOBase):
    """The worker's pipe, drained by a thread into at most :data:`READ_AHEAD` chunks (4 MiB) ahead of the reader.

    Without it the worker stops at every full pipe (1 MiB, some 25 batches) while the main process does
    something else than reading, e.g. parsing the first and last snapshots before the replay (0.4-0.8 s on the
    1,000,000-event benchmark): the worker is the slower side, so every such pause adds to the analysis' time.
    ``os.read`` releases the GIL, so the thread costs the main process next to nothing."""

    def __init__(self, fd: int) -> None:
        super().__init__()
        self._fd = fd
        self._q: queue.Queue[bytes] = queue.Queue(READ_AHEAD)
        self._stop = threading.Event()
        self._buf = b""
        self._pos = 0
        self._eof = False
        self._thread = threading.Thread(target=self._drain, name="sysbreak-decode-read", daemon=True)
        self._thread.start()

    def _drain(self) -> None:
        while not self._stop.is_set():
            try:
                chunk = os.read(self._fd, PIPE_BYTES)
            except OSError:
                chunk = b""
            while True:
                try:
                    self._q.put(chunk, timeout=0.1)
                    break
                except queue.Full:
                    if self._stop.is_set():
                        return
            if not chunk:
                return

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        if self._pos >= len(self._buf):
            if self._eof:
                return 0
            self._buf, self._pos = self._q.get(), 0
            if not self._buf:
                self._eof = True
                return 0
        n = min(len(b), len(self._buf) - self._pos)
        b[:n] = self._buf[self._pos : self._pos + n]
        self._pos += n
        return n

    def stop(self) -> None:
        """Stop the thread (the worker is dead or killed: its pipe ends)."""
        self._stop.set()
        self._thread.join(timeout=5)


def _start_worker(
    path: str, allow_empty: bool, failed: frozenset[tuple[int, int]] = frozenset()
) -> subprocess.Popen[bytes] | None:
    if not sys.executable:
        return None
    pkg_parent = os.path.dirname(os.path.dirname(os.path.abspath(sysbreak.__file__)))
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (pkg_parent, env.get("PYTHONPATH", "")) if p)
    cmd = [sys.executable, "-m", "sysbreak.capture.decode", path, "1" if allow_empty else "0"]
    if failed:
        cmd.append(",".join(f"{h}:{q}" for h, q in sorted(failed)))
    try:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, env=env)
    except OSError:
        return None
    # A pipe that holds several batches, so that neither side waits for the other at every batch.
    set_size = getattr(fcntl, "F_SETPIPE_SZ", 1031)
    assert proc.stdout is not None
    with contextlib.suppress(OSError):
        fcntl.fcntl(proc.stdout.fileno(), set_size, PIPE_BYTES)
    return proc


def stream(
    path: str,
    allow_empty: bool,
    *,
    parallel: bool | None = None,
    failed: frozenset[tuple[int, int]] = frozenset(),
) -> Generator[Batch, None, StreamSummary]:
    """:func:`batches`, decoded by a worker process when ``parallel`` (default: when the log is big)."""
    if parallel is None:
        try:
            parallel = os.path.getsize(path) >= PARALLEL_MIN_BYTES and (os.cpu_count() or 1) > 1
        except OSError:
            parallel = False
    proc = _start_worker(path, allow_empty, failed) if parallel else None
    if proc is None:
        return (yield from batches(path, allow_empty, failed))
    assert proc.stdout is not None
    load = pickle.load
    ahead = _ReadAhead(proc.stdout.fileno())
    src = io.BufferedReader(ahead, 1 << 16)
    try:
        while True:
            try:
                msg = load(src)
            except (EOFError, pickle.UnpicklingError):
                raise SysbreakError(f"{path}: the process decoding the log died (out of memory?)") from None
            kind = msg[0]
            if kind == "batch":
                yield msg[1]
            elif kind == "done":
                summary: StreamSummary = msg[1]
                return summary
            elif kind == "error":
                raise SysbreakError(msg[1], msg[2])
            else:
                raise RuntimeError(f"decoding {path} failed:\n{msg[1]}")
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        ahead.stop()
        proc.stdout.close()


if __name__ == "__main__":
    # Through the module's real name, so that what is pickled names sysbreak.capture.decode, not __main__.
    from sysbreak.capture.decode import _worker as worker

    known = frozenset(
        (int(h), int(q)) for h, q in (pair.split(":") for pair in (sys.argv[3].split(",") if len(sys.argv) > 3 else []))
    )
    worker(sys.argv[1], sys.argv[2] == "1", sys.stdout.buffer, known)
