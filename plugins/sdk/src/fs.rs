//! Appending to a file in a granted directory, fast.
//!
//! Writes through Rust's `std::fs::File` reach the host as a stream write
//! that the host completes on a blocking thread pool: two thread hand-offs
//! per write. [`Appender`] uses `blocking-write-and-flush` on an append
//! stream instead, which the host completes on the calling thread. Each
//! call writes at most 4 KiB with one `O_APPEND` write, so a record of up to
//! 4 KiB lands whole even with several writers; longer records are whole
//! only with a single writer (a transport with `max_in_flight = 1`).

use std::io;

use crate::bindings::wasi::filesystem::preopens::get_directories;
use crate::bindings::wasi::filesystem::types::{Descriptor, DescriptorFlags, ErrorCode, OpenFlags, PathFlags};
use crate::bindings::wasi::io::streams::{OutputStream, StreamError};

/// Largest write `blocking-write-and-flush` accepts.
const CHUNK: usize = 4096;

pub struct Appender {
    // Field order is drop order: the stream before its file.
    stream: OutputStream,
    file: Descriptor,
}

impl Appender {
    /// Opens (creating if needed) `path`, which must lie inside a directory
    /// the transport's capabilities grant.
    pub fn open(path: &str) -> io::Result<Appender> {
        let (dir, relative) = get_directories()
            .into_iter()
            .filter_map(|(dir, root)| {
                let rest = path.strip_prefix(root.trim_end_matches('/'))?;
                let rest = rest.strip_prefix('/')?;
                Some((dir, rest.to_string()))
            })
            .next()
            .ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::PermissionDenied,
                    format!("{path} is not inside a directory granted to this transport"),
                )
            })?;
        let file = dir
            .open_at(
                PathFlags::empty(),
                &relative,
                OpenFlags::CREATE,
                DescriptorFlags::READ | DescriptorFlags::WRITE,
            )
            .map_err(|e| fs_error(e, path))?;
        let stream = file.append_via_stream().map_err(|e| fs_error(e, path))?;
        Ok(Appender { stream, file })
    }

    /// The file's current size.
    pub fn len(&self) -> io::Result<u64> {
        Ok(self.file.stat().map_err(|e| fs_error(e, "stat"))?.size)
    }

    pub fn is_empty(&self) -> io::Result<bool> {
        Ok(self.len()? == 0)
    }

    /// The last byte of the file, if it has one.
    pub fn last_byte(&self) -> io::Result<Option<u8>> {
        let len = self.len()?;
        if len == 0 {
            return Ok(None);
        }
        let (bytes, _) = self.file.read(1, len - 1).map_err(|e| fs_error(e, "read"))?;
        Ok(bytes.first().copied())
    }

    /// Appends `bytes`, 4 KiB per write.
    pub fn append(&mut self, bytes: &[u8]) -> io::Result<()> {
        for chunk in bytes.chunks(CHUNK) {
            self.stream.blocking_write_and_flush(chunk).map_err(|e| match e {
                StreamError::Closed => io::Error::new(io::ErrorKind::BrokenPipe, "file stream closed"),
                StreamError::LastOperationFailed(e) => io::Error::other(e.to_debug_string()),
            })?;
        }
        Ok(())
    }
}

fn fs_error(e: ErrorCode, what: &str) -> io::Error {
    let kind = match e {
        ErrorCode::Access | ErrorCode::NotPermitted => io::ErrorKind::PermissionDenied,
        ErrorCode::NoEntry => io::ErrorKind::NotFound,
        _ => io::ErrorKind::Other,
    };
    io::Error::new(kind, format!("{what}: {e:?}"))
}
