//! Append-only, hash-chained audit log and its verifier (HIPAA 164.312(b) audit controls,
//! 164.312(c)(1) integrity).
//!
//! Every record is one JSON line produced by `serde_json` (never by string interpolation), so
//! quotes or newlines in the data cannot break the line or forge fields. Each record carries the
//! SHA-256 of the previous line's exact bytes, so editing, deleting, reordering or inserting a
//! line breaks the chain at a known seq. A small head file (outside the log, rewritten atomically
//! after every append) lets the chain continue across logrotate and lets `verify_with_head`
//! detect truncation. Optional HMAC checkpoints, keyed by a file that is not in the log, detect a
//! consistent rewrite of the whole chain. The format is documented in docs/audit.md.
//!
//! The log and head files under a target root are reached only through [`Host`] (the root-safe
//! walk and atomic write of `src/host/state.rs`), like every other path under `--root`; files
//! named on the `audit` command line are read where the operator says.

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use hmac::{Hmac, Mac};
use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg, OFlag};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::host::{Host, HostError};
use crate::plan::{hex, sha256_hex};
use crate::render::escape_controls;

/// Live log, relative to the target root.
pub const DEFAULT_LOG: &str = "/var/log/reconcile/audit.jsonl";
/// Chain head state, relative to the target root. Lives outside the log directory so that
/// logrotate never touches it.
pub const DEFAULT_HEAD: &str = "/var/lib/reconcile/audit-head.json";

/// The head file of a log. Each log has its own, so a run that writes to the default log (a
/// refused run that could not read `settings.audit_log`) never moves the head of a configured
/// one: the default log keeps [`DEFAULT_HEAD`], any other log gets one named after its path.
pub fn head_for(log: &str) -> String {
    if log == DEFAULT_LOG {
        DEFAULT_HEAD.to_string()
    } else {
        format!(
            "/var/lib/reconcile/audit-head-{}.json",
            &sha256_hex(log.as_bytes())[..16]
        )
    }
}

/// `prev` of the first record ever written.
pub const GENESIS_PREV: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Events written by this module itself; callers may not use them, so that their data layout
/// can be checked by `verify`.
pub const EVENT_CONTINUED: &str = "continued";
pub const EVENT_RECOVERED: &str = "recovered";
pub const EVENT_CHECKPOINT: &str = "checkpoint";
/// First record of a new segment started by `apply --audit-recover` after the live log failed
/// verification and was moved aside.
pub const EVENT_SEGMENT: &str = "segment";
const RESERVED_EVENTS: [&str; 4] = [
    EVENT_CONTINUED,
    EVENT_RECOVERED,
    EVENT_CHECKPOINT,
    EVENT_SEGMENT,
];

/// Upper bound for one serialized record; a runaway diff in `data` must not produce a line that
/// readers have to buffer without limit.
pub const MAX_RECORD_BYTES: usize = 1 << 20;
/// Minimum checkpoint key length (bytes after trimming a text key).
pub const MIN_KEY_BYTES: usize = 16;

const LOG_MODE: u32 = 0o640;
const DIR_MODE: u32 = 0o750;
const MAX_HEAD_BYTES: u64 = 64 * 1024;
const MAX_KEY_BYTES: u64 = 64 * 1024;
const CHECKPOINT_DOMAIN: &[u8] = b"reconcile-audit-checkpoint-v1\0";
const KEY_ID_DOMAIN: &[u8] = b"reconcile-audit-key-id-v1";

type HmacSha256 = Hmac<Sha256>;

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("audit log: cannot {op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("audit log: refusing to open {path}: it is a symbolic link (the audit log and its head file are never followed through symlinks)")]
    Symlink { path: PathBuf },
    #[error(
        "audit log: {path} is locked by another process (is another reconcile apply running?)"
    )]
    Locked { path: PathBuf },
    #[error("audit log: {path} has unsafe permissions {mode:04o} or owner uid {uid} and they could not be tightened to 0640 and root/current user: {reason}")]
    UnsafePermissions {
        path: PathBuf,
        mode: u32,
        uid: u32,
        reason: String,
    },
    #[error("audit log: {path} line {line} is not a valid audit record ({reason}); refusing to append until it is investigated (run `reconcile audit verify`)")]
    Corrupt {
        path: PathBuf,
        line: usize,
        reason: String,
    },
    #[error("audit log: {log} ends at seq {log_seq} but head file {head} records seq {head_seq}: {reason}; refusing to append. Investigate with `reconcile audit verify` (it compares the log with the head file; add --root for another root); after investigating, `reconcile apply --audit-recover` moves the log aside unchanged and starts a new, recorded segment")]
    HeadMismatch {
        log: PathBuf,
        head: PathBuf,
        log_seq: u64,
        head_seq: u64,
        reason: String,
    },
    #[error("audit log: head file {head} is missing and {log} is empty, but the newest rotated log {rotated} cannot be read ({reason}); refusing to restart the chain at seq 1. Restore the head file, or make the rotated log readable (e.g. decompress it)")]
    NoHead {
        log: PathBuf,
        head: PathBuf,
        rotated: PathBuf,
        reason: String,
    },
    #[error("audit log: the chain in {path} is broken ({at}); refusing to append. Investigate with `reconcile audit verify` (add --root for another root); after investigating, `reconcile apply --audit-recover` moves the log aside unchanged and starts a new, recorded segment")]
    Broken {
        path: PathBuf,
        /// The first seq whose link is broken, when known.
        seq: Option<u64>,
        at: String,
    },
    #[error("audit log: {0}")]
    Host(#[from] HostError),
    #[error("audit log: head file {path} is invalid: {reason}")]
    BadHead { path: PathBuf, reason: String },
    #[error("audit log: key file {path}: {reason}")]
    Key { path: PathBuf, reason: String },
    #[error("audit log: checkpoint key is {len} bytes; at least {MIN_KEY_BYTES} are required")]
    WeakKey { len: usize },
    #[error("audit log: invalid event name {event:?}: {reason}")]
    InvalidEvent { event: String, reason: String },
    #[error("audit log: not appending to {path}: the record is {size} bytes, over the limit of {max} bytes")]
    TooLarge {
        path: PathBuf,
        size: usize,
        max: usize,
    },
    #[error("audit log: cannot serialize record: {0}")]
    Serialize(#[from] serde_json::Error),
    #[error("audit log: {path} is unusable after an earlier failed write that could not be rolled back; reopen it (the torn tail is then recovered)")]
    Poisoned { path: PathBuf },
    #[error("audit log: {path} is gzip-compressed; decompress it first (zcat) or rotate without `compress`")]
    Compressed { path: PathBuf },
    #[error("audit log: no log files given to verify")]
    NoFiles,
}

impl AuditError {
    /// The log's content failed verification (as opposed to an I/O or permission problem):
    /// what `--audit-recover` may start a new segment after.
    pub fn is_integrity(&self) -> bool {
        matches!(
            self,
            AuditError::Corrupt { .. }
                | AuditError::HeadMismatch { .. }
                | AuditError::Broken { .. }
        )
    }
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> AuditError + 'a {
    move |source| AuditError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// Who and what is writing: repeated in every record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditContext {
    pub host: String,
    pub user: String,
    pub pid: u32,
    pub run_id: String,
}

impl AuditContext {
    /// The context of this process: host name, effective user name (with the kernel login uid
    /// when it differs, so `sudo` keeps the accountable person), pid.
    pub fn current(run_id: impl Into<String>) -> AuditContext {
        let host = nix::unistd::gethostname()
            .map(|h| h.to_string_lossy().into_owned())
            .unwrap_or_else(|_| "unknown".to_string());
        let euid = nix::unistd::geteuid();
        let mut user = user_name(euid.as_raw());
        // The login uid is set by pam_loginuid and is not changed by sudo/su, unlike SUDO_USER
        // which any caller can set; it is what auditd uses for accountability too.
        if let Ok(s) = fs::read_to_string("/proc/self/loginuid") {
            if let Ok(login) = s.trim().parse::<u32>() {
                if login != u32::MAX && login != euid.as_raw() {
                    user = format!("{user} (login {})", user_name(login));
                }
            }
        }
        AuditContext {
            host,
            user,
            pid: std::process::id(),
            run_id: run_id.into(),
        }
    }
}

fn user_name(uid: u32) -> String {
    match nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid)) {
        Ok(Some(u)) => u.name,
        _ => format!("uid {uid}"),
    }
}

/// A run id unique enough to correlate the records of one run: UTC time plus random bits.
pub fn new_run_id() -> String {
    let mut rnd = [0u8; 4];
    let got_random = File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut rnd))
        .is_ok();
    if !got_random {
        // Falls back to pid + nanoseconds; uniqueness, not secrecy, is what matters here.
        let n = jiff::Timestamp::now().subsec_nanosecond() as u32 ^ std::process::id();
        rnd = n.to_be_bytes();
    }
    let ts = jiff::Timestamp::now().strftime("%Y%m%dT%H%M%SZ");
    format!("{ts}-{}", hex(&rnd))
}

/// The on-disk record. Field order is part of the format (docs/audit.md); do not reorder.
#[derive(Serialize)]
struct RecordOut<'a> {
    seq: u64,
    prev: &'a str,
    ts: &'a str,
    event: &'a str,
    host: &'a str,
    user: &'a str,
    pid: u32,
    run: &'a str,
    data: &'a Value,
}

/// A record as read back. Unknown fields are rejected so a forger cannot smuggle a second
/// meaning into a line, and duplicate keys are rejected by serde for struct fields.
#[derive(Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields)]
pub struct Record {
    pub seq: u64,
    pub prev: String,
    pub ts: String,
    pub event: String,
    pub host: String,
    pub user: String,
    pub pid: u32,
    pub run: String,
    pub data: Value,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
struct HeadState {
    seq: u64,
    hash: String,
    log: String,
}

impl HeadState {
    /// Whether this head was written for `log` (a path under the root; the head records the
    /// machine path, which ends with it). Before each log had its own head, a configured log
    /// and the default one shared the default head: such a head names the other log and is
    /// not this log's.
    fn is_of(&self, log: &str) -> bool {
        self.log.ends_with(log)
    }
}

/// An open, locked, append-only audit log.
pub struct AuditLog<'h> {
    host: &'h Host,
    file: Flock<File>,
    /// Path under the root, for the host; `log_path` is the machine path, for messages.
    log: String,
    log_path: PathBuf,
    head: String,
    ctx: AuditContext,
    seq: u64,
    hash: String,
    /// File length after the last complete record: where to roll back to if a write fails.
    len: u64,
    poisoned: bool,
}

impl fmt::Debug for AuditLog<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuditLog")
            .field("log", &self.log)
            .field("head", &self.head)
            .field("seq", &self.seq)
            .field("hash", &self.hash)
            .finish()
    }
}

