//! One run at a time per target root: an `flock` on `ROOT/run/reconcile.lock`.
//! The kernel drops the lock when the holder dies, so a crashed run never wedges the next.

use std::io::{Read, Seek, Write};

use nix::fcntl::{Flock, FlockArg};

use super::{Host, HostError};

pub const LOCK_PATH: &str = "/run/reconcile.lock";

pub struct RunLock {
    _lock: Flock<std::fs::File>,
}

impl Host {
    /// Takes the run lock. The lock file is one of the engine's own files: reached by the
    /// root-safe walk, so a symlinked `ROOT/run` is refused rather than written through.
    pub fn lock(&self) -> Result<RunLock, HostError> {
        let (file, _) = self.open_state_append(LOCK_PATH, 0o755, 0o600)?;
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(mut lock) => {
                let _ = lock.set_len(0);
                let _ = lock.rewind();
                let _ = writeln!(lock, "{}", std::process::id());
                let _ = lock.sync_data();
                Ok(RunLock { _lock: lock })
            }
            Err((mut file, _)) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                let holder = holder.trim();
                let who = if holder.is_empty() {
                    "another process".to_string()
                } else {
                    format!("pid {holder}")
                };
                Err(HostError::Other(format!(
                    "another reconcile run ({who}) holds the lock {}; try again when it has finished",
                    self.show(LOCK_PATH)
                )))
            }
        }
    }
}
