"""Reporters behind one Protocol: the built-in ones are registered, a new one needs no other change."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from support.cli import one_error, run_in_process
from support.sample import sample_analysis

from sysbreak.analysis.model import Analysis
from sysbreak.report import REPORTERS, Reporter, ReportOptions, get_reporter, register_reporter, render


class StackCount:
    name = "stack-count"
    description = "one line: how many stacks"
    default_output: str | None = None
    terminal = False

    def render(self, analysis: Analysis, options: ReportOptions) -> str:
        stacks = analysis.stacks[: options.top] if options.top else analysis.stacks
        return f"{len(stacks)} stacks\n"


@pytest.fixture
def registered() -> Iterator[StackCount]:
    reporter = StackCount()
    register_reporter(reporter)
    yield reporter
    REPORTERS.pop(reporter.name, None)


def test_the_builtin_formats_are_reporters() -> None:
    assert list(REPORTERS)[:4] == ["text", "json", "html", "collapsed"]
    for r in REPORTERS.values():
        assert isinstance(r, Reporter) and r.description
    assert get_reporter("html").default_output == "sysbreak-report.html"
    analysis = sample_analysis()
    assert render(analysis, "json") == get_reporter("json").render(analysis, ReportOptions())


def test_a_registered_reporter_is_a_format_of_render_and_of_the_cli(
    registered: StackCount, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    analysis = sample_analysis()
    assert render(analysis, "stack-count", top=1) == "1 stacks\n"
    saved = tmp_path / "r.json"
    saved.write_text(render(analysis, "json"))
    code, out, err = run_in_process(capsys, monkeypatch, "report", saved, "-f", "stack-count")
    assert code == 0, err
    assert out == f"{len(analysis.stacks)} stacks\n"


def test_unknown_format_and_a_non_reporter(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    code, _out, err = run_in_process(capsys, monkeypatch, "report", tmp_path, "-f", "xml")
    one_error(code, err, "--format 'xml': choose one of text, json, html, collapsed")
    with pytest.raises(TypeError, match="does not implement sysbreak.report.Reporter"):
        register_reporter(object())  # type: ignore[arg-type]
