"""The `knowcomp` command line."""
