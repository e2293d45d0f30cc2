"""What ``sysbreak report`` and ``sysbreak diff`` read: the analysis of a capture directory, an events log,
pmap/smaps files, or a JSON report saved earlier, with a one-line error for anything else."""

from __future__ import annotations

import json
import re
from pathlib import Path

from sysbreak.analysis.model import Analysis
from sysbreak.errors import SysbreakError, os_error


def check_regex(pattern: str | None, option: str = "--group-outside") -> None:
    if pattern is None:
        return
    try:
        re.compile(pattern)
    except re.error as exc:
        raise SysbreakError(f"{option}: {pattern!r} is not a valid regular expression ({exc})") from None


def saved_report(path: Path) -> dict[str, object] | None:
    """The parsed document when ``path`` is a JSON report saved by ``sysbreak report --format json``, else None."""
    try:
        with path.open("rb") as fh:
            first = fh.readline(4096).strip()
    except OSError as exc:
        raise os_error(exc, f"cannot read {path}") from None
    if first != b"{" and not first.startswith(b'{"format": "sysbreak-report/'):
        return None  # an events log starts with a one-line header record
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    from sysbreak.report.json_report import is_report

    return data if is_report(data) else None


def load_analysis(
    source: Path | None,
    maps: list[Path] | tuple[Path, ...] = (),
    *,
    depth: int | None = None,
    group_outside: str | None = None,
    sort: str | None = None,
    pid: int | None = None,
) -> Analysis:
    """The analysis of ``source`` (capture dir, events log or saved JSON report) and/or ``maps`` files, its stacks
    in the order of ``sort`` (default: resident growth; a saved report keeps its own order unless given)."""
    from sysbreak.analysis.rank import DEFAULT_SORT, check_sort, resort

    if sort is not None:
        check_sort(sort)
    if depth is not None and depth < 1:
        raise SysbreakError(f"--depth must be 1 or more, not {depth}")
    check_regex(group_outside)
    for m in maps:
        if not m.exists():
            raise SysbreakError(f"--maps {m}: no such file")
        if not m.is_file():
            raise SysbreakError(f"--maps {m}: not a file (give a pmap or smaps text file)")
    if source is None:
        if not maps:
            raise SysbreakError(
                "nothing to report: give a capture directory or events log, or --maps files (see sysbreak report -h)"
            )
    else:
        if not source.exists():
            raise SysbreakError(f"{source}: no such capture directory or events log")
        if source.is_file():
            saved = saved_report(source)
            if saved is not None:
                if maps or depth is not None or group_outside is not None:
                    raise SysbreakError(
                        f"{source} is a saved report: --maps, --depth and --group-outside need a capture or events log"
                    )
                if pid is not None:
                    raise SysbreakError(
                        f"{source} is a saved report of the whole capture: --pid picks a process of a capture "
                        "directory (give the directory)"
                    )
                from sysbreak.report.json_report import from_dict

                loaded = from_dict(saved, name=str(source))
                return resort(loaded, sort) if sort is not None else loaded
        from sysbreak.capture import open_capture

        open_capture(source)  # a clear one-line error for a directory or file that is not a capture
    if source is not None and source.is_dir():
        from sysbreak.analysis.processes import analyze_processes

        return analyze_processes(
            source,
            pid=pid,
            maps_files=tuple(str(m) for m in maps),
            depth=depth,
            group_outside=group_outside,
            sort=sort if sort is not None else DEFAULT_SORT,
        )
    if pid is not None:
        raise SysbreakError("--pid picks a process of a capture directory: give the directory, not a file")
    from sysbreak.analysis import analyze

    result: Analysis = analyze(
        None if source is None else str(source),
        maps_files=tuple(str(m) for m in maps),
        depth=depth,
        group_outside=group_outside,
        sort=sort if sort is not None else DEFAULT_SORT,
    )
    return result
