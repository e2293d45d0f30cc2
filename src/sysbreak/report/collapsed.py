"""Folded stacks (``root;...;leaf weight``) for flamegraph.pl, speedscope, inferno and friends.

Each line is one stack, root first, frames separated by ``;``, then a space and an integer weight. Native frames
are written as their function name, or ``module+0xoffset`` when the function is unknown. CPython frames (when the
capture recorded them) are written as ``function (file.py:line)`` and spliced in where the interpreter runs them:
just after (leafward of) the innermost native frame of the interpreter's evaluation loop (``_PyEval_EvalFrame*``,
``PyEval_EvalFrame*``, ``PyEval_EvalCode*``, ``_PyEval_Vector``), so the native code a Python function calls into
sits above it in the flame graph. When no such frame is in the native stack, the Python frames go at the root.

A capture of several processes (``run -f``, ``attach PID PID``, ``attach --children``) gets one more frame at the
root of every line: the process, written ``COMM-PID`` as ``stackcollapse-perf.pl --pid`` does (``COMM`` is the
base name of its ``argv[0]``), so each process is a tower of its own in the flame graph, weighing that process's
own numbers for the stack. ``process_frames=False`` (``--no-process-frames``) leaves it out and merges the
processes' stacks; ``True`` puts it in for a one-process capture too.
"""

from __future__ import annotations

import os
import re
from typing import Any

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


def process_frame(pid: int, processes: list[dict[str, Any]]) -> str:
    """``COMM-PID`` for process ``pid`` (``COMM``: the base name of its argv[0], or of its exe)."""
    for p in processes:
        if p.get("pid") == pid:
            argv = p.get("argv") or []
            first = argv[0] if argv and isinstance(argv[0], str) else p.get("exe") or ""
            comm = os.path.basename(str(first)) if first else ""
            return _clean(f"{comm}-{pid}" if comm else f"pid-{pid}")
    return f"pid-{pid}"


def _per_process(stack: StackStats) -> list[tuple[int | None, StackStats]]:
    """(pid, that process's numbers) for each process the stack was seen in."""
    if stack.by_pid:
        return sorted(stack.by_pid.items())
    if len(stack.pids) == 1:
        return [(stack.pids[0], stack)]
    return [(None, stack)]  # no breakdown (a JSON report of an older sysbreak read back): the sums, all its pids


def render_collapsed(
    analysis: Analysis, *, weight: str = "live", top: int | None = None, process_frames: bool | None = None
) -> str:
    """One line per stack with a positive weight; identical folded stacks are merged; lines sorted by stack.

    ``process_frames`` (default: when the analysis has several processes) starts each line with its process."""
    if weight not in WEIGHTS:
        raise ValueError(f"unknown weight {weight!r}; choose one of {', '.join(WEIGHTS)}")
    if process_frames is None:
        process_frames = len(analysis.processes) > 1
    stacks = analysis.stacks if top is None else analysis.stacks[:top]
    merged: dict[str, int] = {}
    for stack in stacks:
        folded = fold(stack)
        parts: list[tuple[int | None, StackStats]] = _per_process(stack) if process_frames else [(None, stack)]
        for pid, numbers in parts:
            value = weight_of(numbers, weight)
            if value <= 0:
                continue
            frames = folded
            if process_frames:
                if pid is not None:
                    root = process_frame(pid, analysis.processes)
                else:
                    root = "pids-" + ",".join(str(p) for p in stack.pids) if stack.pids else "pid-?"
                frames = [root, *folded]
            key = ";".join(frames)
            merged[key] = merged.get(key, 0) + value
    return "".join(f"{key} {value}\n" for key, value in sorted(merged.items()))
