//! `directory`: a directory's owner, group and mode; optionally a copy of a whole tree
//! (`source:`), replacing a symlink that stands at the path (the runbook's "replace
//! symlinks with file copies").

use std::any::Any;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

use crate::diag::Span;
use crate::host::fs::{hardlink_reason, Body};
use crate::host::{FileKind, HostError, Perms, Stat};
use crate::id::ResourceId;
use crate::manifest::decode::{format_mode, Decoder, Fields, SourceRef};
use crate::plan::{
    content_diff, diff_limit, fingerprint, size_summary, Action, Change, ContentDiff,
};

use super::contract::{Contract, DepView, Diff};
use super::managed_file::{body_hash, ContentSeen, TEMP_FIELD};
use super::perms::{stat_fingerprint, Owners, PermOp, PermSpec};
use super::{
    implied_parents, observe_below_declared, parent_dir_need, ApplyCtx, Ensure, Meta, Need,
    PlanCtx, Provide, Resource, ResourceError,
};

#[derive(Debug, Clone)]
pub enum TreeSource {
    /// A folder shipped with the manifests (relative `source:`).
    Shipped(PathBuf),
    /// A folder on the target (absolute `source:`).
    Target(String),
}

#[derive(Debug)]
pub struct Directory {
    pub id: ResourceId,
    pub meta: Meta,
    pub path: String,
    pub ensure: Ensure,
    pub perms: PermSpec,
    pub source: Option<TreeSource>,
    pub file_mode: Option<u32>,
    pub dir_mode: Option<u32>,
    pub purge: bool,
}

/// One entry of a source tree, relative to its top.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub rel: String,
    /// The content; `None`: a directory.
    pub content: Option<Body>,
    /// The source's permission bits, which the copy keeps unless `file_mode`/`dir_mode`.
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
}

pub fn decode(
    d: &mut Decoder,
    name: (String, Span),
    meta: Meta,
    f: &mut Fields,
) -> Option<Box<dyn Resource>> {
    let (raw_path, span) = name;
    let path = d.path_name(&raw_path, &span, "directory");
    let ensure = Ensure::decode(d, f);
    let perms = PermSpec::decode(d, f);
    let source = f.source(d, "source").map(|(src, sspan)| match src {
        SourceRef::Target(p) => TreeSource::Target(p),
        SourceRef::Shipped(p) => {
            if !p.is_dir() {
                d.error(&sspan, "source", format!("{} is not a folder", p.display()));
            }
            TreeSource::Shipped(p)
        }
    });
    let file_mode = f.mode(d, "file_mode");
    let dir_mode = f.mode(d, "dir_mode");
    let purge = f.bool(d, "purge").unwrap_or(false);
    if source.is_none() && (file_mode.is_some() || dir_mode.is_some() || purge) {
        d.error(
            &f.span,
            "source",
            "`file_mode`, `dir_mode` and `purge` only apply with `source`",
        );
    }
    let path = path?;
    Some(Box::new(Directory {
        id: ResourceId::new("directory", path.clone()),
        meta,
        path,
        ensure,
        perms,
        source,
        file_mode,
        dir_mode,
        purge,
    }))
}

impl Directory {
    /// The mode a copied entry gets: `file_mode`/`dir_mode` when given, else the
    /// source's own bits (a 0600 key stays 0600).
    fn entry_mode(&self, e: &Entry) -> u32 {
        let given = if e.content.is_none() {
            self.dir_mode
        } else {
            self.file_mode
        };
        given.unwrap_or(e.mode)
    }

    fn entry_spec(&self, e: &Entry) -> PermSpec {
        PermSpec {
            owner: self.perms.owner.clone(),
            group: self.perms.group.clone(),
            mode: Some(self.entry_mode(e)),
        }
    }

