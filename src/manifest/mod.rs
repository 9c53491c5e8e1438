//! Loading manifests: files and folders, includes, variables and environments,
//! templating, and typed decoding of every resource entry.

pub mod decode;
mod fastyaml;
pub mod hidden;
pub mod module;
mod syntax;
pub mod template;
pub mod yaml;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use sha2::Digest;

use crate::diag::{Diagnostic, Diagnostics, Span};
use crate::host::Host;
use crate::resource::{self, Catalog, Meta, PathConflict, Resource};
use decode::{display_path, Decoder, Fields};
use template::Templates;
use yaml::{Node, Value};

/// What the command line says about which manifests to load and how.
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    pub paths: Vec<PathBuf>,
    pub env: Option<String>,
    /// `--var key=value` overrides, applied last.
    pub vars: Vec<(String, String)>,
    /// `--tags`: work only on resources with these tags and their dependencies.
    pub tags: Vec<String>,
    /// `--modules DIR`: searched for modules after `modules/` beside the manifest.
    pub modules: Vec<PathBuf>,
    /// `--strict`: lint warnings are errors.
    pub strict: bool,
}

/// Settings that are not resources (top-level `settings:`).
#[derive(Debug, Clone, Default)]
pub struct Settings {
    /// Audit log path on the target, if not the default.
    pub audit_log: Option<String>,
    /// What apply does with resources the manifests no longer declare.
    pub removed: crate::state::Removed,
}

pub struct Loaded {
    pub catalog: Catalog,
    /// Warnings (errors make `load` fail).
    pub diags: Diagnostics,
    /// Hash of everything the manifests were built from.
    pub fingerprint: String,
    pub files: Vec<PathBuf>,
    pub settings: Settings,
}

const TOP_LEVEL: &[&str] = &["vars", "environments", "include", "resources", "settings"];
const META_FIELDS: &[&str] = &[
    "requires", "before", "notify", "secret", "tags", "when", "allow",
];

struct ParsedFile {
    path: PathBuf,
    root: Node,
}

/// Expands the command-line paths: a file is itself, a folder is its `*.yaml`/`*.yml`
/// files, sorted by name. Anything else that exists (a FIFO, a device) is passed on
/// for reading to say what it is; only a missing path "does not exist".
fn expand(path: &Path, diags: &mut Diagnostics) -> Vec<PathBuf> {
    let meta = match std::fs::metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            diags.push(Diagnostic::error(
                None,
                format!("manifest {} does not exist", path.display()),
            ));
            return Vec::new();
        }
        Err(e) => {
            diags.push(Diagnostic::error(
                None,
                format!("cannot read manifest {}: {e}", path.display()),
            ));
            return Vec::new();
        }
    };
    if meta.is_dir() {
        let mut files: Vec<PathBuf> = match std::fs::read_dir(path) {
            // A `*.yaml` that is not a file is kept so that reading it says what it is.
            Ok(rd) => rd
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| {
                    !p.is_dir()
                        && matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml"))
                })
                .collect(),
            Err(e) => {
                diags.push(Diagnostic::error(
                    None,
                    format!("cannot read folder {}: {e}", path.display()),
                ));
                return Vec::new();
            }
        };
        files.sort();
        if files.is_empty() {
            diags.push(Diagnostic::warning(
                None,
                format!("folder {} holds no *.yaml manifests", path.display()),
            ));
        }
        files
    } else {
        vec![path.to_path_buf()]
    }
}

fn top_map<'a>(file: &'a ParsedFile, diags: &mut Diagnostics) -> &'a [(Node, Node)] {
    match &file.root.value {
        Value::Map(m) => m,
        Value::Null => &[],
        other => {
            diags.push(Diagnostic::error(
                Some(file.root.span.clone()),
                format!(
                    "a manifest must be a mapping with {}, found {}",
                    TOP_LEVEL.join("/"),
                    other.type_name()
                ),
            ));
            &[]
        }
    }
}

fn section<'a>(file: &'a ParsedFile, key: &str) -> Option<&'a Node> {
    file.root
        .as_map()?
        .iter()
        .find(|(k, _)| k.as_str() == Some(key))
        .map(|(_, v)| v)
}

