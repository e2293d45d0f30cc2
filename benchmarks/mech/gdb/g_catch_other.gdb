# g) catch syscall mmap (false condition) while the loop calls getppid: PTRACE_SYSCALL stops the thread on
# every syscall anyway, so the non-matching getppid still costs two stops
starti
catch syscall mmap
condition $bpnum 0
continue
