"""GDB breakpoints that never stop the inferior: the one place that knows GDB's rules for breakpoint hits.

GDB's rules (they bite): code run while a breakpoint is being evaluated may read registers, memory and frames,
but must not resume, step, or add, delete or change breakpoints. :class:`ProbeBreakpoint` hides this:
subclasses implement :meth:`ProbeBreakpoint.hit`, which runs inside the breakpoint's condition through the
``$_sysbreak(ID)`` convenience function, and anything that would change breakpoints is queued with
:func:`defer` and run once GDB is back in its event loop. ``hit`` returning True makes the inferior stop
(used when a limit is reached); exceptions never escape into GDB (an exception in a condition would stop the
inferior with an error, the opposite of what a production target needs): they are counted and the first few
are printed.
"""

from __future__ import annotations

from collections.abc import Callable

import gdb

_REGISTRY: dict[int, ProbeBreakpoint] = {}
_ERRORS: list[str] = []
ERROR_PRINT_LIMIT = 3


class _Dispatch(gdb.Function):
    """``$_sysbreak(ID)``: run probe ID's handler; evaluates to 1 only when the inferior must stop."""

    def __init__(self) -> None:
        super().__init__("_sysbreak")

    def invoke(self, ident: gdb.Value) -> int:
        probe = _REGISTRY.get(int(ident))
        if probe is None:
            return 0
        try:
            return 1 if probe.hit() else 0
        except Exception as exc:  # never let a Python error stop the production target
            _ERRORS.append(f"{type(exc).__name__}: {exc}")
            if len(_ERRORS) <= ERROR_PRINT_LIMIT:
                gdb.write(f"sysbreak: internal error in probe {int(ident)}: {exc}\n", gdb.STDERR)
            return 0


_DISPATCH: _Dispatch | None = None
_NEXT_ID = [1]


def errors() -> list[str]:
    return list(_ERRORS)


class ProbeBreakpoint(gdb.Breakpoint):
    """An internal breakpoint at an address whose work happens in :meth:`hit`, behind a native pre-filter.

    ``native_condition`` is evaluated by GDB itself (no Python) and Python is entered only when it is true.
    """

    def __init__(self, address: int, native_condition: str | None) -> None:
        global _DISPATCH
        if _DISPATCH is None:
            _DISPATCH = _Dispatch()
        self.ident = _NEXT_ID[0]
        _NEXT_ID[0] += 1
        super().__init__(f"*{address:#x}", type=gdb.BP_BREAKPOINT, internal=True)
        self.silent = True
        call = f"$_sysbreak({self.ident})"
        self.condition = f"({native_condition}) && {call}" if native_condition else call
        _REGISTRY[self.ident] = self
        self.address = address

    def hit(self) -> bool:  # pragma: no cover - overridden
        raise NotImplementedError

    def remove(self) -> None:
        _REGISTRY.pop(self.ident, None)
        if self.is_valid():
            self.delete()


def defer(action: Callable[[], None]) -> None:
    """Run ``action`` when GDB is back in its event loop (never inside a breakpoint hit)."""
    gdb.post_event(action)


def set_pending(count: int) -> None:
    gdb.set_convenience_variable("_sysbreak_pending", count)
