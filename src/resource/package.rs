//! `package`: Debian packages installed (at a version, or the latest), removed or
//! purged, held or not. See docs/packages.md.
//!
//! - Observe reads dpkg's status database under the root (parsed once per run,
//!   [`Apt::status`]); candidate versions come from ONE `apt-cache policy` for every
//!   name of the run that needs one (a package not installed, `latest`, a `version:`
//!   not met), and the plan's exact transaction (with the packages apt pulls in)
//!   from ONE `apt-get -s` for the run's whole request. A host whose packages are in
//!   place, with no `latest`, spawns nothing.
//! - Every changed package resource joins the kind's batch step ([`flush`]): one
//!   `apt-get install` for all of them (`name=version`, `name-`), with holds lifted
//!   before and set after. The resource is then observed again and reports what the
//!   step did ([`Done`], through [`DepView::staged`]).
//! - A package apt does not know, or a version it does not offer, is a plan-time
//!   error; so is changing a held package without `hold: false`. A dpkg run left
//!   half-way (half-configured, half-installed) is reported in the plan, never
//!   repaired here (`dpkg --configure -a` is the guarded upgrade's decision).

use std::any::Any;
use std::collections::{BTreeSet, HashMap};
use std::sync::OnceLock;
use std::time::Duration;

use crate::diag::{Diagnostic, Span};
use crate::host::apt::{Apt, Simulation, DEFAULT_LOCK_TIMEOUT};
use crate::host::parse::apt::{Policy, SimOp};
use crate::host::parse::dpkg::{
    compare_versions, is_glob, list_leaves, version_matches, PkgState, Status, Want,
};
use crate::host::{Host, HostError};
use crate::id::ResourceId;
use crate::manifest::decode::{Decoder, Fields};
use crate::plan::{fingerprint, Action, Change};

use super::contract::{Contract, DepView, Diff, Staged};
use super::{ApplyCtx, Catalog, Meta, Need, PlanCtx, Provide, Resource, ResourceError};

/// What every package resource needs first: the apt lists that `apt_source`
/// resources refresh (a name no Debian package can have).
pub const APT_LISTS: &str = "(apt lists)";

/// The version a plan shows for a package that comes from a source added in the
/// same run.
const AFTER_UPDATE: &str = "(the candidate after apt-get update)";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ensure {
    Present,
    /// Present at apt's candidate version.
    Latest,
    Absent,
    /// Absent, configuration files too.
    Purged,
}

impl Ensure {
    fn installed(self) -> bool {
        matches!(self, Ensure::Present | Ensure::Latest)
    }

    fn word(self) -> &'static str {
        match self {
            Ensure::Present => "present",
            Ensure::Latest => "latest",
            Ensure::Absent => "absent",
            Ensure::Purged => "purged",
        }
    }
}

#[derive(Debug)]
pub struct Package {
    pub id: ResourceId,
    pub meta: Meta,
    pub names: Vec<String>,
    /// Where the names are written.
    pub span: Span,
    pub ensure: Ensure,
    /// An exact version or a glob (`3.0.*`), with where it is written.
    pub version: Option<(String, Span)>,
    /// `Some(true)`: held (`apt-mark hold`); `Some(false)`: not held; `None`: left as is.
    pub hold: Option<bool>,
    pub install_recommends: bool,
    /// How long a change waits for another dpkg frontend to finish.
    pub lock_timeout: Duration,
    /// The names whose files could not be known at load (not installed, and no
    /// package file on this machine): set once by [`Resource::target_provides`],
    /// shown as a plan note.
    pub files_unknown: OnceLock<Vec<String>>,
}

/// Debian package names (policy 5.6.1), optionally `:arch`.
fn name_problem(name: &str) -> Option<String> {
    let (base, arch) = match name.split_once(':') {
        Some((b, a)) => (b, Some(a)),
        None => (name, None),
    };
    let ok_base = base.len() >= 2
        && base
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        && base
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"+-.".contains(&b));
    let ok_arch = arch
        .is_none_or(|a| !a.is_empty() && a.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'));
    (!(ok_base && ok_arch)).then(|| {
        format!(
            "`{name}` is not a Debian package name (lowercase letters, digits, + - ., at least two characters, optionally :ARCH)"
        )
    })
}

pub fn decode(
    d: &mut Decoder,
    name: (String, Span),
    meta: Meta,
    f: &mut Fields,
) -> Option<Box<dyn Resource>> {
    let (raw, span) = name;
    let names: Vec<String> = raw.split(", ").map(|n| n.trim().to_string()).collect();
    let mut ok = true;
    let mut seen = BTreeSet::new();
    for n in &names {
        if let Some(p) = name_problem(n) {
            d.error(&span, "package", p);
            ok = false;
        } else if !seen.insert(n.as_str()) {
            d.error(&span, "package", format!("`{n}` is named twice"));
            ok = false;
        }
    }
    let ensure = match f.string(d, "state") {
        None => Ensure::Present,
        Some((s, sp)) => match s.as_str() {
            "present" => Ensure::Present,
            "latest" => Ensure::Latest,
            "absent" => Ensure::Absent,
            "purged" => Ensure::Purged,
            other => {
                d.error(
                    &sp,
                    "state",
                    format!("`{other}` is not a state; use present, latest, absent or purged"),
                );
                ok = false;
                Ensure::Present
            }
        },
    };
    let version = f.string(d, "version");
    if let Some((v, sp)) = &version {
        if !ensure.installed() || ensure == Ensure::Latest {
            d.error(
                sp,
                "version",
                format!(
                    "`version:` with `state: {}` means nothing; a version is for `state: present`",
                    ensure.word()
                ),
            );
            ok = false;
        } else if v.trim().is_empty() || v.contains(char::is_whitespace) {
            d.error(sp, "version", "a version has no spaces and is not empty");
            ok = false;
        }
    }
    let hold = f.bool(d, "hold");
    if hold == Some(true) && !ensure.installed() {
        let sp = f.span.clone();
        d.error(
            &sp,
            "hold",
            format!(
                "`hold: true` with `state: {}`: a removed package cannot be held",
                ensure.word()
            ),
        );
        ok = false;
    }
    let install_recommends = f.bool(d, "install_recommends").unwrap_or(false);
    let lock_timeout = f
        .u32(d, "lock_timeout")
        .map(|s| Duration::from_secs(u64::from(s)))
        .unwrap_or(DEFAULT_LOCK_TIMEOUT);
    if !ok {
        return None;
    }
    Some(Box::new(Package {
        id: ResourceId::new("package", raw.clone()),
        meta,
        names,
        span,
        ensure,
        version,
        hold,
        install_recommends,
        lock_timeout,
        files_unknown: OnceLock::new(),
    }))
}

