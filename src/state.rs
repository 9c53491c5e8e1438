//! What the last apply managed on a target: the record behind `settings.removed` and the
//! host's own environment.
//!
//! `ROOT/var/lib/reconcile/managed.json` (0600) lists every resource an apply has managed,
//! whether the path or account existed before reconcile first managed it, and for a path
//! that did, its original type, owner and mode. The original content of a file is kept
//! beside it in `ROOT/var/lib/reconcile/originals/` (a 0700 directory of 0600 files):
//! root-only, because it may be a secret's. Both are engine files: written atomically
//! through the root-safe walk, never by `plan` or `check`.
//!
//! A resource in the record that the manifests no longer declare is *removed*: `plan` and
//! `check` show it, and with `settings: {removed: remove}` an apply deletes what reconcile
//! created and restores what it took over. Users, groups and units are removed through
//! their kinds' own code (a declaration `state: absent` or `enabled: false` made here and
//! decoded by the kind), so the same safety checks apply as for a declared removal.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::apply::{Outcome, Status};
use crate::engine::{EngineError, FingerprintKey, Model};
use crate::host::{FileKind, Host, HostError, Perms};
use crate::id::ResourceId;
use crate::manifest::decode::{format_mode, Decoder, Fields};
use crate::manifest::template::Templates;
use crate::plan::{Action, Change};
use crate::resource::{ApplyCtx, Meta, PlanCtx, Purpose, Resource};

pub const RECORD: &str = "/var/lib/reconcile/managed.json";
pub const ORIGINALS: &str = "/var/lib/reconcile/originals";
const RECORD_FORMAT: &str = "reconcile-managed";
const RECORD_VERSION: u32 = 1;
/// The fingerprint key's directory mode; the record itself is 0600.
const STATE_DIR_MODE: u32 = 0o750;
const ORIGINALS_DIR_MODE: u32 = 0o700;
const PRIVATE: u32 = 0o600;
/// A record of 100,000 resources is about 15 MB.
const MAX_RECORD: u64 = 1 << 30;
/// Larger originals are not kept: removing such a resource leaves the file as it is.
pub const MAX_ORIGINAL: u64 = 64 << 20;

/// `settings.removed`: what an apply does with resources the manifests no longer declare.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Removed {
    /// Show them (`check` exits 2); apply leaves them in place and says so.
    #[default]
    Report,
    /// Delete what reconcile created, restore what it took over.
    Remove,
}

