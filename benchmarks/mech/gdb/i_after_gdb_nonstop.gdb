# i) as i_after_gdb in non-stop mode
set non-stop on
source ../../../gdb_scripts/sysbreak.py
source stops.py
starti
python arm_probe("sb_after", emulate=False)
continue
