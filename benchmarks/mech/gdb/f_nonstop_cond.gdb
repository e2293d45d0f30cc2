# f) c) in non-stop mode
set non-stop on
starti
break *sb_site if $rax == 9
continue