/// Reads and parses every manifest, following includes. Parse errors are collected.
fn read_all(opts: &LoadOptions, diags: &mut Diagnostics, decoder: &mut Decoder) -> Vec<ParsedFile> {
    // Each file with the `include:` item that named it, if one did.
    let mut queue: Vec<(PathBuf, Option<Span>)> = Vec::new();
    for p in &opts.paths {
        queue.extend(expand(p, diags).into_iter().map(|f| (f, None)));
    }
    queue.reverse();
    let mut seen = HashSet::new();
    let mut files = Vec::new();
    while let Some((path, included_at)) = queue.pop() {
        let canonical = std::fs::canonicalize(&path).unwrap_or_else(|_| path.clone());
        if !seen.insert(canonical) {
            continue;
        }
        let shown: Arc<str> = Arc::from(display_path(&path));
        let bytes = match decode::read_input(&path, Some(yaml::MAX_MANIFEST_BYTES)) {
            Ok(b) => b,
            Err(e) => {
                diags.push(match included_at {
                    Some(span) => {
                        Diagnostic::error(Some(span), format!("cannot read manifest {shown}: {e}"))
                            .field("include")
                    }
                    None => Diagnostic::error(
                        Some(Span::file_only(shown)),
                        format!("cannot read manifest: {e}"),
                    ),
                });
                continue;
            }
        };
        decoder.record_input(&shown, &bytes);
        let parsed = yaml::parse(&shown, &bytes);
        // Kept for quoting in diagnostics; the lines that may hold a secret are found
        // before any line of this file is quoted (only runs that quote pay for it).
        let text = String::from_utf8(bytes)
            .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned());
        crate::diag::register_source_from(&shown, text, &path, Some(hidden::of_manifest));
        let root = match parsed {
            Ok(n) => n,
            Err(d) => {
                diags.push(d);
                continue;
            }
        };
        let file = ParsedFile {
            path: path.clone(),
            root,
        };
        for (k, _) in top_map(&file, diags) {
            let name = k.key_text();
            if !TOP_LEVEL.contains(&name.as_str()) {
                diags.push(
                    Diagnostic::error(
                        Some(k.span.clone()),
                        format!(
                            "unknown top-level key; expected one of {}",
                            TOP_LEVEL.join(", ")
                        ),
                    )
                    .field(name),
                );
            }
        }
        if let Some(inc) = section(&file, "include") {
            let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
            let items: Vec<&Node> = match &inc.value {
                Value::Seq(items) => items.iter().collect(),
                Value::Str(_) => vec![inc],
                other => {
                    diags.push(
                        Diagnostic::error(
                            Some(inc.span.clone()),
                            format!(
                                "expected a list of files or folders, found {}",
                                other.type_name()
                            ),
                        )
                        .field("include"),
                    );
                    Vec::new()
                }
            };
            let mut found = Vec::new();
            for item in items {
                match item.as_str() {
                    // The same rule as `template:` and `source:`: below this
                    // manifest's folder, never above it.
                    Some(rel) if rel.split('/').any(|c| c == "..") => diags.push(
                        Diagnostic::error(
                            Some(item.span.clone()),
                            format!("include `{rel}` must not contain `..`: includes name files or folders below this manifest's folder"),
                        )
                        .field("include"),
                    ),
                    Some(rel) if !rel.starts_with('/') => {
                        let target = base.join(rel);
                        if !target.exists() {
                            diags.push(
                                Diagnostic::error(
                                    Some(item.span.clone()),
                                    format!("{} does not exist", target.display()),
                                )
                                .field("include"),
                            );
                        }
                        let mut local = Diagnostics::default();
                        found.extend(
                            expand(&target, &mut local)
                                .into_iter()
                                .map(|f| (f, Some(item.span.clone()))),
                        );
                    }
                    _ => diags.push(
                        Diagnostic::error(
                            Some(item.span.clone()),
                            "an include must be a path relative to this manifest",
                        )
                        .field("include"),
                    ),
                }
            }
            found.reverse();
            queue.extend(found);
        }
        files.push(file);
    }
    files
}