impl Removed {
    pub fn parse(text: &str) -> Option<Removed> {
        match text {
            "report" => Some(Removed::Report),
            "remove" => Some(Removed::Remove),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub format: String,
    pub version: u32,
    /// `--env` of the last successful apply; later runs without `--env` use it.
    #[serde(default)]
    pub environment: Option<String>,
    /// Run id of the apply that wrote this record.
    #[serde(default)]
    pub run: Option<String>,
    #[serde(default)]
    pub resources: Vec<Managed>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Managed {
    pub id: ResourceId,
    /// The managed path, for kinds that manage one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// The path (or account) existed before reconcile first managed it.
    #[serde(default)]
    pub existed: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub original: Option<Original>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub secret: bool,
}

/// A path as it was before reconcile first managed it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Original {
    pub kind: FileKind,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// File: the saved copy's name under [`ORIGINALS`]; absent when it was over
    /// [`MAX_ORIGINAL`] and was not kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub saved: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// Symlink: its target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
}

/// What the record keeps to check a saved original before restoring it: its SHA-256, or
/// for a secret's the same keyed with the host's fingerprint key (a plain hash of a secret
/// would let anyone holding the record confirm a guess).
fn content_id(bytes: &[u8], secret: bool, key: &FingerprintKey) -> String {
    let plain = crate::plan::sha256_hex(bytes);
    if secret {
        key.keyed(&plain)
    } else {
        plain
    }
}

fn host_err(e: HostError) -> EngineError {
    EngineError::Host(e)
}

/// Reads the record without creating anything (`plan` and `check` use it); `None` before
/// the first apply that recorded one. A record others can write or read is refused.
pub fn read(host: &Host) -> Result<Option<Record>, EngineError> {
    let Some((mode, bytes)) = host.read_state(RECORD, MAX_RECORD)? else {
        return Ok(None);
    };
    let path = host.show(RECORD);
    let euid = nix::unistd::geteuid().as_raw();
    let owner = host.lstat(RECORD)?.map_or(euid, |st| st.uid);
    if owner != 0 && owner != euid {
        return Err(EngineError::Other(format!(
            "{path}: the record of managed resources is owned by uid {owner}, not root or uid {euid}"
        )));
    }
    if mode & 0o077 != 0 {
        return Err(EngineError::Other(format!(
            "{path}: the record of managed resources has mode {mode:04o}; it must be readable by its owner only (chmod 0600 {path})"
        )));
    }
    let record: Record = serde_json::from_slice(&bytes).map_err(|e| {
        EngineError::Other(format!(
            "{path}: not a record of managed resources ({e}); move it aside to start a new one (resources no longer declared are then forgotten)"
        ))
    })?;
    if record.format != RECORD_FORMAT || record.version != RECORD_VERSION {
        return Err(EngineError::Other(format!(
            "{path}: format {} version {} is not {RECORD_FORMAT} version {RECORD_VERSION}",
            record.format, record.version
        )));
    }
    Ok(Some(record))
}

fn write(host: &Host, record: &Record) -> Result<(), EngineError> {
    // Compact: at 100,000 resources the indentation alone would be megabytes.
    let bytes = serde_json::to_vec(record)
        .map_err(|e| EngineError::Other(format!("cannot serialise the record: {e}")))?;
    host.write_state(RECORD, &bytes, STATE_DIR_MODE, PRIVATE)
        .map_err(host_err)
}

/// The saved copy of an original, named by its resource id (never by content).
fn original_name(id: &ResourceId) -> String {
    crate::plan::sha256_hex(id.to_string().as_bytes())[..32].to_string()
}

fn original_path(name: &str) -> String {
    format!("{ORIGINALS}/{name}")
}

/// Makes sure the originals directory is private before anything is put in it.
fn originals_dir(host: &Host) -> Result<(), EngineError> {
    host.state_parent(&original_path("x"), ORIGINALS_DIR_MODE)
        .map_err(host_err)?;
    if let Some(st) = host.lstat(ORIGINALS)? {
        if st.kind != FileKind::Directory || st.mode & 0o077 != 0 {
            return Err(EngineError::Other(format!(
                "{}: must be a directory readable by its owner only (mode {:04o}); it holds the original content of files reconcile took over",
                host.show(ORIGINALS),
                st.mode
            )));
        }
    }
    Ok(())
}

fn accounts_kind(kind: &str) -> bool {
    kind == "user" || kind == "group"
}

/// What every selected resource that the record does not hold yet looked like before
/// this apply touches it. Apply only, under the run lock, before anything is applied (the
/// unit kind's batch step writes files before the graph runs): an original saved here is
/// what `removed: remove` restores.
pub fn capture(
    host: &Host,
    model: &Model,
    record: Option<&Record>,
    key: &FingerprintKey,
) -> Result<Vec<Managed>, EngineError> {
    let known: HashSet<&ResourceId> = record
        .map(|r| r.resources.iter().map(|m| &m.id).collect())
        .unwrap_or_default();
    // A path an undeclared resource managed, now declared as another kind: what was
    // there before reconcile is still what it was.
    let taken_over: BTreeMap<&str, &Managed> = record
        .map(|r| not_declared(model, r))
        .unwrap_or_default()
        .into_iter()
        .filter_map(|m| m.path.as_deref().map(|p| (p, m)))
        .collect();
    let accounts = host.accounts()?;
    let mut out = Vec::new();
    let mut dir_ready = false;
    for (i, r) in model.loaded.catalog.resources.iter().enumerate() {
        if !model.selected.get(i).copied().unwrap_or(true) || known.contains(r.id()) {
            continue;
        }
        let id = r.id().clone();
        let secret = r.meta().secret;
        if accounts_kind(&id.kind) {
            let existed = if id.kind == "user" {
                accounts.user(&id.name).is_some()
            } else {
                accounts.group(&id.name).is_some()
            };
            out.push(Managed {
                id,
                path: None,
                existed,
                original: None,
                secret,
            });
            continue;
        }
        if let Some(before) = r.managed_path().and_then(|p| taken_over.get(p)) {
            out.push(Managed {
                id,
                path: before.path.clone(),
                existed: before.existed,
                original: before.original.clone(),
                secret: secret || before.secret,
            });
            continue;
        }
        let Some(path) = r.managed_path() else {
            // Nothing of its own to delete (a unit without content manages a vendor
            // unit's state): counted as existing, so removal leaves it.
            out.push(Managed {
                id,
                path: None,
                existed: true,
                original: None,
                secret,
            });
            continue;
        };
        let stat = match host.lstat(path) {
            Ok(s) => s,
            // Not recorded until it can be seen: taking it for "created by reconcile"
            // would let a later removal delete what reconcile never made. (A path below a
            // symlink that a declared directory replaces is captured by the next apply.)
            Err(HostError::Unsafe { .. }) => continue,
            Err(e) => return Err(host_err(e)),
        };
        let original = match stat {
            None => None,
            Some(st) => {
                let mut o = Original {
                    kind: st.kind,
                    mode: st.mode,
                    uid: st.uid,
                    gid: st.gid,
                    saved: None,
                    sha256: None,
                    target: None,
                };
                match st.kind {
                    FileKind::File if st.size <= MAX_ORIGINAL => {
                        if let Some((_, Some(bytes))) = host.read(path)? {
                            if !dir_ready {
                                originals_dir(host)?;
                                dir_ready = true;
                            }
                            let name = original_name(&id);
                            host.write_state(
                                &original_path(&name),
                                &bytes,
                                ORIGINALS_DIR_MODE,
                                PRIVATE,
                            )?;
                            o.sha256 = Some(content_id(&bytes, secret, key));
                            o.saved = Some(name);
                        }
                    }
                    FileKind::Symlink => o.target = host.read_link(path)?,
                    _ => {}
                }
                Some(o)
            }
        };
        out.push(Managed {
            id,
            path: Some(path.to_string()),
            existed: original.is_some(),
            original,
            secret,
        });
    }
    Ok(out)
}

const SYNTHESIZED: &str = "(removal of an undeclared resource)";

/// A declaration made by the engine and decoded by the kind itself, so that a removal
/// goes through the kind's own checks and tools.
fn synthesize(kind: &str, name: &str, extra: &[(&str, &str)]) -> Option<Box<dyn Resource>> {
    let k = crate::resource::kind(kind)?;
    let quoted = serde_json::to_string(name).ok()?;
    let mut text = format!("{kind}: {quoted}\n");
    for (key, value) in extra {
        text.push_str(&format!("{key}: {value}\n"));
    }
    let file: Arc<str> = Arc::from(SYNTHESIZED);
    let node = crate::manifest::yaml::parse(&file, text.as_bytes()).ok()?;
    let pairs = node.as_map()?;
    let mut d = Decoder::new(Templates::new(
        &serde_json::Map::new(),
        serde_json::Value::Null,
    ));
    let mut fields = Fields::new(pairs, node.span.clone(), k.name);
    fields.consume_first();
    let r = (k.decode)(
        &mut d,
        (name.to_string(), node.span.clone()),
        Meta::default(),
        &mut fields,
    );
    fields.finish(&mut d);
    if d.diags.has_errors() {
        tracing::debug!(diags = %d.diags, "synthesized removal did not decode");
        return None;
    }
    r
}

/// The kind's own removal of an undeclared account or unit, when it has one.
fn kind_removal(m: &Managed) -> Option<Box<dyn Resource>> {
    match &*m.id.kind {
        "user" => synthesize(
            "user",
            &m.id.name,
            &[("state", "absent"), ("remove_home", "false")],
        ),
        "group" => synthesize("group", &m.id.name, &[("state", "absent")]),
        // A drop-in or a template has no state of its own: removing its file is all.
        "unit" if !m.id.name.contains(".d/") && !m.id.name.contains("@.") => synthesize(
            "unit",
            &m.id.name,
            &[("enabled", "false"), ("active", "false")],
        ),
        _ => None,
    }
}

fn owner_text(accounts: &crate::host::accounts::Accounts, uid: u32, gid: u32) -> String {
    format!("{}:{}", accounts.user_name(uid), accounts.group_name(gid))
}

/// What happens to one undeclared resource; the change is what `plan` shows under it.
enum Step {
    /// Leave it and keep it in the record: `settings.removed: report`, or a `--tags` run.
    Left,
    /// Asked to remove it, but it cannot be: kept in the record, and a failure.
    Keep,
    /// Leave it as it is and forget it (it existed before reconcile managed it and has
    /// nothing to restore).
    Forget,
    /// Delete the path reconcile created.
    DeletePath,
    /// Put the original back.
    Restore,
    /// The kind's own removal (user, group), then forget.
    Kind(Box<dyn Resource>),
    /// Stop and disable (the kind's own code), then delete the unit file it created.
    Unit(Option<Box<dyn Resource>>),
}

fn step_for(
    host: &Host,
    ctx: &PlanCtx,
    m: &Managed,
    mode: Removed,
    tagged: bool,
) -> Result<(Step, Change), EngineError> {
    let (step, c) = remove_step(host, ctx, m).unwrap_or_else(|e| {
        // This one cannot be removed now (its group is still someone's primary group, a
        // parent became a symlink...): it stays recorded, and the reason is shown.
        let mut c = Change::new(m.id.clone(), m.secret);
        c.notes.push("no longer declared".into());
        c.warnings.push(format!(
            "cannot be removed now: {}",
            kind_message(&e.to_string())
        ));
        (Step::Keep, c)
    });
    // Nothing to undo (it was there before reconcile and has nothing to restore, or it is
    // gone already): forgotten whatever the mode, so `report` does not flag it forever.
    if matches!(step, Step::Forget) || (mode == Removed::Remove && !tagged) {
        return Ok((step, c));
    }
    let mut c = Change::new(m.id.clone(), m.secret);
    c.notes.push("no longer declared".into());
    c.notes.push(if tagged {
        "left in place: --tags narrows this run to tagged resources".into()
    } else {
        "left in place (settings.removed: report); declare it again, or set `settings: {removed: remove}` to remove it".into()
    });
    Ok((Step::Left, c))
}

/// What `removed: remove` does with one undeclared resource.
fn remove_step(host: &Host, ctx: &PlanCtx, m: &Managed) -> Result<(Step, Change), EngineError> {
    let mut c = Change::new(m.id.clone(), m.secret);
    c.notes.push("no longer declared".into());
    let live = match &m.path {
        Some(p) => host.lstat(p)?,
        None => None,
    };
    if accounts_kind(&m.id.kind) {
        if m.existed {
            c.notes
                .push("existed before reconcile managed it: left as it is and forgotten".into());
            return Ok((Step::Forget, c));
        }
        let Some(r) = kind_removal(m) else {
            c.warnings
                .push("reconcile cannot build the removal of this resource: left in place".into());
            return Ok((Step::Keep, c));
        };
        let planned = r.plan(ctx).map_err(|e| EngineError::Other(e.to_string()))?;
        c.action = planned.action;
        c.fields = planned.fields;
        c.notes.extend(planned.notes);
        c.warnings.extend(planned.warnings);
        if c.action == Action::None {
            c.notes.push("already gone; forgotten".into());
            return Ok((Step::Forget, c));
        }
        return Ok((Step::Kind(r), c));
    }
    let Some(path) = m.path.as_deref() else {
        c.notes
            .push("reconcile managed no file of its own here: left as it is and forgotten".into());
        return Ok((Step::Forget, c));
    };
    let accounts = ctx.accounts;
    if let Some(o) = &m.original {
        if o.kind == FileKind::File && o.saved.is_none() {
            c.warnings.push(format!(
                "its original was over {} MiB and was not kept: left as it is and forgotten",
                MAX_ORIGINAL >> 20
            ));
            return Ok((Step::Forget, c));
        }
        if o.kind == FileKind::Other {
            c.notes.push(format!(
                "it was a {} before reconcile managed it; left as it is and forgotten",
                o.kind.name()
            ));
            return Ok((Step::Forget, c));
        }
        let what = match (o.kind, &o.sha256, &o.target) {
            (FileKind::File, _, _) if m.secret => "content hidden: secret".to_string(),
            (FileKind::File, Some(h), _) => format!("content sha256:{}", h.get(..12).unwrap_or(h)),
            (FileKind::Symlink, _, Some(t)) => format!("-> {t}"),
            _ => o.kind.name().to_string(),
        };
        c.action = Action::Update;
        c.notes.push(format!(
            "original restored: {} {} {} ({what}), as it was before reconcile took it over",
            o.kind.name(),
            owner_text(accounts, o.uid, o.gid),
            format_mode(o.mode)
        ));
        if m.id.kind == "unit" {
            c.notes
                .push("the unit's enablement and activity are left as they are".into());
        }
        return Ok((Step::Restore, c));
    }
    if live.is_none() {
        c.notes.push("already gone; forgotten".into());
        return Ok((Step::Forget, c));
    }
    c.action = Action::Delete;
    if m.id.kind == "unit" {
        let r = kind_removal(m);
        if let Some(r) = &r {
            let planned = r.plan(ctx).map_err(|e| EngineError::Other(e.to_string()))?;
            c.fields = planned.fields;
        }
        let live_mode =
            crate::resource::unit::detect_mode(host) == crate::resource::unit::Mode::Live;
        c.notes.push(format!(
            "reconcile created it: {}its file {path} is deleted",
            match (&r, live_mode) {
                (None, _) => "",
                (Some(_), true) => "stopped, disabled, and ",
                (Some(_), false) => "disabled (offline: nothing runs to stop), and ",
            }
        ));
        return Ok((Step::Unit(r), c));
    }
    if m.id.kind == "directory" {
        c.notes.push(format!(
            "reconcile created it: {path} is deleted once empty (after the removals inside it); a directory that still holds anything is left in place"
        ));
    } else {
        c.notes
            .push(format!("reconcile created it: {path} is deleted"));
    }
    Ok((Step::DeletePath, c))
}

/// A kind's message about a declaration made here, without the place of that declaration
/// (it is in no manifest).
fn kind_message(text: &str) -> &str {
    match text.split_once(SYNTHESIZED) {
        // `:LINE:COL: field `NAME`: message`
        Some((_, rest)) => rest
            .split_once("`: ")
            .map_or(rest, |(_, m)| m)
            .trim_start_matches(|c: char| c == ':' || c.is_ascii_digit() || c == ' '),
        None => text,
    }
}

/// Order of removals: units stop before their files go, files before their directories
/// (deepest first), accounts last (their files are gone by then).
fn removal_rank(m: &Managed) -> (u8, std::cmp::Reverse<usize>) {
    let rank = match &*m.id.kind {
        "unit" => 0,
        "file" | "symlink" => 1,
        "directory" => 2,
        "user" => 3,
        "group" => 4,
        _ => 5,
    };
    let depth = m.path.as_deref().map_or(0, |p| p.matches('/').count());
    (rank, std::cmp::Reverse(depth))
}

/// Recorded resources whose id is no longer declared (the path may be, by another kind).
fn not_declared<'r>(model: &Model, record: &'r Record) -> Vec<&'r Managed> {
    record
        .resources
        .iter()
        .filter(|m| !model.loaded.catalog.contains(&m.id))
        .collect()
}

