//! What an apply writes to the audit log, and when. Records carry ids, actions, field
//! names and content hashes; never content and never values of secret resources
//! (changes of secret resources already hold only "(sensitive)").

use std::path::Path;
use std::sync::Mutex;

use serde_json::{json, Value};

use crate::apply::{Outcome, Status};
use crate::audit::{self, AuditContext, AuditLog};
use crate::host::{Cmd, Host};
use crate::resource::Catalog;

pub struct Trail<'h> {
    run_id: String,
    log: Mutex<AuditLog<'h>>,
    errors: Mutex<Vec<String>>,
}

/// The audit log and its head file on the target (settings may move the log; each log has
/// its own head), as paths under the root.
pub fn paths(configured: Option<&str>) -> (String, String) {
    let log = configured.unwrap_or(audit::DEFAULT_LOG);
    (log.to_string(), audit::head_for(log))
}

/// Trees that hold the system's own configuration, kernel interfaces or the engine's other
/// files: an audit log there would replace or chmod a file that is not one.
const NOT_FOR_LOGS: &[&str] = &[
    "/etc",
    "/proc",
    "/sys",
    "/dev",
    "/boot",
    "/usr",
    "/bin",
    "/sbin",
    "/lib",
    "/lib64",
    "/var/lib/reconcile",
    "/run/reconcile.lock",
];

fn under(path: &str, dir: &str) -> bool {
    path == dir
        || path
            .strip_prefix(dir)
            .is_some_and(|rest| rest.starts_with('/'))
}

/// Checks `settings.audit_log` before anything is opened: not under /etc (or another system
/// tree), not the engine's own state, not a path the manifests manage (nor inside one). An
/// existing file there that is not an audit log is refused later, unchanged, by the verifier.
pub fn check_log_setting(configured: &str, catalog: &Catalog) -> Result<(), String> {
    if configured == "/" || !configured.starts_with('/') {
        return Err(format!(
            "settings.audit_log {configured:?} must be an absolute path to a file"
        ));
    }
    if let Some(dir) = NOT_FOR_LOGS.iter().find(|d| under(configured, d)) {
        return Err(format!(
            "settings.audit_log {configured} is under {dir}, which holds system or reconcile files; choose a path such as {}",
            audit::DEFAULT_LOG
        ));
    }
    for r in &catalog.resources {
        if let Some(p) = r.managed_path() {
            if under(configured, p) || under(p, configured) {
                return Err(format!(
                    "settings.audit_log {configured} is managed by {} (the audit log must not be a managed path, nor inside or above one)",
                    r.id()
                ));
            }
        }
    }
    Ok(())
}

impl<'h> Trail<'h> {
    /// Opens the log; failure means the apply must not start. With `recover`, a log that
    /// fails verification is moved aside and a new, recorded segment started.
    pub fn open(
        host: &'h Host,
        configured: Option<&str>,
        recover: bool,
    ) -> Result<Trail<'h>, String> {
        let (log, head) = paths(configured);
        let ctx = AuditContext::current(audit::new_run_id());
        let run_id = ctx.run_id.clone();
        let log = AuditLog::open(host, &log, &head, ctx, recover)
            .map_err(|e| format!("cannot write the audit log, so nothing is applied: {e}"))?;
        Ok(Trail {
            run_id,
            log: Mutex::new(log),
            errors: Mutex::new(Vec::new()),
        })
    }

    /// This run's id, as every record carries it.
    pub fn run_id(&self) -> String {
        self.run_id.clone()
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
        self.outcome_with(o, false);
    }

    /// The outcome of a resource the manifests no longer declare (`settings.removed`).
    pub fn undeclared_outcome(&self, o: &Outcome) {
        self.outcome_with(o, true);
    }

    fn outcome_with(&self, o: &Outcome, undeclared: bool) {
        let mut data = json!({ "resource": o.id.to_string() });
        if undeclared {
            data["undeclared"] = json!(true);
        }
        match &o.status {
            Status::Unchanged if undeclared => self.record("forgotten", data),
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
