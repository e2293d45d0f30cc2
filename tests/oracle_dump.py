"""Sourced into a real gdb by tests/test_unwind_oracle.py (test-only; not part of the package).

``sb-oracle-dump FILE`` appends one JSON line to FILE describing the current stop: GDB's own frames (what ``bt``
shows: pc, function, file, line, frame type), the registers, the raw stack from $rsp to the end of its mapping,
/proc/PID/maps and the program's path: everything the offline unwinder needs, and the answer it must give.
"""

import json
import os
import time

import gdb  # noqa: F401 - this file runs inside gdb only

REGS = ("rip", "rsp", "rbp", "rbx", "r12", "r13", "r14", "r15")
WINDOW = 256 * 1024


def _walk():
    frames = []
    f = gdb.newest_frame()
    while f is not None:
        sal = f.find_sal()
        frames.append(
            {
                "pc": int(f.pc()),
                "function": f.name(),
                "file": sal.symtab.filename if sal is not None and sal.symtab is not None else None,
                "line": (sal.line or None) if sal is not None and sal.symtab is not None else None,
                "inline": f.type() == gdb.INLINE_FRAME,
            }
        )
        f = f.older()
    return frames


class OracleDump(gdb.Command):
    """sb-oracle-dump FILE [TIMES]: with TIMES, GDB's own unwind of this stop is also timed (the frame cache
    flushed before each of TIMES walks; symbols stay loaded): the benchmark's peer row."""

    def __init__(self):
        super().__init__("sb-oracle-dump", gdb.COMMAND_USER)

    def invoke(self, arg, from_tty):
        args = arg.split()
        arg = args[0]
        times = int(args[1]) if len(args) > 1 else 0
        t = time.perf_counter()
        frames = _walk()
        first = time.perf_counter() - t
        walks = []
        for _ in range(times):
            gdb.execute("maintenance flush register-cache", to_string=True)
            t = time.perf_counter()
            _walk()
            walks.append(time.perf_counter() - t)
        frame0 = gdb.newest_frame()
        regs = {r: int(frame0.read_register(r)) & ((1 << 64) - 1) for r in REGS}
        pid = gdb.selected_inferior().pid
        with open(f"/proc/{pid}/maps") as fh:
            maps = fh.read()
        rsp = regs["rsp"]
        end = rsp
        for line in maps.splitlines():
            lo, hi = (int(x, 16) for x in line.split()[0].split("-"))
            if lo <= rsp < hi:
                end = min(hi, rsp + WINDOW)
        stack = bytes(gdb.selected_inferior().read_memory(rsp, end - rsp))

        rec = {
            "frames": frames,
            "regs": regs,
            "stack_start": rsp,
            "stack": stack.hex(),
            "maps": maps,
            "exe": os.readlink(f"/proc/{pid}/exe"),
            "bt": gdb.execute("bt", to_string=True),
            "gdb_first_walk_s": first,
            "gdb_walks_s": walks,
        }
        with open(arg, "a") as fh:
            fh.write(json.dumps(rec) + "\n")


OracleDump()
