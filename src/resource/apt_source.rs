//! `apt_source`: one deb822 sources file, `/etc/apt/sources.list.d/NAME.sources`,
//! and its signing key, `/etc/apt/keyrings/NAME.asc` (0644). See docs/packages.md.
//!
//! - Both files are [`ManagedFile`]s (atomic write, mode 0644; written by root, so
//!   owned by root when new).
//! - The key is a file shipped with the manifests or an inline armored key; it is
//!   checked when the manifests load (armor, checksum, a public-key packet) and, when
//!   it would be written and `gpg` is on the machine, by `gpg --show-keys`.
//! - The kind's batch step ([`flush`]) writes the changed members' files, then runs
//!   ONE `apt-get update` for the run. Package resources need what every
//!   `apt_source` provides ([`APT_LISTS`]), so they come after it.
//! - A legacy one-line `.list` file (or `/etc/apt/sources.list`) with the same URI
//!   and suite is reported in the plan: apt would read the source twice.

use std::any::Any;
use std::sync::Arc;

use crate::diag::Span;
use crate::host::apt::{Apt, DEFAULT_LOCK_TIMEOUT};
use crate::host::fs::ScratchDir;
use crate::host::parse::apt::parse_one_line_sources;
use crate::host::parse::openpgp::{check_armored_key, is_armored};
use crate::host::{exec::tool_exists, Cmd};
use crate::id::ResourceId;
use crate::manifest::decode::{Decoder, Fields};
use crate::plan::{fingerprint, Action, Change};

use super::contract::{Contract, DepView, Diff, Staged};
use super::managed_file::{self, Content, ManagedFile};
use super::package::APT_LISTS;
use super::perms::PermSpec;
use super::{ApplyCtx, Ensure, Meta, Need, PlanCtx, Provide, Resource, ResourceError};

pub const SOURCES_DIR: &str = "/etc/apt/sources.list.d";
pub const KEYRINGS_DIR: &str = "/etc/apt/keyrings";

#[derive(Debug)]
pub struct AptSource {
    pub id: ResourceId,
    pub meta: Meta,
    pub name: String,
    pub ensure: Ensure,
    pub uris: Vec<String>,
    pub suites: Vec<String>,
    pub components: Vec<String>,
    pub types: Vec<String>,
    pub architectures: Vec<String>,
    pub trusted: Option<bool>,
    /// The sources file.
    pub file: ManagedFile,
    /// The signing key, when `signed_by` gives one.
    pub key: Option<ManagedFile>,
    /// Whether the key is secret-free text to show (a public key always is).
    pub key_text: Option<Arc<[u8]>>,
}

fn root_file(path: String, content: Arc<[u8]>) -> ManagedFile {
    ManagedFile {
        path,
        content: Some(Content::Bytes(content)),
        // Written by root: a new file is root's; only the mode is decided.
        perms: PermSpec {
            owner: None,
            group: None,
            mode: Some(0o644),
        },
        default_mode: 0o644,
        validate: None,
        origin: None,
        backup: false,
        hardlinks_allowed: false,
        secret: false,
    }
}

/// The deb822 stanza.
pub fn render(s: &AptSource) -> String {
    let mut out = format!("# Managed by reconcile: apt_source[{}]\n", s.name);
    let field = |out: &mut String, k: &str, v: &[String]| {
        if !v.is_empty() {
            out.push_str(&format!("{k}: {}\n", v.join(" ")));
        }
    };
    field(&mut out, "Types", &s.types);
    field(&mut out, "URIs", &s.uris);
    field(&mut out, "Suites", &s.suites);
    field(&mut out, "Components", &s.components);
    field(&mut out, "Architectures", &s.architectures);
    if let Some(t) = s.trusted {
        out.push_str(&format!("Trusted: {}\n", if t { "yes" } else { "no" }));
    }
    if let (Some(k), Some(_)) = (&s.key, &s.key_text) {
        out.push_str(&format!("Signed-By: {}\n", k.path));
    }
    out
}

