"""Reporting: every gateway event into ClickHouse; statistics, message tracking and quarantine over HTTP."""
