"""`sysbreak report`: turn a capture (or an events log, or pmap files, or a saved JSON report) into a report."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Annotated

import typer

from sysbreak.analysis.model import Analysis
from sysbreak.errors import SysbreakError

FORMATS = ("text", "json", "html", "collapsed")
WEIGHTS = ("live", "mapped", "growth", "events")
HTML_DEFAULT = "sysbreak-report.html"

HELP = (
    "Report which call stacks map the memory that makes the process grow.\n\n"
    "SOURCE is a capture directory written by `sysbreak run` or `sysbreak attach`, a bare events log "
    "(events.jsonl, from `sysbreak break --log`), or a JSON report saved earlier with --format json (to render it "
    "again in another format). With no SOURCE, give two or more --maps files (pmap -x, pmap -X, /proc/PID/smaps or "
    "/proc/PID/maps text saved by hand, oldest first) for a report of region growth alone."
)

EPILOG = (
    "Formats: text (the default) ranks the stacks, lists their frames, then shows the regions as pmap -x does, each "
    "with the stacks that own it and the bytes no captured call explains; json follows docs/report-json.md "
    "(format sysbreak-report/1); html is one self-contained page, written to sysbreak-report.html unless --output "
    "says otherwise; collapsed is folded stacks for flamegraph.pl or speedscope, weighted by --weight.\n\n"
    "Examples:\n\n"
    "  sysbreak report sysbreak-capture-4242\n\n"
    "  sysbreak report sysbreak-capture-4242 --format html -o leak.html\n\n"
    "  sysbreak report events.jsonl --maps before.pmap --maps after.pmap --top 5\n\n"
    "  sysbreak report --maps pmap-0900.txt --maps pmap-1000.txt\n\n"
    "  sysbreak report CAPTURE --format collapsed | flamegraph.pl --countname bytes > leak.svg"
)


def check_output(path: Path) -> None:
    """Fail now, before any work, when ``path`` cannot be written."""
    if path.is_dir():
        raise SysbreakError(f"cannot write the report to {path}: it is a directory")
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise SysbreakError(f"cannot write the report to {path}: no such directory {parent}")
    if path.exists() and not os.access(path, os.W_OK):
        raise SysbreakError(f"cannot write the report to {path}: permission denied")
    if not path.exists() and not os.access(parent, os.W_OK | os.X_OK):
        raise SysbreakError(f"cannot write the report to {path}: directory {parent} is not writable")


def write_output(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically (a reader never sees half a report)."""
    parent = path.parent if str(path.parent) else Path(".")
    tmp_name = None
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=parent)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.chmod(tmp_name, 0o644)
        os.replace(tmp_name, path)
        tmp_name = None
    except OSError as exc:
        raise SysbreakError(f"cannot write the report to {path}: {exc.strerror or exc}") from None
    finally:
        if tmp_name is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp_name)


def check_regex(pattern: str | None) -> None:
    if pattern is None:
        return
    try:
        re.compile(pattern)
    except re.error as exc:
        raise SysbreakError(f"--group-outside: {pattern!r} is not a valid regular expression ({exc})") from None


def _saved_report(path: Path) -> dict[str, object] | None:
    """The parsed document when ``path`` is a JSON report saved by ``sysbreak report --format json``, else None."""
    try:
        with path.open("rb") as fh:
            first = fh.readline(4096).strip()
    except OSError as exc:
        raise SysbreakError(f"{path}: cannot read it ({exc.strerror})") from None
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
) -> Analysis:
    """The analysis of ``source`` (capture dir, events log or saved JSON report) and/or ``maps`` files."""
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
            saved = _saved_report(source)
            if saved is not None:
                if maps or depth is not None or group_outside is not None:
                    raise SysbreakError(
                        f"{source} is a saved report: --maps, --depth and --group-outside need a capture or events log"
                    )
                from sysbreak.report.json_report import from_dict

                return from_dict(saved, name=str(source))
        from sysbreak.capture import open_capture

        open_capture(source)  # a clear one-line error for a directory or file that is not a capture
    try:
        from sysbreak.analysis import analyze  # type: ignore[attr-defined,unused-ignore]
    except ImportError:
        raise SysbreakError("this sysbreak has no analysis yet (sysbreak.analysis.analyze is missing)") from None
    result: Analysis = analyze(
        None if source is None else str(source),
        maps_files=tuple(str(m) for m in maps),
        depth=depth,
        group_outside=group_outside,
    )
    return result


