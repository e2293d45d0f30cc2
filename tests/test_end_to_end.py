"""The whole pipeline on a real process: `sysbreak run` on a libucm fixture -> capture -> `sysbreak report`/`diff`.

leaky_server registers LEAK blocks through libucm (mmap -> libucm -> syscall()) and never releases them, while
its scratch mappings are unmapped at once and its heap stays flat: the report must put the libucm stack first
with exactly the leaked bytes live, and attribute the grown anonymous regions of the smaps snapshots to it.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pytest
from gdbutil import BUILD, build_fixtures
from support.cli import run_sysbreak

from sysbreak.capture import read_events
from sysbreak.capture.schema import StackRecord

pytestmark = pytest.mark.gdb

TICKS = 16
BLOCK_KB = 512
LEAKED = TICKS * BLOCK_KB * 1024


def sysbreak(*args: str, timeout: float = 120, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return run_sysbreak(*args, timeout=timeout, env=env)


def capture(out: Path, env: dict[str, str] | None = None) -> None:
    res = sysbreak(
        "run",
        "-o",
        str(out),
        "-i",
        "0.2",
        "--quiet",
        "--",
        str(BUILD / "leaky_server"),
        "--ticks",
        str(TICKS),
        "--interval-ms",
        "20",
        "--block-kb",
        str(BLOCK_KB),
        "--linger-ms",
        "1200",
        env=env,
    )
    assert res.returncode == 0, res.stderr
    assert f"LEAKED {LEAKED}" in res.stdout


@pytest.fixture(scope="module")
def captures(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    build_fixtures()
    root = tmp_path_factory.mktemp("e2e")
    caps = {"ucm": root / "ucm", "no_hook": root / "no-hook"}
    capture(caps["ucm"])
    # the seed's fix: libucm no longer hooks mmap, the program's mmap() goes straight to libc
    capture(caps["no_hook"], env={**os.environ, "UCX_MEM_MMAP_HOOK_MODE": "none"})
    return caps


def report_json(cap: Path, *extra: str) -> dict[str, Any]:
    res = sysbreak("report", str(cap), "-f", "json", *extra)
    assert res.returncode == 0, res.stderr
    doc: dict[str, Any] = json.loads(res.stdout)
    return doc


def functions(stack: dict[str, Any]) -> list[str | None]:
    return [f["function"] for f in stack["frames"]]


def test_leaking_libucm_stack_is_first_with_exact_live_bytes(captures: dict[str, Path]) -> None:
    doc = report_json(captures["ucm"])
    assert doc["format"] == "sysbreak-report/2"
    top = doc["stacks"][0]
    names = functions(top)
    modules = [Path(f["module"] or "").name for f in top["frames"]]
    assert names[0] == "syscall" and modules[0].startswith("libc.so")
    assert any(m.startswith("libucm.so") for m in modules)
    assert "register_kv_block" in names and "decode_step" in names
    assert top["live_bytes"] == LEAKED
    assert top["by_syscall"] == {"mmap": TICKS}
    # the grown smaps regions are attributed to it, every leaked byte of them
    owned = [(r, o["bytes"]) for r in doc["regions"] for o in r["owners"] if o["stack"] == top["id"]]
    assert sum(b for _, b in owned) == LEAKED
    assert all(r["status"] in ("new", "grew") for r, _ in owned)
    assert top["growth_bytes"] >= LEAKED * 0.9 and top["rss_bytes"] >= LEAKED * 0.9
    # the scratch mappings are unmapped at once: mapped a lot, live nothing
    scratch = [s for s in doc["stacks"] if "scratch_work" in functions(s) and "mmap" in s["by_syscall"]]
    assert scratch and all(s["live_bytes"] == 0 and s["mapped_bytes"] > 0 for s in scratch)
    assert doc["totals"]["by_syscall"]["mmap"] >= 2 * TICKS
    # peak beside live: the leak never unmapped (peak = live), the scratch buffer held 64 KiB at a time
    assert top["peak_bytes"] == LEAKED
    assert all(s["peak_bytes"] == 64 * 1024 and s["kind"] == "idle" for s in scratch)


def test_report_points_at_the_leak_and_folds_the_rest(captures: dict[str, Path]) -> None:
    """Ranked by resident growth; headline = row #1 in every format; libraries, idle stacks folded; every label
    distinct; no rank referenced that is not shown; the UCX hint; no rate over a 2 s capture."""
    doc = report_json(captures["ucm"])
    top = doc["stacks"][0]
    assert doc["sort"] == "rss-growth" and "register_kv_block" in top["label"]
    # every leaked page is touched: its resident growth is the leak, exactly (the merged VMA's resident pages)
    assert top["rss_growth_bytes"] == top["rss_bytes"] == top["anon_rss_bytes"] == LEAKED
    assert doc["headline"].startswith("Process RSS grew by ")
    assert f"; stack #1 {top['label']} added " in doc["headline"]
    res = sysbreak("report", str(captures["ucm"]))
    text = res.stdout
    assert text.splitlines()[0] == doc["headline"]
    html = sysbreak("report", str(captures["ucm"]), "-f", "html", "-o", "-").stdout
    assert doc["headline"] in html and f'id="stack-{top["id"]}" open' in html
    assert 'class="stack-line"' in html  # the top stack's own line in the plot
    # the loader's stacks: one line, never a row
    libs = [s for s in doc["stacks"] if s["kind"] == "library"]
    assert libs and doc["folded"]["libraries"] in text
    rows = [ln for ln in text.splitlines() if ln[:1].isdigit() and not ln.startswith("0000")]
    assert not any("_dl_" in ln or "ld-linux" in ln for ln in rows)
    # stacks holding nothing now: one line
    idle = [s for s in doc["stacks"] if s["kind"] == "idle"]
    assert idle and doc["folded"]["idle"].startswith(f"{len(idle)} stacks hold nothing now")
    cands = [s for s in doc["stacks"] if s["kind"] == "candidate"]
    assert all(s["live_bytes"] > 0 or s["rss_bytes"] > 0 for s in cands)  # every row holds something
    assert len([ln for ln in rows if re.match(r"^\d+\s{2,}\S", ln)]) == min(10, len(cands))
    assert len({s["label"] for s in cands}) == len(cands)
    shown = min(10, len(cands))
    assert {int(n) for n in re.findall(r"#(\d+) ", text)} <= set(range(1, shown + 1))
    hints = {h["culprit"]: h for h in doc["hints"]}
    assert top["id"] in hints["ucx"]["stacks"]
    assert "UCX_MEM_MMAP_HOOK_MODE=none" in text and "UCX_RCACHE_MAX_UNRELEASED" in text
    assert doc["duration_s"] < 5 and top["growth_per_min"] is None and "/min" not in text


def test_group_outside_libucm_names_the_first_caller(captures: dict[str, Path]) -> None:
    doc = report_json(captures["ucm"], "--group-outside", r"libucm|libucs|libc\.so")
    assert functions(doc["stacks"][0])[0] == "register_kv_block"
    assert doc["stacks"][0]["live_bytes"] == LEAKED


@pytest.mark.parametrize("fmt", ["text", "html", "collapsed"])
def test_other_formats(captures: dict[str, Path], fmt: str, tmp_path: Path) -> None:
    out = tmp_path / f"report.{fmt}"
    res = sysbreak("report", str(captures["ucm"]), "-f", fmt, "-o", str(out))
    assert res.returncode == 0, res.stderr
    text = out.read_text()
    assert "register_kv_block" in text
    if fmt == "collapsed":
        top = max(text.splitlines(), key=lambda ln: int(ln.rsplit(" ", 1)[1]))
        assert top.endswith(f" {LEAKED}") and "ucm_mmap" in top
    if fmt == "html":
        assert "<svg" in text and "<script src" not in text


def test_diff_before_and_after_turning_the_hook_off(captures: dict[str, Path]) -> None:
    after = report_json(captures["no_hook"])
    top = after["stacks"][0]
    assert top["live_bytes"] == LEAKED and "register_kv_block" in functions(top)
    assert not any(Path(f["module"] or "").name.startswith("libucm") for f in top["frames"])
    res = sysbreak("diff", str(captures["ucm"]), str(captures["no_hook"]), "-f", "json")
    assert res.returncode == 0, res.stderr
    d = json.loads(res.stdout)
    # matched by the frames outside libucm/libc: one stack in both captures, the same leak on each side
    leak = [c for c in d["stacks"] if "register_kv_block" in c["label"]]
    assert len(leak) == 1 and leak[0]["status"] == "both"
    assert leak[0]["a"]["live_bytes"] == leak[0]["b"]["live_bytes"] == LEAKED
    assert d["headline"].startswith("Process RSS growth went from ")
    assert d["delta"]["rss_growth_bytes"] == d["b"]["rss_growth_bytes"] - d["a"]["rss_growth_bytes"]
    res = sysbreak("diff", str(captures["ucm"]), str(captures["no_hook"]))
    assert res.returncode == 0 and res.stdout.splitlines()[0] == d["headline"]


def _events(cap: Path) -> tuple[dict[int, Any], list[dict[str, Any]]]:
    """Stacks (as the format's reader gives them: raw stacks unwound) and the syscall records of a capture."""
    stacks: dict[int, Any] = {
        r.id: {"frames": [asdict(f) for f in r.frames], "python": [asdict(p) for p in r.python]}
        for r in read_events(cap / "events.jsonl")
        if isinstance(r, StackRecord)
    }
    events = []
    for line in (cap / "events.jsonl").read_text().splitlines():
        rec = json.loads(line)
        if rec["type"] == "syscall":
            events.append(rec)
    return stacks, events


def test_run_lib_filter_only_arms_matching_modules(tmp_path: Path) -> None:
    build_fixtures()
    cap = tmp_path / "cap"
    res = sysbreak("run", "-o", str(cap), "-q", "--lib", "libucm", "-s", "mmap", "--", str(BUILD / "ucm_leak"), "4")
    assert res.returncode == 0, res.stderr
    stacks, events = _events(cap)
    assert events and all("libucm" in e["site"]["module"] for e in events)  # nothing armed outside libucm
    ours = [e for e in events if "leak_region" in [f["function"] for f in stacks[e["stack"]]["frames"]]]
    assert len(ours) == 4
    meta = json.loads((cap / "meta.json").read_text())
    assert meta["syscalls"] == ["mmap"]


def test_run_python_stacks_names_the_python_line(tmp_path: Path) -> None:
    cap = tmp_path / "cap"
    script = Path(__file__).resolve().parent.parent / "fixtures" / "py" / "ucm_arenas.py"
    res = sysbreak(
        "run", "-o", str(cap), "-q", "--python-stacks", "-s", "mmap", "--", "/usr/bin/python3.11", str(script)
    )
    assert res.returncode == 0, res.stderr
    stacks, events = _events(cap)
    arena = [
        stacks[e["stack"]]
        for e in events
        if "_PyObject_ArenaMmap" in [f["function"] for f in stacks[e["stack"]]["frames"]]
    ]
    assert arena, "no arena mmap caught"
    assert any(s["python"] and s["python"][0]["function"] == "grow_kv_cache" for s in arena)


def test_run_catches_a_wrapper_called_through_a_pointer(tmp_path: Path) -> None:
    """dlopener calls the stripped library's own syscall wrapper (mov rax, rdi; syscall) through dlsym, a call
    invisible statically: the wrapper is probed at its first instruction, where rdi holds the number, in both
    modes (it used to need --exhaustive)."""
    build_fixtures()
    lib = str(BUILD / "libsbstripped.so")
    counts = {}
    for mode in ("default", "exhaustive"):
        cap = tmp_path / mode
        extra = ["--exhaustive"] if mode == "exhaustive" else []
        res = sysbreak("run", "-o", str(cap), "-q", "-s", "munmap", *extra, "--", str(BUILD / "dlopener"), lib, "4")
        assert res.returncode == 0, res.stderr
        _, events = _events(cap)
        counts[mode] = sum(1 for e in events if (e["site"]["module"] or "").endswith("libsbstripped.so"))
    assert counts == {"default": 2, "exhaustive": 2}
