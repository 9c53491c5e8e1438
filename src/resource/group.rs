//! The `group` kind: a local group of the target root, observed from its /etc/group
//! and /etc/gshadow and changed with `groupadd`/`groupmod`/`groupdel` (`--prefix`
//! when the root is not `/`), so locking and file formats stay the shadow tools' job.
//!
//! On the typed contract like `user`: observe → [`Observed`], a pure diff → [`Op`]s.
//!
//! Also holds what `user` shares with it: account names, running the tools, messages.

use std::any::Any;
use std::collections::BTreeSet;

use crate::diag::{Diagnostic, Span};
use crate::host::accounts::Accounts;
use crate::host::parse::shadow::{parse_gshadow, parse_login_defs, GshadowEntry, LoginDefs};
use crate::host::{Cmd, Host, HostError, Output};
use crate::id::ResourceId;
use crate::manifest::decode::{Decoder, Fields};
use crate::plan::{fingerprint, Action, Change};

use super::contract::{Contract, DepView, Diff};
use super::{ApplyCtx, Catalog, Ensure, Meta, Need, PlanCtx, Provide, Resource, ResourceError};

/// Longest name useradd/groupadd accept.
pub const MAX_NAME_LEN: usize = 32;

/// Checks a user or group name against useradd's portable rule
/// `[a-z_][a-z0-9_-]*[$]?`, at most 32 characters.
pub fn valid_account_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("the name is empty".into());
    }
    if name.len() > MAX_NAME_LEN {
        return Err(format!(
            "`{name}` is {} characters long; at most {MAX_NAME_LEN} are allowed",
            name.len()
        ));
    }
    let body = name.strip_suffix('$').unwrap_or(name);
    let mut chars = body.chars();
    let first_ok = matches!(chars.next(), Some(c) if c.is_ascii_lowercase() || c == '_');
    let rest_ok =
        chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
    if !first_ok || !rest_ok || body.is_empty() {
        return Err(format!(
            "`{name}` is not a valid account name: use lowercase letters, digits, `_` and `-`, \
             starting with a letter or `_` (an optional trailing `$` is allowed)"
        ));
    }
    Ok(())
}

/// Where a field was written, falling back to the entry itself.
pub(crate) fn field_span(fields: &mut Fields, key: &'static str) -> Option<Span> {
    fields.raw(key).map(|n| n.span.clone())
}

/// A list of account names from a field; each is validated.
pub(crate) fn decode_names(
    d: &mut Decoder,
    fields: &mut Fields,
    key: &'static str,
) -> Option<(Vec<String>, Span)> {
    let span = field_span(fields, key)?;
    let mut out = Vec::new();
    for (name, s) in fields.string_list(d, key) {
        match valid_account_name(&name) {
            Ok(()) => out.push(name),
            Err(msg) => d.error(&s, key, msg),
        }
    }
    Some((out, span))
}

/// The message for a problem found while planning: the manifest place and field first,
/// so the operator can jump to it.
pub(crate) fn at(span: &Span, field: &str, msg: impl std::fmt::Display) -> String {
    format!("{span}: field `{field}`: {msg}")
}

/// A shadow tool aimed at the target: `--prefix ROOT` unless the root is `/`, so the
/// tool reads and writes ROOT/etc (with its own /etc/.pwd.lock) and never the
/// machine's files or NSS.
pub(crate) fn shadow_tool(host: &Host, program: &str) -> Cmd {
    let cmd = Cmd::new(program);
    if host.is_machine_root() {
        cmd
    } else {
        cmd.arg("--prefix").arg(host.root().display().to_string())
    }
}

/// Serialises account changes within one run: the engine applies independent
/// resources in parallel, and two shadow tools racing for the same /etc/*.lock files
/// fail with "cannot lock /etc/group; try again later".
static TOOLS: std::sync::Mutex<()> = std::sync::Mutex::new(());

pub(crate) fn tools_lock() -> std::sync::MutexGuard<'static, ()> {
    TOOLS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Runs a shadow tool; a failure carries its stderr. `secrets` are replaced in the
/// command line and the output shown in the error, so a hash never reaches a log.
pub(crate) fn run_tool(cmd: &Cmd, secrets: &[&str]) -> Result<Output, ResourceError> {
    let redact = |text: String| {
        secrets
            .iter()
            .filter(|s| !s.is_empty())
            .fold(text, |t, s| t.replace(s, crate::plan::SENSITIVE))
    };
    let shown = {
        let mut c = cmd.clone();
        c.args = c.args.into_iter().map(redact).collect();
        c.stdin = None;
        c.display()
    };
    match cmd.run() {
        Ok(out) if out.success() => Ok(out),
        Ok(out) => Err(ResourceError::Tool {
            tool: cmd.program.clone(),
            command: shown,
            code: out.status,
            // What [`Output::reason`] shows: stderr, else stdout.
            stderr: super::excerpt(&redact(
                if out.stderr.trim().is_empty() {
                    out.stdout.trim()
                } else {
                    out.stderr.trim()
                }
                .to_string(),
            )),
        }),
        Err(HostError::Command { reason, .. }) => Err(ResourceError::Host(HostError::Command {
            command: shown,
            reason: redact(reason),
        })),
        Err(e) => Err(ResourceError::Host(e)),
    }
}

