"""gdb Python side of the mechanism measurements: breakpoint classes whose stop() always returns False.

Sourced by the *.gdb files next to it (``source stops.py``); they then call ``arm(KIND, SPEC)``.
"""

import json

import gdb

REGS = ("rax", "rdi", "rsi", "rdx", "r10", "r8", "r9")
HITS = [0]


class RaxOnly(gdb.Breakpoint):
    """a) read $rax, decide, never stop."""

    def stop(self):
        HITS[0] += 1
        return int(gdb.selected_frame().read_register("rax")) == 9


class RegsAndStack(gdb.Breakpoint):
    """b) 6 argument registers + rax, then walk every frame: pc, name, find_sal."""

    def stop(self):
        HITS[0] += 1
        frame = gdb.selected_frame()
        regs = [int(frame.read_register(r)) for r in REGS]
        frames = []
        f = gdb.newest_frame()
        while f is not None:
            sal = f.find_sal()
            frames.append((f.pc(), f.name(), sal.symtab.filename if sal.symtab else None, sal.line))
            f = f.older()
        self.last = (regs, frames)
        return False


class RegsPcs(gdb.Breakpoint):
    """b, pcs only: 7 registers + walk all frames reading only pc (no name, no line table)."""

    def stop(self):
        HITS[0] += 1
        frame = gdb.selected_frame()
        regs = [int(frame.read_register(r)) for r in REGS]
        pcs = []
        f = gdb.newest_frame()
        while f is not None:
            pcs.append(f.pc())
            f = f.older()
        self.last = (regs, pcs)
        return False


class RegsPcsNames(gdb.Breakpoint):
    """b, pcs + names: as RegsPcs plus frame.name() (symbol lookup, no line table)."""

    def stop(self):
        HITS[0] += 1
        frame = gdb.selected_frame()
        regs = [int(frame.read_register(r)) for r in REGS]
        out = []
        f = gdb.newest_frame()
        while f is not None:
            out.append((f.pc(), f.name()))
            f = f.older()
        self.last = (regs, out)
        return False


class RegsStackMemory(gdb.Breakpoint):
    """7 registers + one 8 KiB read of the stack from $rsp (a bulk read instead of a frame-by-frame unwind)."""

    def stop(self):
        HITS[0] += 1
        frame = gdb.selected_frame()
        regs = [int(frame.read_register(r)) for r in REGS]
        rsp = int(frame.read_register("rsp"))
        try:
            data = bytes(gdb.selected_inferior().read_memory(rsp, 8192))
        except gdb.MemoryError:  # the stack ends sooner: read to the end of rsp's page
            data = bytes(gdb.selected_inferior().read_memory(rsp, 4096 - (rsp & 4095)))
        self.last = (regs, data)
        return False


class RegsStackJson(RegsAndStack):
    """b + one JSON line per event, written and flushed (what the event log costs)."""

    out = None

    def stop(self):
        super().stop()
        regs, frames = self.last
        if RegsStackJson.out is None:
            RegsStackJson.out = open("/tmp/sysbreak-mech-events.jsonl", "w")  # noqa: SIM115
        rec = {
            "type": "syscall",
            "seq": HITS[0],
            "nr": regs[0],
            "args": regs[1:],
            "ret": None,
            "frames": [{"pc": pc, "function": name, "file": fn, "line": ln} for pc, name, fn, ln in frames],
        }
        RegsStackJson.out.write(json.dumps(rec, separators=(",", ":")) + "\n")
        RegsStackJson.out.flush()
        return False


class RegsBt(gdb.Breakpoint):
    """b') 6 registers + gdb.execute('bt', to_string=True) instead of walking frames."""

    def stop(self):
        HITS[0] += 1
        frame = gdb.selected_frame()
        regs = [int(frame.read_register(r)) for r in REGS]
        self.last = (regs, gdb.execute("bt", to_string=True))
        return False


class Nothing(gdb.Breakpoint):
    """stop() that reads nothing: the floor of a Python breakpoint."""

    def stop(self):
        return False


KINDS = {
    "rax": RaxOnly,
    "stack": RegsAndStack,
    "pcs": RegsPcs,
    "mem": RegsStackMemory,
    "names": RegsPcsNames,
    "json": RegsStackJson,
    "bt": RegsBt,
    "nothing": Nothing,
}


def arm(kind, spec):
    return KINDS[kind](spec, internal=True)


def connect_gdbserver():
    """Start the program under gdbserver over a pipe (no network at all) and connect to it."""
    prog = gdb.current_progspace().filename
    shown = gdb.execute("show args", to_string=True)  # gdb.parameter("args") is empty in gdb 13
    args = shown[shown.index('"') + 1 : shown.rindex('"')]
    gdb.execute(f"target remote | exec gdbserver - {prog} {args}")


def arm_probe(symbol, emulate=True):
    """i) sysbreak's own ProbeBreakpoint at ``symbol`` (gdb_scripts/sysbreak.py sourced first): hit() reads
    nothing; the hit then steps past the instruction by emulation (``emulate``) or by GDB's single-step."""
    from sysbreak.gdb import probes

    probes.STEPLESS[0] = emulate

    class Probe(probes.ProbeBreakpoint):
        def hit(self):
            HITS[0] += 1
            return False

    return Probe(int(gdb.parse_and_eval(f"(long)&{symbol}")))
