"""Reporters behind one interface, the way memray's reporters are: each one turns one
:class:`~sysbreak.analysis.model.Analysis` into a document, and registers itself under its ``--format`` name.

A new reporter is a class with the attributes and the method of :class:`Reporter`, passed to
:func:`register_reporter`; ``sysbreak report --format NAME`` and :func:`sysbreak.report.render` find it with
no other change. The built-in ones import their modules (rich, jinja2) only when they render.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, runtime_checkable

from sysbreak.errors import SysbreakError

if TYPE_CHECKING:
    from sysbreak.analysis.model import Analysis
    from sysbreak.report.diff import AnalysisDiff


@dataclass(frozen=True)
class ReportOptions:
    """What a reporter may be asked; each one uses the fields that apply to it."""

    top: int | None = None  # the N most important stacks (None: the reporter's default)
    weight: str = "live"  # collapsed: what a stack weighs (live, mapped, growth, events)
    color: bool = False  # text on a terminal
    width: int | None = None  # text on a terminal: its width
    all_regions: bool = False  # text: list unchanged regions too
    process_frames: bool | None = None  # collapsed: a COMM-PID root frame per line (None: with several processes)


@runtime_checkable
class Reporter(Protocol):
    """One output format of ``sysbreak report``."""

    #: the ``--format`` value
    name: str
    #: one line for ``sysbreak report --help``
    description: str
    #: where the report goes when no --output is given (None: stdout)
    default_output: str | None
    #: whether it can use colour and the terminal's width (only when printed to a terminal)
    terminal: bool

    def render(self, analysis: Analysis, options: ReportOptions) -> str:
        """The whole document as a string."""
        ...


_R = TypeVar("_R")


def _add(table: dict[str, _R], reporter: _R, protocol: type[Any], what: str) -> _R:
    """Register ``reporter`` in ``table`` under its name (a later one with the same name replaces it)."""
    if not isinstance(reporter, protocol):
        raise TypeError(f"{reporter!r} does not implement {what}")
    table[reporter.name] = reporter
    return reporter


def _find(table: dict[str, _R], name: str, choices: str) -> _R:
    """``table[name]``, or a one-line error naming the choices for an unknown one."""
    try:
        return table[name]
    except KeyError:
        raise SysbreakError(f"--format {name!r}: {choices} {', '.join(table)}") from None


REPORTERS: dict[str, Reporter] = {}


def register_reporter(reporter: Reporter) -> Reporter:
    """Make ``reporter`` available as ``--format reporter.name`` (a later one with the same name replaces it)."""
    return _add(REPORTERS, reporter, Reporter, "sysbreak.report.Reporter")


def formats() -> tuple[str, ...]:
    return tuple(REPORTERS)


def get_reporter(name: str) -> Reporter:
    """The reporter for ``--format name``; a one-line error naming the choices for an unknown one."""
    return _find(REPORTERS, name, "choose one of")


class TextReporter:
    name = "text"
    description = (
        "(the default) ranks the stacks, lists their frames, then shows the regions as pmap -x does, each with the "
        "stacks that own it and the bytes no captured call explains"
    )
    default_output: str | None = None
    terminal = True

    def render(self, analysis: Analysis, options: ReportOptions) -> str:
        from sysbreak.report.text import render_text

        return render_text(
            analysis, top=options.top, color=options.color, width=options.width, all_regions=options.all_regions
        )


class JsonReporter:
    name = "json"
    description = "follows docs/report-json.md (format sysbreak-report/2)"
    default_output: str | None = None
    terminal = False

    def render(self, analysis: Analysis, options: ReportOptions) -> str:
        from sysbreak.report.json_report import render_json

        return render_json(analysis, top=options.top)


class HtmlReporter:
    name = "html"
    description = "one self-contained page with an inline SVG plot"
    default_output: str | None = "sysbreak-report.html"
    terminal = False

    def render(self, analysis: Analysis, options: ReportOptions) -> str:
        from sysbreak.report.html_report import render_html

        return render_html(analysis, top=options.top)


class CollapsedReporter:
    name = "collapsed"
    description = "folded stacks for flamegraph.pl or speedscope, weighted by --weight"
    default_output: str | None = None
    terminal = False

    def render(self, analysis: Analysis, options: ReportOptions) -> str:
        from sysbreak.report.collapsed import render_collapsed

        return render_collapsed(analysis, weight=options.weight, top=options.top, process_frames=options.process_frames)


_BUILTIN: tuple[Reporter, ...] = (TextReporter(), JsonReporter(), HtmlReporter(), CollapsedReporter())
for _builtin in _BUILTIN:
    register_reporter(_builtin)


# ------------------------------------------------------------------------------------------------ diffs
@dataclass(frozen=True)
class DiffOptions:
    """What a diff reporter may be asked; each one uses the fields that apply to it."""

    top: int | None = None
    color: bool = False
    width: int | None = None


@runtime_checkable
class DiffReporter(Protocol):
    """One output format of ``sysbreak diff``: the same registry pattern as :class:`Reporter`."""

    name: str
    description: str
    default_output: str | None
    terminal: bool

    def render(self, d: AnalysisDiff, options: DiffOptions) -> str:
        """The whole comparison as a string."""
        ...


DIFF_REPORTERS: dict[str, DiffReporter] = {}


def register_diff_reporter(reporter: DiffReporter) -> DiffReporter:
    """Make ``reporter`` available as ``sysbreak diff --format reporter.name``."""
    return _add(DIFF_REPORTERS, reporter, DiffReporter, "sysbreak.report.reporters.DiffReporter")


def diff_formats() -> tuple[str, ...]:
    return tuple(DIFF_REPORTERS)


def get_diff_reporter(name: str) -> DiffReporter:
    """The diff reporter for ``--format name``; a one-line error naming the choices for an unknown one."""
    return _find(DIFF_REPORTERS, name, "sysbreak diff writes one of")


class TextDiffReporter:
    name = "text"
    description = "(the default) totals side by side, then the stacks matched by their frames"
    default_output: str | None = None
    terminal = True

    def render(self, d: AnalysisDiff, options: DiffOptions) -> str:
        from sysbreak.report.diff import render_diff_text

        return render_diff_text(d, top=options.top, color=options.color, width=options.width)


class JsonDiffReporter:
    name = "json"
    description = "format sysbreak-diff/2 (docs/report-json.md)"
    default_output: str | None = None
    terminal = False

    def render(self, d: AnalysisDiff, options: DiffOptions) -> str:
        import json

        from sysbreak.report.diff import diff_to_dict

        return json.dumps(diff_to_dict(d, top=options.top), indent=2, ensure_ascii=False) + "\n"


class HtmlDiffReporter:
    name = "html"
    description = "one self-contained page"
    default_output: str | None = "sysbreak-diff.html"
    terminal = False

    def render(self, d: AnalysisDiff, options: DiffOptions) -> str:
        from sysbreak.report.html_report import render_diff_html

        return render_diff_html(d, top=options.top)


for _diff_builtin in (TextDiffReporter(), JsonDiffReporter(), HtmlDiffReporter()):
    register_diff_reporter(_diff_builtin)
