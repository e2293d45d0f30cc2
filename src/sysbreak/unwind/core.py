"""The offline unwinder: registers + a copy of the stack + the module map -> frames as GDB's ``bt`` shows them."""

from __future__ import annotations

import bisect
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sysbreak.unwind.cfi import (
    CFA_EXPR,
    EXPRESSION,
    OFFSET,
    REGISTER,
    SAME_VALUE,
    UNDEFINED,
    VAL_EXPRESSION,
    VAL_OFFSET,
    Fde,
)
from sysbreak.unwind.expr import ExprError, OutsideWindow, evaluate
from sysbreak.unwind.modules import ModuleCache, ModuleInfo

if TYPE_CHECKING:
    from sysbreak.capture.schema import Frame

MASK64 = (1 << 64) - 1
# DWARF register numbers of x86-64 (System V psABI); 16 is the return address column
REGS = {
    "rax": 0, "rdx": 1, "rcx": 2, "rbx": 3, "rsi": 4, "rdi": 5, "rbp": 6, "rsp": 7,
    "r8": 8, "r9": 9, "r10": 10, "r11": 11, "r12": 12, "r13": 13, "r14": 14, "r15": 15, "rip": 16,
}  # fmt: skip
RSP, RBP, RIP = 7, 6, 16
CALLEE_SAVED = ("rip", "rsp", "rbp", "rbx", "r12", "r13", "r14", "r15")
_MAX_PROLOGUE_SCAN = 16384
_PUSHABLE = {"rbx": 3, "rbp": 6, "r12": 12, "r13": 13, "r14": 14, "r15": 15}


def _analyze_prologue(code: bytes, start: int, stop: int) -> tuple[bool, int, dict[int, int]] | None:
    """(rbp-based frame?, bytes below the return address, {register: CFA - address of its save}) at ``stop``,
    from the instructions in ``[start, stop)``; None when rsp is changed in a way that is not followed."""
    import capstone

    md = capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_64)
    depth = 0
    saved: dict[int, int] = {}
    prev: tuple[str, str] | None = None
    branched = False
    end = start
    for insn in md.disasm(code, start):
        end = insn.address + insn.size
        mn, ops = insn.mnemonic, insn.op_str
        if mn == "mov" and ops == "rbp, rsp" and prev == ("push", "rbp") and depth == 8:
            return True, 0, {RBP: 16}
        if mn == "push" or (mn == "sub" and ops.startswith("rsp, ")):
            if branched:
                return None  # a stack adjustment after a branch: some paths may not have made it
            if mn == "push":
                depth += 8
                reg = _PUSHABLE.get(ops)
                if reg is not None and reg not in saved:
                    saved[reg] = depth + 8
            else:
                try:
                    depth += int(ops[5:], 0)
                except ValueError:
                    return None
        elif mn == "pop" or ops.startswith("rsp") or mn in ("leave", "enter", "pushfq", "popfq"):
            return None  # an epilogue or another write to rsp before the pc: not followed
        elif mn.startswith(("j", "ret", "loop")):
            branched = True
        prev = (mn, ops)
    if end != stop:
        return None  # the bytes did not decode up to the pc: not code we understand
    return False, depth, saved


@dataclass(frozen=True)
class MapEntry:
    """One line of ``/proc/PID/maps``."""

    start: int
    end: int
    perms: str
    offset: int
    path: str
    inode: int | None = None  # when known: a file replaced since (another inode at the path) is not read

    @property
    def executable(self) -> bool:
        return "x" in self.perms


def parse_maps(text: str) -> list[MapEntry]:
    """The lines of a ``/proc/PID/maps`` text (as :mod:`sysbreak.maps` parses them)."""
    from sysbreak import maps

    return [
        MapEntry(v.start, v.end, v.perms, v.offset or 0, v.path, v.inode or None)
        for v in maps.parse_maps(text, source="maps").vmas
    ]


