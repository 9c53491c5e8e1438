//! Symlink-safe, root-relative file operations with atomic replacement.

use std::cell::RefCell;
use std::collections::HashMap;
use std::io::{Read, Write};

use sha2::Digest;
use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};

use nix::errno::Errno;
use nix::fcntl::{openat, renameat, AtFlags, OFlag};
use nix::sys::stat::{fstat, fstatat, mkdirat, FileStat, Mode, SFlag};
use nix::unistd::{fchown, fsync, symlinkat, unlinkat, Gid, Uid, UnlinkatFlags};

use super::{Host, HostError};

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FileKind {
    File,
    Directory,
    Symlink,
    Other,
}

impl FileKind {
    pub fn name(self) -> &'static str {
        match self {
            FileKind::File => "file",
            FileKind::Directory => "directory",
            FileKind::Symlink => "symlink",
            FileKind::Other => "special file",
        }
    }
}

/// What `lstat` says about a path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stat {
    pub kind: FileKind,
    /// Permission bits including setuid/setgid/sticky (`0o7777` mask).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    /// Hard link count: above 1 on a regular file, a chmod/chown or a content diff
    /// would act on (or show) every other name of the inode, possibly outside the root.
    pub nlink: u64,
}

impl Stat {
    fn from_raw(st: &FileStat) -> Stat {
        let fmt = st.st_mode & SFlag::S_IFMT.bits();
        let kind = if fmt == SFlag::S_IFREG.bits() {
            FileKind::File
        } else if fmt == SFlag::S_IFDIR.bits() {
            FileKind::Directory
        } else if fmt == SFlag::S_IFLNK.bits() {
            FileKind::Symlink
        } else {
            FileKind::Other
        };
        Stat {
            kind,
            mode: st.st_mode & 0o7777,
            uid: st.st_uid,
            gid: st.st_gid,
            size: u64::try_from(st.st_size).unwrap_or(0),
            #[allow(clippy::useless_conversion)]
            nlink: u64::from(st.st_nlink),
        }
    }
}

/// Ownership and mode to set; `None` leaves that attribute as it is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Perms {
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub mode: Option<u32>,
}

/// A filesystem's fill level (see [`Host::disk_usage`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DiskUsage {
    /// Percent used, as `df` shows it.
    pub percent: u8,
    pub avail_bytes: u64,
}

/// A path's stat and, for a regular file, its content.
pub type Observed = (Stat, Option<Vec<u8>>);

/// A regular file's content as observed for planning: whole when it is small enough to
/// diff, otherwise only its size and SHA-256, streamed, so that a gigabyte file costs a
/// buffer of memory rather than a gigabyte.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Body {
    Whole(Vec<u8>),
    Digest { size: u64, sha256: [u8; 32] },
}

impl Body {
    pub fn size(&self) -> u64 {
        match self {
            Body::Whole(b) => u64::try_from(b.len()).unwrap_or(u64::MAX),
            Body::Digest { size, .. } => *size,
        }
    }

    pub fn bytes(&self) -> Option<&[u8]> {
        match self {
            Body::Whole(b) => Some(b),
            Body::Digest { .. } => None,
        }
    }

    pub fn sha256(&self) -> [u8; 32] {
        match self {
            Body::Whole(b) => sha2::Sha256::digest(b).into(),
            Body::Digest { sha256, .. } => *sha256,
        }
    }

    /// Same content as `other`, comparing bytes when both are whole.
    pub fn same_as(&self, other: &Body) -> bool {
        match (self, other) {
            (Body::Whole(a), Body::Whole(b)) => a == b,
            _ => self.size() == other.size() && self.sha256() == other.sha256(),
        }
    }
}

/// A check run on the fully written temp file before it replaces the destination.
pub type Validator<'a> = dyn Fn(&std::path::Path) -> Result<(), String> + 'a;

/// A private directory of our own (0700, random name, under the temp directory of the
/// machine running reconcile, never under a target root), removed with everything in
/// it when dropped: where validators and `systemd-analyze` look at would-be content
/// without it ever being visible on the target.
#[derive(Debug)]
pub struct ScratchDir {
    path: PathBuf,
}

impl ScratchDir {
    /// `purpose` names the directory (`reconcile-PURPOSE-XXXXXX`), for whoever finds one
    /// a crash left behind. `target` is the target root: a `$TMPDIR` inside it (other
    /// than `/`) is not used, so that nothing of the would-be content is ever
    /// visible there.
    pub fn new(purpose: &str, target: &std::path::Path) -> Result<ScratchDir, HostError> {
        // Canonical, so that tools' messages name it as we do (/tmp may be a link).
        let canonical = |p: PathBuf| p.canonicalize().unwrap_or(p);
        let inside =
            |p: &std::path::Path| target != std::path::Path::new("/") && p.starts_with(target);
        let mut base = canonical(std::env::temp_dir());
        if inside(&base) {
            base = canonical(PathBuf::from("/tmp"));
        }
        if inside(&base) {
            return Err(HostError::Other(format!(
                "no temp directory outside the target root {} for a scratch copy",
                target.display()
            )));
        }
        // mkdtemp: a random name, created 0700 and exclusively (a name someone else
        // made first is never used).
        let path = nix::unistd::mkdtemp(&base.join(format!("reconcile-{purpose}-XXXXXX")))
            .map_err(|e| {
                HostError::Other(format!(
                    "cannot create a scratch directory in {}: {}",
                    base.display(),
                    e.desc()
                ))
            })?;
        Ok(ScratchDir { path })
    }

