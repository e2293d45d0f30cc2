"""The in-GDB extension against real processes: exact counts, return values, stacks, threads, dlopen, libucm."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest
from gdbutil import BUILD, ROOT, SCRIPT, build_fixtures, events_through, functions, gdb_env, read_log, run_gdb

pytestmark = pytest.mark.gdb

MAP_RE = re.compile(r"^(RAW|LIBC|MAP|LIB) (0x[0-9a-f]+) (\d+)(?: (LEAK|FREE))?$", re.M)


@pytest.fixture(scope="module", autouse=True)
def fixtures_built() -> None:
    build_fixtures()


def _printed(stdout: str, kind: str) -> list[tuple[int, int, str | None]]:
    return [(int(a, 16), int(n), s) for k, a, n, s in MAP_RE.findall(stdout) if k == kind]


def test_raw_syscall_and_libc_mmap_exact(tmp_path: Path) -> None:
    log = tmp_path / "events.jsonl"
    res = run_gdb([f"sysbreak break mmap munmap --log {log} --quiet", "run"], [str(BUILD / "mapper"), "6", "5", "2"])
    assert res.returncode == 0, res.stderr
    data = read_log(log)
    raw = events_through(data, "raw_map", "mmap")
    libc = events_through(data, "libc_map", "mmap")
    printed_raw = _printed(res.stdout, "RAW")
    printed_libc = _printed(res.stdout, "LIBC")
    assert [(e["ret"], e["args"][1]) for e in raw] == [(a, n) for a, n, _ in printed_raw]
    assert [(e["ret"], e["args"][1]) for e in libc] == [(a, n) for a, n, _ in printed_libc]
    # raw mappings enter the kernel through libc's syscall(), called from raw_map: a call site
    assert all(e["site"]["kind"] == "call" for e in raw)
    assert all(functions(data, e)[:2] == ["syscall", "raw_map"] for e in raw)
    assert all(e["site"]["kind"] == "syscall" for e in libc)
    freed_raw = {a for a, _, s in printed_raw if s == "FREE"}
    freed_libc = {a for a, _, s in printed_libc if s == "FREE"}
    munmaps = [e for e in data["events"] if e["name"] == "munmap" and "main" in functions(data, e)]
    assert {e["args"][0] for e in munmaps} == freed_raw | freed_libc
    # releases are logged before they enter the kernel (docs/event-log.md, "Order"): no return value
    assert all(e["ret"] is None and e["when"] == "before" for e in munmaps)
    # with the same stacks as after the call: syscall() above main for the raw ones, libc's munmap for the others
    raw_munmaps = [e for e in munmaps if e["site"]["kind"] == "call"]
    assert {e["args"][0] for e in raw_munmaps} == freed_raw
    assert all(functions(data, e)[:2] == ["syscall", "main"] for e in raw_munmaps)
    # (GDB names glibc's munmap by its alias __GI_munmap at its first instruction, where the breakpoint is)
    assert all(functions(data, e)[0] in ("munmap", "__GI_munmap") for e in munmaps if e not in raw_munmaps)
    for e in raw + libc:
        assert e["args"][2] == 3 and e["args"][3] == 0x22  # PROT_READ|PROT_WRITE, MAP_PRIVATE|MAP_ANONYMOUS
        assert isinstance(e["t"], float) and e["tid"] > 0
    assert data["end"] is not None and data["end"]["reason"] == "exited"
    # getppid through syscall() and through libc was never caught: not asked for
    assert {e["name"] for e in data["events"]} <= {"mmap", "munmap"}


def test_returned_addresses_match_proc_maps(tmp_path: Path) -> None:
    """Every leaked mapping's captured (address, length) is covered by a VMA of /proc/PID/maps while it lives."""
    log = tmp_path / "events.jsonl"
    maps = tmp_path / "maps.txt"
    dump = f"python open('{maps}', 'w').write(open('/proc/%d/maps' % gdb.selected_inferior().pid).read())"
    res = run_gdb(
        [f"sysbreak break mmap munmap --log {log} --quiet", "break fgets", "run", dump, "kill"],
        [str(BUILD / "mapper"), "5", "5", "2", "--wait"],
    )
    assert maps.exists(), res.stderr
    vmas = []
    for line in maps.read_text().splitlines():
        lo, hi = line.split()[0].split("-")
        vmas.append((int(lo, 16), int(hi, 16)))
    data = read_log(log)
    leaked = [
        e
        for e in events_through(data, "raw_map", "mmap") + events_through(data, "libc_map", "mmap")
        if e["ret"] not in {u["args"][0] for u in data["events"] if u["name"] == "munmap"}
    ]
    assert len(leaked) == 6  # 3 raw + 3 libc (every 2nd of 5 leaks)
    for e in leaked:
        assert any(lo <= e["ret"] and e["ret"] + e["args"][1] <= hi for lo, hi in vmas), hex(e["ret"])


