"""Arming (plain Python): which breakpoints a probe needs, how a hit becomes an event.

Nothing here imports ``gdb``; :mod:`sysbreak.gdb` feeds it integers and strings read from the inferior. That
keeps the decisions (and their tests) independent of a debugger.

The arming rules (one breakpoint after the site, never ON a ``syscall`` instruction, all work in
``stop()``) and the measurements behind them are written down in notes/arming.md.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

# glibc's x86-64 syscall(): mov rax,rdi; mov rdi,rsi; mov rsi,rdx; mov rdx,rcx; mov r10,r8; mov r8,r9;
# mov r9,[rsp+8]; syscall.  Unchanged since glibc 2.x; after it returns, rdi..r9 hold the kernel arguments.
GLIBC_SYSCALL_WRAPPER = bytes.fromhex("4889f84889f74889d64889ca4d89c24d89c84c8b4c24080f05")

KERNEL_ARG_REGS = ("rdi", "rsi", "rdx", "r10", "r8", "r9")

MASK64 = (1 << 64) - 1


def to_signed(value: int) -> int:
    value &= MASK64
    return value - (1 << 64) if value >= 1 << 63 else value


def to_signed32(value: int) -> int:
    """An ``int`` argument (a file descriptor): the kernel reads only the low 32 bits."""
    value &= 0xFFFFFFFF
    return value - (1 << 32) if value >= 1 << 31 else value


def to_unsigned(value: int) -> int:
    return value & MASK64


@dataclass(frozen=True)
class Breakpoint:
    """One GDB breakpoint the tracer needs for a probe."""

    address: int  # runtime address
    role: str  # "exit-only", "before", "entry", "exit" or "fail"
    site_address: int  # runtime address of the instruction that enters the kernel or calls syscall()
    site_kind: str = "syscall"  # "syscall" or "call"
    rcx_after: int | None = None  # exit-only: rcx must equal this (the address after the syscall instruction)
    accept_failed: bool = False  # exit-only at a call site: glibc's error path returns -1 with rcx reloaded
    condition_nrs: tuple[int, ...] | None = None  # entry: the number register must hold one of these (None: known)
    arg_regs: tuple[str, ...] = ()  # where the six kernel arguments are read at this breakpoint
    nr: int | None = None  # the syscall number when known statically
    nr_reg: str | None = None  # register holding the number at an entry breakpoint
    synthetic_wrapper_frame: bool = False  # prepend libc's syscall() as frame 0 (call sites)
    return_address: int | None = None  # before, at a call: the caller's pc that frames name (after the call)
    sp_delta: int = 0  # entry: rsp at the paired exit minus rsp here (a probe before a syscall instruction)


@dataclass
class ProbeSpec:
    """The subset of :class:`sysbreak.sites.Probe` the arming logic needs (kept separate for tests)."""

    kind: str  # "syscall" or "call"
    site: int  # vaddr of the syscall instruction or of the call
    entry: int  # vaddr where the arguments are read (the site, or a generic wrapper's first instruction)
    exit: int | None  # vaddr of the instruction after the site
    nr: int | None
    nr_reg: str
    arg_regs: tuple[str, ...]
    condition_nrs: tuple[int, ...] | None
    before: bool = False  # a release caught before the kernel acts (sites.Probe.before)
    sp_delta: int = 0  # rsp at exit minus rsp at entry
    args_at_exit: bool = False  # read the kernel arguments at the exit (after the syscall instruction)


def breakpoints_for(probe: ProbeSpec, bias: int, *, wrapper_return: int | None) -> list[Breakpoint]:
    """Translate one probe of a module loaded at ``bias`` into the breakpoints that implement it.

    ``wrapper_return`` is the runtime address of the instruction after the ``syscall`` instruction of libc's
    ``syscall()`` when that function was verified to be glibc's (see :data:`GLIBC_SYSCALL_WRAPPER`), else None.
    """
    site = probe.site + bias
    call = probe.kind == "call"
    if probe.before:
        return [
            Breakpoint(
                address=probe.entry + bias,
                role="before",
                rcx_after=None,
                accept_failed=False,
                condition_nrs=None,
                arg_regs=probe.arg_regs,
                nr=probe.nr,
                nr_reg=None,
                site_address=site,
                site_kind=probe.kind,
                synthetic_wrapper_frame=call and probe.exit is not None,
                return_address=probe.exit + bias if call and probe.exit is not None else None,
            )
        ]
    if probe.condition_nrs is None and probe.exit is not None and (not call or wrapper_return is not None):
        return [
            Breakpoint(
                address=probe.exit + bias,
                role="exit-only",
                rcx_after=wrapper_return if call else probe.exit + bias,
                accept_failed=call,
                condition_nrs=None,
                arg_regs=KERNEL_ARG_REGS,
                nr=probe.nr,
                nr_reg=None,
                site_address=site,
                site_kind=probe.kind,
                synthetic_wrapper_frame=call,
            )
        ]
    if probe.kind == "syscall" and probe.entry == probe.site:
        return []  # never ON a syscall instruction (it may block: see notes/arming.md); plan() agrees
    entry, nr_reg, arg_regs = probe.entry + bias, probe.nr_reg, probe.arg_regs
    bps = [
        Breakpoint(
            address=entry,
            role="entry",
            rcx_after=None,
            accept_failed=False,
            condition_nrs=probe.condition_nrs,
            arg_regs=arg_regs,
            nr=probe.nr,
            nr_reg=nr_reg,
            site_address=site,
            site_kind=probe.kind,
            sp_delta=probe.sp_delta,
            # a call of syscall(): the return address its error branch sees at [rsp] (a release logged here)
            return_address=probe.exit + bias if call and probe.exit is not None and probe.entry == probe.site else None,
        )
    ]
    if probe.exit is not None:
        bps.append(
            Breakpoint(
                address=probe.exit + bias,
                role="exit",
                rcx_after=None,
                accept_failed=False,
                condition_nrs=None,
                arg_regs=KERNEL_ARG_REGS if probe.args_at_exit else (),
                nr=probe.nr,
                nr_reg=None,
                site_address=site,
                site_kind=probe.kind,
            )
        )
    return bps


@dataclass
class PendingCall:
    """A wanted call seen at its entry breakpoint, waiting for its return value."""

    t: float
    tid: int
    nr: int
    args: list[int]
    stack: int
    site: dict[str, object]


@dataclass
class PendingCalls:
    """Calls in flight, keyed by (thread, stack pointer): the stack pointer is the same at the instruction that
    enters the kernel (or calls syscall()) and at the instruction after it, and differs between a call and a
    signal handler's nested call on the same thread."""

    limit: int = 4096
    calls: dict[tuple[int, int], PendingCall] = field(default_factory=dict)

    def push(self, tid: int, sp: int, call: PendingCall) -> None:
        if len(self.calls) >= self.limit:  # calls whose return we never saw (thread gone, longjmp)
            self.calls.pop(next(iter(self.calls)))
        self.calls[(tid, sp)] = call

    def pop(self, tid: int, sp: int) -> PendingCall | None:
        return self.calls.pop((tid, sp), None)

    def drain(self) -> list[PendingCall]:
        out = list(self.calls.values())
        self.calls.clear()
        return out

    def __len__(self) -> int:
        return len(self.calls)


