"""`sysbreak report`: turn a capture (or an events log, or pmap files, or a saved JSON report) into a report."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path
from typing import Annotated

import typer

from sysbreak.errors import SysbreakError, os_error

WEIGHTS = ("live", "rss-growth", "rss", "peak", "mapped", "growth", "events")
HTML_DEFAULT = "sysbreak-report.html"

HELP = (
    "Report which call stacks map the memory that makes the process grow.\n\n"
    "SOURCE is a capture directory written by `sysbreak run` or `sysbreak attach`, a bare events log "
    "(events.jsonl, written inside gdb by the GDB command `sysbreak break --log FILE`, see `help sysbreak` in gdb), "
    "or a JSON report saved earlier with --format json (to render it "
    "again in another format). With no SOURCE, give two or more --maps files (pmap -x, pmap -X, /proc/PID/smaps or "
    "/proc/PID/maps text saved by hand, oldest first) for a report of region growth alone."
)

EXAMPLES = (
    "Examples:\n\n"
    "  sysbreak report sysbreak-capture-4242\n\n"
    "  sysbreak report sysbreak-capture-4242 --format html -o leak.html\n\n"
    "  sysbreak report events.jsonl --maps before.pmap --maps after.pmap --top 5\n\n"
    "  sysbreak report --maps pmap-0900.txt --maps pmap-1000.txt\n\n"
    "  sysbreak report CAPTURE --format collapsed | flamegraph.pl --countname bytes > leak.svg"
)


def formats_help() -> tuple[str, str]:
    """The --format metavar and the epilog's paragraph on formats, from the registered reporters (a reporter
    registered by any module shows up here with no other change)."""
    from sysbreak.report.reporters import REPORTERS

    parts = []
    for r in REPORTERS.values():
        where = f", written to {r.default_output} unless --output says otherwise" if r.default_output else ""
        parts.append(f"{r.name}: {r.description}{where}")
    return "|".join(REPORTERS), "Formats: " + "; ".join(parts) + ".\n\n" + EXAMPLES


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
    from sysbreak.files import atomic_write

    try:
        atomic_write(path, text)
    except OSError as exc:
        raise os_error(exc, f"cannot write the report to {path}") from None


def emit(text: str, output: Path | None, what: str) -> None:
    """Write to ``output`` (``-`` or None: stdout) and say where it went."""
    if output is None or str(output) == "-":
        sys.stdout.write(text)
        sys.stdout.flush()
        return
    write_output(output, text)
    typer.echo(f"sysbreak: wrote the {what} to {output}", err=True)


def color_terminal() -> tuple[bool, int | None]:
    if sys.stdout.isatty() and "NO_COLOR" not in os.environ and os.environ.get("TERM") != "dumb":
        return True, shutil.get_terminal_size((100, 24)).columns
    return False, None


# module level: the annotations below are evaluated in this module's namespace
FORMATS_METAVAR, FORMATS_EPILOG = formats_help()


def register(app: typer.Typer) -> None:
    @app.command("report", help=HELP, epilog=FORMATS_EPILOG, no_args_is_help=False)
    def command(
        source: Annotated[
            Path | None,
            typer.Argument(
                metavar="[SOURCE]",
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
            typer.Option("--format", "-f", metavar=FORMATS_METAVAR, help="Output format."),
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
                metavar="live|rss-growth|rss|peak|mapped|growth|events",
                help="collapsed only: what each stack weighs (default live bytes; stacks weighing 0 are left out).",
                show_default=False,
            ),
        ] = None,
        process_frames: Annotated[
            bool | None,
            typer.Option(
                "--process-frames/--no-process-frames",
                help="collapsed only: start each line with its process (COMM-PID, as stackcollapse-perf.pl --pid); "
                "default: when the capture holds several processes.",
                show_default=False,
            ),
        ] = None,
        all_regions: Annotated[
            bool,
            typer.Option("--all-regions", help="text only: list unchanged regions that hold no captured mapping too."),
        ] = False,
        sort: Annotated[
            str | None,
            typer.Option(
                "--sort",
                "-S",
                metavar="rss-growth|rss|live|peak|growth|rate|events",
                help="Order of the stacks (default rss-growth: what each added to the resident set, from the smaps "
                "snapshots; live: bytes still mapped; growth: address space mapped after the first snapshot).",
                show_default=False,
            ),
        ] = None,
        pid: Annotated[
            int | None,
            typer.Option(
                "--pid",
                "-p",
                metavar="PID",
                help="Only this process of a capture of several (run -f, attach PID PID, attach --children).",
                show_default=False,
            ),
        ] = None,
    ) -> None:
        from sysbreak.report import ReportOptions, get_reporter, load_analysis

        reporter = get_reporter(fmt)
        if weight is not None and weight not in WEIGHTS:
            raise SysbreakError(f"--weight {weight!r}: choose one of {', '.join(WEIGHTS)}")
        if weight is not None and fmt != "collapsed":
            raise SysbreakError("--weight applies to --format collapsed only")
        if process_frames is not None and fmt != "collapsed":
            raise SysbreakError("--process-frames/--no-process-frames apply to --format collapsed only")
        if top is not None and top < 1:
            raise SysbreakError(f"--top must be 1 or more, not {top}")
        if output is None and reporter.default_output is not None:
            output = Path(reporter.default_output)
        if output is not None and str(output) != "-":
            check_output(output)

        analysis = load_analysis(source, list(maps or ()), depth=depth, group_outside=group_outside, sort=sort, pid=pid)

        color, width = (False, None)
        if reporter.terminal and (output is None or str(output) == "-"):
            color, width = color_terminal()
        options = ReportOptions(
            top=top,
            weight=weight or "live",
            color=color,
            width=width,
            all_regions=all_regions,
            process_frames=process_frames,
        )
        emit(reporter.render(analysis, options), output, f"{fmt} report")
