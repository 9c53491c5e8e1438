//! Command handlers. Each returns the process exit code.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;

use serde_json::{json, Value};

use super::trail::{self, Trail};
use super::{
    AuditCommand, Cli, Command, GraphFormat, LogFormat, OutputFormat, Target, EXIT_CHANGES,
    EXIT_ERROR, EXIT_OK,
};
use crate::apply::Outcome;
use crate::diag::Diagnostics;
use crate::engine::{self, EngineError, Model};
use crate::host::Host;
use crate::manifest::LoadOptions;
use crate::plan::{Change, Plan};
use crate::render::{self, Style};
use crate::resource::Purpose;

struct Out {
    log_format: LogFormat,
}

impl Out {
    fn style() -> Style {
        Style {
            colour: std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none(),
        }
    }

    fn print(&self, text: &str) {
        let mut stdout = std::io::stdout().lock();
        let _ = stdout.write_all(text.as_bytes());
        let _ = stdout.flush();
    }

    fn error(&self, message: &str) {
        match self.log_format {
            LogFormat::Json => eprintln!(
                "{}",
                serde_json::json!({"level": "error", "message": message})
            ),
            LogFormat::Text => eprintln!("error: {message}"),
        }
    }

    fn diagnostics(&self, diags: &Diagnostics) {
        match self.log_format {
            LogFormat::Json => {
                for d in &diags.0 {
                    let span = d.span.as_ref();
                    // The quoted line, unless it is unknown or may hold a secret.
                    let source = match d.snippet() {
                        crate::diag::Quote::Line(s) => serde_json::to_value(s).ok(),
                        _ => None,
                    };
                    eprintln!(
                        "{}",
                        serde_json::json!({
                            "level": d.severity,
                            "file": span.map(|s| s.file.to_string()),
                            "line": span.map(|s| s.line),
                            "column": span.map(|s| s.column),
                            "field": d.field,
                            "message": d.message,
                            "related": d.related.iter().map(|(s, n)| format!("{s}: {n}")).collect::<Vec<_>>(),
                            "source": source,
                        })
                    );
                }
            }
            LogFormat::Text => eprintln!("{diags}"),
        }
    }

    fn engine_error(&self, e: &EngineError) {
        match e {
            EngineError::Manifest(d) => self.diagnostics(d),
            other => self.error(&other.to_string()),
        }
    }

    fn json<T: serde::Serialize>(&self, value: &T) {
        match serde_json::to_string_pretty(value) {
            Ok(s) => self.print(&format!("{s}\n")),
            Err(e) => self.error(&format!("cannot serialise output: {e}")),
        }
    }
}

pub fn dispatch(cli: Cli) -> u8 {
    let out = Out {
        log_format: cli.log_format,
    };
    match cli.command {
        Command::Plan {
            target,
            format,
            out: save,
            detailed_exitcode,
        } => plan(&out, &target, format, save, detailed_exitcode),
        Command::Apply {
            target,
            format,
            audit_key,
            audit_recover,
        } => apply(&out, &target, format, audit_key.as_deref(), audit_recover),
        Command::Audit { root, log, command } => audit(&out, &root, &log, command),
        Command::Completions { shell } => {
            let mut cmd = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(shell, &mut cmd, "reconcile", &mut std::io::stdout());
            EXIT_OK
        }
        Command::Man { command } => {
            let mut cmd = <Cli as clap::CommandFactory>::command();
            cmd.build();
            if let Some(name) = command {
                let Some(sub) = cmd.find_subcommand(&name).cloned() else {
                    let names: Vec<String> = cmd
                        .get_subcommands()
                        .map(|c| c.get_name().to_string())
                        .collect();
                    out.error(&format!(
                        "no command `{name}`; pages exist for: {}",
                        names.join(", ")
                    ));
                    return EXIT_ERROR;
                };
                // Built, a subcommand's display name is `reconcile-NAME`: the page the
                // tool's own page refers to as reconcile-NAME(1).
                cmd = sub.display_name(format!("reconcile-{name}"));
            }
            let mut page = Vec::new();
            match clap_mangen::Man::new(cmd).render(&mut page) {
                Ok(()) => {
                    out.print(&String::from_utf8_lossy(&page));
                    EXIT_OK
                }
                Err(e) => {
                    out.error(&format!("cannot render the man page: {e}"));
                    EXIT_ERROR
                }
            }
        }
        Command::Check { target, format } => check(&out, &target, format),
        Command::Validate { target } => validate(&out, &target),
        Command::Graph { target, format } => graph(&out, &target, format),
    }
}