fn words_ok(d: &mut Decoder, f: &Fields, field: &str, list: &[(String, Span)]) -> bool {
    let mut ok = true;
    for (w, sp) in list {
        if w.is_empty() || w.contains(char::is_whitespace) || w.contains('#') {
            d.error(sp, field, format!("`{w}` must be one word without `#`"));
            ok = false;
        }
    }
    let _ = f;
    ok
}

pub fn decode(
    d: &mut Decoder,
    name: (String, Span),
    meta: Meta,
    f: &mut Fields,
) -> Option<Box<dyn Resource>> {
    let (name, span) = name;
    let mut ok = true;
    if !crate::manifest::decode::is_file_stem(&name) {
        d.error(
            &span,
            "apt_source",
            format!("`{name}` is not a file stem apt reads (letters, digits, _ - .)"),
        );
        ok = false;
    }
    let ensure = Ensure::decode(d, f);
    let uris = f.string_list(d, "uris");
    let suites = f.string_list(d, "suites");
    let components = f.string_list(d, "components");
    let architectures = f.string_list(d, "architectures");
    let types = f.string_list(d, "types");
    let trusted = f.bool(d, "trusted");
    let signed_by = f.string(d, "signed_by");
    for (field, list) in [
        ("uris", &uris),
        ("suites", &suites),
        ("components", &components),
        ("architectures", &architectures),
        ("types", &types),
    ] {
        ok &= words_ok(d, f, field, list);
    }
    for (t, sp) in &types {
        if t != "deb" && t != "deb-src" {
            d.error(
                sp,
                "types",
                format!("`{t}` is not a source type; use deb or deb-src"),
            );
            ok = false;
        }
    }
    if ensure == Ensure::Present {
        for (field, list) in [("uris", &uris), ("suites", &suites)] {
            if list.is_empty() {
                let sp = f.span.clone();
                d.error(
                    &sp,
                    field,
                    format!("`apt_source` requires the field `{field}`"),
                );
                ok = false;
            }
        }
        // apt's rule: an exact path (`./`) takes no components, a distribution needs them.
        let exact = suites.iter().filter(|(s, _)| s.ends_with('/')).count();
        if exact > 0 && !components.is_empty() {
            d.error(
                &components[0].1,
                "components",
                "a suite that is a path (ending in /) takes no components",
            );
            ok = false;
        } else if exact == 0 && !suites.is_empty() && components.is_empty() {
            let sp = f.span.clone();
            d.error(
                &sp,
                "components",
                "a suite that is a distribution needs `components` (or write the suite as a path ending in /)",
            );
            ok = false;
        }
    }
    let key_text: Option<Arc<[u8]>> = match &signed_by {
        None => None,
        Some((v, sp)) if is_armored(v) => {
            if let Err(e) = check_armored_key(v) {
                d.error(sp, "signed_by", format!("the inline key is not valid: {e}"));
                ok = false;
            }
            Some(Arc::from(v.clone().into_bytes()))
        }
        Some((rel, sp)) => {
            let path = d.shipped_path(rel);
            match d.read_shipped(&path, sp, "signed_by") {
                None => {
                    ok = false;
                    None
                }
                Some(bytes) => {
                    let text = String::from_utf8_lossy(&bytes);
                    if let Err(e) = check_armored_key(&text) {
                        d.error(
                            sp,
                            "signed_by",
                            format!(
                                "{} is not a valid armored OpenPGP public key: {e}",
                                path.display()
                            ),
                        );
                        ok = false;
                    }
                    Some(Arc::from(bytes))
                }
            }
        }
    };
    if !ok {
        return None;
    }
    let strings = |l: Vec<(String, Span)>| l.into_iter().map(|(s, _)| s).collect::<Vec<_>>();
    let types = if types.is_empty() {
        vec!["deb".to_string()]
    } else {
        strings(types)
    };
    let mut s = AptSource {
        id: ResourceId::new("apt_source", name.clone()),
        meta,
        ensure,
        uris: strings(uris),
        suites: strings(suites),
        components: strings(components),
        types,
        architectures: strings(architectures),
        trusted,
        file: root_file(
            format!("{SOURCES_DIR}/{name}.sources"),
            Arc::from(Vec::new()),
        ),
        // A removed source takes the key this kind installed for it along, whether
        // or not the entry still names one.
        key: match (&key_text, ensure) {
            (Some(k), _) => Some(root_file(
                format!("{KEYRINGS_DIR}/{name}.asc"),
                Arc::clone(k),
            )),
            (None, Ensure::Absent) => Some(root_file(
                format!("{KEYRINGS_DIR}/{name}.asc"),
                Arc::from(Vec::new()),
            )),
            (None, Ensure::Present) => None,
        },
        key_text,
        name,
    };
    s.file.content = Some(Content::Bytes(Arc::from(render(&s).into_bytes())));
    Some(Box::new(s))
}

