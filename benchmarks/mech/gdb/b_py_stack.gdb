# b) Python stop(): 7 registers + walk all ~23 frames (pc, name, find_sal), returns False
source stops.py
starti
python arm("stack", "*sb_site")
continue
