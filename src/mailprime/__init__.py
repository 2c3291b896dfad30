"""mailprime: the primary mail server for email marketing."""

__version__ = "0.1.0"
