//! Capped capture of a task's stdout and stderr.
//!
//! A [`CaptureSink`] keeps the first `cap` bytes written to it and counts
//! the rest without storing them, so a task that writes 100 MiB costs the
//! host `cap` bytes. It is fed by WASI streams (it implements wasmtime-wasi's
//! `StdoutStream`) and by container pipes (through [`CaptureSink::push`]).

use std::sync::{Arc, Mutex};

/// What a task wrote to one stream.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Captured {
    /// The first bytes written, at most the cap.
    pub bytes: Vec<u8>,
    /// Whether more was written than kept.
    pub truncated: bool,
    /// How many bytes were written in all.
    pub total: u64,
}

impl Captured {
    /// The kept bytes as text (invalid UTF-8 replaced).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.bytes).into_owned()
    }
}

#[derive(Debug)]
struct State {
    cap: usize,
    kept: Vec<u8>,
    total: u64,
}

/// A shared, capped buffer; clones write to the same buffer.
#[derive(Debug, Clone)]
pub(crate) struct CaptureSink {
    state: Arc<Mutex<State>>,
}

impl CaptureSink {
    pub(crate) fn new(cap: usize) -> CaptureSink {
        CaptureSink {
            state: Arc::new(Mutex::new(State {
                cap,
                kept: Vec::new(),
                total: 0,
            })),
        }
    }

    /// Keeps what fits under the cap and counts all of it.
    pub(crate) fn push(&self, data: &[u8]) {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        s.total = s.total.saturating_add(data.len() as u64);
        let room = s.cap.saturating_sub(s.kept.len());
        let take = room.min(data.len());
        s.kept.extend_from_slice(&data[..take]);
    }

    /// What was captured so far.
    pub(crate) fn snapshot(&self) -> Captured {
        let s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        Captured {
            bytes: s.kept.clone(),
            truncated: s.total > s.kept.len() as u64,
            total: s.total,
        }
    }
}

/// Writes accepted at once from a WASI stream; the guest never waits.
pub(crate) const PERMIT: usize = 1 << 20;

/// Makes `$sink` (a `Clone` type with `fn push(&self, &[u8])`) a WASI
/// stdout/stderr stream that takes every write at once.
macro_rules! wasi_output_sink {
    ($sink:ty) => {
        impl ::wasmtime_wasi::cli::IsTerminal for $sink {
            fn is_terminal(&self) -> bool {
                false
            }
        }

        impl ::wasmtime_wasi::cli::StdoutStream for $sink {
            fn p2_stream(&self) -> Box<dyn ::wasmtime_wasi::p2::OutputStream> {
                Box::new(self.clone())
            }

            fn async_stream(&self) -> Box<dyn ::tokio::io::AsyncWrite + Send + Sync> {
                Box::new(self.clone())
            }
        }

        #[::wasmtime_wasi::async_trait]
        impl ::wasmtime_wasi::p2::OutputStream for $sink {
            fn write(
                &mut self,
                bytes: ::bytes::Bytes,
            ) -> Result<(), ::wasmtime_wasi::p2::StreamError> {
                self.push(&bytes);
                Ok(())
            }

            fn flush(&mut self) -> Result<(), ::wasmtime_wasi::p2::StreamError> {
                Ok(())
            }

            fn check_write(&mut self) -> Result<usize, ::wasmtime_wasi::p2::StreamError> {
                Ok($crate::capture::PERMIT)
            }
        }

        #[::wasmtime_wasi::async_trait]
        impl ::wasmtime_wasi::p2::Pollable for $sink {
            async fn ready(&mut self) {}
        }

        impl ::tokio::io::AsyncWrite for $sink {
            fn poll_write(
                self: ::std::pin::Pin<&mut Self>,
                _cx: &mut ::std::task::Context<'_>,
                buf: &[u8],
            ) -> ::std::task::Poll<::std::io::Result<usize>> {
                self.push(buf);
                ::std::task::Poll::Ready(Ok(buf.len()))
            }

            fn poll_flush(
                self: ::std::pin::Pin<&mut Self>,
                _cx: &mut ::std::task::Context<'_>,
            ) -> ::std::task::Poll<::std::io::Result<()>> {
                ::std::task::Poll::Ready(Ok(()))
            }

            fn poll_shutdown(
                self: ::std::pin::Pin<&mut Self>,
                _cx: &mut ::std::task::Context<'_>,
            ) -> ::std::task::Poll<::std::io::Result<()>> {
                ::std::task::Poll::Ready(Ok(()))
            }
        }
    };
}
pub(crate) use wasi_output_sink;

wasi_output_sink!(CaptureSink);

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use wasmtime_wasi::p2::OutputStream;

    #[test]
    fn keeps_the_first_bytes_and_counts_the_rest() {
        let sink = CaptureSink::new(10);
        sink.push(b"hello ");
        sink.push(b"world, and more");
        let c = sink.snapshot();
        assert_eq!(c.bytes, b"hello worl");
        assert!(c.truncated);
        assert_eq!(c.total, 21);
    }

    #[test]
    fn under_the_cap_nothing_is_cut() {
        let sink = CaptureSink::new(100);
        let mut other = sink.clone();
        OutputStream::write(&mut other, Bytes::from_static(b"abc")).expect("write");
        let c = sink.snapshot();
        assert_eq!(
            (c.bytes.as_slice(), c.truncated, c.total),
            (&b"abc"[..], false, 3)
        );
    }

    #[test]
    fn a_huge_write_keeps_only_the_cap() {
        let sink = CaptureSink::new(4096);
        let chunk = vec![b'x'; 1 << 20];
        for _ in 0..8 {
            sink.push(&chunk);
        }
        let held = sink.state.lock().expect("lock").kept.capacity();
        assert!(
            held <= 2 * 4096,
            "the sink holds {held} bytes for a cap of 4096"
        );
        let c = sink.snapshot();
        assert_eq!(c.bytes.len(), 4096);
        assert_eq!(c.total, 8 << 20);
    }
}
