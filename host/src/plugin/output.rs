//! What a plugin writes to its standard output and error, kept for the
//! host instead of thrown away.
//!
//! A plugin's log lines go through the `log` import; its standard streams
//! are where a Rust plugin's panic message goes (`panicked at src/lib.rs:
//! 12:9: ...`), and where an author's debugging `eprintln!` lands. Without
//! them a fault reads "wasm `unreachable` instruction executed" and says
//! nothing of why. So each instance's two streams write into one buffer,
//! which the host takes after every call: a fault's log line quotes it, and
//! what a call that succeeded wrote is logged at debug level. The host
//! cleans it as it cleans the plugin's log lines before anything is logged
//! (card numbers, the client's token, line breaks; see
//! [`super::host_api::State::clean`]).
//!
//! Writing never fails the plugin and never blocks it: past
//! [`MAX_KEPT_BYTES`] a call's output is counted and dropped.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

/// Most bytes of one call's output kept, its last: a panic's message comes
/// last. Within a log line's length (2 KiB) with room for the note of
/// what was dropped.
pub const MAX_KEPT_BYTES: usize = 1536;

/// How much a write may be at once, as the stream tells the plugin. Never
/// zero: a stream that is never ready makes a blocking write trap.
const WRITE_BUDGET: usize = 64 * 1024;

/// One instance's standard output and error, both. Clones share the buffer:
/// WASI asks for a new stream each time the plugin opens one.
#[derive(Clone, Default)]
pub struct GuestOutput(Arc<Shared>);

#[derive(Default)]
struct Shared {
    /// Whether anything was written since the last take: checked without
    /// the lock, so a call that wrote nothing costs one load.
    written: AtomicBool,
    kept: Mutex<Kept>,
}

#[derive(Default)]
struct Kept {
    bytes: Vec<u8>,
    dropped: usize,
}

impl GuestOutput {
    /// What was written since the last take, as text (invalid UTF-8
    /// replaced), with a note of what was dropped; `None` if nothing was.
    pub fn take(&self) -> Option<String> {
        // A load first: the call that wrote nothing (nearly every one)
        // takes no cache line for itself.
        if !self.0.written.load(Ordering::Relaxed) || !self.0.written.swap(false, Ordering::Acquire)
        {
            return None;
        }
        let mut kept = self.0.kept.lock().unwrap_or_else(|p| p.into_inner());
        let kept = std::mem::take(&mut *kept);
        let written = String::from_utf8_lossy(&kept.bytes);
        let written = match kept.dropped {
            0 => &*written,
            _ => from_first_whole_word(&written),
        };
        // Rust's panic hook ends with advice the plugin cannot take (its
        // environment is the operator's to grant): left out.
        let text = written
            .lines()
            .filter(|line| !line.starts_with("note: run with `RUST_BACKTRACE=1`"))
            .collect::<Vec<_>>()
            .join("\n");
        let text = text.trim();
        if text.is_empty() {
            return None;
        }
        Some(match kept.dropped {
            0 => text.to_owned(),
            dropped => format!("({dropped} earlier bytes dropped) … {text}"),
        })
    }

    /// Keeps the last [`MAX_KEPT_BYTES`] of what was written.
    fn keep(&self, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        let mut kept = self.0.kept.lock().unwrap_or_else(|p| p.into_inner());
        let bytes = match bytes.len().checked_sub(MAX_KEPT_BYTES) {
            Some(over) => {
                kept.dropped += over + kept.bytes.len();
                kept.bytes.clear();
                &bytes[over..]
            }
            None => bytes,
        };
        let over = (kept.bytes.len() + bytes.len()).saturating_sub(MAX_KEPT_BYTES);
        kept.bytes.drain(..over);
        kept.dropped += over;
        kept.bytes.extend_from_slice(bytes);
        self.0.written.store(true, Ordering::Release);
    }
}

