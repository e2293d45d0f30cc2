# native under gdb, no breakpoint: the floor every local variant is measured against
starti
continue
