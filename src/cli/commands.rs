//! Command handlers. Each returns the process exit code.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;

use serde_json::{json, Value};

use super::safety::{self, EnvChoice};
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
    /// The command prints a JSON document on stdout (`--format json`): a failure
    /// before that document exists prints an error document instead, so a reader of
    /// stdout always gets JSON.
    json_doc: bool,
    /// `-q`: only errors and the summary line.
    quiet: bool,
    error_doc_printed: std::sync::atomic::AtomicBool,
}

/// This build's version, carried by every JSON document (`version` is the format's).
pub const TOOL_VERSION: &str = env!("CARGO_PKG_VERSION");

impl Out {
    fn style() -> Style {
        Style {
            colour: std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none(),
        }
    }

    /// A plan's text, whole or (`-q`) only its errors and summary line.
    fn plan(&self, plan: &crate::plan::Plan) {
        let style = Out::style();
        self.print(&if self.quiet {
            safety::plan_quiet(plan, style)
        } else {
            safety::plan_text(plan, style)
        });
    }

    fn print(&self, text: &str) {
        let mut stdout = std::io::stdout().lock();
        let _ = stdout.write_all(text.as_bytes());
        let _ = stdout.flush();
    }

    fn error(&self, message: &str) {
        self.error_doc(vec![json!({ "message": message })]);
        match self.log_format {
            LogFormat::Json => eprintln!(
                "{}",
                serde_json::json!({"level": "error", "message": message})
            ),
            LogFormat::Text => eprintln!(
                "error: {}",
                message
                    .lines()
                    .map(render::escape_controls)
                    .collect::<Vec<_>>()
                    .join("\n")
            ),
        }
    }

    /// The error document of a `--format json` command that failed before its own
    /// document: once per run.
    fn error_doc(&self, errors: Vec<Value>) {
        if !self.json_doc
            || self
                .error_doc_printed
                .swap(true, std::sync::atomic::Ordering::Relaxed)
        {
            return;
        }
        self.json(&json!({
            "format": "reconcile-error",
            "version": 1,
            "errors": errors,
        }));
    }

    fn diagnostics(&self, diags: &Diagnostics) {
        if diags.has_errors() {
            self.error_doc(
                diags
                    .errors()
                    .map(|d| {
                        let span = d.span.as_ref();
                        json!({
                            "file": span.map(|s| s.file.to_string()),
                            "line": span.map(|s| s.line),
                            "column": span.map(|s| s.column),
                            "field": d.field,
                            "message": d.message,
                        })
                    })
                    .collect(),
            );
        }
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
            // Messages quote manifest text (paths, values): a control character in
            // it must not reach the terminal raw.
            LogFormat::Text => eprintln!(
                "{}",
                diags
                    .to_string()
                    .lines()
                    .map(render::escape_controls)
                    .collect::<Vec<_>>()
                    .join("\n")
            ),
        }
    }

    fn engine_error(&self, e: &EngineError) {
        match e {
            EngineError::Manifest(d) => self.diagnostics(d),
            other => self.error(&other.to_string()),
        }
    }

    /// One compact JSON line (`--format jsonl`), with the tool's version.
    fn json_line(&self, value: &Value) {
        let mut value = value.clone();
        if let Some(doc) = value.as_object_mut() {
            doc.entry("reconcile_version")
                .or_insert_with(|| json!(TOOL_VERSION));
        }
        match serde_json::to_string(&value) {
            Ok(s) => self.print(&format!("{s}\n")),
            Err(e) => self.error(&format!("cannot serialise output: {e}")),
        }
    }

    fn json<T: serde::Serialize>(&self, value: &T) {
        let value = match serde_json::to_value(value) {
            Ok(Value::Object(mut doc)) => {
                // A saved document (`show`) keeps the version that wrote it.
                doc.entry("reconcile_version")
                    .or_insert_with(|| json!(TOOL_VERSION));
                Value::Object(doc)
            }
            Ok(other) => other,
            Err(e) => return self.error(&format!("cannot serialise output: {e}")),
        };
        match serde_json::to_string_pretty(&value) {
            Ok(s) => self.print(&format!("{s}\n")),
            Err(e) => self.error(&format!("cannot serialise output: {e}")),
        }
    }
}

