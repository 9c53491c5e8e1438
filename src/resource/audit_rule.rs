//! `audit_rule`: auditd rules from typed watches and syscall rules, rendered to the
//! canonical `auditctl` syntax in `/etc/audit/rules.d/NAME.rules`, loaded with one
//! `augenrules --load` per run (the kind's batch step) when auditd runs on the
//! target. See docs/audit-rules.md.
//!
//! Validation is reconcile's own and strict: `auditctl` has no offline parse (every
//! rule it reads goes to the kernel), so a plan cannot ask it without loading.
//!
//! `watch_managed: {key, permissions}` watches every path the manifests manage. It is
//! a query of the catalog, made when observing (the catalog is complete then): the
//! rules are a function of the manifests, so the same manifests always render the
//! same file. No edges are needed for it: the batch step that loads the rules runs
//! once nothing else in the run can make progress, so every managed path that this
//! run creates exists when the watches are loaded.

use std::any::Any;
use std::sync::Arc;

use crate::diag::Span;
use crate::host::parse::auditctl::{parse_rules, parse_status, LoadedRule};
use crate::host::{Cmd, Host};
use crate::id::ResourceId;
use crate::manifest::decode::{normalize_abs, Decoder, Fields};
use crate::manifest::yaml::{Node, Value};
use crate::plan::{Action, Change};

use super::contract::{Contract, DepView, Diff, Staged};
use super::managed_file::{Content, ManagedFile, Op as FileOp, Seen};
use super::perms::PermSpec;
use super::{
    parent_dir_need, ApplyCtx, Catalog, Ensure, Meta, Need, PlanCtx, Provide, Resource,
    ResourceError,
};

/// Where augenrules reads rule files from (only `*.rules`).
pub const DIR: &str = "/etc/audit/rules.d";

/// auditd's limit on a key (`AUDIT_MAX_KEY_LEN`).
pub const MAX_KEY: usize = 31;

/// Architectures auditctl knows by its own short names.
pub const ARCHES: &[&str] = &["b32", "b64"];

/// Rule fields a syscall rule may filter on (auditctl(8) `-F`); `arch` and `key`
/// have their own settings.
const FIELDS: &[&str] = &[
    "a0",
    "a1",
    "a2",
    "a3",
    "auid",
    "devmajor",
    "devminor",
    "dir",
    "egid",
    "euid",
    "exe",
    "exit",
    "fsgid",
    "fsuid",
    "filetype",
    "gid",
    "inode",
    "loginuid",
    "msgtype",
    "path",
    "perm",
    "pers",
    "pid",
    "ppid",
    "sessionid",
    "sgid",
    "success",
    "suid",
    "uid",
];

/// Comparison operators, longest first so `>=` is not read as `>`.
const OPERATORS: &[&str] = &["!=", ">=", "<=", "&=", "=", ">", "<", "&"];

/// `-w PATH -p PERMS -k KEY`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Watch {
    pub path: String,
    /// Canonical order: r, w, x, a.
    pub permissions: String,
    pub key: String,
}

impl Watch {
    pub fn render(&self) -> String {
        format!("-w {} -p {} -k {}", self.path, self.permissions, self.key)
    }
}

/// `-a ACTION,exit -F arch=ARCH -S a,b -F field... -k KEY`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyscallRule {
    /// `always` or `never`.
    pub action: String,
    pub arch: String,
    pub syscalls: Vec<String>,
    pub fields: Vec<String>,
    pub key: String,
}

impl SyscallRule {
    pub fn render(&self) -> String {
        let mut out = format!("-a {},exit -F arch={}", self.action, self.arch);
        if !self.syscalls.is_empty() {
            out.push_str(&format!(" -S {}", self.syscalls.join(",")));
        }
        for f in &self.fields {
            out.push_str(&format!(" -F {f}"));
        }
        out.push_str(&format!(" -k {}", self.key));
        out
    }
}

