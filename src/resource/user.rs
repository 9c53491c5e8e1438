//! The `user` kind: a local account of the target root, observed from its
//! /etc/passwd, /etc/group and /etc/shadow (never the machine's NSS) and changed with
//! `useradd`/`usermod`/`userdel` (`--prefix` when the root is not `/`; a uid change
//! chrooted with `--root`, see `modify`).
//!
//! On the typed contract: `observe` reads the host and gathers what other declarations
//! say into [`Observed`]; the pure `diff` turns it into [`Op`]s, which `describe`
//! renders for the plan and `apply_ops` carries out.
//!
//! Passwords are only ever crypt hashes (or `!`/`*`), never shown: not in plans,
//! errors, logs or `{:?}` output.

use std::any::Any;
use std::collections::{BTreeMap, BTreeSet};

use crate::diag::{Diagnostic, Span};
use crate::host::accounts::Accounts;
use crate::host::parse::passwd::PasswdEntry;
use crate::host::parse::shadow::{parse_shadow, LoginDefs, ShadowEntry};
use crate::host::{Cmd, FileKind, Host, HostError, Perms, Stat};
use crate::id::ResourceId;
use crate::manifest::decode::{Decoder, Fields};
use crate::plan::{fingerprint, sha256_hex, Action, Change, SENSITIVE};

use super::contract::{Contract, DepView, Diff};
use super::group::{
    account_id, at, decode_names, field_span, finish, id_change_warning, owned_paths,
    read_login_defs, read_text, run_tool, shadow_tool, show_list, tools_lock, valid_account_name,
};
use super::{ApplyCtx, Catalog, Ensure, Meta, Need, PlanCtx, Provide, Resource, ResourceError};

/// A password hash that never prints itself.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(SENSITIVE)
    }
}

/// crypt(5) prefixes the shadow suite understands.
const HASH_IDS: &[&str] = &["y", "gy", "7", "2a", "2b", "2y", "6", "5", "1", "sha1"];

/// Accepts `!`, `*` or a crypt(5) hash `$id$[params$]salt$hash`; anything else is
/// taken for a clear-text password and refused. The message never repeats the value.
pub fn check_password(p: &str) -> Result<(), String> {
    if p == "!" || p == "*" {
        return Ok(());
    }
    let advice = "give a crypt hash instead (for example from `mkpasswd -m yescrypt`), \
                  `!` (no password login) or `*`; the value is not shown";
    if p.chars()
        .any(|c| c.is_whitespace() || c == ':' || c.is_control())
    {
        return Err(format!("the password is not a crypt hash (it contains a space, `:` or a control character); {advice}"));
    }
    let parts: Vec<&str> = p.split('$').collect();
    let well_formed = p.starts_with('$')
        && parts.len() >= 4
        && HASH_IDS.contains(&parts[1])
        && parts[2..].iter().all(|s| {
            !s.is_empty()
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "./=,+-".contains(c))
        })
        && parts.last().is_some_and(|h| h.len() >= 22);
    if well_formed {
        return Ok(());
    }
    if p.len() == 13
        && p.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '/')
    {
        return Err(format!("the password looks like a DES crypt hash or a clear-text password; neither is accepted: {advice}"));
    }
    Err(format!("a clear-text password is not accepted: {advice}"))
}

#[derive(Debug)]
pub struct User {
    id: ResourceId,
    meta: Meta,
    /// The entry's name value.
    span: Span,
    /// Where each given field was written, for messages.
    spans: BTreeMap<&'static str, Span>,
    pub name: String,
    pub uid: Option<u32>,
    /// Primary group: a name or a numeric gid.
    pub group: Option<String>,
    /// Supplementary groups; `append` says whether others are kept.
    pub groups: Option<Vec<String>>,
    pub append: bool,
    pub shell: Option<String>,
    pub home: Option<String>,
    pub create_home: bool,
    /// `create_home` was written in the manifest (only then is a missing home of an
    /// existing account created).
    pub create_home_given: bool,
    pub system: bool,
    pub comment: Option<String>,
    pub password: Option<Secret>,
    pub locked: Option<bool>,
    pub state: Ensure,
    pub remove_home: bool,
}

/// No `:` (field separator) and no line break: both would corrupt /etc/passwd.
fn passwd_safe(
    d: &mut Decoder,
    key: &'static str,
    value: Option<(String, Span)>,
) -> Option<String> {
    let (v, span) = value?;
    if v.contains(':') || v.contains('\n') || v.contains('\r') {
        d.error(
            &span,
            key,
            format!("`{key}` must not contain `:` or a line break"),
        );
        return None;
    }
    Some(v)
}

pub fn decode(
    d: &mut Decoder,
    name: (String, Span),
    meta: Meta,
    fields: &mut Fields,
) -> Option<Box<dyn Resource>> {
    let (name, span) = name;
    let mut spans = BTreeMap::new();
    for key in [
        "uid",
        "group",
        "groups",
        "append",
        "shell",
        "home",
        "create_home",
        "system",
        "comment",
        "password",
        "locked",
        "state",
        "remove_home",
    ] {
        if let Some(s) = field_span(fields, key) {
            spans.insert(key, s);
        }
    }
    let uid = account_id(d, fields, "uid");
    let group = match fields.name_or_id(d, "group") {
        Some((g, s)) if g.parse::<u32>().is_err() => match valid_account_name(&g) {
            Ok(()) => Some(g),
            Err(msg) => {
                d.error(&s, "group", msg);
                None
            }
        },
        other => other.map(|(g, _)| g),
    };
    let groups = decode_names(d, fields, "groups").map(|(g, _)| g);
    let append = fields.bool(d, "append");
    let shell = fields.string(d, "shell");
    let shell = passwd_safe(d, "shell", shell);
    if let (Some(sh), Some(s)) = (&shell, spans.get("shell")) {
        if !sh.starts_with('/') {
            d.error(
                s,
                "shell",
                format!("`{sh}` must be an absolute path such as /bin/false"),
            );
        }
    }
    let home = fields.abs_path(d, "home");
    let home = passwd_safe(d, "home", home);
    let create_home = fields.bool(d, "create_home");
    let system = fields.bool(d, "system").unwrap_or(false);
    let comment = fields.string(d, "comment");
    let comment = passwd_safe(d, "comment", comment);
    let password = match fields.string(d, "password") {
        Some((p, s)) => match check_password(&p) {
            Ok(()) => Some(Secret(p)),
            Err(msg) => {
                d.error(&s, "password", msg);
                None
            }
        },
        None => None,
    };
    let locked = fields.bool(d, "locked");
    let state = Ensure::decode(d, fields);
    let remove_home = fields.bool(d, "remove_home");

    if let Err(msg) = valid_account_name(&name) {
        d.error(&span, "user", msg);
        return None;
    }
    let append = match (&groups, append) {
        (Some(_), Some(a)) => a,
        (Some(_), None) => {
            let s = spans.get("groups").unwrap_or(&span).clone();
            d.error(
                &s,
                "groups",
                "`groups` needs `append: true` (add to these groups, keep the others) or \
                 `append: false` (exactly these groups)",
            );
            false
        }
        (None, Some(a)) => {
            let s = spans.get("append").unwrap_or(&span).clone();
            d.warn(
                &s,
                "append",
                "`append` only means something together with `groups`",
            );
            a
        }
        (None, None) => false,
    };
    if password.as_ref().is_some_and(|p| p.expose() == "!") && locked == Some(false) {
        let s = spans.get("locked").unwrap_or(&span).clone();
        d.error(
            &s,
            "locked",
            "`password: \"!\"` is a locked account; `locked: false` contradicts it",
        );
    }
    if state == Ensure::Absent {
        let ignored: Vec<&str> = spans
            .keys()
            .copied()
            .filter(|k| !matches!(*k, "state" | "remove_home"))
            .collect();
        if !ignored.is_empty() {
            d.warn(
                &span,
                "state",
                format!(
                    "`state: absent` removes the account; {} ignored",
                    ignored.join(", ")
                ),
            );
        }
    } else if let (Some(true), Some(s)) = (remove_home, spans.get("remove_home")) {
        d.warn(
            s,
            "remove_home",
            "`remove_home` only applies with `state: absent`",
        );
    }
    Some(Box::new(User {
        id: ResourceId::new("user", name.clone()),
        meta,
        span,
        spans,
        name,
        uid,
        group,
        groups,
        append,
        shell,
        home,
        create_home: create_home.unwrap_or(!system),
        create_home_given: create_home.is_some(),
        system,
        comment,
        password,
        locked,
        state,
        remove_home: remove_home.unwrap_or(false),
    }))
}

