"""One capture, from start to a clean end on every path: ``sysbreak run`` and ``sysbreak attach``.

The sequence:

1. check what can be checked before touching the target (gdb and its Python, the pid, the output directory);
2. start GDB (:class:`~sysbreak.driver.mi.MiSession`), load the extension, ``set sysbreak detach-on-exit on``;
3. attach. For ``run`` the program is started by sysbreak itself, held by a tiny helper before its ``exec``
   until GDB is attached with ``catch exec``; GDB never forks it, so it never gets ``PTRACE_O_EXITKILL`` (the
   kernel would kill a program GDB started if GDB died) and it stays sysbreak's child (its exit status is ours
   to pass on, its standard streams are sysbreak's);
4. ``sysbreak break ... --log events.jsonl --restore-file restore.jsonl``, a first smaps snapshot, continue;
5. wait for a limit, a signal, the end of the program or of GDB, following the event log for the progress line;
6. stop: interrupt, ``sysbreak clear``, detach, quit GDB. When any of that fails GDB's stdin is closed (the
   extension detaches at exit), then GDB is killed and the bytes under the breakpoints are restored from the
   restore file. Whatever happened, the target is then checked for a leftover ``int3`` at every restore address.

SIGKILL of sysbreak itself: GDB reads end of file on its stdin, quits, and detach-on-exit detaches the target.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import sysbreak
from sysbreak import syscalls as syscall_table
from sysbreak.capture import budget
from sysbreak.capture import directory as capdir
from sysbreak.capture.follow import EventTail
from sysbreak.driver import gdbenv, prestart, process
from sysbreak.driver.launch import start_gdb
from sysbreak.driver.mi import GdbGone, MiError, MiSession, MiTimeout, Record, mi_quote
from sysbreak.driver.restore import (
    RestoreFile,
    RestoreResult,
    exiting,
    held_libc,
    int3_addresses,
    read_entries,
    restore,
    write_back,
)
from sysbreak.driver.tree import ProcessTree
from sysbreak.errors import ExitCode, SysbreakError
from sysbreak.tripwire import Tripwire

#: how sysbreak's own signals end a capture
SIGNAL_REASONS: dict[int, str] = {signal.SIGINT: "interrupted", signal.SIGTERM: "terminated", signal.SIGHUP: "hangup"}

# The helper that holds a `run` program before its exec: in its own process group (a Ctrl-C on the terminal is
# sysbreak's alone), it lets sysbreak and its children (GDB) trace it under Yama ptrace_scope 1, waits for one byte
# on a pipe (sent once GDB is attached and has `catch exec`; end of file means sysbreak gave up: exit without
# running anything), puts back the signals Python ignores, and execs the program.
# The holder GDB attaches to before the program exists: a POSIX shell, because GDB loads the symbols of whatever
# it attaches to, and a Python interpreter (with python3.11-dbg installed) cost 200 ms of that. It waits for one
# byte on fd 3, then execs the program in place. Process group and PR_SET_PTRACER are set in _hold() before.
_HOLDER = ["/bin/sh", "-c", 'read -r go <&3; [ "$go" = g ] || exit 125; exec 3<&-; exec "$@"', "sysbreak-holder"]
PR_SET_PTRACER = 0x59616D61
#: a sysroot where no file exists: GDB then opens no shared library of the target (see _start_gdb)
NO_SYSROOT = "/nonexistent/sysbreak-loads-no-shared-libraries"


def _hold(go_fd: int) -> None:
    """In the forked child, before the holder runs: the go pipe on fd 3, own process group (Ctrl-C on sysbreak's
    terminal is sysbreak's to handle), SIGPIPE/SIGXFSZ back to default for the program, and, under Yama
    ptrace_scope 1, permission for sysbreak's GDB to attach (PR_SET_PTRACER, inherited through exec)."""
    if go_fd != 3:
        os.dup2(go_fd, 3)  # fd 3 is kept open: it is in pass_fds
    os.setpgid(0, 0)
    for sig in (signal.SIGPIPE, signal.SIGXFSZ):
        signal.signal(sig, signal.SIG_DFL)
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PTRACER, os.getppid(), 0, 0, 0)
    except Exception:  # noqa: BLE001 - no Yama, no libc: nothing to allow
        pass


@dataclass
class CaptureOptions:
    syscalls: list[str] = field(default_factory=list)
    lib: str | None = None
    duration: float | None = None
    max_events: int | None = None
    output: str | None = None
    interval: float = 1.0
    python_stacks: bool = False
    exhaustive: bool = False
    quiet: bool = False
    gdb: str | None = None
    non_stop: bool = False
    # let GDB load symbol files (its own unwinder; slow attach, long stops); None: only when no offline unwinder
    # is installed (sysbreak.unwind), since raw stacks would then keep only frame 0
    gdb_symbols: bool | None = None
    program_stdout: int | None = None  # run: the program's stdout (subprocess.DEVNULL, a fd); None: sysbreak's
    program_stderr: int | None = None  # run: the program's stderr, likewise
    follow_children: bool = False  # run -f / attach --children: every descendant too (driver/tree.py)
    # with follow_children: GDBs started ahead for new children (ProcessTree's pool; None: its default, and `run`
    # does not wait for them before starting the program)
    spare_gdbs: int | None = None


@dataclass
class Progress:
    """What the progress line shows."""

    pid: int
    elapsed: float
    events: int
    counts: dict[str, int]
    rss_kb: int | None
    phase: str  # "attaching", "arming", "capturing", "stopping", "waiting"


@dataclass
class CaptureResult:
    directory: Path
    pid: int
    end_reason: str
    events: int
    counts: dict[str, int]
    elapsed: float
    rss_first_kb: int | None
    rss_last_kb: int | None
    snapshots: int
    target_alive: bool
    exit_status: int | None = None  # run: the program's exit code (negative: killed by that signal)
    restored: RestoreResult | None = None
    warnings: list[str] = field(default_factory=list)
    syscalls: list[str] = field(default_factory=list)
    processes: list[dict[str, Any]] = field(default_factory=list)  # meta.json's list: the whole tree, root first
    duration: float | None = None  # the limits the capture ran with (for the summary's wording)
    max_events: int | None = None
    overshoot: int = 0  # calls beyond --max-events: in flight in other processes when the tree reached it


def validate_syscalls(names: list[str]) -> list[str]:
    """Names of the syscalls to catch (default mmap, munmap, mremap, brk); a one-line error for a bad name."""
    return [syscall_table.name(nr) for nr in syscall_table.parse_list(names)]


def _describe_exit(rec: Record) -> tuple[str, int | None]:
    """(text, status) of a ``*stopped,reason="exited..."`` or ``=thread-group-exited`` record."""
    payload = rec.get("payload") or {}
    if "exit-code" in payload:
        code = int(str(payload["exit-code"]), 8)  # GDB/MI prints exit codes in octal
        return f"exited with status {code}", code
    if payload.get("reason") == "exited-normally":
        return "exited with status 0", 0
    name = payload.get("signal-name")
    if name:
        num = getattr(signal, str(name), None)
        return f"was killed by {name}", (-int(num) if num is not None else None)
    return "exited", None


def _wakes_the_loop(rec: Record) -> bool:
    return rec.get("message") in ("stopped", "thread-group-exited")


def _other_inferior(rec: Record) -> bool:
    """A thread-group record of another inferior than the traced process's (i1): a vfork child held to its exec."""
    group = (rec.get("payload") or {}).get("id")
    return str(rec.get("message", "")).startswith("thread-group") and group is not None and group != "i1"


