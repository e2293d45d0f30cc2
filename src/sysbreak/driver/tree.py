"""A process tree in one capture: one GDB per process, children handed over at fork, one capture directory.

Why one GDB per process and not one GDB with several inferiors: ``notes/processes.md`` (GDB 13 puts a breakpoint
set by address into every inferior's program space, so one process's breakpoints land in another's code after
an exec; measured on 8 workers, the per-event cost is the same and one GDB also lost events and held the others).

How a child is followed from its first instruction (``sysbreak run --follow-children``, ``attach --children``):

1. the parent's GDB has ``catch fork`` and ``catch vfork``; at the stop both processes are held by it, the
   child has none of the parent's breakpoint bytes (GDB takes them out of a forked child at once);
2. the driver has that GDB run ``sysbreak hold CHILD`` (a SIGSTOP, queued) and resumes the parent: GDB detaches
   the child, which stops on the queued SIGSTOP before running one instruction;
3. a thread of sysbreak runs a :class:`~sysbreak.driver.session.CaptureSession` for the child: its own GDB
   attaches to the stopped child, SIGCONT ends the job-control stop (GDB holds it), the breakpoints go in, it
   runs. A ``vfork`` child shares its parent's memory until it execs, so it is first carried to its exec with
   bare ptrace (:mod:`sysbreak.driver.ptrace`) and attached there, at the first instruction of its new image;
4. it writes ``procs/PID/`` (the same files as the top of the directory: events, snapshots, restore file, GDB
   logs, its own meta.json); the top ``meta.json`` lists every process of the tree under ``processes``.

If sysbreak dies between 2 and 3, the parent's GDB sends SIGCONT to every process it held when it exits, so no
child stays stopped.
"""

from __future__ import annotations

import dataclasses
import shutil
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sysbreak.driver import process
from sysbreak.driver.mi import MiSession, mi_quote

if TYPE_CHECKING:
    from sysbreak.driver.session import CaptureSession

PROCS = "procs"


@dataclasses.dataclass
class Member:
    session: CaptureSession
    ppid: int | None
    how: str  # "root", "attach", "fork", "vfork"
    thread: threading.Thread | None = None
    started: float = 0.0


@dataclasses.dataclass
class Spare:
    """A GDB started and loaded ahead for the next child (ProcessTree's pool)."""

    where: Path  # its directory (its logs), renamed to the child's
    mi: MiSession
    warming: bool = False  # running `sysbreak prepare` for the modules children will map (warm_spares)


