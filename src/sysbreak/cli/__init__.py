"""The ``sysbreak`` command line: a typer app with one module per verb.

Every verb turns :class:`sysbreak.errors.SysbreakError` into one line on stderr and a non-zero exit; nothing
a user types can produce a traceback.
"""

from __future__ import annotations

import sys

import typer

from sysbreak.errors import SysbreakError

app = typer.Typer(
    name="sysbreak",
    help=(
        "Find the call stacks that map the memory making a process's RSS grow.\n\n"
        "sysbreak puts GDB breakpoints on the `syscall` instructions (and the calls to libc's syscall()) that "
        "can reach mmap, munmap, mremap or brk, records every call with its full native (and Python) stack and "
        "its returned address, and matches those addresses to the regions of /proc/PID/smaps or pmap that grow."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _register() -> None:
    from sysbreak.cli import attach, demo, diff, doctor, report, run, sites

    for module in (sites, run, attach, report, diff, doctor, demo):
        module.register(app)


_register()


def main() -> None:
    """Console entry point."""
    try:
        app(standalone_mode=False)
    except SysbreakError as err:
        print(f"sysbreak: error: {err}", file=sys.stderr)
        sys.exit(err.exit_code)
    except KeyboardInterrupt:
        print("sysbreak: interrupted", file=sys.stderr)
        sys.exit(130)
    except (typer.Exit, SystemExit) as exc:
        code = exc.exit_code if isinstance(exc, typer.Exit) else exc.code
        sys.exit(code)
    except Exception as exc:  # click's usage errors and the like
        import click

        if isinstance(exc, click.exceptions.ClickException):
            exc.show()
            sys.exit(exc.exit_code)
        if isinstance(exc, click.exceptions.Abort):
            print("sysbreak: aborted", file=sys.stderr)
            sys.exit(130)
        raise
