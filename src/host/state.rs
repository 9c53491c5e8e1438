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
