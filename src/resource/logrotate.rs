//! `logrotate`: a typed rotation policy, rendered deterministically to
//! `/etc/logrotate.d/NAME` (a [`ManagedFile`]: root:root 0644, atomic write) and
//! validated in every plan by the real `logrotate -d`. See docs/logrotate.md.
//!
//! Why typed: logrotate reads a policy line by line and, on any bad value, skips the
//! whole block without failing anything (the runbook's `rotate 2555  # 7 years` means
//! no rotation at all, silently). Here every value is checked when the manifest is
//! loaded (with its `file:line:column`), and the rendering is checked by logrotate
//! itself while planning.
//!
//! Accounts: logrotate resolves `create` and `su` owners with the *machine's* NSS, not
//! the target root's. So the owners are checked by reconcile against the target's
//! /etc/passwd and /etc/group (and the declared accounts), and `logrotate -d` runs on a
//! rendering in which they are `root root` (which every machine has). Everything else
//! is the policy as it will be written, with its paths under the target root, against
//! a scratch state file (logrotate's real state is never read or written).

use std::any::Any;
use std::sync::Arc;

use crate::diag::Span;
use crate::host::fs::ScratchDir;
use crate::host::Cmd;
use crate::id::ResourceId;
use crate::manifest::decode::{format_mode, Decoder, Fields};
use crate::manifest::yaml::Value;
use crate::plan::Change;

use super::contract::{Contract, DepView, Diff};
use super::managed_file::{Content, ManagedFile, Op, Seen};
use super::perms::PermSpec;
use super::{
    parent_dir_need, ApplyCtx, Ensure, Meta, Need, PlanCtx, Provide, Purpose, Resource,
    ResourceError,
};

/// Where policies live; logrotate's main config includes this folder on Debian.
pub const DIR: &str = "/etc/logrotate.d";

/// File name endings logrotate skips in an included folder (its default `tabooext`):
/// a policy named like this would never be read.
const TABOO: &[&str] = &[
    ",v",
    ".cfsaved",
    ".disabled",
    ".dpkg-bak",
    ".dpkg-del",
    ".dpkg-dist",
    ".dpkg-new",
    ".dpkg-old",
    ".rpmnew",
    ".rpmorig",
    ".rpmsave",
    ".swp",
    ".ucf-dist",
    ".ucf-new",
    ".ucf-old",
    "~",
];

const FREQUENCIES: &[&str] = &["hourly", "daily", "weekly", "monthly", "yearly"];

/// A `prerotate`/`postrotate` script: one command (argv, quoted for /bin/sh) or a
/// script's lines as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Script {
    Argv(Vec<String>),
    Lines(String),
}

impl Script {
    /// The script's text as logrotate hands it to /bin/sh.
    pub fn text(&self) -> String {
        match self {
            Script::Argv(words) => words
                .iter()
                .map(|w| shell_quote(w))
                .collect::<Vec<_>>()
                .join(" "),
            Script::Lines(s) => s.trim_end().to_string(),
        }
    }
}

/// A word as /bin/sh reads it back unchanged.
fn shell_quote(w: &str) -> String {
    let plain = !w.is_empty()
        && w.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"@%+=:,./_-".contains(&b));
    if plain {
        w.to_string()
    } else {
        format!("'{}'", w.replace('\'', r"'\''"))
    }
}

/// `create {mode, owner, group}`.
#[derive(Debug, Clone, Default)]
pub struct Create {
    pub mode: Option<u32>,
    pub owner: Option<(String, Span)>,
    pub group: Option<(String, Span)>,
    pub span: Option<Span>,
}

/// One value of the policy, with where it is declared.
type At<T> = Option<(T, Span)>;

/// The policy's settings, as declared.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    pub paths: Vec<(String, Span)>,
    pub frequency: At<String>,
    pub rotate: At<u32>,
    pub maxage: At<u32>,
    pub size: At<String>,
    pub minsize: At<String>,
    pub maxsize: At<String>,
    pub missingok: At<bool>,
    pub notifempty: At<bool>,
    pub compress: At<bool>,
    pub delaycompress: At<bool>,
    pub compresscmd: At<String>,
    pub compressext: At<String>,
    pub dateext: At<bool>,
    pub dateformat: At<String>,
    pub create: Option<Create>,
    /// `su {owner, group}`: the account logrotate rotates as.
    pub su: Option<(String, String, Span)>,
    pub sharedscripts: At<bool>,
    pub prerotate: At<Script>,
    pub postrotate: At<Script>,
}

