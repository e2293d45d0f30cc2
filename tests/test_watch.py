"""`sysbreak watch`: /proc/PID/smaps over time with no ptrace; the pure logic, then real processes (grower)."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from conftest import Grower, run_sysbreak, sysbreak_argv
from rich.console import Console

from sysbreak.maps import parse_smaps
from sysbreak.watch import RegionChange, Watched, compare, rate_text, sparkline, verdict, watch

KIB = 1024
MIB = 1024 * 1024


def _smaps(*vmas: tuple[int, int, str, str, int], t: float = 0.0):  # type: ignore[no-untyped-def]
    """smaps text of (start, end, perms, path, rss_kb) VMAs, parsed."""
    lines = []
    for start, end, perms, path, rss_kb in vmas:
        inode = "1234" if path.startswith("/") else "0"
        lines.append(f"{start:x}-{end:x} {perms} 00000000 08:01 {inode}          {path}".rstrip())
        lines.append(f"Size: {(end - start) // 1024} kB")
        lines.append(f"Rss: {rss_kb} kB")
    return parse_smaps("\n".join(lines) + "\n", t=t)


def test_compare_matches_by_overlap_not_by_start() -> None:
    # An anonymous VMA that grew downwards (the kernel merged a new mmap below it): its start moved.
    first = _smaps(
        (0x7F0000100000, 0x7F0000200000, "rw-p", "", 1024), (0x7F0001000000, 0x7F0001001000, "r--p", "/lib/x", 4)
    )
    now = _smaps(
        (0x7F0000000000, 0x7F0000200000, "rw-p", "", 2048),
        (0x7F0001000000, 0x7F0001001000, "r--p", "/lib/x", 4),
        (0x7F0002000000, 0x7F0002400000, "---p", "", 0),
        t=60.0,
    )
    changes = {c.start: c for c in compare(first, now)}
    grown = changes[0x7F0000000000]
    assert (grown.first_size, grown.first_rss, grown.rss_growth, grown.status, grown.kind) == (
        MIB,
        MIB,
        MIB,
        "grew",
        "anon",
    )
    lib = changes[0x7F0001000000]
    assert (lib.status, lib.kind, lib.rss_growth) == ("same", "file", 0)
    reservation = changes[0x7F0002000000]
    assert (reservation.status, reservation.rss_growth, reservation.size_growth) == ("new", 0, 4 * MIB)


def test_rates_need_a_long_enough_span() -> None:
    assert rate_text(MIB, 60.0) == "+1.0 MiB/min"
    assert rate_text(MIB, 0.22) == ""  # `ls`: 2.4 MiB in 0.22 s is no rate
    assert rate_text(0, 60.0) == ""


def test_sparkline() -> None:
    assert sparkline([1, 1, 1]) == "▁▁▁"
    assert sparkline([0, 7, 14]) == "▁▅█"
    assert len(sparkline(list(range(100)), 40)) == 40


def _watched(first: tuple[int, int], last: tuple[int, int], span: float = 60.0) -> Watched:
    """A process whose anonymous and file RSS went from ``first`` to ``last`` (KiB) in ``span`` seconds."""
    w = Watched(pid=42, name="srv")
    for (anon, file), t in ((first, 0.0), (last, span)):
        w.add(
            _smaps(
                (0x7F0000000000, 0x7F0010000000, "rw-p", "", anon),
                (0x7F0020000000, 0x7F0030000000, "r--p", "/data/model.bin", file),
                t=t,
            )
        )
    return w


def test_verdict_anonymous_growth_is_worth_an_attach() -> None:
    text = verdict(_watched((1024, 100), (401 * 1024, 100)))
    assert text == (
        "pid 42 (srv): RSS grew by 400.0 MiB in 60 s (+400.0 MiB/min); 100% of it (400.0 MiB) in anonymous mappings "
        "([anon] 0x7f0000000000 +400.0 MiB): worth a `sysbreak attach 42` to see the call stacks that map them"
    )


def test_verdict_file_growth_is_not() -> None:
    text = verdict(_watched((1024, 0), (1024, 100 * 1024), span=2.0))
    assert text.startswith("pid 42 (srv): RSS grew by 100.0 MiB in 2 s, mostly in file-backed mappings")
    assert "/min" not in text  # 2 s does not support a rate
    assert "an `attach` is not the next step" in text


def test_verdict_no_growth_and_one_snapshot() -> None:
    assert verdict(_watched((1024, 0), (1024, 0))) == (
        "pid 42 (srv): RSS did not grow in 60 s (1.0 MiB -> 1.0 MiB); nothing to attach for yet"
    )
    w = Watched(pid=7)
    w.add(_smaps((0x1000, 0x2000, "rw-p", "", 4)))
    w.exited = "exited"
    assert verdict(w) == "pid 7: only one snapshot before a second snapshot (exited); watch longer to see growth"


def _region_at(changes: list[RegionChange], addr: int) -> RegionChange:
    return next(c for c in changes if c.start <= addr < c.end)


def test_watch_a_real_process_growing_each_way(grower: Callable[[], Grower], tmp_path: Path) -> None:
    """Between snapshots the grower maps 4 MiB touched, 8 MiB untouched, a 16 MiB reservation and a 1 MiB file:
    watch sees each exactly, tells anonymous from file-backed, shows the untouched ones as virtual only, and
    writes a capture that `sysbreak report` reads."""
    data = tmp_path / "data.bin"
    data.write_bytes(os.urandom(MIB))
    g = grower()
    for cmd in ("anon 4", "reserve 4", "lazy 4", f"file {data}"):  # page in the code of every step first
        g.do(cmd)
    # (the reservation between them keeps the kernel from merging the two read-write mappings into one VMA)
    steps = {1: ["anon 4096", "reserve 16384", "lazy 8192"], 2: [f"file {data}"]}
    addrs: dict[str, tuple[int, int]] = {}

    def on_snapshot(w: Watched) -> None:
        for cmd in steps.get(len(w.history), []):
            addrs[cmd.split()[0]] = g.do(cmd)

    out = io.StringIO()
    result = watch(
        [g.pid],
        interval=0.05,
        count=3,
        output=tmp_path / "cap",
        console=Console(file=out, width=200),
        live=False,
        on_snapshot=on_snapshot,
    )
    assert result.reason == "count"
    w = result.watched[0]
    assert len(w.history) == 3
    assert g.popen.poll() is None  # never stopped, still running
    changes = w.changes()
    anon = _region_at(changes, addrs["anon"][0])
    assert anon.kind == "anon" and anon.rss_growth == 4 * MIB
    lazy = _region_at(changes, addrs["lazy"][0])
    assert lazy.kind == "anon" and lazy.rss_growth == 0 and lazy.size_growth >= 8 * MIB
    reserve = _region_at(changes, addrs["reserve"][0])
    assert (reserve.perms, reserve.rss, reserve.size) == ("---p", 0, 16 * MIB)
    mapped = _region_at(changes, addrs["file"][0])
    assert (mapped.kind, mapped.path, mapped.status, mapped.rss, mapped.size) == ("file", str(data), "new", MIB, MIB)
    a, b = w.history[0], w.history[-1]
    assert b.rss - a.rss == 5 * MIB
    assert (b.anon_rss - a.anon_rss, b.file_rss - a.file_rss) == (4 * MIB, MIB)
    assert verdict(w).startswith(f"pid {g.pid} (grower): RSS grew by 5.0 MiB in ")
    assert f"80% of it (4.0 MiB) in anonymous mappings ([anon] {anon.start:#x} +4.0 MiB, {data} " in verdict(w)

    # The capture: three snapshots, each line naming the pid, and `report` reads it (no event log: no warning)
    index = [json.loads(line) for line in (tmp_path / "cap" / "snapshots" / "index.jsonl").read_text().splitlines()]
    assert [(x["seq"], x["pid"]) for x in index] == [(1, g.pid), (2, g.pid), (3, g.pid)]
    meta = json.loads((tmp_path / "cap" / "meta.json").read_text())
    assert (meta["command"], meta["pid"], meta["end_reason"], meta["events"]) == ("watch", g.pid, "count", 0)
    res = run_sysbreak("report", tmp_path / "cap", "--format", "json")
    assert res.returncode == 0, res.stderr
    doc = json.loads(res.stdout)
    assert doc["snapshots"] == 3
    assert doc["totals"]["rss_growth_bytes"] == 5 * MIB
    assert not [x for x in doc["warnings"] if "events.jsonl" in x]


def test_watch_cli_idle_process_and_several_pids(grower: Callable[[], Grower], tmp_path: Path) -> None:
    g1, g2 = grower(), grower()
    res = run_sysbreak("watch", g1.pid, g2.pid, "-n", "2", "-i", "0.1", "-o", tmp_path / "cap")
    assert res.returncode == 0, res.stderr
    assert f"pid {g1.pid} (grower): RSS did not grow in " in res.stdout
    assert f"pid {g2.pid} (grower): RSS did not grow in " in res.stdout
    assert f"`sysbreak report {tmp_path / 'cap'}` reads them" in res.stdout
    index = [json.loads(line) for line in (tmp_path / "cap" / "snapshots" / "index.jsonl").read_text().splitlines()]
    assert sorted(x["pid"] for x in index) == sorted([g1.pid, g1.pid, g2.pid, g2.pid])
    assert all(x["file"].startswith(f"smaps-{x['pid']}-") for x in index)
    res = run_sysbreak("report", tmp_path / "cap")
    assert res.returncode == 0, res.stderr
    assert f"the capture holds snapshots of 1 other process ({g2.pid}); this report is of pid {g1.pid}" in res.stdout


def test_watch_ends_when_the_process_exits(grower: Callable[[], Grower]) -> None:
    g = grower()

    def on_snapshot(w: Watched) -> None:
        if len(w.history) == 2:
            g.popen.stdin.write("quit\n")  # type: ignore[union-attr]
            g.popen.stdin.flush()  # type: ignore[union-attr]
            g.popen.wait(timeout=10)

    result = watch(
        [g.pid], interval=0.05, duration=30, console=Console(file=io.StringIO()), live=False, on_snapshot=on_snapshot
    )
    assert result.reason == "exited"
    assert result.watched[0].exited == "exited"
    assert verdict(result.watched[0]).startswith(f"pid {g.pid} (grower): RSS ")
    assert "(exited)" in verdict(result.watched[0])


def test_verdict_small_growth_is_noise() -> None:
    assert verdict(_watched((1024, 0), (1028, 0))) == (
        "pid 42 (srv): RSS grew by 4.0 KiB in 60 s (+4.0 KiB/min): less than 1.0 MiB, too little to chase; watch longer"
    )


def test_watch_ctrl_c_ends_with_the_verdict(grower: Callable[[], Grower], tmp_path: Path) -> None:
    g = grower()
    proc = subprocess.Popen(
        [*sysbreak_argv(), "watch", str(g.pid), "-i", "0.1", "-o", str(tmp_path / "cap")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    index = tmp_path / "cap" / "snapshots" / "index.jsonl"
    deadline = time.monotonic() + 30
    while (not index.exists() or len(index.read_text().splitlines()) < 2) and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert f"pid {g.pid} (grower): RSS did not grow in " in out
    assert json.loads((tmp_path / "cap" / "meta.json").read_text())["end_reason"] == "interrupted"
    assert g.popen.poll() is None


def test_watch_errors_are_one_line(tmp_path: Path, grower: Callable[[], Grower]) -> None:
    res = run_sysbreak("watch", "99999999")
    assert (res.returncode, res.stderr) == (3, "sysbreak: error: no process 99999999\n")
    res = run_sysbreak("watch", "1", "--interval", "0")
    assert (res.returncode, res.stderr) == (2, "sysbreak: error: --interval must be more than 0, not 0\n")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    g = grower()
    res = run_sysbreak("watch", g.pid, "-n", "1", "-o", tmp_path / "full")
    assert res.returncode == 2
    assert "already exists and is not empty" in res.stderr
    assert "Traceback" not in res.stderr


def test_the_live_view_shows_growing_regions_with_kind_rate_and_sparkline(grower: Callable[[], Grower]) -> None:
    """What the terminal shows while watching: per process its totals and sparkline, then the regions that grew."""
    from sysbreak.watch import render

    g = grower()
    g.do("anon 4")  # page in the code first
    addr: list[int] = []

    def on_snapshot(w: Watched) -> None:
        if len(w.history) == 1:
            addr.append(g.do("anon 2048")[0])

    result = watch(
        [g.pid], interval=0.05, count=2, console=Console(file=io.StringIO()), live=False, on_snapshot=on_snapshot
    )
    w = result.watched[0]
    # an hour-long watch, as the view would show it: the same growth over 60 s gives a rate
    w.history[-1].t = w.history[0].t + 60.0
    out = io.StringIO()
    Console(file=out, width=160, color_system=None).print(render([w], started=w.history[0].t, interval=1.0))
    text = out.getvalue()
    assert f"pid {g.pid} grower  RSS " in text and "(+2.0 MiB, +2.0 MiB/min)" in text
    assert "anon " in text and "file " in text and "virtual " in text
    assert sparkline([p.rss for p in w.history]) in text and "█" in text
    row = next(line for line in text.splitlines() if line.startswith(f"{addr[0]:016x}"))
    assert "+2.0 MiB " in row and "+2.0 MiB/min" in row and " anon " in row and "rw-p" in row  # new, or merged
    assert row.rstrip().endswith("[anon]")  # the mapping's name, not swallowed as markup
