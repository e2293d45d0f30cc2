"""The ``sysbreak`` GDB commands and ``set/show sysbreak`` parameters, and the GDB event hooks."""

from __future__ import annotations

import argparse
import contextlib
import glob
import json
import os
import re
import signal
from typing import Any

import gdb

from sysbreak import syscalls
from sysbreak.errors import SysbreakError
from sysbreak.gdb.tracer import Config, ExecGuard, Tracer

_TRACER: list[Tracer | None] = [None]


#: how the current tracer ended: (reason, breakpoints removed), None while it is armed
_ENDED: list[tuple[str, int] | None] = [None]


def tracer() -> Tracer | None:
    return _TRACER[0]


def _disarm(t: Tracer, reason: str) -> int:
    n = t.disarm(reason)
    if _ENDED[0] is None:
        _ENDED[0] = (reason, n)
    return n


def _ended_text(ended: tuple[str, int] | None) -> str:
    """How sysbreak stopped catching, in words: ``the program exited, so its 3 breakpoints went with it``."""
    if ended is None:
        return "sysbreak stopped catching"
    reason, n = ended
    texts = {
        "exited": f"the program exited, and its {n} breakpoint(s) went with it",
        "clear": f"`sysbreak clear` removed its {n} breakpoint(s)",
        "max-events": f"--max-events was reached and its {n} breakpoint(s) were removed",
        "gdb-exit": "GDB is exiting",
    }
    return texts.get(reason, f"it ended ({reason})")


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


def _show_value(value: Any) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, str):
        return f'"{value}"'
    return str(value)


class _SetPrefix(_Prefix):
    def invoke(self, arg: str, from_tty: bool) -> None:
        names = "|".join(_PARAMS)
        raise gdb.GdbError(f"set sysbreak: give a setting and a value: set sysbreak {names} VALUE (show sysbreak)")


class _ShowPrefix(_Prefix):
    def invoke(self, arg: str, from_tty: bool) -> None:
        if arg.strip():
            raise gdb.GdbError(f"show sysbreak: no setting {arg.strip()!r}; the settings are {', '.join(_PARAMS)}")
        width = max(len(n) for n in _PARAMS)
        for name, p in _PARAMS.items():
            gdb.write(f"sysbreak {name:<{width}}  {_show_value(p.value):<8}  {p.show_doc}\n")