    pub fn path(&self) -> &std::path::Path {
        &self.path
    }

    /// Creates the file `name` (0600, exclusively) in the directory, filled by `fill`.
    pub fn file(
        &self,
        name: &str,
        fill: &mut dyn FnMut(&mut std::fs::File) -> Result<(), HostError>,
    ) -> Result<PathBuf, HostError> {
        use std::os::unix::fs::OpenOptionsExt;
        let path = self.path.join(name);
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(nix::libc::O_NOFOLLOW)
            .open(&path)
            .map_err(|e| HostError::Other(format!("cannot create {}: {e}", path.display())))?;
        fill(&mut file)?;
        Ok(path)
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// An open parent directory and the final path component inside it.
pub struct Parent {
    /// Shared with the thread's directory cache: no `dup` per lookup.
    pub dir: Rc<OwnedFd>,
    pub name: String,
}

static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

const DIR_FLAGS: OFlag = OFlag::O_RDONLY
    .union(OFlag::O_DIRECTORY)
    .union(OFlag::O_NOFOLLOW)
    .union(OFlag::O_CLOEXEC);

/// Most directory fds one thread keeps open while observing (well under any fd limit;
/// when full the cache starts over rather than tracking recency).
const DIR_CACHE_MAX: usize = 256;

/// Directories already opened by the symlink-safe walk, keyed by manifest path, for one
/// target root, on one thread, for the duration of a read-only observation pass (see
/// [`Host::cache_dirs`]). Without it every observed path walked from the root again:
/// three `openat`s and closes for `/srv/app/x.conf` before the file itself.
struct DirCache {
    root: PathBuf,
    dirs: HashMap<String, Rc<OwnedFd>>,
    /// The stale temp files of the directory last asked about: a worker observes the
    /// files of one directory in a row, and the shared list costs a lock, a path and a
    /// hash per file.
    stale: Option<(String, Vec<String>)>,
}

thread_local! {
    static DIR_CACHE: RefCell<Option<DirCache>> = const { RefCell::new(None) };
}

/// Keeps [`DIR_CACHE`] alive on this thread; dropping it closes the cached fds.
#[must_use = "the cache lives only as long as the guard"]
pub struct DirCacheGuard {
    // Tied to the thread that made it: the cache is thread-local.
    _not_send: std::marker::PhantomData<*const ()>,
}

impl Drop for DirCacheGuard {
    fn drop(&mut self) {
        DIR_CACHE.with(|c| *c.borrow_mut() = None);
    }
}

/// Splits a normalised absolute manifest path into its components.
fn components(path: &str) -> Vec<&str> {
    path.split('/').filter(|c| !c.is_empty()).collect()
}

impl Host {
    fn path_error(&self, path: &str, reason: impl Into<String>) -> HostError {
        HostError::Path {
            path: self.show(path),
            reason: reason.into(),
        }
    }

    fn unsafe_error(&self, path: &str, reason: impl Into<String>) -> HostError {
        HostError::Unsafe {
            path: self.show(path),
            reason: reason.into(),
        }
    }

    fn walk_error(&self, upto: &str, errno: Errno) -> HostError {
        match errno {
            Errno::ELOOP => self.unsafe_error(
                upto,
                "is a symlink; reconcile does not follow symlinks that the manifest does not manage",
            ),
            Errno::ENOTDIR => self.unsafe_error(upto, "is not a directory"),
            other => self.path_error(upto, other.desc()),
        }
    }

    /// O_DIRECTORY|O_NOFOLLOW reports a symlink as ENOTDIR: look again to say which.
    fn component_error(&self, dir: &OwnedFd, comp: &str, walked: &str, errno: Errno) -> HostError {
        let is_link = fstatat(dir.as_fd(), comp, AtFlags::AT_SYMLINK_NOFOLLOW)
            .map(|st| Stat::from_raw(&st).kind == FileKind::Symlink)
            .unwrap_or(false);
        self.walk_error(walked, if is_link { Errno::ELOOP } else { errno })
    }

    /// Opens the directory holding `path` without following any symlink on the way.
    /// `Ok(None)` when a parent directory does not exist (and `create` is None).
    /// With `create`, missing parents are made with those perms and reported.
    pub fn open_parent(
        &self,
        path: &str,
        create: Option<(Perms, &mut Vec<String>)>,
    ) -> Result<Option<Parent>, HostError> {
        let parts = components(path);
        let Some((name, dirs)) = parts.split_last() else {
            return Err(self.unsafe_error(path, "is the root itself"));
        };
        let mut create = create;
        // Read-only walks may start from a cached directory; creating walks never do
        // (they run during apply, when directories come and go).
        let (mut current, start) = match create {
            None => self.cached_dir(dirs)?,
            Some(_) => (Rc::new(self.root_dup()?), 0),
        };
        let mut walked = String::new();
        for comp in &dirs[..start] {
            walked.push('/');
            walked.push_str(comp);
        }
        for comp in &dirs[start..] {
            walked.push('/');
            walked.push_str(comp);
            match openat(current.as_fd(), *comp, DIR_FLAGS, Mode::empty()) {
                Ok(fd) => {
                    let fd = Rc::new(fd);
                    if create.is_none() {
                        remember_dir(self, &walked, &fd);
                    }
                    current = fd
                }
                Err(Errno::ENOENT) => match create.as_mut() {
                    None => return Ok(None),
                    Some((perms, made)) => {
                        match mkdirat(current.as_fd(), *comp, Mode::from_bits_truncate(0o700)) {
                            Ok(()) | Err(Errno::EEXIST) => {}
                            Err(e) => return Err(self.walk_error(&walked, e)),
                        }
                        let fd = openat(current.as_fd(), *comp, DIR_FLAGS, Mode::empty())
                            .map_err(|e| self.walk_error(&walked, e))?;
                        let mode = perms.mode.unwrap_or(0o755);
                        apply_perms_fd(
                            &fd,
                            &Perms {
                                mode: Some(mode),
                                ..*perms
                            },
                        )
                        .map_err(|e| self.path_error(&walked, e))?;
                        made.push(walked.clone());
                        current = Rc::new(fd);
                    }
                },
                Err(e) => return Err(self.component_error(&current, comp, &walked, e)),
            }
        }
        Ok(Some(Parent {
            dir: current,
            name: (*name).to_string(),
        }))
    }

    /// Caches directory fds opened by read-only walks on this thread until the guard is
    /// dropped. For an observation pass only: it must not span writes, since a cached
    /// fd keeps naming the directory it was opened on even if that path is replaced.
    pub fn cache_dirs(&self) -> DirCacheGuard {
        DIR_CACHE.with(|c| {
            *c.borrow_mut() = Some(DirCache {
                root: self.root.clone(),
                dirs: HashMap::new(),
                stale: None,
            })
        });
        DirCacheGuard {
            _not_send: std::marker::PhantomData,
        }
    }

    /// The deepest cached directory among the parents `dirs` and how many components
    /// it covers; the root (0) when nothing is cached.
    fn cached_dir(&self, dirs: &[&str]) -> Result<(Rc<OwnedFd>, usize), HostError> {
        let hit = DIR_CACHE.with(|c| {
            let cache = c.borrow();
            let cache = cache.as_ref().filter(|c| c.root == self.root)?;
            if cache.dirs.is_empty() {
                return None;
            }
            let mut key = String::new();
            let mut prefixes = Vec::with_capacity(dirs.len());
            for comp in dirs {
                key.push('/');
                key.push_str(comp);
                prefixes.push(key.len());
            }
            prefixes.iter().enumerate().rev().find_map(|(i, &len)| {
                let fd = cache.dirs.get(&key[..len])?;
                Some((Rc::clone(fd), i + 1))
            })
        });
        match hit {
            Some(found) => Ok(found),
            None => Ok((Rc::new(self.root_dup()?), 0)),
        }
    }

    /// Missing parent directories of `path`, outermost first, without creating them.
    pub fn missing_parents(&self, path: &str) -> Result<Vec<String>, HostError> {
        let parts = components(path);
        let mut missing = Vec::new();
        let Some((_, dirs)) = parts.split_last() else {
            return Ok(missing);
        };
        let mut current = self.root_dup()?;
        let mut walked = String::new();
        for (i, comp) in dirs.iter().enumerate() {
            walked.push('/');
            walked.push_str(comp);
            match openat(current.as_fd(), *comp, DIR_FLAGS, Mode::empty()) {
                Ok(fd) => current = fd,
                Err(Errno::ENOENT) => {
                    let mut p = walked.clone();
                    missing.push(p.clone());
                    for rest in &dirs[i + 1..] {
                        p.push('/');
                        p.push_str(rest);
                        missing.push(p.clone());
                    }
                    return Ok(missing);
                }
                Err(e) => return Err(self.component_error(&current, comp, &walked, e)),
            }
        }
        Ok(missing)
    }

    /// `lstat` of a path; `None` if it (or a parent) does not exist.
    pub fn lstat(&self, path: &str) -> Result<Option<Stat>, HostError> {
        let Some(parent) = self.open_parent(path, None)? else {
            return Ok(None);
        };
        match fstatat(
            parent.dir.as_fd(),
            parent.name.as_str(),
            AtFlags::AT_SYMLINK_NOFOLLOW,
        ) {
            Ok(st) => Ok(Some(Stat::from_raw(&st))),
            Err(Errno::ENOENT) => Ok(None),
            Err(e) => Err(self.path_error(path, e.desc())),
        }
    }

    /// Reads a path: its stat, and its content when it is a regular file.
    pub fn read(&self, path: &str) -> Result<Option<Observed>, HostError> {
        match self.open_read(path)? {
            Some((stat, Some(file))) => {
                let buf =
                    read_all(file, stat.size).map_err(|e| self.path_error(path, e.to_string()))?;
                Ok(Some((stat, Some(buf))))
            }
            Some((stat, None)) => Ok(Some((stat, None))),
            None => Ok(None),
        }
    }

    /// Opens a path for reading without following a symlink: the open regular file
    /// and its stat, or just the stat of anything else.
    fn open_read(&self, path: &str) -> Result<Option<(Stat, Option<std::fs::File>)>, HostError> {
        let Some(parent) = self.open_parent(path, None)? else {
            return Ok(None);
        };
        let flags = OFlag::O_RDONLY
            | OFlag::O_NOFOLLOW
            | OFlag::O_CLOEXEC
            | OFlag::O_NOCTTY
            | OFlag::O_NONBLOCK;
        match openat(
            parent.dir.as_fd(),
            parent.name.as_str(),
            flags,
            Mode::empty(),
        ) {
            Ok(fd) => {
                let st = fstat(&fd).map_err(|e| self.path_error(path, e.desc()))?;
                let stat = Stat::from_raw(&st);
                if stat.kind != FileKind::File {
                    return Ok(Some((stat, None)));
                }
                Ok(Some((stat, Some(std::fs::File::from(fd)))))
            }
            Err(Errno::ENOENT) => Ok(None),
            Err(Errno::ELOOP) => Ok(self.lstat(path)?.map(|st| (st, None))),
            Err(e) => Err(self.path_error(path, e.desc())),
        }
    }

    /// Copies the regular file `path` of the target into `out`, streamed (a scratch
    /// copy to validate a large `source:` from the target).
    pub fn copy_out(&self, path: &str, out: &mut dyn Write) -> Result<(), HostError> {
        match self.open_read(path)? {
            Some((_, Some(mut f))) => std::io::copy(&mut f, out)
                .map(|_| ())
                .map_err(|e| self.path_error(path, e.to_string())),
            Some((st, None)) => {
                Err(self.path_error(path, format!("is a {}, not a file", st.kind.name())))
            }
            None => Err(self.path_error(path, "does not exist")),
        }
    }

    /// Reads a path for planning: its stat and, for a regular file, its content whole
    /// when `fstat` says it is at most `limit` bytes, else its size and streamed SHA-256.
    pub fn read_body(
        &self,
        path: &str,
        limit: u64,
    ) -> Result<Option<(Stat, Option<Body>)>, HostError> {
        let Some((stat, file)) = self.open_read(path)? else {
            return Ok(None);
        };
        let Some(file) = file else {
            return Ok(Some((stat, None)));
        };
        let body = if stat.size <= limit {
            read_all(file, stat.size).map(Body::Whole)
        } else {
            digest(file).map(|(size, sha256)| Body::Digest { size, sha256 })
        }
        .map_err(|e| self.path_error(path, e.to_string()))?;
        Ok(Some((stat, Some(body))))
    }

    /// Replaces `path` atomically (as [`Host::write_atomic`]) with a copy of the regular
    /// file `source`, streamed: neither is held in memory.
    pub fn copy_atomic(
        &self,
        path: &str,
        source: &str,
        perms: &Perms,
        implied_dirs: &mut Vec<String>,
        validate: Option<&Validator<'_>>,
    ) -> Result<(), HostError> {
        let mut src = match self.open_read(source)? {
            Some((_, Some(f))) => f,
            Some((st, None)) => {
                return Err(self.path_error(source, format!("is a {}, not a file", st.kind.name())))
            }
            None => return Err(self.path_error(source, "does not exist")),
        };
        self.write_atomic_with(path, perms, implied_dirs, validate, &mut |out| {
            std::io::copy(&mut src, out).map(|_| ())
        })
    }

    pub fn read_link(&self, path: &str) -> Result<Option<String>, HostError> {
        let Some(parent) = self.open_parent(path, None)? else {
            return Ok(None);
        };
        match nix::fcntl::readlinkat(parent.dir.as_fd(), parent.name.as_str()) {
            Ok(target) => Ok(Some(target.to_string_lossy().into_owned())),
            Err(Errno::ENOENT) | Err(Errno::EINVAL) => Ok(None),
            Err(e) => Err(self.path_error(path, e.desc())),
        }
    }

    /// Lists the names in a directory (not following symlinks), sorted.
    pub fn list_dir(&self, path: &str) -> Result<Vec<String>, HostError> {
        let dir_fd = self.open_dir(path)?;
        let mut dir =
            nix::dir::Dir::from_fd(dir_fd).map_err(|e| self.path_error(path, e.desc()))?;
        let mut names = Vec::new();
        for entry in dir.iter() {
            let entry = entry.map_err(|e| self.path_error(path, e.desc()))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name != "." && name != ".." {
                names.push(name);
            }
        }
        names.sort();
        Ok(names)
    }

    /// A descriptor of the root of its own, for a walk to move away from.
    fn root_dup(&self) -> Result<OwnedFd, HostError> {
        self.root_fd
            .try_clone()
            .map_err(|e| HostError::Other(e.to_string()))
    }

    /// How full the filesystem holding directory `path` is, as `df` counts it: used
    /// blocks over used plus those available to unprivileged users, rounded up. The
    /// directory is opened through the symlink-refusing walk; the `fstatvfs` runs on
    /// a thread of its own so that a hung filesystem (NFS) cannot hold the caller
    /// past `timeout` (the thread is left to finish on its own).
    pub fn disk_usage(
        &self,
        path: &str,
        timeout: std::time::Duration,
    ) -> Result<DiskUsage, HostError> {
        let fd = self.open_dir(path)?;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(nix::sys::statvfs::fstatvfs(&fd));
        });
        let st = match rx.recv_timeout(timeout) {
            Ok(Ok(st)) => st,
            Ok(Err(e)) => return Err(self.path_error(path, e.desc())),
            Err(_) => {
                return Err(self.path_error(
                    path,
                    format!("the filesystem did not answer within {timeout:?}"),
                ))
            }
        };
        #[allow(clippy::useless_conversion)]
        let (blocks, free, avail) = (
            u64::from(st.blocks()),
            u64::from(st.blocks_free()),
            u64::from(st.blocks_available()),
        );
        let used = blocks.saturating_sub(free);
        let total = used + avail;
        let percent = if total == 0 {
            0
        } else {
            (used * 100).div_ceil(total)
        };
        Ok(DiskUsage {
            percent: u8::try_from(percent.min(100)).unwrap_or(100),
            avail_bytes: avail.saturating_mul(st.fragment_size()),
        })
    }

