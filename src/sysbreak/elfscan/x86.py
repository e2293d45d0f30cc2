"""x86-64 decoding for site discovery: a lazily created capstone handle, and the little data-flow analysis that
recovers a syscall number from the instructions before a ``syscall`` (or before a call to ``syscall()``).

capstone is imported only when a module really has to be decoded (a cache miss): its import costs tens of
milliseconds that a warm look-up must not pay.
"""

from __future__ import annotations

import ctypes
import importlib.util
import os
import re
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

_CS_ARCH_X86 = 3
_CS_MODE_64 = 1 << 3
_CS_OPT_SYNTAX = 1
_CS_OPT_SYNTAX_INTEL = 1
# struct cs_insn of capstone 5: id, address, size, bytes[24], mnemonic[32], op_str[160], detail -- 248 bytes.
_CS_INSN_SIZE = 248
_MNEMONIC_AT = 42
_OP_STR_AT = 74
# Per instruction only the address, the size and the first letter of the mnemonic are unpacked up front: the
# full strings are read from the raw records only for the few instructions that are looked at closely.
_ROW = struct.Struct("<8xQH24xB205x")
_SELF_TEST = (bytes.fromhex("b8090000000f05"), 0x1000, [(0x1000, 5, "mov", "eax, 9"), (0x1005, 2, "syscall", "")])

Row = tuple[int, int, int]  # address, size, first character of the mnemonic (as an int)


def cstr(raw: bytes) -> str:
    """A C string field as text (cut at its NUL)."""
    end = raw.find(0)
    return (raw if end < 0 else raw[:end]).decode("ascii", "replace")


class Window:
    """The instructions decoded from one stretch of code: ``rows`` of ``(address, size, first letter)`` and the
    mnemonic and operands (Intel syntax, as capstone prints them) of each, read on demand."""

    __slots__ = ("rows", "_raw", "_text")

    def __init__(self, rows: list[Row], raw: bytes | None, text: list[tuple[str, str]] | None) -> None:
        self.rows = rows
        self._raw = raw
        self._text = text

    def mnemonic(self, k: int) -> str:
        if self._text is not None:
            return self._text[k][0]
        assert self._raw is not None
        at = k * _CS_INSN_SIZE + _MNEMONIC_AT
        return cstr(self._raw[at : at + 32])

    def op_str(self, k: int) -> str:
        if self._text is not None:
            return self._text[k][1]
        assert self._raw is not None
        at = k * _CS_INSN_SIZE + _OP_STR_AT
        return cstr(self._raw[at : at + 160])

    def text(self, k: int) -> tuple[str, str]:
        return self.mnemonic(k), self.op_str(k)

    def is_control_flow(self, k: int) -> bool:
        """True when instruction ``k`` ends a basic block (see :func:`is_control_flow`)."""
        first = self.rows[k][2]
        if first == 0x6A:  # "j..."
            return True
        if first not in _CF_FIRST:
            return False
        return is_control_flow(self.mnemonic(k))


