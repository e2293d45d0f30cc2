# b, pc + name: 7 registers + walk all frames reading frame.pc() and frame.name() (no find_sal)
source stops.py
starti
python arm("names", "*sb_site")
continue
