"""Filling the scan cache before an attach (sysbreak.sites.prescan): the calling thread and a worker process
scan the modules not cached yet, biggest first; what they write is what a scan here gives."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import FixturePaths

from sysbreak import sites
from sysbreak.sites import cache as sites_cache
from sysbreak.sites import prescan

LIBC = "/lib/x86_64-linux-gnu/libc.so.6"


pytestmark = pytest.mark.usefixtures("private_cache")


def test_two_lanes_fill_the_cache_with_what_a_scan_gives(
    fixture_paths: FixturePaths, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(prescan, "PARALLEL_MIN_BYTES", 0)
    paths = [LIBC, str(fixture_paths.mapper), str(fixture_paths.libsbstripped), str(fixture_paths.mapper)]
    missing = str(tmp_path / "gone.so")
    done = prescan.fill_cache([*paths, missing], lanes=2)
    assert done.lanes == 2
    # each scanned once (how many the worker got depends on how fast it starts: not asserted)
    assert done.local + done.remote == 3
    assert done.failed == 1 and done.cached == 0
    assert all(sites_cache.is_cached(p) for p in paths)
    sites.forget_memo()
    again = prescan.fill_cache(paths, lanes=2)
    assert (again.cached, again.local, again.remote, again.lanes) == (3, 0, 0, 1)
    for p in set(paths):
        cached = sites.scan(p)
        sites.forget_memo()
        assert cached == sites.scan(p, cache=False)


def test_a_worker_that_cannot_start_leaves_its_share_here(
    fixture_paths: FixturePaths, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(prescan, "PARALLEL_MIN_BYTES", 0)
    monkeypatch.setattr(prescan.sys, "executable", "/nonexistent/python")
    paths = [LIBC, str(fixture_paths.mapper)]
    done = prescan.fill_cache(paths, lanes=2)
    assert (done.local, done.remote, done.lanes) == (2, 0, 1)
    assert all(sites_cache.is_cached(p) for p in paths)


def test_stopping_starts_nothing(fixture_paths: FixturePaths) -> None:
    done = prescan.fill_cache([LIBC, str(fixture_paths.mapper)], lanes=2, stopping=lambda: True)
    assert (done.local, done.remote, done.failed) == (0, 0, 0)
    assert not sites_cache.is_cached(LIBC)


def test_a_path_the_worker_cannot_be_sent_is_scanned_here(
    fixture_paths: FixturePaths, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(prescan, "PARALLEL_MIN_BYTES", 0)
    odd = tmp_path / "new\nline.so"
    odd.write_bytes(Path(fixture_paths.mapper).read_bytes())
    done = prescan.fill_cache([LIBC, str(odd)], lanes=2)
    assert done.failed == 0 and done.local + done.remote == 2
    assert sites_cache.is_cached(str(odd))


def test_the_worker_scans_into_the_shared_cache(fixture_paths: FixturePaths, tmp_path: Path) -> None:
    worker = prescan._Worker.start(bulk=False)
    assert worker is not None
    try:
        assert worker.scan(str(fixture_paths.mapper), lambda: False) is True
        assert worker.scan(str(tmp_path / "absent.so"), lambda: False) is False
    finally:
        worker.close()
    assert worker.wait(60) == 0  # it ends at the end of its input
    assert sites_cache.is_cached(str(fixture_paths.mapper))
    assert sites.scan(str(fixture_paths.mapper)) == sites.scan(str(fixture_paths.mapper), cache=False)