/// The paths the declared resources manage.
fn declared_paths(model: &Model) -> HashSet<&str> {
    model
        .loaded
        .catalog
        .resources
        .iter()
        .filter_map(|r| r.managed_path())
        .collect()
}

/// Resources in the record that the manifests no longer declare, in removal order. One
/// whose path another declared resource manages now (a `file` that became a `symlink`)
/// is not among them: that resource takes its record over, original included.
fn undeclared<'r>(model: &Model, record: &'r Record) -> Vec<&'r Managed> {
    let mut out = not_declared(model, record);
    if out.iter().any(|m| m.path.is_some()) {
        let paths = declared_paths(model);
        out.retain(|m| m.path.as_deref().is_none_or(|p| !paths.contains(p)));
    }
    out.sort_by_key(|m| removal_rank(m));
    out
}

fn steps(
    host: &Host,
    model: &Model,
    record: &Record,
    mode: Removed,
    tagged: bool,
    purpose: Purpose,
) -> Result<Vec<(Managed, Step, Change)>, EngineError> {
    let list = undeclared(model, record);
    if list.is_empty() {
        return Ok(Vec::new());
    }
    let accounts = host.accounts()?;
    let ctx = PlanCtx {
        host,
        accounts: &accounts,
        catalog: &model.loaded.catalog,
        purpose,
    };
    list.into_iter()
        .map(|m| step_for(host, &ctx, m, mode, tagged).map(|(s, c)| (m.clone(), s, c)))
        .collect()
}

