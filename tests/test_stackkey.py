"""The incremental raw-stack key (sysbreak.stackkey) is the word-by-word key, and registers read by ptrace are
GDB's (sysbreak.tracee): pure logic, plus one real traced child."""

from __future__ import annotations

import os
import random
import signal
import struct
import subprocess
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sysbreak.stackkey import CodeRanges, StackKeyer, full_key
from sysbreak.tracee import USER_REGS, Tracee

CODE = CodeRanges([(0x7F00_0000_0000, 0x7F00_0040_0000), (0x5555_0000_0000, 0x5555_0001_0000)])
TOP = 0x7FFF_F000_0000  # end of the stack mapping


def _canonical(pc: int, sp: int, top: int, data: bytes) -> tuple[object, ...]:
    """StackKeyer's key, derived from full_key: positions counted from the mapping's end instead of $rsp."""
    ref = full_key(pc, data, CODE)
    n = ref[1]
    assert isinstance(n, int)
    pairs = list(zip(ref[2::2], ref[3::2], strict=True))
    pairs.sort(key=lambda p: -p[0])  # highest address first
    offs = tuple(top - (sp + 8 * i) for i, _ in pairs)
    return (pc, n, top - (sp + n), offs, tuple(v for _, v in pairs))


def _word(rng: random.Random) -> int:
    r = rng.random()
    if r < 0.3:
        return rng.randrange(0x7F00_0000_0000, 0x7F00_0040_0000)  # code
    if r < 0.35:
        return rng.randrange(0x5555_0000_0000, 0x5555_0001_0000)  # code (the executable)
    if r < 0.5:
        return rng.randrange(0x7F00_0040_0000, 0x7F00_0060_0000)  # near code, same 2 MiB bucket or the next
    if r < 0.7:
        return 0
    return rng.getrandbits(64)


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32), steps=st.integers(1, 12))
def test_incremental_key_is_the_word_by_word_key(seed: int, steps: int) -> None:
    """Windows of one thread changing between stops (deeper, shallower, rewritten in places, truncated below the
    top): every key equals the one computed word by word, and equal keys mean equal code pointers."""
    rng = random.Random(seed)
    keyer = StackKeyer(CODE)
    depth = rng.randrange(1, 1024) * 8
    stack = bytearray(struct.pack(f"<{depth // 8}Q", *(_word(rng) for _ in range(depth // 8))))
    for _ in range(steps):
        action = rng.random()
        if action < 0.3:  # deeper: new words below
            more = rng.randrange(1, 300) * 8
            stack[:0] = struct.pack(f"<{more // 8}Q", *(_word(rng) for _ in range(more // 8)))
        elif action < 0.5 and len(stack) > 16:  # shallower
            del stack[: rng.randrange(1, len(stack) // 8) * 8]
        for _ in range(rng.randrange(0, 4)):  # a few words rewritten anywhere
            i = rng.randrange(0, len(stack) // 8) * 8
            stack[i : i + 8] = struct.pack("<Q", _word(rng))
        sp = TOP - len(stack)
        window = bytes(stack)
        if rng.random() < 0.2 and len(window) > 64:  # cut below the top (RAW_WINDOW)
            window = window[: rng.randrange(1, len(window) // 8) * 8]
        pc = rng.choice((0x7F00_0000_1000, 0x7F00_0000_2000))
        assert keyer.key(7, pc, sp, TOP, window) == _canonical(pc, sp, TOP, window)


def test_new_code_ranges_rescan_and_threads_are_separate() -> None:
    keyer = StackKeyer(CODE)
    data = struct.pack("<4Q", 1, 0x7F00_0000_0010, 0x7F10_0000_0000, 2)
    sp = TOP - len(data)
    assert keyer.key(1, 5, sp, TOP, data)[4] == (0x7F00_0000_0010,)
    keyer.set_code(CodeRanges([(0x7F10_0000_0000, 0x7F10_0000_1000)]))  # a library came, another went
    assert keyer.key(1, 5, sp, TOP, data)[4] == (0x7F10_0000_0000,)
    assert keyer.key(2, 5, sp, TOP, data)[4] == (0x7F10_0000_0000,)
    assert keyer.words_reused == 0  # a new thread and new ranges: scanned in full


def test_a_repeated_stack_is_reused_not_rescanned() -> None:
    keyer = StackKeyer(CODE)
    rng = random.Random(1)
    data = struct.pack("<4096Q", *(_word(rng) for _ in range(4096)))
    sp = TOP - len(data)
    first = keyer.key(1, 5, sp, TOP, data)
    scanned = keyer.words_scanned
    changed = b"\0" * 8 + data[8:]  # only the newest word differs
    second = keyer.key(1, 5, sp, TOP, changed)
    assert second[3:] == _canonical(5, sp, TOP, changed)[3:]
    assert first != second or first[4] == second[4]
    assert keyer.words_scanned - scanned <= 16  # the differing 128-byte block at most


def test_ptrace_registers_are_the_threads() -> None:
    """A child stopped under our ptrace: one PTRACE_GETREGS gives its registers, /proc/PID/mem its memory."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p]
    child = subprocess.Popen(["sleep", "30"])
    try:
        if libc.ptrace(16, child.pid, None, None) != 0:  # PTRACE_ATTACH
            pytest.skip(f"cannot ptrace here: {os.strerror(ctypes.get_errno())}")
        os.waitpid(child.pid, 0)
        tracee = Tracee(child.pid)
        assert not tracee.direct
        regs = tracee.regs(child.pid)
        assert regs is not None and tracee.direct and set(regs) == set(USER_REGS)
        with open(f"/proc/{child.pid}/maps") as fh:
            stack = next(line for line in fh if "[stack]" in line)
        lo, hi = (int(x, 16) for x in stack.split()[0].split("-"))
        assert lo <= regs["rsp"] < hi
        with open(f"/proc/{child.pid}/mem", "rb") as fh:
            fh.seek(regs["rsp"])
            assert tracee.read(regs["rsp"], 64) == fh.read(64)
        tracee.close()
        assert Tracee(os.getpid()).regs(os.getpid()) is None  # not traced by us: GDB's API is used instead
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()


def test_raw_stack_record_is_the_plain_json_encoding(tmp_path: Path) -> None:
    """The writer splices the stack's base64 in by hand (sysbreak.capture.writer): the line must decode to what
    json.dumps of the record gives."""
    import base64
    import json

    from sysbreak.capture.writer import EventLogWriter

    log = tmp_path / "events.jsonl"
    w = EventLogWriter(log)
    stack = bytes(range(256)) * 9
    raw = {"regs": {"rip": 1, "rsp": 2}, "stack": stack, "truncated": True, "pc0": None}
    frames = [{"pc": 3, "module": 'a "quoted" \\ path', "offset": 0, "function": "f", "file": None, "line": None}]
    w.raw_stack(("k",), frames, [{"file": "x.py", "line": 1, "function": "g"}], raw)
    w.raw_stack(("k2",), [], [], {"stack": b"\0" * 8})
    w.close()
    lines = log.read_text().splitlines()
    first = json.loads(lines[0])
    assert first == {
        "type": "stack",
        "id": 1,
        "frames": frames,
        "python": [{"file": "x.py", "line": 1, "function": "g"}],
        "raw": {**raw, "stack": base64.b64encode(stack).decode()},
    }
    assert json.loads(lines[1])["raw"] == {"stack": base64.b64encode(b"\0" * 8).decode()}
