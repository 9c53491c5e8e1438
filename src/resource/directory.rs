//! `directory`: a directory's owner, group and mode; optionally a copy of a whole tree
//! (`source:`), replacing a symlink that stands at the path (the runbook's "replace
//! symlinks with file copies").

use std::any::Any;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

use crate::diag::Span;
use crate::host::fs::{hardlink_reason, Body};
use crate::host::{FileKind, HostError, Perms};
use crate::id::ResourceId;
use crate::manifest::decode::{format_mode, Decoder, Fields, SourceRef};
use crate::plan::{content_diff, diff_limit, fingerprint, size_summary, Action, Change};

use super::file::{body_hash, TEMP_FIELD};
use super::perms::{stat_fingerprint, PermSpec};
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
struct Entry {
    rel: String,
    content: Option<Body>, // None: a directory
    /// The source's permission bits, which the copy keeps unless `file_mode`/`dir_mode`.
    mode: u32,
    uid: u32,
    gid: u32,
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

    fn plan(&self, ctx: &PlanCtx) -> Result<Change, ResourceError> {
        let host = ctx.host;
        let mut change = Change::new(self.id.clone(), self.meta.secret);
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
        change.desired = fingerprint(desired_parts.iter().map(|s| s.as_bytes()));
        let mut live_parts = vec![stat_fingerprint(live.as_ref())];
        let is_dir = live.map(|s| s.kind) == Some(FileKind::Directory);
        match (self.ensure, live) {
            (Ensure::Absent, None) => {}
            (Ensure::Absent, Some(st)) => {
                if st.kind != FileKind::Directory {
                    return Err(HostError::Unsafe {
                        path: host.show(&self.path),
                        reason: format!(
                            "is a {}, not a directory; not removing it",
                            st.kind.name()
                        ),
                    }
                    .into());
                }
                change.action = Action::Delete;
            }
            (Ensure::Present, Some(st))
                if st.kind == FileKind::Symlink && self.source.is_none() =>
            {
                return Err(HostError::Unsafe {
                    path: host.show(&self.path),
                    reason: "is a symlink; a directory resource replaces a symlink only when it has a `source:` to copy".into(),
                }
                .into());
            }
            (Ensure::Present, Some(st))
                if st.kind != FileKind::Directory && st.kind != FileKind::Symlink =>
            {
                return Err(HostError::Unsafe {
                    path: host.show(&self.path),
                    reason: format!("is a {}, not a directory", st.kind.name()),
                }
                .into());
            }
            (Ensure::Present, live) => {
                self.perms.check_known(ctx.accounts, ctx.catalog)?;
                match live {
                    None => {
                        change.action = Action::Create;
                        change.implied = implied_parents(ctx, &self.path)?;
                        self.perms.diff(ctx.accounts, None, 0o755, &mut change);
                    }
                    Some(st) if st.kind == FileKind::Symlink => {
                        change.action = Action::Update;
                        let target = host.read_link(&self.path)?.unwrap_or_default();
                        live_parts.push(target.clone());
                        change.field(
                            "type",
                            Some(format!("symlink → {target}")),
                            Some("directory (copy)".into()),
                        );
                        self.perms.diff(ctx.accounts, None, 0o755, &mut change);
                    }
                    Some(st) => self.perms.diff(ctx.accounts, Some(&st), 0o755, &mut change),
                }
                for e in &entries {
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
                    let spec = self.entry_spec(e);
                    change.warnings.extend(self.widening(e, ctx.accounts));
                    match (&e.content, &live_entry) {
                        (_, None) => {
                            if is_dir {
                                change.field(
                                    format!("{}/", e.rel),
                                    None,
                                    Some(
                                        if e.content.is_some() {
                                            "file"
                                        } else {
                                            "directory"
                                        }
                                        .into(),
                                    ),
                                );
                            }
                        }
                        (Some(new), Some((st, old))) => {
                            if st.kind != FileKind::File {
                                return Err(HostError::Unsafe {
                                    path: host.show(&child),
                                    reason: format!("is a {}, expected a file", st.kind.name()),
                                }
                                .into());
                            }
                            let empty = Body::Whole(Vec::new());
                            let old = old.as_ref().unwrap_or(&empty);
                            let differs = !old.same_as(new);
                            let mut perm_changes = Change::new(self.id.clone(), self.meta.secret);
                            spec.diff_named(
                                ctx.accounts,
                                Some(st),
                                0o644,
                                &mut perm_changes,
                                &format!("{}: ", e.rel),
                            );
                            // Another name of this inode may be outside the root.
                            if st.nlink > 1 && (differs || !perm_changes.fields.is_empty()) {
                                return Err(HostError::Unsafe {
                                    path: host.show(&child),
                                    reason: hardlink_reason(st.nlink),
                                }
                                .into());
                            }
                            if differs {
                                change.secret_field(
                                    format!("{}: content", e.rel),
                                    Some(body_hash(old)),
                                    Some(body_hash(new)),
                                );
                                if !self.meta.secret {
                                    match (old.bytes(), new.bytes()) {
                                        (Some(o), Some(n)) => content_diff(o, n, &child)
                                            .record(&mut change, Some(&e.rel)),
                                        _ => size_summary(old.size(), new.size())
                                            .record(&mut change, Some(&e.rel)),
                                    }
                                }
                            }
                            change.fields.extend(perm_changes.fields);
                            for t in host.stale_temps_of(&child)? {
                                change.field(
                                    format!("{}: {TEMP_FIELD}{t}", e.rel),
                                    Some("left by a killed run".into()),
                                    None,
                                );
                            }
                        }
                        (None, Some((st, _))) => {
                            if st.kind != FileKind::Directory {
                                return Err(HostError::Unsafe {
                                    path: host.show(&child),
                                    reason: format!(
                                        "is a {}, expected a directory",
                                        st.kind.name()
                                    ),
                                }
                                .into());
                            }
                            spec.diff_named(
                                ctx.accounts,
                                Some(st),
                                0o755,
                                &mut change,
                                &format!("{}/: ", e.rel),
                            );
                        }
                    }
                }
                let temp = self.temp_copy();
                if self.source.is_some() && is_dir && host.lstat(&temp)?.is_some() {
                    live_parts.push(format!("temp:{temp}"));
                    change.field(
                        format!("{TEMP_FIELD}{temp}"),
                        Some("left by a killed run".into()),
                        None,
                    );
                }
                if self.purge && is_dir {
                    let mut extra = Vec::new();
                    live_entries(host, &self.path, "", &mut extra)?;
                    for rel in extra
                        .iter()
                        .filter(|r| !entries.iter().any(|e| &e.rel == *r))
                    {
                        live_parts.push(format!("extra:{rel}"));
                        change.field(rel.clone(), Some("present".into()), None);
                    }
                }
                if change.action == Action::None && !change.fields.is_empty() {
                    change.action = Action::Update;
                }
            }
        }
        change.live = fingerprint(live_parts.iter().map(|s| s.as_bytes()));
        Ok(change)
    }

