#!/usr/bin/env bash
# The test suite: real components are started by the tests' own fixtures.
set -uo pipefail
cd "$(dirname "$0")/.."
export OMP_THREAD_LIMIT=1
.venv/bin/python -m pytest -m "not slow" "$@"
rc=$?
if [ "$rc" = 5 ]; then
  echo "test.sh: pytest collected no tests: that is a failure" >&2
  exit 1
fi
exit "$rc"
