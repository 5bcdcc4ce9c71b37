#!/usr/bin/env bash
# Scaffolds a transport in each language with `posta plugin new` and builds
# it from scratch with the project's own build.sh (each installs its
# toolchain inside the project: a venv, node_modules from the lockfile, or
# the wasm32-wasip2 target), then checks it. The e2e test `languages` sends
# campaigns through the results (target/scaffolds/LANG/hello-LANG.wasm), and
# the bench compares their per-message cost.
set -euo pipefail
cd "$(dirname "$0")/.."
posta="${POSTA_BIN:-$PWD/target/debug/posta}"
# Node.js and npm for the JavaScript project (on these machines already;
# Debian's packages otherwise).
if ! command -v npm >/dev/null; then
  SUDO=$([ "$(id -u)" = 0 ] || echo sudo)
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq nodejs npm
fi
for lang in rust python js; do
  dir="$PWD/target/scaffolds/$lang"
  rm -rf "$dir"
  "$posta" plugin new "hello-$lang" --lang "$lang" --dir "$dir" >/dev/null
  # The Rust project's build output goes under target/ and survives the rm.
  CARGO_TARGET_DIR="$PWD/target/scaffold-rust" bash "$dir/build.sh"
  "$posta" plugin check "$dir/hello-$lang.wasm" | sed -n '/^size:/,$p'
done