/// What `plan` and `check` show for resources no longer declared (read-only).
pub fn plan_removed(
    host: &Host,
    model: &Model,
    record: Option<&Record>,
    tagged: bool,
    purpose: Purpose,
) -> Result<Vec<Change>, EngineError> {
    let Some(record) = record else {
        return Ok(Vec::new());
    };
    let mode = model.loaded.settings.removed;
    Ok(steps(host, model, record, mode, tagged, purpose)?
        .into_iter()
        .map(|(_, _, c)| c)
        .collect())
}

/// What an apply did about resources no longer declared.
pub struct Removals {
    /// One per resource acted on (removed, restored, forgotten, or failed).
    pub outcomes: Vec<Outcome>,
    /// Ids to drop from the record.
    pub forget: HashSet<ResourceId>,
    /// Left in place and still recorded (`report`, `--tags`).
    pub left: Vec<ResourceId>,
}

/// Runs the removals (`removed: remove`; in any mode, forgets what has nothing to undo);
/// none when `declared_failed` resources of this run failed or were skipped, one at a time in removal order. Returns each
/// one's outcome and the ids to drop from the record.
pub fn apply_removed(
    host: &Host,
    model: &Model,
    record: Option<&Record>,
    tagged: bool,
    key: &FingerprintKey,
    declared_failed: usize,
    on_done: &dyn Fn(&Outcome),
) -> Removals {
    let mut outcomes = Vec::new();
    let mut forget = HashSet::new();
    let mut left = Vec::new();
    let Some(record) = record else {
        return Removals {
            outcomes,
            forget,
            left,
        };
    };
    let mode = model.loaded.settings.removed;
    let planned = match steps(host, model, record, mode, tagged, Purpose::Apply) {
        Ok(s) => s,
        Err(e) => {
            // Nothing is removed; each one is reported so the run fails visibly.
            for m in undeclared(model, record) {
                let o = Outcome {
                    id: m.id.clone(),
                    status: Status::Failed {
                        reason: format!("cannot plan its removal: {e}"),
                    },
                    change: None,
                };
                on_done(&o);
                outcomes.push(o);
            }
            return Removals {
                outcomes,
                forget,
                left,
            };
        }
    };
    let ctx = ApplyCtx {
        host,
        catalog: &model.loaded.catalog,
        events: &crate::resource::no_events,
    };
    for (m, step, change) in planned {
        if matches!(step, Step::Left) {
            left.push(m.id.clone());
            continue;
        }
        // A replacement that did not converge must not lose what it replaces: nothing is
        // undone in a run whose declared resources failed.
        if declared_failed > 0 && !matches!(step, Step::Forget) {
            let o = Outcome {
                id: m.id.clone(),
                status: Status::Skipped {
                    reason: format!(
                        "not removed: {declared_failed} declared resource(s) did not converge in this run"
                    ),
                },
                change: Some(Box::new(change)),
            };
            on_done(&o);
            outcomes.push(o);
            continue;
        }
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            run_step(host, &ctx, &m, &step, key)
        }))
        .unwrap_or_else(|_| {
            Err("internal error: reconcile panicked while removing this resource".into())
        });
        let status = match (&step, result) {
            (_, Err(reason)) => Status::Failed { reason },
            // Asked to remove it, and it cannot be: a failure the operator must see (it
            // stays recorded and reported).
            (Step::Keep, Ok(())) => Status::Failed {
                reason: change.warnings.join("; "),
            },
            (Step::Forget, Ok(())) => {
                forget.insert(m.id.clone());
                Status::Unchanged
            }
            (_, Ok(())) => {
                forget.insert(m.id.clone());
                Status::Changed
            }
        };
        let o = Outcome {
            id: m.id.clone(),
            status,
            change: Some(Box::new(change)),
        };
        on_done(&o);
        outcomes.push(o);
    }
    Removals {
        outcomes,
        forget,
        left,
    }
}