class _DirectCapstone:
    """capstone 5's C library called through ctypes, skipping the Python binding: importing the binding costs
    ~50 ms, and reading each instruction's attributes through it ~1.5 us; here a whole window is decoded by one
    cs_disasm call and its cs_insn array unpacked by one struct.iter_unpack."""

    def __init__(self) -> None:
        spec = importlib.util.find_spec("capstone")
        if spec is None or not spec.origin:
            raise OSError("capstone is not installed")
        lib = ctypes.CDLL(os.path.join(os.path.dirname(spec.origin), "lib", "libcapstone.so"))
        major = ctypes.c_int()
        minor = ctypes.c_int()
        lib.cs_version(ctypes.byref(major), ctypes.byref(minor))
        if major.value != 5:
            raise OSError(f"capstone {major.value}.{minor.value}: the direct path knows only capstone 5")
        self._handle = ctypes.c_size_t()
        lib.cs_open.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.POINTER(ctypes.c_size_t)]
        lib.cs_option.argtypes = [ctypes.c_size_t, ctypes.c_int, ctypes.c_size_t]
        lib.cs_disasm.argtypes = [
            ctypes.c_size_t, ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint64, ctypes.c_size_t,
            ctypes.POINTER(ctypes.c_void_p),
        ]  # fmt: skip
        lib.cs_disasm.restype = ctypes.c_size_t
        lib.cs_free.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
        if lib.cs_open(_CS_ARCH_X86, _CS_MODE_64, ctypes.byref(self._handle)) != 0:
            raise OSError("cs_open failed")
        lib.cs_option(self._handle.value, _CS_OPT_SYNTAX, _CS_OPT_SYNTAX_INTEL)
        self._lib = lib
        code, address, expected = _SELF_TEST
        rows, raw = self.disasm(code, address)
        w = Window(rows, raw, None)
        got = [(a, n, w.mnemonic(k), w.op_str(k)) for k, (a, n, _c) in enumerate(rows)]
        if got != expected:
            raise OSError(f"capstone's cs_insn layout is not the expected one ({got!r})")

    def disasm(self, code: bytes, address: int) -> tuple[list[Row], bytes]:
        out = ctypes.c_void_p()
        count = self._lib.cs_disasm(self._handle.value, code, len(code), address, 0, ctypes.byref(out))
        if not count:
            return [], b""
        try:
            raw = ctypes.string_at(out.value, count * _CS_INSN_SIZE)  # type: ignore[arg-type]
        finally:
            self._lib.cs_free(out, count)
        return list(_ROW.iter_unpack(raw)), raw


class _BindingCapstone:
    """The capstone Python binding: the fallback when the direct path does not fit the installed capstone."""

    def __init__(self) -> None:
        import capstone

        md = capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_64)
        md.syntax = capstone.CS_OPT_SYNTAX_INTEL
        self._md = md

    def disasm(self, code: bytes, address: int) -> tuple[list[Row], list[tuple[str, str]]]:
        rows: list[Row] = []
        text: list[tuple[str, str]] = []
        for a, n, m, o in self._md.disasm_lite(code, address):
            rows.append((a, n, ord(m[0])))
            text.append((m, o))
        return rows, text


_engine: _DirectCapstone | _BindingCapstone | None = None


def engine() -> _DirectCapstone | _BindingCapstone:
    """The decoder, created on first use (only a scan that has candidates to check pays for loading it)."""
    global _engine
    if _engine is None:
        try:
            _engine = _DirectCapstone()
        except (OSError, AttributeError, ValueError):
            _engine = _BindingCapstone()
    return _engine


def decode(code: bytes, address: int) -> Window:
    """Decode ``code`` (placed at ``address``) linearly, like ``objdump -d``: where capstone meets bytes that are
    not an instruction it stops; decoding then resumes one byte further on (objdump prints ``(bad)`` there)."""
    eng = engine()
    rows: list[Row] = []
    raws: list[Any] = []
    pos = 0
    end = len(code)
    while pos < end:
        got_rows, got_raw = eng.disasm(code[pos:] if pos else code, address + pos)
        rows.extend(got_rows)
        raws.append(got_raw)
        nxt = got_rows[-1][0] - address + got_rows[-1][1] if got_rows else pos
        if nxt >= end - 15:
            break  # the end, or an instruction cut short by the end of the window
        pos = nxt + 1
    if isinstance(eng, _DirectCapstone):
        return Window(rows, raws[0] if len(raws) == 1 else b"".join(raws), None)
    return Window(rows, None, [t for part in raws for t in part])


# The general-purpose registers: every name capstone prints -> (the 64-bit register, width in bits).
_GPR: dict[str, tuple[str, int]] = {}
for _r in ("ax", "bx", "cx", "dx", "si", "di", "bp", "sp"):
    _GPR["r" + _r] = ("r" + _r, 64)
    _GPR["e" + _r] = ("r" + _r, 32)
    _GPR[_r] = ("r" + _r, 16)
