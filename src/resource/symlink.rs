//! `symlink`: a symbolic link and its target.

use std::any::Any;

use crate::diag::Span;
use crate::host::{FileKind, HostError, Stat};
use crate::id::ResourceId;
use crate::manifest::decode::{Decoder, Fields};
use crate::plan::{fingerprint, Action, Change};

use super::contract::{Contract, DepView, Diff};
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

    crate::on_the_contract!();

    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// What is at a symlink resource's path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observed {
    pub live: Option<Stat>,
    /// The link's target, when the path is a symlink.
    pub target: Option<String>,
    /// Missing parents no declared directory creates.
    pub implied: Vec<String>,
    /// The path as errors show it (with the root in front).
    pub shown: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// A new link.
    Create {
        target: String,
    },
    /// An existing link pointed elsewhere.
    Retarget {
        from: String,
        to: String,
    },
    /// A regular file replaced by the link (`force: true`).
    ReplaceFile {
        target: String,
    },
    Remove,
}

impl Contract for Symlink {
    type State = Observed;
    type Op = Op;

    fn observe(&self, ctx: &PlanCtx) -> Result<Observed, ResourceError> {
        let host = ctx.host;
        let live = observe_below_declared(ctx, &self.path, host.lstat(&self.path))?;
        let target = match live {
            Some(st) if st.kind == FileKind::Symlink => host.read_link(&self.path)?,
            _ => None,
        };
        let implied = match (self.ensure, live) {
            (Ensure::Present, None) => implied_parents(ctx, &self.path)?,
            _ => Vec::new(),
        };
        Ok(Observed {
            live,
            target,
            implied,
            shown: host.show(&self.path),
        })
    }

    fn diff(&self, o: &Observed, _deps: &DepView) -> Result<Diff<Op>, ResourceError> {
        let mut d = Diff::new(
            fingerprint([
                stat_fingerprint(o.live.as_ref()).as_bytes(),
                o.target.as_deref().unwrap_or("").as_bytes(),
            ]),
            fingerprint([
                format!("{:?}", self.ensure).as_bytes(),
                self.target.as_bytes(),
            ]),
        );
        let refuse = |reason: String| {
            Err(HostError::Unsafe {
                path: o.shown.clone(),
                reason,
            }
            .into())
        };
        match (self.ensure, o.live) {
            (Ensure::Absent, None) => {}
            (Ensure::Absent, Some(st)) if st.kind == FileKind::Symlink => {
                d.op(Action::Delete, Op::Remove)
            }
            (Ensure::Absent, Some(st)) => {
                return refuse(format!(
                    "is a {}, not a symlink; not removing it",
                    st.kind.name()
                ))
            }
            (Ensure::Present, None) => {
                d.implied.clone_from(&o.implied);
                d.op(
                    Action::Create,
                    Op::Create {
                        target: self.target.clone(),
                    },
                );
            }
            (Ensure::Present, Some(st)) if st.kind == FileKind::Symlink => {
                if o.target.as_deref() != Some(self.target.as_str()) {
                    d.op(
                        Action::Update,
                        Op::Retarget {
                            from: o.target.clone().unwrap_or_default(),
                            to: self.target.clone(),
                        },
                    );
                }
            }
            (Ensure::Present, Some(st)) if st.kind == FileKind::File && self.force => d.op(
                Action::Update,
                Op::ReplaceFile {
                    target: self.target.clone(),
                },
            ),
            (Ensure::Present, Some(st)) => {
                return refuse(format!(
                    "is a {}; a symlink resource replaces only a file, and only with `force: true`",
                    st.kind.name()
                ))
            }
        }
        Ok(d)
    }

    fn describe(&self, op: &Op, change: &mut Change) {
        match op {
            Op::Create { target } => change.field("target", None, Some(target.clone())),
            Op::Retarget { from, to } => {
                change.field("target", Some(from.clone()), Some(to.clone()))
            }
            Op::ReplaceFile { target } => {
                change.field("type", Some("file".into()), Some("symlink".into()));
                change.field("target", None, Some(target.clone()));
            }
            Op::Remove => {}
        }
    }

