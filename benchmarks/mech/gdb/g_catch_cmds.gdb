# g) catch syscall getppid with a commands block (silent, continue)
starti
catch syscall getppid
commands
silent
continue
end
continue