/// A rendered policy: the text and, for each line, the manifest place it comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    pub text: String,
    pub origins: Vec<Option<Span>>,
}

/// How to render: as written, or for `logrotate -d` on this machine.
#[derive(Debug, Clone, Copy)]
pub struct RenderFor<'a> {
    /// Paths with the target root in front (for logrotate to look at the target).
    pub root: Option<&'a str>,
    /// Owners as `root root`: they were checked against the target's accounts.
    pub root_owners: bool,
}

impl RenderFor<'_> {
    pub const TARGET: RenderFor<'static> = RenderFor {
        root: None,
        root_owners: false,
    };
}

impl Policy {
    /// The policy file, deterministic: settings in a fixed order, whatever order the
    /// manifest wrote them in.
    pub fn render(&self, name: &str, how: RenderFor) -> Rendered {
        let mut r = Rendered {
            text: String::new(),
            origins: Vec::new(),
        };
        let line = |r: &mut Rendered, text: String, at: Option<&Span>| {
            r.text.push_str(&text);
            r.text.push('\n');
            r.origins.push(at.cloned());
        };
        line(
            &mut r,
            format!("# logrotate[{name}], managed by reconcile: changes here are overwritten"),
            None,
        );
        let paths: Vec<String> = self
            .paths
            .iter()
            .map(|(p, _)| match how.root {
                Some(root) => format!("{}{p}", root.trim_end_matches('/')),
                None => p.clone(),
            })
            .collect();
        line(
            &mut r,
            format!("{} {{", paths.join(" ")),
            self.paths.first().map(|(_, s)| s),
        );
        let set = |r: &mut Rendered, text: String, at: &Span| {
            line(r, format!("    {text}"), Some(at));
        };
        let flag = |v: &At<bool>, yes: &str, no: &str| {
            v.as_ref()
                .map(|(b, s)| (if *b { yes } else { no }.to_string(), s.clone()))
        };
        if let Some((f, s)) = &self.frequency {
            set(&mut r, f.clone(), s);
        }
        if let Some((n, s)) = &self.rotate {
            set(&mut r, format!("rotate {n}"), s);
        }
        if let Some((n, s)) = &self.maxage {
            set(&mut r, format!("maxage {n}"), s);
        }
        for (key, v) in [
            ("size", &self.size),
            ("minsize", &self.minsize),
            ("maxsize", &self.maxsize),
        ] {
            if let Some((v, s)) = v {
                set(&mut r, format!("{key} {v}"), s);
            }
        }
        let flags = [
            flag(&self.missingok, "missingok", "nomissingok"),
            flag(&self.notifempty, "notifempty", "ifempty"),
            flag(&self.compress, "compress", "nocompress"),
            flag(&self.delaycompress, "delaycompress", "nodelaycompress"),
        ];
        for (text, s) in flags.into_iter().flatten() {
            set(&mut r, text, &s);
        }
        if let Some((v, s)) = &self.compresscmd {
            set(&mut r, format!("compresscmd {v}"), s);
        }
        if let Some((v, s)) = &self.compressext {
            set(&mut r, format!("compressext {v}"), s);
        }
        if let Some((text, s)) = flag(&self.dateext, "dateext", "nodateext") {
            set(&mut r, text, &s);
        }
        if let Some((v, s)) = &self.dateformat {
            set(&mut r, format!("dateformat {v}"), s);
        }
        if let Some(c) = &self.create {
            let mut words = vec!["create".to_string()];
            if let Some(m) = c.mode {
                words.push(format_mode(m));
            }
            for (o, _) in [&c.owner, &c.group].into_iter().flatten() {
                words.push(if how.root_owners {
                    "root".into()
                } else {
                    o.clone()
                });
            }
            if let Some(s) = &c.span {
                set(&mut r, words.join(" "), s);
            }
        }
        if let Some((o, g, s)) = &self.su {
            let (o, g) = if how.root_owners {
                ("root", "root")
            } else {
                (o.as_str(), g.as_str())
            };
            set(&mut r, format!("su {o} {g}"), s);
        }
        if let Some((text, s)) = flag(&self.sharedscripts, "sharedscripts", "nosharedscripts") {
            set(&mut r, text, &s);
        }
        for (key, script) in [
            ("prerotate", &self.prerotate),
            ("postrotate", &self.postrotate),
        ] {
            if let Some((script, s)) = script {
                set(&mut r, key.to_string(), s);
                for l in script.text().lines() {
                    if l.trim().is_empty() {
                        line(&mut r, String::new(), Some(s));
                    } else {
                        line(&mut r, format!("        {}", l.trim_end()), Some(s));
                    }
                }
                set(&mut r, "endscript".into(), s);
            }
        }
        line(&mut r, "}".into(), None);
        r
    }