fn run_step(
    host: &Host,
    ctx: &ApplyCtx,
    m: &Managed,
    step: &Step,
    key: &FingerprintKey,
) -> Result<(), String> {
    let path = m.path.as_deref().unwrap_or_default();
    match step {
        Step::Left | Step::Keep | Step::Forget => Ok(()),
        Step::DeletePath => delete_created(host, m, path),
        Step::Restore => restore(host, m, path, key),
        Step::Kind(r) => {
            let accounts = host.accounts().map_err(|e| e.to_string())?;
            let fresh = r
                .plan(&PlanCtx {
                    host,
                    accounts: &accounts,
                    catalog: ctx.catalog,
                    purpose: Purpose::Apply,
                })
                .map_err(|e| e.to_string())?;
            r.apply(ctx, &fresh).map_err(|e| e.to_string())
        }
        Step::Unit(r) => {
            if let Some(r) = r {
                let accounts = host.accounts().map_err(|e| e.to_string())?;
                let fresh = r
                    .plan(&PlanCtx {
                        host,
                        accounts: &accounts,
                        catalog: ctx.catalog,
                        purpose: Purpose::Apply,
                    })
                    .map_err(|e| e.to_string())?;
                if fresh.is_change() {
                    r.apply(ctx, &fresh).map_err(|e| e.to_string())?;
                }
            }
            delete_created(host, m, path)?;
            daemon_reload(host)
        }
    }
}