/// What was kept of a text whose front was cut off, from its first whole
/// word: the cut may have left the last digits of a card number, or the
/// last characters of a token, too few to be recognised as either — so the
/// fragment before the first whitespace goes, and any digits (and the
/// spaces and dashes between them) right after it.
fn from_first_whole_word(text: &str) -> &str {
    let Some(at) = text.find(char::is_whitespace) else {
        return "";
    };
    text[at..].trim_start_matches(|c: char| c.is_whitespace() || c.is_ascii_digit() || c == '-')
}

impl IsTerminal for GuestOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for GuestOutput {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for GuestOutput {
    /// Always ready: writes are kept or dropped at once.
    async fn ready(&mut self) {}
}

#[wasmtime_wasi::async_trait]
impl OutputStream for GuestOutput {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.keep(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(WRITE_BUDGET)
    }
}

/// The same for WASI 0.3's streams, which plugins of this world do not
/// use today; the trait asks for it.
impl tokio::io::AsyncWrite for GuestOutput {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
        bytes: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        self.keep(bytes);
        std::task::Poll::Ready(Ok(bytes.len()))
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_is_kept_up_to_its_cap_and_taken_once() {
        let output = GuestOutput::default();
        assert_eq!(output.take(), None);
        let mut stream = output.p2_stream();
        stream
            .write(Bytes::from_static(b"\npanicked at src/lib.rs:1:1:\n"))
            .unwrap();
        stream.write(Bytes::from_static(b"boom\n")).unwrap();
        stream
            .write(Bytes::from_static(
                b"note: run with `RUST_BACKTRACE=1` environment variable to display a backtrace\n",
            ))
            .unwrap();
        assert_eq!(
            output.take().as_deref(),
            Some("panicked at src/lib.rs:1:1:\nboom")
        );
        assert_eq!(output.take(), None);

        // Past the cap, writes still succeed; the last bytes are kept (a
        // panic's message comes last), from the first whole word, and
        // what was dropped is counted.
        let too_much = "word ".repeat(MAX_KEPT_BYTES / 5 + 2);
        stream.write(Bytes::from(too_much)).unwrap();
        stream.write(Bytes::from_static(b"panicked: boom")).unwrap();
        assert!(stream.check_write().unwrap() > 0);
        let text = output.take().unwrap();
        assert!(
            text.starts_with("(23 earlier bytes dropped) … word word"),
            "{text}"
        );
        assert!(text.ends_with("word panicked: boom"), "{text}");
        // Many small writes past the cap, the same.
        for _ in 0..MAX_KEPT_BYTES {
            stream.write(Bytes::from_static(b"ab ")).unwrap();
        }
        let text = output.take().unwrap();
        assert!(
            text.starts_with(&format!(
                "({} earlier bytes dropped) … ab ab",
                2 * MAX_KEPT_BYTES
            )),
            "{text}"
        );

        // The cut lands inside a card number, or a token: what is left of
        // either is not shown, however few characters.
        for (secret, kept_of_it) in [
            ("4111111111111111", 12),
            ("4111 1111 1111 1111", 14),
            ("tok-s3cr3t-b34r3r-t0k3n", 15),
        ] {
            let after = " failed here ".to_owned() + &"z".repeat(MAX_KEPT_BYTES);
            let after = &after[..MAX_KEPT_BYTES - kept_of_it];
            stream
                .write(Bytes::from(format!("value {secret}{after}")))
                .unwrap();
            let text = output.take().unwrap();
            let tail = &secret[secret.len() - kept_of_it..];
            assert!(!text.contains(tail.trim()), "{text}");
            assert!(!text.contains("1111"), "{text}");
            assert!(text.contains("… failed here zzz"), "{text}");
        }
        // A kept text with no whole word at all is nothing.
        stream
            .write(Bytes::from(vec![b'7'; MAX_KEPT_BYTES + 1]))
            .unwrap();
        assert_eq!(output.take(), None);

        // Nothing but whitespace and the backtrace advice is nothing.
        stream.write(Bytes::from_static(b"\n  \n")).unwrap();
        assert_eq!(output.take(), None);
    }
}
