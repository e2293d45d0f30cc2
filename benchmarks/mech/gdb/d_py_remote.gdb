# d) a) through gdbserver: every hit travels to gdb and back
set sysroot /
source stops.py
python connect_gdbserver()
python arm("rax", "*sb_site")
continue
