"""GDB breakpoints that never stop the inferior: the one place that knows GDB's rules for breakpoint hits.

GDB's rules (they bite): ``Breakpoint.stop()`` may read registers, memory and frames, but must not resume,
step, or add, delete or change breakpoints. :class:`ProbeBreakpoint` hides this: subclasses implement
:meth:`ProbeBreakpoint.hit`, which runs inside ``stop()``; anything that would change breakpoints waits for a
stop event: ``hit`` returning True makes the inferior stop (used when a limit is reached, and the stop handler
then removes the breakpoints). Exceptions never escape into GDB (an exception in ``stop()`` would stop the
production target): they are counted and the first few are printed.

Why ``stop()`` and not a native condition calling a Python convenience function: see :mod:`sysbreak.arming`
(the latter hangs GDB 13 with multi-threaded targets, and is not faster).
"""

from __future__ import annotations

import gdb

_ERRORS: list[str] = []
ERROR_PRINT_LIMIT = 3


def errors() -> list[str]:
    """The Python errors raised inside breakpoint hits so far (the hits went on: the inferior never stopped)."""
    return list(_ERRORS)


class ProbeBreakpoint(gdb.Breakpoint):
    """An internal, silent breakpoint at an address whose work happens in :meth:`hit`."""

    def __init__(self, address: int) -> None:
        super().__init__(f"*{address:#x}", type=gdb.BP_BREAKPOINT, internal=True)
        self.silent = True
        self.address = address

    def hit(self) -> bool:  # pragma: no cover - overridden
        raise NotImplementedError

    def stop(self) -> bool:
        try:
            return bool(self.hit())
        except Exception as exc:  # never let a Python error stop the production target
            _ERRORS.append(f"{type(exc).__name__}: {exc}")
            if len(_ERRORS) <= ERROR_PRINT_LIMIT:
                gdb.write(f"sysbreak: internal error at {self.address:#x}: {exc}\n", gdb.STDERR)
            return False

    def remove(self) -> None:
        if self.is_valid():
            self.delete()
