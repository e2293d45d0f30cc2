"""`sysbreak report` and `sysbreak diff` on the command line: outputs, and one clear line for every bad input."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from support.cli import one_error, run_in_process
from support.sample import sample_analysis

from sysbreak.report import render

Run = Callable[..., tuple[int, str, str]]


@pytest.fixture
def saved(tmp_path: Path) -> Path:
    path = tmp_path / "before.json"
    path.write_text(render(sample_analysis(), "json"), encoding="utf-8")
    return path


@pytest.fixture
def saved_after(tmp_path: Path) -> Path:
    a = sample_analysis()
    a.stacks = [s for s in a.stacks if s.id != 7]
    a.regions = [r for r in a.regions if r.status != "new"]
    path = tmp_path / "after.json"
    path.write_text(render(a, "json"), encoding="utf-8")
    return path


@pytest.fixture
def run(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Run:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("NO_COLOR", "1")
    return lambda *args: run_in_process(capsys, monkeypatch, *args)


# -- good inputs ---------------------------------------------------------------------------------------------------


def test_text_to_stdout(run: Run, saved: Path) -> None:
    code, out, err = run("report", str(saved))
    assert code == 0, err
    assert out.splitlines()[0].startswith(
        "Process RSS grew by 450.0 MiB in 60 s (+450.0 MiB/min); stack #1 leak_region"
    )
    assert "00007fffe0000000" in out and "\x1b[" not in out
    assert err == ""


def test_json_to_a_file(run: Run, saved: Path, tmp_path: Path) -> None:
    target = tmp_path / "out" / "r.json"
    target.parent.mkdir()
    code, out, err = run("report", str(saved), "--format", "json", "--output", str(target), "--top", "2")
    assert code == 0, err
    assert out == "" and f"wrote the json report to {target}" in err
    doc = json.loads(target.read_text())
    assert doc["format"] == "sysbreak-report/2" and len(doc["stacks"]) == 2
    assert not [p for p in target.parent.iterdir() if p.name != "r.json"]  # no temporary file left behind


def test_html_goes_to_the_default_file(run: Run, saved: Path, tmp_path: Path) -> None:
    code, out, err = run("report", str(saved), "-f", "html")
    assert code == 0, err
    page = (tmp_path / "sysbreak-report.html").read_text()
    assert page.startswith("<!DOCTYPE html>") and out == ""
    code, out, _ = run("report", str(saved), "-f", "html", "-o", "-")
    assert code == 0 and out.startswith("<!DOCTYPE html>")


def test_collapsed_with_weight(run: Run, saved: Path) -> None:
    code, out, err = run("report", str(saved), "--format", "collapsed", "--weight", "events")
    assert code == 0, err
    assert "main;scratch_buffer;mmap64 400" in out.splitlines()


def test_diff_text_and_json(run: Run, saved: Path, saved_after: Path, tmp_path: Path) -> None:
    code, out, err = run("diff", str(saved), str(saved_after))
    assert code == 0, err
    assert out.startswith("Process RSS growth went from 450.0 MiB in 60 s in A to 450.0 MiB in 60 s in B (+0%); ")
    assert "biggest change: leak_region (ucm_leak+0x1189), RSS growth +399.0 MiB -> absent" in out.splitlines()[0]
    assert "only A" in out
    code, out, err = run("diff", str(saved), str(saved_after), "--format", "json", "-o", str(tmp_path / "d.json"))
    assert code == 0, err
    doc = json.loads((tmp_path / "d.json").read_text())
    assert doc["format"] == "sysbreak-diff/2" and doc["delta"]["stacks_only_in_a"] == 1
    code, out, err = run("diff", str(saved), str(saved_after), "-f", "html", "-o", str(tmp_path / "d.html"))
    assert code == 0, err
    assert "Process RSS growth went from 450.0 MiB" in (tmp_path / "d.html").read_text()


def test_help_for_a_stranger(run: Run) -> None:
    code, out, _ = run("report", "--help")
    assert code == 0
    for needle in ("capture directory", "--maps", "--format", "--output", "--top", "--depth", "--group-outside"):
        assert needle in out
    code, out, _ = run("diff", "--help")
    assert code == 0 and "UCX_MEM_MMAP_HOOK_MODE" in out


# -- bad inputs: one line, exit 2, no traceback ----------------------------------------------------------------------


def test_nothing_to_report(run: Run) -> None:
    one_error(*run("report")[::2], "nothing to report")


def test_missing_source(run: Run) -> None:
    one_error(*run("report", "no/such/capture")[::2], "no/such/capture", "no such")


def test_directory_that_is_not_a_capture(run: Run, tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    one_error(*run("report", str(tmp_path / "empty"))[::2], "not a sysbreak capture directory")


def test_file_that_is_not_an_events_log(run: Run, tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("hello\n")
    one_error(*run("report", str(tmp_path / "notes.txt"))[::2], "not a sysbreak event log")
    (tmp_path / "other.json").write_text('{\n  "format": "something-else/1"\n}\n')
    one_error(*run("report", str(tmp_path / "other.json"))[::2], "not a sysbreak event log")


def test_damaged_saved_report(run: Run, tmp_path: Path) -> None:
    (tmp_path / "bad.json").write_text('{\n  "format": "sysbreak-report/1", "stacks": [{"label": "x"}]\n}\n')
    one_error(*run("report", str(tmp_path / "bad.json"))[::2], "not a valid sysbreak-report/2 report")


def test_missing_maps_file(run: Run) -> None:
    one_error(*run("report", "--maps", "gone.pmap")[::2], "--maps gone.pmap: no such file")


def test_maps_that_is_a_directory(run: Run, tmp_path: Path) -> None:
    one_error(*run("report", "--maps", str(tmp_path))[::2], "not a file")


def test_bad_regex(run: Run, saved: Path) -> None:
    one_error(*run("report", "--maps", str(saved), "--group-outside", "lib(ucm")[::2], "--group-outside", "lib(ucm")


def test_output_in_a_missing_directory(run: Run, saved: Path) -> None:
    one_error(*run("report", str(saved), "-o", "nowhere/r.txt")[::2], "cannot write the report to nowhere/r.txt")


def test_output_is_a_directory(run: Run, saved: Path, tmp_path: Path) -> None:
    one_error(*run("report", str(saved), "-f", "json", "-o", str(tmp_path))[::2], "it is a directory")


def test_default_html_output_is_a_directory(run: Run, saved: Path, tmp_path: Path) -> None:
    (tmp_path / "sysbreak-report.html").mkdir()
    one_error(*run("report", str(saved), "-f", "html")[::2], "sysbreak-report.html: it is a directory")


def test_bad_format_weight_top_depth(run: Run, saved: Path) -> None:
    one_error(*run("report", str(saved), "--format", "pdf")[::2], "--format 'pdf'", "text, json, html, collapsed")
    one_error(*run("report", str(saved), "-f", "collapsed", "--weight", "heat")[::2], "--weight 'heat'")
    one_error(*run("report", str(saved), "--sort", "size")[::2], "--sort 'size'", "rss-growth, rss, live, peak")
    one_error(*run("report", str(saved), "--weight", "mapped")[::2], "--format collapsed only")
    one_error(*run("report", str(saved), "--top", "0")[::2], "--top must be 1 or more")
    one_error(*run("report", "--maps", str(saved), "--depth", "0")[::2], "--depth must be 1 or more")


def test_analysis_options_on_a_saved_report(run: Run, saved: Path) -> None:
    one_error(*run("report", str(saved), "--depth", "3")[::2], "is a saved report")


def test_diff_bad_inputs(run: Run, saved: Path) -> None:
    one_error(*run("diff", str(saved), "missing-b")[::2], "missing-b", "no such")
    one_error(*run("diff", str(saved), str(saved), "--format", "pdf")[::2], "text, json, html")
    one_error(*run("diff", str(saved), str(saved), "-o", "nowhere/d.txt")[::2], "cannot write")


def test_a_real_process_prints_one_line(tmp_path: Path) -> None:
    """The installed entry point, in its own process: one line on stderr, exit 2, no traceback."""
    proc = subprocess.run(
        [sys.executable, "-c", "from sysbreak.cli import main; main()", "report", str(tmp_path / "nope")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert proc.stderr == f"sysbreak: error: {tmp_path / 'nope'}: no such capture directory or events log\n"
    assert proc.stdout == ""


# -- real captures, through the analysis ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def captures(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    from support.synthetic import synthetic_capture

    root = tmp_path_factory.mktemp("captures")
    synthetic_capture(root / "a", 600, 4, stacks=12, leak_stacks=2, seed=1, duration=60.0, live_target=300)
    synthetic_capture(root / "b", 600, 4, stacks=12, leak_stacks=0, seed=2, duration=60.0, live_target=300)
    return root / "a", root / "b"


def test_capture_in_every_format(run: Run, captures: tuple[Path, Path], tmp_path: Path) -> None:
    cap, _ = captures
    code, out, err = run("report", str(cap), "--top", "3")
    assert code == 0, err
    assert re.match(r"^Process RSS grew by .* in 60 s \(.*/min\); stack #1 ", out)
    assert "Stacks by resident growth (3 of " in out and "Regions, as pmap -x shows them" in out
    code, out, err = run("report", str(cap), "-f", "json")
    assert code == 0, err
    doc = json.loads(out)
    assert doc["format"] == "sysbreak-report/2" and doc["stacks"] and doc["regions"] and doc["timeline"]
    # the headline names what row #1 is, in every format
    assert doc["headline"].split("; ")[1].startswith(f"stack #1 {doc['stacks'][0]['label']} ")
    assert doc["totals"]["events"] == sum(doc["totals"]["by_syscall"].values())
    code, out, err = run("report", str(cap), "-f", "collapsed", "--weight", "mapped")
    assert code == 0, err
    assert all(re.match(r"^[^\n]+ \d+$", line) for line in out.splitlines()) and out
    code, _, err = run("report", str(cap), "-f", "html")
    assert code == 0, err
    page = (tmp_path / "sysbreak-report.html").read_text()
    assert page.count('<details class="stack"') == doc["totals"]["candidates"]
    assert f'<details class="stack" id="stack-{doc["stacks"][0]["id"]}" open>' in page


def test_bare_events_log_and_folding(run: Run, captures: tuple[Path, Path]) -> None:
    cap, _ = captures
    code, out, err = run("report", str(cap / "events.jsonl"), "-f", "json")
    assert code == 0, err
    assert json.loads(out)["regions"] == []
    code, out, err = run("report", str(cap), "-f", "json", "--depth", "2")
    assert code == 0, err
    assert all(len(s["frames"]) <= 2 for s in json.loads(out)["stacks"])


def test_maps_files_alone(run: Run, captures: tuple[Path, Path]) -> None:
    cap, _ = captures
    snaps = sorted((cap / "snapshots").glob("smaps-*.txt"))
    code, out, err = run("report", "--maps", str(snaps[0]), "--maps", str(snaps[-1]))
    assert code == 0, err
    assert "between the first and last snapshot" in out.splitlines()[0]
    assert "unexplained" in out


def test_diff_of_two_captures(run: Run, captures: tuple[Path, Path], tmp_path: Path) -> None:
    a, b = captures
    saved = tmp_path / "a.json"
    assert run("report", str(a), "-f", "json", "-o", str(saved))[0] == 0
    code, out, err = run("diff", str(saved), str(b))  # a saved report against a capture
    assert code == 0, err
    assert out.startswith("Process RSS growth went from ")
    code, out, err = run("diff", str(a), str(b), "-f", "json")
    assert code == 0, err
    doc = json.loads(out)
    assert doc["delta"]["stacks_only_in_a"] >= 1  # the leaking sites exist only in A