impl Resource for Package {
    fn id(&self) -> &ResourceId {
        &self.id
    }

    fn meta(&self) -> &Meta {
        &self.meta
    }

    fn provides(&self) -> Vec<Provide> {
        if !self.ensure.installed() {
            return Vec::new();
        }
        self.names
            .iter()
            .map(|n| Provide::Package(n.clone()))
            .collect()
    }

    fn needs(&self) -> Vec<Need> {
        vec![Need::Exact(Provide::Package(APT_LISTS.to_string()))]
    }

    /// The regular files and symlinks this resource's packages put on disk: from
    /// dpkg's list for an installed one, else from its candidate's package file when
    /// that is on this machine (a `file:` source, apt's download cache). A package
    /// to remove provides nothing. What cannot be read gives no edge (and a note).
    fn target_provides(&self, host: &Host, catalog: &Catalog) -> Vec<Provide> {
        if !self.ensure.installed() {
            return Vec::new();
        }
        let found = packaged_files(&Apt::new(host), &self.names, |status| {
            uninstalled(catalog, status)
        });
        let (paths, unknown) = match found {
            Ok(found) => found,
            Err(e) => {
                tracing::debug!(resource = %self.id, error = %e, "the package's files could not be read");
                (Vec::new(), self.names.clone())
            }
        };
        let _ = self.files_unknown.set(unknown);
        paths.into_iter().map(Provide::PackagedPath).collect()
    }

    fn removes(&self) -> bool {
        !self.ensure.installed()
    }

    fn validate(&self, catalog: &Catalog) -> Vec<Diagnostic> {
        let mut out = Vec::new();
        for other in catalog
            .resources
            .iter()
            .filter_map(|r| r.as_any().downcast_ref::<Package>())
        {
            if other.id == self.id {
                // Only declarations before this one: each pair is reported once.
                break;
            }
            for n in self.names.iter().filter(|n| other.names.contains(n)) {
                let clash = if self.ensure.installed() != other.ensure.installed() {
                    Some(format!(
                        "package `{n}` is {} here and {} in {}",
                        self.ensure.word(),
                        other.ensure.word(),
                        other.id
                    ))
                } else if self.version.as_ref().map(|v| &v.0)
                    != other.version.as_ref().map(|v| &v.0)
                    || self.hold != other.hold
                    || self.ensure != other.ensure
                {
                    Some(format!(
                        "package `{n}` is also declared by {}, with another state, version or hold",
                        other.id
                    ))
                } else {
                    None
                };
                if let Some(msg) = clash {
                    let mut d = Diagnostic::error(Some(self.span.clone()), msg).field("package");
                    if let Some(p) = &other.meta.span {
                        d = d.related(p.clone(), "also declared here");
                    }
                    out.push(d);
                }
            }
        }
        out
    }

    crate::on_the_contract!();

    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// One named package as observed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    pub name: String,
    pub state: PkgState,
    /// The installed version, when its files are on disk.
    pub version: Option<String>,
    pub held: bool,
    /// The version to install, when one must be: resolved from apt's lists.
    pub target: Option<String>,
    /// Why no version could be resolved (unknown package, version not offered): a
    /// plan error, unless the lists are refreshed in this run first.
    pub unresolved: Option<String>,
}

/// What observing found for one resource.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Observed {
    pub packages: Vec<Seen>,
    /// Packages an earlier dpkg run left half-way, with their state.
    pub interrupted: Vec<(String, &'static str)>,
    /// What apt would also do in this run's transaction, for packages no resource
    /// names (dependencies pulled in, packages removed with ours): shown by the first
    /// changing package resource.
    pub extras: Vec<SimOp>,
    /// apt's refusal of the run's simulated transaction.
    pub refused: Option<String>,
    /// The declared resources that refresh the apt lists (`apt_source`s), when a
    /// name could not be resolved: when one of them changes in this run, versions
    /// are known only after it (their one `apt-get update` runs before any package).
    pub lists: Vec<ResourceId>,
    /// Names whose files were unknown at load ([`Package::files_unknown`]).
    pub files_unknown: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    Install {
        name: String,
        version: String,
    },
    /// An installed package moved to another version (upgrade or downgrade).
    Change {
        name: String,
        from: String,
        to: String,
    },
    Remove {
        name: String,
        version: String,
    },
    /// Removed with its configuration files; `from` is its version or `config-files`.
    Purge {
        name: String,
        from: String,
        installed: bool,
    },
    Hold {
        name: String,
    },
    Unhold {
        name: String,
    },
    /// Marks a change the batch step carried out already (apply does nothing more).
    Flushed,
}

impl Op {
    fn name(&self) -> Option<&str> {
        match self {
            Op::Install { name, .. }
            | Op::Change { name, .. }
            | Op::Remove { name, .. }
            | Op::Purge { name, .. }
            | Op::Hold { name }
            | Op::Unhold { name } => Some(name),
            Op::Flushed => None,
        }
    }
}

/// What the batch step did for one member: the operations, as planned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Done {
    pub ops: Vec<Op>,
}