/// After a unit file is deleted or restored on a running system, systemd must forget
/// the old one.
fn daemon_reload(host: &Host) -> Result<(), String> {
    if crate::resource::unit::detect_mode(host) != crate::resource::unit::Mode::Live {
        return Ok(());
    }
    crate::host::Cmd::new("systemctl")
        .args(["--no-ask-password", "daemon-reload"])
        .run_ok()
        .map(|_| ())
        .map_err(|e| e.to_string())
}

fn delete_created(host: &Host, m: &Managed, path: &str) -> Result<(), String> {
    let Some(st) = host.lstat(path).map_err(|e| e.to_string())? else {
        return Ok(());
    };
    let want = match &*m.id.kind {
        "directory" => FileKind::Directory,
        "symlink" => FileKind::Symlink,
        _ => FileKind::File,
    };
    if st.kind != want {
        return Err(format!(
            "{} is now a {}, not the {} reconcile created; left in place",
            host.show(path),
            st.kind.name(),
            want.name()
        ));
    }
    if want == FileKind::Directory {
        let entries = host.list_dir(path).map_err(|e| e.to_string())?;
        if !entries.is_empty() {
            return Err(format!(
                "{} still holds {} entr{} reconcile does not remove ({}); left in place: empty it or declare it again",
                host.show(path),
                entries.len(),
                if entries.len() == 1 { "y" } else { "ies" },
                entries.iter().take(3).cloned().collect::<Vec<_>>().join(", ")
            ));
        }
    }
    host.remove(path).map_err(|e| e.to_string())
}

