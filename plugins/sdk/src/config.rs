//! Typed access to the plugin's configuration (`[transports.NAME.config]`).

use std::cell::RefCell;
use std::fmt;
use std::str::FromStr;
use std::thread::LocalKey;

/// A configuration value that is missing or does not parse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub key: String,
    pub reason: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "config `{}`: {}", self.key, self.reason)
    }
}

impl std::error::Error for ConfigError {}

/// The raw value of `key`, if configured.
pub fn get(key: &str) -> Option<String> {
    crate::host::config(key)
}

/// The value of `key`, or an error naming the key.
pub fn require(key: &str) -> Result<String, ConfigError> {
    get(key).ok_or_else(|| ConfigError {
        key: key.to_string(),
        reason: "is required but not set".to_string(),
    })
}

/// The value of `key` parsed as `T`, or `default` when unset.
pub fn parse_or<T: FromStr>(key: &str, default: T) -> Result<T, ConfigError>
where
    T::Err: fmt::Display,
{
    match get(key) {
        None => Ok(default),
        Some(raw) => raw.trim().parse().map_err(|e: T::Err| ConfigError {
            key: key.to_string(),
            reason: format!("cannot parse {raw:?}: {e}"),
        }),
    }
}

/// Settings parsed once per instance: the host reuses instances across
/// messages and a plugin's config never changes under a live instance.
///
/// ```ignore
/// thread_local! { static SETTINGS: RefCell<Option<Settings>> = const { RefCell::new(None) }; }
/// let s = config::cached(&SETTINGS, Settings::load)?;
/// ```
pub fn cached<T: Clone + 'static>(
    slot: &'static LocalKey<RefCell<Option<T>>>,
    load: impl FnOnce() -> Result<T, ConfigError>,
) -> Result<T, ConfigError> {
    slot.with(|cell| {
        if let Some(value) = cell.borrow().as_ref() {
            return Ok(value.clone());
        }
        let value = load()?;
        *cell.borrow_mut() = Some(value.clone());
        Ok(value)
    })
}
