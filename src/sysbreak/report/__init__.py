"""Reporters: render one :class:`~sysbreak.analysis.model.Analysis` as text, JSON, HTML or folded stacks.

Every reporter works from the analysis result alone and never re-reads the event log::

    from sysbreak.report import render
    print(render(analysis, "text"))

``load_analysis(source, maps)`` makes the analysis of a capture, an events log, pmap files or a saved JSON
report; each format is a :class:`Reporter` registered in :data:`REPORTERS` (see :mod:`sysbreak.report.reporters`).
``diff``/``render_diff`` compare two analyses stack by stack.
"""

from __future__ import annotations

from sysbreak.analysis.model import Analysis
from sysbreak.report._common import headline, human_bytes
from sysbreak.report.collapsed import WEIGHTS, render_collapsed
from sysbreak.report.diff import AnalysisDiff, StackChange, diff, diff_headline, diff_to_dict, render_diff
from sysbreak.report.html_report import render_html
from sysbreak.report.json_report import FORMAT as JSON_FORMAT
from sysbreak.report.json_report import from_dict, render_json, to_dict
from sysbreak.report.load import load_analysis
from sysbreak.report.reporters import REPORTERS, Reporter, ReportOptions, get_reporter, register_reporter
from sysbreak.report.text import render_text

FORMATS = ("text", "json", "html", "collapsed")  # the built-in ones; REPORTERS has every registered one

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
) -> str:
    """The report in one of the registered formats (:data:`FORMATS` and any :func:`register_reporter` added),
    as a string.

    ``top`` limits the stacks shown (text: 10, html: 50 by default; json and collapsed: all unless given).
    ``weight`` (collapsed only) is one of :data:`WEIGHTS`. ``color`` and ``width`` are for text on a terminal;
    ``all_regions`` makes the text report list unchanged regions too.
    """
    if fmt not in REPORTERS:
        raise ValueError(f"unknown report format {fmt!r}; choose one of {', '.join(REPORTERS)}")
    options = ReportOptions(top=top, weight=weight, color=color, width=width, all_regions=all_regions)
    return REPORTERS[fmt].render(analysis, options)
