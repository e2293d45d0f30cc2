# Python breakpoint whose stop() reads nothing and returns False
source stops.py
starti
python arm("nothing", "*sb_site")
continue