/// A file of the target as text; `None` when it does not exist.
pub(crate) fn read_text(host: &Host, path: &str) -> Result<Option<String>, ResourceError> {
    Ok(host
        .read(path)?
        .and_then(|(_, c)| c)
        .map(|c| String::from_utf8_lossy(&c).into_owned()))
}

/// The target's login.defs (defaults when it has none).
pub(crate) fn read_login_defs(host: &Host) -> Result<LoginDefs, ResourceError> {
    Ok(parse_login_defs(
        &read_text(host, "/etc/login.defs")?.unwrap_or_default(),
    ))
}

/// Names joined for a plan line; an empty list reads `(none)`.
pub(crate) fn show_list<'a>(names: impl IntoIterator<Item = &'a String>) -> String {
    let sorted: BTreeSet<&String> = names.into_iter().collect();
    if sorted.is_empty() {
        return "(none)".into();
    }
    sorted
        .into_iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .join(",")
}

/// Managed paths whose resource gives them this owner (`user == true`) or group, as
/// the catalog declares them; these keep the old numeric id when an id changes.
pub(crate) fn owned_paths(catalog: &Catalog, name: &str, old_id: u32, user: bool) -> Vec<String> {
    let old = old_id.to_string();
    let mut paths: Vec<String> = catalog
        .resources
        .iter()
        .filter_map(|r| {
            let (owner, group) = r.owners();
            let who = if user { owner } else { group }?;
            let path = r.managed_path()?;
            (who == name || who == old).then(|| path.to_string())
        })
        .collect();
    paths.sort();
    paths.dedup();
    paths
}

/// The warning shown when a uid or gid changes.
pub(crate) fn id_change_warning(
    what: &str,
    name: &str,
    old: u32,
    new: u32,
    paths: &[String],
) -> String {
    let listed = if paths.is_empty() {
        "no managed path names it as owner".to_string()
    } else {
        format!(
            "managed paths affected (their own resources re-own them in this run): {}",
            paths.join(", ")
        )
    };
    let owner = if what == "uid" { "owner" } else { "group" };
    format!(
        "{what} of `{name}` changes {old} → {new}: existing files keep the old numeric {owner} {old} \
         (find them with `find / -{what} {old}`); {listed}"
    )
}

/// A `uid:`/`gid:` field. 4294967295 is `(uid_t)-1`, which chown(2) and the shadow
/// tools read as "leave unchanged": an account with it would never converge.
pub(crate) fn account_id(d: &mut Decoder, fields: &mut Fields, field: &'static str) -> Option<u32> {
    let id = fields.u32(d, field)?;
    if id == u32::MAX {
        if let Some(span) = field_span(fields, field) {
            d.error(
                &span,
                field,
                format!("{id} is (uid_t)-1, which the system reads as \"no id\"; choose another {field}"),
            );
        }
        return None;
    }
    Some(id)
}

#[derive(Debug)]
pub struct Group {
    id: ResourceId,
    meta: Meta,
    /// The entry's name value.
    span: Span,
    pub name: String,
    pub gid: Option<(u32, Span)>,
    pub system: bool,
    /// The exact member list, when managed.
    pub members: Option<(Vec<String>, Span)>,
    pub state: Ensure,
}

pub fn decode(
    d: &mut Decoder,
    name: (String, Span),
    meta: Meta,
    fields: &mut Fields,
) -> Option<Box<dyn Resource>> {
    let (name, span) = name;
    let gid_span = field_span(fields, "gid");
    let gid = account_id(d, fields, "gid").zip(gid_span);
    let system = fields.bool(d, "system").unwrap_or(false);
    let members = decode_names(d, fields, "members");
    let state = Ensure::decode(d, fields);
    if let Err(msg) = valid_account_name(&name) {
        d.error(&span, "group", msg);
        return None;
    }
    if state == Ensure::Absent {
        let ignored: Vec<&str> = [
            ("gid", gid.is_some()),
            ("members", members.is_some()),
            ("system", system),
        ]
        .iter()
        .filter(|(_, set)| *set)
        .map(|(k, _)| *k)
        .collect();
        if !ignored.is_empty() {
            d.warn(
                &span,
                "state",
                format!(
                    "`state: absent` removes the group; {} ignored",
                    ignored.join(", ")
                ),
            );
        }
    }
    Some(Box::new(Group {
        id: ResourceId::new("group", name.clone()),
        meta,
        span,
        name,
        gid,
        system,
        members,
        state,
    }))
}

impl Group {
    /// A user this group's removal waits for: declared absent and required by us.
    fn removed_first(&self, catalog: &Catalog, user: &str) -> bool {
        let Some(r) = declared_account(catalog, user) else {
            return false;
        };
        r.removes() && self.meta.requires.iter().any(|(id, _)| id == r.id())
    }

