//! What an apply writes to the audit log, and when. Records carry ids, actions, field
//! names and content hashes; never content and never values of secret resources
//! (changes of secret resources already hold only "(sensitive)").

use std::path::Path;
use std::sync::Mutex;

use serde_json::{json, Value};

use crate::apply::{Outcome, Status};
use crate::audit::{self, AuditContext, AuditLog};
use crate::host::{Cmd, Host};

pub struct Trail {
    log: Mutex<AuditLog>,
    errors: Mutex<Vec<String>>,
}

/// The audit log and head paths on the target (settings may move the log).
pub fn paths(host: &Host, configured: Option<&str>) -> (std::path::PathBuf, std::path::PathBuf) {
    let log = configured.unwrap_or(audit::DEFAULT_LOG);
    (host.real_path(log), host.real_path(audit::DEFAULT_HEAD))
}

impl Trail {
    /// Opens the log; failure means the apply must not start.
    pub fn open(host: &Host, configured: Option<&str>) -> Result<Trail, String> {
        let (log, head) = paths(host, configured);
        let ctx = AuditContext::current(audit::new_run_id());
        let log = AuditLog::open(&log, &head, ctx)
            .map_err(|e| format!("cannot write the audit log, so nothing is applied: {e}"))?;
        Ok(Trail {
            log: Mutex::new(log),
            errors: Mutex::new(Vec::new()),
        })
    }

    pub fn record(&self, event: &str, data: Value) {
        let mut log = match self.log.lock() {
            Ok(l) => l,
            Err(p) => p.into_inner(),
        };
        if let Err(e) = log.record(event, data) {
            let mut errors = match self.errors.lock() {
                Ok(e) => e,
                Err(p) => p.into_inner(),
            };
            errors.push(e.to_string());
        }
    }

    pub fn checkpoint(&self, key: &[u8]) -> Result<(), String> {
        let mut log = match self.log.lock() {
            Ok(l) => l,
            Err(p) => p.into_inner(),
        };
        log.checkpoint(key).map(|_| ()).map_err(|e| e.to_string())
    }

    pub fn errors(&self) -> Vec<String> {
        match self.errors.lock() {
            Ok(e) => e.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    pub fn outcome(&self, o: &Outcome) {
        let mut data = json!({ "resource": o.id.to_string() });
        match &o.status {
            Status::Unchanged => {}
            Status::Changed | Status::Refreshed => {
                if let Some(c) = &o.change {
                    data["action"] = json!(c.action);
                    data["fields"] = json!(c.fields);
                    data["sensitive"] = json!(c.sensitive);
                }
                data["status"] = json!(if o.status == Status::Changed {
                    "changed"
                } else {
                    "refreshed"
                });
                self.record("change", data);
            }
            Status::Failed { reason } => {
                data["reason"] = json!(reason);
                if let Some(c) = &o.change {
                    data["action"] = json!(c.action);
                }
                self.record("failure", data);
            }
            Status::Skipped { reason } => {
                data["reason"] = json!(reason);
                self.record("skipped", data);
            }
        }
    }
}

/// Git commit and dirty state of each manifest's work tree, when it is in one.
pub fn git_state(files: &[std::path::PathBuf]) -> Value {
    let mut dirs: Vec<&Path> = files.iter().filter_map(|f| f.parent()).collect();
    dirs.sort();
    dirs.dedup();
    let states: Vec<Value> = dirs
        .iter()
        .filter_map(|dir| {
            let dir = if dir.as_os_str().is_empty() {
                Path::new(".")
            } else {
                dir
            };
            let d = dir.display().to_string();
            let commit = Cmd::new("git")
                .args(["-C", &d, "rev-parse", "HEAD"])
                .run()
                .ok()
                .filter(|o| o.success())?;
            let dirty = Cmd::new("git")
                .args(["-C", &d, "status", "--porcelain", "--", "."])
                .run()
                .ok()
                .map(|o| !o.stdout.trim().is_empty());
            Some(json!({ "dir": d, "commit": commit.stdout.trim(), "dirty": dirty }))
        })
        .collect();
    Value::Array(states)
}
