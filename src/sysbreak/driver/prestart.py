"""GDB started first: ``sysbreak attach``/``run`` launch their GDB before anything else, so that its start-up
(GDB itself, its settings, the extension loaded into its Python: ~0.35 s) overlaps the command line's own (typer,
the driver's imports, the checks, the pre-scan) instead of following it (notes/attach.md, "Where a warm attach
goes").

:func:`start` is called by the console entry point with the verb's arguments, before typer is imported. It guesses
from them the few things a GDB's start depends on (``--gdb``, ``--non-stop``, where ``--output`` goes), starts the
GDB process with its logs in a hidden directory next to where the capture directory will be (the same file
system, so they can be moved into it), and a thread sets it up. The capture session then :func:`take` s it, once
the real options are parsed and checked and the capture directory made: only if it matches them (same GDB,
same mode, same symbol setting) and started without error; otherwise it is quit and the session starts its
own, exactly as without this module, errors included. :func:`drop` (at the end of the command, whatever
happened) quits one nobody took, so a bad PID or a bad option leaves no GDB behind.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import tempfile
import threading
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sysbreak.driver.mi import MiSession

#: the names of GDB's two files in the hidden directory (renamed to the capture directory's names when taken)
MI_NAME = "gdb-mi"
LOG_NAME = "gdb-log"
#: the hidden directory's prefix, next to the capture directory
PREFIX = ".sysbreak-gdb-"


class Guess:
    """What the arguments say about the GDB to start (a guess: :func:`take` checks it against the options)."""

    def __init__(self, args: list[str]) -> None:
        self.gdb: str | None = None
        self.non_stop = False
        self.output: str | None = None
        self.help = False
        it = iter(args)
        for arg in it:
            if arg == "--":
                break  # `run -- CMD ARGS`: the program's own arguments
            name, eq, value = arg.partition("=")
            if arg in ("-h", "--help"):
                self.help = True
            elif arg == "--non-stop":
                self.non_stop = True
            elif arg == "--all-stop":
                self.non_stop = False
            elif name in ("--gdb", "--output") and eq:
                self._set(name, value)
            elif arg in ("--gdb", "--output", "-o"):
                self._set(arg, next(it, ""))
            elif arg.startswith("-o") and not arg.startswith("--"):
                self._set("-o", arg[2:])

    def _set(self, name: str, value: str) -> None:
        if name == "--gdb":
            self.gdb = value
        else:
            self.output = value


def symbols_guess() -> bool:
    """``session.gdb_symbols_wanted`` for default options, without importing the unwinder (checked when taken)."""
    env = os.environ.get("SYSBREAK_GDB_SYMBOLS", "")
    if env in ("0", "1"):
        return env == "1"
    return importlib.util.find_spec("sysbreak.unwind") is None


class EarlyGdb:
    """One GDB started ahead: its process (started in :meth:`__init__`), then its set-up in a thread."""

    def __init__(self, gdb_path: str, where: Path, *, non_stop: bool, symbols: bool) -> None:
        from sysbreak.driver.launch import spawn_gdb

        self.gdb_path = gdb_path
        self.where = where
        self.non_stop = non_stop
        self.symbols = symbols
        self.error: BaseException | None = None
        self.mi: MiSession = spawn_gdb(gdb_path, str(where / MI_NAME), str(where / LOG_NAME))
        self.thread = threading.Thread(target=self._set_up, name="sysbreak-gdb-start", daemon=True)
        self.thread.start()

    def _set_up(self) -> None:
        from sysbreak.driver.launch import set_up_gdb

        try:
            set_up_gdb(self.mi, non_stop=self.non_stop, symbols=self.symbols)
        except BaseException as exc:  # noqa: BLE001 - kept: the session's own start then says what is wrong
            self.error = exc

    def wait(self, timeout: float | None = None) -> bool:
        """Until its set-up is over; whether it is ready (set up without error, GDB still running)."""
        self.thread.join(timeout)
        return not self.thread.is_alive() and self.error is None and self.mi.alive()

    def close(self) -> None:
        """Quit it (killed: it has no target) and remove its directory."""
        self.mi.kill()  # a set-up still going on fails at once (GDB is gone), and closes the session itself
        self.thread.join(10)
        with contextlib.suppress(Exception):
            self.mi.close()
        shutil.rmtree(self.where, ignore_errors=True)

    def move_to(self, directory: Path, mi_name: str, log_name: str) -> None:
        """Its two files into the capture directory (GDB and the reader keep them open: a rename is enough)."""
        mi_path, log_path = directory / mi_name, directory / log_name
        os.rename(self.where / MI_NAME, mi_path)
        self.mi.mi_path = str(mi_path)
        os.rename(self.where / LOG_NAME, log_path)
        self.mi.log_path = str(log_path)
        with contextlib.suppress(OSError):
            self.where.rmdir()


_lock = threading.Lock()
_early: EarlyGdb | None = None


def start(args: list[str]) -> None:
    """Start GDB for the capture these arguments (the verb's) describe; nothing when they ask for help, when no
    GDB is found or anything else fails (the session then starts its own and says what is wrong)."""
    global _early
    guess = Guess(args)
    if guess.help or _early is not None:
        return
    try:
        from sysbreak.driver.gdbenv import find_gdb

        gdb_path = find_gdb(guess.gdb)
        parent = Path(os.path.abspath(guess.output)).parent if guess.output else Path.cwd()
        where = Path(tempfile.mkdtemp(prefix=PREFIX, dir=parent))
    except Exception:  # noqa: BLE001 - no GDB ahead: the session starts one (and reports what fails)
        return
    try:
        early = EarlyGdb(gdb_path, where, non_stop=guess.non_stop, symbols=symbols_guess())
    except Exception:  # noqa: BLE001 - same
        shutil.rmtree(where, ignore_errors=True)
        return
    with _lock:
        _early = early


def take(
    gdb_path: str, directory: Path, mi_name: str, log_name: str, *, non_stop: bool, symbols: bool
) -> MiSession | None:
    """The GDB started ahead, set up and moved into ``directory``, when it matches the capture's options; else
    None (any one started is quit: the caller starts its own)."""
    global _early
    with _lock:
        early, _early = _early, None
    if early is None:
        return None
    same = (early.gdb_path, early.non_stop, early.symbols) == (gdb_path, non_stop, symbols)
    try:
        if same and early.wait(120):
            early.move_to(directory, mi_name, log_name)
            return early.mi
    except OSError:
        pass
    early.close()
    return None


def drop() -> None:
    """Quit the GDB started ahead if nobody took it."""
    global _early
    with _lock:
        early, _early = _early, None
    if early is not None:
        early.close()