/// What observing found for one account: the target's accounts, its shadow (when the
/// password or lock is managed), login.defs, the home and shell, and what the other
/// declarations say. The diff reads nothing else.
#[derive(Default)]
pub struct Observed {
    pub accounts: Accounts,
    /// The target's /etc/shadow, when the password or lock is managed and it exists.
    pub shadow: Option<Vec<ShadowEntry>>,
    pub defs: LoginDefs,
    /// Whether the account's (desired or current) home exists, when that matters.
    pub home_exists: Option<bool>,
    /// Who owns the current home, when `remove_home` would delete it (`None`: missing).
    pub home_owner: Option<u32>,
    /// The declared login shell is not on the target.
    pub shell_missing: bool,
    /// The account's mail spool, when `remove_home` deletes it and the account owns it.
    pub spool: Option<String>,
    pub declared: Declared,
}

/// What the other declarations say about one account, gathered while observing.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Declared {
    /// The groups the account names (`group`, `groups`) that are on the target or
    /// declared present.
    pub available: BTreeSet<String>,
    /// A group named like the account is declared.
    pub own_group: bool,
    /// Declared groups that list the account in their `members` (looked up for an
    /// account that does not exist yet: the only one that needs them).
    pub member_of: Vec<String>,
    /// Managed paths that name the account's current uid as owner (for a uid change).
    pub owned_paths: Vec<String>,
}

/// A new account as `useradd` makes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewAccount {
    pub uid: Option<u32>,
    /// The primary group, as the plan shows it and `--gid` names it.
    pub group: String,
    /// No such group on the target: `--user-group` makes it.
    pub user_group: bool,
    /// The account's own `groups`.
    pub groups: Vec<String>,
    /// Declared groups that list the account in their `members`: joined when they
    /// exist by the time useradd runs (looked up under the tools' lock, since nothing
    /// orders them before the account); one created later adds the account itself.
    pub member_of: Vec<String>,
    pub shell: Option<String>,
    pub home: Option<String>,
    pub comment: Option<String>,
    pub system: bool,
    pub create_home: bool,
    /// The manifest gives a password (shown as a change, never as a value).
    pub password_given: bool,
    /// The shadow password field written (lock included); `None`: useradd's `!`.
    pub shadow: Option<Secret>,
}

/// One thing `useradd`/`usermod`/`userdel` (or the host's walk, for homes) does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    Create(Box<NewAccount>),
    SetUid {
        from: u32,
        to: u32,
    },
    SetPrimaryGroup {
        from: String,
        to: String,
    },
    SetGroups {
        from: Vec<String>,
        to: Vec<String>,
        /// Only joins: the others are kept.
        append: bool,
    },
    SetShell {
        from: String,
        to: String,
    },
    SetHome {
        from: String,
        to: String,
    },
    SetComment {
        from: String,
        to: String,
    },
    /// A missing home of an existing account, made through the host's walk.
    CreateHome {
        home: String,
    },
    /// The shadow password field as written, lock included.
    SetPassword(Secret),
    Lock,
    Unlock,
    /// `userdel`, then what `remove_home` deletes (decided by `home_kept_because`).
    Delete {
        uid: u32,
        home: Option<String>,
        spool: Option<String>,
    },
}

/// Why a home is not deleted with its account, or `None` when it is. `userdel -r`
/// follows symlinks and deletes whatever the path names; we delete only a directory
/// the account owns that no other account calls home.
pub(crate) fn home_kept_because(
    accounts: &Accounts,
    name: &str,
    home: &str,
    uid: u32,
    owner: Option<u32>,
) -> Option<String> {
    if home.trim_matches('/').is_empty() {
        return Some(format!("home `{home}` is the root directory"));
    }
    let sharing: Vec<&str> = accounts
        .users
        .iter()
        .filter(|u| u.name != name && u.home == home)
        .map(|u| u.name.as_str())
        .collect();
    if !sharing.is_empty() {
        return Some(format!("it is also the home of {}", sharing.join(", ")));
    }
    match owner {
        None => Some("it does not exist".into()),
        Some(o) if o != uid => Some(format!("it is owned by uid {o}, not by `{name}`")),
        Some(_) => None,
    }
}

/// The base directory `useradd` puts homes under: HOME= in the target's
/// /etc/default/useradd, else /home.
fn default_home(host: &Host, name: &str) -> Result<String, ResourceError> {
    let text = read_text(host, "/etc/default/useradd")?.unwrap_or_default();
    let base = text
        .lines()
        .filter_map(|l| l.trim().strip_prefix("HOME="))
        .next_back()
        .map(|v| v.trim().trim_matches('"').to_string())
        .filter(|v| v.starts_with('/') && !v.split('/').any(|c| c == ".."))
        .unwrap_or_else(|| "/home".into());
    Ok(format!("{}/{name}", base.trim_end_matches('/')))
}

/// Whether a login shell is on the target. /bin and /sbin are symlinks into /usr on
/// merged-/usr systems, which the host's walk does not follow, so /usr is asked too.
fn shell_exists(host: &Host, shell: &str) -> bool {
    let found = |p: &str| matches!(host.lstat(p), Ok(Some(_)));
    found(shell) || found(&format!("/usr{shell}"))
}

/// Refuses a home that is itself a symlink (a parent that is one is refused by the
/// host's walk already): creating or deleting it would act on whatever it points to.
fn refuse_linked_home(host: &Host, home: &str) -> Result<Option<Stat>, ResourceError> {
    let stat = host.lstat(home)?;
    if stat.is_some_and(|s| s.kind == FileKind::Symlink) {
        return Err(HostError::Unsafe {
            path: host.show(home),
            reason: "the home directory is a symlink; reconcile does not follow symlinks \
                     that the manifest does not manage"
                .into(),
        }
        .into());
    }
    Ok(stat)
}

impl User {
    fn span_of(&self, field: &str) -> &Span {
        self.spans.get(field).unwrap_or(&self.span)
    }

    /// The declared resource that provides the group `name`, whatever its kind.
    fn declared_group<'c>(&self, catalog: &'c Catalog, name: &str) -> Option<&'c dyn Resource> {
        let j = catalog.provider_for(&Need::group(name))?;
        Some(catalog.resources[j].as_ref())
    }

    /// A group (name or numeric gid) that exists on the target or is declared present.
    fn group_available(&self, accounts: &Accounts, catalog: &Catalog, g: &str) -> bool {
        match g.parse::<u32>() {
            Ok(gid) => {
                accounts.group_by_gid(gid).is_some()
                    || catalog
                        .groups()
                        .into_iter()
                        .any(|(_, d)| !d.removes() && d.group_gid() == Some(gid))
            }
            Err(_) => {
                accounts.group(g).is_some()
                    || self
                        .declared_group(catalog, g)
                        .is_some_and(|d| !d.removes())
            }
        }
    }

    /// Declared groups that list this user in their `members`.
    fn member_of_declared<'c>(&self, catalog: &'c Catalog) -> Vec<&'c String> {
        catalog
            .groups()
            .into_iter()
            .filter(|(_, g)| !g.removes())
            .filter(|(_, g)| {
                g.group_members()
                    .is_some_and(|(m, _)| m.contains(&self.name))
            })
            .map(|(name, _)| name)
            .collect()
    }

    /// The shadow password field the account should end with, given the current one
    /// (`None`: the account is being created, and useradd writes `!`). `Ok(None)`:
    /// neither password nor lock is managed.
    pub fn want_password(&self, current: Option<&str>) -> Result<Option<String>, String> {
        let cur = current.unwrap_or("!");
        let want = match (&self.password, self.locked) {
            (None, None) => return Ok(None),
            (None, Some(true)) if cur.starts_with('!') => cur.to_string(),
            (None, Some(true)) => format!("!{cur}"),
            (None, Some(false)) => {
                let open = cur.strip_prefix('!').unwrap_or(cur);
                if open.is_empty() {
                    return Err(format!(
                        "`locked: false` would leave `{}` without any password; give a `password` hash",
                        self.name
                    ));
                }
                open.to_string()
            }
            (Some(p), Some(true)) if p.expose() == "*" => "!*".to_string(),
            (Some(p), _) if p.expose() == "!" || p.expose() == "*" => p.expose().to_string(),
            (Some(p), l) => {
                let lock = l.unwrap_or(current.is_some_and(|c| c.starts_with('!')));
                if lock {
                    format!("!{}", p.expose())
                } else {
                    p.expose().to_string()
                }
            }
        };
        Ok(Some(want))
    }

    /// The password field of the account on the target: shadow, else passwd.
    fn current_password<'a>(
        &self,
        accounts: &'a Accounts,
        shadow: Option<&'a [ShadowEntry]>,
    ) -> Option<&'a str> {
        shadow
            .and_then(|s| s.iter().find(|e| e.name == self.name))
            .map(|e| e.password.as_str())
            .or_else(|| accounts.user(&self.name).map(|u| u.password.as_str()))
    }

    fn desired_fingerprint(&self) -> String {
        let parts = [
            format!("{:?}", self.state),
            self.uid.map(|u| u.to_string()).unwrap_or_default(),
            self.group.clone().unwrap_or_default(),
            self.groups
                .as_ref()
                .map(show_list)
                .unwrap_or_else(|| "-".into()),
            self.append.to_string(),
            self.shell.clone().unwrap_or_default(),
            self.home.clone().unwrap_or_default(),
            self.create_home.to_string(),
            self.system.to_string(),
            self.comment.clone().unwrap_or_default(),
            self.password
                .as_ref()
                .map(|p| sha256_hex(p.expose().as_bytes()))
                .unwrap_or_default(),
            format!("{:?}", self.locked),
            self.remove_home.to_string(),
        ];
        fingerprint(std::iter::once(self.name.as_bytes()).chain(parts.iter().map(|p| p.as_bytes())))
    }
}

