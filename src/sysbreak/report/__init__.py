"""Reporters: render one :class:`~sysbreak.analysis.model.Analysis` as text, JSON, HTML or folded stacks.

Every reporter works from the analysis result alone and never re-reads the event log::

    from sysbreak.report import render
    print(render(analysis, "text"))

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
from sysbreak.report.text import render_text

FORMATS = ("text", "json", "html", "collapsed")

__all__ = [
    "FORMATS",
    "JSON_FORMAT",
    "WEIGHTS",
    "AnalysisDiff",
    "StackChange",
    "diff",
    "diff_headline",
    "diff_to_dict",
    "from_dict",
    "headline",
    "human_bytes",
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
    """The report in one of :data:`FORMATS`, as a string.

    ``top`` limits the stacks shown (text: 10, html: 50 by default; json and collapsed: all unless given).
    ``weight`` (collapsed only) is one of :data:`WEIGHTS`. ``color`` and ``width`` are for text on a terminal;
    ``all_regions`` makes the text report list unchanged regions too.
    """
    if fmt == "text":
        return render_text(analysis, top=top, color=color, width=width, all_regions=all_regions)
    if fmt == "json":
        return render_json(analysis, top=top)
    if fmt == "html":
        return render_html(analysis, top=top)
    if fmt == "collapsed":
        return render_collapsed(analysis, weight=weight, top=top)
    raise ValueError(f"unknown report format {fmt!r}; choose one of {', '.join(FORMATS)}")
