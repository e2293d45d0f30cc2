"""Smoke test of the benchmark harness (benchmarks/): it runs end to end in its tiny --quick configuration.

Only that it runs and reports is checked, never the numbers (this machine's speed is not the harness's
business).  The event-log arithmetic the harness relies on is checked exactly on a hand-made log.
"""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _event_module():  # benchmarks/ is a top-level package of the checkout, not of the installed sysbreak
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    return importlib.import_module("benchmarks.event")


def _log() -> list[dict[str, object]]:
    frames = [{"function": "syscall"}, {"function": "raw_map"}, {"function": "one_map"}, {"function": "main"}]
    other = [{"function": "syscall"}, {"function": "_dl_map_object"}]
    recs: list[dict[str, object]] = [
        {"type": "header", "format": "sysbreak-events/1"},
        {"type": "stack", "id": 1, "frames": frames, "python": []},
        {"type": "stack", "id": 2, "frames": other, "python": []},
        {"type": "syscall", "seq": 1, "t": 0.5, "tid": 7, "nr": 9, "stack": 2},  # not the workload's: ignored
    ]
    t = 1.0
    for i in range(4):  # mmap, +0.001 munmap, +0.003 next mmap ...
        recs.append({"type": "syscall", "seq": 2 + 2 * i, "t": t, "tid": 7, "nr": 9, "stack": 1})
        recs.append({"type": "syscall", "seq": 3 + 2 * i, "t": t + 0.001, "tid": 7, "nr": 11, "stack": 1})
        t += 0.004
    return recs


def test_event_gaps_from_a_log() -> None:
    event = _event_module()
    gaps, depths = event.workload_event_gaps(_log())
    assert len(gaps) == 7 and depths == [4] * 8
    with_calls, without = event._split_gaps(_log())
    assert [round(g, 6) for g in with_calls] == [0.003] * 3
    assert [round(g, 6) for g in without] == [0.001] * 4


@pytest.mark.slow
def test_quick_run_reports_every_part(tmp_path: Path) -> None:
    out = tmp_path / "latest.md"
    t = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", "--only", "overhead,scan,report,startup", "--output", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert time.monotonic() - t < 60
    table = proc.stdout
    assert "machine:" in table and "targets:" in table
    for section in ("overhead (1 thr)", "scan", "report", "startup"):
        assert section in table, table
    assert "native" in table and "objdump" in table
    md = out.read_text()
    assert md.startswith("# sysbreak benchmarks") and "| section | measure |" in md
    doc = json.loads(out.with_suffix(".json").read_text())
    assert doc["quick"] is True and doc["rows"]
    # every row either has a number, says why not, or is a label; nothing crashed
    assert not any(r["measure"] == "(error)" for r in doc["rows"]), doc["rows"]


def test_unknown_part_is_refused() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--only", "nonsense"], cwd=ROOT, capture_output=True, text=True
    )
    assert proc.returncode == 2 and "unknown part" in proc.stderr
