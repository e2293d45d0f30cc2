# d) c) through gdbserver, condition evaluated by gdb
set sysroot /
set breakpoint condition-evaluation host
source stops.py
python connect_gdbserver()
break *sb_site if $rax == 9
continue
