"""The benchmark scripts and their shared harness (tooling, not part of the installed package)."""
