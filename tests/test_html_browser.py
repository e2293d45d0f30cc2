"""The HTML report in a real headless Chromium: it renders, hostile names stay text, the script runs cleanly.

Chromium is part of the test setup (scripts/setup.sh installs it); without it these tests fail, they do not skip.
Set SYSBREAK_SCREENSHOT_DIR to keep the screenshots for a look.
"""

from __future__ import annotations

import os
import re
import shutil
import struct
import subprocess
from pathlib import Path

import pytest
from support.sample import sample_analysis

from sysbreak.report import render

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def chromium() -> str:
    for name in CANDIDATES:
        found = shutil.which(name)
        if found:
            return found
    if os.path.exists("/usr/bin/chromium"):
        return "/usr/bin/chromium"
    pytest.fail("chromium is not installed: run scripts/setup.sh (it installs chromium for the HTML report tests)")


def run_chromium(tmp_path: Path, url: str, *extra: str) -> subprocess.CompletedProcess[str]:
    profile = tmp_path / f"profile-{len(list(tmp_path.glob('profile-*')))}"
    cmd = [
        chromium(),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-extensions",
        f"--user-data-dir={profile}",
        "--enable-logging=stderr",
        "--v=0",
        *extra,
        url,
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def console_errors(stderr: str) -> list[str]:
    """The page's uncaught errors and console errors, as chromium logs them with --enable-logging=stderr."""
    return [line for line in stderr.splitlines() if ":CONSOLE" in line and re.search(r"Uncaught|Error", line)]


@pytest.fixture(scope="module")
def hostile_page(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("html") / "report.html"
    path.write_text(render(sample_analysis(hostile=True), "html"), encoding="utf-8")
    return path


def test_the_error_check_sees_errors(tmp_path: Path) -> None:
    """Control: a page whose script throws is caught by console_errors (so a pass below means something)."""
    bad = tmp_path / "bad.html"
    bad.write_text("<!DOCTYPE html><p>x</p><script>noSuchFunction();</script>", encoding="utf-8")
    proc = run_chromium(tmp_path, bad.as_uri(), "--dump-dom")
    assert any("Uncaught ReferenceError" in line for line in console_errors(proc.stderr)), proc.stderr[-2000:]


def test_renders_hostile_names_as_text_and_script_runs_cleanly(tmp_path: Path, hostile_page: Path) -> None:
    proc = run_chromium(tmp_path, hostile_page.as_uri() + "#stack-3", "--dump-dom")
    dom = proc.stdout
    assert console_errors(proc.stderr) == []
    assert "sysbreak</span> report" in dom
    assert "stack #1 leak_region (ucm_leak+0x1189) added 399.0 MiB" in dom
    # the only script element is ours; every hostile name is a text node
    assert len(re.findall(r"<script\b", dom)) == 1
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in dom
    assert "&lt;script&gt;alert(4)&lt;/script&gt;" in dom
    assert "&lt;b&gt;bold&lt;/b&gt; &amp; &lt;script&gt;alert(5)&lt;/script&gt;" in dom
    assert not re.search(r"<img\b", dom) and "<b>bold" not in dom
    assert not re.search(r"<svg[^>]*onload", dom)
    # all stacks holding memory are there (the idle one is a folded line); the script opened the one the URL
    # names (and the first is open by default)
    assert len(re.findall(r'<details class="stack"', dom)) == 5
    assert re.search(r'<details class="stack" id="stack-3" open="">', dom)
    assert re.search(r'<details class="stack" id="stack-7" open="">', dom)
    assert re.search(r'<details class="stack" id="stack-12">', dom)
    assert re.search(r"<svg[^>]*class=\"plot\"", dom) and "<polyline" in dom


def _png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def test_screenshot(tmp_path: Path, hostile_page: Path) -> None:
    shot = tmp_path / "report.png"
    proc = run_chromium(
        tmp_path, hostile_page.as_uri(), f"--screenshot={shot}", "--window-size=1280,2000", "--hide-scrollbars"
    )
    assert console_errors(proc.stderr) == []
    data = shot.read_bytes()
    assert _png_size(data) == (1280, 2000)
    assert len(data) > 50_000  # a blank page is a few kB; the report has text, tables and a plot
    keep = os.environ.get("SYSBREAK_SCREENSHOT_DIR")
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, Path(keep) / "report.png")
