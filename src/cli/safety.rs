//! The operator-safety parts of the commands: the host's own environment, resources no
//! longer declared in the plan text, saved plans (base directory, hash, `show`).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::plan::{Action, Change, Plan};
use crate::render::{self, Style};
use crate::state::Record;

/// The environment a run uses, and why.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EnvChoice {
    pub env: Option<String>,
    /// `Some("recorded")` when taken from the target's record.
    pub source: Option<String>,
    /// The recorded environment `--switch-env` moves away from.
    pub switch_from: Option<String>,
}

/// Chooses the environment: `--env`, else the one the last successful apply recorded on the
/// target. A different `--env` than the recorded one is refused without `--switch-env`: a
/// check with development values against a production host reports false drift, and an
/// apply would downgrade it.
pub fn choose_env(
    given: Option<&str>,
    switch: bool,
    record: Option<&Record>,
    root: &str,
) -> Result<EnvChoice, String> {
    let recorded = record.and_then(|r| r.environment.as_deref());
    match (given, recorded) {
        (None, Some(r)) => Ok(EnvChoice {
            env: Some(r.to_string()),
            source: Some("recorded".into()),
            switch_from: None,
        }),
        (Some(g), Some(r)) if g != r => {
            if switch {
                Ok(EnvChoice {
                    env: Some(g.to_string()),
                    source: None,
                    switch_from: Some(r.to_string()),
                })
            } else {
                Err(format!(
                    "{root} was last applied with --env {r}; --env {g} would switch its environment. \
                     Pass --switch-env with --env {g} to switch on purpose (the plan and the audit trail show it), \
                     or leave out --env to use {r}"
                ))
            }
        }
        (g, _) => Ok(EnvChoice {
            env: g.map(str::to_string),
            source: None,
            switch_from: None,
        }),
    }
}

/// Whether a saved plan's environment still holds for the target: it was made against the
/// environment recorded then, which a later apply may have changed.
pub fn check_saved_env(plan: &Plan, record: Option<&Record>) -> Result<(), String> {
    let Some(recorded) = record.and_then(|r| r.environment.as_deref()) else {
        return Ok(());
    };
    let planned = plan.environment.as_deref();
    if planned == Some(recorded) || plan.switch_env_from.as_deref() == Some(recorded) {
        return Ok(());
    }
    Err(format!(
        "stale plan: {} is recorded as environment {recorded}, but the plan was made for {} without --switch-env from {recorded}; nothing was changed. Run `reconcile plan` again.",
        plan.root,
        planned.map_or("no environment".to_string(), |e| format!("environment {e}"))
    ))
}

/// The line that says which environment a run uses when `--env` alone did not say it.
pub fn env_line(choice: &EnvChoice, root: &str) -> Option<String> {
    let env = choice.env.as_deref().unwrap_or("(none)");
    if let Some(from) = &choice.switch_from {
        return Some(format!(
            "Environment: {env}, switching from {from} (--switch-env).\n"
        ));
    }
    (choice.source.as_deref() == Some("recorded")).then(|| {
        format!(
            "Environment: {env} (recorded on {root} by its last successful apply; --env NAME --switch-env to change it).\n"
        )
    })
}

/// [`env_line`] for a plan.
pub fn env_note(plan: &Plan) -> Option<String> {
    env_line(
        &EnvChoice {
            env: plan.environment.clone(),
            source: plan.environment_source.clone(),
            switch_from: plan.switch_env_from.clone(),
        },
        &plan.root,
    )
}

fn removed_summary(plan: &Plan) -> String {
    let n = plan.removed.len();
    let left = plan
        .removed
        .iter()
        .filter(|c| c.notes.iter().any(|n| n.starts_with("left in place")))
        .count();
    let mut parts = Vec::new();
    if left > 0 {
        parts.push(format!("{left} left in place"));
    }
    if n > left {
        parts.push(format!("{} undone or forgotten by apply", n - left));
    }
    format!(" {n} no longer declared ({}).", parts.join(", "))
}

/// One resource no longer declared: `- file[/etc/x] (no longer declared)` and what
/// happens to it.
pub fn removed_change(out: &mut String, c: &Change, style: Style) {
    let mut shown = c.clone();
    shown.action = Action::Delete;
    shown.notes.retain(|n| n != "no longer declared");
    let mut text = String::new();
    render::change(&mut text, &shown, style);
    let mut lines = text.lines();
    if let Some(first) = lines.next() {
        let _ = writeln!(out, "{first} (no longer declared)");
    }
    for l in lines {
        let _ = writeln!(out, "{l}");
    }
}

/// The plan as text: `render::plan`, with the environment line and the resources no
/// longer declared.
/// A plan as `-q` shows it: the resources that could not be planned and the summary
/// line (with resources no longer declared counted), nothing else.
pub fn plan_quiet(plan: &Plan, style: Style) -> String {
    let text = render::plan_quiet(plan, style);
    if plan.removed.is_empty() {
        return text;
    }
    let (body, last) = text
        .trim_end_matches('\n')
        .rsplit_once('\n')
        .map_or(("", text.trim_end_matches('\n')), |(b, l)| (b, l));
    let mut out = String::from(body);
    if !out.is_empty() {
        out.push('\n');
    }
    out.push_str(last);
    out.push_str(&removed_summary(plan));
    out.push('\n');
    out
}

