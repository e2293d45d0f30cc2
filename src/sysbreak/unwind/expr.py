"""The DWARF expressions that CFI uses (``DW_CFA_def_cfa_expression``, ``DW_CFA_expression``): parsed by pyelftools'
:class:`DWARFExprParser`, evaluated here on a small stack machine.

What x86-64 code has in its CFI: the PLT rule (``rsp + 8 + ((rip & 15) >= 11) << 3``), signal trampolines
(``rsp + offset`` / ``*(rsp + offset)``) and realigned stacks (``*(rbp - 8)``). Anything outside the supported
operations raises :class:`ExprError`, and the unwinder stops there rather than guess.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

MASK64 = (1 << 64) - 1


class ExprError(Exception):
    """An expression this evaluator does not support, or one that reads memory outside the copied window."""


class OutsideWindow(ExprError):
    """The expression reads memory that was not copied."""


@functools.lru_cache(maxsize=4096)
def _parse(expr: bytes) -> tuple[tuple[str, tuple[int, ...]], ...]:
    from elftools.dwarf.dwarf_expr import DWARFExprParser
    from elftools.dwarf.structs import DWARFStructs

    parser = DWARFExprParser(DWARFStructs(little_endian=True, dwarf_format=32, address_size=8))
    ops = []
    for op in parser.parse_expr(list(expr)):
        args = tuple(a for a in op.args if isinstance(a, int))
        ops.append((op.op_name, args))
    return tuple(ops)


def _signed(v: int) -> int:
    v &= MASK64
    return v - (1 << 64) if v >> 63 else v


_BINARY: dict[str, Callable[[int, int], int]] = {
    "DW_OP_plus": lambda a, b: a + b,
    "DW_OP_minus": lambda a, b: a - b,
    "DW_OP_mul": lambda a, b: a * b,
    "DW_OP_and": lambda a, b: a & b,
    "DW_OP_or": lambda a, b: a | b,
    "DW_OP_xor": lambda a, b: a ^ b,
    "DW_OP_shl": lambda a, b: a << b if b < 64 else 0,
    "DW_OP_shr": lambda a, b: (a & MASK64) >> b if b < 64 else 0,
    "DW_OP_ge": lambda a, b: int(_signed(a) >= _signed(b)),
    "DW_OP_gt": lambda a, b: int(_signed(a) > _signed(b)),
    "DW_OP_le": lambda a, b: int(_signed(a) <= _signed(b)),
    "DW_OP_lt": lambda a, b: int(_signed(a) < _signed(b)),
    "DW_OP_eq": lambda a, b: int((a & MASK64) == (b & MASK64)),
    "DW_OP_ne": lambda a, b: int((a & MASK64) != (b & MASK64)),
}


def evaluate(
    expr: bytes,
    reg: Callable[[int], int | None],
    read: Callable[[int], int | None],
    initial: int | None = None,
) -> int:
    """The value of ``expr``; ``reg(n)`` gives DWARF register n (None: unknown), ``read(addr)`` 8 bytes of memory
    (None: not in the copied window). ``initial`` is pushed first (the CFA, for ``DW_CFA_expression``)."""
    try:
        ops = _parse(expr)
    except Exception as err:  # noqa: BLE001 - pyelftools raises several kinds for bytes it cannot parse
        raise ExprError(f"unparsable expression: {err}") from None
    stack: list[int] = [] if initial is None else [initial]
    try:
        return _run(ops, stack, reg, read)
    except IndexError:
        raise ExprError("stack underflow") from None


def _run(
    ops: tuple[tuple[str, tuple[int, ...]], ...],
    stack: list[int],
    reg: Callable[[int], int | None],
    read: Callable[[int], int | None],
) -> int:
    for name, args in ops:
        if name.startswith("DW_OP_breg") and name[10:].isdigit():
            v = reg(int(name[10:]))
            if v is None:
                raise ExprError(f"{name}: register unknown")
            stack.append(v + args[0])
        elif name.startswith("DW_OP_reg") and name[9:].isdigit():
            v = reg(int(name[9:]))
            if v is None:
                raise ExprError(f"{name}: register unknown")
            stack.append(v)
        elif name == "DW_OP_bregx":
            v = reg(args[0])
            if v is None:
                raise ExprError("DW_OP_bregx: register unknown")
            stack.append(v + args[1])
        elif name.startswith("DW_OP_lit") and name[9:].isdigit():
            stack.append(int(name[9:]))
        elif name.startswith("DW_OP_const"):
            stack.append(args[0])
        elif name in _BINARY:
            if len(stack) < 2:
                raise ExprError(f"{name}: stack underflow")
            b = stack.pop()
            a = stack.pop()
            stack.append(_BINARY[name](a, b) & MASK64)
        elif name == "DW_OP_plus_uconst":
            if not stack:
                raise ExprError("DW_OP_plus_uconst: stack underflow")
            stack.append((stack.pop() + args[0]) & MASK64)
        elif name == "DW_OP_deref":
            if not stack:
                raise ExprError("DW_OP_deref: stack underflow")
            v = read(stack.pop() & MASK64)
            if v is None:
                raise OutsideWindow("DW_OP_deref: memory outside the copied stack")
            stack.append(v)
        elif name == "DW_OP_dup":
            stack.append(stack[-1])
        elif name == "DW_OP_drop":
            stack.pop()
        elif name == "DW_OP_swap":
            stack[-1], stack[-2] = stack[-2], stack[-1]
        elif name == "DW_OP_over":
            stack.append(stack[-2])
        elif name == "DW_OP_neg":
            stack.append(-stack.pop() & MASK64)
        elif name == "DW_OP_not":
            stack.append(~stack.pop() & MASK64)
        elif name == "DW_OP_nop":
            pass
        else:
            raise ExprError(f"{name} is not supported")
    if not stack:
        raise ExprError("empty expression")
    return stack[-1] & MASK64