/// What a resource asks of the run's transaction, before apt is asked: per name, the
/// version wanted (when a lookup is needed) or the removal.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Ask {
    /// In sync as far as dpkg's database says.
    Nothing,
    /// A candidate version is needed from apt's lists.
    Lookup,
    Remove,
    Purge,
}

impl Package {
    /// What the database alone says each name needs.
    fn asks(&self, status: &Status) -> Vec<Ask> {
        self.names
            .iter()
            .map(|n| {
                let e = status.find(n);
                let state = e.map_or(PkgState::NotInstalled, |e| e.state);
                let installed = state == PkgState::Installed;
                let version = e.and_then(|e| e.version.as_deref());
                match self.ensure {
                    Ensure::Absent if state.has_files() => Ask::Remove,
                    Ensure::Purged if state != PkgState::NotInstalled => Ask::Purge,
                    Ensure::Absent | Ensure::Purged => Ask::Nothing,
                    Ensure::Latest => Ask::Lookup,
                    Ensure::Present => match (&self.version, installed, version) {
                        (_, false, _) => Ask::Lookup,
                        (None, true, _) => Ask::Nothing,
                        (Some((want, _)), true, Some(v)) if version_matches(want, v) => {
                            Ask::Nothing
                        }
                        (Some(_), true, _) => Ask::Lookup,
                    },
                }
            })
            .collect()
    }

    /// The version to install for `name` from its policy, or why there is none.
    fn resolve(&self, name: &str, policy: Option<&Policy>) -> Result<String, String> {
        let Some(p) = policy.filter(|p| !p.versions.is_empty()) else {
            return Err(format!(
                "package `{name}` is not offered by any apt source (apt-cache policy knows no version of it); nothing was installed"
            ));
        };
        match &self.version {
            None => p.candidate.clone().ok_or_else(|| {
                format!("package `{name}` has no installable candidate version; nothing was installed")
            }),
            Some((want, _)) if !is_glob(want) => {
                if p.versions.iter().any(|v| v == want) {
                    Ok(want.clone())
                } else {
                    Err(format!(
                        "version {want} of package `{name}` is not offered (apt offers {}); nothing was installed",
                        p.versions.join(", ")
                    ))
                }
            }
            Some((want, _)) => p
                .versions
                .iter()
                .filter(|v| version_matches(want, v))
                .max_by(|a, b| compare_versions(a, b))
                .cloned()
                .ok_or_else(|| {
                    format!(
                        "no version of package `{name}` matches {want} (apt offers {}); nothing was installed",
                        p.versions.join(", ")
                    )
                }),
        }
    }

    fn failed(&self, msg: impl std::fmt::Display) -> ResourceError {
        ResourceError::Failed(format!("{}: {msg}", self.span))
    }
}

/// The package resources of the catalog, in declaration order.
/// The regular files and symlinks of `names` (see [`Package::target_provides`]),
/// and the names to install whose files cannot be known yet. `uninstalled`: every
/// name of the run to install, asked of apt in one query (cached for the run).
fn packaged_files(
    apt: &Apt,
    names: &[String],
    uninstalled: impl FnOnce(&Status) -> Vec<String>,
) -> Result<(Vec<String>, Vec<String>), HostError> {
    let status = apt.status()?;
    let mut paths = Vec::new();
    let mut missing = Vec::new();
    let base = |n: &str| n.split(':').next().unwrap_or(n).to_string();
    for n in names {
        match status.find(n).filter(|e| e.state.has_files()) {
            Some(e) => match apt.package_files(&base(n), &e.arch)? {
                Some(list) => {
                    let refs: Vec<&str> = list.iter().map(String::as_str).collect();
                    paths.extend(list_leaves(&refs).into_iter().map(str::to_string));
                }
                // Installed without a list (a damaged or copied database): its
                // files are on disk already, nothing to install, nothing to say.
                None => tracing::debug!(package = %n, "installed, but dpkg lists no files"),
            },
            None => missing.push(n.clone()),
        }
    }
    let mut unknown = Vec::new();
    if !missing.is_empty() {
        let debs = apt.candidate_debs(&uninstalled(&status))?;
        for n in missing {
            let contents = match debs.iter().find(|d| d.name == base(&n)) {
                Some(deb) => apt.deb_contents(deb)?,
                None => None,
            };
            match contents {
                Some(members) => {
                    paths.extend(members.into_iter().filter(|m| !m.directory).map(|m| m.path))
                }
                None => unknown.push(n),
            }
        }
    }
    Ok((paths, unknown))
}

/// Every name a package resource of the run installs that has no files on the
/// target yet, sorted (the same query for every resource).
fn uninstalled(catalog: &Catalog, status: &Status) -> Vec<String> {
    let names: BTreeSet<String> = package_resources(catalog)
        .filter(|p| p.ensure.installed())
        .flat_map(|p| p.names.iter())
        .filter(|n| !status.find(n).is_some_and(|e| e.state.has_files()))
        .cloned()
        .collect();
    names.into_iter().collect()
}

fn package_resources(catalog: &Catalog) -> impl Iterator<Item = &Package> {
    catalog
        .resources
        .iter()
        .filter_map(|r| r.as_any().downcast_ref::<Package>())
}

/// The names of the whole run that need apt's candidate versions, sorted.
fn lookups(catalog: &Catalog, status: &Status) -> Vec<String> {
    let mut names = BTreeSet::new();
    for p in package_resources(catalog) {
        for (n, a) in p.names.iter().zip(p.asks(status)) {
            if a == Ask::Lookup {
                names.insert(n.clone());
            }
        }
    }
    names.into_iter().collect()
}

