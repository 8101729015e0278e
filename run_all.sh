#!/usr/bin/env bash
# Run the whole study: ./run_all.sh [--profile NAME] [--models a,b] [--from STEP] [--force]
#                                    [--test-file FILE] [--dry-run]
# Sets up .venv on first use, then executes notebooks/01..06 with papermill for every model of the
# profile (default: cpu), skipping steps whose outputs are up to date.
set -euo pipefail
export AE_CALLER_CWD="${AE_CALLER_CWD:-$PWD}"   # a relative --test-file is the caller's, not the repo's
cd "$(dirname "$0")"
source scripts/setup_env.sh
exec "$PY" -m helpers.pipeline "$@"
