//! The resource abstraction and the registry of kinds.
//!
//! Adding a kind means one new file here and one line in [`KINDS`]: the file holds the
//! kind's decoder (manifest → typed spec), its read-only `plan` (observe, then a pure
//! diff) and its `apply`.
//!
//! Kinds never name each other: a resource says what it provides and what it needs
//! ([`Provide`], [`Need`]), the catalog indexes the providers once, and the graph
//! turns every need a declared resource provides into an automatic edge.

pub mod apt_source;
pub mod audit_rule;
pub mod contract;
pub mod directory;
pub mod file;
pub mod firewall;
pub mod group;
pub mod logrotate;
pub mod managed_file;
pub mod package;
pub mod perms;
pub mod symlink;
pub mod systemd_keys;
pub mod unit;
pub mod upgrade;
pub mod user;

use std::any::Any;
use std::fmt::Debug;

use crate::diag::{Diagnostic, Span};
use crate::host::accounts::Accounts;
use crate::host::{Host, HostError};
use crate::id::{IdMap, NameMap, ResourceId};
use crate::manifest::decode::{Decoder, Fields};
use crate::plan::Change;

/// Settings every kind accepts.
#[derive(Debug, Clone, Default)]
pub struct Meta {
    /// Where the entry starts (its kind key).
    pub span: Option<Span>,
    pub requires: Vec<(ResourceId, Span)>,
    pub before: Vec<(ResourceId, Span)>,
    pub notify: Vec<(ResourceId, Span)>,
    /// Never show content or values of this resource.
    pub secret: bool,
    pub tags: Vec<String>,
    /// Lint codes silenced for this resource (`allow: [R0003]`), see `crate::lint`.
    pub allow: Vec<(String, Span)>,
}

/// Something a declared resource makes exist on the target, which other resources
/// can need. Kinds meet through these, never through each other's ids or types: a
/// kind that provides paths or accounts (a package's files, its system users) gets
/// the edges from every resource that needs them without an edit to those kinds.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Provide {
    /// A filesystem object at this path, of any type.
    Path(String),
    /// A directory at this path (also provided as a `Path`).
    Directory(String),
    /// A user account, by name.
    Account(String),
    /// A group, by name.
    Group(String),
    /// A systemd unit, by its unit name (`x.service`).
    Unit(String),
    /// A Debian package, by name (and `(apt lists)`: what apt_source refreshes).
    Package(String),
    /// A regular file or symlink that a package puts at this path, as read from the
    /// target at load ([`Resource::target_provides`]): whatever manages the path
    /// comes after the package (see `graph::build`).
    PackagedPath(String),
}

/// How many kinds of [`Provide`] there are: the catalog keeps one index per kind.
const PROVIDE_KINDS: usize = 7;
const PATH: usize = 0;
const DIRECTORY: usize = 1;
const GROUP: usize = 3;
const PACKAGED_PATH: usize = 6;

impl Provide {
    fn key(&self) -> (usize, &str) {
        match self {
            Provide::Path(p) => (PATH, p),
            Provide::Directory(p) => (DIRECTORY, p),
            Provide::Account(n) => (2, n),
            Provide::Group(n) => (GROUP, n),
            Provide::Unit(n) => (4, n),
            Provide::Package(n) => (5, n),
            Provide::PackagedPath(p) => (PACKAGED_PATH, p),
        }
    }
}

/// What a resource needs before it can be applied; the engine turns each need that a
/// declared resource provides into an automatic edge. A need nobody declares (an
/// account that is only on the target) is no edge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Need {
    /// Exactly this capability.
    Exact(Provide),
    /// The nearest declared directory above this path (the directory the object is
    /// created in, or the closest one above it that something creates).
    DirectoryAbove(String),
    /// A resource named on purpose by its id (`restart_on`).
    Resource(ResourceId),
}

impl Need {
    pub fn path(p: impl Into<String>) -> Need {
        Need::Exact(Provide::Path(p.into()))
    }
    pub fn directory(p: impl Into<String>) -> Need {
        Need::Exact(Provide::Directory(p.into()))
    }
    pub fn account(n: impl Into<String>) -> Need {
        Need::Exact(Provide::Account(n.into()))
    }
    pub fn group(n: impl Into<String>) -> Need {
        Need::Exact(Provide::Group(n.into()))
    }
    pub fn unit(n: impl Into<String>) -> Need {
        Need::Exact(Provide::Unit(n.into()))
    }
}

