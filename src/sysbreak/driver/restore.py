"""Putting back the bytes under GDB's breakpoints when GDB died with them inserted.

The in-GDB layer appends ``{"pid": P, "addr": A, "orig": "0f"}`` to the restore file before it inserts a
breakpoint at A. If GDB is killed (or crashes) while breakpoints are in memory, the target would die of SIGTRAP at
the next hit; :func:`restore` stops it (SIGSTOP), writes the original bytes back through /proc/PID/mem wherever an
``int3`` (0xCC) is still found, and resumes it (SIGCONT, which also wakes threads a dead tracer left stopped).
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import signal
import time
from dataclasses import dataclass, field

INT3 = 0xCC


@dataclass
class RestoreEntry:
    addr: int
    orig: bytes


@dataclass
class RestoreResult:
    checked: int = 0  # distinct addresses looked at
    restored: int = 0  # addresses where an int3 was replaced by the original byte(s)
    errors: list[str] = field(default_factory=list)


class RestoreFile:
    """The restore file read incrementally: only what was appended since the last :meth:`refresh` is parsed.

    The guard keeps it current while GDB lives, so that GDB's death costs only the writes (a cut-short last line
    waits for its end; the last entry per address wins)."""

    def __init__(self, path: str | os.PathLike[str], pid: int) -> None:
        self.path = path
        self.pid = pid
        self._offset = 0
        self._partial = b""
        self._by_addr: dict[int, RestoreEntry] = {}

    def refresh(self) -> list[RestoreEntry]:
        """Read what was appended since the last call; returns the entries it added or changed."""
        try:
            with open(self.path, "rb") as fh:
                fh.seek(self._offset)
                data = fh.read()
        except FileNotFoundError:
            return []
        if not data:
            return []
        self._offset += len(data)
        *lines, self._partial = (self._partial + data).split(b"\n")
        added: list[RestoreEntry] = []
        for line in lines:
            try:
                rec = json.loads(line)
                if int(rec.get("pid", self.pid)) != self.pid:
                    continue
                addr = int(rec["addr"])
                orig = bytes.fromhex(str(rec["orig"]))
            except (ValueError, KeyError, TypeError, AttributeError):
                continue
            if orig:
                entry = self._by_addr[addr] = RestoreEntry(addr, orig)
                added.append(entry)
        return added

    def entries(self) -> list[RestoreEntry]:
        return sorted(self._by_addr.values(), key=lambda e: e.addr)


def read_entries(path: str | os.PathLike[str], pid: int) -> list[RestoreEntry]:
    """The restore file's entries for ``pid``, last one per address wins; a cut-short last line is ignored."""
    known = RestoreFile(path, pid)
    known.refresh()
    return known.entries()


def int3_addresses(pid: int, entries: list[RestoreEntry]) -> list[int]:
    """Addresses among ``entries`` where /proc/PID/mem holds 0xCC although the original byte was not 0xCC."""
    found = []
    with open(f"/proc/{pid}/mem", "rb", buffering=0) as mem:
        for entry in entries:
            try:
                mem.seek(entry.addr)
                byte = mem.read(1)
            except OSError:
                continue  # unmapped since (library unloaded)
            if byte and byte[0] == INT3 and entry.orig[0] != INT3:
                found.append(entry.addr)
    return found


