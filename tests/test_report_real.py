"""Reports of real captures: `sysbreak attach` to the grower fixture while it grows each way, and `run -- ls`.

Between the capture's first and last snapshot the grower maps 4 MiB touched (grow_anon), 64 MiB PROT_NONE
(grow_reserve), 16 MiB untouched (grow_lazy), a 1 MiB file it reads (grow_file), dlopens a library (the loader maps
its segments) and lets a thread malloc 2 MiB (glibc gives it an arena: 64 MiB reserved, 2 MiB made read-write).
Every mapping is its own VMA (the reservation keeps the read-write ones apart), so every number is exact.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import FixturePaths, Grower, run_sysbreak, sysbreak_argv

from sysbreak.report._common import human_bytes

pytestmark = pytest.mark.gdb

KiB = 1024
MiB = 1024 * KiB


def attach_while(g: Grower, cap: Path, commands: list[str], seconds: int = 4) -> None:
    """`sysbreak attach` to the grower for ``seconds``; the commands run once its first snapshot is taken."""
    proc = subprocess.Popen(
        [*sysbreak_argv(), "attach", str(g.pid), "-d", str(seconds), "-o", str(cap), "-q"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    index = cap / "snapshots" / "index.jsonl"
    deadline = time.monotonic() + 60
    while not (index.exists() and index.read_text().strip()):  # the first snapshot: armed, resumed
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.05)
    for cmd in commands:
        g.do(cmd)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert g.popen.poll() is None  # still running after the capture
    g.do("anon 4")  # and answering


@pytest.fixture(scope="module")
def grown(tmp_path_factory: pytest.TempPathFactory, fixture_paths: FixturePaths) -> Path:
    tmp = tmp_path_factory.mktemp("grown")
    data = tmp / "data.bin"
    data.write_bytes(os.urandom(MiB))
    g = Grower(fixture_paths.grower)
    try:
        for cmd in ("anon 4", "reserve 4", "lazy 4", f"file {data}"):  # page in the code of every step first
            g.do(cmd)
        cap = tmp / "cap"
        proc = subprocess.Popen(
            [*sysbreak_argv(), "attach", str(g.pid), "-d", "4", "-o", str(cap), "-q"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        index = cap / "snapshots" / "index.jsonl"
        deadline = time.monotonic() + 60
        while not (index.exists() and index.read_text().strip()):  # the first snapshot: armed, resumed
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.05)
        for cmd in (
            "anon 4096",
            "reserve 65536",
            "lazy 16384",
            f"file {data}",
            f"dlopen {fixture_paths.libsbstripped}",
            "arena 2048",
        ):
            g.do(cmd)
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        assert g.popen.poll() is None  # still running after the capture
        g.do("anon 4")  # and answering
    finally:
        g.kill()
    return cap


def report(cap: Path, *args: str) -> tuple[str, dict[str, Any]]:
    text = run_sysbreak("report", cap, *args)
    assert text.returncode == 0, text.stderr
    js = run_sysbreak("report", cap, "-f", "json", *args)
    assert js.returncode == 0, js.stderr
    return text.stdout, json.loads(js.stdout)


def by_function(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    out = {}
    for s in doc["stacks"]:
        for f in s["frames"]:
            if f["function"] and f["function"].startswith(("grow_", "arena_worker")):
                out.setdefault(f["function"], s)
                break
    return out


def test_ranked_by_resident_growth_anon_and_file_told_apart(grown: Path) -> None:
    text, doc = report(grown)
    s = by_function(doc)
    anon, file, arena = s["grow_anon"], s["grow_file"], s["arena_worker"]
    reserve, lazy = s["grow_reserve"], s["grow_lazy"]
    assert [st["id"] for st in doc["stacks"][:3]] == [anon["id"], arena["id"], file["id"]]
    assert (anon["rss_growth_bytes"], anon["anon_rss_bytes"], anon["file_rss_bytes"]) == (4 * MiB, 4 * MiB, 0)
    assert (file["rss_growth_bytes"], file["anon_rss_bytes"], file["file_rss_bytes"]) == (MiB, 0, MiB)
    assert file["kind"] == "candidate"  # a data file, not a library
    # reservations and untouched memory: virtual only, ranked below everything resident
    assert (reserve["rss_bytes"], reserve["virtual_bytes"], reserve["reserved_bytes"]) == (0, 64 * MiB, 64 * MiB)
    assert (lazy["rss_bytes"], lazy["virtual_bytes"], lazy["reserved_bytes"]) == (0, 16 * MiB, 0)
    ranks = {st["id"]: st["rank"] for st in doc["stacks"]}
    assert ranks[reserve["id"]] > ranks[file["id"]] and ranks[lazy["id"]] > ranks[file["id"]]
    # glibc's arena: 128 MiB mapped, half trimmed at once (peak 128), 64 MiB reserved of which 2 MiB resident
    assert (arena["peak_bytes"], arena["live_bytes"]) == (128 * MiB, 64 * MiB)
    assert arena["rss_bytes"] == arena["rss_growth_bytes"] and MiB < arena["rss_bytes"] <= 2 * MiB + 64 * KiB
    assert anon["peak_bytes"] == anon["live_bytes"] == 4 * MiB
    # the headline and row #1 agree, in text, JSON and HTML
    first = text.splitlines()[0]
    assert first == doc["headline"]
    assert re.match(
        r"^Process RSS grew by [0-9.]+ MiB in [0-9.]+ s; stack #1 grow_anon \(grower\+0x[0-9a-f]+\) ", first
    )
    assert f"stack #1 {anon['label']} added 4.0 MiB of it (" in first and "anonymous)" in first
    row1 = next(line for line in text.splitlines() if re.match(r"^1\s", line))
    assert anon["label"] in row1 and "+4.0 MiB" in row1
    html = run_sysbreak("report", grown, "-f", "html", "-o", "-").stdout
    assert doc["headline"] in html
    assert f'<details class="stack" id="stack-{anon["id"]}" open>' in html
    assert "/min" not in first  # 4 s: no rate
    # the regions: changed anonymous ones first, the biggest resident growth first
    rows = [line for line in text.splitlines() if re.match(r"^[0-9a-f]{16}  ", line)]
    assert rows[0].split()[5:7] == ["new", "+4.0"] and "#1 grow_anon" in rows[0]
    assert "/tmp" not in rows[0] and str(grown.parent / "data.bin") in text


def test_library_loading_is_one_line(grown: Path) -> None:
    text, doc = report(grown)
    libs = [s for s in doc["stacks"] if s["kind"] == "library"]
    assert libs and all(any("ld-linux" in (f["module"] or "") for f in s["frames"]) for s in libs)
    assert doc["stacks"][-len(libs) :] == libs  # never ranked before a candidate
    line = doc["folded"]["libraries"]
    assert line.startswith(f"libraries loaded: {len(libs)} stack") and "1 file mapped" in line
    assert f"  {line}" in text.splitlines()
    assert "libsbstripped.so" not in "\n".join(ln for ln in text.splitlines() if re.match(r"^\d+\s", ln))
    # its segments fold into one line of the regions view
    assert re.search(r"^\.\.\. \d+ segments of 1 executable or library \(\d+ new\): \d+ kB", text, re.M)
    assert "libsbstripped.so" not in "\n".join(ln for ln in text.splitlines() if re.match(r"^[0-9a-f]{16}  ", ln))
    full = run_sysbreak("report", grown, "--all-regions").stdout
    assert "libsbstripped.so" in full


def test_labels_differ_and_no_reference_to_a_stack_not_shown(grown: Path) -> None:
    text, doc = report(grown, "--top", "2")
    cands = [s for s in doc["stacks"] if s["kind"] == "candidate"]
    assert len({s["label"] for s in cands}) == len(cands)
    assert {int(n) for n in re.findall(r"#(\d+) ", text)} <= {1, 2}
    assert "stacks not listed above" in text or "stack not listed above" in text
    assert re.search(r"^  \.\.\. \d+ more stacks holding .* \(--top \d+ lists them\)$", text, re.M)
    html = run_sysbreak("report", grown, "-f", "html", "--top", "2", "-o", "-").stdout
    linked = set(re.findall(r'href="#stack-(\d+)"', html))
    assert linked <= {str(s["id"]) for s in cands[:2]}


def test_sort_options_and_headline_follow(grown: Path) -> None:
    for sort, first in (("live", "grow_reserve"), ("peak", "arena_worker"), ("rss", "grow_anon")):
        text, doc = report(grown, "--sort", sort)
        assert doc["sort"] == sort
        top = doc["stacks"][0]
        if sort == "live":  # two 64 MiB stacks: the tie goes to more mapped bytes (the arena mapped 128)
            assert top["live_bytes"] == 64 * MiB
        else:
            assert any(f["function"] == first for f in top["frames"]), (sort, top["label"])
        assert text.splitlines()[0] == doc["headline"] and f"stack #1 {top['label']} " in doc["headline"]


def test_hint_for_glibc_arenas(grown: Path) -> None:
    text, doc = report(grown)
    arena = by_function(doc)["arena_worker"]
    hints = {h["culprit"]: h for h in doc["hints"]}
    assert set(hints) == {"glibc-malloc"}
    assert hints["glibc-malloc"]["stacks"] == [arena["id"]]
    assert "MALLOC_ARENA_MAX" in hints["glibc-malloc"]["text"] and "malloc_trim" in hints["glibc-malloc"]["text"]
    assert "https://www.gnu.org/software/libc/manual/html_node/Memory-Allocation-Tunables.html" in text
    assert re.search(r"^  stack #2: glibc malloc maps this memory", text, re.M)


def test_a_short_capture_shows_no_rate(tmp_path: Path) -> None:
    res = run_sysbreak("run", "-q", "-o", tmp_path / "cap", "--", "/bin/ls", "/")
    assert res.returncode == 0, res.stderr
    text, doc = report(tmp_path / "cap")
    assert doc["duration_s"] < 5
    assert "/min" not in text
    assert all(s["growth_per_min"] is None and s["rss_growth_per_min"] is None for s in doc["stacks"])


def test_watch_capture_reports_its_growth(grower: Callable[[], Grower], tmp_path: Path) -> None:
    """A capture of `sysbreak watch` (snapshots only) is read by `report`, which says how to get the stacks."""
    g = grower()
    g.do("anon 4")  # page in its code first
    proc = subprocess.Popen(
        [*sysbreak_argv(), "watch", str(g.pid), "-i", "0.2", "-n", "4", "-o", str(tmp_path / "w")],
        stdout=subprocess.PIPE,
        text=True,
    )
    index = tmp_path / "w" / "snapshots" / "index.jsonl"
    while not (index.exists() and index.read_text().strip()):
        time.sleep(0.05)
    g.do("anon 8192")
    proc.communicate(timeout=60)
    text, doc = report(tmp_path / "w")
    assert doc["totals"]["rss_growth_bytes"] == 8 * MiB
    assert text.splitlines()[0].startswith("Process RSS grew by 8.0 MiB in ")
    assert text.splitlines()[0].endswith(
        "; no call stack was captured to attribute it to "
        f"(snapshots only: `sysbreak attach {g.pid}` records the stacks)"
    )


def attach_while_growing(tmp_path: Path, script: str, warm: str, grow: str, seconds: int) -> str:
    """Start fixtures/py/SCRIPT, send it ``warm`` (its code paged in), `sysbreak attach -d SECONDS -o tmp_path/cap`
    to it, send ``grow`` once the first snapshot is written, and return the KEPT line it answers; the capture
    must end by itself with status 0 and the program must still run then (it is killed afterwards)."""
    path = Path(__file__).resolve().parent.parent / "fixtures" / "py" / script
    proc = subprocess.Popen(
        [sys.executable, str(path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, start_new_session=True
    )
    assert proc.stdin is not None and proc.stdout is not None
    try:
        assert proc.stdout.readline().strip() == "READY"
        proc.stdin.write(warm + "\n")
        proc.stdin.flush()
        assert proc.stdout.readline().startswith("KEPT")
        cap = tmp_path / "cap"
        attach = subprocess.Popen(
            [*sysbreak_argv(), "attach", str(proc.pid), "-d", str(seconds), "-o", str(cap), "-q"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        index = cap / "snapshots" / "index.jsonl"
        deadline = time.monotonic() + 60
        while not (index.exists() and index.read_text().strip()):
            assert attach.poll() is None and time.monotonic() < deadline, attach.communicate()
            time.sleep(0.05)
        proc.stdin.write(grow + "\n")
        proc.stdin.flush()
        kept = proc.stdout.readline().strip()
        _, err = attach.communicate(timeout=60)
        assert attach.returncode == 0, err
        assert proc.poll() is None
        return kept
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


def test_numpy_arrays_are_named_by_numpy_not_its_allocator(tmp_path: Path) -> None:
    """numpy's arrays come through default_malloc and glibc's malloc: the label is the numpy function that made
    the array, it is row #1 and the headline's stack, with the resident growth of the four 8 MiB arrays."""
    pytest.importorskip("numpy")  # a dependency (pyproject: the scan of big modules); scripts/setup.sh installs it
    kept = attach_while_growing(tmp_path, "numpy_grow.py", "grow 1", "grow 4", 4)
    assert kept == f"KEPT {5 * 8 * MiB}"
    cap = tmp_path / "cap"
    text, doc = report(cap)
    top = doc["stacks"][0]
    names = [f["function"] for f in top["frames"]]
    assert "default_malloc" in names and "PyArray_NewFromDescr_int" in names
    assert top["label"].startswith("PyArray_NewFromDescr_int (_multiarray_umath")
    assert top["by_syscall"] == {"mmap": 4} and top["live_bytes"] == 4 * (8 * MiB + 4 * KiB)
    assert 4 * 8 * MiB <= top["rss_growth_bytes"] <= top["live_bytes"]
    assert text.splitlines()[0] == doc["headline"] and f"stack #1 {top['label']} added " in doc["headline"]
    assert {h["culprit"] for h in doc["hints"]} == {"glibc-malloc"}