    /// The accounts the policy names (create's owner and group, su's), with where.
    pub fn accounts(&self) -> Vec<(&str, &Span, bool, &'static str)> {
        let mut out = Vec::new();
        if let Some(c) = &self.create {
            if let Some((o, s)) = &c.owner {
                out.push((o.as_str(), s, true, "create"));
            }
            if let Some((g, s)) = &c.group {
                out.push((g.as_str(), s, false, "create"));
            }
        }
        if let Some((o, g, s)) = &self.su {
            out.push((o.as_str(), s, true, "su"));
            out.push((g.as_str(), s, false, "su"));
        }
        out
    }
}

#[derive(Debug)]
pub struct Logrotate {
    pub id: ResourceId,
    pub meta: Meta,
    pub name: String,
    pub ensure: Ensure,
    pub policy: Policy,
    pub rendered: Rendered,
    pub file: ManagedFile,
}

impl Logrotate {
    /// The scripts the policy runs (for lints: what they call).
    pub fn scripts(&self) -> Vec<(String, &Span)> {
        [&self.policy.prerotate, &self.policy.postrotate]
            .into_iter()
            .flatten()
            .map(|(s, at)| (s.text(), at))
            .collect()
    }
}

fn name_problem(name: &str) -> Option<String> {
    if !crate::manifest::decode::is_file_stem(name) {
        return Some(format!("`{name}` is not a policy file name: use letters, digits, `.`, `_` and `-` (not first `.`); it becomes {DIR}/NAME"));
    }
    TABOO
        .iter()
        .find(|t| name.ends_with(*t))
        .map(|t| format!("logrotate skips files in {DIR} whose name ends in `{t}` (its tabooext): the policy would never be read"))
}

/// A path of `paths`: absolute, no `..`, nothing logrotate would split or read as
/// syntax (whitespace, quotes, braces, `#`).
fn path_problem(p: &str) -> Option<String> {
    if !p.starts_with('/') {
        return Some(format!(
            "`{p}` is not absolute: logrotate paths start with /"
        ));
    }
    if p.split('/').any(|c| c == "..") {
        return Some(format!("`{p}` must not contain `..`"));
    }
    if p.ends_with('/') {
        return Some(format!(
            "`{p}` names a directory: logrotate rotates files; write `{p}*.log` or a file"
        ));
    }
    if let Some(c) = p
        .chars()
        .find(|c| c.is_whitespace() || "\"'{}#\\".contains(*c) || c.is_control())
    {
        return Some(format!(
            "`{p}` contains {c:?}, which logrotate would read as syntax"
        ));
    }
    None
}

/// The `#` that logrotate does not allow after a value (only whole comment lines).
fn comment_problem(v: &str) -> Option<String> {
    v.contains('#').then(|| {
        let value = v.split('#').next().unwrap_or("").trim();
        format!("`{v}` has a trailing comment: logrotate allows comments only on their own line and rejects the whole block (the 7-year retention silently never happens); write `{value}` and put the comment on its own YAML line")
    })
}

/// `size`-like values: bytes, or a number with k, M or G.
fn size_problem(v: &str) -> Option<String> {
    let digits = v.trim_end_matches(['k', 'K', 'M', 'G']);
    let ok = !digits.is_empty()
        && digits.bytes().all(|b| b.is_ascii_digit())
        && v.len() - digits.len() <= 1;
    (!ok).then(|| {
        comment_problem(v).unwrap_or_else(|| {
            format!("`{v}` is not a size: write bytes, or a number with k, M or G (`100k`, `10M`, `1G`)")
        })
    })
}

/// A word of the policy (compressext, dateformat, ...): one token, no comment.
fn word_problem(v: &str) -> Option<String> {
    if let Some(c) = comment_problem(v) {
        return Some(c);
    }
    (v.is_empty()
        || v.chars()
            .any(|c| c.is_whitespace() || "\"'{}\\".contains(c)))
    .then(|| format!("`{v}` must be one word without quotes or braces"))
}