#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum ResourceError {
    #[error(transparent)]
    Host(#[from] HostError),
    /// A tool a kind runs (a shadow tool, ...) exited with an error: which tool, the
    /// command line as shown (secrets redacted), the exit code (`None`: killed by a
    /// signal) and an excerpt of what it said.
    #[error("`{command}` failed: {}", tool_failure(*code, stderr))]
    Tool {
        tool: String,
        command: String,
        code: Option<i32>,
        stderr: String,
    },
    #[error("{0}")]
    Failed(String),
}

/// How a failed tool's exit reads in messages: "exit code 4: useradd: ...".
fn tool_failure(code: Option<i32>, said: &str) -> String {
    let how = match code {
        Some(c) => format!("exit code {c}"),
        None => "killed by a signal".to_string(),
    };
    if said.is_empty() {
        how
    } else {
        format!("{how}: {said}")
    }
}

/// At most [`EXCERPT`] bytes of a tool's output, cut at a character boundary.
pub fn excerpt(text: &str) -> String {
    if text.len() <= EXCERPT {
        return text.to_string();
    }
    let mut end = EXCERPT;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

/// How much of a failed tool's output an error keeps.
pub const EXCERPT: usize = 4096;

/// A declaration whose id an earlier one already has, and that earlier one's index.
pub type Repeated = (Box<dyn Resource>, usize);

/// How two declarations' paths conflict (see [`Catalog::path_conflicts`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathConflict {
    SamePath,
    /// The later one's path is below the earlier one's, which is not a directory.
    BelowNonDirectory,
}

/// Catalog indexes by the id of the resource there: the ids stay in the resources (a
/// map keyed by copies of them was the largest index of a 100,000-resource run).
#[derive(Default)]
struct IdIndex(hashbrown::HashTable<usize>);

fn id_hash(id: &ResourceId) -> u64 {
    use std::hash::BuildHasher;
    std::hash::BuildHasherDefault::<crate::id::IdHasher>::default().hash_one(id)
}

impl IdIndex {
    fn with_capacity(n: usize) -> IdIndex {
        IdIndex(hashbrown::HashTable::with_capacity(n))
    }

    fn get(&self, resources: &[Box<dyn Resource>], id: &ResourceId) -> Option<usize> {
        self.0
            .find(id_hash(id), |&i| {
                resources.get(i).is_some_and(|r| r.id() == id)
            })
            .copied()
    }

    /// Indexes `resources[i]`, which no other entry has the id of.
    fn insert_new(&mut self, resources: &[Box<dyn Resource>], i: usize) {
        if let Some(r) = resources.get(i) {
            self.0.insert_unique(id_hash(r.id()), i, |&k| {
                resources.get(k).map_or(0, |r| id_hash(r.id()))
            });
        }
    }
}

/// All declared resources by id, for cross-resource checks and lookups.
pub struct Catalog {
    pub resources: Vec<Box<dyn Resource>>,
    index: IdIndex,
    /// Resources declared by module calls, by their id without the call's prefix
    /// (`user[x]` for `svc[a]/user[x]`): what a kind means when it asks whether a
    /// user, group or unit of that name is declared anywhere. Unique: the loader
    /// refuses two declarations of one unprefixed id.
    unscoped: IdMap<usize>,
    /// For each kind of [`Provide`], its names and the first resource providing each.
    providers: [NameMap<usize>; PROVIDE_KINDS],
    /// (later, first) pairs of resources providing the same path, found while
    /// indexing (asking every resource for its paths again cost an allocation each).
    same_paths: Vec<(usize, usize)>,
}

impl Catalog {
    pub fn new(resources: Vec<Box<dyn Resource>>) -> Catalog {
        Catalog::dedup(resources).0
    }