    fn open_dir(&self, path: &str) -> Result<OwnedFd, HostError> {
        if components(path).is_empty() {
            return self.root_dup();
        }
        let parent = self
            .open_parent(path, None)?
            .ok_or_else(|| self.path_error(path, "does not exist"))?;
        openat(
            parent.dir.as_fd(),
            parent.name.as_str(),
            DIR_FLAGS,
            Mode::empty(),
        )
        .map_err(|e| self.walk_error(path, e))
    }

    /// Writes a whole file atomically: a temp file beside it (O_EXCL, 0600), owner and
    /// mode set on it, content written and fsynced, `validate` run on it, then renamed
    /// over the destination and the directory fsynced. A crash leaves old or new.
    pub fn write_atomic(
        &self,
        path: &str,
        content: &[u8],
        perms: &Perms,
        implied_dirs: &mut Vec<String>,
        validate: Option<&Validator<'_>>,
    ) -> Result<(), HostError> {
        self.write_atomic_with(path, perms, implied_dirs, validate, &mut |out| {
            out.write_all(content)
        })
    }

    /// As [`Host::write_atomic`], the content written by `fill` into the temp file.
    fn write_atomic_with(
        &self,
        path: &str,
        perms: &Perms,
        implied_dirs: &mut Vec<String>,
        validate: Option<&Validator<'_>>,
        fill: &mut dyn FnMut(&mut std::fs::File) -> std::io::Result<()>,
    ) -> Result<(), HostError> {
        let parent = self
            .open_parent(path, Some((Perms::default(), implied_dirs)))?
            .ok_or_else(|| self.path_error(path, "parent directory missing"))?;
        match fstatat(
            parent.dir.as_fd(),
            parent.name.as_str(),
            AtFlags::AT_SYMLINK_NOFOLLOW,
        ) {
            Ok(st) => {
                let kind = Stat::from_raw(&st).kind;
                if kind != FileKind::File {
                    return Err(self.unsafe_error(
                        path,
                        format!("is a {}; refusing to replace it with a file", kind.name()),
                    ));
                }
            }
            Err(Errno::ENOENT) => {}
            Err(e) => return Err(self.path_error(path, e.desc())),
        }
        self.sweep(&parent, parent_of(path));
        let temp_name = temp_name(&parent.name);
        let fd = openat(
            parent.dir.as_fd(),
            temp_name.as_str(),
            OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::from_bits_truncate(0o600),
        )
        .map_err(|e| self.path_error(path, format!("cannot create temp file: {}", e.desc())))?;
        let cleanup = |reason: HostError| {
            let _ = unlinkat(
                parent.dir.as_fd(),
                temp_name.as_str(),
                UnlinkatFlags::NoRemoveDir,
            );
            reason
        };
        let perms = Perms {
            mode: Some(perms.mode.unwrap_or(0o644)),
            ..*perms
        };
        apply_perms_fd(&fd, &perms).map_err(|e| cleanup(self.path_error(path, e)))?;
        let mut file = std::fs::File::from(fd);
        fill(&mut file)
            .and_then(|_| file.sync_all())
            .map_err(|e| cleanup(self.path_error(path, e.to_string())))?;
        drop(file);
        if let Some(check) = validate {
            let dir_path = self.real_path(path);
            let temp_path = dir_path.with_file_name(&temp_name);
            if let Err(reason) = check(&temp_path) {
                return Err(cleanup(self.path_error(
                    path,
                    format!("validation failed, file left unchanged: {reason}"),
                )));
            }
        }
        renameat(
            parent.dir.as_fd(),
            temp_name.as_str(),
            parent.dir.as_fd(),
            parent.name.as_str(),
        )
        .map_err(|e| cleanup(self.path_error(path, e.desc())))?;
        fsync(parent.dir.as_fd()).map_err(|e| self.path_error(path, e.desc()))?;
        Ok(())
    }

