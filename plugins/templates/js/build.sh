#!/usr/bin/env bash
# Builds {{name}}.wasm from app.js with ComponentizeJS, installed into
# node_modules from package-lock.json (exact versions and hashes): nothing
# outside this directory is changed. Needs Node.js 18+ and npm.
set -euo pipefail
cd "$(dirname "$0")"
command -v npm >/dev/null || { echo "npm not found: install Node.js 18+ with npm" >&2; exit 1; }
# `npm ci` again only when the lockfile changed since the last install.
if [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  npm ci --no-audit --no-fund --loglevel=error
fi
node build.mjs