/// A count such as `rotate`: a whole number; a string is explained, a negative number
/// refused (`rotate -1` keeps every old log forever).
fn count(d: &mut Decoder, f: &mut Fields, key: &'static str) -> At<u32> {
    let node = f.raw(key)?;
    let span = node.span.clone();
    match &node.value {
        Value::Str(s) if comment_problem(s).is_some() => {
            let msg = comment_problem(s).unwrap_or_default();
            d.error(&span, key, msg);
            None
        }
        Value::Int(n) if *n < 0 && key == "rotate" => {
            d.error(&span, key, format!("rotate: {n} keeps every rotated log forever (logrotate's \"never remove\"): a retention is a count; write how many rotations to keep (daily for 7 years: 2555) and `maxage` for a limit in days"));
            None
        }
        Value::Int(n) if *n < 0 => {
            d.error(
                &span,
                key,
                format!("{n} is negative; write a count of days (0 or more)"),
            );
            None
        }
        _ => f.u32(d, key).map(|n| (n, span)),
    }
}

fn flag(d: &mut Decoder, f: &mut Fields, key: &'static str) -> At<bool> {
    let span = f.raw(key)?.span.clone();
    f.bool(d, key).map(|b| (b, span))
}

fn checked(
    d: &mut Decoder,
    f: &mut Fields,
    key: &'static str,
    problem: fn(&str) -> Option<String>,
) -> At<String> {
    let (v, span) = f.string(d, key)?;
    match problem(&v) {
        Some(msg) => {
            d.error(&span, key, msg);
            None
        }
        None => Some((v, span)),
    }
}

/// An account name of `create`/`su`: logrotate resolves names only (a number is an
/// "unknown user" to it).
fn account_name(d: &mut Decoder, f: &mut Fields, key: &'static str) -> Option<(String, Span)> {
    let (v, span) = f.name_or_id(d, key)?;
    if v.bytes().all(|b| b.is_ascii_digit()) {
        d.error(
            &span,
            key,
            format!("`{v}` is a number: logrotate resolves account names only; write the name"),
        );
        return None;
    }
    if let Some(msg) = word_problem(&v) {
        d.error(&span, key, msg);
        return None;
    }
    Some((v, span))
}

fn script(d: &mut Decoder, f: &mut Fields, key: &'static str) -> At<Script> {
    let node = f.raw(key)?;
    let span = node.span.clone();
    let s = match &node.value {
        Value::Seq(_) => {
            let words: Vec<String> = f.string_list(d, key).into_iter().map(|(w, _)| w).collect();
            if words.is_empty() {
                d.error(
                    &span,
                    key,
                    "an empty command; give the program and its arguments",
                );
                return None;
            }
            Script::Argv(words)
        }
        _ => Script::Lines(f.string(d, key)?.0),
    };
    if s.text().lines().any(|l| l.trim() == "endscript") {
        d.error(
            &span,
            key,
            "a line `endscript` would end the script early; logrotate reads it as the end",
        );
        return None;
    }
    if s.text().trim().is_empty() {
        d.error(&span, key, "an empty script");
        return None;
    }
    Some((s, span))
}

fn sub_fields<'a>(
    d: &mut Decoder,
    f: &mut Fields<'a>,
    key: &'static str,
) -> Option<(Fields<'a>, Span)> {
    let node = f.raw(key)?;
    match node.as_map() {
        Some(pairs) => Some((
            Fields::new(pairs, node.span.clone(), key),
            node.span.clone(),
        )),
        None => {
            d.error(
                &node.span,
                key,
                format!("expected a mapping, found {}", node.value.type_name()),
            );
            None
        }
    }
}

