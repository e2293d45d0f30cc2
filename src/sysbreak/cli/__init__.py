"""The ``sysbreak`` command line: a typer app with one module per verb.

Every verb turns :class:`sysbreak.errors.SysbreakError` into one line on stderr and a non-zero exit; nothing
a user types can produce a traceback. Usage errors (an unknown option, a missing argument) are click's own
``Usage: ... Error: ...`` lines and exit status 2.

Start-up is kept short: this module imports nothing heavy (not even typer: ``sysbreak attach``/``run`` start
their GDB first, :mod:`sysbreak.driver.prestart`, then the typer app of :mod:`sysbreak.cli.root` is built); the
verb modules import only typer; each verb imports what it needs
(rich, capstone, the GDB driver, the analysis) inside its function, and ``sysbreak VERB ...`` imports and builds
only that verb, so ``sysbreak --help`` and ``sysbreak sites`` do not pay for what they do not use
(benchmarks/startup.py measures it). A new verb is one module with a ``register(app)`` and a line in
:data:`VERBS`.
"""

from __future__ import annotations

import sys
from typing import Any

#: every verb and the module that defines it, in the order `sysbreak --help` lists them
VERBS: dict[str, str] = {
    "sites": "sysbreak.cli.sites",
    "watch": "sysbreak.cli.watch",
    "run": "sysbreak.cli.run",
    "attach": "sysbreak.cli.attach",
    "report": "sysbreak.cli.report",
    "diff": "sysbreak.cli.diff",
    "doctor": "sysbreak.cli.doctor",
    "demo": "sysbreak.cli.demo",
}


def _verb(argv: list[str]) -> str | None:
    """The verb of a command line when it is a known one (the other verbs need not be imported or built)."""
    for arg in argv:
        if arg.startswith("-"):
            return None  # an option before the verb (--help, --version): let the whole app answer
        return arg if arg in VERBS else None
    return None


def main() -> None:
    """Console entry point (``[project.scripts] sysbreak``)."""
    verb = _verb(sys.argv[1:])
    early = verb in ("attach", "run")
    if verb is not None and early:
        # GDB first (sysbreak.driver.prestart): its start-up then overlaps the imports and checks that follow
        from sysbreak.driver import prestart

        prestart.start(sys.argv[sys.argv.index(verb) + 1 :])
    try:
        from sysbreak.cli.root import run

        run(verb)
    finally:
        if early:
            prestart.drop()


def __getattr__(name: str) -> Any:
    """``sysbreak.cli.app`` and ``sysbreak.cli.register``, defined in :mod:`sysbreak.cli.root` (imported on use)."""
    if name in ("app", "register"):
        from sysbreak.cli import root

        return getattr(root, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