fn load_options(target: &Target) -> LoadOptions {
    let paths = if target.paths.is_empty() {
        vec![PathBuf::from("manifests")]
    } else {
        target.paths.clone()
    };
    LoadOptions {
        paths,
        env: target.env.clone(),
        vars: target.vars.clone(),
        tags: target.tags.clone(),
    }
}

fn open(out: &Out, target: &Target) -> Option<Host> {
    if !target.root.exists() {
        out.error(&format!(
            "target root {} does not exist (`reconcile apply` creates it; plan and check never write)",
            target.root.display()
        ));
        return None;
    }
    match Host::open(&target.root) {
        Ok(h) => Some(h),
        Err(e) => {
            out.error(&e.to_string());
            None
        }
    }
}

fn jobs(target: &Target) -> usize {
    target.jobs.unwrap_or_else(engine::default_jobs).max(1)
}

/// Hands a read-only command's model to the process exit instead of freeing it
/// piece by piece: at 100,000 resources the frees were 5% of a `validate`. Only for
/// data (the model holds no locks, files or children).
fn leave_to_exit(model: Model) -> &'static Model {
    Box::leak(Box::new(model))
}

/// Why `settings.audit_log` cannot be used, if it cannot.
fn log_setting_error(model: &Model) -> Option<String> {
    let log = model.loaded.settings.audit_log.as_deref()?;
    trail::check_log_setting(log, &model.loaded.catalog).err()
}

/// Loads and plans; prints problems and returns None on failure.
fn plan_for(
    out: &Out,
    target: &Target,
    host: &Host,
    opts: &LoadOptions,
    purpose: Purpose,
) -> Option<(Model, Plan)> {
    let model = match engine::load_model(opts, host) {
        Ok(m) => m,
        Err(e) => {
            out.engine_error(&e);
            return None;
        }
    };

    let warnings: Diagnostics = Diagnostics(model.loaded.diags.warnings().cloned().collect());
    if !warnings.0.is_empty() {
        out.diagnostics(&warnings);
    }
    // Apply would refuse it: say so now.
    if let Some(e) = log_setting_error(&model) {
        out.error(&e);
        return None;
    }
    // Read-only: a host without a fingerprint key gets none from plan or check.
    let planned = engine::read_fingerprint_key(host).and_then(|key| {
        let mut plan = engine::make_plan(&model, opts, host, jobs(target), purpose)?;
        engine::seal(&mut plan, &model, key.as_ref());
        Ok(plan)
    });
    match planned {
        Ok(p) => Some((model, p)),
        Err(e) => {
            out.engine_error(&e);
            None
        }
    }
}

fn plan(
    out: &Out,
    target: &Target,
    format: OutputFormat,
    save: Option<PathBuf>,
    detailed: bool,
) -> u8 {
    let Some(host) = open(out, target) else {
        return EXIT_ERROR;
    };
    let opts = load_options(target);
    let Some((model, plan)) = plan_for(out, target, &host, &opts, Purpose::Plan) else {
        return EXIT_ERROR;
    };
    leave_to_exit(model);
    match format {
        OutputFormat::Json => out.json(&plan),
        OutputFormat::Text => out.print(&render::plan(&plan, Out::style())),
    }
    if let Some(path) = save {
        let saved = serde_json::to_vec_pretty(&plan)
            .map_err(|e| e.to_string())
            .and_then(|bytes| {
                let tmp = path.with_extension("tmp");
                std::fs::write(&tmp, bytes)
                    .and_then(|_| std::fs::rename(&tmp, &path))
                    .map_err(|e| e.to_string())
            });
        if let Err(e) = saved {
            out.error(&format!("cannot save the plan to {}: {e}", path.display()));
            return EXIT_ERROR;
        }
    }
    if !plan.errors.is_empty() {
        EXIT_ERROR
    } else if detailed && plan.has_changes() {
        EXIT_CHANGES
    } else {
        EXIT_OK
    }
}