    /// The catalog of the first declaration of every id, and the later declarations
    /// that repeat one, each with the index of the first.
    pub fn dedup(resources: Vec<Box<dyn Resource>>) -> (Catalog, Vec<Repeated>) {
        let mut index = IdIndex::with_capacity(resources.len());
        let mut unscoped = IdMap::default();
        let mut unique = Vec::with_capacity(resources.len());
        let mut repeated = Vec::new();
        for r in resources {
            match index.get(&unique, r.id()) {
                Some(first) => repeated.push((r, first)),
                None => {
                    if r.id().scope.is_some() {
                        unscoped
                            .entry(r.id().in_scope(None))
                            .or_insert(unique.len());
                    }
                    unique.push(r);
                    index.insert_new(&unique, unique.len() - 1);
                }
            }
        }
        let mut providers: [NameMap<usize>; PROVIDE_KINDS] = Default::default();
        let mut same_paths = Vec::new();
        for (i, r) in unique.iter().enumerate() {
            for p in r.provides() {
                let (kind, name) = p.key();
                match providers[kind].get(name) {
                    Some(&first) if kind == PATH && first != i => same_paths.push((i, first)),
                    Some(_) => {}
                    None => {
                        providers[kind].insert(name.to_string(), i);
                    }
                }
            }
        }
        (
            Catalog {
                resources: unique,
                index,
                unscoped,
                providers,
                same_paths,
            },
            repeated,
        )
    }

    /// Declarations whose paths cannot both hold, as (later, earlier, how) catalog
    /// indexes: two kinds on one path would undo each other on every run (a file
    /// replaced by a symlink replaced by a file...), and nothing can live below a
    /// path that is declared as a file, symlink or unit file.
    pub fn path_conflicts(&self) -> Vec<(usize, usize, PathConflict)> {
        let mut conflicts: Vec<(usize, usize, PathConflict)> = self
            .same_paths
            .iter()
            .map(|&(i, j)| (i, j, PathConflict::SamePath))
            .collect();
        // Each path once, with its first provider: a later one on the same path is
        // already a conflict above.
        let mut below: Vec<(usize, usize, PathConflict)> = self.providers[PATH]
            .iter()
            .filter_map(|(path, &i)| {
                let j = crate::manifest::decode::ancestors(path).find_map(|a| {
                    let j = self.provider(PATH, a)?;
                    (self.provider(DIRECTORY, a) != Some(j)).then_some(j)
                })?;
                Some((i, j, PathConflict::BelowNonDirectory))
            })
            .collect();
        // The map's order is not the declarations': report in declaration order.
        below.sort_unstable_by_key(|&(i, j, _)| (i, j));
        conflicts.append(&mut below);
        conflicts
    }

    /// Adds what resource `i` provides according to the target (read once at load,
    /// [`Resource::target_provides`]) to the provider index; the first provider of
    /// a name keeps it, as with [`Resource::provides`].
    pub fn add_target_provides(&mut self, i: usize, provides: Vec<Provide>) {
        for p in provides {
            let (kind, name) = p.key();
            if !self.providers[kind].contains_key(name) {
                self.providers[kind].insert(name.to_string(), i);
            }
        }
    }

    /// Whether any declared resource provides a packaged path: without one, the
    /// graph looks up no managed path.
    pub fn has_packaged_paths(&self) -> bool {
        !self.providers[PACKAGED_PATH].is_empty()
    }

    fn provider(&self, kind: usize, name: &str) -> Option<usize> {
        self.providers[kind].get(name).copied()
    }

    /// The first declared resource that provides `p`.
    pub fn provider_of(&self, p: &Provide) -> Option<usize> {
        let (kind, name) = p.key();
        self.provider(kind, name)
    }

    /// The declared resource that meets `need`, if any.
    pub fn provider_for(&self, need: &Need) -> Option<usize> {
        match need {
            Need::Exact(p) => self.provider_of(p),
            Need::DirectoryAbove(path) => self.directory_above(path),
            Need::Resource(id) => self.index_of(id),
        }
    }

    /// The declared groups, by name, with the resource providing each, in declaration
    /// order.
    pub fn groups(&self) -> Vec<(&String, &dyn Resource)> {
        let mut out: Vec<(&String, usize)> =
            self.providers[GROUP].iter().map(|(n, &i)| (n, i)).collect();
        out.sort_by_key(|&(_, i)| i);
        out.into_iter()
            .map(|(n, i)| (n, self.resources[i].as_ref()))
            .collect()
    }

