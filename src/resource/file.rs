//! `file`: a regular file's content, owner, group and mode: a [`ManagedFile`] with a
//! `state:`.

use std::any::Any;
use std::sync::Arc;

use crate::diag::Span;
use crate::id::ResourceId;
use crate::manifest::decode::{Decoder, Fields, SourceRef};
use crate::plan::Change;

use super::contract::{Contract, DepView, Diff};
pub use super::managed_file::{body_hash, Content, Origin, TEMP_FIELD};
use super::managed_file::{is_block, ManagedFile, Op, Seen};
use super::perms::PermSpec;
use super::{
    parent_dir_need, ApplyCtx, Ensure, Meta, Need, PlanCtx, Provide, Resource, ResourceError,
};

#[derive(Debug)]
pub struct File {
    pub id: ResourceId,
    pub meta: Meta,
    pub ensure: Ensure,
    pub file: ManagedFile,
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
    // The text as written: a `|` block keeps the manifest's line breaks, so its lines
    // can be named in validator messages.
    let inline_lines = f
        .raw("content")
        .and_then(|n| n.as_str())
        .map(|raw| raw.lines().count());
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
    let wants_origin = validate.is_some();
    let mut origin = Origin::Unknown;
    let content = if let Some((text, cspan)) = content_text {
        if wants_origin {
            origin = match inline_lines {
                Some(n) if n > 1 && n == text.lines().count() && is_block(&cspan) => {
                    Origin::Block(cspan)
                }
                _ => Origin::Inline(cspan),
            };
        }
        Some(Content::Bytes(Arc::from(text.into_bytes())))
    } else if let Some((rel, tspan)) = template {
        if wants_origin {
            let shown = d.template_path(&rel);
            // Read again only for validated files: the decoder's copy is private to it.
            origin = Origin::Template {
                source: crate::manifest::decode::read_input(&shown, None)
                    .ok()
                    .and_then(|b| String::from_utf8(b).ok()),
                shown: crate::manifest::decode::display_path(&shown),
            };
        }
        d.render_template(&rel, &tspan, "template")
            // Shares the rendered text: a template used by many files is stored once.
            .map(|out| Content::Bytes(Arc::<[u8]>::from(out)))
    } else if let Some((src, sspan)) = source {
        match src {
            SourceRef::Target(p) => {
                origin = Origin::File(p.clone());
                Some(Content::TargetFile(p))
            }
            SourceRef::Shipped(p) => {
                origin = Origin::File(crate::manifest::decode::display_path(&p));
                d.read_shipped(&p, &sspan, "source")
                    .map(|b| Content::Bytes(Arc::from(b)))
            }
        }
    } else {
        None
    };
    if let Some(p) = path.as_deref().filter(|p| p.contains(['*', '?', '['])) {
        d.warn(
            &span,
            "file",
            format!("`{p}` contains a glob character: a file resource manages one file of exactly that name (a literal `*` here), it does not expand patterns; name each file, or manage the directory"),
        );
    }
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
        ensure,
        file: ManagedFile {
            path,
            content,
            perms,
            default_mode: 0o644,
            validate: validate.map(|(v, _)| v),
            origin: (!matches!(origin, Origin::Unknown)).then(|| Box::new(origin)),
            backup,
            hardlinks_allowed,
            secret: meta.secret,
        },
        meta,
    }))
}

impl Resource for File {
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
        needs.extend(self.file.perms.needs());
        if let Some(Content::TargetFile(src)) = &self.file.content {
            needs.push(Need::path(src.clone()));
        }
        needs
    }

    fn removes(&self) -> bool {
        self.ensure == Ensure::Absent
    }

    fn managed_path(&self) -> Option<&str> {
        Some(&self.file.path)
    }

    fn owners(&self) -> (Option<&str>, Option<&str>) {
        (self.file.perms.owner(), self.file.perms.group())
    }

    crate::on_the_contract!();

    fn as_any(&self) -> &dyn Any {
        self
    }
}

impl Contract for File {
    type State = Seen;
    type Op = Op;

    fn observe(&self, ctx: &PlanCtx) -> Result<Seen, ResourceError> {
        self.file.observe(ctx, self.ensure)
    }

    fn diff(&self, seen: &Seen, _deps: &DepView) -> Result<Diff<Op>, ResourceError> {
        self.file.diff(self.ensure, seen)
    }

    fn describe(&self, op: &Op, change: &mut Change) {
        ManagedFile::describe(op, change)
    }

