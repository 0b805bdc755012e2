#!/usr/bin/env bash
# Runs the default test suite on a fresh machine: installs what is missing, then pytest.
# Slow tests are excluded by default (pytest.ini addopts); run them with: scripts/test.sh -m slow
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/bootstrap.sh --with-browser
exec python -m pytest -q "$@"