def _register_params() -> None:
    _SetPrefix("set sysbreak", gdb.COMMAND_BREAKPOINTS, "Settings of sysbreak (see `show sysbreak`).")
    _ShowPrefix("show sysbreak", gdb.COMMAND_BREAKPOINTS, "Settings of sysbreak: `show sysbreak` lists them all.")
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
        (
            "emulate-step-over",
            gdb.PARAM_BOOLEAN,
            "Whether a breakpoint hit steps past its instruction by emulating it (one stop per hit) rather than by "
            "GDB's single-step (two stops).",
            os.environ.get("SYSBREAK_STEP_OVER", "emulate") != "gdb",
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
                     [--max-events N [--budget-file FILE]] [--restore-file FILE]
                                             arm breakpoints in every module, now and as libraries load
      sysbreak sites [SYSCALL...] [--lib REGEX] [--all] [--exhaustive]
                                             list the syscall sites and what `break` would do with each
      sysbreak status [--json [--brief]]     what is armed and what was caught
      sysbreak clear                         remove every sysbreak breakpoint and close the log

    Settings: set/show sysbreak quiet|max-depth|python-stacks|exhaustive|detach-on-exit|log|stack-cache|
    emulate-step-over;
    `show sysbreak` lists them all. Options and syscall names complete with TAB."""

    def __init__(self) -> None:
        super().__init__("sysbreak", gdb.COMMAND_BREAKPOINTS, prefix=True)

    def invoke(self, arg: str, from_tty: bool) -> None:
        words = arg.split()
        if words:
            raise gdb.GdbError(
                f"sysbreak: no command {words[0]!r}; the commands are break, sites, status and clear (help sysbreak)"
            )
        gdb.execute("help sysbreak", from_tty=from_tty)


# --------------------------------------------------------------------------------------------- completion
def _complete(text: str, word: str | None, options: dict[str, str | None], syscall_words: bool) -> Any:
    """Completions for ``text`` (the line after the command); GDB replaces ``word``, its last word by GDB's
    word-break characters (which cut ``--lib`` after the dashes).

    ``options`` maps each option to what follows it: None (a flag), "file", "lib" (a loaded module's name) or
    "value" (nothing to complete)."""
    word = word or ""
    tokens = text.split()
    token = "" if not tokens or text[-1:].isspace() else tokens[-1]
    before = tokens[:-1] if token else tokens
    wants = options.get(before[-1]) if before else None
    if wants == "value":
        return gdb.COMPLETE_NONE
    if wants == "file":  # by hand: GDB's filename completer gets only the part after the last '/'
        full = [p + ("/" if os.path.isdir(p) else "") for p in sorted(glob.glob(glob.escape(token) + "*"))]
    elif wants == "lib":
        names = {os.path.basename(o.filename) for o in gdb.objfiles() if o.filename}
        full = sorted(n for n in names if n.startswith(token))
    elif token.startswith("-") or not syscall_words:
        full = [o for o in options if o.startswith(token)]
    else:
        stem = token.rsplit(",", 1)[-1]
        head = token[: len(token) - len(stem)]
        full = [head + n for n in sorted(syscalls.X86_64) if n.startswith(stem)]
    cut = len(token) - len(word)
    return [c[cut:] for c in full if cut >= 0]


def _syscall_list(names: list[str]) -> list[int]:
    try:
        return syscalls.parse_list(names)
    except SysbreakError as err:
        raise gdb.GdbError(str(err)) from None


class BreakCommand(gdb.Command):
    """Arm sysbreak: catch SYSCALL... (default mmap munmap mremap brk) with full stacks.

    Usage: sysbreak break [SYSCALL...] [--lib REGEX] [--log FILE] [--python-stacks] [--exhaustive] [--quiet]
                          [--max-events N [--budget-file FILE]] [--restore-file FILE]

      SYSCALL        names or numbers, space or comma separated (mmap, 9, SYS_mmap)
      --lib REGEX    only place breakpoints in modules whose path matches REGEX (e.g. libucm)
      --log FILE     append every caught call as JSON Lines (format sysbreak-events/3) to FILE
      --python-stacks  also record CPython frames (needs CPython with debug info or a known layout)
      --exhaustive   also condition libc's generic syscall() wrapper itself: catches callers that cannot be seen
                     statically (function pointers, JIT) at the price of a stop for EVERY syscall() call
      --quiet        no line per caught call on the console
      --max-events N stop the inferior and remove the breakpoints after N calls
      --budget-file FILE  count --max-events in FILE (one byte appended per call), shared with the other GDBs
                     that name the same FILE: the N calls are of all their processes together
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
        p.add_argument("--budget-file")
        p.add_argument("--restore-file")
        self.parser = p

    OPTIONS: dict[str, str | None] = {
        "--lib": "lib",
        "--log": "file",
        "--python-stacks": None,
        "--exhaustive": None,
        "--quiet": None,
        "--max-events": "value",
        "--budget-file": "file",
        "--restore-file": "file",
    }

    def complete(self, text: str, word: str | None) -> Any:
        return _complete(text, word, self.OPTIONS, syscall_words=True)

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
        if ns.budget_file:
            try:
                open(os.path.expanduser(ns.budget_file), "a").close()
            except OSError as err:
                raise gdb.GdbError(
                    f"sysbreak break: cannot write the budget file {ns.budget_file}: {err.strerror}"
                ) from None
        config = Config(
            syscalls=_syscall_list(ns.syscalls),
            lib=ns.lib,
            log=log,
            python_stacks=bool(ns.python_stacks if ns.python_stacks is not None else param("python-stacks")),
            exhaustive=bool(ns.exhaustive if ns.exhaustive is not None else param("exhaustive")),
            quiet=bool(ns.quiet if ns.quiet is not None else param("quiet")),
            max_events=ns.max_events,
            budget_file=os.path.abspath(os.path.expanduser(ns.budget_file)) if ns.budget_file else None,
            restore_file=ns.restore_file,
            max_depth=int(param("max-depth")) or 64,
            stack_cache=bool(param("stack-cache")),
            # SYSBREAK_RELEASES=after: releases caught after they return, as before issue 8 (benchmarks compare)
            releases_before=os.environ.get("SYSBREAK_RELEASES", "before") != "after",
        )
        if not gdb.parameter("auto-solib-add"):
            # GDB loads no symbol files: it has no CFI to unwind with, so stacks are copied raw and unwound offline
            # (capture/rawstack.py), and new libraries are armed at GDB's solib-event stops (_on_stop)
            config.raw_stacks = True
        from sysbreak.gdb import probes

        probes.STEPLESS[0] = bool(param("emulate-step-over"))
        t = Tracer(config)
        _TRACER[0] = t
        _ENDED[0] = None
        if config.raw_stacks and _mi_async():
            # GDB/MI in async mode (sysbreak run/attach): a breakpoint on the dynamic linker's notification stops
            # the target when a library was loaded; the stop handler arms it and resumes (_on_stop). Not in the
            # CLI: resuming from a stop handler there crashed GDB 13 (measured: SIGSEGV in `continue`).
            t.solib_probe_wanted = True
        elif config.raw_stacks:
            gdb.write(
                "sysbreak: auto-solib-add is off: stacks are recorded raw (unwound when the log is read) and "
                "libraries loaded from now on are NOT armed; `sysbreak clear` and `sysbreak break` again after "
                "they load, or `set auto-solib-add on`\n",
                gdb.STDERR,
            )
        names = ", ".join(syscalls.name(n) for n in config.syscalls)
        if log:
            where = f"recording to {log}"
        elif config.quiet:
            where = "recording nowhere: no --log and --quiet (give --log FILE to keep the calls for `sysbreak report`)"
        else:
            where = "not recording to a file: calls are printed on the console only (--log FILE keeps them)"
        if gdb.selected_inferior().pid == 0:
            gdb.write(f"sysbreak: will catch {names} once the program runs; {where}\n")
            return
        if config.python_stacks:
            _check_python()
        for note in t.arm_new_modules():
            if not config.quiet:
                gdb.write(f"sysbreak: {note}\n")
        gdb.write(
            f"sysbreak: catching {names} with {t.breakpoint_count()} breakpoint(s) in {len(t.armed)} module(s); "
            f"{where}\n"
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

    OPTIONS: dict[str, str | None] = {"--lib": "lib", "--all": None, "--exhaustive": None}

    def complete(self, text: str, word: str | None) -> Any:
        return _complete(text, word, self.OPTIONS, syscall_words=True)

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
            if lib_re and not any(lib_re.search(path) for path, _base in mapped):
                loaded = ", ".join(os.path.basename(path) for path, _base in mapped)
                raise gdb.GdbError(
                    f"sysbreak sites: no module matching --lib {ns.lib!r} is loaded yet (loaded: {loaded}); "
                    "`sysbreak break --lib` arms it when it loads"
                )
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
            if lib_re and not lib_re.search(exe):
                raise gdb.GdbError(
                    f"sysbreak sites: no module matching --lib {ns.lib!r} is loaded yet: the program is not "
                    f"running, so only {os.path.basename(exe)} is known (`start` first, or `sysbreak break --lib` "
                    "arms it when it loads)"
                )
            try:
                modules.append((sites.scan(exe), None))
            except SysbreakError as err:
                raise gdb.GdbError(str(err)) from None
        gdb.write(sites.sites_table(modules, wanted, exhaustive=ns.exhaustive, show_all=ns.all))


class PrepareCommand(gdb.Command):
    """Do before attaching what arming would otherwise do with the target stopped.

    Usage: sysbreak prepare [PID] [--python-stacks]

    Imports sysbreak's modules and scans every ELF file mapped in process PID (scans are cached on disk by build
    id; the first scan of a large library takes seconds), so that `sysbreak break` after `attach PID` only
    looks them up. `sysbreak run`/`attach` run it before attaching; nothing here touches the process."""

    def __init__(self) -> None:
        super().__init__("sysbreak prepare", gdb.COMMAND_BREAKPOINTS)
        p = _ArgumentParser(prog="sysbreak prepare", add_help=False)
        p.add_argument("pid", nargs="?", type=int)
        p.add_argument("--python-stacks", action="store_true")
        self.parser = p

    def invoke(self, arg: str, from_tty: bool) -> None:
        import time

        from sysbreak import sites
        from sysbreak.capture import writer  # noqa: F401 - the modules a hit needs: imported now, not in the stop
        from sysbreak.sites.live import mapped_modules

        ns = _parse(self.parser, arg)
        if not ns.pid:
            return
        if ns.python_stacks:
            from sysbreak.gdb import pyframes

            pyframes.prepare(ns.pid)
        t = time.monotonic()
        try:
            mods = mapped_modules(ns.pid)
        except SysbreakError as err:  # not ours to read: the attach that follows says why, with its hint
            gdb.write(f"sysbreak: nothing scanned before attaching: {err}\n")
            return
        from sysbreak.gdb.elfsyms import dynamic_symbols
        from sysbreak.gdb.tracer import DYNAMIC_LINKER_SYMBOLS, is_dynamic_linker

        scanned = 0
        for path, _base in mods:
            try:
                sites.scan(path)
                scanned += 1
            except SysbreakError:
                continue
            if is_dynamic_linker(path):  # where the library-load breakpoint goes: found now, not in the stop
                with contextlib.suppress(Exception):
                    dynamic_symbols(path, DYNAMIC_LINKER_SYMBOLS)
        # A library dlopened later is scanned inside its stop when it is not cached: load the decoder now (capstone's
        # C library and its self-test, 5-10 ms), not then. (pyelftools is imported by dynamic_symbols above.)
        with contextlib.suppress(Exception):
            from sysbreak.elfscan import x86

            x86.engine()
        # The breakpoints placed at the attach plan their step-over emulation with capstone's Python binding
        # (sysbreak.emulate): imported here, not inside the attach's stop (0.15-0.5 s here, every architecture's
        # module; the loader no longer imports it at `source`).
        with contextlib.suppress(Exception):
            from sysbreak import emulate

            emulate.plan(b"\x90", 0)
        gdb.write(f"sysbreak: scanned {scanned} mapped file(s) of process {ns.pid} in {time.monotonic() - t:.2f} s\n")


class StatusCommand(gdb.Command):
    """Show what sysbreak has armed and caught.  Usage: sysbreak status [--json [--brief]]"""

    def __init__(self) -> None:
        super().__init__("sysbreak status", gdb.COMMAND_BREAKPOINTS)

    def invoke(self, arg: str, from_tty: bool) -> None:
        t = tracer()
        brief = arg.split() == ["--json", "--brief"]
        if brief:
            # what the driver asks at every stop it did not ask for (each library loaded): a few fields, not
            # the module list (writing that through GDB/MI took 6-12 ms, with the target stopped)
            short: dict[str, Any] = {"active": False, "armed": False}
            if t is not None:
                short = {"active": t.active, "events": t.events}
                if _ENDED[0] is not None:
                    short["ended"] = {"reason": _ENDED[0][0], "breakpoints_removed": _ENDED[0][1]}
            gdb.write(json.dumps(short) + "\n")
            return
        if arg.strip() not in ("", "--json"):
            raise gdb.GdbError(
                f"sysbreak status: unknown argument {arg.strip()!r} (usage: sysbreak status [--json [--brief]])"
            )
        if t is None:
            if arg.strip() == "--json":
                gdb.write(json.dumps({"active": False, "armed": False}) + "\n")
                return
            gdb.write("sysbreak: not armed (use `sysbreak break`)\n")
            return
        st = t.status()
        ended = _ENDED[0]
        if arg.strip() == "--json":
            if ended is not None:
                st["ended"] = {"reason": ended[0], "breakpoints_removed": ended[1]}
            gdb.write(json.dumps(st) + "\n")
            return
        counts = ", ".join(f"{k} {v}" for k, v in sorted(st["by_syscall"].items())) or "none"
        log = f"log: {st['log']}" if st["log"] else "no log (console only)"
        caught = f"{st['events']} call(s) caught ({counts}); {log}"
        if st["active"] and not st["modules"] and gdb.selected_inferior().pid == 0:
            gdb.write(
                f"sysbreak: armed, catching {', '.join(st['syscalls'])} ({st['mode']} mode); the breakpoints are "
                f"placed when the program runs; {log}\n"
            )
            return
        if st["active"]:
            gdb.write(
                f"sysbreak: armed, catching {', '.join(st['syscalls'])} ({st['mode']} mode) with "
                f"{st['breakpoints']} breakpoint(s) in {len(st['modules'])} module(s); {caught}\n"
            )
        else:
            gdb.write(f"sysbreak: not armed: {_ended_text(ended)}; {caught}\n")
            return
        for m in st["modules"]:
            if m["breakpoints"]:
                gdb.write(f"  {m['path']}: {m['breakpoints']} breakpoint(s), {m['sites']} site(s)\n")


class ClearCommand(gdb.Command):
    """Remove every breakpoint sysbreak placed (the original bytes come back) and close the log."""

    def __init__(self) -> None:
        super().__init__("sysbreak clear", gdb.COMMAND_BREAKPOINTS)

    def invoke(self, arg: str, from_tty: bool) -> None:
        t = tracer()
        if t is None:
            gdb.write("sysbreak: nothing to clear: `sysbreak break` was not used\n")
            return
        if not t.active:
            gdb.write(f"sysbreak: nothing to clear: {_ended_text(_ENDED[0])}; {t.events} call(s) caught\n")
            return
        n = _disarm(t, "clear")
        gdb.write(
            f"sysbreak: removed {n} breakpoint(s), the original bytes are back; {t.events} call(s) caught"
            + (f"; log closed: {t.config.log}" if t.config.log else "")
            + "\n"
        )


# --------------------------------------------------------------------------------------------- events
def _on_new_objfile(event: Any) -> None:
    t = tracer()
    if t is None or not t.active:
        return
    if not t.owns(gdb.selected_inferior()):
        return  # the new image of a vfork child held to its exec: its own GDB arms it
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


def _on_clear_objfiles(event: Any) -> None:
    """GDB drops a program space's symbols: on an exec of the traced process (same pid, new image). Also fired
    by `file`/`symbol-file` with the process alive and unchanged, which is not an exec: the executable then
    still is the one the tracer armed."""
    t = tracer()
    inf = gdb.selected_inferior()
    if t is None or not t.active or not t.armed:
        return
    if inf is None or not inf.pid or inf.pid != t.pid or event.progspace != inf.progspace:
        return
    if not _image_changed(t, inf.pid):
        return
    try:
        note = t.on_exec()
    except Exception as exc:  # never break GDB's exec handling
        gdb.write(f"sysbreak: could not follow the exec: {exc}\n", gdb.STDERR)
        return
    if not t.config.quiet:
        gdb.write(f"sysbreak: {note}\n")


def _image_changed(t: Tracer, pid: int) -> bool:
    """Whether a module armed is not mapped where it was armed any more: right after an exec only the new
    executable and ld.so are mapped (even a re-exec of the same file at the same addresses has lost libc)."""
    from sysbreak.gdb.tracer import read_maps

    try:
        mapped = {(row[4], row[0]) for row in read_maps(pid)}
    except SysbreakError:
        return True
    return not all((m.path, m.base) in mapped for m in t.armed.values())


def _mi_async() -> bool:
    try:
        return bool(gdb.parameter("mi-async"))
    except (gdb.error, RuntimeError):
        return False


def _is_solib_stop(t: Tracer, event: Any) -> bool:
    """A stop of the tracer's own library-load breakpoint (:class:`sysbreak.gdb.tracer.SolibProbe`)."""
    if t.solib_probe is None or not isinstance(event, gdb.BreakpointEvent):
        return False
    return any(bp is t.solib_probe for bp in event.breakpoints)


def _resume_after_solib() -> None:
    t = tracer()
    if t is None or not t.active:
        return  # cleared meanwhile: whoever cleared it decides what happens next
    try:
        gdb.execute("continue", to_string=True)
    except gdb.error as exc:  # already running (someone else resumed it), or gone
        if "running" not in str(exc) and "not being run" not in str(exc):
            gdb.write(f"sysbreak: could not resume after a library event: {exc}\n", gdb.STDERR)


def _on_stop(event: Any) -> None:
    t = tracer()
    if t is not None and t.active and _is_exec_guard_stop(t, event):
        # a vfork child held by this GDB enters execve: out with every breakpoint (GDB would insert them into its
        # new image), then one instruction: the exec (the driver's `catch exec` stop) or a failed execve's return
        t.set_enabled(False)
        thread = getattr(event, "inferior_thread", None) or gdb.selected_thread()
        gdb.post_event(lambda: _step_into_exec(thread))
        return
    if t is not None and t.active and not t.limit_reached and _is_solib_stop(t, event):
        # a library was (un)loaded: arm what is new while the target is stopped at the dynamic linker's
        # notification (before the library's initialisers run), then let it go on at once
        if t.maps_changed():
            try:
                notes = t.arm_new_modules()
            except Exception as exc:  # never leave the target stopped over it
                notes = [f"could not arm new modules: {exc}"]
            if not t.config.quiet:
                for note in notes:
                    gdb.write(f"sysbreak: {note}\n")
            if t.config.python_stacks:  # a libpython loaded now may make Python frames readable
                from sysbreak.gdb import pyframes

                pyframes._retry_failed()
        gdb.post_event(_resume_after_solib)
        return
    if t is None or not t.active or not t.limit_reached:
        return
    n = _disarm(t, "max-events")
    gdb.write(
        f"sysbreak: reached --max-events {t.config.max_events}; removed {n} breakpoint(s). "
        "`continue` to resume the program.\n"
    )


def _on_exited(event: Any) -> None:
    t = tracer()
    inf = getattr(event, "inferior", None)
    if t is not None and t.inferior_num and inf is not None and inf.num != t.inferior_num:
        return  # a vfork child held to its exec ended before it (driver/session.py): not the traced process
    if t is not None and t.active:
        n = _disarm(t, "exited")
        if not t.config.quiet:
            gdb.write(
                f"sysbreak: the program exited; its {n} breakpoint(s) are gone with it; {t.events} call(s) caught"
                + (f", log closed: {t.config.log}" if t.config.log else "")
                + "\n"
            )


class ProbesCommand(gdb.Command):
    """Take every breakpoint sysbreak placed out of the program for a moment, or put them back.

    Usage: sysbreak probes off|on. They stay placed (status lists them); calls made while they are off are not
    caught. `sysbreak run --follow-children` turns them off while a vfork child it holds enters execve (GDB would
    otherwise insert them into the child's new image) and on again at once."""

    def __init__(self) -> None:
        super().__init__("sysbreak probes", gdb.COMMAND_BREAKPOINTS)

    def invoke(self, arg: str, from_tty: bool) -> None:
        word = arg.strip()
        if word not in ("on", "off"):
            raise gdb.GdbError("sysbreak probes: say on or off (usage: sysbreak probes off|on)")
        t = tracer()
        if t is None or not t.active:
            gdb.write("sysbreak: no breakpoints placed\n")
            return
        n = t.set_enabled(word == "on")
        gdb.write(f"sysbreak: {n} breakpoint(s) {'back in' if word == 'on' else 'taken out'}\n")


class ExecGuardCommand(gdb.Command):
    """Stop thread TID when it is about to execve, or stop watching for that.

    Usage: sysbreak exec-guard TID | sysbreak exec-guard off. `sysbreak run --follow-children` uses it while this
    GDB holds a vfork child: at its execve every breakpoint is taken out (`sysbreak probes off`) and the child is
    stepped through the syscall; the driver hands it over at the exec, or puts them back if the execve failed."""

    def __init__(self) -> None:
        super().__init__("sysbreak exec-guard", gdb.COMMAND_BREAKPOINTS)

    def invoke(self, arg: str, from_tty: bool) -> None:
        t = tracer()
        word = arg.strip()
        if t is None or not t.active:
            gdb.write("sysbreak: no breakpoints placed\n")
            return
        if word == "off":
            t.unguard_exec()
            return
        n = t.guard_exec(_pid_arg("sysbreak exec-guard", word))
        gdb.write(f"sysbreak: {n} exec guard(s) placed\n")


#: vfork children kept (sysbreak vfork keep): pid -> the number of the `catch exec` made for it
_VFORK: dict[int, int | None] = {}


class VforkCommand(gdb.Command):
    """Keep a vfork child in this GDB from its vfork to its exec, and let it go; one command per step, so that the
    parent (and the child) wait for one GDB command at each, not ten.

    Usage: sysbreak vfork keep PID     at the vfork stop: catch its exec, guard its execve (sysbreak exec-guard),
                                       step it in place, and have the next resume follow it (detach-on-fork off,
                                       follow-fork-mode child)
           sysbreak vfork kept         after that resume: fork settings back to the usual
           sysbreak vfork drop PID [--exec|--detach]
                                       back to one inferior: --exec holds it (as sysbreak hold) and detaches it at
                                       its exec; --detach detaches it as it is; neither: it has ended. Then the
                                       parent is selected, the child's inferior and catchpoint removed, the
                                       breakpoints on again."""

    def __init__(self) -> None:
        super().__init__("sysbreak vfork", gdb.COMMAND_RUNNING)

    def invoke(self, arg: str, from_tty: bool) -> None:
        words = gdb.string_to_argv(arg)
        if words == ["kept"]:
            gdb.execute("set detach-on-fork on", to_string=True)
            gdb.execute("set follow-fork-mode parent", to_string=True)
            return
        if len(words) < 2 or words[0] not in ("keep", "drop"):
            raise gdb.GdbError("usage: sysbreak vfork keep PID | kept | drop PID [--exec|--detach]")
        pid = _pid_arg("sysbreak vfork", words[1])
        t = tracer()
        if words[0] == "keep":
            out = gdb.execute("catch exec", to_string=True)
            found = re.search(r"Catchpoint (\d+)", out)
            _VFORK[pid] = int(found.group(1)) if found else None
            if t is not None and t.active:
                t.guard_exec(pid)
            # stepped over the exec guards (ON syscall instructions) in place: a syscall stepped out of line
            # returns with the scratch pad's address in rcx, which the probes after it read as "not a return"
            gdb.execute("set displaced-stepping off", to_string=True)
            gdb.execute("set detach-on-fork off", to_string=True)
            gdb.execute("set follow-fork-mode child", to_string=True)
            return
        how = words[2] if len(words) > 2 else ""
        if how == "--exec":
            try:
                os.kill(pid, signal.SIGSTOP)  # taken the moment it is let go: before one instruction of the image
                _HELD.add(pid)
            except OSError as err:
                gdb.write(f"sysbreak: cannot hold process {pid}: {err.strerror}; it runs on untraced\n")
        others = [i for i in gdb.inferiors() if i.num != 1 and i.pid in (pid, 0)]
        for inf in others:
            if how and inf.pid:
                with contextlib.suppress(gdb.error):
                    gdb.execute(f"detach inferiors {inf.num}", to_string=True)
        gdb.execute("inferior 1", to_string=True)
        for inf in others:
            with contextlib.suppress(gdb.error):
                gdb.execute(f"remove-inferiors {inf.num}", to_string=True)
        catch = _VFORK.pop(pid, None)
        if catch is not None:
            with contextlib.suppress(gdb.error):
                gdb.execute(f"delete {catch}", to_string=True)
        gdb.execute("set displaced-stepping auto", to_string=True)
        if t is not None and t.active:
            t.unguard_exec()
            t.set_enabled(True)  # out since the exec guard's stop, if there was one


def _is_exec_guard_stop(t: Tracer, event: Any) -> bool:
    if not t.exec_guards or not isinstance(event, gdb.BreakpointEvent):
        return False
    return any(isinstance(bp, ExecGuard) for bp in event.breakpoints)


def _step_into_exec(thread: Any) -> None:
    try:
        if thread is not None and thread.is_valid():
            thread.switch()  # in non-stop mode the selected thread may be another (running) one
        gdb.execute("stepi", to_string=True)
    except gdb.error as exc:
        gdb.write(f"sysbreak: could not step into execve: {exc}\n", gdb.STDERR)


# Processes `sysbreak hold` stopped for a hand-over to another tracer (a child to follow): if GDB exits before
# `sysbreak release` (sysbreak killed, say), they are sent SIGCONT, so that none stays stopped.
_HELD: set[int] = set()


class HoldCommand(gdb.Command):
    """Stop process PID with SIGSTOP until `sysbreak release PID`, or until GDB exits (SIGCONT then).

    Usage: sysbreak hold PID. `sysbreak run --follow-children` uses it at a fork: the child, which GDB is about to
    detach, stays stopped before its first instruction until its own GDB has attached."""

    def __init__(self) -> None:
        super().__init__("sysbreak hold", gdb.COMMAND_RUNNING)

    def invoke(self, arg: str, from_tty: bool) -> None:
        pid = _pid_arg("sysbreak hold", arg)
        try:
            os.kill(pid, signal.SIGSTOP)
        except OSError as err:
            raise gdb.GdbError(f"sysbreak hold: cannot stop process {pid}: {err.strerror}") from None
        _HELD.add(pid)


class ReleaseCommand(gdb.Command):
    """Forget a process `sysbreak hold` stopped (its new tracer has it); with --cont, also send it SIGCONT."""

    def __init__(self) -> None:
        super().__init__("sysbreak release", gdb.COMMAND_RUNNING)

    def invoke(self, arg: str, from_tty: bool) -> None:
        words = gdb.string_to_argv(arg)
        cont = "--cont" in words
        pid = _pid_arg("sysbreak release", " ".join(w for w in words if w != "--cont"))
        _HELD.discard(pid)
        if cont:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGCONT)


def _pid_arg(cmd: str, arg: str) -> int:
    try:
        pid = int(arg.strip())
    except ValueError:
        raise gdb.GdbError(f"{cmd}: give a process id, e.g. {cmd} 4242") from None
    if pid <= 0:
        raise gdb.GdbError(f"{cmd}: {pid} is not a process id")
    return pid


def _release_held() -> None:
    for pid in sorted(_HELD):
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGCONT)
    _HELD.clear()


def _on_gdb_exiting(event: Any) -> None:
    _release_held()
    t = tracer()
    if t is not None and t.active:
        _disarm(t, "gdb-exit")
    if not param("detach-on-exit"):
        return
    # the highest first: a vfork child the driver holds (inferior 2) before the parent it shares memory with
    for inf in sorted(gdb.inferiors(), key=lambda i: -i.num):
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
    PrepareCommand()
    StatusCommand()
    ClearCommand()
    HoldCommand()
    ReleaseCommand()
    ProbesCommand()
    ExecGuardCommand()
    VforkCommand()
    gdb.events.new_objfile.connect(_on_new_objfile)
    gdb.events.stop.connect(_on_stop)
    gdb.events.clear_objfiles.connect(_on_clear_objfiles)
    gdb.events.exited.connect(_on_exited)
    if hasattr(gdb.events, "gdb_exiting"):
        gdb.events.gdb_exiting.connect(_on_gdb_exiting)
