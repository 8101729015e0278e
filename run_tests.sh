#!/usr/bin/env bash
# Run the test suite: ./run_tests.sh [pytest args]
# Sets up .venv on first use, then runs the unit tests and nbval over the six notebooks (smoke
# defaults). Skip the slow end-to-end checks locally with: ./run_tests.sh -m "not slow"
set -euo pipefail
cd "$(dirname "$0")"
source scripts/setup_env.sh
exec "$PY" -m pytest "$@"
