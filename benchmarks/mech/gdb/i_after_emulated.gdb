# i) sysbreak's ProbeBreakpoint after the syscall (on `ret`), stepped past by emulation (one stop per hit)
source ../../../gdb_scripts/sysbreak.py
source stops.py
starti
python arm_probe("sb_after", emulate=True)
continue