for _r8, _r64 in (
    ("al", "rax"),
    ("ah", "rax"),
    ("bl", "rbx"),
    ("bh", "rbx"),
    ("cl", "rcx"),
    ("ch", "rcx"),
    ("dl", "rdx"),
    ("dh", "rdx"),
    ("sil", "rsi"),
    ("dil", "rdi"),
    ("bpl", "rbp"),
    ("spl", "rsp"),
):
    _GPR[_r8] = (_r64, 8)  # fmt: skip
for _n in range(8, 16):
    _GPR[f"r{_n}"] = (f"r{_n}", 64)
    _GPR[f"r{_n}d"] = (f"r{_n}", 32)
    _GPR[f"r{_n}w"] = (f"r{_n}", 16)
    _GPR[f"r{_n}b"] = (f"r{_n}", 8)

RAX = "rax"
RDI = "rdi"
KERNEL_ARGS = ("rdi", "rsi", "rdx", "r10", "r8", "r9")  # the syscall arguments, in order

_STRING_OPS = frozenset(
    {op + w for op in ("stos", "movs", "scas", "cmps", "lods", "ins", "outs") for w in ("b", "w", "d", "q")}
)
# Instructions that may write a register without naming it as their first operand, by register.
_ANY_REGISTER = frozenset({"int", "int3", "into", "sysenter", "vmcall", "enclu", "encls", "ud2"})
_IMPLICIT: dict[str, frozenset[str]] = {
    "rax": frozenset(
        {
            "cbw", "cwde", "cdqe", "mul", "div", "idiv", "cmpxchg", "cmpxchg8b", "cmpxchg16b", "lodsb", "lodsw",
            "lodsd", "lodsq", "rdtsc", "rdtscp", "rdpmc", "rdmsr", "cpuid", "xgetbv", "syscall", "lahf", "xlatb",
            "in", "rdpkru", "rdrand", "rdseed",
        }
    ),
    "rdx": frozenset(
        {"cwd", "cdq", "cqo", "mul", "div", "idiv", "cmpxchg8b", "cmpxchg16b", "rdtsc", "rdtscp", "rdpmc", "rdmsr",
         "cpuid", "xgetbv", "rdpkru"}
    ),
    "rcx": frozenset({"syscall", "cpuid", "rdtscp", "loop", "loope", "loopne"}),
    "rbx": frozenset({"cpuid"}),
    "r11": frozenset({"syscall"}),
    "rbp": frozenset({"leave", "enter"}),
    "rsp": frozenset({"push", "pop", "pushf", "pushfq", "popf", "popfq", "leave", "enter", "call", "ret"}),
}  # fmt: skip
# Instructions whose first operand is only read.
_READS_FIRST = frozenset({"cmp", "test", "bt", "push", "ptest", "out", "nop", "prefetcht0", "prefetchw"})
_EXCHANGES = frozenset({"xchg", "xadd", "cmpxchg"})
_ZEROING = frozenset({"xor", "sub"})
_PREFIXES = frozenset({"rep", "repe", "repne", "repz", "repnz", "lock", "bnd", "notrack", "data16", "addr32", "rex64"})
_BRANCH_OTHER = frozenset({"call", "ret", "retf", "iret", "iretq", "loop", "loope", "loopne", "ud2", "hlt", "ljmp"})


def base_mnemonic(mnemonic: str) -> str:
    """``"bnd jmp"`` -> ``"jmp"``, ``"rep stosq"`` -> ``"stosq"``."""
    if " " not in mnemonic:
        return mnemonic
    parts = [p for p in mnemonic.split() if p not in _PREFIXES]
    return parts[-1] if parts else mnemonic.split()[-1]


def is_control_flow(mnemonic: str) -> bool:
    """True for an instruction that ends a basic block: any jump, call, return, loop, trap."""
    m = base_mnemonic(mnemonic)
    return m[0] == "j" or m in _BRANCH_OTHER


# First letters of the control-flow mnemonics (prefixed ones start with b(nd), n(otrack), r(ep)).
_CF_FIRST = frozenset(b"jcrlubhni")


