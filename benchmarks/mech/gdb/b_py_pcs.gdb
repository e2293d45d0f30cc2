# b, pc only: 7 registers + walk all frames reading only frame.pc()
source stops.py
starti
python arm("pcs", "*sb_site")
continue