impl<'h> AuditLog<'h> {
    /// `log` and `head` are paths under the host's root (`/var/log/reconcile/audit.jsonl`),
    /// reached by the root-safe walk: no symlinked component is followed, and missing parents
    /// are made 0750. The log is created 0640 and opened with O_APPEND|O_NOFOLLOW. Fails with a
    /// clear error if not writable (the apply then refuses to start). Takes an exclusive,
    /// non-blocking flock on the log for the lifetime of the value.
    ///
    /// The whole live log is verified before anything is appended: a broken link anywhere in it
    /// (an edited, deleted, inserted or swapped record), a last record that does not match the
    /// head file, or a line that is not a record refuses the open and leaves the file as it was.
    /// With `recover`, such a log is moved aside instead and a new segment is started whose
    /// first record (`segment`) names the moved file, its size and SHA-256, and the reason.
    ///
    /// May append records before returning: `continued` when the log is empty or missing but the
    /// head file exists (rotation), `recovered` when the log ended in a torn line (which is
    /// truncated away; its length and SHA-256 go into the record).
    pub fn open(
        host: &'h Host,
        log: &str,
        head: &str,
        ctx: AuditContext,
        recover: bool,
    ) -> Result<AuditLog<'h>, AuditError> {
        match Self::open_checked(host, log, head, ctx.clone()) {
            Err(e) if recover && e.is_integrity() => Self::start_segment(host, log, head, ctx, &e),
            other => other,
        }
    }

    fn open_checked(
        host: &'h Host,
        log: &str,
        head: &str,
        ctx: AuditContext,
    ) -> Result<AuditLog<'h>, AuditError> {
        let log_path = host.real_path(log);
        let head_path = host.real_path(head);
        let (file, created) = host.open_state_append(log, DIR_MODE, LOG_MODE)?;
        let file = lock_log(file, &log_path)?;
        let head_state = read_head_in(host, head)?.filter(|h| h.is_of(log));

        let mut len = file.metadata().map_err(io_err("stat", &log_path))?.len();
        let mut torn: Option<(u64, String, u64)> = None;
        if len > 0 && read_byte_at(&file, len - 1, &log_path)? != b'\n' {
            let keep = match rfind_newline(&file, len, &log_path)? {
                Some(p) => p + 1,
                None => 0,
            };
            // Truncated only once the rest of the log checks out below, so that a refused open
            // leaves the evidence as it found it.
            let (n, sha) = hash_range(&file, keep, len, &log_path)?;
            torn = Some((n, sha, keep));
            len = keep;
        }
        verify_live(&file, len, &log_path)?;

        let mut continued_from: Option<HeadState> = None;
        let (seq, hash) = match last_line(&file, len, &log_path)? {
            Some((start, bytes)) => {
                let rec = parse_record(&bytes).map_err(|reason| AuditError::Corrupt {
                    path: log_path.clone(),
                    line: line_number_at(&file, start, &log_path),
                    reason,
                })?;
                let hash = sha256_hex(&bytes);
                if let Some(h) = head_state.as_ref().filter(|h| h.seq > 0) {
                    let consistent = (h.seq == rec.seq && h.hash == hash)
                        // The head lags by one record when a crash hit between the log fsync
                        // and the head rename.
                        || (h.seq + 1 == rec.seq && h.hash == rec.prev);
                    if !consistent {
                        let reason = if rec.seq < h.seq {
                            "records are missing from the end of the log (truncated or replaced)"
                                .to_string()
                        } else if rec.seq == h.seq {
                            "the last record differs from the one the head file recorded (edited or replaced)"
                                .to_string()
                        } else {
                            "the log has records the head file never saw (head file stale or replaced)"
                                .to_string()
                        };
                        return Err(AuditError::HeadMismatch {
                            log: log_path,
                            head: head_path,
                            log_seq: rec.seq,
                            head_seq: h.seq,
                            reason,
                        });
                    }
                }
                (rec.seq, hash)
            }
            None => match head_state.filter(|h| h.seq > 0) {
                Some(h) => {
                    let st = (h.seq, h.hash.clone());
                    continued_from = Some(h);
                    st
                }
                // No head, empty log: a genuine first run, unless rotated logs exist (the head
                // file was lost); then the chain continues from the newest of them rather than
                // silently restarting at seq 1.
                None => match head_from_rotated(host, log, head)? {
                    Some(h) => {
                        let st = (h.seq, h.hash.clone());
                        continued_from = Some(h);
                        st
                    }
                    None => (0, GENESIS_PREV.to_string()),
                },
            },
        };

        // Only now, with the content known to be an audit log: a file that is not one is
        // refused above with its mode untouched.
        if !created {
            let meta = file.metadata().map_err(io_err("stat", &log_path))?;
            check_log_perms(&file, &meta, &log_path)?;
        }
        if torn.is_some() {
            file.set_len(len)
                .map_err(io_err("truncate torn tail of", &log_path))?;
            file.sync_all().map_err(io_err("fsync", &log_path))?;
        }
        let mut audit = AuditLog {
            host,
            file,
            log: log.to_string(),
            log_path,
            head: head.to_string(),
            ctx,
            seq,
            hash,
            len,
            poisoned: false,
        };
        if let Some(h) = continued_from {
            audit.append(
                EVENT_CONTINUED,
                &serde_json::json!({
                    "previous_seq": h.seq,
                    "previous_hash": h.hash,
                    "previous_log": h.log,
                }),
            )?;
        }
        if let Some((bytes, sha, offset)) = torn {
            audit.append(
                EVENT_RECOVERED,
                &serde_json::json!({
                    "discarded_bytes": bytes,
                    "discarded_sha256": sha,
                    "offset": offset,
                }),
            )?;
        }
        // Proves now, before the apply starts, that the head file can be written (and repairs a
        // head that lagged after a crash). At seq 0 it records the empty chain.
        audit.write_head()?;
        Ok(audit)
    }

    /// `--audit-recover`: moves a log that failed verification aside, unchanged, and starts a
    /// new live log whose first record says where the old one went and why. The chain
    /// continues from the head file (the last state this host vouched for), else from the last
    /// record of the moved log.
    fn start_segment(
        host: &'h Host,
        log: &str,
        head: &str,
        ctx: AuditContext,
        why: &AuditError,
    ) -> Result<AuditLog<'h>, AuditError> {
        let log_path = host.real_path(log);
        let (file, _) = host.open_state_append(log, DIR_MODE, LOG_MODE)?;
        let file = lock_log(file, &log_path)?;
        let len = file.metadata().map_err(io_err("stat", &log_path))?.len();
        // Never move a file that never was an audit log (a mistyped `audit_log:`).
        if let Some(first) = first_line(&file, len, &log_path)? {
            if parse_record(&first).is_err() {
                return Err(AuditError::Corrupt {
                    path: log_path,
                    line: 1,
                    reason: "the file does not start with an audit record, so it is not an audit log; --audit-recover moves only audit logs aside".into(),
                });
            }
        }
        let (moved_bytes, moved_sha) = hash_range(&file, 0, len, &log_path)?;
        let end = rfind_newline(&file, len, &log_path)?.map_or(0, |p| p + 1);
        let from_log = match last_line(&file, end, &log_path)? {
            Some((_, bytes)) => parse_record(&bytes)
                .ok()
                .map(|r| (r.seq, sha256_hex(&bytes))),
            None => None,
        };
        let head_state = read_head_in(host, head)?.filter(|h| h.seq > 0 && h.is_of(log));
        let (prev_seq, prev_hash) = match head_state {
            Some(h) => (h.seq, h.hash),
            None => from_log.unwrap_or((0, GENESIS_PREV.to_string())),
        };
        let stamp = jiff::Timestamp::now()
            .strftime("%Y%m%dT%H%M%SZ")
            .to_string();
        let mut moved = format!("{log}.broken-{stamp}");
        let mut n = 1;
        while host.lstat(&moved)?.is_some() {
            n += 1;
            moved = format!("{log}.broken-{stamp}-{n}");
        }
        host.rename(log, &moved)?;
        drop(file);
        let (file, _) = host.open_state_append(log, DIR_MODE, LOG_MODE)?;
        let file = lock_log(file, &log_path)?;
        let len = file.metadata().map_err(io_err("stat", &log_path))?.len();
        if len != 0 {
            // Someone wrote a new log between the rename and here: not ours to continue.
            return Err(AuditError::Locked { path: log_path });
        }
        let mut audit = AuditLog {
            host,
            file,
            log: log.to_string(),
            log_path,
            head: head.to_string(),
            ctx,
            seq: prev_seq,
            hash: prev_hash.clone(),
            len: 0,
            poisoned: false,
        };
        audit.append(
            EVENT_SEGMENT,
            &serde_json::json!({
                "previous_seq": prev_seq,
                "previous_hash": prev_hash,
                "moved_to": host.show(&moved),
                "moved_bytes": moved_bytes,
                "moved_sha256": moved_sha,
                "reason": why.to_string(),
            }),
        )?;
        Ok(audit)
    }

    /// Appends one record and fsyncs before returning. Returns its seq.
    pub fn record(&mut self, event: &str, data: Value) -> Result<u64, AuditError> {
        validate_event(event)?;
        if RESERVED_EVENTS.contains(&event) {
            return Err(AuditError::InvalidEvent {
                event: event.to_string(),
                reason: "reserved for records written by the audit module itself".to_string(),
            });
        }
        self.append(event, &data)
    }

    /// Appends a keyed checkpoint: HMAC-SHA256 (key from a key file outside the log) over the
    /// current head (seq and hash). Returns the checkpoint's seq.
    pub fn checkpoint(&mut self, key: &[u8]) -> Result<u64, AuditError> {
        if key.len() < MIN_KEY_BYTES {
            return Err(AuditError::WeakKey { len: key.len() });
        }
        let data = serde_json::json!({
            "covers_seq": self.seq,
            "covers_hash": self.hash,
            "key_id": key_id(key),
            "mac": checkpoint_mac(key, self.seq, &self.hash),
        });
        self.append(EVENT_CHECKPOINT, &data)
    }

    /// Seq of the last record written (0 before the first record ever).
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// SHA-256 hex of the last record line (the `prev` of the next one).
    pub fn head_hash(&self) -> &str {
        &self.hash
    }

    pub fn path(&self) -> &Path {
        &self.log_path
    }

    fn append(&mut self, event: &str, data: &Value) -> Result<u64, AuditError> {
        if self.poisoned {
            return Err(AuditError::Poisoned {
                path: self.log_path.clone(),
            });
        }
        let seq = self.seq + 1;
        let ts = format!("{:.6}", jiff::Timestamp::now());
        let rec = RecordOut {
            seq,
            prev: &self.hash,
            ts: &ts,
            event,
            host: &self.ctx.host,
            user: &self.ctx.user,
            pid: self.ctx.pid,
            run: &self.ctx.run_id,
            data,
        };
        let mut line = serde_json::to_vec(&rec)?;
        if line.len() > MAX_RECORD_BYTES {
            return Err(AuditError::TooLarge {
                path: self.log_path.clone(),
                size: line.len(),
                max: MAX_RECORD_BYTES,
            });
        }
        // Compact serde_json escapes every control character inside strings; a raw newline
        // here would mean a serializer bug, and would split the record.
        if line.contains(&b'\n') {
            return Err(AuditError::Corrupt {
                path: self.log_path.clone(),
                line: 0,
                reason: "serialized record contains a raw newline".to_string(),
            });
        }
        let hash = sha256_hex(&line);
        line.push(b'\n');
        let written = self
            .file
            .write_all(&line)
            .and_then(|()| self.file.sync_data());
        if let Err(e) = written {
            // A partial line followed by later records would break the chain for good: roll
            // back to the last complete record, or refuse further appends.
            if self.file.set_len(self.len).is_err() {
                self.poisoned = true;
            }
            return Err(AuditError::Io {
                op: "append to",
                path: self.log_path.clone(),
                source: e,
            });
        }
        self.len += line.len() as u64;
        self.seq = seq;
        self.hash = hash;
        self.write_head()?;
        Ok(seq)
    }

    fn write_head(&self) -> Result<(), AuditError> {
        let state = HeadState {
            seq: self.seq,
            hash: self.hash.clone(),
            log: self.log_path.to_string_lossy().into_owned(),
        };
        let mut bytes = serde_json::to_vec(&state)?;
        bytes.push(b'\n');
        self.host
            .write_state(&self.head, &bytes, DIR_MODE, LOG_MODE)
            .map_err(AuditError::from)
    }
}

