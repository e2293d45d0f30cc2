"""Parsers for the process memory maps users have at hand, and readers for a live process.

Four text formats are understood, and :func:`parse_maps_file` tells them apart by their content:

``maps``
    ``/proc/PID/maps``: ``start-end perms offset dev inode [path]``; no sizes beyond the range, no Rss.
``smaps``
    ``/proc/PID/smaps``: the ``maps`` line of each VMA followed by ``Key: N kB`` lines and ``VmFlags:``.
    (``/proc/PID/smaps_rollup`` is not a list of VMAs and is refused.)
``pmap-x``
    ``pmap -x PID``: ``Address Kbytes RSS Dirty Mode Mapping`` (procps). Plain ``pmap PID`` output
    (``Address Kbytes Mode Mapping`` with a ``K`` suffix) is read the same way, without RSS.
``pmap-X``
    ``pmap -X PID`` and ``pmap -XX PID``: the smaps fields as columns, named by a header line.

Every size becomes bytes. A field a format does not have is ``None`` on the :class:`Vma`. The parsers are
strict: a line they do not understand raises :class:`~sysbreak.errors.SysbreakError` naming the line, except
for a last line cut short (no newline at its end, as in a file being written when it was copied), which is
dropped and noted in :attr:`Snapshot.warnings`.

Names as the formats print them: ``""`` for an anonymous mapping with no name (pmap shows ``[ anon ]``),
``[heap]``, ``[stack]``, ``[vdso]``, ``[vvar]``, ``[vsyscall]``, ``[anon:NAME]`` for a named anonymous VMA
(``prctl(PR_SET_VMA_ANON_NAME)``), a path (which may hold spaces), and a path followed by `` (deleted)`` for
a file removed since it was mapped (:attr:`Vma.deleted`). ``pmap`` prints only the last component of a path.
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass, field

from sysbreak.errors import ExitCode, SysbreakError, os_error

__all__ = [
    "KINDS",
    "Snapshot",
    "Vma",
    "parse_maps",
    "parse_maps_file",
    "parse_pmap_X",
    "parse_pmap_x",
    "parse_smaps",
    "read_maps",
    "read_smaps",
    "sniff",
    "sum_rss_kb",
]

KINDS = ("maps", "smaps", "pmap-x", "pmap-X")

_DELETED = " (deleted)"


@dataclass(slots=True)
class Vma:
    """One virtual memory area. Sizes are bytes; ``None`` where the format does not carry the field."""

    start: int
    end: int
    perms: str  # "rw-p": r/w/x, then p (private) or s (shared)
    offset: int | None = None
    dev: str | None = None  # "fe:00"
    inode: int | None = None
    path: str = ""  # as printed, "(deleted)" included: "" anonymous, "[heap]", "[anon:name]", "/usr/lib/libc.so.6"
    rss: int | None = None
    pss: int | None = None
    anonymous: int | None = None  # bytes of anonymous memory (the smaps ``Anonymous`` field)
    private_dirty: int | None = None
    dirty: int | None = None  # Shared_Dirty + Private_Dirty (what ``pmap -x`` calls Dirty)
    swap: int | None = None
    vm_flags: tuple[str, ...] | None = None
    fields: dict[str, int] = field(default_factory=dict)  # every numeric smaps field, kB fields in bytes

    @property
    def size(self) -> int:
        return self.end - self.start

    @property
    def deleted(self) -> bool:
        return self.path.endswith(_DELETED)

    @property
    def name(self) -> str:
        """The path without the `` (deleted)`` suffix."""
        return self.path[: -len(_DELETED)] if self.path.endswith(_DELETED) else self.path

    @property
    def is_anonymous(self) -> bool:
        """No file behind it: unnamed, ``[heap]``, ``[stack]``, ``[anon:...]``, and shared anonymous memory, which
        smaps names ``/dev/zero (deleted)`` (``MAP_SHARED|MAP_ANONYMOUS``) or ``/SYSV... (deleted)`` (System V
        shared memory) (not vdso/vvar/vsyscall)."""
        p = self.path
        return (
            p == ""
            or p == "[heap]"
            or p.startswith(("[stack", "[anon:", "[anon_shmem:", "/dev/zero (deleted)", "/SYSV"))
        )

    @property
    def display_path(self) -> str:
        """The mapping as pmap would name it: the path, or ``[anon]`` for an unnamed anonymous VMA."""
        return self.path or "[anon]"


@dataclass
class Snapshot:
    """The VMAs of one process at one moment, sorted by start address."""

    vmas: list[Vma]
    t: float | None = None  # CLOCK_MONOTONIC seconds when known
    kind: str = "smaps"  # one of KINDS
    source: str = "<text>"
    pid: int | None = None
    truncated: bool = False  # the text ended in the middle of a line
    warnings: list[str] = field(default_factory=list)

    @property
    def rss(self) -> int | None:
        """Sum of Rss over the VMAs, or ``None`` when the format has no Rss."""
        total = None
        for v in self.vmas:
            if v.rss is not None:
                total = (total or 0) + v.rss
        return total

    @property
    def size(self) -> int:
        return sum(v.end - v.start for v in self.vmas)


# --- helpers ------------------------------------------------------------------------------------------------------

_MAPS_LINE = re.compile(
    r"([0-9a-f]+)-([0-9a-f]+) ([r-][w-][x-][psS-]) ([0-9a-f]+) ([0-9a-f]+:[0-9a-f]+) (\d+)(?: +(.*))?\Z"
)
_SMAPS_FIELD = re.compile(r"([A-Za-z_][A-Za-z0-9_]*):[ \t]*(.*)\Z")
_PMAP_PID = re.compile(r"\d+: ")
_PMAP_X_LINE = re.compile(r"([0-9a-f]+) +(\d+|-) +(\d+|-) +(\d+|-) +([r-][w-][x-][s-][R-]?) ?(.*)\Z")
_PMAP_PLAIN_LINE = re.compile(r"([0-9a-f]+) +(\d+)K +([r-][w-][x-][s-][R-]?) ?(.*)\Z")
_PMAP_X_HEADER = re.compile(r"Address +Kbytes +(?:RSS +Dirty +)?Mode +Mapping\Z")
_PMAP_XX_HEADER = re.compile(r" *Address +Perm +Offset +Device +Inode +Size\b")
_VMFLAG = re.compile(r"[a-z0-9?]{2}\Z")
_SEPARATOR = re.compile(r"[-= ]+\Z")

_MAX_ADDR = 1 << 64


def _err(source: str, lineno: int, what: str, line: str) -> SysbreakError:
    shown = line if len(line) <= 80 else line[:77] + "..."
    return SysbreakError(f"{source}, line {lineno}: {what}: {shown!r}")


def _lines(text: str) -> tuple[list[str], bool]:
    """Split into lines; the second item says the text ended in the middle of a line (which is dropped)."""
    lines = text.split("\n")
    truncated = lines[-1] != ""
    lines.pop()  # "" after the last newline, or the partial last line
    return lines, truncated


def _range(start: str, end: str, source: str, lineno: int, line: str) -> tuple[int, int]:
    s, e = int(start, 16), int(end, 16)
    if e < s or e > _MAX_ADDR:
        raise _err(source, lineno, "the address range is backwards", line)
    return s, e


def _pmap_name(mapping: str) -> str:
    """pmap's ``[ anon ]``/``[ stack ]`` spelling to the kernel's ("" / "[stack]")."""
    if mapping.startswith("[ ") and mapping.endswith(" ]"):
        inner = mapping[2:-2].strip()
        return "" if inner == "anon" else f"[{inner}]"
    return mapping


def _perms_from_mode(mode: str) -> str:
    return mode[:3] + ("s" if mode[3] == "s" else "p")


def _vma_from_maps_line(m: re.Match[str], source: str, lineno: int, line: str) -> Vma:
    start, end = _range(m.group(1), m.group(2), source, lineno, line)
    return Vma(
        start=start,
        end=end,
        perms=m.group(3),
        offset=int(m.group(4), 16),
        dev=m.group(5),
        inode=int(m.group(6)),
        path=(m.group(7) or "").lstrip(" "),
    )


def _finish(vmas: list[Vma], snap: Snapshot) -> Snapshot:
    vmas.sort(key=lambda v: v.start)
    prev_end = -1
    for v in vmas:
        if v.start < prev_end:
            snap.warnings.append(f"{snap.source}: VMAs overlap at {v.start:#x}")
            break
        prev_end = v.end
    snap.vmas = vmas
    if snap.truncated:
        snap.warnings.append(f"{snap.source}: the last line is cut short and was ignored")
    return snap


# --- the four parsers -------------------------------------------------------------------------------------------


def parse_maps(text: str, *, source: str = "<text>", t: float | None = None) -> Snapshot:
    """Parse ``/proc/PID/maps`` text."""
    lines, truncated = _lines(text)
    snap = Snapshot([], t=t, kind="maps", source=source, truncated=truncated)
    vmas: list[Vma] = []
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        m = _MAPS_LINE.match(line)
        if m is None:
            raise _err(source, i, "not a /proc/PID/maps line", line)
        vmas.append(_vma_from_maps_line(m, source, i, line))
    return _finish(vmas, snap)


def parse_smaps(text: str, *, source: str = "<text>", t: float | None = None) -> Snapshot:
    """Parse ``/proc/PID/smaps`` text (every ``N kB`` field in bytes; ``VmFlags`` as a tuple)."""
    lines, truncated = _lines(text)
    snap = Snapshot([], t=t, kind="smaps", source=source, truncated=truncated)
    vmas: list[Vma] = []
    cur: Vma | None = None
    fields: dict[str, int] = {}
    maps_match = _MAPS_LINE.match
    for i, line in enumerate(lines, 1):
        key, colon, rest = line.partition(":")
        if colon and rest.endswith(" kB") and cur is not None:  # the common case, kept fast
            try:
                fields[key] = int(rest[:-3]) * 1024
                continue
            except ValueError:
                pass  # a maps line whose path ends in " kB", or garbage: decided below
        m = maps_match(line)
        if m is not None:
            cur = _vma_from_maps_line(m, source, i, line)
            fields = cur.fields
            vmas.append(cur)
            continue
        if not line.strip():
            continue
        f = _SMAPS_FIELD.match(line)
        if f is None or cur is None:
            raise _err(source, i, "not a /proc/PID/smaps line", line)
        name, value = f.group(1), f.group(2).strip()
        if name == "VmFlags":
            cur.vm_flags = tuple(value.split())
        elif value.isdigit():
            fields[name] = int(value)  # THPeligible, ProtectionKey: plain numbers
        # other fields (text values) are ignored
    for v in vmas:
        _fields_to_attributes(v)
    return _finish(vmas, snap)


def _fields_to_attributes(vma: Vma) -> None:
    """Copy the smaps fields (bytes) that the analysis reads onto the VMA's attributes."""
    f = vma.fields
    vma.rss = f.get("Rss")
    vma.pss = f.get("Pss")
    vma.anonymous = f.get("Anonymous")
    vma.private_dirty = f.get("Private_Dirty")
    vma.swap = f.get("Swap")
    shared_dirty = f.get("Shared_Dirty")
    if shared_dirty is not None and vma.private_dirty is not None:
        vma.dirty = shared_dirty + vma.private_dirty


