//! The `user` kind: a local account of the target root, observed from its
//! /etc/passwd, /etc/group and /etc/shadow (never the machine's NSS) and changed with
//! `useradd`/`usermod`/`userdel` (`--prefix` when the root is not `/`; a uid change
//! chrooted with `--root`, see `update`).
//!
//! Passwords are only ever crypt hashes (or `!`/`*`), never shown: not in plans,
//! errors, logs or `{:?}` output.

use std::any::Any;
use std::collections::{BTreeMap, BTreeSet};

use crate::diag::{Diagnostic, Span};
use crate::host::accounts::Accounts;
use crate::host::parse::shadow::{parse_shadow, LoginDefs, ShadowEntry};
use crate::host::{Cmd, FileKind, Host, HostError, Perms, Stat};
use crate::id::ResourceId;
use crate::manifest::decode::{Decoder, Fields};
use crate::plan::{fingerprint, sha256_hex, Action, Change, SENSITIVE};

use super::group::{
    account_id, at, decode_names, field_span, id_change_warning, owned_paths, read_login_defs,
    read_text, run_tool, shadow_tool, show_list, tools_lock, valid_account_name,
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

/// What the target holds for one account, beyond /etc/passwd.
#[derive(Debug, Default)]
pub struct Observed<'a> {
    /// The target's /etc/shadow, when the password or lock is managed and it exists.
    pub shadow: Option<&'a [ShadowEntry]>,
    /// Whether the account's (desired or current) home exists, when that matters.
    pub home_exists: Option<bool>,
    /// Who owns the current home, when `remove_home` would delete it (`None`: missing).
    pub home_owner: Option<u32>,
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

    /// Pure: the desired account against the target's accounts → the change, or the
    /// problems that refuse it (each naming its manifest place).
    pub fn diff(
        &self,
        accounts: &Accounts,
        observed: &Observed,
        defs: &LoginDefs,
        catalog: &Catalog,
    ) -> Result<Change, ResourceError> {
        let mut change = Change::new(self.id.clone(), self.meta.secret);
        change.desired = self.desired_fingerprint();
        let entry = accounts.user(&self.name);
        let current_groups: Vec<String> = accounts
            .groups
            .iter()
            .filter(|g| g.members.contains(&self.name))
            .map(|g| g.name.clone())
            .collect();
        let current_pw = self.current_password(accounts, observed.shadow);
        change.live = match entry {
            Some(u) => {
                let pw = current_pw
                    .map(|p| sha256_hex(p.as_bytes()))
                    .unwrap_or_default();
                let line = format!(
                    "{}:{}:{}:{}:{}:{}",
                    u.name, u.uid, u.gid, u.gecos, u.home, u.shell
                );
                fingerprint([
                    line.as_bytes(),
                    show_list(&current_groups).as_bytes(),
                    pw.as_bytes(),
                ])
            }
            None => fingerprint([b"absent".as_slice()]),
        };
        let mut errors = Vec::new();

        if self.state == Ensure::Absent {
            if let Some(u) = entry {
                change.action = Action::Delete;
                change.secret_field("uid", Some(u.uid.to_string()), None);
                if self.remove_home {
                    match home_kept_because(
                        accounts,
                        &self.name,
                        &u.home,
                        u.uid,
                        observed.home_owner,
                    ) {
                        None => change.warnings.push(format!(
                            "home {} and the mail spool of `{}` are deleted (remove_home: true)",
                            u.home, self.name
                        )),
                        Some(why) => change.notes.push(format!(
                            "home {} is kept although remove_home: true: {why}; the mail spool \
                             of `{}` is deleted",
                            u.home, self.name
                        )),
                    }
                } else {
                    change
                        .notes
                        .push(format!("home {} is kept (remove_home: false)", u.home));
                }
            }
            return finish(change, errors);
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
            if !self.group_available(accounts, catalog, g) {
                errors.push(at(
                    self.span_of("group"),
                    "group",
                    format!("primary group `{g}` is neither declared nor present on the target"),
                ));
            }
        }
        for g in self.groups.iter().flatten() {
            if !self.group_available(accounts, catalog, g) {
                errors.push(at(
                    self.span_of("groups"),
                    "groups",
                    format!("group `{g}` is neither declared nor present on the target"),
                ));
            }
        }
        let want_pw = match self.want_password(entry.and(current_pw)) {
            Ok(w) => w,
            Err(msg) => {
                errors.push(at(self.span_of("locked"), "locked", msg));
                None
            }
        };

        match entry {
            None => {
                change.action = Action::Create;
                if let Some(uid) = self.uid {
                    change.secret_field("uid", None, Some(uid.to_string()));
                    let (lo, hi) = defs.sys_uid_range();
                    if self.system && !(lo..=hi).contains(&uid) {
                        change.warnings.push(format!(
                            "{}: `system: true` but uid {uid} is outside the target's system range {lo}-{hi} \
                             (SYS_UID_MIN/SYS_UID_MAX in /etc/login.defs)",
                            self.span_of("uid")
                        ));
                    }
                } else {
                    change.notes.push("uid chosen by useradd".into());
                }
                match &self.group {
                    Some(g) => change.secret_field("group", None, Some(g.clone())),
                    None if accounts.group(&self.name).is_some()
                        || self.declared_group(catalog, &self.name).is_some() =>
                    {
                        change.secret_field("group", None, Some(self.name.clone()));
                    }
                    None => {
                        change.secret_field("group", None, Some(self.name.clone()));
                        change.implied.push(format!(
                            "group {} (gid chosen by useradd; declare `group:` to choose)",
                            self.name
                        ));
                    }
                }
                let mut joins: BTreeSet<String> = self.groups.iter().flatten().cloned().collect();
                joins.extend(self.member_of_declared(catalog).into_iter().cloned());
                if !joins.is_empty() {
                    change.secret_field("groups", None, Some(show_list(&joins)));
                }
                for (field, value) in [
                    ("shell", &self.shell),
                    ("home", &self.home),
                    ("comment", &self.comment),
                ] {
                    if let Some(v) = value {
                        change.secret_field(field, None, Some(v.clone()));
                    }
                }
                change.secret_field("create_home", None, Some(self.create_home.to_string()));
                if self.password.is_some() {
                    change.field("password", None, Some(SENSITIVE.into()));
                }
                if let Some(w) = &want_pw {
                    change.secret_field("locked", None, Some(w.starts_with('!').to_string()));
                }
            }
            Some(u) => {
                if let Some(uid) = self.uid {
                    if u.uid != uid {
                        change.secret_field("uid", Some(u.uid.to_string()), Some(uid.to_string()));
                    }
                }
                if let Some(g) = &self.group {
                    let same = match g.parse::<u32>() {
                        Ok(gid) => u.gid == gid,
                        Err(_) => accounts.group_by_gid(u.gid).is_some_and(|x| x.name == *g),
                    };
                    if !same {
                        change.secret_field(
                            "group",
                            Some(accounts.group_name(u.gid)),
                            Some(g.clone()),
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
                        change.secret_field(
                            "groups",
                            Some(show_list(have.iter().copied())),
                            Some(show_list(target.iter().copied())),
                        );
                    }
                }
                for (field, want, have) in [
                    ("shell", &self.shell, &u.shell),
                    ("home", &self.home, &u.home),
                    ("comment", &self.comment, &u.gecos),
                ] {
                    if let Some(w) = want {
                        if w != have {
                            change.secret_field(field, Some(have.clone()), Some(w.clone()));
                        }
                    }
                }
                if self.create_home_given && self.create_home && observed.home_exists == Some(false)
                {
                    let home = self.home.as_deref().unwrap_or(&u.home);
                    change.secret_field(
                        "home directory",
                        Some("missing".into()),
                        Some(format!("{home} (created)")),
                    );
                }
                if let (Some(want), Some(cur)) = (&want_pw, current_pw) {
                    let open = |s: &str| {
                        s.strip_prefix('!')
                            .map(str::to_string)
                            .unwrap_or_else(|| s.to_string())
                    };
                    if open(want) != open(cur) {
                        change.field("password", Some(SENSITIVE.into()), Some(SENSITIVE.into()));
                    }
                    if want.starts_with('!') != cur.starts_with('!') {
                        change.secret_field(
                            "locked",
                            Some(cur.starts_with('!').to_string()),
                            Some(want.starts_with('!').to_string()),
                        );
                    }
                }
                if !change.fields.is_empty() {
                    change.action = Action::Update;
                }
            }
        }
        finish(change, errors)
    }
}

fn finish(change: Change, errors: Vec<String>) -> Result<Change, ResourceError> {
    if errors.is_empty() {
        Ok(change)
    } else {
        Err(ResourceError::Failed(errors.join("\n")))
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

    fn plan(&self, ctx: &PlanCtx) -> Result<Change, ResourceError> {
        let manages_pw =
            self.state == Ensure::Present && (self.password.is_some() || self.locked.is_some());
        let shadow = if manages_pw {
            read_shadow(ctx.host)?
        } else {
            None
        };
        let entry = ctx.accounts.user(&self.name);
        let home_exists = match (entry, self.create_home_given && self.create_home) {
            (Some(u), true) => {
                let home = self.home.as_deref().unwrap_or(&u.home);
                Some(ctx.host.lstat(home)?.is_some())
            }
            _ => None,
        };
        let home_owner = match (entry, self.state) {
            (Some(u), Ensure::Absent) if self.remove_home => {
                refuse_linked_home(ctx.host, &u.home)?.map(|s| s.uid)
            }
            _ => None,
        };
        if entry.is_none() && self.state == Ensure::Present && self.create_home {
            let home = match &self.home {
                Some(h) => h.clone(),
                None => default_home(ctx.host, &self.name)?,
            };
            refuse_linked_home(ctx.host, &home)?;
        }
        let observed = Observed {
            shadow: shadow.as_deref(),
            home_exists,
            home_owner,
        };
        let defs = read_login_defs(ctx.host)?;
        let mut change = self.diff(ctx.accounts, &observed, &defs, ctx.catalog)?;
        if let (Some(shell), Ensure::Present) = (&self.shell, self.state) {
            if !shell_exists(ctx.host, shell) {
                change.warnings.push(format!(
                    "shell {shell} does not exist on the target: logins as `{}` will fail",
                    self.name
                ));
            }
        }
        if let (Some(new), Some(u)) = (self.uid, entry) {
            if u.uid != new && change.changes_field("uid") {
                let paths = owned_paths(ctx.catalog, &self.name, u.uid, true);
                change
                    .warnings
                    .push(id_change_warning("uid", &self.name, u.uid, new, &paths));
            }
        }
        Ok(change)
    }

    fn apply(&self, ctx: &ApplyCtx, change: &Change) -> Result<(), ResourceError> {
        let _serial = tools_lock();
        match change.action {
            Action::None => Ok(()),
            Action::Delete => self.delete(ctx),
            Action::Create => self.create(ctx),
            Action::Update => self.update(ctx, change),
        }
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

impl User {
    fn create(&self, ctx: &ApplyCtx) -> Result<(), ResourceError> {
        let accounts = ctx.host.accounts()?;
        let mut cmd = shadow_tool(ctx.host, "useradd");
        if !ctx.host.is_machine_root() {
            // lastlog/faillog are not prefix-aware everywhere: keep off the machine's.
            cmd = cmd.arg("--no-log-init");
        }
        if let Some(uid) = self.uid {
            cmd = cmd.arg("--uid").arg(uid.to_string());
        }
        cmd = match &self.group {
            Some(g) => cmd.arg("--gid").arg(g),
            // Explicit either way, whatever USERGROUPS_ENAB says.
            None if accounts.group(&self.name).is_some() => cmd.arg("--gid").arg(&self.name),
            None => cmd.arg("--user-group"),
        };
        let mut joins: BTreeSet<&String> = self.groups.iter().flatten().collect();
        // Declared groups listing us could not add us before we existed.
        joins.extend(
            self.member_of_declared(ctx.catalog)
                .into_iter()
                .filter(|g| accounts.group(g).is_some()),
        );
        if !joins.is_empty() {
            cmd = cmd.arg("--groups").arg(
                joins
                    .into_iter()
                    .map(String::as_str)
                    .collect::<Vec<_>>()
                    .join(","),
            );
        }
        if let Some(shell) = &self.shell {
            cmd = cmd.arg("--shell").arg(shell);
        }
        if let Some(home) = &self.home {
            cmd = cmd.arg("--home-dir").arg(home);
        }
        // useradd's own home creation follows symlinks (a symlinked /home under the
        // root would put the home, chowned to the new uid, outside it): the home is
        // made afterwards through the host's symlink-refusing walk.
        cmd = cmd.arg("--no-create-home");
        if self.system {
            cmd = cmd.arg("--system");
        }
        if let Some(c) = &self.comment {
            cmd = cmd.arg("--comment").arg(c);
        }
        let want = self.want_password(None).map_err(ResourceError::Failed)?;
        let secret = want.clone().unwrap_or_default();
        if let Some(w) = want.filter(|w| w != "!") {
            cmd = cmd.arg("--password").arg(w);
        }
        run_tool(&cmd.arg(&self.name), &[secret.as_str()])?;
        if self.create_home {
            self.make_home(ctx, true)?;
        }
        Ok(())
    }

    /// `userdel` without `--remove` (which follows symlinks), then the home and mail
    /// spool deleted through the host's walk, when [`home_kept_because`] allows.
    fn delete(&self, ctx: &ApplyCtx) -> Result<(), ResourceError> {
        let accounts = ctx.host.accounts()?;
        let gone = accounts.user(&self.name).map(|u| (u.home.clone(), u.uid));
        let mut doomed = Vec::new();
        if let (true, Some((home, uid))) = (self.remove_home, &gone) {
            let owner = refuse_linked_home(ctx.host, home)?.map(|s| s.uid);
            if home_kept_because(&accounts, &self.name, home, *uid, owner).is_none() {
                doomed.push(home.clone());
            }
            let spool = format!(
                "{}/{}",
                read_login_defs(ctx.host)?
                    .get("MAIL_DIR")
                    .filter(|d| d.starts_with('/') && !d.split('/').any(|c| c == ".."))
                    .unwrap_or("/var/mail")
                    .trim_end_matches('/'),
                self.name
            );
            if ctx.host.lstat(&spool)?.is_some_and(|s| s.uid == *uid) {
                doomed.push(spool);
            }
        }
        run_tool(&shadow_tool(ctx.host, "userdel").arg(&self.name), &[])?;
        for path in doomed {
            ctx.host.remove(&path)?;
        }
        Ok(())
    }

    fn update(&self, ctx: &ApplyCtx, change: &Change) -> Result<(), ResourceError> {
        let mut args: Vec<String> = Vec::new();
        let mut set = |flag: &str, value: Option<String>| {
            args.push(flag.to_string());
            args.extend(value);
        };
        let mut secret = String::new();
        if let (Some(uid), true) = (self.uid, change.changes_field("uid")) {
            if ctx.host.is_machine_root() {
                set("--uid", Some(uid.to_string()));
            } else {
                // `usermod --prefix --uid` moves the lastlog/faillog records in the
                // *machine's* /var/log (shadow 4.13 does not prefix them); chrooted
                // with --root it moves the target's, and skips the machine's /proc
                // busy check, which says nothing about the target.
                let cmd = Cmd::new("usermod")
                    .arg("--root")
                    .arg(ctx.host.root().display().to_string())
                    .arg("--uid")
                    .arg(uid.to_string())
                    .arg(&self.name);
                run_tool(&cmd, &[])?;
            }
        }
        if let (Some(g), true) = (&self.group, change.changes_field("group")) {
            set("--gid", Some(g.clone()));
        }
        if let (Some(groups), true) = (&self.groups, change.changes_field("groups")) {
            if self.append {
                set("--append", None);
            }
            set("--groups", Some(groups.join(",")));
        }
        if let (Some(sh), true) = (&self.shell, change.changes_field("shell")) {
            set("--shell", Some(sh.clone()));
        }
        if let (Some(h), true) = (&self.home, change.changes_field("home")) {
            set("--home", Some(h.clone()));
        }
        if let (Some(c), true) = (&self.comment, change.changes_field("comment")) {
            set("--comment", Some(c.clone()));
        }
        if change.changes_field("password") {
            // The lock state is part of the field written, so one --password does both.
            let accounts = ctx.host.accounts()?;
            let shadow = read_shadow(ctx.host)?;
            let current = self.current_password(&accounts, shadow.as_deref());
            let want = self
                .want_password(current)
                .map_err(ResourceError::Failed)?
                .unwrap_or_default();
            secret.clone_from(&want);
            set("--password", Some(want));
        } else if change.changes_field("locked") {
            let lock = self.locked == Some(true);
            set(if lock { "--lock" } else { "--unlock" }, None);
        }
        if !args.is_empty() {
            let cmd = shadow_tool(ctx.host, "usermod").args(args).arg(&self.name);
            run_tool(&cmd, &[secret.as_str()])?;
        }
        if change.changes_field("home directory") {
            self.make_home(ctx, false)?;
        }
        Ok(())
    }

    /// Creates a missing home, owned by the account, with the mode useradd would give
    /// it; a new account's home gets the target's /etc/skel (as `useradd -m` would),
    /// a recreated one stays empty. An existing home is left as it is.
    fn make_home(&self, ctx: &ApplyCtx, with_skel: bool) -> Result<(), ResourceError> {
        let accounts = ctx.host.accounts()?;
        let Some(u) = accounts.user(&self.name) else {
            return Err(ResourceError::Failed(format!(
                "account `{}` vanished while applying",
                self.name
            )));
        };
        let home = self.home.clone().unwrap_or_else(|| u.home.clone());
        let defs = read_login_defs(ctx.host)?;
        let perms = Perms {
            uid: Some(u.uid),
            gid: Some(u.gid),
            mode: Some(defs.home_mode()),
        };
        if refuse_linked_home(ctx.host, &home)?.is_some() {
            return Ok(());
        }
        let mut implied = Vec::new();
        ctx.host.create_dir(&home, &perms, &mut implied)?;
        if with_skel && ctx.host.lstat("/etc/skel")?.map(|s| s.kind) == Some(FileKind::Directory) {
            copy_skel(ctx.host, "/etc/skel", &home, u.uid, u.gid)?;
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

    fn plan_in(
        catalog: &Catalog,
        name: &str,
        observed: &Observed,
    ) -> Result<Change, ResourceError> {
        let u = catalog
            .typed::<User>(&ResourceId::new("user", name))
            .unwrap_or_else(|| panic!("no user {name}"));
        u.diff(&accounts(), observed, &defs(), catalog)
    }

    fn plan_of(text: &str) -> Result<Change, ResourceError> {
        let c = catalog(text);
        let name = c.resources[0].id().name.clone();
        let sh = shadow();
        plan_in(
            &c,
            &name,
            &Observed {
                shadow: Some(&sh),
                home_exists: None,
                home_owner: None,
            },
        )
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
        let sh = shadow();
        let change = plan_in(
            &c,
            "intelluxe-service",
            &Observed {
                shadow: Some(&sh),
                home_exists: None,
                home_owner: None,
            },
        );
        let change = change.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(change.action, Action::None, "{change:?}");
    }

    #[test]
    fn runbook_accounts_on_a_fresh_host() {
        let c = catalog(RUNBOOK);
        let u = c
            .typed::<User>(&ResourceId::new("user", "intelluxe-service"))
            .unwrap_or_else(|| panic!("no user"));
        let empty = Accounts::default();
        let change = u
            .diff(&empty, &Observed::default(), &defs(), &c)
            .unwrap_or_else(|e| panic!("{e}"));
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
        let owned = Observed {
            home_owner: Some(1000),
            ..Observed::default()
        };
        let cat = catalog("- user: justin\n  state: absent\n  remove_home: true\n");
        let c = plan_in(&cat, "justin", &owned).unwrap_or_else(|e| panic!("{e}"));
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
        let missing = Observed {
            home_exists: Some(false),
            ..Observed::default()
        };
        let ch = plan_in(&c, "justin", &missing).unwrap_or_else(|e| panic!("{e}"));
        assert!(ch.changes_field("home directory"));
        let ch = plan_in(&c, "intelluxe-service", &missing).unwrap_or_else(|e| panic!("{e}"));
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
        let u = c
            .typed::<User>(&ResourceId::new("user", "carol"))
            .unwrap_or_else(|| panic!("carol"));
        let ch = u
            .diff(&accounts(), &Observed::default(), &defs(), &c)
            .unwrap_or_else(|e| panic!("{e}"));
        let f = ch.fields.iter().find(|f| f.field == "groups");
        assert_eq!(f.and_then(|f| f.after.as_deref()), Some("ops"));
        assert!(
            ch.implied.iter().any(|i| i.contains("group carol")),
            "{ch:?}"
        );
    }
}