    /// Sets owner, group and mode of an existing path (never through a symlink). A
    /// regular file with other hard links is refused: the change would land on every
    /// other name of the inode, possibly outside the root (systemd#7736).
    pub fn set_perms(&self, path: &str, perms: &Perms) -> Result<(), HostError> {
        self.set_perms_checked(path, perms, false)
    }

    /// As [`Host::set_perms`], also on a file with other hard links (`hardlinks: allow`).
    pub fn set_perms_hardlinked(&self, path: &str, perms: &Perms) -> Result<(), HostError> {
        self.set_perms_checked(path, perms, true)
    }

    fn set_perms_checked(
        &self,
        path: &str,
        perms: &Perms,
        allow_hardlinks: bool,
    ) -> Result<(), HostError> {
        let parent = self
            .open_parent(path, None)?
            .ok_or_else(|| self.path_error(path, "does not exist"))?;
        let fd = openat(
            parent.dir.as_fd(),
            parent.name.as_str(),
            OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC | OFlag::O_NONBLOCK,
            Mode::empty(),
        )
        .map_err(|e| self.walk_error(path, e))?;
        if !allow_hardlinks {
            let st = fstat(&fd).map_err(|e| self.path_error(path, e.desc()))?;
            let st = Stat::from_raw(&st);
            if st.kind == FileKind::File && st.nlink > 1 {
                return Err(self.unsafe_error(path, hardlink_reason(st.nlink)));
            }
        }
        apply_perms_fd(&fd, perms).map_err(|e| self.path_error(path, e))?;
        fsync(parent.dir.as_fd()).map_err(|e| self.path_error(path, e.desc()))
    }

