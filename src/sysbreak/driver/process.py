"""What /proc says about a target process, and whether we may trace it (checked before GDB is started)."""

from __future__ import annotations

import contextlib
import os
import pwd
from dataclasses import dataclass

from sysbreak.errors import ExitCode, SysbreakError, os_error

YAMA_SCOPE = "/proc/sys/kernel/yama/ptrace_scope"
CAP_SYS_PTRACE = 19


def user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def read_status(pid: int) -> dict[str, str]:
    """``/proc/PID/status`` as a dict; raises FileNotFoundError/ProcessLookupError when the process is gone."""
    out: dict[str, str] = {}
    with open(f"/proc/{pid}/status", encoding="utf-8", errors="replace") as fh:
        for line in fh:
            key, _, value = line.partition(":")
            out[key] = value.strip()
    return out


def alive(pid: int) -> bool:
    """The process exists and is not a zombie."""
    try:
        state = read_status(pid).get("State", "")
    except OSError:
        return False
    return not state.startswith(("Z", "X"))


def rss_kb(pid: int) -> int | None:
    try:
        value = read_status(pid).get("VmRSS")
    except OSError:
        return None
    if not value:
        return None
    return int(value.split()[0])


def cmdline(pid: int) -> list[str]:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            raw = fh.read()
    except OSError:
        return []
    return [part.decode("utf-8", "replace") for part in raw.split(b"\0") if part]


def exe(pid: int) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/exe")
    except OSError:
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
        status = read_status(pid)
    except FileNotFoundError:
        raise SysbreakError(f"no process with pid {pid} exists", ExitCode.TARGET) from None
    except PermissionError:
        raise SysbreakError(f"cannot read /proc/{pid}/status (permission denied)", ExitCode.TARGET) from None
    except OSError as exc:
        raise os_error(exc, f"cannot read /proc/{pid}/status", ExitCode.TARGET) from None
    state = status.get("State", "")
    name = status.get("Name", "?")
    if state.startswith(("Z", "X")):
        raise SysbreakError(f"process {pid} ({name}) has already exited (it is a zombie)", ExitCode.TARGET)
    uids = [int(x) for x in status.get("Uid", "0 0 0 0").split()]
    target_uid = uids[0]
    me = os.geteuid()
    privileged = me == 0 or has_cap_sys_ptrace()
    if not privileged and any(u != me for u in uids[:3]):
        raise SysbreakError(
            f"process {pid} ({name}) belongs to user '{user_name(target_uid)}' (uid {target_uid}) but sysbreak runs "
            f"as '{user_name(me)}' (uid {me}): run sysbreak as that user, or as root",
            ExitCode.TARGET,
        )
    tracer = int(status.get("TracerPid", "0") or 0)
    if tracer:
        tracer_name = "?"
        with contextlib.suppress(OSError):
            tracer_name = read_status(tracer).get("Name", "?")
        raise SysbreakError(
            f"process {pid} ({name}) is already being traced by process {tracer} ({tracer_name}): "
            "detach that debugger first",
            ExitCode.TARGET,
        )
    if yama_scope() == 3:
        raise SysbreakError(f"cannot trace process {pid} ({name}): {ptrace_hint(pid)}", ExitCode.TARGET)
    return TargetInfo(pid=pid, uid=target_uid, tracer=tracer, name=name)