@pytest.mark.parametrize(
    ("lib", "culprit", "knob"),
    [
        ("libjemalloc.so.2", "jemalloc", "dirty_decay_ms"),
        ("libtcmalloc_minimal.so.4", "tcmalloc", "TCMALLOC_RELEASE_RATE"),
    ],
)
def test_hint_for_jemalloc_and_tcmalloc(
    fixture_paths: FixturePaths, tmp_path: Path, lib: str, culprit: str, knob: str
) -> None:
    """The grower with jemalloc or tcmalloc preloaded: a thread's 4 MiB of small blocks come from that allocator's
    own mappings, and the hint names the allocator's knob."""
    path = next((p for p in (Path("/usr/lib/x86_64-linux-gnu") / lib, Path("/usr/lib") / lib) if p.exists()), None)
    if path is None:
        pytest.fail(f"{lib} is missing: scripts/setup.sh installs it")
    g = Grower(fixture_paths.grower, env={**os.environ, "LD_PRELOAD": str(path)})
    try:
        g.do("arena 64")  # the allocator's first mappings, before the capture
        attach_while(g, tmp_path / "cap", ["arena 4096"])
    finally:
        g.kill()
    text, doc = report(tmp_path / "cap")
    hints = {h["culprit"]: h for h in doc["hints"]}
    assert culprit in hints, (doc["headline"], [s["label"] for s in doc["stacks"][:5]])
    owned = [s for s in doc["stacks"] if s["id"] in hints[culprit]["stacks"]]
    assert owned and all(
        any(Path(f["module"] or "").name.startswith(lib.split(".so")[0]) for f in s["frames"]) for s in owned
    )
    # (some of the 4 MiB lands in the allocator's mappings made before the capture: unexplained, not theirs)
    assert sum(s["rss_growth_bytes"] + s["after_last_bytes"] for s in owned) >= MiB
    assert knob in hints[culprit]["text"] and knob in text