    /// Warnings when the copy of `e` would give more than its source: wider mode
    /// bits, or setuid/setgid bits kept on a copy owned by someone else (a user's
    /// setuid program copied root-owned runs as root).
    fn widening(&self, e: &Entry, accounts: &crate::host::accounts::Accounts) -> Vec<String> {
        let mode = self.entry_mode(e);
        let name = format!("{}{}", e.rel, if e.content.is_none() { "/" } else { "" });
        let mut out = Vec::new();
        if mode & !e.mode & 0o7777 != 0 {
            out.push(format!(
                "{name}: the copy would be {} where the source is {}: wider permissions",
                format_mode(mode),
                format_mode(e.mode)
            ));
        }
        // New copies belong to whoever runs reconcile unless owner/group are given.
        let uid = self
            .perms
            .owner()
            .and_then(|o| accounts.resolve_uid(o))
            .unwrap_or_else(|| nix::unistd::geteuid().as_raw());
        let gid = self
            .perms
            .group()
            .and_then(|g| accounts.resolve_gid(g))
            .unwrap_or_else(|| nix::unistd::getegid().as_raw());
        let setuid = e.content.is_some() && mode & 0o4000 != 0 && uid != e.uid;
        let setgid = e.content.is_some() && mode & 0o2000 != 0 && gid != e.gid;
        if setuid || setgid {
            out.push(format!(
                "{name}: keeps {} of a source owned by {}:{} on a copy owned by {uid}:{gid}: wider privileges",
                match (setuid, setgid) {
                    (true, true) => "setuid and setgid",
                    (true, false) => "setuid",
                    _ => "setgid",
                },
                e.uid,
                e.gid
            ));
        }
        out
    }

    fn read_source(&self, ctx_host: &crate::host::Host) -> Result<Vec<Entry>, ResourceError> {
        let mut out = Vec::new();
        match &self.source {
            None => {}
            Some(TreeSource::Shipped(dir)) => read_shipped_tree(dir, "", &mut out)?,
            Some(TreeSource::Target(dir)) => read_target_tree(ctx_host, dir, "", &mut out)?,
        }
        Ok(out)
    }

    /// Where a copy that replaces a symlink is built before the swap.
    fn temp_copy(&self) -> String {
        let name = self.path.rsplit('/').next().unwrap_or("dir");
        let parent = &self.path[..self.path.len() - name.len()];
        format!("{parent}.{name}.reconcile-new")
    }

    fn child(&self, rel: &str) -> String {
        format!("{}/{rel}", self.path)
    }

    /// Copies the tree into `base` (the final path, or a temp dir beside it).
    fn populate(
        &self,
        host: &crate::host::Host,
        base: &str,
        entries: &[Entry],
    ) -> Result<(), ResourceError> {
        let accounts = host.accounts()?;
        let owners = PermSpec {
            owner: self.perms.owner.clone(),
            group: self.perms.group.clone(),
            mode: None,
        }
        .resolve(&accounts)?;
        for e in entries {
            let target = format!("{base}/{}", e.rel);
            let perms = Perms {
                mode: Some(self.entry_mode(e)),
                ..owners
            };
            match &e.content {
                None => host.create_dir(&target, &perms, &mut Vec::new())?,
                Some(body) => {
                    let live = host.read_body(&target, diff_limit())?;
                    let same = matches!(&live, Some((_, Some(old))) if old.same_as(body));
                    if same {
                        host.set_perms(&target, &perms)?;
                    } else if let Some(bytes) = body.bytes() {
                        host.write_atomic(&target, bytes, &perms, &mut Vec::new(), None)?;
                    } else if let Some(TreeSource::Target(dir)) = &self.source {
                        let src = format!("{dir}/{}", e.rel);
                        host.copy_atomic(&target, &src, &perms, &mut Vec::new(), None)?;
                    } else {
                        return Err(ResourceError::Failed(format!(
                            "{}: content not read",
                            host.show(&target)
                        )));
                    }
                }
            }
        }
        Ok(())
    }
}

fn read_shipped_tree(
    dir: &std::path::Path,
    prefix: &str,
    out: &mut Vec<Entry>,
) -> Result<(), ResourceError> {
    let fail = |e: std::io::Error| ResourceError::Failed(format!("{}: {e}", dir.display()));
    let mut names: Vec<_> = std::fs::read_dir(dir)
        .map_err(fail)?
        .filter_map(|e| e.ok().map(|e| e.file_name()))
        .collect();
    names.sort();
    for name in names {
        let name = name.to_string_lossy().into_owned();
        let path = dir.join(&name);
        let rel = if prefix.is_empty() {
            name.clone()
        } else {
            format!("{prefix}/{name}")
        };
        let meta = std::fs::symlink_metadata(&path).map_err(fail)?;
        if meta.file_type().is_symlink() {
            return Err(ResourceError::Failed(format!(
                "{} is a symlink; source trees may hold only files and folders",
                path.display()
            )));
        } else if meta.is_dir() {
            out.push(Entry {
                rel: rel.clone(),
                content: None,
                mode: meta.mode() & 0o7777,
                uid: meta.uid(),
                gid: meta.gid(),
            });
            read_shipped_tree(&path, &rel, out)?;
        } else {
            // Bounded and regular files only: a FIFO or a device in the tree would block
            // the plan or read without end.
            let bytes = crate::manifest::decode::read_input(&path, None)
                .map_err(|e| ResourceError::Failed(format!("{}: {e}", path.display())))?;
            out.push(Entry {
                rel,
                content: Some(Body::Whole(bytes)),
                mode: meta.mode() & 0o7777,
                uid: meta.uid(),
                gid: meta.gid(),
            });
        }
    }
    Ok(())
}

