"""Migration scripts; each is frozen once released (never edit one, add the next)."""