def parse_pmap_x(text: str, *, source: str = "<text>", t: float | None = None) -> Snapshot:
    """Parse ``pmap -x PID`` output (also ``pmap PID``, which has no RSS/Dirty columns)."""
    lines, truncated = _lines(text)
    snap = Snapshot([], t=t, kind="pmap-x", source=source, truncated=truncated)
    vmas: list[Vma] = []
    for i, line in enumerate(lines, 1):
        s = line.strip()
        if not s or _SEPARATOR.match(s) or _PMAP_X_HEADER.match(s) or s.startswith("total"):
            continue
        if _PMAP_PID.match(line):
            if snap.pid is not None or vmas:
                raise _err(source, i, "a second process in one pmap output", line)
            snap.pid = int(line.split(":", 1)[0])
            continue
        m = _PMAP_X_LINE.match(line)
        if m is not None:
            start = int(m.group(1), 16)
            kb, rss, dirty, mode, mapping = m.group(2), m.group(3), m.group(4), m.group(5), m.group(6).strip(" ")
            if kb == "-":
                raise _err(source, i, "a mapping without a size", line)
            vmas.append(
                Vma(
                    start=start,
                    end=start + int(kb) * 1024,
                    perms=_perms_from_mode(mode),
                    path=_pmap_name(mapping),
                    rss=None if rss == "-" else int(rss) * 1024,
                    dirty=None if dirty == "-" else int(dirty) * 1024,
                )
            )
            continue
        m = _PMAP_PLAIN_LINE.match(line)
        if m is not None:
            start = int(m.group(1), 16)
            vmas.append(
                Vma(
                    start=start,
                    end=start + int(m.group(2)) * 1024,
                    perms=_perms_from_mode(m.group(3)),
                    path=_pmap_name(m.group(4).strip(" ")),
                )
            )
            continue
        raise _err(source, i, "not a line of pmap -x", line)
    for v in vmas:
        if v.end > _MAX_ADDR:
            raise SysbreakError(f"{source}: a mapping at {v.start:#x} ends beyond the address space")
    return _finish(vmas, snap)


