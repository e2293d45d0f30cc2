# e) c) with breakpoints always inserted (not removed/reinserted around each stop)
set breakpoint always-inserted on
starti
break *sb_site if $rax == 9
continue
