"""Do two sysbreak source trees write the same reports? The check behind every analysis speed-up.

    python -m benchmarks.same_reports --before OLD/src [--after src] [--events 200000] [--work DIR] [CAPTURE...]

It makes a set of captures (the ucm_leak fixture's, synthetic ones of several sizes and seeds from
tests/support/synthetic.py, and variants of a synthetic log mangled the ways real logs go wrong: releases logged
late, releases missing, MAP_FIXED calls, lines damaged or written with odd but valid fields, records without tid
or seq), adds the CAPTUREs given, and runs ``sysbreak report`` on each with both trees (JSON, text, collapsed,
and JSON with --depth/--group-outside/--sort), the log decoded in process and by the worker process. Every output
must be byte-identical; the first difference is printed. Exit status 0 when all are equal.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

VARIANTS: list[list[str]] = [
    ["-f", "json"],
    ["-f", "text", "--top", "40", "--all-regions"],
    ["-f", "collapsed"],
    ["-f", "json", "--depth", "4", "-S", "live"],
    ["-f", "json", "--group-outside", "libucm|libucs|libc\\.so", "-S", "peak"],
]


SYNTHETIC = """
import json, sys
sys.path.insert(0, sys.argv[1])
from support.synthetic import synthetic_capture
synthetic_capture(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), **json.loads(sys.argv[5]))
"""

REPORT = """
import json, sys
import sysbreak.capture.decode as d
import sysbreak.analysis.pipeline as p
orig = d.stream
mode = sys.argv[1]
def stream(path, allow_empty, *, parallel=None, **kw):
    return orig(path, allow_empty, parallel={"0": False, "1": True}.get(mode, parallel), **kw)