fn restore(host: &Host, m: &Managed, path: &str, key: &FingerprintKey) -> Result<(), String> {
    let Some(o) = &m.original else {
        return Ok(());
    };
    let perms = Perms {
        uid: Some(o.uid),
        gid: Some(o.gid),
        mode: Some(o.mode),
    };
    let live = host.lstat(path).map_err(|e| e.to_string())?;
    match o.kind {
        FileKind::File => {
            let name = o.saved.as_deref().ok_or("the original was not kept")?;
            let (_, bytes) = host
                .read_state(&original_path(name), MAX_ORIGINAL)
                .map_err(|e| e.to_string())?
                .ok_or_else(|| {
                    format!(
                        "the saved original {} is missing",
                        host.show(&original_path(name))
                    )
                })?;
            if o.sha256.as_deref() != Some(&content_id(&bytes, m.secret, key)) {
                return Err(format!(
                    "the saved original {} does not match its recorded hash; not restored",
                    host.show(&original_path(name))
                ));
            }
            match live.map(|st| st.kind) {
                Some(FileKind::Directory) => {
                    return Err(format!(
                        "{} is now a directory; not replaced",
                        host.show(path)
                    ))
                }
                // The write never goes through a symlink: the link reconcile made goes
                // first (the link itself, not what it points at).
                Some(FileKind::Symlink) => host.remove(path).map_err(|e| e.to_string())?,
                _ => {}
            }
            host.write_atomic(path, &bytes, &perms, &mut Vec::new(), None)
                .map_err(|e| e.to_string())?;
        }
        FileKind::Directory => match live {
            Some(st) if st.kind == FileKind::Directory => {
                host.set_perms(path, &perms).map_err(|e| e.to_string())?
            }
            Some(st) => {
                return Err(format!(
                    "{} is now a {}; not replaced by the original directory",
                    host.show(path),
                    st.kind.name()
                ))
            }
            None => host
                .create_dir(path, &perms, &mut Vec::new())
                .map_err(|e| e.to_string())?,
        },
        FileKind::Symlink => {
            let target = o
                .target
                .as_deref()
                .ok_or("the original link target was not kept")?;
            host.set_symlink(path, target, &mut Vec::new())
                .map_err(|e| e.to_string())?;
        }
        FileKind::Other => return Ok(()),
    }
    if m.id.kind == "unit" {
        daemon_reload(host)?;
    }
    Ok(())
}

