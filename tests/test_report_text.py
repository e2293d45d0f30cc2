"""The terminal report on hand-made analyses: headline, ranked stacks, frames, the annotated pmap view."""

from __future__ import annotations

import re

from support.sample import sample_analysis

from sysbreak.analysis.model import Analysis, Frame, Region, RegionOwner, Sample, StackStats
from sysbreak.report import render
from sysbreak.report._common import headline, human_bytes, human_duration, pmap_mode

MiB = 1024 * 1024


def lines(text: str) -> list[str]:
    return text.splitlines()


def test_human_sizes_and_durations() -> None:
    assert human_bytes(0) == "0 B"
    assert human_bytes(1023) == "1023 B"
    assert human_bytes(4096) == "4.0 KiB"
    assert human_bytes(412 * MiB) == "412.0 MiB"
    assert human_bytes(3 * 1024**3 // 2) == "1.5 GiB"
    assert human_bytes(-2 * MiB) == "-2.0 MiB"
    assert human_bytes(2 * MiB, signed=True) == "+2.0 MiB"
    assert human_bytes(None) == "-"
    assert human_duration(60) == "60 s"
    assert human_duration(0.25) == "0.25 s"
    assert human_duration(150) == "2.5 min"
    assert pmap_mode("rw-p") == "rw---"
    assert pmap_mode("r--s") == "r--s-"
    assert pmap_mode("r-x--") == "r-x--"


def test_headline_first_line() -> None:
    text = render(sample_analysis(), "text")
    assert lines(text)[0] == (
        "Process RSS grew by 450.0 MiB in 60 s (+450.0 MiB/min); "
        "stack #1 leak_region (ucm_leak+0x1189) added 399.0 MiB of it (89%, anonymous)"
    )


def test_headline_without_snapshots_and_without_anything() -> None:
    a = sample_analysis()
    a.regions, a.timeline, a.snapshots = [], [], 0
    assert headline(a) == (
        "881 events in 60 s; stack #1 leak_region (ucm_leak+0x1189) holds 400.0 MiB live (85% of the live bytes)"
    )
    assert headline(Analysis(source="x")) == "0 events captured; no call stack was captured"


def test_headline_says_where_the_rest_is_when_no_stack_owns_much() -> None:
    a = sample_analysis()
    ucm = a.stacks[0]
    ucm.rss_growth_bytes = ucm.rss_bytes = 30 * MiB  # 7% of the 450 MiB (still more than #2's 28 MiB)
    lib = StackStats(id=50, frames=(Frame(1, "/lib64/ld-linux-x86-64.so.2", 0x6A79, "_dl_map_segments"),))
    lib.kind, lib.live_bytes, lib.rss_bytes, lib.rss_growth_bytes = "library", 90 * MiB, 60 * MiB, 60 * MiB
    a.stacks.append(lib)
    assert headline(a) == (
        "Process RSS grew by 450.0 MiB in 60 s (+450.0 MiB/min); stack #1 leak_region (ucm_leak+0x1189) added "
        "30.0 MiB of it (7%, anonymous); 4 stacks added 58.1 MiB in all, libraries loaded 60.0 MiB"
    )


def test_without_snapshots_the_title_says_live_bytes_decide() -> None:
    a = sample_analysis()
    a.regions, a.timeline, a.snapshots = [], [], 0
    assert "Stacks by live bytes (no snapshots with Rss: resident bytes unknown)" in render(a, "text")


def test_headline_growth_nobody_explains() -> None:
    a = Analysis(
        source="maps",
        regions=[Region(0x1000, 0x3000, "rw-p", "[anon]", 0x2000, 0x2000, 0x1000, 0x1000, "grew", [], 0x2000)],
        snapshots=2,
    )
    assert headline(a) == (
        "1 region grew by 4.0 KiB between the first and last snapshot; no call stack was captured to attribute it to"
    )


def test_ranked_stack_table() -> None:
    text = render(sample_analysis(), "text")
    row = next(line for line in lines(text) if line.lstrip().startswith("1 ") and "leak_region" in line)
    assert re.search(
        r"1\s+leak_region \(ucm_leak\+0x1189\)\s+\+399\.0 MiB\s+399\.0 MiB\s+400\.0 MiB\s+405\.0 MiB\s+1\.0 MiB\s+"
        r"\+399\.0 MiB/min\s+410\.0 MiB\s+mmap 400, munmap 10$",
        row,
    ), row
    assert "Stacks by resident growth (4 of 4 stacks holding memory;" in text
    assert re.search(
        r"^#\s+stack\s+RSS growth\s+RSS\s+live\s+peak\s+virtual only\s+RSS/min\s+mapped\s+events$", text, re.M
    )
    # the stack that holds nothing now is one folded line, not a row
    assert "  1 stack holds nothing now (mmap 200, munmap 200): 200.0 MiB mapped and all of it unmapped again" in text
    assert "scratch_buffer" not in text
    for label in ("Decoder::step<float>(int)", "libsbstripped.so+0x1139", "malloc (libc.so.6+0xa4c5a)"):
        assert label in text


def test_frames_of_the_top_stacks() -> None:
    text = render(sample_analysis(), "text")
    assert re.search(r"^\s+1 ucm_orig_mmap\s+libucm\.so\.0\.0\.0\+0x9e1b\s+ucm/util/reloc\.c:102$", text, re.M)
    assert re.search(r"^\s+0 syscall\s+libc\.so\.6\+0x10f89d$", text, re.M)
    assert "Python, innermost first:" in text
    assert re.search(r"^\s*py0 decode_step\s+/srv/app/worker\.py:41$", text, re.M)
    # only the first three stacks get their frames listed: the stripped library is #4
    assert re.search(
        r"^#3 malloc \(libc\.so\.6\+0xa4c5a\)  \+124\.0 KiB RSS, 128\.0 KiB live, peak 128\.0 KiB", text, re.M
    )
    assert not re.search(r"^#4 ", text, re.M)
    assert not re.search(r"^\s+0 \?\?\s+libsbstripped\.so\+0x1139$", text, re.M)


def test_annotated_pmap_view() -> None:
    text = render(sample_analysis(), "text")
    assert re.search(r"^Address\s+Kbytes\s+RSS\s+Mode\s+Mapping\s+Change\s+Owned by$", text, re.M)
    assert re.search(
        r"^00007fffe0000000\s+409600\s+408576\s+rw---\s+\[anon\]\s+new \+400\.0 MiB\s+"
        r"#1 leak_region \(ucm_leak\+0x1189\) 400\.0 MiB$",
        text,
        re.M,
    )
    assert re.search(r"^0000555555559000\s+132\s+132\s+rw---\s+\[heap\]\s+grew \+128\.0 KiB\s+#3 malloc", text, re.M)
    assert re.search(r"^\s+unexplained 4\.0 MiB$", text, re.M)
    assert re.search(r"^00007ffff6000000\s+12288\s+3072\s+rw---\s+\[anon\]\s+shrank -4\.0 MiB\s+#4 ", text, re.M)
    assert re.search(r"^00007ffff7000000\s+2048\s+-\s+rw---\s+\[anon\]\s+gone -2\.0 MiB$", text, re.M)
    assert re.search(r"^total kB\s+485556\s+472376$", text, re.M)
    # unchanged regions without captured mappings are left out unless asked for
    assert "[stack]" not in text and "libc.so.6  " not in text
    assert "(5 of 10: changed anonymous regions first" in text
    # changed anonymous regions first, the biggest resident growth first
    order = [line.split()[0] for line in lines(text) if re.match(r"^[0-9a-f]{16} ", line)]
    assert order[:2] == ["00007fffe0000000", "00007fffd0000000"]
    full = render(sample_analysis(), "text", all_regions=True)
    assert re.search(r"^00007ffffffde000\s+132\s+20\s+rw---\s+\[stack\]$", full, re.M)


def test_no_colour_unless_asked_and_colour_when_asked() -> None:
    plain = render(sample_analysis(), "text")
    assert "\x1b[" not in plain
    assert all(line == line.rstrip() for line in plain.splitlines())
    coloured = render(sample_analysis(), "text", color=True, width=120)
    assert "\x1b[" in coloured


def test_markup_in_names_is_printed_as_is() -> None:
    text = render(sample_analysis(hostile=True), "text", top=10)
    assert "<script>alert(1)</script>" in text
    assert "[/bold]" not in text


def test_report_without_snapshots_or_stacks() -> None:
    a = Analysis(source="log", events=0)
    text = render(a, "text")
    assert "No memory map snapshots" in text
    maps_only = Analysis(
        source="a.pmap, b.pmap",
        regions=[Region(0x1000, 0x3000, "rw-p", "[anon]", 0x2000, None, 0x1000, None, "grew", [], 0x2000)],
        snapshots=2,
    )
    text = render(maps_only, "text")
    assert "Stacks" not in text
    assert re.search(
        r"^0000000000001000\s+8\s+-\s+rw---\s+\[anon\]\s+grew \+4\.0 KiB\s+unexplained 8\.0 KiB$", text, re.M
    )


def test_owner_beyond_top_and_unknown_owner() -> None:
    stacks = [
        StackStats(id=i, frames=(Frame(None, "/x/lib.so", i, f"f{i}"),), live_bytes=MiB * (10 - i)) for i in range(1, 4)
    ]
    region = Region(0x1000, 0x400000, "rw-p", "[anon]", 0x3FF000, 0x3FF000, 0, None, "new")
    region.owners = [RegionOwner(3, MiB), RegionOwner(77, 4096)]
    a = Analysis(source="x", stacks=stacks, regions=[region], timeline=[Sample(0, 0, 0), Sample(1, 1, 1)])
    text = render(a, "text", top=1)
    # stack 3 is not shown (--top 1), stack 77 is unknown: neither is named by a rank that is not in the table
    assert "2 stacks not listed above, 1.0 MiB" in text
    assert "#3" not in text and "77" not in text


def test_many_owners_are_summed_up() -> None:
    stacks = [
        StackStats(id=i, frames=(Frame(None, "/x/lib.so", i, f"f{i}"),), live_bytes=4096 * i) for i in range(1, 9)
    ]
    region = Region(0x1000, 0x100000, "rw-p", "[heap]", 0xFF000, 0xFF000, 0x1000, 0x1000, "grew")
    region.owners = [RegionOwner(i, 4096 * i) for i in range(1, 9)]
    text = render(Analysis(source="x", stacks=stacks, regions=[region]), "text")
    assert re.search(r"^0000000000001000 .* #8 f8 \(lib\.so\+0x8\) 32\.0 KiB$", text, re.M)
    assert re.search(r"^\s+\.\.\. 3 more stacks, 24\.0 KiB$", text, re.M)
    assert "f3 (lib.so+0x3) 12.0 KiB" not in text