impl Resource for AptSource {
    fn id(&self) -> &ResourceId {
        &self.id
    }

    fn meta(&self) -> &Meta {
        &self.meta
    }

    fn provides(&self) -> Vec<Provide> {
        let mut p = vec![
            Provide::Package(APT_LISTS.to_string()),
            Provide::Path(self.file.path.clone()),
        ];
        if let Some(k) = &self.key {
            p.push(Provide::Path(k.path.clone()));
        }
        p
    }

    fn needs(&self) -> Vec<Need> {
        let mut n = vec![super::parent_dir_need(&self.file.path)];
        if let Some(k) = &self.key {
            n.push(super::parent_dir_need(&k.path));
        }
        n
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

#[derive(Debug, Clone, Default)]
pub struct Observed {
    pub file: managed_file::Seen,
    pub key: Option<managed_file::Seen>,
    /// Why `gpg --show-keys` refused the key that would be written.
    pub key_rejected: Option<String>,
    /// Legacy one-line entries with the same URI and suite: (file, line).
    pub duplicates: Vec<(String, usize)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    Source(managed_file::Op),
    Key(managed_file::Op),
    /// `apt-get update` (once per run, by the batch step).
    Update,
    /// Marks the change the batch step carried out already.
    Flushed,
}

/// What the batch step did for one member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Done {
    pub ops: Vec<Op>,
}

impl AptSource {
    /// Entries of legacy one-line files that name one of our URIs with one of our
    /// suites.
    fn duplicates(&self, ctx: &PlanCtx) -> Result<Vec<(String, usize)>, ResourceError> {
        let host = ctx.host;
        let mut files = vec!["/etc/apt/sources.list".to_string()];
        if let Ok(names) = host.list_dir(SOURCES_DIR) {
            files.extend(
                names
                    .into_iter()
                    .filter(|n| n.ends_with(".list"))
                    .map(|n| format!("{SOURCES_DIR}/{n}")),
            );
        }
        let same_uri = |a: &str, b: &str| a.trim_end_matches('/') == b.trim_end_matches('/');
        let mut out = Vec::new();
        for f in files {
            let Ok(Some((_, Some(bytes)))) = host.read(&f) else {
                continue;
            };
            for e in parse_one_line_sources(&String::from_utf8_lossy(&bytes)) {
                if self.uris.iter().any(|u| same_uri(u, &e.uri)) && self.suites.contains(&e.suite) {
                    out.push((f.clone(), e.line));
                }
            }
        }
        Ok(out)
    }

    /// `gpg --show-keys` on a scratch copy of the key, when gpg is on the machine.
    fn gpg_check(&self, ctx: &PlanCtx) -> Option<String> {
        let key = self.key_text.as_ref()?;
        if !tool_exists("gpg") {
            return None;
        }
        let scratch = match ScratchDir::new("apt-key", ctx.host.root()) {
            Ok(s) => s,
            Err(e) => return Some(e.to_string()),
        };
        let path = scratch.path().join("key.asc");
        if let Err(e) = std::fs::write(&path, key) {
            return Some(format!("cannot copy the key for gpg: {e}"));
        }
        let home = scratch.path().join("gnupg");
        let _ = std::fs::create_dir(&home);
        let out = Cmd::new("gpg")
            .arg("--homedir")
            .arg(home.display().to_string())
            .args(["--batch", "--no-tty", "--with-colons", "--show-keys"])
            .arg(path.display().to_string())
            .run();
        match out {
            Ok(o) if o.success() && o.stdout.lines().any(|l| l.starts_with("pub:")) => None,
            Ok(o) => Some(format!("gpg --show-keys refuses the key: {}", o.reason())),
            Err(e) => Some(e.to_string()),
        }
    }
}

impl Contract for AptSource {
    type State = Observed;
    type Op = Op;