/// One resource's part of the run's transaction: `apt-get install` arguments
/// (`name=version`, `name-`) and whether removals in it are purges.
fn request_of(
    p: &Package,
    status: &Status,
    policy: &HashMap<String, Policy>,
) -> Vec<(String, bool)> {
    let mut out = Vec::new();
    for (n, a) in p.names.iter().zip(p.asks(status)) {
        match a {
            Ask::Nothing => {}
            Ask::Lookup => {
                if let Ok(v) = p.resolve(n, policy.get(n)) {
                    let current = status
                        .find(n)
                        .filter(|e| e.state == PkgState::Installed)
                        .and_then(|e| e.version.clone());
                    if current.as_deref() != Some(v.as_str()) {
                        out.push((format!("{n}={v}"), false));
                    }
                }
            }
            Ask::Remove => out.push((format!("{n}-"), false)),
            Ask::Purge => {
                if status.find(n).is_some_and(|e| e.state.has_files()) {
                    out.push((format!("{n}-"), true));
                }
            }
        }
    }
    out
}

impl Contract for Package {
    type State = Observed;
    type Op = Op;

    fn observe(&self, ctx: &PlanCtx) -> Result<Observed, ResourceError> {
        let apt = Apt::new(ctx.host);
        let status = apt.status()?;
        let asks = self.asks(&status);
        let policy = if asks.contains(&Ask::Lookup) {
            apt.policy(&lookups(ctx.catalog, &status))?
        } else {
            Default::default()
        };
        let mut packages = Vec::with_capacity(self.names.len());
        for (n, a) in self.names.iter().zip(&asks) {
            let e = status.find(n);
            let state = e.map_or(PkgState::NotInstalled, |e| e.state);
            let (target, unresolved) = match a {
                Ask::Lookup => match self.resolve(n, policy.get(n)) {
                    Ok(v) => (Some(v), None),
                    Err(m) => (None, Some(m)),
                },
                _ => (None, None),
            };
            packages.push(Seen {
                name: n.clone(),
                state,
                version: e
                    .filter(|e| e.state.has_files())
                    .and_then(|e| e.version.clone()),
                held: e.is_some_and(|e| e.want == Want::Hold),
                target,
                unresolved,
            });
        }
        let interrupted = status
            .interrupted()
            .iter()
            .map(|e| (e.name.clone(), e.state.word()))
            .collect();
        let mut observed = Observed {
            packages,
            interrupted,
            extras: Vec::new(),
            refused: None,
            lists: Vec::new(),
            files_unknown: self.files_unknown.get().cloned().unwrap_or_default(),
        };
        // The run's transaction, simulated once, when this resource changes packages;
        // its extras are shown by the first resource that changes any.
        let changes = |o: &Observed, p: &Package| {
            p.diff(o, &DepView::none())
                .map(|d| {
                    d.ops
                        .iter()
                        .any(|op| !matches!(op, Op::Hold { .. } | Op::Unhold { .. }))
                })
                .unwrap_or(false)
        };
        if changes(&observed, self) {
            // Every resource's versions (the one policy query of the run), so that the
            // simulation is the whole run's and all resources agree on which shows it.
            let policy = if policy.is_empty() {
                apt.policy(&lookups(ctx.catalog, &status))?
            } else {
                policy
            };
            let mut args = Vec::new();
            let mut named = BTreeSet::new();
            let mut first = None;
            let mut purge = false;
            let mut plain_remove = false;
            for p in package_resources(ctx.catalog) {
                let req = request_of(p, &status, &policy);
                if !req.is_empty() && first.is_none() {
                    first = Some(p.id.clone());
                }
                for (a, is_purge) in req {
                    purge |= is_purge;
                    plain_remove |= !is_purge && a.ends_with('-');
                    args.push(a);
                }
                named.extend(p.names.iter().cloned());
            }
            if first.as_ref() == Some(&self.id) && !args.is_empty() {
                match &*apt.simulate(&args, purge && !plain_remove)? {
                    Simulation::Steps(steps) => {
                        observed.extras = steps
                            .iter()
                            .filter(|s| !matches!(s, SimOp::Conf { .. }))
                            .filter(|s| !named.contains(s.name()))
                            .cloned()
                            .collect();
                    }
                    Simulation::Refused { errors } => {
                        observed.refused = Some(format!(
                            "apt refuses this run's transaction (apt-get -s install {}): {}; nothing was installed",
                            args.join(" "),
                            errors.join("; ")
                        ))
                    }
                }
            }
        }
        if observed.refused.is_some() || observed.packages.iter().any(|p| p.unresolved.is_some()) {
            let lists = Provide::Package(APT_LISTS.to_string());
            observed.lists = ctx
                .catalog
                .resources
                .iter()
                .filter(|r| r.provides().contains(&lists))
                .map(|r| r.id().clone())
                .collect();
        }
        Ok(observed)
    }

