#!/usr/bin/env bash
# Set up a local virtualenv with the dev extras, type-check, and run the whole test suite (see README.md).
set -euo pipefail
cd "$(dirname "$0")"
PYTHON="${PYTHON:-python3}"
"$PYTHON" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python >= 3.11 is required")'
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
# A plugin in each entry-point group (and broken ones), for tests/test_plugins.py.
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e tests/plugins
.venv/bin/python -m mypy
exec .venv/bin/python -m pytest -n 3 "$@"