    /// Creates a directory (parents implied) with the given perms.
    pub fn create_dir(
        &self,
        path: &str,
        perms: &Perms,
        implied_dirs: &mut Vec<String>,
    ) -> Result<(), HostError> {
        let parent = self
            .open_parent(path, Some((Perms::default(), implied_dirs)))?
            .ok_or_else(|| self.path_error(path, "parent directory missing"))?;
        match mkdirat(
            parent.dir.as_fd(),
            parent.name.as_str(),
            Mode::from_bits_truncate(0o700),
        ) {
            Ok(()) | Err(Errno::EEXIST) => {}
            Err(e) => return Err(self.path_error(path, e.desc())),
        }
        let fd = openat(
            parent.dir.as_fd(),
            parent.name.as_str(),
            DIR_FLAGS,
            Mode::empty(),
        )
        .map_err(|e| self.walk_error(path, e))?;
        let perms = Perms {
            mode: Some(perms.mode.unwrap_or(0o755)),
            ..*perms
        };
        apply_perms_fd(&fd, &perms).map_err(|e| self.path_error(path, e))?;
        fsync(parent.dir.as_fd()).map_err(|e| self.path_error(path, e.desc()))
    }

    /// Points `path` at `target`, atomically replacing a symlink or file there.
    pub fn set_symlink(
        &self,
        path: &str,
        target: &str,
        implied_dirs: &mut Vec<String>,
    ) -> Result<(), HostError> {
        let parent = self
            .open_parent(path, Some((Perms::default(), implied_dirs)))?
            .ok_or_else(|| self.path_error(path, "parent directory missing"))?;
        if let Ok(st) = fstatat(
            parent.dir.as_fd(),
            parent.name.as_str(),
            AtFlags::AT_SYMLINK_NOFOLLOW,
        ) {
            if Stat::from_raw(&st).kind == FileKind::Directory {
                return Err(self.unsafe_error(
                    path,
                    "is a directory; refusing to replace it with a symlink",
                ));
            }
        }
        self.sweep(&parent, parent_of(path));
        let temp_name = temp_name(&parent.name);
        symlinkat(target, parent.dir.as_fd(), temp_name.as_str())
            .map_err(|e| self.path_error(path, e.desc()))?;
        renameat(
            parent.dir.as_fd(),
            temp_name.as_str(),
            parent.dir.as_fd(),
            parent.name.as_str(),
        )
        .map_err(|e| {
            let _ = unlinkat(
                parent.dir.as_fd(),
                temp_name.as_str(),
                UnlinkatFlags::NoRemoveDir,
            );
            self.path_error(path, e.desc())
        })?;
        fsync(parent.dir.as_fd()).map_err(|e| self.path_error(path, e.desc()))
    }

