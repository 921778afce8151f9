#!/usr/bin/env bash
# The test command behind `make test` and CI. pytest's exit 5 ("no tests ran") is a failure here.
set -uo pipefail
cd "$(dirname "$0")/.."
mkdir -p test-artifacts
python -m pytest "$@"
rc=$?
if [ "$rc" -eq 5 ]; then
  echo "run_tests: pytest collected no tests; that is a failure, not a pass" >&2
  exit 1
fi
exit "$rc"
