"""Facts about a target process (through psutil), and whether we may trace it (checked before GDB is started)."""

from __future__ import annotations

import contextlib
import os
import pwd
from dataclasses import dataclass

import psutil

from sysbreak.errors import ExitCode, SysbreakError, os_error

YAMA_SCOPE = "/proc/sys/kernel/yama/ptrace_scope"
CAP_SYS_PTRACE = 19


def user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def read_status(pid: int) -> dict[str, str]:
    """``/proc/PID/status`` as a dict; raises FileNotFoundError/ProcessLookupError when the process is gone.

    Only for what psutil does not tell: ``TracerPid`` (who ptraces it) and ``CapEff`` (our capabilities)."""
    out: dict[str, str] = {}
    with open(f"/proc/{pid}/status", encoding="utf-8", errors="replace") as fh:
        for line in fh:
            key, _, value = line.partition(":")
            out[key] = value.strip()
    return out


_GONE = (psutil.STATUS_ZOMBIE, psutil.STATUS_DEAD)


def alive(pid: int) -> bool:
    """The process exists and is not a zombie."""
    try:
        return psutil.Process(pid).status() not in _GONE
    except psutil.Error:
        return False


def ppid(pid: int) -> int | None:
    """The parent's pid, None when the process is gone."""
    try:
        return int(psutil.Process(pid).ppid())
    except psutil.Error:
        return None


def children(pid: int) -> list[int]:
    """The pids of the processes whose parent is ``pid`` (not their descendants), sorted."""
    try:
        return sorted(c.pid for c in psutil.Process(pid).children())
    except psutil.Error:
        return []


def rss_kb(pid: int) -> int | None:
    """The resident set size of a live process, in kB (None when it is gone): the one reader of a live RSS."""
    try:
        return int(psutil.Process(pid).memory_info().rss // 1024)
    except psutil.Error:
        return None


def cmdline(pid: int) -> list[str]:
    try:
        return list(psutil.Process(pid).cmdline())
    except psutil.Error:
        return []


def exe(pid: int) -> str | None:
    try:
        return psutil.Process(pid).exe() or None
    except psutil.Error:
        return None


def yama_scope() -> int | None:
    try:
        with open(YAMA_SCOPE, encoding="ascii") as fh:
            return int(fh.read().strip())
    except (OSError, ValueError):
        return None


def has_cap_sys_ptrace() -> bool:
    try:
        caps = int(read_status(os.getpid()).get("CapEff", "0"), 16)
    except (OSError, ValueError):
        return False
    return bool(caps & (1 << CAP_SYS_PTRACE))


@dataclass
class TargetInfo:
    pid: int
    uid: int
    tracer: int  # TracerPid: 0 when not traced
    name: str


def ptrace_hint(pid: int | None = None) -> str:
    """How to allow ptrace here, as the end of a sentence."""
    scope = yama_scope()
    if scope == 1 and not has_cap_sys_ptrace():
        return (
            "kernel.yama.ptrace_scope is 1, which lets a debugger trace only its own children; allow attaching "
            "with 'sudo sysctl kernel.yama.ptrace_scope=0', or run sysbreak as root"
        )
    if scope == 2 and not has_cap_sys_ptrace():
        return "kernel.yama.ptrace_scope is 2, which lets only root (CAP_SYS_PTRACE) attach; run sysbreak as root"
    if scope == 3:
        return "kernel.yama.ptrace_scope is 3, which forbids attaching to any process until the next reboot"
    if not has_cap_sys_ptrace():
        return (
            "the process may be non-dumpable (setuid, or prctl(PR_SET_DUMPABLE, 0)), or this container lacks "
            "CAP_SYS_PTRACE (docker run --cap-add=SYS_PTRACE ...); running sysbreak as root also works"
        )
    return "a security module (seccomp, SELinux, AppArmor) may forbid ptrace here"


def check_traceable(pid: int) -> TargetInfo:
    """Raise a one-line :class:`SysbreakError` when ``pid`` cannot be attached to; else describe it."""
    if pid <= 0:
        raise SysbreakError(f"{pid} is not a process id", ExitCode.USAGE)
    if pid == os.getpid():
        raise SysbreakError("sysbreak cannot attach to itself", ExitCode.USAGE)
    try:
        proc = psutil.Process(pid)
        name = proc.name() or "?"
        gone = proc.status() in _GONE
        uids = list(proc.uids())
    except psutil.NoSuchProcess:
        raise SysbreakError(f"no process with pid {pid} exists", ExitCode.TARGET) from None
    except psutil.AccessDenied:
        raise SysbreakError(f"cannot read /proc/{pid}/status (permission denied)", ExitCode.TARGET) from None
    except OSError as exc:
        raise os_error(exc, f"cannot read /proc/{pid}/status", ExitCode.TARGET) from None
    except psutil.Error as exc:
        raise SysbreakError(f"cannot read /proc/{pid}/status: {exc}", ExitCode.TARGET) from None
    if gone:
        raise SysbreakError(f"process {pid} ({name}) has already exited (it is a zombie)", ExitCode.TARGET)
    target_uid = uids[0]
    me = os.geteuid()
    privileged = me == 0 or has_cap_sys_ptrace()
    if not privileged and any(u != me for u in uids[:3]):
        raise SysbreakError(
            f"process {pid} ({name}) belongs to user '{user_name(target_uid)}' (uid {target_uid}) but sysbreak runs "
            f"as '{user_name(me)}' (uid {me}): run sysbreak as that user, or as root",
            ExitCode.TARGET,
        )
    try:
        tracer = int(read_status(pid).get("TracerPid", "0") or 0)
    except (OSError, ValueError):
        tracer = 0
    if tracer:
        tracer_name = "?"
        with contextlib.suppress(psutil.Error):
            tracer_name = psutil.Process(tracer).name() or "?"
        raise SysbreakError(
            f"process {pid} ({name}) is already being traced by process {tracer} ({tracer_name}): "
            "detach that debugger first",
            ExitCode.TARGET,
        )
    if yama_scope() == 3:
        raise SysbreakError(f"cannot trace process {pid} ({name}): {ptrace_hint(pid)}", ExitCode.TARGET)
    return TargetInfo(pid=pid, uid=target_uid, tracer=tracer, name=name)