    /// Removes a file, symlink or (recursively) a directory. Absent is fine.
    pub fn remove(&self, path: &str) -> Result<(), HostError> {
        let Some(parent) = self.open_parent(path, None)? else {
            return Ok(());
        };
        let st = match fstatat(
            parent.dir.as_fd(),
            parent.name.as_str(),
            AtFlags::AT_SYMLINK_NOFOLLOW,
        ) {
            Ok(st) => Stat::from_raw(&st),
            Err(Errno::ENOENT) => return Ok(()),
            Err(e) => return Err(self.path_error(path, e.desc())),
        };
        if st.kind == FileKind::Directory {
            for name in self.list_dir(path)? {
                self.remove(&format!("{}/{}", path.trim_end_matches('/'), name))?;
            }
            unlinkat(
                parent.dir.as_fd(),
                parent.name.as_str(),
                UnlinkatFlags::RemoveDir,
            )
            .map_err(|e| self.path_error(path, e.desc()))?;
        } else {
            unlinkat(
                parent.dir.as_fd(),
                parent.name.as_str(),
                UnlinkatFlags::NoRemoveDir,
            )
            .map_err(|e| self.path_error(path, e.desc()))?;
        }
        fsync(parent.dir.as_fd()).map_err(|e| self.path_error(path, e.desc()))
    }

    /// Atomically swaps two paths in the same directory (renameat2 RENAME_EXCHANGE):
    /// used to replace a symlink by a fully built directory in one step.
    pub fn exchange(&self, a: &str, b: &str) -> Result<(), HostError> {
        let pa = self
            .open_parent(a, None)?
            .ok_or_else(|| self.path_error(a, "does not exist"))?;
        let pb = self
            .open_parent(b, None)?
            .ok_or_else(|| self.path_error(b, "does not exist"))?;
        nix::fcntl::renameat2(
            pa.dir.as_fd(),
            pa.name.as_str(),
            pb.dir.as_fd(),
            pb.name.as_str(),
            nix::fcntl::RenameFlags::RENAME_EXCHANGE,
        )
        .map_err(|e| self.path_error(b, e.desc()))?;
        fsync(pb.dir.as_fd()).map_err(|e| self.path_error(b, e.desc()))
    }

    /// Renames `from` to `to` within the root (both normalised manifest paths).
    pub fn rename(&self, from: &str, to: &str) -> Result<(), HostError> {
        let a = self
            .open_parent(from, None)?
            .ok_or_else(|| self.path_error(from, "does not exist"))?;
        let b = self
            .open_parent(to, None)?
            .ok_or_else(|| self.path_error(to, "parent directory missing"))?;
        renameat(
            a.dir.as_fd(),
            a.name.as_str(),
            b.dir.as_fd(),
            b.name.as_str(),
        )
        .map_err(|e| self.path_error(to, e.desc()))?;
        fsync(b.dir.as_fd()).map_err(|e| self.path_error(to, e.desc()))
    }
}

