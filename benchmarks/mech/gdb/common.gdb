# Settings every mechanism run shares: quiet, no shell, no debuginfod, no pagination.
set pagination off
set confirm off
set startup-with-shell off
set debuginfod enabled off
set print thread-events off
set print inferior-events off
set width 0
