#!/usr/bin/env bash
# Installs sts-agent into ./.venv and runs the demo against the built-in simulated VPC.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh demo
exec .venv/bin/sts-agent demo "$@"