fn read_target_tree(
    host: &crate::host::Host,
    dir: &str,
    prefix: &str,
    out: &mut Vec<Entry>,
) -> Result<(), ResourceError> {
    match host.lstat(dir)? {
        Some(st) if st.kind == FileKind::Directory => {}
        Some(st) => {
            return Err(ResourceError::Failed(format!(
                "source {} is a {}, not a directory",
                host.show(dir),
                st.kind.name()
            )))
        }
        None => {
            return Err(ResourceError::Failed(format!(
                "source {} does not exist",
                host.show(dir)
            )))
        }
    }
    for name in host.list_dir(dir)? {
        let path = format!("{dir}/{name}");
        let rel = if prefix.is_empty() {
            name.clone()
        } else {
            format!("{prefix}/{name}")
        };
        match host.read_body(&path, diff_limit())? {
            Some((st, _)) if st.kind == FileKind::Directory => {
                out.push(Entry {
                    rel: rel.clone(),
                    content: None,
                    mode: st.mode,
                    uid: st.uid,
                    gid: st.gid,
                });
                read_target_tree(host, &path, &rel, out)?;
            }
            Some((st, Some(body))) => out.push(Entry {
                rel,
                content: Some(body),
                mode: st.mode,
                uid: st.uid,
                gid: st.gid,
            }),
            Some((st, None)) => {
                return Err(ResourceError::Failed(format!(
                    "{} is a {}; source trees may hold only files and folders",
                    host.show(&path),
                    st.kind.name()
                )))
            }
            None => {}
        }
    }
    Ok(())
}

/// Every entry below a live directory, relative, for `purge`.
fn live_entries(
    host: &crate::host::Host,
    dir: &str,
    prefix: &str,
    out: &mut Vec<String>,
) -> Result<(), ResourceError> {
    for name in host.list_dir(dir)? {
        let rel = if prefix.is_empty() {
            name.clone()
        } else {
            format!("{prefix}/{name}")
        };
        let path = format!("{dir}/{name}");
        out.push(rel.clone());
        if host.lstat(&path)?.map(|s| s.kind) == Some(FileKind::Directory) {
            live_entries(host, &path, &rel, out)?;
        }
    }
    Ok(())
}

impl Resource for Directory {
    fn id(&self) -> &ResourceId {
        &self.id
    }

    fn meta(&self) -> &Meta {
        &self.meta
    }

    fn provides(&self) -> Vec<Provide> {
        vec![
            Provide::Path(self.path.clone()),
            Provide::Directory(self.path.clone()),
        ]
    }

    fn needs(&self) -> Vec<Need> {
        let mut needs = vec![parent_dir_need(&self.path)];
        needs.extend(self.perms.needs());
        needs
    }

    fn removes(&self) -> bool {
        self.ensure == Ensure::Absent
    }

    fn managed_path(&self) -> Option<&str> {
        Some(&self.path)
    }

    fn owners(&self) -> (Option<&str>, Option<&str>) {
        (self.perms.owner(), self.perms.group())
    }

    crate::on_the_contract!();

    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// What observing a directory resource found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Observed {
    pub live: Option<Stat>,
    /// The link's target, when a symlink stands at the path.
    pub link_target: Option<String>,
    pub owners: Owners,
    /// The source tree's entries, each with what stands at its place in the copy.
    pub entries: Vec<EntrySeen>,
    /// A copy a killed run left half-built beside the path.
    pub temp_copy: Option<String>,
    /// Everything below the live directory, relative (with `purge`).
    pub live_names: Vec<String>,
    /// Missing parents no declared directory creates.
    pub implied: Vec<String>,
    /// The path as errors show it (with the root in front).
    pub shown: String,
    pub live_fp: String,
    pub desired_fp: String,
}

/// One source entry and its counterpart in the live copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntrySeen {
    pub entry: Entry,
    /// What stands at the entry's place (only when the directory is one already).
    pub live: Option<Stat>,
    pub owners: Owners,
    /// Live content against the source's, when both are files and they differ.
    pub content: Option<ContentSeen>,
    pub temps: Vec<String>,
    /// Permissions or privileges the copy would widen.
    pub widening: Vec<String>,
    pub shown: String,
}

