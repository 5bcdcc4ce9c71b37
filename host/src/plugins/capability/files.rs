//! `dirs`: directories a transport may read and write (the log transport's
//! outbox), created at load and preopened under their own path.

use std::path::{Path, PathBuf};

use wasmtime_wasi::{FsPerms, WasiCtxBuilder};

use super::Capability;
use crate::config::{self, Capabilities};
use crate::plugins::grants::Grants;
use crate::plugins::runtime::PluginMeta;

pub struct Files;

impl Capability for Files {
    fn configure(&self, caps: &Capabilities, data_dir: &Path, grants: &mut Grants) -> Result<(), String> {
        for dir in &caps.dirs {
            let path = PathBuf::from(config::expand(dir, data_dir));
            std::fs::create_dir_all(&path).map_err(|e| format!("cannot create {}: {e}", path.display()))?;
            let path = std::fs::canonicalize(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            grants.dirs.push(path);
        }
        Ok(())
    }

    fn prepare(&self, meta: &PluginMeta, wasi: &mut WasiCtxBuilder) -> wasmtime::Result<()> {
        for dir in &meta.grants.dirs {
            let guest = dir.display().to_string();
            wasi.preopened_dir(dir, &guest, FsPerms::ReadWrite)?;
        }
        Ok(())
    }
}
