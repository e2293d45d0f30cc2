"""A tripwire that wakes sysbreak the instant GDB begins to die: a process-shared robust mutex GDB holds for life.

Why: when GDB is SIGKILLed (by a user, by the OOM killer) with breakpoints inserted, a target thread that runs into
an int3 before the bytes are back dies of SIGTRAP. The kernel releases GDB's tracees only at the very end of GDB's
exit, after tearing down its memory (5-12 ms here), so the bytes must be written back *during* GDB's death. Polling
GDB's /proc stat for PF_EXITING every millisecond from a Python thread noticed the death 0.3-4.7 ms late on this
2-core VM (20 kills at load 3; 1 target of 20 died). The kernel offers one earlier, blocking signal: as each
thread exits, before its memory goes, it walks the thread's robust-futex list, marks every robust mutex the thread
held FUTEX_OWNER_DIED and wakes a waiter. So the sysbreak process creates a robust, process-shared pthread mutex in
a memfd, passes the fd to GDB, GDB's main thread locks it (:func:`hold`, run by the extension) and never unlocks,
and a sysbreak thread waits in ``pthread_mutex_clocklock`` (ctypes drops the GIL meanwhile): the wait returns
EOWNERDEAD the moment GDB's main thread exits, whatever killed it, at no cost while GDB lives.

Plain Python (ctypes on glibc's pthread functions, which live in libc.so.6 since glibc 2.34 and in the process's
global namespace before); no ``gdb`` import: GDB's side is :func:`hold`, called through GDB's ``python`` command.
"""

from __future__ import annotations

import ctypes
import errno
import mmap
import os
import time

from sysbreak.libc import libc

SIZE = 64  # bytes of shared memory: a pthread_mutex_t is 40 on x86-64 glibc
_ATTR_SIZE = 16  # a pthread_mutexattr_t is 4
_PTHREAD_PROCESS_SHARED = 1
_PTHREAD_MUTEX_ROBUST = 1
_CLOCK_MONOTONIC = 1

_libc: ctypes.CDLL | None = None


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


def _lib() -> ctypes.CDLL:
    global _libc
    if _libc is None:
        lib = libc()
        for name in (
            "pthread_mutexattr_init",
            "pthread_mutexattr_setpshared",
            "pthread_mutexattr_setrobust",
            "pthread_mutex_init",
            "pthread_mutex_lock",
            "pthread_mutex_trylock",
            "pthread_mutex_unlock",
            "pthread_mutex_clocklock",
        ):
            getattr(lib, name).restype = ctypes.c_int
        _libc = lib
    return _libc


def available() -> bool:
    """Whether this Python can build a tripwire (glibc with pthread_mutex_clocklock, memfd_create)."""
    try:
        _lib().pthread_mutex_clocklock  # noqa: B018 - glibc >= 2.30
    except (OSError, AttributeError):
        return False
    return hasattr(os, "memfd_create")


def _address(mm: mmap.mmap) -> tuple[ctypes.Array[ctypes.c_char], int]:
    view = (ctypes.c_char * SIZE).from_buffer(mm)
    return view, ctypes.addressof(view)


class Tripwire:
    """The sysbreak side: owns the memfd and waits for GDB's death on the mutex GDB holds."""

    def __init__(self) -> None:
        lib = _lib()
        self.fd = os.memfd_create("sysbreak-tripwire")  # close-on-exec; pass_fds hands it to GDB only
        os.ftruncate(self.fd, SIZE)
        self._mm = mmap.mmap(self.fd, SIZE)
        self._view, self._addr = _address(self._mm)
        attr = ctypes.create_string_buffer(_ATTR_SIZE)
        for call, arg in (
            (lib.pthread_mutexattr_init, None),
            (lib.pthread_mutexattr_setpshared, _PTHREAD_PROCESS_SHARED),
            (lib.pthread_mutexattr_setrobust, _PTHREAD_MUTEX_ROBUST),
        ):
            rc = call(attr) if arg is None else call(attr, arg)
            if rc:
                raise OSError(rc, os.strerror(rc))
        rc = lib.pthread_mutex_init(ctypes.c_void_p(self._addr), attr)
        if rc:
            raise OSError(rc, os.strerror(rc))
        self.gone = False

    def close_fd(self) -> None:
        """Drop this process's copy of the fd once GDB has its own (the mapping stays)."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def held(self) -> bool:
        """Whether someone (GDB) holds the mutex now, without waiting."""
        rc = _lib().pthread_mutex_trylock(ctypes.c_void_p(self._addr))
        if rc == errno.EBUSY:
            return True
        if rc in (0, errno.EOWNERDEAD):
            self.gone = rc == errno.EOWNERDEAD
            _lib().pthread_mutex_unlock(ctypes.c_void_p(self._addr))
        return False

    def wait(self, timeout: float) -> bool:
        """Block up to ``timeout`` s; True as soon as the holder is gone (died, or unlocked), False on timeout."""
        if self.gone:
            return True
        deadline = time.clock_gettime(time.CLOCK_MONOTONIC) + timeout
        ts = _Timespec(int(deadline), int((deadline % 1) * 1e9))
        rc = _lib().pthread_mutex_clocklock(ctypes.c_void_p(self._addr), _CLOCK_MONOTONIC, ctypes.byref(ts))
        if rc == errno.ETIMEDOUT:
            return False
        self.gone = True  # 0: the holder unlocked; EOWNERDEAD: it died holding it; anything else: unusable
        return True


def hold(fd: int) -> None:
    """GDB's side, on its main thread: map the tripwire and lock it for the rest of GDB's life.

    The mapping is made with libc's mmap, not Python's: a Python mmap object is unmapped when the interpreter
    finalises, and the kernel cannot mark a mutex it can no longer reach, so an exit that finalises (GDB's quit)
    would then wake nobody."""
    lib = _lib()
    lib.mmap.restype = ctypes.c_void_p
    lib.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
    addr = lib.mmap(None, SIZE, mmap.PROT_READ | mmap.PROT_WRITE, mmap.MAP_SHARED, fd, 0)
    err = ctypes.get_errno()
    os.close(fd)  # the mapping is enough; nothing GDB starts inherits the fd
    if addr in (None, ctypes.c_void_p(-1).value):
        raise OSError(err, os.strerror(err))
    rc = lib.pthread_mutex_lock(ctypes.c_void_p(addr))
    if rc not in (0, errno.EOWNERDEAD):
        raise OSError(rc, os.strerror(rc))