def test_sixteen_threads_exact_counts(tmp_path: Path) -> None:
    log = tmp_path / "events.jsonl"
    res = run_gdb([f"sysbreak break mmap munmap --log {log} --quiet", "run"], [str(BUILD / "mapper_mt"), "16", "20"])
    assert res.returncode == 0, res.stderr
    assert "DONE 320 160" in res.stdout
    data = read_log(log)
    maps = events_through(data, "thread_map", "mmap")
    unmaps = [e for e in data["events"] if e["name"] == "munmap" and "worker" in functions(data, e)]
    assert len(maps) == 320
    assert len(unmaps) == 160
    assert len({e["tid"] for e in maps}) == 16
    assert all(e["ret"] > 0 and e["args"][1] == 4096 for e in maps)
    assert {e["args"][0] for e in unmaps} <= {e["ret"] for e in maps}


def test_library_loaded_later_is_armed(tmp_path: Path) -> None:
    """dlopen after start; --exhaustive also catches the library's own generic wrapper called by pointer."""
    log = tmp_path / "events.jsonl"
    lib = BUILD / "libsbstripped.so"
    cmds = [f"sysbreak break mmap munmap --exhaustive --log {log} --quiet", "run"]
    res = run_gdb(cmds, [str(BUILD / "dlopener"), str(lib), "4"])
    assert res.returncode == 0, res.stderr
    data = read_log(log)
    in_lib = [e for e in data["events"] if e["site"]["module"] and e["site"]["module"].endswith("libsbstripped.so")]
    maps = [e for e in in_lib if e["name"] == "mmap"]
    unmaps = [e for e in in_lib if e["name"] == "munmap"]
    printed = _printed(res.stdout, "LIB")
    assert [(e["ret"], e["args"][1]) for e in maps] == [(a, n) for a, n, _ in printed]
    # sb_lib_syscall1(nr, ...) takes its number from the caller: caught at its entry (rdi) + after its syscall;
    # a munmap is logged at the entry, before it enters the kernel (docs/event-log.md, "Order")
    assert [e["args"][0] for e in unmaps] == [a for i, (a, _, _) in enumerate(printed) if i % 2]
    assert all(e["ret"] is None and e["when"] == "before" for e in unmaps)
    assert all(e["ret"] > 0 and "when" not in e for e in maps)
    assert any(m["path"].endswith("libsbstripped.so") for m in data["modules"])


def test_libucm_stack_runs_from_program_through_libucm_to_syscall(tmp_path: Path) -> None:
    log = tmp_path / "events.jsonl"
    res = run_gdb([f"sysbreak break mmap --log {log}", "run"], [str(BUILD / "ucm_leak"), "6", "2"])
    assert res.returncode == 0, res.stderr
    data = read_log(log)
    ours = events_through(data, "leak_region", "mmap")
    printed = _printed(res.stdout, "MAP")
    assert [(e["ret"], e["args"][1]) for e in ours] == [(a, n) for a, n, _ in printed]
    for e in ours:
        frames = data["stacks"][e["stack"]]["frames"]
        names = [f["function"] for f in frames]
        mods = [os.path.basename(f["module"] or "") for f in frames]
        assert names[0] == "syscall" and mods[0].startswith("libc.so")
        i = names.index("leak_region")
        assert any(m.startswith("libucm.so") for m in mods[1:i]), mods
        assert names[i + 1] == "main"
        assert frames[i]["file"] and frames[i]["file"].endswith("ucm_leak.c") and frames[i]["line"]
        assert e["site"]["module"].split("/")[-1].startswith("libucm.so")
    # a console line per event unless --quiet
    assert "sysbreak: [" in res.stdout and "mmap(NULL, 65536, READ|WRITE, PRIVATE|ANONYMOUS" in res.stdout


def test_sites_inside_gdb_lists_libucm_and_libc(tmp_path: Path) -> None:
    res = run_gdb(
        ["break leak_region", "run", "sysbreak sites mmap --lib 'libucm|libc'"], [str(BUILD / "ucm_leak"), "1"]
    )
    assert res.returncode == 0, res.stderr
    assert "libucm" in res.stdout and "libc.so" in res.stdout
    assert "ucm_orig_mmap_syscall" in res.stdout


def test_help_and_bad_input() -> None:
    res = run_gdb(
        ["help sysbreak", "sysbreak break nosuchcall", "sysbreak break --lib '('", "sysbreak status"], ["true"]
    )
    assert "sysbreak break [SYSCALL...]" in res.stdout
    assert "nosuchcall" in res.stderr
    assert "bad --lib regex" in res.stderr
    assert "Traceback" not in res.stderr + res.stdout


def _wait_heartbeats(path: Path, more_than: int, timeout: float = 10) -> int:
    deadline = time.monotonic() + timeout
    n = 0
    while time.monotonic() < deadline:
        beats = re.findall(r"heartbeat (\d+)", path.read_text())
        n = int(beats[-1]) if beats else 0
        if n > more_than:
            return n
        time.sleep(0.05)
    raise AssertionError(f"no heartbeat after {more_than} (last {n})")


def _orig_bytes_back(pid: int, restore: Path) -> None:
    import json

    with open(f"/proc/{pid}/mem", "rb") as mem:
        for line in restore.read_text().splitlines():
            rec = json.loads(line)
            mem.seek(rec["addr"])
            assert mem.read(1).hex() == rec["orig"], hex(rec["addr"])