pub fn plan_text(plan: &Plan, style: Style) -> String {
    let mut out = env_note(plan).unwrap_or_default();
    if plan.removed.is_empty() {
        out.push_str(&render::plan(plan, style));
        return out;
    }
    for w in &plan.warnings {
        let _ = writeln!(out, "{w}");
    }
    for c in plan.changes.iter().filter(|c| c.is_change()) {
        render::change(&mut out, c, style);
        out.push('\n');
    }
    for c in &plan.removed {
        removed_change(&mut out, c, style);
        out.push('\n');
    }
    for e in &plan.errors {
        let at =
            e.at.as_deref()
                .map(|a| format!("{a}: "))
                .unwrap_or_default();
        let _ = writeln!(out, "error: {at}{}: {}", e.id, e.message);
    }
    let _ = write!(out, "{}", render::summary_line(&plan.summary));
    out.push_str(&removed_summary(plan));
    if plan.summary.errors > 0 {
        let _ = write!(
            out,
            " {} resource(s) could not be planned.",
            plan.summary.errors
        );
    }
    out.push('\n');
    out
}

/// `sha256:` and the hex digest of a saved plan's bytes.
pub fn plan_hash(bytes: &[u8]) -> String {
    format!("sha256:{}", crate::plan::sha256_hex(bytes))
}

/// Saves a plan (with the working directory as its base) atomically; returns its hash.
pub fn save_plan(plan: &Plan, path: &Path) -> Result<String, String> {
    let mut saved = plan.clone();
    saved.base = std::env::current_dir()
        .ok()
        .map(|d| d.display().to_string());
    let mut doc = serde_json::to_value(&saved).map_err(|e| e.to_string())?;
    if let Some(fields) = doc.as_object_mut() {
        fields.insert(
            "reconcile_version".into(),
            serde_json::json!(super::commands::TOOL_VERSION),
        );
    }
    let mut bytes = serde_json::to_vec_pretty(&doc).map_err(|e| e.to_string())?;
    bytes.push(b'\n');
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, &bytes)
        .and_then(|_| std::fs::rename(&tmp, path))
        .map_err(|e| e.to_string())?;
    Ok(plan_hash(&bytes))
}

/// Makes the saved plan's relative manifest paths resolve as they did when it was made:
/// the process moves to the plan's base directory (manifest names, template lookups and
/// the inputs fingerprint all depend on it). A missing base or manifest is refused by
/// name, before anything is loaded.
pub fn enter_base(plan: &Plan, plan_file: &Path) -> Result<(), String> {
    let Some(base) = plan.base.as_deref() else {
        // Plans saved before the base was recorded: relative to the working directory,
        // as they always were.
        return check_manifests(plan, Path::new("."), plan_file);
    };
    let dir = PathBuf::from(base);
    if !dir.is_dir() {
        return Err(format!(
            "{}: the plan was made in {base}, which does not exist here; its manifests ({}) are relative to it. \
             Apply it where that directory exists (a checkout at the same path), or plan again; nothing was changed",
            plan_file.display(),
            plan.manifests.join(", ")
        ));
    }
    check_manifests(plan, &dir, plan_file)?;
    std::env::set_current_dir(&dir).map_err(|e| {
        format!(
            "{}: cannot enter the plan's base directory {base}: {e}; nothing was changed",
            plan_file.display()
        )
    })
}

fn check_manifests(plan: &Plan, dir: &Path, plan_file: &Path) -> Result<(), String> {
    let missing: Vec<String> = plan
        .manifests
        .iter()
        .map(|m| dir.join(m))
        .filter(|p| !p.exists())
        .map(|p| p.display().to_string())
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    Err(format!(
        "{}: the plan's manifests are gone: {} does not exist{}; nothing was changed. Run `reconcile plan` again",
        plan_file.display(),
        missing.join(", "),
        plan.base
            .as_deref()
            .map(|b| format!(" (the plan was made in {b})"))
            .unwrap_or_default()
    ))
}

/// `reconcile show PLANFILE` as text: where and how the plan was made, then the plan.
pub fn show_text(plan: &Plan, file: &Path, hash: &str, style: Style) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "Saved plan {} ({hash})", file.display());
    let _ = writeln!(
        out,
        "  root: {}\n  manifests: {}{}",
        plan.root,
        plan.manifests.join(", "),
        plan.base
            .as_deref()
            .map(|b| format!(" (relative to {b})"))
            .unwrap_or_default()
    );
    if let Some(env) = &plan.environment {
        let _ = writeln!(out, "  environment: {env}");
    }
    if !plan.vars.is_empty() {
        let names: Vec<&str> = plan.vars.iter().map(|(k, _)| k.as_str()).collect();
        let _ = writeln!(out, "  --var: {}", names.join(", "));
    }
    if !plan.tags.is_empty() {
        let _ = writeln!(out, "  tags: {}", plan.tags.join(", "));
    }
    out.push('\n');
    out.push_str(&plan_text(plan, style));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(env: Option<&str>) -> Record {
        Record {
            environment: env.map(str::to_string),
            ..Record::default()
        }
    }

    #[test]
    fn the_recorded_environment_is_used_and_a_switch_must_be_asked_for() {
        let prod = record(Some("production"));
        let c = choose_env(None, false, Some(&prod), "/r");
        assert_eq!(
            c.as_ref().map(|c| (c.env.as_deref(), c.source.as_deref())),
            Ok((Some("production"), Some("recorded")))
        );
        assert!(choose_env(Some("development"), false, Some(&prod), "/r").is_err());
        let sw = choose_env(Some("development"), true, Some(&prod), "/r");
        assert_eq!(
            sw.map(|c| c.switch_from),
            Ok(Some("production".to_string()))
        );
        assert_eq!(
            choose_env(Some("production"), false, Some(&prod), "/r").map(|c| c.source),
            Ok(None)
        );
        assert_eq!(
            choose_env(Some("x"), false, None, "/r").map(|c| c.env),
            Ok(Some("x".into()))
        );
        assert_eq!(
            choose_env(None, false, Some(&record(None)), "/r").map(|c| c.env),
            Ok(None)
        );
    }
}