/// One thing applying a directory does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    Create,
    /// A symlink at the path replaced by a copy of the source (built beside it, then
    /// swapped in).
    ReplaceSymlink {
        target: String,
    },
    /// Owner, group or mode of the directory itself.
    Perm(PermOp),
    /// An entry of the source missing from the copy.
    AddEntry {
        rel: String,
        dir: bool,
    },
    /// A copied file whose content differs from the source's.
    WriteEntry {
        rel: String,
        from: String,
        to: String,
        shown: Option<ContentDiff>,
    },
    /// Owner, group or mode of a copied entry (`prefix` names it in the plan).
    EntryPerm {
        prefix: String,
        op: PermOp,
    },
    /// Temp files a killed run left beside a copied file.
    SweepTemps {
        rel: String,
        temps: Vec<String>,
    },
    /// A copy a killed run left beside the path.
    RemoveTempCopy {
        temp: String,
    },
    /// An entry that is not in the source (`purge: true`).
    Purge {
        rel: String,
    },
    /// The whole source tree, copied (unchanged entries keep their content; owner and
    /// mode are set on all).
    CopyTree {
        entries: Vec<Entry>,
    },
    Remove,
}

impl Contract for Directory {
    type State = Observed;
    type Op = Op;

    fn observe(&self, ctx: &PlanCtx) -> Result<Observed, ResourceError> {
        let host = ctx.host;
        let live = observe_below_declared(ctx, &self.path, host.lstat(&self.path))?;
        let entries = match self.ensure {
            Ensure::Present => self.read_source(host)?,
            Ensure::Absent => Vec::new(),
        };
        let mut desired_parts = vec![
            format!("{:?}", self.ensure),
            self.perms.fingerprint_parts(),
            format!("{:?}:{:?}:{}", self.file_mode, self.dir_mode, self.purge),
        ];
        for e in &entries {
            desired_parts.push(format!(
                "{}={}:{}",
                e.rel,
                e.content
                    .as_ref()
                    .map(body_hash)
                    .unwrap_or_else(|| "dir".into()),
                format_mode(e.mode)
            ));
        }
        let mut o = Observed {
            live,
            desired_fp: fingerprint(desired_parts.iter().map(|s| s.as_bytes())),
            shown: host.show(&self.path),
            ..Observed::default()
        };
        let mut live_parts = vec![stat_fingerprint(live.as_ref())];
        let is_dir = live.map(|s| s.kind) == Some(FileKind::Directory);
        let kind = live.map(|s| s.kind);
        let refused = match kind {
            Some(FileKind::Symlink) => self.source.is_none(),
            Some(FileKind::Directory) | None => false,
            Some(_) => true,
        };
        if self.ensure == Ensure::Present && !refused {
            o.owners =
                self.perms
                    .observe(ctx.accounts, ctx.catalog, live.as_ref().filter(|_| is_dir));
            match kind {
                None => o.implied = implied_parents(ctx, &self.path)?,
                Some(FileKind::Symlink) => {
                    let target = host.read_link(&self.path)?.unwrap_or_default();
                    live_parts.push(target.clone());
                    o.link_target = Some(target);
                }
                _ => {}
            }
            for e in entries {
                let child = self.child(&e.rel);
                let live_entry = if is_dir {
                    host.read_body(&child, diff_limit())?
                } else {
                    None
                };
                live_parts.push(format!(
                    "{}={}:{}",
                    e.rel,
                    stat_fingerprint(live_entry.as_ref().map(|(s, _)| s)),
                    live_entry
                        .as_ref()
                        .and_then(|(_, b)| b.as_ref())
                        .map(body_hash)
                        .unwrap_or_default()
                ));
                let spec = self.entry_spec(&e);
                let stat = live_entry.as_ref().map(|(st, _)| *st);
                let content = match (&e.content, &live_entry) {
                    (Some(new), Some((st, old))) if st.kind == FileKind::File => {
                        let empty = Body::Whole(Vec::new());
                        let old = old.as_ref().unwrap_or(&empty);
                        (!old.same_as(new)).then(|| ContentSeen {
                            from: Some(body_hash(old)),
                            to: body_hash(new),
                            shown: (!self.meta.secret).then(|| match (old.bytes(), new.bytes()) {
                                (Some(o), Some(n)) => content_diff(o, n, &child),
                                _ => size_summary(old.size(), new.size()),
                            }),
                        })
                    }
                    _ => None,
                };
                let temps = match (&e.content, stat) {
                    (Some(_), Some(st)) if st.kind == FileKind::File => {
                        host.stale_temps_of(&child)?
                    }
                    _ => Vec::new(),
                };
                o.entries.push(EntrySeen {
                    owners: spec.observe(ctx.accounts, ctx.catalog, stat.as_ref()),
                    widening: self.widening(&e, ctx.accounts),
                    live: stat,
                    content,
                    temps,
                    shown: host.show(&child),
                    entry: e,
                });
            }
            let temp = self.temp_copy();
            if self.source.is_some() && is_dir && host.lstat(&temp)?.is_some() {
                live_parts.push(format!("temp:{temp}"));
                o.temp_copy = Some(temp);
            }
            if self.purge && is_dir {
                live_entries(host, &self.path, "", &mut o.live_names)?;
                for rel in o
                    .live_names
                    .iter()
                    .filter(|r| !o.entries.iter().any(|e| &e.entry.rel == *r))
                {
                    live_parts.push(format!("extra:{rel}"));
                }
            }
        }
        o.live_fp = fingerprint(live_parts.iter().map(|s| s.as_bytes()));
        Ok(o)
    }

