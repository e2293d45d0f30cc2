# i) sysbreak's ProbeBreakpoint after the syscall (on `ret`), GDB's own step-over (two stops per hit)
source ../../../gdb_scripts/sysbreak.py
source stops.py
starti
python arm_probe("sb_after", emulate=False)
continue
