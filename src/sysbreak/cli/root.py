"""The typer app of the ``sysbreak`` command line (:mod:`sysbreak.cli` starts it): its root options and how the
verbs are added to it, one module per verb (:data:`sysbreak.cli.VERBS`)."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from sysbreak.cli import VERBS
from sysbreak.errors import ExitCode, SysbreakError

app = typer.Typer(
    name="sysbreak",
    help=(
        "Find the call stacks that map the memory making a process's RSS grow.\n\n"
        "sysbreak puts GDB breakpoints on the `syscall` instructions (and the calls to libc's syscall()) that "
        "can reach mmap, munmap, mremap or brk, records every call with its full native (and Python) stack and "
        "its returned address, and matches those addresses to the regions of /proc/PID/smaps or pmap that grow.\n\n"
        "Inside gdb, `source gdb_scripts/sysbreak.py` gives the same capture as GDB commands (`help sysbreak`)."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # plain click help: no rich import for --help, no <bool> placeholders
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        from sysbreak import __version__

        typer.echo(f"sysbreak {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option("--version", "-V", callback=_version, is_eager=True, help="Print sysbreak's version and exit."),
    ] = False,
) -> None:
    pass


_REGISTERED: set[str] = set()


def register(verbs: list[str] | None = None) -> typer.Typer:
    """Add the verbs (all of them by default) to :data:`app`; returns it."""
    import importlib

    for verb in verbs or list(VERBS):
        if verb not in _REGISTERED:
            importlib.import_module(VERBS[verb]).register(app)
            _REGISTERED.add(verb)
    return app


def run(verb: str | None) -> None:
    """Build the app (only ``verb``'s command when it is known) and run it on ``sys.argv``."""
    register([verb] if verb else None)
    try:
        # standalone mode: click prints usage errors itself (exit 2), turns typer.Exit into its exit status and
        # Ctrl-C outside a capture into 130; what is left for us is SysbreakError
        app()
    except SysbreakError as err:
        print(f"sysbreak: error: {err}", file=sys.stderr)
        sys.exit(err.exit_code)
    except KeyboardInterrupt:  # pragma: no cover - click turns it into exit 130 already
        print("sysbreak: interrupted", file=sys.stderr)
        sys.exit(ExitCode.INTERRUPTED)