/// Merges `vars:` of all files, applies the chosen environment and `--var` overrides.
fn resolve_vars(
    files: &[ParsedFile],
    opts: &LoadOptions,
    diags: &mut Diagnostics,
) -> serde_json::Map<String, serde_json::Value> {
    let mut vars: BTreeMap<String, (serde_json::Value, Span)> = BTreeMap::new();
    let mut envs: HashMap<String, Vec<(&Node, &Node)>> = HashMap::new();
    for file in files {
        if let Some(node) = section(file, "vars") {
            match node.as_map() {
                Some(pairs) => {
                    for (k, v) in pairs {
                        let name = k.key_text();
                        if let Some((_, first)) = vars.get(&name) {
                            diags.push(
                                Diagnostic::error(Some(k.span.clone()), "variable defined twice")
                                    .field(name.clone())
                                    .related(first.clone(), "first defined here"),
                            );
                        } else {
                            vars.insert(name, (v.to_json(), k.span.clone()));
                        }
                    }
                }
                None => diags.push(
                    Diagnostic::error(Some(node.span.clone()), "`vars` must be a mapping")
                        .field("vars"),
                ),
            }
        }
        if let Some(node) = section(file, "environments") {
            match node.as_map() {
                Some(pairs) => {
                    for (k, v) in pairs {
                        match &v.value {
                            Value::Map(over) => envs.entry(k.key_text()).or_default().extend(over.iter().map(|(a, b)| (a, b))),
                            Value::Null => {
                                envs.entry(k.key_text()).or_default();
                            }
                            other => diags.push(
                                Diagnostic::error(Some(v.span.clone()), format!("an environment must be a mapping of variable overrides, found {}", other.type_name()))
                                    .field(k.key_text()),
                            ),
                        }
                    }
                }
                None => diags.push(
                    Diagnostic::error(Some(node.span.clone()), "`environments` must be a mapping")
                        .field("environments"),
                ),
            }
        }
    }
    // What `--var` may override: the variables `vars:` declares, before an
    // environment adds its own.
    let declared: BTreeMap<String, Span> = vars
        .iter()
        .map(|(k, (_, span))| (k.clone(), span.clone()))
        .collect();
    if let Some(env) = &opts.env {
        match envs.get(env) {
            Some(overrides) => {
                for (k, v) in overrides {
                    let name = k.key_text();
                    if !vars.contains_key(&name) {
                        diags.push(Diagnostic::warning(Some(k.span.clone()), format!("environment `{env}` sets a variable that `vars` does not define")).field(name.clone()));
                    }
                    vars.insert(name, (v.to_json(), k.span.clone()));
                }
            }
            None => {
                let mut known: Vec<&String> = envs.keys().collect();
                known.sort();
                diags.push(Diagnostic::error(
                    None,
                    format!(
                        "--env {env}: no such environment; defined: {}",
                        if known.is_empty() {
                            "none".to_string()
                        } else {
                            known
                                .iter()
                                .map(|s| s.as_str())
                                .collect::<Vec<_>>()
                                .join(", ")
                        }
                    ),
                ));
            }
        }
    }
    check_overrides(&opts.vars, &declared, diags);
    let mut out: serde_json::Map<String, serde_json::Value> =
        vars.into_iter().map(|(k, (v, _))| (k, v)).collect();
    for (k, v) in &opts.vars {
        out.insert(k.clone(), serde_json::Value::String(v.clone()));
    }
    out.insert(
        "environment".into(),
        opts.env
            .clone()
            .map(serde_json::Value::String)
            .unwrap_or(serde_json::Value::Null),
    );
    out
}