fn validate_event(event: &str) -> Result<(), AuditError> {
    let bad = |reason: &str| {
        Err(AuditError::InvalidEvent {
            event: event.to_string(),
            reason: reason.to_string(),
        })
    };
    if event.is_empty() || event.len() > 64 {
        return bad("must be 1 to 64 characters");
    }
    if !event
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
    {
        return bad("only a-z, 0-9 and _ are allowed");
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// File system helpers
// ---------------------------------------------------------------------------------------------

fn nofollow() -> i32 {
    (OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC).bits()
}

fn map_open_err(op: &'static str, path: &Path, e: io::Error) -> AuditError {
    if e.raw_os_error() == Some(Errno::ELOOP as i32) {
        AuditError::Symlink {
            path: path.to_path_buf(),
        }
    } else {
        AuditError::Io {
            op,
            path: path.to_path_buf(),
            source: e,
        }
    }
}

fn lock_log(file: File, log: &Path) -> Result<Flock<File>, AuditError> {
    match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(f) => Ok(f),
        Err((_, Errno::EWOULDBLOCK)) => Err(AuditError::Locked {
            path: log.to_path_buf(),
        }),
        Err((_, e)) => Err(AuditError::Io {
            op: "lock",
            path: log.to_path_buf(),
            source: io::Error::from(e),
        }),
    }
}

/// A log writable by group/other, or owned by someone other than root or us, could be edited by
/// that party; tighten the mode, and refuse a foreign owner.
fn check_log_perms(file: &File, meta: &fs::Metadata, log: &Path) -> Result<(), AuditError> {
    let mode = meta.mode() & 0o7777;
    let uid = meta.uid();
    let euid = nix::unistd::geteuid().as_raw();
    let unsafe_err = |reason: String| AuditError::UnsafePermissions {
        path: log.to_path_buf(),
        mode,
        uid,
        reason,
    };
    if uid != 0 && uid != euid {
        return Err(unsafe_err(format!(
            "owned by uid {uid}, expected root or uid {euid}"
        )));
    }
    if mode & !LOG_MODE != 0 {
        file.set_permissions(fs::Permissions::from_mode(mode & LOG_MODE))
            .map_err(|e| unsafe_err(e.to_string()))?;
    }
    Ok(())
}

fn read_byte_at(file: &File, pos: u64, path: &Path) -> Result<u8, AuditError> {
    let mut b = [0u8; 1];
    file.read_exact_at(&mut b, pos)
        .map_err(io_err("read", path))?;
    Ok(b[0])
}

/// Position of the last '\n' strictly before `end`.
fn rfind_newline(file: &File, end: u64, path: &Path) -> Result<Option<u64>, AuditError> {
    const CHUNK: u64 = 64 * 1024;
    let mut hi = end;
    let mut buf = vec![0u8; CHUNK as usize];
    while hi > 0 {
        let lo = hi.saturating_sub(CHUNK);
        let n = (hi - lo) as usize;
        file.read_exact_at(&mut buf[..n], lo)
            .map_err(io_err("read", path))?;
        if let Some(i) = buf[..n].iter().rposition(|&b| b == b'\n') {
            return Ok(Some(lo + i as u64));
        }
        hi = lo;
    }
    Ok(None)
}

fn hash_range(file: &File, from: u64, to: u64, path: &Path) -> Result<(u64, String), AuditError> {
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut pos = from;
    while pos < to {
        let n = ((to - pos) as usize).min(buf.len());
        file.read_exact_at(&mut buf[..n], pos)
            .map_err(io_err("read", path))?;
        h.update(&buf[..n]);
        pos += n as u64;
    }
    Ok((to - from, hex(&h.finalize())))
}

/// The last complete line of a file of length `len` that ends in '\n' (or is empty), with the
/// byte offset where it starts.
fn last_line(file: &File, len: u64, path: &Path) -> Result<Option<(u64, Vec<u8>)>, AuditError> {
    if len == 0 {
        return Ok(None);
    }
    let end = len - 1; // the final '\n'
    let start = match rfind_newline(file, end, path)? {
        Some(p) => p + 1,
        None => 0,
    };
    let n = (end - start) as usize;
    if n > MAX_RECORD_BYTES {
        return Err(AuditError::Corrupt {
            path: path.to_path_buf(),
            line: count_newlines(file, start, path)? + 1,
            reason: format!("last line is {n} bytes, over the {MAX_RECORD_BYTES} byte limit"),
        });
    }
    let mut bytes = vec![0u8; n];
    file.read_exact_at(&mut bytes, start)
        .map_err(io_err("read", path))?;
    Ok(Some((start, bytes)))
}

/// 1-based number of the line starting at byte `start`; one pass over the file, so only
/// computed for error messages.
fn line_number_at(file: &File, start: u64, path: &Path) -> usize {
    count_newlines(file, start, path).map_or(0, |n| n + 1)
}

fn count_newlines(file: &File, end: u64, path: &Path) -> Result<usize, AuditError> {
    let mut buf = vec![0u8; 64 * 1024];
    let mut pos = 0u64;
    let mut count = 0usize;
    while pos < end {
        let n = ((end - pos) as usize).min(buf.len());
        file.read_exact_at(&mut buf[..n], pos)
            .map_err(io_err("read", path))?;
        count += buf[..n].iter().filter(|&&b| b == b'\n').count();
        pos += n as u64;
    }
    Ok(count)
}

/// The first line of a file of length `len` (without its newline, at most one record long),
/// or `None` when the file is empty.
fn first_line(file: &File, len: u64, path: &Path) -> Result<Option<Vec<u8>>, AuditError> {
    if len == 0 {
        return Ok(None);
    }
    let n = len.min(MAX_RECORD_BYTES as u64 + 1) as usize;
    let mut bytes = vec![0u8; n];
    file.read_exact_at(&mut bytes, 0)
        .map_err(io_err("read", path))?;
    if let Some(i) = bytes.iter().position(|&b| b == b'\n') {
        bytes.truncate(i);
    }
    Ok(Some(bytes))
}

/// Verifies the chain of the live log's first `len` bytes (which end in a newline or are
/// empty) before anything is appended to it.
fn verify_live(file: &File, len: u64, path: &Path) -> Result<(), AuditError> {
    let mut v = Verifier::new(None, None);
    v.report.files = 1;
    lines_of(file, len, path, |line_no, bytes| {
        v.line(path, line_no, bytes)
    })?;
    match v.report.problem {
        Some(b) => Err(AuditError::Broken {
            path: path.to_path_buf(),
            seq: b.seq,
            at: b.to_string(),
        }),
        None => Ok(()),
    }
}

fn parse_head(text: &[u8], head: &Path) -> Result<HeadState, AuditError> {
    let state: HeadState = serde_json::from_slice(text).map_err(|e| AuditError::BadHead {
        path: head.to_path_buf(),
        reason: e.to_string(),
    })?;
    if !is_sha256_hex(&state.hash) {
        return Err(AuditError::BadHead {
            path: head.to_path_buf(),
            reason: "hash is not 64 lowercase hex digits".to_string(),
        });
    }
    Ok(state)
}

/// A head file given by its machine path (`audit verify`).
fn read_head(head: &Path) -> Result<Option<HeadState>, AuditError> {
    let file = match OpenOptions::new()
        .read(true)
        .custom_flags(nofollow())
        .open(head)
    {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(map_open_err("open head file", head, e)),
    };
    let mut text = Vec::new();
    file.take(MAX_HEAD_BYTES)
        .read_to_end(&mut text)
        .map_err(io_err("read head file", head))?;
    parse_head(&text, head).map(Some)
}

/// A head file under the host's root, through the root-safe walk.
fn read_head_in(host: &Host, head: &str) -> Result<Option<HeadState>, AuditError> {
    match host.read_state(head, MAX_HEAD_BYTES)? {
        Some((_, text)) => parse_head(&text, &host.real_path(head)).map(Some),
        None => Ok(None),
    }
}

/// The chain state at the end of the newest rotated sibling of `log`, for when the head file is
/// missing.
fn head_from_rotated(host: &Host, log: &str, head: &str) -> Result<Option<HeadState>, AuditError> {
    let (dir, name) = match log.rsplit_once('/') {
        Some((d, n)) => (if d.is_empty() { "/" } else { d }, n),
        None => return Ok(None),
    };
    let names = match host.list_dir(dir) {
        Ok(n) => n,
        Err(_) if host.lstat(dir)?.is_none() => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let Some(newest) = rotation_order(name, names).pop() else {
        return Ok(None);
    };
    let newest = format!("{}/{newest}", dir.trim_end_matches('/'));
    let newest_path = host.real_path(&newest);
    let refuse = |reason: String| AuditError::NoHead {
        log: host.real_path(log),
        head: host.real_path(head),
        rotated: newest_path.clone(),
        reason,
    };
    let file = host
        .open_state_read(&newest)
        .map_err(|e| refuse(e.to_string()))?
        .ok_or_else(|| refuse("it disappeared".to_string()))?;
    let len = file.metadata().map_err(|e| refuse(e.to_string()))?.len();
    let mut magic = [0u8; 2];
    if file
        .read_at(&mut magic, 0)
        .map_err(|e| refuse(e.to_string()))?
        == 2
        && magic == [0x1f, 0x8b]
    {
        return Err(refuse("it is gzip-compressed".to_string()));
    }
    // A torn tail there is skipped, as `verify` does.
    let end = match rfind_newline(&file, len, &newest_path)? {
        Some(p) => p + 1,
        None => return Err(refuse("it holds no complete record".to_string())),
    };
    let Some((start, bytes)) = last_line(&file, end, &newest_path)? else {
        return Err(refuse("it holds no complete record".to_string()));
    };
    let rec = parse_record(&bytes).map_err(|e| {
        refuse(format!(
            "line {}: {e}",
            line_number_at(&file, start, &newest_path)
        ))
    })?;
    Ok(Some(HeadState {
        seq: rec.seq,
        hash: sha256_hex(&bytes),
        log: newest_path.to_string_lossy().into_owned(),
    }))
}

/// Reads a checkpoint key. The file must be a regular file (not a symlink) readable only by its
/// owner. Text keys (e.g. `openssl rand -hex 32`) have surrounding whitespace trimmed, so an
/// editor's trailing newline does not change the key; binary keys are used as is.
pub fn read_key_file(path: &Path) -> Result<Vec<u8>, AuditError> {
    let key_err = |reason: String| AuditError::Key {
        path: path.to_path_buf(),
        reason,
    };
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(nofollow())
        .open(path)
        .map_err(|e| match map_open_err("open key file", path, e) {
            AuditError::Symlink { .. } => {
                key_err("is a symbolic link; refusing to follow it".into())
            }
            other => other,
        })?;
    let meta = file.metadata().map_err(io_err("stat key file", path))?;
    if !meta.file_type().is_file() {
        return Err(key_err("is not a regular file".into()));
    }
    let mode = meta.mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(key_err(format!(
            "mode {mode:04o} lets group or others read it; chmod 0600 it"
        )));
    }
    let mut raw = Vec::new();
    file.take(MAX_KEY_BYTES + 1)
        .read_to_end(&mut raw)
        .map_err(io_err("read key file", path))?;
    if raw.len() as u64 > MAX_KEY_BYTES {
        return Err(key_err(format!("larger than {MAX_KEY_BYTES} bytes")));
    }
    let key = match std::str::from_utf8(&raw) {
        Ok(text) => text.trim().as_bytes().to_vec(),
        Err(_) => raw,
    };
    if key.len() < MIN_KEY_BYTES {
        return Err(key_err(format!(
            "key is {} bytes; at least {MIN_KEY_BYTES} are required",
            key.len()
        )));
    }
    Ok(key)
}

// ---------------------------------------------------------------------------------------------
// Hashing
// ---------------------------------------------------------------------------------------------

fn unhex(s: &str) -> Option<Vec<u8>> {
    if s.len() % 2 != 0 {
        return None;
    }
    let val = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    s.as_bytes()
        .chunks(2)
        .map(|p| Some((val(p[0])? << 4) | val(p[1])?))
        .collect()
}

fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn new_mac(key: &[u8]) -> HmacSha256 {
    // HMAC takes keys of any length (long ones are hashed), so this error branch is dead.
    HmacSha256::new_from_slice(key)
        .unwrap_or_else(|_| unreachable!("HMAC-SHA256 accepts keys of any length"))
}

fn mac_input(mac: &mut HmacSha256, seq: u64, hash: &str) {
    mac.update(CHECKPOINT_DOMAIN);
    mac.update(seq.to_string().as_bytes());
    mac.update(b"\0");
    mac.update(hash.as_bytes());
}

fn checkpoint_mac(key: &[u8], seq: u64, hash: &str) -> String {
    let mut mac = new_mac(key);
    mac_input(&mut mac, seq, hash);
    hex(&mac.finalize().into_bytes())
}

/// Identifies a key without revealing it: the first 16 hex digits of HMAC(key, domain).
pub fn key_id(key: &[u8]) -> String {
    let mut mac = new_mac(key);
    mac.update(KEY_ID_DOMAIN);
    let full = hex(&mac.finalize().into_bytes());
    full[..16].to_string()
}

fn parse_record(line: &[u8]) -> Result<Record, String> {
    let rec: Record = serde_json::from_slice(line).map_err(|e| e.to_string())?;
    if !is_sha256_hex(&rec.prev) {
        return Err("prev is not 64 lowercase hex digits".to_string());
    }
    if rec.seq == 0 {
        return Err("seq 0 is not allowed (the first record is seq 1)".to_string());
    }
    if !rec.ts.ends_with('Z') || rec.ts.parse::<jiff::Timestamp>().is_err() {
        return Err(format!("ts {:?} is not an RFC 3339 UTC timestamp", rec.ts));
    }
    validate_event(&rec.event).map_err(|e| e.to_string())?;
    if !rec.data.is_object() {
        return Err("data is not a JSON object".to_string());
    }
    Ok(rec)
}

// ---------------------------------------------------------------------------------------------
// Verification
// ---------------------------------------------------------------------------------------------

/// Where and why the chain is broken. `seq` is the first position in the sequence whose link is
/// broken: every record before it links correctly to its predecessor. For an edited record N
/// (not the last) that is N+1, whose `prev` no longer matches; `reason` names both.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Break {
    pub file: PathBuf,
    /// 1-based line number in `file`.
    pub line: usize,
    pub seq: Option<u64>,
    pub reason: String,
}

impl fmt::Display for Break {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: ", self.file.display(), self.line)?;
        if let Some(s) = self.seq {
            write!(f, "seq {s}: ")?;
        }
        f.write_str(&self.reason)
    }
}

/// An incomplete last line (a write interrupted by a crash). Not an integrity problem: the next
/// `open` truncates it and records a `recovered` record with its length and SHA-256.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TornTail {
    pub file: PathBuf,
    pub line: usize,
    pub bytes: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct VerifyReport {
    pub files: usize,
    /// Records verified (up to the problem, if any).
    pub records: u64,
    pub checkpoints: u64,
    pub problem: Option<Break>,
    /// Set when the first record is a `continued` record (the files start mid-chain, e.g. the
    /// live log alone after a rotation): the seq it starts at. Informational.
    pub starts_at_seq: Option<u64>,
    pub first_seq: Option<u64>,
    pub last_seq: Option<u64>,
    /// SHA-256 of the last record line: compare with the head file or an off-host copy.
    pub last_hash: Option<String>,
    /// Seq of the last checkpoint whose MAC was verified (only with a key).
    pub keyed_through: Option<u64>,
    /// Records not covered by a verified checkpoint: after the last one, or all without a key.
    pub unkeyed_records: u64,
    pub torn_tails: Vec<TornTail>,
    /// New segments started by `apply --audit-recover`, explained (where the broken log was
    /// moved and why). The chain before each is not verified across it.
    pub segments: Vec<String>,
    /// Other informational findings (empty files, head lag, ...).
    pub notes: Vec<String>,
}

impl VerifyReport {
    pub fn ok(&self) -> bool {
        self.problem.is_none()
    }
}