pub fn decode(
    d: &mut Decoder,
    name: (String, Span),
    meta: Meta,
    f: &mut Fields,
) -> Option<Box<dyn Resource>> {
    let (name, span) = name;
    let name_ok = match name_problem(&name) {
        Some(msg) => {
            d.error(&span, "logrotate", msg);
            false
        }
        None => true,
    };
    let ensure = Ensure::decode(d, f);
    let given = f.string_list(d, "paths");
    if given.is_empty() && ensure == Ensure::Present {
        let at = f.span.clone();
        d.error(
            &at,
            "paths",
            "`logrotate` requires the field `paths` (a list of log files, globs allowed)",
        );
    }
    let mut p = Policy {
        paths: given
            .into_iter()
            .filter(|(path, s)| match path_problem(path) {
                Some(msg) => {
                    d.error(s, "paths", msg);
                    false
                }
                None => true,
            })
            .collect(),
        ..Policy::default()
    };
    p.frequency = f.string(d, "frequency").and_then(|(v, s)| {
        if FREQUENCIES.contains(&v.as_str()) {
            Some((v, s))
        } else {
            let msg = comment_problem(&v).unwrap_or_else(|| {
                format!("`{v}` is not a frequency; use {}", FREQUENCIES.join(", "))
            });
            d.error(&s, "frequency", msg);
            None
        }
    });
    p.rotate = count(d, f, "rotate");
    p.maxage = count(d, f, "maxage");
    p.size = checked(d, f, "size", size_problem);
    p.minsize = checked(d, f, "minsize", size_problem);
    p.maxsize = checked(d, f, "maxsize", size_problem);
    p.missingok = flag(d, f, "missingok");
    p.notifempty = flag(d, f, "notifempty");
    p.compress = flag(d, f, "compress");
    p.delaycompress = flag(d, f, "delaycompress");
    p.compresscmd = f.string(d, "compresscmd").and_then(|(v, s)| {
        match word_problem(&v).or_else(|| {
            (!v.starts_with('/')).then(|| format!("`{v}` must be an absolute path to the program"))
        }) {
            Some(msg) => {
                d.error(&s, "compresscmd", msg);
                None
            }
            None => Some((v, s)),
        }
    });
    p.compressext = checked(d, f, "compressext", word_problem);
    p.dateext = flag(d, f, "dateext");
    p.dateformat = checked(d, f, "dateformat", word_problem);
    if let Some((mut cf, cspan)) = sub_fields(d, f, "create") {
        let c = Create {
            mode: cf.mode(d, "mode"),
            owner: account_name(d, &mut cf, "owner"),
            group: account_name(d, &mut cf, "group"),
            span: Some(cspan.clone()),
        };
        if c.group.is_some() && c.owner.is_none() && cf.has("group") && !cf.has("owner") {
            d.error(
                &cspan,
                "create",
                "`group` needs `owner` too: logrotate reads `create MODE OWNER GROUP` by position",
            );
        }
        cf.finish(d);
        p.create = Some(c);
    }
    if let Some((mut sf, sspan)) = sub_fields(d, f, "su") {
        let owner = account_name(d, &mut sf, "owner");
        let group = account_name(d, &mut sf, "group");
        if !sf.has("owner") || !sf.has("group") {
            d.error(&sspan, "su", "`su` needs both `owner` and `group`");
        }
        sf.finish(d);
        if let (Some((o, _)), Some((g, _))) = (owner, group) {
            p.su = Some((o, g, sspan));
        }
    }
    p.sharedscripts = flag(d, f, "sharedscripts");
    p.prerotate = script(d, f, "prerotate");
    p.postrotate = script(d, f, "postrotate");
    if p.delaycompress.as_ref().is_some_and(|(b, _)| *b)
        && !p.compress.as_ref().is_some_and(|(b, _)| *b)
    {
        if let Some((_, s)) = &p.delaycompress {
            d.warn(
                s,
                "delaycompress",
                "delaycompress does nothing without `compress: true`",
            );
        }
    }
    if !name_ok {
        return None;
    }
    let path = format!("{DIR}/{name}");
    let rendered = p.render(&name, RenderFor::TARGET);
    Some(Box::new(Logrotate {
        id: ResourceId::new("logrotate", name.clone()),
        file: ManagedFile {
            path,
            content: Some(Content::Bytes(Arc::from(rendered.text.as_bytes()))),
            // logrotate ignores a policy writable by others or not owned by root.
            perms: PermSpec {
                owner: Some(("0".into(), span.clone())),
                group: Some(("0".into(), span.clone())),
                mode: Some(0o644),
            },
            default_mode: 0o644,
            validate: None,
            origin: None,
            backup: false,
            hardlinks_allowed: false,
            secret: meta.secret,
        },
        meta,
        name,
        ensure,
        policy: p,
        rendered,
    }))
}

/// The directory a path's files are in: the part before its first glob component.
fn log_dir(path: &str) -> Option<String> {
    let mut dir = String::new();
    let mut parts = path.split('/').filter(|c| !c.is_empty()).peekable();
    while let Some(c) = parts.next() {
        if parts.peek().is_none() || c.contains(['*', '?', '[']) {
            break;
        }
        dir.push('/');
        dir.push_str(c);
    }
    (!dir.is_empty()).then_some(dir)
}

/// What observing found: the file, and what logrotate and the accounts say.
#[derive(Debug, Default)]
pub struct Observed {
    pub file: Seen,
    /// Why the policy cannot be installed (an unknown account, logrotate's rejection).
    pub rejected: Option<String>,
    pub warnings: Vec<String>,
}

