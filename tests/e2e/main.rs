//! End-to-end tests: the real binary, real HTTP, the real plugins.

mod lifecycle;
mod skeleton;
