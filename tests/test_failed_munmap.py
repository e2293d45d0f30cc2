"""Issue 8: a munmap is logged BEFORE it enters the kernel (log order = kernel order), so a munmap that then fails
(ENOMEM splitting a mapping at vm.max_map_count, EINVAL, EPERM on a sealed mapping) must not be taken as done.
The tracer watches the error branch after the syscall (a stop only when a call fails) and logs a `result`
record; the replay then leaves the bytes mapped. Pure logic on hand-written logs, then a real program under gdb.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from conftest import FixturePaths, run_sysbreak
from elftools.elf.elffile import ELFFile

from sysbreak import sites
from sysbreak.analysis import analyze
from sysbreak.analysis.model import Analysis
from sysbreak.capture import EventLogWriter
from sysbreak.capture.decode import BATCH, HOLD_BACK
from sysbreak.sites.failpath import BYTES, fail_target

P = 4096
X = 0x7F0000100000
NEG1 = (1 << 64) - 1
LIBC = Path("/lib/x86_64-linux-gnu/libc.so.6")


# --------------------------------------------------------------------------------------------- the error branch
@pytest.mark.parametrize(
    ("code", "at", "target"),
    [
        ("483d01f0ffff7301c3488b0dc9130d00", 0x101A07, 0x101A10),  # glibc 2.36 munmap(): cmp; jae error
        ("483d01f0ffff0f8310000000c3", 0x2000, 0x201C),  # the same with a rel32 jae
        ("483d01f0ffff7605c7c0f1000000", 0x1000, 0x1008),  # Go's runtime.munmap: jbe ok; the failure falls through
        ("483d00f0ffff7703c3", 0x3000, 0x300B),  # cmp rax, -4096; ja error
        ("4885c0780ac3", 0x4000, 0x400F),  # test rax, rax; js error
        ("4889c3c3", 0x5000, None),  # the result is kept, not tested
        ("483d01f0ffffc3", 0x6000, None),  # a compare, no branch
    ],
)
def test_the_error_branch_after_a_syscall(code: str, at: int, target: int | None) -> None:
    assert fail_target(bytes.fromhex(code), at) == target


def _file_bytes(path: Path, vaddr: int, n: int) -> bytes:
    with path.open("rb") as fh:
        elf = ELFFile(fh)
        for seg in elf.iter_segments():
            if seg["p_type"] == "PT_LOAD" and seg["p_vaddr"] <= vaddr < seg["p_vaddr"] + seg["p_filesz"]:
                fh.seek(seg["p_offset"] + vaddr - seg["p_vaddr"])
                return fh.read(n)
    raise AssertionError(f"{vaddr:#x} is in no PT_LOAD of {path}")


def test_libc_munmap_and_syscall_have_an_error_branch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The common case costs no stop: glibc's munmap() and syscall() test the result at once, and a success never
    runs the branch the failure breakpoint is on."""
    monkeypatch.setenv("SYSBREAK_CACHE_DIR", str(tmp_path / "cache"))
    sites.forget_memo()
    scan = sites.scan(str(LIBC))
    munmaps = [s for s in scan.sites if s.kind == "syscall" and s.nr == 11]
    wrapper = [s for s in scan.sites if s.callers_probed]
    assert munmaps and len(wrapper) == 1
    for s in [*munmaps, *wrapper]:
        after = s.vaddr + s.size
        target = fail_target(_file_bytes(LIBC, after, BYTES), after)
        assert target is not None and target > after + 2, (s.symbol, hex(s.vaddr))


# --------------------------------------------------------------------------------------------- the replay
class Log:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.w = EventLogWriter(path, append=False)
        self.w.header(arch="x86_64", pid=7, exe="/srv/app", syscalls=["mmap", "munmap"], mode="callsite", t0=1.0,
                      wall0="2026-12-01T08:00:00+00:00", tool="test", gdb="none")  # fmt: skip
        self.t = 1.0

    def ev(self, tid: int, name: str, args: list[int], ret: int | None, who: str, **extra: Any) -> int:
        self.t += 0.001
        frame = {"pc": 0x1000 + len(who), "module": "/srv/app", "offset": len(who), "function": who}
        sid = self.w.stack_id((who,), [frame], [])
        self.w.event(t=self.t, tid=tid, nr={"mmap": 9, "munmap": 11}[name], name=name,
                     args=[*args, *[0] * (6 - len(args))], ret=ret, stack=sid, **extra)  # fmt: skip
        return self.w.seq

    def mmap(self, tid: int, ret: int, length: int, who: str) -> int:
        return self.ev(tid, "mmap", [0, length, 3, 0x22, NEG1, 0], ret, who)

    def munmap_before(self, tid: int, addr: int, length: int, who: str, *, checked: bool = True) -> int:
        extra: dict[str, Any] = {"when": "before", **({"checked": True} if checked else {})}
        return self.ev(tid, "munmap", [addr, length], None, who, **extra)

    def failed(self, tid: int, of: int, addr: int, length: int, ret: int = -12) -> None:
        self.w.result(t=self.t, pid=7, tid=tid, of=of, ret=ret, addr=addr, length=length)

    def close(self) -> Path:
        self.w.end("exited", self.t + 1)
        self.w.close()
        return self.path


