"""Test-only helpers (not part of the sysbreak package): a sample Analysis, a synthetic capture."""
