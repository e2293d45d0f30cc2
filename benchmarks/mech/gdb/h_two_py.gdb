# h) two Python breakpoints per event: the syscall instruction and the instruction after it
source stops.py
starti
python arm("rax", "*sb_site")
python arm("rax", "*sb_after")
continue
