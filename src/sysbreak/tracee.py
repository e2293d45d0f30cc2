"""A stopped thread's registers and memory, read directly by its tracer (plain Python, no ``gdb``).

Inside a breakpoint's ``stop()``, GDB's own way to the registers is ``gdb.newest_frame()`` then one
``read_register`` per register: 50 us for the frame (GDB identifies it, which runs its unwinder sniffers) and
5 us per register here, more than the registers are worth. The thread is stopped and traced by GDB, and
``stop()`` runs in GDB's main thread, the thread that traces it; so one ``PTRACE_GETREGS`` from that thread gives
every register at once (17 us measured from GDB's Python through ctypes), and ``pread`` on ``/proc/PID/mem``
reads the stack without GDB's memory layers (5.8 us for 4 KiB against 11.5 us for ``read_memory``).

:meth:`Tracee.regs` returns None when the request fails (this process does not trace that thread: a remote
target, a core file, another thread of the tracer): the caller then uses GDB's API, and the memory is read
through GDB too (:attr:`Tracee.direct` stays False until one ``PTRACE_GETREGS`` has proved that the thread is
ours, on this machine).
"""

from __future__ import annotations

import ctypes
import os
import struct

from sysbreak.libc import libc

PTRACE_GETREGS = 12
PTRACE_SETREGS = 13
#: ``struct user_regs_struct`` of x86-64 (sys/user.h), in order
USER_REGS = (
    "r15",
    "r14",
    "r13",
    "r12",
    "rbp",
    "rbx",
    "r11",
    "r10",
    "r9",
    "r8",
    "rax",
    "rcx",
    "rdx",
    "rsi",
    "rdi",
    "orig_rax",
    "rip",
    "cs",
    "eflags",
    "rsp",
    "ss",
    "fs_base",
    "gs_base",
    "ds",
    "es",
    "fs",
    "gs",
)
_LAYOUT = struct.Struct(f"<{len(USER_REGS)}Q")


def _ptrace() -> ctypes._CFuncPtr:  # type: ignore[name-defined]
    return libc().ptrace


class _IoVec(ctypes.Structure):
    _fields_ = [("iov_base", ctypes.c_void_p), ("iov_len", ctypes.c_size_t)]


def _iov(address: int, size: int) -> tuple[ctypes._Pointer[_IoVec], int]:
    return ctypes.pointer(_IoVec(address, size)), 1


def _vm(name: str) -> ctypes._CFuncPtr:  # type: ignore[name-defined]
    fn = getattr(libc(), name)
    fn.restype = ctypes.c_ssize_t
    fn.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_ulong, ctypes.c_void_p, ctypes.c_ulong, ctypes.c_ulong]
    return fn


class Tracee:
    """Registers and memory of the threads of process ``pid``, which this thread traces."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.direct = False  # proved: a PTRACE_GETREGS of one of its threads worked from here
        self.failed = False  # a PTRACE_GETREGS failed: not ours (or not x86-64); GDB's API is used
        self._buf = ctypes.create_string_buffer(_LAYOUT.size)
        self._fd: int | None = None
        self._fd_rw: int | None = None

    def regs(self, tid: int) -> dict[str, int] | None:
        """Every register of stopped thread ``tid`` (``USER_REGS`` names, unsigned 64-bit), None when this
        thread cannot read them (the caller asks GDB instead)."""
        if self.failed:
            return None
        if _ptrace()(PTRACE_GETREGS, tid, None, self._buf) != 0:
            self.failed = True
            return None
        self.direct = True
        return dict(zip(USER_REGS, _LAYOUT.unpack(self._buf.raw), strict=True))

    def set_regs(self, tid: int, regs: dict[str, int]) -> bool:
        """Write every register of stopped thread ``tid`` (``regs`` holds all of ``USER_REGS``); False when the
        request failed (nothing was changed)."""
        if not self.direct:
            return False
        _LAYOUT.pack_into(self._buf, 0, *(regs[name] & 0xFFFFFFFFFFFFFFFF for name in USER_REGS))
        return _ptrace()(PTRACE_SETREGS, tid, None, self._buf) == 0

    def write(self, address: int, data: bytes) -> bool:
        """Write ``data`` at ``address`` (only once :attr:`direct` is True); False when not all of it was written."""
        if not self.direct:
            return False
        try:
            if self._fd_rw is None:
                self._fd_rw = os.open(f"/proc/{self.pid}/mem", os.O_RDWR | os.O_CLOEXEC)
            return os.pwrite(self._fd_rw, data, address) == len(data)
        except OSError:
            return False

    def read(self, address: int, size: int) -> bytes:
        """``size`` bytes at ``address``, fewer where the memory ends (an unmapped page); OSError when none can be
        read. Only once :attr:`direct` is True."""
        if self._fd is None:
            self._fd = os.open(f"/proc/{self.pid}/mem", os.O_RDONLY | os.O_CLOEXEC)
        return os.pread(self._fd, size, address)

    def read_as_cpu(self, address: int, size: int) -> bytes:
        """``size`` bytes at ``address`` read as the thread's own load would: through ``process_vm_readv``,
        which honours the page protections (``/proc/PID/mem`` reads a ``PROT_NONE`` page as GDB does); OSError
        where the CPU would fault. For the step-over emulation's data accesses (:mod:`sysbreak.emulate`)."""
        buf = ctypes.create_string_buffer(size)
        done = _vm("process_vm_readv")(self.pid, *_iov(ctypes.addressof(buf), size), *_iov(address, size), 0)
        if done != size:
            raise OSError(ctypes.get_errno() or 14, f"{size} bytes at {address:#x} are not readable")
        return buf.raw

    def write_as_cpu(self, address: int, data: bytes) -> bool:
        """Write ``data`` at ``address`` as the thread's own store would: through ``process_vm_writev``, which
        refuses a read-only page (``/proc/PID/mem`` writes one, copy-on-write, as GDB's breakpoints do). False
        where the CPU would fault (nothing written) or before :attr:`direct`."""
        if not self.direct:
            return False
        buf = ctypes.create_string_buffer(data, len(data))
        done = _vm("process_vm_writev")(self.pid, *_iov(ctypes.addressof(buf), len(data)), *_iov(address, len(data)), 0)
        return bool(done == len(data))

    def close(self) -> None:
        """Forget the open memory file (after an exec it would read the old image: open it again)."""
        for fd in (self._fd, self._fd_rw):
            if fd is not None:
                os.close(fd)
        self._fd = self._fd_rw = None


_TRACEES: dict[int, Tracee] = {}


def for_pid(pid: int) -> Tracee:
    """The one :class:`Tracee` of process ``pid`` in this process (the stack reader's and the step-over's)."""
    t = _TRACEES.get(pid)
    if t is None:
        if len(_TRACEES) > 64:  # processes gone (a tree's children): their files closed
            for old in _TRACEES.values():
                old.close()
            _TRACEES.clear()
        t = _TRACEES[pid] = Tracee(pid)
    return t