    /// Whether a declared resource provides a directory at `path`.
    pub fn declares_directory(&self, path: &str) -> bool {
        self.provider(DIRECTORY, path).is_some()
    }

    /// The nearest declared directory strictly above `path`.
    pub fn directory_above(&self, path: &str) -> Option<usize> {
        crate::manifest::decode::ancestors(path).find_map(|a| self.provider(DIRECTORY, a))
    }

    pub fn get(&self, id: &ResourceId) -> Option<&dyn Resource> {
        self.index_of(id).map(|i| self.resources[i].as_ref())
    }

    /// The resource `id` names: exactly, else (for an id written inside a module
    /// call, `a[x]/b[y]/file[/p]`) the same id in the scopes around it, outwards,
    /// and finally a module's resource by its unprefixed id.
    pub fn index_of(&self, id: &ResourceId) -> Option<usize> {
        if let Some(i) = self.index.get(&self.resources, id) {
            return Some(i);
        }
        if self.unscoped.is_empty() && id.scope.is_none() {
            return None;
        }
        let mut scope = id.scope.as_deref();
        while let Some(s) = scope {
            scope = s.rfind("]/").map(|i| &s[..=i]);
            let outer = id.in_scope(scope.map(std::sync::Arc::from));
            if let Some(i) = self.index.get(&self.resources, &outer) {
                return Some(i);
            }
        }
        self.unscoped.get(&id.in_scope(None)).copied()
    }

    pub fn contains(&self, id: &ResourceId) -> bool {
        self.index_of(id).is_some()
    }

    /// The typed spec of a declared resource, if it is of kind `T`.
    pub fn typed<T: 'static>(&self, id: &ResourceId) -> Option<&T> {
        self.get(id).and_then(|r| r.as_any().downcast_ref::<T>())
    }

    pub fn len(&self) -> usize {
        self.resources.len()
    }

    pub fn is_empty(&self) -> bool {
        self.resources.is_empty()
    }
}

/// What a resource may look at while planning: the host (read-only), the target's
/// accounts as they are now, and everything else that is declared.
pub struct PlanCtx<'a> {
    pub host: &'a Host,
    pub accounts: &'a Accounts,
    pub catalog: &'a Catalog,
    pub purpose: Purpose,
}

/// What the engine plans for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Purpose {
    /// `reconcile plan`: everything, with diffs and every validation.
    Plan,
    /// `reconcile check`: drift only. Validations of declared content that is
    /// already in place (systemd's verify and exposure score, a few processes per
    /// unit) are skipped: they ran when that content was planned and written.
    Check,
    /// `reconcile apply`: like a plan, without keeping diffs (apply shows the diff of
    /// what it does, observed again right before acting).
    Apply,
}

/// What a resource may use while applying.
pub struct ApplyCtx<'a> {
    pub host: &'a Host,
    pub catalog: &'a Catalog,
    /// Where a kind records decisions of its own into the run's audit trail (the
    /// guarded upgrade's guard results, a firewall's confirm or revert): each becomes
    /// a `decision` record naming the resource, in the same hash chain.
    pub events: EventSink<'a>,
}

/// See [`ApplyCtx::events`]: the resource, the decision's name, its details. Details
/// must never hold values of a `secret: true` resource.
pub type EventSink<'a> = &'a (dyn Fn(&ResourceId, &str, serde_json::Value) + Sync);

/// For runs with no audit trail to write to (removals record their own outcomes).
pub fn no_events(_: &ResourceId, _: &str, _: serde_json::Value) {}

impl ApplyCtx<'_> {
    /// Records a decision of `id`'s kind in the audit trail.
    pub fn record(&self, id: &ResourceId, decision: &str, details: serde_json::Value) {
        (self.events)(id, decision, details);
    }
}

pub trait Resource: Send + Sync + Debug + Any {
    fn id(&self) -> &ResourceId;

    fn meta(&self) -> &Meta;

    /// What this resource makes exist, for others to need (see [`Provide`]).
    fn provides(&self) -> Vec<Provide> {
        Vec::new()
    }

    /// What this resource provides according to the target as it is, read once at
    /// load before the graph is built (host access read-only): a package's files,
    /// from dpkg's lists or the package file apt would install. Most kinds know
    /// everything from the manifest and keep the default (nothing, no read). The
    /// catalog lets a kind ask one query for all its resources.
    fn target_provides(&self, _host: &Host, _catalog: &Catalog) -> Vec<Provide> {
        Vec::new()
    }

