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
#: statistics: hits stepped past by emulation ("emulated"), and hits left to GDB's step-over, by why ("gdb: ...")
COUNTS: dict[str, int] = {}
#: the probe whose GDB breakpoint is at each address: a second probe there (an exit and a failure breakpoint after
#: the same syscall) rides on it instead of making a second GDB breakpoint, so that one stop() runs both hits and
#: steps past the instruction once
_PRIMARY: dict[tuple[int, int], ProbeBreakpoint] = {}  # (inferior number, address)


def errors() -> list[str]:
    """The Python errors raised inside breakpoint hits so far (the hits went on: the inferior never stopped)."""
    return list(_ERRORS)


class ProbeBreakpoint(gdb.Breakpoint):
    """An internal, silent breakpoint at an address whose work happens in :meth:`hit`.

    Probes at one address share one GDB breakpoint: the first one placed there owns it, the others *ride* on it
    (no GDB breakpoint of their own); its ``stop()`` runs every hit, in the order they were placed."""

    def __init__(self, address: int) -> None:
        self.address = address
        self.hit_regs: dict[str, int] | None = None  # set by hit() when it read them (ptrace), used once
        self.emulation: emulate.Emulation | None = None
        self.riders: list[ProbeBreakpoint] = []
        self.primary: ProbeBreakpoint | None = None  # the probe whose GDB breakpoint this one rides on
        self._hollow = False  # removed while others still ride on its GDB breakpoint
        self._key = (gdb.selected_inferior().num, address)
        owner = _PRIMARY.get(self._key)
        if owner is not None and gdb.Breakpoint.is_valid(owner):  # hollow or not: never two GDB breakpoints here
            self.primary = owner
            owner.riders.append(self)
            return
        try:
            code = bytes(gdb.selected_inferior().read_memory(address, 16))  # before the int3 goes in
            self.emulation = emulate.plan(code, address)
        except (gdb.error, gdb.MemoryError, OSError, ValueError):
            self.emulation = None
        super().__init__(f"*{address:#x}", type=gdb.BP_BREAKPOINT, internal=True)
        self.silent = True
        _PRIMARY[self._key] = self

    def hit(self) -> bool:  # pragma: no cover - overridden
        raise NotImplementedError

    def is_valid(self) -> bool:
        if self.primary is not None:
            return self in self.primary.riders and gdb.Breakpoint.is_valid(self.primary)
        return not self._hollow and super().is_valid()

    @property
    def enabled(self) -> bool:
        """A rider's is its owner's: they share one GDB breakpoint."""
        return bool(gdb.Breakpoint.enabled.__get__(self.primary or self))

    @enabled.setter
    def enabled(self, on: bool) -> None:
        gdb.Breakpoint.enabled.__set__(self.primary or self, on)

    def _hit_safely(self) -> bool:
        try:
            return bool(self.hit())
        except Exception as exc:  # never let a Python error stop the production target
            _ERRORS.append(f"{type(exc).__name__}: {exc}")
            if len(_ERRORS) <= ERROR_PRINT_LIMIT:
                gdb.write(f"sysbreak: internal error at {self.address:#x}: {exc}\n", gdb.STDERR)
            return False

    def stop(self) -> bool:
        stop = False if self._hollow else self._hit_safely()
        regs, self.hit_regs = self.hit_regs, None
        for rider in list(self.riders):
            stop = rider._hit_safely() or stop
            regs, rider.hit_regs = regs or rider.hit_regs, None
        if not stop:
            if self.emulation is None:
                why = "gdb: instruction not emulated"
            elif not STEPLESS[0]:
                why = "gdb: emulate-step-over off"
            else:
                try:
                    why = self._step_past(regs)
                except Exception as exc:  # noqa: BLE001 - GDB steps over it instead
                    _ERRORS.append(f"step-over: {type(exc).__name__}: {exc}")
                    why = "gdb: error"
            COUNTS[why] = COUNTS.get(why, 0) + 1
        return stop

    def _step_past(self, regs: dict[str, int] | None) -> str:
        """Emulate the instruction under the breakpoint for the thread that hit it (see the module's doc):
        "emulated", or why GDB is to step over it instead ("gdb: ...": nothing was changed, or it was undone)."""
        emu = self.emulation
        assert emu is not None
        thread = gdb.selected_thread()
        pid, tid = thread.ptid[0], thread.ptid[1]
        tracee = for_pid(pid)
        if regs is None:
            regs = tracee.regs(tid)
            if regs is None:
                return "gdb: no ptrace from here"
            regs["rip"] = self.address
        if regs["eflags"] & emulate.TF:
            return "gdb: single-stepping"
        try:
            out, writes = emu.run(regs, tracee.read_as_cpu)  # loads honour the page protections, as the CPU's
        except OSError:
            return "gdb: memory unreadable"
        if tracee.read(out["rip"], 1) in (b"\xcc", b""):
            return "gdb: int3 at the next pc"  # another breakpoint (GDB would step over it unseen), or unreadable
        for address, data in writes:
            if not tracee.write_as_cpu(address, data):  # a store to a read-only page is the CPU's to fault on
                return "gdb: memory unwritable"  # what was written is what the instruction writes: GDB's step would
        after = {**regs, **out}
        if not tracee.set_regs(tid, after):
            return "gdb: registers unwritable"
        try:
            gdb.execute("maintenance flush register-cache", to_string=True)
        except gdb.error:
            tracee.set_regs(tid, regs)  # GDB still believes the old registers: give it them back
            return "gdb: register cache not flushed"
        return "emulated"

    def remove(self) -> None:
        """Delete this probe (its GDB breakpoint goes when no other probe rides on it)."""
        if self.primary is not None:
            owner = self.primary
            if self in owner.riders:
                owner.riders.remove(self)
            if owner._hollow and not owner.riders:
                owner._delete()
            return
        if self.riders:
            self._hollow = True  # the riders keep the GDB breakpoint
            return
        self._delete()

    def __repr__(self) -> str:
        role = "rider" if self.primary is not None else "hollow" if self._hollow else "owner"
        return f"<{type(self).__name__} {role} at {self.address:#x}>"

    def _delete(self) -> None:
        if _PRIMARY.get(self._key) is self:
            del _PRIMARY[self._key]
        if super().is_valid():
            self.delete()
