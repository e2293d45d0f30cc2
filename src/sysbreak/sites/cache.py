"""Scanning a module for its sites, cached on disk.

:func:`scan` lists a module's sites (see :mod:`sysbreak.elfscan.scanner` for how they are found). Scans are cached
on disk, one JSON file per build-id, under ``$SYSBREAK_CACHE_DIR``, else ``$XDG_CACHE_HOME/sysbreak/sites``, else
``~/.cache/sysbreak/sites``; a small index keyed by the file's device, inode, size and mtime lets a warm look-up
skip even opening the ELF file. A cache that cannot be written is not an error, and a damaged cache file is
ignored and written again.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any

from sysbreak.elfscan.elf import ElfFile
from sysbreak.elfscan.scanner import SCANNER_VERSION, RawScan, scan_elf, scan_file
from sysbreak.files import atomic_write
from sysbreak.sites.model import ModuleScan, Site

__all__ = ["CACHE_FORMAT", "cache_dir", "forget_memo", "is_cached", "scan"]

CACHE_FORMAT = "sysbreak-sitescache/2"


def cache_dir() -> Path:
    """Where scans are cached: ``$SYSBREAK_CACHE_DIR``, else ``$XDG_CACHE_HOME/sysbreak/sites``, else
    ``~/.cache/sysbreak/sites``."""
    env = os.environ.get("SYSBREAK_CACHE_DIR")
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_CACHE_HOME")
    if xdg:
        return Path(xdg) / "sysbreak" / "sites"
    try:
        home = Path.home()
    except (RuntimeError, KeyError):
        home = Path(tempfile.gettempdir())
    return home / ".cache" / "sysbreak" / "sites"


_version: str | None = None


def _cache_version() -> str:
    """The cache's subdirectory: the scanner version and a digest of the scanner's source files' sizes and
    mtimes, so that a changed scanner never reads what an older one wrote."""
    global _version
    if _version is None:
        here = Path(__file__).parent.parent / "elfscan"
        stamp = []
        for name in ("elf.py", "scanner.py", "x86.py", "bulk.py"):
            try:
                st = (here / name).stat()
                stamp.append(f"{name}:{st.st_size}:{st.st_mtime_ns}")
            except OSError:
                stamp.append(name)
        _version = f"v{SCANNER_VERSION}-{hashlib.sha1(' '.join(stamp).encode()).hexdigest()[:12]}"
    return _version


# (dev, inode, size, mtime_ns) -> scan, for repeated look-ups in one process
_memo: dict[tuple[int, int, int, int], ModuleScan] = {}


def forget_memo() -> None:
    """Forget the scans this process remembers (the on-disk cache stays): the next :func:`scan` reads the disk."""
    _memo.clear()


def scan(path: str, *, cache: bool = True) -> ModuleScan:
    """The sites of the ELF file at ``path`` (an x86-64 executable, shared library or static binary).

    With ``cache`` (the default), a file scanned before, here or by an earlier process, is not parsed again.
    Raises :class:`sysbreak.errors.SysbreakError` (one line) when the file does not exist, cannot be read, is
    not an ELF file, or is not x86-64.
    """
    path = os.fspath(path)
    if not cache:
        return _from_raw(path, scan_file(path))
    try:
        st = os.stat(path)
    except OSError:
        return _from_raw(path, scan_file(path))  # raises the right one-line error
    key = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
    hit = _memo.get(key)
    if hit is None:
        root = cache_dir() / _cache_version()
        stat_name = hashlib.sha1(repr(key).encode()).hexdigest()[:32]
        hit = _load_indexed(root, stat_name, path)
        if hit is None:
            with ElfFile(path) as elf:
                if (elf.stat.st_ino, elf.stat.st_size, elf.stat.st_mtime_ns) != key[1:]:
                    # replaced between the stat and the open: file what was read under what was read
                    key = (elf.stat.st_dev, elf.stat.st_ino, elf.stat.st_size, elf.stat.st_mtime_ns)
                    stat_name = hashlib.sha1(repr(key).encode()).hexdigest()[:32]
                # Not seen at this path, size and mtime; maybe the same build under another name, or a copy.
                build_id = elf.build_id()
                if build_id and _HEX.fullmatch(build_id):
                    hit = _load(root / f"{build_id}.json", path)
                    if hit is not None and hit.build_id != build_id:
                        hit = None
                if hit is None:
                    hit = _from_raw(path, scan_elf(elf))
            _store(root, stat_name, hit)
        _memo[key] = hit
    if hit.path != path:
        hit = dataclasses.replace(hit, path=path)
    return hit


def is_cached(path: str) -> bool:
    """Whether :func:`scan` would find ``path`` (at its current device, inode, size and mtime) in this process's
    memo or in the on-disk stat index, without reading the scan (a damaged cache file still counts: scan()
    then scans again)."""
    try:
        st = os.stat(path)
    except OSError:
        return False
    key = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
    if key in _memo:
        return True
    stat_name = hashlib.sha1(repr(key).encode()).hexdigest()[:32]
    root = cache_dir() / _cache_version()
    try:
        data_name = (root / "by-stat" / stat_name).read_text(encoding="ascii").strip()
    except (OSError, UnicodeError):
        return False
    return bool(data_name) and "/" not in data_name and (root / data_name).is_file()


def _from_raw(path: str, raw: RawScan) -> ModuleScan:
    sites = tuple(
        Site(s.vaddr, s.size, s.kind, s.nr, s.symbol, s.symbol_offset, s.tail, s.generic, s.pre_vaddr)
        if s.early is None
        else Site(
            s.vaddr,
            s.size,
            s.kind,
            s.nr,
            s.symbol,
            s.symbol_offset,
            s.tail,
            s.generic,
            s.pre_vaddr,
            s.early.vaddr,
            s.early.reg,
            s.early.sp_delta,
            s.early.args,
        )  # fmt: skip
        for s in raw.sites
    )
    return ModuleScan(path, raw.build_id, raw.first_load_vaddr, sites)


_HEX = re.compile(r"[0-9a-f]{2,128}")


def _data_name(scan_: ModuleScan, stat_name: str) -> str:
    if scan_.build_id and _HEX.fullmatch(scan_.build_id):
        return f"{scan_.build_id}.json"
    return f"nobid-{stat_name}.json"


def _load_indexed(root: Path, stat_name: str, path: str) -> ModuleScan | None:
    """The cached scan the stat index points at, or None (missing, unreadable or damaged: rescan)."""
    try:
        data_name = (root / "by-stat" / stat_name).read_text(encoding="ascii").strip()
        if not data_name or "/" in data_name or data_name.startswith("."):
            return None
    except (OSError, UnicodeError):
        return None
    return _load(root / data_name, path)


def _load(data_file: Path, path: str) -> ModuleScan | None:
    try:
        return _decode(json.loads(data_file.read_text(encoding="utf-8")), path)
    except (OSError, ValueError, TypeError, KeyError, IndexError, UnicodeError):
        return None


def _decode(doc: Any, path: str) -> ModuleScan:
    if not isinstance(doc, dict) or doc.get("format") != CACHE_FORMAT or doc.get("scanner") != SCANNER_VERSION:
        raise ValueError("not a cache file of this scanner")
    build_id = doc["build_id"]
    first = doc["first_load_vaddr"]
    if not (build_id is None or isinstance(build_id, str)) or not isinstance(first, int):
        raise ValueError("bad header")
    sites = []
    for vaddr, size, kind, nr, symbol, symbol_offset, tail, generic, pre, *early in doc["sites"]:
        if not (isinstance(vaddr, int) and isinstance(size, int) and kind in ("syscall", "call")):
            raise ValueError("bad site")
        if not (nr is None or isinstance(nr, int)) or not (symbol is None or isinstance(symbol, str)):
            raise ValueError("bad site")
        if not (symbol_offset is None or isinstance(symbol_offset, int)):
            raise ValueError("bad site")
        if not (pre is None or isinstance(pre, int)):
            raise ValueError("bad site")
        early_vaddr, early_reg, early_sp_delta, early_args = early if early else (None, None, 0, None)
        if not (early_vaddr is None or (isinstance(early_vaddr, int) and isinstance(early_reg, str))):
            raise ValueError("bad site")
        if not isinstance(early_sp_delta, int) or not (
            early_args is None or all(isinstance(a, str) for a in early_args)
        ):
            raise ValueError("bad site")
        sites.append(
            Site(vaddr, size, kind, nr, symbol, symbol_offset, bool(tail), bool(generic), pre, early_vaddr, early_reg,
                 early_sp_delta, tuple(early_args) if early_args is not None else None)
        )  # fmt: skip
    return ModuleScan(path, build_id, first, tuple(sites))


def _encode(scan_: ModuleScan) -> dict[str, Any]:
    return {
        "format": CACHE_FORMAT,
        "scanner": SCANNER_VERSION,
        "build_id": scan_.build_id,
        "first_load_vaddr": scan_.first_load_vaddr,
        "sites": [
            [s.vaddr, s.size, s.kind, s.nr, s.symbol, s.symbol_offset, s.tail, s.generic, s.pre_vaddr]
            + (
                [s.early_vaddr, s.early_reg, s.early_sp_delta, list(s.early_args) if s.early_args else s.early_args]
                if s.early_vaddr is not None
                else []
            )  # fmt: skip
            for s in scan_.sites
        ],
    }


def _store(root: Path, stat_name: str, scan_: ModuleScan) -> None:
    """Write the scan and its index entry; silently do nothing where the cache cannot be written."""
    try:
        (root / "by-stat").mkdir(parents=True, exist_ok=True)
        data_name = _data_name(scan_, stat_name)
        atomic_write(root / data_name, json.dumps(_encode(scan_), separators=(",", ":")))
        atomic_write(root / "by-stat" / stat_name, data_name + "\n")
    except OSError:
        pass