impl fmt::Display for VerifyReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.problem {
            None if self.records == 0 => writeln!(
                f,
                "audit chain: nothing to verify, no records in {} file(s)",
                self.files
            )?,
            None if !self.segments.is_empty() => writeln!(
                f,
                "audit chain OK within each segment: {} record(s) in {} file(s), {} checkpoint(s); {} new segment(s) started by --audit-recover (see below)",
                self.records,
                self.files,
                self.checkpoints,
                self.segments.len()
            )?,
            None => writeln!(
                f,
                "audit chain OK: {} record(s) in {} file(s), {} checkpoint(s)",
                self.records, self.files, self.checkpoints
            )?,
            Some(b) => writeln!(f, "audit chain BROKEN at {b}")?,
        }
        if let (Some(a), Some(b)) = (self.first_seq, self.last_seq) {
            writeln!(f, "seq {a}..={b}")?;
        }
        if let Some(s) = self.starts_at_seq {
            writeln!(
                f,
                "starts mid-chain at seq {s} (`continued` record): earlier records are in rotated files not given"
            )?;
        }
        if let Some(k) = self.keyed_through {
            writeln!(f, "keyed (HMAC checkpoint) through seq {k}")?;
        }
        if self.unkeyed_records > 0 {
            writeln!(
                f,
                "{} record(s) not covered by a verified checkpoint",
                self.unkeyed_records
            )?;
        }
        for t in &self.torn_tails {
            writeln!(
                f,
                "{}:{}: incomplete last line ({} bytes, interrupted write; repaired on next open)",
                t.file.display(),
                t.line,
                t.bytes
            )?;
        }
        for s in &self.segments {
            writeln!(f, "segment: {s}")?;
        }
        for n in &self.notes {
            writeln!(f, "note: {n}")?;
        }
        Ok(())
    }
}

struct Verifier<'k> {
    key: Option<&'k [u8]>,
    report: VerifyReport,
    /// Hash of the previous record line and where it was.
    prev: Option<(String, u64, PathBuf, usize)>,
    /// Capture the hash and location of this seq (for the head comparison).
    want_seq: Option<u64>,
    captured: Option<(String, PathBuf, usize)>,
    last_pos: Option<(PathBuf, usize)>,
}

impl<'k> Verifier<'k> {
    fn new(key: Option<&'k [u8]>, want_seq: Option<u64>) -> Verifier<'k> {
        Verifier {
            key,
            report: VerifyReport::default(),
            prev: None,
            want_seq,
            captured: None,
            last_pos: None,
        }
    }

    fn fail(&mut self, file: &Path, line: usize, seq: Option<u64>, reason: String) {
        self.report.problem = Some(Break {
            file: file.to_path_buf(),
            line,
            seq,
            reason,
        });
    }

    /// Returns false once a problem is found.
    fn line(&mut self, file: &Path, line_no: usize, bytes: &[u8]) -> bool {
        let expected_seq = self.prev.as_ref().map(|p| p.1 + 1);
        let rec = match parse_record(bytes) {
            Ok(r) => r,
            Err(e) => {
                self.fail(
                    file,
                    line_no,
                    expected_seq,
                    format!("not a valid audit record: {e}"),
                );
                return false;
            }
        };
        let hash = sha256_hex(bytes);
        let segment = rec.event == EVENT_SEGMENT;
        if segment {
            self.report.segments.push(segment_note(file, line_no, &rec));
        }
        match self.prev.clone() {
            // A new segment is where the chain was knowingly restarted: its link to what came
            // before is not checked (the broken log it replaced was moved aside), and it is
            // reported instead.
            _ if segment => {
                if rec.seq < 1 {
                    self.fail(
                        file,
                        line_no,
                        Some(rec.seq),
                        "a `segment` record must have seq >= 1".to_string(),
                    );
                    return false;
                }
                if self.prev.is_none() && rec.seq > 1 {
                    self.report.starts_at_seq = Some(rec.seq);
                }
            }
            None => {
                if rec.event == EVENT_CONTINUED {
                    if rec.seq < 2 {
                        self.fail(
                            file,
                            line_no,
                            Some(rec.seq),
                            "a `continued` record must have seq >= 2".to_string(),
                        );
                        return false;
                    }
                    self.report.starts_at_seq = Some(rec.seq);
                } else if rec.seq != 1 || rec.prev != GENESIS_PREV {
                    self.fail(
                        file,
                        line_no,
                        Some(rec.seq),
                        format!(
                            "the chain starts at seq {} (prev {}) without a `continued` record: its beginning is missing; pass the rotated files too, oldest first",
                            rec.seq,
                            short(&rec.prev)
                        ),
                    );
                    return false;
                }
            }
            Some((prev_hash, prev_seq, prev_file, prev_line)) => {
                let want = prev_seq + 1;
                if rec.seq != want {
                    let why = if rec.seq > want {
                        format!(
                            "record(s) seq {want}..={} are missing (deleted) or records were reordered",
                            rec.seq - 1
                        )
                    } else {
                        "seq does not increase: a record was inserted, duplicated or reordered"
                            .to_string()
                    };
                    self.fail(
                        file,
                        line_no,
                        Some(want),
                        format!("expected seq {want} after seq {prev_seq} ({}:{prev_line}), found seq {}: {why}", prev_file.display(), rec.seq),
                    );
                    return false;
                }
                if rec.prev != prev_hash {
                    self.fail(
                        file,
                        line_no,
                        Some(rec.seq),
                        format!(
                            "prev {} does not match the hash {} of seq {prev_seq} ({}:{prev_line}): seq {prev_seq} was modified, or this record was forged or inserted",
                            short(&rec.prev),
                            short(&prev_hash),
                            prev_file.display()
                        ),
                    );
                    return false;
                }
            }
        }
        // Before the data check, which resets the count when a checkpoint verifies.
        self.report.unkeyed_records += 1;
        if let Err(reason) = self.check_own_data(&rec) {
            self.fail(file, line_no, Some(rec.seq), reason);
            return false;
        }
        if self.want_seq == Some(rec.seq) {
            self.captured = Some((hash.clone(), file.to_path_buf(), line_no));
        }
        self.report.records += 1;
        self.report.first_seq.get_or_insert(rec.seq);
        self.report.last_seq = Some(rec.seq);
        self.report.last_hash = Some(hash.clone());
        self.prev = Some((hash, rec.seq, file.to_path_buf(), line_no));
        self.last_pos = Some((file.to_path_buf(), line_no));
        true
    }

    /// Checks the data of the records this module writes itself.
    fn check_own_data(&mut self, rec: &Record) -> Result<(), String> {
        let d = &rec.data;
        match rec.event.as_str() {
            EVENT_CONTINUED | EVENT_SEGMENT => {
                let ok = d.get("previous_seq").and_then(Value::as_u64) == Some(rec.seq - 1)
                    && d.get("previous_hash").and_then(Value::as_str) == Some(rec.prev.as_str());
                ok.then_some(()).ok_or_else(|| {
                    format!(
                        "`{}` record's previous_seq/previous_hash do not match its seq/prev",
                        rec.event
                    )
                })
            }
            EVENT_RECOVERED => {
                let ok = d.get("discarded_bytes").and_then(Value::as_u64).is_some()
                    && d.get("discarded_sha256")
                        .and_then(Value::as_str)
                        .is_some_and(is_sha256_hex);
                ok.then_some(()).ok_or_else(|| {
                    "`recovered` record lacks discarded_bytes/discarded_sha256".to_string()
                })
            }
            EVENT_CHECKPOINT => {
                let covers_seq = d.get("covers_seq").and_then(Value::as_u64);
                let covers_hash = d.get("covers_hash").and_then(Value::as_str);
                let kid = d.get("key_id").and_then(Value::as_str);
                let mac = d.get("mac").and_then(Value::as_str).and_then(unhex);
                let (Some(covers_seq), Some(covers_hash), Some(kid), Some(mac)) =
                    (covers_seq, covers_hash, kid, mac)
                else {
                    return Err("checkpoint lacks covers_seq/covers_hash/key_id/mac".to_string());
                };
                if covers_seq != rec.seq - 1 || covers_hash != rec.prev {
                    return Err(format!(
                        "checkpoint covers seq {covers_seq} hash {} but its predecessor is seq {} hash {}: the chain before it was rewritten",
                        short(covers_hash),
                        rec.seq - 1,
                        short(&rec.prev)
                    ));
                }
                self.report.checkpoints += 1;
                if let Some(key) = self.key {
                    let want_id = key_id(key);
                    if kid != want_id {
                        return Err(format!(
                            "checkpoint was made with key id {kid}, the given key has id {want_id}"
                        ));
                    }
                    let mut m = new_mac(key);
                    mac_input(&mut m, covers_seq, covers_hash);
                    if m.verify_slice(&mac).is_err() {
                        return Err(format!(
                            "checkpoint HMAC does not verify over seq {covers_seq}: the chain up to it was rewritten"
                        ));
                    }
                    self.report.keyed_through = Some(rec.seq);
                    // The checkpoint itself counts as keyed: its covered fields are under the MAC.
                    self.report.unkeyed_records = 0;
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }
}

/// What `audit verify` says about a `segment` record.
fn segment_note(file: &Path, line_no: usize, rec: &Record) -> String {
    let d = &rec.data;
    let text = |k: &str| escape_controls(d.get(k).and_then(Value::as_str).unwrap_or("?"));
    format!(
        "{}:{line_no}: seq {} starts a new segment (`apply --audit-recover` at {} by {}@{}): the previous live log, {} bytes with sha256 {}, was moved to {}; the chain before it is not verified across this point. Reason given: {}",
        file.display(),
        rec.seq,
        escape_controls(&rec.ts),
        escape_controls(&rec.user),
        escape_controls(&rec.host),
        d.get("moved_bytes").and_then(Value::as_u64).unwrap_or(0),
        text("moved_sha256"),
        text("moved_to"),
        text("reason"),
    )
}

fn short(hash: &str) -> &str {
    hash.get(..12).unwrap_or(hash)
}

/// Calls `f(line_no, bytes)` for every complete line, and returns the torn tail (line number and
/// length) if the file does not end in '\n'. `f` returns false to stop.
fn for_each_line(
    path: &Path,
    f: impl FnMut(usize, &[u8]) -> bool,
) -> Result<Option<(usize, u64)>, AuditError> {
    lines_in(open_plain(path)?, path, f)
}

/// A log file named on the command line (anywhere: it is the operator's choice).
fn open_plain(path: &Path) -> Result<File, AuditError> {
    OpenOptions::new()
        .read(true)
        .custom_flags(OFlag::O_CLOEXEC.bits())
        .open(path)
        .map_err(io_err("open", path))
}

/// [`for_each_line`] over an open file; a gzip-compressed one is refused.
fn lines_in(
    file: File,
    path: &Path,
    f: impl FnMut(usize, &[u8]) -> bool,
) -> Result<Option<(usize, u64)>, AuditError> {
    let mut magic = [0u8; 2];
    if file.read_at(&mut magic, 0).map_err(io_err("read", path))? == 2 && magic == [0x1f, 0x8b] {
        return Err(AuditError::Compressed {
            path: path.to_path_buf(),
        });
    }
    let len = file.metadata().map_err(io_err("stat", path))?.len();
    lines_of(&file, len, path, f)
}

/// Sequential reads at our own offset, so that reading a log opened for appending does not
/// depend on (or move) the descriptor's position.
struct ReadAt<'a> {
    file: &'a File,
    pos: u64,
    end: u64,
}

impl Read for ReadAt<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = usize::try_from(self.end.saturating_sub(self.pos)).unwrap_or(usize::MAX);
        let want = buf.len().min(left);
        if want == 0 {
            return Ok(0);
        }
        let n = self.file.read_at(&mut buf[..want], self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }
}

/// [`for_each_line`] over the first `len` bytes of an open file. A line longer than a record
/// may be is handed to `f` cut at the limit (so it fails to parse) rather than buffered whole.
fn lines_of(
    file: &File,
    len: u64,
    path: &Path,
    mut f: impl FnMut(usize, &[u8]) -> bool,
) -> Result<Option<(usize, u64)>, AuditError> {
    let mut reader = BufReader::new(ReadAt {
        file,
        pos: 0,
        end: len,
    });
    let mut buf = Vec::new();
    let mut line_no = 0usize;
    let limit = MAX_RECORD_BYTES as u64 + 1;
    loop {
        buf.clear();
        let n = (&mut reader)
            .take(limit)
            .read_until(b'\n', &mut buf)
            .map_err(io_err("read", path))?;
        if n == 0 {
            return Ok(None);
        }
        line_no += 1;
        if buf.last() != Some(&b'\n') {
            if n as u64 == limit {
                let _ = f(line_no, &buf);
                return Ok(None);
            }
            return Ok(Some((line_no, buf.len() as u64)));
        }
        buf.pop();
        if !f(line_no, &buf) {
            return Ok(None);
        }
    }
}

/// Opens one of the files to verify.
type Opener<'a> = &'a dyn Fn(&Path) -> Result<File, AuditError>;

fn run_verifier(
    files: &[PathBuf],
    open: Opener<'_>,
    v: &mut Verifier<'_>,
) -> Result<(), AuditError> {
    if files.is_empty() {
        return Err(AuditError::NoFiles);
    }
    v.report.files = files.len();
    for path in files {
        let mut count = 0usize;
        let torn = lines_in(open(path)?, path, |line_no, bytes| {
            count += 1;
            v.line(path, line_no, bytes)
        })?;
        if v.report.problem.is_some() {
            return Ok(());
        }
        if let Some((line, bytes)) = torn {
            v.report.torn_tails.push(TornTail {
                file: path.clone(),
                line,
                bytes,
            });
        }
        if count == 0 {
            v.report
                .notes
                .push(format!("{} holds no complete records", path.display()));
        }
    }
    // Bytes without a single complete record are not a chain at all (not an audit log, or a
    // first write that was interrupted): never "chain OK".
    if v.report.records == 0 {
        if let Some(t) = v.report.torn_tails.first() {
            v.report.problem = Some(Break {
                file: t.file.clone(),
                line: t.line,
                seq: None,
                reason: format!(
                    "no complete record: {} byte(s) without a newline (not an audit log, or its first write was interrupted)",
                    t.bytes
                ),
            });
        }
    }
    Ok(())
}

/// Verifies a set of files given oldest first (rotated files then the live one). With a key,
/// every checkpoint must verify and the tail after the last checkpoint is reported as unkeyed
/// (`unkeyed_records`). Stops at the first problem.
pub fn verify(files: &[PathBuf], key: Option<&[u8]>) -> Result<VerifyReport, AuditError> {
    let mut v = Verifier::new(key, None);
    run_verifier(files, &open_plain, &mut v)?;
    Ok(v.report)
}

/// Verifies the log `log` of a target root and its rotations, found and opened through the
/// root-safe walk (a symlinked `ROOT/var/log` is refused, not followed), against the log's
/// own head file when there is one.
pub fn verify_in(host: &Host, log: &str, key: Option<&[u8]>) -> Result<VerifyReport, AuditError> {
    let files = log_files_in(host, log)?;
    let real: Vec<PathBuf> = files.iter().map(|(_, p)| p.clone()).collect();
    let open = |path: &Path| -> Result<File, AuditError> {
        let name = files
            .iter()
            .find(|(_, p)| p == path)
            .map(|(n, _)| n.as_str())
            .unwrap_or(log);
        host.open_state_read(name)?.ok_or_else(|| AuditError::Io {
            op: "open",
            path: path.to_path_buf(),
            source: io::Error::from(io::ErrorKind::NotFound),
        })
    };
    let head = head_for(log);
    match read_head_in(host, &head)?.filter(|h| h.is_of(log)) {
        Some(state) => verify_against_head(&real, &open, key, state, &host.real_path(&head)),
        None => {
            let mut v = Verifier::new(key, None);
            run_verifier(&real, &open, &mut v)?;
            Ok(v.report)
        }
    }
}

/// The live log `log` of a target root and its rotations, oldest first, as (path under the
/// root, machine path), listed through the root-safe walk; only regular files.
pub fn log_files_in(host: &Host, log: &str) -> Result<Vec<(String, PathBuf)>, AuditError> {
    let (dir, name) = match log.rsplit_once('/') {
        Some((d, n)) => (if d.is_empty() { "/" } else { d }, n),
        None => return Ok(Vec::new()),
    };
    match host.lstat(dir)? {
        None => return Ok(Vec::new()),
        Some(st) if st.kind != crate::host::FileKind::Directory => {
            return Err(AuditError::Host(HostError::Unsafe {
                path: host.show(dir),
                reason: format!(
                    "is a {}; reconcile never follows a symlink to its own files",
                    st.kind.name()
                ),
            }))
        }
        Some(_) => {}
    }
    let mut names = rotation_order(name, host.list_dir(dir)?);
    names.push(name.to_string());
    let mut out = Vec::new();
    for n in names {
        let path = format!("{}/{n}", dir.trim_end_matches('/'));
        match host.lstat(&path)? {
            Some(st) if st.kind == crate::host::FileKind::File => {
                let real = host.real_path(&path);
                out.push((path, real));
            }
            Some(st) => {
                return Err(AuditError::Host(HostError::Unsafe {
                    path: host.show(&path),
                    reason: format!("is a {}, not an audit log file", st.kind.name()),
                }))
            }
            None => {}
        }
    }
    Ok(out)
}

/// Like `verify`, and also compares the chain with the head file: records missing at the end
/// (truncation) or a last record different from the one the head saw are reported as problems.
pub fn verify_with_head(
    files: &[PathBuf],
    key: Option<&[u8]>,
    head: &Path,
) -> Result<VerifyReport, AuditError> {
    let Some(state) = read_head(head)? else {
        return Err(AuditError::BadHead {
            path: head.to_path_buf(),
            reason: "does not exist".to_string(),
        });
    };
    verify_against_head(files, &open_plain, key, state, head)
}

fn verify_against_head(
    files: &[PathBuf],
    open: Opener<'_>,
    key: Option<&[u8]>,
    state: HeadState,
    head: &Path,
) -> Result<VerifyReport, AuditError> {
    let mut v = Verifier::new(key, Some(state.seq));
    run_verifier(files, open, &mut v)?;
    if v.report.problem.is_some() {
        return Ok(v.report);
    }
    let last_seq = v.report.last_seq.unwrap_or(0);
    let last_file = files.last().cloned().unwrap_or_default();
    if last_seq < state.seq {
        let line = v.last_pos.as_ref().map(|p| p.1 + 1).unwrap_or(1);
        let file = v.last_pos.map(|p| p.0).unwrap_or(last_file);
        v.report.problem = Some(Break {
            file,
            line,
            seq: Some(last_seq + 1),
            reason: format!(
                "the log ends at seq {last_seq} but head file {} says the chain reached seq {} (hash {}): records {}..={} are missing (truncated or deleted)",
                head.display(),
                state.seq,
                short(&state.hash),
                last_seq + 1,
                state.seq
            ),
        });
        return Ok(v.report);
    }
    match v.captured.take() {
        Some((hash, file, line)) if hash != state.hash => {
            v.report.problem = Some(Break {
                file,
                line,
                seq: Some(state.seq),
                reason: format!(
                    "record seq {} hashes to {} but head file {} recorded {}: it was modified or the log replaced",
                    state.seq,
                    short(&hash),
                    head.display(),
                    short(&state.hash)
                ),
            });
            return Ok(v.report);
        }
        Some(_) => {}
        None => v.report.notes.push(format!(
            "head file seq {} precedes the files given; pass the rotated files to compare",
            state.seq
        )),
    }
    if last_seq > state.seq {
        v.report.notes.push(format!(
            "the log is {} record(s) ahead of the head file (a crash between append and head update leaves 1)",
            last_seq - state.seq
        ));
    }
    Ok(v.report)
}

/// The live log and its rotated siblings in `log`'s directory, oldest first: numbered copies
/// (`audit.jsonl.N`, highest N first), then dated copies (`audit.jsonl-YYYYMMDD`, ascending),
/// then the live log if it exists. `.gz` copies are included so `verify` can say they need
/// decompressing rather than silently skip them.
pub fn log_files(log: &Path) -> Result<Vec<PathBuf>, AuditError> {
    let dir = log
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let Some(name) = log.file_name().map(|n| n.to_string_lossy().into_owned()) else {
        return Ok(Vec::new());
    };
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_err("list directory", dir)(e)),
    };
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.map_err(io_err("list directory", dir))?;
        names.push(entry.file_name().to_string_lossy().into_owned());
    }
    let mut out: Vec<PathBuf> = rotation_order(&name, names)
        .into_iter()
        .map(|n| dir.join(n))
        .collect();
    if log.exists() {
        out.push(log.to_path_buf());
    }
    Ok(out)
}