def live_by(a: Analysis) -> dict[str, int]:
    out: dict[str, int] = {}
    for s in a.stacks:
        name = (s.frames[0].function if s.frames else None) or "?"
        out[name] = out.get(name, 0) + s.live_bytes
    return {k: v for k, v in out.items() if v}


def test_a_failed_munmap_leaves_its_bytes_mapped(tmp_path: Path) -> None:
    log = Log(tmp_path / "e.jsonl")
    log.mmap(1, X, 16 * P, "a_map")
    seq = log.munmap_before(1, X + 4 * P, 4 * P, "a_unmap")  # ENOMEM: splitting at vm.max_map_count
    log.mmap(2, X + 64 * P, P, "b_map")  # another thread's call before the failure was logged
    log.failed(1, seq, X + 4 * P, 4 * P)
    log.munmap_before(1, X + 12 * P, 4 * P, "a_unmap")  # this one worked (no result came)
    a = analyze(log.close())
    assert live_by(a) == {"a_map": 12 * P, "b_map": P}
    assert a.failed_releases == 1 and a.warnings == [] and a.blind_spots is None
    assert a.by_syscall == {"munmap": 2, "mmap": 2}  # a failed call is still a call of its stack


def test_a_result_that_is_not_a_failure_or_not_of_a_release_changes_nothing(tmp_path: Path) -> None:
    log = Log(tmp_path / "e.jsonl")
    log.mmap(1, X, 16 * P, "a_map")
    seq = log.munmap_before(1, X, 4 * P, "a_unmap")
    log.failed(1, seq, X, 4 * P, ret=0)  # not an error
    log.failed(1, 999, X, 4 * P)  # no such record
    a = analyze(log.close())
    assert live_by(a) == {"a_map": 12 * P} and a.failed_releases == 0


def test_a_failure_near_the_end_of_a_batch_is_still_undone(tmp_path: Path) -> None:
    """The decoder cuts its batches before a watched release whose result may still come, so the result finds it."""
    log = Log(tmp_path / "e.jsonl")
    log.mmap(1, X, 16 * P, "a_map")
    for i in range(BATCH - 10):
        log.mmap(2, X + (100 + i) * P, P, "b_map")
    seq = log.munmap_before(1, X, 4 * P, "a_unmap")
    for i in range(100):  # the batch fills up before the result comes
        log.mmap(3, X + (5000 + i) * P, P, "c_map")
    log.failed(1, seq, X, 4 * P)
    a = analyze(log.close())
    assert live_by(a)["a_map"] == 16 * P and a.failed_releases == 1 and a.warnings == []


@pytest.mark.parametrize("parallel", [False, True])
def test_a_failure_logged_long_after_its_release_is_undone_by_a_second_pass(tmp_path: Path, parallel: bool) -> None:
    """A result more than a batch after its release (the failing thread's stop reported very late): the release
    was replayed as done, so the analysis runs once more with it known failed (also through the decoding worker)."""
    log = Log(tmp_path / "e.jsonl")
    log.mmap(1, X, 16 * P, "a_map")
    seq = log.munmap_before(1, X, 4 * P, "a_unmap")
    for i in range(BATCH + HOLD_BACK):
        log.mmap(2, X + (100 + i) * P, P, "b_map")
    log.failed(1, seq, X, 4 * P)
    log.munmap_before(1, X + 8 * P, 4 * P, "a_unmap")  # one that worked
    a = analyze(log.close(), parallel=parallel)
    assert live_by(a) == {"a_map": 12 * P, "b_map": (BATCH + HOLD_BACK) * P}
    assert a.failed_releases == 1 and a.warnings == []


def test_the_late_failure_warning_names_the_bytes() -> None:
    """Should a second pass still find a failure it cannot place, the warning says how many bytes."""
    from sysbreak.analysis.pipeline import _replay_warnings
    from sysbreak.analysis.replay import LogReplay
    from sysbreak.analysis.snapshots import SnapshotPlan
    from sysbreak.analysis.stacks import StackGroups
    from sysbreak.capture.decode import StreamSummary

    run = LogReplay(SnapshotPlan([], None, None), StackGroups(None, None), [])
    [w] = _replay_warnings(StreamSummary(late_failures=1, late_failure_bytes=4 * P, ended=True), run, True, [])
    assert "1 munmap call logged before entering the kernel failed" in w and f"{4 * P} bytes" in w


