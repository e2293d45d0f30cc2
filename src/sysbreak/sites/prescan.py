"""Filling the scan cache for all the modules of a process at once, before an attach (plain Python, no GDB).

A PyTorch process maps ~65 ELF files; scanned one after the other their first (cold) scans take ~2 s of CPU,
1.2 s of it libtorch_cpu.so alone. :func:`fill_cache` scans only the ones not cached yet, biggest first, on
several *lanes*: the calling thread and worker processes (``python -m sysbreak.sites.prescan``). Each lane takes
the biggest module left when it is free, so the biggest one runs in parallel with all the others. Processes, not
threads: the scan is Python code holding the GIL most of the time. Everything is written to the same on-disk
cache (each file written atomically), from which GDB's ``sysbreak prepare`` then reads the scans.

Failures are not errors here: a module that cannot be scanned is left out (GDB's scan of it says why), and a
worker that cannot be started or dies leaves its share to the calling thread.
"""

from __future__ import annotations

import collections
import contextlib
import os
import select
import subprocess
import sys
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from sysbreak.elfscan.scanner import load_bulk
from sysbreak.errors import SysbreakError
from sysbreak.sites.cache import is_cached, scan

#: Below this many bytes of cold modules, one lane scans them all (a worker's start costs ~0.2 s of CPU).
PARALLEL_MIN_BYTES = 32 << 20
MAX_LANES = 4


@dataclass
class Filled:
    """What :func:`fill_cache` did: modules already cached, scanned here, scanned by workers, failed."""

    cached: int = 0
    local: int = 0
    remote: int = 0
    failed: int = 0
    lanes: int = 1


def default_lanes() -> int:
    """One lane per CPU this process may run on, at most :data:`MAX_LANES`."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    return max(1, min(MAX_LANES, cpus))


def _scan_quietly(path: str, bulk: bool = False) -> bool:
    """A lane's job: scan ``path`` into the on-disk cache; True when it worked. ``bulk``: import numpy first, so
    that the scan of every module takes its faster way (:func:`sysbreak.elfscan.scanner.use_bulk`)."""
    if bulk:
        with contextlib.suppress(ImportError):
            load_bulk()
    try:
        scan(path)
    except (SysbreakError, OSError):
        return False
    return True


def fill_cache(
    paths: Iterable[str], *, lanes: int | None = None, stopping: Callable[[], bool] = lambda: False
) -> Filled:
    """Scan every module of ``paths`` that is not cached yet (see the module's doc), returning what was done.
    ``stopping`` is polled between modules: when it returns True, no new module is started (a worker in the
    middle of one is terminated)."""
    out = Filled()
    todo: list[tuple[int, str]] = []
    for path in dict.fromkeys(paths):
        if is_cached(path):
            out.cached += 1
            continue
        try:
            size = os.stat(path).st_size
        except OSError:
            out.failed += 1
            continue
        todo.append((size, path))
    if not todo or stopping():
        return out
    todo.sort(reverse=True)
    lanes = default_lanes() if lanes is None else max(1, lanes)
    many = sum(size for size, _p in todo) >= PARALLEL_MIN_BYTES
    if not many or len(todo) == 1:
        lanes = 1
    queue = collections.deque(path for _size, path in todo)
    lock = threading.Lock()

    def take() -> str | None:
        with lock:
            return queue.popleft() if queue and not stopping() else None

    def count(field: str, ok: bool) -> None:
        with lock:
            if ok:
                setattr(out, field, getattr(out, field) + 1)
            else:
                out.failed += 1

    # this thread starts on the biggest module before any worker is even started (a worker takes ~0.2 s to start)
    first = queue.popleft()
    workers: list[_Worker] = []
    if lanes > 1:
        for _ in range(lanes - 1):
            w = _Worker.start(many)
            if w is not None:
                workers.append(w)
    out.lanes = 1 + len(workers)

    def remote_lane(w: _Worker) -> None:
        while True:
            path = take()
            if path is None:
                return
            if not _sendable(path):  # (one UTF-8 path a line to the worker: this one is scanned here)
                count("local", _scan_quietly(path, many))
                continue
            ok = w.scan(path, stopping)
            if ok is None:  # the worker is gone (or we are stopping): this module goes back to the others
                with lock:
                    queue.appendleft(path)
                return
            count("remote", ok)

    helpers = [threading.Thread(target=remote_lane, args=(w,), daemon=True) for w in workers]
    for h in helpers:
        h.start()
    try:
        count("local", _scan_quietly(first, many))
        while True:
            mine = take()
            if mine is None:
                break
            count("local", _scan_quietly(mine))
        for h in helpers:
            while h.is_alive() and not stopping():
                h.join(0.05)
    finally:
        for w in workers:
            w.close()  # idle by now, or stopping: a scan in progress is abandoned (nothing is half-written)
    return out


def _sendable(path: str) -> bool:
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return "\n" not in path


class _Worker:
    """A worker process: ``python -m sysbreak.sites.prescan [--bulk]``, which scans each path it reads on its
    stdin into the cache and answers one line per path, ``ok`` or ``failed``. A plain subprocess, not
    ``multiprocessing``: its spawn start method re-imports the caller's main module in the child."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.proc = proc

    @classmethod
    def start(cls, bulk: bool) -> _Worker | None:
        try:
            proc = subprocess.Popen(
                [sys.executable, "-m", "sysbreak.sites.prescan", *(["--bulk"] if bulk else [])],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                text=True,
                env={**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)},
                start_new_session=True,  # a Ctrl-C meant for sysbreak is not the worker's
            )
        except OSError:
            return None
        return cls(proc)

    def scan(self, path: str, stopping: Callable[[], bool]) -> bool | None:
        """Have the worker scan ``path``: True/False when it answered, None when it is gone or we are stopping."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        try:
            self.proc.stdin.write(path + "\n")
            self.proc.stdin.flush()
        except (OSError, ValueError):
            return None
        fd = self.proc.stdout.fileno()
        while not select.select([fd], [], [], 0.1)[0]:
            if stopping() or self.proc.poll() is not None:
                return None
        line = self.proc.stdout.readline()
        if not line:
            return None
        return line.strip() == "ok"

    def close(self) -> None:
        """End the worker: at the end of its stdin it exits by itself (after the scan it may be in); the caller
        does not wait for that, a daemon thread reaps it (and kills it if it is still there 10 s later)."""
        with contextlib.suppress(OSError, ValueError):
            assert self.proc.stdin is not None
            self.proc.stdin.close()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(0.02)
            return

        def reap() -> None:
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

        threading.Thread(target=reap, name="sysbreak-prescan-reaper", daemon=True).start()

    def wait(self, timeout: float) -> int | None:
        """The worker's exit status once it has exited (within ``timeout`` seconds), else None."""
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None


def main(argv: list[str]) -> int:
    """The worker: scan each path read from stdin (one a line), answer ``ok``/``failed`` on stdout."""
    bulk = "--bulk" in argv
    for line in sys.stdin:
        path = line.rstrip("\n")
        ok = _scan_quietly(path, bulk)
        sys.stdout.write("ok\n" if ok else "failed\n")
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
