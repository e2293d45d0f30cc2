# b with a shallow stack: run this file with DEPTH 1 (about 4 frames) to see what each frame costs
source stops.py
starti
python arm("stack", "*sb_site")
continue