_PMAP_X_FIELDS = {
    "Address",
    "Perm",
    "Offset",
    "Device",
    "Inode",
    "Size",
    "VmFlags",
    "Mapping",
}
_NO_UNIT = {"THPeligible", "ProtectionKey"}  # columns that are plain numbers, not kB


def parse_pmap_X(text: str, *, source: str = "<text>", t: float | None = None) -> Snapshot:  # noqa: N802
    """Parse ``pmap -X PID`` or ``pmap -XX PID`` output: the columns are named by the header line."""
    lines, truncated = _lines(text)
    snap = Snapshot([], t=t, kind="pmap-X", source=source, truncated=truncated)
    vmas: list[Vma] = []
    columns: list[str] | None = None
    for i, line in enumerate(lines, 1):
        s = line.strip()
        if not s or _SEPARATOR.match(s):
            continue
        if _PMAP_PID.match(line):
            if snap.pid is not None or vmas:
                raise _err(source, i, "a second process in one pmap output", line)
            snap.pid = int(line.split(":", 1)[0])
            continue
        if _PMAP_XX_HEADER.match(line):
            columns = s.split()
            if columns[-1] != "Mapping" or len(set(columns)) != len(columns):
                raise _err(source, i, "an unknown pmap -X header", line)
            continue
        if columns is None:
            raise _err(source, i, "pmap -X output without its header line", line)
        tokens = s.split()
        if s.endswith(" KB") or s == "KB" or (tokens and tokens[-1] == "KB" and all(x.isdigit() for x in tokens[:-1])):
            continue  # the totals line
        vmas.append(_pmap_X_row(line, columns, source, i))
    return _finish(vmas, snap)


