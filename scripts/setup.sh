#!/usr/bin/env bash
# Create .venv (if missing) and install into it exactly the tested dependency set from
# requirements/lock.txt (versions and hashes: selfsup-toolkit[all,dev]), then selfsup itself in editable mode.
# Idempotent: a second run checks the set and installs nothing new.
set -euo pipefail
cd "$(dirname "$0")/.."
python="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv with $("$python" --version)"
  "$python" -m venv .venv
fi
echo "setup: installing the locked dependency set (requirements/lock.txt) into .venv"
export PIP_DISABLE_PIP_VERSION_CHECK=1
pip() {
  # pip warns once per package about index locations in the machine's pip configuration that do
  # not exist; those lines say nothing about this project and are dropped, everything else shows.
  .venv/bin/python -m pip "$@" 2> >(grep -v "^WARNING: Location '.*' is ignored" >&2)
}
pip install --quiet --require-hashes --no-deps -r requirements/lock.txt
# No build isolation: the build uses the locked setuptools instead of the newest release.
pip install --quiet --no-deps --no-build-isolation -e ".[all]"
pip check >/dev/null || { pip check; exit 1; }
echo "setup: ready ($(.venv/bin/python -c 'import torch; print("torch", torch.__version__)'))"
