# b') 7 registers + gdb.execute("bt", to_string=True) instead of the Python frame walk
source stops.py
starti
python arm("bt", "*sb_site")
continue
