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
from sysbreak.driver.mi import MiSession

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


class ProcessTree:
    """Every process of one capture, the root's session first; thread-safe."""

    def __init__(self, root: CaptureSession, *, follow: bool) -> None:
        self.root = root
        self.follow = follow
        self._lock = threading.Lock()
        self.members: dict[int, Member] = {}
        self._stopping = False
        # one GDB started and loaded ahead, so that the next child waits only for its attach (notes/processes.md)
        self._spare: tuple[Path, MiSession] | None = None
        self._spare_thread: threading.Thread | None = None
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

    # --------------------------------------------------------------------------------------- spare GDB
    def prepare_spare(self) -> None:
        """Start a GDB for the next child in the background, unless one is ready or on its way."""
        if not self.follow or self.root.directory is None:
            return
        with self._lock:
            if self._stopping or self._spare is not None:
                return
            if self._spare_thread is not None and self._spare_thread.is_alive():
                return
            self._spares += 1
            where = self.root.directory / PROCS / f".spare-{self._spares}"
            self._spare_thread = threading.Thread(target=self._make_spare, args=(where,), daemon=True)
            self._spare_thread.start()

    def _make_spare(self, where: Path) -> None:
        from sysbreak.driver.session import launch_gdb

        try:
            where.mkdir(parents=True)
            mi = launch_gdb(self.root.gdb_path, where, self.root.opts)
        except Exception:  # noqa: BLE001 - no spare: the next child starts its own GDB
            shutil.rmtree(where, ignore_errors=True)
            return
        with self._lock:
            if not self._stopping and self._spare is None:
                self._spare = (where, mi)
                return
        mi.close()
        shutil.rmtree(where, ignore_errors=True)

    def _take_spare(self) -> tuple[Path, MiSession] | None:
        with self._lock:
            spare, self._spare = self._spare, None
        if spare is not None and not spare[1].alive():
            shutil.rmtree(spare[0], ignore_errors=True)
            return None
        return spare

    def lock_stopping(self) -> threading.Lock:
        """Marks the tree as ending (no new spare, no new member), under its lock."""
        self._stopping = True
        return self._lock

    def drop_spare(self) -> None:
        if self._spare_thread is not None:
            self._spare_thread.join(timeout=60)
        with self._lock:
            spare, self._spare = self._spare, None
        if spare is not None:
            spare[1].close()
            shutil.rmtree(spare[0], ignore_errors=True)

    def _run(self, child: CaptureSession) -> None:
        try:
            child.execute()
        except Exception as exc:  # noqa: BLE001 - one child's failure never ends the others' capture
            child.warnings.append(f"could not trace process {child.pid}: {exc}")

            child.end_reason = child.end_reason or "error"
        finally:
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
