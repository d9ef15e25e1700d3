"""Compiled twins of the hot paths, built from ext/ by setup.py."""
