"""Report: analysis throughput (events/s) and peak RSS on a synthetic capture, measured in a child process."""

from __future__ import annotations

import json
import shutil
import sys

from benchmarks.common import NOT_BUILT, RESULTS, ROOT, Config, Row, fmt_s, median, run_timed, verdict

TARGET_EVENTS_PER_S = 200_000
TARGET_RSS_MB = 500

# The synthetic capture is test-only code (tests/support/synthetic.py), not part of the package.
GENERATE = """
import json, sys, time
sys.path.insert(0, sys.argv[4])
try:
    from support.synthetic import synthetic_capture
except ImportError as exc:
    print(json.dumps({"error": "import: %s" % exc})); sys.exit(0)
t = time.perf_counter()
truth = synthetic_capture(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))
print(json.dumps({"s": time.perf_counter() - t, "events": truth.events}))
"""

# The peak RSS of the whole child (interpreter + sysbreak + the analysis), from getrusage after the work.
ANALYZE = """
import json, resource, sys, time
try:
    from sysbreak.analysis import analyze
except ImportError as exc:
    print(json.dumps({"error": "import: %s" % exc})); sys.exit(0)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t = time.perf_counter()
a = analyze(sys.argv[1])
dt = time.perf_counter() - t
print(json.dumps({"s": dt, "maxrss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, "before_kb": before}))
"""


def _json(stdout: str) -> dict[str, object]:
    try:
        return dict(json.loads(stdout.strip().splitlines()[-1]))
    except (ValueError, IndexError):
        return {"error": "no result"}


def run(cfg: Config) -> list[Row]:
    section = "report"
    events, snaps = cfg.report_events, cfg.report_snapshots
    what = f"analyze() of {events:,} events, {snaps} snapshots"
    cap = RESULTS / f"synthetic-{events}-{snaps}"
    done = cap / ".complete"
    if not done.exists():  # generated once, kept (git-ignored) for later runs: it is deterministic
        shutil.rmtree(cap, ignore_errors=True)
        t = run_timed(
            [sys.executable, "-c", GENERATE, str(cap), str(events), str(snaps), str(ROOT / "tests")], timeout=1200
        )
        res = _json(t.stdout) if t.rc == 0 else {"error": (t.stderr.strip().splitlines() or ["?"])[-1][:120]}
        if "error" in res:
            value = NOT_BUILT if "import" in str(res["error"]) else "n/a"
            return [Row(section, what, value, note=str(res["error"]))]
        done.write_text(json.dumps(res))
    secs: list[float] = []
    rss: list[float] = []
    for _ in range(cfg.repeat):
        t = run_timed([sys.executable, "-c", ANALYZE, str(cap)], timeout=max(cfg.timeout, 600))
        res = _json(t.stdout) if t.rc == 0 else {"error": (t.stderr.strip().splitlines() or ["?"])[-1][:120]}
        if "error" in res:
            value = NOT_BUILT if "import" in str(res["error"]) else "n/a"
            return [Row(section, what, value, note=str(res["error"]))]
        secs.append(float(str(res["s"])))
        rss.append(float(str(res["maxrss_kb"])) / 1024)
    s = median(secs)
    eps = events / s
    peak = max(rss)
    return [
        Row(section, what, fmt_s(s), note=f"median of {len(secs)}"),
        Row(
            section,
            "analysis throughput",
            f"{eps:,.0f} events/s",
            target=f">= {TARGET_EVENTS_PER_S:,} events/s",
            verdict=verdict(eps >= TARGET_EVENTS_PER_S),
        ),
        Row(
            section,
            "peak RSS of the analysing process",
            f"{peak:.0f} MB",
            target=f"<= {TARGET_RSS_MB} MB",
            verdict=verdict(peak <= TARGET_RSS_MB),
            note="ru_maxrss, max over repeats",
        ),
    ]
