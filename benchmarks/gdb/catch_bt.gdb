# Baseline "gdb catch syscall": stop at every mmap/munmap (entry and return) and print the stack.
set pagination off
set confirm off
set startup-with-shell off
set debuginfod enabled off
set print thread-events off
set print inferior-events off
catch syscall mmap munmap
commands
silent
bt
continue
end
run