fn declared_users(catalog: &Catalog) -> impl Iterator<Item = &User> {
    catalog
        .resources
        .iter()
        .filter_map(|r| r.as_any().downcast_ref::<User>())
}

fn read_shadow(ctx_host: &crate::host::Host) -> Result<Option<Vec<ShadowEntry>>, ResourceError> {
    match read_text(ctx_host, "/etc/shadow")? {
        Some(text) => Ok(Some(parse_shadow(&text).map_err(|e| HostError::Path {
            path: ctx_host.show("/etc/shadow"),
            reason: e.to_string(),
        })?)),
        None => Ok(None),
    }
}

impl Resource for User {
    fn id(&self) -> &ResourceId {
        &self.id
    }

    fn meta(&self) -> &Meta {
        &self.meta
    }

    fn provides(&self) -> Vec<Provide> {
        vec![Provide::Account(self.name.clone())]
    }

    fn removes(&self) -> bool {
        self.state == Ensure::Absent
    }

    fn needs(&self) -> Vec<Need> {
        if self.state == Ensure::Absent {
            // Removing an account needs none of its groups.
            return Vec::new();
        }
        // Without `group:` useradd uses a group named like the user when one exists.
        let primary = self.group.clone().unwrap_or_else(|| self.name.clone());
        std::iter::once(primary)
            .filter(|g| g.parse::<u32>().is_err())
            .chain(self.groups.iter().flatten().cloned())
            .map(Need::group)
            .collect()
    }

