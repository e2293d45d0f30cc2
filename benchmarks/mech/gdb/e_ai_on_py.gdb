# e) a) with breakpoints always inserted
set breakpoint always-inserted on
source stops.py
starti
python arm("rax", "*sb_site")
continue