def _pmap_X_row(line: str, columns: list[str], source: str, lineno: int) -> Vma:  # noqa: N802
    has_flags = "VmFlags" in columns
    fixed = len(columns) - 1 - (1 if has_flags else 0)  # columns before VmFlags/Mapping
    parts = line.split(None, fixed)
    if len(parts) < fixed:
        raise _err(source, lineno, "too few columns for the pmap -X header", line)
    rest = parts[fixed] if len(parts) > fixed else ""
    values = dict(zip(columns, parts[:fixed], strict=False))
    try:
        start = int(values["Address"], 16)
        size_kb = int(values["Size"])
        perms = values["Perm"]
        if len(perms) != 4:
            raise ValueError(perms)
        vma = Vma(
            start=start,
            end=start + size_kb * 1024,
            perms=perms,
            offset=int(values["Offset"], 16) if "Offset" in values else None,
            dev=values.get("Device"),
            inode=int(values["Inode"]) if "Inode" in values else None,
        )
        for name, value in values.items():
            if name in _PMAP_X_FIELDS:
                continue
            vma.fields[name] = int(value) if name in _NO_UNIT else int(value) * 1024
    except (KeyError, ValueError):
        raise _err(source, lineno, "not a row of pmap -X", line) from None
    if vma.end > _MAX_ADDR:
        raise _err(source, lineno, "the mapping ends beyond the address space", line)
    if has_flags:
        # VmFlags are two-character words; the mapping name follows them. (A file whose name is two
        # lowercase letters is read as a flag: pmap's columns cannot tell them apart.)
        words = rest.split(" ")
        flags: list[str] = []
        k = 0
        while k < len(words) and (words[k] == "" or _VMFLAG.match(words[k])):
            if words[k]:
                flags.append(words[k])
            k += 1
        vma.vm_flags = tuple(flags)
        rest = " ".join(words[k:])
    vma.path = _pmap_name(rest.strip(" "))
    _fields_to_attributes(vma)
    return vma


_PARSERS = {"maps": parse_maps, "smaps": parse_smaps, "pmap-x": parse_pmap_x, "pmap-X": parse_pmap_X}


def sniff(text: str) -> str:
    """Which of :data:`KINDS` the text is (by its first meaningful lines); SysbreakError when none."""
    saw_maps_line = False
    for line in text.split("\n", 64)[:64]:
        s = line.strip()
        if not s:
            continue
        if _PMAP_XX_HEADER.match(line):
            return "pmap-X"
        if _PMAP_X_HEADER.match(s) or _PMAP_X_LINE.match(line) or _PMAP_PLAIN_LINE.match(line):
            return "pmap-x"
        if _MAPS_LINE.match(line):
            if saw_maps_line:
                return "maps"
            saw_maps_line = True
            continue
        if saw_maps_line:
            return "smaps" if _SMAPS_FIELD.match(line) else "maps"
        if _PMAP_PID.match(line):
            continue
        if line.startswith(("Rss:", "Pss:")) or re.match(r"[0-9a-f]+-[0-9a-f]+ ---p .*\[rollup\]", line):
            raise SysbreakError("this is /proc/PID/smaps_rollup (one total), not a list of mappings")
        break
    if saw_maps_line:
        return "maps"
    raise SysbreakError("not a /proc/PID/maps, /proc/PID/smaps, pmap -x or pmap -X output")