def direct_target(op_str: str) -> int | None:
    """The target of a direct branch (``jmp 0x1234``), or None for indirect ones."""
    if op_str.startswith("0x"):
        try:
            return int(op_str, 16) & 0xFFFFFFFFFFFFFFFF
        except ValueError:
            return None
    return None


UNKNOWN = "unknown"
FROM_RDI = "rdi"


@dataclass(frozen=True)
class Trace:
    """Where the value a register holds at the end of a block (the instruction after it: the site) comes from.

    ``const`` is the constant it was loaded with, else None. Otherwise, when ``at`` is not None, the final value is
    in register ``reg`` from instruction ``at`` of the block on (0: from the block's first instruction, so the value
    came from before the block; ``k``: right after the write at ``k - 1`` that this analysis cannot evaluate); None
    when no instruction of the block holds it in a register (it comes through memory, or it is written by the last
    instruction of the block). ``from_rdi`` marks a copy of rdi into rax whose source reaches the block start (the
    generic wrapper's ``mov rax, rdi``).
    """

    const: int | None
    reg: str | None
    at: int | None
    from_rdi: bool = False


def trace(block: Sequence[tuple[str, str]], register: str) -> Trace:
    """Walk ``block`` (``(mnemonic, operands)`` of the instructions of one basic block before the site, in address
    order) backwards from its end to where the value of ``register`` comes from (see :class:`Trace`).

    Constants: ``mov eax, 9``; ``xor eax, eax`` / ``sub edi, edi`` (0); a ``push imm`` popped into the register
    (``push 3; pop rdi``), with balanced pushes and pops between; register copies of either (``mov r9d, 0x14; ...;
    mov eax, r9d``; ``push rbx; pop rax``). An instruction it cannot prove harmless counts as a write, so a wrong
    constant is never returned.
    """
    reg = register
    mask32 = False
    depth: int | None = None  # not None: the value is the stack slot this many pushes below the top
    copied_from_rdi = False
    n = len(block)

    def written(i: int) -> Trace:
        # instruction i wrote the tracked register with something not followed: final from i + 1 on
        return Trace(None, reg, i + 1 if i + 1 < n else None)

    for i in range(n - 1, -1, -1):
        mnemonic, op_str = block[i]
        m = base_mnemonic(mnemonic)
        ops = op_str.split(", ") if op_str else []
        if depth is not None:
            # following a value through the stack, back from the pop that loaded it
            if m == "push" and len(ops) == 1:
                if depth > 0:
                    depth -= 1
                    continue
                pushed = _immediate(ops[0])
                if pushed is not None:
                    pushed &= (1 << 64) - 1  # push imm8/imm32 sign-extends to 64 bits
                    if mask32:
                        return Trace(pushed & 0xFFFFFFFF, None, None)
                    return Trace(pushed, None, None) if pushed < 1 << 32 else Trace(None, None, None)
                pushed_reg = _GPR.get(ops[0])
                if pushed_reg is None or pushed_reg[1] != 64 or pushed_reg[0] == "rsp":
                    return Trace(None, None, None)
                reg, depth = pushed_reg[0], None
                continue
            if m == "pop" and len(ops) == 1:
                depth += 1
                continue
            if _writes_stack(m, ops):
                return Trace(None, None, None)
            continue
        if m in _ANY_REGISTER or m in _IMPLICIT.get(reg, ()):
            return written(i)
        if m == "imul" and reg in ("rax", "rdx") and "," not in op_str:
            return written(i)
        if _is_string_op(m, op_str) and (reg in ("rdi", "rsi", "rcx") or (reg == "rax" and m.startswith("lods"))):
            return written(i)
        if "rep" in mnemonic and reg == "rcx":
            return written(i)
        if not ops:
            continue
        if m in _EXCHANGES:
            if any(_GPR.get(o, ("", 0))[0] == reg for o in ops):
                return written(i)
            continue
        first = _GPR.get(ops[0])
        if first is None or first[0] != reg:
            continue
        if m in _READS_FIRST:
            continue
        if m == "pop" and len(ops) == 1 and first[1] == 64:
            depth = 0
            continue
        if first[1] < 32 or len(ops) != 2:
            return written(i)  # a partial write (mov al, 1): the rest of the register is unknown
        src = ops[1]
        if m in ("mov", "movabs"):
            value = _immediate(src)
            if value is not None:
                if first[1] == 32 or mask32:
                    return Trace(value & 0xFFFFFFFF, None, None)
                return Trace(value, None, None) if 0 <= value < 1 << 32 else written(i)
            source = _GPR.get(src)
            if source is None or source[1] < 32 or source[0] in ("rsp", "rip"):
                return written(i)
            if register == "rax" and reg == "rax" and source[0] == "rdi":
                copied_from_rdi = True
            reg = source[0]  # a copy: go on looking for what was loaded into the source register
            mask32 = mask32 or first[1] == 32 or source[1] == 32
            continue
        if m in _ZEROING and src == ops[0]:
            return Trace(0, None, None)
        return written(i)
    if depth is not None:
        return Trace(None, None, None)
    return Trace(None, reg, 0 if n else None, copied_from_rdi and reg == "rdi")