def emit(text: str, output: Path | None, what: str) -> None:
    """Write to ``output`` (``-`` or None: stdout) and say where it went."""
    if output is None or str(output) == "-":
        sys.stdout.write(text)
        sys.stdout.flush()
        return
    write_output(output, text)
    typer.echo(f"sysbreak: wrote the {what} to {output}", err=True)


def _color_terminal() -> tuple[bool, int | None]:
    if sys.stdout.isatty() and "NO_COLOR" not in os.environ and os.environ.get("TERM") != "dumb":
        return True, shutil.get_terminal_size((100, 24)).columns
    return False, None


def register(app: typer.Typer) -> None:
    @app.command("report", help=HELP, epilog=EPILOG, no_args_is_help=False)
    def command(
        source: Annotated[
            Path | None,
            typer.Argument(
                help="Capture directory, events log, or saved JSON report. Leave out to report on --maps files alone.",
                show_default=False,
            ),
        ] = None,
        maps: Annotated[
            list[Path] | None,
            typer.Option(
                "--maps",
                "-m",
                metavar="FILE",
                help="A pmap -x/-X or /proc/PID/smaps text file; repeat it, oldest first. Added to the capture's own "
                "snapshots, or on its own for a region-growth report.",
                show_default=False,
            ),
        ] = None,
        fmt: Annotated[
            str,
            typer.Option("--format", "-f", metavar="text|json|html|collapsed", help="Output format."),
        ] = "text",
        output: Annotated[
            Path | None,
            typer.Option(
                "--output",
                "-o",
                metavar="FILE",
                help=f"Write here instead of stdout ('-' is stdout). html goes to {HTML_DEFAULT} by default.",
                show_default=False,
            ),
        ] = None,
        top: Annotated[
            int | None,
            typer.Option(
                metavar="N",
                help="Show the N most important stacks (default: 10 in text, 50 in html, all in json and collapsed).",
                show_default=False,
            ),
        ] = None,
        depth: Annotated[
            int | None,
            typer.Option(
                metavar="N",
                help="Fold each stack to its N frames nearest the system call, merging stacks that share them.",
                show_default=False,
            ),
        ] = None,
        group_outside: Annotated[
            str | None,
            typer.Option(
                "--group-outside",
                metavar="REGEX",
                help="Group stacks by their first frame outside the modules matching REGEX "
                "(e.g. 'libucm|libucs|libc\\.so'): one line per caller of those libraries.",
                show_default=False,
            ),
        ] = None,
        weight: Annotated[
            str | None,
            typer.Option(
                metavar="live|mapped|growth|events",
                help="collapsed only: what each stack weighs (default live bytes; stacks weighing 0 are left out).",
                show_default=False,
            ),
        ] = None,
        all_regions: Annotated[
            bool,
            typer.Option("--all-regions", help="text only: list unchanged regions that hold no captured mapping too."),
        ] = False,
    ) -> None:
        if fmt not in FORMATS:
            raise SysbreakError(f"--format {fmt!r}: choose one of {', '.join(FORMATS)}")
        if weight is not None and weight not in WEIGHTS:
            raise SysbreakError(f"--weight {weight!r}: choose one of {', '.join(WEIGHTS)}")
        if weight is not None and fmt != "collapsed":
            raise SysbreakError("--weight applies to --format collapsed only")
        if top is not None and top < 1:
            raise SysbreakError(f"--top must be 1 or more, not {top}")
        if output is None and fmt == "html":
            output = Path(HTML_DEFAULT)
        if output is not None and str(output) != "-":
            check_output(output)

        analysis = load_analysis(source, list(maps or ()), depth=depth, group_outside=group_outside)

        from sysbreak.report import render

        color, width = (False, None)
        if fmt == "text" and (output is None or str(output) == "-"):
            color, width = _color_terminal()
        text = render(
            analysis, fmt, top=top, weight=weight or "live", color=color, width=width, all_regions=all_regions
        )
        emit(text, output, f"{fmt} report")
