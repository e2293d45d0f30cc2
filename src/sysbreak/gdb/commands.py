"""The ``sysbreak`` GDB commands and ``set/show sysbreak`` parameters, and the GDB event hooks."""

from __future__ import annotations

import argparse
import json
import os
import re
from typing import Any

import gdb

from sysbreak import syscalls
from sysbreak.errors import SysbreakError
from sysbreak.gdb.tracer import Config, Tracer

_TRACER: list[Tracer | None] = [None]


def tracer() -> Tracer | None:
    return _TRACER[0]


class _ArgumentParser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:  # one line, as a GDB error, never SystemExit inside GDB
        raise gdb.GdbError(f"{self.prog}: {message}")

    def exit(self, status: int = 0, message: str | None = None) -> Any:
        if message:
            raise gdb.GdbError(message.strip())
        raise gdb.GdbError("")


def _parse(parser: argparse.ArgumentParser, arg: str) -> argparse.Namespace:
    try:
        return parser.parse_args(gdb.string_to_argv(arg))
    except SysbreakError as err:
        raise gdb.GdbError(str(err)) from None


# --------------------------------------------------------------------------------------------- parameters
class _Param(gdb.Parameter):
    def __init__(self, name: str, kind: int, doc: str, default: Any) -> None:
        self.__doc__ = doc
        self.set_doc = doc
        self.show_doc = doc
        super().__init__(f"sysbreak {name}", gdb.COMMAND_BREAKPOINTS, kind)
        self.value = default

    def get_set_string(self) -> str:
        return ""

    def get_show_string(self, svalue: str) -> str:
        return f"{self.show_doc.split('.')[0]}: {svalue}"


_PARAMS: dict[str, _Param] = {}


def param(name: str) -> Any:
    return _PARAMS[name].value


class _Prefix(gdb.Command):
    def __init__(self, name: str, cls: int, doc: str) -> None:
        self.__doc__ = doc
        super().__init__(name, cls, prefix=True)


def _register_params() -> None:
    _Prefix("set sysbreak", gdb.COMMAND_BREAKPOINTS, "Settings of sysbreak (see `show sysbreak`).")
    _Prefix("show sysbreak", gdb.COMMAND_BREAKPOINTS, "Settings of sysbreak.")
    spec = [
        ("quiet", gdb.PARAM_BOOLEAN, "Whether sysbreak prints nothing per caught call.", False),
        ("max-depth", gdb.PARAM_ZUINTEGER, "Deepest native stack sysbreak records per call (frames).", 64),
        ("python-stacks", gdb.PARAM_BOOLEAN, "Whether sysbreak records CPython frames too.", False),
        ("exhaustive", gdb.PARAM_BOOLEAN, "Whether sysbreak conditions the generic syscall() wrapper too.", False),
        (
            "detach-on-exit",
            gdb.PARAM_BOOLEAN,
            "Whether GDB detaches every inferior (even one it started) when it exits, so targets keep running.",
            False,
        ),
        ("log", gdb.PARAM_STRING, "Event log file `sysbreak break` writes when --log is not given.", ""),
        (
            "stack-cache",
            gdb.PARAM_BOOLEAN,
            "Whether sysbreak reuses the unwind of a call path it has seen (keyed by the stack's code pointers).",
            True,
        ),
    ]
    for name, kind, doc, default in spec:
        _PARAMS[name] = _Param(name, kind, doc, default)


# --------------------------------------------------------------------------------------------- commands
class SysbreakPrefix(gdb.Command):
    """Catch the system calls that map memory, with the full stack that made them, at the syscall instruction.

    sysbreak puts breakpoints on x86-64 `syscall` instructions and on the calls to libc's syscall() that can
    reach the system calls you name (default: mmap munmap mremap brk), including calls made through raw
    syscall() by libraries such as UCX's libucm that bypass every libc hook. Each call is recorded with its six
    arguments, its return value (the mapped address), thread, time and full native stack (and CPython frames with
    --python-stacks), in a JSON Lines log that `sysbreak report` (the shell command) turns into a report.

    Commands:
      sysbreak break [SYSCALL...] [--lib REGEX] [--log FILE] [--python-stacks] [--exhaustive] [--quiet]
                     [--max-events N]        arm breakpoints in every module, now and as libraries load
      sysbreak sites [SYSCALL...] [--lib REGEX] [--all] [--exhaustive]
                                             list the syscall sites and what `break` would do with each
      sysbreak status [--json]               what is armed and what was caught
      sysbreak clear                         remove every sysbreak breakpoint and close the log

    Settings: set/show sysbreak quiet|max-depth|python-stacks|exhaustive|detach-on-exit|log|stack-cache."""

    def __init__(self) -> None:
        super().__init__("sysbreak", gdb.COMMAND_BREAKPOINTS, prefix=True)

    def invoke(self, arg: str, from_tty: bool) -> None:
        gdb.execute("help sysbreak", from_tty=from_tty)


def _syscall_list(names: list[str]) -> list[int]:
    try:
        return syscalls.parse_list(names)
    except SysbreakError as err:
        raise gdb.GdbError(str(err)) from None