pub fn dispatch(cli: Cli) -> u8 {
    let json_doc = matches!(
        &cli.command,
        Command::Plan {
            format: OutputFormat::Json,
            ..
        } | Command::Check {
            format: OutputFormat::Json,
            ..
        } | Command::Apply {
            format: OutputFormat::Json | OutputFormat::Jsonl,
            ..
        }
    );
    if let Command::Plan {
        format: OutputFormat::Jsonl,
        ..
    }
    | Command::Check {
        format: OutputFormat::Jsonl,
        ..
    } = &cli.command
    {
        eprintln!(
            "error: --format jsonl streams what apply does; plan and check print one document: use --format json"
        );
        return EXIT_ERROR;
    }
    let out = Out {
        log_format: cli.log_format,
        json_doc,
        quiet: cli.quiet,
        error_doc_printed: std::sync::atomic::AtomicBool::new(false),
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
            lock_timeout,
        } => apply(
            &out,
            &target,
            format,
            audit_key.as_deref(),
            audit_recover,
            lock_timeout,
        ),
        Command::Show { plan, format } => show(&out, &plan, format),
        Command::Confirm { root, revert } => confirm(&out, &root, revert.as_deref()),
        Command::Import {
            from: _,
            file,
            table,
        } => import_ufw(&out, file.as_deref(), &table),
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
        Command::Module {
            command: super::ModuleCommand::Doc { name, modules },
        } => {
            let mut dirs = vec![PathBuf::from("modules"), PathBuf::from("manifests/modules")];
            dirs.extend(modules);
            match crate::manifest::module::doc(&name, &dirs) {
                Ok(table) => {
                    out.print(&table);
                    EXIT_OK
                }
                Err(e) => {
                    out.error(&e);
                    EXIT_ERROR
                }
            }
        }
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
        modules: target.modules.clone(),
        strict: target.strict,
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
        Ok(h) => {
            let mut h = h.in_netns(target.netns.clone());
            h.kernel.allow_lockout = target.allow_lockout;
            h.kernel.confirm_within = target.confirm_within;
            Some(h)
        }
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

/// The record of the target's last apply and the environment this run uses; prints why
/// and returns None when the run must not go on.
fn record_and_env(
    out: &Out,
    target: &Target,
    host: &Host,
) -> Option<(Option<crate::state::Record>, EnvChoice)> {
    let record = match crate::state::read(host) {
        Ok(r) => r,
        Err(e) => {
            out.engine_error(&e);
            return None;
        }
    };
    let root = host.root().display().to_string();
    match safety::choose_env(
        target.env.as_deref(),
        target.switch_env,
        record.as_ref(),
        &root,
    ) {
        Ok(choice) => Some((record, choice)),
        Err(e) => {
            out.error(&e);
            None
        }
    }
}

/// Loads and plans; prints problems and returns None on failure.
fn plan_for(
    out: &Out,
    target: &Target,
    host: &Host,
    opts: &mut LoadOptions,
    purpose: Purpose,
) -> Option<(Model, Plan)> {
    let (record, choice) = record_and_env(out, target, host)?;
    opts.env = choice.env.clone();
    let opts = &*opts;
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
        plan.environment_source = choice.source.clone();
        plan.switch_env_from = choice.switch_from.clone();
        plan.removed = crate::state::plan_removed(
            host,
            &model,
            record.as_ref(),
            !opts.tags.is_empty(),
            purpose,
        )?;
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
    let mut opts = load_options(target);
    let Some((model, plan)) = plan_for(out, target, &host, &mut opts, Purpose::Plan) else {
        return EXIT_ERROR;
    };
    leave_to_exit(model);
    match format {
        OutputFormat::Json | OutputFormat::Jsonl => out.json(&plan),
        OutputFormat::Text => out.plan(&plan),
    }
    if let Some(path) = save {
        match safety::save_plan(&plan, &path) {
            Ok(hash) => {
                let line = format!("Saved the plan to {} ({hash}).\n", path.display());
                match format {
                    OutputFormat::Text => out.print(&line),
                    OutputFormat::Json | OutputFormat::Jsonl => eprint!("{line}"),
                }
            }
            Err(e) => {
                out.error(&format!("cannot save the plan to {}: {e}", path.display()));
                return EXIT_ERROR;
            }
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
    environment: &'a Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    environment_source: &'a Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    switch_env_from: &'a Option<String>,
    /// Resources no longer declared: drift whatever `settings.removed` says.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    removed: &'a Vec<Change>,
}

fn check(out: &Out, target: &Target, format: OutputFormat) -> u8 {
    let Some(host) = open(out, target) else {
        return EXIT_ERROR;
    };
    let mut opts = load_options(target);
    let Some((model, plan)) = plan_for(out, target, &host, &mut opts, Purpose::Check) else {
        return EXIT_ERROR;
    };
    leave_to_exit(model);
    let drifted: Vec<&Change> = plan.changes.iter().filter(|c| c.is_change()).collect();
    match format {
        OutputFormat::Json | OutputFormat::Jsonl => out.json(&CheckReport {
            format: "reconcile-check",
            version: 1,
            root: &plan.root,
            in_sync: !plan.has_changes() && plan.errors.is_empty(),
            summary: &plan.summary,
            drifted,
            errors: &plan.errors,
            environment: &plan.environment,
            environment_source: &plan.environment_source,
            switch_env_from: &plan.switch_env_from,
            removed: &plan.removed,
        }),
        OutputFormat::Text => {
            if plan.has_changes() || !plan.errors.is_empty() {
                out.plan(&plan);
            } else {
                out.print(&format!(
                    "{}In sync: {} resources match {}.\n",
                    safety::env_note(&plan).unwrap_or_default(),
                    plan.summary.unchanged,
                    render::escape_controls(&plan.root)
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
    let removals = |p: &Plan| -> Vec<(String, crate::plan::Action)> {
        p.removed
            .iter()
            .map(|c| (c.id.to_string(), c.action))
            .collect()
    };
    if removals(saved) != removals(fresh) {
        return Some(
            "the resources no longer declared, or what apply does about them, changed since the plan was made".into(),
        );
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
    // JSON, not YAML (a manifest starting with a flow mapping is rare, and is
    // loaded as a manifest when it is not a plan document).
    read.is_ok() && head.trim_start().starts_with('{')
}

fn apply(
    out: &Out,
    target: &Target,
    format: OutputFormat,
    audit_key: Option<&std::path::Path>,
    audit_recover: bool,
    lock_timeout: Option<std::time::Duration>,
) -> u8 {
    let saved = match target.paths.as_slice() {
        [one] if may_be_plan_file(one) => {
            engine::read_plan_file(one).map(|r| r.map(|p| (p, one.clone())))
        }
        _ => None,
    };
    let (saved, plan_file) = match saved {
        None => (None, None),
        Some(Ok((p, file))) => (Some(p), Some(file)),
        Some(Err(e)) => {
            out.engine_error(&e);
            return EXIT_ERROR;
        }
    };
    let plan_hash = plan_file
        .as_deref()
        .and_then(|f| std::fs::read(f).ok())
        .map(|bytes| safety::plan_hash(&bytes));
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
    let record = match crate::state::read(&host) {
        Ok(r) => r,
        Err(e) => {
            out.engine_error(&e);
            return EXIT_ERROR;
        }
    };
    let (opts, choice) = match (&saved, &plan_file) {
        (Some(p), Some(file)) => {
            if host.root().display().to_string() != p.root {
                out.error(&format!(
                    "the plan was made for root {}, not {}",
                    p.root,
                    host.root().display()
                ));
                return EXIT_ERROR;
            }
            if target.env.is_some()
                || !target.vars.is_empty()
                || !target.tags.is_empty()
                || !target.modules.is_empty()
            {
                out.error(
                    "a saved plan carries its own --env, --var, --tags and --modules; apply it without them",
                );
                return EXIT_ERROR;
            }
            if let Err(e) = safety::check_saved_env(p, record.as_ref())
                .and_then(|()| safety::enter_base(p, file))
            {
                out.error(&e);
                return EXIT_ERROR;
            }
            let opts = LoadOptions {
                paths: p.manifests.iter().map(PathBuf::from).collect(),
                env: p.environment.clone(),
                vars: p.vars.clone(),
                tags: p.tags.clone(),
                modules: p.modules.iter().map(PathBuf::from).collect(),
                // Its lints were shown when it was planned.
                strict: false,
            };
            let choice = EnvChoice {
                env: p.environment.clone(),
                source: p.environment_source.clone(),
                switch_from: p.switch_env_from.clone(),
            };
            (opts, choice)
        }
        _ => {
            let root = host.root().display().to_string();
            let choice = match safety::choose_env(
                target.env.as_deref(),
                target.switch_env,
                record.as_ref(),
                &root,
            ) {
                Ok(c) => c,
                Err(e) => {
                    out.error(&format!("{e}; nothing was changed"));
                    return EXIT_ERROR;
                }
            };
            let mut opts = load_options(target);
            opts.env = choice.env.clone();
            (opts, choice)
        }
    };
    if format == OutputFormat::Text {
        if let Some(line) = safety::env_line(&choice, &host.root().display().to_string()) {
            out.print(&line);
        }
    }
    let locked = host
        .lock_wait(lock_timeout.unwrap_or_default())
        .map(|r| r.map_err(|busy| busy.message));
    let _lock = match locked {
        Ok(Ok(l)) => l,
        Ok(Err(busy)) => {
            let waited = lock_timeout.map(|t| format!(" after waiting {}s", t.as_secs_f64()));
            let noted =
                host.note_lock_refusal(&lock_refusal(&host, &busy, waited.as_deref(), &opts));
            let note = match noted {
                Ok(()) => "the refusal is noted and enters the audit trail with the next apply"
                    .to_string(),
                Err(e) => format!("the refusal could not be noted: {e}"),
            };
            out.error(&format!(
                "{busy}{}; nothing was changed ({note}). Try again when it has finished, or pass --lock-timeout to wait",
                waited.unwrap_or_default()
            ));
            return EXIT_ERROR;
        }
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
    match host.take_lock_refusals() {
        Ok(refusals) => {
            for r in refusals {
                trail.record("lock_refused", r);
            }
        }
        Err(e) => out.error(&format!("cannot read the noted lock refusals: {e}")),
    }
    let mut start = json!({
        "command": if saved.is_some() { "apply-plan" } else { "apply" },
        "manifests": manifests,
        "git": trail::git_state(&files),
        "environment": opts.env,
        "vars": opts.vars.iter().map(|(k, _)| k).collect::<Vec<_>>(),
        "tags": opts.tags,
        "root": host.root().display().to_string(),
    });
    if let Some(source) = &choice.source {
        start["environment_source"] = json!(source);
    }
    if let Some(from) = &choice.switch_from {
        start["switch_env_from"] = json!(from);
    }
    if let Some(hash) = &plan_hash {
        start["plan_hash"] = json!(hash);
    }
    trail.record("run_start", start);
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
    let tagged = !opts.tags.is_empty();
    let plan =
        engine::make_plan(&model, &opts, &host, jobs(target), Purpose::Apply).and_then(|mut p| {
            engine::seal(&mut p, &model, Some(&fp_key));
            p.removed =
                crate::state::plan_removed(&host, &model, record.as_ref(), tagged, Purpose::Apply)?;
            Ok(p)
        });
    let plan = match plan {
        Ok(p) => p,
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
        out.plan(&plan);
        out.error("some resources could not be planned; nothing was changed");
        let details = plan
            .errors
            .iter()
            .map(|e| format!("{}: {}", e.id, e.message))
            .collect();
        return refuse("resources could not be planned", details);
    }
    // What each resource looked like before reconcile first manages it: what
    // `removed: remove` restores.
    let captured = match crate::state::capture(&host, &model, record.as_ref(), &fp_key) {
        Ok(c) => c,
        Err(e) => {
            out.engine_error(&e);
            return refuse("cannot record the originals", vec![e.to_string()]);
        }
    };
    let planned = engine::by_catalog_index(&model, plan.changes);
    let run_id = trail.run_id();
    let style = Out::style();
    let streamed = format == OutputFormat::Text && !out.quiet;
    let mut outcomes = crate::apply::execute(
        &model,
        &host,
        planned,
        jobs(target),
        format == OutputFormat::Json,
        &|o: &Outcome| {
            tracing::info!(resource = %o.id, status = ?o.status, "applied");
            trail.outcome(o);
            if streamed {
                out.print(&render::applied(o, style));
            }
            if format == OutputFormat::Jsonl {
                out.json_line(&outcome_line(o, &run_id, &fp_key));
            }
        },
        &|id, decision, details| {
            trail.record(
                "decision",
                json!({ "resource": id.to_string(), "decision": decision, "details": details }),
            );
        },
    );
    let on_removed = |o: &Outcome| {
        tracing::info!(resource = %o.id, status = ?o.status, "no longer declared");
        trail.undeclared_outcome(o);
        if streamed {
            out.print(&removed_outcome(o, style));
        }
        if format == OutputFormat::Jsonl {
            out.json_line(&outcome_line(o, &run_id, &fp_key));
        }
    };
    let declared_failed = outcomes.iter().filter(|o| o.failed()).count();
    let done = crate::state::apply_removed(
        &host,
        &model,
        record.as_ref(),
        tagged,
        &fp_key,
        declared_failed,
        &on_removed,
    );
    outcomes.extend(done.outcomes);
    let forget = done.forget;
    let left: Vec<String> = done.left.iter().map(ToString::to_string).collect();
    if !left.is_empty() {
        trail.record(
            "undeclared_left",
            json!({ "resources": left, "reason": if tagged { "--tags" } else { "settings.removed: report" } }),
        );
        if streamed {
            out.print(&format!(
                "Left in place, no longer declared ({}): {}\n",
                if tagged {
                    "--tags narrows this run"
                } else {
                    "settings.removed is report; set `settings: {removed: remove}` to remove them"
                },
                left.join(", ")
            ));
        }
    }
    for c in outcomes.iter_mut().filter_map(|o| o.change.as_mut()) {
        engine::seal_change(c, Some(&fp_key));
    }
    let succeeded = !outcomes.iter().any(Outcome::failed);
    let touched: std::collections::HashSet<crate::id::ResourceId> = outcomes
        .iter()
        .filter(|o| o.status != crate::apply::Status::Unchanged)
        .map(|o| o.id.clone())
        .collect();
    let recorded = crate::state::update_after_apply(
        &host,
        &model,
        record.as_ref(),
        captured,
        &forget,
        &touched,
        opts.env.clone(),
        succeeded,
        &run_id,
    );
    if let Err(e) = &recorded {
        out.error(&format!(
            "cannot write the record of managed resources: {e}; resources no longer declared later may go unnoticed"
        ));
        trail.record("record_failed", json!({ "reason": e.to_string() }));
    }
    let count = |f: fn(&Outcome) -> bool| outcomes.iter().filter(|o| f(o)).count();
    let counts = json!({
        "changed": count(Outcome::changed),
        "unchanged": count(|o| o.status == crate::apply::Status::Unchanged),
        "failed": count(|o| matches!(o.status, crate::apply::Status::Failed { .. })),
        "skipped": count(|o| matches!(o.status, crate::apply::Status::Skipped { .. })),
    });
    match format {
        OutputFormat::Json => {
            let mut doc = json!({
                "format": "reconcile-apply",
                "version": 1,
                "root": host.root().display().to_string(),
                "run_id": run_id,
                "summary": counts,
                "outcomes": outcomes,
            });
            // Resources no longer declared that this apply left in place.
            if !left.is_empty() {
                doc["undeclared_left"] = json!(left);
            }
            out.json(&doc)
        }
        OutputFormat::Jsonl => {
            let mut doc = json!({
                "format": "reconcile-apply",
                "version": 1,
                "root": host.root().display().to_string(),
                "run_id": run_id,
                "summary": counts,
            });
            if !left.is_empty() {
                doc["undeclared_left"] = json!(left);
            }
            out.json_line(&doc)
        }
        OutputFormat::Text => out.print(&render::apply_summary(&outcomes, style)),
    }
    let code = if !succeeded || recorded.is_err() {
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

/// A removal's outcome as apply streams it: `- file[/etc/x] (no longer declared)` and
/// what was done.
fn removed_outcome(o: &Outcome, style: Style) -> String {
    let mut text = String::new();
    // Failures and skips are listed with the summary, as for declared resources.
    if let (crate::apply::Status::Changed | crate::apply::Status::Unchanged, Some(c)) =
        (&o.status, &o.change)
    {
        safety::removed_change(&mut text, c, style);
    }
    text
}

/// What a run refused the lock leaves for the audit trail (see `host::lock`).
fn lock_refusal(host: &Host, busy: &str, waited: Option<&str>, opts: &LoadOptions) -> Value {
    let ctx = crate::audit::AuditContext::current(crate::audit::new_run_id());
    json!({
        "refused_at": jiff::Timestamp::now().to_string(),
        "run": ctx.run_id,
        "user": ctx.user,
        "pid": std::process::id(),
        "reason": busy,
        "waited": waited,
        "environment": opts.env,
        "root": host.root().display().to_string(),
    })
}

/// `reconcile show PLANFILE`.
fn show(out: &Out, file: &std::path::Path, format: OutputFormat) -> u8 {
    let bytes = match std::fs::read(file) {
        Ok(b) => b,
        Err(e) => {
            out.error(&format!("cannot read {}: {e}", file.display()));
            return EXIT_ERROR;
        }
    };
    let plan = match engine::read_plan_file(file) {
        Some(Ok(p)) => p,
        Some(Err(e)) => {
            out.engine_error(&e);
            return EXIT_ERROR;
        }
        None => {
            out.error(&format!(
                "{} is not a saved plan (`reconcile plan --out FILE` makes one)",
                file.display()
            ));
            return EXIT_ERROR;
        }
    };
    let hash = safety::plan_hash(&bytes);
    match format {
        OutputFormat::Json | OutputFormat::Jsonl => out.json(&plan),
        OutputFormat::Text => out.print(&safety::show_text(&plan, file, &hash, Out::style())),
    }
    EXIT_OK
}

/// One finished resource as a `--format jsonl` line; a secret's fingerprints keyed as
/// in every other document.
fn outcome_line(o: &Outcome, run_id: &str, key: &engine::FingerprintKey) -> Value {
    let mut o = o.clone();
    if let Some(c) = o.change.as_mut() {
        engine::seal_change(c, Some(key));
    }
    let mut line = json!({
        "format": "reconcile-apply-outcome",
        "version": 1,
        "run_id": run_id,
    });
    if let (Some(fields), Ok(Value::Object(outcome))) =
        (line.as_object_mut(), serde_json::to_value(&o))
    {
        fields.extend(outcome);
    }
    line
}

/// `reconcile confirm`: keeps the pending firewall changes; with `--revert TOKEN` (the
/// watcher `apply --confirm-within` starts), rolls one back at its deadline. Both are
/// audit records.
fn confirm(out: &Out, root: &std::path::Path, revert: Option<&str>) -> u8 {
    use crate::resource::firewall::confirm as fw;
    let host = match Host::open(root) {
        Ok(h) => h,
        Err(e) => {
            out.error(&e.to_string());
            return EXIT_ERROR;
        }
    };
    let (decision, done) = match revert {
        Some(token) => (
            "revert",
            fw::watch(&host, token).map(|p| p.into_iter().collect()),
        ),
        None => ("confirm", fw::confirm_all(&host)),
    };
    let done: Vec<fw::Pending> = match done {
        Ok(d) => d,
        Err(e) => {
            out.error(&e);
            return EXIT_ERROR;
        }
    };
    if done.is_empty() {
        if revert.is_none() {
            out.error("nothing to confirm: no firewall change is pending");
            return EXIT_ERROR;
        }
        return EXIT_OK;
    }
    // The audit log may be held by a running apply: wait for it a little.
    let mut trail = Trail::open(&host, None, false);
    for _ in 0..50 {
        if trail.is_ok() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
        trail = Trail::open(&host, None, false);
    }
    let trail = match trail {
        Ok(t) => t,
        Err(e) => {
            out.error(&format!("{decision} done, but {e}"));
            return EXIT_ERROR;
        }
    };
    for p in &done {
        trail.record(
            "decision",
            json!({ "resource": p.resource, "decision": decision, "details": { "token": p.token, "deadline": p.deadline } }),
        );
        if revert.is_none() {
            println!("confirmed {}", p.resource);
        }
    }
    if trail.errors().is_empty() {
        EXIT_OK
    } else {
        out.error(&trail.errors().join("; "));
        EXIT_ERROR
    }
}

/// `reconcile import ufw [FILE]`: ufw's status output or commands as a manifest.
fn import_ufw(out: &Out, file: Option<&std::path::Path>, table: &str) -> u8 {
    use crate::host::parse::ufw;
    if let Err(e) = crate::resource::firewall::decode::parse_table_name(table) {
        out.error(&format!("--table: {e}"));
        return EXIT_ERROR;
    }
    let text = match file.filter(|f| f != &std::path::Path::new("-")) {
        Some(f) => std::fs::read_to_string(f).map_err(|e| format!("{}: {e}", f.display())),
        None => std::io::read_to_string(std::io::stdin()).map_err(|e| format!("stdin: {e}")),
    };
    let text = match text {
        Ok(t) => t,
        Err(e) => {
            out.error(&e);
            return EXIT_ERROR;
        }
    };
    let is_status = text
        .lines()
        .any(|l| l.starts_with("Status:") || l.trim_start().starts_with("To "));
    let parsed = if is_status {
        ufw::parse_status(&text)
    } else {
        ufw::parse_commands(&text)
    };
    if parsed.rules.is_empty() && parsed.defaults.is_empty() {
        out.error(
            "no ufw rules found: give `ufw status verbose` output or a script of ufw commands",
        );
        return EXIT_ERROR;
    }
    let (manifest, notes) = crate::resource::firewall::import::ufw_manifest(&parsed, table);
    for n in notes {
        eprintln!("note: {n}");
    }
    print!("{manifest}");
    EXIT_OK
}
