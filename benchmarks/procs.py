"""Process trees: one GDB with several inferiors vs one GDB per process, on 8 forked worker processes.

``python -m benchmarks --only procs`` (or ``python -m benchmarks.procs [--calls N] [--repeat N]``).

``fixtures/build/procs_bench 4 4 CALLS GO`` forks 4 *hitters* (CALLS raw ``syscall(SYS_mmap)`` +
``syscall(SYS_munmap)`` pairs each, as fast as they can) and 4 *bystanders* (no target call: 200 us sleeps until
every hitter is done, measuring each sleep's overshoot). The workers start together once the file GO exists,
i.e. once every tracer is ready. Traced with the sysbreak extension (``sysbreak break mmap munmap --quiet
--log``) in four ways:

* ``native``: no tracer (the machine's own noise: 8 workers on the cores there are);
* ``one GDB all-stop``: one GDB, ``detach-on-fork off`` + ``schedule-multiple on``, the 9 processes are its
  inferiors and the breakpoints of the parent apply to each forked child (same layout, no exec);
* ``one GDB non-stop``: the same with ``set non-stop on``;
* ``GDB per process``: 8 GDBs, each attached to one worker.

Measured: the per-event cost (time the slowest hitter took beyond native, divided by all the events of all the
hitters: what a tree of processes pays per captured call) and how long the bystanders were held (the sum of their
sleep overshoots above 1 ms, per second of their run, and the longest single overshoot).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from benchmarks.common import ROOT, Config, Row, fmt_us

BENCH = ROOT / "fixtures" / "build" / "procs_bench"
SCRIPT = ROOT / "gdb_scripts" / "sysbreak.py"
HITTERS = 4
BYSTANDERS = 4
MODES = ("native", "one GDB all-stop", "one GDB non-stop", "GDB per process")


@dataclass
class Outcome:
    mode: str
    hitter_s: list[float]
    events: int
    stalled_us_per_s: float  # bystanders: overshoot above 1 ms, summed, per second of their run (mean of the 4)
    max_gap_us: float  # bystanders: longest single overshoot
    logged: int  # syscall records in the event logs (checks the tracers caught every call)


def _parse(out: str, mode: str, logged: int) -> Outcome:
    hit: list[float] = []
    events = 0
    stalls: list[float] = []
    gaps: list[float] = []
    for line in out.splitlines():
        parts = line.split()
        if parts[:1] == ["hitter"]:
            hit.append(float(parts[2]))
            events += 2 * int(parts[3])
        elif parts[:1] == ["bystander"]:
            secs = float(parts[2])
            gaps.append(float(parts[4]))
            stalls.append(float(parts[5]) / secs if secs > 0 else 0.0)
    if len(hit) != HITTERS or len(stalls) != BYSTANDERS:
        raise RuntimeError(f"{mode}: workers did not all report:\n{out[-2000:]}")
    return Outcome(mode, hit, events, statistics.mean(stalls), max(gaps), logged)


def _count_logged(logs: list[Path]) -> int:
    n = 0
    for log in logs:
        with contextlib.suppress(OSError):
            n += sum(1 for ln in log.read_text().splitlines() if '"type":"syscall"' in ln.replace(" ", ""))
    return n


def _children(pid: int) -> list[int]:
    kids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        if int(stat.rpartition(")")[2].split()[1]) == pid:
            kids.append(int(entry))
    return sorted(kids)


def _tracer_of(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("TracerPid:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def _wait(cond: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.02)


def _gdb_env() -> dict[str, str]:
    env = dict(os.environ)
    env["SYSBREAK_PYTHONPATH"] = str(ROOT / "src")
    return env


def _one_gdb(tmp: Path, calls: int, non_stop: bool) -> Outcome:
    go = tmp / "go"
    log = tmp / "events.jsonl"
    out = tmp / "out.txt"
    script = tmp / "one.gdb"
    resume = "continue -a" if non_stop else "continue"
    script.write_text(
        "set pagination off\nset confirm off\nset detach-on-fork off\nset schedule-multiple on\n"
        + ("set non-stop on\n" if non_stop else "")
        + "handle all nostop noprint pass\n"
        + f"source {SCRIPT}\nsysbreak break mmap munmap --quiet --log {log}\n"
        + f"run {HITTERS} {BYSTANDERS} {calls} {go} > {out}\n"
        + "python\nimport time\n"
        + "while any(i.pid for i in gdb.inferiors()):\n"
        + "    live = [i for i in gdb.inferiors() if i.pid]\n"
        + "    gdb.execute(f'inferior {live[0].num}', to_string=True)\n"
        + (
            "    time.sleep(0.05)\n    gdb.execute('" + resume + " &', to_string=True)\n"
            if non_stop
            else "    gdb.execute('continue', to_string=True)\n"
        )
        + "end\n"
    )
    gdb = subprocess.Popen(
        ["gdb", "-nx", "-batch", "-x", str(script), str(BENCH)],
        stdin=subprocess.DEVNULL,
        stdout=open(tmp / "gdb.txt", "wb"),  # noqa: SIM115
        stderr=subprocess.STDOUT,
        env=_gdb_env(),
        start_new_session=True,
    )
    try:
        # the parent and its 8 workers all traced by this GDB
        def ready() -> bool:
            if gdb.poll() is not None:
                raise RuntimeError("gdb exited early")
            pids = [p for p in _children(gdb.pid) if _tracer_of(p) == gdb.pid]
            return bool(pids) and len([k for k in _children(pids[0]) if _tracer_of(k) == gdb.pid]) == 8

        _wait(ready, 60, "one GDB to hold the 9 processes")
        time.sleep(0.5)
        go.touch()
        gdb.wait(timeout=300)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(gdb.pid, signal.SIGKILL)
        gdb.wait()
    mode = "one GDB non-stop" if non_stop else "one GDB all-stop"
    return _parse(out.read_text(), mode, _count_logged([log]))


def _one_gdb_non_stop(tmp: Path, calls: int) -> Outcome:
    """Non-stop needs GDB's event loop running between commands, so this one is driven over GDB/MI."""
    from sysbreak.driver.gdbenv import gdb_env
    from sysbreak.driver.mi import MiError, MiSession

    go = tmp / "go"
    log = tmp / "events.jsonl"
    out = tmp / "out.txt"
    mi = MiSession(
        ["gdb", "--interpreter=mi3", "-nx", "-q", str(BENCH)],
        mi_path=str(tmp / "gdb-mi.log"),
        log_path=str(tmp / "gdb.log"),
        env=gdb_env(),
    )
    try:
        mi.command("-gdb-set mi-async on")
        mi.command("-gdb-set non-stop on")
        for cmd in ("set pagination off", "set confirm off", "set detach-on-fork off", "set schedule-multiple on"):
            mi.console(cmd)
        mi.console("handle all nostop noprint pass")
        mi.console(f"source {SCRIPT}")
        mi.console(f"sysbreak break mmap munmap --quiet --log {log}")
        mi.command(f"-exec-arguments {HITTERS} {BYSTANDERS} {calls} {go} > {out}")
        mi.command("-exec-run")
        exited = 0
        released = False
        t_ready: float | None = None
        deadline = time.monotonic() + 300
        while exited < 1 + HITTERS + BYSTANDERS and time.monotonic() < deadline:
            for rec in mi.pop_async():
                msg = rec.get("message")
                payload = rec.get("payload") or {}
                if msg == "thread-group-exited":
                    exited += 1
                elif msg == "stopped" and not str(payload.get("reason", "")).startswith("exited"):
                    with contextlib.suppress(MiError):
                        mi.command(f"-exec-continue --thread {payload.get('thread-id')}")
            if not released:
                kids = [k for p in _children(mi.pid) for k in _children(p) if _tracer_of(k) == mi.pid]
                if len(kids) == HITTERS + BYSTANDERS and t_ready is None:
                    t_ready = time.monotonic()
                if t_ready is not None and time.monotonic() - t_ready > 0.5:
                    with contextlib.suppress(MiError):
                        mi.command("-exec-continue --all")
                    go.touch()
                    released = True
            time.sleep(0.01)
    finally:
        mi.kill()
        mi.close()
    return _parse(out.read_text(), "one GDB non-stop", _count_logged([log]))