    fn diff(&self, o: &Observed, _deps: &DepView) -> Result<Diff<Op>, ResourceError> {
        let mut d = Diff::new(o.live_fp.clone(), o.desired_fp.clone());
        let unsafe_at = |path: &str, reason: String| -> ResourceError {
            HostError::Unsafe {
                path: path.to_string(),
                reason,
            }
            .into()
        };
        let is_dir = o.live.map(|s| s.kind) == Some(FileKind::Directory);
        match (self.ensure, o.live) {
            (Ensure::Absent, None) => return Ok(d),
            (Ensure::Absent, Some(st)) if st.kind != FileKind::Directory => {
                return Err(unsafe_at(
                    &o.shown,
                    format!("is a {}, not a directory; not removing it", st.kind.name()),
                ))
            }
            (Ensure::Absent, Some(_)) => {
                d.op(Action::Delete, Op::Remove);
                return Ok(d);
            }
            (Ensure::Present, Some(st))
                if st.kind == FileKind::Symlink && self.source.is_none() =>
            {
                return Err(unsafe_at(
                    &o.shown,
                    "is a symlink; a directory resource replaces a symlink only when it has a `source:` to copy".into(),
                ));
            }
            (Ensure::Present, Some(st))
                if st.kind != FileKind::Directory && st.kind != FileKind::Symlink =>
            {
                return Err(unsafe_at(
                    &o.shown,
                    format!("is a {}, not a directory", st.kind.name()),
                ));
            }
            (Ensure::Present, live) => {
                if let Some(why) = &o.owners.unknown {
                    return Err(ResourceError::Failed(why.clone()));
                }
                match live {
                    None => {
                        d.implied.clone_from(&o.implied);
                        d.op(Action::Create, Op::Create);
                        for p in self.perms.changes(&o.owners, None, 0o755) {
                            d.op(Action::Create, Op::Perm(p));
                        }
                    }
                    Some(st) if st.kind == FileKind::Symlink => {
                        d.op(
                            Action::Update,
                            Op::ReplaceSymlink {
                                target: o.link_target.clone().unwrap_or_default(),
                            },
                        );
                        for p in self.perms.changes(&o.owners, None, 0o755) {
                            d.op(Action::Update, Op::Perm(p));
                        }
                    }
                    Some(st) => {
                        for p in self.perms.changes(&o.owners, Some(&st), 0o755) {
                            d.op(Action::Update, Op::Perm(p));
                        }
                    }
                }
            }
        }
        for s in &o.entries {
            let e = &s.entry;
            let spec = self.entry_spec(e);
            d.warnings.extend(s.widening.iter().cloned());
            match (&e.content, s.live) {
                (_, None) => {
                    if is_dir {
                        d.op(
                            Action::Update,
                            Op::AddEntry {
                                rel: e.rel.clone(),
                                dir: e.content.is_none(),
                            },
                        );
                    }
                }
                (Some(_), Some(st)) => {
                    if st.kind != FileKind::File {
                        return Err(unsafe_at(
                            &s.shown,
                            format!("is a {}, expected a file", st.kind.name()),
                        ));
                    }
                    let perms = spec.changes(&s.owners, Some(&st), 0o644);
                    // Another name of this inode may be outside the root.
                    if st.nlink > 1 && (s.content.is_some() || !perms.is_empty()) {
                        return Err(unsafe_at(&s.shown, hardlink_reason(st.nlink)));
                    }
                    if let Some(c) = &s.content {
                        d.op(
                            Action::Update,
                            Op::WriteEntry {
                                rel: e.rel.clone(),
                                from: c.from.clone().unwrap_or_default(),
                                to: c.to.clone(),
                                shown: c.shown.clone(),
                            },
                        );
                    }
                    let prefix = format!("{}: ", e.rel);
                    for p in perms {
                        d.op(
                            Action::Update,
                            Op::EntryPerm {
                                prefix: prefix.clone(),
                                op: p,
                            },
                        );
                    }
                    if !s.temps.is_empty() {
                        d.op(
                            Action::Update,
                            Op::SweepTemps {
                                rel: e.rel.clone(),
                                temps: s.temps.clone(),
                            },
                        );
                    }
                }
                (None, Some(st)) => {
                    if st.kind != FileKind::Directory {
                        return Err(unsafe_at(
                            &s.shown,
                            format!("is a {}, expected a directory", st.kind.name()),
                        ));
                    }
                    let prefix = format!("{}/: ", e.rel);
                    for p in spec.changes(&s.owners, Some(&st), 0o755) {
                        d.op(
                            Action::Update,
                            Op::EntryPerm {
                                prefix: prefix.clone(),
                                op: p,
                            },
                        );
                    }
                }
            }
        }
        if let Some(temp) = &o.temp_copy {
            d.op(Action::Update, Op::RemoveTempCopy { temp: temp.clone() });
        }
        for rel in o
            .live_names
            .iter()
            .filter(|r| !o.entries.iter().any(|e| &e.entry.rel == *r))
        {
            d.op(Action::Update, Op::Purge { rel: rel.clone() });
        }
        if d.action != Action::None && self.source.is_some() {
            d.ops.push(Op::CopyTree {
                entries: o.entries.iter().map(|s| s.entry.clone()).collect(),
            });
        }
        Ok(d)
    }

