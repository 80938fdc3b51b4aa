#!/usr/bin/env bash
# Re-resolve requirements/lock.txt: the exact versions (and hashes) of every dependency of
# selfsup-toolkit[all,dev], for every platform and Python >= 3.10, from the package registry.
# Run after changing dependencies in pyproject.toml, then run scripts/test.sh and commit both.
# Needs uv (pip install uv); the install side (scripts/setup.sh) needs only pip.
set -euo pipefail
cd "$(dirname "$0")/.."
uv pip compile pyproject.toml --extra all --extra dev --universal --python-version 3.10 \
  --generate-hashes --no-header --output-file requirements/lock.txt "$@"