d.stream = p.stream = stream
from sysbreak.cli import main
sys.argv = ["sysbreak", "report", sys.argv[2], *json.loads(sys.argv[3]), "-o", "-"]
main()
"""


def _synthetic(path: Path, events: int, snaps: int, **kw: object) -> None:
    argv = [str(ROOT / "tests"), str(path), str(events), str(snaps), json.dumps(kw)]
    subprocess.run([sys.executable, "-c", SYNTHETIC, *argv], check=True, env=_env(ROOT / "src"))


def _mangle(src: Path, dst: Path, how: str, seed: int) -> None:
    """A copy of capture ``src`` whose log is changed as ``how`` says (see the module doc)."""
    shutil.copytree(src, dst)
    rng = random.Random(seed)
    lines = (src / "events.jsonl").read_text().splitlines(keepends=True)
    out: list[str] = []
    held: list[tuple[int, str]] = []  # (lines still to wait, line) for "late"
    for i, line in enumerate(lines):
        is_sys = line.startswith('{"type":"syscall"') and i > 0
        name = json.loads(line).get("name") if is_sys else None
        if how == "late" and name in ("munmap", "mremap", "brk") and rng.random() < 0.05:
            held.append((rng.randint(1, 6), line))  # logged after the next calls of other threads
            continue
        if how == "missing" and name == "munmap" and rng.random() < 0.003:
            continue
        if how == "fixed" and name == "mmap" and rng.random() < 0.02:
            obj = json.loads(line)
            obj["args"][3] |= 0x10
            line = json.dumps(obj, separators=(",", ":")) + "\n"
        if how == "odd" and is_sys:
            r = rng.random()
            obj = json.loads(line)
            if r < 0.01:
                line = line[: rng.randint(5, len(line) - 2)] + "\n"  # damaged
            elif r < 0.02:
                obj["t"] = int(obj["t"])
                line = json.dumps(obj, separators=(",", ":")) + "\n"
            elif r < 0.03:
                obj.pop("tid", None)
                obj.pop("seq", None)
                line = json.dumps(obj, separators=(",", ":")) + "\n"
            elif r < 0.04:
                obj.pop("name", None)  # the reader takes it from nr
                line = json.dumps(obj, separators=(",", ":")) + "\n"
            elif r < 0.05:
                obj["args"] = obj["args"][:4]  # fewer args: padded
                line = json.dumps(obj, separators=(",", ":")) + "\n"
            elif r < 0.055:
                obj["ret"] = None  # the return not seen
                line = json.dumps(obj, separators=(",", ":")) + "\n"
            elif r < 0.06:
                obj["stack"] = "x"  # bad type: skipped with a warning
                line = json.dumps(obj, separators=(",", ":")) + "\n"
            elif r < 0.065:
                line = json.dumps(obj, indent=None) + "\n"  # spaces after separators
            elif r < 0.07:
                obj["args"][1] = 1 << 70  # too big: skipped
                line = json.dumps(obj, separators=(",", ":")) + "\n"
            elif r < 0.075 and obj.get("name") == "munmap":
                obj["ret"] = None
                obj["when"] = "before"
                line = json.dumps(obj, separators=(",", ":")) + "\n"
        out.append(line)
        if held:
            keep = []
            for n, h in held:
                if n <= 1:
                    out.append(h)
                else:
                    keep.append((n - 1, h))
            held = keep
    out.extend(h for _, h in held)
    if how == "cut":
        out = out[: len(out) * 2 // 3]
        out[-1] = out[-1][: len(out[-1]) // 2]
    (dst / "events.jsonl").write_text("".join(out))


RACE = r"""
import json, os, random, sys
sys.path.insert(0, sys.argv[4])
from support.synthetic import _Writer, _frames, _smaps_text, APP
path, events, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
rng = random.Random(seed)
os.makedirs(os.path.join(path, "snapshots"), exist_ok=True)
w = _Writer(os.path.join(path, "events.jsonl"), append=False)
w.header(arch="x86_64", pid=77, exe=APP, syscalls=["mmap", "munmap", "mremap", "brk"], mode="callsite", t0=0.0)
frames = {i: _frames(rng, i, i <= 2) for i in range(1, 25)}
SLOT, N, TOP = 1 << 16, 3000, 0x7F0000000000
free = list(range(N))  # slots, the kernel giving the highest free one (reuse, as mmap does)
live = {}  # slot -> (start, size, stack)
held = {}  # tid -> a record logged late (the thread's next record is never later than this)
snap_at = {events * k // 4 for k in range(1, 5)}
t = 0.0
def log(tid, **kw):
    w.event(t=kw.pop("t"), tid=tid, stack=w.stack_id((kw["sid"],), frames[kw.pop("sid")], []), **kw)
def flush(tid):
    if tid in held:
        log(tid, **held.pop(tid))
def take():
    free.sort()
    return free.pop()
for n in range(events):
    t += 0.001
    tid = 100 + rng.randrange(4)
    flush(tid)
    for other in [o for o in held if rng.random() < 0.3]:
        flush(other)
    r = rng.random()
    if (r < 0.45 or not live) and free:
        k = take(); size = 4096 * rng.randint(1, 16); sid = rng.randint(1, 24)
        live[k] = (TOP - k * SLOT, size, sid)
        log(tid, t=t, nr=9, name="mmap", args=[0, size, 3, 0x22, 2**64 - 1, 0], ret=TOP - k * SLOT, sid=sid)
    elif r < 0.9 or len(free) < 2:
        k = rng.choice(list(live)); start, size, _ = live.pop(k); free.append(k)
        rec = dict(t=t, nr=11, name="munmap", args=[start, size, 0, 0, 0, 0], ret=0, sid=rng.randint(3, 24))
        if rng.random() < 0.002:
            continue  # a release the capture never saw
        if rng.random() < 0.1:
            held[tid] = rec  # logged after the calls of other threads that follow
        else:
            log(tid, **rec)
    else:
        k = rng.choice(list(live)); start, size, sid = live.pop(k); k2 = take(); free.append(k)
        new_size = min(SLOT, size + 4096 * rng.randint(0, 3))
        live[k2] = (TOP - k2 * SLOT, new_size, sid)
        rec = dict(t=t, nr=25, name="mremap", args=[start, size, new_size, 1, 0, 0], ret=TOP - k2 * SLOT,
                   sid=rng.randint(3, 24))
        if rng.random() < 0.1:
            held[tid] = rec
        else:
            log(tid, **rec)
    if n + 1 in snap_at:
        text, rss = _smaps_text({s: (z, sid, False) for s, z, sid in live.values()}, 0x555555600000, 0x555555621000)
        name = "smaps-%06d.txt" % len(os.listdir(os.path.join(path, "snapshots")))
        open(os.path.join(path, "snapshots", name), "w").write(text)
        with open(os.path.join(path, "snapshots", "index.jsonl"), "a") as fh:
            fh.write(json.dumps({"seq": n, "t": t + 0.0005, "wall": "", "file": name, "rss_kb": rss}) + "\n")
for tid in list(held):
    flush(tid)
w.end("detach", t + 1)
w.close()
meta = {"format": "sysbreak-capture/2", "pid": 77, "exe": APP, "t0": 0.0, "t1": t + 1,
        "syscalls": ["mmap", "munmap", "mremap", "brk"], "mode": "callsite", "modules": []}
json.dump(meta, open(os.path.join(path, "meta.json"), "w"))
"""


def _race(path: Path, events: int, seed: int) -> None:
    """Four threads reusing address space as the kernel does, some releases logged late or never."""
    subprocess.run(
        [sys.executable, "-c", RACE, str(path), str(events), str(seed), str(ROOT / "tests")],
        check=True,
        env=_env(ROOT / "src"),
    )


def _env(src: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(src)
    env.pop("SYSBREAK_NO_LINK", None)
    return env


def _report(src: Path, capture: Path, args: list[str], parallel: str) -> bytes:
    cmd = [sys.executable, "-c", REPORT, parallel, str(capture), json.dumps(args)]
    r = subprocess.run(cmd, env=_env(src), capture_output=True, timeout=1800)
    return b"rc=%d\n" % r.returncode + r.stdout + b"\n--stderr--\n" + r.stderr


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--before", required=True, type=Path, help="the src/ folder of the tree to compare with")
    ap.add_argument("--after", default=ROOT / "src", type=Path)
    ap.add_argument("--events", type=int, default=200_000, help="events of the biggest synthetic capture")
    ap.add_argument("--work", type=Path, default=None, help="where to make the captures (kept)")
    ap.add_argument("--quick", action="store_true", help="JSON and text only (not collapsed, folded, grouped)")
    ap.add_argument("captures", nargs="*", type=Path)
    a = ap.parse_args()
    work = a.work or Path(tempfile.mkdtemp(prefix="sysbreak-same-"))
    work.mkdir(parents=True, exist_ok=True)
    caps: list[Path] = [ROOT / "fixtures" / "procfs" / "capture-ucm_leak", *a.captures]
    plan = [
        ("syn-small", 3000, 5, {"seed": 3}),
        ("syn-one-snap", 2000, 1, {"seed": 4}),
        ("syn-no-snap", 2000, 0, {"seed": 5}),
        ("syn-mid", 50_000, 20, {"seed": 2, "stacks": 200, "leak_stacks": 9}),
        ("syn-big", a.events, 50, {"seed": 1}),
    ]
    for name, ev, sn, kw in plan:
        p = work / name
        if not (p / "meta.json").exists():
            shutil.rmtree(p, ignore_errors=True)
            _synthetic(p, ev, sn, **kw)
        caps.append(p)
    for seed in (1, 2):
        p = work / f"race-{seed}"
        if not (p / "meta.json").exists():
            shutil.rmtree(p, ignore_errors=True)
            _race(p, 30_000, seed)
        caps.append(p)
    for how in ("late", "missing", "fixed", "odd", "cut"):
        p = work / f"syn-mid-{how}"
        if not p.exists():
            _mangle(work / "syn-mid", p, how, seed=len(how))
        caps.append(p)
    caps.append(work / "syn-mid" / "events.jsonl")  # a bare log
    bad = 0
    for cap in caps:
        for args in VARIANTS[:2] if a.quick else VARIANTS:
            for parallel in ("0", "1"):
                old = _report(a.before, cap, args, parallel)
                new = _report(a.after, cap, args, parallel)
                tag = f"{cap.name} {' '.join(args)} parallel={parallel}"
                if old == new:
                    print(f"same  {tag}  ({len(old)} bytes, {hashlib.sha1(old).hexdigest()[:10]})", flush=True)
                else:
                    bad += 1
                    ol, nl = old.splitlines(), new.splitlines()
                    k = next((i for i, (x, y) in enumerate(zip(ol, nl, strict=False)) if x != y), min(len(ol), len(nl)))
                    print(f"DIFF  {tag}: line {k + 1}", flush=True)
                    print(f"  before: {ol[k][:300] if k < len(ol) else '<end>'!r}")
                    print(f"  after:  {nl[k][:300] if k < len(nl) else '<end>'!r}")
    n = 2 if a.quick else len(VARIANTS)
    print(f"{'all same' if not bad else f'{bad} differ'}: {len(caps)} captures x {n} formats x 2 decoders")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
