"""Typed entities and value objects shared by every layer (stdlib only)."""