    fn apply_ops(&self, ops: &[Op], ctx: &ApplyCtx) -> Result<(), ResourceError> {
        self.file.apply(ctx.host, ops)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::{FileKind, Stat};
    use crate::plan::{Action, ContentDiff};
    use crate::resource::managed_file::ContentSeen;
    use crate::resource::perms::{Owners, PermOp};

    struct Case {
        name: &'static str,
        ensure: Ensure,
        backup: bool,
        hardlinks: bool,
        mode: Option<u32>,
        seen: Seen,
        want: Result<(Action, Vec<Op>), &'static str>,
    }

    fn file(c: &Case) -> File {
        File {
            id: ResourceId::new("file", "/etc/app.conf".to_string()),
            meta: Meta::default(),
            ensure: c.ensure,
            file: ManagedFile {
                path: "/etc/app.conf".into(),
                content: Some(Content::Bytes(Arc::from(&b"new\n"[..]))),
                perms: PermSpec {
                    mode: c.mode,
                    ..PermSpec::default()
                },
                default_mode: 0o644,
                validate: None,
                origin: None,
                backup: c.backup,
                hardlinks_allowed: c.hardlinks,
                secret: false,
            },
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

    fn seen(live: Option<Stat>) -> Seen {
        Seen {
            live,
            shown: "/r/etc/app.conf".into(),
            ..Seen::default()
        }
    }

    fn differs(from: Option<&str>) -> Option<Box<ContentSeen>> {
        Some(Box::new(ContentSeen {
            from: from.map(str::to_string),
            to: "sha256:new".into(),
            shown: Some(ContentDiff::Text("-old\n+new\n".into())),
        }))
    }

    fn write(from: Option<&str>) -> Op {
        Op::Write {
            from: from.map(str::to_string),
            to: "sha256:new".into(),
            shown: Some(ContentDiff::Text("-old\n+new\n".into())),
        }
    }

    fn case(name: &'static str, seen: Seen, want: Result<(Action, Vec<Op>), &'static str>) -> Case {
        Case {
            name,
            ensure: Ensure::Present,
            backup: false,
            hardlinks: false,
            mode: None,
            seen,
            want,
        }
    }

    #[test]
    fn the_diff_of_a_file_is_its_typed_operations_or_a_refusal() {
        use FileKind::{Directory, File as Regular, Symlink};
        let cases = vec![
            case(
                "created with its content and the default mode",
                Seen {
                    content: differs(None),
                    ..seen(None)
                },
                Ok((
                    Action::Create,
                    vec![
                        write(None),
                        Op::Perm(PermOp::Mode {
                            from: None,
                            to: 0o644,
                        }),
                    ],
                )),
            ),
            case(
                "in sync: nothing",
                seen(stat(Regular, 0o644, 1)),
                Ok((Action::None, vec![])),
            ),
            case(
                "content differs: one write",
                Seen {
                    content: differs(Some("sha256:old")),
                    ..seen(stat(Regular, 0o644, 1))
                },
                Ok((Action::Update, vec![write(Some("sha256:old"))])),
            ),
            Case {
                backup: true,
                ..case(
                    "content differs with backup: a backup, then the write",
                    Seen {
                        content: differs(Some("sha256:old")),
                        ..seen(stat(Regular, 0o644, 1))
                    },
                    Ok((Action::Update, vec![Op::Backup, write(Some("sha256:old"))])),
                )
            },
            Case {
                mode: Some(0o600),
                ..case(
                    "mode differs: set in place",
                    seen(stat(Regular, 0o644, 1)),
                    Ok((
                        Action::Update,
                        vec![Op::Perm(PermOp::Mode {
                            from: Some(0o644),
                            to: 0o600,
                        })],
                    )),
                )
            },
            case(
                "a hardlinked file is not changed",
                Seen {
                    content: differs(Some("sha256:old")),
                    ..seen(stat(Regular, 0o644, 2))
                },
                Err("2 hard links"),
            ),
            case(
                "a hardlinked file in sync is no problem",
                seen(stat(Regular, 0o644, 2)),
                Ok((Action::None, vec![])),
            ),
            Case {
                hardlinks: true,
                ..case(
                    "hardlinks: allow writes it",
                    Seen {
                        content: differs(Some("sha256:old")),
                        ..seen(stat(Regular, 0o644, 2))
                    },
                    Ok((Action::Update, vec![write(Some("sha256:old"))])),
                )
            },
            case(
                "a directory at the path is refused",
                Seen {
                    refused: Some(Directory),
                    ..seen(stat(Directory, 0o755, 2))
                },
                Err("is a directory; a file resource will not replace or follow it"),
            ),
            case(
                "an unknown owner is a plan error",
                Seen {
                    owners: Owners {
                        unknown: Some("owner `app` is not a user".into()),
                        ..Owners::default()
                    },
                    content: differs(None),
                    ..seen(None)
                },
                Err("owner `app` is not a user"),
            ),
            case(
                "rejected by the validator",
                Seen {
                    rejected: Some("validation failed, apply would refuse this content".into()),
                    content: differs(Some("sha256:old")),
                    ..seen(stat(Regular, 0o644, 1))
                },
                Err("validation failed"),
            ),
            case(
                "leftover temps are swept",
                Seen {
                    temps: vec!["/etc/.app.conf.tmp1".into()],
                    ..seen(stat(Regular, 0o644, 1))
                },
                Ok((
                    Action::Update,
                    vec![Op::SweepTemps {
                        temps: vec!["/etc/.app.conf.tmp1".into()],
                    }],
                )),
            ),
            Case {
                ensure: Ensure::Absent,
                ..case(
                    "absent and gone: nothing",
                    seen(None),
                    Ok((Action::None, vec![])),
                )
            },
            Case {
                ensure: Ensure::Absent,
                ..case(
                    "absent: removed, showing what goes",
                    Seen {
                        removed: Some(ContentDiff::Text("-old\n".into())),
                        ..seen(stat(Regular, 0o644, 1))
                    },
                    Ok((
                        Action::Delete,
                        vec![Op::Remove {
                            shown: Some(ContentDiff::Text("-old\n".into())),
                        }],
                    )),
                )
            },
            Case {
                ensure: Ensure::Absent,
                ..case(
                    "absent: a symlink at the path is removed",
                    seen(stat(Symlink, 0o777, 1)),
                    Ok((Action::Delete, vec![Op::Remove { shown: None }])),
                )
            },
            Case {
                ensure: Ensure::Absent,
                ..case(
                    "absent and gone, temps left: swept",
                    Seen {
                        temps: vec!["/etc/.app.conf.tmp1".into()],
                        ..seen(None)
                    },
                    Ok((
                        Action::Update,
                        vec![Op::SweepTemps {
                            temps: vec!["/etc/.app.conf.tmp1".into()],
                        }],
                    )),
                )
            },
        ];
        for c in cases {
            let got = file(&c).diff(&c.seen, &DepView::none());
            match (got, &c.want) {
                (Ok(d), Ok((action, ops))) => {
                    assert_eq!((d.action, &d.ops), (*action, ops), "{}", c.name)
                }
                (Err(e), Err(msg)) => assert!(e.to_string().contains(msg), "{}: {e}", c.name),
                (got, want) => panic!("{}: got {got:?}, want {want:?}", c.name),
            }
        }
    }

    #[test]
    fn file_operations_are_described_as_the_plan_showed_them() {
        let fields = |secret: bool, ops: &[Op]| {
            let mut c = Change::new(ResourceId::new("file", "/x".to_string()), secret);
            for op in ops {
                ManagedFile::describe(op, &mut c);
            }
            let fields: Vec<(String, Option<String>, Option<String>)> = c
                .fields
                .iter()
                .map(|f| (f.field.to_string(), f.before.clone(), f.after.clone()))
                .collect();
            (fields, c.diff)
        };
        let ops = [
            Op::Backup,
            write(Some("sha256:old")),
            Op::Perm(PermOp::Owner {
                from: Some("root".into()),
                to: "app".into(),
            }),
            Op::Perm(PermOp::Mode {
                from: Some(0o644),
                to: 0o600,
            }),
            Op::SweepTemps {
                temps: vec!["/.x.tmp".into()],
            },
        ];
        let s = |v: &str| Some(v.to_string());
        assert_eq!(
            fields(false, &ops),
            (
                vec![
                    ("content".into(), s("sha256:old"), s("sha256:new")),
                    ("owner".into(), s("root"), s("app")),
                    ("mode".into(), s("0644"), s("0600")),
                    ("temp file /.x.tmp".into(), s("left by a killed run"), None),
                ],
                s("-old\n+new\n")
            )
        );
        let (secret, _) = fields(true, &ops[1..2]);
        assert_eq!(
            secret,
            vec![("content".into(), s("(sensitive)"), s("(sensitive)"))]
        );
    }
}
