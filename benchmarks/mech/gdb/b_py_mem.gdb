# 7 registers + one 8 KiB read_memory from $rsp (bulk stack copy instead of a frame walk)
source stops.py
starti
python arm("mem", "*sb_site")
continue