impl Host {
    /// Temp files of dead runs in the open directory `dir`: regular files and symlinks
    /// (never followed) whose name matches our pattern exactly.
    fn scan_stale(&self, dir: &OwnedFd, shown: &str) -> Result<Vec<String>, HostError> {
        // A fresh open file description: a dup of a cached fd would share its offset.
        let fd = openat(dir.as_fd(), ".", DIR_FLAGS, Mode::empty())
            .map_err(|e| self.path_error(shown, e.desc()))?;
        let mut listing =
            nix::dir::Dir::from_fd(fd).map_err(|e| self.path_error(shown, e.desc()))?;
        let mut stale = Vec::new();
        for entry in listing.iter() {
            let entry = entry.map_err(|e| self.path_error(shown, e.desc()))?;
            let Ok(name) = entry.file_name().to_str() else {
                continue;
            };
            let Some((_, pid)) = parse_temp_name(name) else {
                continue;
            };
            if !writer_is_dead(pid) {
                continue;
            }
            let kind = fstatat(dir.as_fd(), name, AtFlags::AT_SYMLINK_NOFOLLOW)
                .map(|st| Stat::from_raw(&st).kind);
            if matches!(kind, Ok(FileKind::File | FileKind::Symlink)) {
                stale.push(name.to_string());
            }
        }
        stale.sort();
        Ok(stale)
    }

    /// Temp files that a killed run left beside `path` while replacing it (read-only).
    pub fn stale_temps_of(&self, path: &str) -> Result<Vec<String>, HostError> {
        let dir_path = parent_of(path);
        let name = path.rsplit('/').next().unwrap_or(path);
        let of_this = |names: &[String]| -> Vec<String> {
            names
                .iter()
                .filter(|t| parse_temp_name(t).is_some_and(|(n, _)| n == name))
                .cloned()
                .collect()
        };
        let cached = DIR_CACHE.with(|c| {
            let cache = c.borrow();
            let cache = cache.as_ref().filter(|c| c.root == self.root)?;
            let (_, names) = cache.stale.as_ref().filter(|(d, _)| d == dir_path)?;
            Some(of_this(names))
        });
        if let Some(found) = cached {
            return Ok(found);
        }
        let remember = |names: &[String]| {
            DIR_CACHE.with(|c| {
                if let Some(cache) = c.borrow_mut().as_mut().filter(|c| c.root == self.root) {
                    cache.stale = Some((dir_path.to_string(), names.to_vec()));
                }
            });
        };
        let key = self.real_path(dir_path);
        // A directory already listed is not walked to again: on a no-op check of
        // thousands of files that walk was the cost, and nearly every list is empty.
        if let Some(names) = locked(&STALE_SEEN).as_ref().and_then(|m| m.get(&key)) {
            remember(names);
            return Ok(of_this(names));
        }
        let Some(parent) = self.open_parent(path, None)? else {
            return Ok(Vec::new());
        };
        let names = self.scan_stale(&parent.dir, dir_path)?;
        let found = of_this(&names);
        remember(&names);
        locked(&STALE_SEEN)
            .get_or_insert_with(HashMap::new)
            .insert(key, names);
        Ok(found)
    }

    /// Removes the temp files of dead runs in the directory holding `path` (once per
    /// directory and process; failures are logged, never fatal to the write).
    pub fn remove_stale_temps(&self, path: &str) -> Result<(), HostError> {
        let Some(parent) = self.open_parent(path, None)? else {
            return Ok(());
        };
        self.sweep(&parent, parent_of(path));
        Ok(())
    }

    fn sweep(&self, parent: &Parent, dir_path: &str) {
        let key = self.real_path(dir_path);
        if !locked(&SWEPT)
            .get_or_insert_with(Default::default)
            .insert(key.clone())
        {
            return;
        }
        let stale = match self.scan_stale(&parent.dir, dir_path) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!("cannot look for stale temp files: {e}");
                return;
            }
        };
        for name in &stale {
            match unlinkat(
                parent.dir.as_fd(),
                name.as_str(),
                UnlinkatFlags::NoRemoveDir,
            ) {
                Ok(()) | Err(Errno::ENOENT) => {
                    tracing::info!(
                        "removed {}/{name}, left by a killed run",
                        self.show(dir_path)
                    );
                }
                Err(e) => tracing::warn!(
                    "cannot remove stale temp file {}/{name}: {}",
                    self.show(dir_path),
                    e.desc()
                ),
            }
        }
        if let Some(seen) = locked(&STALE_SEEN).as_mut() {
            seen.remove(&key);
        }
        if !stale.is_empty() {
            let _ = fsync(parent.dir.as_fd());
        }
    }
}

/// The manifest path of the directory holding `path` (`/` for a top-level name).
fn parent_of(path: &str) -> &str {
    match path.trim_end_matches('/').rsplit_once('/') {
        Some(("", _)) | None => "/",
        Some((dir, _)) => dir,
    }
}