#[derive(Debug)]
pub struct AuditRule {
    pub id: ResourceId,
    pub meta: Meta,
    pub name: String,
    pub path: String,
    pub ensure: Ensure,
    pub watches: Vec<Watch>,
    pub syscalls: Vec<SyscallRule>,
    /// `watch_managed`: (key, permissions).
    pub watch_managed: Option<(String, String)>,
    span: Span,
}

/// Why a key is not one auditd takes.
pub fn key_problem(k: &str) -> Option<String> {
    if k.is_empty() {
        return Some("an empty key; give a name to search by (`ausearch -k NAME`)".into());
    }
    if k.len() > MAX_KEY {
        return Some(format!(
            "`{k}` is {} characters: auditd keys are at most {MAX_KEY} (the kernel refuses longer ones)",
            k.len()
        ));
    }
    if !k
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"._:/-".contains(&b))
    {
        return Some(format!(
            "`{k}` may hold only letters, digits and . _ : / - (no spaces or quotes)"
        ));
    }
    None
}

/// `rwxa` letters, each at most once, rendered in auditctl's order.
pub fn canonical_permissions(p: &str) -> Result<String, String> {
    if p.is_empty() {
        return Err(
            "no permissions: give some of r, w, x, a (read, write, execute, attribute change)"
                .into(),
        );
    }
    let mut seen = [false; 4];
    for c in p.chars() {
        let i = "rwxa".find(c).ok_or_else(|| {
            format!("`{c}` in `{p}` is not a permission: use r, w, x, a (read, write, execute, attribute change)")
        })?;
        if seen[i] {
            return Err(format!("`{c}` appears twice in `{p}`"));
        }
        seen[i] = true;
    }
    Ok("rwxa"
        .chars()
        .zip(seen)
        .filter_map(|(c, s)| s.then_some(c))
        .collect())
}

/// A watched path: absolute, normalised, and nothing auditctl would split or read
/// literally while the writer meant a pattern.
pub fn watch_path_problem(p: &str) -> Option<String> {
    if p.contains(['*', '?', '[']) {
        return Some(format!("`{p}`: audit watches take no wildcards (the kernel watches that literal name, which never exists); watch the directory, e.g. `{}`", p.rsplit_once('/').map(|(d, _)| d).filter(|d| !d.is_empty()).unwrap_or("/")));
    }
    if p.chars()
        .any(|c| c.is_whitespace() || c.is_control() || c == '"')
    {
        return Some(format!(
            "`{p}` contains whitespace or a quote, which a rules file cannot hold"
        ));
    }
    None
}

/// A syscall rule's `-F` filter: `name OP value`.
pub fn field_problem(f: &str) -> Option<String> {
    let Some((name, op, value)) = OPERATORS
        .iter()
        .filter_map(|op| f.find(op).map(|i| (i, *op)))
        .min_by_key(|(i, op)| (*i, std::cmp::Reverse(op.len())))
        .map(|(i, op)| (&f[..i], op, &f[i + op.len()..]))
    else {
        return Some(format!(
            "`{f}` is not a filter: write `field OP value` with one of {}",
            OPERATORS.join(" ")
        ));
    };
    match name {
        "arch" => return Some("set `arch:` on the rule instead of a filter".into()),
        "key" => return Some("set `key:` on the rule instead of a filter".into()),
        _ => {}
    }
    if !FIELDS.contains(&name) && !name.starts_with("obj_") && !name.starts_with("subj_") {
        return Some(format!(
            "`{name}` is not an audit rule field; known: {}",
            FIELDS.join(", ")
        ));
    }
    if value.is_empty() || value.chars().any(|c| c.is_whitespace() || c == '"') {
        return Some(format!(
            "`{f}`: the value must be one word ({op} needs a value)"
        ));
    }
    None
}

