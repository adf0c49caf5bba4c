"""Shared contracts and plumbing of the mail security gateway."""

__version__ = "0.1.0"