class BreakCommand(gdb.Command):
    """Arm sysbreak: catch SYSCALL... (default mmap munmap mremap brk) with full stacks.

    Usage: sysbreak break [SYSCALL...] [--lib REGEX] [--log FILE] [--python-stacks] [--exhaustive] [--quiet]
                          [--max-events N] [--restore-file FILE]

      SYSCALL        names or numbers, space or comma separated (mmap, 9, SYS_mmap)
      --lib REGEX    only place breakpoints in modules whose path matches REGEX (e.g. libucm)
      --log FILE     append every caught call as JSON Lines (format sysbreak-events/1) to FILE
      --python-stacks  also record CPython frames (needs CPython with debug info or a known layout)
      --exhaustive   also condition libc's generic syscall() wrapper itself: catches callers that cannot be seen
                     statically (function pointers, JIT) at the price of a stop for EVERY syscall() call
      --quiet        no line per caught call on the console
      --max-events N stop the inferior and remove the breakpoints after N calls
      --restore-file FILE  append {"pid","addr","orig"} per breakpoint so bytes can be restored if GDB dies

    Works before `run` (arms when the process starts), on a running process (`attach`, gdb -p) and for
    libraries loaded later (dlopen, Python imports of native modules). The inferior never stops for a caught
    call; a line per call is printed unless --quiet."""

    def __init__(self) -> None:
        super().__init__("sysbreak break", gdb.COMMAND_BREAKPOINTS)
        p = _ArgumentParser(prog="sysbreak break", add_help=False)
        p.add_argument("syscalls", nargs="*")
        p.add_argument("--lib")
        p.add_argument("--log")
        p.add_argument("--python-stacks", action="store_true", default=None)
        p.add_argument("--exhaustive", action="store_true", default=None)
        p.add_argument("--quiet", action="store_true", default=None)
        p.add_argument("--max-events", type=int, default=0)
        p.add_argument("--restore-file")
        self.parser = p

    def invoke(self, arg: str, from_tty: bool) -> None:
        ns = _parse(self.parser, arg)
        current = tracer()
        if current is not None and current.active:
            raise gdb.GdbError("sysbreak is already armed; `sysbreak clear` first")
        if ns.lib:
            try:
                re.compile(ns.lib)
            except re.error as err:
                raise gdb.GdbError(f"sysbreak break: bad --lib regex {ns.lib!r}: {err}") from None
        if ns.max_events < 0:
            raise gdb.GdbError("sysbreak break: --max-events must be >= 0")
        log = ns.log or param("log") or None
        if log:
            log = os.path.abspath(os.path.expanduser(log))
            try:
                open(log, "a").close()
            except OSError as err:
                raise gdb.GdbError(f"sysbreak break: cannot write the log {log}: {err.strerror}") from None
        config = Config(
            syscalls=_syscall_list(ns.syscalls),
            lib=ns.lib,
            log=log,
            python_stacks=bool(ns.python_stacks if ns.python_stacks is not None else param("python-stacks")),
            exhaustive=bool(ns.exhaustive if ns.exhaustive is not None else param("exhaustive")),
            quiet=bool(ns.quiet if ns.quiet is not None else param("quiet")),
            max_events=ns.max_events,
            restore_file=ns.restore_file,
            max_depth=int(param("max-depth")) or 64,
            stack_cache=bool(param("stack-cache")),
        )
        t = Tracer(config)
        _TRACER[0] = t
        names = ", ".join(syscalls.name(n) for n in config.syscalls)
        if gdb.selected_inferior().pid == 0:
            gdb.write(f"sysbreak: will catch {names} once the program runs\n")
            return
        if config.python_stacks:
            _check_python()
        for note in t.arm_new_modules():
            gdb.write(f"sysbreak: {note}\n")
        gdb.write(
            f"sysbreak: catching {names} with {t.breakpoint_count()} breakpoint(s) in {len(t.armed)} module(s)"
            + (f"; log: {log}" if log else "")
            + "\n"
        )


def _check_python() -> None:
    from sysbreak.gdb import pyframes

    why = pyframes.availability()
    if why:
        gdb.write(f"sysbreak: no Python frames: {why}\n", gdb.STDERR)
    else:
        gdb.write(f"sysbreak: {pyframes.describe()}\n")


