# d) c) through gdbserver, condition compiled to agent bytecode and evaluated by gdbserver
set sysroot /
set breakpoint condition-evaluation target
source stops.py
python connect_gdbserver()
break *sb_site if $rax == 9
continue
