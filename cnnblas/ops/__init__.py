"""Stateless array functions; all argument checking happens here."""
