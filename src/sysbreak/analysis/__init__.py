"""Analysis of captures: plain Python, no gdb. Produces one :class:`~sysbreak.analysis.model.Analysis`.

``analyze(source, *, maps_files=(), depth=None, group_outside=None)`` is the entry point (see
:mod:`sysbreak.analysis.pipeline`). It is imported on first use, so that importing
:mod:`sysbreak.analysis.model` stays cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sysbreak.analysis.pipeline import analyze

__all__ = ["analyze"]


def __getattr__(name: str) -> Any:
    if name == "analyze":
        from sysbreak.analysis.pipeline import analyze

        return analyze
    raise AttributeError(name)
