//! Posta: a campaign email sender whose delivery adapters are sandboxed
//! WebAssembly components. See ARCHITECTURE.md for the map.

pub mod api;
pub mod app;
pub mod config;
pub mod demo;
pub mod dkim;
pub mod domain;
pub mod engine;
pub mod import;
pub mod listener;
pub mod memory;
pub mod metrics;
pub mod outbound;
pub mod plugins;
pub mod quota;
pub mod scheduling;
pub mod server;
pub mod store;
pub mod tracking;
pub mod web;
pub mod webhooks;