impl Resource for Logrotate {
    fn id(&self) -> &ResourceId {
        &self.id
    }

    fn meta(&self) -> &Meta {
        &self.meta
    }

    fn provides(&self) -> Vec<Provide> {
        vec![Provide::Path(self.file.path.clone())]
    }

    fn needs(&self) -> Vec<Need> {
        let mut needs = vec![parent_dir_need(&self.file.path)];
        if self.ensure == Ensure::Absent {
            return needs;
        }
        // The folder the logs are in: its owner and mode are what logrotate checks.
        for (p, _) in &self.policy.paths {
            if let Some(dir) = log_dir(p) {
                needs.push(Need::directory(dir));
            }
        }
        for (name, _, is_user, _) in self.policy.accounts() {
            needs.push(if is_user {
                Need::account(name)
            } else {
                Need::group(name)
            });
        }
        needs
    }

    fn removes(&self) -> bool {
        self.ensure == Ensure::Absent
    }

    fn managed_path(&self) -> Option<&str> {
        Some(&self.file.path)
    }

    crate::on_the_contract!();

    fn as_any(&self) -> &dyn Any {
        self
    }
}

impl Contract for Logrotate {
    type State = Observed;
    type Op = Op;

    fn observe(&self, ctx: &PlanCtx) -> Result<Observed, ResourceError> {
        let mut o = Observed {
            file: self.file.observe(ctx, self.ensure)?,
            ..Observed::default()
        };
        if self.ensure == Ensure::Absent {
            return Ok(o);
        }
        // Accounts are the target's: checked here, not by logrotate (see the top).
        let mut unknown = Vec::new();
        for (name, at, is_user, field) in self.policy.accounts() {
            let known = if is_user {
                ctx.accounts.resolve_uid(name).is_some()
                    || ctx.catalog.provider_for(&Need::account(name)).is_some()
            } else {
                ctx.accounts.resolve_gid(name).is_some()
                    || ctx.catalog.provider_for(&Need::group(name)).is_some()
            };
            if !known {
                let (what, db, kind) = if is_user {
                    ("user", "/etc/passwd", "user")
                } else {
                    ("group", "/etc/group", "group")
                };
                unknown.push(format!("{field}: {what} `{name}` (declared at {at}) is not a {what} on the target (its {db}) and no {kind}[{name}] is declared: logrotate would reject the whole policy"));
            }
        }
        if !unknown.is_empty() {
            o.rejected = Some(unknown.join("\n  "));
            return Ok(o);
        }
        // Every plan validates; `check` only content that would be written.
        if ctx.purpose == Purpose::Check && o.file.content.is_none() {
            return Ok(o);
        }
        if !crate::host::exec::tool_exists("logrotate") {
            o.warnings.push("logrotate is not installed on this machine: the policy was checked by reconcile's own rules only, not by `logrotate -d`".into());
            return Ok(o);
        }
        let root = ctx.host.root().display().to_string();
        let for_check = self.policy.render(
            &self.name,
            RenderFor {
                // A root logrotate would split (whitespace, quotes) is left out: the
                // policy's syntax is still checked, against the machine's paths.
                root: (!ctx.host.is_machine_root() && path_problem(&format!("{root}/x")).is_none())
                    .then_some(root.as_str()),
                root_owners: true,
            },
        );
        match run_logrotate_debug(ctx, &self.name, &for_check.text) {
            Ok(out) => {
                let verdict = judge(&out, &self.file.path, &self.rendered.origins);
                // logrotate quotes the values it rejects: never for a secret policy.
                o.rejected = verdict.rejected.map(|why| {
                    if self.meta.secret {
                        "`logrotate -d` rejects it (its output is not shown: the resource is secret)".into()
                    } else {
                        why
                    }
                });
                if !self.meta.secret {
                    o.warnings = verdict.warnings;
                }
            }
            Err(e) => o.rejected = Some(format!("cannot run `logrotate -d`: {e}")),
        }
        Ok(o)
    }

    fn diff(&self, o: &Observed, _deps: &DepView) -> Result<Diff<Op>, ResourceError> {
        if let Some(why) = &o.rejected {
            return Err(ResourceError::Failed(format!(
                "the policy would not be used by logrotate: {why}"
            )));
        }
        let mut d = self.file.diff(self.ensure, &o.file)?;
        d.warnings.extend(o.warnings.iter().cloned());
        Ok(d)
    }

    fn describe(&self, op: &Op, change: &mut Change) {
        ManagedFile::describe(op, change)
    }

