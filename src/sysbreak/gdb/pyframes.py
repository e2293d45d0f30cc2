"""CPython 3.11 frames of the thread that hit a breakpoint (``--python-stacks``), read from the inferior's memory.

How: CPython 3.11 keeps, per thread, a chain of ``_PyInterpreterFrame`` (``previous``, ``f_code``, ``prev_instr``)
that starts at ``tstate->cframe->current_frame``; one C-level ``_PyEval_EvalFrameDefault`` runs a run of them
(the last of each run has ``is_entry`` set). The thread state of the thread that hit the breakpoint is found by
its kernel thread id (``native_thread_id``) among the thread states of ``_PyRuntime`` (an exported symbol), so
the whole Python stack of that thread is read, however deep the native unwinding went. A frame's line is the
code object's location table (``co_linetable``, the 3.11 format) looked up at ``prev_instr`` (the instruction
being executed: the call that led to the system call).

Structure offsets come from the DWARF type info when GDB has it (a debug build, or the release interpreter with
its debug symbols: Debian's ``python3.11-dbg`` ships both), else from the built-in CPython 3.11 table below,
which was checked equal to the DWARF of Debian's 3.11.2 release and debug builds and of a 3.11.7 built from
source. Either way every code, str and bytes object read is checked against its type object (``PyCode_Type``,
``PyUnicode_Type``, ``PyBytes_Type``, exported symbols): a layout that does not fit stops the walk rather than
producing garbage names. :func:`describe` says which of the two is used.

Speed: per call, 3 memory reads (the thread state, its ``cframe``, and the top 8 KiB of the thread's data stack,
which holds the frames of nested calls) plus one per distinct code object on the stack (its header, to check
that the cache entry for that address is still that code object) and one per frame outside the data stack
(generators); file and function names and the decoded line table are cached per code object.

Nothing here resumes the inferior or touches breakpoints (see :mod:`sysbreak.gdb.probes`), nothing writes to
the console and :func:`python_frames` never raises. The line-table and string decoders are plain functions,
testable without GDB.
"""

from __future__ import annotations

import bisect
import contextlib
import struct
from dataclasses import dataclass, field
from typing import Any

try:
    import gdb  # type: ignore[import-not-found, unused-ignore]
except ImportError:  # outside GDB: only the pure decoders below are usable
    gdb = None

EVAL_FRAME = "_PyEval_EvalFrameDefault"
SUPPORTED = (3, 11)
MAX_PYTHON_FRAMES = 256  # deeper stacks keep their innermost frames
MAX_THREADS = 65536
FRAME_WINDOW = 8192  # bytes of the data stack read at once: the innermost frames
MAX_STR_CHARS = 4096
MAX_LINETABLE_BYTES = 1 << 20
CODE_CACHE_LIMIT = 65536

# ---------------------------------------------------------------------------------------- pure decoders

# Built-in layout of CPython 3.11 on x86-64 (byte offsets), the same as `ptype/o` shows with debug info.
BUILTIN_311: dict[str, int] = {
    "ob_type": 8,  # PyObject
    "ob_size": 16,  # PyVarObject
    # struct _PyInterpreterFrame
    "frame.f_code": 32,
    "frame.previous": 48,
    "frame.prev_instr": 56,
    # PyCodeObject
    "code.co_firstlineno": 72,
    "code.co_filename": 112,
    "code.co_name": 120,
    "code.co_qualname": 128,
    "code.co_linetable": 136,
    "code.co_code_adaptive": 184,
    # PyThreadState, _PyCFrame
    "tstate.next": 8,
    "tstate.cframe": 56,
    "tstate.native_thread_id": 160,
    "tstate.datastack_chunk": 296,
    "tstate.datastack_top": 304,
    "chunk.data": 24,  # _PyStackChunk
    "cframe.current_frame": 8,
    # _PyRuntimeState, PyInterpreterState
    "runtime.tstate_current": 0x240,
    "runtime.interpreters_head": 0x28,
    "interp.next": 0,
    "interp.threads_head": 0x10,
    # PyASCIIObject, PyCompactUnicodeObject, PyBytesObject
    "str.length": 16,
    "str.state": 32,
    "str.state_kind_bit": 2,
    "str.state_compact_bit": 5,
    "str.state_ascii_bit": 6,
    "str.ascii_size": 48,
    "str.compact_size": 72,
    "bytes.ob_sval": 32,
}


