"""Starting one GDB for a capture: its process, its settings and sysbreak's extension loaded (no target yet).

Kept apart from :mod:`sysbreak.driver.session` and light to import (GDB/MI, the tripwire, the GDB finder):
``sysbreak attach``/``run`` start their GDB with it before the rest of the driver is even imported
(:mod:`sysbreak.driver.prestart`), so that GDB's own start-up overlaps theirs.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from sysbreak import tripwire
from sysbreak.driver import gdbenv
from sysbreak.driver.mi import MiError, MiSession, mi_quote
from sysbreak.errors import ExitCode, SysbreakError
from sysbreak.tripwire import Tripwire


def start_gdb(
    gdb_path: str,
    mi_path: str,
    log_path: str,
    *,
    non_stop: bool,
    symbols: bool,
    on_exit: Callable[[], None] | None = None,
) -> MiSession:
    """Start GDB (its MI output in ``mi_path``, the readable log in ``log_path``), set it up for a capture and
    load the extension: :func:`spawn_gdb` then :func:`set_up_gdb`."""
    return set_up_gdb(spawn_gdb(gdb_path, mi_path, log_path, on_exit=on_exit), non_stop=non_stop, symbols=symbols)


def spawn_gdb(gdb_path: str, mi_path: str, log_path: str, *, on_exit: Callable[[], None] | None = None) -> MiSession:
    """Start the GDB process only (a few ms): :func:`set_up_gdb` is the rest. Its ``tripwire`` is, until then, the
    tripwire it was handed (or None)."""
    wire: Tripwire | None = None
    if tripwire.available():
        try:
            wire = Tripwire()
        except OSError:
            wire = None
    try:
        mi = MiSession(
            gdbenv.gdb_argv(gdb_path),
            mi_path=mi_path,
            log_path=log_path,
            env=gdbenv.gdb_env(),
            on_exit=on_exit,
            pass_fds=(wire.fd,) if wire is not None else (),
        )
    except BaseException:
        if wire is not None:
            wire.close_fd()
        raise
    mi.tripwire = wire
    return mi


def set_up_gdb(mi: MiSession, *, non_stop: bool, symbols: bool) -> MiSession:
    """Set a started GDB up for a capture and load the extension (no target yet); ``symbols``: whether GDB loads
    symbol files (``session.gdb_symbols_wanted``). On any failure GDB is killed and reaped, then the error raised.

    The returned session's ``tripwire`` is the mutex GDB's main thread holds for life (sysbreak.tripwire), or
    None where it could not be set up (the guard then polls GDB's /proc stat)."""
    wire: Tripwire | None = mi.tripwire
    mi.tripwire = None
    try:
        _set_up(mi, mi.log_path, non_stop=non_stop, symbols=symbols)
        mi.tripwire = _set_tripwire(mi, wire)
    except BaseException:
        if wire is not None:
            wire.close_fd()
        mi.close()  # no GDB is left behind by a start that failed
        raise
    return mi


def _set_up(mi: MiSession, log_path: str, *, non_stop: bool, symbols: bool) -> None:
    settings = ["-gdb-set mi-async on"]
    if non_stop:
        settings.append("-gdb-set non-stop on")
    cli = [f"set {c}" for c in ("pagination off", "confirm off", "width 0", "height 0", "print thread-events off")]
    # Nothing may load while the target is stopped (notes/attach.md): no debug info downloads (a host with
    # DEBUGINFOD_URLS would fetch them in the stop), and no symbol files at all: breakpoints go by address from
    # sysbreak's own scan, stacks are copied raw and unwound when the capture is read, new libraries are armed at
    # the extension's breakpoint on the dynamic linker. SYSBREAK_GDB_SYMBOLS=1 keeps GDB's symbols and unwinder.
    optional = "set debuginfod enabled off"  # a GDB built without debuginfod has no such setting
    cli.append(optional)
    if not symbols:
        cli += ["set auto-solib-add off", "set debug-file-directory"]  # not even the executable's separate debug file
    # Signals go to the program untouched, never stop it (SIGINT stays GDB's: -exec-interrupt uses it).
    cli.append("handle all nostop noprint pass")
    settings += [f"-interpreter-exec console {mi_quote(c)}" for c in cli]
    # all at once: one round trip to GDB, not one each (~5 ms each on a loaded machine)
    for cmd, res in zip(settings, mi.pipeline(settings), strict=True):
        if isinstance(res, MiError) and mi_quote(optional) not in cmd:
            raise res
    out = ""
    for cmd in gdbenv.load_commands():
        try:
            out = mi.console_output(cmd, timeout=60)
        except MiError as err:
            raise SysbreakError(
                f"GDB could not load sysbreak's extension: {err.message} (see {log_path})", ExitCode.TOOL
            ) from None
    try:
        mi.console("set sysbreak detach-on-exit on")
    except MiError:
        tail = (out or "").strip().splitlines()
        why = tail[-1] if tail else "no 'sysbreak' command after loading it"
        raise SysbreakError(f"GDB could not load sysbreak's extension: {why}", ExitCode.TOOL) from None


def _set_tripwire(mi: MiSession, wire: Tripwire | None) -> Tripwire | None:
    """Have GDB's main thread take the tripwire; None (the guard polls instead) if it did not hold."""
    if wire is None:
        return None
    fd, wire.fd = wire.fd, -1
    try:
        mi.console(f"python __import__('sysbreak.tripwire').tripwire.hold({fd})")
    except MiError as err:
        mi.write_log(f"(sysbreak) no tripwire in GDB ({err.message}): the guard polls GDB instead")
    finally:
        os.close(fd)
    return wire if wire.held() else None