@pytest.mark.parametrize("ending", ["clear-detach", "quit-detach-on-exit", "max-events"])
def test_attach_leaves_target_running_and_unpatched(tmp_path: Path, ending: str) -> None:
    out = tmp_path / "out.txt"
    log = tmp_path / "events.jsonl"
    restore = tmp_path / "restore.jsonl"
    with open(out, "w") as fh:
        proc = subprocess.Popen([str(BUILD / "leaky_server"), "--interval-ms", "20"], stdout=fh)
    try:
        _wait_heartbeats(out, 2)
        interrupt = (
            "python import threading; threading.Timer(1.0, lambda: gdb.post_event("
            "lambda: gdb.execute('interrupt'))).start()"
        )
        arm = f"sysbreak break mmap munmap --log {log} --restore-file {restore} --quiet"
        if ending == "clear-detach":
            cmds = [arm, interrupt, "continue", "sysbreak clear", "detach"]
        elif ending == "quit-detach-on-exit":
            cmds = ["set sysbreak detach-on-exit on", arm, interrupt, "continue"]
        else:
            cmds = [arm.replace("--quiet", "--quiet --max-events 5"), "continue", "sysbreak status", "detach"]
        argv = ["gdb", "-nx", "-q", "-batch", "-ex", f"source {SCRIPT}"]
        for c in cmds:
            argv += ["-ex", c]
        argv += ["-p", str(proc.pid)]
        res = subprocess.run(argv, capture_output=True, text=True, timeout=60, env=gdb_env())
        assert "Traceback" not in res.stderr, res.stderr
        assert proc.poll() is None, "target died"
        status = Path(f"/proc/{proc.pid}/status").read_text()
        assert "TracerPid:\t0" in status
        state = re.search(r"State:\s+(\S)", status)
        assert state and state.group(1) in "SR"
        before = _wait_heartbeats(out, 0)
        _wait_heartbeats(out, before + 3)
        _orig_bytes_back(proc.pid, restore)
        data = read_log(log)
        assert data["end"] is not None
        ours = events_through(data, "register_kv_block", "mmap")
        assert ours and all(e["args"][1] == 256 * 1024 and e["ret"] > 0 for e in ours)
        if ending == "max-events":
            assert len(data["events"]) == 5 and data["end"]["reason"] == "max-events"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()


def test_loader_reports_missing_dependencies(tmp_path: Path) -> None:
    env = dict(os.environ)
    env["SYSBREAK_PYTHONPATH"] = ""
    # a copy of the loader outside the checkout cannot find src/ or .venv
    script = tmp_path / "sysbreak.py"
    script.write_text(SCRIPT.read_text())
    res = subprocess.run(
        ["gdb", "-nx", "-q", "-batch", "-ex", f"source {script}", "-ex", "help sysbreak"],
        capture_output=True,
        text=True,
        env={k: v for k, v in env.items() if k not in ("VIRTUAL_ENV", "SYSBREAK_PYTHONPATH", "PYTHONPATH")},
        cwd=str(ROOT.parent),
    )
    assert "cannot import: sysbreak" in res.stderr
    assert "Traceback" not in res.stderr


def test_recursive_frames_are_all_recorded(tmp_path: Path) -> None:
    """Recursion gives consecutive equal frames; only GDB's inline duplicates may be merged, never these."""
    log = tmp_path / "events.jsonl"
    res = run_gdb(
        [f"sysbreak break mmap --log {log} --quiet", "run"],
        [str(BUILD / "workload"), "-c", "0", "-m", "4", "-d", "20", "-u", "0"],
    )
    assert res.returncode == 0, res.stderr
    data = read_log(log)
    ours = events_through(data, "descend", "mmap")
    assert len(ours) == 4
    for e in ours:
        assert functions(data, e).count("descend") >= 20


def test_stack_cache_gives_exactly_the_unwound_stacks(tmp_path: Path) -> None:
    """The stack-key cache must never change a recorded stack: same multiset with it on and off (4 threads)."""
    import json
    from collections import Counter

    def capture(setting: str) -> tuple[Counter[tuple[object, ...]], dict[str, int]]:
        log = tmp_path / f"{setting}.jsonl"
        cmds = [f"set sysbreak stack-cache {setting}", f"sysbreak break mmap munmap --log {log} --quiet"]
        res = run_gdb(
            [*cmds, "run", "sysbreak status --json"], [str(BUILD / "workload"), "-c", "0", "-m", "80", "-t", "4"]
        )
        assert res.returncode == 0, res.stderr
        data = read_log(log)
        stacks = Counter(
            (e["name"], tuple((f["pc"], f["function"]) for f in data["stacks"][e["stack"]]["frames"]))
            for e in data["events"]
        )
        status = json.loads(next(ln for ln in res.stdout.splitlines() if ln.startswith("{")))
        return stacks, status["stack_cache"]

    on, on_stats = capture("on")
    off, off_stats = capture("off")
    assert on == off
    assert on_stats["hits"] > 100 and off_stats["hits"] == 0