def _is_exit_record(rec: Record) -> bool:
    """A record that says how the process ended: ``*stopped,reason="exited..."``, or ``=thread-group-exited``
    with an exit code (without one, the process was killed: the ``*stopped`` that follows names the signal)."""
    payload = rec.get("payload") or {}
    if rec.get("message") == "stopped":
        return str(payload.get("reason", "")).startswith("exited")
    return rec.get("message") == "thread-group-exited" and "exit-code" in payload and not _other_inferior(rec)


class CaptureSession:
    """Runs one capture. Create it, then :meth:`execute` in the main thread (it installs signal handlers)."""

    def __init__(
        self,
        opts: CaptureOptions,
        *,
        pid: int | None = None,
        argv: list[str] | None = None,
        on_progress: Callable[[Progress], None] | None = None,
        say: Callable[[str], None] | None = None,
        tree: ProcessTree | None = None,
        ppid: int | None = None,
        handoff: str | None = None,
        more_pids: list[int] | None = None,
    ) -> None:
        if (pid is None) == (argv is None):
            raise ValueError("give exactly one of pid and argv")
        self.opts = opts
        self.pid = pid or 0
        self.argv = argv
        self.on_progress = on_progress
        self.say = say or (lambda _msg: None)
        self.syscalls = validate_syscalls(opts.syscalls)
        self.gdb_path = ""
        self.directory: Path | None = None
        self.mi: MiSession | None = None
        self.meta: capdir.Meta | None = None
        self.snap: capdir.Snapshotter | None = None
        self.tail: EventTail | None = None
        self.child: subprocess.Popen[bytes] | None = None
        self._go_fd: int | None = None
        self.stop_signal: int | None = None
        self._stop = threading.Event()
        self.t_start = 0.0
        self.end_reason = ""
        self.exit_status: int | None = None
        self.exit_text = ""
        self.target_gone = False
        self.warnings: list[str] = []
        self.restored: RestoreResult | None = None
        self._phase = "attaching"
        self.t_capture: float | None = None
        self._quitting = False
        self._restore_lock = threading.Lock()
        self._guard_stop = threading.Event()
        self.probe: gdbenv.GdbProbe | None = None
        # a process tree (driver/tree.py): the root session makes it; a child's session shares its root's
        self.tree = tree if tree is not None else ProcessTree(self, follow=opts.follow_children)
        self.is_root = tree is None
        self.ppid = ppid
        self.handoff = handoff  # "fork"/"vfork": a child held stopped by its parent's GDB (`sysbreak hold`)
        self.held_by: CaptureSession | None = None
        self._spare: MiSession | None = None  # a GDB started ahead for this child (ProcessTree.take_spare)
        self._spare_dir: Path | None = None
        self.held_since: float | None = time.monotonic() if handoff is not None else None
        self.held_s: float | None = None  # how long the hand-over held the child stopped
        self._held = handoff is not None
        self._to_release: list[int] = []  # children whose own GDB has them: `sysbreak release` in our GDB
        self.more_pids = [p for p in (more_pids or []) if p != self.pid]  # attach PID PID...: the others
        self._sysroot: str | None = None  # GDB's sysroot while it is set to nowhere for the attach
        # a vfork child this GDB holds as a second inferior from its vfork to its exec (_on_vfork)
        self._vfork_child: VforkChild | None = None
        self.at_exec = False  # a vfork child handed over at the first instruction of its new image
        self.cold_start = False  # a child that found no spare GDB (ProcessTree.cold_started once it has one)

    # ------------------------------------------------------------------------------------------- public
    def execute(self) -> CaptureResult:
        if self.is_root:
            self.tree.add_root(self, os.getpid() if self.argv is not None else process.ppid(self.pid), "root")
        self._check_inputs()
        previous = self._install_signals()
        try:
            return self._execute()
        finally:
            self._restore_signals(previous)

    def wait_for_program(self, forward: bool = True) -> int | None:
        """``run`` after the capture: wait for the program, passing SIGINT/SIGTERM/SIGHUP on to it."""
        if self.child is None:
            return None
        if self.child.poll() is not None:
            return self.child.returncode
        child = self.child

        def forward_signal(signum: int, _frame: FrameType | None) -> None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child.pid, signum)

        previous = {s: signal.signal(s, forward_signal) for s in SIGNAL_REASONS} if forward else {}
        try:
            while True:
                try:
                    return child.wait()
                except InterruptedError:  # pragma: no cover - PEP 475 retries for us
                    continue
        finally:
            for s, h in previous.items():
                signal.signal(s, h)

    def end_program(self, grace: float = 5.0) -> int | None:
        """``run`` after the capture, by default: end the program sysbreak started, as ``timeout`` does.

        SIGTERM to its process group (the program and what it started, as a Ctrl-C on a terminal would reach
        them), SIGKILL after ``grace`` seconds; returns its exit status (negative: the signal that killed it)."""
        if self.child is None:
            return None
        child = self.child
        if child.poll() is not None:
            return child.returncode
        for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 10.0)):
            try:
                os.killpg(child.pid, sig)
            except ProcessLookupError:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(child.pid, sig)
            try:
                return child.wait(timeout=wait)
            except subprocess.TimeoutExpired:
                continue
        return child.poll()

    # ------------------------------------------------------------------------------------------- checks
    def _check_inputs(self) -> None:
        if self.opts.lib:
            try:
                re.compile(self.opts.lib)
            except re.error as err:
                raise SysbreakError(
                    f"--lib {self.opts.lib!r} is not a valid regular expression: {err}", ExitCode.USAGE
                ) from None
        if self.opts.duration is not None and self.opts.duration <= 0:
            raise SysbreakError("--duration must be more than 0 seconds", ExitCode.USAGE)
        if self.opts.max_events is not None and self.opts.max_events <= 0:
            raise SysbreakError("--max-events must be at least 1", ExitCode.USAGE)
        if self.opts.interval < 0:
            raise SysbreakError("--interval cannot be negative", ExitCode.USAGE)
        if self.argv is not None:
            if not self.argv:
                raise SysbreakError(
                    "give the command to run after --, e.g. sysbreak run -- ./server --port 80", ExitCode.USAGE
                )
            prog = self.argv[0]
            found = shutil.which(prog) if os.sep not in prog else (prog if os.path.exists(prog) else None)
            if found is None:
                raise SysbreakError(f"command not found: {prog}", ExitCode.USAGE)
            if os.path.isdir(found) or not os.access(found, os.X_OK):
                raise SysbreakError(f"'{prog}' is not an executable program", ExitCode.USAGE)
        self.gdb_path = gdbenv.find_gdb(self.opts.gdb)
        if self.argv is None and self.handoff is None:  # a handed-over child is still its parent GDB's now
            process.check_traceable(self.pid)
            for pid in self.more_pids:
                process.check_traceable(pid)
        self.probe = gdbenv.check_gdb(self.gdb_path)

    # ------------------------------------------------------------------------------------------- signals
    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        if self.stop_signal is None:
            self.stop_signal = signum
        self._stop.set()

    def _install_signals(self) -> dict[int, Any]:
        if threading.current_thread() is not threading.main_thread():
            return {}
        return {s: signal.signal(s, self._on_signal) for s in SIGNAL_REASONS}

    @staticmethod
    def _restore_signals(previous: dict[int, Any]) -> None:
        for s, h in previous.items():
            signal.signal(s, h)

    def _stopping(self) -> bool:
        return self._stop.is_set()

    # ------------------------------------------------------------------------------------------- main
    def _execute(self) -> CaptureResult:
        if self.argv is not None:
            self._spawn_program()
        try:
            if self._spare is not None and self._spare_dir is not None:
                # the spare GDB's directory (its logs) becomes this process's: renamed, its files stay open
                self._spare_dir.rename(self.opts.output or capdir.default_name(self.pid))
                self.directory = Path(self.opts.output or "")
                (self.directory / capdir.SNAPSHOTS).mkdir(exist_ok=True)
            else:
                self.directory = capdir.create(self.opts.output or capdir.default_name(self.pid))
        except SysbreakError:
            self._abandon_program()
            raise
        d = self.directory
        self.tail = EventTail(d / capdir.EVENTS)
        self.t_start = time.monotonic()
        self.meta = capdir.Meta(
            d,
            command="run" if self.argv is not None else "attach",
            pid=self.pid,
            cmdline=list(self.argv) if self.argv is not None else process.cmdline(self.pid),
            exe=process.exe(self.pid),
            started=capdir.now_wall(),
            t0=self.t_start,
            tool=f"sysbreak {sysbreak.__version__}",
            gdb=self.probe.version if self.probe else None,
            gdb_path=self.gdb_path,
            gdb_python=self.probe.python if self.probe else None,
            syscalls=self.syscalls,
            mode="exhaustive" if self.opts.exhaustive else "callsite",
            stop_mode="non-stop" if self.opts.non_stop else "all-stop",
            lib=self.opts.lib,
            duration=self.opts.duration,
            max_events=self.opts.max_events,
            interval=self.opts.interval,
            python_stacks=self.opts.python_stacks,
            modules=[],
        )
        if self.ppid is not None:
            self.meta.update(ppid=self.ppid, how=self.handoff or "attach")
        self.snap = capdir.Snapshotter(d, self.pid, self.opts.interval)
        try:
            if self.handoff is not None and self.target_gone:
                raise _EarlyEnd("exited")  # a vfork child that ended before its exec (tree.adopt's `ended`)
            if self.handoff is not None:
                self._wait_handed_over()
            if self.handoff == "vfork" and not self.at_exec:
                self._run_to_exec()  # a vfork child of a vfork child: carried to its exec with bare ptrace
            elif self.at_exec:
                self.meta_exec()
            if self.is_root:
                self.tree.prepare_spare()  # the pool of GDBs for children starts with the root's own GDB
            # the cold scans of the target's modules run while GDB starts (they are done before the attach)
            prescan = threading.Thread(target=self._prescan, name="sysbreak-prescan", daemon=True)
            prescan.start()
            try:
                self._start_gdb()
            finally:
                prescan.join()
            self._prepare()
            self._attach_others()
            self._attach()
            if not self._stopping():
                self._arm()
                self._start_guard()
                self._catch_forks()
                self._attach_children()
            if not self._stopping():
                self.snap.take()
                self._continue()
                self.snap.start()
                if self.is_root:
                    self.tree.prepare_spare()
                if self.tree.follow and self.is_root:
                    self.tree.warm_spares(self.pid)
                self._loop()
                if self.is_root and self.end_reason == "exited":
                    self._wait_tree()
        except _EarlyEnd as end:
            self.end_reason = end.reason
        except SysbreakError:
            self.end_reason = "error"
            self._finish()
            raise
        except BaseException:
            self.end_reason = "error"
            self._finish()
            raise
        if not self.end_reason:
            self.end_reason = SIGNAL_REASONS.get(self.stop_signal or 0, "interrupted")
        self._finish()
        return self._result()

    # ------------------------------------------------------------------------------------------- run
    def _spawn_program(self) -> None:
        """Start the helper that will exec the program once GDB is attached; its pid is the program's pid."""
        assert self.argv is not None
        r, w = os.pipe()
        try:
            self.child = subprocess.Popen(
                [*_HOLDER, *self.argv],
                pass_fds=(r, 3),
                stdout=self.opts.program_stdout,
                stderr=self.opts.program_stderr,
                preexec_fn=lambda: _hold(r),
            )
        finally:
            os.close(r)
        self._go_fd = w
        self.pid = self.child.pid

    def _release_program(self) -> None:
        assert self._go_fd is not None
        os.write(self._go_fd, b"g")
        os.close(self._go_fd)
        self._go_fd = None

    def _abandon_program(self) -> None:
        """The capture ended before the program was released: it never runs (the helper is killed)."""
        if self._go_fd is None or self.child is None:
            return
        os.close(self._go_fd)
        self._go_fd = None
        with contextlib.suppress(ProcessLookupError):
            self.child.kill()
        self.child.wait()
        self.target_gone = True
        self.warnings.append(f"the capture ended before {self.argv[0] if self.argv else 'the program'} was started")

    def _prescan(self) -> None:
        """Scan the modules mapped in the target here, before GDB starts: a first (cold) scan of a large library
        takes seconds and hundreds of MB, which would otherwise be GDB's (its `sysbreak prepare` then reads the
        scans from the cache)."""
        if self.argv is not None:
            return
        from sysbreak.sites.live import mapped_modules
        from sysbreak.sites.prescan import fill_cache

        try:
            mods = mapped_modules(self.pid)
        except SysbreakError:
            return  # the attach says why
        # the modules not cached yet, biggest first, on one lane per CPU (this thread and worker processes)
        fill_cache([path for path, _base in mods], stopping=self._stopping)

    def _prepare(self) -> None:
        """Before attaching: let the extension import what a hit needs and scan every module mapped in the target
        (cached by build id), so that arming inside the stop only looks the scans up. Libraries loaded later are
        scanned when they load."""
        assert self.mi is not None
        cmd = "sysbreak prepare" + (f" {self.pid}" if self.argv is None else "")
        if self.opts.python_stacks:
            cmd += " --python-stacks"
        try:
            out = self.mi.console_output(cmd, timeout=600)
        except MiError as err:
            raise SysbreakError(
                f"sysbreak could not scan the target's modules: {err.message}", ExitCode.TARGET
            ) from None
        for line in out.splitlines():
            if line.startswith("sysbreak: scanned"):
                self.say(line.removeprefix("sysbreak: "))

    # ------------------------------------------------------------------------------------------- gdb
    def _start_gdb(self) -> None:
        assert self.directory is not None and self.meta is not None
        spare, self._spare = self._spare, None
        if spare is not None and spare.alive():
            self.mi = spare  # started and loaded while the parent ran (driver/tree.py): the child waits less
            self.mi.on_exit = self._gdb_exited
            self.meta.update(gdb_spare=True)
        else:
            if spare is not None:
                spare.close()
            try:
                # the GDB the command line started first (driver/prestart.py), when it fits these options
                early = (
                    prestart.take(
                        self.gdb_path,
                        self.directory,
                        capdir.GDB_MI,
                        capdir.GDB_LOG,
                        non_stop=self.opts.non_stop,
                        symbols=gdb_symbols_wanted(self.opts),
                    )
                    if self.is_root
                    else None
                )
                if early is not None:
                    early.on_exit = self._gdb_exited
                    self.meta.update(gdb_prestarted=True)
                self.mi = early or launch_gdb(self.gdb_path, self.directory, self.opts, on_exit=self._gdb_exited)
            finally:
                if self.cold_start:
                    self.cold_start = False
                    self.tree.cold_started()
        self.meta.update(gdb_pid=self.mi.pid)
        if not gdb_symbols_wanted(self.opts) and self.argv is None:
            # At the attach GDB opens no shared library (it would open and parse every one inside the stop:
            # 60-90 ms on a PyTorch process, 5 ms without); the extension finds them in /proc/PID/maps. The
            # sysroot comes back once the target runs again armed (_restore_sysroot): GDB then reads the
            # library list with the target running, and can follow an exec (it needs the new executable).
            rec = self.mi.command("-gdb-show sysroot")
            self._sysroot = str((rec.get("payload") or {}).get("value", ""))
            self.mi.console(f"set sysroot {NO_SYSROOT}")

    def _attach(self) -> None:
        assert self.mi is not None
        mi = self.mi
        self._phase = "attaching"
        self._progress()
        if self.argv is not None:
            self.say(f"starting {shlex.join(self.argv)} (pid {self.pid}) under GDB")
        else:
            self.say(f"attaching to pid {self.pid} ({' '.join(process.cmdline(self.pid)) or '?'})")
        try:
            mi.command(f"-target-attach {self.pid}", timeout=60)
        except MiError as err:
            raise SysbreakError(self._attach_error(err.message), ExitCode.TARGET) from None
        self._wait_stopped_all(timeout=30)
        if self.handoff is not None:
            self.release_hold()  # GDB holds it now: end the job-control stop the hand-over left it in
        if self.argv is not None:
            mi.console("catch exec")
            if self.tree.follow and self.opts.spare_gdbs is not None:
                # --spare-gdbs N: the program starts once the N GDBs for its first children are ready (a child
                # held for a GDB's start waits 1-3 s; the program waiting now, before its first instruction,
                # stalls nothing)
                self.tree.wait_spares(timeout=60)
            self._resume()
            self._release_program()
            while True:
                rec = mi.wait_async(lambda r: r.get("message") in ("stopped", "thread-group-exited"), timeout=0.2)
                if rec is not None:
                    if rec.get("message") == "thread-group-exited" or str(
                        (rec.get("payload") or {}).get("reason", "")
                    ).startswith("exited"):
                        self._take_exit(rec)
                        raise _EarlyEnd("exited")
                    if (rec.get("payload") or {}).get("reason") == "exec":
                        break
                    continue
                if not mi.alive():
                    raise _EarlyEnd("gdb-died")
                if self._stopping():
                    return
            if self.opts.non_stop:
                self._wait_stopped_all(timeout=10)
            mi.console("delete")
            assert self.meta is not None
            self.meta.update(exe=process.exe(self.pid), cmdline=process.cmdline(self.pid) or list(self.argv))

    def _attach_error(self, message: str) -> str:
        pid = self.pid
        if self.argv is None and not process.alive(pid):
            try:
                os.stat(f"/proc/{pid}")
                return f"process {pid} exited before sysbreak could attach"
            except FileNotFoundError:
                return f"process {pid} exited before sysbreak could attach (no process with pid {pid} exists now)"
        if "Operation not permitted" in message or "EPERM" in message:
            try:
                process.check_traceable(pid)
            except SysbreakError as err:
                return str(err)
            return f"the kernel did not let GDB trace process {pid} (ptrace: Operation not permitted): " + (
                process.ptrace_hint(pid)
            )
        if "No such process" in message:
            return f"no process with pid {pid} exists"
        return f"GDB could not attach to process {pid}: {message}"

    def _arm(self) -> None:
        assert self.mi is not None and self.directory is not None and self.tail is not None
        self._phase = "arming"
        self._progress()
        d = self.directory
        args = [*self.syscalls, "--log", str(d / capdir.EVENTS), "--restore-file", str(d / capdir.RESTORE)]
        if self.opts.lib:
            args += ["--lib", self.opts.lib]
        if self.opts.python_stacks:
            args.append("--python-stacks")
        if self.opts.exhaustive:
            args.append("--exhaustive")
        args.append("--quiet")  # a console line per call would only fill gdb.log: events.jsonl has them all
        if self.opts.max_events:
            # one count for the whole tree: every process's GDB appends to the root's budget file
            args += ["--max-events", str(self.opts.max_events), "--budget-file", str(self.budget_path())]
        cmd = "sysbreak break " + " ".join(_gdb_quote(a) for a in args)
        try:
            out = self.mi.console_output(cmd, timeout=300)
        except MiError as err:
            raise SysbreakError(f"sysbreak could not arm its breakpoints: {err.message}", ExitCode.USAGE) from None
        self.tail.poll()
        self._update_modules()
        summary = [ln for ln in out.splitlines() if ln.startswith("sysbreak: catching")]
        if summary:
            self.say(summary[-1].removeprefix("sysbreak: "))

    def _update_modules(self) -> None:
        assert self.tail is not None and self.meta is not None
        keep = ("path", "base", "bias", "build_id", "sites", "breakpoints", "uncovered", "uncovered_count", "error")
        mods = [{k: m.get(k) for k in keep if k in m} for m in self.tail.modules]
        if mods != self.meta.data.get("modules"):
            self.meta.update(modules=mods)

    def _resume(self) -> None:
        assert self.mi is not None
        self.mi.command("-exec-continue --all" if self.opts.non_stop else "-exec-continue")

    def _continue(self) -> None:
        assert self.meta is not None
        self.t_capture = time.monotonic()
        self.meta.update(t0=self.t_capture, started=capdir.now_wall())
        self._resume()
        self._phase = "capturing"
        self._restore_sysroot()

    def _restore_sysroot(self) -> None:
        """Put GDB's sysroot back (see _start_gdb), with the target running: GDB opens the libraries now."""
        if self._sysroot is None or self.mi is None:
            return
        value, self._sysroot = self._sysroot, None
        try:
            self.mi.console(f"set sysroot {value}" if value else "set sysroot", timeout=120)
        except (MiError, MiTimeout) as err:
            self.warnings.append(f"GDB could not reload the library list ({err}); an exec may not be followed")

    # ------------------------------------------------------------------------------------------- loop
    def _loop(self) -> None:
        assert self.mi is not None and self.tail is not None
        mi = self.mi
        start = self.t_capture or time.monotonic()
        deadline = start + self.opts.duration if self.opts.duration else None
        n_modules = len(self.tail.modules)
        last_progress = 0.0
        while True:
            if self._stopping():
                return
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                self.end_reason = "duration"
                return
            for other in self.tail.poll():
                if other.get("type") == "exec":
                    self._on_exec(other)
            self._release_adopted()
            if self._vfork_child is not None:
                self._check_vfork_child(self._vfork_child)
            if self.is_root and self.budget_reached():
                self.end_reason = "max-events"
                return
            if len(self.tail.modules) != n_modules:
                n_modules = len(self.tail.modules)
                self._update_modules()
                if self.tree.follow and self.is_root:
                    # its children map these: the spares scan them now (the root: it outlives its workers; a
                    # child's warm pid could be gone when the spares get to it)
                    self.tree.warm_spares(self.pid)
            if self.tail.end is not None:
                self.end_reason = str(self.tail.end.get("reason") or "max-events")
                if self.end_reason == "exited":
                    self._wait_exit_record(5.0)
                return
            batch = mi.pop_async()
            for i, rec in enumerate(batch):
                if self._handle_async(rec):
                    self._note_exit(batch[i + 1 :])  # the records after the one that ended it: how it exited
                    return
            if not mi.alive():
                self.end_reason = "gdb-died"
                self._restore_if_needed(only_if_int3=True)  # at once, should the reader thread be late
                return
            if self.argv is None and not process.alive(self.pid):
                self._wait_exit_record(5.0)  # GDB reports how it ended; slow on a loaded machine
                self.end_reason = "exited"
                self.target_gone = True
                return
            if now - last_progress >= 0.2:
                last_progress = now
                self._progress()
            # woken at once by a stop (a fork's, a vfork child's: the process waits for the driver there), else
            # every 50 ms for the rest
            mi.wait_for_async(_wakes_the_loop, 0.05)

    def _wait_exit_record(self, timeout: float) -> None:
        """The process is gone: take how it ended from GDB's records (``=thread-group-exited`` with its exit code
        comes first, ``*stopped,reason="exited..."`` after it; a killed process's status is only in the latter)."""
        assert self.mi is not None
        self.target_gone = True
        if self.exit_text:
            return
        rec = self.mi.wait_async(_is_exit_record, timeout)
        if rec is not None:
            self.exit_text, self.exit_status = _describe_exit(rec)

    def _note_exit(self, records: list[Record]) -> None:
        """How the process ended, from records popped with the one that ended the capture (they are not looked
        at again: a status lost here was meta.json's bare "exited")."""
        if self.exit_text:
            return
        for rec in records:
            if _is_exit_record(rec):
                self.target_gone = True
                self.exit_text, self.exit_status = _describe_exit(rec)
                return
        if self.end_reason == "exited":
            self._wait_exit_record(5.0)  # not come yet (slow on a loaded machine)

    def _handle_async(self, rec: Record) -> bool:
        """React to one async record during the capture; True when the capture is over."""
        assert self.mi is not None
        msg = rec.get("message")
        payload = rec.get("payload") or {}
        if self._vfork_child is not None and self._vfork_child_record(rec):
            return False
        if _other_inferior(rec):
            return False  # a vfork child's inferior, detached or gone: not the traced process
        if msg == "thread-group-exited":
            self.target_gone = True
            if _is_exit_record(rec):  # with its exit code; a killed process's signal is in the *stopped after it
                self.exit_text, self.exit_status = _describe_exit(rec)
            self.end_reason = "exited"  # _note_exit looks for the *stopped in the records after this one
            return True
        if msg != "stopped":
            return False
        reason = str(payload.get("reason", ""))
        if reason == "solib-event":
            return False  # GDB's library event (stop-on-solib-events): the extension resumes the target itself
        if reason.startswith("exited"):
            self.target_gone = True
            self.exit_text, self.exit_status = _describe_exit(rec)
            self.end_reason = "exited"
            return True
        if reason in ("fork", "vfork") and self.tree.follow:
            self._on_fork(int(str(payload.get("newpid") or 0)), vfork=reason == "vfork")
            return False
        # A stop we did not ask for: the extension's --max-events stop, or a SIGINT someone sent the program.
        status = self._extension_status()
        if status is not None and not status.get("active", True):
            if (status.get("ended") or {}).get("reason") == "exited":
                # the process exited after this stop was reported (a library event's, say): GDB's exit records
                # follow; reading the inactive extension as a --max-events end lost the exit status
                self.end_reason = "exited"
                self._wait_exit_record(5.0)
                return True
            self.end_reason = "max-events"
            return True
        if not reason or (reason == "breakpoint-hit" and str(payload.get("bkptno", "")).startswith("-")):
            # an internal breakpoint's stop (MI gives it no reason): the extension's library-load breakpoint,
            # which arms the library and resumes the target itself; resuming it here too would race with that
            return False
        thread = payload.get("thread-id")
        sig = payload.get("signal-name") if reason == "signal-received" else None
        try:
            if sig:
                prefix = f"--thread {thread} " if thread and self.opts.non_stop else ""
                self.mi.command(f"-interpreter-exec {prefix}console {mi_quote('signal ' + sig)}")
            elif self.opts.non_stop and thread:
                self.mi.command(f"-exec-continue --thread {thread}")
            else:
                self._resume()
        except MiError as err:
            self.mi.write_log(f"(sysbreak) could not resume after an unexpected stop: {err.message}")
        return False

    def _extension_status(self) -> dict[str, Any] | None:
        import json

        assert self.mi is not None
        try:
            out = self.mi.console_output("sysbreak status --json --brief", timeout=10)
        except (MiError, MiTimeout):
            return None
        for line in reversed(out.splitlines()):
            if line.startswith("{"):
                try:
                    data = json.loads(line)
                except ValueError:
                    return None
                return data if isinstance(data, dict) else None
        return None

    def _progress(self) -> None:
        if self.on_progress is None:
            return
        tail = self.tail
        self.on_progress(
            Progress(
                pid=self.pid,
                elapsed=time.monotonic() - (self.t_capture or self.t_start),
                events=self.tree.events() if self.tree.others() else (tail.events if tail else 0),
                counts=self.tree.counts() if self.tree.others() else (dict(tail.counts) if tail else {}),
                rss_kb=process.rss_kb(self.pid) if self.pid else None,
                phase=self._phase,
            )
        )

    # ------------------------------------------------------------------------------------------- process trees
    def request_stop(self) -> None:
        """Ask this session's capture to end (from another thread): its loop sees it within 50 ms."""
        self._stop.set()

    def release_hold(self) -> None:
        """A child held stopped for its hand-over: let it go on (SIGCONT), once. Safe on every path."""
        if not self._held:
            return
        self._held = False
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(self.pid, signal.SIGCONT)
        if self.held_since is not None:
            self.held_s = time.monotonic() - self.held_since
        if self.held_by is not None:
            self.held_by._to_release.append(self.pid)

    def _catch_forks(self) -> None:
        """Stop at every fork/vfork of the process, to hand the child over (driver/tree.py)."""
        if not self.tree.follow or self.mi is None:
            return
        for catch in ("catch fork", "catch vfork"):
            self.mi.console(catch)

    def _attach_others(self) -> None:
        """``attach PID PID...``: every other process gets a session of its own, in a thread (driver/tree.py)."""
        for pid in self.more_pids:
            self.tree.attach_process(pid)

    def _attach_children(self) -> None:
        """``attach --children``: the descendants running now (the ones forked from now on stop at `catch fork`,
        which is set already, so none falls between the two)."""
        if self.argv is not None or self.handoff is not None or not self.tree.follow:
            return
        for pid in process.children(self.pid):
            if process.alive(pid):  # a zombie has nothing left to trace
                self.tree.attach_process(pid)

    def _on_fork(self, pid: int, *, vfork: bool) -> None:
        assert self.mi is not None
        if pid <= 0:
            self._resume()
            return
        if vfork and self._vfork_child is None:
            try:
                self._on_vfork(pid)
                return
            except (MiError, MiTimeout) as err:  # before the resume: nothing of it took effect
                self.mi.write_log(f"(sysbreak) could not keep vfork child {pid}: {err}; carried with ptrace instead")
                self._vfork_child = None
                with contextlib.suppress(MiError, MiTimeout):
                    self.mi.console(f"sysbreak vfork drop {pid}")
                    self._fork_settings(keep_child=False)
        try:
            self.mi.console(f"sysbreak hold {pid}")
        except MiError as err:
            self.warnings.append(f"could not hold child {pid} for its hand-over: {err.message}; it runs untraced")
            self._resume()
            return
        self.tree.adopt(self, pid, vfork=vfork)
        self._resume()

    # ----------------------------------------------------------------------------------- vfork children
    # A vfork (or posix_spawn) child shares its parent's memory until it execs or exits: the parent's breakpoints
    # are in its code too. So this GDB keeps it (detach-on-fork off, following it: the parent is blocked in
    # vfork anyway) from the vfork, its calls are caught by the parent's breakpoints and logged in the parent's
    # log (pid: the parent's, whose memory it maps; tid: the child's), and at its exec (a temporary `catch
    # exec`) it is held (SIGSTOP), detached and handed to a GDB of its own at the first instruction of its new
    # image. Measured why not otherwise (notes/processes.md): following the parent with schedule-multiple
    # deadlocks GDB 13 at the child's first hit (all-stop tries to stop the parent, which cannot stop while it
    # waits in vfork); detaching the child makes GDB take every breakpoint out of the shared memory until the
    # exec (the old blind spot).
    def _fork_settings(self, *, keep_child: bool) -> None:
        assert self.mi is not None
        self.mi.console(f"set detach-on-fork {'off' if keep_child else 'on'}")
        self.mi.console(f"set follow-fork-mode {'child' if keep_child else 'parent'}")

    def _on_vfork(self, pid: int) -> None:
        assert self.mi is not None
        vc = VforkChild(pid, t=time.monotonic(), seen=time.monotonic())
        self._vfork_child = vc
        # at its execve the breakpoints come out (GDB 13 would insert them, at the parent's addresses, into the
        # new image: `sysbreak exec-guard`), after a failed execve they go back, at the exec it is handed over
        self.mi.console(f"sysbreak vfork keep {pid}")
        self._resume()  # GDB follows the fork here: the child is inferior 2, the one resumed
        try:
            self.mi.console("sysbreak vfork kept")  # read at a fork only: the next fork is followed as usual
        except MiError as err:
            self.mi.write_log(f"(sysbreak) sysbreak vfork kept: {err.message}")

    def _vfork_child_record(self, rec: Record) -> bool:
        """A record of the vfork child held (its exec, its exit); True when it was one."""
        vc = self._vfork_child
        assert vc is not None and self.mi is not None
        vc.seen = time.monotonic()
        msg = rec.get("message")
        payload = rec.get("payload") or {}
        if msg == "thread-group-exited":
            if payload.get("id") == "i1":
                return False
            vc.exit = rec if _is_exit_record(rec) else vc.exit
            return True
        if msg != "stopped":
            return False
        reason = str(payload.get("reason", ""))
        # Only the child runs while it is held (the parent waits in vfork, GDB resumes one inferior): a stop now
        # is the child's.
        if reason == "end-stepping-range":
            # stepped through an execve that failed (the exec guard's step, sysbreak.gdb.commands._on_stop): the
            # child runs on in its parent's memory, the breakpoints go back
            self._probes(on=True)
            self._resume()
            return True
        if reason == "exec":
            self._vfork_child_execd(vc)
            return True
        if reason.startswith("exited"):
            self._drop_vfork_child(vc, detach=False)
            self.tree.adopt(self, vc.pid, vfork=True, ended=_describe_exit(vc.exit or rec))
            self._resume()
            return True
        return False

    #: how long a held vfork child may go without a record before the driver looks whether GDB stopped it silently
    VFORK_WATCH_S = 1.0

    def _check_vfork_child(self, vc: VforkChild) -> None:
        """Never leave a held vfork child (and its parent) stopped: an exec the exec guard did not see (a syscall
        instruction outside the armed modules) makes GDB insert the parent's breakpoints into the new image, and
        a failed insertion stops both without a record. Then, once its thread has been stopped for a second with
        no record: exec'd (its maps are not its parent's any more): hand it over as at a `catch exec` stop (the
        detach takes GDB's bytes out); else resume it."""
        assert self.mi is not None
        now = time.monotonic()
        if now - vc.seen < self.VFORK_WATCH_S:
            return
        vc.seen = now
        try:
            if not self._child_stopped(vc.pid) or self.mi.async_waiting():
                return
        except (MiError, MiTimeout):
            return
        try:
            with open(f"/proc/{vc.pid}/maps", "rb") as a, open(f"/proc/{self.pid}/maps", "rb") as b:
                execd = a.read() != b.read()
        except OSError:
            execd = False
        where = "after" if execd else "before"
        self.mi.write_log(f"(sysbreak) vfork child {vc.pid} stopped without a record ({where} its exec)")
        if execd:
            self.warnings.append(f"vfork child {vc.pid} exec'd unseen by the exec guard; handed over at its exec")
            self._vfork_child_execd(vc)
        else:
            self._resume()

    def _child_stopped(self, pid: int) -> bool:
        """Whether GDB has the thread of process ``pid`` (a vfork child it holds) stopped."""
        assert self.mi is not None
        rec = self.mi.command("-thread-info", timeout=10)
        for t in (rec.get("payload") or {}).get("threads") or []:
            target = str(t.get("target-id", ""))
            if target.endswith((f"process {pid}", f"(LWP {pid})")):
                return t.get("state") == "stopped"
        return False

    def _vfork_child_execd(self, vc: VforkChild) -> None:
        self._drop_vfork_child(vc, detach=True, hold=True)  # held with SIGSTOP: stopped before its first instruction
        self.tree.adopt(self, vc.pid, vfork=True, at_exec=True)
        self._resume()

    def _drop_vfork_child(self, vc: VforkChild, *, detach: bool, hold: bool = False) -> None:
        """Back to one inferior (`sysbreak vfork drop`): the child held (``hold``: at its exec) and detached (its
        new image has none of our breakpoints: GDB inserts them only when it resumes it), the parent selected, the
        child's inferior and its exec catchpoint removed, the breakpoints on again."""
        assert self.mi is not None
        self._vfork_child = None
        how = " --exec" if hold else " --detach" if detach else ""
        try:
            self.mi.console(f"sysbreak vfork drop {vc.pid}{how}", timeout=60)
        except MiError as err:
            self.warnings.append(f"could not let vfork child {vc.pid} go cleanly: {err.message}")
        if self.meta is not None:
            # how long the parent's GDB held it (its vfork to its exec): the parent's other threads wait as long
            kept = {"pid": vc.pid, "s": round(time.monotonic() - vc.t, 4)}
            self.meta.update(vfork_children=[*self.meta.data.get("vfork_children", []), kept])

    def _probes(self, *, on: bool) -> None:
        assert self.mi is not None
        try:
            self.mi.console(f"sysbreak probes {'on' if on else 'off'}", timeout=60)
        except MiError as err:
            self.warnings.append(f"could not turn the breakpoints {'on' if on else 'off'}: {err.message}")

    def _release_adopted(self) -> None:
        while self._to_release and self.mi is not None and self.mi.alive():
            pid = self._to_release.pop()
            with contextlib.suppress(MiError, MiTimeout, GdbGone):
                self.mi.console(f"sysbreak release {pid}", timeout=5)

    def _wait_handed_over(self, timeout: float = 10.0) -> None:
        """Until the parent's GDB has let go of the child (it then stops on the held SIGSTOP)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                status = process.read_status(self.pid)
            except OSError:
                self.target_gone = True
                raise _EarlyEnd("exited") from None
            if status.get("TracerPid", "0").strip() == "0":
                return
            if time.monotonic() > deadline:
                raise SysbreakError(f"process {self.pid} was not let go by its parent's GDB within {timeout:g} s")
            time.sleep(0.002)

    def _run_to_exec(self) -> None:
        """A vfork child: carried to its exec with bare ptrace before any GDB touches it (driver/ptrace.py)."""
        from sysbreak.driver import ptrace

        self._phase = "waiting"
        try:
            outcome = ptrace.run_to_exec(self.pid)
        except OSError as exc:
            raise SysbreakError(f"could not follow vfork child {self.pid} to its exec: {exc.strerror}") from None
        self._held = outcome == "exec"  # stopped again, at the first instruction of its new image
        if outcome == "exited":
            self.target_gone = True
            raise _EarlyEnd("exited")
        if outcome == "timeout":
            self.warnings.append(f"vfork child {self.pid} did not exec within 30 s: it runs on untraced")
            raise _EarlyEnd("error")
        self.meta_exec()

    def meta_exec(self) -> None:
        if self.meta is not None:
            self.meta.update(exe=process.exe(self.pid), cmdline=process.cmdline(self.pid))

    def _on_exec(self, rec: dict[str, Any]) -> None:
        """The process exec'd (the extension followed it): the meta's exe and argv are the new image's."""
        if self.meta is None:
            return
        execs = [*self.meta.data.get("execs", []), {"t": rec.get("t"), "exe": rec.get("exe"), "argv": rec.get("argv")}]
        self.meta.update(exe=rec.get("exe"), cmdline=rec.get("argv") or [], execs=execs)
        if self.tree.others() or not self.is_root:
            self.tree.write_meta()

    def _wait_tree(self) -> None:
        """The root process is gone but members of its tree still run: capture until they are all gone too (or a
        limit, a signal)."""
        start = self.t_capture or time.monotonic()
        deadline = start + self.opts.duration if self.opts.duration else None
        last_progress = 0.0
        while self.tree.live():
            if self._stopping():
                self.end_reason = SIGNAL_REASONS.get(self.stop_signal or 0, "interrupted")
                return
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                self.end_reason = "duration"
                return
            if self.budget_reached():
                self.end_reason = "max-events"
                return
            if now - last_progress >= 0.2:
                last_progress = now
                self._progress()
            self._stop.wait(0.05)

    def budget_path(self) -> Path:
        """The tree's --max-events count (capture/budget.py), in the root's directory."""
        root = self.tree.root.directory
        assert root is not None
        return root / capdir.BUDGET

    def budget_reached(self) -> bool:
        """Whether the whole tree has caught --max-events calls (the budget file, counted by every GDB)."""
        n = self.opts.max_events
        return bool(n) and budget.taken(self.budget_path()) >= (n or 0)

    def how_it_ended(self) -> str:
        """One phrase for meta.json's process list: how this process's capture ended."""
        if self.exit_text:
            return self.exit_text
        if self.target_gone:
            return "exited"
        if self.end_reason == "gdb-died":
            return "its GDB died; detached with its original bytes"
        if self.meta is not None and self.meta.data.get("target_alive"):
            return "detached, running on"
        return self.end_reason or "?"

    # ------------------------------------------------------------------------------------------- ending
    def _finish(self) -> None:
        """Leave the target running, untouched: every path of a capture ends here exactly once."""
        self._phase = "stopping"
        self._guard_stop.set()
        mi = self.mi
        if mi is not None and not mi.alive():
            # GDB died with its breakpoints in: the bytes go back first, before anything else is waited for (the
            # reader thread's _gdb_exited may be doing it already: the restore is locked and idempotent)
            self._restore_if_needed(only_if_int3=True)
        if self.is_root:
            with self.tree.lock_stopping():
                pass
            self.tree.drop_spare()
        if self.is_root and self.tree.others():
            self.tree.stop_all()
        if self.snap is not None:
            self.snap.stop()
        self._abandon_program()  # `run` ended before the program was released: it never runs
        if mi is not None:
            if mi.alive():
                self._quitting = True  # from here on GDB's exit is ours, not a death
                self._stop_gdb(mi)
            else:
                self.end_reason = self.end_reason or "gdb-died"
            mi.close()
        target_alive = self.pid > 0 and process.alive(self.pid) and not self.target_gone
        if target_alive and self.directory is not None:
            self._check_leftover_int3()
        if self.snap is not None:
            if target_alive:
                self.snap.take()
            self.snap.close()
        if self.tail is not None:
            self.tail.poll()
        if self.meta is not None:
            if self.tail is not None:
                self._update_modules()
            fields: dict[str, Any] = {
                "ended": capdir.now_wall(),
                "t1": time.monotonic(),
                "end_reason": self.end_reason or "error",
                "events": self.tail.events if self.tail else 0,
                "target_alive": target_alive,
            }
            if self.exit_text:
                fields["target_exit"] = self.exit_text
            if self.restored is not None:
                fields["restored"] = {"checked": self.restored.checked, "restored": self.restored.restored}
            if self.is_root:
                # every process's calls (the others' captures are over: stop_all joined them)
                total = self.tree.events()
                fields["events_total"] = total
                if self.opts.max_events:
                    fields["max_events_overshoot"] = max(0, total - self.opts.max_events)
            if self.warnings:
                fields["warnings"] = self.warnings
            self.meta.update(**fields)
        self.release_hold()
        if self.is_root and self.tree.others():
            self.tree.write_meta()

    def _stop_gdb(self, mi: MiSession) -> None:
        clean = False
        try:
            if not self.target_gone:
                self._interrupt(mi)
            try:
                mi.console("sysbreak clear", timeout=30)
            except MiError as err:
                mi.write_log(f"(sysbreak) sysbreak clear: {err.message}")
            if self._vfork_child is not None:  # the breakpoints are out of the memory it shares: it runs on
                self._drop_vfork_child(self._vfork_child, detach=True)
            if not self.target_gone:
                try:
                    mi.command("-target-detach", timeout=30)
                except MiError as err:
                    if "not being run" not in err.message:
                        raise
            with contextlib.suppress(GdbGone):
                mi.command("-gdb-exit", timeout=10)
            clean = mi.wait(10) is not None
        except (MiError, MiTimeout, GdbGone) as exc:
            mi.write_log(f"(sysbreak) clean stop failed: {exc}; closing GDB's input so it detaches on exit")
            self.warnings.append(f"the clean stop failed ({exc}); GDB was left to detach on exit")
        if not clean:
            mi.close_stdin()  # detach-on-exit: the extension clears and detaches when GDB reads end of file
            if mi.wait(15) is None:
                self.warnings.append("GDB did not exit; it was killed and the breakpoint bytes restored")
                mi.kill()
                if self.end_reason not in ("gdb-died",):
                    self.end_reason = self.end_reason or "error"

    def _interrupt(self, mi: MiSession) -> None:
        if self.opts.non_stop:
            mi.command("-exec-interrupt --all", timeout=10)
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                if self._all_stopped(mi):
                    return
                time.sleep(0.02)
            raise MiTimeout("the program's threads did not all stop within 10 s")
        if self._all_stopped(mi):
            # stopped at a library event that the extension is about to resume: let it, then interrupt
            time.sleep(0.05)
            if self._all_stopped(mi):
                return
        for old in mi.pop_async():
            if (old.get("message") == "thread-group-exited" and not _other_inferior(old)) or _is_exit_record(old):
                self._take_exit(old)  # it ended just now: its status is in these records
                return
        try:
            mi.command("-exec-interrupt", timeout=10)
        except MiError:
            if self._all_stopped(mi):
                return
            raise
        rec = mi.wait_async(
            lambda r: r.get("message") in ("stopped", "thread-group-exited") and not _other_inferior(r), timeout=10
        )
        if rec is None:
            raise MiTimeout("the program did not stop within 10 s of -exec-interrupt")
        payload = rec.get("payload") or {}
        if rec.get("message") == "thread-group-exited" or str(payload.get("reason", "")).startswith("exited"):
            self._take_exit(rec)

    def _take_exit(self, rec: Record) -> None:
        """``rec`` says the process is gone: its status from it, or from the ``*stopped`` that follows it."""
        self.target_gone = True
        if _is_exit_record(rec):
            self.exit_text, self.exit_status = _describe_exit(rec)
        else:
            self._wait_exit_record(5.0)

    def _wait_stopped_all(self, timeout: float) -> None:
        assert self.mi is not None
        deadline = time.monotonic() + timeout
        while not self._all_stopped(self.mi):
            if time.monotonic() > deadline:
                raise MiTimeout(f"process {self.pid} did not stop within {timeout:g} s of being attached")
            time.sleep(0.01)
        self.mi.pop_async()

    def _all_stopped(self, mi: MiSession) -> bool:
        rec = mi.command("-thread-info", timeout=10)
        threads = (rec.get("payload") or {}).get("threads") or []
        if not threads:
            self.target_gone = True
            return True
        return all(t.get("state") == "stopped" for t in threads)

    def _gdb_exited(self) -> None:
        """Called by the MI reader thread the moment GDB is gone. Unless we were quitting it, GDB died with its
        breakpoints in the target's memory: put the bytes back at once, every millisecond counts (the next hit
        of an int3 without a tracer kills the target with SIGTRAP)."""
        if self._quitting:
            return
        if not self.end_reason:
            self.end_reason = "gdb-died"
        t = time.monotonic()
        try:
            self._restore_if_needed(only_if_int3=True)
        finally:
            self._stop.set()
            if self.mi is not None:
                done = self.restored.restored if self.restored is not None else 0
                self.mi.write_log(
                    f"(sysbreak) GDB gone: {done} breakpoint byte(s) put back in {1000 * (time.monotonic() - t):.1f} ms"
                )

    #: how often the guard looks at GDB's /proc stat (s) where there is no tripwire to wait on
    GUARD_PERIOD = 0.001
    #: how often the guard reads what was appended to the restore file meanwhile (s)
    GUARD_REFRESH = 0.05

    def _start_guard(self) -> None:
        """Watch GDB from a thread while the breakpoints are in, and put the bytes back the instant it dies.

        End of file on GDB's pipes comes only once every GDB thread has exited and torn down its memory: 5-12 ms
        after a SIGKILL on this 2-core VM (measured; notes/processes.md). A target that runs into an int3 in that
        window dies of SIGTRAP: while the dying GDB still traces it, the hit parks it in a ptrace stop whose
        SIGTRAP the kernel delivers at the detach; after the detach, the int3 itself kills it. So the guard
        waits on the tripwire GDB's main thread holds (sysbreak.tripwire: the kernel wakes the waiter as that
        thread exits, before GDB's memory is torn down), or, without one, polls PF_EXITING on GDB's main thread
        every GUARD_PERIOD; it keeps the restore file parsed meanwhile and then only writes (restore.write_back),
        without stopping the target."""
        if self.mi is None or self.directory is None or self.pid <= 0:
            return
        gdb_pid = self.mi.pid
        wire: Tripwire | None = self.mi.tripwire
        known = RestoreFile(self.directory / capdir.RESTORE, self.pid)

        def dying() -> bool:
            """Block up to GUARD_REFRESH; whether GDB is dying."""
            if wire is not None:
                return wire.wait(self.GUARD_REFRESH) or exiting(gdb_pid)
            deadline = time.monotonic() + self.GUARD_REFRESH
            while time.monotonic() < deadline:
                if self._guard_stop.wait(self.GUARD_PERIOD) or exiting(gdb_pid):
                    return True
            return False

        def guard() -> None:
            held_libc()
            known.refresh()
            while not self._guard_stop.is_set() and not self._quitting:
                if dying():
                    break
                known.refresh()
            else:
                return
            t = time.monotonic()
            if self._quitting or self._guard_stop.is_set():
                return
            with self._restore_lock:
                res = write_back(self.pid, known.entries())  # first what is known: every microsecond counts
                t_first = time.monotonic()
                late = write_back(self.pid, known.refresh())  # then what was appended since
                res.restored += late.restored
                res.errors += late.errors
                if res.errors and not process.alive(self.pid):
                    res.errors = []  # the target is gone (GDB ended with it): nothing was left to restore
                self._merge_restore(res)
            how = "tripwire" if wire is not None else "poll"
            if self.mi is not None:
                self.mi.write_log(
                    f"(sysbreak) GDB dying ({how}, seen at monotonic {t:.6f} s): {res.restored} breakpoint byte(s) "
                    f"put back by the guard in {1000 * (t_first - t):.3f} ms "
                    f"({1000 * (time.monotonic() - t):.2f} ms in all)"
                )

        threading.Thread(target=guard, name=f"sysbreak-guard-{self.pid}", daemon=True).start()

    def _merge_restore(self, res: RestoreResult) -> None:
        if self.restored is None:
            self.restored = res
        else:
            self.restored.restored += res.restored
            self.restored.errors += res.errors
        if res.restored:
            self.warnings.append(
                f"restored the original bytes at {res.restored} breakpoint address(es) GDB left behind"
            )
        for err in res.errors:
            self.warnings.append(f"restore: {err}")

    def _restore_if_needed(self, only_if_int3: bool) -> None:
        """Put back the original bytes wherever an int3 from restore.jsonl is still in the target's memory."""
        if self.directory is None or self.pid <= 0 or not process.alive(self.pid):
            return
        path = self.directory / capdir.RESTORE
        with self._restore_lock:
            entries = read_entries(path, self.pid)
            try:
                left = int3_addresses(self.pid, entries) if entries else []
            except OSError as exc:
                self.warnings.append(f"could not check the program's code for leftover breakpoints: {exc.strerror}")
                return
            if not left and only_if_int3:
                return
            # with nothing to write this is still SIGSTOP + SIGCONT, which wakes threads a dead tracer left stopped
            res = restore(self.pid, path)
            self._merge_restore(res)

    def _check_leftover_int3(self) -> None:
        self._restore_if_needed(only_if_int3=self.end_reason != "gdb-died")

    def _result(self) -> CaptureResult:
        assert self.directory is not None
        tail = self.tail
        target_alive = bool(self.meta and self.meta.data.get("target_alive"))
        tree = self.is_root and bool(self.tree.others())
        warnings = list(self.warnings)
        if tree:
            for m in self.tree.others():
                warnings += [f"pid {m.session.pid}: {w}" for w in m.session.warnings if w not in warnings]
        return CaptureResult(
            directory=self.directory,
            pid=self.pid,
            end_reason=self.end_reason,
            events=self.tree.events() if tree else (tail.events if tail else 0),
            counts=self.tree.counts() if tree else (dict(tail.counts) if tail else {}),
            processes=self.tree.processes() if tree else [],
            elapsed=time.monotonic() - (self.t_capture or self.t_start),
            rss_first_kb=self.snap.first_rss_kb if self.snap else None,
            rss_last_kb=self.snap.last_rss_kb if self.snap else None,
            snapshots=self.snap.seq if self.snap else 0,
            target_alive=target_alive,
            exit_status=self.exit_status,
            restored=self.restored,
            warnings=warnings,
            syscalls=self.syscalls,
            duration=self.opts.duration,
            max_events=self.opts.max_events,
            overshoot=int((self.meta.data.get("max_events_overshoot") if self.meta else 0) or 0),
        )


