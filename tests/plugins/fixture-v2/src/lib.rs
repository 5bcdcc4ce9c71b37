//! The fixture transport, version 2: the hot-reload test's replacement.

const VERSION: &str = "2";
include!("../../fixture/src/behaviour.rs");
