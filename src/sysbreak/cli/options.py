"""The options ``sysbreak run`` and ``sysbreak attach`` share, defined once.

A verb takes them all with :func:`capture_command`: its function declares its own parameters plus one
``capture: CaptureArgs``, and the decorator gives typer the shared options after the verb's own, then hands the
parsed values to the function as one :class:`CaptureArgs` (as memray's ``run`` and ``attach`` share one parser).
Nothing heavy is imported here: the GDB driver is imported when a capture starts.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:
    from sysbreak.driver.session import CaptureOptions

DEFAULT_SYSCALLS = "mmap,munmap,mremap,brk"


@dataclass
class CaptureArgs:
    """The shared capture options as parsed; :meth:`options` makes the driver's ``CaptureOptions``."""

    syscall: list[str] | None = None
    lib: str | None = None
    duration: float | None = None
    max_events: int | None = None
    output: str | None = None
    interval: float = 1.0
    python_stacks: bool = False
    exhaustive: bool = False
    quiet: bool = False
    gdb: str | None = None
    non_stop: bool = False
    spare_gdbs: int | None = None

    def options(self, **extra: Any) -> CaptureOptions:
        from sysbreak.driver.session import CaptureOptions

        # every field but `syscall` has the driver's name: copied by name, so a new option cannot be forgotten here
        same = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "syscall"}
        return CaptureOptions(syscalls=list(self.syscall or []), **same, **extra)


#: name -> the typer annotation of each shared option (the default is CaptureArgs')
SHARED: dict[str, Any] = {
    "syscall": Annotated[
        list[str] | None,
        typer.Option(
            "--syscall",
            "-s",
            metavar="NAME",
            help=f"System call to catch (repeat it, or separate with commas). Default: {DEFAULT_SYSCALLS}.",
            show_default=False,
        ),
    ],
    "lib": Annotated[
        str | None,
        typer.Option(
            "--lib", metavar="REGEX", help="Only place breakpoints in modules whose path matches.", show_default=False
        ),
    ],
    "duration": Annotated[
        float | None,
        typer.Option(
            "--duration", "-d", metavar="SECONDS", help="End the capture after this long.", show_default=False
        ),
    ],
    "max_events": Annotated[
        int | None,
        typer.Option(
            "--max-events",
            "-n",
            metavar="N",
            help=(
                "End the capture after N calls, counted over every traced process together (-f, --children, "
                "several PIDs): the process whose call is the Nth stops being traced at once, the others at their "
                "next call; every process runs on untraced. Calls other processes were already stopped at then "
                "are kept (meta.json: events_total, max_events_overshoot)."
            ),
            show_default=False,
        ),
    ],
    "output": Annotated[
        str | None,
        typer.Option(
            "--output",
            "-o",
            metavar="DIR",
            help="Capture directory to create. Default: sysbreak-capture-PID-YYYYmmdd-HHMMSS.",
            show_default=False,
        ),
    ],
    "interval": Annotated[
        float,
        typer.Option(
            "--interval",
            "-i",
            metavar="SECONDS",
            help="Seconds between /proc/PID/smaps snapshots (0: first and last only).",
        ),
    ],
    "python_stacks": Annotated[
        bool,
        typer.Option("--python-stacks/--no-python-stacks", help="Also record CPython frames.", show_default=False),
    ],
    "exhaustive": Annotated[
        bool,
        typer.Option(
            "--exhaustive", help="Also stop in libc's generic syscall() wrapper (callers not found statically; slower)."
        ),
    ],
    "quiet": Annotated[bool, typer.Option("--quiet", "-q", help="No progress lines; only the final lines.")],
    "gdb": Annotated[
        str | None,
        typer.Option(
            "--gdb", metavar="PATH", help="GDB to use (e.g. cuda-gdb). Default: gdb on PATH.", show_default=False
        ),
    ],
    "non_stop": Annotated[
        bool,
        typer.Option(
            "--non-stop/--all-stop",
            help=(
                "GDB's non-stop mode (only the thread that hit a breakpoint pauses) or all-stop (every thread "
                "pauses; the default: with 8 threads on 2 cores non-stop measured no faster, see "
                "notes/mechanisms.md)."
            ),
            show_default=False,
        ),
    ],
    "spare_gdbs": Annotated[
        int | None,
        typer.Option(
            "--spare-gdbs",
            metavar="N",
            min=0,
            max=64,
            help=(
                "With -f/--children: GDBs started ahead for new children (about 23 MB of memory each; default 2), "
                "so that a child is held only for its attach, never for a GDB's start (1-3 s); run starts the "
                "program once they are ready. The pool grows to the largest burst of children seen; 0: none."
            ),
            show_default=False,
        ),
    ],
}
assert set(SHARED) == {f.name for f in fields(CaptureArgs)}


def capture_command(func: Callable[..., Any]) -> Callable[..., Any]:
    """Give ``func`` (which takes ``capture: CaptureArgs`` besides its own parameters) the shared options."""
    sig = inspect.signature(func, eval_str=True)
    own = [p for p in sig.parameters.values() if p.name != "capture"]
    defaults = CaptureArgs()
    shared = [
        inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=ann, default=getattr(defaults, name))
        for name, ann in SHARED.items()
    ]

    @functools.wraps(func)
    def wrapper(**kwargs: Any) -> Any:
        args = CaptureArgs(**{name: kwargs.pop(name) for name in SHARED})
        return func(capture=args, **kwargs)

    wrapper.__signature__ = sig.replace(parameters=[*own, *shared])  # type: ignore[attr-defined]
    wrapper.__annotations__ = {}  # typer reads the annotations from __signature__
    return wrapper