    fn desired_fingerprint(&self) -> String {
        let gid = self
            .gid
            .as_ref()
            .map(|(g, _)| g.to_string())
            .unwrap_or_default();
        let members = self
            .members
            .as_ref()
            .map(|(m, _)| show_list(m))
            .unwrap_or_else(|| "-".into());
        let state = format!("{:?}", self.state);
        fingerprint([
            self.name.as_bytes(),
            gid.as_bytes(),
            members.as_bytes(),
            state.as_bytes(),
            if self.system {
                b"s".as_slice()
            } else {
                b"-".as_slice()
            },
        ])
    }
}

fn declared_present_user(catalog: &Catalog, name: &str) -> bool {
    declared_account(catalog, name).is_some_and(|r| !r.removes())
}

/// The declared resource that provides the account `name`, whatever its kind.
fn declared_account<'c>(catalog: &'c Catalog, name: &str) -> Option<&'c dyn Resource> {
    let j = catalog.provider_for(&Need::account(name))?;
    Some(catalog.resources[j].as_ref())
}

pub(crate) fn finish<T>(diff: Diff<T>, errors: Vec<String>) -> Result<Diff<T>, ResourceError> {
    if errors.is_empty() {
        Ok(diff)
    } else {
        Err(ResourceError::Failed(errors.join("\n")))
    }
}

/// All declared groups, for cross-resource checks.
fn declared_groups(catalog: &Catalog) -> impl Iterator<Item = &Group> {
    catalog
        .resources
        .iter()
        .filter_map(|r| r.as_any().downcast_ref::<Group>())
}

impl Resource for Group {
    fn id(&self) -> &ResourceId {
        &self.id
    }

    fn meta(&self) -> &Meta {
        &self.meta
    }

    fn provides(&self) -> Vec<Provide> {
        vec![Provide::Group(self.name.clone())]
    }

    fn removes(&self) -> bool {
        self.state == Ensure::Absent
    }

    fn group_gid(&self) -> Option<u32> {
        self.gid.as_ref().map(|(g, _)| *g)
    }

    fn group_members(&self) -> Option<(&[String], &Span)> {
        self.members.as_ref().map(|(m, s)| (m.as_slice(), s))
    }

    // No `needs`: members are not edges, since a user may have this group as its
    // primary group, which would make a cycle. A member that does not exist yet is
    // added by its own user resource when it is created.

