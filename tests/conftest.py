"""Shared test fixtures: the C fixtures built once per session, and long-running fixture processes that are always
killed at the end of the test that started them."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from support.cli import AS_NOBODY, error_line, one_error, run_in_process, run_sysbreak, sysbreak_argv
from support.fixtures import build_fixtures

ROOT = Path(__file__).resolve().parent.parent

__all__ = [  # re-exported: `from conftest import run_sysbreak` keeps working
    "AS_NOBODY",
    "error_line",
    "one_error",
    "run_in_process",
    "run_sysbreak",
    "sysbreak_argv",
]


@dataclass(frozen=True)
class FixturePaths:
    """Where ``make -C fixtures`` put the fixture programs."""

    build: Path
    mapper: Path
    mapper_mt: Path
    dlopener: Path
    libsbstripped: Path
    ucm_leak: Path
    leaky_server: Path
    grower: Path


@pytest.fixture(scope="session")
def fixture_paths() -> FixturePaths:
    """Build the C fixtures (``make -C fixtures``) once per test session."""
    try:
        b = build_fixtures()
    except RuntimeError as err:
        pytest.fail(str(err))
    return FixturePaths(
        build=b,
        mapper=b / "mapper",
        mapper_mt=b / "mapper_mt",
        dlopener=b / "dlopener",
        libsbstripped=b / "libsbstripped.so",
        ucm_leak=b / "ucm_leak",
        leaky_server=b / "leaky_server",
        grower=b / "grower",
    )


@dataclass
class Proc:
    """A started fixture process whose stdout lines are collected by a thread."""

    popen: subprocess.Popen[str]
    lines: list[str] = field(default_factory=list)
    last_line_at: float = 0.0  # time.monotonic() when the last line was read
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def _read(self) -> None:
        assert self.popen.stdout is not None
        for line in self.popen.stdout:
            with self._lock:
                self.lines.append(line.rstrip("\n"))
                self.last_line_at = time.monotonic()

    def count(self, prefix: str = "heartbeat") -> int:
        with self._lock:
            return sum(1 for ln in self.lines if ln.startswith(prefix))

    def wait_lines(self, n: int, prefix: str = "heartbeat", timeout: float = 10.0) -> None:
        """Wait until at least ``n`` lines starting with ``prefix`` were printed (fails the test otherwise)."""
        deadline = time.monotonic() + timeout
        while self.count(prefix) < n:
            if self.popen.poll() is not None:
                pytest.fail(f"pid {self.pid} exited with {self.popen.returncode} before printing {n} {prefix!r} lines")
            if time.monotonic() > deadline:
                pytest.fail(f"pid {self.pid} printed {self.count(prefix)} {prefix!r} lines in {timeout} s, not {n}")
            time.sleep(0.02)

    def assert_alive_and_beating(self, more: int = 2, timeout: float = 10.0) -> None:
        """The process is alive and prints ``more`` further heartbeats."""
        assert self.popen.poll() is None, f"pid {self.pid} died: status {self.popen.returncode}"
        self.wait_lines(self.count() + more, timeout=timeout)
        assert self.popen.poll() is None


Spawn = Callable[..., Proc]


@pytest.fixture
def private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """An empty scan cache directory of the test's own and an empty in-process memo (use it, or mark a whole module
    with ``pytestmark = pytest.mark.usefixtures("private_cache")``)."""
    from sysbreak import sites

    d = tmp_path / "cache"
    monkeypatch.setenv("SYSBREAK_CACHE_DIR", str(d))
    sites.forget_memo()
    yield d
    sites.forget_memo()


@pytest.fixture
def spawn() -> Iterator[Spawn]:
    """``spawn(argv, **popen_kwargs) -> Proc``: start a process; every one is killed when the test ends."""
    started: list[Proc] = []

    def _spawn(argv: list[str], **kwargs: object) -> Proc:
        popen = subprocess.Popen(
            [str(a) for a in argv],
            stdout=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
            start_new_session=True,
            **kwargs,  # type: ignore[call-overload]
        )
        proc = Proc(popen)
        threading.Thread(target=proc._read, daemon=True).start()
        started.append(proc)
        return proc

    yield _spawn
    for proc in started:
        if proc.popen.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                proc.popen.kill()
        proc.popen.wait(timeout=10)


@pytest.fixture
def nobody_dir() -> Iterator[Path]:
    """A fresh directory user nobody can write to."""
    import shutil
    import tempfile

    d = Path(tempfile.mkdtemp(prefix="sysbreak-test-nobody-"))
    d.chmod(0o777)
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def gdb_without_python(tmp_path: Path) -> Path:
    """A stand-in for a GDB built without Python: answers --version, refuses every `python` command."""
    fake = tmp_path / "gdb-nopython"
    fake.write_text(
        "#!/bin/sh\n"
        'case "$*" in *--version*) echo "GNU gdb (fake, no Python) 13.1"; exit 0;; esac\n'
        'echo "Python scripting is not supported in this copy of GDB." >&2\n'
        "exit 1\n"
    )
    fake.chmod(0o755)
    return fake


class Grower:
    """A running ``fixtures/build/grower``: send it a command, get its answer line (see fixtures/src/grower.c)."""

    def __init__(self, path: Path, env: dict[str, str] | None = None) -> None:
        self.popen = subprocess.Popen(
            [str(path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, start_new_session=True, env=env
        )
        assert self.ask_line() == "READY"

    @property
    def pid(self) -> int:
        return self.popen.pid

    def ask_line(self) -> str:
        assert self.popen.stdout is not None
        return self.popen.stdout.readline().strip()

    def do(self, command: str) -> tuple[int, int]:
        """Run one command; its (address, length) when it reports them, else (0, 0)."""
        assert self.popen.stdin is not None
        self.popen.stdin.write(command + "\n")
        self.popen.stdin.flush()
        answer = self.ask_line()
        assert answer.startswith("OK"), (command, answer)
        words = answer.split()
        if len(words) >= 4:
            return int(words[2], 16), int(words[3])
        return 0, 0

    def kill(self) -> None:
        if self.popen.poll() is None:
            os.killpg(self.pid, signal.SIGKILL)
        self.popen.wait(timeout=10)


@pytest.fixture
def grower(fixture_paths: FixturePaths) -> Iterator[Callable[[], Grower]]:
    """``grower() -> Grower``: start a grower; every one is killed when the test ends."""
    started: list[Grower] = []

    def _start() -> Grower:
        g = Grower(fixture_paths.grower)
        started.append(g)
        return g

    yield _start
    for g in started:
        g.kill()
