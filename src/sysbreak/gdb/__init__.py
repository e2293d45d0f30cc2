"""The in-GDB layer: the ONLY package of sysbreak that imports ``gdb``.

Load it inside gdb or cuda-gdb with ``source gdb_scripts/sysbreak.py`` (which finds this package and its
dependencies), or ``python import sysbreak.gdb; sysbreak.gdb.register()`` when they are on ``sys.path``.
"""

from __future__ import annotations


def register() -> None:
    """Register the ``sysbreak`` commands, ``set/show sysbreak`` settings and GDB event hooks (idempotent)."""
    from sysbreak.gdb.commands import register as _register

    _register()
