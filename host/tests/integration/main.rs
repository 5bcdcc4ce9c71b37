//! The host's in-process integration tests, one binary (one link of the
//! whole host instead of one per file).

mod compile_cache;
mod in_process;
mod local_time;
mod pause_resume;
mod start_by;
mod support;
mod template_fuzz;
mod warmup;
