# f) a) in non-stop mode: only the hitting thread stops
set non-stop on
source stops.py
starti
python arm("rax", "*sb_site")
continue
