"""Cost per captured event (20-frame stacks) and per non-matching hit in exhaustive mode."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from benchmarks.common import (
    NOT_BUILT,
    ROOT,
    WORKLOAD,
    Config,
    Row,
    fmt_us,
    median,
    p95,
    run_timed,
    verdict,
)
from benchmarks.overhead import sysbreak_command

TARGET_EVENT_US = 250.0
TARGET_EXHAUSTIVE_US = 60.0


def read_log(path: Path) -> list[dict[str, Any]]:
    """The records of an event log; a last line cut short is skipped, as the format allows. Stack records get
    their frames from the format's reader (a raw stack, sysbreak-events/3, is unwound there)."""
    from dataclasses import asdict

    from sysbreak.capture import read_events
    from sysbreak.capture.schema import StackRecord

    frames = {r.id: [asdict(f) for f in r.frames] for r in read_events(path) if isinstance(r, StackRecord)}
    out = []
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if rec.get("type") == "stack" and rec.get("id") in frames:
                rec["frames"] = frames[rec["id"]]
            out.append(rec)
    return out


def log_of(cmd: list[str]) -> Path:
    if "-o" in cmd:
        return Path(cmd[cmd.index("-o") + 1]) / "events.jsonl"
    brk = next(a for a in cmd if a.startswith("sysbreak break"))
    return Path(brk.split("--log ", 1)[1].split()[0])


def workload_event_gaps(records: list[dict[str, Any]]) -> tuple[list[float], list[int]]:
    """Gaps between consecutive caught calls made by the workload's one_map() (same thread), and stack depths.

    With -c 0 the workload does nothing between two such calls but touch one page, so a gap is the cost of
    capturing one event (entry stop, stack, return value, log line) plus a few microseconds of real work.
    """
    stacks = {r["id"]: r.get("frames", []) for r in records if r.get("type") == "stack"}
    ours = [
        r
        for r in records
        if r.get("type") == "syscall" and any(f.get("function") == "one_map" for f in stacks.get(r.get("stack"), []))
    ]
    gaps: list[float] = []
    depths = [len(stacks.get(r["stack"], [])) for r in ours]
    for a, b in zip(ours, ours[1:], strict=False):
        if a.get("tid") == b.get("tid") and isinstance(a.get("t"), float) and isinstance(b.get("t"), float):
            gaps.append(b["t"] - a["t"])
    return gaps, depths