class SitesCommand(gdb.Command):
    """List the syscall sites of the loaded modules and what `sysbreak break` would do with each.

    Usage: sysbreak sites [SYSCALL...] [--lib REGEX] [--all] [--exhaustive]"""

    def __init__(self) -> None:
        super().__init__("sysbreak sites", gdb.COMMAND_BREAKPOINTS)
        p = _ArgumentParser(prog="sysbreak sites", add_help=False)
        p.add_argument("syscalls", nargs="*")
        p.add_argument("--lib")
        p.add_argument("--all", action="store_true")
        p.add_argument("--exhaustive", action="store_true")
        self.parser = p

    def invoke(self, arg: str, from_tty: bool) -> None:
        from sysbreak import sites

        ns = _parse(self.parser, arg)
        wanted = _syscall_list(ns.syscalls)
        try:
            lib_re = re.compile(ns.lib) if ns.lib else None
        except re.error as err:
            raise gdb.GdbError(f"sysbreak sites: bad --lib regex {ns.lib!r}: {err}") from None
        inf = gdb.selected_inferior()
        modules: list[tuple[Any, int | None]] = []
        if inf.pid:
            try:
                mapped = sites.mapped_modules(inf.pid)
            except SysbreakError as err:
                raise gdb.GdbError(str(err)) from None
            for path, base in mapped:
                if lib_re and not lib_re.search(path):
                    continue
                try:
                    scan = sites.scan(path)
                except SysbreakError:
                    continue
                modules.append((scan, scan.load_bias(base) if base is not None else None))
        else:
            exe = inf.progspace.filename if inf.progspace else None
            if not exe:
                raise gdb.GdbError("sysbreak sites: no program loaded and no process running")
            try:
                modules.append((sites.scan(exe), None))
            except SysbreakError as err:
                raise gdb.GdbError(str(err)) from None
        gdb.write(sites.sites_table(modules, wanted, exhaustive=ns.exhaustive, show_all=ns.all))


class StatusCommand(gdb.Command):
    """Show what sysbreak has armed and caught.  Usage: sysbreak status [--json]"""

    def __init__(self) -> None:
        super().__init__("sysbreak status", gdb.COMMAND_BREAKPOINTS)

    def invoke(self, arg: str, from_tty: bool) -> None:
        t = tracer()
        if t is None:
            gdb.write("sysbreak: not armed (use `sysbreak break`)\n")
            return
        st = t.status()
        if arg.strip() == "--json":
            gdb.write(json.dumps(st) + "\n")
            return
        state = "armed" if st["active"] else "cleared"
        counts = ", ".join(f"{k} {v}" for k, v in sorted(st["by_syscall"].items())) or "none yet"
        gdb.write(
            f"sysbreak: {state}; catching {', '.join(st['syscalls'])} ({st['mode']} mode); "
            f"{st['breakpoints']} breakpoint(s) in {len(st['modules'])} module(s); "
            f"{st['events']} call(s): {counts}; log: {st['log'] or 'none'}\n"
        )
        for m in st["modules"]:
            if m["breakpoints"]:
                gdb.write(f"  {m['path']}: {m['breakpoints']} breakpoint(s), {m['sites']} site(s)\n")


class ClearCommand(gdb.Command):
    """Remove every breakpoint sysbreak placed (the original bytes come back) and close the log."""

    def __init__(self) -> None:
        super().__init__("sysbreak clear", gdb.COMMAND_BREAKPOINTS)

    def invoke(self, arg: str, from_tty: bool) -> None:
        t = tracer()
        if t is None or not t.active:
            gdb.write("sysbreak: nothing to clear\n")
            return
        n = t.disarm("clear")
        gdb.write(f"sysbreak: removed {n} breakpoint(s); {t.events} call(s) caught\n")


# --------------------------------------------------------------------------------------------- events
def _on_new_objfile(event: Any) -> None:
    t = tracer()
    if t is None or not t.active:
        return
    if not t.armed and t.config.python_stacks and gdb.selected_inferior().pid:
        _check_python()
    try:
        notes = t.arm_new_modules()
    except Exception as exc:  # never break GDB's library loading
        gdb.write(f"sysbreak: could not arm new modules: {exc}\n", gdb.STDERR)
        return
    if not t.config.quiet:
        for note in notes:
            gdb.write(f"sysbreak: {note}\n")


def _on_stop(event: Any) -> None:
    t = tracer()
    if t is None or not t.active or not t.limit_reached:
        return
    n = t.disarm("max-events")
    gdb.write(
        f"sysbreak: reached --max-events {t.config.max_events}; removed {n} breakpoint(s). "
        "`continue` to resume the program.\n"
    )


def _on_exited(event: Any) -> None:
    t = tracer()
    if t is not None and t.active:
        t.disarm("exited")
        if not t.config.quiet:
            gdb.write(f"sysbreak: program exited; {t.events} call(s) caught\n")


def _on_gdb_exiting(event: Any) -> None:
    t = tracer()
    if t is not None and t.active:
        t.disarm("gdb-exit")
    if not param("detach-on-exit"):
        return
    for inf in gdb.inferiors():
        if inf.pid:
            try:
                gdb.execute(f"inferior {inf.num}", to_string=True)
                gdb.execute("detach", to_string=True)
            except gdb.error:
                pass


_REGISTERED = [False]


def register() -> None:
    if _REGISTERED[0]:
        return
    _REGISTERED[0] = True
    _register_params()
    SysbreakPrefix()
    BreakCommand()
    SitesCommand()
    StatusCommand()
    ClearCommand()
    gdb.events.new_objfile.connect(_on_new_objfile)
    gdb.events.stop.connect(_on_stop)
    gdb.events.exited.connect(_on_exited)
    if hasattr(gdb.events, "gdb_exiting"):
        gdb.events.gdb_exiting.connect(_on_gdb_exiting)
