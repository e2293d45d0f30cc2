# c) native GDB condition that is never true, evaluated by gdb (host)
starti
break *sb_site if $rax == 9
continue
