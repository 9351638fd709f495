#!/usr/bin/env bash
# Idempotent set-up: a virtual environment in .venv with bnlab (editable) and its test extras.
# torch is installed first, pinned to the CPU build this machine keeps on disk; the package itself only asks
# for a range, so a GPU machine keeps the torch it has (run `pip install -e .[test]` there instead).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
    .venv/bin/pip install -q --disable-pip-version-check "torch==2.13.0"
fi
if ! .venv/bin/python -c "import bnlab, pytest, hypothesis" 2>/dev/null; then
    .venv/bin/pip install -q --disable-pip-version-check -e ".[test]"
fi
