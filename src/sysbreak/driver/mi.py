"""A GDB/MI session: one gdb process, commands with tokens, async records, a readable console log.

GDB is started in its own session (so a Ctrl-C on sysbreak's terminal never reaches it), with its standard input
a pipe from us and its standard output and error a regular file (``mi_path``) that a thread tails. The file, not a
pipe, is deliberate: when sysbreak dies (even SIGKILL) GDB sees end of input on stdin and can still write all it
wants without SIGPIPE killing it before it has removed its breakpoints and detached; and GDB never blocks on a slow
reader. Lines are parsed with pygdbmi's MI parser; console and log stream records are decoded into a plain text
log (``log_path``) next to the commands we sent.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import IO, Any

from pygdbmi.gdbmiparser import parse_response

Record = dict[str, Any]


class MiError(Exception):
    """GDB answered a command with ``^error``; ``str()`` is GDB's message."""

    def __init__(self, command: str, message: str) -> None:
        super().__init__(message)
        self.command = command
        self.message = message


class GdbGone(Exception):
    """GDB exited (or was killed) while we were talking to it."""

    def __init__(self, returncode: int | None, last_lines: str = "") -> None:
        super().__init__(f"gdb exited with status {returncode}")
        self.returncode = returncode
        self.last_lines = last_lines


class MiTimeout(Exception):
    """GDB did not answer in time."""


def mi_quote(text: str) -> str:
    """Quote ``text`` as an MI c-string (for ``-interpreter-exec console "..."`` and file names)."""
    out = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\t", "\\t")
    return f'"{out}"'


