"""The event-log reader and open_capture: round trips through EventLogWriter, and what a capture cut short leaves."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sysbreak.capture import (
    EVENTS_FORMAT,
    EndRecord,
    EventLogWriter,
    Frame,
    HeaderRecord,
    ModuleRecord,
    NoteRecord,
    StackRecord,
    SyscallRecord,
    open_capture,
    read_events,
)
from sysbreak.capture.decode import CODES, MUNMAP_BEFORE, OTHER, batches
from sysbreak.errors import SysbreakError

FIX = Path(__file__).resolve().parent.parent / "fixtures" / "procfs"

FRAMES = [
    {"pc": 0x7F00001000, "module": "/usr/lib/libc.so.6", "offset": 0x1000, "function": "syscall", "file": None,
     "line": None},
    {"pc": 0x555500001189, "module": "/srv/app", "offset": 0x1189, "function": "leak_region", "file": "a.c",
     "line": 12},
]  # fmt: skip


def write_log(path: Path, *, end: bool = True) -> None:
    w = EventLogWriter(path, append=False)
    w.header(arch="x86_64", pid=42, exe="/srv/app", syscalls=["mmap", "munmap"], mode="callsite", t0=100.0,
             wall0="2026-11-23T10:00:00+00:00", tool="sysbreak 0.1.0", gdb="GNU gdb 13.1")  # fmt: skip
    w.module(path="/usr/lib/libucm.so.0", base=1, bias=1, build_id="ab", sites=3, breakpoints=2)
    sid = w.stack_id(("k",), FRAMES, [{"file": "w.py", "line": 3, "function": "f"}])
    w.event(t=100.5, tid=43, nr=9, name="mmap", args=[0, 4096, 3, 34, 2**64 - 1, 0], ret=0x7F0000000000, stack=sid,
            site={"pc": 1, "module": "m", "offset": 1, "kind": "call"})  # fmt: skip
    w.event(t=100.6, tid=43, nr=11, name="munmap", args=[0x7F0000000000, 4096, 0, 0, 0, 0], ret=0, stack=sid)
    w.note("armed", 100.7)
    if end:
        w.end("detach", 101.0)
    w.close()


def test_round_trip(tmp_path: Path) -> None:
    log = tmp_path / "e.jsonl"
    write_log(log)
    reader = read_events(log)
    first = next(reader)
    recs = [first, *reader]
    assert list(reader) == []  # one pass
    assert [type(r) for r in recs] == [
        HeaderRecord,
        ModuleRecord,
        StackRecord,
        SyscallRecord,
        SyscallRecord,
        NoteRecord,
        EndRecord,
    ]
    h = recs[0]
    assert isinstance(h, HeaderRecord) and h.pid == 42 and h.t0 == 100.0 and h.syscalls == ["mmap", "munmap"]
    st = recs[2]
    assert isinstance(st, StackRecord) and st.id == 1
    assert st.frames[1] == Frame(0x555500001189, "/srv/app", 0x1189, "leak_region", "a.c", 12)
    assert st.python[0].function == "f"
    ev = recs[3]
    assert isinstance(ev, SyscallRecord)
    assert ev.name == "mmap" and ev.args[1] == 4096 and ev.ret == 0x7F0000000000 and ev.stack == 1 and ev.seq == 1
    assert not ev.failed and ev.site is not None
    assert reader.warnings == [] and reader.ended and reader.header is not None


def test_truncated_last_line_and_damaged_lines_are_skipped(tmp_path: Path) -> None:
    log = tmp_path / "e.jsonl"
    write_log(log, end=False)
    lines = log.read_bytes().splitlines(keepends=True)
    damaged = lines[:4] + [lines[4][:30] + b"\n", b"[1,2]\n", b"\xff\xfe\n"] + lines[4:]
    damaged.append(b'{"type":"syscall","seq":9,"t":10')  # cut short, no newline
    log.write_bytes(b"".join(damaged))
    reader = read_events(log)
    recs = list(reader)
    assert sum(isinstance(r, SyscallRecord) for r in recs) == 2
    assert reader.skipped == 4 and len(reader.warnings) == 4
    assert "cut short" in reader.warnings[-1]
    assert not reader.ended


def test_unknown_types_and_keys_are_ignored(tmp_path: Path) -> None:
    log = tmp_path / "e.jsonl"
    write_log(log)
    with log.open("a") as fh:
        fh.write(json.dumps({"type": "future", "x": 1}) + "\n")
        fh.write(json.dumps({"type": "syscall", "name": "mmap", "args": [0, 1, 2], "ret": -12, "new": [1]}) + "\n")
    reader = read_events(log)
    recs = [r for r in reader if isinstance(r, SyscallRecord)]
    assert recs[-1].args == (0, 1, 2, 0, 0, 0) and recs[-1].failed and recs[-1].t is None
    assert reader.warnings == []


def test_bad_fields_are_skipped(tmp_path: Path) -> None:
    log = tmp_path / "e.jsonl"
    write_log(log)
    with log.open("a") as fh:
        for rec in (
            {"type": "syscall", "name": "mmap", "args": "x", "ret": 1},
            {"type": "syscall", "name": "mmap", "args": [-1], "ret": 1},
            {"type": "syscall", "name": "mmap", "args": [0], "ret": "1"},
            {"type": "syscall", "args": [0], "ret": 1, "nr": 9999},
            {"type": "stack", "id": "3", "frames": []},
            {"type": "stack", "id": 3, "frames": [5]},
            {"type": "module"},
        ):
            fh.write(json.dumps(rec) + "\n")
        fh.write(json.dumps({"type": "syscall", "args": [0, 8192], "ret": 1, "nr": 9}) + "\n")
    reader = read_events(log)
    recs = list(reader)
    assert reader.skipped == 7
    last = recs[-1]
    assert isinstance(last, SyscallRecord) and last.name == "mmap"  # from nr on x86_64


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"hello\n",
        b'{"type":"note"}\n',
        b'{"type":"header","format":"sysbreak-events/9"}\n',
        b"\x89PNG\r\n\x1a\n",
        b'{"type":"header","form',
    ],
)
def test_not_an_event_log(tmp_path: Path, content: bytes) -> None:
    log = tmp_path / "e.jsonl"
    log.write_bytes(content)
    with pytest.raises(SysbreakError) as e:
        read_events(log)  # checked at once
    assert "\n" not in str(e.value)
    with pytest.raises(SysbreakError):
        open_capture(log)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(SysbreakError, match="no such file"):
        read_events(tmp_path / "nope")
    with pytest.raises(SysbreakError, match="no such file"):
        open_capture(tmp_path / "nope")
    with pytest.raises(SysbreakError, match="not a sysbreak capture"):
        open_capture(tmp_path)


def make_capture(d: Path, *, cut: bool = False) -> None:
    d.mkdir()
    meta = {"format": "sysbreak-capture/1", "pid": 42, "t0": 100.0, "started": "2026-11-23T10:00:00+00:00"}
    if not cut:
        meta |= {"t1": 101.0, "ended": "2026-11-23T10:00:01+00:00", "end_reason": "exit"}
    (d / "meta.json").write_text(json.dumps(meta))
    write_log(d / "events.jsonl", end=not cut)
    snaps = d / "snapshots"
    snaps.mkdir()
    smaps = (FIX / "ucm_leak.smaps").read_text()
    (snaps / "smaps-000001.txt").write_text(smaps)
    (snaps / "smaps-000003.txt").write_text(smaps[: len(smaps) // 3])  # half written
    index = [
        {"seq": 1, "t": 100.1, "wall": "w", "file": "smaps-000001.txt", "rss_kb": 3580},
        {"seq": 2, "t": 100.5, "wall": "w", "file": "smaps-000002.txt", "rss_kb": 3600},  # file missing
        {"seq": 3, "t": 100.9, "wall": "w", "file": "smaps-000003.txt", "rss_kb": 3700},
    ]
    with (snaps / "index.jsonl").open("w") as fh:
        for i in index:
            fh.write(json.dumps(i) + "\n")
        if cut:
            fh.write('{"seq": 4, "t": 10')


def test_open_capture_directory(tmp_path: Path) -> None:
    d = tmp_path / "cap"
    make_capture(d)
    cap = open_capture(d)
    assert cap.meta["pid"] == 42 and not cap.cut_short
    assert [s.seq for s in cap.snapshots] == [1, 3]
    assert cap.snapshots[0].t == 100.1 and cap.snapshots[0].path.endswith("smaps-000001.txt")
    assert any("smaps-000002.txt is missing" in w for w in cap.warnings)
    assert sum(isinstance(r, SyscallRecord) for r in cap.events()) == 2


def test_open_capture_cut_short(tmp_path: Path) -> None:
    d = tmp_path / "cap"
    make_capture(d, cut=True)
    cap = open_capture(d)
    assert cap.cut_short
    assert any("cut short" in w for w in cap.warnings)
    assert any("damaged" in w for w in cap.warnings)
    reader = cap.events()
    assert sum(isinstance(r, SyscallRecord) for r in reader) == 2 and not reader.ended


def test_open_capture_empty_events_and_no_meta(tmp_path: Path) -> None:
    d = tmp_path / "cap"
    d.mkdir()
    (d / "events.jsonl").write_bytes(b"")
    cap = open_capture(d)
    assert cap.meta == {} and cap.snapshots == []
    reader = cap.events()
    assert list(reader) == [] and reader.warnings
    (d / "events.jsonl").write_bytes(b'{"type":"header","format":"sysbr')
    reader = cap.events()
    assert list(reader) == [] and "cut short" in reader.warnings[0]


def test_open_capture_refuses_other_format(tmp_path: Path) -> None:
    d = tmp_path / "cap"
    d.mkdir()
    (d / "meta.json").write_text(json.dumps({"format": "sysbreak-capture/9"}))
    with pytest.raises(SysbreakError, match="not supported"):
        open_capture(d)


def test_open_bare_log(tmp_path: Path) -> None:
    log = tmp_path / "e.jsonl"
    write_log(log)
    cap = open_capture(log)
    assert cap.meta == {} and cap.snapshots == [] and not cap.is_dir
    assert sum(1 for _ in cap.events()) == 7


_ANY = st.one_of(
    st.none(), st.booleans(), st.integers(-3, 2**64 + 3), st.floats(-1e20, 1e20, allow_nan=False), st.text(max_size=2)
)
_SYSCALL = st.fixed_dictionaries(
    {
        "name": st.one_of(
            st.sampled_from(["mmap", "munmap", "mremap", "brk", "read"]), st.sampled_from(["mmap"]), _ANY
        ),
        "args": st.one_of(
            st.tuples(st.lists(st.integers(0, 2**64 - 1), min_size=6, max_size=6), st.integers(0, 5), _ANY).map(
                lambda x: [*x[0][: x[1]], x[2], *x[0][x[1] + 1 :]]  # six good ints but one
            ),
            st.lists(st.one_of(st.integers(0, 2**64 - 1), _ANY), max_size=7),
            _ANY,
        ),
        "ret": st.one_of(st.integers(-5, 2**64 - 1), st.integers(4096, 2**40), _ANY),
        "t": st.one_of(st.floats(0, 1e6), st.integers(0, 10**6), _ANY),
        "stack": st.one_of(st.integers(0, 4), _ANY),
    },
    optional={
        "nr": st.one_of(st.sampled_from([9, 11, 12, 25, 0]), _ANY),
        "site": st.just({"pc": 1}),
        "tid": st.one_of(st.integers(1, 9), _ANY),
        "seq": st.one_of(st.integers(1, 99), _ANY),
        "when": st.one_of(st.just("before"), _ANY),
    },
)


def _item(r: SyscallRecord) -> tuple[Any, ...]:
    """The batch item the decoder makes of a record (sysbreak.capture.decode's module doc)."""
    if r.ret is None:
        code, ret = (MUNMAP_BEFORE if r.name == "munmap" and r.when == "before" else OTHER), 0
    elif r.failed:
        code, ret = OTHER, r.ret
    else:
        code, ret = CODES.get(r.name, OTHER), r.ret
    return (code, *r.args[:4], ret, r.t, r.stack, r.tid, r.seq)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(_SYSCALL, max_size=12))
