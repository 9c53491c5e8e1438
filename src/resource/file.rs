//! `file`: a regular file's content, owner, group and mode.

use std::any::Any;
use std::sync::Arc;

use sha2::Digest;

use crate::diag::Span;
use crate::host::fs::{hardlink_reason, Body};
use crate::host::{Cmd, FileKind, HostError, Stat};
use crate::id::ResourceId;
use crate::manifest::decode::{Decoder, Fields, SourceRef};
use crate::plan::{
    content_diff, diff_limit, fingerprint, hex, short_hash, size_summary, Action, Change,
};

use super::perms::{stat_fingerprint, PermSpec};
use super::{
    implied_parents, observe_below_declared, parent_dir_dep, ApplyCtx, AutoDep, Ensure, Meta,
    PlanCtx, Resource, ResourceError,
};

#[derive(Debug, Clone)]
pub enum Content {
    /// Known at load time: `content:`, a rendered `template:`, or a shipped `source:`.
    Bytes(Arc<[u8]>),
    /// An absolute `source:`: a file on the target, read when planning.
    TargetFile(String),
}

#[derive(Debug)]
pub struct File {
    pub id: ResourceId,
    pub meta: Meta,
    pub path: String,
    pub ensure: Ensure,
    pub content: Option<Content>,
    pub perms: PermSpec,
    pub validate: Option<String>,
    pub backup: bool,
    /// `hardlinks: allow`: manage a file that has other hard links (otherwise refused).
    pub hardlinks_allowed: bool,
}

/// The desired content while planning: shared bytes from the manifest, or what was
/// observed of an absolute `source:` (whole, or size and hash when large).
enum Want {
    Bytes(Arc<[u8]>),
    Observed(Body),
}

impl Want {
    fn bytes(&self) -> Option<&[u8]> {
        match self {
            Want::Bytes(b) => Some(b),
            Want::Observed(b) => b.bytes(),
        }
    }

    fn size(&self) -> u64 {
        match self {
            Want::Bytes(b) => u64::try_from(b.len()).unwrap_or(u64::MAX),
            Want::Observed(b) => b.size(),
        }
    }

    fn matches(&self, live: &Body) -> bool {
        match (self, live.bytes()) {
            (Want::Bytes(b), Some(l)) => &b[..] == l,
            (Want::Bytes(b), None) => {
                self.size() == live.size()
                    && <[u8; 32]>::from(sha2::Sha256::digest(b)) == live.sha256()
            }
            (Want::Observed(b), _) => b.same_as(live),
        }
    }

    fn hash(&self) -> String {
        match self {
            Want::Bytes(b) => short_hash(b),
            Want::Observed(b) => body_hash(b),
        }
    }
}

/// [`short_hash`] of observed content, whole or streamed.
pub fn body_hash(b: &Body) -> String {
    match b.bytes() {
        Some(bytes) => short_hash(bytes),
        None => format!("sha256:{}", &hex(&b.sha256())[..12]),
    }
}

/// Field name of a temp file a killed run left beside the destination.
pub const TEMP_FIELD: &str = "temp file ";