def _varint(table: bytes, i: int) -> tuple[int, int]:
    """An unsigned varint of the 3.11 location table (6-bit chunks, low first, 0x40 = more): (value, next i)."""
    b = table[i]
    i += 1
    val = b & 63
    shift = 0
    while b & 64:
        b = table[i]
        i += 1
        shift += 6
        val |= (b & 63) << shift
    return val, i


def _svarint(table: bytes, i: int) -> tuple[int, int]:
    uval, i = _varint(table, i)
    return (-(uval >> 1) if uval & 1 else uval >> 1), i


def decode_linetable(table: bytes, firstlineno: int) -> tuple[list[int], list[int | None]]:
    """Decode a CPython 3.11 ``co_linetable`` into ``(starts, lines)``: entry k covers the code units from
    ``starts[k]`` up to ``starts[k + 1]`` (the last one up to ``starts[-1]``, the end marker, with line None) and
    is on line ``lines[k]`` (None for "no location"). Lines are those of ``code.co_lines()``."""
    starts: list[int] = []
    lines: list[int | None] = []
    line = firstlineno
    pos = 0
    i = 0
    n = len(table)
    while i < n:
        first = table[i]
        if not first & 0x80:  # not the start of an entry: corrupt table, stop here
            break
        code = (first >> 3) & 15
        length = (first & 7) + 1
        if code in (13, 14):  # no-column form / long form: signed line delta first
            delta, _ = _svarint(table, i + 1)
            line += delta
        elif 10 <= code <= 12:  # one-line forms
            line += code - 10
        starts.append(pos)
        lines.append(None if code == 15 else line)
        pos += length
        i += 1
        while i < n and not table[i] & 0x80:  # skip the entry's other bytes (columns, end line)
            i += 1
    starts.append(pos)
    lines.append(None)
    return starts, lines


def line_at(starts: list[int], lines: list[int | None], firstlineno: int, unit: int) -> int | None:
    """The line of code unit ``unit`` (``PyCode_Addr2Line``: before the first instruction is the def line)."""
    if unit < 0:
        return firstlineno
    k = bisect.bisect_right(starts, unit) - 1
    return lines[k] if k >= 0 else None


def decode_str(kind: int, ascii_: bool, data: bytes) -> str:
    """The text of a compact ``str`` object's data (kind 1, 2 or 4 bytes a character)."""
    if ascii_:
        return data.decode("ascii", "replace")
    if kind == 1:
        return data.decode("latin-1")
    if kind == 2:
        return data.decode("utf-16-le", "replace")
    return data.decode("utf-32-le", "replace")


# ---------------------------------------------------------------------------------------- the inferior


class _Unavailable(Exception):
    """Python frames cannot be read; the message says why (one line)."""


@dataclass
class _State:
    """What was found about the inferior's CPython, resolved once per process."""

    key: tuple[int, int]
    where: str  # the file holding CPython
    version: str
    source: str  # "debug info" or "built-in CPython 3.11 offsets"
    off: dict[str, int]
    runtime: int
    code_type: int
    str_type: int
    bytes_type: int
    tstate_struct: struct.Struct
    cframe_at: int
    chunk_data: int
    frame_struct: struct.Struct
    code_struct: struct.Struct
    code_base: int  # offset of co_code_adaptive
    tstates: dict[int, int] = field(default_factory=dict)  # kernel tid -> PyThreadState address
    codes: dict[int, tuple[tuple[int, ...], tuple[str, str, int, list[int], list[int | None]]]] = field(
        default_factory=dict
    )