    fn observe(&self, ctx: &PlanCtx) -> Result<Observed, ResourceError> {
        let file = self.file.observe(ctx, self.ensure)?;
        let key = match &self.key {
            Some(k) => Some(k.observe(ctx, self.ensure)?),
            None => None,
        };
        let key_written = key.as_ref().is_some_and(|k| k.content.is_some());
        let key_rejected = if key_written && self.ensure == Ensure::Present {
            self.gpg_check(ctx)
        } else {
            None
        };
        let duplicates = if self.ensure == Ensure::Present {
            self.duplicates(ctx)?
        } else {
            Vec::new()
        };
        Ok(Observed {
            file,
            key,
            key_rejected,
            duplicates,
        })
    }

    fn diff(&self, o: &Observed, deps: &DepView) -> Result<Diff<Op>, ResourceError> {
        if let Some(why) = &o.key_rejected {
            return Err(ResourceError::Failed(format!(
                "the key for {} is not a valid OpenPGP public key: {why}",
                self.file.path
            )));
        }
        let fd = self.file.diff(self.ensure, &o.file)?;
        let kd = match (&self.key, &o.key) {
            (Some(k), Some(seen)) => Some(k.diff(self.ensure, seen)?),
            _ => None,
        };
        let mut d = Diff::new(
            fingerprint([
                fd.live.as_bytes(),
                kd.as_ref().map_or("", |k| k.live.as_str()).as_bytes(),
            ]),
            fingerprint([
                fd.desired.as_bytes(),
                kd.as_ref().map_or("", |k| k.desired.as_str()).as_bytes(),
            ]),
        );
        d.implied.extend(fd.implied.iter().cloned());
        d.warnings.extend(fd.warnings.iter().cloned());
        let mut ops: Vec<Op> = fd.ops.iter().cloned().map(Op::Source).collect();
        if let Some(kd) = &kd {
            d.implied.extend(kd.implied.iter().cloned());
            ops.extend(kd.ops.iter().cloned().map(Op::Key));
        }
        let action = match (fd.action, kd.as_ref().map_or(Action::None, |k| k.action)) {
            (Action::None, a) if a != Action::None => Action::Update,
            (a, _) => a,
        };
        if !ops.is_empty() {
            ops.push(Op::Update);
        }
        if let Some(done) = deps.staged().and_then(|s| s.get::<Done>()) {
            let mut all = done.ops.clone();
            all.push(Op::Flushed);
            all.extend(ops);
            ops = all;
            if d.action == Action::None {
                d.action = if action == Action::None {
                    Action::Update
                } else {
                    action
                };
            }
        } else {
            d.action = action;
        }
        d.ops = ops;
        for (file, line) in &o.duplicates {
            d.warnings.push(format!(
                "{file}:{line} names the same source in the legacy one-line format: apt reads it twice; remove that line"
            ));
        }
        Ok(d)
    }

    fn describe(&self, op: &Op, change: &mut Change) {
        match op {
            Op::Source(o) => ManagedFile::describe(o, change),
            Op::Key(o) => {
                let mut c = Change::new(change.id.clone(), false);
                ManagedFile::describe(o, &mut c);
                for f in c.fields {
                    change.field(
                        format!("key {}", f.field),
                        f.before.clone(),
                        f.after.clone(),
                    );
                }
            }
            Op::Update => change
                .notes
                .push("apt-get update runs once for the run's changed sources".into()),
            Op::Flushed => {}
        }
    }