    fn apply(&self, ctx: &ApplyCtx, change: &Change) -> Result<(), ResourceError> {
        let host = ctx.host;
        if change.action == Action::Delete {
            return Ok(host.remove(&self.path)?);
        }
        if change.action == Action::None {
            return Ok(());
        }
        for f in &change.fields {
            if let Some((rel, _)) = f.field.split_once(&format!(": {TEMP_FIELD}")) {
                host.remove_stale_temps(&self.child(rel))?;
            }
        }
        let accounts = host.accounts()?;
        let perms: Perms = self.perms.resolve(&accounts)?;
        let entries = self.read_source(host)?;
        let live = host.lstat(&self.path)?;
        let temp = self.temp_copy();
        if live.map(|s| s.kind) == Some(FileKind::Symlink) {
            // Build the copy completely beside the symlink, then swap them in one step.
            host.remove(&temp)?;
            host.create_dir(&temp, &perms, &mut Vec::new())?;
            self.populate(host, &temp, &entries)?;
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
        self.populate(host, &self.path, &entries)?;
        if self.purge {
            let mut extra = Vec::new();
            live_entries(host, &self.path, "", &mut extra)?;
            for rel in extra
                .iter()
                .filter(|r| !entries.iter().any(|e| &e.rel == *r))
            {
                host.remove(&self.child(rel))?;
            }
        }
        Ok(())
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}
