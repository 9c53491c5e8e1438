//! Orchestration shared by the commands: load → graph → observe (in parallel) → plan.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::diag::Diagnostics;
use crate::graph::Graph;
use crate::host::Host;
use crate::manifest::{LoadOptions, Loaded};
use crate::plan::{Change, Plan, PlanError, PLAN_FORMAT, PLAN_VERSION};
use crate::resource::{Catalog, PlanCtx, ResourceError};

/// Everything a command needs once the manifests are known to be valid.
pub struct Model {
    pub loaded: Loaded,
    pub graph: Graph,
    /// Which resources this run works on (all, unless `--tags` narrowed it).
    pub selected: Vec<bool>,
}

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("{0}")]
    Manifest(Diagnostics),
    #[error("{0}")]
    Host(#[from] crate::host::HostError),
    #[error("{0}")]
    Other(String),
}

pub fn load_model(opts: &LoadOptions, host: &Host) -> Result<Model, EngineError> {
    let mut loaded = crate::manifest::load(opts, host).map_err(EngineError::Manifest)?;
    let (graph, warnings) = crate::graph::build(&loaded.catalog).map_err(|mut d| {
        d.0.splice(0..0, loaded.diags.0.iter().cloned());
        EngineError::Manifest(d)
    })?;
    loaded.diags.extend(warnings);
    let selected = vec![true; loaded.catalog.len()];
    let mut model = Model {
        loaded,
        graph,
        selected,
    };
    select_tags(&mut model, &opts.tags)?;
    Ok(model)
}

/// Narrows a model to the resources carrying any of `tags`, plus everything they
/// depend on (a tagged resource cannot converge without its requirements).
pub fn select_tags(model: &mut Model, tags: &[String]) -> Result<usize, EngineError> {
    if tags.is_empty() {
        return Ok(model.selected.len());
    }
    let catalog = &model.loaded.catalog;
    let mut selected = vec![false; catalog.len()];
    let mut stack: Vec<usize> = (0..catalog.len())
        .filter(|&i| {
            catalog.resources[i]
                .meta()
                .tags
                .iter()
                .any(|t| tags.contains(t))
        })
        .collect();
    if stack.is_empty() {
        return Err(EngineError::Other(format!(
            "no resource has the tag(s) {}",
            tags.join(", ")
        )));
    }
    while let Some(i) = stack.pop() {
        if !selected[i] {
            selected[i] = true;
            stack.extend(model.graph.deps[i].iter().copied());
        }
    }
    let count = selected.iter().filter(|&&s| s).count();
    model.selected = selected;
    Ok(count)
}

/// How many resources are observed or applied at once.
pub fn default_jobs() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
        .clamp(2, 16)
}

/// Observes the selected resources (read-only) in parallel; results are in catalog
/// order, `None` for resources not selected.
pub fn observe_all(
    catalog: &Catalog,
    host: &Host,
    jobs: usize,
    selected: &[bool],
) -> Result<Vec<Option<Result<Change, ResourceError>>>, EngineError> {
    let accounts = host.accounts()?;
    let ctx = PlanCtx {
        host,
        accounts: &accounts,
        catalog,
    };
    let next = AtomicUsize::new(0);
    let n = catalog.len();
    let workers = jobs.min(n.max(1));
    let mut parts: Vec<Vec<(usize, Result<Change, ResourceError>)>> = Vec::new();
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..workers)
            .map(|_| {
                s.spawn(|| {
                    let mut out = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= n {
                            break;
                        }
                        if selected.get(i).copied().unwrap_or(true) {
                            let r = &catalog.resources[i];
                            let span = tracing::debug_span!("observe", resource = %r.id());
                            let _entered = span.enter();
                            out.push((i, r.plan(&ctx)));
                        }
                    }
                    out
                })
            })
            .collect();
        for h in handles {
            if let Ok(part) = h.join() {
                parts.push(part);
            }
        }
    });
    let mut results: Vec<Option<Result<Change, ResourceError>>> = (0..n).map(|_| None).collect();
    for (i, r) in parts.into_iter().flatten() {
        results[i] = Some(r);
    }
    let missing = results
        .iter()
        .enumerate()
        .any(|(i, r)| r.is_none() && selected.get(i).copied().unwrap_or(true));
    if missing {
        return Err(EngineError::Other("an observer thread panicked".into()));
    }
    Ok(results)
}

/// Builds the plan value for a model.
pub fn make_plan(
    model: &Model,
    opts: &LoadOptions,
    host: &Host,
    jobs: usize,
) -> Result<Plan, EngineError> {
    let catalog = &model.loaded.catalog;
    let mut observed = observe_all(catalog, host, jobs, &model.selected)?;
    let mut changes = Vec::with_capacity(catalog.len());
    let mut errors = Vec::new();
    for &i in &model.graph.order {
        match observed[i].take() {
            Some(Ok(c)) => changes.push(c),
            Some(Err(e)) => {
                let r = &catalog.resources[i];
                errors.push(PlanError {
                    id: r.id().clone(),
                    at: r.meta().span.as_ref().map(ToString::to_string),
                    message: e.to_string(),
                });
            }
            None => {}
        }
    }
    let warnings = model
        .loaded
        .diags
        .warnings()
        .map(ToString::to_string)
        .collect();
    Ok(Plan {
        format: PLAN_FORMAT.into(),
        version: PLAN_VERSION,
        root: host.root().display().to_string(),
        manifests: model
            .loaded
            .files
            .iter()
            .map(|p| crate::manifest::decode::display_path(p))
            .collect(),
        environment: opts.env.clone(),
        vars: opts.vars.clone(),
        tags: opts.tags.clone(),
        inputs: model.loaded.fingerprint.clone(),
        summary: Plan::summarize(&changes, errors.len()),
        changes,
        errors,
        warnings,
    })
}

/// Reads a saved plan file, or `None` when the path is not one (a manifest).
pub fn read_plan_file(path: &Path) -> Option<Result<Plan, EngineError>> {
    if path.is_dir() {
        return None;
    }
    let bytes = std::fs::read(path).ok()?;
    let value: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    if value.get("format").and_then(|f| f.as_str()) != Some(PLAN_FORMAT) {
        return None;
    }
    Some(
        serde_json::from_value(value).map_err(|e| {
            EngineError::Other(format!("{}: not a valid plan file: {e}", path.display()))
        }),
    )
}
