#!/usr/bin/env bash
# Builds {{name}}.wasm from app.py with componentize-py, installed (pinned in
# requirements.txt) into a virtual environment in .venv: nothing outside this
# directory is changed.
set -euo pipefail
cd "$(dirname "$0")"
if [ ! -x .venv/bin/python3 ]; then
  python3 -m venv .venv || {
    echo "python3 -m venv failed: install Python 3.9+ with venv (Debian: apt-get install python3-venv)" >&2
    exit 1
  }
fi
.venv/bin/python3 -m pip install --quiet --disable-pip-version-check -r requirements.txt
# wit/world.wit: Posta's `transport` world (wit/deps/plugin.wit, the
# contract as Posta ships it) plus the wasi:http client app.py uses.
.venv/bin/componentize-py -d wit -w plugin componentize app -o {{name}}.wasm
echo "built $(pwd)/{{name}}.wasm"
