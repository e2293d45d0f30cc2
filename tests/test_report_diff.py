"""`diff`: stacks matched by frame signature (function + module of the frames outside allocator and hook layers),
not by ids, pcs or labels."""

from __future__ import annotations

import dataclasses
import json
import re

from support.sample import sample_analysis

from sysbreak.analysis.model import Analysis, Frame, PyFrame, Region, Sample, StackStats
from sysbreak.report import diff, diff_headline, render_diff
from sysbreak.report.diff import signature

MiB = 1024 * 1024


def moved(stack: StackStats, new_id: int, shift: int = 0x1000) -> StackStats:
    """The same stack as seen in another run: other id, other pcs (ASLR), other lines."""
    frames = tuple(
        dataclasses.replace(f, pc=None if f.pc is None else f.pc + shift, line=None if f.line is None else f.line + 1)
        for f in stack.frames
    )
    return dataclasses.replace(stack, id=new_id, frames=frames)


def after_fix() -> Analysis:
    a = sample_analysis()
    b = sample_analysis()
    by_id = {s.id: s for s in a.stacks}
    b.stacks = [
        moved(dataclasses.replace(by_id[3], live_bytes=70 * MiB, growth_bytes=0, events=80), 103),
        moved(by_id[12], 112),
        moved(by_id[1], 101),
        StackStats(
            id=200,
            frames=(Frame(1, "/usr/lib/libc.so.6", 0x11B6A0, "mmap64"), Frame(2, "/opt/ucx/libuct.so", 0x40, "uct_mm")),
            events=4,
            by_syscall={"mmap": 4},
            mapped_bytes=16 * MiB,
            live_bytes=16 * MiB,
            label="uct_mm (libuct.so+0x40)",
        ),
    ]
    b.regions = [r for r in b.regions if r.status != "new"]
    b.timeline = [Sample(s.t, None if s.rss_bytes is None else 12 * MiB + int(s.t * 0.1 * MiB), 0) for s in a.timeline]
    b.events = sum(s.events for s in b.stacks)
    return b


def test_matching_ignores_ids_pcs_and_lines() -> None:
    a = sample_analysis()
    s = a.stacks[1]
    assert signature(s) == signature(moved(s, 999))
    other_module = dataclasses.replace(s, frames=(dataclasses.replace(s.frames[0], module="/other/libc.so.7"),))
    assert signature(other_module) != signature(s)
    # a frame without a function is told apart by its module offset; the module's directory does not matter
    stripped = a.stacks[2]
    relocated = dataclasses.replace(
        stripped,
        frames=tuple(
            dataclasses.replace(f, module=f"/elsewhere/{str(f.module).rsplit('/', 1)[1]}") for f in stripped.frames
        ),
    )
    assert signature(relocated) == signature(stripped)
    assert signature(dataclasses.replace(s, python=(PyFrame("/x/other.py", 1, "other"),))) != signature(s)


def test_per_stack_changes() -> None:
    d = diff(sample_analysis(), after_fix())
    status = {c.label: c.status for c in d.stacks}
    assert status == {
        "leak_region (ucm_leak+0x1189)": "only_a",
        "scratch_buffer (ucm_leak+0x1400)": "only_a",
        "Decoder::step<float>(int) (libdecoder.so+0x3a80)": "both",
        "libsbstripped.so+0x1139": "both",
        "malloc (libc.so.6+0xa4c5a)": "both",
        "uct_mm (libuct.so+0x40)": "only_b",
    }
    first = d.stacks[0]
    assert first.label == "leak_region (ucm_leak+0x1189)"
    assert (first.live_delta, first.growth_delta, first.events_delta) == (-400 * MiB, -400 * MiB, -410)
    dec = next(c for c in d.stacks if c.label.startswith("Decoder"))
    assert dec.a is not None and dec.b is not None
    assert (dec.a.ids, dec.b.ids) == ([3], [103])
    assert (dec.live_delta, dec.growth_delta, dec.events_delta) == (10 * MiB, -28 * MiB, 16)
    new = next(c for c in d.stacks if c.status == "only_b")
    assert new.live_delta == 16 * MiB and new.a is None
    assert [c.label for c in d.stacks][:3] == [
        "leak_region (ucm_leak+0x1189)",
        "uct_mm (libuct.so+0x40)",
        "Decoder::step<float>(int) (libdecoder.so+0x3a80)",
    ]
    assert len(d.only_a) == 2 and len(d.only_b) == 1 and len(d.common) == 3


