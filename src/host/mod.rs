//! The Host: every read and write of the target goes through here.
//!
//! All paths are manifest paths (absolute, normalised: `/etc/x`) resolved under the
//! target root by walking directory file descriptors component by component with
//! `O_NOFOLLOW`, so a symlink the manifest did not declare is refused, never followed,
//! and nothing can escape the root.

pub mod accounts;
pub mod apt;
pub mod exec;
pub mod facts;
pub mod fs;
pub mod lock;
pub mod parse;
pub mod state;

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use nix::fcntl::{open, OFlag};
use nix::sys::stat::Mode;

pub use exec::{Cmd, Output};
pub use fs::{FileKind, Perms, Stat};

#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum HostError {
    #[error("{path}: {reason}")]
    Path { path: String, reason: String },
    #[error("unsafe path {path}: {reason}")]
    Unsafe { path: String, reason: String },
    #[error("`{command}` failed: {reason}")]
    Command { command: String, reason: String },
    #[error("{0}")]
    Other(String),
}

pub struct Host {
    root: PathBuf,
    root_fd: OwnedFd,
    /// The network namespace whose kernel state (the nftables ruleset) the run
    /// targets (`--netns NAME`): tools that change the running kernel run inside it
    /// with `ip netns exec`. `None`: the namespace reconcile runs in.
    netns: Option<String>,
    /// Run options for kinds that change the running kernel's state.
    pub kernel: KernelOptions,
}

/// What the command line says about changing the running kernel's state (the
/// firewall): kinds read it, the engine does not.
#[derive(Debug, Clone, Default)]
pub struct KernelOptions {
    /// `--allow-lockout`: apply a ruleset even if it drops the current SSH session.
    pub allow_lockout: bool,
    /// `--confirm-within`: roll a changed ruleset back unless confirmed in time.
    pub confirm_within: Option<std::time::Duration>,
}

impl std::fmt::Debug for Host {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Host").field("root", &self.root).finish()
    }
}

impl Host {
    /// Opens the target root. The root itself may be a symlink (a user's choice on the
    /// command line); nothing below it may be.
    pub fn open(root: &Path) -> Result<Host, HostError> {
        let root = std::fs::canonicalize(root).map_err(|e| HostError::Path {
            path: root.display().to_string(),
            reason: format!("cannot open target root: {e}"),
        })?;
        let root_fd = open(
            &root,
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| HostError::Path {
            path: root.display().to_string(),
            reason: format!("cannot open target root: {}", e.desc()),
        })?;
        Ok(Host {
            root,
            root_fd,
            netns: None,
            kernel: KernelOptions::default(),
        })
    }

    /// The same target, with its kernel state in network namespace `netns`.
    pub fn in_netns(mut self, netns: Option<String>) -> Host {
        self.netns = netns;
        self
    }

    /// The network namespace targeted (`--netns`), if any.
    pub fn netns(&self) -> Option<&str> {
        self.netns.as_deref()
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// True when the target is the machine itself (`--root /`).
    pub fn is_machine_root(&self) -> bool {
        self.root == Path::new("/")
    }

    /// The machine-side path of a manifest path, for external tools and messages.
    pub fn real_path(&self, path: &str) -> PathBuf {
        self.root.join(path.trim_start_matches('/'))
    }

    /// A manifest path as shown in errors: the path itself when the root is `/`,
    /// else the path with the root in front, so the operator sees what was touched.
    pub fn show(&self, path: &str) -> String {
        self.real_path(path).display().to_string()
    }
}
