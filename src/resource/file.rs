//! `file`: a regular file's content, owner, group and mode.

use std::any::Any;
use std::sync::Arc;

use crate::diag::Span;
use crate::host::{Cmd, FileKind, HostError};
use crate::id::ResourceId;
use crate::manifest::decode::{Decoder, Fields, SourceRef};
use crate::plan::{fingerprint, short_hash, text_diff, Action, Change};

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
}

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
    }))
}

impl File {
    fn desired_bytes(&self, ctx: &PlanCtx) -> Result<Option<Arc<[u8]>>, ResourceError> {
        match &self.content {
            None => Ok(None),
            Some(Content::Bytes(b)) => Ok(Some(b.clone())),
            Some(Content::TargetFile(src)) => match ctx.host.read(src)? {
                Some((_, Some(bytes))) => Ok(Some(Arc::from(bytes))),
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
        let live = observe_below_declared(ctx, &self.path, ctx.host.read(&self.path))?;
        let (stat, live_bytes) = match &live {
            Some((st, bytes)) => (Some(*st), bytes.as_deref()),
            None => (None, None),
        };
        let live_hash = live_bytes.map(short_hash).unwrap_or_default();
        change.live = fingerprint([
            stat_fingerprint(stat.as_ref()).as_bytes(),
            live_hash.as_bytes(),
        ]);
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
            Ensure::Present => self.desired_bytes(ctx)?,
            Ensure::Absent => None,
        };
        // In sync, the content hash is the one just taken (hashing was a tenth of a
        // no-op run).
        let desired_hash = match desired.as_deref() {
            Some(d) if Some(d) == live_bytes => live_hash.clone(),
            Some(d) => short_hash(d),
            None => String::new(),
        };
        change.desired = fingerprint([
            format!("{:?}", self.ensure).as_bytes(),
            desired_hash.as_bytes(),
            self.perms.fingerprint_parts().as_bytes(),
            self.validate.as_deref().unwrap_or("").as_bytes(),
        ]);
        match (self.ensure, stat) {
            (Ensure::Absent, None) => {}
            (Ensure::Absent, Some(_)) => {
                change.action = Action::Delete;
                if let Some(old) = live_bytes {
                    if !self.meta.secret {
                        change.diff = text_diff(old, b"", &self.path);
                    }
                }
            }
            (Ensure::Present, None) => {
                self.perms.check_known(ctx.accounts, ctx.catalog)?;
                change.action = Action::Create;
                change.implied = implied_parents(ctx, &self.path)?;
                let new = desired.clone().unwrap_or_else(|| Arc::from(Vec::new()));
                change.secret_field("content", None, Some(short_hash(&new)));
                self.perms.diff(ctx.accounts, None, 0o644, &mut change);
                if !self.meta.secret {
                    change.diff = text_diff(b"", &new, &self.path);
                }
            }
            (Ensure::Present, Some(st)) => {
                self.perms.check_known(ctx.accounts, ctx.catalog)?;
                let old = live_bytes.unwrap_or_default();
                if let Some(new) = &desired {
                    if old != &new[..] {
                        change.secret_field(
                            "content",
                            Some(short_hash(old)),
                            Some(short_hash(new)),
                        );
                        if !self.meta.secret {
                            change.diff = text_diff(old, new, &self.path);
                        }
                    }
                }
                self.perms.diff(ctx.accounts, Some(&st), 0o644, &mut change);
                if !change.fields.is_empty() {
                    change.action = Action::Update;
                }
            }
        }
        Ok(change)
    }

    fn apply(&self, ctx: &ApplyCtx, change: &Change) -> Result<(), ResourceError> {
        let host = ctx.host;
        match change.action {
            Action::None => Ok(()),
            Action::Delete => Ok(host.remove(&self.path)?),
            Action::Create | Action::Update => {
                let accounts = host.accounts()?;
                let mut perms = self.perms.resolve(&accounts)?;
                let live = host.read(&self.path)?;
                let writes_content =
                    change.action == Action::Create || change.changes_field("content");
                if !writes_content {
                    return Ok(host.set_perms(&self.path, &perms)?);
                }
                // Unmanaged attributes of a replaced file keep their live values.
                if let Some((st, _)) = &live {
                    perms.uid = perms.uid.or(Some(st.uid));
                    perms.gid = perms.gid.or(Some(st.gid));
                    perms.mode = perms.mode.or(Some(st.mode));
                }
                let bytes: Arc<[u8]> = match &self.content {
                    Some(Content::Bytes(b)) => b.clone(),
                    Some(Content::TargetFile(src)) => match host.read(src)? {
                        Some((_, Some(b))) => Arc::from(b),
                        _ => {
                            return Err(ResourceError::Failed(format!(
                                "source {} vanished",
                                host.show(src)
                            )))
                        }
                    },
                    None => live
                        .as_ref()
                        .and_then(|(_, b)| b.clone())
                        .map(Arc::from)
                        .unwrap_or_else(|| Arc::from(Vec::new())),
                };
                if self.backup {
                    if let Some((st, Some(old))) = &live {
                        let stamp = jiff::Timestamp::now()
                            .strftime("%Y%m%dT%H%M%SZ")
                            .to_string();
                        let backup = format!("{}.{stamp}.bak", self.path);
                        let keep = crate::host::Perms {
                            uid: Some(st.uid),
                            gid: Some(st.gid),
                            mode: Some(st.mode),
                        };
                        host.write_atomic(&backup, old, &keep, &mut Vec::new(), None)?;
                    }
                }
                let mut implied = Vec::new();
                let check = |p: &std::path::Path| match &self.validate {
                    Some(cmd) => self.run_validate(cmd, p),
                    None => Ok(()),
                };
                host.write_atomic(&self.path, &bytes, &perms, &mut implied, Some(&check))?;
                Ok(())
            }
        }
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}