    fn validate(&self, catalog: &Catalog) -> Vec<Diagnostic> {
        let mut out = Vec::new();
        if self.state == Ensure::Absent {
            return out;
        }
        let err = |field: &str, span: &Span, msg: String| {
            Diagnostic::error(Some(span.clone()), msg).field(field)
        };
        let mut named: Vec<(&str, &String)> = self.group.iter().map(|g| ("group", g)).collect();
        named.extend(self.groups.iter().flatten().map(|g| ("groups", g)));
        for (field, g) in named {
            if self.declared_group(catalog, g).is_some_and(|d| d.removes()) {
                out.push(err(
                    field,
                    self.span_of(field),
                    format!("group `{g}` is declared `state: absent`"),
                ));
            }
        }
        if let Some(uid) = self.uid {
            let me = catalog.index_of(&self.id);
            let earlier = declared_users(catalog).find(|u| {
                u.state == Ensure::Present
                    && u.name != self.name
                    && u.uid == Some(uid)
                    && catalog.index_of(&u.id) < me
            });
            if let Some(other) = earlier {
                out.push(
                    err(
                        "uid",
                        self.span_of("uid"),
                        format!("uid {uid} is also declared for user `{}`", other.name),
                    )
                    .related(other.span_of("uid").clone(), "declared here"),
                );
            }
        }
        // `members` of a group and `groups` of a user both decide membership: they
        // must agree, or every run would undo the other's change.
        for g in self.groups.iter().flatten() {
            let exact = self
                .declared_group(catalog, g)
                .and_then(|d| d.group_members());
            if let Some((members, span)) = exact {
                if !members.contains(&self.name) {
                    out.push(
                        err(
                            "groups",
                            self.span_of("groups"),
                            format!("`{}` lists group `{g}`, whose `members` do not include it; list it there too", self.name),
                        )
                        .related(span.clone(), "members declared here"),
                    );
                }
            }
        }
        if let (Some(list), false) = (&self.groups, self.append) {
            for g in self.member_of_declared(catalog) {
                if !list.contains(g) && self.group.as_ref() != Some(g) {
                    out.push(err(
                        "groups",
                        self.span_of("groups"),
                        format!(
                            "group `{g}` lists `{}` in its `members`, but `append: false` makes these groups exact \
                             without it; add `{g}` here or drop the member there",
                            self.name
                        ),
                    ));
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

impl User {
    /// The declarations' part of the state: what the diff needs from the catalog.
    pub(crate) fn declared(&self, accounts: &Accounts, catalog: &Catalog) -> Declared {
        let available = self
            .group
            .iter()
            .chain(self.groups.iter().flatten())
            .filter(|g| self.group_available(accounts, catalog, g))
            .cloned()
            .collect();
        let owned_paths = match (accounts.user(&self.name), self.uid) {
            (Some(u), Some(new)) if u.uid != new => owned_paths(catalog, &self.name, u.uid, true),
            _ => Vec::new(),
        };
        // Only a new account joins the declared groups listing it itself (a group
        // adds an existing member); the lookup scans the catalog, so it is skipped
        // for accounts that exist.
        let member_of = match (accounts.user(&self.name), self.state) {
            (None, Ensure::Present) => self
                .member_of_declared(catalog)
                .into_iter()
                .cloned()
                .collect(),
            _ => Vec::new(),
        };
        Declared {
            available,
            own_group: self.declared_group(catalog, &self.name).is_some(),
            member_of,
            owned_paths,
        }
    }

    fn live_fingerprint(&self, o: &Observed, current_groups: &[String]) -> String {
        match o.accounts.user(&self.name) {
            Some(u) => {
                let pw = self
                    .current_password(&o.accounts, o.shadow.as_deref())
                    .map(|p| sha256_hex(p.as_bytes()))
                    .unwrap_or_default();
                let line = format!(
                    "{}:{}:{}:{}:{}:{}",
                    u.name, u.uid, u.gid, u.gecos, u.home, u.shell
                );
                fingerprint([
                    line.as_bytes(),
                    show_list(current_groups).as_bytes(),
                    pw.as_bytes(),
                ])
            }
            None => fingerprint([b"absent".as_slice()]),
        }
    }

    /// The removal: `userdel`, and the home only when it is safe to delete.
    fn diff_removal(&self, o: &Observed, d: &mut Diff<Op>) {
        let Some(u) = o.accounts.user(&self.name) else {
            return;
        };
        let mut home = None;
        if self.remove_home {
            match home_kept_because(&o.accounts, &self.name, &u.home, u.uid, o.home_owner) {
                None => {
                    d.warnings.push(format!(
                        "home {} and the mail spool of `{}` are deleted (remove_home: true)",
                        u.home, self.name
                    ));
                    home = Some(u.home.clone());
                }
                Some(why) => d.notes.push(format!(
                    "home {} is kept although remove_home: true: {why}; the mail spool \
                     of `{}` is deleted",
                    u.home, self.name
                )),
            }
        } else {
            d.notes
                .push(format!("home {} is kept (remove_home: false)", u.home));
        }
        d.op(
            Action::Delete,
            Op::Delete {
                uid: u.uid,
                home,
                spool: o.spool.clone().filter(|_| self.remove_home),
            },
        );
    }

    /// What `useradd` is given for an account that does not exist yet.
    fn diff_creation(&self, o: &Observed, want_pw: Option<String>, d: &mut Diff<Op>) {
        if let Some(uid) = self.uid {
            let (lo, hi) = o.defs.sys_uid_range();
            if self.system && !(lo..=hi).contains(&uid) {
                d.warnings.push(format!(
                    "{}: `system: true` but uid {uid} is outside the target's system range {lo}-{hi} \
                     (SYS_UID_MIN/SYS_UID_MAX in /etc/login.defs)",
                    self.span_of("uid")
                ));
            }
        } else {
            d.notes.push("uid chosen by useradd".into());
        }
        let own_group_on_target = o.accounts.group(&self.name).is_some();
        if self.group.is_none() && !own_group_on_target && !o.declared.own_group {
            d.implied.push(format!(
                "group {} (gid chosen by useradd; declare `group:` to choose)",
                self.name
            ));
        }
        d.op(
            Action::Create,
            Op::Create(Box::new(NewAccount {
                uid: self.uid,
                group: self.group.clone().unwrap_or_else(|| self.name.clone()),
                // Explicit either way, whatever USERGROUPS_ENAB says.
                user_group: self.group.is_none() && !own_group_on_target,
                groups: self.groups.clone().unwrap_or_default(),
                member_of: o.declared.member_of.clone(),
                shell: self.shell.clone(),
                home: self.home.clone(),
                comment: self.comment.clone(),
                system: self.system,
                create_home: self.create_home,
                password_given: self.password.is_some(),
                shadow: want_pw.map(Secret),
            })),
        );
    }

    /// What `usermod` (and the host's walk, for a missing home) changes.
    fn diff_update(
        &self,
        o: &Observed,
        u: &PasswdEntry,
        current_groups: &[String],
        want_pw: Option<String>,
        d: &mut Diff<Op>,
    ) {
        let accounts = &o.accounts;
        if let Some(uid) = self.uid {
            if u.uid != uid {
                d.op(
                    Action::Update,
                    Op::SetUid {
                        from: u.uid,
                        to: uid,
                    },
                );
            }
        }
        if let Some(g) = &self.group {
            let same = match g.parse::<u32>() {
                Ok(gid) => u.gid == gid,
                Err(_) => accounts.group_by_gid(u.gid).is_some_and(|x| x.name == *g),
            };
            if !same {
                d.op(
                    Action::Update,
                    Op::SetPrimaryGroup {
                        from: accounts.group_name(u.gid),
                        to: g.clone(),
                    },
                );
            }
        }
        if let Some(want) = &self.groups {
            let have: BTreeSet<&String> = current_groups.iter().collect();
            let mut target: BTreeSet<&String> = want.iter().collect();
            if self.append {
                target.extend(have.iter().copied());
            }
            if target != have {
                d.op(
                    Action::Update,
                    Op::SetGroups {
                        from: have.into_iter().cloned().collect(),
                        to: target.into_iter().cloned().collect(),
                        append: self.append,
                    },
                );
            }
        }
        let changed = |want: &Option<String>, have: &String| {
            want.as_ref()
                .filter(|w| *w != have)
                .map(|w| (have.clone(), w.clone()))
        };
        if let Some((from, to)) = changed(&self.shell, &u.shell) {
            d.op(Action::Update, Op::SetShell { from, to });
        }
        if let Some((from, to)) = changed(&self.home, &u.home) {
            d.op(Action::Update, Op::SetHome { from, to });
        }
        if let Some((from, to)) = changed(&self.comment, &u.gecos) {
            d.op(Action::Update, Op::SetComment { from, to });
        }
        if self.create_home_given && self.create_home && o.home_exists == Some(false) {
            let home = self.home.as_deref().unwrap_or(&u.home);
            d.op(
                Action::Update,
                Op::CreateHome {
                    home: home.to_string(),
                },
            );
        }
        let current_pw = self.current_password(accounts, o.shadow.as_deref());
        if let (Some(want), Some(cur)) = (want_pw, current_pw) {
            let open = |s: &str| s.strip_prefix('!').unwrap_or(s).to_string();
            let lock_changes = want.starts_with('!') != cur.starts_with('!');
            let lock = want.starts_with('!');
            if open(&want) != open(cur) {
                // The lock is part of the field written: one --password does both.
                d.op(Action::Update, Op::SetPassword(Secret(want)));
            }
            if lock_changes {
                d.op(Action::Update, if lock { Op::Lock } else { Op::Unlock });
            }
        }
    }
}

impl Contract for User {
    type State = Observed;
    type Op = Op;

    fn observe(&self, ctx: &PlanCtx) -> Result<Observed, ResourceError> {
        let host = ctx.host;
        let present = self.state == Ensure::Present;
        let shadow = if present && (self.password.is_some() || self.locked.is_some()) {
            read_shadow(host)?
        } else {
            None
        };
        let entry = ctx.accounts.user(&self.name);
        let home_exists = match (entry, self.create_home_given && self.create_home) {
            (Some(u), true) => {
                let home = self.home.as_deref().unwrap_or(&u.home);
                Some(host.lstat(home)?.is_some())
            }
            _ => None,
        };
        let home_owner = match (entry, self.state) {
            (Some(u), Ensure::Absent) if self.remove_home => {
                refuse_linked_home(host, &u.home)?.map(|s| s.uid)
            }
            _ => None,
        };
        if entry.is_none() && present && self.create_home {
            let home = match &self.home {
                Some(h) => h.clone(),
                None => default_home(host, &self.name)?,
            };
            refuse_linked_home(host, &home)?;
        }
        let defs = read_login_defs(host)?;
        let spool = match (entry, self.state) {
            (Some(u), Ensure::Absent) if self.remove_home => {
                let spool = format!(
                    "{}/{}",
                    defs.get("MAIL_DIR")
                        .filter(|d| d.starts_with('/') && !d.split('/').any(|c| c == ".."))
                        .unwrap_or("/var/mail")
                        .trim_end_matches('/'),
                    self.name
                );
                host.lstat(&spool)?
                    .is_some_and(|s| s.uid == u.uid)
                    .then_some(spool)
            }
            _ => None,
        };
        let shell_missing = match (&self.shell, present) {
            (Some(shell), true) => !shell_exists(host, shell),
            _ => false,
        };
        Ok(Observed {
            accounts: ctx.accounts.clone(),
            shadow,
            defs,
            home_exists,
            home_owner,
            shell_missing,
            spool,
            declared: self.declared(ctx.accounts, ctx.catalog),
        })
    }

    /// The desired account against what was observed → the operations, or the
    /// problems that refuse them (each naming its manifest place).
    fn diff(&self, o: &Observed, _deps: &DepView) -> Result<Diff<Op>, ResourceError> {
        let accounts = &o.accounts;
        let entry = accounts.user(&self.name);
        let current_groups: Vec<String> = accounts
            .groups
            .iter()
            .filter(|g| g.members.contains(&self.name))
            .map(|g| g.name.clone())
            .collect();
        let mut d = Diff::new(
            self.live_fingerprint(o, &current_groups),
            self.desired_fingerprint(),
        );
        let mut errors = Vec::new();

        if self.state == Ensure::Absent {
            self.diff_removal(o, &mut d);
            return finish(d, errors);
        }

        if let Some(uid) = self.uid {
            let taken: Vec<&str> = accounts
                .users
                .iter()
                .filter(|u| u.uid == uid && u.name != self.name)
                .map(|u| u.name.as_str())
                .collect();
            if !taken.is_empty() {
                errors.push(at(
                    self.span_of("uid"),
                    "uid",
                    format!(
                        "uid {uid} is already used by account `{}` on the target",
                        taken.join("`, `")
                    ),
                ));
            }
        }
        if let Some(g) = &self.group {
            if !o.declared.available.contains(g) {
                errors.push(at(
                    self.span_of("group"),
                    "group",
                    format!("primary group `{g}` is neither declared nor present on the target"),
                ));
            }
        }
        for g in self.groups.iter().flatten() {
            if !o.declared.available.contains(g) {
                errors.push(at(
                    self.span_of("groups"),
                    "groups",
                    format!("group `{g}` is neither declared nor present on the target"),
                ));
            }
        }
        let current_pw = self.current_password(accounts, o.shadow.as_deref());
        let want_pw = match self.want_password(entry.and(current_pw)) {
            Ok(w) => w,
            Err(msg) => {
                errors.push(at(self.span_of("locked"), "locked", msg));
                None
            }
        };

        match entry {
            None => self.diff_creation(o, want_pw, &mut d),
            Some(u) => self.diff_update(o, u, &current_groups, want_pw, &mut d),
        }
        if o.shell_missing {
            if let Some(shell) = &self.shell {
                d.warnings.push(format!(
                    "shell {shell} does not exist on the target: logins as `{}` will fail",
                    self.name
                ));
            }
        }
        if let Some(&Op::SetUid { from, to }) =
            d.ops.iter().find(|op| matches!(op, Op::SetUid { .. }))
        {
            d.warnings.push(id_change_warning(
                "uid",
                &self.name,
                from,
                to,
                &o.declared.owned_paths,
            ));
        }
        finish(d, errors)
    }

    fn describe(&self, op: &Op, change: &mut Change) {
        let lock = |change: &mut Change, locked: bool| {
            change.secret_field(
                "locked",
                Some((!locked).to_string()),
                Some(locked.to_string()),
            )
        };
        match op {
            Op::Create(new) => {
                if let Some(uid) = new.uid {
                    change.secret_field("uid", None, Some(uid.to_string()));
                }
                change.secret_field("group", None, Some(new.group.clone()));
                if !new.groups.is_empty() || !new.member_of.is_empty() {
                    let all = new.groups.iter().chain(&new.member_of);
                    change.secret_field("groups", None, Some(show_list(all)));
                }
                for (field, value) in [
                    ("shell", &new.shell),
                    ("home", &new.home),
                    ("comment", &new.comment),
                ] {
                    if let Some(v) = value {
                        change.secret_field(field, None, Some(v.clone()));
                    }
                }
                change.secret_field("create_home", None, Some(new.create_home.to_string()));
                if new.password_given {
                    change.field("password", None, Some(SENSITIVE.into()));
                }
                if let Some(w) = &new.shadow {
                    change.secret_field(
                        "locked",
                        None,
                        Some(w.expose().starts_with('!').to_string()),
                    );
                }
            }
            Op::SetUid { from, to } => {
                change.secret_field("uid", Some(from.to_string()), Some(to.to_string()))
            }
            Op::SetPrimaryGroup { from, to } => {
                change.secret_field("group", Some(from.clone()), Some(to.clone()))
            }
            Op::SetGroups { from, to, .. } => {
                change.secret_field("groups", Some(show_list(from)), Some(show_list(to)))
            }
            Op::SetShell { from, to } => {
                change.secret_field("shell", Some(from.clone()), Some(to.clone()))
            }
            Op::SetHome { from, to } => {
                change.secret_field("home", Some(from.clone()), Some(to.clone()))
            }
            Op::SetComment { from, to } => {
                change.secret_field("comment", Some(from.clone()), Some(to.clone()))
            }
            Op::CreateHome { home } => change.secret_field(
                "home directory",
                Some("missing".into()),
                Some(format!("{home} (created)")),
            ),
            Op::SetPassword(_) => {
                change.field("password", Some(SENSITIVE.into()), Some(SENSITIVE.into()))
            }
            Op::Lock => lock(change, true),
            Op::Unlock => lock(change, false),
            Op::Delete { uid, .. } => change.secret_field("uid", Some(uid.to_string()), None),
        }
    }

    fn apply_ops(&self, ops: &[Op], ctx: &ApplyCtx) -> Result<(), ResourceError> {
        let _serial = tools_lock();
        let mut modify = Vec::new();
        for op in ops {
            match op {
                Op::Create(new) => self.create(ctx, new)?,
                Op::Delete { uid, home, spool } => {
                    self.delete(ctx, *uid, home.as_deref(), spool.as_deref())?;
                    // What was deleted with the account is the auditor's question.
                    ctx.record(
                        &self.id,
                        "account_removed",
                        serde_json::json!({
                            "uid": uid,
                            "home_deleted": home,
                            "mail_spool_deleted": spool,
                        }),
                    );
                }
                other => modify.push(other),
            }
        }
        if !modify.is_empty() {
            self.modify(ctx, &modify)?;
        }
        Ok(())
    }
}

impl User {
    fn create(&self, ctx: &ApplyCtx, new: &NewAccount) -> Result<(), ResourceError> {
        let mut cmd = shadow_tool(ctx.host, "useradd");
        if !ctx.host.is_machine_root() {
            // lastlog/faillog are not prefix-aware everywhere: keep off the machine's.
            cmd = cmd.arg("--no-log-init");
        }
        if let Some(uid) = new.uid {
            cmd = cmd.arg("--uid").arg(uid.to_string());
        }
        cmd = if new.user_group {
            cmd.arg("--user-group")
        } else {
            cmd.arg("--gid").arg(&new.group)
        };
        let mut join: BTreeSet<&String> = new.groups.iter().collect();
        if !new.member_of.is_empty() {
            // Declared groups listing us could not add us before we existed.
            let accounts = ctx.host.accounts()?;
            join.extend(new.member_of.iter().filter(|g| accounts.group(g).is_some()));
        }
        if !join.is_empty() {
            let join: Vec<&str> = join.into_iter().map(String::as_str).collect();
            cmd = cmd.arg("--groups").arg(join.join(","));
        }
        if let Some(shell) = &new.shell {
            cmd = cmd.arg("--shell").arg(shell);
        }
        if let Some(home) = &new.home {
            cmd = cmd.arg("--home-dir").arg(home);
        }
        // useradd's own home creation follows symlinks (a symlinked /home under the
        // root would put the home, chowned to the new uid, outside it): the home is
        // made afterwards through the host's symlink-refusing walk.
        cmd = cmd.arg("--no-create-home");
        if new.system {
            cmd = cmd.arg("--system");
        }
        if let Some(c) = &new.comment {
            cmd = cmd.arg("--comment").arg(c);
        }
        let secret = new.shadow.as_ref().map(Secret::expose).unwrap_or_default();
        if let Some(w) = new.shadow.as_ref().filter(|w| w.expose() != "!") {
            cmd = cmd.arg("--password").arg(w.expose());
        }
        run_tool(&cmd.arg(&self.name), &[secret])?;
        if new.create_home {
            self.make_home(ctx, new.home.as_deref(), true)?;
        }
        Ok(())
    }

    /// `userdel` without `--remove` (which follows symlinks), then the home and mail
    /// spool the diff chose deleted through the host's walk, each checked again right
    /// before: still not a symlink, still the account's.
    fn delete(
        &self,
        ctx: &ApplyCtx,
        uid: u32,
        home: Option<&str>,
        spool: Option<&str>,
    ) -> Result<(), ResourceError> {
        let mut doomed = Vec::new();
        if let Some(home) = home {
            if refuse_linked_home(ctx.host, home)?.is_some_and(|s| s.uid == uid) {
                doomed.push(home);
            }
        }
        if let Some(spool) = spool {
            if ctx.host.lstat(spool)?.is_some_and(|s| s.uid == uid) {
                doomed.push(spool);
            }
        }
        run_tool(&shadow_tool(ctx.host, "userdel").arg(&self.name), &[])?;
        for path in doomed {
            ctx.host.remove(path)?;
        }
        Ok(())
    }

    /// One `usermod` for the account's fields (a uid change under another root runs
    /// on its own, chrooted), then a missing home.
    fn modify(&self, ctx: &ApplyCtx, ops: &[&Op]) -> Result<(), ResourceError> {
        let mut args: Vec<String> = Vec::new();
        let mut set = |flag: &str, value: Option<String>| {
            args.push(flag.to_string());
            args.extend(value);
        };
        let mut secret = "";
        let mut home = None;
        let sets_password = ops.iter().any(|op| matches!(op, Op::SetPassword(_)));
        for op in ops {
            match op {
                Op::SetUid { to, .. } if ctx.host.is_machine_root() => {
                    set("--uid", Some(to.to_string()))
                }
                Op::SetUid { to, .. } => {
                    // `usermod --prefix --uid` moves the lastlog/faillog records in the
                    // *machine's* /var/log (shadow 4.13 does not prefix them); chrooted
                    // with --root it moves the target's, and skips the machine's /proc
                    // busy check, which says nothing about the target.
                    let cmd = Cmd::new("usermod")
                        .arg("--root")
                        .arg(ctx.host.root().display().to_string())
                        .arg("--uid")
                        .arg(to.to_string())
                        .arg(&self.name);
                    run_tool(&cmd, &[])?;
                }
                Op::SetPrimaryGroup { to, .. } => set("--gid", Some(to.clone())),
                Op::SetGroups { from, to, append } => {
                    let groups: Vec<&str> = to
                        .iter()
                        .filter(|g| !*append || !from.contains(g))
                        .map(String::as_str)
                        .collect();
                    if *append {
                        set("--append", None);
                    }
                    set("--groups", Some(groups.join(",")));
                }
                Op::SetShell { to, .. } => set("--shell", Some(to.clone())),
                Op::SetHome { to, .. } => set("--home", Some(to.clone())),
                Op::SetComment { to, .. } => set("--comment", Some(to.clone())),
                Op::SetPassword(field) => {
                    secret = field.expose();
                    set("--password", Some(field.expose().to_string()));
                }
                // The password written carries the lock state already.
                Op::Lock | Op::Unlock if sets_password => {}
                Op::Lock => set("--lock", None),
                Op::Unlock => set("--unlock", None),
                Op::CreateHome { home: h } => home = Some(h.as_str()),
                // Applied on their own by `apply_ops`.
                Op::Create(_) | Op::Delete { .. } => {}
            }
        }
        if !args.is_empty() {
            let cmd = shadow_tool(ctx.host, "usermod").args(args).arg(&self.name);
            run_tool(&cmd, &[secret])?;
        }
        if let Some(home) = home {
            self.make_home(ctx, Some(home), false)?;
        }
        Ok(())
    }

    /// Creates a missing home (`home`, else the account's), owned by the account,
    /// with the mode useradd would give it; a new account's home gets the target's
    /// /etc/skel (as `useradd -m` would), a recreated one stays empty. An existing
    /// home is left as it is.
    fn make_home(
        &self,
        ctx: &ApplyCtx,
        home: Option<&str>,
        with_skel: bool,
    ) -> Result<(), ResourceError> {
        let accounts = ctx.host.accounts()?;
        let Some(u) = accounts.user(&self.name) else {
            return Err(ResourceError::Failed(format!(
                "account `{}` vanished while applying",
                self.name
            )));
        };
        let home = home.unwrap_or(&u.home);
        let defs = read_login_defs(ctx.host)?;
        let perms = Perms {
            uid: Some(u.uid),
            gid: Some(u.gid),
            mode: Some(defs.home_mode()),
        };
        if refuse_linked_home(ctx.host, home)?.is_some() {
            return Ok(());
        }
        let mut implied = Vec::new();
        ctx.host.create_dir(home, &perms, &mut implied)?;
        if with_skel && ctx.host.lstat("/etc/skel")?.map(|s| s.kind) == Some(FileKind::Directory) {
            copy_skel(ctx.host, "/etc/skel", home, u.uid, u.gid)?;
        }
        Ok(())
    }
}

/// Copies the target's skeleton into a new home through the host layer: files and
/// directories keep their modes and belong to the account; symlinks are recreated as
/// they are; anything else is skipped, as useradd does.
fn copy_skel(host: &Host, from: &str, to: &str, uid: u32, gid: u32) -> Result<(), ResourceError> {
    for name in host.list_dir(from)? {
        let (src, dst) = (format!("{from}/{name}"), format!("{to}/{name}"));
        let Some((stat, content)) = host.read(&src)? else {
            continue;
        };
        let perms = Perms {
            uid: Some(uid),
            gid: Some(gid),
            mode: Some(stat.mode),
        };
        let mut implied = Vec::new();
        match (stat.kind, content) {
            (FileKind::Directory, _) => {
                host.create_dir(&dst, &perms, &mut implied)?;
                copy_skel(host, &src, &dst, uid, gid)?;
            }
            (FileKind::File, Some(bytes)) => {
                host.write_atomic(&dst, &bytes, &perms, &mut implied, None)?
            }
            (FileKind::Symlink, _) => {
                if let Some(target) = host.read_link(&src)? {
                    host.set_symlink(&dst, &target, &mut implied)?;
                }
            }
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::group::tests::{accounts, decode_all, defs, errors};
    use super::*;

    const HASH: &str = "$6$Fq9xTn2rVw8kLmPz$Q41IOYv70.Z9jIZsO246KtSOq3v.7Cx4cPKmE7OGstpfLEblrWOsNbivXenN8ZMkD.JPdWKHfIQj1c5eUTj2I1";

    fn shadow() -> Vec<ShadowEntry> {
        parse_shadow(include_str!("../../tests/fixtures/parse/shadow")).unwrap_or_default()
    }

    fn catalog(text: &str) -> Catalog {
        let (res, d) = decode_all(text);
        assert!(errors(&d).is_empty(), "{:?}", errors(&d));
        Catalog::new(res)
    }

    fn user<'c>(c: &'c Catalog, name: &str) -> &'c User {
        c.typed::<User>(&ResourceId::new("user", name))
            .unwrap_or_else(|| panic!("no user {name}"))
    }

    /// What observing would find on a host with `accounts` and the fixture shadow.
    fn observed_on(c: &Catalog, name: &str, accounts: Accounts) -> Observed {
        Observed {
            declared: user(c, name).declared(&accounts, c),
            accounts,
            shadow: Some(shadow()),
            defs: defs(),
            ..Observed::default()
        }
    }

    /// The plan's change, described from the diff's operations.
    fn plan_in(catalog: &Catalog, name: &str, observed: Observed) -> Result<Change, ResourceError> {
        super::super::contract::diff(user(catalog, name), Box::new(observed), &DepView::none())
    }

    fn plan_of(text: &str) -> Result<Change, ResourceError> {
        let c = catalog(text);
        let name = c.resources[0].id().name.clone();
        plan_in(&c, &name, observed_on(&c, &name, accounts()))
    }

    fn ops_of(text: &str) -> Result<Vec<Op>, ResourceError> {
        let c = catalog(text);
        let name = c.resources[0].id().name.clone();
        let o = observed_on(&c, &name, accounts());
        user(&c, &name).diff(&o, &DepView::none()).map(|d| d.ops)
    }

    fn failed(r: Result<Change, ResourceError>) -> String {
        match r {
            Err(ResourceError::Failed(m)) => m,
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    const RUNBOOK: &str = "\
- group: intelluxe-prod
  gid: 2001
  system: true
- user: intelluxe-service
  uid: 2000
  group: intelluxe-prod
  shell: /bin/false
  home: /opt/intelluxe
  create_home: false
  system: true
";

    #[test]
    fn the_diff_of_a_user_is_its_operations_or_a_refusal() {
        let names = |n: &[&str]| n.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let set = |from: &str, to: &str| (from.to_string(), to.to_string());
        let other = "$y$j9T$0123456789abcdefghijkl$AbCdEfGhIjKlMnOpQrStUvWxYz0123456789./AbCdE";
        let new = |groups: &[&str], member_of: &[&str]| NewAccount {
            uid: Some(3000),
            group: "svc".into(),
            user_group: true,
            groups: names(groups),
            member_of: names(member_of),
            shell: Some("/bin/sh".into()),
            home: None,
            comment: None,
            system: false,
            create_home: true,
            password_given: false,
            shadow: None,
        };
        let (sh, uid) = (set("/bin/false", "/usr/sbin/nologin"), (2000, 999));
        let cases: Vec<(String, Result<Vec<Op>, &str>)> =
            vec![
            (
                "- user: intelluxe-service\n  uid: 999\n  shell: /usr/sbin/nologin\n".into(),
                Ok(vec![
                    Op::SetUid {
                        from: uid.0,
                        to: uid.1,
                    },
                    Op::SetShell {
                        from: sh.0,
                        to: sh.1,
                    },
                ]),
            ),
            (
                "- user: justin\n  groups: [sudo]\n  append: false\n".into(),
                Ok(vec![Op::SetGroups {
                    from: names(&["intelluxe", "sudo"]),
                    to: names(&["sudo"]),
                    append: false,
                }]),
            ),
            (
                "- user: justin\n  groups: [users]\n  append: true\n".into(),
                Ok(vec![Op::SetGroups {
                    from: names(&["intelluxe", "sudo"]),
                    to: names(&["intelluxe", "sudo", "users"]),
                    append: true,
                }]),
            ),
            (
                "- user: justin\n  group: sudo\n  home: /srv/j\n  comment: J\n".into(),
                Ok(vec![
                    Op::SetPrimaryGroup {
                        from: "justin".into(),
                        to: "sudo".into(),
                    },
                    Op::SetHome {
                        from: "/home/justin".into(),
                        to: "/srv/j".into(),
                    },
                    Op::SetComment {
                        from: "Justin,,,".into(),
                        to: "J".into(),
                    },
                ]),
            ),
            ("- user: justin\n  locked: true\n".into(), Ok(vec![])),
            ("- user: justin\n  locked: false\n".into(), Ok(vec![Op::Unlock])),
            (
                format!("- user: justin\n  password: \"{other}\"\n"),
                Ok(vec![Op::SetPassword(Secret(format!("!{other}")))]),
            ),
            (
                format!("- user: justin\n  password: \"{other}\"\n  locked: false\n"),
                Ok(vec![Op::SetPassword(Secret(other.into())), Op::Unlock]),
            ),
            (
                "- user: justin\n  state: absent\n".into(),
                Ok(vec![Op::Delete {
                    uid: 1000,
                    home: None,
                    spool: None,
                }]),
            ),
            ("- user: ghost\n  state: absent\n".into(), Ok(vec![])),
            (
                "- user: svc\n  uid: 3000\n  groups: [sudo]\n  append: true\n  shell: /bin/sh\n"
                    .into(),
                Ok(vec![Op::Create(Box::new(new(&["sudo"], &[])))]),
            ),
            (
                "- user: svc\n  uid: 3000\n  shell: /bin/sh\n- group: ops\n  members: [svc]\n\
                 - group: sudo\n  members: [justin, svc]\n"
                    .into(),
                Ok(vec![Op::Create(Box::new(new(&[], &["ops", "sudo"])))]),
            ),
            (
                "- user: intelluxe-service\n  uid: 1000\n".into(),
                Err("`justin`"),
            ),
            (
                "- user: svc\n  group: nosuch\n".into(),
                Err("neither declared nor present"),
            ),
            (
                "- user: intelluxe-service\n  locked: false\n".into(),
                Err("without any password"),
            ),
        ];
        for (text, want) in cases {
            match (ops_of(&text), want) {
                (Ok(ops), Ok(want)) => assert_eq!(ops, want, "{text}"),
                (Err(e), Err(msg)) => assert!(e.to_string().contains(msg), "{text}: {e}"),
                (got, want) => panic!("{text}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn a_home_is_deleted_with_its_account_only_as_the_diff_decided() {
        let cat = catalog("- user: justin\n  state: absent\n  remove_home: true\n");
        let diff = |owner: Option<u32>, spool: Option<&str>| {
            let o = Observed {
                home_owner: owner,
                spool: spool.map(str::to_string),
                ..observed_on(&cat, "justin", accounts())
            };
            user(&cat, "justin")
                .diff(&o, &DepView::none())
                .map(|d| d.ops)
                .unwrap_or_else(|e| panic!("{e}"))
        };
        assert_eq!(
            diff(Some(1000), Some("/var/mail/justin")),
            vec![Op::Delete {
                uid: 1000,
                home: Some("/home/justin".into()),
                spool: Some("/var/mail/justin".into()),
            }]
        );
        // Someone else's home is kept; the spool (checked owned while observing) goes.
        assert_eq!(
            diff(Some(0), Some("/var/mail/justin")),
            vec![Op::Delete {
                uid: 1000,
                home: None,
                spool: Some("/var/mail/justin".into()),
            }]
        );
    }

    #[test]
    fn operations_never_print_a_password() {
        let op = Op::SetPassword(Secret(HASH.into()));
        let mut new = Box::new(NewAccount {
            uid: None,
            group: "a".into(),
            user_group: true,
            groups: Vec::new(),
            member_of: Vec::new(),
            shell: None,
            home: None,
            comment: None,
            system: false,
            create_home: false,
            password_given: true,
            shadow: Some(Secret(HASH.into())),
        });
        let shown = format!("{op:?} {:?}", Op::Create(new.clone()));
        assert!(!shown.contains("Fq9xTn2rVw8kLmPz"), "{shown}");
        new.shadow = None;
        let c = catalog("- user: a\n");
        let mut change = Change::new(ResourceId::new("user", "a"), false);
        user(&c, "a").describe(&op, &mut change);
        user(&c, "a").describe(&Op::Create(new), &mut change);
        let json = serde_json::to_string(&change).unwrap_or_default();
        assert!(!json.contains("Fq9xTn2rVw8kLmPz"), "{json}");
    }

    #[test]
    fn passwords() {
        assert!(check_password(HASH).is_ok());
        assert!(check_password(
            "$y$j9T$0123456789abcdefghijkl$AbCdEfGhIjKlMnOpQrStUvWxYz0123456789./AbCdE"
        )
        .is_ok());
        assert!(
            check_password("$2b$12$abcdefghijklmnopqrstuuABCDEFGHIJKLMNOPQRSTUVWXYZ01234").is_ok()
        );
        assert!(check_password("!").is_ok());
        assert!(check_password("*").is_ok());
        for bad in [
            "hunter2",
            "correct horse battery staple",
            "$6$short$abc",
            "$9$salt$abcdefghijklmnopqrstuvwxyz",
            "abcdefghijklm",
            "",
            "!hunter2",
        ] {
            let msg = check_password(bad)
                .err()
                .unwrap_or_else(|| panic!("{bad} accepted"));
            if !bad.is_empty() {
                assert!(!msg.contains(bad), "{msg}");
            }
        }
    }

    #[test]
    fn runbook_accounts_on_the_recorded_host_are_in_sync() {
        let c = catalog(RUNBOOK);
        let o = observed_on(&c, "intelluxe-service", accounts());
        let change = plan_in(&c, "intelluxe-service", o);
        let change = change.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(change.action, Action::None, "{change:?}");
    }

    #[test]
    fn runbook_accounts_on_a_fresh_host() {
        let c = catalog(RUNBOOK);
        let u = c
            .typed::<User>(&ResourceId::new("user", "intelluxe-service"))
            .unwrap_or_else(|| panic!("no user"));
        let o = observed_on(&c, "intelluxe-service", Accounts::default());
        let change = plan_in(&c, "intelluxe-service", o).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(change.action, Action::Create);
        let group = change.fields.iter().find(|f| f.field == "group");
        assert_eq!(
            group.and_then(|f| f.after.as_deref()),
            Some("intelluxe-prod")
        );
        assert!(change.implied.is_empty(), "no private group: {change:?}");
        // uid 2000 with system: true is outside 100-999.
        assert_eq!(change.warnings.len(), 1, "{change:?}");
        assert!(
            change.warnings[0].contains("test.yaml:5:"),
            "{}",
            change.warnings[0]
        );
        assert_eq!(u.needs(), vec![Need::group("intelluxe-prod")]);
    }

    #[test]
    fn uid_change_is_a_field_diff() {
        let c = plan_of("- user: intelluxe-service\n  uid: 999\n  shell: /usr/sbin/nologin\n");
        let c = c.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.action, Action::Update);
        let uid = c.fields.iter().find(|f| f.field == "uid");
        assert_eq!(
            uid.map(|f| (f.before.as_deref(), f.after.as_deref())),
            Some((Some("2000"), Some("999")))
        );
        assert!(c.changes_field("shell"));
    }

    #[test]
    fn uid_of_another_account_is_refused() {
        let msg = failed(plan_of("- user: intelluxe-service\n  uid: 1000\n"));
        assert!(msg.contains("test.yaml:2:"), "{msg}");
        assert!(msg.contains("`justin`"), "{msg}");
    }

    #[test]
    fn unknown_primary_group_is_refused() {
        let msg = failed(plan_of("- user: svc\n  group: nosuch\n"));
        assert!(
            msg.contains("test.yaml:2:") && msg.contains("neither declared nor present"),
            "{msg}"
        );
        // Declared is enough.
        let ok = plan_of("- user: svc\n  group: newgrp\n  groups: [newer]\n  append: true\n- group: newgrp\n- group: newer\n");
        assert_eq!(ok.map(|c| c.action), Ok(Action::Create));
        // A numeric gid the target knows.
        assert_eq!(
            plan_of("- user: svc\n  group: 2001\n").map(|c| c.action),
            Ok(Action::Create)
        );
    }

    #[test]
    fn groups_exact_and_append() {
        // justin is in sudo and intelluxe.
        let c = plan_of("- user: justin\n  groups: [sudo]\n  append: false\n")
            .unwrap_or_else(|e| panic!("{e}"));
        let f = c.fields.iter().find(|f| f.field == "groups");
        assert_eq!(
            f.map(|f| (f.before.as_deref(), f.after.as_deref())),
            Some((Some("intelluxe,sudo"), Some("sudo")))
        );
        let c = plan_of("- user: justin\n  groups: [sudo]\n  append: true\n");
        assert_eq!(c.map(|c| c.action), Ok(Action::None));
        let c = plan_of("- user: justin\n  groups: [users]\n  append: true\n")
            .unwrap_or_else(|e| panic!("{e}"));
        let f = c.fields.iter().find(|f| f.field == "groups");
        assert_eq!(
            f.and_then(|f| f.after.as_deref()),
            Some("intelluxe,sudo,users")
        );
    }

    #[test]
    fn groups_need_explicit_append() {
        let (_, d) = decode_all("- user: justin\n  groups: [sudo]\n");
        let errs = errors(&d);
        assert!(errs.iter().any(|e| e.contains("append: true")), "{errs:?}");
    }

    #[test]
    fn password_is_never_shown() {
        let other = "$y$j9T$0123456789abcdefghijkl$AbCdEfGhIjKlMnOpQrStUvWxYz0123456789./AbCdE";
        let text = format!("- user: justin\n  password: \"{other}\"\n");
        let c = plan_of(&text).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.action, Action::Update);
        let shown = format!("{c:?} {}", serde_json::to_string(&c).unwrap_or_default());
        assert!(
            !shown.contains("0123456789abcdefghijkl") && !shown.contains("Fq9xTn2rVw8kLmPz"),
            "{shown}"
        );
        assert!(
            c.changes_field("password") && !c.changes_field("locked"),
            "{c:?}"
        );
        let f = c.fields.iter().find(|f| f.field == "password");
        assert_eq!(f.and_then(|f| f.after.as_deref()), Some(SENSITIVE));
        let cat = catalog(&text);
        assert!(!format!("{:?}", cat.resources).contains("0123456789abcdefghijkl"));
    }

    #[test]
    fn clear_text_password_is_refused_without_echo() {
        let (res, d) = decode_all("- user: deploy\n  password: Tr0ub4dor&3\n");
        assert!(res.is_empty() || errors(&d).len() == 1);
        let errs = errors(&d).join("\n");
        assert!(
            errs.contains("test.yaml:2:") && errs.contains("clear-text"),
            "{errs}"
        );
        assert!(!errs.contains("Tr0ub4dor"), "{errs}");
    }

    #[test]
    fn locking() {
        // justin's shadow entry is `!$6$...`: locked.
        let c = plan_of("- user: justin\n  locked: true\n");
        assert_eq!(c.map(|c| c.action), Ok(Action::None));
        let c = plan_of("- user: justin\n  locked: false\n").unwrap_or_else(|e| panic!("{e}"));
        assert!(
            c.changes_field("locked") && !c.changes_field("password"),
            "{c:?}"
        );
        // The same hash, given while locked, leaves the lock alone.
        let c = plan_of(&format!("- user: justin\n  password: \"{HASH}\"\n"));
        assert_eq!(c.map(|c| c.action), Ok(Action::None));
        // intelluxe-service has `!`: unlocking would leave no password.
        let msg = failed(plan_of("- user: intelluxe-service\n  locked: false\n"));
        assert!(msg.contains("without any password"), "{msg}");
        let c = plan_of("- user: deploy\n  locked: true\n").unwrap_or_else(|e| panic!("{e}"));
        assert!(c.changes_field("locked"));
    }

    #[test]
    fn want_password_table() {
        let c = catalog(&format!("- user: a\n  password: \"{HASH}\"\n  locked: true\n- user: b\n  locked: true\n- user: c\n  password: \"*\"\n  locked: true\n"));
        let get = |n: &str| {
            c.typed::<User>(&ResourceId::new("user", n))
                .unwrap_or_else(|| panic!("{n}"))
        };
        assert_eq!(get("a").want_password(None), Ok(Some(format!("!{HASH}"))));
        assert_eq!(
            get("a").want_password(Some(HASH)),
            Ok(Some(format!("!{HASH}")))
        );
        assert_eq!(get("b").want_password(None), Ok(Some("!".into())));
        assert_eq!(get("b").want_password(Some("*")), Ok(Some("!*".into())));
        assert_eq!(get("c").want_password(Some("!")), Ok(Some("!*".into())));
    }

    #[test]
    fn removal_keeps_home_unless_asked() {
        let c = plan_of("- user: justin\n  state: absent\n").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.action, Action::Delete);
        assert!(
            c.notes.iter().any(|n| n.contains("/home/justin is kept")),
            "{c:?}"
        );
        let cat = catalog("- user: justin\n  state: absent\n  remove_home: true\n");
        let owned = Observed {
            home_owner: Some(1000),
            ..observed_on(&cat, "justin", accounts())
        };
        let c = plan_in(&cat, "justin", owned).unwrap_or_else(|e| panic!("{e}"));
        assert!(c.warnings.iter().any(|n| n.contains("deleted")), "{c:?}");
        let c = plan_of("- user: ghost\n  state: absent\n");
        assert_eq!(c.map(|c| c.action), Ok(Action::None));
    }

    #[test]
    fn a_home_is_deleted_only_when_owned_and_not_shared() {
        let a = accounts();
        let justin = a
            .user("justin")
            .unwrap_or_else(|| panic!("fixture has justin"));
        let (home, uid) = (justin.home.clone(), justin.uid);
        let cases: [(&str, u32, Option<u32>, Option<&str>); 4] = [
            (&home, uid, Some(uid), None),
            (&home, uid, None, Some("does not exist")),
            (&home, uid, Some(0), Some("owned by uid 0")),
            ("/", uid, Some(uid), Some("root directory")),
        ];
        for (home, uid, owner, kept) in cases {
            let why = home_kept_because(&a, "justin", home, uid, owner);
            match kept {
                None => assert_eq!(why, None, "{home} {owner:?}"),
                Some(k) => assert!(why.as_deref().is_some_and(|w| w.contains(k)), "{why:?}"),
            }
        }
        let root = a.user("root").unwrap_or_else(|| panic!("fixture has root"));
        let shared = home_kept_because(&a, "justin", &root.home, uid, Some(uid));
        assert!(shared.is_some_and(|w| w.contains("also the home of root")));
    }

    #[test]
    fn missing_home_is_created_only_when_asked() {
        let c = catalog("- user: justin\n  create_home: true\n- user: intelluxe-service\n");
        let missing = |name: &str| Observed {
            home_exists: Some(false),
            ..observed_on(&c, name, accounts())
        };
        let ch = plan_in(&c, "justin", missing("justin")).unwrap_or_else(|e| panic!("{e}"));
        assert!(ch.changes_field("home directory"));
        let ch = plan_in(&c, "intelluxe-service", missing("intelluxe-service"))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(ch.action, Action::None);
    }

    #[test]
    fn decode_errors() {
        let (res, d) = decode_all(
            "- user: 9lives\n- user: ok\n  shell: bin/false\n  comment: \"a:b\"\n  uid: x\n  group: Bad\n  hme: /x\n",
        );
        let errs = errors(&d);
        assert_eq!(res.len(), 1);
        for want in [
            "test.yaml:1:",
            "absolute path",
            "`:`",
            "uid",
            "not a valid account name",
            "did you mean `home`",
        ] {
            assert!(errs.iter().any(|e| e.contains(want)), "{want}: {errs:?}");
        }
    }

    #[test]
    fn cross_resource_checks() {
        let c = catalog(
            "- group: ops\n  members: [alice]\n- group: gone\n  state: absent\n\
             - user: alice\n  uid: 3000\n  groups: [dev]\n  append: false\n\
             - user: bob\n  uid: 3000\n  group: gone\n  groups: [ops]\n  append: true\n- group: dev\n",
        );
        let diags: Vec<String> = c
            .resources
            .iter()
            .flat_map(|r| r.validate(&c))
            .map(|d| d.to_string())
            .collect();
        let all = diags.join("\n");
        assert!(
            all.contains("uid 3000 is also declared for user `alice`"),
            "{all}"
        );
        assert!(
            all.contains("group `gone` is declared `state: absent`"),
            "{all}"
        );
        assert!(all.contains("group `ops` lists `alice`"), "{all}");
        assert!(all.contains("`bob` lists group `ops`"), "{all}");
        assert_eq!(diags.len(), 4, "{all}");
    }

    #[test]
    fn declared_member_joins_at_creation() {
        let c = catalog("- group: ops\n  members: [carol]\n- user: carol\n");
        let ch = plan_in(&c, "carol", observed_on(&c, "carol", accounts()))
            .unwrap_or_else(|e| panic!("{e}"));
        let f = ch.fields.iter().find(|f| f.field == "groups");
        assert_eq!(f.and_then(|f| f.after.as_deref()), Some("ops"));
        assert!(
            ch.implied.iter().any(|i| i.contains("group carol")),
            "{ch:?}"
        );
    }
}
