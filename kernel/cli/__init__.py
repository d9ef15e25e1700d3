"""The `nubis` command."""
