#!/usr/bin/env bash
# The test command of the README: installs what the tests need, builds
# everything once (host, bundled wasm plugins, test binaries), then runs
# unit and end-to-end tests.
set -euo pipefail
cd "$(dirname "$0")/.."
# Each step prints how long it took (stderr), so a slow CI run says where
# its minutes went.
step() {
  local t0=$SECONDS
  "$@"
  echo "test.sh: $(( SECONDS - t0 )) s for: $*" >&2
}

step rustup target add wasm32-wasip2
SECONDS=0
# Real peers for the transport tests: aiosmtpd is the SMTP server
# (tests/peers/smtp_server.py); the HTTP receiver needs only the stdlib.
# Installed into a virtual environment under target/, first on PATH.
source scripts/py-env.sh
# Chromium and axe-core for the dashboard's browser test.
source scripts/browser-env.sh
# PostgreSQL's server binaries for the PostgreSQL store's tests.
source scripts/pg-env.sh
echo "test.sh: $SECONDS s for the peers' packages (Python, Chromium, PostgreSQL)" >&2

# One build of everything; the end-to-end tests start target/debug/posta.
step cargo build --workspace --all-targets --locked
# Misbehaving components for the sandbox tests (tests/plugins).
step cargo build --locked --release --target wasm32-wasip2 \
  --manifest-path tests/plugins/Cargo.toml --target-dir target/wasm-test-plugins
# Transports scaffolded by `posta plugin new` in Rust, Python (componentize-py
# from PyPI) and JavaScript (ComponentizeJS from npm), each built by its own
# build.sh; the e2e test `languages` sends through them.
step bash scripts/scaffolds.sh
step cargo test --workspace --locked
# The guest crates' own unit tests (SMTP framing, dot-stuffing, signatures),
# compiled for the build machine.
step cargo test --locked --manifest-path plugins/Cargo.toml --target-dir target/plugins-native

# The plugin author guide, built exactly as written, passes `posta plugin check`.
step bash scripts/check-plugin-guide.sh

# The API, fuzzed from its OpenAPI document (schemathesis from PyPI): no 5xx.
step bash scripts/fuzz-api.sh
