//! Sandbox roots for integration tests: a scratch target root and manifests folder,
//! running the real binary, and snapshots of a whole root to prove that read-only
//! commands change nothing.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Output;

use sha2::{Digest, Sha256};

/// Paths that are reconcile's own bookkeeping, not managed state: the run lock and
/// the audit trail. Everything else must be byte-identical after read-only commands.
const BOOKKEEPING: &[&str] = &[
    "run/reconcile.lock",
    "var/log/reconcile",
    "var/lib/reconcile",
];

pub struct Sandbox {
    _dir: tempfile::TempDir,
    pub root: PathBuf,
    pub manifests: PathBuf,
}

impl Sandbox {
    pub fn new() -> Sandbox {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
        let root = dir.path().join("root");
        let manifests = dir.path().join("manifests");
        for d in [&root, &manifests] {
            std::fs::create_dir_all(d).unwrap_or_else(|e| panic!("mkdir: {e}"));
        }
        Sandbox {
            _dir: dir,
            root,
            manifests,
        }
    }

    /// Writes a manifest (or template) file below the manifests folder.
    pub fn manifest(&self, name: &str, text: &str) -> PathBuf {
        let p = self.manifests.join(name);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).unwrap_or_else(|e| panic!("mkdir: {e}"));
        }
        std::fs::write(&p, text).unwrap_or_else(|e| panic!("write {}: {e}", p.display()));
        p
    }

    /// Writes a file inside the target root.
    pub fn put(&self, path: &str, content: &[u8]) -> PathBuf {
        let p = self.path(path);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).unwrap_or_else(|e| panic!("mkdir: {e}"));
        }
        std::fs::write(&p, content).unwrap_or_else(|e| panic!("write {}: {e}", p.display()));
        p
    }

    pub fn path(&self, path: &str) -> PathBuf {
        self.root.join(path.trim_start_matches('/'))
    }

    pub fn read(&self, path: &str) -> String {
        std::fs::read_to_string(self.path(path)).unwrap_or_else(|e| panic!("read {path}: {e}"))
    }

    pub fn mode(&self, path: &str) -> u32 {
        std::fs::symlink_metadata(self.path(path))
            .map(|m| m.mode() & 0o7777)
            .unwrap_or_else(|e| panic!("stat {path}: {e}"))
    }

    /// Runs `reconcile CMD --root ROOT ARGS...` from the manifests folder.
    pub fn run(&self, cmd: &str, args: &[&str]) -> Run {
        let mut c =
            assert_cmd::Command::cargo_bin("reconcile").unwrap_or_else(|e| panic!("binary: {e}"));
        c.current_dir(&self.manifests)
            .env("NO_COLOR", "1")
            .arg(cmd)
            .arg("--root")
            .arg(&self.root)
            .args(args);
        Run(c.output().unwrap_or_else(|e| panic!("run: {e}")))
    }

    pub fn snapshot(&self) -> BTreeMap<String, String> {
        snapshot(&self.root)
    }

    /// Applies, asserts success, then asserts that a plan right after shows no changes.
    pub fn converge(&self, args: &[&str]) -> Run {
        let applied = self.run("apply", args);
        applied.assert_code(0);
        let mut plan_args = vec!["--detailed-exitcode"];
        plan_args.extend_from_slice(args);
        let again = self.run("plan", &plan_args);
        assert_eq!(
            again.code(),
            0,
            "plan after apply is not empty:\n{}",
            again.all()
        );
        assert!(again.stdout().contains("No changes."), "{}", again.all());
        applied
    }
}

pub struct Run(pub Output);

impl Run {
    pub fn code(&self) -> i32 {
        self.0.status.code().unwrap_or(-1)
    }
    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.0.stdout).into_owned()
    }
    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.0.stderr).into_owned()
    }
    pub fn all(&self) -> String {
        format!(
            "--- exit {}\n--- stdout\n{}--- stderr\n{}",
            self.code(),
            self.stdout(),
            self.stderr()
        )
    }
    pub fn assert_code(&self, code: i32) -> &Run {
        assert_eq!(self.code(), code, "{}", self.all());
        self
    }
}

/// Every path below `root` with its type, mode, owner, and content hash or link target.
pub fn snapshot(root: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, String>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let rel = path
            .strip_prefix(root)
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        if BOOKKEEPING
            .iter()
            .any(|b| rel == *b || rel.starts_with(&format!("{b}/")))
        {
            continue;
        }
        // The folders holding the bookkeeping may be created by a run; their other
        // content is still compared below.
        let holds_bookkeeping = BOOKKEEPING
            .iter()
            .any(|b| b.starts_with(&format!("{rel}/")));
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        let kind = if meta.file_type().is_symlink() {
            format!(
                "link->{}",
                std::fs::read_link(&path)
                    .map(|t| t.display().to_string())
                    .unwrap_or_default()
            )
        } else if meta.is_dir() {
            "dir".to_string()
        } else {
            let bytes = std::fs::read(&path).unwrap_or_default();
            format!("file:{:x}", Sha256::digest(&bytes))
        };
        if !holds_bookkeeping {
            out.insert(
                rel,
                format!(
                    "{kind} {:o} {}:{}",
                    meta.mode() & 0o7777,
                    meta.uid(),
                    meta.gid()
                ),
            );
        }
        if meta.is_dir() {
            walk(root, &path, out);
        }
    }
}

pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Skips a test that needs root, unless CI requires everything to run.
pub fn require_root(test: &str) -> bool {
    if is_root() {
        return true;
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "{test} needs root, and CI runs everything"
    );
    eprintln!("skipping {test}: needs root");
    false
}