def test_batch_decoder_and_typed_reader_agree(tmp_path: Path, recs: list[dict[str, Any]]) -> None:
    # The decoder's fast path accepts exactly what syscall_fields accepts, with the same values.
    log = tmp_path / "agree.jsonl"
    lines = [json.dumps({"type": "header", "format": EVENTS_FORMAT, "arch": "x86_64"})]
    lines += [json.dumps({"type": "syscall", **r}, separators=(",", ":")) for r in recs]
    log.write_text("\n".join(lines) + "\n")
    reader = read_events(log)
    typed = [r for r in reader if isinstance(r, SyscallRecord)]
    expect = [_item(r) for r in typed]
    gen = batches(str(log), False)
    got: list[tuple[Any, ...]] = []
    while True:
        try:
            got += [item for item in next(gen) if type(item[0]) is int]
        except StopIteration as stop:
            summary = stop.value
            break
    assert got == expect
    assert summary.skipped == reader.skipped
    assert summary.counts == dict(Counter((r.stack, r.name) for r in typed))


# --------------------------------------------------------------------------------------------- --max-events budget
def _take_many(path: str, n: int, out: Any) -> None:
    from sysbreak.capture.budget import Budget

    b = Budget(path)
    out.send([b.take() for _ in range(n)])
    b.close()


