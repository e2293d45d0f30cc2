"""`sysbreak diff`: compare two analyses (say before and after a fix) stack by stack."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from sysbreak.cli.report import check_output, color_terminal, emit
from sysbreak.errors import SysbreakError
from sysbreak.report.reporters import diff_formats, get_diff_reporter

FORMATS = diff_formats()
HTML_DEFAULT = get_diff_reporter("html").default_output

HELP = (
    "Compare two captures stack by stack: what grew less, what went away, what is new.\n\n"
    "A and B are each a capture directory, an events log, or a JSON report saved with `sysbreak report --format "
    "json` (say A as it is and B with UCX_MEM_MMAP_HOOK_MODE=none). Stacks are matched by their frames outside "
    "the allocator and hook layers (function and module, or module+offset when the function is unknown), not by "
    "labels, ids or addresses (which change from run to run), so the program's stack matches even when B no longer "
    "goes through libucm. The summary says how the process's RSS growth changed and which stack's resident growth "
    "changed most; then totals, and each stack's RSS growth, live bytes and events in A and B."
)

EPILOG = (
    "Examples:\n\n"
    "  sysbreak diff sysbreak-capture-4242 sysbreak-capture-5150\n\n"
    "  sysbreak diff before.json after.json --format json -o diff.json\n\n"
    "  sysbreak diff before/ after/ -f html -o diff.html"
)


def register(app: typer.Typer) -> None:
    @app.command("diff", help=HELP, epilog=EPILOG)
    def command(
        a: Annotated[
            Path,
            typer.Argument(
                metavar="A", show_default=False, help="The first (before) capture, events log or JSON report."
            ),
        ],
        b: Annotated[Path, typer.Argument(metavar="B", help="The second (after) capture, events log or JSON report.")],
        fmt: Annotated[str, typer.Option("--format", "-f", metavar="text|json|html", help="Output format.")] = "text",
        output: Annotated[
            Path | None,
            typer.Option(
                "--output",
                "-o",
                metavar="FILE",
                help=f"Write here instead of stdout. html goes to {HTML_DEFAULT} by default.",
                show_default=False,
            ),
        ] = None,
        top: Annotated[
            int | None,
            typer.Option(
                metavar="N", help="Show the N biggest changes (default: 20 in text, all in json).", show_default=False
            ),
        ] = None,
        depth: Annotated[
            int | None,
            typer.Option(metavar="N", help="As for sysbreak report, applied to both.", show_default=False),
        ] = None,
        group_outside: Annotated[
            str | None,
            typer.Option(
                "--group-outside", metavar="REGEX", help="As for sysbreak report, applied to both.", show_default=False
            ),
        ] = None,
    ) -> None:
        reporter = get_diff_reporter(fmt)
        if top is not None and top < 1:
            raise SysbreakError(f"--top must be 1 or more, not {top}")
        if output is None and reporter.default_output is not None:
            output = Path(reporter.default_output)
        if output is not None and str(output) != "-":
            check_output(output)
        from sysbreak.report import diff, load_analysis, render_diff

        before = load_analysis(a, depth=depth, group_outside=group_outside)
        after = load_analysis(b, depth=depth, group_outside=group_outside)

        color, width = (False, None)
        if reporter.terminal and (output is None or str(output) == "-"):
            color, width = color_terminal()
        emit(render_diff(diff(before, after), fmt, top=top, color=color, width=width), output, f"{fmt} diff")
