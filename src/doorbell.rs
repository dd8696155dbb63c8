//! The doorbell: a Unix socket the consumer thread writes one byte to whenever a waiting request may have
//! something to do (records arrived, the handle became ready, an error or a log line is pending).
//!
//! Lua cannot be called from a foreign thread, but an nginx cosocket reading this socket wakes within the
//! event loop at once, without sleep-polling.

use std::io::{ErrorKind, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::Error;

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// The listening socket and the connected waiters; owned by the consumer thread.
pub struct Doorbell {
    path: PathBuf,
    listener: UnixListener,
    waiters: Vec<UnixStream>,
}

impl Doorbell {
    /// Binds a fresh socket in `dir`, named after the process and a counter.
    ///
    /// # Errors
    /// [`Error::Io`] when the socket cannot be created.
    pub fn bind(dir: &Path) -> Result<Self, Error> {
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        let path = dir.join(format!("confluent-consume-{}-{}.sock", std::process::id(), id));
        // A stale file from a crashed worker with a recycled pid would make bind fail.
        let _ = std::fs::remove_file(&path);
        let listener = UnixListener::bind(&path)?;
        listener.set_nonblocking(true)?;
        Ok(Doorbell { path, listener, waiters: Vec::new() })
    }

    /// The socket's path, for `ngx.socket.tcp():connect("unix:" .. path)`.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Accepts every pending connection without blocking.
    fn accept_pending(&mut self) {
        loop {
            match self.listener.accept() {
                Ok((stream, _)) => {
                    if stream.set_nonblocking(true).is_ok() {
                        self.waiters.push(stream);
                    }
                }
                Err(err) if err.kind() == ErrorKind::Interrupted => continue,
                Err(_) => break,
            }
        }
    }

    /// Writes one byte to every waiter (including those that connected since the last call); drops the
    /// ones that went away.
    pub fn ring(&mut self) {
        self.accept_pending();
        self.waiters.retain_mut(|stream| match stream.write(b"!") {
            Ok(_) => true,
            // Unread bytes fill the buffer: that waiter will wake anyway.
            Err(err) => err.kind() == ErrorKind::WouldBlock || err.kind() == ErrorKind::Interrupted,
        });
    }
}

impl Drop for Doorbell {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn rings_every_connected_waiter_drops_gone_ones_and_removes_its_file() {
        let dir = std::env::temp_dir();
        let mut bell = Doorbell::bind(&dir).unwrap();
        let path = bell.path().to_path_buf();
        let mut a = UnixStream::connect(&path).unwrap();
        let mut b = UnixStream::connect(&path).unwrap();
        bell.ring();
        assert_eq!(bell.waiters.len(), 2, "both pending connections were accepted");
        let mut byte = [0u8; 1];
        a.read_exact(&mut byte).unwrap();
        assert_eq!(&byte, b"!");
        b.read_exact(&mut byte).unwrap();
        assert_eq!(&byte, b"!");

        // A waiter that went away is dropped at the next ring (its write fails with EPIPE).
        drop(a);
        bell.ring();
        assert_eq!(bell.waiters.len(), 1, "the closed waiter is gone, the live one stays");

        // One that connects between rings is rung by the next one.
        let mut c = UnixStream::connect(&path).unwrap();
        bell.ring();
        assert_eq!(bell.waiters.len(), 2);
        let mut two = [0u8; 2];
        b.read_exact(&mut two).unwrap();
        assert_eq!(&two, b"!!", "the live waiter got both rings");
        c.read_exact(&mut byte).unwrap();
        assert_eq!(&byte, b"!");

        // Dropping the bell removes its file and closes the waiters' connections.
        drop(bell);
        assert!(!path.exists());
        assert_eq!(b.read(&mut byte).unwrap(), 0, "end of stream once the bell is gone");
    }
}