/// `--var NAME=VALUE` may only override a variable declared under `vars:` of a loaded
/// manifest: a misspelt name would otherwise be accepted and change nothing.
fn check_overrides(
    overrides: &[(String, String)],
    declared: &BTreeMap<String, Span>,
    diags: &mut Diagnostics,
) {
    for (name, _) in overrides {
        if declared.contains_key(name) {
            continue;
        }
        let mut d = if name == "environment" {
            Diagnostic::error(
                None,
                "--var environment: `environment` is set by --env, not by --var",
            )
        } else {
            let message = match crate::diag::closest(name, declared.keys().map(String::as_str))
            {
                Some(close) => format!(
                    "--var {name}: no manifest declares a variable `{name}`; did you mean `{close}`?"
                ),
                None if declared.is_empty() => format!(
                    "--var {name}: no manifest declares any variable; --var only overrides a variable declared under `vars:`"
                ),
                None => {
                    let mut names: Vec<&str> =
                        declared.keys().map(String::as_str).take(20).collect();
                    if declared.len() > names.len() {
                        names.push("…");
                    }
                    format!(
                        "--var {name}: no manifest declares a variable `{name}`; --var only overrides a variable declared under `vars:` (declared: {})",
                        names.join(", ")
                    )
                }
            };
            Diagnostic::error(None, message)
        }
        .field("--var");
        if let Some((close, span)) = crate::diag::closest(name, declared.keys().map(String::as_str))
            .and_then(|close| declared.get_key_value(close))
        {
            d = d.related(span.clone(), format!("`{close}` is declared here"));
        }
        diags.push(d);
    }
}

fn decode_meta(d: &mut Decoder, f: &mut Fields) -> (Meta, bool) {
    let requires = f.id_list(d, "requires");
    let before = f.id_list(d, "before");
    let notify = f.id_list(d, "notify");
    let secret = f.bool(d, "secret").unwrap_or(false);
    let tags = f
        .string_list(d, "tags")
        .into_iter()
        .map(|(t, _)| t)
        .collect();
    let enabled = match f.raw("when") {
        None => true,
        Some(node) => match &node.value {
            Value::Bool(b) => *b,
            Value::Str(expr) => match d.templates.eval_condition(expr, &node.span) {
                Ok(b) => b,
                Err(diag) => {
                    d.diags.push(diag.field("when"));
                    true
                }
            },
            other => {
                d.error(
                    &node.span,
                    "when",
                    format!(
                        "expected a condition (a string expression or a boolean), found {}",
                        other.type_name()
                    ),
                );
                true
            }
        },
    };
    let allow = f
        .string_list(d, "allow")
        .into_iter()
        .filter(|(code, span)| {
            let ok = crate::lint::known(code);
            if !ok {
                let codes: Vec<&str> = crate::lint::LINTS.iter().map(|l| l.code).collect();
                d.error(
                    span,
                    "allow",
                    format!(
                        "`{code}` is not a lint code; known: {} (docs/lints.md)",
                        codes.join(", ")
                    ),
                );
            }
            ok
        })
        .collect();
    let meta = Meta {
        span: Some(f.span.clone()),
        requires,
        before,
        notify,
        secret,
        tags,
        allow,
    };
    (meta, enabled)
}

/// Whether an entry's `when:` holds: `Some(false)` only for a condition that is
/// cleanly false (a broken one is left to [`decode_entry`] to report).
fn entry_enabled(d: &mut Decoder, entry: &Node) -> Option<bool> {
    let node = entry
        .as_map()?
        .iter()
        .find(|(k, _)| k.as_str() == Some("when"))
        .map(|(_, v)| v)?;
    match &node.value {
        Value::Bool(b) => Some(*b),
        Value::Str(expr) => d.templates.eval_condition(expr, &node.span).ok(),
        _ => None,
    }
}

/// Whether an entry is a module call (`- module: NAME`).
fn module_call(entry: &Node) -> Option<&[(Node, Node)]> {
    entry
        .as_map()
        .filter(|p| p.first().is_some_and(|(k, _)| k.as_str() == Some("module")))
}

