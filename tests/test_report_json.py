"""The JSON report (format sysbreak-report/2): exact keys and values on a hand-made analysis, and reading it back."""

from __future__ import annotations

import dataclasses
import json

import pytest
from support.sample import sample_analysis

from sysbreak.analysis.model import Analysis, Frame, PyFrame, Region, RegionOwner, Sample, StackStats
from sysbreak.errors import SysbreakError
from sysbreak.report import from_dict, render, to_dict

MiB = 1024 * 1024


def tiny() -> Analysis:
    stack = StackStats(
        id=7,
        frames=(
            Frame(pc=0x7F0000010F89D, module="/lib/libc.so.6", offset=0x10F89D, function="syscall"),
            Frame(
                pc=0x555555555189, module="/app/ucm_leak", offset=0x1189, function="leak_region", file="l.c", line=31
            ),
            Frame(pc=0x7F0000020000, module=None, offset=None, function=None),
        ),
        python=(PyFrame("/app/w.py", 41, "step"),),
        events=3,
        by_syscall={"mmap": 2, "munmap": 1},
        mapped_bytes=3 * MiB,
        unmapped_bytes=1 * MiB,
        live_bytes=2 * MiB,
        rss_bytes=MiB,
        growth_bytes=2 * MiB,
        growth_per_min=1.5 * MiB,
        first_t=100.5,
        last_t=110.0,
        label="leak_region (ucm_leak+0x1189)",
        stack_ids=(7, 9),
        rss_growth_bytes=MiB,
        anon_rss_bytes=MiB,
        peak_bytes=2 * MiB,
        rss_growth_per_min=0.75 * MiB,
        series=[(0.0, 0), (80.0, 2 * MiB)],
    )
    region = Region(
        start=0x7F0000000000,
        end=0x7F0000200000,
        perms="rw-p",
        path="[anon]",
        size=2 * MiB,
        rss=MiB,
        first_size=0,
        first_rss=None,
        status="new",
        owners=[RegionOwner(7, 2 * MiB)],
        unexplained_bytes=0,
    )
    return Analysis(
        source="cap",
        pid=42,
        exe="/app/ucm_leak",
        syscalls=["mmap", "munmap"],
        t0=100.0,
        t1=180.0,
        events=3,
        by_syscall={"mmap": 2, "munmap": 1},
        stacks=[stack],
        regions=[region],
        timeline=[Sample(0.0, 4 * MiB, 0), Sample(40.0, None, MiB), Sample(80.0, 5 * MiB, 2 * MiB)],
        snapshots=2,
        warnings=["cut short"],
    )


DOCUMENTED_STACK_KEYS = {
    "id", "rank", "label", "events", "by_syscall", "mapped_bytes", "unmapped_bytes", "live_bytes", "rss_bytes",
    "growth_bytes", "growth_per_min", "first_t", "last_t", "frames", "python", "stack_ids",
    "kind", "peak_bytes", "first_rss_bytes", "rss_growth_bytes", "anon_rss_bytes", "file_rss_bytes", "virtual_bytes",
    "reserved_bytes", "after_last_bytes", "rss_growth_per_min", "series", "pids",
}  # fmt: skip