    fn diff(&self, o: &Observed, deps: &DepView) -> Result<Diff<Op>, ResourceError> {
        let live: Vec<String> = o
            .packages
            .iter()
            .map(|s| format!("{} {:?} {:?} {}", s.name, s.state, s.version, s.held))
            .collect();
        let mut d = Diff::new(
            fingerprint(live.iter().map(String::as_bytes)),
            fingerprint([
                self.names.join(",").as_bytes(),
                self.ensure.word().as_bytes(),
                self.version
                    .as_ref()
                    .map_or("", |v| v.0.as_str())
                    .as_bytes(),
                format!("{:?}", self.hold).as_bytes(),
            ]),
        );
        let done = deps.staged().and_then(|s| s.get::<Done>());
        // An apt_source changes in this run: apt's lists are refreshed before this
        // resource acts, so what they lack now is no error yet.
        let lists_change = o.lists.iter().any(|id| deps.changes(id));
        if let (Some(why), false) = (&o.refused, lists_change) {
            return Err(self.failed(why));
        }
        let mut ops = Vec::new();
        for s in &o.packages {
            if let Some(why) = &s.unresolved {
                if !lists_change {
                    return Err(self.failed(why));
                }
                ops.push(Op::Install {
                    name: s.name.clone(),
                    version: AFTER_UPDATE.into(),
                });
                continue;
            }
            let wants_change = match self.ensure {
                Ensure::Absent | Ensure::Purged => s.state.has_files(),
                _ => s.target.as_deref().is_some_and(|t| {
                    s.state != PkgState::Installed || s.version.as_deref() != Some(t)
                }),
            };
            // A hold protects a package from changes: lifting it is the manifest's
            // decision (`hold: false`), never a side effect.
            if s.held && wants_change && self.hold != Some(false) {
                return Err(self.failed(format!(
                    "package `{}` is held (apt-mark hold) at {}; changing it needs `hold: false` in the manifest",
                    s.name,
                    s.version.as_deref().unwrap_or("no version")
                )));
            }
            let unhold = s.held && self.hold == Some(false);
            if unhold {
                ops.push(Op::Unhold {
                    name: s.name.clone(),
                });
            }
            match self.ensure {
                Ensure::Absent if s.state.has_files() => ops.push(Op::Remove {
                    name: s.name.clone(),
                    version: s.version.clone().unwrap_or_default(),
                }),
                Ensure::Purged if s.state != PkgState::NotInstalled => ops.push(Op::Purge {
                    name: s.name.clone(),
                    from: s
                        .version
                        .clone()
                        .unwrap_or_else(|| s.state.word().to_string()),
                    installed: s.state.has_files(),
                }),
                Ensure::Absent | Ensure::Purged => {}
                Ensure::Present | Ensure::Latest => {
                    if let Some(t) = s.target.as_ref().filter(|_| wants_change) {
                        match (&s.version, s.state.has_files()) {
                            (Some(v), true) if v != t => ops.push(Op::Change {
                                name: s.name.clone(),
                                from: v.clone(),
                                to: t.clone(),
                            }),
                            _ => ops.push(Op::Install {
                                name: s.name.clone(),
                                version: t.clone(),
                            }),
                        }
                    }
                    if self.hold == Some(true) && !s.held {
                        ops.push(Op::Hold {
                            name: s.name.clone(),
                        });
                    }
                }
            }
        }
        if let Some(done) = done {
            // The batch step did these already; anything still to do means the
            // transaction did not leave what it said it would.
            let mut all = done.ops.clone();
            all.push(Op::Flushed);
            all.extend(ops);
            ops = all;
        }
        let action = action_of(&ops);
        if action != Action::None {
            d.action = action;
        }
        d.ops = ops;
        if d.action != Action::None {
            for e in &o.extras {
                d.implied.push(match e {
                    SimOp::Inst {
                        name,
                        from: None,
                        to,
                    } => format!("package {name} ({to}), pulled in by apt"),
                    SimOp::Inst {
                        name,
                        from: Some(f),
                        to,
                    } => format!("package {name} {f} → {to}, changed by apt"),
                    SimOp::Remv { name, .. } => format!("package {name} removed by apt"),
                    SimOp::Purg { name, .. } => format!("package {name} purged by apt"),
                    SimOp::Conf { name, .. } => format!("package {name} configured by apt"),
                });
            }
        }
        for n in &o.files_unknown {
            if d.ops
                .iter()
                .any(|op| matches!(op, Op::Install { name, .. } if name == n))
            {
                d.notes.push(format!(
                    "the files of package {n} cannot be known before it is installed (no package file of it on this machine): \
                     nothing declared gets an automatic edge from it; give a resource that manages one of its files `requires: [{}]`",
                    self.id
                ));
            }
        }
        for (n, state) in &o.interrupted {
            d.warnings.push(format!(
                "dpkg left package {n} {state} (an earlier run was interrupted or a maintainer script failed); \
                 the next apt transaction tries to finish it; `dpkg --configure -a` is not run here"
            ));
        }
        Ok(d)
    }

    fn describe(&self, op: &Op, change: &mut Change) {
        match op {
            Op::Install { name, version } => {
                change.field(name.clone(), None, Some(version.clone()))
            }
            Op::Change { name, from, to } => {
                change.field(name.clone(), Some(from.clone()), Some(to.clone()))
            }
            Op::Remove { name, version } => change.field(name.clone(), Some(version.clone()), None),
            Op::Purge { name, from, .. } => {
                change.field(name.clone(), Some(from.clone()), Some("purged".into()))
            }
            Op::Hold { name } => change.field(
                format!("{name} hold"),
                Some("no".into()),
                Some("yes".into()),
            ),
            Op::Unhold { name } => change.field(
                format!("{name} hold"),
                Some("yes".into()),
                Some("no".into()),
            ),
            Op::Flushed => {}
        }
    }

    fn apply_ops(&self, ops: &[Op], ctx: &ApplyCtx) -> Result<(), ResourceError> {
        if let Some(at) = ops.iter().position(|o| *o == Op::Flushed) {
            let left: Vec<String> = ops[at + 1..]
                .iter()
                .filter_map(|o| o.name().map(|n| format!("{n} ({o:?})")))
                .collect();
            if left.is_empty() {
                return Ok(());
            }
            return Err(ResourceError::Failed(format!(
                "apt-get finished, but these are still not as declared: {}",
                left.join(", ")
            )));
        }
        // Applied on its own (not through the batch step): the same transaction, for
        // this resource alone.
        run_transaction(ctx, &[(self, ops)])
    }
}

/// The action a list of operations amounts to.
fn action_of(ops: &[Op]) -> Action {
    let real: Vec<&Op> = ops.iter().filter(|o| **o != Op::Flushed).collect();
    if real.is_empty() {
        return Action::None;
    }
    if real
        .iter()
        .all(|o| matches!(o, Op::Install { .. } | Op::Hold { .. }))
        && real.iter().any(|o| matches!(o, Op::Install { .. }))
    {
        Action::Create
    } else if real
        .iter()
        .all(|o| matches!(o, Op::Remove { .. } | Op::Purge { .. } | Op::Unhold { .. }))
        && real
            .iter()
            .any(|o| matches!(o, Op::Remove { .. } | Op::Purge { .. }))
    {
        Action::Delete
    } else {
        Action::Update
    }
}

