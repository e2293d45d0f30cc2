# Baseline "naive gdb": a conditional breakpoint on libc's generic syscall() wrapper, the stack per hit.
# Catches only what goes through syscall() (the raw and the libucm mappings), like sysbreak's call sites.
set pagination off
set confirm off
set startup-with-shell off
set debuginfod enabled off
set print thread-events off
set print inferior-events off
set breakpoint pending on
break syscall if $rdi == 9 || $rdi == 11
commands
silent
bt
continue
end
run
