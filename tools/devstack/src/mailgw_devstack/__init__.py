"""Local orchestration of the gateway's real components, for `make run` and the test suite."""
