# a) Python breakpoint, stop() reads $rax and returns False
source stops.py
starti
python arm("rax", "*sb_site")
continue