fn items<'a>(d: &mut Decoder, f: &mut Fields<'a>, key: &'static str) -> Vec<&'a Node> {
    let Some(node) = f.raw(key) else {
        return Vec::new();
    };
    match &node.value {
        Value::Seq(items) => items.iter().collect(),
        other => {
            d.error(
                &node.span,
                key,
                format!("expected a list, found {}", other.type_name()),
            );
            Vec::new()
        }
    }
}

fn mapping<'a>(d: &mut Decoder, node: &'a Node, key: &'static str) -> Option<Fields<'a>> {
    match node.as_map() {
        Some(pairs) => Some(Fields::new(pairs, node.span.clone(), key)),
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

fn decode_key(d: &mut Decoder, f: &mut Fields, what: &'static str) -> Option<String> {
    let (k, span) = f.required_string(d, "key")?;
    match key_problem(&k) {
        Some(msg) => {
            d.error(&span, what, msg);
            None
        }
        None => Some(k),
    }
}

fn decode_permissions(d: &mut Decoder, f: &mut Fields) -> Option<String> {
    let (p, span) = f.required_string(d, "permissions")?;
    match canonical_permissions(&p) {
        Ok(p) => Some(p),
        Err(msg) => {
            d.error(&span, "permissions", msg);
            None
        }
    }
}

fn decode_watch(d: &mut Decoder, node: &Node) -> Option<Watch> {
    let mut f = mapping(d, node, "watches")?;
    let path = f.required_string(d, "path").and_then(|(p, span)| {
        let problem = match normalize_abs(&p) {
            Ok(norm) => match watch_path_problem(&norm) {
                Some(m) => Err(m),
                None => Ok(norm),
            },
            Err(m) => Err(format!("{m} (an audit watch needs an absolute path)")),
        };
        match problem {
            Ok(p) => Some(p),
            Err(msg) => {
                d.error(&span, "path", msg);
                None
            }
        }
    });
    let permissions = decode_permissions(d, &mut f);
    let key = decode_key(d, &mut f, "key");
    f.finish(d);
    Some(Watch {
        path: path?,
        permissions: permissions?,
        key: key?,
    })
}

fn decode_syscall_rule(d: &mut Decoder, node: &Node) -> Option<SyscallRule> {
    let mut f = mapping(d, node, "syscalls")?;
    let action = match f.string(d, "action") {
        None => Some("always".to_string()),
        Some((a, _)) if a == "always" || a == "never" => Some(a),
        Some((a, span)) => {
            d.error(
                &span,
                "action",
                format!(
                    "`{a}` is not an action; use always or never (the rule goes on the exit list)"
                ),
            );
            None
        }
    };
    let arch = match f.required_string(d, "arch") {
        Some((a, _)) if ARCHES.contains(&a.as_str()) => Some(a),
        Some((a, span)) => {
            d.error(&span, "arch", format!("`{a}` is not an audit architecture; use b64 (64-bit calls) or b32 (32-bit compat calls); a rule for both is two rules"));
            None
        }
        None => None,
    };
    let mut ok = true;
    let syscalls: Vec<String> = f
        .string_list(d, "syscalls")
        .into_iter()
        .filter_map(|(s, span)| {
            if !s.is_empty()
                && s.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
            {
                Some(s)
            } else {
                d.error(
                    &span,
                    "syscalls",
                    format!("`{s}` is not a system call name (lowercase letters, digits, _)"),
                );
                ok = false;
                None
            }
        })
        .collect();
    let fields: Vec<String> = f
        .string_list(d, "fields")
        .into_iter()
        .filter_map(|(s, span)| match field_problem(&s) {
            None => Some(s),
            Some(msg) => {
                d.error(&span, "fields", msg);
                ok = false;
                None
            }
        })
        .collect();
    if syscalls.is_empty() && fields.is_empty() && ok {
        d.error(&f.span.clone(), "syscalls", "a syscall rule needs `syscalls` (or at least one filter in `fields`): without either it would log every system call");
        ok = false;
    }
    let key = decode_key(d, &mut f, "key");
    f.finish(d);
    if !ok {
        return None;
    }
    Some(SyscallRule {
        action: action?,
        arch: arch?,
        syscalls,
        fields,
        key: key?,
    })
}

pub fn decode(
    d: &mut Decoder,
    name: (String, Span),
    meta: Meta,
    f: &mut Fields,
) -> Option<Box<dyn Resource>> {
    let (name, span) = name;
    let mut ok = true;
    if name.ends_with(".rules") || !crate::manifest::decode::is_file_stem(&name) {
        d.error(&span, "audit_rule", format!("`{name}` is not a rules file stem: use letters, digits, `.`, `_`, `-` (it becomes {DIR}/NAME.rules; augenrules reads them in name order, so a `99-` prefix loads last)"));
        ok = false;
    }
    let ensure = super::Ensure::decode(d, f);
    let mut watches = Vec::new();
    for node in items(d, f, "watches") {
        match decode_watch(d, node) {
            Some(w) => watches.push(w),
            None => ok = false,
        }
    }
    let mut syscalls = Vec::new();
    for node in items(d, f, "syscalls") {
        match decode_syscall_rule(d, node) {
            Some(r) => syscalls.push(r),
            None => ok = false,
        }
    }
    let watch_managed = match f.raw("watch_managed") {
        None => None,
        Some(node) => {
            let mut wf = mapping(d, node, "watch_managed")?;
            let key = decode_key(d, &mut wf, "key");
            let permissions = decode_permissions(d, &mut wf);
            wf.finish(d);
            match (key, permissions) {
                (Some(k), Some(p)) => Some((k, p)),
                _ => {
                    ok = false;
                    None
                }
            }
        }
    };
    if ok
        && ensure == Ensure::Present
        && watches.is_empty()
        && syscalls.is_empty()
        && watch_managed.is_none()
    {
        d.error(
            &f.span.clone(),
            "watches",
            "an audit_rule needs `watches`, `syscalls` or `watch_managed`",
        );
    }
    if !ok {
        return None;
    }
    Some(Box::new(AuditRule {
        id: ResourceId::new("audit_rule", name.clone()),
        path: format!("{DIR}/{name}.rules"),
        meta,
        name,
        ensure,
        watches,
        syscalls,
        watch_managed,
        span,
    }))
}

impl AuditRule {
    /// The rules file: explicit watches, then syscall rules (both in declaration
    /// order: audit rules match first-to-last), then the managed paths' watches sorted
    /// by path. A function of the manifests alone.
    pub fn render(&self, catalog: &Catalog) -> Result<String, String> {
        let mut out = format!(
            "## audit_rule[{}], managed by reconcile: changes here are overwritten\n",
            self.name
        );
        for w in &self.watches {
            out.push_str(&w.render());
            out.push('\n');
        }
        for r in &self.syscalls {
            out.push_str(&r.render());
            out.push('\n');
        }
        if let Some((key, permissions)) = &self.watch_managed {
            let mut paths: Vec<&str> = catalog
                .resources
                .iter()
                .filter(|r| !r.removes())
                .filter_map(|r| r.managed_path())
                .filter(|p| !self.watches.iter().any(|w| w.path == *p))
                .collect();
            paths.sort_unstable();
            paths.dedup();
            if !paths.is_empty() {
                out.push_str(&format!(
                    "## every path the manifests manage (watch_managed, key {key})\n"
                ));
            }
            for p in paths {
                if let Some(problem) = watch_path_problem(p) {
                    return Err(format!("watch_managed: {problem}"));
                }
                let w = Watch {
                    path: p.to_string(),
                    permissions: permissions.clone(),
                    key: key.clone(),
                };
                out.push_str(&w.render());
                out.push('\n');
            }
        }
        Ok(out)
    }

    fn file(&self, text: String) -> ManagedFile {
        ManagedFile {
            path: self.path.clone(),
            content: Some(Content::Bytes(Arc::from(text.into_bytes()))),
            // augenrules reads root's files; the rules reveal what is watched.
            perms: PermSpec {
                owner: Some(("0".into(), self.span.clone())),
                group: Some(("0".into(), self.span.clone())),
                mode: Some(0o640),
            },
            default_mode: 0o640,
            validate: None,
            origin: None,
            backup: false,
            hardlinks_allowed: false,
            secret: self.meta.secret,
        }
    }

    fn rendered_file(&self, catalog: &Catalog) -> Result<ManagedFile, ResourceError> {
        let text = match self.ensure {
            Ensure::Present => self.render(catalog).map_err(ResourceError::Failed)?,
            Ensure::Absent => String::new(),
        };
        Ok(self.file(text))
    }

    /// The rules as `auditctl -l` lists them, for comparing with what is loaded.
    fn expected_loaded(&self, text: &str) -> Vec<LoadedRule> {
        text.lines()
            .filter(|l| l.starts_with('-'))
            .filter_map(LoadedRule::parse)
            .collect()
    }
}

/// Whether auditd runs on the target and listens: only on the machine itself (a
/// `--root DIR` tree runs nothing), with auditctl present and `auditctl -s` naming
/// a daemon pid.
pub fn auditd_running(host: &Host) -> bool {
    if !host.is_machine_root() || !crate::host::exec::tool_exists("auditctl") {
        return false;
    }
    match Cmd::new("auditctl").arg("-s").run() {
        Ok(out) if out.success() => parse_status(&out.stdout).is_some_and(|s| s.pid > 0),
        _ => false,
    }
}

/// What observing found.
#[derive(Debug, Default)]
pub struct Observed {
    pub file: Seen,
    /// auditd runs on the target (a load is due after a change).
    pub live: bool,
    /// Rules of the file that `auditctl -l` does not list (live only).
    pub not_loaded: Vec<String>,
    pub rejected: Option<String>,
}

/// One thing applying an audit rule does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    File(FileOp),
    /// `augenrules --load` (once per run for all audit rules).
    Load {
        why: String,
    },
    /// The batch step did this change's work already (not shown).
    Staged,
}

/// What the batch step did for one member: the operations carried out.
#[derive(Debug, Clone, Default)]
pub struct Done {
    ops: Vec<Op>,
    action: Option<Action>,
}

impl Resource for AuditRule {
    fn id(&self) -> &ResourceId {
        &self.id
    }

    fn meta(&self) -> &Meta {
        &self.meta
    }

    fn provides(&self) -> Vec<Provide> {
        vec![Provide::Path(self.path.clone())]
    }

    fn needs(&self) -> Vec<Need> {
        let mut needs = vec![parent_dir_need(&self.path)];
        // A declared watched path exists before its watch is loaded.
        for w in &self.watches {
            needs.push(Need::path(w.path.clone()));
        }
        needs
    }

    fn removes(&self) -> bool {
        self.ensure == Ensure::Absent
    }

    fn managed_path(&self) -> Option<&str> {
        Some(&self.path)
    }

    crate::on_the_contract!();

    fn as_any(&self) -> &dyn Any {
        self
    }
}

impl Contract for AuditRule {
    type State = Observed;
    type Op = Op;

    fn observe(&self, ctx: &PlanCtx) -> Result<Observed, ResourceError> {
        let text = match self.ensure {
            Ensure::Present => match self.render(ctx.catalog) {
                Ok(t) => t,
                Err(why) => {
                    return Ok(Observed {
                        rejected: Some(why),
                        ..Observed::default()
                    })
                }
            },
            Ensure::Absent => String::new(),
        };
        let expected = self.expected_loaded(&text);
        let file = self.file(text).observe(ctx, self.ensure)?;
        let live = auditd_running(ctx.host);
        let mut o = Observed {
            file,
            live,
            ..Observed::default()
        };
        if live && self.ensure == Ensure::Present {
            let out = Cmd::new("auditctl").arg("-l").run()?;
            if out.success() {
                let loaded = parse_rules(&out.stdout);
                o.not_loaded = expected
                    .iter()
                    .filter(|r| !loaded.contains(r))
                    .map(LoadedRule::shown)
                    .collect();
            }
        }
        Ok(o)
    }

    fn diff(&self, o: &Observed, deps: &DepView) -> Result<Diff<Op>, ResourceError> {
        if let Some(why) = &o.rejected {
            return Err(ResourceError::Failed(why.clone()));
        }
        let fd = self.file(String::new()).diff(self.ensure, &o.file)?;
        let mut d = Diff::new(fd.live, fd.desired);
        d.implied = fd.implied;
        d.warnings = fd.warnings;
        d.notes = fd.notes;
        if let Some(done) = deps.staged().and_then(|s| s.get::<Done>()) {
            // Right after the batch step: report what it did, do nothing more.
            if let Some(a) = done.action.filter(|_| !done.ops.is_empty()) {
                for op in &done.ops {
                    d.op(a, op.clone());
                }
                d.ops.push(Op::Staged);
            }
            return Ok(d);
        }
        let changes_file = !fd.ops.is_empty();
        for op in fd.ops {
            d.op(fd.action, Op::File(op));
        }
        if o.live {
            if changes_file {
                d.op(
                    Action::Update,
                    Op::Load {
                        why: "the rules file changes".into(),
                    },
                );
            } else if !o.not_loaded.is_empty() {
                d.op(
                    Action::Update,
                    Op::Load {
                        why: format!("auditctl -l does not list: {}", o.not_loaded.join("; ")),
                    },
                );
            }
        } else if changes_file {
            d.notes.push("auditd does not run on this target: the rules load when it starts (augenrules at boot)".into());
        }
        Ok(d)
    }

    fn describe(&self, op: &Op, change: &mut Change) {
        match op {
            Op::File(f) => ManagedFile::describe(f, change),
            Op::Load { why } => {
                change.field(
                    "loaded rules",
                    Some(why.clone()),
                    Some("augenrules --load (once per run)".into()),
                );
            }
            Op::Staged => {}
        }
    }

    fn apply_ops(&self, ops: &[Op], ctx: &ApplyCtx) -> Result<(), ResourceError> {
        if ops.contains(&Op::Staged) {
            return Ok(());
        }
        write(self, ops, ctx)?;
        if ops.iter().any(|o| matches!(o, Op::Load { .. })) {
            load()?;
        }
        Ok(())
    }
}

/// The file's operations of `ops`, carried out with the rules rendered again (the
/// same manifests render the same text).
fn write(r: &AuditRule, ops: &[Op], ctx: &ApplyCtx) -> Result<(), ResourceError> {
    let file_ops: Vec<FileOp> = ops
        .iter()
        .filter_map(|o| match o {
            Op::File(f) => Some(f.clone()),
            _ => None,
        })
        .collect();
    if file_ops.is_empty() {
        return Ok(());
    }
    r.rendered_file(ctx.catalog)?.apply(ctx.host, &file_ops)
}

/// Runs on the machine itself: only called when auditd runs there (`--root /`).
fn load() -> Result<(), ResourceError> {
    let out = Cmd::new("augenrules").arg("--load").run()?;
    if out.success() {
        Ok(())
    } else {
        Err(ResourceError::Tool {
            tool: "augenrules".into(),
            command: "augenrules --load".into(),
            code: out.status,
            stderr: super::excerpt(out.reason().as_str()),
        })
    }
}

/// The kind's batch step: every member's file written, then one `augenrules --load`
/// when any member needs it (auditd runs). A file that cannot be written fails its
/// member; a failed load fails every member that wanted it.
pub fn flush(
    ctx: &ApplyCtx,
    items: &[(&dyn Resource, &Change)],
) -> Vec<Result<Staged, ResourceError>> {
    let mut results: Vec<Result<Done, ResourceError>> = Vec::with_capacity(items.len());
    let mut load_due = false;
    for (r, c) in items {
        let Some(rule) = r.as_any().downcast_ref::<AuditRule>() else {
            results.push(Ok(Done::default()));
            continue;
        };
        let ops = c.ops.get::<Op>().unwrap_or(&[]);
        match write(rule, ops, ctx) {
            Ok(()) => {
                load_due |= ops.iter().any(|o| matches!(o, Op::Load { .. }));
                results.push(Ok(Done {
                    ops: ops.iter().filter(|o| **o != Op::Staged).cloned().collect(),
                    action: Some(c.action),
                }));
            }
            Err(e) => results.push(Err(e)),
        }
    }
    if load_due {
        if let Err(e) = load() {
            for r in results.iter_mut() {
                if matches!(r, Ok(done) if done.ops.iter().any(|o| matches!(o, Op::Load { .. }))) {
                    *r = Err(ResourceError::Failed(format!(
                        "augenrules --load failed: {e}"
                    )));
                }
            }
        }
    }
    results.into_iter().map(|r| r.map(Staged::new)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(
        watches: Vec<Watch>,
        syscalls: Vec<SyscallRule>,
        managed: Option<(&str, &str)>,
    ) -> AuditRule {
        AuditRule {
            id: ResourceId::new("audit_rule", "99-intelluxe-healthcare".to_string()),
            meta: Meta::default(),
            name: "99-intelluxe-healthcare".into(),
            path: format!("{DIR}/99-intelluxe-healthcare.rules"),
            ensure: Ensure::Present,
            watches,
            syscalls,
            watch_managed: managed.map(|(k, p)| (k.to_string(), p.to_string())),
            span: Span::file_only(Arc::from("site.yaml")),
        }
    }

    fn watch(path: &str, p: &str, key: &str) -> Watch {
        Watch {
            path: path.into(),
            permissions: p.into(),
            key: key.into(),
        }
    }

    #[test]
    fn watches_and_syscall_rules_render_to_auditctl_syntax() {
        let r = rule(
            vec![
                watch("/opt/intelluxe/stack/data", "rwxa", "healthcare-phi-access"),
                watch("/etc/passwd", "wa", "healthcare-user-changes"),
            ],
            vec![SyscallRule {
                action: "always".into(),
                arch: "b64".into(),
                syscalls: vec!["chmod".into(), "fchmodat".into()],
                fields: vec!["auid>=1000".into(), "auid!=unset".into()],
                key: "perm-mod".into(),
            }],
            None,
        );
        assert_eq!(
            r.render(&Catalog::new(Vec::new())),
            Ok("## audit_rule[99-intelluxe-healthcare], managed by reconcile: changes here are overwritten
-w /opt/intelluxe/stack/data -p rwxa -k healthcare-phi-access
-w /etc/passwd -p wa -k healthcare-user-changes
-a always,exit -F arch=b64 -S chmod,fchmodat -F auid>=1000 -F auid!=unset -k perm-mod
"
            .to_string())
        );
    }

    #[test]
    fn own_checks_refuse_what_auditd_would() {
        assert_eq!(canonical_permissions("aw"), Ok("wa".into()));
        assert_eq!(canonical_permissions("rwxa"), Ok("rwxa".into()));
        assert!(canonical_permissions("rwq").is_err());
        assert!(canonical_permissions("ww").is_err());
        assert!(canonical_permissions("").is_err());
        assert!(key_problem(&"k".repeat(31)).is_none());
        assert!(key_problem(&"k".repeat(32)).is_some_and(|m| m.contains("at most 31")));
        assert!(key_problem("has space").is_some());
        assert!(
            watch_path_problem("/etc/systemd/system/intelluxe-*.service")
                .is_some_and(|m| m.contains("watch the directory, e.g. `/etc/systemd/system`"))
        );
        assert!(field_problem("auid>=1000").is_none());
        assert!(field_problem("auid!=unset").is_none());
        assert!(field_problem("success=0").is_none());
        assert!(field_problem("key=x").is_some());
        assert!(field_problem("bogus=1").is_some());
        assert!(field_problem("auid").is_some());
        assert!(field_problem("uid= 0").is_some());
    }

    #[test]
    fn watch_managed_lists_the_managed_paths_sorted_after_the_declared_rules() {
        let other = rule(vec![], vec![], None);
        let catalog = Catalog::new(vec![Box::new(other)]);
        let r = rule(
            vec![watch(
                &format!("{DIR}/99-intelluxe-healthcare.rules"),
                "wa",
                "self",
            )],
            vec![],
            Some(("reconcile-managed", "wa")),
        );
        // The only managed path is watched explicitly: no duplicate.
        assert_eq!(r.render(&catalog).map(|t| t.lines().count()), Ok(2));
        let r = rule(vec![], vec![], Some(("reconcile-managed", "wa")));
        assert_eq!(
            r.render(&catalog),
            Ok(format!("## audit_rule[99-intelluxe-healthcare], managed by reconcile: changes here are overwritten
## every path the manifests manage (watch_managed, key reconcile-managed)
-w {DIR}/99-intelluxe-healthcare.rules -p wa -k reconcile-managed
"))
        );
    }

    fn seen_in_sync() -> Observed {
        Observed {
            file: Seen {
                live: Some(crate::host::Stat {
                    kind: crate::host::FileKind::File,
                    mode: 0o640,
                    uid: 0,
                    gid: 0,
                    size: 1,
                    nlink: 1,
                }),
                owners: super::super::perms::Owners {
                    uid: Some(0),
                    gid: Some(0),
                    ..Default::default()
                },
                ..Seen::default()
            },
            ..Observed::default()
        }
    }

    #[test]
    fn the_diff_loads_once_the_file_changes_or_the_kernel_lacks_a_rule_and_only_when_auditd_runs() {
        let r = rule(vec![watch("/etc/passwd", "wa", "k")], vec![], None);
        let none = DepView::none();
        // In sync, auditd not running: nothing.
        let d = r.diff(&seen_in_sync(), &none).map(|d| (d.action, d.ops));
        assert_eq!(d, Ok((Action::None, vec![])));
        // In sync, running, all loaded: nothing.
        let live = Observed {
            live: true,
            ..seen_in_sync()
        };
        assert_eq!(r.diff(&live, &none).map(|d| d.ops), Ok(vec![]));
        // In sync but the kernel lacks a rule: a load.
        let missing = Observed {
            live: true,
            not_loaded: vec!["-w /etc/passwd -p wa -k k".into()],
            ..seen_in_sync()
        };
        assert_eq!(
            r.diff(&missing, &none).map(|d| (d.action, d.ops)),
            Ok((
                Action::Update,
                vec![Op::Load {
                    why: "auditctl -l does not list: -w /etc/passwd -p wa -k k".into()
                }]
            ))
        );
        // Created, not running: the file only, with a note.
        let new = Observed {
            file: Seen {
                content: Some(Box::new(super::super::managed_file::ContentSeen {
                    from: None,
                    to: "sha256:x".into(),
                    shown: None,
                })),
                ..Seen::default()
            },
            ..Observed::default()
        };
        let d = r.diff(&new, &none).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(d.action, Action::Create);
        assert!(d.ops.iter().all(|o| matches!(o, Op::File(_))));
        assert!(d.notes.iter().any(|n| n.contains("does not run")));
        // Created, running: and one load.
        let new_live = Observed { live: true, ..new };
        let d = r.diff(&new_live, &none).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            d.ops.last(),
            Some(&Op::Load {
                why: "the rules file changes".into()
            })
        );
    }
}