def parse_maps_text(text: str, *, source: str = "<text>", t: float | None = None) -> Snapshot:
    """Parse text in any of the four formats (see :func:`sniff`)."""
    if "\x00" in text:
        raise SysbreakError(f"{source}: binary data, not a maps/smaps/pmap text")
    kind = sniff(text)
    try:
        return _PARSERS[kind](text, source=source, t=t)
    except SysbreakError as e:
        raise SysbreakError(f"{e} (read as {kind})", e.exit_code) from None


def _read_text(path: str | os.PathLike[str]) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace", newline="\n") as fh:
            return fh.read()
    except FileNotFoundError:
        raise SysbreakError(f"{os.fspath(path)}: no such file") from None
    except IsADirectoryError:
        raise SysbreakError(f"{os.fspath(path)}: is a directory, not a maps file") from None
    except OSError as e:
        raise os_error(e, f"{os.fspath(path)}: cannot read it") from None


def parse_maps_file(
    path_or_text: str | bytes | os.PathLike[str], *, t: float | None = None, kind: str | None = None
) -> Snapshot:
    """Parse a maps, smaps, ``pmap -x`` or ``pmap -X`` output, telling which by its content.

    ``path_or_text``: a path (``os.PathLike``, or a ``str`` without a newline), or the text itself (a ``str``
    holding a newline, or ``bytes``). ``t`` is stored on the snapshot (CLOCK_MONOTONIC seconds); ``kind``
    forces one of :data:`KINDS` instead of sniffing.
    """
    if isinstance(path_or_text, bytes):
        text, source = path_or_text.decode("utf-8", errors="replace"), "<text>"
    elif isinstance(path_or_text, str) and ("\n" in path_or_text or path_or_text == ""):
        text, source = path_or_text, "<text>"
    else:
        source = os.fspath(path_or_text)
        text = _read_text(source)
    if not text.strip():
        raise SysbreakError(f"{source}: empty, not a maps/smaps/pmap output")
    if kind is not None:
        if kind not in _PARSERS:
            raise SysbreakError(f"unknown maps format {kind!r} (one of {', '.join(KINDS)})")
        return _PARSERS[kind](text, source=source, t=t)
    return parse_maps_text(text, source=source, t=t)


# --- live processes -----------------------------------------------------------------------------------------------


def _read_proc(pid: int, name: str) -> str:
    path = f"/proc/{pid}/{name}"
    try:
        with open(path, encoding="utf-8", errors="replace", newline="\n") as fh:
            return fh.read()
    except FileNotFoundError:
        raise SysbreakError(f"no process {pid}", ExitCode.TARGET) from None
    except PermissionError:
        raise SysbreakError(
            f"not allowed to read {path} (run as the process's user, or as root)", ExitCode.TARGET
        ) from None
    except ProcessLookupError:
        raise SysbreakError(f"process {pid} exited", ExitCode.TARGET) from None
    except OSError as e:
        raise os_error(e, f"cannot read {path}", ExitCode.TARGET) from None


def read_smaps(pid: int) -> Snapshot:
    """``/proc/PID/smaps`` of a live process, with ``t`` = ``time.monotonic()`` when it was read."""
    t = time.monotonic()
    snap = parse_smaps(_read_proc(pid, "smaps"), source=f"/proc/{pid}/smaps", t=t)
    snap.pid = pid
    return snap


def read_maps(pid: int) -> Snapshot:
    """``/proc/PID/maps`` of a live process, with ``t`` = ``time.monotonic()`` when it was read."""
    t = time.monotonic()
    snap = parse_maps(_read_proc(pid, "maps"), source=f"/proc/{pid}/maps", t=t)
    snap.pid = pid
    return snap


def sum_rss_kb(smaps_text: str) -> int:
    """Total ``Rss:`` of an smaps text, in kB."""
    total = 0
    for line in smaps_text.splitlines():
        if line.startswith("Rss:"):
            parts = line.split()
            if len(parts) >= 2 and parts[1].isdigit():
                total += int(parts[1])
    return total