/// The rotated copies of the log called `name` among `names`, oldest first (see [`log_files`]);
/// the live log itself and other names (a `.broken-` log moved aside) are left out.
fn rotation_order(name: &str, names: Vec<String>) -> Vec<String> {
    let mut numbered: Vec<(u64, String)> = Vec::new();
    let mut dated: Vec<(String, String)> = Vec::new();
    for fname in names {
        let Some(rest) = fname.strip_prefix(name) else {
            continue;
        };
        let rest = rest.strip_suffix(".gz").unwrap_or(rest);
        if let Some(n) = rest.strip_prefix('.').and_then(|s| s.parse::<u64>().ok()) {
            numbered.push((n, fname));
        } else if let Some(d) = rest.strip_prefix('-') {
            if !d.is_empty()
                && d.bytes()
                    .all(|b| b.is_ascii_digit() || b == b'-' || b == b'_')
            {
                dated.push((d.to_string(), fname));
            }
        }
    }
    numbered.sort_by_key(|n| std::cmp::Reverse(n.0));
    dated.sort();
    let mut out: Vec<String> = numbered.into_iter().map(|(_, p)| p).collect();
    out.extend(dated.into_iter().map(|(_, p)| p));
    out
}

// ---------------------------------------------------------------------------------------------
// Display
// ---------------------------------------------------------------------------------------------

/// Resource ids a record is about: `data.resource` (string) and `data.resources` (array of
/// strings).
fn resources_of(data: &Value) -> Vec<&str> {
    let mut out = Vec::new();
    if let Some(r) = data.get("resource").and_then(Value::as_str) {
        out.push(r);
    }
    if let Some(list) = data.get("resources").and_then(Value::as_array) {
        out.extend(list.iter().filter_map(Value::as_str));
    }
    out
}

