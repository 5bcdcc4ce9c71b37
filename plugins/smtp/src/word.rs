//! Eight bytes at a time: the bit tricks `body`'s passes and the client's
//! wire-form check share (wasm32 here has no vector instructions, and
//! memchr goes four bytes a step there).

pub const ONES: u64 = 0x0101_0101_0101_0101;
pub const LOWS: u64 = 0x7f7f_7f7f_7f7f_7f7f;
pub const HIGHS: u64 = 0x8080_8080_8080_8080;

/// The eight bytes at the start of `b`, little-endian, if it has eight.
pub fn load(b: &[u8]) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(..8)?.try_into().expect("eight bytes")))
}

/// One high bit per byte of `v` that is zero, exactly (no borrow between
/// bytes).
pub fn zeros(v: u64) -> u64 {
    !(((v & LOWS) + LOWS) | v) & HIGHS
}

/// One high bit per byte of `w` equal to `b`, exactly.
pub fn equal(w: u64, b: u8) -> u64 {
    zeros(w ^ (ONES * u64::from(b)))
}
