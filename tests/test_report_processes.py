"""Reports of several processes, pure logic: the collapsed reporter's process frames (each process's own numbers
for a merged stack) and ``diff`` of two merged trees (stacks matched whichever processes made them)."""

from __future__ import annotations

import json

from sysbreak.analysis.model import Analysis, Frame, Sample, StackStats
from sysbreak.analysis.processes import _tag, merge, step_sum
from sysbreak.report import diff, render, render_diff

LEAK = (Frame(0x1010, "/bin/srv", 0x1010, "syscall"), Frame(0x1200, "/bin/srv", 0x1200, "leak_here"))
LOAD = (Frame(0x5010, "/lib/ld.so", 0x5010, "__mmap64"), Frame(0x5200, "/lib/ld.so", 0x5200, "_dl_map_segments"))


def one(pid: int, live: int, *, loader: bool = False) -> Analysis:
    stacks = [StackStats(id=1, frames=LEAK, events=live // 4096, live_bytes=live, mapped_bytes=live)]
    if loader:
        stacks.append(StackStats(id=2, frames=LOAD, events=1, live_bytes=8192, mapped_bytes=8192, kind="library"))
    a = Analysis(source=f"/c/{pid}", pid=pid, stacks=stacks, events=sum(s.events for s in stacks))
    _tag(a, pid)
    return a


def tree(pids: list[int], lives: list[int]) -> Analysis:
    merged = merge([one(pid, live, loader=i == 0) for i, (pid, live) in enumerate(zip(pids, lives, strict=True))])
    merged.processes = [
        {"pid": pid, "ppid": pids[0] if i else 1, "argv": ["/usr/bin/srv" if i == 0 else "/usr/bin/worker", "x"]}
        for i, pid in enumerate(pids)
    ]
    return merged


def test_merge_adds_up_the_replays_counts() -> None:
    parts = [one(10, 4096), one(11, 8192)]
    parts[0].reordered, parts[1].reordered = {"mremap": 2}, {"mremap": 1, "munmap": 1}
    parts[0].failed_releases, parts[1].failed_releases = 3, 4
    m = merge(parts)
    assert m.reordered == {"mremap": 3, "munmap": 1} and m.failed_releases == 7


def test_merge_keeps_each_processs_numbers() -> None:
    a = tree([10, 11, 12], [4096, 8192, 12288])
    leak = next(s for s in a.stacks if s.frames == LEAK)
    assert leak.pids == (10, 11, 12) and leak.live_bytes == 24576
    assert {pid: s.live_bytes for pid, s in leak.by_pid.items()} == {10: 4096, 11: 8192, 12: 12288}


def test_collapsed_lines_start_with_the_process_when_there_are_several() -> None:
    a = tree([10, 11, 12], [4096, 8192, 12288])
    assert render(a, "collapsed").splitlines() == [
        "srv-10;_dl_map_segments;__mmap64 8192",
        "srv-10;leak_here;syscall 4096",  # each process's own live bytes, not the merged stack's sum
        "worker-11;leak_here;syscall 8192",
        "worker-12;leak_here;syscall 12288",
    ]
    assert render(a, "collapsed", weight="events").splitlines()[1:] == [
        "srv-10;leak_here;syscall 1",
        "worker-11;leak_here;syscall 2",
        "worker-12;leak_here;syscall 3",
    ]
    merged = render(a, "collapsed", process_frames=False).splitlines()
    assert merged == ["_dl_map_segments;__mmap64 8192", "leak_here;syscall 24576"]


def test_collapsed_one_process_has_no_process_frame_unless_asked() -> None:
    a = one(42, 4096)
    a.processes = [{"pid": 42, "ppid": 1, "argv": ["./srv"]}]
    assert render(a, "collapsed") == "leak_here;syscall 4096\n"
    assert render(a, "collapsed", process_frames=True) == "srv-42;leak_here;syscall 4096\n"


def test_diff_matches_stacks_across_merged_trees_and_names_their_processes() -> None:
    before = tree([10, 11, 12], [4096, 8192, 12288])
    after = tree([20, 21], [4096, 4096])  # another run: other pids, one worker fewer
    d = diff(before, after)
    leak = next(c for c in d.stacks if c.frames == LEAK)
    assert leak.status == "both" and leak.live_delta == 8192 - 24576
    assert leak.a is not None and leak.b is not None
    assert leak.a.pids == [10, 11, 12] and leak.b.pids == [20, 21]
    doc = json.loads(render_diff(d, "json"))
    row = next(s for s in doc["stacks"] if s["frames"][1]["function"] == "leak_here")
    assert row["a"]["pids"] == [10, 11, 12] and row["b"]["pids"] == [20, 21]
    assert [p["pid"] for p in doc["a"]["processes"]] == [10, 11, 12]
    text = render_diff(d, "text", width=250)
    assert "processes A" in text and "srv-10, worker-11, worker-12" in text and "srv-20, worker-21" in text
    assert any(line.split()[:4] == ["processes", "3", "2", "-1"] for line in text.splitlines())
    html = render_diff(d, "html")
    assert "A: srv-10, worker-11, worker-12; B: srv-20, worker-21" in html


def test_diff_of_one_process_captures_says_no_processes() -> None:
    a, b = one(1, 4096), one(2, 8192)
    a.processes = [{"pid": 1, "ppid": 0, "argv": ["srv"]}]
    b.processes = [{"pid": 2, "ppid": 0, "argv": ["srv"]}]
    text = render_diff(diff(a, b), "text", width=250)
    assert "processes" not in text
    assert "processes A" not in render_diff(diff(a, b), "html")


def test_step_sum_holds_each_series_at_its_latest_point() -> None:
    assert step_sum([[(0.0, 10), (2.0, 30)], [(1.0, 5), (3.0, 0)]]) == [(0.0, 10), (1.0, 15), (2.0, 35), (3.0, 30)]
    assert step_sum([]) == []


def timed(pid: int, t0: float, rss: list[tuple[float, int]], live: int) -> Analysis:
    a = one(pid, live)
    a.t0, a.t1 = t0, t0 + rss[-1][0]
    a.timeline = [Sample(t, n, live) for t, n in rss]
    a.stacks[0].series = [(t, n // 2) for t, n in rss]
    return a


def test_the_merged_time_line_is_the_trees() -> None:
    root = timed(10, 100.0, [(0.0, 1000), (4.0, 3000)], 4096)
    worker = timed(11, 101.0, [(0.0, 500), (2.0, 700)], 8192)  # started a second later
    m = merge([root, worker])
    assert [(s.t, s.rss_bytes, s.live_bytes) for s in m.timeline] == [
        (0.0, 1000, 4096),
        (1.0, 1500, 12288),  # the worker's first snapshot, on the merged clock
        (3.0, 1700, 12288),
        (4.0, 3700, 12288),  # the root's last plus the worker's last
    ]
    assert m.process_rss == {10: [(0.0, 1000), (4.0, 3000)], 11: [(1.0, 500), (3.0, 700)]}
    assert m.stacks[0].series == [(0.0, 500), (1.0, 750), (3.0, 850), (4.0, 1850)]  # the stack's, summed too
    m.processes = [{"pid": 10, "ppid": 1, "argv": ["srv"]}, {"pid": 11, "ppid": 10, "argv": ["worker"]}]
    html = render(m, "html")
    assert "RSS of the tree: its 2 processes added up" in html
    assert 'RSS of <span class="mono">srv-10</span>' in html and "worker-11" in html
    assert html.count('class="proc-line"') == 2
    single = render(root, "html")
    assert "process RSS (snapshots)" in single and 'class="proc-line"' not in single


def test_json_report_has_each_processs_numbers() -> None:
    a = tree([10, 11], [4096, 8192])
    doc = json.loads(render(a, "json"))
    leak = next(s for s in doc["stacks"] if s["frames"][1]["function"] == "leak_here")
    assert {pid: part["live_bytes"] for pid, part in leak["by_pid"].items()} == {"10": 4096, "11": 8192}
    assert doc["process_rss"] == {"10": [], "11": []}  # no snapshots in these analyses


def test_a_json_report_of_a_tree_reads_back_whole() -> None:
    """Render JSON, read it back, render again: the same document, and the same per-process views from it (the
    collapsed process frames, the HTML plot's process lines, diff's processes), as from the analysis itself."""
    from sysbreak.analysis.model import BlindSpots
    from sysbreak.report import from_dict

    root = timed(10, 100.0, [(0.0, 1000), (4.0, 3000)], 4096)
    worker = timed(11, 101.0, [(0.0, 500), (2.0, 700)], 8192)
    a = merge([root, worker])
    a.processes = [{"pid": 10, "ppid": 1, "argv": ["srv"]}, {"pid": 11, "ppid": 10, "argv": ["worker"]}]
    a.blind_spots = BlindSpots(0, 0, [{"module": "/bin/srv", "offset": 16, "symbol": "f", "symbol_offset": 3}], 1)
    a.blind_spots.summary = "1 syscall site could not be watched"
    a.reordered = {"mremap": 2}
    text = render(a, "json")
    back = from_dict(json.loads(text))
    assert render(back, "json") == text
    leak = next(s for s in back.stacks if s.frames == LEAK)
    assert {pid: (s.live_bytes, s.events) for pid, s in leak.by_pid.items()} == {10: (4096, 1), 11: (8192, 2)}
    assert back.process_rss == a.process_rss == {10: [(0.0, 1000), (4.0, 3000)], 11: [(1.0, 500), (3.0, 700)]}
    assert back.blind_spots == a.blind_spots and back.reordered == a.reordered
    for weight in ("live", "events", "peak"):
        assert render(back, "collapsed", weight=weight) == render(a, "collapsed", weight=weight)
    assert render(back, "collapsed").splitlines()[:1] == ["srv-10;leak_here;syscall 4096"]  # not the tree's sum
    assert 'class="proc-line"' in render(back, "html")
    assert render(back, "html").count('class="proc-line"') == render(a, "html").count('class="proc-line"') == 2
    assert render(back, "text") == render(a, "text")
    other = tree([20, 21], [4096, 4096])
    assert render_diff(diff(back, other), "json") == render_diff(diff(a, other), "json")
