#!/usr/bin/env bash
# Run the test suite: ./run_tests.sh [pytest args]
# Sets up .venv on first use, then runs the unit tests and nbval over the six notebooks (smoke
# defaults). Skip the slow end-to-end checks locally with: ./run_tests.sh -m "not slow"
# The results page is checked in a real headless browser: where none is installed and this runs as
# root on Debian/Ubuntu (CI), Debian's chromium is installed first (AE_NO_BROWSER=1 skips that).
set -euo pipefail
cd "$(dirname "$0")"
source scripts/setup_env.sh
if [ -z "${AE_NO_BROWSER:-}" ] && ! command -v chromium >/dev/null 2>&1 && \
   [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "setup: installing Debian's chromium for the headless-browser check of the results page"
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
    || echo "setup: chromium could not be installed; the browser check will be skipped"
fi
exec "$PY" -m pytest "$@"
