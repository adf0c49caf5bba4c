"""Antivirus scorer: consumes mail.received, scans the raw message with clamd, publishes a verdict to mail.verdicts."""
