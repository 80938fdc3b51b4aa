#!/usr/bin/env bash
# Install selfsup with its test dependencies and run the test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# Tests use tiny models and start subprocesses (torchrun, CLI runs); one intra-op thread per
# process avoids oversubscribing the cores (measured: 10x faster resume tests on 2 busy cores).
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
exec .venv/bin/python -m pytest -q "$@"
