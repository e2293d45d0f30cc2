"""Folded stacks (``root;...;leaf weight``) for flamegraph.pl, speedscope, inferno and friends.

Each line is one stack, root first, frames separated by ``;``, then a space and an integer weight. Native frames
are written as their function name, or ``module+0xoffset`` when the function is unknown. CPython frames (when the
capture recorded them) are written as ``function (file.py:line)`` and spliced in where the interpreter runs them:
just after (leafward of) the innermost native frame of the interpreter's evaluation loop (``_PyEval_EvalFrame*``,
``PyEval_EvalFrame*``, ``PyEval_EvalCode*``, ``_PyEval_Vector``), so the native code a Python function calls into
sits above it in the flame graph. When no such frame is in the native stack, the Python frames go at the root.
"""

from __future__ import annotations

import os
import re

from sysbreak.analysis.model import Analysis, PyFrame, StackStats
from sysbreak.report._common import frame_name

WEIGHTS = ("live", "rss-growth", "rss", "peak", "mapped", "growth", "events")

_EVAL_LOOP = re.compile(r"^_?PyEval_EvalFrame|^_?PyEval_EvalCode|^_PyEval_Vector$")


def _clean(name: str) -> str:
    # ";" separates frames and a newline ends the line: neither may appear inside a frame name.
    return name.replace(";", ":").replace("\n", " ").replace("\r", " ")


def _py_name(frame: PyFrame) -> str:
    where = os.path.basename(frame.file) or frame.file
    if frame.line is not None:
        where = f"{where}:{frame.line}"
    return f"{frame.function} ({where})"


def fold(stack: StackStats) -> list[str]:
    """The stack's frame names, root first, with its Python frames spliced in (see the module docstring)."""
    native = [frame_name(frame) for frame in reversed(stack.frames)]  # root first
    python = [_py_name(frame) for frame in reversed(stack.python)]  # root first
    if python:
        # The innermost eval-loop frame is the last match in root-first order.
        at = 0
        for index, frame in enumerate(reversed(stack.frames)):
            if frame.function and _EVAL_LOOP.search(frame.function):
                at = index + 1
        native[at:at] = python
    return [_clean(name) for name in native] or ["??"]


def weight_of(stack: StackStats, weight: str) -> int:
    if weight == "live":
        return stack.live_bytes
    if weight == "rss-growth":
        return stack.resident_growth
    if weight == "rss":
        return stack.rss_bytes
    if weight == "peak":
        return stack.peak_bytes
    if weight == "mapped":
        return stack.mapped_bytes
    if weight == "growth":
        return stack.growth_bytes
    if weight == "events":
        return stack.events
    raise ValueError(f"unknown weight {weight!r}; choose one of {', '.join(WEIGHTS)}")


def render_collapsed(analysis: Analysis, *, weight: str = "live", top: int | None = None) -> str:
    """One line per stack with a positive weight; identical folded stacks are merged; lines sorted by stack."""
    if weight not in WEIGHTS:
        raise ValueError(f"unknown weight {weight!r}; choose one of {', '.join(WEIGHTS)}")
    stacks = analysis.stacks if top is None else analysis.stacks[:top]
    merged: dict[str, int] = {}
    for stack in stacks:
        value = weight_of(stack, weight)
        if value <= 0:
            continue
        key = ";".join(fold(stack))
        merged[key] = merged.get(key, 0) + value
    return "".join(f"{key} {value}\n" for key, value in sorted(merged.items()))