def test_exact_document() -> None:
    doc = json.loads(render(tiny(), "json"))
    assert doc.pop("tool").startswith("sysbreak ")
    assert doc.pop("process_rss") == {}  # one process: no per-process RSS lines (test_report_processes.py)
    # fields the model gained later come along under their own names (test_fields_added_to_the_model_show_up)
    for stack in doc["stacks"]:
        for key in set(stack) - DOCUMENTED_STACK_KEYS:
            assert key in {f.name for f in dataclasses.fields(StackStats)}, key
            del stack[key]
    assert doc == {
        "format": "sysbreak-report/2",
        "headline": "Process RSS grew by 1.0 MiB in 80 s (+768.0 KiB/min); "
        "stack #1 leak_region (ucm_leak+0x1189) added 1.0 MiB of it (100%, anonymous)",
        "source": "cap",
        "pid": 42,
        "processes": [],
        "exe": "/app/ucm_leak",
        "syscalls": ["mmap", "munmap"],
        "t0": 100.0,
        "t1": 180.0,
        "duration_s": 80.0,
        "snapshots": 2,
        "sort": "rss-growth",
        "totals": {
            "events": 3,
            "by_syscall": {"mmap": 2, "munmap": 1},
            "stacks": 1,
            "mapped_bytes": 3 * MiB,
            "live_bytes": 2 * MiB,
            "regions": 1,
            "region_bytes": 2 * MiB,
            "region_rss_bytes": MiB,
            "growth_bytes": 2 * MiB,
            "rss_growth_bytes": MiB,
            "unexplained_bytes": 0,
            "candidates": 1,
            "rss_growth_of_candidates": MiB,
        },
        "folded": {"idle": "", "libraries": "", "library_stacks": []},
        "hints": [],
        "stacks": [
            {
                "id": 7,
                "rank": 1,
                "label": "leak_region (ucm_leak+0x1189)",
                "events": 3,
                "by_syscall": {"mmap": 2, "munmap": 1},
                "mapped_bytes": 3 * MiB,
                "unmapped_bytes": MiB,
                "kind": "candidate",
                "live_bytes": 2 * MiB,
                "peak_bytes": 2 * MiB,
                "rss_bytes": MiB,
                "first_rss_bytes": 0,
                "rss_growth_bytes": MiB,
                "anon_rss_bytes": MiB,
                "file_rss_bytes": 0,
                "virtual_bytes": MiB,
                "reserved_bytes": 0,
                "after_last_bytes": 0,
                "rss_growth_per_min": 0.75 * MiB,
                "growth_bytes": 2 * MiB,
                "growth_per_min": 1.5 * MiB,
                "first_t": 100.5,
                "last_t": 110.0,
                "frames": [
                    {
                        "function": "syscall",
                        "module": "/lib/libc.so.6",
                        "offset": 0x10F89D,
                        "file": None,
                        "line": None,
                        "pc": 0x7F0000010F89D,
                    },
                    {
                        "function": "leak_region",
                        "module": "/app/ucm_leak",
                        "offset": 0x1189,
                        "file": "l.c",
                        "line": 31,
                        "pc": 0x555555555189,
                    },
                    {
                        "function": None,
                        "module": None,
                        "offset": None,
                        "file": None,
                        "line": None,
                        "pc": 0x7F0000020000,
                    },
                ],
                "python": [{"file": "/app/w.py", "line": 41, "function": "step"}],
                "stack_ids": [7, 9],
                "series": [[0.0, 0], [80.0, 2 * MiB]],
                "pids": [],
            }
        ],
        "regions": [
            {
                "start": 0x7F0000000000,
                "end": 0x7F0000200000,
                "start_hex": "0x7f0000000000",
                "end_hex": "0x7f0000200000",
                "perms": "rw-p",
                "path": "[anon]",
                "size": 2 * MiB,
                "rss": MiB,
                "first_size": 0,
                "first_rss": None,
                "status": "new",
                "kind": "anon",
                "growth": 2 * MiB,
                "rss_growth": MiB,
                "owners": [{"stack": 7, "bytes": 2 * MiB}],
                "unexplained_bytes": 0,
                "pid": None,
            }
        ],
        "timeline": [
            {"t": 0.0, "rss_bytes": 4 * MiB, "live_bytes": 0},
            {"t": 40.0, "rss_bytes": None, "live_bytes": MiB},
            {"t": 80.0, "rss_bytes": 5 * MiB, "live_bytes": 2 * MiB},
        ],
        "warnings": ["cut short"],
        "blind_spots": None,
        "reordered": {},
        "failed_releases": 0,
    }


def test_empty_analysis_has_every_key() -> None:
    doc = to_dict(Analysis(source="nothing"))
    assert doc["format"] == "sysbreak-report/2"
    assert doc["stacks"] == [] and doc["regions"] == [] and doc["timeline"] == [] and doc["warnings"] == []
    assert doc["totals"]["events"] == 0 and doc["totals"]["by_syscall"] == {}
    assert doc["totals"]["rss_growth_bytes"] is None
    assert doc["pid"] is None and doc["exe"] is None and doc["duration_s"] == 0.0


def test_python_is_an_empty_list_when_none() -> None:
    doc = to_dict(sample_analysis())
    assert [s["python"] for s in doc["stacks"] if s["id"] != 3] == [[]] * 4
    assert doc["stacks"][1]["python"][0] == {"file": "/srv/app/worker.py", "line": 41, "function": "decode_step"}