def test_the_budget_numbers_every_call_of_several_processes_once(tmp_path: Path) -> None:
    """Four processes counting at once into one budget file: every number 1..2000 handed out exactly once."""
    import multiprocessing

    from sysbreak.capture.budget import taken

    path = str(tmp_path / "budget")
    assert taken(path) == 0  # not there yet: nothing counted
    ctx = multiprocessing.get_context("fork")
    pipes = [ctx.Pipe(duplex=False) for _ in range(4)]
    procs = [ctx.Process(target=_take_many, args=(path, 500, w)) for _, w in pipes]
    for p in procs:
        p.start()
    numbers = [n for r, _ in pipes for n in r.recv()]
    for p in procs:
        p.join()
    assert sorted(numbers) == list(range(1, 2001))
    assert taken(path) == 2000


_LINE = (
    '{"type":"syscall","seq":4,"t":1000.5,"tid":7,"nr":11,"name":"munmap","args":[139637976653824,65536,0,0,0,0],'
    '"ret":0,"stack":3,"site":{"pc":1,"module":"/lib/libc.so.6","offset":1,"kind":"call"}}'
)
_ODD = [
    ('"t":1000.5', '"t":1000'),  # an int time
    ('"t":1000.5', '"t":1e400'),  # out of a double's range: Python's decoder says inf
    ('"t":1000.5', '"t":NaN'),
    ('"t":1000.5', '"t":true'),
    ('"t":1000.5', '"t":"x"'),
    ('"ret":0', '"ret":0.0'),
    ('"ret":0', '"ret":true'),
    ('"ret":0', '"ret":null'),
    ('"ret":0', '"ret":-12'),
    ('"ret":0', '"ret":18446744073709551604'),
    ('"ret":0', '"ret":99999999999999999999999'),
    ('"ret":0', '"ret":null,"when":"before"'),
    ('"ret":0', '"ret":null,"when":"before","checked":true'),  # its failure watched (a result record may follow)
    ('"ret":0', '"ret":null,"when":"before","checked":1'),
    ("65536", "18446744073709551615"),
    ("65536", "18446744073709551616"),
    ("65536", "-1"),
    ("65536", "true"),
    ("65536", "65536.0"),
    ("65536,0,0,0,0", "65536,0,0"),  # fewer args: padded by syscall_fields
    ("65536,0,0,0,0", "65536,0,0,0,0,0"),  # more: refused
    ('"stack":3', '"stack":3,"stack":5'),  # the last duplicate wins
    ('"stack":3', '"stack":3,"type":"stack"'),  # not a syscall record any more
    ('"stack":3', '"stack":"3"'),
    ('"name":"munmap"', '"name":"mu\\ud800nmap"'),  # a lone surrogate: only Python's decoder takes it
    ('"name":"munmap"', '"name":"m\\u0075nmap"'),
    ('"name":"munmap",', ""),  # the name from nr
    ('"tid":7', '"tid":7.5'),
    ('"seq":4', '"seq":[4]'),
    ('"seq":4', '"seq":4,"x":{"y":[1,{"z":null}]}'),
    ('"kind":"call"}}', '"kind":"call"}} '),
    ('"kind":"call"}}', '"kind":"call"}}\x0c'),  # whitespace to Python, not to JSON
    ('"kind":"call"}}', '"kind":"call"}} x'),
    ('"kind":"call"}}', '"kind":"call",}}'),  # a damaged site: the decoder without it still reads the line
    ('"pc":1,', '"pc":1,,'),
]


