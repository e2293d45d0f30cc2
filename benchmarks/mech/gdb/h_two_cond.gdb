# h) two native false conditions per event
starti
break *sb_site if $rax == 9
break *sb_after if $rax == 9
continue