#[derive(serde::Serialize)]
struct CheckReport<'a> {
    format: &'static str,
    version: u32,
    root: &'a str,
    in_sync: bool,
    summary: &'a crate::plan::Summary,
    drifted: Vec<&'a Change>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    errors: &'a Vec<crate::plan::PlanError>,
}

fn check(out: &Out, target: &Target, format: OutputFormat) -> u8 {
    let Some(host) = open(out, target) else {
        return EXIT_ERROR;
    };
    let opts = load_options(target);
    let Some((model, plan)) = plan_for(out, target, &host, &opts, Purpose::Check) else {
        return EXIT_ERROR;
    };
    leave_to_exit(model);
    let drifted: Vec<&Change> = plan.changes.iter().filter(|c| c.is_change()).collect();
    match format {
        OutputFormat::Json => out.json(&CheckReport {
            format: "reconcile-check",
            version: 1,
            root: &plan.root,
            in_sync: drifted.is_empty() && plan.errors.is_empty(),
            summary: &plan.summary,
            drifted,
            errors: &plan.errors,
        }),
        OutputFormat::Text => {
            if plan.has_changes() || !plan.errors.is_empty() {
                out.print(&render::plan(&plan, Out::style()));
            } else {
                out.print(&format!(
                    "In sync: {} resources match {}.\n",
                    plan.summary.unchanged, plan.root
                ));
            }
        }
    }
    if !plan.errors.is_empty() {
        EXIT_ERROR
    } else if plan.has_changes() {
        EXIT_CHANGES
    } else {
        EXIT_OK
    }
}

/// Why a saved plan no longer holds, or None when it still does. Fingerprints the saved
/// plan lacks (those of sensitive resources planned before the host had a fingerprint
/// key) cannot be compared: for those only the action and changed fields are.
fn stale_reason(saved: &Plan, fresh: &Plan) -> Option<String> {
    if saved.fingerprint_key.is_some() && saved.fingerprint_key != fresh.fingerprint_key {
        return Some("the host's fingerprint key changed since the plan was made".into());
    }
    let differs = |a: &str, b: &str| !a.is_empty() && a != b;
    if differs(&saved.inputs, &fresh.inputs) {
        return Some(
            "the manifests, templates or variables changed since the plan was made".into(),
        );
    }
    if saved.changes.len() != fresh.changes.len() {
        return Some("the set of resources changed since the plan was made".into());
    }
    for (a, b) in saved.changes.iter().zip(&fresh.changes) {
        if a.id != b.id {
            return Some("the set of resources changed since the plan was made".into());
        }
        if differs(&a.live, &b.live) || a.action != b.action || a.fields != b.fields {
            return Some(format!(
                "{} changed on the target since the plan was made",
                a.id
            ));
        }
        if differs(&a.desired, &b.desired) {
            return Some(format!(
                "the desired state of {} changed since the plan was made",
                a.id
            ));
        }
    }
    None
}

