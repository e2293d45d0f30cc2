"""The plain-Python decisions of the tracer: breakpoints per probe, pending calls, console lines."""

from __future__ import annotations

from sysbreak.arming import (
    GLIBC_SYSCALL_WRAPPER,
    KERNEL_ARG_REGS,
    PendingCall,
    PendingCalls,
    ProbeSpec,
    breakpoints_for,
    describe_call,
    to_signed,
    to_unsigned,
)

CALL_ARGS = ("rsi", "rdx", "rcx", "r8", "r9", "*sp")


def test_known_syscall_instruction_is_one_exit_only_breakpoint_validated_by_rcx() -> None:
    p = ProbeSpec("syscall", 0x1000, 0x1000, 0x1002, 9, "rax", KERNEL_ARG_REGS, None)
    [bp] = breakpoints_for(p, 0x7F0000000000, wrapper_return=None)
    assert bp.role == "exit-only" and bp.address == 0x7F0000001002
    assert bp.rcx_after == 0x7F0000001002 and not bp.accept_failed
    assert bp.arg_regs == KERNEL_ARG_REGS and bp.nr == 9 and bp.site_address == 0x7F0000001000
    assert not bp.synthetic_wrapper_frame


def test_known_call_site_uses_the_verified_glibc_wrapper() -> None:
    p = ProbeSpec("call", 0x2000, 0x2000, 0x2005, 9, "rdi", CALL_ARGS, None)
    [bp] = breakpoints_for(p, 0x1000, wrapper_return=0x5555)
    assert bp.role == "exit-only" and bp.address == 0x3005
    assert bp.rcx_after == 0x5555 and bp.accept_failed
    assert bp.arg_regs == KERNEL_ARG_REGS and bp.synthetic_wrapper_frame


def test_call_site_without_verified_wrapper_falls_back_to_entry_and_exit() -> None:
    p = ProbeSpec("call", 0x2000, 0x2000, 0x2005, 9, "rdi", CALL_ARGS, None)
    entry, exit_ = breakpoints_for(p, 0, wrapper_return=None)
    assert (entry.role, entry.address, entry.condition_nrs, entry.arg_regs) == ("entry", 0x2000, None, CALL_ARGS)
    assert (exit_.role, exit_.address) == ("exit", 0x2005)


def test_generic_wrapper_is_entered_at_its_first_instruction_never_on_the_syscall() -> None:
    wrapper_args = ("rsi", "rdx", "rcx", "r8", "r9", "*sp+8")
    p = ProbeSpec("syscall", 0x17, 0x0, 0x19, None, "rdi", wrapper_args, (9, 11))
    entry, exit_ = breakpoints_for(p, 0x100, wrapper_return=0x999)
    assert entry.address == 0x100 and entry.condition_nrs == (9, 11) and entry.nr_reg == "rdi"
    assert entry.arg_regs == ("rsi", "rdx", "rcx", "r8", "r9", "*sp+8")
    assert exit_.address == 0x119 and exit_.role == "exit"


def test_unknown_number_that_is_not_from_the_caller_gets_no_breakpoint() -> None:
    # a breakpoint ON a syscall instruction deadlocks multi-threaded targets when the call blocks
    p = ProbeSpec("syscall", 0x17, 0x17, 0x19, None, "rax", KERNEL_ARG_REGS, (9,))
    assert breakpoints_for(p, 0, wrapper_return=None) == []


def test_tail_call_has_entry_only() -> None:
    p = ProbeSpec("call", 0x10, 0x10, None, 9, "rdi", CALL_ARGS, None)
    [bp] = breakpoints_for(p, 0, wrapper_return=0x999)
    assert bp.role == "entry"


def test_pending_calls_keyed_by_thread_and_stack_pointer() -> None:
    pend = PendingCalls(limit=2)
    call = PendingCall(1.0, 7, 9, [0] * 6, 1, {})
    pend.push(7, 0x100, call)
    assert pend.pop(8, 0x100) is None and pend.pop(7, 0x108) is None
    assert pend.pop(7, 0x100) is call and len(pend) == 0
    for sp in (1, 2, 3):
        pend.push(7, sp, call)
    assert len(pend) == 2 and pend.pop(7, 1) is None  # the oldest was dropped at the limit
    assert len(pend.drain()) == 2 and len(pend) == 0


def test_describe_call_reads_like_strace() -> None:
    line = describe_call("mmap", [0, 65536, 3, 0x22, to_unsigned(-1), 0], 0x7F0000000000)
    assert line == "mmap(NULL, 65536, READ|WRITE, PRIVATE|ANONYMOUS, -1, 0x0) = 0x7f0000000000"
    assert describe_call("munmap", [0x1000, 4096], 0) == "munmap(0x1000, 4096) = 0"
    assert describe_call("mmap", [0, 1 << 40, 3, 0x22, to_unsigned(-1), 0], to_unsigned(-12)).endswith("= -12")
    assert describe_call("brk", [0], None) == "brk(NULL) = ?"
    assert describe_call("mremap", [0x1000, 4096, 8192, 1], 0x2000) == "mremap(0x1000, 4096, 8192, 0x1) = 0x2000"


def test_signed_unsigned_round_trip() -> None:
    assert to_signed(to_unsigned(-12)) == -12 and to_unsigned(-1) == (1 << 64) - 1
    assert len(GLIBC_SYSCALL_WRAPPER) == 25 and GLIBC_SYSCALL_WRAPPER.endswith(b"\x0f\x05")


def test_mmap_flags_are_named() -> None:
    line = describe_call("mmap", [0x1000, 4096, 5, 0x812, 3, 0x5000], 0x1000)
    assert line == "mmap(0x1000, 4096, READ|EXEC, PRIVATE|FIXED|DENYWRITE, 3, 0x5000) = 0x1000"
    assert "SHARED|0x80000000" in describe_call("mmap", [0, 4096, 1, 0x80000001, 3, 0], 0)