def _struct_for(fields: list[tuple[int, str]]) -> struct.Struct:
    """A little-endian Struct that unpacks the given (offset, format char) fields, which must come in order of
    offset (the order of the 3.11 layout; a build whose debug info says otherwise is not read)."""
    fmt = "<"
    pos = 0
    for off, ch in fields:
        if off < pos:
            raise _Unavailable(f"unexpected CPython structure layout (a field at offset {off})")
        if off > pos:
            fmt += f"{off - pos}x"
        fmt += ch
        pos = off + struct.calcsize("<" + ch)
    return struct.Struct(fmt)


_ELF_NAMES = ("_PyRuntime", "Py_Version", "PyCode_Type", "PyUnicode_Type", "PyBytes_Type", "_Py_PrintReferences")
_ELF_SYMBOLS: dict[int, dict[str, int]] = {}  # pid -> address of each of _ELF_NAMES found in the mapped files


def _is_cpython_file(path: str) -> bool:
    base = path.rsplit("/", 1)[-1]
    return base.startswith(("libpython", "python"))


def _elf_symbols(pid: int) -> dict[str, int]:
    """The addresses of :data:`_ELF_NAMES` from the dynamic symbol tables of the CPython file mapped in ``pid``
    (found through its GNU hash table with pyelftools: milliseconds), for when GDB has loaded no symbol files
    (``set auto-solib-add off``). CPython exports all of them for its extension modules."""
    cached = _ELF_SYMBOLS.get(pid)
    if cached is not None:
        return cached
    got: dict[str, int] = {}
    from sysbreak import sites
    from sysbreak.gdb.elfsyms import dynamic_symbols
    from sysbreak.sites.live import mapped_modules

    try:
        mods = mapped_modules(pid)
    except Exception:  # noqa: BLE001 - no maps: no symbols
        mods = []
    for path, base in mods:
        if base is None or not _is_cpython_file(path):
            continue
        try:
            bias = sites.scan(path).load_bias(base)
            got = {name: value + bias for name, value in dynamic_symbols(path, _ELF_NAMES).items()}
        except Exception:  # noqa: BLE001 - an unreadable file: try the next
            continue
        if "_PyRuntime" in got:
            break
    if "_PyRuntime" in got:  # a miss is looked for again once more libraries are loaded (_retry_failed)
        _ELF_SYMBOLS[pid] = got
    return got


def prepare(pid: int) -> None:
    """Find CPython's symbols in process ``pid`` now (before an attach), not in the first stop that needs them."""
    _elf_symbols(pid)


def _addr_of(name: str) -> int | None:
    pid = int(gdb.selected_inferior().pid) if name in _ELF_NAMES else 0
    if pid and not gdb.parameter("auto-solib-add"):  # GDB has no symbol files: the ELF tables answer
        try:
            found = _elf_symbols(pid)
        except ImportError:
            found = {}
        if name in found or "_PyRuntime" in found:
            return found.get(name)
    try:
        return int(gdb.parse_and_eval(f"(unsigned long)&{name}"))
    except gdb.error:
        return None


def _where(addr: int) -> str:
    try:
        lib = gdb.solib_name(addr)
    except gdb.error:
        lib = None
    if lib:
        return str(lib)
    prog = gdb.current_progspace()
    return str(prog.filename) if prog is not None and prog.filename else "the executable"


