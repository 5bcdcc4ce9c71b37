#!/usr/bin/env bash
# `just bench`: builds the release server with the native baseline, runs the
# criterion micro benchmarks, then the end-to-end benchmarks, and writes
# BENCHMARKS.md. Pass --quick for a fast check of the harness itself.
set -euo pipefail
cd "$(dirname "$0")/.."

rustup target add wasm32-wasip2
# The SMTP section measures against Postfix's smtp-sink and smtp-source.
# The webhook section measures against nginx and ApacheBench (`ab -k`).
if ! [ -x /usr/sbin/smtp-sink ] || ! [ -x /usr/sbin/nginx ] || ! command -v ab >/dev/null; then
  SUDO=$([ "$(id -u)" = 0 ] || echo sudo)
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq postfix nginx apache2-utils
fi
# The cluster section runs a PostgreSQL server of its own.
source scripts/pg-env.sh
# The micro benchmarks first: `cargo bench -p posta` rebuilds
# target/release/posta with only its own features, and the end-to-end
# sections need the server built with the native baseline.
if [[ " $* " != *" --quick "* ]]; then
  rm -rf target/criterion
  cargo bench --locked -p posta --features native-bench --bench micro
fi
cargo build --release --locked -p posta -p posta-e2e --features posta/native-bench --bin posta --bin bench
# The plugins-by-language section and the start-up section send through /
# load the `posta plugin new` projects, built here from scratch.
POSTA_BIN="$PWD/target/release/posta" bash scripts/scaffolds.sh
POSTA_BIN="$PWD/target/release/posta" target/release/bench "$@"
