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
    from sysbreak.cli import attach, demo, diff, doctor, report, run, sites, watch

    for module in (sites, watch, run, attach, report, diff, doctor, demo):
        module.register(app)


_register()


def _click_exception_types() -> tuple[type[BaseException], ...]:
    """Click's usage/parameter errors: typer >= 0.22 vendors click as ``typer._click``, older ones use click."""
    types: list[type[BaseException]] = []
    try:
        from typer._click.exceptions import ClickException as VendoredClickException

        types.append(VendoredClickException)
    except ImportError:
        pass
    try:
        from click.exceptions import ClickException

        types.append(ClickException)
    except ImportError:
        pass
    return tuple(types)


def main() -> None:
    """Console entry point."""
    try:
        # standalone_mode=False: click returns the code of a typer.Exit instead of raising it
        code = app(standalone_mode=False)
    except SysbreakError as err:
        print(f"sysbreak: error: {err}", file=sys.stderr)
        sys.exit(err.exit_code)
    except (KeyboardInterrupt, typer.Abort):
        print("sysbreak: interrupted", file=sys.stderr)
        sys.exit(130)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except _click_exception_types() as exc:
        exc.show()  # type: ignore[attr-defined]
        sys.exit(exc.exit_code)  # type: ignore[attr-defined]
    sys.exit(code if isinstance(code, int) else 0)
