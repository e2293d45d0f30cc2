# naive: unconditional breakpoint with a commands block (silent, continue)
starti
break *sb_site
commands
silent
continue
end
continue
