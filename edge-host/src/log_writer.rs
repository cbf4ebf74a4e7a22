//! Where edge-host's log lines go: stderr, through a buffer that a
//! background thread flushes every [`FLUSH_EVERY`]. The access log writes
//! a line per request, and a `write` system call per line cost about as
//! much as the rest of serving a cached chat request's logging; batching
//! them keeps the lines and their order. Warnings and errors, and anything
//! logged while the buffer is over [`MAX_BUFFERED`], are written at once
//! (together with everything before them).

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tracing::Level;
use tracing_subscriber::fmt::MakeWriter;

pub const FLUSH_EVERY: Duration = Duration::from_millis(50);
const MAX_BUFFERED: usize = 64 * 1024;

#[derive(Clone, Default)]
pub struct BufferedStderr {
    buffer: Arc<Mutex<Vec<u8>>>,
}

impl BufferedStderr {
    /// A writer whose buffer a background thread flushes for the life of the process.
    pub fn start() -> Self {
        let w = Self::default();
        let flusher = w.clone();
        std::thread::Builder::new()
            .name("log-flush".into())
            .spawn(move || loop {
                std::thread::sleep(FLUSH_EVERY);
                flusher.flush();
            })
            .expect("spawning the log flusher");
        w
    }

    /// Writes out whatever is buffered.
    pub fn flush(&self) {
        let pending = std::mem::take(&mut *self.buffer.lock().unwrap_or_else(|p| p.into_inner()));
        if !pending.is_empty() {
            let mut err = std::io::stderr().lock();
            let _ = err.write_all(&pending);
            let _ = err.flush();
        }
    }
}

/// One log line being written: appended to the buffer as it comes, and
/// flushed on drop when it is urgent.
pub struct Line {
    owner: BufferedStderr,
    urgent: bool,
}

impl Write for Line {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        let mut buffer = self.owner.buffer.lock().unwrap_or_else(|p| p.into_inner());
        buffer.extend_from_slice(bytes);
        self.urgent |= buffer.len() > MAX_BUFFERED;
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for Line {
    fn drop(&mut self) {
        if self.urgent {
            self.owner.flush();
        }
    }
}

impl<'a> MakeWriter<'a> for BufferedStderr {
    type Writer = Line;

    fn make_writer(&'a self) -> Line {
        Line { owner: self.clone(), urgent: true }
    }

    fn make_writer_for(&'a self, meta: &tracing::Metadata<'_>) -> Line {
        Line { owner: self.clone(), urgent: *meta.level() <= Level::WARN }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_wait_for_the_flush_unless_urgent() {
        let w = BufferedStderr::default();
        let mut line = Line { owner: w.clone(), urgent: false }; // an info line
        line.write_all(b"an access line\n").unwrap();
        drop(line);
        assert_eq!(&*w.buffer.lock().unwrap(), b"an access line\n", "kept for the flusher");
        let mut line = w.make_writer(); // no level known: written at once
        line.write_all(b"urgent\n").unwrap();
        drop(line);
        assert!(w.buffer.lock().unwrap().is_empty(), "flushed with what came before it");
    }
}