def test_go_reservations_rank_as_virtual_and_labels_differ(tmp_path: Path, fixture_paths: FixturePaths) -> None:
    """Go: the runtime reserves hundreds of MiB PROT_NONE (no RSS); the program's 20 syscall.Mmap maps are named by
    the Go function that made them, every candidate's label differs, and the Go runtime hint is given."""
    res = run_sysbreak(
        "run", "-q", "-o", tmp_path / "cap", "-i", "0.2", "--", fixture_paths.build / "gomapper", "-linger-ms", "1500"
    )
    assert res.returncode == 0, res.stderr
    text, doc = report(tmp_path / "cap")
    cands = [s for s in doc["stacks"] if s["kind"] == "candidate"]
    biggest = max(cands, key=lambda s: s["live_bytes"])
    assert biggest["live_bytes"] > 256 * MiB and biggest["rss_bytes"] == 0
    assert biggest["reserved_bytes"] == biggest["live_bytes"] == biggest["virtual_bytes"]
    assert biggest["rank"] > max(s["rank"] for s in cands if s["rss_growth_bytes"] > 0)
    assert len({s["label"] for s in cands}) == len(cands)
    mine = next(s for s in cands if s["label"].startswith("main.mapWithSyscall (gomapper+0x"))
    assert mine["by_syscall"] == {"mmap": 20} and mine["live_bytes"] == 20 * MiB
    assert 0 < mine["rss_growth_bytes"] <= 20 * 4 * KiB  # one page touched in each
    assert "go-runtime" in {h["culprit"] for h in doc["hints"]}
    by_live = json.loads(run_sysbreak("report", tmp_path / "cap", "-f", "json", "--sort", "live").stdout)
    assert by_live["stacks"][0]["id"] == biggest["id"]
    live = human_bytes(by_live["stacks"][0]["live_bytes"])
    assert f"stack #1 {biggest['label']} holds {live} live (" in by_live["headline"]