/// Reads a regular file whose size `fstat` just gave. std's `read_to_end` would stat
/// it again and seek; on a no-op run over thousands of files that was two of the
/// eight system calls per file. A read shorter than asked for is the end of a
/// regular file; a file that grew meanwhile is read on to its end.
fn read_all(mut file: std::fs::File, size: u64) -> std::io::Result<Vec<u8>> {
    let size = usize::try_from(size).unwrap_or(0);
    let mut buf = vec![0u8; size + 1];
    let mut filled = 0;
    loop {
        match file.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => {
                filled += n;
                if filled < buf.len() {
                    break;
                }
                buf.resize(buf.len() * 2, 0);
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    buf.truncate(filled);
    Ok(buf)
}

/// Why a file with other hard links is not changed in place.
pub fn hardlink_reason(nlink: u64) -> String {
    format!(
        "is a file with {nlink} hard links; changing its owner, mode or content in place, \
         or showing its content, would act on every other name of the same inode, possibly \
         outside the root"
    )
}

/// Size and SHA-256 of a file, read in fixed-size chunks.
fn digest(mut file: std::fs::File) -> std::io::Result<(u64, [u8; 32])> {
    let mut hasher = sha2::Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    let mut size = 0u64;
    loop {
        match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                hasher.update(&buf[..n]);
                size += u64::try_from(n).unwrap_or(0);
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok((size, hasher.finalize().into()))
}

/// Adds a directory the walk just opened to this thread's cache, if one is active.
fn remember_dir(host: &Host, walked: &str, fd: &Rc<OwnedFd>) {
    DIR_CACHE.with(|c| {
        let mut cache = c.borrow_mut();
        let Some(cache) = cache.as_mut().filter(|c| c.root == host.root) else {
            return;
        };
        if cache.dirs.contains_key(walked) {
            return;
        }
        if cache.dirs.len() >= DIR_CACHE_MAX {
            cache.dirs.clear();
        }
        cache.dirs.insert(walked.to_string(), Rc::clone(fd));
    });
}

/// The name of a temp file beside `name`. Drop-in readers must never take it for a
/// configuration file: it contains a dot (run-parts, cron.d and sudoers.d skip such
/// names), ends in `~` (sudoers.d; logrotate's default taboo pattern `*~`, which a
/// name with a leading dot would escape, since `*` does not match one) and has no unit,
/// `.conf`, `.list` or `.sources` suffix (systemd, most `*.conf` includes, apt).
fn temp_name(name: &str) -> String {
    let n = TEMP_COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{name}{TEMP_MARK}{}-{n}~", std::process::id())
}

const TEMP_MARK: &str = ".reconcile-";

/// The destination name and pid of one of our temp names (`NAME.reconcile-PID-N~`, or
/// `.NAME.reconcile-PID-N.tmp` from earlier versions); `None` for anything else.
pub fn parse_temp_name(temp: &str) -> Option<(&str, i32)> {
    let body = temp
        .strip_suffix('~')
        .or_else(|| temp.strip_prefix('.').and_then(|t| t.strip_suffix(".tmp")))?;
    let all_digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let (rest, n) = body.rsplit_once('-')?;
    let (rest, pid) = rest.rsplit_once('-')?;
    let name = rest.strip_suffix(TEMP_MARK.trim_end_matches('-'))?;
    if name.is_empty() || !all_digits(n) || !all_digits(pid) {
        return None;
    }
    let pid: i32 = pid.parse().ok().filter(|&p| p > 0)?;
    Some((name, pid))
}

/// Whether a temp file's writer is gone. Our own pid is alive (other threads of this run
/// may be writing); a pid we may not signal (EPERM) is alive too.
fn writer_is_dead(pid: i32) -> bool {
    if u32::try_from(pid).ok() == Some(std::process::id()) {
        return false;
    }
    matches!(
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None),
        Err(Errno::ESRCH)
    )
}

/// Stale temp names found per directory (machine path), so that planning a thousand
/// files in one directory reads it once; a sweep takes the names it removed out.
static STALE_SEEN: std::sync::Mutex<Option<HashMap<PathBuf, Vec<String>>>> =
    std::sync::Mutex::new(None);

/// Directories (machine paths) already swept by this process.
static SWEPT: std::sync::Mutex<Option<std::collections::HashSet<PathBuf>>> =
    std::sync::Mutex::new(None);

fn locked<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn apply_perms_fd(fd: &OwnedFd, perms: &Perms) -> Result<(), String> {
    if perms.uid.is_some() || perms.gid.is_some() {
        fchown(
            fd.as_fd(),
            perms.uid.map(Uid::from_raw),
            perms.gid.map(Gid::from_raw),
        )
        .map_err(|e| format!("cannot change owner: {}", e.desc()))?;
    }
    // After chown, because chown clears setuid/setgid bits.
    if let Some(mode) = perms.mode {
        nix::sys::stat::fchmod(fd.as_fd(), Mode::from_bits_truncate(mode))
            .map_err(|e| format!("cannot change mode: {}", e.desc()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{parse_temp_name, temp_name};

    #[test]
    fn temp_names_are_skipped_by_drop_in_readers_and_parse_back() {
        let t = temp_name("app");
        assert!(t.starts_with("app.reconcile-") && t.ends_with('~'), "{t}");
        assert_eq!(
            parse_temp_name(&t).map(|(n, p)| (n, u32::try_from(p).ok())),
            Some(("app", Some(std::process::id())))
        );
        assert_eq!(
            parse_temp_name(".a.b.reconcile-12-3.tmp"),
            Some(("a.b", 12))
        );
    }

    #[test]
    fn only_our_exact_temp_pattern_is_recognised() {
        for other in [
            "app",
            ".app~",
            ".app.reconcile-12-3",
            ".app.reconcile-x-3~",
            ".app.reconcile-12-~",
            ".app.reconcile-12-3~.tmp",
            ".reconcile-12-3~",
            ".app.reconcile-0-3~",
            ".app.reconcile-new",
        ] {
            assert_eq!(parse_temp_name(other), None, "{other}");
        }
    }
}