/// Whether `path` may be a saved plan, judged on its first bytes only: reading a
/// FIFO, a device or a 2 GiB manifest whole just to find out would block or take all
/// that memory before the manifest loader could refuse it. A plan is JSON with its
/// `format` first.
fn may_be_plan_file(path: &std::path::Path) -> bool {
    use std::io::Read;
    let Ok(meta) = std::fs::metadata(path) else {
        return false;
    };
    if !meta.is_file() {
        return false;
    }
    let mut head = Vec::new();
    let read = crate::manifest::decode::open_regular(path)
        .and_then(|f| f.take(64).read_to_end(&mut head).map_err(|e| e.to_string()));
    let head = String::from_utf8_lossy(&head);
    read.is_ok() && head.trim_start().starts_with("{") && head.contains("\"format\"")
}

fn apply(
    out: &Out,
    target: &Target,
    format: OutputFormat,
    audit_key: Option<&std::path::Path>,
    audit_recover: bool,
) -> u8 {
    let saved = match target.paths.as_slice() {
        [one] if may_be_plan_file(one) => engine::read_plan_file(one),
        _ => None,
    };
    let saved = match saved {
        None => None,
        Some(Ok(p)) => Some(p),
        Some(Err(e)) => {
            out.engine_error(&e);
            return EXIT_ERROR;
        }
    };
    let key = match audit_key.map(crate::audit::read_key_file).transpose() {
        Ok(k) => k,
        Err(e) => {
            out.error(&e.to_string());
            return EXIT_ERROR;
        }
    };
    if !target.root.exists() {
        // A new scratch root is the usual first run; never for a root that is a
        // dangling symlink or otherwise unreadable (create_dir_all fails then).
        if let Err(e) = std::fs::create_dir_all(&target.root) {
            out.error(&format!(
                "cannot create the target root {}: {e}",
                target.root.display()
            ));
            return EXIT_ERROR;
        }
        tracing::warn!(root = %target.root.display(), "created the target root");
    }
    let Some(host) = open(out, target) else {
        return EXIT_ERROR;
    };
    let opts = match &saved {
        Some(p) => {
            if host.root().display().to_string() != p.root {
                out.error(&format!(
                    "the plan was made for root {}, not {}",
                    p.root,
                    host.root().display()
                ));
                return EXIT_ERROR;
            }
            LoadOptions {
                paths: p.manifests.iter().map(PathBuf::from).collect(),
                env: p.environment.clone(),
                vars: p.vars.clone(),
                tags: p.tags.clone(),
            }
        }
        None => load_options(target),
    };
    let _lock = match host.lock() {
        Ok(l) => l,
        Err(e) => {
            out.error(&e.to_string());
            return EXIT_ERROR;
        }
    };
    let model = engine::load_model(&opts, &host);
    // A bad `audit_log:` is refused before it is opened; the refusal goes to the default
    // log (which has its own head), as for manifests that cannot be read at all.
    let setting_error = model.as_ref().ok().and_then(log_setting_error);
    let configured_log = match &model {
        Ok(m) if setting_error.is_none() => m.loaded.settings.audit_log.clone(),
        _ => None,
    };
    let trail = match Trail::open(&host, configured_log.as_deref(), audit_recover) {
        Ok(t) => t,
        Err(e) => {
            out.error(&e);
            return EXIT_ERROR;
        }
    };
    let manifests: Vec<String> = opts.paths.iter().map(|p| p.display().to_string()).collect();
    let files = model
        .as_ref()
        .map(|m| m.loaded.files.clone())
        .unwrap_or_else(|_| opts.paths.clone());
    trail.record(
        "run_start",
        json!({
            "command": if saved.is_some() { "apply-plan" } else { "apply" },
            "manifests": manifests,
            "git": trail::git_state(&files),
            "environment": opts.env,
            "vars": opts.vars.iter().map(|(k, _)| k).collect::<Vec<_>>(),
            "tags": opts.tags,
            "root": host.root().display().to_string(),
        }),
    );
    let finish = |code: u8, counts: Value| -> u8 {
        trail.record("run_end", json!({ "exit_code": code, "counts": counts }));
        if let Some(key) = &key {
            if let Err(e) = trail.checkpoint(key) {
                out.error(&format!("audit checkpoint failed: {e}"));
                return EXIT_ERROR;
            }
        }
        let errors = trail.errors();
        if errors.is_empty() {
            code
        } else {
            out.error(&format!(
                "the audit log could not be written: {}",
                errors.join("; ")
            ));
            EXIT_ERROR
        }
    };
    let refuse = |reason: &str, details: Vec<String>| -> u8 {
        trail.record("refused", json!({ "reason": reason, "details": details }));
        finish(EXIT_ERROR, Value::Null)
    };
    let model = match model {
        Ok(m) => m,
        Err(e) => {
            out.engine_error(&e);
            let details = match &e {
                EngineError::Manifest(d) => d.errors().map(ToString::to_string).collect(),
                other => vec![other.to_string()],
            };
            return refuse("invalid manifests", details);
        }
    };
    if let Some(e) = setting_error {
        out.error(&format!("{e}; nothing was changed"));
        return refuse("invalid settings.audit_log", vec![e]);
    }
    let fp_key = match engine::ensure_fingerprint_key(&host) {
        Ok(k) => k,
        Err(e) => {
            out.engine_error(&e);
            return refuse("no fingerprint key", vec![e.to_string()]);
        }
    };
    let warnings: Diagnostics = Diagnostics(model.loaded.diags.warnings().cloned().collect());
    if !warnings.0.is_empty() {
        out.diagnostics(&warnings);
    }
    // Apply reports the diffs of what it changes, observed again right before acting.
    let plan = match engine::make_plan(&model, &opts, &host, jobs(target), Purpose::Apply) {
        Ok(mut p) => {
            engine::seal(&mut p, &model, Some(&fp_key));
            p
        }
        Err(e) => {
            out.engine_error(&e);
            return refuse("observing the target failed", vec![e.to_string()]);
        }
    };
    if let Some(saved) = &saved {
        if let Some(reason) = stale_reason(saved, &plan) {
            out.error(&format!(
                "stale plan: {reason}; nothing was changed. Run `reconcile plan` again."
            ));
            return refuse("stale plan", vec![reason]);
        }
    }
    if !plan.errors.is_empty() {
        out.print(&render::plan(&plan, Out::style()));
        out.error("some resources could not be planned; nothing was changed");
        let details = plan
            .errors
            .iter()
            .map(|e| format!("{}: {}", e.id, e.message))
            .collect();
        return refuse("resources could not be planned", details);
    }
    let planned = engine::by_catalog_index(&model, plan.changes);
    let style = Out::style();
    let streamed = format == OutputFormat::Text;
    let mut outcomes = crate::apply::execute(
        &model,
        &host,
        planned,
        jobs(target),
        !streamed,
        &|o: &Outcome| {
            tracing::info!(resource = %o.id, status = ?o.status, "applied");
            trail.outcome(o);
            if streamed {
                out.print(&render::applied(o, style));
            }
        },
    );
    for c in outcomes.iter_mut().filter_map(|o| o.change.as_mut()) {
        engine::seal_change(c, Some(&fp_key));
    }
    match format {
        OutputFormat::Json => out.json(&json!({
            "format": "reconcile-apply",
            "version": 1,
            "root": host.root().display().to_string(),
            "outcomes": outcomes,
        })),
        OutputFormat::Text => out.print(&render::apply_summary(&outcomes, style)),
    }
    let count = |f: fn(&Outcome) -> bool| outcomes.iter().filter(|o| f(o)).count();
    let counts = json!({
        "changed": count(Outcome::changed),
        "unchanged": count(|o| o.status == crate::apply::Status::Unchanged),
        "failed": count(|o| matches!(o.status, crate::apply::Status::Failed { .. })),
        "skipped": count(|o| matches!(o.status, crate::apply::Status::Skipped { .. })),
    });
    let code = if outcomes.iter().any(Outcome::failed) {
        EXIT_ERROR
    } else {
        EXIT_OK
    };
    finish(code, counts)
}

