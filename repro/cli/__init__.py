"""The `repro` command line."""