@dataclass(frozen=True)
class UnwoundFrame:
    """One frame, innermost first; the fields of the event log's frame plus how it was found.

    ``inline`` marks an inlined call that GDB shows as its own frame at the caller's pc; ``how`` is ``regs`` for
    frame 0, ``cfi`` (CFI rules), ``fp`` (no CFI: the rule read from the function's prologue) or ``tailcall``
    (a function that jumped to its callee, found from DWARF call sites) for callers. Callers are symbolised at
    the return address - 1 (as GDB does), signal trampolines and the frames they interrupted at their pc.
    """

    pc: int
    module: str | None
    offset: int | None
    function: str | None
    file: str | None = None
    line: int | None = None
    inline: bool = False
    how: str = "cfi"

    def to_frame(self) -> Frame:
        """The capture schema's :class:`~sysbreak.capture.schema.Frame`."""
        from sysbreak.capture.schema import Frame

        return Frame(self.pc, self.module, self.offset, self.function, self.file, self.line)

    def record(self) -> dict[str, Any]:
        """The event log's frame object."""
        return {
            "pc": self.pc,
            "module": self.module,
            "offset": self.offset,
            "function": self.function,
            "file": self.file,
            "line": self.line,
        }


@dataclass
class Physical:
    """A real (non-inline) frame found by the unwind, before symbolisation."""

    pc: int
    lookup: int  # pc for frame 0 and after a signal frame, else pc - 1
    cfa: int | None
    how: str
    module: ModuleInfo | None
    path: str | None
    bias: int | None


@dataclass
class Result:
    """An unwind: the frames (inlined calls included, as GDB shows them), the real frames behind them, and why
    the unwind ended (``stop``):

    ``main`` / ``entry`` / ``outermost``: where GDB's ``bt`` ends too (after ``main``; at the program's entry
    point; a frame whose CFI marks the return address undefined, e.g. ``clone3``, ``_start``);
    ``window``: the caller's registers lie above the copied stack (copy more to see more);
    ``no-module`` / ``not-code``: the pc is not in a mapped file (JIT code) or not in executable memory;
    ``no-cfi``: no CFI and no prologue that tells the rule; ``cfi-unusable``: a rule needs a register that was
    not copied or an expression that is not supported; ``bad-return``: the return address found is not in
    executable memory; ``inner`` / ``identical``: the stack did not progress (GDB's "corrupt stack?");
    ``depth``: ``max_depth`` frames.
    """

    frames: list[UnwoundFrame]
    physical: list[Physical]
    stop: str

    def records(self, *, merge_inline: bool = True) -> list[dict[str, Any]]:
        """The event log's ``frames`` (innermost first), same-named inline duplicates merged as it specifies."""
        frames = merge_inline_duplicates(self.frames) if merge_inline else self.frames
        return [f.record() for f in frames]


def merge_inline_duplicates(frames: list[UnwoundFrame]) -> list[UnwoundFrame]:
    """The event log's rule: an inlined call and the function it was inlined into that are named alike at one pc
    are one frame (the outer is dropped); recursion (equal frames that are not inline) is kept."""
    out: list[UnwoundFrame] = []
    for f in frames:
        prev = out[-1] if out else None
        if prev is not None and prev.inline and (prev.pc, prev.function) == (f.pc, f.function):
            continue
        out.append(f)
    return out


