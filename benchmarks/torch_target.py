"""The target of the attach benchmark (benchmarks/attach.py): a PyTorch CPU process with a native heartbeat.

    python benchmarks/torch_target.py CONTROL_DIR [--no-torch] [--every SECONDS]

Starts fixtures/build/libsbheartbeat.so's thread (a tick every 1 ms; every gap over 2 ms is logged to
CONTROL_DIR/heartbeat.log), imports torch (and runs one matmul, so its worker threads exist), writes
CONTROL_DIR/ready ({"pid", "import_s", "threads"}), then until CONTROL_DIR/stop exists:
  - every --every seconds allocates a 64 MiB tensor and frees it (glibc maps and unmaps it: two captured
    events), appending "START END" (CLOCK_MONOTONIC seconds) of each to CONTROL_DIR/allocs.log;
  - once CONTROL_DIR/dlopen exists, dlopens the library named in it and writes CONTROL_DIR/dlopened
    ("START END").
"""

from __future__ import annotations

import ctypes
import json
import os
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HEARTBEAT = ROOT / "fixtures" / "build" / "libsbheartbeat.so"


def main() -> int:
    args = sys.argv[1:]
    control = Path(args[0])
    use_torch = "--no-torch" not in args
    every = float(args[args.index("--every") + 1]) if "--every" in args else 0.1
    hb = ctypes.CDLL(str(HEARTBEAT))
    if hb.sb_heartbeat_start(str(control / "heartbeat.log").encode(), 1000, 2000) != 0:
        print("torch_target: cannot start the heartbeat", file=sys.stderr)
        return 1
    t = time.perf_counter()
    if use_torch:
        import torch

        torch.ones(256, 256) @ torch.ones(256, 256)  # starts the intra-op worker threads
    import_s = time.perf_counter() - t
    ready = {"pid": os.getpid(), "import_s": import_s, "threads": len(os.listdir("/proc/self/task"))}
    (control / "ready.tmp").write_text(json.dumps(ready))
    os.replace(control / "ready.tmp", control / "ready")
    allocs = open(control / "allocs.log", "a", buffering=1)  # noqa: SIM115
    dlopened = False
    next_alloc = time.monotonic() + every
    while not (control / "stop").exists():
        now = time.monotonic()
        if now >= next_alloc:
            next_alloc = now + every
            t0 = time.monotonic()
            # 64 MiB: above glibc's largest mmap threshold, so one mmap and one munmap
            x = torch.empty(16 << 20) if use_torch else bytearray(64 << 20)
            del x
            allocs.write(f"{t0:.6f} {time.monotonic():.6f}\n")
        if not dlopened and (control / "dlopen").exists():
            lib = (control / "dlopen").read_text().strip()
            if lib:
                t0 = time.monotonic()
                ctypes.CDLL(lib)
                (control / "dlopened").write_text(f"{t0:.6f} {time.monotonic():.6f}\n")
                dlopened = True
        time.sleep(0.005)
    allocs.close()
    threading.Event().wait(0)  # nothing else to join
    return 0


if __name__ == "__main__":
    sys.exit(main())
