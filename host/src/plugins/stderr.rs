//! Guest stderr: the tail of the current call's output, nothing more.
//!
//! A trap's error quotes the guest's panic message from here. wasmtime's
//! `MemoryOutputPipe` is the obvious choice and the wrong one for
//! instances reused across thousands of calls: it fills up once and then
//! refuses every write (Rust's `eprintln!` panics on that), and a write
//! larger than what is left traps. This pipe never refuses: it keeps the
//! last `capacity` bytes and is cleared when a call starts, so memory stays
//! bounded and a chatty plugin keeps working.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

#[derive(Clone)]
pub struct StderrTail {
    capacity: usize,
    buffer: Arc<Mutex<Vec<u8>>>,
}

impl StderrTail {
    pub fn new(capacity: usize) -> StderrTail {
        StderrTail {
            capacity,
            buffer: Arc::default(),
        }
    }

    /// Forgets what earlier calls printed.
    pub fn clear(&self) {
        let mut buffer = self.buffer.lock().expect("stderr lock");
        buffer.clear();
        buffer.shrink_to(self.capacity);
    }

    pub fn contents(&self) -> Vec<u8> {
        self.buffer.lock().expect("stderr lock").clone()
    }

    fn append(&self, bytes: &[u8]) {
        let mut buffer = self.buffer.lock().expect("stderr lock");
        let bytes = &bytes[bytes.len().saturating_sub(self.capacity)..];
        buffer.extend_from_slice(bytes);
        // Dropping the front only once it is twice the tail keeps appends
        // amortized O(1).
        if buffer.len() > 2 * self.capacity {
            let excess = buffer.len() - self.capacity;
            buffer.drain(..excess);
        }
    }
}

impl IsTerminal for StderrTail {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for StderrTail {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

#[async_trait::async_trait]
impl OutputStream for StderrTail {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.append(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(self.capacity.max(4096))
    }
}

#[async_trait::async_trait]
impl Pollable for StderrTail {
    async fn ready(&mut self) {}
}

impl tokio::io::AsyncWrite for StderrTail {
    fn poll_write(self: Pin<&mut Self>, _: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        self.append(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_tail_and_never_refuses() {
        let mut tail = StderrTail::new(8);
        for i in 0..1000u32 {
            OutputStream::write(&mut tail, Bytes::from(format!("{i:04}\n"))).unwrap();
        }
        let text = tail.contents();
        assert!(text.len() <= 16, "{}", text.len());
        assert!(text.ends_with(b"0999\n"));
        OutputStream::write(&mut tail, Bytes::from(vec![b'x'; 100])).unwrap();
        assert_eq!(tail.contents()[tail.contents().len() - 8..], *b"xxxxxxxx");
        tail.clear();
        assert!(tail.contents().is_empty());
    }
}