class Unwinder:
    """Unwinds captured stacks of one process offline.

    ``maps``: the process's mappings (``/proc/PID/maps`` text or :class:`MapEntry` rows), replaceable with
    :meth:`set_maps` when libraries come and go. ``exe``: the main program's path (for GDB's stop after ``main``
    and at the entry point; guessed from the mappings when not given). ``modules``: a shared
    :class:`ModuleCache` (one per process that unwinds, so modules are read once).
    """

    def __init__(
        self,
        maps: str | Iterable[MapEntry] = (),
        *,
        exe: str | None = None,
        modules: ModuleCache | None = None,
        max_depth: int = 256,
        past_main: bool = False,
    ) -> None:
        self.modules = modules if modules is not None else ModuleCache()
        self.max_depth = max_depth
        self.past_main = past_main
        self.exe = exe
        self._sym: dict[tuple[str, int, bool], tuple[tuple[str | None, str | None, int | None, bool], ...]] = {}
        self._prologues: dict[tuple[str, int], tuple[bool, int, dict[int, int]] | None] = {}
        self._tail_memo: dict[tuple[int, int], tuple[int, ...]] = {}
        self.set_maps(maps)

    # -- the module map ---------------------------------------------------------------------------------------------

    def set_maps(self, maps: str | Iterable[MapEntry]) -> None:
        rows = parse_maps(maps) if isinstance(maps, str) else list(maps)
        rows.sort(key=lambda m: m.start)
        self._maps = rows
        self._starts = [m.start for m in rows]
        self._resolved: dict[int, tuple[ModuleInfo | None, int | None]] = {}
        self._sites: dict[int, tuple[Any, ...]] = {}
        self._tail_memo = {}  # keyed by absolute addresses: only valid for one set of mappings

    def _mapping(self, addr: int) -> MapEntry | None:
        i = bisect.bisect_right(self._starts, addr) - 1
        if i >= 0 and addr < self._maps[i].end:
            return self._maps[i]
        return None

    def _module(self, m: MapEntry) -> tuple[ModuleInfo | None, int | None]:
        hit = self._resolved.get(m.start)
        if hit is not None:
            return hit
        info = bias = None
        path = m.path
        # a deleted file's path now names another file, or none; so may a path whose inode changed: reading it
        # would give wrong frames, so the pc stays module + offset
        if path.startswith("/") and not path.endswith(" (deleted)") and self._same_file(path, m.inode):
            info = self.modules.get(path)
            if info is not None:
                bias = info.bias_for(m.start, m.offset)
                if bias is None:
                    info = None
        self._resolved[m.start] = (info, bias)
        return info, bias

    @staticmethod
    def _same_file(path: str, inode: int | None) -> bool:
        if not inode:
            return True
        try:
            return os.stat(path).st_ino == inode
        except OSError:
            return False

    def _is_exe(self, m: MapEntry, info: ModuleInfo) -> bool:
        if self.exe is not None:
            return m.path == self.exe or info.path == self.exe
        return info.interp or info.e_type == "ET_EXEC"

    def _main_of(self, info: ModuleInfo) -> int | None:
        return info.symbols.main

    def code_at(self, addr: int) -> bool:
        """Whether ``addr`` lies in an executable mapping."""
        m = self._mapping(addr)
        return m is not None and m.executable

    # -- unwinding --------------------------------------------------------------------------------------------------

    def unwind(
        self, regs: Mapping[str, int | None], stack: bytes, stack_start: int, *, symbolize: bool = True
    ) -> Result:
        """Unwind from ``regs`` (``rip``, ``rsp`` and whichever of ``rbp rbx r12-r15`` were copied) with ``stack``
        (bytes copied from ``stack_start``, normally ``rsp``, up to the copied window's end)."""
        state: dict[int, int | None] = {REGS[k]: (int(v) & MASK64 if v is not None else None) for k, v in regs.items()
                                         if k in REGS}  # fmt: skip
        end = stack_start + len(stack)

        def read(addr: int) -> int | None:
            if stack_start <= addr and addr + 8 <= end:
                return int.from_bytes(stack[addr - stack_start : addr - stack_start + 8], "little")
            return None

        physical: list[Physical] = []
        stop = "depth"
        lookup_minus = 0  # 1 for callers (the pc is a return address), 0 for frame 0 and after a signal frame
        prev_cfa: int | None = None
        prev_func: int | None = None
        next_how = "regs"
        sites = self._sites
        while len(physical) < self.max_depth:
            pc = state.get(RIP)
            if pc is None:
                stop = "no-pc"
                break
            lookup = pc - lookup_minus
            site = sites.get(lookup)
            if site is None:
                site = sites[lookup] = self._site(lookup)
            problem, info, bias, path, vaddr, fn_start, fde, row, exe_stop = site
            frame = Physical(pc, lookup, None, next_how, info, path, bias)
            if fde is not None and fde.signal:
                frame.lookup = pc  # a signal trampoline is named at its pc: it was returned to, not called
            if problem is not None:
                physical.append(frame)
                stop = problem
                break
            assert info is not None
            failure = "cfi-unusable"
            if fde is not None:
                got = self._step_cfi(fde, row, state, read, end) if row is not None else None
                step = got if not isinstance(got, str) else None
                if isinstance(got, str):
                    failure = got
                how_next = "cfi"
            else:
                step = self._step_fp(info, vaddr, fn_start, state, read)
                how_next = "fp"
            if step is not None:
                cfa = step[0]
                frame.cfa = cfa
                if prev_cfa is not None and (cfa < prev_cfa or (cfa == prev_cfa and fn_start == prev_func)):
                    if cfa == prev_cfa:
                        stop = "identical"
                        break
                    physical.append(frame)
                    stop = "inner"
                    break
                prev_cfa, prev_func = cfa, fn_start
            physical.append(frame)
            if exe_stop is not None:  # GDB stops after main (backtrace past-main) and at the entry point
                stop = exe_stop
                break
            if step is None:
                stop = "no-cfi" if fde is None else failure
                break
            _cfa, new_state, outermost = step
            if outermost:
                stop = "outermost"
                break
            ra = new_state.get(RIP)
            if ra is None or ra == 0:
                stop = "outermost"
                break
            if not self.code_at(ra - 1) and not self.code_at(ra):
                stop = "bad-return"
                break
            next_how = how_next
            lookup_minus = 0 if (fde is not None and fde.signal) else 1
            state = new_state
            if fde is not None and not fde.signal and fn_start is not None and bias is not None:
                # GDB's tail-call frames: functions that jumped to this one, found from DWARF call sites
                for t in self._tail_chain(ra, fn_start + bias):
                    if len(physical) >= self.max_depth:
                        break
                    tm = self._mapping(t - 1)
                    tinfo, tbias = self._module(tm) if tm is not None else (None, None)
                    tpath = tm.path if tm is not None and tm.path.startswith("/") else None
                    physical.append(Physical(t, t - 1, frame.cfa, "tailcall", tinfo, tpath, tbias))
        frames = self.symbolize(physical) if symbolize else []
        return Result(frames, physical, stop)

    def _site(self, lookup: int) -> tuple[Any, ...]:
        """Everything about one looked-up address that does not depend on the registers (cached per address):
        (problem, module, bias, path, link-time address, function start, FDE, CFI row, GDB's stop here)."""
        m = self._mapping(lookup)
        if m is None:
            return ("no-module", None, None, None, None, None, None, None, None)
        path = m.path if m.path.startswith("/") else None
        if not m.executable:
            return ("not-code", None, None, path, None, None, None, None, None)
        info, bias = self._module(m)
        if info is None or bias is None:
            return ("no-module", None, None, path, None, None, None, None, None)
        vaddr = lookup - bias
        fn = info.function(vaddr)
        fn_start = fn[1] if fn else None
        fde = info.fde(vaddr)
        row = fde.row_at(vaddr) if fde is not None else None
        exe_stop = None
        if fn_start is not None and self._is_exe(m, info):
            if fn_start == info.entry:
                exe_stop = "entry"
            elif not self.past_main and fn_start == self._main_of(info):
                exe_stop = "main"
        return (None, info, bias, path, vaddr, fn_start, fde, row, exe_stop)

    def _module_at(self, addr: int) -> tuple[ModuleInfo | None, int | None]:
        m = self._mapping(addr)
        return self._module(m) if m is not None else (None, None)

    def _target(self, target: int | str | None, info: ModuleInfo, bias: int) -> int | None:
        if isinstance(target, int):
            return target + bias
        if isinstance(target, str):
            a = info.symbols.address_of(target)
            return a + bias if a is not None else None
        return None

    def _tails(self, func: int) -> list[tuple[int, int | None]]:
        info, bias = self._module_at(func)
        dwarf = info.get_dwarf() if info is not None else None
        if dwarf is None or bias is None:
            return []
        got = dwarf.tail_calls(func - bias) or []
        return [(ret + bias, self._target(target, info, bias)) for ret, target in got]  # type: ignore[arg-type]

    def _tail_chain(self, ra: int, callee: int) -> tuple[int, ...]:
        """The pcs of GDB's tail-call frames between a caller (return address ``ra``) and the function entered at
        ``callee`` (``call_site_find_chain``): the call site at ``ra`` names a target; if it is not the callee,
        every path of tail calls from the target to the callee is followed, and only what all paths share is
        kept (their common start and end). Innermost first; () where DWARF says nothing."""
        key = (ra, callee)
        hit = self._tail_memo.get(key)
        if hit is not None:
            return hit
        result: tuple[int, ...] = ()
        try:
            result = self._find_tail_chain(ra, callee)
        except Exception:  # noqa: BLE001 - DWARF pyelftools cannot read: no tail-call frames, as GDB on errors
            result = ()
        self._tail_memo[key] = result
        return result

    def _find_tail_chain(self, ra: int, callee: int) -> tuple[int, ...]:
        info, bias = self._module_at(ra - 1)
        dwarf = info.get_dwarf() if info is not None else None
        if dwarf is None or info is None or bias is None:
            return ()
        site = dwarf.call_site(ra - bias)
        if site is None:
            return ()
        first = self._target(site[1], info, bias)
        if first is None or first == callee:
            return ()
        chains: list[list[int]] = []
        visited: set[int] = set()

        def dfs(func: int, path: list[int], depth: int) -> None:
            if depth > 16 or len(chains) > 16:
                return
            for ret, target in self._tails(func):
                if target is None or ret in visited:
                    continue
                visited.add(ret)
                path.append(ret)
                if target == callee:
                    chains.append(list(path))
                else:
                    dfs(target, path, depth + 1)
                path.pop()
                visited.discard(ret)

        dfs(first, [], 0)
        if not chains:
            return ()
        base = chains[0]
        length = len(base)
        callers = callees = length
        for other in chains[1:]:
            n = len(other)
            for i in range(min(callers, n)):
                if base[i] != other[i]:
                    callers = i
                    break
            for i in range(min(callees, n)):
                if base[length - 1 - i] != other[n - 1 - i]:
                    callees = i
                    break
            if callers == 0 and callees == 0:
                return ()
        out = [base[length - 1 - i] for i in range(callees)]
        if callees != length:
            out += [base[callers - 1 - i] for i in range(callers)]
        return tuple(out)

    def _step_cfi(
        self, fde: Fde, row: Any, state: dict[int, int | None], read: Any, window_end: int
    ) -> tuple[int, dict[int, int | None], bool] | str | None:
        _pc, cfa_rule, rules = row

        def reg(n: int) -> int | None:
            return state.get(n)

        try:
            if cfa_rule[0] == CFA_EXPR:
                cfa = evaluate(cfa_rule[1], reg, read)
            else:
                base = state.get(cfa_rule[1]) if cfa_rule[1] >= 0 else None
                if base is None:
                    return None
                cfa = (base + cfa_rule[2]) & MASK64
            new: dict[int, int | None] = dict(state)  # GDB: a register without a rule keeps its value
            new[RSP] = cfa
            ra_seen = False
            outermost = False
            for regno, kind, arg in rules:
                if kind == UNDEFINED:
                    v = None
                    if regno == fde.ra_column:
                        outermost = True
                elif kind == SAME_VALUE:
                    v = state.get(regno)
                elif kind == OFFSET:
                    v = read((cfa + arg) & MASK64)
                elif kind == VAL_OFFSET:
                    v = (cfa + arg) & MASK64
                elif kind == REGISTER:
                    v = state.get(arg)
                elif kind == EXPRESSION:
                    v = read(evaluate(arg, reg, read, initial=cfa))
                elif kind == VAL_EXPRESSION:
                    v = evaluate(arg, reg, read, initial=cfa)
                else:
                    v = None
                if regno == fde.ra_column:
                    ra_seen = True
                    new[RIP] = v
                elif regno != RSP or kind != UNDEFINED:
                    new[regno] = v
        except OutsideWindow:
            return "window"
        except ExprError:
            return None
        if not ra_seen:
            return None  # no rule for the return address: GDB would see the same frame again
        if not outermost and new.get(RIP) is None:
            return "window" if cfa > window_end else None  # the return address is above the copied stack
        return cfa, new, outermost

    def _step_fp(
        self, info: ModuleInfo, vaddr: int, start: int | None, state: dict[int, int | None], read: Any
    ) -> tuple[int, dict[int, int | None], bool] | None:
        """No CFI for ``vaddr``: the rule is worked out from the function's own code, or not at all.

        The instructions from the function's start (its symbol) up to ``vaddr`` are decoded with capstone: once
        ``push %rbp; mov %rsp,%rbp`` has run, the frame is rbp-based (CFA = rbp + 16); before that, every push,
        pop and constant ``sub``/``add`` of rsp is counted (CFA = rsp + depth + 8), and registers pushed are
        found again. Any other write to rsp (``and``, ``lea``, ``mov``, ``leave``...) makes the frame unknown:
        the unwind stops there instead of guessing. Without a symbol (JIT code, a stripped gap) nothing is known.
        """
        if start is None:
            return None
        key = (info.key, vaddr)
        if key in self._prologues:
            analysis = self._prologues[key]
        else:
            code = info.read_code(start, vaddr - start) if 0 <= vaddr - start <= _MAX_PROLOGUE_SCAN else None
            analysis = _analyze_prologue(code, start, vaddr) if code is not None else None
            self._prologues[key] = analysis
        if analysis is None:
            return None
        rbp_frame, depth, saved = analysis
        rsp, rbp = state.get(RSP), state.get(RBP)
        new = dict(state)
        if rbp_frame:
            if rbp is None:
                return None
            cfa = rbp + 16
            saved = {RBP: 16}
        else:
            if rsp is None:
                return None
            cfa = rsp + depth + 8
        ra = read(cfa - 8)
        if ra is None:
            return None
        new[RSP] = cfa
        new[RIP] = ra
        for regno, below in saved.items():
            new[regno] = read(cfa - below)
        return cfa, new, False

    # -- symbolisation ----------------------------------------------------------------------------------------------

    def symbolize(self, physical: list[Physical]) -> list[UnwoundFrame]:
        """The frames of an unwind as GDB names them, inlined calls included (innermost first)."""
        out: list[UnwoundFrame] = []
        for k, p in enumerate(physical):
            offset = p.pc - p.bias if p.bias is not None else None
            how = "regs" if k == 0 else p.how
            if p.module is None or p.bias is None:
                out.append(UnwoundFrame(p.pc, p.path, offset, None, None, None, False, how))
                continue
            described = self.describe(p.module, p.lookup - p.bias, k == 0)
            if how == "tailcall":  # GDB shows a tail-call frame alone, named by its innermost (inlined) function
                function, file, line, _inline = described[0]
                out.append(UnwoundFrame(p.pc, p.path, offset, function, file, line, False, how))
                continue
            for function, file, line, inline in described:
                out.append(UnwoundFrame(p.pc, p.path, offset, function, file, line, inline, how))
        return out

    def describe(
        self, info: ModuleInfo, vaddr: int, innermost: bool
    ) -> tuple[tuple[str | None, str | None, int | None, bool], ...]:
        """(function, file, line, inline) of the frames at one link-time address, innermost first."""
        key = (info.key, vaddr, innermost)
        hit = self._sym.get(key)
        if hit is not None:
            return hit
        dwarf = info.get_dwarf()
        cu = dwarf.cu_at(vaddr) if dwarf is not None else None
        chain = cu.chain_at(vaddr, dwarf) if cu is not None else []
        where = cu.line_at(vaddr, dwarf) if cu is not None else None
        msym = info.function(vaddr)
        top_file, top_line = where if where is not None else (None, None)
        if innermost:
            # GDB hides the inlined calls that start exactly at the stop pc (skip_inline_frames): the stop is
            # shown at their call site
            skipped = None
            while chain and chain[0].inline and chain[0].entry == vaddr:
                skipped = chain.pop(0)
            if skipped is not None:
                top_file, top_line = skipped.call_file, skipped.call_line
        frames: list[tuple[str | None, str | None, int | None, bool]] = []
        if not chain:
            frames.append((msym[0] if msym else None, top_file, top_line or None, False))
        else:
            for i, scope in enumerate(chain):
                if i == 0:
                    file, line = top_file, top_line
                else:
                    inner = chain[i - 1]
                    file, line = inner.call_file, inner.call_line
                name = scope.name if scope.name is not None else (msym[0] if msym else None)
                frames.append((name, file, line or None, scope.inline))
        result = tuple(frames)
        if len(self._sym) > 200_000:
            self._sym.clear()
        self._sym[key] = result
        return result

    def save(self) -> int:
        """Write what was learned (decoded CFI, read compile units) to the on-disk cache."""
        return self.modules.save()
