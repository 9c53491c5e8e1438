//! apt and dpkg on the target: the one place that builds their command lines, reads
//! dpkg's database, waits for dpkg's frontend lock and runs a transaction. Used by
//! the `package` and `apt_source` kinds (and meant for the guarded upgrade).
//!
//! - Reads are cached per run and keyed by what they read: dpkg's status database by
//!   the file's identity (device, inode, size, mtime: dpkg replaces it by rename on
//!   every change), `apt-cache policy` and `apt-get -s` by the status identity, the
//!   lists' identity and the exact request. Parallel observers of one run wait for
//!   the first instead of each spawning apt.
//! - Queries against a root other than `/` run the machine's apt with `-o Dir=ROOT`
//!   (and dpkg's status file under it); changes are made only on `/` (apt's chroot
//!   support would run the target's maintainer scripts with the machine's tools).
//! - Changes run non-interactively (`DEBIAN_FRONTEND=noninteractive`,
//!   `--force-confold`) after waiting for dpkg's frontend lock
//!   ([`Apt::wait_frontend_lock`]); lock files are never deleted.

use std::collections::HashMap;
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::{fcntl, openat, AtFlags, FcntlArg, OFlag};
use nix::sys::stat::{fstatat, Mode};

use super::exec::{Cmd, Output};
use super::parse::apt::{parse_policy, parse_print_uris, parse_simulation, DebUri, Policy, SimOp};
use super::parse::dpkg::{parse_deb_contents, parse_status, DebMember, Status};
use super::{Host, HostError};

/// dpkg's status database.
pub const STATUS: &str = "/var/lib/dpkg/status";
/// The lock every dpkg frontend (apt, aptitude, unattended-upgrades) takes first.
pub const LOCK_FRONTEND: &str = "/var/lib/dpkg/lock-frontend";
/// Where dpkg lists each installed package's files.
pub const INFO_DIR: &str = "/var/lib/dpkg/info";
/// apt's cache of downloaded package files.
pub const ARCHIVES_DIR: &str = "/var/cache/apt/archives";
/// apt's downloaded indexes; `apt-get update` rewrites them.
pub const LISTS_DIR: &str = "/var/lib/apt/lists";
/// apt's record of every transaction.
pub const HISTORY_LOG: &str = "/var/log/apt/history.log";
/// How long a change waits for another frontend to release dpkg by default.
pub const DEFAULT_LOCK_TIMEOUT: Duration = Duration::from_secs(300);
/// How long one transaction may run (maintainer scripts can be slow).
pub const TRANSACTION_TIMEOUT: Duration = Duration::from_secs(3600);

/// A file's identity, which changes whenever dpkg or apt rewrites it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Ident {
    dev: u64,
    ino: u64,
    size: i64,
    mtime: (i64, i64),
}

/// A simulated transaction: its steps, or apt's refusal (its `E:` lines).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Simulation {
    Steps(Vec<SimOp>),
    Refused { errors: Vec<String> },
}

type Cache<K, V> = Mutex<Option<(K, Arc<V>)>>;

static STATUS_CACHE: Cache<(PathBuf, Option<Ident>), Status> = Mutex::new(None);
static POLICY_CACHE: Cache<QueryKey, HashMap<String, Policy>> = Mutex::new(None);
static SIM_CACHE: Cache<QueryKey, Simulation> = Mutex::new(None);
static DEB_CACHE: Cache<QueryKey, Vec<DebUri>> = Mutex::new(None);

/// What a query's answer depends on: the root, dpkg's database, apt's lists and the
/// request itself.
#[derive(Debug, Clone, PartialEq, Eq)]
struct QueryKey {
    root: PathBuf,
    status: Option<Ident>,
    lists: Option<Ident>,
    request: Vec<String>,
}

/// A cached value, computed under the cache's lock (so concurrent callers wait for
/// one computation) when its key changed.
fn cached<K: PartialEq + Clone, V>(
    cache: &Cache<K, V>,
    key: K,
    compute: impl FnOnce() -> Result<V, HostError>,
) -> Result<Arc<V>, HostError> {
    let mut slot = match cache.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    };
    if let Some((k, v)) = slot.as_ref() {
        if *k == key {
            return Ok(Arc::clone(v));
        }
    }
    let v = Arc::new(compute()?);
    *slot = Some((key, Arc::clone(&v)));
    Ok(v)
}

/// apt and dpkg on one target root.
pub struct Apt<'a> {
    host: &'a Host,
}