    fn apply_ops(&self, ops: &[Op], ctx: &ApplyCtx) -> Result<(), ResourceError> {
        self.file.apply(ctx.host, ops)
    }
}

/// What `logrotate -d` printed, and where the scratch policy was.
pub struct DebugRun {
    pub output: String,
    pub checked: String,
}

/// `logrotate -d -s SCRATCH/status SCRATCH/NAME`: debug mode reads the policy and the
/// logs' metadata, rotates nothing, and the state file is a scratch one.
fn run_logrotate_debug(ctx: &PlanCtx, name: &str, text: &str) -> Result<DebugRun, String> {
    use std::io::Write;
    let scratch = ScratchDir::new("logrotate", ctx.host.root()).map_err(|e| e.to_string())?;
    let conf = scratch
        .file(name, &mut |f| {
            f.write_all(text.as_bytes()).map_err(|e| {
                crate::host::HostError::Other(format!("cannot write a scratch policy: {e}"))
            })
        })
        .map_err(|e| e.to_string())?;
    let state = scratch.path().join("status");
    let out = Cmd::new("logrotate")
        .arg("-d")
        .arg("-s")
        .arg(state.display().to_string())
        .arg(conf.display().to_string())
        .run()
        .map_err(|e| e.to_string())?;
    Ok(DebugRun {
        output: format!("{}{}", out.stderr, out.stdout),
        checked: conf.display().to_string(),
    })
}

/// logrotate's verdict on a policy.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Verdict {
    pub rejected: Option<String>,
    pub warnings: Vec<String>,
}