def gdb_symbols_wanted(opts: CaptureOptions) -> bool:
    """Whether GDB loads symbol files: ``opts.gdb_symbols``, else ``$SYSBREAK_GDB_SYMBOLS`` (0/1), else only when
    no offline unwinder is installed (raw stacks would keep frame 0 only)."""
    if opts.gdb_symbols is not None:
        return opts.gdb_symbols
    env = os.environ.get("SYSBREAK_GDB_SYMBOLS", "")
    if env in ("0", "1"):
        return env == "1"
    from sysbreak.capture import rawstack

    return not rawstack.unwinder_available()


def launch_gdb(
    gdb_path: str, directory: Path, opts: CaptureOptions, *, on_exit: Callable[[], None] | None = None
) -> MiSession:
    """Start GDB with its logs in ``directory``, set it up for a capture and load the extension (no target yet):
    :func:`sysbreak.driver.launch.start_gdb`."""
    return start_gdb(
        gdb_path,
        str(directory / capdir.GDB_MI),
        str(directory / capdir.GDB_LOG),
        non_stop=opts.non_stop,
        symbols=gdb_symbols_wanted(opts),
        on_exit=on_exit,
    )


@dataclass
class VforkChild:
    """A vfork child the parent's GDB holds from its vfork to its exec (CaptureSession._on_vfork)."""

    pid: int
    t: float  # when it was let run
    seen: float = 0.0  # when a record of it was last seen (CaptureSession._check_vfork_child)
    exit: Record | None = None  # its =thread-group-exited, when it ended without an exec


class _EarlyEnd(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _gdb_quote(arg: str) -> str:
    """Quote one argument for gdb.string_to_argv (GDB's CLI argument splitting)."""
    if arg and not any(c in arg for c in " \t\n'\"\\"):
        return arg
    return '"' + arg.replace("\\", "\\\\").replace('"', '\\"') + '"'