pub fn decode(
    d: &mut Decoder,
    name: (String, Span),
    meta: Meta,
    f: &mut Fields,
) -> Option<Box<dyn Resource>> {
    let (raw_path, span) = name;
    let path = d.path_name(&raw_path, &span, "file");
    let ensure = Ensure::decode(d, f);
    let perms = PermSpec::decode(d, f);
    let inline = f.raw("content").map(|n| n.span.clone());
    let content_text = f.string(d, "content");
    let template = f.string(d, "template");
    let source = f.source(d, "source");
    let validate = f.string(d, "validate");
    let backup = f.bool(d, "backup").unwrap_or(false);
    let hardlinks_allowed = match f.string(d, "hardlinks") {
        None => false,
        Some((v, _)) if v == "allow" => true,
        Some((v, _)) if v == "refuse" => false,
        Some((v, vspan)) => {
            d.error(
                &vspan,
                "hardlinks",
                format!("`{v}` is not a hardlinks policy; use allow or refuse"),
            );
            false
        }
    };
    let given = [inline.is_some(), template.is_some(), source.is_some()]
        .iter()
        .filter(|&&b| b)
        .count();
    if given > 1 {
        d.error(
            &f.span,
            "content",
            "give at most one of `content`, `template` and `source`",
        );
    }
    let content = if let Some((text, _)) = content_text {
        Some(Content::Bytes(Arc::from(text.into_bytes())))
    } else if let Some((rel, tspan)) = template {
        d.render_template(&rel, &tspan, "template")
            // Shares the rendered text: a template used by many files is stored once.
            .map(|out| Content::Bytes(Arc::<[u8]>::from(out)))
    } else if let Some((src, sspan)) = source {
        match src {
            SourceRef::Target(p) => Some(Content::TargetFile(p)),
            SourceRef::Shipped(p) => d
                .read_shipped(&p, &sspan, "source")
                .map(|b| Content::Bytes(Arc::from(b))),
        }
    } else {
        None
    };
    if let Some((v, vspan)) = &validate {
        if v.contains('\0') {
            // A program's arguments cannot hold NUL: the command could never run.
            d.error(
                vspan,
                "validate",
                "the validate command contains a NUL byte",
            );
        } else if !v.split_whitespace().any(|w| w.contains("%s")) {
            d.error(
                vspan,
                "validate",
                "the validate command must contain %s (the file to check)",
            );
        }
    }
    if ensure == Ensure::Absent
        && (content.is_some() || perms.mode.is_some() || perms.owner.is_some())
    {
        d.warn(
            &f.span,
            "state",
            "state: absent ignores content, owner, group and mode",
        );
    }
    let path = path?;
    Some(Box::new(File {
        id: ResourceId::new("file", path.clone()),
        meta,
        path,
        ensure,
        content,
        perms,
        validate: validate.map(|(v, _)| v),
        backup,
        hardlinks_allowed,
    }))
}

impl File {
    fn desired(&self, ctx: &PlanCtx) -> Result<Option<Want>, ResourceError> {
        match &self.content {
            None => Ok(None),
            Some(Content::Bytes(b)) => Ok(Some(Want::Bytes(b.clone()))),
            Some(Content::TargetFile(src)) => match ctx.host.read_body(src, diff_limit())? {
                Some((_, Some(body))) => Ok(Some(Want::Observed(body))),
                Some((st, None)) => Err(ResourceError::Failed(format!(
                    "source {} is a {}, not a file",
                    ctx.host.show(src),
                    st.kind.name()
                ))),
                None => Err(ResourceError::Failed(format!(
                    "source {} does not exist",
                    ctx.host.show(src)
                ))),
            },
        }
    }

    /// Refuses to change a file that has other hard links, unless allowed.
    fn check_hardlinks(&self, ctx: &PlanCtx, st: &Stat) -> Result<(), ResourceError> {
        if st.kind == FileKind::File && st.nlink > 1 && !self.hardlinks_allowed {
            return Err(HostError::Unsafe {
                path: ctx.host.show(&self.path),
                reason: format!(
                    "{} (add `hardlinks: allow` to the resource to manage it anyway)",
                    hardlink_reason(st.nlink)
                ),
            }
            .into());
        }
        Ok(())
    }

    fn run_validate(&self, command: &str, temp: &std::path::Path) -> Result<(), String> {
        let temp = temp.display().to_string();
        let mut words = command.split_whitespace().map(|w| w.replace("%s", &temp));
        let program = words.next().ok_or("empty validate command")?;
        let out = Cmd::new(program)
            .args(words)
            .run()
            .map_err(|e| e.to_string())?;
        if out.success() {
            Ok(())
        } else {
            // Tools often echo the offending line; for a secret file that could leak it.
            if self.meta.secret {
                Err(format!(
                    "`{command}` rejected the new content ({})",
                    out.status
                        .map_or("signal".into(), |c| format!("exit code {c}"))
                ))
            } else {
                Err(format!("`{command}`: {}", out.reason()))
            }
        }
    }
}

impl Resource for File {
    fn id(&self) -> &ResourceId {
        &self.id
    }

    fn meta(&self) -> &Meta {
        &self.meta
    }