    fn validate(&self, catalog: &Catalog) -> Vec<Diagnostic> {
        let mut out = Vec::new();
        if self.state == Ensure::Absent {
            return out;
        }
        let me = catalog.index_of(&self.id);
        if let Some((gid, span)) = &self.gid {
            let earlier = declared_groups(catalog).find(|g| {
                g.state == Ensure::Present
                    && g.name != self.name
                    && g.gid.as_ref().is_some_and(|(o, _)| o == gid)
                    && catalog.index_of(&g.id) < me
            });
            if let Some(other) = earlier {
                let mut diag = Diagnostic::error(
                    Some(span.clone()),
                    format!("gid {gid} is also declared for group `{}`", other.name),
                )
                .field("gid");
                if let Some((_, s)) = &other.gid {
                    diag = diag.related(s.clone(), "declared here");
                }
                out.push(diag);
            }
        }
        if let Some((members, span)) = &self.members {
            for m in members {
                let absent = declared_account(catalog, m).is_some_and(|r| r.removes());
                if absent {
                    out.push(
                        Diagnostic::error(
                            Some(span.clone()),
                            format!("member `{m}` is declared `state: absent`"),
                        )
                        .field("members"),
                    );
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

/// What observing found for one group: the target's accounts, its gshadow (when the
/// members are managed) and login.defs, and what the other declarations say.
pub struct Observed {
    pub accounts: Accounts,
    /// The target's /etc/gshadow, when it has one and the members are managed.
    pub gshadow: Option<Vec<GshadowEntry>>,
    pub defs: LoginDefs,
    /// Users on the target whose primary group this is, that are declared absent and
    /// required by this group: removed before it.
    pub removed_first: BTreeSet<String>,
    /// Members that are declared as present users (created in this run if missing).
    pub declared_members: BTreeSet<String>,
    /// Managed paths that name the current gid as their group (for a gid change).
    pub owned_paths: Vec<String>,
}

impl Group {
    /// The declarations' part of the state: everything the diff needs from the
    /// catalog, so that the diff itself reads neither the host nor the catalog.
    pub(crate) fn observed(
        &self,
        accounts: Accounts,
        gshadow: Option<Vec<GshadowEntry>>,
        defs: LoginDefs,
        catalog: &Catalog,
    ) -> Observed {
        let live = accounts.group(&self.name);
        let removed_first = live
            .map(|g| {
                accounts
                    .users
                    .iter()
                    .filter(|u| u.gid == g.gid && self.removed_first(catalog, &u.name))
                    .map(|u| u.name.clone())
                    .collect()
            })
            .unwrap_or_default();
        let declared_members = self
            .members
            .iter()
            .flat_map(|(m, _)| m)
            .filter(|m| declared_present_user(catalog, m))
            .cloned()
            .collect();
        let owned_paths = match (live, &self.gid) {
            (Some(g), Some((new, _))) if g.gid != *new => {
                owned_paths(catalog, &self.name, g.gid, false)
            }
            _ => Vec::new(),
        };
        Observed {
            accounts,
            gshadow,
            defs,
            removed_first,
            declared_members,
            owned_paths,
        }
    }
}

/// One thing `groupadd`/`groupmod`/`usermod`/`groupdel` do for a group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// `groupadd`, then the declared members that exist join.
    Create {
        gid: Option<u32>,
        system: bool,
        members: Option<Vec<String>>,
    },
    SetGid {
        from: u32,
        to: u32,
    },
    /// The member list of /etc/group made exact (and gshadow with it).
    SetMembers {
        from: Vec<String>,
        to: Vec<String>,
    },
    /// /etc/group is right but /etc/gshadow drifted alone.
    SyncGshadow {
        from: Vec<String>,
        to: Vec<String>,
    },
    Delete {
        gid: u32,
    },
}

impl Contract for Group {
    type State = Observed;
    type Op = Op;

    fn observe(&self, ctx: &PlanCtx) -> Result<Observed, ResourceError> {
        let gshadow = match (&self.members, self.state) {
            (Some(_), Ensure::Present) => match read_text(ctx.host, "/etc/gshadow")? {
                Some(text) => Some(parse_gshadow(&text).map_err(|e| HostError::Path {
                    path: ctx.host.show("/etc/gshadow"),
                    reason: e.to_string(),
                })?),
                None => None,
            },
            _ => None,
        };
        let defs = read_login_defs(ctx.host)?;
        Ok(self.observed(ctx.accounts.clone(), gshadow, defs, ctx.catalog))
    }

    /// The desired group against the target's accounts (and gshadow, when the target
    /// has one) → the operations, or the problems that refuse them.
    fn diff(&self, o: &Observed, _deps: &DepView) -> Result<Diff<Op>, ResourceError> {
        let accounts = &o.accounts;
        let observed = accounts.group(&self.name);
        let live = match observed {
            Some(g) => {
                let members = show_list(&g.members);
                fingerprint([
                    g.name.as_bytes(),
                    g.gid.to_string().as_bytes(),
                    members.as_bytes(),
                ])
            }
            None => fingerprint([b"absent".as_slice()]),
        };
        let mut d = Diff::new(live, self.desired_fingerprint());
        let mut errors = Vec::new();

        if self.state == Ensure::Absent {
            if let Some(g) = observed {
                let primary_of: Vec<&str> = accounts
                    .users
                    .iter()
                    .filter(|u| u.gid == g.gid)
                    .map(|u| u.name.as_str())
                    .filter(|u| !o.removed_first.contains(*u))
                    .collect();
                if !primary_of.is_empty() {
                    errors.push(at(
                        &self.span,
                        "state",
                        format!(
                            "cannot remove group `{}`: it is the primary group of {} on the target; \
                             give those users another group, or declare them `state: absent` and \
                             add them to this group's `requires`",
                            self.name,
                            primary_of.join(", ")
                        ),
                    ));
                }
                d.op(Action::Delete, Op::Delete { gid: g.gid });
            }
            return finish(d, errors);
        }

        if let Some((gid, span)) = &self.gid {
            let taken: Vec<&str> = accounts
                .groups
                .iter()
                .filter(|g| g.gid == *gid && g.name != self.name)
                .map(|g| g.name.as_str())
                .collect();
            if !taken.is_empty() {
                errors.push(at(
                    span,
                    "gid",
                    format!(
                        "gid {gid} is already used by group `{}` on the target",
                        taken.join("`, `")
                    ),
                ));
            }
        }
        if let Some((members, span)) = &self.members {
            for m in members {
                if accounts.user(m).is_none() && !o.declared_members.contains(m) {
                    errors.push(at(
                        span,
                        "members",
                        format!(
                            "member `{m}` is neither an account on the target nor a declared user"
                        ),
                    ));
                }
            }
        }

        match observed {
            None => {
                if let Some((gid, span)) = &self.gid {
                    let (lo, hi) = o.defs.sys_gid_range();
                    if self.system && !(lo..=hi).contains(gid) {
                        d.warnings.push(format!(
                            "{span}: `system: true` but gid {gid} is outside the target's system range \
                             {lo}-{hi} (SYS_GID_MIN/SYS_GID_MAX in /etc/login.defs)"
                        ));
                    }
                } else {
                    d.notes.push("gid chosen by groupadd".into());
                }
                d.op(
                    Action::Create,
                    Op::Create {
                        gid: self.gid.as_ref().map(|(g, _)| *g),
                        system: self.system,
                        members: self.members.as_ref().map(|(m, _)| m.clone()),
                    },
                );
            }
            Some(g) => {
                if let Some((gid, _)) = &self.gid {
                    if g.gid != *gid {
                        d.op(
                            Action::Update,
                            Op::SetGid {
                                from: g.gid,
                                to: *gid,
                            },
                        );
                        d.warnings.push(id_change_warning(
                            "gid",
                            &self.name,
                            g.gid,
                            *gid,
                            &o.owned_paths,
                        ));
                    }
                }
                if let Some((members, _)) = &self.members {
                    let want: BTreeSet<&String> = members.iter().collect();
                    let have: BTreeSet<&String> = g.members.iter().collect();
                    if want != have {
                        d.op(
                            Action::Update,
                            Op::SetMembers {
                                from: g.members.clone(),
                                to: members.clone(),
                            },
                        );
                    } else if let Some(sg) = o
                        .gshadow
                        .as_deref()
                        .and_then(|s| s.iter().find(|s| s.name == self.name))
                    {
                        // A gshadow that drifted alone still gives its members
                        // password-free `newgrp`. Names that are no account grant
                        // nothing and the tools cannot name them: not compared.
                        let known = |m: &&String| accounts.user(m).is_some();
                        let shadowed: BTreeSet<&String> = sg.members.iter().filter(known).collect();
                        let want: BTreeSet<&String> = want.iter().copied().filter(known).collect();
                        if shadowed != want {
                            d.op(
                                Action::Update,
                                Op::SyncGshadow {
                                    from: sg.members.clone(),
                                    to: members.clone(),
                                },
                            );
                        }
                    }
                }
            }
        }
        if let (Some((members, _)), true) = (&self.members, d.action != Action::None) {
            let later: Vec<&String> = members
                .iter()
                .filter(|m| accounts.user(m).is_none())
                .collect();
            if !later.is_empty() {
                d.notes.push(format!(
                    "{} not on the target yet: each joins when its user resource creates it",
                    show_list(later.iter().copied())
                ));
            }
        }
        finish(d, errors)
    }

    fn describe(&self, op: &Op, change: &mut Change) {
        match op {
            Op::Create { gid, members, .. } => {
                if let Some(gid) = gid {
                    change.secret_field("gid", None, Some(gid.to_string()));
                }
                if let Some(members) = members {
                    change.secret_field("members", None, Some(show_list(members)));
                }
            }
            Op::SetGid { from, to } => {
                change.secret_field("gid", Some(from.to_string()), Some(to.to_string()))
            }
            Op::SetMembers { from, to } => {
                change.secret_field("members", Some(show_list(from)), Some(show_list(to)))
            }
            Op::SyncGshadow { from, to } => change.secret_field(
                "members (gshadow)",
                Some(show_list(from)),
                Some(show_list(to)),
            ),
            Op::Delete { gid } => change.secret_field("gid", Some(gid.to_string()), None),
        }
    }

    fn apply_ops(&self, ops: &[Op], ctx: &ApplyCtx) -> Result<(), ResourceError> {
        let _serial = tools_lock();
        let mut synced = false;
        for op in ops {
            match op {
                Op::Delete { .. } => {
                    run_tool(&shadow_tool(ctx.host, "groupdel").arg(&self.name), &[])?;
                }
                Op::Create {
                    gid,
                    system,
                    members,
                } => {
                    let mut cmd = shadow_tool(ctx.host, "groupadd");
                    if let Some(gid) = gid {
                        cmd = cmd.arg("--gid").arg(gid.to_string());
                    }
                    if *system {
                        cmd = cmd.arg("--system");
                    }
                    run_tool(&cmd.arg(&self.name), &[])?;
                    if let Some(members) = members {
                        self.sync_members(ctx.host, members)?;
                    }
                }
                Op::SetGid { to, .. } => {
                    let cmd = shadow_tool(ctx.host, "groupmod")
                        .arg("--gid")
                        .arg(to.to_string());
                    run_tool(&cmd.arg(&self.name), &[])?;
                }
                // Either makes /etc/group and /etc/gshadow exact together: once is enough.
                Op::SetMembers { to, .. } | Op::SyncGshadow { to, .. } if !synced => {
                    self.sync_members(ctx.host, to)?;
                    synced = true;
                }
                Op::SetMembers { .. } | Op::SyncGshadow { .. } => {}
            }
        }
        Ok(())
    }
}

/// The members of a group in the target's /etc/gshadow; `None` without that file or
/// without an entry for the group.
fn gshadow_members(host: &Host, group: &str) -> Result<Option<Vec<String>>, ResourceError> {
    let Some(text) = read_text(host, "/etc/gshadow")? else {
        return Ok(None);
    };
    let entries = parse_gshadow(&text).map_err(|e| HostError::Path {
        path: host.show("/etc/gshadow"),
        reason: e.to_string(),
    })?;
    Ok(entries
        .into_iter()
        .find(|e| e.name == group)
        .map(|e| e.members))
}

impl Group {
    /// Makes the member list exact, one member at a time with `usermod --append
    /// --groups` / `usermod --remove --groups`: those keep /etc/group and /etc/gshadow
    /// in step, where `groupadd/groupmod --users` (shadow 4.13) write /etc/group only.
    /// Declared members that do not exist yet are left to their user resource, which
    /// joins this group when it creates the account.
    fn sync_members(&self, host: &Host, want: &[String]) -> Result<(), ResourceError> {
        let accounts = host.accounts()?;
        let in_group: BTreeSet<String> = accounts
            .group(&self.name)
            .map(|g| g.members.iter().cloned().collect())
            .unwrap_or_default();
        let in_gshadow: BTreeSet<String> = match gshadow_members(host, &self.name)? {
            Some(m) => m.into_iter().collect(),
            None => in_group.clone(),
        };
        // Names in /etc/group that are no account cannot be given to usermod.
        let stale: Vec<&String> = in_group
            .iter()
            .filter(|m| accounts.user(m).is_none() && !want.contains(*m))
            .collect();
        if !stale.is_empty() {
            let keep: Vec<&str> = in_group
                .iter()
                .filter(|m| accounts.user(m).is_some())
                .map(String::as_str)
                .collect();
            let cmd = shadow_tool(host, "groupmod")
                .arg("--users")
                .arg(keep.join(","));
            run_tool(&cmd.arg(&self.name), &[])?;
        }
        for m in want {
            let missing = !in_group.contains(m) || !in_gshadow.contains(m);
            if missing && accounts.user(m).is_some() {
                let cmd =
                    shadow_tool(host, "usermod").args(["--append", "--groups", self.name.as_str()]);
                run_tool(&cmd.arg(m), &[])?;
            }
        }
        for m in in_group.union(&in_gshadow) {
            if !want.contains(m) && accounts.user(m).is_some() {
                let cmd =
                    shadow_tool(host, "usermod").args(["--remove", "--groups", self.name.as_str()]);
                run_tool(&cmd.arg(m), &[])?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::host::parse::passwd::{parse_group, parse_passwd};
    use crate::manifest::template::Templates;
    use crate::manifest::yaml;

    pub(crate) fn accounts() -> Accounts {
        let users =
            parse_passwd(include_str!("../../tests/fixtures/parse/passwd")).unwrap_or_default();
        let groups =
            parse_group(include_str!("../../tests/fixtures/parse/group")).unwrap_or_default();
        Accounts::new(users, groups)
    }

    pub(crate) fn defs() -> LoginDefs {
        parse_login_defs(include_str!("../../tests/fixtures/parse/login.defs"))
    }

    /// Decodes a manifest snippet (a list of entries) into resources, the way the
    /// engine does: first key names the kind and the name.
    pub(crate) fn decode_all(text: &str) -> (Vec<Box<dyn Resource>>, Decoder) {
        let file: Arc<str> = Arc::from("test.yaml");
        let mut d = Decoder::new(Templates::new(
            &serde_json::Map::new(),
            serde_json::Value::Null,
        ));
        let mut out = Vec::new();
        let root = yaml::parse(&file, text.as_bytes()).unwrap_or_else(|e| panic!("{e}"));
        let yaml::Value::Seq(items) = &root.value else {
            panic!("not a list")
        };
        for item in items {
            let Some(entries) = item.as_map() else {
                panic!("not a map")
            };
            let (k, v) = &entries[0];
            let kind = k.as_str().unwrap_or_default().to_string();
            let name = match &v.value {
                yaml::Value::Str(s) => s.clone(),
                other => panic!("{other:?}"),
            };
            let kind_static: &'static str = if kind == "user" { "user" } else { "group" };
            let mut fields = Fields::new(entries, k.span.clone(), kind_static);
            fields.consume_first();
            let meta = Meta {
                span: Some(k.span.clone()),
                ..Meta::default()
            };
            let decode = if kind == "user" {
                super::super::user::decode
            } else {
                decode
            };
            if let Some(r) = decode(&mut d, (name, v.span.clone()), meta, &mut fields) {
                out.push(r);
            }
            fields.finish(&mut d);
        }
        (out, d)
    }

    pub(crate) fn errors(d: &Decoder) -> Vec<String> {
        d.diags.errors().map(|e| e.to_string()).collect()
    }

    fn one_group(text: &str) -> (Catalog, ResourceId) {
        let (res, d) = decode_all(text);
        assert!(errors(&d).is_empty(), "{:?}", errors(&d));
        let id = res[0].id().clone();
        (Catalog::new(res), id)
    }

    /// The plan's change for the first group of `text`, on the fixture accounts.
    fn plan_with(text: &str, gshadow: Option<&str>) -> Result<Change, ResourceError> {
        let (catalog, id) = one_group(text);
        let g = catalog
            .typed::<Group>(&id)
            .unwrap_or_else(|| panic!("no group"));
        let gs = gshadow.map(|t| parse_gshadow(t).unwrap_or_default());
        let o = g.observed(accounts(), gs, defs(), &catalog);
        super::super::contract::diff(g, Box::new(o), &DepView::none())
    }

    fn plan_of(text: &str) -> Result<Change, ResourceError> {
        plan_with(text, None)
    }

    /// The operations alone.
    fn ops_of(text: &str, gshadow: Option<&str>) -> Result<Vec<Op>, ResourceError> {
        let (catalog, id) = one_group(text);
        let g = catalog
            .typed::<Group>(&id)
            .unwrap_or_else(|| panic!("no group"));
        let gs = gshadow.map(|t| parse_gshadow(t).unwrap_or_default());
        let o = g.observed(accounts(), gs, defs(), &catalog);
        g.diff(&o, &DepView::none()).map(|d| d.ops)
    }

    #[test]
    fn the_diff_of_a_group_is_its_operations_or_a_refusal() {
        let names = |n: &[&str]| n.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        type Case = (
            &'static str,
            Option<&'static str>,
            Result<Vec<Op>, &'static str>,
        );
        let cases: Vec<Case> = vec![
            (
                "- group: intelluxe-prod\n  gid: 2001\n  system: true\n  members: []\n",
                None,
                Ok(vec![]),
            ),
            (
                "- group: intelluxe-prod\n  gid: 2002\n",
                None,
                Ok(vec![Op::SetGid {
                    from: 2001,
                    to: 2002,
                }]),
            ),
            (
                "- group: intelluxe\n  members: [justin]\n",
                None,
                Ok(vec![Op::SetMembers {
                    from: names(&["justin", "intelluxe-service"]),
                    to: names(&["justin"]),
                }]),
            ),
            (
                "- group: sudo\n  members: [justin]\n",
                Some("sudo:*::justin,daemon\n"),
                Ok(vec![Op::SyncGshadow {
                    from: names(&["justin", "daemon"]),
                    to: names(&["justin"]),
                }]),
            ),
            (
                "- group: sudo\n  members: [justin]\n",
                Some("sudo:*::justin,mallory\n"),
                Ok(vec![]),
            ),
            (
                "- group: ops\n  gid: 2500\n  system: true\n  members: [justin]\n",
                None,
                Ok(vec![Op::Create {
                    gid: Some(2500),
                    system: true,
                    members: Some(names(&["justin"])),
                }]),
            ),
            (
                "- group: users\n  state: absent\n",
                None,
                Ok(vec![Op::Delete { gid: 100 }]),
            ),
            ("- group: nosuch\n  state: absent\n", None, Ok(vec![])),
            (
                "- group: intelluxe-prod\n  state: absent\n",
                None,
                Err("primary group of intelluxe-service"),
            ),
            ("- group: ops\n  gid: 27\n", None, Err("`sudo`")),
            ("- group: ops\n  members: [ghost]\n", None, Err("ghost")),
        ];
        for (text, gshadow, want) in cases {
            match (ops_of(text, gshadow), want) {
                (Ok(ops), Ok(want)) => assert_eq!(ops, want, "{text}"),
                (Err(e), Err(msg)) => assert!(e.to_string().contains(msg), "{text}: {e}"),
                (got, want) => panic!("{text}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn a_secret_group_describes_its_operations_without_values() {
        let (res, _) = decode_all("- group: ops\n  gid: 2500\n");
        let g = res[0]
            .as_any()
            .downcast_ref::<Group>()
            .unwrap_or_else(|| panic!("no group"));
        let mut c = Change::new(g.id.clone(), true);
        g.describe(
            &Op::SetMembers {
                from: vec!["a".into()],
                to: vec!["b".into()],
            },
            &mut c,
        );
        assert_eq!(c.fields[0].field, "members");
        assert_eq!(c.fields[0].after.as_deref(), Some(crate::plan::SENSITIVE));
    }

    #[test]
    fn names() {
        assert!(valid_account_name("intelluxe-service").is_ok());
        assert!(valid_account_name("_apt").is_ok());
        assert!(valid_account_name("host$").is_ok());
        assert!(valid_account_name("Root").is_err());
        assert!(valid_account_name("1abc").is_err());
        assert!(valid_account_name("a b").is_err());
        assert!(valid_account_name("$").is_err());
        assert!(valid_account_name("a$b").is_err());
        assert!(valid_account_name(&"a".repeat(32)).is_ok());
        assert!(valid_account_name(&"a".repeat(33)).is_err());
    }

    #[test]
    fn in_sync_group_has_no_change() {
        let c = plan_of("- group: intelluxe-prod\n  gid: 2001\n  system: true\n  members: []\n");
        let c = c.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.action, Action::None, "{c:?}");
        assert!(c.warnings.is_empty());
    }

    #[test]
    fn gid_change_is_a_field_diff() {
        let c = plan_of("- group: intelluxe-prod\n  gid: 2002\n").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.action, Action::Update);
        assert_eq!(c.fields[0].field, "gid");
        assert_eq!(c.fields[0].before.as_deref(), Some("2001"));
        assert_eq!(c.fields[0].after.as_deref(), Some("2002"));
    }

    #[test]
    fn members_exact_list() {
        let c =
            plan_of("- group: intelluxe\n  members: [justin]\n").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.action, Action::Update);
        assert_eq!(
            c.fields[0].before.as_deref(),
            Some("intelluxe-service,justin")
        );
        assert_eq!(c.fields[0].after.as_deref(), Some("justin"));
        // Order does not matter.
        let c = plan_of("- group: intelluxe\n  members: [intelluxe-service, justin]\n");
        assert_eq!(c.map(|c| c.action), Ok(Action::None));
    }

    #[test]
    fn gshadow_drift_is_shown() {
        let text = "- group: sudo\n  members: [justin]\n";
        let c = plan_with(text, Some("sudo:*::justin,daemon\n")).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.action, Action::Update);
        assert_eq!(c.fields[0].field, "members (gshadow)");
        assert_eq!(c.fields[0].before.as_deref(), Some("daemon,justin"));
        // A name that is no account grants nothing: not drift.
        let c = plan_with(text, Some("sudo:*::justin,mallory\n")).map(|c| c.action);
        assert_eq!(c, Ok(Action::None));
    }

    #[test]
    fn new_group_and_system_range() {
        let c = plan_of("- group: ops\n  gid: 2500\n  system: true\n")
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.action, Action::Create);
        assert_eq!(c.warnings.len(), 1);
        assert!(c.warnings[0].contains("test.yaml:"), "{}", c.warnings[0]);
        assert!(c.warnings[0].contains("101-999"), "{}", c.warnings[0]);
        let c =
            plan_of("- group: ops\n  gid: 500\n  system: true\n").unwrap_or_else(|e| panic!("{e}"));
        assert!(c.warnings.is_empty());
    }

    #[test]
    fn gid_taken_by_another_group() {
        let e = plan_of("- group: ops\n  gid: 27\n");
        let msg = match e {
            Err(ResourceError::Failed(m)) => m,
            other => panic!("{other:?}"),
        };
        assert!(msg.contains("test.yaml:2:"), "{msg}");
        assert!(msg.contains("`sudo`"), "{msg}");
    }

    #[test]
    fn unknown_member_is_refused() {
        let e = plan_of("- group: ops\n  members: [ghost]\n");
        assert!(matches!(e, Err(ResourceError::Failed(m)) if m.contains("ghost")));
    }

    #[test]
    fn removal() {
        let c = plan_of("- group: users\n  state: absent\n");
        assert_eq!(c.map(|c| c.action), Ok(Action::Delete));
        let c = plan_of("- group: nosuch\n  state: absent\n");
        assert_eq!(c.map(|c| c.action), Ok(Action::None));
        // Primary group of intelluxe-service on the target.
        let e = plan_of("- group: intelluxe-prod\n  state: absent\n");
        assert!(
            matches!(e, Err(ResourceError::Failed(m)) if m.contains("primary group of intelluxe-service"))
        );
    }

    #[test]
    fn decode_errors() {
        let (res, d) = decode_all(
            "- group: Bad Name\n- group: ok\n  gid: -1\n  colour: red\n- group: x\n  state: gone\n",
        );
        let errs = errors(&d);
        assert_eq!(res.len(), 2);
        assert!(
            errs.iter()
                .any(|e| e.contains("test.yaml:1:") && e.contains("not a valid account name")),
            "{errs:?}"
        );
        assert!(errs.iter().any(|e| e.contains("gid")), "{errs:?}");
        assert!(errs.iter().any(|e| e.contains("colour")), "{errs:?}");
        assert!(errs.iter().any(|e| e.contains("gone")), "{errs:?}");
    }

    #[test]
    fn duplicate_declared_gid() {
        let (res, d) = decode_all("- group: a\n  gid: 3000\n- group: b\n  gid: 3000\n");
        assert!(errors(&d).is_empty());
        let catalog = Catalog::new(res);
        let diags: Vec<Diagnostic> = catalog
            .resources
            .iter()
            .flat_map(|r| r.validate(&catalog))
            .collect();
        assert_eq!(diags.len(), 1, "{diags:?}");
        assert!(diags[0].to_string().contains("group `a`"));
    }

    #[test]
    fn redaction() {
        let cmd = Cmd::new("/bin/sh").args(["-c", "echo secret-hash >&2; exit 3", "secret-hash"]);
        let err = run_tool(&cmd, &["secret-hash"])
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("exit code 3"), "{err}");
        assert!(!err.contains("secret-hash"), "{err}");
    }

    #[test]
    fn a_long_tool_output_is_cut_to_an_excerpt_at_a_character_boundary() {
        let long = "é".repeat(3000);
        let cut = super::super::excerpt(&long);
        assert!(
            cut.len() <= super::super::EXCERPT + "…".len(),
            "{}",
            cut.len()
        );
        assert!(cut.ends_with('…'));
        assert_eq!(super::super::excerpt("short"), "short");
    }

    #[test]
    fn a_failed_shadow_tool_is_a_typed_error_with_its_exit_code_and_redacted_stderr() {
        let cmd = Cmd::new("/bin/sh").args([
            "-c",
            "echo \"useradd: secret-hash is in use\" >&2; exit 9",
            "secret-hash",
        ]);
        let e = run_tool(&cmd, &["secret-hash"])
            .err()
            .unwrap_or_else(|| panic!("the tool failed"));
        let shown = format!("{e} {e:?}");
        assert!(!shown.contains("secret-hash"), "{shown}");
        assert!(shown.contains("exit code 9: useradd: "), "{shown}");
        match e {
            ResourceError::Tool {
                tool, code, stderr, ..
            } => {
                assert_eq!(tool, "/bin/sh");
                assert_eq!(code, Some(9));
                assert!(stderr.starts_with("useradd: "), "{stderr}");
            }
            other => panic!("{other:?}"),
        }
    }
}