class MiSession:
    """One gdb process driven through GDB/MI."""

    def __init__(
        self,
        argv: Sequence[str],
        *,
        mi_path: str,
        log_path: str,
        env: Mapping[str, str] | None = None,
        poll_interval: float = 0.005,
        on_exit: Callable[[], None] | None = None,
        pass_fds: Sequence[int] = (),
    ) -> None:
        self.argv = list(argv)
        self.tripwire: Any = None  # set by whoever starts GDB for a capture (sysbreak.tripwire.Tripwire)
        self.mi_path = mi_path
        self.log_path = log_path
        self._poll = poll_interval
        self.on_exit = on_exit  # called once, from the reader thread, as soon as gdb is seen gone
        self._cond = threading.Condition()
        self._results: dict[int, Record] = {}
        self._async: list[Record] = []
        self._token = 100
        self._log: IO[str] = open(log_path, "a", encoding="utf-8", errors="replace")  # noqa: SIM115
        self._log_lock = threading.Lock()
        self._closed = False
        self._capture: list[str] | None = None
        self._t0 = time.monotonic()
        mi_out = open(mi_path, "ab")  # noqa: SIM115
        self._mi_start = mi_out.seek(0, os.SEEK_END)  # read only what this gdb writes
        try:
            # restore_signals=False keeps Python's SIG_IGN for SIGPIPE in gdb: a belt to the braces of the file.
            self.proc = subprocess.Popen(
                self.argv,
                stdin=subprocess.PIPE,
                stdout=mi_out,
                stderr=subprocess.STDOUT,
                env=dict(env) if env is not None else None,
                start_new_session=True,
                restore_signals=False,
                close_fds=True,
                pass_fds=tuple(pass_fds),
            )
        finally:
            mi_out.close()
        assert self.proc.stdin is not None
        self._stdin = self.proc.stdin
        self.pid = self.proc.pid
        self._reader = threading.Thread(target=self._read_loop, name="sysbreak-mi-reader", daemon=True)
        self._reader.start()

    # ---------------------------------------------------------------- reading
    def _read_loop(self) -> None:
        fh = open(self.mi_path, "rb")  # noqa: SIM115
        fh.seek(self._mi_start)
        buf = b""
        try:
            while True:
                chunk = fh.read(1 << 16)
                if chunk:
                    buf += chunk
                    *lines, buf = buf.split(b"\n")
                    for raw in lines:
                        self._handle_line(raw.decode("utf-8", "replace").rstrip("\r"))
                    continue
                if self.proc.poll() is not None:
                    if self.on_exit is not None:
                        callback, self.on_exit = self.on_exit, None
                        try:
                            callback()
                        except Exception as exc:  # never lose the reader over it
                            self.write_log(f"(sysbreak) exit handler failed: {exc!r}")
                    # drain what gdb wrote before it exited, then report its end
                    chunk = fh.read()
                    if chunk:
                        buf += chunk
                        continue
                    if buf:
                        self._handle_line(buf.decode("utf-8", "replace"))
                        buf = b""
                    with self._cond:
                        self._cond.notify_all()
                    return
                if self._closed:
                    return
                time.sleep(self._poll)
        finally:
            fh.close()

    def _handle_line(self, line: str) -> None:
        if not line or line == "(gdb) " or line == "(gdb)":
            return
        i = 0
        while i < len(line) and line[i].isdigit():
            i += 1
        kind = line[i] if i < len(line) else ""
        if kind == "=" and line.startswith("breakpoint-modified", i + 1):
            return
        if not kind or kind not in "~@&^*=+":
            self.write_log(line)  # stderr text, or something that is not MI
            return
        try:
            rec = parse_response(line)
        except Exception:  # pygdbmi chokes on very odd text: keep it in the log, never die
            self.write_log(line)
            return
        rtype = rec.get("type")
        if rtype in ("console", "log", "target", "output"):
            payload = rec.get("payload")
            if isinstance(payload, str):
                self.write_log(payload, newline=False)
                if rtype == "console":
                    with self._cond:
                        if self._capture is not None:
                            self._capture.append(payload)
            return
        if rtype == "result":
            token = rec.get("token")
            if rec.get("message") == "error":
                payload = rec.get("payload") or {}
                self.write_log(f"(gdb/mi error) {payload.get('msg', '')}")
            with self._cond:
                if isinstance(token, int):
                    self._results[token] = rec
                self._cond.notify_all()
            return
        with self._cond:  # notify / exec async records
            self._async.append(rec)
            self._cond.notify_all()

    def write_log(self, text: str, *, newline: bool = True) -> None:
        with self._log_lock:
            if self._log.closed:
                return
            self._log.write(text + ("\n" if newline else ""))
            self._log.flush()

    # ---------------------------------------------------------------- writing
    def alive(self) -> bool:
        return self.proc.poll() is None

    def send(self, command: str) -> int:
        """Send one MI command without waiting; returns its token."""
        with self._cond:
            self._token += 1
            token = self._token
        self.write_log(f"(sysbreak +{time.monotonic() - self._t0:.3f}s) {command}")
        try:
            self._stdin.write(f"{token}{command}\n".encode())
            self._stdin.flush()
        except (BrokenPipeError, ValueError, OSError) as exc:
            raise GdbGone(self.proc.poll(), self.tail_log()) from exc
        return token

    def command(self, command: str, timeout: float = 30.0) -> Record:
        """Send ``command`` and wait for its result record. ``^error`` raises :class:`MiError`."""
        return self._result(self.send(command), command, timeout)

    def pipeline(self, commands: Sequence[str], timeout: float = 30.0) -> list[Record | MiError]:
        """Send all ``commands`` at once (GDB runs them in order), then wait for every result: one round trip
        instead of one per command. Each ``^error`` is returned as its :class:`MiError`, not raised."""
        tokens = [self.send(cmd) for cmd in commands]
        out: list[Record | MiError] = []
        for token, cmd in zip(tokens, commands, strict=True):
            try:
                out.append(self._result(token, cmd, timeout))
            except MiError as err:
                out.append(err)
        return out

    def _result(self, token: int, command: str, timeout: float) -> Record:
        deadline = time.monotonic() + timeout
        with self._cond:
            while token not in self._results:
                if not self.alive() and not self._reader.is_alive():
                    raise GdbGone(self.proc.poll(), self.tail_log())
                left = deadline - time.monotonic()
                if left <= 0:
                    raise MiTimeout(f"gdb did not answer {command!r} within {timeout:g} s")
                self._cond.wait(min(left, 0.1))
            rec = self._results.pop(token)
        if rec.get("message") == "error":
            payload = rec.get("payload") or {}
            raise MiError(command, str(payload.get("msg", "")))
        return rec

    def console(self, text: str, timeout: float = 30.0) -> Record:
        """Run a CLI command through ``-interpreter-exec console``."""
        return self.command(f"-interpreter-exec console {mi_quote(text)}", timeout=timeout)

    def console_output(self, text: str, timeout: float = 30.0) -> str:
        """Run a CLI command and return what GDB printed on its console stream while running it."""
        with self._cond:
            self._capture = []
        try:
            self.console(text, timeout=timeout)
            with self._cond:
                return "".join(self._capture or [])
        finally:
            with self._cond:
                self._capture = None

    # ---------------------------------------------------------------- async records
    def pop_async(self) -> list[Record]:
        with self._cond:
            out, self._async = self._async, []
        return out

    def wait_for_async(self, predicate: Callable[[Record], bool], timeout: float) -> bool:
        """Wait until an async record satisfying ``predicate`` is queued (none is consumed), or ``timeout`` s."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not any(predicate(r) for r in self._async):
                left = deadline - time.monotonic()
                if left <= 0 or (not self.alive() and not self._reader.is_alive()):
                    return False
                self._cond.wait(left)
            return True

    def async_waiting(self) -> bool:
        """Whether async records are waiting (none is consumed)."""
        with self._cond:
            return bool(self._async)

    def wait_async(self, predicate: Callable[[Record], bool], timeout: float) -> Record | None:
        """Wait for (and consume) the first async record satisfying ``predicate``; others are kept."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for idx, rec in enumerate(self._async):
                    if predicate(rec):
                        del self._async[idx]
                        return rec
                if not self.alive() and not self._reader.is_alive():
                    return None
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self._cond.wait(min(left, 0.1))

    # ---------------------------------------------------------------- ending
    def tail_log(self, lines: int = 12) -> str:
        try:
            with open(self.log_path, encoding="utf-8", errors="replace") as fh:
                return "".join(fh.readlines()[-lines:])
        except OSError:
            return ""

    def close_stdin(self) -> None:
        with contextlib.suppress(OSError):
            self._stdin.close()

    def wait(self, timeout: float) -> int | None:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def kill(self) -> None:
        if self.alive():
            self.proc.kill()
            self.proc.wait()

    def close(self) -> None:
        """Reap gdb (killing it if it is still there) and stop the reader."""
        self.close_stdin()
        self.kill()
        self._reader.join(timeout=2)
        self._closed = True
        with self._log_lock:
            self._log.close()

    def __enter__(self) -> MiSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
