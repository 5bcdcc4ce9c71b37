#!/usr/bin/env bash
# Builds {{name}}.wasm with cargo for the wasm32-wasip2 target (rustup adds
# it when missing). Dependencies are pinned by Cargo.lock after the first build.
set -euo pipefail
cd "$(dirname "$0")"
rustup target add wasm32-wasip2 >/dev/null 2>&1 || rustup target add wasm32-wasip2
cargo build --release --target wasm32-wasip2
cp "${CARGO_TARGET_DIR:-target}/wasm32-wasip2/release/{{module}}.wasm" {{name}}.wasm
echo "built $(pwd)/{{name}}.wasm"
