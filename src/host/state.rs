//! The engine's own files under the root: the audit log and its head files, the run
//! lock, the fingerprint key. They go through the same root-safe walk as managed
//! paths (no symlinked component is followed, the final component is opened with
//! `O_NOFOLLOW`), so a symlinked `ROOT/var/log` or `ROOT/run` is refused rather than
//! written through. Whole-file writes reuse [`Host::write_atomic`].

use std::fs::File;
use std::os::fd::AsFd;

use nix::errno::Errno;
use nix::fcntl::{openat, OFlag};
use nix::sys::stat::{fstat, Mode, SFlag};
use nix::unistd::fsync;

use super::fs::Parent;
use super::{Host, HostError, Perms};

const OPEN_FLAGS: OFlag = OFlag::O_NOFOLLOW
    .union(OFlag::O_CLOEXEC)
    .union(OFlag::O_NOCTTY)
    .union(OFlag::O_NONBLOCK);

impl Host {
    fn state_error(&self, path: &str, reason: impl Into<String>) -> HostError {
        HostError::Path {
            path: self.show(path),
            reason: reason.into(),
        }
    }

    fn state_open_error(&self, path: &str, what: &str, e: Errno) -> HostError {
        match e {
            Errno::ELOOP => HostError::Unsafe {
                path: self.show(path),
                reason: "is a symlink; reconcile never follows a symlink to its own files".into(),
            },
            other => self.state_error(path, format!("cannot {what}: {}", other.desc())),
        }
    }

    /// The open directory that holds the engine file `path`, its missing parents made
    /// with `dir_mode` (exactly: the umask does not apply).
    pub fn state_parent(&self, path: &str, dir_mode: u32) -> Result<Parent, HostError> {
        let mut made = Vec::new();
        let perms = Perms {
            mode: Some(dir_mode),
            ..Perms::default()
        };
        let parent = self
            .open_parent(path, Some((perms, &mut made)))?
            .ok_or_else(|| self.state_error(path, "parent directory missing"))?;
        if !made.is_empty() {
            // The new entries must survive a crash as much as the file inside them.
            fsync(parent.dir.as_fd()).map_err(|e| self.state_error(path, e.desc()))?;
        }
        Ok(parent)
    }

    /// Opens an engine file for reading and appending (`O_APPEND`), creating it with
    /// `mode` (and its parents with `dir_mode`) when missing. Returns the file and
    /// whether it was created. Refuses a symlink or anything but a regular file.
    pub fn open_state_append(
        &self,
        path: &str,
        dir_mode: u32,
        mode: u32,
    ) -> Result<(File, bool), HostError> {
        let parent = self.state_parent(path, dir_mode)?;
        let base = OPEN_FLAGS | OFlag::O_RDWR | OFlag::O_APPEND;
        let (fd, created) = match openat(
            parent.dir.as_fd(),
            parent.name.as_str(),
            base | OFlag::O_CREAT | OFlag::O_EXCL,
            Mode::from_bits_truncate(mode),
        ) {
            Ok(fd) => (fd, true),
            Err(Errno::EEXIST) => (
                openat(
                    parent.dir.as_fd(),
                    parent.name.as_str(),
                    base,
                    Mode::empty(),
                )
                .map_err(|e| self.state_open_error(path, "open for appending", e))?,
                false,
            ),
            Err(e) => return Err(self.state_open_error(path, "create", e)),
        };
        let st = fstat(&fd).map_err(|e| self.state_error(path, e.desc()))?;
        if st.st_mode & SFlag::S_IFMT.bits() != SFlag::S_IFREG.bits() {
            return Err(HostError::Unsafe {
                path: self.show(path),
                reason: "is not a regular file".into(),
            });
        }
        // A hard link made from outside the root would carry our appends (and the lock's
        // truncation) to a file elsewhere, as for managed files.
        if !created && st.st_nlink > 1 {
            return Err(HostError::Unsafe {
                path: self.show(path),
                reason: format!(
                    "has {} hard links; reconcile does not write its own files through a hard link",
                    st.st_nlink
                ),
            });
        }
        if created {
            nix::sys::stat::fchmod(fd.as_fd(), Mode::from_bits_truncate(mode))
                .map_err(|e| self.state_error(path, e.desc()))?;
            fsync(fd.as_fd()).map_err(|e| self.state_error(path, e.desc()))?;
            fsync(parent.dir.as_fd()).map_err(|e| self.state_error(path, e.desc()))?;
        }
        Ok((File::from(fd), created))
    }

    /// Opens an existing engine file read-only; `None` when it (or a parent) does not
    /// exist. Never creates anything: `plan` and `check` use it.
    pub fn open_state_read(&self, path: &str) -> Result<Option<File>, HostError> {
        let Some(parent) = self.open_parent(path, None)? else {
            return Ok(None);
        };
        let fd = match openat(
            parent.dir.as_fd(),
            parent.name.as_str(),
            OPEN_FLAGS | OFlag::O_RDONLY,
            Mode::empty(),
        ) {
            Ok(fd) => fd,
            Err(Errno::ENOENT) => return Ok(None),
            Err(e) => return Err(self.state_open_error(path, "open", e)),
        };
        let st = fstat(&fd).map_err(|e| self.state_error(path, e.desc()))?;
        if st.st_mode & SFlag::S_IFMT.bits() != SFlag::S_IFREG.bits() {
            return Err(HostError::Unsafe {
                path: self.show(path),
                reason: "is not a regular file".into(),
            });
        }
        Ok(Some(File::from(fd)))
    }