    /// What must be in place first: each one a declared resource provides becomes an
    /// automatic edge (parent directory, owner, the program a unit runs, ...).
    fn needs(&self) -> Vec<Need> {
        Vec::new()
    }

    /// Declared `state: absent`: the resource removes what it would provide.
    fn removes(&self) -> bool {
        false
    }

    /// For a resource that provides a group: the gid it gives it, if it says.
    fn group_gid(&self) -> Option<u32> {
        None
    }

    /// For a resource that provides a group: the exact member list it decides, with
    /// where it is declared, if it decides one.
    fn group_members(&self) -> Option<(&[String], &Span)> {
        None
    }

    /// Checks against the other declared resources, before anything is observed.
    fn validate(&self, _catalog: &Catalog) -> Vec<Diagnostic> {
        Vec::new()
    }

    /// Observes (read-only) and diffs in one call, with no dependency view: the change
    /// that would make the target match the spec; `Action::None` when in sync.
    fn plan(&self, ctx: &PlanCtx) -> Result<Change, ResourceError> {
        let state = self.observe_state(ctx)?;
        self.diff_state(state, &contract::DepView::none())
    }

    /// The read-only half of planning, run in parallel for all resources; a kind
    /// forwards it to [`contract::observe`] (`crate::on_the_contract!()`).
    fn observe_state(&self, ctx: &PlanCtx) -> Result<contract::State, ResourceError>;

    /// The pure half, run in dependency order with what the dependencies do; a kind
    /// forwards it to [`contract::diff`].
    fn diff_state(
        &self,
        state: contract::State,
        deps: &contract::DepView,
    ) -> Result<Change, ResourceError>;

    /// Carries out a planned change. Must be safe to call only when `change` was just
    /// produced by `plan` against the same host.
    fn apply(&self, ctx: &ApplyCtx, change: &Change) -> Result<(), ResourceError>;

    /// The target path this resource manages, if it is a filesystem object.
    fn managed_path(&self) -> Option<&str> {
        None
    }

    /// Owner and group names (or ids) this resource gives its path, if any.
    fn owners(&self) -> (Option<&str>, Option<&str>) {
        (None, None)
    }

    /// Whether `notify` from another resource means something for this one.
    fn refreshable(&self) -> bool {
        false
    }

    /// Reacts to a notification (restart, reload) when this resource itself did not
    /// already do so while converging.
    fn refresh(&self, _ctx: &ApplyCtx) -> Result<(), ResourceError> {
        Ok(())
    }

    fn as_any(&self) -> &dyn Any;
}

/// Decodes one manifest entry of a kind into a resource; problems go to the decoder.
pub type DecodeFn =
    fn(&mut Decoder, name: (String, Span), meta: Meta, &mut Fields) -> Option<Box<dyn Resource>>;

/// A batch step a kind needs once for several of its resources (systemd's
/// daemon-reload after unit files are written; to come: one `apt-get update`, one
/// package transaction, one `augenrules --load`).
///
/// The executor inserts it as a node of the run: a changed resource of the kind whose
/// dependencies converged joins the pending batch instead of being applied (with its
/// planned change when its dependencies changed nothing, else with a fresh one); when
/// nothing else can make progress, [`Flush::run`] is called once for the members
/// pending, then each member is observed again and diffed with what the step did for
/// it ([`contract::DepView::staged`]) and applied, and only then do its dependents
/// run. What the step did lives in the executor for that run, never in the resource.
/// A member whose dependency failed never joins (its file is never written); a
/// failing step fails only the members it was run for.
pub struct Flush {
    /// What the step is, for messages: "systemd daemon-reload".
    pub step: &'static str,
    /// The step, for the members pending: one result per member, in order, carrying
    /// what it did for that member (an error of the shared part fails every member;
    /// a member's own part fails only it).
    pub run: FlushFn,
}

pub type FlushFn =
    fn(&ApplyCtx, &[(&dyn Resource, &Change)]) -> Vec<Result<contract::Staged, ResourceError>>;