    fn auto_requires(&self) -> Vec<AutoDep> {
        let mut deps = vec![parent_dir_dep(&self.path)];
        deps.extend(self.perms.auto_requires());
        if let Some(Content::TargetFile(src)) = &self.content {
            deps.push(AutoDep::one(ResourceId::new("file", src.clone())));
        }
        deps
    }

    fn managed_path(&self) -> Option<&str> {
        Some(&self.path)
    }

    fn owners(&self) -> (Option<&str>, Option<&str>) {
        (self.perms.owner(), self.perms.group())
    }

    fn plan(&self, ctx: &PlanCtx) -> Result<Change, ResourceError> {
        let mut change = Change::new(self.id.clone(), self.meta.secret);
        let live = observe_below_declared(
            ctx,
            &self.path,
            ctx.host.read_body(&self.path, diff_limit()),
        )?;
        let (stat, live_body) = match &live {
            Some((st, body)) => (Some(*st), body.as_ref()),
            None => (None, None),
        };
        let live_hash = live_body.map(body_hash).unwrap_or_default();
        let stale = observe_below_declared(
            ctx,
            &self.path,
            ctx.host.stale_temps_of(&self.path).map(Some),
        )?
        .unwrap_or_default();
        change.live = fingerprint(
            [
                stat_fingerprint(stat.as_ref()).as_bytes(),
                live_hash.as_bytes(),
            ]
            .into_iter()
            .chain(stale.iter().map(|t| t.as_bytes())),
        );
        if let Some(st) = stat.filter(|s| s.kind != FileKind::File) {
            if self.ensure == Ensure::Present || st.kind != FileKind::Symlink {
                return Err(HostError::Unsafe {
                    path: ctx.host.show(&self.path),
                    reason: format!(
                        "is a {}; a file resource will not replace or follow it (declare a symlink resource, or remove it first)",
                        st.kind.name()
                    ),
                }
                .into());
            }
        }
        let desired = match self.ensure {
            Ensure::Present => self.desired(ctx)?,
            Ensure::Absent => None,
        };
        let in_sync = match (&desired, live_body) {
            (Some(want), Some(body)) => want.matches(body),
            _ => false,
        };
        // In sync, the content hash is the one just taken (hashing was a tenth of a
        // no-op run).
        let desired_hash = match &desired {
            Some(_) if in_sync => live_hash.clone(),
            Some(want) => want.hash(),
            None => String::new(),
        };
        change.desired = fingerprint([
            format!("{:?}", self.ensure).as_bytes(),
            desired_hash.as_bytes(),
            self.perms.fingerprint_parts().as_bytes(),
            self.validate.as_deref().unwrap_or("").as_bytes(),
        ]);
        // Another name of the same inode may be outside the root: its content is never
        // shown, and it is never changed in place.
        let shared_inode = stat.is_some_and(|s| s.nlink > 1 && s.kind == FileKind::File)
            && !self.hardlinks_allowed;
        match (self.ensure, stat) {
            (Ensure::Absent, None) => {}
            (Ensure::Absent, Some(_)) => {
                change.action = Action::Delete;
                if let Some(old) = live_body {
                    if !self.meta.secret && !shared_inode {
                        match old.bytes() {
                            Some(b) => content_diff(b, b"", &self.path).record(&mut change, None),
                            None => size_summary(old.size(), 0).record(&mut change, None),
                        }
                    }
                }
            }
            (Ensure::Present, None) => {
                self.perms.check_known(ctx.accounts, ctx.catalog)?;
                change.action = Action::Create;
                change.implied = implied_parents(ctx, &self.path)?;
                let new_hash = desired
                    .as_ref()
                    .map(Want::hash)
                    .unwrap_or_else(|| short_hash(b""));
                change.secret_field("content", None, Some(new_hash));
                self.perms.diff(ctx.accounts, None, 0o644, &mut change);
                if !self.meta.secret {
                    match desired.as_ref().map(|w| (w.bytes(), w.size())) {
                        Some((Some(new), _)) => {
                            content_diff(b"", new, &self.path).record(&mut change, None)
                        }
                        Some((None, size)) => size_summary(0, size).record(&mut change, None),
                        None => content_diff(b"", b"", &self.path).record(&mut change, None),
                    }
                }
            }
            (Ensure::Present, Some(st)) => {
                self.perms.check_known(ctx.accounts, ctx.catalog)?;
                let mut perm_changes = Change::new(self.id.clone(), self.meta.secret);
                self.perms
                    .diff(ctx.accounts, Some(&st), 0o644, &mut perm_changes);
                let content_changes = desired.is_some() && !in_sync;
                if content_changes || !perm_changes.fields.is_empty() {
                    self.check_hardlinks(ctx, &st)?;
                }
                if let (Some(new), false) = (&desired, in_sync) {
                    let old_hash = live_body.map(body_hash).unwrap_or_else(|| short_hash(b""));
                    change.secret_field("content", Some(old_hash), Some(new.hash()));
                    if !self.meta.secret {
                        let old_size = live_body.map_or(0, Body::size);
                        match (live_body.map(Body::bytes), new.bytes()) {
                            (Some(Some(old)), Some(new)) => {
                                content_diff(old, new, &self.path).record(&mut change, None)
                            }
                            _ => size_summary(old_size, new.size()).record(&mut change, None),
                        }
                    }
                }
                change.fields.extend(perm_changes.fields);
                if !change.fields.is_empty() {
                    change.action = Action::Update;
                }
            }
        }
        for t in &stale {
            change.field(
                format!("{TEMP_FIELD}{t}"),
                Some("left by a killed run".into()),
                None,
            );
        }
        if change.action == Action::None && !stale.is_empty() {
            change.action = Action::Update;
        }
        Ok(change)
    }

