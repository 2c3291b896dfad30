"""Contacts, lists and campaigns (issue 5)."""
