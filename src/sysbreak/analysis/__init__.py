"""Analysis of captures: plain Python, no gdb. Produces one :class:`~sysbreak.analysis.model.Analysis`.

``analyze(source, *, maps_files=(), depth=None, group_outside=None)`` is the entry point (see
:mod:`sysbreak.analysis.attribute`); ``synthetic_capture(dir, events, snapshots)`` writes a capture of any size
for benchmarks (see :mod:`sysbreak.analysis.synthetic`). Both are imported on first use, so that importing
:mod:`sysbreak.analysis.model` stays cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sysbreak.analysis.attribute import analyze
    from sysbreak.analysis.synthetic import synthetic_capture

__all__ = ["analyze", "synthetic_capture"]


def __getattr__(name: str) -> Any:
    if name == "analyze":
        from sysbreak.analysis.attribute import analyze

        return analyze
    if name == "synthetic_capture":
        from sysbreak.analysis.synthetic import synthetic_capture

        return synthetic_capture
    raise AttributeError(name)