def run(cfg: Config) -> list[Row]:
    tmp = Path(tempfile.mkdtemp(prefix="event-", dir=ROOT / "benchmarks" / "results"))
    try:
        return _captured(cfg, tmp) + _exhaustive(cfg, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _fresh(cmd: list[str]) -> None:
    if "-o" in cmd:
        shutil.rmtree(cmd[cmd.index("-o") + 1], ignore_errors=True)
    else:
        log_of(cmd).unlink(missing_ok=True)


def _captured(cfg: Config, tmp: Path) -> list[Row]:
    section = "event"
    target = f"<= {TARGET_EVENT_US:.0f} us"
    m1, m2 = cfg.event_maps
    wl = [str(WORKLOAD), "-c", "0", "-t", "1", "-d", str(cfg.depth)]
    c1 = sysbreak_command([*wl, "-m", str(m1)], tmp, "ev1")
    c2 = sysbreak_command([*wl, "-m", str(m2)], tmp, "ev2")
    # the same capture with GDB's own step over each breakpoint (two stops per hit), for the same-run ratio
    c2_gdb = sysbreak_command([*wl, "-m", str(m2)], tmp, "ev2-gdb")
    if c1 is None or c2 is None:
        return [Row(section, "per captured event (20-frame stack)", NOT_BUILT, target=target)]
    gaps: list[float] = []
    gaps_gdb: list[float] = []
    depths: list[int] = []
    diffs: list[float] = []
    step_env = dict(os.environ, SYSBREAK_STEP_OVER="gdb")
    for _ in range(cfg.repeat):
        if c2_gdb is not None:
            _fresh(c2_gdb)
            if run_timed(c2_gdb, timeout=cfg.timeout, env=step_env).rc == 0:
                with contextlib.suppress(OSError):
                    gaps_gdb.extend(workload_event_gaps(read_log(log_of(c2_gdb)))[0])
        _fresh(c1)
        _fresh(c2)
        t1 = run_timed(c1, timeout=cfg.timeout)
        t2 = run_timed(c2, timeout=cfg.timeout)
        if t1.rc != 0 or t2.rc != 0:
            bad = t1 if t1.rc != 0 else t2
            why = "timeout" if bad.timed_out else (bad.stderr.strip().splitlines() or ["?"])[-1][:100]
            return [Row(section, "per captured event (20-frame stack)", "n/a", target=target, verdict="MISS", note=why)]
        diffs.append((t2.seconds - t1.seconds) / (2 * (m2 - m1)))
        try:
            g, d = workload_event_gaps(read_log(log_of(c2)))
        except OSError:
            g, d = [], []
        gaps.extend(g)
        depths.extend(d)
    rows = []
    if gaps:
        med, hi = median(gaps) * 1e6, p95(gaps) * 1e6
        rows.append(
            Row(
                section,
                "per captured event, median (log timestamps)",
                fmt_us(med),
                target=target,
                verdict=verdict(med <= TARGET_EVENT_US),
                note=_depth_note(len(gaps), depths, cfg.depth),
            )
        )
        rows.append(
            Row(
                section,
                "per captured event, p95 (log timestamps)",
                fmt_us(hi),
                target=target,
                verdict=verdict(hi <= TARGET_EVENT_US),
            )
        )
        if gaps_gdb:
            med_gdb = median(gaps_gdb) * 1e6
            rows.append(
                Row(
                    section,
                    "per captured event, median, with GDB's step-over (SYSBREAK_STEP_OVER=gdb)",
                    fmt_us(med_gdb),
                    f"emulated {med / med_gdb:.2f}x",
                    note="the same capture interleaved in this run; emulated: one ptrace stop per hit, not two",
                )
            )
    else:
        rows.append(Row(section, "per captured event (log timestamps)", "n/a", note="no workload events in the log"))
    d = median(diffs) * 1e6
    rows.append(
        Row(
            section,
            f"per captured event, from wall time at -m {m1} vs {m2}",
            fmt_us(d),
            target=target,
            verdict=verdict(d <= TARGET_EVENT_US),
            note=f"median of {len(diffs)}",
        )
    )
    return rows


def _depth_note(n_gaps: int, depths: list[int], depth: int) -> str:
    """How deep the recorded stacks were: the workload makes every call more than ``depth`` frames deep."""
    d = median([float(x) for x in depths]) if depths else 0.0
    note = f"{n_gaps} gaps, stacks of {d:.0f} frames"
    if d < depth:
        note += f" - fewer than the workload's > {depth}: the tracer dropped or merged frames"
    return note


def _exhaustive(cfg: Config, tmp: Path) -> list[Row]:
    """Cost of one non-matching hit, from the log of one run (no start-up noise in it).

    The workload makes K generic syscall(SYS_getppid) calls between two mappings.  A gap from a munmap to the
    next mmap therefore holds K non-matching calls plus one captured event, a gap from an mmap to its own
    munmap only the captured event; the difference of their medians, over K, is what one non-matching call
    costs.  In exhaustive mode each of them is a stop in the syscall() wrapper; in callsite mode, none is.
    """
    section = "event"
    k = cfg.exhaustive_every
    m = cfg.exhaustive_maps
    wl = [str(WORKLOAD), "-c", str(k * m), "-m", str(m), "-t", "1", "-d", str(cfg.depth), "-k", "generic"]
    rows = []
    for mode, extra in (("exhaustive", ("--exhaustive",)), ("callsite", ())):
        name = f"per non-matching syscall(SYS_getppid), {mode} mode"
        tgt = f"<= {TARGET_EXHAUSTIVE_US:.0f} us" if mode == "exhaustive" else "0 (no stop)"
        cmd = sysbreak_command(wl, tmp, mode, extra)
        if cmd is None:
            rows.append(Row(section, name, NOT_BUILT, target=tgt))
            continue
        with_calls: list[float] = []
        without: list[float] = []
        why = ""
        for _ in range(cfg.repeat):
            _fresh(cmd)
            t = run_timed(cmd, timeout=cfg.timeout)
            if t.rc != 0:
                why = "timeout" if t.timed_out else (t.stderr.strip().splitlines() or ["?"])[-1][:100]
                break
            try:
                a, b = _split_gaps(read_log(log_of(cmd)))
            except OSError as exc:
                why = str(exc)
                break
            with_calls.extend(a)
            without.extend(b)
        if why or not with_calls or not without:
            rows.append(Row(section, name, "n/a", target=tgt, verdict="MISS", note=why or "no workload events"))
            continue
        us = (median(with_calls) - median(without)) / k * 1e6
        ok = us <= TARGET_EXHAUSTIVE_US if mode == "exhaustive" else us <= 5.0
        rows.append(
            Row(section, name, fmt_us(us), target=tgt, verdict=verdict(ok),
                note=f"(gap munmap->mmap - gap mmap->munmap) / {k}, {len(with_calls)} gaps")
        )  # fmt: skip
    return rows


def _split_gaps(records: list[dict[str, Any]]) -> tuple[list[float], list[float]]:
    """Gaps munmap->next mmap (K calls in between) and mmap->its munmap (none), of the workload's one_map()."""
    stacks = {r["id"]: r.get("frames", []) for r in records if r.get("type") == "stack"}
    ours = [
        r for r in records
        if r.get("type") == "syscall" and any(f.get("function") == "one_map" for f in stacks.get(r.get("stack"), []))
    ]  # fmt: skip
    with_calls: list[float] = []
    without: list[float] = []
    for a, b in zip(ours, ours[1:], strict=False):
        if a.get("tid") != b.get("tid") or not isinstance(a.get("t"), float) or not isinstance(b.get("t"), float):
            continue
        if a.get("nr") == 11 and b.get("nr") == 9:
            with_calls.append(b["t"] - a["t"])
        elif a.get("nr") == 9 and b.get("nr") == 11:
            without.append(b["t"] - a["t"])
    return with_calls, without
