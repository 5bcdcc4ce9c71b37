# Day-to-day recipes. The README's two commands do not need `just`.

# Build the bundled plugins and the host, then run the demo.
run *ARGS:
    cargo run -- demo {{ARGS}}

# Serve the API on the embedded defaults.
serve *ARGS:
    cargo run -- serve {{ARGS}}

# Everything CI runs.
test:
    bash scripts/test.sh

# Build the guest plugins for wasm32-wasip2 (the host build does this too).
plugins:
    rustup target add wasm32-wasip2
    cd plugins && cargo build --release --target wasm32-wasip2

lint:
    cargo fmt --all -- --check
    cd plugins && cargo fmt --all -- --check
    cargo clippy --workspace --all-targets -- -D warnings
    cd plugins && cargo clippy --target wasm32-wasip2 -- -D warnings

fmt:
    cargo fmt --all
    cd plugins && cargo fmt --all

# All benchmarks (release build, ~10 minutes): writes BENCHMARKS.md.
bench *ARGS:
    bash scripts/bench.sh {{ARGS}}

# Many clients drive lifecycle actions on many sending campaigns, then the
# invariants are checked and a summary printed.
soak MINUTES="10":
    cargo build --workspace
    cargo run -p posta-e2e --bin soak -- --minutes {{MINUTES}}
