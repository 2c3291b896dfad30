"""Composition root (built in a later slice)."""