    fn describe(&self, op: &Op, change: &mut Change) {
        match op {
            Op::Create | Op::Remove | Op::CopyTree { .. } => {}
            Op::ReplaceSymlink { target } => change.field(
                "type",
                Some(format!("symlink → {target}")),
                Some("directory (copy)".into()),
            ),
            Op::Perm(p) => p.describe("", change),
            Op::AddEntry { rel, dir } => change.field(
                format!("{rel}/"),
                None,
                Some(if *dir { "directory" } else { "file" }.into()),
            ),
            Op::WriteEntry {
                rel,
                from,
                to,
                shown,
            } => {
                change.secret_field(
                    format!("{rel}: content"),
                    Some(from.clone()),
                    Some(to.clone()),
                );
                if let Some(shown) = shown {
                    shown.clone().record(change, Some(rel));
                }
            }
            Op::EntryPerm { prefix, op } => op.describe(prefix, change),
            Op::SweepTemps { rel, temps } => {
                for t in temps {
                    change.field(
                        format!("{rel}: {TEMP_FIELD}{t}"),
                        Some("left by a killed run".into()),
                        None,
                    );
                }
            }
            Op::RemoveTempCopy { temp } => change.field(
                format!("{TEMP_FIELD}{temp}"),
                Some("left by a killed run".into()),
                None,
            ),
            Op::Purge { rel } => change.field(rel.clone(), Some("present".into()), None),
        }
    }