    fn apply(&self, ctx: &ApplyCtx, change: &Change) -> Result<(), ResourceError> {
        let host = ctx.host;
        if change
            .fields
            .iter()
            .any(|f| f.field.starts_with(TEMP_FIELD))
        {
            host.remove_stale_temps(&self.path)?;
        }
        let changes_perms = ["owner", "group", "mode"]
            .iter()
            .any(|f| change.changes_field(f));
        match change.action {
            Action::None => Ok(()),
            Action::Delete => Ok(host.remove(&self.path)?),
            Action::Update if self.ensure == Ensure::Absent => Ok(()),
            Action::Create | Action::Update => {
                let accounts = host.accounts()?;
                let mut perms = self.perms.resolve(&accounts)?;
                let live = host.lstat(&self.path)?;
                let writes_content =
                    change.action == Action::Create || change.changes_field("content");
                if !writes_content {
                    if !changes_perms {
                        return Ok(());
                    }
                    if self.hardlinks_allowed {
                        host.set_perms_hardlinked(&self.path, &perms)?;
                    } else {
                        host.set_perms(&self.path, &perms)?;
                    }
                    return Ok(());
                }
                // Unmanaged attributes of a replaced file keep their live values.
                if let Some(st) = &live {
                    perms.uid = perms.uid.or(Some(st.uid));
                    perms.gid = perms.gid.or(Some(st.gid));
                    perms.mode = perms.mode.or(Some(st.mode));
                }
                if self.backup {
                    if let Some(st) = live.filter(|s| s.kind == FileKind::File) {
                        let stamp = jiff::Timestamp::now()
                            .strftime("%Y%m%dT%H%M%SZ")
                            .to_string();
                        let backup = format!("{}.{stamp}.bak", self.path);
                        let keep = crate::host::Perms {
                            uid: Some(st.uid),
                            gid: Some(st.gid),
                            mode: Some(st.mode),
                        };
                        host.copy_atomic(&backup, &self.path, &keep, &mut Vec::new(), None)?;
                    }
                }
                let mut implied = Vec::new();
                let check = |p: &std::path::Path| match &self.validate {
                    Some(cmd) => self.run_validate(cmd, p),
                    None => Ok(()),
                };
                match &self.content {
                    Some(Content::TargetFile(src)) => {
                        host.copy_atomic(&self.path, src, &perms, &mut implied, Some(&check))?
                    }
                    Some(Content::Bytes(b)) => {
                        host.write_atomic(&self.path, b, &perms, &mut implied, Some(&check))?
                    }
                    None => {
                        host.write_atomic(&self.path, b"", &perms, &mut implied, Some(&check))?
                    }
                }
                Ok(())
            }
        }
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}
