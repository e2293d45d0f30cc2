"""Stepping past a breakpoint without a single-step: the instruction under it, emulated (plain Python, no ``gdb``).

When a breakpoint's ``stop()`` returns False, GDB resumes the thread by *stepping over* the breakpoint: it runs the
original instruction alone (displaced, in a scratch pad, or in place with the breakpoint lifted) with a
``PTRACE_SINGLESTEP``, waits for that trap, fixes the registers up, and only then continues. That second stop is
half of what a hit costs (measured: 253 us per hit with GDB's step-over, 145 us when the thread is already past
the instruction; benchmarks/mech/stepless.py). GDB checks, before stepping over, whether a breakpoint is still
inserted at the thread's pc (a user may have moved it); if the pc has moved, it just continues.

So :func:`plan` decodes the instruction at a breakpoint once, when the breakpoint is placed, and returns an
:class:`Emulation` when it is one of a few simple forms whose effect is exactly known (moves, loads and stores of
8 or 4 bytes, ``cmp``/``test``/``add``/``sub``/``and``/``or``/``xor`` with their flags, ``lea``, direct ``call``
and ``jmp``, ``ret``, ``leave``, ``push``/``pop``, ``nop``, ``endbr64``): what the breakpoint's sites have in
practice (``cmp rax, -0x1000`` after glibc's ``syscall``, ``mov eax, 0xb`` before it, ``call syscall@plt``,
``ret``, ``add rsp, 8`` ...). At a hit, :meth:`Emulation.run` computes the registers and memory after the
instruction from those before it; the GDB layer writes them with ptrace and flushes GDB's register cache.
Anything else (a prefix, a segment, an 8- or 16-bit operand, an instruction not listed) gets None: GDB steps
over it as before. tests/test_emulate.py checks every form against the CPU itself (single-stepped under ptrace
from random states).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

MASK64 = (1 << 64) - 1
CF, PF, AF, ZF, SF, TF, OF = 1 << 0, 1 << 2, 1 << 4, 1 << 6, 1 << 7, 1 << 8, 1 << 11
ARITH_FLAGS = CF | PF | AF | ZF | SF | OF

GPR64 = ("rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rbp", "rsp", *(f"r{i}" for i in range(8, 16)))
#: 32-bit register names -> their 64-bit register (a write zero-extends into it)
GPR32 = {
    **{f"e{n[1:]}": n for n in ("rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rbp", "rsp")},
    **{f"r{i}d": f"r{i}" for i in range(8, 16)},
}

Read = Callable[[int, int], bytes]  # (address, size) -> exactly size bytes, or raises OSError
Writes = list[tuple[int, bytes]]


class Unsupported(Exception):
    """The instruction is not one :func:`plan` emulates."""


def _parity(value: int) -> int:
    return PF if bin(value & 0xFF).count("1") % 2 == 0 else 0


def _szp(result: int, width: int) -> int:
    flags = _parity(result)
    if result == 0:
        flags |= ZF
    if result >> (width - 1) & 1:
        flags |= SF
    return flags


def _sub_flags(a: int, b: int, width: int) -> tuple[int, int]:
    mask = (1 << width) - 1
    res = (a - b) & mask
    flags = _szp(res, width)
    if a < b:
        flags |= CF
    if ((a ^ b) & (a ^ res)) >> (width - 1) & 1:
        flags |= OF
    if (a ^ b ^ res) & 0x10:
        flags |= AF
    return res, flags


def _add_flags(a: int, b: int, width: int) -> tuple[int, int]:
    mask = (1 << width) - 1
    res = (a + b) & mask
    flags = _szp(res, width)
    if a + b > mask:
        flags |= CF
    if (~(a ^ b) & (a ^ res)) >> (width - 1) & 1:
        flags |= OF
    if (a ^ b ^ res) & 0x10:
        flags |= AF
    return res, flags


def _logic_flags(res: int, width: int) -> int:
    return _szp(res, width)  # CF = OF = 0; AF is undefined (the CPUs here clear it, like this)


@dataclass(frozen=True)
class _Mem:
    base: str | None  # 64-bit register, "rip", or None
    index: str | None
    scale: int
    disp: int

    def address(self, regs: dict[str, int], next_ip: int) -> int:
        addr = self.disp
        if self.base == "rip":
            addr += next_ip
        elif self.base is not None:
            addr += regs[self.base]
        if self.index is not None:
            addr += regs[self.index] * self.scale
        return addr & MASK64


@dataclass(frozen=True)
class _Reg:
    name: str  # the 64-bit register
    width: int  # 64 or 32


@dataclass(frozen=True)
class _Imm:
    value: int


Operand = _Reg | _Mem | _Imm


class Emulation:
    """One decoded instruction at ``address``: :meth:`run` is its effect."""

    def __init__(self, address: int, size: int, text: str, op: str, operands: tuple[Operand, ...], width: int):
        self.address = address
        self.size = size
        self.text = text  # as capstone prints it, for notes and tests
        self.op = op
        self.operands = operands
        self.width = width  # operand size in bits (64 or 32; 64 for stack operations)

    def __repr__(self) -> str:
        return f"Emulation({self.address:#x}: {self.text})"

    # ------------------------------------------------------------------------------------------- pieces
    def _get(self, o: Operand, regs: dict[str, int], read: Read, next_ip: int) -> int:
        width = self.width
        if isinstance(o, _Imm):
            return o.value & ((1 << width) - 1)
        if isinstance(o, _Reg):
            return regs[o.name] & ((1 << o.width) - 1)
        data = read(o.address(regs, next_ip), width // 8)
        if len(data) != width // 8:
            raise OSError("short read")
        return int.from_bytes(data, "little")

    def _put(self, o: Operand, value: int, regs: dict[str, int], out: dict[str, int], writes: Writes, next_ip: int):
        if isinstance(o, _Reg):
            out[o.name] = value & ((1 << o.width) - 1)  # a 32-bit write zero-extends
        elif isinstance(o, _Mem):
            writes.append(
                (o.address(regs, next_ip), (value & ((1 << self.width) - 1)).to_bytes(self.width // 8, "little"))
            )
        else:  # pragma: no cover - plan() never builds it
            raise Unsupported("store to an immediate")

    def run(self, regs: dict[str, int], read: Read) -> tuple[dict[str, int], Writes]:
        """The registers that change (``rip`` always) and the memory writes (address, bytes), in order, for the
        thread whose registers before the instruction are ``regs``. Raises OSError when memory it reads cannot be
        read (nothing is then to be changed)."""
        next_ip = self.address + self.size
        out: dict[str, int] = {"rip": next_ip}
        writes: Writes = []
        op, ops, width = self.op, self.operands, self.width
        flags_in = regs["eflags"]

        def set_flags(f: int) -> None:
            out["eflags"] = (flags_in & ~ARITH_FLAGS) | f

        if op in ("nop", "endbr64"):
            pass
        elif op == "mov":
            self._put(ops[0], self._get(ops[1], regs, read, next_ip), regs, out, writes, next_ip)
        elif op == "lea":
            src = ops[1]
            assert isinstance(src, _Mem)
            self._put(ops[0], src.address(regs, next_ip), regs, out, writes, next_ip)
        elif op in ("cmp", "sub", "add"):
            a = self._get(ops[0], regs, read, next_ip)
            b = self._get(ops[1], regs, read, next_ip)
            res, f = _add_flags(a, b, width) if op == "add" else _sub_flags(a, b, width)
            set_flags(f)
            if op != "cmp":
                self._put(ops[0], res, regs, out, writes, next_ip)
        elif op in ("test", "and", "or", "xor"):
            a = self._get(ops[0], regs, read, next_ip)
            b = self._get(ops[1], regs, read, next_ip)
            res = a | b if op == "or" else a ^ b if op == "xor" else a & b
            set_flags(_logic_flags(res, width))
            if op != "test":
                self._put(ops[0], res, regs, out, writes, next_ip)
        elif op == "jmp":
            out["rip"] = self._get(ops[0], regs, read, next_ip)
        elif op == "call":
            sp = (regs["rsp"] - 8) & MASK64
            target = self._get(ops[0], regs, read, next_ip)
            writes.append((sp, next_ip.to_bytes(8, "little")))
            out["rsp"] = sp
            out["rip"] = target
        elif op == "ret":
            out["rip"] = int.from_bytes(_read8(read, regs["rsp"]), "little")
            out["rsp"] = (regs["rsp"] + 8) & MASK64
        elif op == "leave":
            rbp = regs["rbp"]
            out["rbp"] = int.from_bytes(_read8(read, rbp), "little")
            out["rsp"] = (rbp + 8) & MASK64
        elif op == "push":
            value = self._get(ops[0], regs, read, next_ip)
            sp = (regs["rsp"] - 8) & MASK64
            writes.append((sp, value.to_bytes(8, "little")))
            out["rsp"] = sp
        elif op == "pop":
            value = int.from_bytes(_read8(read, regs["rsp"]), "little")
            out["rsp"] = (regs["rsp"] + 8) & MASK64
            dst = ops[0]
            assert isinstance(dst, _Reg)
            out[dst.name] = value  # pop rsp is not planned
        else:  # pragma: no cover - plan() only builds the ops above
            raise Unsupported(op)
        return out, writes


def _read8(read: Read, address: int) -> bytes:
    data = read(address, 8)
    if len(data) != 8:
        raise OSError("short read")
    return data


_TWO_OPERANDS = {"mov", "cmp", "sub", "add", "test", "and", "or", "xor", "lea"}
_ONE_OPERAND = {"jmp", "call", "push", "pop"}
_NO_OPERAND = {"nop", "endbr64", "ret", "leave"}

_DISASSEMBLER: list[Any] = []


def _cs() -> Any:
    if not _DISASSEMBLER:
        import capstone

        md = capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_64)
        md.detail = True
        _DISASSEMBLER.append(md)
    return _DISASSEMBLER[0]


def plan(code: bytes, address: int) -> Emulation | None:
    """The emulation of the instruction at the start of ``code`` (which is at ``address``), or None."""
    try:
        return _plan(code, address)
    except Unsupported:
        return None


def _plan(code: bytes, address: int) -> Emulation:
    import capstone.x86 as x86

    md = _cs()
    insn = next(md.disasm(code, address, 1), None)
    if insn is None:
        raise Unsupported("not an instruction")
    op = "mov" if insn.mnemonic == "movabs" else insn.mnemonic  # movabs: mov with a 64-bit immediate or address
    if any(insn.prefix):  # lock, rep, segment, operand or address size
        raise Unsupported(f"prefix on {op}")
    operands: list[Operand] = []
    widths: set[int] = set()
    for o in insn.operands:
        if o.type == x86.X86_OP_REG:
            name = md.reg_name(o.reg)
            if name in GPR64:
                operands.append(_Reg(name, 64))
            elif name in GPR32:
                operands.append(_Reg(GPR32[name], 32))
            else:
                raise Unsupported(f"register {name}")
            widths.add(o.size * 8)
        elif o.type == x86.X86_OP_IMM:
            operands.append(_Imm(o.imm))
        elif o.type == x86.X86_OP_MEM:
            m = o.mem
            if m.segment != 0:
                raise Unsupported("segment")
            base = md.reg_name(m.base) if m.base else None
            index = md.reg_name(m.index) if m.index else None
            if base not in (*GPR64, "rip", None) or index not in (*GPR64, None) or index == "rsp":
                raise Unsupported("address registers")
            operands.append(_Mem(base, index, m.scale, m.disp))
            if op != "lea" and op not in _NO_OPERAND:
                widths.add(o.size * 8)
        else:
            raise Unsupported("operand type")
    ops = tuple(operands)
    if op in _NO_OPERAND:
        if op in ("ret", "leave") and ops:
            raise Unsupported(f"{op} with operands")
        return Emulation(address, insn.size, f"{op} {insn.op_str}".strip(), op, (), 64)
    if op in _ONE_OPERAND:
        if len(ops) != 1:
            raise Unsupported(op)
        (dst,) = ops
        if op in ("jmp", "call") and not isinstance(dst, _Imm):
            raise Unsupported(f"indirect {op}")
        if op == "push" and not (isinstance(dst, _Reg) and dst.width == 64):
            raise Unsupported("push of a non-register")
        if op == "pop" and not (isinstance(dst, _Reg) and dst.width == 64 and dst.name != "rsp"):
            raise Unsupported("pop to this operand")
        return Emulation(address, insn.size, f"{op} {insn.op_str}", op, ops, 64)
    if op not in _TWO_OPERANDS or len(ops) != 2:
        raise Unsupported(op)
    dst, src = ops
    if isinstance(dst, _Imm):
        raise Unsupported("immediate destination")
    if widths - {64, 32} or len(widths) != 1:
        raise Unsupported(f"operand size {sorted(widths)}")
    (width,) = widths
    if op == "lea":
        if not (isinstance(dst, _Reg) and isinstance(src, _Mem)):
            raise Unsupported("lea form")
    elif isinstance(dst, _Mem) and isinstance(src, _Mem):  # pragma: no cover - not encodable
        raise Unsupported("two memory operands")
    if isinstance(dst, _Reg) and dst.name == "rsp" and dst.width == 32:
        raise Unsupported("32-bit write to esp")
    return Emulation(address, insn.size, f"{op} {insn.op_str}", op, ops, width)
