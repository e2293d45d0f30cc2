"""Carrying a vfork child to its exec without GDB, then handing it over stopped.

A child of ``vfork`` (and of ``posix_spawn``, which is ``clone(CLONE_VM | CLONE_VFORK)``; Python's subprocess
and multiprocessing ``spawn`` use one of the two) shares its parent's memory until it calls ``execve`` or
``_exit``. A GDB attached to it then would insert its own breakpoints (the shared-library event breakpoint in
ld.so, at least) into the *parent's* code, and the parent's GDB would read them back as original bytes. So the
child is not given to GDB before its exec: :func:`run_to_exec` traces it with bare ptrace (no breakpoint, only
``PTRACE_O_TRACEEXEC``), lets it run to the exec, and leaves it stopped (SIGSTOP, then detach) at the first
instruction of its new image, where its own GDB attaches like to any stopped process. What the child does
between ``vfork`` and ``execve`` (``dup2``, ``close``, signal masks: no mappings) is not traced.

All ptrace requests for one tracee must come from one thread: call :func:`run_to_exec` from the thread that
will not do anything else meanwhile.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import time

from sysbreak.libc import libc

PTRACE_CONT = 7
PTRACE_DETACH = 17
PTRACE_SEIZE = 0x4206
PTRACE_INTERRUPT = 0x4207
PTRACE_O_TRACEEXEC = 0x10
PTRACE_EVENT_EXEC = 4
PTRACE_EVENT_STOP = 128
WALL = 0x40000000  # __WALL


def _ptrace(request: int, pid: int, addr: int = 0, data: int = 0) -> None:
    if libc().ptrace(request, pid, ctypes.c_void_p(addr), ctypes.c_void_p(data)) == -1:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def run_to_exec(pid: int, timeout: float = 30.0) -> str:
    """Let stopped process ``pid`` (a vfork child held with SIGSTOP) run to its ``execve`` and leave it stopped
    there, untraced. Returns ``"exec"``, ``"exited"`` (it ended without an exec), or ``"timeout"`` (it did not exec
    within ``timeout`` s: it is detached and left running, untraced)."""
    _ptrace(PTRACE_SEIZE, pid, 0, PTRACE_O_TRACEEXEC)
    os.kill(pid, signal.SIGCONT)  # ends the group-stop; the tracee reports SIGCONT and group-stop events
    deadline = time.monotonic() + timeout
    while True:
        try:
            wpid, status = os.waitpid(pid, WALL | os.WNOHANG)
        except ChildProcessError:
            return "exited"
        if wpid == 0:
            if time.monotonic() > deadline:
                with contextlib.suppress(OSError):
                    _ptrace(PTRACE_INTERRUPT, pid)
                    os.waitpid(pid, WALL)
                    _ptrace(PTRACE_DETACH, pid)
                return "timeout"
            time.sleep(0.0005)
            continue
        if os.WIFEXITED(status) or os.WIFSIGNALED(status):
            return "exited"
        if not os.WIFSTOPPED(status):
            continue
        event = status >> 16
        sig = os.WSTOPSIG(status)
        if event == PTRACE_EVENT_EXEC:
            os.kill(pid, signal.SIGSTOP)  # pending: taken the moment it is let go, before one instruction runs
            _ptrace(PTRACE_DETACH, pid)
            return "exec"
        if event == PTRACE_EVENT_STOP:
            _ptrace(PTRACE_CONT, pid)  # a group-stop (or the SEIZE's own stop): go on
        elif sig == signal.SIGSTOP:
            _ptrace(PTRACE_CONT, pid)  # the hold's SIGSTOP, already spent: never stop it again
        else:
            _ptrace(PTRACE_CONT, pid, 0, sig)  # its signal, delivered as it would have been
