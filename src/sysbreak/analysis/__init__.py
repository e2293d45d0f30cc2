"""Analysis of captures: plain Python, no gdb. Produces one :class:`~sysbreak.analysis.model.Analysis`."""