    fn apply_ops(&self, ops: &[Op], ctx: &ApplyCtx) -> Result<(), ResourceError> {
        if let Some(at) = ops.iter().position(|o| *o == Op::Flushed) {
            if ops[at + 1..].iter().any(|o| *o != Op::Update) {
                return Err(ResourceError::Failed(format!(
                    "{} is still not as declared after the batch step",
                    self.file.path
                )));
            }
            return Ok(());
        }
        write_files(self, ops, ctx)?;
        update(ctx, &[self])
    }
}

fn write_files(s: &AptSource, ops: &[Op], ctx: &ApplyCtx) -> Result<(), ResourceError> {
    // The key first: a source is never in place before the key it names.
    if let Some(k) = &s.key {
        let kops: Vec<managed_file::Op> = ops
            .iter()
            .filter_map(|o| match o {
                Op::Key(k) => Some(k.clone()),
                _ => None,
            })
            .collect();
        if s.ensure == Ensure::Present {
            k.apply(ctx.host, &kops)?;
        }
    }
    let fops: Vec<managed_file::Op> = ops
        .iter()
        .filter_map(|o| match o {
            Op::Source(f) => Some(f.clone()),
            _ => None,
        })
        .collect();
    s.file.apply(ctx.host, &fops)?;
    if let (Some(k), Ensure::Absent) = (&s.key, s.ensure) {
        let kops: Vec<managed_file::Op> = ops
            .iter()
            .filter_map(|o| match o {
                Op::Key(k) => Some(k.clone()),
                _ => None,
            })
            .collect();
        k.apply(ctx.host, &kops)?;
    }
    Ok(())
}

fn update(ctx: &ApplyCtx, members: &[&AptSource]) -> Result<(), ResourceError> {
    let _ = members;
    Apt::new(ctx.host).get(&["update".to_string()], DEFAULT_LOCK_TIMEOUT)?;
    Ok(())
}

/// The kind's batch step: every changed member's files written, then ONE
/// `apt-get update`. A file that cannot be written fails its own member; a failed
/// update fails every member.
pub fn flush(
    ctx: &ApplyCtx,
    items: &[(&dyn Resource, &Change)],
) -> Vec<Result<Staged, ResourceError>> {
    let mut results: Vec<Result<Staged, ResourceError>> = Vec::with_capacity(items.len());
    let mut written = Vec::new();
    for (r, c) in items {
        let (Some(s), Some(ops)) = (r.as_any().downcast_ref::<AptSource>(), c.ops.get::<Op>())
        else {
            results.push(Ok(Staged::nothing()));
            continue;
        };
        match write_files(s, ops, ctx) {
            Ok(()) => {
                written.push(s);
                results.push(Ok(Staged::new(Done {
                    ops: ops.iter().filter(|o| **o != Op::Flushed).cloned().collect(),
                })));
            }
            Err(e) => results.push(Err(e)),
        }
    }
    if !written.is_empty() {
        if let Err(e) = update(ctx, &written) {
            for r in results.iter_mut().filter(|r| r.is_ok()) {
                *r = Err(ResourceError::Failed(format!("apt-get update failed: {e}")));
            }
        }
    }
    results
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sources_file_is_a_deb822_stanza_naming_its_key() {
        let mut s = AptSource {
            id: ResourceId::new("apt_source", "demo".to_string()),
            meta: Meta::default(),
            name: "demo".into(),
            ensure: Ensure::Present,
            uris: vec!["https://repo.example/debian".into()],
            suites: vec!["bookworm".into()],
            components: vec!["main".into(), "contrib".into()],
            types: vec!["deb".into()],
            architectures: vec!["amd64".into()],
            trusted: None,
            file: root_file(
                "/etc/apt/sources.list.d/demo.sources".into(),
                Arc::from(Vec::new()),
            ),
            key: None,
            key_text: None,
        };
        s.key = Some(root_file(
            "/etc/apt/keyrings/demo.asc".into(),
            Arc::from(Vec::new()),
        ));
        s.key_text = Some(Arc::from(Vec::new()));
        assert_eq!(
            render(&s),
            "# Managed by reconcile: apt_source[demo]\nTypes: deb\nURIs: https://repo.example/debian\nSuites: bookworm\nComponents: main contrib\nArchitectures: amd64\nSigned-By: /etc/apt/keyrings/demo.asc\n"
        );
        s.key = None;
        s.key_text = None;
        s.trusted = Some(true);
        assert!(render(&s).ends_with("Trusted: yes\n"));
    }
}