fn decode_entry(d: &mut Decoder, entry: &Node) -> Option<Box<dyn Resource>> {
    let Some(pairs) = entry.as_map().filter(|p| !p.is_empty()) else {
        d.error(
            &entry.span,
            "resources",
            format!(
                "each resource must be a mapping whose first key names its kind, found {}",
                entry.value.type_name()
            ),
        );
        return None;
    };
    let (kind_key, name_node) = &pairs[0];
    let kind_name = kind_key.key_text();
    let Some(kind) = resource::kind(&kind_name) else {
        let known: Vec<&str> = resource::KINDS.iter().map(|k| k.name).collect();
        let hint = if META_FIELDS.contains(&kind_name.as_str()) {
            "the first key of a resource must name its kind".to_string()
        } else {
            format!("unknown resource kind; known kinds: {}", known.join(", "))
        };
        d.error(&kind_key.span, &kind_name, hint);
        return None;
    };
    let name = match &name_node.value {
        Value::Str(s) => match d.templates.render_inline(s, &name_node.span) {
            Ok(n) if !n.trim().is_empty() => Some((n, name_node.span.clone())),
            Ok(_) => {
                d.error(&name_node.span, kind.name, "the name must not be empty");
                None
            }
            Err(diag) => {
                d.diags.push(diag.field(kind.name));
                None
            }
        },
        // A kind whose entry may name several things (`package: [a, b]`) gets the
        // names joined with ", " (no such name holds a comma and a space).
        Value::Seq(items) if LIST_NAMED.contains(&kind.name) => {
            let mut names = Vec::with_capacity(items.len());
            for item in items {
                match &item.value {
                    Value::Str(s) => match d.templates.render_inline(s, &item.span) {
                        Ok(n) => names.push(n),
                        Err(diag) => d.diags.push(diag.field(kind.name)),
                    },
                    other => d.error(
                        &item.span,
                        kind.name,
                        format!("each name must be a string, found {}", other.type_name()),
                    ),
                }
            }
            (names.len() == items.len() && !names.is_empty())
                .then(|| (names.join(", "), name_node.span.clone()))
        }
        other => {
            d.error(
                &name_node.span,
                kind.name,
                format!("the name must be a string, found {}", other.type_name()),
            );
            None
        }
    };
    // Templates this entry renders are never quoted if it may be secret (decided on
    // the raw value: a templated `secret:` counts).
    d.secret_entry = pairs
        .iter()
        .any(|(k, v)| k.as_str() == Some("secret") && v.value != Value::Bool(false));
    let mut fields = Fields::new(pairs, kind_key.span.clone(), kind.name);
    fields.consume_first();
    let (meta, enabled) = decode_meta(d, &mut fields);
    let resource = name.and_then(|name| (kind.decode)(d, name, meta, &mut fields));
    fields.finish(d);
    resource.filter(|_| enabled)
}

/// Kinds whose entry may name a list (`package: [auditd, nftables]`).
const LIST_NAMED: &[&str] = &["package"];

/// Stack of the thread that loads the manifests. Parsing and converting a tree
/// recurses once per level of nesting (serde-saphyr's frames are large, in debug
/// builds several KiB), and [`yaml::MAX_DEPTH`] bounds the levels; this size leaves a
/// wide margin whatever `ulimit -s` the caller runs with. Only touched pages are used.
pub(crate) const LOAD_STACK_BYTES: usize = 64 * 1024 * 1024;

/// Loads, templates and decodes everything; refuses with every problem at once.
///
/// Runs on a thread with an explicitly sized stack so that how deep a manifest may
/// nest does not depend on the stack the process was started with.
pub fn load(opts: &LoadOptions, host: &Host) -> Result<Loaded, Diagnostics> {
    std::thread::scope(|scope| {
        let worker = std::thread::Builder::new()
            .name("load".into())
            .stack_size(LOAD_STACK_BYTES)
            .spawn_scoped(scope, || load_here(opts, host));
        match worker {
            Ok(handle) => handle
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic)),
            Err(e) => {
                let mut diags = Diagnostics::default();
                diags.push(Diagnostic::error(
                    None,
                    format!("cannot start a thread to load the manifests: {e}"),
                ));
                Err(diags)
            }
        }
    })
}

