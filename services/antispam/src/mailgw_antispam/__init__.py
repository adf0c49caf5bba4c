"""Antispam scorer: consumes mail.received, publishes a verdict of symbol hits to mail.verdicts."""