def last_write(block: Sequence[tuple[str, str]], register: str) -> int | str:
    """The constant ``register`` (:data:`RAX` or :data:`RDI`) holds at the end of ``block`` (see :func:`trace`);
    :data:`FROM_RDI` for rax copied from rdi at the block start (``mov rax, rdi``: the generic wrapper's pattern);
    :data:`UNKNOWN` for anything else, and when the value comes from an earlier block."""
    t = trace(block, register)
    if t.const is not None:
        return t.const
    return FROM_RDI if t.from_rdi else UNKNOWN


def stack_delta(block: Sequence[tuple[str, str]], start: int) -> int | None:
    """rsp at the end of ``block`` minus rsp at its instruction ``start``: pushes, pops, ``sub``/``add rsp, imm``
    between them; None when something else changes rsp."""
    delta = 0
    for mnemonic, op_str in block[start:]:
        m = base_mnemonic(mnemonic)
        ops = op_str.split(", ") if op_str else []
        if m in ("push", "pushfq", "pushf"):
            delta -= 8
        elif m in ("pop", "popfq", "popf"):
            delta += 8
        elif m in _RSP_OTHER:
            return None
        elif ops and _GPR.get(ops[0], ("", 0))[0] == "rsp" and m not in _READS_FIRST:
            value = _immediate(ops[1]) if len(ops) == 2 else None
            if m == "sub" and value is not None:
                delta -= value
            elif m == "add" and value is not None:
                delta += value
            else:
                return None
    return delta


def locate_at(block: Sequence[tuple[str, str]], register: str, point: int, *, low32: bool = False) -> str | None:
    """Where the value ``register`` holds at the end of ``block`` is at instruction ``point``: a register name, or
    ``"*sp+K"`` for the 8 bytes at ``$rsp + K`` (``mov r9, qword ptr [rsp + 8]`` with rsp and the stack unchanged
    in between); None when it is computed, a constant, or loaded otherwise after ``point``. With ``low32`` (a
    syscall number: the kernel reads 32 bits) a 32-bit load ``mov eax, dword ptr [rsp + 8]`` counts too."""
    reg = register
    for i in range(len(block) - 1, point - 1, -1):
        mnemonic, op_str = block[i]
        m = base_mnemonic(mnemonic)
        ops = op_str.split(", ") if op_str else []
        if (
            m in _ANY_REGISTER
            or m in _IMPLICIT.get(reg, ())
            or (_is_string_op(m, op_str) and reg in ("rdi", "rsi", "rcx", "rax"))
        ):
            return None
        if not ops:
            continue
        if m in _EXCHANGES:
            if any(_GPR.get(o, ("", 0))[0] == reg for o in ops):
                return None
            continue
        first = _GPR.get(ops[0])
        if first is None or first[0] != reg or m in _READS_FIRST:
            continue
        if m != "mov" or len(ops) != 2 or not (first[1] == 64 or (low32 and first[1] == 32)):
            return None
        source = _GPR.get(ops[1])
        if source is not None and source[1] == 64 and source[0] not in ("rsp", "rip"):
            reg = source[0]
            continue
        slot = (_RSP_SLOT if first[1] == 64 else _RSP_SLOT32).fullmatch(ops[1])
        if slot is None or stack_delta(block[: i + 1], point) != 0:
            return None
        if any(_writes_stack(base_mnemonic(mn), o.split(", ") if o else []) for mn, o in block[point:i]):
            return None
        offset = int(slot.group(1), 0) if slot.group(1) else 0
        return f"*sp+{offset}" if offset else "*sp"
    return reg