def _per_process(tmp: Path, calls: int) -> Outcome:
    go = tmp / "go"
    bench = subprocess.Popen(
        [str(BENCH), str(HITTERS), str(BYSTANDERS), str(calls), str(go)],
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    gdbs: list[subprocess.Popen[bytes]] = []
    logs: list[Path] = []
    try:
        _wait(lambda: len(_children(bench.pid)) == HITTERS + BYSTANDERS, 30, "the workers")
        for pid in _children(bench.pid):
            log = tmp / f"events-{pid}.jsonl"
            ready = tmp / f"ready-{pid}"
            logs.append(log)
            gdbs.append(
                subprocess.Popen(
                    [
                        "gdb",
                        "-nx",
                        "-batch",
                        "-ex",
                        "set pagination off",
                        "-ex",
                        "set confirm off",
                        "-ex",
                        "handle all nostop noprint pass",
                        "-ex",
                        f"source {SCRIPT}",
                        "-ex",
                        f"attach {pid}",
                        "-ex",
                        f"sysbreak break mmap munmap --quiet --log {log}",
                        "-ex",
                        f"shell touch {ready}",
                        "-ex",
                        "continue",
                    ],  # fmt: skip
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                    env=_gdb_env(),
                    start_new_session=True,
                )
            )
        _wait(lambda: all((tmp / f"ready-{p}").exists() for p in _children(bench.pid)), 120, "8 GDBs")
        time.sleep(0.5)
        go.touch()
        out, _ = bench.communicate(timeout=300)
        for g in gdbs:
            g.wait(timeout=60)
    finally:
        for p in (bench, *gdbs):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGKILL)
            p.wait()
    return _parse(out, "GDB per process", _count_logged(logs))