    /// Reads a whole engine file of at most `max` bytes (checked with `fstat` before
    /// reading); `None` when absent. Returns the mode bits with the content.
    pub fn read_state(&self, path: &str, max: u64) -> Result<Option<(u32, Vec<u8>)>, HostError> {
        use std::io::Read;
        let Some(file) = self.open_state_read(path)? else {
            return Ok(None);
        };
        let st = fstat(&file).map_err(|e| self.state_error(path, e.desc()))?;
        let size = u64::try_from(st.st_size).unwrap_or(u64::MAX);
        if size > max {
            return Err(self.state_error(
                path,
                format!("is {size} bytes, over the limit of {max} bytes"),
            ));
        }
        let mut buf = Vec::new();
        file.take(max + 1)
            .read_to_end(&mut buf)
            .map_err(|e| self.state_error(path, e.to_string()))?;
        if buf.len() as u64 > max {
            return Err(self.state_error(path, format!("is over the limit of {max} bytes")));
        }
        Ok(Some((st.st_mode & 0o7777, buf)))
    }

    /// Replaces an engine file atomically (the same temp-file, fsync and rename code as
    /// managed files), with `mode`, its missing parents made with `dir_mode`.
    pub fn write_state(
        &self,
        path: &str,
        bytes: &[u8],
        dir_mode: u32,
        mode: u32,
    ) -> Result<(), HostError> {
        self.state_parent(path, dir_mode)?;
        let perms = Perms {
            mode: Some(mode),
            ..Perms::default()
        };
        self.write_atomic(path, bytes, &perms, &mut Vec::new(), None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::error::Error;
    use std::os::unix::fs::{symlink, PermissionsExt};

    type R = Result<(), Box<dyn Error>>;

    #[test]
    fn engine_files_are_never_reached_through_a_symlink() -> R {
        let dir = tempfile::tempdir()?;
        let outside = tempfile::tempdir()?;
        let root = dir.path().join("root");
        std::fs::create_dir_all(root.join("var"))?;
        symlink(outside.path(), root.join("var/log"))?;
        let host = Host::open(&root)?;
        assert!(matches!(
            host.open_state_append("/var/log/x/audit.jsonl", 0o750, 0o640),
            Err(HostError::Unsafe { .. })
        ));
        assert!(host
            .write_state("/var/log/head", b"x", 0o750, 0o640)
            .is_err());
        assert!(host.open_state_read("/var/log/head").is_err());
        assert_eq!(std::fs::read_dir(outside.path())?.count(), 0);

        std::fs::create_dir_all(root.join("run"))?;
        std::fs::write(outside.path().join("f"), "outside")?;
        symlink(outside.path().join("f"), root.join("run/lock"))?;
        assert!(matches!(
            host.open_state_append("/run/lock", 0o755, 0o600),
            Err(HostError::Unsafe { .. })
        ));
        assert!(matches!(
            host.read_state("/run/lock", 64),
            Err(HostError::Unsafe { .. })
        ));
        assert_eq!(
            std::fs::read_to_string(outside.path().join("f"))?,
            "outside"
        );
        Ok(())
    }

    #[test]
    fn hard_linked_engine_files_are_not_written() -> R {
        let dir = tempfile::tempdir()?;
        let root = dir.path().join("root");
        std::fs::create_dir_all(root.join("run"))?;
        let outside = dir.path().join("outside");
        std::fs::write(&outside, "keep me\n")?;
        std::fs::hard_link(&outside, root.join("run/reconcile.lock"))?;
        let host = Host::open(&root)?;
        match host.lock() {
            Err(HostError::Unsafe { reason, .. }) => {
                assert!(reason.contains("hard link"), "{reason}")
            }
            Err(e) => panic!("expected a hard-link refusal, got {e}"),
            Ok(_) => panic!("expected a hard-link refusal, got the lock"),
        }
        assert_eq!(std::fs::read_to_string(&outside)?, "keep me\n");
        Ok(())
    }

    #[test]
    fn created_parents_and_files_get_exact_modes_and_reads_are_capped() -> R {
        let dir = tempfile::tempdir()?;
        let host = Host::open(dir.path())?;
        let (_, created) = host.open_state_append("/a/b/log", 0o750, 0o640)?;
        assert!(created);
        let mode = |p: &str| -> Result<u32, Box<dyn Error>> {
            Ok(std::fs::metadata(dir.path().join(p))?.permissions().mode() & 0o7777)
        };
        assert_eq!(mode("a")?, 0o750);
        assert_eq!(mode("a/b")?, 0o750);
        assert_eq!(mode("a/b/log")?, 0o640);
        let (_, created) = host.open_state_append("/a/b/log", 0o750, 0o640)?;
        assert!(!created);
        host.write_state("/c/key", b"0123456789", 0o700, 0o600)?;
        assert_eq!(mode("c")?, 0o700);
        assert_eq!(mode("c/key")?, 0o600);
        assert_eq!(
            host.read_state("/c/key", 64)?,
            Some((0o600, b"0123456789".to_vec()))
        );
        assert!(host.read_state("/c/key", 4).is_err());
        assert_eq!(host.read_state("/c/none", 4)?, None);
        assert!(host.open_state_read("/nowhere/x")?.is_none());
        Ok(())
    }
}
