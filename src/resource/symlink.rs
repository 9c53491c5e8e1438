//! `symlink`: a symbolic link and its target.

use std::any::Any;

use crate::diag::Span;
use crate::host::{FileKind, HostError};
use crate::id::ResourceId;
use crate::manifest::decode::{Decoder, Fields};
use crate::plan::{fingerprint, Action, Change};

use super::perms::stat_fingerprint;
use super::{
    implied_parents, observe_below_declared, parent_dir_need, ApplyCtx, Ensure, Meta, Need,
    PlanCtx, Provide, Resource, ResourceError,
};

#[derive(Debug)]
pub struct Symlink {
    pub id: ResourceId,
    pub meta: Meta,
    pub path: String,
    pub ensure: Ensure,
    pub target: String,
    /// Replace a regular file standing at the path.
    pub force: bool,
}

pub fn decode(
    d: &mut Decoder,
    name: (String, Span),
    meta: Meta,
    f: &mut Fields,
) -> Option<Box<dyn Resource>> {
    let (raw_path, span) = name;
    let path = d.path_name(&raw_path, &span, "symlink");
    let ensure = Ensure::decode(d, f);
    let target = f.string(d, "target");
    if let Some((msg, span)) = target
        .as_ref()
        .and_then(|(t, span)| Some((target_problem(t)?, span)))
    {
        d.error(span, "target", msg);
    }
    let force = f.bool(d, "force").unwrap_or(false);
    if target.is_none() && ensure == Ensure::Present {
        let span = f.span.clone();
        d.error(&span, "target", "`symlink` requires the field `target`");
    }
    let path = path?;
    Some(Box::new(Symlink {
        id: ResourceId::new("symlink", path.clone()),
        meta,
        path,
        ensure,
        target: target.map(|(t, _)| t).unwrap_or_default(),
        force,
    }))
}

/// Why symlink(2) would refuse `target`, found at load time rather than at apply.
fn target_problem(target: &str) -> Option<String> {
    // PATH_MAX counts the terminating NUL.
    const PATH_MAX: usize = 4096;
    if target.is_empty() {
        Some("the target must not be empty".into())
    } else if target.contains('\0') {
        Some("the target contains a NUL byte, which no path can hold".into())
    } else if target.len() >= PATH_MAX {
        Some(format!(
            "the target is {} bytes long; a path holds at most {}",
            target.len(),
            PATH_MAX - 1
        ))
    } else {
        None
    }
}

impl Resource for Symlink {
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
        vec![parent_dir_need(&self.path)]
    }

    fn removes(&self) -> bool {
        self.ensure == Ensure::Absent
    }

    fn managed_path(&self) -> Option<&str> {
        Some(&self.path)
    }

    fn plan(&self, ctx: &PlanCtx) -> Result<Change, ResourceError> {
        let host = ctx.host;
        let mut change = Change::new(self.id.clone(), self.meta.secret);
        let live = observe_below_declared(ctx, &self.path, host.lstat(&self.path))?;
        let live_target = match live {
            Some(st) if st.kind == FileKind::Symlink => host.read_link(&self.path)?,
            _ => None,
        };
        change.live = fingerprint([
            stat_fingerprint(live.as_ref()).as_bytes(),
            live_target.as_deref().unwrap_or("").as_bytes(),
        ]);
        change.desired = fingerprint([
            format!("{:?}", self.ensure).as_bytes(),
            self.target.as_bytes(),
        ]);
        match (self.ensure, live) {
            (Ensure::Absent, None) => {}
            (Ensure::Absent, Some(st)) if st.kind == FileKind::Symlink => {
                change.action = Action::Delete
            }
            (Ensure::Absent, Some(st)) => {
                return Err(HostError::Unsafe {
                    path: host.show(&self.path),
                    reason: format!("is a {}, not a symlink; not removing it", st.kind.name()),
                }
                .into())
            }
            (Ensure::Present, None) => {
                change.action = Action::Create;
                change.implied = implied_parents(ctx, &self.path)?;
                change.field("target", None, Some(self.target.clone()));
            }
            (Ensure::Present, Some(st)) if st.kind == FileKind::Symlink => {
                if live_target.as_deref() != Some(self.target.as_str()) {
                    change.action = Action::Update;
                    change.field("target", live_target, Some(self.target.clone()));
                }
            }
            (Ensure::Present, Some(st)) if st.kind == FileKind::File && self.force => {
                change.action = Action::Update;
                change.field("type", Some("file".into()), Some("symlink".into()));
                change.field("target", None, Some(self.target.clone()));
            }
            (Ensure::Present, Some(st)) => {
                return Err(HostError::Unsafe {
                    path: host.show(&self.path),
                    reason: format!(
                    "is a {}; a symlink resource replaces only a file, and only with `force: true`",
                    st.kind.name()
                ),
                }
                .into())
            }
        }
        Ok(change)
    }

    fn apply(&self, ctx: &ApplyCtx, change: &Change) -> Result<(), ResourceError> {
        match change.action {
            Action::None => Ok(()),
            Action::Delete => Ok(ctx.host.remove(&self.path)?),
            Action::Create | Action::Update => {
                Ok(ctx
                    .host
                    .set_symlink(&self.path, &self.target, &mut Vec::new())?)
            }
        }
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}