def test_resident_bytes_are_exact_inside_a_merged_vma(tmp_path: Path, fixture_paths: FixturePaths) -> None:
    """4 MiB touched and 4 MiB untouched, mapped one after the other: the kernel merges them into one VMA with 4 MiB
    resident. Pro-rating would give each 2 MiB; the snapshot's resident pages (pagemap) give the truth."""
    g = Grower(fixture_paths.grower)
    try:
        g.do("anon 4")
        g.do("lazy 4")  # page in the code first
        cap = tmp_path / "cap"
        attach_while(g, cap, ["anon 4096", "lazy 4096"])
    finally:
        g.kill()
    _, doc = report(cap)
    s = by_function(doc)
    anon, lazy = s["grow_anon"], s["grow_lazy"]
    merged = [r for r in doc["regions"] if {o["stack"] for o in r["owners"]} >= {anon["id"], lazy["id"]}]
    assert len(merged) == 1 and merged[0]["rss"] == 4 * MiB  # one VMA holds both
    assert (anon["rss_bytes"], anon["rss_growth_bytes"], lazy["rss_bytes"], lazy["virtual_bytes"]) == (
        4 * MiB,
        4 * MiB,
        0,
        4 * MiB,
    )
    assert list((cap / "snapshots").glob("resident-*.txt"))


def test_hint_for_cpython_arenas(tmp_path: Path) -> None:
    """A Python program keeping 32 MiB of small objects: they live in pymalloc's 1 MiB arenas, mapped by
    _PyObject_ArenaMmap; the stacks that own the growth are CPython's, and the hint names PYTHONMALLOC."""
    assert attach_while_growing(tmp_path, "py_grow.py", "objects 1", "objects 32", 5).startswith("KEPT")
    cap = tmp_path / "cap"
    text, doc = report(cap)
    hints = {h["culprit"]: h for h in doc["hints"]}
    assert "cpython-obmalloc" in hints, doc["headline"]
    owned = [s for s in doc["stacks"] if s["id"] in hints["cpython-obmalloc"]["stacks"]]
    assert all("_PyObject_ArenaMmap" in [f["function"] for f in s["frames"]] for s in owned)
    assert sum(s["rss_growth_bytes"] for s in owned) >= 16 * MiB
    assert "PYTHONMALLOC=malloc" in text
    # the labels name CPython's callers of the allocator, never the allocator itself
    assert not any(s["label"].startswith(("_PyObject_", "new_arena", "pymalloc")) for s in owned)
