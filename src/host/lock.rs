//! One run at a time per target root: an `flock` on `ROOT/run/reconcile.lock`.
//! The kernel drops the lock when the holder dies, so a crashed run never wedges the next.

use std::io::{Read, Seek, Write};

use nix::fcntl::{Flock, FlockArg};

use super::{Host, HostError, Perms};

pub const LOCK_PATH: &str = "/run/reconcile.lock";

pub struct RunLock {
    _lock: Flock<std::fs::File>,
}

impl Host {
    pub fn lock(&self) -> Result<RunLock, HostError> {
        let mut made = Vec::new();
        let parent = self
            .open_parent(LOCK_PATH, Some((Perms::default(), &mut made)))?
            .ok_or_else(|| HostError::Other("cannot create the lock directory".into()))?;
        let fd = nix::fcntl::openat(
            std::os::fd::AsFd::as_fd(&parent.dir),
            parent.name.as_str(),
            nix::fcntl::OFlag::O_RDWR
                | nix::fcntl::OFlag::O_CREAT
                | nix::fcntl::OFlag::O_NOFOLLOW
                | nix::fcntl::OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::from_bits_truncate(0o600),
        )
        .map_err(|e| HostError::Path {
            path: self.show(LOCK_PATH),
            reason: format!("cannot open lock file: {}", e.desc()),
        })?;
        let file = std::fs::File::from(fd);
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