def test_same_signature_stacks_are_added_together() -> None:
    s = sample_analysis().stacks[0]
    a = Analysis(source="a", stacks=[s, moved(s, 70)])
    d = diff(a, Analysis(source="b"))
    assert len(d.stacks) == 1 and d.stacks[0].a is not None
    assert d.stacks[0].a.ids == [7, 70] and d.stacks[0].a.live_bytes == 800 * MiB


def test_headline() -> None:
    d = diff(sample_analysis(), after_fix())
    assert diff_headline(d) == (
        "Process RSS growth went from 450.0 MiB in 60 s in A to 6.0 MiB in 60 s in B (-99%); "
        "biggest change: leak_region (ucm_leak+0x1189), RSS growth +399.0 MiB -> absent; 2 stacks only in A, "
        "1 only in B"
    )


def test_headline_compares_rates_when_durations_differ() -> None:
    a = sample_analysis()
    b = sample_analysis()
    b.t1 = (b.t0 or 0) + 120.0
    b.timeline = [dataclasses.replace(s, t=s.t * 2) for s in b.timeline]
    text = diff_headline(diff(a, b))
    assert text.startswith("Process RSS growth went from 450.0 MiB/min in A to 225.0 MiB/min in B (-50%)")


def test_headline_without_snapshots_uses_live_bytes() -> None:
    a = Analysis(source="a", stacks=[StackStats(id=1, frames=(), live_bytes=MiB)])
    b = Analysis(source="b")
    assert diff_headline(diff(a, b)).startswith(
        "Live bytes of captured stacks went from 1.0 MiB in A to 0 B in B (-100%)"
    )
    region = [Region(0x1000, 0x2000, "rw-p", "[anon]", 0x1000, None, 0, None, "new")]
    a.regions, b.regions = region, region
    assert diff_headline(diff(a, b)).startswith("Region growth went from 4.0 KiB in A to 4.0 KiB in B (+0%)")


def test_text_rendering() -> None:
    text = render_diff(diff(sample_analysis(), after_fix()), "text")
    assert text.splitlines()[0].startswith("Process RSS growth went from 450.0 MiB")
    assert "Stacks by size of change (5 of 5 holding memory; 3 in both, 2 only in A, 1 only in B)" in text
    # scratch_buffer holds nothing in either capture: one folded line, not a row
    assert "  1 stack holds nothing on either side (1 only in A, 0 only in B; 400 calls in A, 0 in B)" in text
    assert "scratch_buffer" not in text
    row = next(line for line in text.splitlines() if "leak_region" in line and "only A" in line)
    assert re.search(
        r"^only A\s+leak_region \(ucm_leak\+0x1189\)\s+\+399\.0 MiB\s+-\s+-399\.0 MiB\s+400\.0 MiB\s+-\s+410\s+-$", row
    ), row
    assert re.search(
        r"^\s+Decoder::step<float>\(int\) \(libdecoder\.so\+0x3a80\)\s+\+28\.0 MiB\s+\+28\.0 MiB\s+0\s+60\.0 MiB\s+"
        r"70\.0 MiB",
        text,
        re.M,
    )
    assert re.search(r"^process RSS growth\s+450\.0 MiB\s+6\.0 MiB\s+-444\.0 MiB$", text, re.M)
    assert "\x1b[" not in text