def test_stacks_keep_the_analysis_order_and_top_cuts() -> None:
    a = sample_analysis()
    doc = to_dict(a)
    assert [s["id"] for s in doc["stacks"]] == [s.id for s in a.stacks]
    assert [s["rank"] for s in doc["stacks"]] == [1, 2, 3, 4, 5]
    top2 = to_dict(a, top=2)
    assert [s["id"] for s in top2["stacks"]] == [7, 3]
    assert top2["totals"]["stacks"] == 5  # totals are of the whole analysis


def test_round_trip_through_from_dict() -> None:
    a = sample_analysis(hostile=True)
    doc = json.loads(render(a, "json"))
    back = from_dict(doc)
    assert to_dict(back) == to_dict(a)
    assert back.duration == a.duration


def test_from_dict_rejects_other_versions_and_damage() -> None:
    doc = to_dict(tiny())
    with pytest.raises(SysbreakError, match="'sysbreak-report/3' report; this sysbreak reads 'sysbreak-report/1' and"):
        from_dict({**doc, "format": "sysbreak-report/3"})
    broken = {**doc, "stacks": [{"label": "no id"}]}
    with pytest.raises(SysbreakError, match="not a valid sysbreak-report/2 report"):
        from_dict(broken, name="x.json")


def test_a_version_1_report_still_reads() -> None:
    """A report saved by the previous version: no resident fields, ranked by live bytes; read as it was written."""
    v1 = to_dict(sample_analysis())
    v1["format"] = "sysbreak-report/1"
    for key in ("sort", "folded", "hints"):
        del v1[key]
    new_keys = set(DOCUMENTED_STACK_KEYS) - {
        "id", "rank", "label", "events", "by_syscall", "mapped_bytes", "unmapped_bytes", "live_bytes", "rss_bytes",
        "growth_bytes", "growth_per_min", "first_t", "last_t", "frames", "python", "stack_ids",
    }  # fmt: skip
    for stack in v1["stacks"]:
        for key in new_keys:
            del stack[key]
    a = from_dict(v1)
    assert a.sort == "live" and a.hints == []
    assert [s.id for s in a.stacks] == [s["id"] for s in v1["stacks"]]
    assert all(s.rss_growth_bytes == 0 and s.peak_bytes == 0 for s in a.stacks)
    assert [s.kind for s in a.stacks] == ["candidate", "candidate", "candidate", "candidate", "idle"]
    assert render(a, "text").startswith("Process RSS grew by 450.0 MiB in 60 s (+450.0 MiB/min); stack #1 ")


def test_fields_added_to_the_model_show_up() -> None:
    @dataclasses.dataclass
    class NewStack(StackStats):
        heat: float = 0.5

    @dataclasses.dataclass
    class NewAnalysis(Analysis):
        arch: str = "x86_64"
        totals: int = 99  # clashes with a documented key: the documented key wins

    base = tiny()
    fields = {f.name: getattr(base, f.name) for f in dataclasses.fields(Analysis)}
    stack = NewStack(**{f.name: getattr(base.stacks[0], f.name) for f in dataclasses.fields(StackStats)})
    fields["stacks"] = [stack]
    doc = to_dict(NewAnalysis(**fields))
    assert doc["arch"] == "x86_64"
    assert isinstance(doc["totals"], dict)
    assert doc["stacks"][0]["heat"] == 0.5


def test_every_model_field_is_in_the_report() -> None:
    """A field of the model must reach the JSON (under a documented name or its own)."""
    doc = to_dict(tiny())
    renamed = {"events": "totals", "by_syscall": "totals"}
    for f in dataclasses.fields(Analysis):
        assert renamed.get(f.name, f.name) in doc, f.name
    for f in dataclasses.fields(StackStats):
        assert f.name in doc["stacks"][0], f.name
    for f in dataclasses.fields(Region):
        assert {"stack_id": "owners"}.get(f.name, f.name) in doc["regions"][0], f.name
    for f in dataclasses.fields(Frame):
        assert f.name in doc["stacks"][0]["frames"][0], f.name
    for f in dataclasses.fields(Sample):
        assert f.name in doc["timeline"][0], f.name