@pytest.mark.parametrize("old,new", _ODD)
def test_fast_syscall_decoding_matches_the_python_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, old: str, new: str
) -> None:
    # msgspec's decode of a syscall line (capture.reader.decode_syscall_line) gives the batch decoder exactly what
    # decode_line + syscall_fields give it, or hands the line over to them
    import sysbreak.capture.reader as reader_mod

    assert old in _LINE
    header = json.dumps({"type": "header", "format": EVENTS_FORMAT, "arch": "x86_64"})
    log = tmp_path / "odd.jsonl"
    log.write_text("\n".join([header, _LINE, _LINE.replace(old, new), _LINE]) + "\n")

    def decode() -> tuple[list[Any], Any]:
        gen = batches(str(log), False)
        items: list[Any] = []
        while True:
            try:
                items += next(gen)
            except StopIteration as stop:
                return items, stop.value

    fast_items, fast_summary = decode()
    monkeypatch.setattr(reader_mod, "decode_syscall_line", lambda line: None)
    slow_items, slow_summary = decode()
    assert repr(fast_items) == repr(slow_items)  # repr: NaN and -0.0 compared too
    assert fast_summary == slow_summary


def test_fast_syscall_decoding_takes_the_lines_the_writer_writes() -> None:
    from sysbreak.capture.reader import decode_syscall_line

    rec = decode_syscall_line(_LINE + "\n")
    assert rec is not None and (rec.name, rec.args, rec.ret, rec.t, rec.stack, rec.tid, rec.seq) == (
        "munmap", (139637976653824, 65536, 0, 0, 0, 0), 0, 1000.5, 3, 7, 4
    )  # fmt: skip
    assert decode_syscall_line(_LINE.replace('"t":1000.5', '"t":1000')) is not None  # made a float by the caller
    for old, new in [('"ret":0', '"ret":0.0'), ('"stack":3', '"stack":"3"'), ("65536", "18446744073709551616")]:
        assert decode_syscall_line(_LINE.replace(old, new)) is None  # left to decode_line and syscall_fields