fn audit(out: &Out, root: &std::path::Path, log: &str, command: AuditCommand) -> u8 {
    // The root's own files are found through the root-safe walk; files named on the command
    // line are read where they are.
    let host = || Host::open(root).map_err(|e| e.to_string());
    match command {
        AuditCommand::Verify { key, files } => {
            let key = match key.as_deref().map(crate::audit::read_key_file).transpose() {
                Ok(k) => k,
                Err(e) => {
                    out.error(&e.to_string());
                    return EXIT_ERROR;
                }
            };
            let report = if files.is_empty() {
                match host() {
                    Ok(h) => crate::audit::verify_in(&h, log, key.as_deref()),
                    Err(e) => {
                        out.error(&e);
                        return EXIT_ERROR;
                    }
                }
            } else {
                crate::audit::verify(&files, key.as_deref())
            };
            match report {
                Ok(r) => {
                    out.print(&r.to_string());
                    if r.ok() {
                        EXIT_OK
                    } else {
                        EXIT_ERROR
                    }
                }
                Err(e) => {
                    out.error(&e.to_string());
                    EXIT_ERROR
                }
            }
        }
        AuditCommand::Show {
            since,
            resource,
            files,
        } => {
            let since = match since.as_deref().map(parse_since).transpose() {
                Ok(s) => s,
                Err(e) => {
                    out.error(&e);
                    return EXIT_ERROR;
                }
            };
            let files = if files.is_empty() {
                let found = host()
                    .and_then(|h| crate::audit::log_files_in(&h, log).map_err(|e| e.to_string()));
                match found {
                    Ok(f) => f.into_iter().map(|(_, p)| p).collect(),
                    Err(e) => {
                        out.error(&e);
                        return EXIT_ERROR;
                    }
                }
            } else {
                files
            };
            match crate::audit::show(&files, since, resource.as_deref()) {
                Ok(text) => {
                    out.print(&text);
                    EXIT_OK
                }
                Err(e) => {
                    out.error(&e.to_string());
                    EXIT_ERROR
                }
            }
        }
    }
}

