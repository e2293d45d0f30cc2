# g) catch syscall getppid with a condition that is never true (2 stops per syscall: entry, return)
starti
catch syscall getppid
condition $bpnum 0
continue
