//! End-to-end tests: the real binary, real HTTP, the real plugins.

mod ab;
mod availability;
mod crash;
mod dashboard;
mod deliverability;
mod hostile;
mod languages;
mod lifecycle;
mod operations;
mod plugin_check;
mod pools;
mod providers;
mod rate;
mod reload;
mod segments;
mod skeleton;
mod slow_readers;
mod tenants;
mod tracking;
mod transports;
mod webhooks;
