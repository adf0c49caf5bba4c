.PHONY: run test lint bootstrap

bootstrap:
	@bash scripts/bootstrap.sh

run: bootstrap
	@.venv/bin/python -m mailgw_devstack run

test: bootstrap
	@bash scripts/test.sh

lint: bootstrap
	.venv/bin/ruff check .
	.venv/bin/mypy
