"""Hypothesis: random bytes and mutated real lines into the event-log reader, the analysis and the procfs parsers.

The property: they return, or raise SysbreakError (a one-line message); never any other exception.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sysbreak import maps
from sysbreak.analysis import analyze
from sysbreak.capture import EventLogWriter, open_capture, read_events
from sysbreak.errors import SysbreakError

FIX = Path(__file__).resolve().parent.parent / "fixtures" / "procfs"
SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
P = 4096
A = 0x7F0000000000


def _real_log_lines() -> list[bytes]:
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "e.jsonl")
        w = EventLogWriter(path, append=False)
        w.header(arch="x86_64", pid=42, exe="/srv/app", syscalls=["mmap", "munmap", "mremap", "brk"], t0=1.0)
        w.module(path="/usr/lib/libucm.so.0", base=1, bias=1, build_id="ab", sites=3, breakpoints=2)
        frames = [{"pc": 1, "module": "/usr/lib/libc.so.6", "offset": 1, "function": "syscall"},
                  {"pc": 2, "module": "/srv/app", "offset": 0x1189, "function": "leak_region"}]  # fmt: skip
        sid = w.stack_id(("a",), frames, [{"file": "w.py", "line": 1, "function": "f"}])
        site = {"pc": 1, "module": "/usr/lib/libc.so.6", "offset": 1, "kind": "call"}
        w.event(t=1.5, tid=2, nr=9, name="mmap", args=[0, 8 * P, 3, 0x22, 2**64 - 1, 0], ret=A, stack=sid, site=site)
        w.event(t=1.6, tid=2, nr=11, name="munmap", args=[A, P, 0, 0, 0, 0], ret=0, stack=sid, site=site)
        w.event(t=1.7, tid=2, nr=25, name="mremap", args=[A + P, P, 4 * P, 1, 0, 0], ret=A + 64 * P, stack=sid,
                site=site)  # fmt: skip
        w.event(t=1.8, tid=2, nr=12, name="brk", args=[0, 0, 0, 0, 0, 0], ret=0x555555559000, stack=sid, site=site)
        w.event(t=1.9, tid=2, nr=12, name="brk", args=[0x55555557A000, 0, 0, 0, 0, 0], ret=0x55555557A000, stack=sid)
        w.note("hello", 2.0)
        w.end("detach", 2.5)
        w.close()
        return Path(path).read_bytes().splitlines(keepends=True)


LOG_LINES = _real_log_lines()
FIXTURE_TEXTS = {p.name: p.read_bytes() for p in sorted(FIX.iterdir()) if p.is_file() and p.suffix != ".sh"}


def _mutate(data: bytes, ops: list[tuple[int, int, int]]) -> bytes:
    b = bytearray(data)
    for kind, pos, val in ops:
        if not b:
            b.append(val)
            continue
        i = pos % len(b)
        if kind == 0:
            b[i] = val
        elif kind == 1:
            del b[i]
        elif kind == 2:
            b.insert(i, val)
        elif kind == 3:
            del b[i:]
        else:
            b[i:i] = b[i : i + val % 40]
    return bytes(b)


mutations = st.lists(st.tuples(st.integers(0, 4), st.integers(0, 10**6), st.integers(0, 255)), max_size=6)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda kids: st.lists(kids, max_size=7) | st.dictionaries(st.text(max_size=6), kids, max_size=6),
    max_leaves=20,
)
keys = st.sampled_from(["type", "name", "args", "ret", "t", "stack", "id", "frames", "python", "seq", "format", "pid"])
records = st.dictionaries(keys, json_values, max_size=8).map(
    lambda d: d | {"type": d.get("type") if isinstance(d.get("type"), str) else "syscall"}
)


def _check_log(content: bytes) -> None:
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "events.jsonl")
        with open(path, "wb") as fh:
            fh.write(content)
        try:
            reader = read_events(path)
            for _ in reader:
                pass
            assert all("\n" not in w for w in reader.warnings)
        except SysbreakError as e:
            assert "\n" not in str(e)
        try:
            analyze(path)
        except SysbreakError as e:
            assert "\n" not in str(e)
        try:
            cap = open_capture(d)
            list(cap.events())
        except SysbreakError as e:
            assert "\n" not in str(e)


@SETTINGS
@given(st.binary(max_size=400))
def test_random_bytes_into_the_event_reader(data: bytes) -> None:
    _check_log(data)
    _check_log(LOG_LINES[0] + data)  # a valid header, then garbage


@SETTINGS
@given(st.lists(st.sampled_from(range(len(LOG_LINES))), max_size=12), mutations, st.integers(0, 11))
def test_mutated_real_lines(order: list[int], ops: list[tuple[int, int, int]], which: int) -> None:
    lines = [LOG_LINES[0]] + [LOG_LINES[i] for i in order]
    k = which % len(lines)
    lines[k] = _mutate(lines[k], ops)
    _check_log(b"".join(lines))


@SETTINGS
@given(st.lists(records, max_size=6))
def test_well_formed_json_with_wrong_types(recs: list[dict[str, object]]) -> None:
    body = b"".join(json.dumps(r).encode() + b"\n" for r in recs)
    _check_log(LOG_LINES[0] + LOG_LINES[3] + body)


def _check_maps(data: bytes) -> None:
    try:
        maps.parse_maps_file(data)
    except SysbreakError as e:
        assert "\n" not in str(e)
    text = data.decode("utf-8", errors="replace")
    for kind in maps.KINDS:
        with contextlib.suppress(SysbreakError):
            maps.parse_maps_file(text + "\n", kind=kind)


@SETTINGS
@given(st.binary(max_size=300))
def test_random_bytes_into_procfs(data: bytes) -> None:
    _check_maps(data)


@SETTINGS
@given(st.sampled_from(sorted(FIXTURE_TEXTS)), st.integers(0, 10**6), st.integers(1, 6), mutations)
def test_mutated_fixture_lines_into_procfs(name: str, start: int, n: int, ops: list[tuple[int, int, int]]) -> None:
    lines = FIXTURE_TEXTS[name].splitlines(keepends=True)
    i = start % len(lines)
    chunk = b"".join(lines[i : i + n])
    _check_maps(_mutate(chunk, ops))
    whole = b"".join(lines[: i + n])
    _check_maps(_mutate(whole, ops))


@SETTINGS
@given(st.binary(max_size=200), st.binary(max_size=200))
def test_fuzzed_capture_directory(meta: bytes, index: bytes) -> None:
    with tempfile.TemporaryDirectory() as d:
        os.makedirs(os.path.join(d, "snapshots"))
        Path(d, "meta.json").write_bytes(meta)
        Path(d, "snapshots", "index.jsonl").write_bytes(index + b'\n{"seq":1,"t":1.0,"file":"a.txt"}\n')
        Path(d, "snapshots", "a.txt").write_bytes(index)
        Path(d, "events.jsonl").write_bytes(b"".join(LOG_LINES))
        try:
            analyze(d)
        except SysbreakError as e:
            assert "\n" not in str(e)