def _dwarf_offsets() -> dict[str, int] | None:
    """The offsets of BUILTIN_311's fields from the DWARF type info GDB has, or None when it has none."""

    def ty(*names: str) -> Any:
        for name in names:
            try:
                return gdb.lookup_type(name).strip_typedefs()
            except gdb.error:
                continue
        raise LookupError(names[0])

    def off(t: Any, path: str) -> int:
        total = 0
        for part in path.split("."):
            for f in t.fields():
                if f.name == part:
                    total += f.bitpos
                    t = f.type.strip_typedefs()
                    break
            else:
                raise LookupError(path)
        if total % 8:
            raise LookupError(path)
        return total // 8

    def bit(t: Any, path: str, name: str) -> int:
        sub = ty_field(t, path)
        for f in sub.fields():
            if f.name == name:
                return int(f.bitpos)
        raise LookupError(name)

    def ty_field(t: Any, path: str) -> Any:
        for f in t.fields():
            if f.name == path:
                return f.type.strip_typedefs()
        raise LookupError(path)

    try:
        frame = ty("struct _PyInterpreterFrame")
        code = ty("PyCodeObject", "struct PyCodeObject")
        tstate = ty("PyThreadState", "struct _ts")
        chunk = ty("_PyStackChunk", "struct _stack_chunk")
        cframe = ty("_PyCFrame", "struct _PyCFrame")
        interp = ty("PyInterpreterState", "struct _is")
        runtime = ty("_PyRuntimeState", "struct pyruntimestate")
        ascii_ = ty("PyASCIIObject")
        compact = ty("PyCompactUnicodeObject")
        bytes_ = ty("PyBytesObject")
        varobj = ty("PyVarObject")
        obj = ty("PyObject", "struct _object")
        return {
            "ob_type": off(obj, "ob_type"),
            "ob_size": off(varobj, "ob_size"),
            "frame.f_code": off(frame, "f_code"),
            "frame.previous": off(frame, "previous"),
            "frame.prev_instr": off(frame, "prev_instr"),
            "code.co_firstlineno": off(code, "co_firstlineno"),
            "code.co_filename": off(code, "co_filename"),
            "code.co_name": off(code, "co_name"),
            "code.co_qualname": off(code, "co_qualname"),
            "code.co_linetable": off(code, "co_linetable"),
            "code.co_code_adaptive": off(code, "co_code_adaptive"),
            "tstate.next": off(tstate, "next"),
            "tstate.cframe": off(tstate, "cframe"),
            "tstate.native_thread_id": off(tstate, "native_thread_id"),
            "tstate.datastack_chunk": off(tstate, "datastack_chunk"),
            "tstate.datastack_top": off(tstate, "datastack_top"),
            "chunk.data": off(chunk, "data"),
            "cframe.current_frame": off(cframe, "current_frame"),
            "runtime.tstate_current": off(runtime, "gilstate.tstate_current"),
            "runtime.interpreters_head": off(runtime, "interpreters.head"),
            "interp.next": off(interp, "next"),
            "interp.threads_head": off(interp, "threads.head"),
            "str.length": off(ascii_, "length"),
            "str.state": off(ascii_, "state"),
            "str.state_kind_bit": bit(ascii_, "state", "kind"),
            "str.state_compact_bit": bit(ascii_, "state", "compact"),
            "str.state_ascii_bit": bit(ascii_, "state", "ascii"),
            "str.ascii_size": int(ascii_.sizeof),
            "str.compact_size": int(compact.sizeof),
            "bytes.ob_sval": off(bytes_, "ob_sval"),
        }
    except (LookupError, gdb.error, AttributeError, TypeError):
        return None


