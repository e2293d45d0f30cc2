"""sysbreak.files.atomic_write: a reader sees the old file or the new one, and nothing is left behind."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from sysbreak.files import atomic_write


def test_writes_text_and_bytes_with_the_mode(tmp_path: Path) -> None:
    atomic_write(tmp_path / "a.txt", "héllo\n")
    atomic_write(tmp_path / "b.bin", b"\x00\x01", mode=0o600, fsync=True)
    assert (tmp_path / "a.txt").read_text(encoding="utf-8") == "héllo\n"
    assert (tmp_path / "b.bin").read_bytes() == b"\x00\x01"
    assert (tmp_path / "a.txt").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "b.bin").stat().st_mode & 0o777 == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "b.bin"]


def test_a_failure_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "meta.json"
    target.write_text("old")
    (tmp_path / "sub").mkdir()
    with pytest.raises(IsADirectoryError):
        atomic_write(tmp_path / "sub", "new")  # os.replace onto a directory fails after the write
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["meta.json", "sub"]
    with pytest.raises(FileNotFoundError):
        atomic_write(tmp_path / "missing" / "x", "new")


def test_readers_never_see_a_part(tmp_path: Path) -> None:
    target = tmp_path / "big"
    old, new = "a" * 300_000, "b" * 300_000
    atomic_write(target, old)
    seen: set[str] = set()
    stop = threading.Event()

    def read() -> None:
        while not stop.is_set():
            seen.add(target.read_text())

    reader = threading.Thread(target=read)
    reader.start()
    try:
        for i in range(30):
            atomic_write(target, new if i % 2 else old)
    finally:
        stop.set()
        reader.join()
    assert seen <= {old, new}
    assert not [p for p in os.listdir(tmp_path) if p != "big"]
