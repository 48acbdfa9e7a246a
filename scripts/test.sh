#!/usr/bin/env bash
# The whole test suite: installs what it needs, then lint, types and pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh test
export PATH="$PWD/.venv/bin:$PATH"
echo "== ruff" && ruff check agent testbed tests bench
echo "== mypy" && mypy
echo "== pytest"
set +e
python -m pytest "$@"
rc=$?
set -e
if [ "$rc" -eq 5 ]; then echo "pytest collected no tests: that is a failure here" >&2; exit 1; fi
exit "$rc"
