"""GDB breakpoints that never stop the inferior: the one place that knows GDB's rules for breakpoint hits.

GDB's rules (they bite): ``Breakpoint.stop()`` may read registers, memory and frames, but must not resume,
step, or add, delete or change breakpoints. :class:`ProbeBreakpoint` hides this: subclasses implement
:meth:`ProbeBreakpoint.hit`, which runs inside ``stop()``; anything that would change breakpoints waits for a
stop event: ``hit`` returning True makes the inferior stop (used when a limit is reached, and the stop handler
then removes the breakpoints). Exceptions never escape into GDB (an exception in ``stop()`` would stop the
production target): they are counted and the first few are printed.

A hit that does not stop then *steps past* its instruction itself when it can (:mod:`sysbreak.emulate`): the
instruction under the breakpoint, decoded once when the breakpoint is placed, is emulated on the registers read
by ptrace, the result written back, and GDB's register cache flushed; GDB then finds no breakpoint at the
thread's pc and resumes it with no single-step of its own (one stop per hit instead of two). Not done when the
instruction is not one it knows, when the next pc holds an ``int3`` (another breakpoint: GDB must see it), when
the thread is single-stepping, or when any ptrace request fails (GDB steps over it as before).

Why ``stop()`` and not a native condition calling a Python convenience function: see :mod:`sysbreak.arming`
(the latter hangs GDB 13 with multi-threaded targets, and is not faster).
"""

from __future__ import annotations

import gdb

from sysbreak import emulate
from sysbreak.tracee import for_pid

_ERRORS: list[str] = []
ERROR_PRINT_LIMIT = 3

#: whether hits step past their instruction by emulation (``set sysbreak step-over``; SYSBREAK_STEP_OVER=gdb)
STEPLESS = [True]
#: statistics: hits stepped past by emulation, and hits left to GDB's step-over
COUNTS = {"emulated": 0, "gdb": 0}
#: how many probes are at each address: an instruction is emulated only under a probe alone at its address (two
#: would both run it)
_AT: dict[int, int] = {}


def errors() -> list[str]:
    """The Python errors raised inside breakpoint hits so far (the hits went on: the inferior never stopped)."""
    return list(_ERRORS)


class ProbeBreakpoint(gdb.Breakpoint):
    """An internal, silent breakpoint at an address whose work happens in :meth:`hit`."""

    def __init__(self, address: int) -> None:
        self.address = address
        self.hit_regs: dict[str, int] | None = None  # set by hit() when it read them (ptrace), used once
        self.emulation: emulate.Emulation | None = None
        try:
            code = bytes(gdb.selected_inferior().read_memory(address, 16))  # before the int3 goes in
            self.emulation = emulate.plan(code, address)
        except (gdb.error, gdb.MemoryError, OSError, ValueError):
            self.emulation = None
        super().__init__(f"*{address:#x}", type=gdb.BP_BREAKPOINT, internal=True)
        self.silent = True
        _AT[address] = _AT.get(address, 0) + 1

    def hit(self) -> bool:  # pragma: no cover - overridden
        raise NotImplementedError

    def stop(self) -> bool:
        try:
            stop = bool(self.hit())
        except Exception as exc:  # never let a Python error stop the production target
            _ERRORS.append(f"{type(exc).__name__}: {exc}")
            if len(_ERRORS) <= ERROR_PRINT_LIMIT:
                gdb.write(f"sysbreak: internal error at {self.address:#x}: {exc}\n", gdb.STDERR)
            stop = False
        regs, self.hit_regs = self.hit_regs, None
        if not stop:
            if self.emulation is not None and STEPLESS[0] and _AT.get(self.address) == 1:
                try:
                    stepped = self._step_past(regs)
                except Exception as exc:  # noqa: BLE001 - GDB steps over it instead
                    _ERRORS.append(f"step-over: {type(exc).__name__}: {exc}")
                    stepped = False
            else:
                stepped = False
            COUNTS["emulated" if stepped else "gdb"] += 1
        return stop

    def _step_past(self, regs: dict[str, int] | None) -> bool:
        """Emulate the instruction under the breakpoint for the thread that hit it (see the module's doc); False
        when GDB is to step over it (nothing was changed, or what was is undone)."""
        emu = self.emulation
        assert emu is not None
        thread = gdb.selected_thread()
        pid, tid = thread.ptid[0], thread.ptid[1]
        tracee = for_pid(pid)
        if regs is None:
            regs = tracee.regs(tid)
            if regs is None:
                return False
            regs["rip"] = self.address
        if regs["eflags"] & emulate.TF:
            return False
        out, writes = emu.run(regs, tracee.read)  # OSError: memory it needs is unreadable
        if tracee.read(out["rip"], 1) in (b"\xcc", b""):
            return False  # another breakpoint there (GDB would step over it unseen), or unreadable
        for address, data in writes:
            if not tracee.write(address, data):
                return False  # what was written is what the instruction writes: GDB's step writes it again
        after = {**regs, **out}
        if not tracee.set_regs(tid, after):
            return False
        try:
            gdb.execute("maintenance flush register-cache", to_string=True)
        except gdb.error:
            tracee.set_regs(tid, regs)  # GDB still believes the old registers: give it them back
            return False
        return True

    def remove(self) -> None:
        if self.is_valid():
            self.delete()
            _AT[self.address] = _AT.get(self.address, 1) - 1