def _native(tmp: Path, calls: int) -> Outcome:
    go = tmp / "go"
    go.touch()
    out = subprocess.run(
        [str(BENCH), str(HITTERS), str(BYSTANDERS), str(calls), str(go)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    return _parse(out, "native", 0)


def measure(mode: str, calls: int) -> Outcome:
    with tempfile.TemporaryDirectory(prefix="sysbreak-procs-") as d:
        tmp = Path(d)
        if mode == "native":
            return _native(tmp, calls)
        if mode == "GDB per process":
            return _per_process(tmp, calls)
        if mode.endswith("non-stop"):
            return _one_gdb_non_stop(tmp, calls)
        return _one_gdb(tmp, calls, non_stop=False)


def rows(results: dict[str, list[Outcome]]) -> list[Row]:
    out: list[Row] = []
    native = statistics.median(max(o.hitter_s) for o in results["native"])
    for mode in MODES:
        runs = results.get(mode) or []
        if not runs:
            continue
        slowest = statistics.median(max(o.hitter_s) for o in runs)
        events = runs[0].events
        stall = statistics.median(o.stalled_us_per_s for o in runs)
        gap = statistics.median(o.max_gap_us for o in runs)
        note = f"{HITTERS} hitters x {events // HITTERS} events, {BYSTANDERS} bystanders; median of {len(runs)}"
        if mode != "native":
            logged = min(o.logged for o in runs)
            note += f"; {logged}/{events} events logged"
            per_event = (slowest - native) / events * 1e6
            out.append(Row("procs", f"{mode}: per event (all hitters)", fmt_us(per_event), note=note))
        out.append(Row("procs", f"{mode}: slowest hitter", f"{slowest:.3f} s", note=note if mode == "native" else ""))
        out.append(
            Row(
                "procs",
                f"{mode}: bystanders held",
                f"{stall / 1000:.1f} ms/s",
                note=f"longest single hold {gap / 1000:.1f} ms",
            )
        )
    return out


def run(cfg: Config) -> list[Row]:
    if not BENCH.exists():
        subprocess.run(["make", "-s", "-C", str(ROOT / "fixtures"), "build/procs_bench"], check=True)
    calls = 50 if cfg.quick else 250
    results: dict[str, list[Outcome]] = {m: [] for m in MODES}
    for _ in range(cfg.repeat):
        for mode in MODES:  # interleaved, so machine noise spreads over every mode
            results[mode].append(measure(mode, calls))
    return rows(results)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.procs", description=__doc__.split("\n\n")[0])
    ap.add_argument("--calls", type=int, default=250, help="mmap+munmap pairs per hitter")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--only", default="", help="comma-separated modes")
    args = ap.parse_args(argv)
    modes = [m for m in MODES if not args.only or m in args.only.split(",")]
    if "native" not in modes:
        modes.insert(0, "native")
    results: dict[str, list[Outcome]] = {m: [] for m in modes}
    for _ in range(args.repeat):
        for mode in modes:
            results[mode].append(measure(mode, args.calls))
    for r in rows(results):
        print(f"{r.measure:45s} {r.value:>12s}  {r.note}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