    fn apply_ops(&self, ops: &[Op], ctx: &ApplyCtx) -> Result<(), ResourceError> {
        for op in ops {
            match op {
                Op::Remove => ctx.host.remove(&self.path)?,
                Op::Create { target }
                | Op::ReplaceFile { target }
                | Op::Retarget { to: target, .. } => {
                    ctx.host.set_symlink(&self.path, target, &mut Vec::new())?
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::Stat;

    fn link(ensure: Ensure, force: bool) -> Symlink {
        Symlink {
            id: ResourceId::new("symlink", "/srv/current".to_string()),
            meta: Meta::default(),
            path: "/srv/current".into(),
            ensure,
            target: "/srv/v2".into(),
            force,
        }
    }

    fn seen(kind: Option<FileKind>, target: Option<&str>) -> Observed {
        Observed {
            live: kind.map(|kind| Stat {
                kind,
                mode: 0o777,
                uid: 0,
                gid: 0,
                size: 0,
                nlink: 1,
            }),
            target: target.map(str::to_string),
            implied: Vec::new(),
            shown: "/srv/current".into(),
        }
    }

    #[test]
    fn the_diff_of_a_symlink_is_one_operation_or_a_refusal() {
        use FileKind::{Directory, File, Symlink as Link};
        let create = Op::Create {
            target: "/srv/v2".into(),
        };
        type Case = (Ensure, bool, Observed, Result<Vec<Op>, &'static str>);
        let cases: Vec<Case> = vec![
            (Ensure::Present, false, seen(None, None), Ok(vec![create])),
            (
                Ensure::Present,
                false,
                seen(Some(Link), Some("/srv/v2")),
                Ok(vec![]),
            ),
            (
                Ensure::Present,
                false,
                seen(Some(Link), Some("/srv/v1")),
                Ok(vec![Op::Retarget {
                    from: "/srv/v1".into(),
                    to: "/srv/v2".into(),
                }]),
            ),
            (
                Ensure::Present,
                false,
                seen(Some(File), None),
                Err("only with `force: true`"),
            ),
            (
                Ensure::Present,
                true,
                seen(Some(File), None),
                Ok(vec![Op::ReplaceFile {
                    target: "/srv/v2".into(),
                }]),
            ),
            (
                Ensure::Present,
                true,
                seen(Some(Directory), None),
                Err("is a directory"),
            ),
            (Ensure::Absent, false, seen(None, None), Ok(vec![])),
            (
                Ensure::Absent,
                false,
                seen(Some(Link), Some("/x")),
                Ok(vec![Op::Remove]),
            ),
            (
                Ensure::Absent,
                false,
                seen(Some(File), None),
                Err("not a symlink"),
            ),
        ];
        for (ensure, force, observed, want) in cases {
            let got = link(ensure, force).diff(&observed, &DepView::none());
            match (got, want) {
                (Ok(d), Ok(ops)) => assert_eq!(d.ops, ops, "{ensure:?} {observed:?}"),
                (Err(e), Err(msg)) => assert!(e.to_string().contains(msg), "{e}"),
                (got, want) => panic!("{ensure:?} {observed:?}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn operations_are_described_as_the_plan_showed_them() {
        let l = link(Ensure::Present, true);
        let mut c = Change::new(l.id.clone(), false);
        l.describe(
            &Op::ReplaceFile {
                target: "/srv/v2".into(),
            },
            &mut c,
        );
        let fields: Vec<(&str, Option<&str>, Option<&str>)> = c
            .fields
            .iter()
            .map(|f| (&*f.field, f.before.as_deref(), f.after.as_deref()))
            .collect();
        assert_eq!(
            fields,
            vec![
                ("type", Some("file"), Some("symlink")),
                ("target", None, Some("/srv/v2"))
            ]
        );
    }
}
