"""sysbreak: which call stack maps the memory that makes a process's RSS grow.

Everything in this package except :mod:`sysbreak.gdb` is plain Python that runs anywhere; only
:mod:`sysbreak.gdb` imports GDB's ``gdb`` module and it is loaded only inside GDB.
"""

__version__ = "0.1.0"