fn parse_since(text: &str) -> Result<jiff::Timestamp, String> {
    if let Ok(ts) = text.parse::<jiff::Timestamp>() {
        return Ok(ts);
    }
    text.parse::<jiff::civil::Date>()
        .ok()
        .and_then(|d| d.to_zoned(jiff::tz::TimeZone::UTC).ok())
        .map(|z| z.timestamp())
        .ok_or_else(|| format!("--since {text}: expected an RFC 3339 time (2026-11-23T02:00:00Z) or a date (2026-11-23)"))
}

fn validate(out: &Out, target: &Target) -> u8 {
    let Some(host) = open(out, target) else {
        return EXIT_ERROR;
    };
    match engine::load_model(&load_options(target), &host) {
        Ok(model) => {
            let model = leave_to_exit(model);
            let warnings = Diagnostics(model.loaded.diags.warnings().cloned().collect());
            if !warnings.0.is_empty() {
                out.diagnostics(&warnings);
            }
            if let Some(e) = log_setting_error(model) {
                out.error(&e);
                return EXIT_ERROR;
            }
            out.print(&format!(
                "Manifests valid: {} resources.\n",
                model.loaded.catalog.len()
            ));
            EXIT_OK
        }
        Err(e) => {
            out.engine_error(&e);
            EXIT_ERROR
        }
    }
}

fn graph(out: &Out, target: &Target, format: GraphFormat) -> u8 {
    let Some(host) = open(out, target) else {
        return EXIT_ERROR;
    };
    match engine::load_model(&load_options(target), &host) {
        Ok(model) => {
            let text = match format {
                GraphFormat::Text => model.graph.to_text(&model.loaded.catalog),
                GraphFormat::Dot => model.graph.to_dot(&model.loaded.catalog),
            };
            out.print(&text);
            EXIT_OK
        }
        Err(e) => {
            out.engine_error(&e);
            EXIT_ERROR
        }
    }
}
