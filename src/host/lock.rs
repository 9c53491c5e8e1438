//! One run at a time per target root: an `flock` on `ROOT/run/reconcile.lock`.
//! The kernel drops the lock when the holder dies, so a crashed run never wedges the next.
//!
//! A run refused the lock cannot write the audit log (the holder owns it: two writers
//! would fork the hash chain), so it leaves a line in `ROOT/var/lib/reconcile/lock-refusals.jsonl`
//! and the next apply that holds the lock moves those lines into the audit trail.

use std::io::{Read, Seek, Write};
use std::time::{Duration, Instant};

use nix::fcntl::{Flock, FlockArg};

use super::{Host, HostError};

pub const LOCK_PATH: &str = "/run/reconcile.lock";
pub const REFUSALS: &str = "/var/lib/reconcile/lock-refusals.jsonl";
/// Refusals kept at most until an apply takes them into the audit trail.
const MAX_REFUSALS: u64 = 4 << 20;

pub struct RunLock {
    _lock: Flock<std::fs::File>,
}

/// Who holds the lock, as the holder wrote it (its pid), for messages.
pub struct Busy {
    pub holder: Option<String>,
    pub message: String,
}

impl Host {
    /// Takes the run lock, or says who holds it. The lock file is one of the engine's own
    /// files: reached by the root-safe walk, so a symlinked `ROOT/run` is refused rather
    /// than written through.
    fn try_lock(&self) -> Result<Result<RunLock, Busy>, HostError> {
        let (file, _) = self.open_state_append(LOCK_PATH, 0o755, 0o600)?;
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(mut lock) => {
                let _ = lock.set_len(0);
                let _ = lock.rewind();
                let _ = writeln!(lock, "{}", std::process::id());
                let _ = lock.sync_data();
                Ok(Ok(RunLock { _lock: lock }))
            }
            Err((mut file, _)) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                let holder = holder.trim().to_string();
                let who = if holder.is_empty() {
                    "another process".to_string()
                } else {
                    format!("pid {holder}")
                };
                Ok(Err(Busy {
                    holder: (!holder.is_empty()).then_some(holder),
                    message: format!(
                        "another reconcile run ({who}) holds the lock {}",
                        self.show(LOCK_PATH)
                    ),
                }))
            }
        }
    }

    /// Takes the run lock, failing at once when another run holds it.
    pub fn lock(&self) -> Result<RunLock, HostError> {
        match self.try_lock()? {
            Ok(l) => Ok(l),
            Err(busy) => Err(HostError::Other(format!(
                "{}; try again when it has finished",
                busy.message
            ))),
        }
    }

    /// Takes the run lock, waiting up to `timeout` for another run to finish. The outer
    /// error is a failure to reach the lock file; the inner one says who kept it.
    pub fn lock_wait(&self, timeout: Duration) -> Result<Result<RunLock, Busy>, HostError> {
        let deadline = Instant::now() + timeout;
        loop {
            match self.try_lock()? {
                Ok(l) => return Ok(Ok(l)),
                Err(busy) => {
                    let now = Instant::now();
                    if now >= deadline {
                        return Ok(Err(busy));
                    }
                    std::thread::sleep((deadline - now).min(Duration::from_millis(100)));
                }
            }
        }
    }

    /// Leaves a note that a run was refused the lock, for the next apply to put in the
    /// audit trail (see the module docs). One JSON object per line.
    pub fn note_lock_refusal(&self, entry: &serde_json::Value) -> Result<(), HostError> {
        let (file, _) = self.open_state_append(REFUSALS, 0o750, 0o600)?;
        let mut file =
            hold(file, Duration::from_secs(5)).map_err(|reason| self.refusals_error(reason))?;
        if file.metadata().map(|m| m.len()).unwrap_or(0) > MAX_REFUSALS {
            return Err(self.refusals_error("is full; the next apply empties it".into()));
        }
        let mut line = entry.to_string();
        line.push('\n');
        file.write_all(line.as_bytes())
            .and_then(|_| file.sync_data())
            .map_err(|e| self.refusals_error(e.to_string()))
    }

    /// Takes the noted refusals (oldest first) and empties the file. Under the run lock.
    pub fn take_lock_refusals(&self) -> Result<Vec<serde_json::Value>, HostError> {
        if self.open_state_read(REFUSALS)?.is_none() {
            return Ok(Vec::new());
        }
        let (file, _) = self.open_state_append(REFUSALS, 0o750, 0o600)?;
        let mut file =
            hold(file, Duration::from_secs(5)).map_err(|reason| self.refusals_error(reason))?;
        let mut text = String::new();
        file.rewind()
            .and_then(|_| {
                (&mut *file)
                    .take(MAX_REFUSALS + 4096)
                    .read_to_string(&mut text)
            })
            .map_err(|e| self.refusals_error(e.to_string()))?;
        let entries = text
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| {
                serde_json::from_str(l)
                    .unwrap_or_else(|_| serde_json::json!({ "unreadable": l.chars().take(200).collect::<String>() }))
            })
            .collect();
        file.set_len(0)
            .and_then(|_| file.sync_data())
            .map_err(|e| self.refusals_error(e.to_string()))?;
        Ok(entries)
    }

    fn refusals_error(&self, reason: String) -> HostError {
        HostError::Path {
            path: self.show(REFUSALS),
            reason,
        }
    }
}

/// An exclusive `flock` held for a short read or append; retried for up to `wait`.
fn hold(mut file: std::fs::File, wait: Duration) -> Result<Flock<std::fs::File>, String> {
    let deadline = Instant::now() + wait;
    loop {
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(l) => return Ok(l),
            Err((f, _)) if Instant::now() < deadline => {
                file = f;
                std::thread::sleep(Duration::from_millis(20));
            }
            Err((_, e)) => return Err(format!("cannot lock: {}", e.desc())),
        }
    }
}

/// Parses `--lock-timeout`: a number with a unit (`500ms`, `30s`, `5m`, `1h`), or plain
/// seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("`{text}` is not a duration; use e.g. 30s, 5m, 1h"))?;
    let secs = |k: u64| n.checked_mul(k).map(Duration::from_secs);
    let d = match unit.trim() {
        "ms" => Some(Duration::from_millis(n)),
        "" | "s" | "sec" => secs(1),
        "m" | "min" => secs(60),
        "h" => secs(3600),
        other => {
            return Err(format!(
                "`{text}`: unknown unit `{other}`; use ms, s, m or h (e.g. 30s, 5m)"
            ))
        }
    };
    d.ok_or_else(|| format!("`{text}` is too long"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("7"), Ok(Duration::from_secs(7)));
        assert!(parse_duration("5 parsecs").is_err());
        assert!(parse_duration("s").is_err());
        assert!(parse_duration("-1s").is_err());
    }

    #[test]
    fn refusals_are_noted_then_taken_once() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let host = Host::open(dir.path())?;
        assert!(host.take_lock_refusals()?.is_empty());
        assert!(!dir.path().join("var").exists(), "taking created something");
        host.note_lock_refusal(&serde_json::json!({"pid": 1}))?;
        host.note_lock_refusal(&serde_json::json!({"pid": 2}))?;
        let taken = host.take_lock_refusals()?;
        assert_eq!(taken.len(), 2);
        assert_eq!(taken[1]["pid"], 2);
        assert!(host.take_lock_refusals()?.is_empty());
        Ok(())
    }
}