def test_json_rendering() -> None:
    doc = json.loads(render_diff(diff(sample_analysis(), after_fix()), "json"))
    assert doc["format"] == "sysbreak-diff/2"
    assert set(doc) == {"format", "headline", "a", "b", "delta", "stacks"}
    assert doc["delta"]["stacks_only_in_a"] == 2 and doc["delta"]["stacks_only_in_b"] == 1
    assert doc["delta"]["rss_growth_bytes"] == 6 * MiB - 450 * MiB
    assert doc["a"]["rss_growth_bytes"] == 450 * MiB
    first = doc["stacks"][0]
    assert first["status"] == "only_a" and first["b"] is None
    assert first["a"] == {
        "ids": [7],
        "kind": "candidate",
        "live_bytes": 400 * MiB,
        "rss_bytes": 399 * MiB,
        "rss_growth_bytes": 399 * MiB,
        "peak_bytes": 405 * MiB,
        "growth_bytes": 400 * MiB,
        "mapped_bytes": 410 * MiB,
        "events": 410,
    }
    assert first["delta"] == {
        "live_bytes": -400 * MiB,
        "rss_bytes": -399 * MiB,
        "rss_growth_bytes": -399 * MiB,
        "growth_bytes": -400 * MiB,
        "mapped_bytes": -410 * MiB,
        "events": -410,
    }
    assert first["frames"][3] == {
        "function": "leak_region",
        "module": "/srv/app/fixtures/build/ucm_leak",
        "offset": 0x1189,
    }
    assert len(json.loads(render_diff(diff(sample_analysis(), after_fix()), "json", top=2))["stacks"]) == 2


def test_a_stack_matches_across_a_removed_hook_layer() -> None:
    """With UCX_MEM_MMAP_HOOK_MODE=none the program's stack reaches the kernel through libc, not libucm: the frames
    outside the layers are the same, so it is one stack in both captures, not "only A" plus "only B"."""
    a = sample_analysis()
    hooked = a.stacks[0]
    direct = dataclasses.replace(
        hooked, id=70, frames=(Frame(1, "/usr/lib/x86_64-linux-gnu/libc.so.6", 0x11B6A0, "mmap64"), *hooked.frames[3:])
    )
    assert signature(direct) == signature(hooked)
    b = sample_analysis()
    b.stacks = [direct if s.id == hooked.id else s for s in b.stacks]
    d = diff(a, b)
    assert d.only_a == [] and d.only_b == []
    assert next(c for c in d.stacks if c.label.startswith("leak_region")).status == "both"


def test_html_rendering() -> None:
    page = render_diff(diff(sample_analysis(), after_fix()), "html")
    assert page.startswith("<!DOCTYPE html>")
    assert "Process RSS growth went from 450.0 MiB in 60 s in A to 6.0 MiB in 60 s in B (-99%)" in page
    assert "3 in both, 2 only in A, 1 only in B" in page
    assert "1 stack holds nothing on either side" in page and "scratch_buffer" not in page
    assert "Decoder::step&lt;float&gt;(int)" in page  # escaped
    assert not re.search(r"https?://", page)


def test_diff_formats_come_from_one_registry() -> None:
    """``sysbreak diff`` formats are reporters behind one Protocol, as ``sysbreak report``'s are."""
    import pytest

    from sysbreak.errors import SysbreakError
    from sysbreak.report import reporters

    assert reporters.diff_formats() == ("text", "json", "html")
    d = diff(sample_analysis(), after_fix())

    class Tsv:
        name = "tsv-test"
        description = "test only"
        default_output = None
        terminal = False

        def render(self, d: object, options: reporters.DiffOptions) -> str:
            return f"top\t{options.top}\n"

    reporters.register_diff_reporter(Tsv())
    try:
        assert render_diff(d, "tsv-test", top=3) == "top\t3\n"
    finally:
        del reporters.DIFF_REPORTERS["tsv-test"]
    assert json.loads(render_diff(d, "json"))["format"] == "sysbreak-diff/2"
    with pytest.raises(SysbreakError, match="sysbreak diff writes one of text, json, html"):
        render_diff(d, "xml")
    with pytest.raises(TypeError):
        reporters.register_diff_reporter(object())  # type: ignore[arg-type]
