# floor for the gdbserver variants: the program under gdbserver (stdio pipe, no network), no breakpoint
set sysroot /
source stops.py
python connect_gdbserver()
continue
