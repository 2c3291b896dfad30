"""The IMAP server's use cases: sessions, FETCH assembly, SEARCH evaluation, message content."""
