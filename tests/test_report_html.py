"""The HTML report as text: self-contained, escaped, complete. (tests/test_html_browser.py renders it for real.)"""

from __future__ import annotations

import re

from support.sample import sample_analysis

from sysbreak.analysis.model import Analysis, Sample
from sysbreak.report import render
from sysbreak.report.html_report import MAX_PLOT_POINTS, plot

MiB = 1024 * 1024


def test_self_contained() -> None:
    page = render(sample_analysis(), "html")
    assert page.startswith("<!DOCTYPE html>")
    assert not re.search(r"https?://", page)
    assert not re.search(r"<link\b|\bsrc=|@import|url\(", page)
    assert page.count("<script") == 1 and page.count("<style") == 1
    assert not re.search(r"\son[a-z]+=", page)  # no inline event handlers


def test_hostile_names_are_escaped() -> None:
    page = render(sample_analysis(hostile=True), "html")
    assert page.count("<script") == 1  # ours, at the end
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "&lt;img src=x onerror=&#34;alert(2)&#34;&gt;" in page
    assert "&lt;svg onload=alert(3)&gt;" in page
    assert "&lt;/details&gt;&lt;b&gt;x.py:1" in page
    assert "&lt;script&gt;alert(4)&lt;/script&gt;" in page
    assert "&lt;b&gt;bold&lt;/b&gt; &amp; &lt;script&gt;alert(5)&lt;/script&gt;" in page
    assert "<img" not in page and "<b>" not in page
    assert 'title="/tmp/&#34;evil&#34;&amp;&#39;lib&#39;.so pc 0x7ffff7a00010"' in page


def test_content() -> None:
    a = sample_analysis()
    page = render(a, "html")
    assert "Process RSS grew by 450.0 MiB in 60 s (+450.0 MiB/min); stack #1 leak_region" in page
    assert page.count('<details class="stack"') == 4  # the stacks holding memory; the idle one is a folded line
    assert "1 stack holds nothing now (mmap 200, munmap 200): 200.0 MiB mapped" in page
    assert "scratch_buffer" not in page
    assert '<details class="stack" id="stack-7" open>' in page  # the first one is open
    assert "Decoder::step&lt;float&gt;(int)" in page
    assert '<polyline class="rss"' in page and '<path class="live"' in page
    assert page.count('<circle class="rss-dot"') == 13
    assert '<a href="#stack-7">#1</a> 400.0 MiB' in page
    assert '<span class="badge new">new +400.0 MiB</span>' in page
    assert '<span class="unexplained">unexplained 4.0 MiB</span>' in page
    assert "5 unchanged regions without captured mappings" in page
    assert '<td>total kB</td><td class="num">485556</td><td class="num">472376</td>' in page
    assert "decode_step" in page and "/srv/app/worker.py:41" in page
    assert "the capture was cut short" in page


def test_top_limits_the_stacks() -> None:
    page = render(sample_analysis(), "html", top=2)
    assert page.count('<details class="stack"') == 2
    assert "top 2 of 4 holding memory" in page
    assert "2 more stacks holding 8.1 MiB live (--top 4 lists them)" in page
    # owners that are not listed are never linked
    assert '<a href="#stack-12">' not in page and '<a href="#stack-1">' not in page


def test_empty_analysis() -> None:
    page = render(Analysis(source="empty.jsonl"), "html")
    assert "No time series" in page
    assert "No call stack was captured" in page
    assert "No memory map snapshots" in page


def test_plot_geometry() -> None:
    p = plot(sample_analysis().timeline)
    assert not p.empty
    assert [label for _, label in p.y_ticks] == ["0", "100 MiB", "200 MiB", "300 MiB", "400 MiB", "500 MiB"]
    assert [label for _, label in p.x_ticks] == ["0 s", "10 s", "20 s", "30 s", "40 s", "50 s", "60 s"]
    assert p.y_ticks[0][0] == p.y0 and p.y_ticks[-1][0] == p.y1
    assert p.x_ticks[0][0] == p.x0 and p.x_ticks[-1][0] == p.x1
    xs = [float(pt.split(",")[0]) for pt in p.rss_points.split()]
    assert xs == sorted(xs) and len(xs) == 13
    assert plot([]).empty and plot([Sample(0, 1, 1)]).empty


def test_plot_of_a_long_capture_is_bounded() -> None:
    samples = [Sample(float(i), MiB * i if i % 100 == 0 else None, (i % 7) * MiB) for i in range(20000)]
    p = plot(samples)
    assert p.live_path.count("H") <= MAX_PLOT_POINTS + 1
    assert [label for _, label in p.x_ticks] == ["0 h", "1 h", "2 h", "3 h", "4 h", "5 h"]
    assert [label for _, label in p.y_ticks] == ["0", "5 GiB", "10 GiB", "15 GiB", "20 GiB"]
    assert len(p.rss_points.split()) == 200 and p.rss_markers == []


def test_many_owners_fold_into_details() -> None:
    from sysbreak.analysis.model import Frame, Region, RegionOwner, StackStats

    stacks = [
        StackStats(id=i, frames=(Frame(None, "/x/lib.so", i, f"f{i}"),), live_bytes=4096 * i) for i in range(1, 10)
    ]
    region = Region(0x1000, 0x100000, "rw-p", "[heap]", 0xFF000, 0xFF000, 0x1000, 0x1000, "grew")
    region.owners = [RegionOwner(i, 4096 * i) for i in range(1, 10)]
    page = render(Analysis(source="x", stacks=stacks, regions=[region]), "html")
    assert '<details class="owners"><summary>3 more stacks, 24.0 KiB</summary>' in page
    assert page.count('<span class="owner">') == 9
