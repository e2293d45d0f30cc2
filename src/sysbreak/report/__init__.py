"""Reporters: render one :class:`~sysbreak.analysis.model.Analysis` as text, JSON, HTML or folded stacks.

Every reporter works from the analysis result alone and never re-reads the event log::

    from sysbreak.report import render
    print(render(analysis, "text"))

``load_analysis(source, maps)`` makes the analysis of a capture, an events log, pmap files or a saved JSON
report; each format is a :class:`Reporter` registered in :data:`REPORTERS` (see :mod:`sysbreak.report.reporters`).
``diff``/``render_diff`` compare two analyses stack by stack.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import TYPE_CHECKING, Any

from sysbreak.report.reporters import REPORTERS, Reporter, ReportOptions, get_reporter, register_reporter

if TYPE_CHECKING:
    from sysbreak.analysis.model import Analysis
    from sysbreak.report._common import headline, human_bytes
    from sysbreak.report.collapsed import WEIGHTS, render_collapsed
    from sysbreak.report.diff import AnalysisDiff, StackChange, diff, diff_headline, diff_to_dict, render_diff
    from sysbreak.report.html_report import render_html
    from sysbreak.report.json_report import FORMAT as JSON_FORMAT
    from sysbreak.report.json_report import from_dict, render_json, to_dict
    from sysbreak.report.load import load_analysis
    from sysbreak.report.text import render_text

FORMATS = ("text", "json", "html", "collapsed")  # the built-in ones; REPORTERS has every registered one

# Imported on first use (PEP 562): `from sysbreak.report import get_reporter` must not cost rich and jinja2,
# which `sysbreak report --help` and every other command would otherwise pay at start-up.
_LAZY: dict[str, tuple[str, str]] = {
    "headline": ("sysbreak.report._common", "headline"),
    "human_bytes": ("sysbreak.report._common", "human_bytes"),
    "WEIGHTS": ("sysbreak.report.collapsed", "WEIGHTS"),
    "render_collapsed": ("sysbreak.report.collapsed", "render_collapsed"),
    "AnalysisDiff": ("sysbreak.report.diff", "AnalysisDiff"),
    "StackChange": ("sysbreak.report.diff", "StackChange"),
    "diff": ("sysbreak.report.diff", "diff"),
    "diff_headline": ("sysbreak.report.diff", "diff_headline"),
    "diff_to_dict": ("sysbreak.report.diff", "diff_to_dict"),
    "render_diff": ("sysbreak.report.diff", "render_diff"),
    "render_html": ("sysbreak.report.html_report", "render_html"),
    "JSON_FORMAT": ("sysbreak.report.json_report", "FORMAT"),
    "from_dict": ("sysbreak.report.json_report", "from_dict"),
    "render_json": ("sysbreak.report.json_report", "render_json"),
    "to_dict": ("sysbreak.report.json_report", "to_dict"),
    "load_analysis": ("sysbreak.report.load", "load_analysis"),
    "render_text": ("sysbreak.report.text", "render_text"),
}


class _Package(types.ModuleType):
    """The package keeps ``diff`` the function, as the eager imports used to: importing the submodule
    ``sysbreak.report.diff`` (which the import system binds as the package's attribute ``diff``) must not
    replace it."""

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "diff" and isinstance(value, types.ModuleType):
            value = value.diff
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package


def __getattr__(name: str) -> Any:
    try:
        module, attr = _LAZY[name]
    except KeyError:
        raise AttributeError(f"module 'sysbreak.report' has no attribute {name!r}") from None
    value = getattr(importlib.import_module(module), attr)
    globals()[name] = value
    return value


__all__ = [
    "FORMATS",
    "JSON_FORMAT",
    "REPORTERS",
    "ReportOptions",
    "Reporter",
    "WEIGHTS",
    "AnalysisDiff",
    "StackChange",
    "diff",
    "diff_headline",
    "diff_to_dict",
    "from_dict",
    "get_reporter",
    "headline",
    "human_bytes",
    "load_analysis",
    "register_reporter",
    "render",
    "render_collapsed",
    "render_diff",
    "render_html",
    "render_json",
    "render_text",
    "to_dict",
]


def render(
    analysis: Analysis,
    fmt: str = "text",
    *,
    top: int | None = None,
    weight: str = "live",
    color: bool = False,
    width: int | None = None,
    all_regions: bool = False,
    process_frames: bool | None = None,
) -> str:
    """The report in one of the registered formats (:data:`FORMATS` and any :func:`register_reporter` added),
    as a string.

    ``top`` limits the stacks shown (text: 10, html: 50 by default; json and collapsed: all unless given).
    ``weight`` (collapsed only) is one of :data:`WEIGHTS`. ``color`` and ``width`` are for text on a terminal;
    ``all_regions`` makes the text report list unchanged regions too. ``process_frames`` (collapsed only): a
    ``COMM-PID`` root frame on each line (default: when the analysis has several processes).
    """
    if fmt not in REPORTERS:
        raise ValueError(f"unknown report format {fmt!r}; choose one of {', '.join(REPORTERS)}")
    options = ReportOptions(
        top=top, weight=weight, color=color, width=width, all_regions=all_regions, process_frames=process_frames
    )
    return REPORTERS[fmt].render(analysis, options)
