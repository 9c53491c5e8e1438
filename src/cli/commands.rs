//! Command handlers. Each returns the process exit code.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;

use super::{
    Cli, Command, GraphFormat, LogFormat, OutputFormat, Target, EXIT_CHANGES, EXIT_ERROR, EXIT_OK,
};
use crate::apply::Outcome;
use crate::diag::Diagnostics;
use crate::engine::{self, EngineError, Model};
use crate::host::Host;
use crate::manifest::LoadOptions;
use crate::plan::{Change, Plan};
use crate::render::{self, Style};

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
        Command::Apply { target, format } => apply(&out, &target, format),
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
    }
}

fn open(out: &Out, target: &Target) -> Option<Host> {
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

/// Loads and plans; prints problems and returns None on failure.
fn plan_for(out: &Out, target: &Target, host: &Host, opts: &LoadOptions) -> Option<(Model, Plan)> {
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
    match engine::make_plan(&model, opts, host, jobs(target)) {
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
    let Some((_, plan)) = plan_for(out, target, &host, &opts) else {
        return EXIT_ERROR;
    };
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
    let Some((_, plan)) = plan_for(out, target, &host, &opts) else {
        return EXIT_ERROR;
    };
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

/// Why a saved plan no longer holds, or None when it still does.
fn stale_reason(saved: &Plan, fresh: &Plan) -> Option<String> {
    if saved.inputs != fresh.inputs {
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
        if a.live != b.live || a.action != b.action || a.fields != b.fields {
            return Some(format!(
                "{} changed on the target since the plan was made",
                a.id
            ));
        }
    }
    None
}

fn apply(out: &Out, target: &Target, format: OutputFormat) -> u8 {
    let saved = match target.paths.as_slice() {
        [one] => engine::read_plan_file(one),
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
    let Some((model, plan)) = plan_for(out, target, &host, &opts) else {
        return EXIT_ERROR;
    };
    if let Some(saved) = &saved {
        if let Some(reason) = stale_reason(saved, &plan) {
            out.error(&format!(
                "stale plan: {reason}; nothing was changed. Run `reconcile plan` again."
            ));
            return EXIT_ERROR;
        }
    }
    if !plan.errors.is_empty() {
        out.print(&render::plan(&plan, Out::style()));
        out.error("some resources could not be planned; nothing was changed");
        return EXIT_ERROR;
    }
    let mut planned: Vec<Option<Change>> = (0..model.loaded.catalog.len()).map(|_| None).collect();
    for c in plan.changes {
        if let Some(i) = model.loaded.catalog.index_of(&c.id) {
            planned[i] = Some(c);
        }
    }
    let outcomes = crate::apply::execute(&model, &host, &planned, jobs(target), &|o: &Outcome| {
        tracing::info!(resource = %o.id, status = ?o.status, "applied");
    });
    match format {
        OutputFormat::Json => out.json(&serde_json::json!({
            "format": "reconcile-apply",
            "version": 1,
            "root": host.root().display().to_string(),
            "outcomes": outcomes,
        })),
        OutputFormat::Text => out.print(&render::apply(&outcomes, Out::style())),
    }
    if outcomes.iter().any(Outcome::failed) {
        EXIT_ERROR
    } else {
        EXIT_OK
    }
}

fn validate(out: &Out, target: &Target) -> u8 {
    let Some(host) = open(out, target) else {
        return EXIT_ERROR;
    };
    match engine::load_model(&load_options(target), &host) {
        Ok(model) => {
            let warnings = Diagnostics(model.loaded.diags.warnings().cloned().collect());
            if !warnings.0.is_empty() {
                out.diagnostics(&warnings);
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