def _wait_stopped(pid: int, timeout: float) -> None:
    """Wait (briefly) until every thread of ``pid`` is stopped, so no thread runs into an int3 while we write."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            tids = os.listdir(f"/proc/{pid}/task")
        except OSError:
            return
        states = []
        for tid in tids:
            try:
                with open(f"/proc/{pid}/task/{tid}/stat", encoding="ascii", errors="replace") as fh:
                    states.append(fh.read().rpartition(")")[2].split()[0])
            except (OSError, IndexError):
                continue
        if all(s in ("T", "t", "Z", "X") for s in states):
            return
        time.sleep(0.002)


def restore(pid: int, path: str | os.PathLike[str]) -> RestoreResult:
    """Stop ``pid``, put the original bytes back at every leftover int3 listed in ``path``, resume it."""
    result = RestoreResult()
    entries = read_entries(path, pid)
    result.checked = len(entries)
    try:
        os.kill(pid, signal.SIGSTOP)
    except ProcessLookupError:
        return result
    except PermissionError as exc:
        result.errors.append(f"cannot stop process {pid}: {exc.strerror}")
        return result
    try:
        if entries:
            _wait_stopped(pid, 1.0)
            written = write_back(pid, entries)
            result.restored, result.errors = written.restored, written.errors
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGCONT)
    return result


class _HeldLibc:
    """libc's open/pread/pwrite/close called through ctypes.PyDLL, which keeps the GIL across each call: the
    write-back at GDB's death is then one uninterrupted run of syscalls (~20 us for a dozen addresses) instead of
    handing the GIL to another thread at every call and waiting up to the switch interval (5 ms) to get it back."""

    def __init__(self) -> None:
        lib = ctypes.PyDLL(None, use_errno=True)
        self.open = lib.open
        self.open.argtypes = [ctypes.c_char_p, ctypes.c_int]
        self.open.restype = ctypes.c_int
        self.close = lib.close
        self.close.argtypes = [ctypes.c_int]
        self.close.restype = ctypes.c_int
        self.pread = lib.pread64
        self.pwrite = lib.pwrite64
        for fn in (self.pread, self.pwrite):
            fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_size_t, ctypes.c_int64]
            fn.restype = ctypes.c_ssize_t


_held_libc: _HeldLibc | None = None


def held_libc() -> _HeldLibc:
    """The functions :func:`write_back` calls, looked up once (ahead of time: the guard does it at its start)."""
    global _held_libc
    if _held_libc is None:
        _held_libc = _HeldLibc()
    return _held_libc


def write_back(pid: int, entries: list[RestoreEntry]) -> RestoreResult:
    """Put the original bytes back at every int3 of ``entries`` *without* stopping ``pid`` first.

    For the instant GDB is found dying (the guard in driver/session.py): the target is then still traced by a
    tracer that will never answer, so a SIGSTOP would leave it in a ptrace stop, and any int3 it runs into from
    now on kills it (the kernel delivers that SIGTRAP once the dying tracer has detached). Writing at once is
    strictly better than waiting; :func:`restore` runs afterwards as usual (it finds nothing left to write and
    wakes any thread the dead tracer left stopped). A pread and a pwrite per address, only where the byte is
    still an int3 (one GDB removed, or memory mapped anew since, is left alone), all with the GIL held
    (:class:`_HeldLibc`); the entries come parsed (:class:`RestoreFile`): nothing is read from disk then."""
    libc = held_libc()
    result = RestoreResult(checked=len(entries))
    fd = libc.open(f"/proc/{pid}/mem".encode(), os.O_RDWR)
    if fd < 0:
        result.errors.append(f"cannot open /proc/{pid}/mem: {os.strerror(ctypes.get_errno())}")
        return result
    byte = ctypes.create_string_buffer(1)
    try:
        for entry in entries:
            if entry.orig[0] == INT3:
                continue
            if libc.pread(fd, byte, 1, entry.addr) != 1 or byte.raw != b"\xcc":
                continue
            if libc.pwrite(fd, entry.orig[:1], 1, entry.addr) == 1:
                result.restored += 1
            else:
                result.errors.append(f"{entry.addr:#x}: {os.strerror(ctypes.get_errno())}")
    finally:
        libc.close(fd)
    return result


PF_EXITING = 0x4  # /proc/PID/stat flags: the task has begun to exit


def exiting(pid: int) -> bool:
    """Whether process ``pid`` has begun to exit (killed or exiting: PF_EXITING on its main thread), is a
    zombie, or is gone. A SIGKILLed GDB sets this within microseconds, while its pipes close (and so the driver
    reads end of file) only once every thread of it has torn down its memory: 5-12 ms later here."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            fields = fh.read().rpartition(b")")[2].split()
    except OSError:
        return True
    try:
        return fields[0] in (b"Z", b"X", b"x") or bool(int(fields[6]) & PF_EXITING)
    except (IndexError, ValueError):
        return False