def _resolve(prefer_debug_info: bool = True) -> _State:
    inf = gdb.selected_inferior()
    runtime = _addr_of("_PyRuntime")
    if runtime is None:
        raise _Unavailable(
            "the inferior is not CPython (no _PyRuntime symbol in the executable or its loaded libraries)"
            + ("" if inf.pid else "; a libpython is only seen once the program runs")
        )
    where = _where(runtime)
    vaddr = _addr_of("Py_Version")
    if vaddr is None:
        raise _Unavailable(
            f"CPython older than 3.11 found in {where}; sysbreak reads Python frames of CPython 3.11 only"
        )
    hexversion = struct.unpack("<I", bytes(inf.read_memory(vaddr, 4)))[0]
    major, minor, micro = hexversion >> 24, (hexversion >> 16) & 255, (hexversion >> 8) & 255
    version = f"{major}.{minor}.{micro}"
    if (major, minor) != SUPPORTED:
        raise _Unavailable(f"CPython {version} found in {where}; sysbreak reads Python frames of CPython 3.11 only")
    types = {name: _addr_of(name) for name in ("PyCode_Type", "PyUnicode_Type", "PyBytes_Type")}
    missing = [name for name, addr in types.items() if addr is None]
    if missing:
        raise _Unavailable(f"CPython {version} found in {where} but without the symbol {missing[0]}")
    off = _dwarf_offsets() if prefer_debug_info else None
    if off is not None:
        source = "debug info"
    elif _addr_of("_Py_PrintReferences") is not None:  # Py_TRACE_REFS: every object header is 16 bytes longer
        raise _Unavailable(
            f"CPython {version} in {where} is a Py_TRACE_REFS build and GDB has no debug info for it: "
            f"install its debug symbols (Debian: python{major}.{minor}-dbg)"
        )
    else:
        off = dict(BUILTIN_311)
        source = f"built-in CPython {major}.{minor} offsets (no debug info)"
    return _State(
        key=(int(inf.num), int(inf.pid)),
        where=where,
        version=version,
        source=source,
        off=off,
        runtime=runtime,
        code_type=int(types["PyCode_Type"] or 0),
        str_type=int(types["PyUnicode_Type"] or 0),
        bytes_type=int(types["PyBytes_Type"] or 0),
        tstate_struct=_struct_for(
            [
                (off["tstate.next"], "Q"),
                (off["tstate.cframe"], "Q"),
                (off["tstate.native_thread_id"], "Q"),
                (off["tstate.datastack_chunk"], "Q"),
                (off["tstate.datastack_top"], "Q"),
            ]
        ),
        cframe_at=off["cframe.current_frame"],
        chunk_data=off["chunk.data"],
        frame_struct=_struct_for(
            [(off["frame.f_code"], "Q"), (off["frame.previous"], "Q"), (off["frame.prev_instr"], "Q")]
        ),
        code_struct=_struct_for(
            [
                (off["ob_type"], "Q"),
                (off["code.co_firstlineno"], "i"),
                (off["code.co_filename"], "Q"),
                (off["code.co_name"], "Q"),
                (off["code.co_qualname"], "Q"),
                (off["code.co_linetable"], "Q"),
            ]
        ),
        code_base=off["code.co_code_adaptive"],
    )


_STATE: list[_State | None] = [None]
_FAILED: dict[tuple[int, int], str] = {}  # per (inferior, pid): why not, until new objfiles are loaded


def _reset(*_: Any) -> None:
    _STATE[0] = None
    _FAILED.clear()


def _retry_failed(*_: Any) -> None:
    _FAILED.clear()


def _state(prefer_debug_info: bool = True) -> _State:
    inf = gdb.selected_inferior()
    key = (int(inf.num), int(inf.pid))
    st = _STATE[0]
    if st is not None and st.key == key:
        return st
    why = _FAILED.get(key)
    if why is not None:
        raise _Unavailable(why)
    try:
        st = _resolve(prefer_debug_info)
    except _Unavailable as exc:
        _FAILED[key] = str(exc)
        raise
    _STATE[0] = st
    return st


if gdb is not None:
    gdb.events.new_objfile.connect(_retry_failed)  # a libpython loaded later may make it work
    gdb.events.clear_objfiles.connect(_reset)  # a new program


# ---------------------------------------------------------------------------------------- reading


def _u64(inf: Any, addr: int) -> int:
    return int(struct.unpack("<Q", inf.read_memory(addr, 8))[0])


def _read_str(st: _State, inf: Any, addr: int) -> str:
    off = st.off
    head = bytes(inf.read_memory(addr, off["str.ascii_size"]))
    (ob_type,) = struct.unpack_from("<Q", head, off["ob_type"])
    if ob_type != st.str_type:
        return "?"
    (length,) = struct.unpack_from("<q", head, off["str.length"])
    (state,) = struct.unpack_from("<I", head, off["str.state"])
    kind = (state >> off["str.state_kind_bit"]) & 7
    compact = (state >> off["str.state_compact_bit"]) & 1
    ascii_ = bool((state >> off["str.state_ascii_bit"]) & 1)
    if not compact or kind not in (1, 2, 4) or length < 0:
        return "?"
    length = min(length, MAX_STR_CHARS)
    data_at = addr + (off["str.ascii_size"] if ascii_ else off["str.compact_size"])
    return decode_str(kind, ascii_, bytes(inf.read_memory(data_at, length * kind)) if length else b"")


