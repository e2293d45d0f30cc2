"""Where a failed system call goes next: the error branch right after a ``syscall`` instruction.

A ``munmap`` is logged before it enters the kernel (docs/event-log.md, "Order"), so its return value is not
read. To learn that one failed (ENOMEM when splitting a mapping at ``vm.max_map_count``, EINVAL on a hugetlb
range not aligned to its page size, EPERM on a sealed mapping) without a second stop for every call, the
tracer puts a breakpoint on the code only a failure runs: the error branch that code tests right after the
``syscall`` instruction (glibc's ``munmap()`` and ``syscall()``: ``cmp rax, -4095; jae error``; Go's
``runtime.munmap``: ``cmp rax, -4095; jbe ok``, the failure falling through). A successful call never runs it.

Plain Python (capstone through :mod:`sysbreak.elfscan.x86`): the tracer hands it the bytes after the
instruction, read from the target.
"""

from __future__ import annotations

from sysbreak.elfscan import x86

__all__ = ["BYTES", "fail_target"]

#: how many bytes after the ``syscall`` instruction :func:`fail_target` needs at most
BYTES = 16

# cmp against the error range: the operands as capstone prints them -> the branch mnemonics taken on failure,
# and those taken on success (the failure then falls through)
_LIMITS = ("rax, -0xfff", "eax, -0xfff", "rax, -0x1000", "eax, -0x1000")
_TAKEN_ON_FAILURE = {"jae", "jnb", "ja", "jnbe"}
_TAKEN_ON_SUCCESS = {"jb", "jnae", "jbe", "jna"}
_TESTS = ("rax, rax", "eax, eax")


def fail_target(code: bytes, address: int) -> int | None:
    """The address a failed call runs next, from ``code``: the instructions right after the ``syscall``
    instruction, placed at ``address``. None when they do not test the result for the error range first (the
    failure is then not watched)."""
    if len(code) < 4:
        return None
    w = x86.decode(code[:BYTES], address)
    if len(w.rows) < 2:
        return None
    (m0, ops0), (m1, ops1) = w.text(0), w.text(1)
    if m0 == "cmp" and ops0 in _LIMITS:
        taken, fallthrough = _TAKEN_ON_FAILURE, _TAKEN_ON_SUCCESS
    elif m0 == "test" and ops0 in _TESTS:
        taken, fallthrough = {"js"}, {"jns"}
    else:
        return None
    branch = x86.base_mnemonic(m1)
    after = w.rows[1][0] + w.rows[1][1]
    if branch in fallthrough:
        return after
    if branch in taken:
        try:
            return int(ops1, 16)
        except ValueError:  # an indirect branch
            return None
    return None
