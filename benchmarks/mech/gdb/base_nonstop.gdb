# floor for the non-stop variants
set non-stop on
starti
continue