pub struct Kind {
    pub name: &'static str,
    pub decode: DecodeFn,
    pub flush: Option<Flush>,
}

/// The registry: one line per kind.
pub const KINDS: &[Kind] = &[
    Kind {
        name: "file",
        decode: file::decode,
        flush: None,
    },
    Kind {
        name: "directory",
        decode: directory::decode,
        flush: None,
    },
    Kind {
        name: "symlink",
        decode: symlink::decode,
        flush: None,
    },
    Kind {
        name: "unit",
        decode: unit::decode,
        flush: Some(Flush {
            step: "systemd daemon-reload",
            run: unit::flush,
        }),
    },
    Kind {
        name: "user",
        decode: user::decode,
        flush: None,
    },
    Kind {
        name: "group",
        decode: group::decode,
        flush: None,
    },
    Kind {
        name: "firewall",
        decode: firewall::decode,
        flush: None,
    },
    Kind {
        name: "apt_source",
        decode: apt_source::decode,
        flush: Some(Flush {
            step: "apt-get update",
            run: apt_source::flush,
        }),
    },
    Kind {
        name: "package",
        decode: package::decode,
        flush: Some(Flush {
            step: "apt-get transaction",
            run: package::flush,
        }),
    },
    Kind {
        name: "logrotate",
        decode: logrotate::decode,
        flush: None,
    },
    Kind {
        name: "audit_rule",
        decode: audit_rule::decode,
        flush: Some(Flush {
            step: "augenrules --load",
            run: audit_rule::flush,
        }),
    },
    Kind {
        name: "upgrade",
        decode: upgrade::decode,
        flush: None,
    },
];

pub fn kind(name: &str) -> Option<&'static Kind> {
    KINDS.iter().find(|k| k.name == name)
}

/// `state: present|absent`, shared by every kind that can be removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Ensure {
    #[default]
    Present,
    Absent,
}

impl Ensure {
    pub fn decode(d: &mut Decoder, f: &mut Fields) -> Ensure {
        match f.string(d, "state") {
            None => Ensure::Present,
            Some((s, _)) if s == "present" => Ensure::Present,
            Some((s, _)) if s == "absent" => Ensure::Absent,
            Some((s, span)) => {
                d.error(
                    &span,
                    "state",
                    format!("`{s}` is not a state; use present or absent"),
                );
                Ensure::Present
            }
        }
    }
}

/// Automatic edge to the nearest declared ancestor directory.
pub fn parent_dir_need(path: &str) -> Need {
    Need::DirectoryAbove(path.to_string())
}

/// True when an ancestor of `path` is a symlink today that a declared `directory`
/// will replace (the runbook's symlink-to-copy): below it, nothing exists yet.
fn under_replaced_symlink(ctx: &PlanCtx, path: &str) -> bool {
    crate::manifest::decode::ancestors(path).any(|a| {
        ctx.catalog.declares_directory(a)
            && matches!(ctx.host.lstat(a), Ok(Some(st)) if st.kind == crate::host::FileKind::Symlink)
    })
}

/// Observes `path`, treating it as absent when a declared directory will replace a
/// symlinked ancestor first (the walk refuses the symlink, rightly, until then).
pub fn observe_below_declared<T>(
    ctx: &PlanCtx,
    path: &str,
    observed: Result<Option<T>, HostError>,
) -> Result<Option<T>, ResourceError> {
    match observed {
        Err(HostError::Unsafe { .. }) if under_replaced_symlink(ctx, path) => Ok(None),
        other => Ok(other?),
    }
}

/// Missing parents that no declared directory resource will create: shown as implied.
pub fn implied_parents(ctx: &PlanCtx, path: &str) -> Result<Vec<String>, ResourceError> {
    let missing = match ctx.host.missing_parents(path) {
        Err(HostError::Unsafe { .. }) if under_replaced_symlink(ctx, path) => Vec::new(),
        other => other?,
    };
    Ok(missing
        .into_iter()
        .filter(|p| {
            let declared_here_or_above = std::iter::once(p.as_str())
                .chain(crate::manifest::decode::ancestors(p))
                .any(|a| ctx.catalog.declares_directory(a));
            !declared_here_or_above
        })
        .map(|p| format!("directory {p} (root:root 0755)"))
        .collect())
}