_RSP_SLOT = re.compile(r"qword ptr \[rsp(?: \+ (0x[0-9a-f]+|\d+))?\]")
_RSP_SLOT32 = re.compile(r"dword ptr \[rsp(?: \+ (0x[0-9a-f]+|\d+))?\]")
_RSP_OTHER = frozenset({"leave", "enter", "call", "ret", "iretq"})


def _writes_stack(mnemonic: str, ops: list[str]) -> bool:
    """True for an instruction that may change rsp or write memory through it (conservatively: any write to a
    memory operand, since another register may point into the stack)."""
    if mnemonic in _RSP_OTHER or mnemonic in ("push", "pop", "pushfq", "popfq", "pushf", "popf"):
        return True
    if not ops or mnemonic in _READS_FIRST:
        return False
    first = ops[0]
    return "ptr [" in first or _GPR.get(first, ("", 0))[0] == "rsp" or mnemonic in _EXCHANGES


def may_write(mnemonic: str, op_str: str, register: str) -> bool:
    """Whether one instruction may write ``register`` (a 64-bit name: ``"rdi"``, ``"r10"``...). Conservative, like
    :func:`last_write`: True unless the instruction is known to leave the register alone."""
    m = base_mnemonic(mnemonic)
    if m in _ANY_REGISTER or m in _IMPLICIT.get(register, ()):
        return True
    if m == "imul" and register in ("rax", "rdx") and "," not in op_str:
        return True
    if _is_string_op(m, op_str) and (register in ("rdi", "rsi", "rcx") or (register == "rax" and m.startswith("lods"))):
        return True
    if "rep" in mnemonic and register == "rcx":
        return True
    if not op_str:
        return False
    ops = op_str.split(", ")
    if m in _EXCHANGES:
        return any(_GPR.get(o, ("", 0))[0] == register for o in ops)
    first = _GPR.get(ops[0])
    return first is not None and first[0] == register and m not in _READS_FIRST


def may_write_any(mnemonic: str, op_str: str, registers: Sequence[str]) -> bool:
    """``any(may_write(mnemonic, op_str, r) for r in registers)``, parsing the instruction once."""
    m = base_mnemonic(mnemonic)
    if m in _ANY_REGISTER:
        return True
    for register in registers:
        if m in _IMPLICIT.get(register, ()):
            return True
    if m == "imul" and "," not in op_str and ("rax" in registers or "rdx" in registers):
        return True
    if _is_string_op(m, op_str) and any(
        r in ("rdi", "rsi", "rcx") or (r == "rax" and m.startswith("lods")) for r in registers
    ):
        return True
    if "rep" in mnemonic and "rcx" in registers:
        return True
    if not op_str:
        return False
    ops = op_str.split(", ")
    if m in _EXCHANGES:
        return any(_GPR.get(o, ("", 0))[0] in registers for o in ops)
    first = _GPR.get(ops[0])
    return first is not None and first[0] in registers and m not in _READS_FIRST


def _is_string_op(mnemonic: str, op_str: str) -> bool:
    """movsb/stosq/... (movsd and cmpsd are also SSE instructions: those name xmm registers)."""
    return mnemonic in _STRING_OPS and "xmm" not in op_str


def _immediate(text: str) -> int | None:
    if not text or not (text[0].isdigit() or text[0] == "-"):
        return None
    try:
        return int(text, 0)
    except ValueError:
        return None
