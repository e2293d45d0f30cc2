"""Folded stacks: root first, ``;``-separated, integer weights, Python frames spliced at the eval loop."""

from __future__ import annotations

import re

import pytest
from support.sample import sample_analysis

from sysbreak.analysis.model import Analysis, Frame, PyFrame, StackStats
from sysbreak.report import render
from sysbreak.report.collapsed import fold

MiB = 1024 * 1024


def test_live_weight_lines() -> None:
    assert render(sample_analysis(), "collapsed").splitlines() == [
        "__libc_start_call_main;main;leak_region;ucm_mmap;ucm_orig_mmap;syscall 419430400",
        "main;Py_RunMain;PyEval_EvalCode;_PyEval_EvalFrameDefault;<module> (main.py:3);run (worker.py:12);"
        "decode_step (worker.py:41);decoder_step;Decoder::step<float>(int);"
        "std::vector<char, std::allocator<char> >::_M_default_append(unsigned long);operator new(unsigned long);"
        "malloc;_int_malloc;sysmalloc;mmap64 62914560",
        "main;libsbstripped.so+0x1200;libsbstripped.so+0x1139 8388608",
        "main;malloc;sysmalloc;sbrk;brk 131072",
    ]


def test_zero_live_stacks_come_back_with_other_weights() -> None:
    a = sample_analysis()
    assert "scratch_buffer" not in render(a, "collapsed")
    mapped = render(a, "collapsed", weight="mapped")
    assert "main;scratch_buffer;mmap64 209715200\n" in mapped
    events = render(a, "collapsed", weight="events").splitlines()
    assert "main;scratch_buffer;mmap64 400" in events and len(events) == 5
    growth = render(a, "collapsed", weight="growth").splitlines()
    assert [line.rsplit(" ", 1)[1] for line in growth] == [str(400 * MiB), str(28 * MiB), str(128 * 1024)]


def test_lines_are_what_flamegraph_pl_parses() -> None:
    # flamegraph.pl: /^(.*)\s+?(\d+(?:\.\d*)?)$/ per line, frames split on ";"
    for line in render(sample_analysis(hostile=True), "collapsed", weight="mapped").splitlines():
        m = re.match(r"^(.*)\s+?(\d+(?:\.\d*)?)$", line)
        assert m, line
        assert all(m.group(1).split(";"))


def test_python_frames_go_at_the_root_without_an_eval_loop_frame() -> None:
    s = StackStats(
        id=1,
        frames=(Frame(None, "/l/libc.so.6", 0x10, "mmap64"), Frame(None, "/l/ext.so", 0x20, "ext_alloc")),
        python=(PyFrame("/a/inner.py", 2, "inner"), PyFrame("/a/outer.py", None, "outer")),
    )
    assert fold(s) == ["outer (outer.py)", "inner (inner.py:2)", "ext_alloc", "mmap64"]


def test_splice_after_the_innermost_eval_frame() -> None:
    s = StackStats(
        id=1,
        frames=(
            Frame(None, "/l/libc.so.6", 1, "mmap"),
            Frame(None, "/l/libpython.so", 2, "_PyEval_EvalFrameDefault"),
            Frame(None, "/l/mod.so", 3, "call_back"),
            Frame(None, "/l/libpython.so", 4, "_PyEval_EvalFrameDefault"),
            Frame(None, "/usr/bin/python3", 5, "main"),
        ),
        python=(PyFrame("b.py", 1, "b"),),
    )
    assert fold(s) == [
        "main",
        "_PyEval_EvalFrameDefault",
        "call_back",
        "_PyEval_EvalFrameDefault",
        "b (b.py:1)",
        "mmap",
    ]


def test_unknown_frames_separators_and_merging() -> None:
    stacks = [
        StackStats(id=1, frames=(Frame(0x7F00, None, None, None), Frame(None, "/l/a.so", 0x10, "f;g")), live_bytes=5),
        StackStats(id=2, frames=(Frame(0x7F01, None, None, None), Frame(None, "/l/a.so", 0x10, "f;g")), live_bytes=7),
        StackStats(id=3, frames=(Frame(None, None, None, None),), live_bytes=1),
        StackStats(id=4, frames=(), live_bytes=2),
    ]
    out = render(Analysis(source="x", stacks=stacks), "collapsed")
    # a frame with only a pc is its pc; with nothing known "??"; an empty stack is "??" too (and merges with it)
    assert out.splitlines() == ["?? 3", "f:g;0x7f00 5", "f:g;0x7f01 7"]


def test_identical_folded_stacks_are_merged() -> None:
    frames = (Frame(1, "/l/libc.so.6", 1, "mmap"), Frame(2, "/a/app", 2, "main"))
    stacks = [StackStats(id=1, frames=frames, live_bytes=3), StackStats(id=2, frames=frames, live_bytes=4)]
    assert render(Analysis(source="x", stacks=stacks), "collapsed") == "main;mmap 7\n"


def test_unknown_weight() -> None:
    with pytest.raises(ValueError, match="live, rss-growth, rss, peak, mapped, growth, events"):
        render(sample_analysis(), "collapsed", weight="heat")
    assert render(sample_analysis(), "collapsed", weight="rss-growth").count("\n") == 3  # 0: idle, stripped