def test_a_release_whose_failure_was_not_watched_is_a_blind_spot(tmp_path: Path) -> None:
    """A log of an older sysbreak (no `checked`): a failure would not be seen; the report says so."""
    log = Log(tmp_path / "e.jsonl")
    log.mmap(1, X, 16 * P, "a_map")
    log.munmap_before(1, X, 4 * P, "a_unmap", checked=False)
    a = analyze(log.close())
    assert live_by(a) == {"a_map": 12 * P}
    assert a.blind_spots is not None and a.blind_spots.unchecked_releases == 1
    assert "1 munmap call was taken as done without its result" in a.blind_spots.summary
    from sysbreak.report import render

    assert "1 munmap call was taken as done without its result" in render(a, "text")
    assert json.loads(render(a, "json"))["blind_spots"]["unchecked_releases"] == 1


# --------------------------------------------------------------------------------------------- a real program
@pytest.mark.gdb
@pytest.mark.parametrize("stop_mode", ["all-stop", "non-stop", "exhaustive"])
def test_failed_munmaps_of_a_real_program_leave_the_live_bytes_exact(
    tmp_path: Path, fixture_paths: FixturePaths, stop_mode: str
) -> None:
    """fixtures/src/badunmap.c: munmap of a hole (twice), EINVAL twice, then at vm.max_map_count ENOMEM through
    glibc's munmap(), through syscall(SYS_munmap) (libucm's way) and through a bare syscall instruction whose
    result the code never tests, between real mappings, then a munmap and a failing madvise of the same range
    through one syscall() call site; every stack's live bytes are exact."""
    cap = tmp_path / "cap"
    # (--exhaustive: syscall(SYS_munmap) is caught at the entry of glibc's syscall() itself)
    mode = {"non-stop": ["--non-stop"], "exhaustive": ["--exhaustive"]}.get(stop_mode, [])
    res = run_sysbreak("run", *mode, "-s", "mmap,munmap", "-i", "0", "-o", cap, "--",
                       fixture_paths.build / "badunmap", timeout=180)  # fmt: skip
    assert res.returncode == 0, res.stderr
    said = {w[1]: int(w[2]) for w in (ln.split() for ln in res.stdout.splitlines()) if w[0] == "RESULT"}
    assert said == {"hole": 0, "again": 0, "unaligned": 22, "zero": 22, "libc": 12, "syscall": 12, "raw": 12,
                    "later": 0, "generic": 0, "madvise": 12}  # fmt: skip
    pages = next(int(ln.split()[1]) for ln in res.stdout.splitlines() if ln.startswith("PAGES "))

    recs = [json.loads(ln) for ln in (cap / "events.jsonl").read_text().splitlines()]
    calls = {r["seq"]: r for r in recs if r["type"] == "syscall"}
    results = [r for r in recs if r["type"] == "result"]
    assert sorted(r["ret"] for r in results) == [-22, -22, -12, -12, -12]
    for r in results:  # each names the munmap it failed, logged before it entered the kernel, by its thread
        call = calls[r["of"]]
        assert call["name"] == "munmap" and call["when"] == "before" and call["tid"] == r["tid"]
        assert [r["addr"], r["length"]] == call["args"][:2]
    assert all(c.get("checked") for c in calls.values() if c.get("when") == "before")  # every failure watched

    rep = run_sysbreak("report", cap, "-f", "json")
    assert rep.returncode == 0, rep.stderr
    doc = json.loads(rep.stdout)
    live: dict[str, int] = {}
    for s in doc["stacks"]:
        for f in s["frames"]:
            if (f.get("function") or "").startswith("map_"):
                live[f["function"]] = s["live_bytes"]
    # (E: unmapped through a syscall() call site whose madvise then fails through the same error branch, with
    # the same arguments: not the munmap's failure)
    assert live == {"map_a": 4 * P, "map_b": 7 * P, "map_c": 2 * P, "map_d": 3 * P, "map_e": 0, "map_r": pages * P}
    assert doc["failed_releases"] == 5
    assert (doc["blind_spots"] or {}).get("unchecked_releases", 0) == 0
    assert not [w for w in doc["warnings"] if "munmap" in w]


@pytest.mark.gdb
def test_successful_munmaps_never_stop_at_the_error_branch(tmp_path: Path, fixture_paths: FixturePaths) -> None:
    """mapper: 30 munmaps through glibc's munmap() and 30 through syscall(SYS_munmap), all successful, plus 60
    successful syscall() calls of other numbers: the error branches are armed and never hit."""
    from gdbutil import run_gdb

    log = tmp_path / "e.jsonl"
    cmds = [f"sysbreak break mmap munmap --log {log} --quiet", "run", "sysbreak status --json"]
    res = run_gdb(cmds, [str(fixture_paths.mapper), "30", "30", "1000"])
    assert res.returncode == 0, res.stderr
    status = json.loads(next(ln for ln in res.stdout.splitlines() if ln.startswith("{")))
    assert status["failure_watch"]["breakpoints"] >= 2  # glibc's munmap() and syscall()
    assert status["failure_watch"]["hits"] == 0 and status["failure_watch"]["failed_releases"] == 0
    recs = [json.loads(ln) for ln in log.read_text().splitlines()]
    before = [r for r in recs if r["type"] == "syscall" and r.get("when") == "before"]
    assert len(before) >= 58 and all(r.get("checked") for r in before)