def _read_bytes(st: _State, inf: Any, addr: int) -> bytes:
    off = st.off
    head = bytes(inf.read_memory(addr, off["bytes.ob_sval"]))
    (ob_type,) = struct.unpack_from("<Q", head, off["ob_type"])
    (size,) = struct.unpack_from("<q", head, off["ob_size"])
    if ob_type != st.bytes_type or not 0 <= size <= MAX_LINETABLE_BYTES:
        return b""
    return bytes(inf.read_memory(addr + off["bytes.ob_sval"], size)) if size else b""


def _find_tstate(st: _State, inf: Any, tid: int) -> tuple[int, ...] | None:
    """The (next, cframe, native_thread_id, datastack_chunk, datastack_top) of kernel thread ``tid``'s
    PyThreadState (None when it has none), found by its native_thread_id; the address is cached per thread."""
    ts_struct = st.tstate_struct
    cached = st.tstates.get(tid)
    if cached:
        fields = ts_struct.unpack_from(inf.read_memory(cached, ts_struct.size))
        if fields[2] == tid:
            return tuple(fields)
    off = st.off
    current = _u64(inf, st.runtime + off["runtime.tstate_current"])
    candidates = [current] if current and current != cached else []
    seen = 0
    interp = _u64(inf, st.runtime + off["runtime.interpreters_head"])
    while True:
        for ts in candidates:
            fields = ts_struct.unpack_from(inf.read_memory(ts, ts_struct.size))
            if fields[2] == tid:
                st.tstates[tid] = ts
                return tuple(fields)
        if not interp or seen >= MAX_THREADS:
            return None
        # the next interpreter's thread states, in list order
        candidates = []
        ts = _u64(inf, interp + off["interp.threads_head"])
        while ts and seen < MAX_THREADS:
            seen += 1
            candidates.append(ts)
            ts = _u64(inf, ts + off["tstate.next"])
        interp = _u64(inf, interp + off["interp.next"])
        seen += 1


def _code_info(st: _State, inf: Any, code: int) -> tuple[str, str, int, list[int], list[int | None]] | None:
    cs = st.code_struct
    sig = cs.unpack_from(inf.read_memory(code, cs.size))
    cached = st.codes.get(code)
    if cached is not None and cached[0] == sig:
        return cached[1]
    ob_type, firstlineno, filename, name, qualname, linetable = sig
    if ob_type != st.code_type:
        return None
    starts, lines = decode_linetable(_read_bytes(st, inf, linetable), firstlineno)
    info = (_read_str(st, inf, filename), _read_str(st, inf, qualname or name), firstlineno, starts, lines)
    if len(st.codes) >= CODE_CACHE_LIMIT:
        st.codes.clear()
    st.codes[code] = (sig, info)
    return info


def _walk(st: _State, inf: Any, tid: int, out: list[dict[str, Any]]) -> None:
    """Append the frames of thread ``tid`` to ``out``, innermost first (those read before an error stay)."""
    fields = _find_tstate(st, inf, tid)
    if fields is None:
        return
    _next, cframe, _tid, chunk, top = fields
    if not cframe:
        return
    frame = _u64(inf, cframe + st.cframe_at)
    # The frames of nested calls lie one above the other in the thread's current data-stack chunk, below
    # datastack_top: read the top of the chunk at once. Frames elsewhere (older chunks, generators) are read
    # one by one.
    lo = max(chunk + st.chunk_data, top - FRAME_WINDOW) if chunk else top
    window: Any = b""
    hi = lo
    if 0 < top - lo <= FRAME_WINDOW:
        window = inf.read_memory(lo, top - lo)
        hi = top
    fs = st.frame_struct
    fsize = fs.size
    base = st.code_base
    checked: dict[int, Any] = {}  # code objects already checked in this call (recursion)
    while frame and len(out) < MAX_PYTHON_FRAMES:
        if lo <= frame and frame + fsize <= hi:
            code, previous, prev_instr = fs.unpack_from(window, frame - lo)
        else:
            code, previous, prev_instr = fs.unpack_from(inf.read_memory(frame, fsize))
        info = checked.get(code)
        if info is None:
            info = checked[code] = _code_info(st, inf, code) if code else None
        if info is None:  # not a code object: a frame being torn down, or a wrong layout
            break
        file, func, firstlineno, starts, lines = info
        unit = (prev_instr - (code + base)) >> 1
        out.append({"file": file, "line": line_at(starts, lines, firstlineno, unit), "function": func})
        frame = previous