impl<'a> Apt<'a> {
    pub fn new(host: &'a Host) -> Apt<'a> {
        Apt { host }
    }

    /// `program` (apt-get, apt-cache) for a read-only query, with the options that
    /// point it at the target root: none on `/`, else `-o Dir=ROOT` and dpkg's
    /// status under it.
    /// Queries never write apt's binary caches (`pkgcache.bin`) nor a simulation's
    /// planner log (`eipp.log.xz`): plan and check leave the target as they found
    /// it, so the cache is built in memory.
    pub fn cmd(&self, program: &str) -> Cmd {
        let mut c = Cmd::new(program).args([
            "-o",
            "Dir::Cache::pkgcache=",
            "-o",
            "Dir::Cache::srcpkgcache=",
            "-o",
            "Dir::Log::Planner=",
        ]);
        if !self.host.is_machine_root() {
            let root = self.host.root().display().to_string();
            c = c
                .arg("-o")
                .arg(format!("Dir={root}/"))
                .arg("-o")
                .arg(format!("Dir::State::status={root}{STATUS}"));
        }
        c
    }

    /// A command that changes packages: non-interactive, keeping changed conffiles.
    fn changing(&self, program: &str) -> Result<Cmd, HostError> {
        if !self.host.is_machine_root() {
            return Err(HostError::Other(format!(
                "packages are changed only on the machine's own root (--root /), not {}: \
                 apt would run the target's maintainer scripts with this machine's tools",
                self.host.root().display()
            )));
        }
        Ok(Cmd::new(program)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .env("APT_LISTCHANGES_FRONTEND", "none")
            .env("NEEDRESTART_MODE", "l"))
    }

    /// The identity of a target file, `None` when it does not exist.
    pub fn ident(&self, path: &str) -> Result<Option<Ident>, HostError> {
        let Some(parent) = self.host.open_parent(path, None)? else {
            return Ok(None);
        };
        match fstatat(
            parent.dir.as_fd(),
            parent.name.as_str(),
            AtFlags::AT_SYMLINK_NOFOLLOW,
        ) {
            Ok(st) => Ok(Some(Ident {
                #[allow(clippy::useless_conversion)]
                dev: u64::from(st.st_dev),
                #[allow(clippy::useless_conversion)]
                ino: u64::from(st.st_ino),
                size: st.st_size,
                mtime: (st.st_mtime, st.st_mtime_nsec),
            })),
            Err(Errno::ENOENT) => Ok(None),
            Err(e) => Err(HostError::Path {
                path: self.host.show(path),
                reason: e.desc().to_string(),
            }),
        }
    }

    /// dpkg's status database, parsed once per version of the file. A target
    /// without one (a scratch root) has no packages.
    pub fn status(&self) -> Result<Arc<Status>, HostError> {
        let ident = self.ident(STATUS)?;
        let key = (self.host.root().to_path_buf(), ident);
        cached(&STATUS_CACHE, key, || {
            let Some((_, Some(bytes))) = self.host.read(STATUS)? else {
                return Ok(Status::default());
            };
            // Validating UTF-8 is several times faster than the lossy conversion,
            // which only a damaged file needs.
            let text = match std::str::from_utf8(&bytes) {
                Ok(t) => std::borrow::Cow::Borrowed(t),
                Err(_) => String::from_utf8_lossy(&bytes),
            };
            parse_status(&text).map_err(|e| HostError::Path {
                path: self.host.show(STATUS),
                reason: e.to_string(),
            })
        })
    }

    fn key(&self, request: Vec<String>) -> Result<QueryKey, HostError> {
        Ok(QueryKey {
            root: self.host.root().to_path_buf(),
            status: self.ident(STATUS)?,
            lists: self.ident(LISTS_DIR)?,
            request,
        })
    }

    /// `apt-cache policy NAMES`, one run for all names (callers pass every name the
    /// run needs, so that it is asked once per run).
    pub fn policy(&self, names: &[String]) -> Result<Arc<HashMap<String, Policy>>, HostError> {
        if names.is_empty() {
            return Ok(Arc::new(HashMap::new()));
        }
        let key = self.key(names.to_vec())?;
        cached(&POLICY_CACHE, key, || {
            let out = self
                .cmd("apt-cache")
                .arg("policy")
                .args(names.iter().cloned())
                .run()?;
            if !out.success() {
                return Err(HostError::Command {
                    command: "apt-cache policy".into(),
                    reason: out.reason(),
                });
            }
            Ok(parse_policy(&out.stdout))
        })
    }

    /// `apt-get -s install ARGS` (`name`, `name=version`, `name-`): the transaction
    /// apt would run, or its refusal.
    pub fn simulate(&self, args: &[String], purge: bool) -> Result<Arc<Simulation>, HostError> {
        let mut request = args.to_vec();
        if purge {
            request.push("--purge".into());
        }
        let key = self.key(request.clone())?;
        cached(&SIM_CACHE, key, || {
            let out = self
                .cmd("apt-get")
                .args(["-s", "-q", "--allow-downgrades", "install"])
                .args(request.iter().cloned())
                .run()?;
            let said = format!("{}\n{}", out.stdout, out.stderr);
            let errors: Vec<String> = super::parse::apt::errors(&said)
                .into_iter()
                .map(str::to_string)
                .collect();
            if out.success() {
                Ok(Simulation::Steps(parse_simulation(&out.stdout)))
            } else if errors.is_empty() {
                Err(HostError::Command {
                    command: format!("apt-get -s install {}", request.join(" ")),
                    reason: out.reason(),
                })
            } else {
                Ok(Simulation::Refused { errors })
            }
        })
    }

    /// The paths dpkg lists for an installed package (`info/NAME.list`, or
    /// `NAME:ARCH.list` for a multi-arch-same package); `None` when there is no list.
    pub fn package_files(&self, name: &str, arch: &str) -> Result<Option<Vec<String>>, HostError> {
        for file in [format!("{name}.list"), format!("{name}:{arch}.list")] {
            if let Some((_, Some(bytes))) = self.host.read(&format!("{INFO_DIR}/{file}"))? {
                let text = String::from_utf8_lossy(&bytes);
                return Ok(Some(
                    super::parse::dpkg::parse_list(&text)
                        .into_iter()
                        .map(str::to_string)
                        .collect(),
                ));
            }
        }
        Ok(None)
    }

    /// The package files apt would install for `names` (their candidates), as
    /// `apt-get download --print-uris` names them: one query for all names (callers
    /// pass every name of the run, so it runs once); a name apt does not know is
    /// simply missing (apt still prints the others).
    pub fn candidate_debs(&self, names: &[String]) -> Result<Arc<Vec<DebUri>>, HostError> {
        if names.is_empty() {
            return Ok(Arc::new(Vec::new()));
        }
        let key = self.key(names.to_vec())?;
        cached(&DEB_CACHE, key, || {
            let out = self
                .cmd("apt-get")
                .args(["-q", "download", "--print-uris"])
                .args(names.iter().cloned())
                .run()?;
            Ok(parse_print_uris(&out.stdout))
        })
    }

    /// What a candidate package file holds, when it is on this machine already: a
    /// `file:` source's file (where apt itself reads it) or apt's download cache
    /// under the root. `None` when it would have to be downloaded first.
    pub fn deb_contents(&self, deb: &DebUri) -> Result<Option<Vec<DebMember>>, HostError> {
        let local = deb
            .local_path()
            .filter(|p| std::path::Path::new(p).is_file())
            .map(PathBuf::from);
        let cached = format!("{ARCHIVES_DIR}/{}", deb.filename);
        let file = match local {
            Some(p) => p,
            None if !deb.filename.contains('/')
                && matches!(self.host.lstat(&cached)?, Some(st) if st.kind == super::FileKind::File) =>
            {
                self.host.root().join(cached.trim_start_matches('/'))
            }
            None => return Ok(None),
        };
        let out = Cmd::new("dpkg-deb")
            .arg("-c")
            .arg(file.display().to_string())
            .run()?;
        if !out.success() {
            return Err(HostError::Command {
                command: format!("dpkg-deb -c {}", file.display()),
                reason: out.reason(),
            });
        }
        Ok(Some(parse_deb_contents(&out.stdout)))
    }

    /// Who holds dpkg's frontend lock now: `Some(pid)` (0 when the kernel does not
    /// say), `None` when it is free or there is no lock file.
    pub fn frontend_lock_holder(&self) -> Result<Option<i32>, HostError> {
        let Some(parent) = self.host.open_parent(LOCK_FRONTEND, None)? else {
            return Ok(None);
        };
        let fd = match openat(
            parent.dir.as_fd(),
            parent.name.as_str(),
            OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC | OFlag::O_NONBLOCK,
            Mode::empty(),
        ) {
            Ok(fd) => fd,
            Err(Errno::ENOENT) => return Ok(None),
            Err(e) => {
                return Err(HostError::Path {
                    path: self.host.show(LOCK_FRONTEND),
                    reason: e.desc().to_string(),
                })
            }
        };
        // F_GETLK asks whether a write lock could be taken, without taking one: the
        // lock stays the holder's, and the file is never written or deleted.
        let mut probe = nix::libc::flock {
            l_type: nix::libc::F_WRLCK as i16,
            l_whence: nix::libc::SEEK_SET as i16,
            l_start: 0,
            l_len: 0,
            l_pid: 0,
        };
        fcntl(&fd, FcntlArg::F_GETLK(&mut probe)).map_err(|e| HostError::Path {
            path: self.host.show(LOCK_FRONTEND),
            reason: format!("cannot query the lock: {}", e.desc()),
        })?;
        if probe.l_type == nix::libc::F_UNLCK as i16 {
            Ok(None)
        } else {
            Ok(Some(probe.l_pid.max(0)))
        }
    }

    /// Waits until no other frontend holds dpkg's lock, at most `timeout`; gives up
    /// naming the holder. Returns the time left, for apt's own lock wait (the lock
    /// can be taken again between this check and apt's).
    pub fn wait_frontend_lock(&self, timeout: Duration) -> Result<Duration, HostError> {
        let started = Instant::now();
        let mut pause = Duration::from_millis(50);
        loop {
            let Some(pid) = self.frontend_lock_holder()? else {
                return Ok(timeout.saturating_sub(started.elapsed()));
            };
            if started.elapsed() >= timeout {
                let who = if pid > 0 {
                    format!("process {pid}{}", self.process_name(pid))
                } else {
                    "another process".to_string()
                };
                return Err(HostError::Other(format!(
                    "dpkg is busy: {who} holds {} (waited {}s; the lock was left alone)",
                    self.host.show(LOCK_FRONTEND),
                    timeout.as_secs()
                )));
            }
            std::thread::sleep(pause.min(timeout.saturating_sub(started.elapsed())));
            pause = (pause * 2).min(Duration::from_secs(1));
        }
    }

    /// ` (NAME)` of a process on this machine, for messages; empty when unknown.
    fn process_name(&self, pid: i32) -> String {
        std::fs::read_to_string(format!("/proc/{pid}/comm"))
            .map(|c| format!(" ({})", c.trim()))
            .unwrap_or_default()
    }

    /// Runs one `apt-get` change (`install ARGS`, `update`) once dpkg's lock is
    /// free: apt waits for what is left of `lock_timeout` itself if another frontend
    /// takes the lock in between.
    pub fn get(&self, args: &[String], lock_timeout: Duration) -> Result<Output, HostError> {
        let cmd = self.changing("apt-get")?;
        let left = self.wait_frontend_lock(lock_timeout)?;
        let cmd = cmd
            .args(["-y", "-q"])
            .arg("-o")
            .arg(format!("DPkg::Lock::Timeout={}", left.as_secs().max(1)))
            .arg("-o")
            .arg("Dpkg::Options::=--force-confold")
            .args(args.iter().cloned())
            .timeout(TRANSACTION_TIMEOUT);
        let out = cmd.run()?;
        if out.success() {
            Ok(out)
        } else {
            Err(HostError::Command {
                command: cmd.display(),
                reason: last_words(&out),
            })
        }
    }

    /// `apt-mark hold|unhold NAMES`.
    pub fn mark(
        &self,
        verb: &str,
        names: &[String],
        lock_timeout: Duration,
    ) -> Result<(), HostError> {
        if names.is_empty() {
            return Ok(());
        }
        let cmd = self.changing("apt-mark")?;
        self.wait_frontend_lock(lock_timeout)?;
        cmd.arg(verb)
            .args(names.iter().cloned())
            .run_ok()
            .map(|_| ())
    }

    /// `dpkg --purge NAMES`: config files of packages already removed.
    pub fn purge_removed(&self, names: &[String], lock_timeout: Duration) -> Result<(), HostError> {
        if names.is_empty() {
            return Ok(());
        }
        let cmd = self.changing("dpkg")?;
        self.wait_frontend_lock(lock_timeout)?;
        cmd.arg("--purge")
            .args(names.iter().cloned())
            .timeout(TRANSACTION_TIMEOUT)
            .run_ok()
            .map(|_| ())
    }
}

impl Apt<'_> {
    /// `dpkg --configure -a`: finishes what an interrupted dpkg run left. No kind runs
    /// it on its own; it is here for the one that decides when (the guarded upgrade).
    pub fn configure_pending(&self, lock_timeout: Duration) -> Result<Output, HostError> {
        let cmd = self.changing("dpkg")?;
        self.wait_frontend_lock(lock_timeout)?;
        let cmd = cmd
            .args(["--force-confold", "--configure", "-a"])
            .timeout(TRANSACTION_TIMEOUT);
        let out = cmd.run()?;
        if out.success() {
            Ok(out)
        } else {
            Err(HostError::Command {
                command: cmd.display(),
                reason: last_words(&out),
            })
        }
    }
}

/// What an error shows of a failed apt run: its `E:` lines and the last lines before
/// them (apt prints the package and the dpkg error there).
pub fn last_words(out: &Output) -> String {
    let said = format!("{}\n{}", out.stdout, out.stderr);
    let lines: Vec<&str> = said.lines().filter(|l| !l.trim().is_empty()).collect();
    let tail = lines[lines.len().saturating_sub(8)..].join("\n");
    let code = match out.status {
        Some(c) => format!("exit code {c}"),
        None => "killed by a signal".into(),
    };
    format!("{code}: {tail}")
}