fn load_here(opts: &LoadOptions, host: &Host) -> Result<Loaded, Diagnostics> {
    let started = std::time::Instant::now();
    let mut diags = Diagnostics::default();
    let facts = serde_json::to_value(host.facts()).unwrap_or(serde_json::Value::Null);
    let mut decoder = Decoder::new(Templates::new(&serde_json::Map::new(), facts.clone()));
    let mut files = read_all(opts, &mut diags, &mut decoder);
    tracing::debug!(elapsed = ?started.elapsed(), files = files.len(), "manifests read and parsed");
    let vars = resolve_vars(&files, opts, &mut diags);
    decoder.templates = Templates::new(&vars, facts.clone());
    decoder.record_input("--env", opts.env.as_deref().unwrap_or("").as_bytes());
    for (k, v) in &opts.vars {
        decoder.record_input(&format!("--var {k}"), v.as_bytes());
    }
    let mut resources: Vec<Box<dyn Resource>> = Vec::new();
    let mut settings = Settings::default();
    let mut modules =
        module::Modules::new(opts.modules.clone(), facts.clone(), opts.env.as_deref());
    for file in &mut files {
        decoder.base_dir = file
            .path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default();
        if let Some(node) = section(file, "settings") {
            decode_settings(&mut decoder, node, &mut settings);
        }
        match section(file, "resources").map(|n| (&n.value, n)) {
            None | Some((Value::Null, _)) => {}
            Some((Value::Seq(items), _)) => {
                for item in items {
                    if let Some(pairs) = module_call(item) {
                        modules.call(&mut decoder, pairs, &mut resources);
                    } else if let Some(r) = decode_entry(&mut decoder, item) {
                        resources.push(r);
                    }
                }
            }
            Some((other, node)) => decoder.error(
                &node.span,
                "resources",
                format!("expected a list of resources, found {}", other.type_name()),
            ),
        }
        // The decoded resources hold what they need; the tree goes now rather than
        // after the last file (at 100,000 resources, ~1 KB each of peak memory).
        file.root.value = Value::Null;
    }
    diags.extend(std::mem::take(&mut decoder.diags));
    let resources = modules.finish(resources, &mut diags);
    tracing::debug!(elapsed = ?started.elapsed(), resources = resources.len(), "resources decoded");
    let (catalog, repeated) = Catalog::dedup(resources);
    for (r, first) in repeated {
        let mut d = Diagnostic::error(
            r.meta().span.clone(),
            format!("duplicate resource id {}", r.id()),
        );
        if let Some(p) = &catalog.resources[first].meta().span {
            d = d.related(p.clone(), "first declared here");
        }
        diags.push(d);
    }
    for d in module::same_thing_twice(&catalog) {
        diags.push(d);
    }
    for (later, earlier, how) in catalog.path_conflicts() {
        let (r, first) = (&catalog.resources[later], &catalog.resources[earlier]);
        let path = r.managed_path().unwrap_or_default();
        let message = match how {
            PathConflict::SamePath => format!(
                "{} and {} both manage {path}: a path has one kind, else each would undo the other on every run",
                r.id(),
                first.id()
            ),
            PathConflict::BelowNonDirectory => format!(
                "{} is below {}: nothing can be created below a {}",
                r.id(),
                first.id(),
                first.id().kind
            ),
        };
        let mut d = Diagnostic::error(r.meta().span.clone(), message);
        if let Some(p) = &first.meta().span {
            d = d.related(p.clone(), format!("{} is declared here", first.id()));
        }
        diags.push(d);
    }
    if diags.has_errors() {
        return Err(diags);
    }
    let fingerprint = crate::plan::hex(&decoder.inputs.finalize())[..32].to_string();
    Ok(Loaded {
        catalog,
        diags,
        fingerprint,
        files: files.into_iter().map(|f| f.path).collect(),
        settings,
    })
}

fn decode_settings(d: &mut Decoder, node: &Node, settings: &mut Settings) {
    let Some(pairs) = node.as_map() else {
        d.error(&node.span, "settings", "`settings` must be a mapping");
        return;
    };
    let mut f = Fields::new(pairs, node.span.clone(), "settings");
    if let Some(p) = f.abs_path(d, "audit_log") {
        settings.audit_log = Some(p.0);
    }
    if let Some((s, span)) = f.string(d, "removed") {
        match crate::state::Removed::parse(&s) {
            Some(r) => settings.removed = r,
            None => d.error(
                &span,
                "removed",
                format!("`{s}` is not one of report, remove"),
            ),
        }
    }
    f.finish(d);
}
