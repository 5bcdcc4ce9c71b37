#!/usr/bin/env bash
# Builds the transport of plugins/README.md exactly as the guide writes it
# (its Cargo.toml and src/lib.rs blocks, extracted from the Markdown) and
# checks it with `posta plugin check`. Keeps the author guide honest.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

# The n-th fenced block of a given language in the guide.
block() {
  awk -v lang="$1" -v want="$2" '
    $0 == "```" lang { n++; if (n == want) { on = 1; next } }
    on && $0 == "```" { exit }
    on { print }
  ' "$root/plugins/README.md"
}

cd "$work"
cargo new -q --lib hello-transport
cd hello-transport
# The guide's [lib] and [dependencies] entries, with the SDK path made real.
block toml 1 | sed "s|/path/to/posta|$root|" > extra.toml
awk 'FNR == NR { extra = extra $0 "\n"; next } /^\[dependencies\]/ { skip = 1; next } !skip { print } END { printf "%s", extra }' \
  extra.toml Cargo.toml > Cargo.new && mv Cargo.new Cargo.toml && rm extra.toml
block rust 1 > src/lib.rs
cargo build --release --target wasm32-wasip2 --target-dir "$root/target/guide-example"
"$root/target/debug/posta" plugin check "$root/target/guide-example/wasm32-wasip2/release/hello_transport.wasm"
