"""Putting back the bytes under GDB's breakpoints when GDB died with them inserted.

The in-GDB layer appends ``{"pid": P, "addr": A, "orig": "0f"}`` to the restore file before it inserts a
breakpoint at A. If GDB is killed (or crashes) while breakpoints are in memory, the target would die of SIGTRAP at
the next hit; :func:`restore` stops it (SIGSTOP), writes the original bytes back through /proc/PID/mem wherever an
``int3`` (0xCC) is still found, and resumes it (SIGCONT, which also wakes threads a dead tracer left stopped).
"""

from __future__ import annotations

import contextlib
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


def read_entries(path: str | os.PathLike[str], pid: int) -> list[RestoreEntry]:
    """The restore file's entries for ``pid``, last one per address wins; a cut-short last line is ignored."""
    by_addr: dict[int, RestoreEntry] = {}
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            for line in fh:
                try:
                    rec = json.loads(line)
                    if int(rec.get("pid", pid)) != pid:
                        continue
                    addr = int(rec["addr"])
                    orig = bytes.fromhex(str(rec["orig"]))
                except (ValueError, KeyError, TypeError, AttributeError):
                    continue
                if orig:
                    by_addr[addr] = RestoreEntry(addr, orig)
    except FileNotFoundError:
        return []
    return sorted(by_addr.values(), key=lambda e: e.addr)


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
            with open(f"/proc/{pid}/mem", "r+b", buffering=0) as mem:
                for entry in entries:
                    try:
                        mem.seek(entry.addr)
                        current = mem.read(len(entry.orig))
                        if not current or current[0] != INT3 or entry.orig[0] == INT3:
                            continue
                        mem.seek(entry.addr)
                        mem.write(entry.orig[:1])  # only the first byte is ever replaced by int3
                        result.restored += 1
                    except OSError as exc:
                        result.errors.append(f"{entry.addr:#x}: {exc.strerror}")
    except OSError as exc:
        result.errors.append(f"cannot open /proc/{pid}/mem: {exc.strerror}")
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGCONT)
    return result


def write_back(pid: int, path: str | os.PathLike[str]) -> RestoreResult:
    """Put the original bytes back at every int3 listed in ``path`` *without* stopping ``pid`` first.

    For the instant GDB is found dying (:class:`GdbGuard`): the target is then still traced by a tracer that will
    never answer, so a SIGSTOP would leave it in a ptrace stop, and any int3 it runs into from now on kills it
    (the kernel delivers that SIGTRAP once the dying tracer has detached). Writing at once is strictly better
    than waiting; :func:`restore` runs afterwards as usual (it finds nothing left to write and wakes any thread
    the dead tracer left stopped)."""
    result = RestoreResult()
    entries = read_entries(path, pid)
    result.checked = len(entries)
    try:
        with open(f"/proc/{pid}/mem", "r+b", buffering=0) as mem:
            for entry in entries:
                try:
                    mem.seek(entry.addr)
                    current = mem.read(1)
                    if not current or current[0] != INT3 or entry.orig[0] == INT3:
                        continue
                    mem.seek(entry.addr)
                    mem.write(entry.orig[:1])
                    result.restored += 1
                except OSError as exc:
                    result.errors.append(f"{entry.addr:#x}: {exc.strerror}")
    except OSError as exc:
        result.errors.append(f"cannot open /proc/{pid}/mem: {exc.strerror}")
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