/// The `apt-get install` arguments for a set of members' operations, the names to
/// purge with dpkg afterwards, holds to lift before and to set after, and whether
/// removals in the transaction are purges.
#[derive(Debug, Default, PartialEq, Eq)]
struct Transaction {
    args: Vec<String>,
    purge_flag: bool,
    purge_after: Vec<String>,
    unhold: Vec<String>,
    hold: Vec<String>,
    recommends: bool,
}

fn transaction(members: &[(&Package, &[Op])]) -> Transaction {
    let mut t = Transaction {
        recommends: !members.is_empty() && members.iter().all(|(p, _)| p.install_recommends),
        ..Transaction::default()
    };
    let plain_remove = members
        .iter()
        .flat_map(|(_, ops)| ops.iter())
        .any(|o| matches!(o, Op::Remove { .. }));
    t.purge_flag = !plain_remove;
    for (_, ops) in members {
        for op in ops.iter() {
            match op {
                Op::Install { name, version }
                | Op::Change {
                    name, to: version, ..
                } => t.args.push(format!("{name}={version}")),
                Op::Remove { name, .. } => t.args.push(format!("{name}-")),
                Op::Purge {
                    name,
                    installed: true,
                    ..
                } if t.purge_flag => t.args.push(format!("{name}-")),
                Op::Purge {
                    name, installed, ..
                } => {
                    if *installed {
                        t.args.push(format!("{name}-"));
                    }
                    t.purge_after.push(name.clone());
                }
                Op::Hold { name } => t.hold.push(name.clone()),
                Op::Unhold { name } => t.unhold.push(name.clone()),
                Op::Flushed => {}
            }
        }
    }
    if t.args.is_empty() {
        t.purge_flag = false;
    }
    t
}

/// Runs one transaction for `members`: holds lifted, ONE `apt-get install`, dpkg
/// purges of what apt only removed, holds set.
fn run_transaction(ctx: &ApplyCtx, members: &[(&Package, &[Op])]) -> Result<(), ResourceError> {
    let apt = Apt::new(ctx.host);
    let t = transaction(members);
    let timeout = members
        .iter()
        .map(|(p, _)| p.lock_timeout)
        .max()
        .unwrap_or(DEFAULT_LOCK_TIMEOUT);
    apt.mark("unhold", &t.unhold, timeout)?;
    if !t.args.is_empty() {
        let mut args = vec!["install".to_string(), "--allow-downgrades".to_string()];
        if !t.recommends {
            args.push("--no-install-recommends".into());
        }
        if t.purge_flag {
            args.push("--purge".into());
        }
        args.extend(t.args.iter().cloned());
        apt.get(&args, timeout)?;
    }
    apt.purge_removed(&t.purge_after, timeout)?;
    apt.mark("hold", &t.hold, timeout)?;
    // The transaction as run, in the audit trail of each member.
    for (p, _) in members {
        ctx.record(
            &p.id,
            "apt-transaction",
            serde_json::json!({
                "install": t.args,
                "purge": t.purge_flag,
                "dpkg_purge": t.purge_after,
                "unhold": t.unhold,
                "hold": t.hold,
            }),
        );
    }
    Ok(())
}