_MMAP_PROT = {1: "READ", 2: "WRITE", 4: "EXEC"}
_MMAP_FLAGS = {
    0x01: "SHARED",
    0x02: "PRIVATE",
    0x03: "SHARED_VALIDATE",
    0x10: "FIXED",
    0x20: "ANONYMOUS",
    0x100: "GROWSDOWN",
    0x800: "DENYWRITE",
    0x1000: "EXECUTABLE",
    0x2000: "LOCKED",
    0x4000: "NORESERVE",
    0x8000: "POPULATE",
    0x10000: "NONBLOCK",
    0x20000: "STACK",
    0x40000: "HUGETLB",
    0x80000: "SYNC",
    0x100000: "FIXED_NOREPLACE",
}


def _bits(value: int, names: dict[int, str], none: str) -> str:
    if names is _MMAP_FLAGS:  # the map type is a 2-bit field, not bits
        kind = {1: "SHARED", 2: "PRIVATE", 3: "SHARED_VALIDATE"}.get(value & 3)
        parts = [kind] if kind else []
        value &= ~3
        names = {bit: n for bit, n in names.items() if bit > 3}
    else:
        parts = []
    parts += [n for bit, n in names.items() if value & bit]
    rest = value & ~sum(names)
    if rest:
        parts.append(hex(rest))
    return "|".join(parts) or none


def describe_call(name: str, args: Sequence[int], ret: int | None) -> str:
    """strace-like one-liner: ``mmap(NULL, 65536, READ|WRITE, PRIVATE|ANONYMOUS, -1, 0) = 0x7f12...``"""
    a = list(args) + [0] * (6 - len(args))
    if name == "mmap":
        shown = [
            "NULL" if a[0] == 0 else hex(a[0]),
            str(a[1]),
            _bits(a[2], _MMAP_PROT, "NONE"),
            _bits(a[3], _MMAP_FLAGS, "0"),
            str(to_signed32(a[4])),
            hex(a[5]),
        ]
    elif name in ("munmap", "mprotect", "madvise"):
        shown = [hex(a[0]), str(a[1])] + ([hex(a[2])] if name != "munmap" else [])
    elif name == "mremap":
        shown = [hex(a[0]), str(a[1]), str(a[2]), hex(a[3])] + ([hex(a[4])] if a[3] & 2 else [])
    elif name == "brk":
        shown = ["NULL" if a[0] == 0 else hex(a[0])]
    else:
        shown = [hex(x) for x in a[:6]]
    if ret is None:
        result = "?"
    else:
        sret = to_signed(ret)
        result = str(sret) if -4096 < sret < 4096 else hex(to_unsigned(ret))
    return f"{name}({', '.join(shown)}) = {result}"


def describe_ret(ret: int) -> str:
    """A failed call's result the way strace prints it: ``-1 ENOMEM (Cannot allocate memory)``."""
    import errno
    import os

    code = -to_signed(ret)
    name = errno.errorcode.get(code)
    if name is None:
        return str(to_signed(ret))
    return f"-1 {name} ({os.strerror(code)})"