/// Writes the record after an apply: every selected declared resource that is there now
/// (a declared `state: absent` leaves nothing to remember), what was not selected as it
/// was, and the undeclared ones not removed. The environment is the run's when it
/// succeeded, else the one recorded before. Only resources the run changed (`touched`) are
/// looked at again: an untouched one is where it was, which keeps a no-op apply of a
/// large catalog from walking every path once more. An unchanged record is not rewritten.
#[allow(clippy::too_many_arguments)]
pub fn update_after_apply(
    host: &Host,
    model: &Model,
    previous: Option<&Record>,
    captured: Vec<Managed>,
    forget: &HashSet<ResourceId>,
    touched: &HashSet<ResourceId>,
    environment: Option<String>,
    succeeded: bool,
    run: &str,
) -> Result<(), EngineError> {
    let accounts = host.accounts()?;
    let mut by_id: BTreeMap<ResourceId, (Managed, bool)> = previous
        .map(|r| {
            r.resources
                .iter()
                .map(|m| (m.id.clone(), (m.clone(), true)))
                .collect()
        })
        .unwrap_or_default();
    for m in captured {
        by_id.entry(m.id.clone()).or_insert((m, false));
    }
    let mut drop_saved = Vec::new();
    let catalog = &model.loaded.catalog;
    let handed_over: HashSet<&ResourceId> = match previous {
        Some(p) if not_declared(model, p).iter().any(|m| m.path.is_some()) => {
            let paths = declared_paths(model);
            not_declared(model, p)
                .into_iter()
                .filter(|m| m.path.as_deref().is_some_and(|x| paths.contains(x)))
                .map(|m| &m.id)
                .collect()
        }
        _ => HashSet::new(),
    };
    let keep = |id: &ResourceId, m: &Managed, recorded: bool| -> bool {
        if forget.contains(id) || handed_over.contains(id) {
            return false;
        }
        let Some(i) = catalog.index_of(id) else {
            return true;
        };
        if !model.selected.get(i).copied().unwrap_or(true) {
            return true;
        }
        if !touched.contains(id) {
            return recorded || m.existed;
        }
        if accounts_kind(&id.kind) {
            if id.kind == "user" {
                accounts.user(&id.name).is_some()
            } else {
                accounts.group(&id.name).is_some()
            }
        } else {
            match catalog.resources[i].managed_path() {
                Some(p) => !matches!(host.lstat(p), Ok(None)),
                None => true,
            }
        }
    };
    let mut resources = Vec::new();
    for (id, (mut m, recorded)) in by_id {
        if keep(&id, &m, recorded) {
            if let Some(i) = catalog.index_of(&id) {
                m.secret = catalog.resources[i].meta().secret;
            }
            resources.push(m);
        } else if let Some(name) = m.original.as_ref().and_then(|o| o.saved.clone()) {
            drop_saved.push(name);
        }
    }
    // A saved original another entry took over stays.
    let referenced: HashSet<&str> = resources
        .iter()
        .filter_map(|m| m.original.as_ref().and_then(|o| o.saved.as_deref()))
        .collect();
    drop_saved.retain(|name| !referenced.contains(name.as_str()));
    let environment = if succeeded {
        environment
    } else {
        previous.and_then(|r| r.environment.clone())
    };
    let same = previous.is_some_and(|p| p.environment == environment && p.resources == resources);
    if !same {
        write(
            host,
            &Record {
                format: RECORD_FORMAT.into(),
                version: RECORD_VERSION,
                environment,
                run: Some(run.to_string()),
                resources,
            },
        )?;
    }
    for name in drop_saved {
        host.remove(&original_path(&name))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn managed(id: &str, path: Option<&str>) -> Managed {
        Managed {
            id: ResourceId::parse(id).unwrap_or_else(|| ResourceId::new("file", id)),
            path: path.map(str::to_string),
            existed: false,
            original: None,
            secret: false,
        }
    }

    #[test]
    fn removals_are_built_by_the_kinds_own_decoders() {
        let user = kind_removal(&managed("user[carol]", None));
        assert_eq!(
            user.as_ref().map(|r| r.id().to_string()).as_deref(),
            Some("user[carol]")
        );
        assert!(kind_removal(&managed("group[ops]", None)).is_some());
        let unit = kind_removal(&managed("unit[rc-clean.timer]", Some("/x")));
        assert!(unit.is_some_and(|u| u.managed_path().is_none()));
        // Drop-ins and templates have no state of their own.
        assert!(kind_removal(&managed("unit[a.service.d/x.conf]", None)).is_none());
        assert!(kind_removal(&managed("unit[getty@.service]", None)).is_none());
        // A name that is not valid for the kind builds nothing rather than something else.
        assert!(kind_removal(&managed("user[bad name\nstate: present]", None)).is_none());
    }

    #[test]
    fn units_go_first_files_before_their_directories_accounts_last() {
        let mut list = [
            managed("group[ops]", None),
            managed("directory[/a]", Some("/a")),
            managed("file[/a/b/c]", Some("/a/b/c")),
            managed("directory[/a/b]", Some("/a/b")),
            managed("user[u]", None),
            managed("unit[x.timer]", Some("/etc/systemd/system/x.timer")),
        ];
        list.sort_by_key(removal_rank);
        let order: Vec<String> = list.iter().map(|m| m.id.to_string()).collect();
        assert_eq!(
            order,
            [
                "unit[x.timer]",
                "file[/a/b/c]",
                "directory[/a/b]",
                "directory[/a]",
                "user[u]",
                "group[ops]"
            ]
        );
    }

    #[test]
    fn a_kinds_message_loses_the_place_of_the_made_up_declaration() {
        assert_eq!(
            kind_message(&format!(
                "{SYNTHESIZED}:1:1: field `state`: cannot remove group `ops`: it is a primary group"
            )),
            "cannot remove group `ops`: it is a primary group"
        );
        assert_eq!(kind_message(&format!("{SYNTHESIZED}:2:3: bad")), "bad");
        assert_eq!(kind_message("plain"), "plain");
    }

    #[test]
    fn settings_removed_values() {
        assert_eq!(Removed::parse("report"), Some(Removed::Report));
        assert_eq!(Removed::parse("remove"), Some(Removed::Remove));
        assert_eq!(Removed::parse("purge"), None);
        assert_eq!(Removed::default(), Removed::Report);
    }

    #[test]
    fn a_record_others_can_read_is_refused() -> Result<(), Box<dyn std::error::Error>> {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir()?;
        let host = Host::open(dir.path())?;
        assert!(read(&host)?.is_none());
        assert!(!dir.path().join("var").exists());
        write(
            &host,
            &Record {
                format: RECORD_FORMAT.into(),
                version: RECORD_VERSION,
                environment: Some("production".into()),
                ..Record::default()
            },
        )?;
        assert_eq!(
            read(&host)?.and_then(|r| r.environment).as_deref(),
            Some("production")
        );
        let file = dir.path().join(RECORD.trim_start_matches('/'));
        assert_eq!(
            std::fs::metadata(&file)?.permissions().mode() & 0o7777,
            0o600
        );
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644))?;
        let err = read(&host).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err.contains("0644"), "{err}");
        Ok(())
    }
}