/// The kind's batch step (see [`crate::resource::Flush`]): one apt transaction for
/// every pending member. A failure fails every member (apt's transaction is one).
pub fn flush(
    ctx: &ApplyCtx,
    items: &[(&dyn Resource, &Change)],
) -> Vec<Result<Staged, ResourceError>> {
    let mut members: Vec<(&Package, &[Op])> = Vec::new();
    for (r, c) in items {
        if let (Some(p), Some(ops)) = (r.as_any().downcast_ref::<Package>(), c.ops.get::<Op>()) {
            members.push((p, ops));
        }
    }
    let result = run_transaction(ctx, &members);
    items
        .iter()
        .map(|(r, c)| match &result {
            Err(e) => Err(ResourceError::Failed(format!(
                "the apt transaction failed: {e}"
            ))),
            Ok(()) => match (r.as_any().downcast_ref::<Package>(), c.ops.get::<Op>()) {
                (Some(_), Some(ops)) => Ok(Staged::new(Done {
                    ops: ops.iter().filter(|o| **o != Op::Flushed).cloned().collect(),
                })),
                _ => Ok(Staged::nothing()),
            },
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn span() -> Span {
        Span {
            file: "site.yaml".into(),
            line: 3,
            column: 5,
        }
    }

    fn pkg(names: &[&str], ensure: Ensure, version: Option<&str>, hold: Option<bool>) -> Package {
        Package {
            id: ResourceId::new("package", names.join(", ")),
            meta: Meta::default(),
            names: names.iter().map(|s| s.to_string()).collect(),
            span: span(),
            ensure,
            version: version.map(|v| (v.to_string(), span())),
            hold,
            install_recommends: false,
            lock_timeout: DEFAULT_LOCK_TIMEOUT,
            files_unknown: OnceLock::new(),
        }
    }

    fn seen(
        name: &str,
        state: PkgState,
        version: Option<&str>,
        held: bool,
        target: Option<&str>,
    ) -> Seen {
        Seen {
            name: name.into(),
            state,
            version: version.map(str::to_string),
            held,
            target: target.map(str::to_string),
            unresolved: None,
        }
    }

    fn diff(p: &Package, s: Vec<Seen>) -> Result<Vec<Op>, String> {
        let o = Observed {
            packages: s,
            ..Observed::default()
        };
        p.diff(&o, &DepView::none())
            .map(|d| d.ops)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn the_diff_installs_changes_removes_purges_and_holds_as_declared() {
        use PkgState::*;
        let install = |n: &str, v: &str| Op::Install {
            name: n.into(),
            version: v.into(),
        };
        type Case = (Package, Vec<Seen>, Result<Vec<Op>, &'static str>);
        let cases: Vec<Case> = vec![
            // Not installed: installed at the resolved version.
            (
                pkg(&["demo-a"], Ensure::Present, None, None),
                vec![seen("demo-a", NotInstalled, None, false, Some("1.1"))],
                Ok(vec![install("demo-a", "1.1")]),
            ),
            // Installed, no version asked: nothing.
            (
                pkg(&["demo-a"], Ensure::Present, None, None),
                vec![seen("demo-a", Installed, Some("1.0"), false, None)],
                Ok(vec![]),
            ),
            // A pinned version below the installed one: a downgrade.
            (
                pkg(&["demo-a"], Ensure::Present, Some("1.0"), None),
                vec![seen("demo-a", Installed, Some("1.1"), false, Some("1.0"))],
                Ok(vec![Op::Change {
                    name: "demo-a".into(),
                    from: "1.1".into(),
                    to: "1.0".into(),
                }]),
            ),
            // Removed but configured files left: reinstalled.
            (
                pkg(&["demo-c"], Ensure::Present, None, None),
                vec![seen("demo-c", ConfigFiles, None, false, Some("1.0"))],
                Ok(vec![install("demo-c", "1.0")]),
            ),
            // Half-configured at the wanted version: apt finishes it.
            (
                pkg(&["demo-b"], Ensure::Present, None, None),
                vec![seen(
                    "demo-b",
                    HalfConfigured,
                    Some("1.0"),
                    false,
                    Some("1.0"),
                )],
                Ok(vec![install("demo-b", "1.0")]),
            ),
            (
                pkg(&["demo-c"], Ensure::Absent, None, None),
                vec![seen("demo-c", Installed, Some("1.0"), false, None)],
                Ok(vec![Op::Remove {
                    name: "demo-c".into(),
                    version: "1.0".into(),
                }]),
            ),
            // Absent and already only config files: nothing.
            (
                pkg(&["demo-c"], Ensure::Absent, None, None),
                vec![seen("demo-c", ConfigFiles, None, false, None)],
                Ok(vec![]),
            ),
            (
                pkg(&["demo-c"], Ensure::Purged, None, None),
                vec![seen("demo-c", ConfigFiles, None, false, None)],
                Ok(vec![Op::Purge {
                    name: "demo-c".into(),
                    from: "config-files".into(),
                    installed: false,
                }]),
            ),
            (
                pkg(&["demo-d"], Ensure::Present, Some("1.0"), Some(true)),
                vec![seen("demo-d", NotInstalled, None, false, Some("1.0"))],
                Ok(vec![
                    install("demo-d", "1.0"),
                    Op::Hold {
                        name: "demo-d".into(),
                    },
                ]),
            ),
            // Held and asked for another version without `hold: false`: refused.
            (
                pkg(&["demo-d"], Ensure::Present, Some("1.1"), Some(true)),
                vec![seen("demo-d", Installed, Some("1.0"), true, Some("1.1"))],
                Err("needs `hold: false`"),
            ),
            (
                pkg(&["demo-d"], Ensure::Present, Some("1.1"), Some(false)),
                vec![seen("demo-d", Installed, Some("1.0"), true, Some("1.1"))],
                Ok(vec![
                    Op::Unhold {
                        name: "demo-d".into(),
                    },
                    Op::Change {
                        name: "demo-d".into(),
                        from: "1.0".into(),
                        to: "1.1".into(),
                    },
                ]),
            ),
            // Held and in place: nothing.
            (
                pkg(&["demo-d"], Ensure::Present, Some("1.0"), Some(true)),
                vec![seen("demo-d", Installed, Some("1.0"), true, None)],
                Ok(vec![]),
            ),
            (
                pkg(&["demo-a", "demo-b"], Ensure::Latest, None, None),
                vec![
                    seen("demo-a", Installed, Some("1.0"), false, Some("1.1")),
                    seen("demo-b", Installed, Some("1.0"), false, Some("1.0")),
                ],
                Ok(vec![Op::Change {
                    name: "demo-a".into(),
                    from: "1.0".into(),
                    to: "1.1".into(),
                }]),
            ),
        ];
        for (p, s, want) in cases {
            let label = format!("{:?} {:?}", p.ensure, s);
            match (diff(&p, s), want) {
                (Ok(got), Ok(want)) => assert_eq!(got, want, "{label}"),
                (Err(e), Err(msg)) => {
                    assert!(e.contains(msg) && e.contains("site.yaml:3:5"), "{e}")
                }
                (got, want) => panic!("{label}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn an_unknown_package_is_an_error_unless_a_source_changes_first_in_this_run() {
        let p = pkg(&["demo-z"], Ensure::Present, None, None);
        let source = ResourceId::new("apt_source", "demo".to_string());
        let o = Observed {
            packages: vec![Seen {
                unresolved: Some("package `demo-z` is not offered by any apt source".into()),
                ..seen("demo-z", PkgState::NotInstalled, None, false, None)
            }],
            lists: vec![source.clone()],
            ..Observed::default()
        };
        let e = p.diff(&o, &DepView::none()).err().map(|e| e.to_string());
        assert!(
            e.as_deref()
                .is_some_and(|e| e.contains("site.yaml:3:5") && e.contains("demo-z")),
            "{e:?}"
        );
        let changing = |id: &ResourceId| Some(*id == source);
        let d = p
            .diff(&o, &DepView::new(&changing))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            d.ops,
            vec![Op::Install {
                name: "demo-z".into(),
                version: AFTER_UPDATE.into()
            }]
        );
        assert_eq!(d.action, Action::Create);
    }

    #[test]
    fn after_the_batch_step_the_change_reports_what_it_did_and_apply_does_nothing_more() {
        let p = pkg(&["demo-a"], Ensure::Present, None, None);
        let done = Done {
            ops: vec![Op::Install {
                name: "demo-a".into(),
                version: "1.1".into(),
            }],
        };
        let staged = Staged::new(done.clone());
        let o = Observed {
            packages: vec![seen(
                "demo-a",
                PkgState::Installed,
                Some("1.1"),
                false,
                None,
            )],
            ..Observed::default()
        };
        let d = p
            .diff(&o, &DepView::none().after_step(&staged))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(d.action, Action::Create);
        assert_eq!(d.ops, vec![done.ops[0].clone(), Op::Flushed]);
    }

    #[test]
    fn versions_resolve_from_the_lists_or_refuse_naming_what_apt_offers() {
        let policy = Policy {
            installed: None,
            candidate: Some("3.0.17-1".into()),
            versions: vec!["3.0.17-1".into(), "3.0.9-1".into(), "2.9-1".into()],
            security: Vec::new(),
        };
        let r = |v: Option<&str>| {
            pkg(&["openssl"], Ensure::Present, v, None).resolve("openssl", Some(&policy))
        };
        assert_eq!(r(None), Ok("3.0.17-1".into()));
        assert_eq!(r(Some("3.0.9-1")), Ok("3.0.9-1".into()));
        assert_eq!(r(Some("3.0.*")), Ok("3.0.17-1".into()));
        assert!(r(Some("3.1")).is_err_and(|e| e.contains("not offered") && e.contains("3.0.9-1")));
        assert!(r(Some("4.*")).is_err_and(|e| e.contains("matches 4.*")));
        let unknown = pkg(&["nope"], Ensure::Present, None, None).resolve("nope", None);
        assert!(unknown.is_err_and(|e| e.contains("not offered by any apt source")));
    }

    #[test]
    fn one_transaction_carries_every_members_packages() {
        let a = pkg(&["demo-a", "demo-b"], Ensure::Present, None, None);
        let c = pkg(&["demo-c"], Ensure::Absent, None, None);
        let e = pkg(&["demo-e"], Ensure::Purged, None, None);
        let d = pkg(&["demo-d"], Ensure::Present, Some("1.0"), Some(true));
        let a_ops = vec![
            Op::Install {
                name: "demo-a".into(),
                version: "1.1".into(),
            },
            Op::Install {
                name: "demo-b".into(),
                version: "1.0".into(),
            },
        ];
        let c_ops = vec![Op::Remove {
            name: "demo-c".into(),
            version: "1.0".into(),
        }];
        let e_ops = vec![Op::Purge {
            name: "demo-e".into(),
            from: "1.0".into(),
            installed: true,
        }];
        let d_ops = vec![
            Op::Unhold {
                name: "demo-d".into(),
            },
            Op::Change {
                name: "demo-d".into(),
                from: "1.1".into(),
                to: "1.0".into(),
            },
            Op::Hold {
                name: "demo-d".into(),
            },
        ];
        let t = transaction(&[(&a, &a_ops), (&c, &c_ops), (&e, &e_ops), (&d, &d_ops)]);
        assert_eq!(
            t.args,
            vec![
                "demo-a=1.1",
                "demo-b=1.0",
                "demo-c-",
                "demo-e-",
                "demo-d=1.0"
            ]
        );
        // A plain removal in the same transaction: the purge is dpkg's, after.
        assert!(!t.purge_flag);
        assert_eq!(t.purge_after, vec!["demo-e"]);
        assert_eq!(
            (t.unhold.clone(), t.hold.clone()),
            (vec!["demo-d".to_string()], vec!["demo-d".to_string()])
        );
        // Purges alone go in the transaction with --purge.
        let t = transaction(&[(&e, &e_ops)]);
        assert!(t.purge_flag && t.purge_after.is_empty());
        assert_eq!(t.args, vec!["demo-e-"]);
    }

    #[test]
    fn plan_fields_read_as_version_changes() {
        let p = pkg(&["openssl"], Ensure::Present, None, None);
        let mut c = Change::new(p.id.clone(), false);
        p.describe(
            &Op::Change {
                name: "openssl".into(),
                from: "3.0.15-1".into(),
                to: "3.0.17-1".into(),
            },
            &mut c,
        );
        p.describe(
            &Op::Install {
                name: "auditd".into(),
                version: "1:3.4-1".into(),
            },
            &mut c,
        );
        let f: Vec<(&str, Option<&str>, Option<&str>)> = c
            .fields
            .iter()
            .map(|f| (&*f.field, f.before.as_deref(), f.after.as_deref()))
            .collect();
        assert_eq!(
            f,
            vec![
                ("openssl", Some("3.0.15-1"), Some("3.0.17-1")),
                ("auditd", None, Some("1:3.4-1"))
            ]
        );
    }

    #[test]
    fn a_package_to_install_whose_files_are_unknown_says_so_and_suggests_requires() {
        let p = pkg(&["demo-a", "demo-b"], Ensure::Present, None, None);
        let notes = |unknown: &[&str], a: PkgState| {
            let o = Observed {
                packages: vec![
                    seen("demo-a", a, None, false, Some("1.1")),
                    seen("demo-b", PkgState::Installed, Some("1.0"), false, None),
                ],
                files_unknown: unknown.iter().map(|s| s.to_string()).collect(),
                ..Observed::default()
            };
            p.diff(&o, &DepView::none())
                .map(|d| d.notes)
                .unwrap_or_else(|e| panic!("{e}"))
        };
        let got = notes(&["demo-a"], PkgState::NotInstalled);
        assert_eq!(got.len(), 1, "{got:?}");
        assert!(
            got[0].contains("package demo-a cannot be known before it is installed"),
            "{got:?}"
        );
        assert!(
            got[0].contains("requires: [package[demo-a, demo-b]]"),
            "{got:?}"
        );
        // Known files, or nothing to install: no note.
        assert!(notes(&[], PkgState::NotInstalled).is_empty());
        assert!(notes(&["demo-b"], PkgState::NotInstalled).is_empty());
    }

    #[test]
    fn names_are_debian_package_names() {
        assert!(name_problem("demo-a").is_none());
        assert!(name_problem("libc6:amd64").is_none());
        assert!(name_problem("g++").is_none());
        assert!(name_problem("Demo").is_some());
        assert!(name_problem("a").is_some());
        assert!(name_problem("a b").is_some());
    }
}