/// Sorts `logrotate -d` output: errors while reading the policy (before "Reading state
/// from file") reject it, each with the manifest place of its line; errors while
/// considering the logs (a missing file without `missingok`, a parent folder logrotate
/// finds insecure) are what every rotation would report, so they are warnings.
pub fn judge(run: &DebugRun, dest: &str, origins: &[Option<Span>]) -> Verdict {
    let mut v = Verdict::default();
    let mut reading = true;
    let mut errors = Vec::new();
    for l in run.output.lines() {
        if l.starts_with("Reading state from file") {
            reading = false;
        }
        let Some(msg) = l.strip_prefix("error: ") else {
            continue;
        };
        if reading {
            if msg.starts_with("found error in") {
                continue;
            }
            let msg = msg.replace(&run.checked, dest);
            let at = msg
                .strip_prefix(dest)
                .and_then(|r| r.strip_prefix(':'))
                .and_then(|r| {
                    let end = r.find(|c: char| !c.is_ascii_digit())?;
                    r[..end].parse::<usize>().ok()
                })
                .and_then(|n| origins.get(n.checked_sub(1)?).cloned().flatten());
            errors.push(match at {
                Some(at) => format!("{msg} (declared at {at})"),
                None => msg,
            });
        } else {
            v.warnings.push(format!("logrotate -d: {msg}"));
        }
    }
    if !errors.is_empty() {
        v.rejected = Some(format!(
            "`logrotate -d` rejects it:\n  {}",
            errors.join("\n  ")
        ));
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(line: u32) -> Span {
        Span::new(Arc::from("site.yaml"), line, 5)
    }

    fn runbook() -> Policy {
        Policy {
            paths: vec![("/var/log/intelluxe-healthcare/*.log".into(), at(3))],
            frequency: Some(("daily".into(), at(4))),
            rotate: Some((2555, at(5))),
            missingok: Some((true, at(6))),
            notifempty: Some((true, at(7))),
            compress: Some((true, at(8))),
            delaycompress: Some((true, at(9))),
            create: Some(Create {
                mode: Some(0o640),
                owner: Some(("intelluxe-service".into(), at(10))),
                group: Some(("intelluxe-prod".into(), at(10))),
                span: Some(at(10)),
            }),
            postrotate: Some((
                Script::Argv(vec![
                    "/usr/bin/systemctl".into(),
                    "try-reload-or-restart".into(),
                    "intelluxe app.service".into(),
                ]),
                at(11),
            )),
            ..Policy::default()
        }
    }

    #[test]
    fn a_policy_renders_in_a_fixed_order_whatever_the_manifest_order() {
        let r = runbook().render("intelluxe-healthcare", RenderFor::TARGET);
        assert_eq!(
            r.text,
            "# logrotate[intelluxe-healthcare], managed by reconcile: changes here are overwritten
/var/log/intelluxe-healthcare/*.log {
    daily
    rotate 2555
    missingok
    notifempty
    compress
    delaycompress
    create 0640 intelluxe-service intelluxe-prod
    postrotate
        /usr/bin/systemctl try-reload-or-restart 'intelluxe app.service'
    endscript
}
"
        );
        assert_eq!(r.origins.len(), r.text.lines().count());
        assert_eq!(r.origins[3], Some(at(5)));
        let check = runbook().render(
            "x",
            RenderFor {
                root: Some("/srv/root/"),
                root_owners: true,
            },
        );
        assert!(check
            .text
            .contains("/srv/root/var/log/intelluxe-healthcare/*.log {"));
        assert!(check.text.contains("create 0640 root root\n"));
    }

    #[test]
    fn false_flags_render_their_negative_and_scripts_keep_their_lines() {
        let p = Policy {
            paths: vec![("/a.log".into(), at(1)), ("/b/*.log".into(), at(1))],
            missingok: Some((false, at(2))),
            notifempty: Some((false, at(2))),
            compress: Some((false, at(2))),
            dateext: Some((true, at(2))),
            dateformat: Some(("-%Y%m%d".into(), at(2))),
            size: Some(("10M".into(), at(2))),
            su: Some(("app".into(), "adm".into(), at(3))),
            sharedscripts: Some((true, at(2))),
            prerotate: Some((Script::Lines("if true; then\n  echo x\nfi\n".into()), at(4))),
            ..Policy::default()
        };
        let r = p.render("n", RenderFor::TARGET);
        assert!(r.text.contains("/a.log /b/*.log {\n    size 10M\n    nomissingok\n    ifempty\n    nocompress\n    dateext\n    dateformat -%Y%m%d\n    su app adm\n    sharedscripts\n    prerotate\n        if true; then\n          echo x\n        fi\n    endscript\n}\n"), "{}", r.text);
    }

    #[test]
    fn values_logrotate_would_misread_are_explained() {
        assert!(comment_problem("2555  # 7 years").is_some_and(|m| m.contains("write `2555`")));
        assert!(size_problem("10M").is_none());
        assert!(size_problem("100").is_none());
        assert!(size_problem("10m").is_some());
        assert!(size_problem("10MB").is_some());
        assert!(path_problem("var/log/x.log").is_some());
        assert!(path_problem("/var/log/my app.log").is_some());
        assert!(path_problem("/var/log/x/").is_some());
        assert!(path_problem("/var/log/x/*.log").is_none());
        assert!(name_problem("app.dpkg-old").is_some());
        assert!(name_problem("app~").is_some());
        assert!(name_problem("../x").is_some());
        assert!(name_problem("intelluxe-healthcare").is_none());
        assert_eq!(
            log_dir("/var/log/app/*.log").as_deref(),
            Some("/var/log/app")
        );
        assert_eq!(
            log_dir("/var/log/app/x.log").as_deref(),
            Some("/var/log/app")
        );
        assert_eq!(log_dir("/srv/*/logs/*.log").as_deref(), Some("/srv"));
        assert_eq!(shell_quote("a'b"), r"'a'\''b'");
    }

    /// Recorded from logrotate 3.21 (bookworm) on the runbook's policy.
    const BAD_ROTATION: &str =
        include_str!("../../tests/fixtures/parse/logrotate-d-bad-rotation.txt");

    #[test]
    fn logrotate_errors_while_reading_reject_with_the_manifest_line_and_later_ones_warn() {
        let run = DebugRun {
            output: BAD_ROTATION.into(),
            checked: "/tmp/reconcile-logrotate-rec/intelluxe-healthcare".into(),
        };
        let origins: Vec<Option<Span>> = (1..=12).map(|n| Some(at(n + 20))).collect();
        let v = judge(&run, "/etc/logrotate.d/intelluxe-healthcare", &origins);
        assert_eq!(
            v.rejected.as_deref(),
            Some("`logrotate -d` rejects it:\n  /etc/logrotate.d/intelluxe-healthcare:3 bad rotation count '2555  # 7 years (HIPAA requirement)' (declared at site.yaml:23:5)")
        );
        let run = DebugRun {
            output: "reading config file /s/x\nReading state from file: /s/status\nerror: stat of /var/log/x.log failed: No such file or directory\n".into(),
            checked: "/s/x".into(),
        };
        let v = judge(&run, "/etc/logrotate.d/x", &origins);
        assert_eq!(v.rejected, None);
        assert_eq!(
            v.warnings,
            vec!["logrotate -d: stat of /var/log/x.log failed: No such file or directory"]
        );
    }
}
