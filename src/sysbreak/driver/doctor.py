"""``sysbreak doctor``: can a capture work here? One line per check, with the fix when it fails."""

from __future__ import annotations

import ctypes.util
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass

from sysbreak.driver import gdbenv, process
from sysbreak.errors import SysbreakError


@dataclass
class Check:
    name: str
    status: str  # "ok", "FAIL", "info", "skip"
    detail: str
    fix: str = ""

    @property
    def failed(self) -> bool:
        return self.status == "FAIL"

    def line(self) -> str:
        text = f"{self.status:<5} {self.name}: {self.detail}"
        if self.fix:
            text += f" -- fix: {self.fix}"
        return text


def _check_gdb(gdb: str | None) -> tuple[Check, str | None]:
    try:
        path = gdbenv.find_gdb(gdb)
    except SysbreakError as err:
        return Check(
            "gdb", "FAIL", str(err).split(":")[0], "install GDB (apt-get install gdb) or give --gdb PATH"
        ), None
    return Check("gdb", "ok", path), path


def _check_extension_loads(gdb: str) -> Check:
    cmds = [*gdbenv.load_commands(), "help sysbreak break"]
    argv = [gdb, "-nx", "-q", "-batch"]
    for cmd in cmds:
        argv += ["-ex", cmd]
    try:
        res = subprocess.run(
            argv,
            capture_output=True,
            text=True,
            timeout=60,
            env=gdbenv.gdb_env(),
            stdin=subprocess.DEVNULL,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return Check("extension", "FAIL", "GDB took more than 60 s to load sysbreak's extension")
    out = res.stdout + res.stderr
    if "Usage: sysbreak break" in out:
        where = gdbenv.repo_script() or "sysbreak.gdb (installed package)"
        return Check("extension", "ok", f"GDB loads sysbreak's commands from {where}")
    last = next((ln for ln in reversed(out.strip().splitlines()) if ln.strip()), "no output")
    return Check("extension", "FAIL", f"GDB could not load sysbreak's extension: {last}", "see the message above")


def _check_ptrace_live(gdb: str) -> Check:
    """Attach GDB to a throwaway process of ours (not GDB's child: what `sysbreak attach` does) and detach."""
    try:
        victim = subprocess.Popen(["sleep", "30"], stdin=subprocess.DEVNULL, start_new_session=True)
    except OSError as exc:
        return Check("ptrace attach", "skip", f"could not start a test process: {exc.strerror}")
    try:
        t0 = time.monotonic()
        res = subprocess.run(
            [gdb, "-nx", "-q", "-batch", "-p", str(victim.pid), "-ex", "detach"],
            capture_output=True,
            text=True,
            timeout=60,
            stdin=subprocess.DEVNULL,
            check=False,
        )
        took = time.monotonic() - t0
    except subprocess.TimeoutExpired:
        return Check("ptrace attach", "FAIL", "GDB did not attach to a test process within 60 s")
    finally:
        victim.kill()
        victim.wait()
    out = res.stdout + res.stderr
    if "Operation not permitted" in out or "ptrace:" in out and "detached" not in out:
        reason = next((ln for ln in out.splitlines() if "ptrace" in ln), out.strip()[-200:])
        return Check(
            "ptrace attach", "FAIL", f"GDB could not attach to a test process ({reason})", process.ptrace_hint()
        )
    return Check("ptrace attach", "ok", f"GDB attached to and detached from a test process in {took:.1f} s")


def _check_ptrace_policy() -> Check:
    scope = process.yama_scope()
    who = "root" if os.geteuid() == 0 else f"uid {os.geteuid()}"
    cap = "with CAP_SYS_PTRACE" if process.has_cap_sys_ptrace() else "without CAP_SYS_PTRACE"
    if scope is None:
        return Check("ptrace policy", "ok", f"no Yama ptrace_scope; running as {who} {cap}")
    detail = f"kernel.yama.ptrace_scope={scope}; running as {who} {cap}"
    if scope == 0 or process.has_cap_sys_ptrace() and scope < 3:
        return Check("ptrace policy", "ok", detail)
    return Check("ptrace policy", "FAIL", detail, process.ptrace_hint())


def _check_target(pid: int) -> Check:
    try:
        info = process.check_traceable(pid)
    except SysbreakError as err:
        return Check(f"pid {pid}", "FAIL", str(err))
    return Check(f"pid {pid}", "ok", f"{info.name}, user {process.user_name(info.uid)}, not traced by anyone")


def _check_libucm() -> Check:
    lib = ctypes.util.find_library("ucm")
    header = os.path.exists("/usr/include/ucm/api/ucm.h")
    if lib:
        extra = "" if header else " (no headers: `sysbreak demo` builds without it)"
        return Check("libucm", "info", f"found {lib}{extra}")
    return Check(
        "libucm",
        "info",
        "not installed (only needed to see UCX's raw-syscall mappings and for the full demo)",
        "apt-get install libucx-dev",
    )


def run_checks(gdb: str | None = None, pid: int | None = None, live: bool = True) -> list[Check]:
    checks: list[Check] = []
    first, path = _check_gdb(gdb)
    checks.append(first)
    if path is not None:
        probe = gdbenv.probe_gdb(path)
        if probe.error:
            checks.append(Check("gdb runs", "FAIL", probe.error, "give a working GDB with --gdb PATH"))
        else:
            checks[-1] = Check("gdb", "ok", f"{path} ({probe.version})")
            if probe.python is None:
                checks.append(
                    Check(
                        "gdb Python",
                        "FAIL",
                        f"{path} was built without Python scripting",
                        "install a GDB with Python (Debian/Ubuntu: apt-get install gdb) or give one with --gdb PATH",
                    )
                )
            else:
                checks.append(Check("gdb Python", "ok", f"Python {probe.python} inside GDB"))
                if probe.missing:
                    msg = gdbenv.missing_modules_message(probe)
                    detail, _, fix = msg.partition(": ")
                    checks.append(Check("gdb imports", "FAIL", detail, fix))
                else:
                    checks.append(
                        Check("gdb imports", "ok", "GDB's Python imports " + ", ".join(gdbenv.REQUIRED_MODULES))
                    )
                    checks.append(_check_extension_loads(path))
    checks.append(_check_ptrace_policy())
    if path is not None and live and not any(c.failed for c in checks):
        checks.append(_check_ptrace_live(path))
    if pid is not None:
        checks.append(_check_target(pid))
    checks.append(_check_libucm())
    cc = shutil.which("gcc") or shutil.which("cc")
    checks.append(Check("C compiler", "info", cc or "none (only `sysbreak demo` needs one)"))
    checks.append(Check("sysbreak", "info", f"Python {sys.version.split()[0]} at {sys.executable}"))
    return checks