# ---------------------------------------------------------------------------------------- API


def availability() -> str | None:
    """None when Python frames can be read in the selected inferior, else one line saying why not and what to do.

    Called once, with the inferior stopped. Besides finding CPython 3.11 it checks the layout on the threads
    that run Python code now (their innermost frame must hold a code object)."""
    if gdb is None:
        return "not running inside GDB"
    _reset()
    try:
        st = _state()
        inf = gdb.selected_inferior()
        if inf.pid:
            _self_check(st, inf)
    except _Unavailable as exc:
        return str(exc)
    except gdb.MemoryError as exc:
        return f"cannot read CPython's state ({exc}); the layout of this CPython build is not the one expected"
    except Exception as exc:  # never let a surprise escape into the command
        return f"cannot read CPython's state: {type(exc).__name__}: {exc}"
    return None


def _self_check(st: _State, inf: Any) -> None:
    off = st.off
    interp = _u64(inf, st.runtime + off["runtime.interpreters_head"])
    ts = _u64(inf, interp + off["interp.threads_head"]) if interp else 0
    checked = 0
    while ts and checked < 64:
        checked += 1
        cframe = _u64(inf, ts + off["tstate.cframe"])
        frame = _u64(inf, cframe + st.cframe_at) if cframe else 0
        if frame:
            code = _u64(inf, frame + off["frame.f_code"])
            if code and _u64(inf, code + off["ob_type"]) != st.code_type:
                raise _Unavailable(
                    f"CPython {st.version} in {st.where}: a frame's f_code is not a code object with the "
                    f"{st.source}; install its debug symbols (Debian: python3.11-dbg)"
                )
        ts = _u64(inf, ts + off["tstate.next"])


def describe() -> str:
    """One line for the user: which CPython was found and how its frames are read (or why they cannot be)."""
    if gdb is None:
        return "not running inside GDB"
    try:
        st = _state()
    except _Unavailable as exc:
        return str(exc)
    except Exception as exc:
        return f"cannot read CPython's state: {type(exc).__name__}: {exc}"
    return f"CPython {st.version} in {st.where}: Python frames read with {st.source}"


def python_frames(eval_frames: list[Any]) -> list[dict[str, Any]]:
    """The CPython frames of the thread that hit the breakpoint, innermost first: ``{"file", "line", "function"}``.

    ``eval_frames`` are the native ``_PyEval_EvalFrameDefault`` frames seen on the native stack; when there are
    none the thread runs no Python code and ``[]`` is returned at once. The whole Python stack of the thread is
    returned (up to MAX_PYTHON_FRAMES), read from the thread's state, also where the native unwinding stopped
    short. ``function`` is the code object's qualified name (``Class.method``). Never raises: ``[]`` when the
    frames cannot be read, or the frames read before a bad one."""
    if not eval_frames or gdb is None:
        return []
    try:
        tid = gdb.selected_thread().ptid[1]
    except Exception:
        return []
    return thread_frames(tid)


def thread_frames(tid: int) -> list[dict[str, Any]]:
    """The CPython frames of kernel thread ``tid`` (the thread that hit the breakpoint), innermost first, without
    looking at its native frames (raw stacks are not unwound in the stop): ``[]`` for a thread with no Python
    thread state, or when the frames cannot be read. Never raises."""
    if gdb is None:
        return []
    try:
        st = _state()
    except Exception:
        return []
    out: list[dict[str, Any]] = []
    with contextlib.suppress(Exception):
        _walk(st, gdb.selected_inferior(), tid, out)
    return out