class ProcessTree:
    """Every process of one capture, the root's session first; thread-safe."""

    def __init__(self, root: CaptureSession, *, follow: bool) -> None:
        self.root = root
        self.follow = follow
        self._lock = threading.Lock()
        self.members: dict[int, Member] = {}
        self._stopping = False
        # GDBs started and loaded ahead, so that a new child waits only for its attach (notes/processes.md)
        self._pool: list[Spare] = []
        self._warm_pid: int | None = None  # whose modules the spares scan ahead (warm_spares)
        self._threads: list[threading.Thread] = []  # spares on their way
        self._want = max(0, root.opts.spare_gdbs if root.opts.spare_gdbs is not None else self.DEFAULT_SPARES)
        self._cold = 0  # children starting a GDB of their own (no spare was left)
        self._spares = 0

    def add_root(self, session: CaptureSession, ppid: int | None, how: str) -> None:
        with self._lock:
            self.members[session.pid] = Member(session, ppid, how, started=time.monotonic())

    # --------------------------------------------------------------------------------------- children
    def adopt(
        self,
        parent: CaptureSession,
        pid: int,
        *,
        vfork: bool,
        at_exec: bool = False,
        ended: tuple[str, int | None] | None = None,
    ) -> None:
        """The parent's GDB holds ``pid`` (stopped); start following it in a thread of its own. ``at_exec``: a
        vfork child held at the first instruction of its new image (its calls before were caught by the parent's
        GDB); ``ended``: a vfork child that ended before any exec (how, from GDB): listed, nothing to trace."""
        from sysbreak.driver.session import CaptureSession

        assert self.root.directory is not None
        opts = dataclasses.replace(
            self.root.opts,
            output=str(self.root.directory / PROCS / str(pid)),
            duration=None,  # the root ends every member
            program_stdout=None,
            program_stderr=None,
        )
        child = CaptureSession(opts, pid=pid, tree=self, ppid=parent.pid, handoff="vfork" if vfork else "fork")
        child.held_by = parent
        child.at_exec = at_exec
        if ended is not None:
            child.exit_text, child.exit_status = ended
            child.target_gone = True
            child._held = False
        spare = self._take_spare() if ended is None else None
        if spare is not None:
            child._spare_dir, child._spare = spare
        elif ended is None:
            with self._lock:
                self._cold += 1  # starts a GDB of its own: the pool is refilled once it has (cold_started)
            child.cold_start = True
        member = Member(child, parent.pid, "vfork" if vfork else "fork", started=time.monotonic())
        with self._lock:
            stopping = self._stopping
            self.members[pid] = member
        if stopping:
            child.release_hold()  # the capture is ending: the child goes on untraced
            return
        self.root.say(f"following pid {pid} ({'vfork' if vfork else 'fork'} of {parent.pid})")
        member.thread = threading.Thread(target=self._run, args=(child,), name=f"sysbreak-{pid}", daemon=True)
        member.thread.start()
        self.write_meta()
        self.prepare_spare()

    # --------------------------------------------------------------------------------------- spare GDBs
    #: the most spare GDBs the pool grows to on its own (each costs ~23 MB private memory and a GDB's start in CPU)
    POOL_CAP = 16
    #: spares without --spare-gdbs (each ~23 MB private memory; 8 workers forked at once: notes/processes.md)
    DEFAULT_SPARES = 2

    def prepare_spare(self) -> None:
        """Keep the pool of GDBs started and loaded ahead full (notes/processes.md): start one in the background
        for each missing, so that a new child waits only for its attach, never for a GDB's start."""
        if not self.follow or self.root.directory is None:
            return
        with self._lock:
            if self._stopping or self._cold:
                return  # children are starting GDBs of their own: spares started now would slow them down
            self._threads = [t for t in self._threads if t.is_alive()]
            missing = self._want - len(self._pool) - len(self._threads)
            for _ in range(max(0, missing)):
                self._spares += 1
                where = self.root.directory / PROCS / f".spare-{self._spares}"
                t = threading.Thread(target=self._make_spare, args=(where,), name="sysbreak-spare", daemon=True)
                self._threads.append(t)
                t.start()

    def warm_spares(self, pid: int) -> None:
        """Have every spare GDB scan the modules process ``pid`` maps now (``sysbreak prepare``: 0.35-0.75 s the
        first time here, 5 ms once done), in the background: a child forked from it maps the same, and then its
        own prepare, inside its hold, only looks them up. Called when the modules of a process change."""
        with self._lock:
            self._warm_pid = pid
            pool = [sp for sp in self._pool if not sp.warming]
            for sp in pool:
                sp.warming = True
        for sp in pool:
            threading.Thread(target=self._warm, args=(sp, pid), name="sysbreak-warm", daemon=True).start()

    def _warm(self, sp: Spare, pid: int) -> None:
        try:
            sp.mi.command(f"-interpreter-exec console {mi_quote(f'sysbreak prepare {pid}')}", timeout=300)
        except Exception:  # noqa: BLE001 - a cold spare still works: the child's own prepare scans
            pass
        finally:
            sp.warming = False

    def cold_started(self) -> None:
        """A child that found no spare has its own GDB now (or gave up): when none is left starting one, the
        pool is refilled, grown to the burst that emptied it."""
        with self._lock:
            self._cold = max(0, self._cold - 1)
        self.prepare_spare()

    def wait_spares(self, timeout: float) -> None:
        """Until the pool is full (or ``timeout`` s): `run -f` lets its program start only then."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if self._stopping or len(self._pool) >= self._want:
                    return
                threads = [t for t in self._threads if t.is_alive()]
            if not threads:
                return  # none on its way (they failed): the children start their own
            threads[0].join(min(0.1, max(0.0, deadline - time.monotonic())))

    def _make_spare(self, where: Path) -> None:
        from sysbreak.driver.session import launch_gdb

        try:
            where.mkdir(parents=True)
            mi = launch_gdb(self.root.gdb_path, where, self.root.opts)
        except Exception:  # noqa: BLE001 - no spare: the next child starts its own GDB
            shutil.rmtree(where, ignore_errors=True)
            return
        sp = Spare(where, mi)
        pid = self._warm_pid
        if pid is not None and not process.alive(pid):
            pid = self.root.pid if process.alive(self.root.pid) else None
        if pid is not None:
            sp.warming = True
            self._warm(sp, pid)
        with self._lock:
            if not self._stopping:
                self._pool.append(sp)
                return
        mi.close()
        shutil.rmtree(where, ignore_errors=True)

    def _take_spare(self) -> tuple[Path, MiSession] | None:
        while True:
            with self._lock:
                if not self._pool:
                    # a burst bigger than the pool: the pool grows by one for each child that found it empty
                    # (--spare-gdbs 0: no spare, ever)
                    if self._want:
                        self._want = max(self._want, min(self._want + 1, self.POOL_CAP))
                    return None
                ready = [sp for sp in self._pool if not sp.warming]  # a warm one first; else one warming
                sp = (ready or self._pool)[0]
                self._pool.remove(sp)
            if sp.mi.alive():
                return sp.where, sp.mi  # one still warming: the child's commands wait behind its prepare
            shutil.rmtree(sp.where, ignore_errors=True)

    def lock_stopping(self) -> threading.Lock:
        """Marks the tree as ending (no new spare, no new member), under its lock."""
        self._stopping = True
        return self._lock

    def drop_spare(self) -> None:
        """Quit every spare GDB (the tree is ending; the ones still starting quit themselves when done)."""
        with self._lock:
            pool, self._pool = self._pool, []
            threads = list(self._threads)
        for sp in pool:
            sp.mi.close()
            shutil.rmtree(sp.where, ignore_errors=True)
        for t in threads:
            t.join(timeout=60)

    def _run(self, child: CaptureSession) -> None:
        try:
            child.execute()
        except Exception as exc:  # noqa: BLE001 - one child's failure never ends the others' capture
            child.warnings.append(f"could not trace process {child.pid}: {exc}")

            child.end_reason = child.end_reason or "error"
        finally:
            if child.cold_start:  # ended before its own GDB was started
                child.cold_start = False
                self.cold_started()
            child.release_hold()
            self.write_meta()

    def attach_process(self, pid: int) -> None:
        """A process already running (``attach PID PID...``, or a descendant found by ``attach --children``): a
        session of its own, in a thread. A process already in the tree is left alone."""
        from sysbreak.driver.session import CaptureSession

        assert self.root.directory is not None
        with self._lock:
            if pid in self.members or self._stopping:
                return
        opts = dataclasses.replace(self.root.opts, output=str(self.root.directory / PROCS / str(pid)), duration=None)
        session = CaptureSession(opts, pid=pid, tree=self, ppid=process.ppid(pid))
        member = Member(session, session.ppid, "attach", started=time.monotonic())
        with self._lock:
            if pid in self.members:
                return
            self.members[pid] = member
        self.root.say(f"attaching to pid {pid} too ({' '.join(process.cmdline(pid)) or '?'})")
        member.thread = threading.Thread(target=self._run, args=(session,), name=f"sysbreak-{pid}", daemon=True)
        member.thread.start()
        self.write_meta()

    # --------------------------------------------------------------------------------------- state
    def others(self) -> list[Member]:
        with self._lock:
            return [m for m in self.members.values() if m.session is not self.root]

    def live(self) -> list[Member]:
        """Members whose capture is still going on (their thread runs)."""
        return [m for m in self.others() if m.thread is not None and m.thread.is_alive()]

    def events(self) -> int:
        with self._lock:
            sessions = [m.session for m in self.members.values()]
        return sum(s.tail.events if s.tail is not None else 0 for s in sessions)

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        with self._lock:
            sessions = [m.session for m in self.members.values()]
        for s in sessions:
            if s.tail is not None:
                for k, v in s.tail.counts.items():
                    out[k] = out.get(k, 0) + v
        return out

    def stop_all(self, timeout: float = 60.0) -> None:
        """End every member's capture but the root's (each detaches its process and quits its GDB)."""
        with self._lock:
            self._stopping = True
        self.drop_spare()
        members = self.others()
        for m in members:
            m.session.request_stop()
        deadline = time.monotonic() + timeout
        for m in members:
            if m.thread is not None:
                m.thread.join(max(0.1, deadline - time.monotonic()))
        self.write_meta()

    # --------------------------------------------------------------------------------------- meta
    def processes(self) -> list[dict[str, Any]]:
        with self._lock:
            members = list(self.members.values())
        out = []
        for m in members:
            s = m.session
            meta = s.meta.data if s.meta is not None else {}
            entry: dict[str, Any] = {
                "pid": s.pid,
                "ppid": m.ppid,
                "argv": meta.get("cmdline") or [],
                "exe": meta.get("exe"),
                "how": m.how,
                "dir": "." if s is self.root else f"{PROCS}/{s.pid}",
                "started": meta.get("started"),
                "t0": meta.get("t0"),
            }
            if meta.get("execs"):
                entry["execs"] = meta["execs"]
            if s.held_s is not None:
                entry["held_s"] = round(s.held_s, 3)
            if meta.get("gdb_spare"):
                entry["gdb_spare"] = True
            if "end_reason" in meta:
                entry.update(
                    ended=meta.get("ended"),
                    t1=meta.get("t1"),
                    end=s.how_it_ended(),
                    events=meta.get("events", 0),
                )
            out.append(entry)
        return out

    def write_meta(self) -> None:
        if self.root.meta is not None:
            self.root.meta.update(processes=self.processes())
