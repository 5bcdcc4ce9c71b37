#!/usr/bin/env bash
# The test command of the README: installs what the tests need, builds
# everything once (host, bundled wasm plugins, test binaries), then runs
# unit and end-to-end tests.
set -euo pipefail
cd "$(dirname "$0")/.."

rustup target add wasm32-wasip2
# Real peers for the transport tests: aiosmtpd is the SMTP server
# (tests/peers/smtp_server.py); the HTTP receiver needs only the stdlib.
# Installed into a virtual environment under target/, first on PATH.
source scripts/py-env.sh
# Chromium and axe-core for the dashboard's browser test.
source scripts/browser-env.sh
# PostgreSQL's server binaries for the PostgreSQL store's tests.
source scripts/pg-env.sh

# One build of everything; the end-to-end tests start target/debug/posta.
cargo build --workspace --all-targets --locked
# Misbehaving components for the sandbox tests (tests/plugins).
cargo build --locked --release --target wasm32-wasip2 \
  --manifest-path tests/plugins/Cargo.toml --target-dir target/wasm-test-plugins
# Transports scaffolded by `posta plugin new` in Rust, Python (componentize-py
# from PyPI) and JavaScript (ComponentizeJS from npm), each built by its own
# build.sh; the e2e test `languages` sends through them.
bash scripts/scaffolds.sh
cargo test --workspace --locked
# The guest crates' own unit tests (SMTP framing, dot-stuffing, signatures),
# compiled for the build machine.
cargo test --locked --manifest-path plugins/Cargo.toml --target-dir target/plugins-native

# The plugin author guide, built exactly as written, passes `posta plugin check`.
bash scripts/check-plugin-guide.sh

# The API, fuzzed from its OpenAPI document (schemathesis from PyPI): no 5xx.
bash scripts/fuzz-api.sh