    fn apply_ops(&self, ops: &[Op], ctx: &ApplyCtx) -> Result<(), ResourceError> {
        let host = ctx.host;
        if ops.contains(&Op::Remove) {
            return Ok(host.remove(&self.path)?);
        }
        for op in ops {
            if let Op::SweepTemps { rel, .. } = op {
                host.remove_stale_temps(&self.child(rel))?;
            }
        }
        let accounts = host.accounts()?;
        let perms: Perms = self.perms.resolve(&accounts)?;
        let entries = ops
            .iter()
            .find_map(|op| match op {
                Op::CopyTree { entries } => Some(entries.as_slice()),
                _ => None,
            })
            .unwrap_or_default();
        let temp = self.temp_copy();
        if ops.iter().any(|op| matches!(op, Op::ReplaceSymlink { .. })) {
            // Build the copy completely beside the symlink, then swap them in one step.
            host.remove(&temp)?;
            host.create_dir(&temp, &perms, &mut Vec::new())?;
            self.populate(host, &temp, entries)?;
            host.exchange(&temp, &self.path)?;
            host.remove(&temp)?;
            return Ok(());
        }
        if self.source.is_some() {
            // A run killed between the swap and its clean-up left the old symlink (or a
            // half-built copy, with the source's modes) under the temp name.
            host.remove(&temp)?;
        }
        host.create_dir(&self.path, &perms, &mut Vec::new())?;
        self.populate(host, &self.path, entries)?;
        for op in ops {
            if let Op::Purge { rel } = op {
                host.remove(&self.child(rel))?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::FileKind::{Directory as Dir, File as Regular, Symlink};

    fn dir(ensure: Ensure, source: bool, mode: Option<u32>) -> Directory {
        Directory {
            id: ResourceId::new("directory", "/srv/site".to_string()),
            meta: Meta::default(),
            path: "/srv/site".into(),
            ensure,
            perms: PermSpec {
                mode,
                ..PermSpec::default()
            },
            source: source.then(|| TreeSource::Target("/opt/site".into())),
            file_mode: None,
            dir_mode: None,
            purge: source,
        }
    }

    fn stat(kind: FileKind, mode: u32, nlink: u64) -> Option<Stat> {
        Some(Stat {
            kind,
            mode,
            uid: 0,
            gid: 0,
            size: 4,
            nlink,
        })
    }

    fn entry(rel: &str) -> Entry {
        Entry {
            rel: rel.into(),
            content: Some(Body::Whole(b"new\n".to_vec())),
            mode: 0o644,
            uid: 0,
            gid: 0,
        }
    }

    fn seen_entry(rel: &str, live: Option<Stat>) -> EntrySeen {
        EntrySeen {
            entry: entry(rel),
            live,
            owners: Owners::default(),
            content: None,
            temps: Vec::new(),
            widening: Vec::new(),
            shown: format!("/r/srv/site/{rel}"),
        }
    }

    fn seen(live: Option<Stat>, entries: Vec<EntrySeen>) -> Observed {
        Observed {
            live,
            entries,
            shown: "/r/srv/site".into(),
            ..Observed::default()
        }
    }

    fn copy(rels: &[&str]) -> Op {
        Op::CopyTree {
            entries: rels.iter().map(|r| entry(r)).collect(),
        }
    }

    #[test]
    fn the_diff_of_a_directory_is_its_typed_operations_or_a_refusal() {
        type Case = (
            &'static str,
            Directory,
            Observed,
            Result<(Action, Vec<Op>), &'static str>,
        );
        let mode = |from, to| Op::Perm(PermOp::Mode { from, to });
        let cases: Vec<Case> = vec![
            (
                "created with the default mode",
                dir(Ensure::Present, false, None),
                seen(None, vec![]),
                Ok((Action::Create, vec![Op::Create, mode(None, 0o755)])),
            ),
            (
                "in sync: nothing",
                dir(Ensure::Present, false, Some(0o755)),
                seen(stat(Dir, 0o755, 2), vec![]),
                Ok((Action::None, vec![])),
            ),
            (
                "mode differs",
                dir(Ensure::Present, false, Some(0o700)),
                seen(stat(Dir, 0o755, 2), vec![]),
                Ok((Action::Update, vec![mode(Some(0o755), 0o700)])),
            ),
            (
                "a symlink without a source is refused",
                dir(Ensure::Present, false, None),
                seen(stat(Symlink, 0o777, 1), vec![]),
                Err("only when it has a `source:`"),
            ),
            (
                "a symlink with a source is replaced by a copy",
                dir(Ensure::Present, true, None),
                Observed {
                    link_target: Some("/opt/v1".into()),
                    ..seen(stat(Symlink, 0o777, 1), vec![seen_entry("a", None)])
                },
                Ok((
                    Action::Update,
                    vec![
                        Op::ReplaceSymlink {
                            target: "/opt/v1".into(),
                        },
                        mode(None, 0o755),
                        copy(&["a"]),
                    ],
                )),
            ),
            (
                "a file at the path is refused",
                dir(Ensure::Present, false, None),
                seen(stat(Regular, 0o644, 1), vec![]),
                Err("is a file, not a directory"),
            ),
            (
                "absent: removed",
                dir(Ensure::Absent, false, None),
                seen(stat(Dir, 0o755, 2), vec![]),
                Ok((Action::Delete, vec![Op::Remove])),
            ),
            (
                "absent: a file at the path is not removed",
                dir(Ensure::Absent, false, None),
                seen(stat(Regular, 0o644, 1), vec![]),
                Err("not removing it"),
            ),
            (
                "absent and gone: nothing",
                dir(Ensure::Absent, false, None),
                seen(None, vec![]),
                Ok((Action::None, vec![])),
            ),
            (
                "a copy in sync: nothing, not even the copy",
                dir(Ensure::Present, true, None),
                seen(
                    stat(Dir, 0o755, 2),
                    vec![seen_entry("a", stat(Regular, 0o644, 1))],
                ),
                Ok((Action::None, vec![])),
            ),
            (
                "a missing entry is added, and the tree copied",
                dir(Ensure::Present, true, None),
                seen(stat(Dir, 0o755, 2), vec![seen_entry("a", None)]),
                Ok((
                    Action::Update,
                    vec![
                        Op::AddEntry {
                            rel: "a".into(),
                            dir: false,
                        },
                        copy(&["a"]),
                    ],
                )),
            ),
            (
                "an entry whose content differs is written, its mode set",
                dir(Ensure::Present, true, None),
                seen(
                    stat(Dir, 0o755, 2),
                    vec![EntrySeen {
                        content: Some(ContentSeen {
                            from: Some("sha256:old".into()),
                            to: "sha256:new".into(),
                            shown: None,
                        }),
                        temps: vec!["/srv/site/.a.tmp".into()],
                        ..seen_entry("a", stat(Regular, 0o600, 1))
                    }],
                ),
                Ok((
                    Action::Update,
                    vec![
                        Op::WriteEntry {
                            rel: "a".into(),
                            from: "sha256:old".into(),
                            to: "sha256:new".into(),
                            shown: None,
                        },
                        Op::EntryPerm {
                            prefix: "a: ".into(),
                            op: PermOp::Mode {
                                from: Some(0o600),
                                to: 0o644,
                            },
                        },
                        Op::SweepTemps {
                            rel: "a".into(),
                            temps: vec!["/srv/site/.a.tmp".into()],
                        },
                        copy(&["a"]),
                    ],
                )),
            ),
            (
                "a directory where the source has a file is refused",
                dir(Ensure::Present, true, None),
                seen(
                    stat(Dir, 0o755, 2),
                    vec![seen_entry("a", stat(Dir, 0o755, 2))],
                ),
                Err("is a directory, expected a file"),
            ),
            (
                "a hardlinked entry is not changed",
                dir(Ensure::Present, true, None),
                seen(
                    stat(Dir, 0o755, 2),
                    vec![seen_entry("a", stat(Regular, 0o600, 3))],
                ),
                Err("3 hard links"),
            ),
            (
                "purge removes what the source lacks; a leftover copy is removed",
                dir(Ensure::Present, true, None),
                Observed {
                    live_names: vec!["a".into(), "stray".into()],
                    temp_copy: Some("/srv/.site.reconcile-new".into()),
                    ..seen(
                        stat(Dir, 0o755, 2),
                        vec![seen_entry("a", stat(Regular, 0o644, 1))],
                    )
                },
                Ok((
                    Action::Update,
                    vec![
                        Op::RemoveTempCopy {
                            temp: "/srv/.site.reconcile-new".into(),
                        },
                        Op::Purge {
                            rel: "stray".into(),
                        },
                        copy(&["a"]),
                    ],
                )),
            ),
        ];
        for (name, d, observed, want) in cases {
            match (d.diff(&observed, &DepView::none()), want) {
                (Ok(got), Ok((action, ops))) => {
                    assert_eq!((got.action, got.ops), (action, ops), "{name}")
                }
                (Err(e), Err(msg)) => assert!(e.to_string().contains(msg), "{name}: {e}"),
                (got, want) => panic!("{name}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn directory_operations_are_described_as_the_plan_showed_them() {
        let d = dir(Ensure::Present, true, None);
        let mut c = Change::new(d.id.clone(), false);
        for op in [
            Op::ReplaceSymlink {
                target: "/opt/v1".into(),
            },
            Op::AddEntry {
                rel: "conf".into(),
                dir: true,
            },
            Op::EntryPerm {
                prefix: "conf/: ".into(),
                op: PermOp::Mode {
                    from: Some(0o700),
                    to: 0o755,
                },
            },
            Op::Purge { rel: "old".into() },
            copy(&["a"]),
        ] {
            d.describe(&op, &mut c);
        }
        let s = |v: &str| Some(v.to_string());
        let fields: Vec<(String, Option<String>, Option<String>)> = c
            .fields
            .iter()
            .map(|f| (f.field.to_string(), f.before.clone(), f.after.clone()))
            .collect();
        assert_eq!(
            fields,
            vec![
                ("type".into(), s("symlink → /opt/v1"), s("directory (copy)")),
                ("conf/".into(), None, s("directory")),
                ("conf/: mode".into(), s("0700"), s("0755")),
                ("old".into(), s("present"), None),
            ]
        );
    }
}