/// Human-readable lines, filtered by time (records at or after `since`) and/or resource id
/// substring (matched against `data.resource` and `data.resources`). Does not verify the chain
/// (use `verify`); unparseable lines are shown as such, never skipped silently.
pub fn show(
    files: &[PathBuf],
    since: Option<jiff::Timestamp>,
    resource: Option<&str>,
) -> Result<String, AuditError> {
    let mut out = String::new();
    for path in files {
        let torn = for_each_line(path, |line_no, bytes| {
            let rec = match parse_record(bytes) {
                Ok(r) => r,
                Err(e) => {
                    out.push_str(&format!(
                        "!! {}:{line_no}: not a valid audit record ({}); run `reconcile audit verify`\n",
                        path.display(),
                        escape_controls(&e)
                    ));
                    return true;
                }
            };
            if let Some(since) = since {
                match rec.ts.parse::<jiff::Timestamp>() {
                    Ok(ts) if ts >= since => {}
                    _ => return true,
                }
            }
            let res = resources_of(&rec.data);
            if let Some(want) = resource {
                if !res.iter().any(|r| r.contains(want)) {
                    return true;
                }
            }
            let res_text = if res.is_empty() {
                "-".to_string()
            } else {
                res.join(",")
            };
            let mut data = rec.data.clone();
            if let Some(obj) = data.as_object_mut() {
                obj.remove("resource");
                obj.remove("resources");
            }
            let data_text = if data.as_object().is_some_and(|o| o.is_empty()) {
                String::new()
            } else {
                format!("  {data}")
            };
            out.push_str(&format!(
                "#{} {} {:<10} {}  {}@{} pid={} run={}{}\n",
                rec.seq,
                escape_controls(&rec.ts),
                escape_controls(&rec.event),
                escape_controls(&res_text),
                escape_controls(&rec.user),
                escape_controls(&rec.host),
                rec.pid,
                escape_controls(&rec.run),
                escape_controls(&data_text),
            ));
            true
        })?;
        if let Some((line, bytes)) = torn {
            out.push_str(&format!(
                "!! {}:{line}: incomplete last line ({bytes} bytes, interrupted write)\n",
                path.display()
            ));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::error::Error;

    type R = Result<(), Box<dyn Error>>;

    struct Fixture {
        _dir: tempfile::TempDir,
        host: Host,
        root: PathBuf,
        log: PathBuf,
        head: PathBuf,
    }

    impl Fixture {
        fn live(&self) -> Vec<PathBuf> {
            vec![self.log.clone()]
        }
    }

    fn fixture() -> Result<Fixture, Box<dyn Error>> {
        let dir = tempfile::tempdir()?;
        let root = dir.path().to_path_buf();
        let log = root.join(DEFAULT_LOG.trim_start_matches('/'));
        let head = root.join(DEFAULT_HEAD.trim_start_matches('/'));
        Ok(Fixture {
            host: Host::open(&root)?,
            _dir: dir,
            root,
            log,
            head,
        })
    }

    fn open(f: &Fixture) -> Result<AuditLog<'_>, AuditError> {
        AuditLog::open(&f.host, DEFAULT_LOG, DEFAULT_HEAD, ctx(), false)
    }

    fn ctx() -> AuditContext {
        AuditContext {
            host: "web1".into(),
            user: "root".into(),
            pid: 4242,
            run_id: "run-1".into(),
        }
    }

    /// Opens, writes `n` change records, closes.
    fn write_n(f: &Fixture, n: u64) -> Result<(), Box<dyn Error>> {
        let mut log = open(f)?;
        for i in 0..n {
            log.record(
                "change",
                json!({"resource": format!("file[/etc/f{i}]"), "action": "update"}),
            )?;
        }
        Ok(())
    }

    fn lines(path: &Path) -> Result<Vec<String>, Box<dyn Error>> {
        Ok(fs::read_to_string(path)?
            .lines()
            .map(str::to_string)
            .collect())
    }

    fn write_lines(path: &Path, lines: &[String]) -> R {
        let mut text = lines.join("\n");
        text.push('\n');
        fs::write(path, text)?;
        Ok(())
    }

    fn broken(report: &VerifyReport) -> Break {
        report
            .problem
            .clone()
            .unwrap_or_else(|| panic!("expected a break, got {report}"))
    }

    const KEY: &[u8] = b"0123456789abcdef0123456789abcdef";

    #[test]
    fn records_written_verify_ok_and_format_is_stable() -> R {
        let f = fixture()?;
        let mut log = open(&f)?;
        assert_eq!(
            log.record("run_start", json!({"manifest": "site.yaml"}))?,
            1
        );
        assert_eq!(
            log.record("change", json!({"resource": "file[/etc/motd]"}))?,
            2
        );
        assert_eq!(log.record("run_end", json!({"changed": 1}))?, 3);
        drop(log);

        let ls = lines(&f.log)?;
        assert_eq!(ls.len(), 3);
        let first: Value = serde_json::from_str(&ls[0])?;
        assert_eq!(first["prev"], GENESIS_PREV);
        assert_eq!(first["seq"], 1);
        // Field order is part of the documented format.
        assert!(ls[0].starts_with(&format!(
            "{{\"seq\":1,\"prev\":\"{GENESIS_PREV}\",\"ts\":\""
        )));
        assert!(ls[0].contains(
            "\"event\":\"run_start\",\"host\":\"web1\",\"user\":\"root\",\"pid\":4242,\"run\":\"run-1\",\"data\":{\"manifest\":\"site.yaml\"}}"
        ));
        let second: Value = serde_json::from_str(&ls[1])?;
        assert_eq!(second["prev"], sha256_hex(ls[0].as_bytes()));
        let ts = first["ts"].as_str().unwrap_or_default();
        assert!(
            ts.ends_with('Z') && ts.parse::<jiff::Timestamp>().is_ok(),
            "{ts}"
        );

        let report = verify(&f.live(), None)?;
        assert!(report.ok(), "{report}");
        assert_eq!(report.records, 3);
        assert_eq!(report.files, 1);
        assert_eq!(report.starts_at_seq, None);
        assert_eq!(report.last_seq, Some(3));
        assert_eq!(report.last_hash, Some(sha256_hex(ls[2].as_bytes())));
        assert_eq!(report.unkeyed_records, 3);

        let head: Value = serde_json::from_str(&fs::read_to_string(&f.head)?)?;
        assert_eq!(head["seq"], 3);
        assert_eq!(head["hash"], sha256_hex(ls[2].as_bytes()));
        assert!(verify_with_head(&f.live(), None, &f.head)?.ok());
        Ok(())
    }

    #[test]
    fn created_files_and_dirs_have_documented_modes() -> R {
        let f = fixture()?;
        write_n(&f, 1)?;
        let mode = |p: &Path| -> Result<u32, Box<dyn Error>> {
            Ok(fs::metadata(p)?.permissions().mode() & 0o7777)
        };
        assert_eq!(mode(&f.log)?, 0o640);
        assert_eq!(mode(&f.head)?, 0o640);
        assert_eq!(mode(&f.root.join("var/log/reconcile"))?, 0o750);
        assert_eq!(mode(&f.root.join("var/lib/reconcile"))?, 0o750);
        // No temp file is left next to the head.
        let leftovers: Vec<_> = fs::read_dir(f.root.join("var/lib/reconcile"))?
            .filter_map(|e| e.ok())
            .map(|e| e.file_name())
            .filter(|n| n != "audit-head.json")
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
        Ok(())
    }

    #[test]
    fn existing_log_with_loose_mode_is_tightened() -> R {
        let f = fixture()?;
        write_n(&f, 1)?;
        fs::set_permissions(&f.log, fs::Permissions::from_mode(0o666))?;
        write_n(&f, 1)?;
        assert_eq!(fs::metadata(&f.log)?.permissions().mode() & 0o7777, 0o640);
        Ok(())
    }

    #[test]
    fn reopen_continues_the_chain() -> R {
        let f = fixture()?;
        write_n(&f, 2)?;
        let mut log = open(&f)?;
        assert_eq!(log.seq(), 2);
        assert_eq!(log.record("run_end", json!({}))?, 3);
        drop(log);
        let report = verify(&f.live(), None)?;
        assert!(report.ok(), "{report}");
        assert_eq!(report.records, 3);
        Ok(())
    }

    #[test]
    fn tamper_edited_field_is_detected_at_the_next_link() -> R {
        let f = fixture()?;
        write_n(&f, 5)?;
        let mut ls = lines(&f.log)?;
        ls[2] = ls[2].replace("\"action\":\"update\"", "\"action\":\"noop\"");
        write_lines(&f.log, &ls)?;
        let b = broken(&verify(&f.live(), None)?);
        assert_eq!(b.line, 4);
        assert_eq!(b.seq, Some(4));
        assert!(b.reason.contains("seq 3 was modified"), "{}", b.reason);
        assert_eq!(b.file, f.log);
        Ok(())
    }

    #[test]
    fn tamper_edited_last_record_needs_the_head_file() -> R {
        let f = fixture()?;
        write_n(&f, 3)?;
        let mut ls = lines(&f.log)?;
        ls[2] = ls[2].replace("/etc/f2", "/etc/XX");
        write_lines(&f.log, &ls)?;
        // The chain itself is consistent: nothing commits to the last line yet.
        assert!(verify(&f.live(), None)?.ok());
        let b = broken(&verify_with_head(&f.live(), None, &f.head)?);
        assert_eq!((b.line, b.seq), (3, Some(3)));
        assert!(b.reason.contains("modified"), "{}", b.reason);
        // And the writer refuses to append after it.
        match open(&f) {
            Err(AuditError::HeadMismatch {
                log_seq, head_seq, ..
            }) => assert_eq!((log_seq, head_seq), (3, 3)),
            other => panic!("expected HeadMismatch, got {other:?}"),
        }
        Ok(())
    }

    #[test]
    fn tamper_deleted_line_is_detected() -> R {
        let f = fixture()?;
        write_n(&f, 5)?;
        let mut ls = lines(&f.log)?;
        ls.remove(2); // seq 3
        write_lines(&f.log, &ls)?;
        let b = broken(&verify(&f.live(), None)?);
        assert_eq!((b.line, b.seq), (3, Some(3)));
        assert!(b.reason.contains("found seq 4"), "{}", b.reason);
        assert!(b.reason.contains("missing"), "{}", b.reason);
        Ok(())
    }

    #[test]
    fn tamper_deleted_first_line_is_detected() -> R {
        let f = fixture()?;
        write_n(&f, 3)?;
        let mut ls = lines(&f.log)?;
        ls.remove(0);
        write_lines(&f.log, &ls)?;
        let b = broken(&verify(&f.live(), None)?);
        assert_eq!((b.line, b.seq), (1, Some(2)));
        assert!(b.reason.contains("beginning is missing"), "{}", b.reason);
        Ok(())
    }

    #[test]
    fn tamper_swapped_lines_are_detected() -> R {
        let f = fixture()?;
        write_n(&f, 5)?;
        let mut ls = lines(&f.log)?;
        ls.swap(1, 2); // seq 2 and 3
        write_lines(&f.log, &ls)?;
        let b = broken(&verify(&f.live(), None)?);
        assert_eq!((b.line, b.seq), (2, Some(2)));
        assert!(b.reason.contains("found seq 3"), "{}", b.reason);
        Ok(())
    }

    #[test]
    fn tamper_truncation_is_detected_with_the_head_file() -> R {
        let f = fixture()?;
        write_n(&f, 5)?;
        let ls = lines(&f.log)?;
        write_lines(&f.log, &ls[..3])?;
        assert!(verify(&f.live(), None)?.ok());
        let b = broken(&verify_with_head(&f.live(), None, &f.head)?);
        assert_eq!((b.line, b.seq), (4, Some(4)));
        assert!(
            b.reason.contains("records 4..=5 are missing"),
            "{}",
            b.reason
        );
        // The writer refuses to continue a truncated log, naming both seqs.
        match open(&f) {
            Err(e @ AuditError::HeadMismatch { .. }) => {
                let msg = e.to_string();
                assert!(
                    msg.contains("ends at seq 3") && msg.contains("seq 5"),
                    "{msg}"
                );
                assert!(msg.contains(&f.log.display().to_string()), "{msg}");
            }
            other => panic!("expected HeadMismatch, got {other:?}"),
        }
        Ok(())
    }

    #[test]
    fn tamper_forged_appended_line_with_wrong_prev_is_detected() -> R {
        let f = fixture()?;
        write_n(&f, 3)?;
        let mut ls = lines(&f.log)?;
        let mut forged: Value = serde_json::from_str(&ls[2])?;
        forged["seq"] = json!(4);
        forged["prev"] = json!("ab".repeat(32));
        forged["data"] = json!({"resource": "user[mallory]", "action": "create"});
        ls.push(serde_json::to_string(&forged)?);
        write_lines(&f.log, &ls)?;
        let b = broken(&verify(&f.live(), None)?);
        assert_eq!((b.line, b.seq), (4, Some(4)));
        assert!(b.reason.contains("forged"), "{}", b.reason);
        Ok(())
    }

    #[test]
    fn tamper_inserted_line_is_detected() -> R {
        let f = fixture()?;
        write_n(&f, 4)?;
        let mut ls = lines(&f.log)?;
        // A careful forger: right seq and right prev for its position.
        let mut ins: Value = serde_json::from_str(&ls[1])?;
        ins["seq"] = json!(3);
        ins["prev"] = json!(sha256_hex(ls[1].as_bytes()));
        ins["data"] = json!({"resource": "user[mallory]"});
        ls.insert(2, serde_json::to_string(&ins)?);
        write_lines(&f.log, &ls)?;
        let b = broken(&verify(&f.live(), None)?);
        // The genuine seq 3, now on line 4, no longer follows.
        assert_eq!((b.line, b.seq), (4, Some(4)));
        assert!(b.reason.contains("found seq 3"), "{}", b.reason);

        // A careless one: inserted line with a wrong prev is caught on its own line.
        let f2 = fixture()?;
        write_n(&f2, 4)?;
        let mut ls = lines(&f2.log)?;
        let mut ins: Value = serde_json::from_str(&ls[1])?;
        ins["seq"] = json!(3);
        ls.insert(2, serde_json::to_string(&ins)?);
        write_lines(&f2.log, &ls)?;
        let b = broken(&verify(&f2.live(), None)?);
        assert_eq!((b.line, b.seq), (3, Some(3)));
        Ok(())
    }

    #[test]
    fn tamper_non_json_line_is_detected() -> R {
        let f = fixture()?;
        write_n(&f, 3)?;
        let mut ls = lines(&f.log)?;
        ls.insert(1, "this is not json".to_string());
        write_lines(&f.log, &ls)?;
        let b = broken(&verify(&f.live(), None)?);
        assert_eq!((b.line, b.seq), (2, Some(2)));
        assert!(
            b.reason.contains("not a valid audit record"),
            "{}",
            b.reason
        );

        // Unknown fields and duplicate keys are not accepted either.
        let mut ls = lines(&f.log)?;
        ls.remove(1);
        ls[1] = ls[1].replacen("{", "{\"extra\":1,", 1);
        write_lines(&f.log, &ls)?;
        let b = broken(&verify(&f.live(), None)?);
        assert_eq!((b.line, b.seq), (2, Some(2)));
        let mut ls = lines(&f.log)?;
        ls[1] = ls[1].replacen("{\"extra\":1,", "{\"seq\":2,", 1);
        write_lines(&f.log, &ls)?;
        let b = broken(&verify(&f.live(), None)?);
        assert!(b.reason.contains("duplicate"), "{}", b.reason);
        Ok(())
    }

    /// Rewrites every record consistently (recomputing prevs), as an attacker without the key
    /// would; `edit` changes each parsed record.
    fn rewrite_chain(path: &Path, edit: impl Fn(&mut Value)) -> R {
        let mut prev = GENESIS_PREV.to_string();
        let mut out = Vec::new();
        for l in lines(path)? {
            let mut v: Value = serde_json::from_str(&l)?;
            edit(&mut v);
            v["prev"] = json!(prev);
            if v["event"] == "checkpoint" {
                let seq = v["seq"].as_u64().unwrap_or_default();
                v["data"]["covers_seq"] = json!(seq - 1);
                v["data"]["covers_hash"] = json!(prev);
            }
            let s = serde_json::to_string(&v)?;
            prev = sha256_hex(s.as_bytes());
            out.push(s);
        }
        write_lines(path, &out)
    }

    #[test]
    fn keyed_checkpoints_verify_and_report_the_unkeyed_tail() -> R {
        let f = fixture()?;
        let mut log = open(&f)?;
        log.record("run_start", json!({}))?;
        log.record("change", json!({"resource": "file[/a]"}))?;
        assert_eq!(log.checkpoint(KEY)?, 3);
        log.record("run_end", json!({}))?;
        drop(log);

        let r = verify(&f.live(), Some(KEY))?;
        assert!(r.ok(), "{r}");
        assert_eq!(r.checkpoints, 1);
        assert_eq!(r.keyed_through, Some(3));
        assert_eq!(r.unkeyed_records, 1);

        // Without a key, checkpoints are still structurally checked and nothing counts as keyed.
        let r = verify(&f.live(), None)?;
        assert!(r.ok(), "{r}");
        assert_eq!(
            (r.checkpoints, r.keyed_through, r.unkeyed_records),
            (1, None, 4)
        );

        // The wrong key is named as such.
        let b = broken(&verify(&f.live(), Some(b"another key, 16+ bytes long"))?);
        assert_eq!(b.seq, Some(3));
        assert!(b.reason.contains("key id"), "{}", b.reason);
        Ok(())
    }

    #[test]
    fn keyed_checkpoint_detects_a_consistent_rewrite() -> R {
        let f = fixture()?;
        let mut log = open(&f)?;
        log.record(
            "change",
            json!({"resource": "user[alice]", "action": "create"}),
        )?;
        log.record("change", json!({"resource": "file[/etc/sudoers]"}))?;
        log.checkpoint(KEY)?;
        log.record("run_end", json!({}))?;
        drop(log);
        rewrite_chain(&f.log, |v| {
            if v["data"]["resource"] == "user[alice]" {
                v["data"]["resource"] = json!("user[bob]");
            }
        })?;
        // Unkeyed verification cannot tell.
        assert!(verify(&f.live(), None)?.ok());
        let b = broken(&verify(&f.live(), Some(KEY))?);
        assert_eq!((b.line, b.seq), (3, Some(3)));
        assert!(b.reason.contains("HMAC does not verify"), "{}", b.reason);

        // A rewrite that leaves the checkpoint's covers_* alone breaks structurally.
        let f = fixture()?;
        let mut log = open(&f)?;
        log.record("change", json!({"resource": "user[alice]"}))?;
        log.checkpoint(KEY)?;
        drop(log);
        let mut ls = lines(&f.log)?;
        ls[0] = ls[0].replace("alice", "bobby");
        let mut cp: Value = serde_json::from_str(&ls[1])?;
        cp["prev"] = json!(sha256_hex(ls[0].as_bytes()));
        ls[1] = serde_json::to_string(&cp)?;
        write_lines(&f.log, &ls)?;
        let b = broken(&verify(&f.live(), None)?);
        assert_eq!(b.seq, Some(2));
        assert!(b.reason.contains("rewritten"), "{}", b.reason);
        Ok(())
    }

    #[test]
    fn checkpoint_rejects_a_short_key() -> R {
        let f = fixture()?;
        let mut log = open(&f)?;
        assert!(matches!(
            log.checkpoint(b"short"),
            Err(AuditError::WeakKey { len: 5 })
        ));
        assert_eq!(log.seq(), 0);
        Ok(())
    }

    #[test]
    fn rotation_across_two_files() -> R {
        let f = fixture()?;
        write_n(&f, 3)?;
        // What logrotate does (without copytruncate): move away, create an empty file.
        let old = f.log.with_file_name("audit.jsonl.1");
        fs::rename(&f.log, &old)?;
        fs::write(&f.log, "")?;
        fs::set_permissions(&f.log, fs::Permissions::from_mode(0o640))?;

        let mut log = open(&f)?;
        assert_eq!(log.seq(), 4, "open wrote the continued record");
        assert_eq!(log.record("change", json!({"resource": "file[/x]"}))?, 5);
        drop(log);
        let ls = lines(&f.log)?;
        let cont: Value = serde_json::from_str(&ls[0])?;
        assert_eq!(cont["event"], "continued");
        assert_eq!(cont["seq"], 4);
        assert_eq!(cont["data"]["previous_seq"], 3);
        assert_eq!(cont["data"]["previous_log"], json!(f.log.to_string_lossy()));

        let both = verify(&[old.clone(), f.log.clone()], None)?;
        assert!(both.ok(), "{both}");
        assert_eq!((both.records, both.files, both.starts_at_seq), (5, 2, None));

        let alone = verify(&f.live(), None)?;
        assert!(alone.ok(), "{alone}");
        assert_eq!(alone.starts_at_seq, Some(4));
        assert!(alone.to_string().contains("starts mid-chain at seq 4"));
        assert!(verify_with_head(&f.live(), None, &f.head)?.ok());

        // log_files finds both, oldest first.
        assert_eq!(log_files(&f.log)?, vec![old.clone(), f.log.clone()]);

        // Wrong order is a break, not a pass.
        assert!(!verify(&[f.log.clone(), old.clone()], None)?.ok());
        Ok(())
    }

    #[test]
    fn rotation_with_missing_log_file_and_missing_middle_segment() -> R {
        let f = fixture()?;
        write_n(&f, 2)?;
        let s1 = f.log.with_file_name("audit.jsonl.3");
        fs::rename(&f.log, &s1)?; // logrotate without `create`: no live file at all
        write_n(&f, 2)?;
        let s2 = f.log.with_file_name("audit.jsonl.2");
        fs::rename(&f.log, &s2)?;
        write_n(&f, 1)?;
        let all = log_files(&f.log)?;
        assert_eq!(all, vec![s1.clone(), s2.clone(), f.log.clone()]);
        let r = verify(&all, None)?;
        assert!(r.ok(), "{r}");
        assert_eq!(r.records, 2 + 3 + 2);

        let b = broken(&verify(&[s1.clone(), f.log.clone()], None)?);
        assert_eq!((b.file.clone(), b.line, b.seq), (f.log.clone(), 1, Some(3)));
        Ok(())
    }

    #[test]
    fn lost_head_file_continues_from_the_newest_rotated_log() -> R {
        let f = fixture()?;
        write_n(&f, 3)?;
        let old = f.log.with_file_name("audit.jsonl-20261101");
        fs::rename(&f.log, &old)?;
        fs::remove_file(&f.head)?;
        let mut log = open(&f)?;
        assert_eq!(log.seq(), 4, "continued from the rotated log");
        log.record("run_end", json!({}))?;
        drop(log);
        let first: Value = serde_json::from_str(&lines(&f.log)?[0])?;
        assert_eq!(first["data"]["previous_log"], json!(old.to_string_lossy()));
        let r = verify(&[old.clone(), f.log.clone()], None)?;
        assert!(r.ok(), "{r}");

        // An unreadable (compressed) newest rotation is refused rather than restarting at 1.
        let f = fixture()?;
        write_n(&f, 1)?;
        fs::rename(&f.log, f.log.with_file_name("audit.jsonl.1.gz"))?;
        fs::write(f.log.with_file_name("audit.jsonl.1.gz"), [0x1f, 0x8b, 8, 0])?;
        fs::remove_file(&f.head)?;
        match open(&f) {
            Err(e @ AuditError::NoHead { .. }) => {
                assert!(e.to_string().contains("gzip"), "{e}")
            }
            other => panic!("expected NoHead, got {other:?}"),
        }
        Ok(())
    }

    #[test]
    fn torn_tail_is_recovered_on_reopen() -> R {
        let f = fixture()?;
        write_n(&f, 3)?;
        // kill -9 in the middle of a write: half a record, no newline.
        let torn = br#"{"seq":4,"prev":"abc","ts":"2026-"#;
        let mut file = OpenOptions::new().append(true).open(&f.log)?;
        file.write_all(torn)?;
        drop(file);

        let r = verify(&f.live(), None)?;
        assert!(r.ok(), "a torn tail alone is not tampering: {r}");
        assert_eq!(r.torn_tails.len(), 1);
        assert_eq!(r.torn_tails[0].line, 4);
        assert_eq!(r.torn_tails[0].bytes, torn.len() as u64);
        assert!(show(&f.live(), None, None)?.contains("incomplete last line"));

        let mut log = open(&f)?;
        assert_eq!(log.seq(), 4);
        assert_eq!(log.record("run_start", json!({}))?, 5);
        drop(log);
        let ls = lines(&f.log)?;
        assert_eq!(ls.len(), 5);
        let rec: Value = serde_json::from_str(&ls[3])?;
        assert_eq!(rec["event"], "recovered");
        assert_eq!(rec["data"]["discarded_bytes"], torn.len());
        assert_eq!(rec["data"]["discarded_sha256"], sha256_hex(torn));
        let r = verify_with_head(&f.live(), None, &f.head)?;
        assert!(r.ok(), "{r}");
        assert!(r.torn_tails.is_empty());
        assert_eq!(r.records, 5);
        Ok(())
    }

    #[test]
    fn refused_open_leaves_a_torn_tail_in_place() -> R {
        let f = fixture()?;
        write_n(&f, 3)?;
        let ls = lines(&f.log)?;
        let mut text = ls[..2].join("\n");
        text.push_str("\n{\"seq\":3,\"pr");
        fs::write(&f.log, &text)?;
        assert!(matches!(open(&f), Err(AuditError::HeadMismatch { .. })));
        assert_eq!(fs::read_to_string(&f.log)?, text);
        Ok(())
    }

    #[test]
    fn torn_only_line_after_rotation_is_recovered() -> R {
        let f = fixture()?;
        write_n(&f, 2)?;
        let old = f.log.with_file_name("audit.jsonl.1");
        fs::rename(&f.log, &old)?;
        fs::write(&f.log, b"{\"seq\":3,\"pr")?;
        let mut log = open(&f)?;
        // continued (3), then recovered (4).
        assert_eq!(log.seq(), 4);
        log.record("run_end", json!({}))?;
        drop(log);
        let r = verify(&[old, f.log.clone()], None)?;
        assert!(r.ok(), "{r}");
        assert_eq!(r.records, 5);
        Ok(())
    }

    #[test]
    fn head_lagging_by_one_record_after_a_crash_is_accepted() -> R {
        let f = fixture()?;
        write_n(&f, 2)?;
        let stale = fs::read(&f.head)?;
        write_n(&f, 1)?;
        // Crash between the log fsync and the head rename.
        fs::write(&f.head, &stale)?;
        let r = verify_with_head(&f.live(), None, &f.head)?;
        assert!(r.ok(), "{r}");
        assert!(
            r.notes.iter().any(|n| n.contains("ahead of the head")),
            "{r}"
        );
        let mut log = open(&f)?;
        assert_eq!(log.record("run_end", json!({}))?, 4);
        drop(log);
        assert!(verify_with_head(&f.live(), None, &f.head)?.ok());
        Ok(())
    }

    #[test]
    fn open_fails_when_parent_is_a_file() -> R {
        let f = fixture()?;
        fs::create_dir_all(f.root.join("var/log"))?;
        fs::write(f.root.join("var/log/reconcile"), "not a dir")?;
        match open(&f) {
            Err(e @ AuditError::Host(_)) => {
                let msg = e.to_string();
                assert!(msg.contains("var/log/reconcile"), "{msg}");
                assert!(msg.contains("not a directory"), "{msg}");
            }
            other => panic!("expected a host error, got {other:?}"),
        }
        // Same for the head file's directory.
        let f = fixture()?;
        fs::create_dir_all(f.root.join("var"))?;
        fs::write(f.root.join("var/lib"), "")?;
        assert!(matches!(open(&f), Err(AuditError::Host(_))));
        Ok(())
    }

    #[test]
    fn open_fails_in_a_read_only_dir_when_not_root() -> R {
        if nix::unistd::geteuid().is_root() {
            eprintln!("skipped: root ignores directory permissions; parent-is-a-file covers the error path");
            return Ok(());
        }
        let f = fixture()?;
        let dir = f.root.join("var/log/reconcile");
        fs::create_dir_all(&dir)?;
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o555))?;
        let res = open(&f);
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755))?;
        match res {
            Err(e @ AuditError::Io { .. }) => {
                assert!(e.to_string().contains("audit.jsonl"), "{e}");
            }
            other => panic!("expected Io error, got {other:?}"),
        }
        Ok(())
    }

    #[test]
    fn open_refuses_symlinks_and_non_regular_files() -> R {
        let f = fixture()?;
        fs::create_dir_all(f.log.parent().ok_or("no parent")?)?;
        let target = f.root.join("elsewhere");
        fs::write(&target, "")?;
        std::os::unix::fs::symlink(&target, &f.log)?;
        match open(&f) {
            Err(e @ AuditError::Host(HostError::Unsafe { .. })) => {
                assert!(e.to_string().contains("symlink"), "{e}")
            }
            other => panic!("expected a symlink refusal, got {other:?}"),
        }
        assert_eq!(fs::read(&target)?, b"");

        let f = fixture()?;
        fs::create_dir_all(&f.log)?;
        assert!(matches!(open(&f), Err(AuditError::Host(_))));

        // A symlinked head file is refused too.
        let f = fixture()?;
        fs::create_dir_all(f.head.parent().ok_or("no parent")?)?;
        std::os::unix::fs::symlink(&target, &f.head)?;
        assert!(matches!(
            open(&f),
            Err(AuditError::Host(HostError::Unsafe { .. }))
        ));
        Ok(())
    }

    #[test]
    fn second_writer_is_refused_while_the_first_holds_the_log() -> R {
        let f = fixture()?;
        let _first = open(&f)?;
        assert!(matches!(open(&f), Err(AuditError::Locked { .. })));
        Ok(())
    }

    #[test]
    fn corrupt_last_line_refuses_append() -> R {
        let f = fixture()?;
        write_n(&f, 2)?;
        let mut ls = lines(&f.log)?;
        ls.push("garbage".into());
        write_lines(&f.log, &ls)?;
        match open(&f) {
            Err(e @ AuditError::Broken { seq: Some(3), .. }) => {
                assert!(e.to_string().contains("audit.jsonl:3"), "{e}")
            }
            other => panic!("expected Broken at line 3, got {other:?}"),
        }
        Ok(())
    }

    #[test]
    fn record_serializes_hostile_data_safely() -> R {
        let f = fixture()?;
        let mut log = open(&f)?;
        let hostile = "x\",\"seq\":999,\"event\":\"forged\"}\n{\"seq\":1000,\"prev\":\"\u{1b}[2J\\";
        let data = json!({"resource": hostile, "details": hostile, "nested": {"k": [hostile]}});
        assert_eq!(log.record("change", data.clone())?, 1);
        assert_eq!(log.record("run_end", json!({}))?, 2);
        drop(log);
        let text = fs::read_to_string(&f.log)?;
        assert_eq!(text.lines().count(), 2, "one line per record:\n{text}");
        let first: Record = serde_json::from_str(text.lines().next().unwrap_or_default())?;
        assert_eq!(first.seq, 1);
        assert_eq!(first.event, "change");
        assert_eq!(first.data, data);
        assert!(verify(&f.live(), None)?.ok());

        // `show` does not pass the escape sequence to the terminal.
        let shown = show(&f.live(), None, None)?;
        assert!(!shown.contains('\u{1b}'), "{shown:?}");
        assert!(shown.contains("\\u{1b}"), "{shown}");
        assert_eq!(shown.lines().count(), 2, "{shown}");
        Ok(())
    }

    #[test]
    fn record_rejects_bad_and_reserved_event_names() -> R {
        let f = fixture()?;
        let mut log = open(&f)?;
        for bad in [
            "",
            "Change",
            "a b",
            "x\"y",
            "continued",
            "checkpoint",
            "recovered",
        ] {
            assert!(
                matches!(
                    log.record(bad, json!({})),
                    Err(AuditError::InvalidEvent { .. })
                ),
                "{bad:?}"
            );
        }
        let big = "x".repeat(MAX_RECORD_BYTES);
        assert!(matches!(
            log.record("change", json!({ "d": big })),
            Err(AuditError::TooLarge { .. })
        ));
        assert_eq!(log.seq(), 0);
        assert_eq!(log.record("refused", json!({"reason": "stale plan"}))?, 1);
        Ok(())
    }

    #[test]
    fn show_prints_seq_ts_event_resource_and_filters() -> R {
        let f = fixture()?;
        let mut log = open(&f)?;
        log.record("run_start", json!({"manifest": "site.yaml"}))?;
        log.record(
            "change",
            json!({"resource": "file[/etc/motd]", "action": "update"}),
        )?;
        log.record(
            "failure",
            json!({"resource": "unit[nginx.service]", "error": "exit 1"}),
        )?;
        drop(log);
        let ts2 = serde_json::from_str::<Value>(&lines(&f.log)?[1])?["ts"]
            .as_str()
            .unwrap_or_default()
            .to_string();

        let all = show(&f.live(), None, None)?;
        assert_eq!(all.lines().count(), 3, "{all}");
        let l2 = all.lines().nth(1).unwrap_or_default();
        assert!(l2.starts_with("#2 "), "{l2}");
        assert!(l2.contains(&ts2), "{l2}");
        assert!(l2.contains("change"), "{l2}");
        assert!(l2.contains("file[/etc/motd]"), "{l2}");
        assert!(l2.contains("root@web1 pid=4242 run=run-1"), "{l2}");
        assert!(l2.contains("\"action\":\"update\""), "{l2}");

        let only = show(&f.live(), None, Some("nginx"))?;
        assert_eq!(only.lines().count(), 1, "{only}");
        assert!(only.contains("#3 ") && only.contains("failure"), "{only}");

        let since: jiff::Timestamp = ts2.parse()?;
        let later = show(&f.live(), Some(since), None)?;
        assert_eq!(later.lines().count(), 2, "{later}");
        assert!(!later.contains("#1 "), "{later}");
        let future = since.checked_add(jiff::SignedDuration::from_hours(1))?;
        assert_eq!(show(&f.live(), Some(future), None)?, "");

        // A bad line is shown as such, not skipped.
        let mut ls = lines(&f.log)?;
        ls.push("junk".into());
        write_lines(&f.log, &ls)?;
        assert!(show(&f.live(), None, None)?.contains(":4: not a valid audit record"));
        Ok(())
    }

    #[test]
    fn read_key_file_checks_mode_length_and_trims_text() -> R {
        let dir = tempfile::tempdir()?;
        let p = dir.path().join("audit.key");
        fs::write(&p, "00112233445566778899aabbccddeeff\n")?;
        fs::set_permissions(&p, fs::Permissions::from_mode(0o644))?;
        match read_key_file(&p) {
            Err(e @ AuditError::Key { .. }) => assert!(e.to_string().contains("0644"), "{e}"),
            other => panic!("expected Key error, got {other:?}"),
        }
        fs::set_permissions(&p, fs::Permissions::from_mode(0o600))?;
        assert_eq!(read_key_file(&p)?, b"00112233445566778899aabbccddeeff");

        fs::write(&p, "short\n")?;
        assert!(matches!(read_key_file(&p), Err(AuditError::Key { .. })));

        let bin: Vec<u8> = (0u8..32).map(|i| i.wrapping_mul(37) | 0x80).collect();
        fs::write(&p, &bin)?;
        assert_eq!(read_key_file(&p)?, bin);

        let link = dir.path().join("link.key");
        std::os::unix::fs::symlink(&p, &link)?;
        assert!(matches!(read_key_file(&link), Err(AuditError::Key { .. })));
        assert!(matches!(
            read_key_file(&dir.path().join("missing")),
            Err(AuditError::Io { .. })
        ));
        Ok(())
    }

    #[test]
    fn verify_reports_missing_compressed_and_empty_inputs() -> R {
        assert!(matches!(verify(&[], None), Err(AuditError::NoFiles)));
        let dir = tempfile::tempdir()?;
        let missing = dir.path().join("nope.jsonl");
        match verify(&[missing], None) {
            Err(e @ AuditError::Io { .. }) => assert!(e.to_string().contains("nope.jsonl")),
            other => panic!("expected Io, got {other:?}"),
        }
        let gz = dir.path().join("audit.jsonl.2.gz");
        fs::write(&gz, [0x1f, 0x8b, 8, 0])?;
        assert!(matches!(
            verify(&[gz], None),
            Err(AuditError::Compressed { .. })
        ));
        let empty = dir.path().join("empty.jsonl");
        fs::write(&empty, "")?;
        let r = verify(&[empty], None)?;
        assert!(r.ok() && r.records == 0 && !r.notes.is_empty(), "{r}");
        Ok(())
    }

    #[test]
    fn log_files_orders_numbered_and_dated_rotations() -> R {
        let dir = tempfile::tempdir()?;
        let log = dir.path().join("audit.jsonl");
        for n in [
            "audit.jsonl",
            "audit.jsonl.1",
            "audit.jsonl.10",
            "audit.jsonl.2.gz",
            "audit.jsonl-20261001",
            "audit.jsonl-20260901",
            "audit.jsonl.tmp",
            "other.jsonl.1",
        ] {
            fs::write(dir.path().join(n), "")?;
        }
        let names: Vec<String> = log_files(&log)?
            .iter()
            .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .collect();
        assert_eq!(
            names,
            [
                "audit.jsonl.10",
                "audit.jsonl.2.gz",
                "audit.jsonl.1",
                "audit.jsonl-20260901",
                "audit.jsonl-20261001",
                "audit.jsonl"
            ]
        );
        Ok(())
    }

    #[test]
    fn context_current_and_run_id_are_filled() {
        let c = AuditContext::current(new_run_id());
        assert!(!c.host.is_empty() && !c.user.is_empty());
        assert_eq!(c.pid, std::process::id());
        assert!(c.run_id.len() > 16, "{}", c.run_id);
        assert_ne!(new_run_id(), new_run_id());
    }

    #[test]
    fn open_refuses_a_log_edited_in_the_middle_and_leaves_it_as_it_was() -> R {
        let f = fixture()?;
        write_n(&f, 5)?;
        let mut ls = lines(&f.log)?;
        ls[1] = ls[1].replace("/etc/f1", "/etc/XX");
        write_lines(&f.log, &ls)?;
        let before = fs::read(&f.log)?;
        match open(&f) {
            Err(e @ AuditError::Broken { seq: Some(3), .. }) => {
                let msg = e.to_string();
                assert!(msg.contains("seq 3"), "{msg}");
                assert!(msg.contains("--audit-recover"), "{msg}");
                assert!(!msg.contains("--head"), "{msg}");
            }
            other => panic!("expected Broken at seq 3, got {other:?}"),
        }
        assert_eq!(fs::read(&f.log)?, before);
        // Deleted and swapped records are refused the same way.
        let mut ls = lines(&f.log)?;
        ls.swap(0, 1);
        write_lines(&f.log, &ls)?;
        assert!(matches!(open(&f), Err(AuditError::Broken { .. })));
        Ok(())
    }

    #[test]
    fn recover_moves_a_broken_log_aside_and_starts_a_recorded_segment() -> R {
        let f = fixture()?;
        write_n(&f, 4)?;
        let mut ls = lines(&f.log)?;
        ls.remove(1);
        write_lines(&f.log, &ls)?;
        let broken_bytes = fs::read(&f.log)?;
        let mut log = AuditLog::open(&f.host, DEFAULT_LOG, DEFAULT_HEAD, ctx(), true)?;
        assert_eq!(log.seq(), 5);
        log.record("run_end", json!({}))?;
        drop(log);
        let dir = f.log.parent().ok_or("no parent")?;
        let moved: Vec<PathBuf> = fs::read_dir(dir)?
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| p.to_string_lossy().contains("audit.jsonl.broken-"))
            .collect();
        assert_eq!(moved.len(), 1, "{moved:?}");
        assert_eq!(fs::read(&moved[0])?, broken_bytes);
        let first: Value = serde_json::from_str(&lines(&f.log)?[0])?;
        assert_eq!(first["event"], EVENT_SEGMENT);
        assert_eq!(first["data"]["previous_seq"], 4);
        assert_eq!(first["data"]["moved_sha256"], sha256_hex(&broken_bytes));
        assert!(first["data"]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("seq 2")));
        let r = verify_with_head(&f.live(), None, &f.head)?;
        assert!(r.ok(), "{r}");
        assert_eq!(r.segments.len(), 1);
        let text = r.to_string();
        assert!(text.contains("new segment"), "{text}");
        assert!(text.contains(".broken-"), "{text}");
        // The moved log is not taken for a rotation.
        assert_eq!(log_files(&f.log)?, f.live());
        // A healthy log is opened as usual with the flag.
        let log = AuditLog::open(&f.host, DEFAULT_LOG, DEFAULT_HEAD, ctx(), true)?;
        assert_eq!(log.seq(), 6);
        Ok(())
    }

    #[test]
    fn a_file_that_is_not_an_audit_log_is_refused_with_its_mode_and_content_unchanged() -> R {
        let f = fixture()?;
        let p = f.root.join("srv/data");
        fs::create_dir_all(f.root.join("srv"))?;
        fs::write(&p, "user:x:1:1::/:/bin/sh\n")?;
        fs::set_permissions(&p, fs::Permissions::from_mode(0o644))?;
        for recover in [false, true] {
            let res = AuditLog::open(&f.host, "/srv/data", &head_for("/srv/data"), ctx(), recover);
            assert!(res.is_err(), "{res:?}");
            assert_eq!(fs::read_to_string(&p)?, "user:x:1:1::/:/bin/sh\n");
            assert_eq!(fs::metadata(&p)?.permissions().mode() & 0o7777, 0o644);
        }
        Ok(())
    }

    #[test]
    fn each_log_has_its_own_head() {
        assert_eq!(head_for(DEFAULT_LOG), DEFAULT_HEAD);
        let a = head_for("/var/log/site/audit.jsonl");
        let b = head_for("/var/log/other/audit.jsonl");
        assert_ne!(a, b);
        assert_ne!(a, DEFAULT_HEAD);
        assert!(a.starts_with("/var/lib/reconcile/audit-head-"), "{a}");
    }

    #[test]
    fn verify_of_bytes_without_a_newline_is_a_problem_not_an_ok_chain() -> R {
        let dir = tempfile::tempdir()?;
        let p = dir.path().join("x.jsonl");
        fs::write(&p, "no newline here")?;
        let r = verify(std::slice::from_ref(&p), None)?;
        assert!(!r.ok(), "{r}");
        let text = r.to_string();
        assert!(!text.contains("chain OK"), "{text}");
        assert!(text.contains("no complete record"), "{text}");
        Ok(())
    }

    #[test]
    fn a_head_shared_with_another_log_before_each_had_its_own_is_not_taken_for_this_one() -> R {
        let f = fixture()?;
        // The old layout: a configured log wrote the default head.
        let mut other =
            AuditLog::open(&f.host, "/var/log/site/a.jsonl", DEFAULT_HEAD, ctx(), false)?;
        for _ in 0..3 {
            other.record("change", json!({}))?;
        }
        drop(other);
        let mut log = open(&f)?;
        assert_eq!(log.seq(), 0);
        log.record("refused", json!({}))?;
        drop(log);
        assert!(verify_in(&f.host, DEFAULT_LOG, None)?.ok());
        Ok(())
    }
}
