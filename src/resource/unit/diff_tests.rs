//! The unit diff as a table: observed state in, operations and plan text out. No host.

use std::collections::BTreeMap;

use super::tests::unit;
use super::*;

const TEXT: &str = "[Service]\nExecStart=/bin/true\n\n[Install]\nWantedBy=multi-user.target\n";

/// What stands at the unit file's place, for a test's observation.
#[derive(Clone)]
enum Live {
    Absent,
    File {
        uid: u32,
        gid: u32,
        mode: u32,
        nlink: u64,
        text: String,
    },
    Masked,
    Other(&'static str),
}

fn file(text: &str, mode: u32) -> Live {
    Live::File {
        uid: 0,
        gid: 0,
        mode,
        nlink: 1,
        text: text.into(),
    }
}

/// What the unit's managed file observes of `live` against [`TEXT`] declared root:root
/// 0644 (the mask link as absent), as [`ManagedFile::observe_embedded`] reports it.
fn seen_of(live: &Live) -> (FileState, Option<Seen>, Option<Vec<u8>>) {
    let new = TEXT.as_bytes();
    let created = || Seen {
        content: Some(Box::new(managed_file::ContentSeen {
            from: None,
            to: short_hash(new),
            shown: None,
        })),
        owners: crate::resource::perms::Owners {
            uid: Some(0),
            gid: Some(0),
            ..Default::default()
        },
        ..Seen::default()
    };
    match live {
        Live::Absent => (FileState::Absent, Some(created()), None),
        Live::Masked => (FileState::Masked, Some(created()), None),
        Live::Other(what) => (FileState::Other(what.to_string()), None, None),
        Live::File {
            uid,
            gid,
            mode,
            nlink,
            text,
        } => {
            let old = text.as_bytes();
            let differs = old != new;
            let seen = Seen {
                live: Some(crate::host::Stat {
                    kind: FileKind::File,
                    mode: *mode,
                    uid: *uid,
                    gid: *gid,
                    size: u64::try_from(old.len()).unwrap_or(0),
                    nlink: *nlink,
                }),
                content: differs.then(|| {
                    Box::new(managed_file::ContentSeen {
                        from: Some(short_hash(old)),
                        to: short_hash(new),
                        shown: None,
                    })
                }),
                owners: crate::resource::perms::Owners {
                    uid: Some(0),
                    gid: Some(0),
                    live_user: (*uid != 0).then(|| uid.to_string()),
                    live_group: (*gid != 0).then(|| gid.to_string()),
                    unknown: None,
                },
                ..Seen::default()
            };
            (FileState::File, Some(seen), differs.then(|| old.to_vec()))
        }
    }
}

fn running() -> ShowUnit {
    show_with(&[("ActiveState", "active"), ("SubState", "running")])
}

fn show_with(props: &[(&str, &str)]) -> ShowUnit {
    ShowUnit {
        props: props
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<BTreeMap<_, _>>(),
    }
}

/// A diff made right after the flush: name, spec, observation, what the flush did
/// for it, and the action and operations expected.
type AfterFlushCase = (&'static str, Unit, Observed, Flushed, Action, Vec<Op>);

/// Observed offline with the declared content in place, nothing else known.
fn observed(live: Live) -> Observed {
    let (file, seen, old) = seen_of(&live);
    Observed {
        mode: Mode::Offline,
        mode_note: "offline".into(),
        shown: "/r/etc/systemd/system/u.service".into(),
        root: "/r".into(),
        file,
        seen,
        old,
        enablement: None,
        show: None,
        dropin_changed: None,
        notifiers: Vec::new(),
        main_declared: false,
        lint: None,
        findings: None,
        unsafe_links: None,
    }
}

/// `o` with a temp file that a killed run left beside the unit file.
fn with_temp(mut o: Observed) -> Observed {
    if let Some(seen) = &mut o.seen {
        seen.temps = vec![TEMP.into()];
    }
    o
}

const TEMP: &str = "u.service.reconcile-4194305-0~";

fn sweep() -> Op {
    Op::File(managed_file::Op::SweepTemps {
        temps: vec![TEMP.into()],
    })
}

fn live(f: Live, sh: ShowUnit) -> Observed {
    Observed {
        mode: Mode::Live,
        show: Some(sh),
        ..observed(f)
    }
}

/// The plan fields a diff renders: "field: before → after".
fn shown(u: &Unit, ops: &[Op]) -> Vec<String> {
    let mut c = Change::new(u.id.clone(), false);
    for op in ops {
        u.describe_op(op, &mut c);
    }
    c.fields
        .iter()
        .map(|f| {
            format!(
                "{}: {} → {}",
                f.field,
                f.before.as_deref().unwrap_or("-"),
                f.after.as_deref().unwrap_or("-")
            )
        })
        .collect()
}

/// The unit file written over `before` (None: created) with [`TEXT`].
fn write(before: Option<&str>) -> Op {
    Op::File(managed_file::Op::Write {
        from: before.map(|b| short_hash(b.as_bytes())),
        to: short_hash(TEXT.as_bytes()),
        shown: None,
    })
}

fn perm(p: PermOp) -> Op {
    Op::File(managed_file::Op::Perm(p))
}

fn restart(reason: &str, verb: &'static str) -> Op {
    Op::Restart {
        from: "active (running)".into(),
        reason: reason.into(),
        verb,
    }
}

#[test]
fn unit_diffs_decide_file_enablement_and_run_operations() {
    let svc = || unit("u.service", None, TEXT);
    let enabled = || Unit {
        enabled: Some(true),
        ..svc()
    };
    let disabled = || Unit {
        enabled: Some(false),
        ..svc()
    };
    let with_enablement = |f: Live, e: Option<&str>| Observed {
        enablement: Some(e.map(String::from)),
        ..observed(f)
    };
    let new_install = TEXT.replace("multi-user", "graphical");
    let cases: Vec<(&str, Unit, Observed, Action, Vec<Op>)> = vec![
        (
            "in sync",
            svc(),
            observed(file(TEXT, 0o644)),
            Action::None,
            vec![],
        ),
        (
            "absent: created",
            svc(),
            observed(Live::Absent),
            Action::Create,
            vec![write(None)],
        ),
        (
            "a mask link is replaced by the file",
            svc(),
            observed(Live::Masked),
            Action::Create,
            vec![write(None), Op::ReplaceMask],
        ),
        (
            "other content: written",
            svc(),
            observed(file("[Unit]\n", 0o644)),
            Action::Update,
            vec![write(Some("[Unit]\n"))],
        ),
        (
            "mode and owner fixed in place",
            svc(),
            observed(Live::File {
                uid: 5,
                gid: 6,
                mode: 0o600,
                nlink: 1,
                text: TEXT.into(),
            }),
            Action::Update,
            vec![
                perm(PermOp::Owner {
                    from: Some("5".into()),
                    to: "root".into(),
                }),
                perm(PermOp::Group {
                    from: Some("6".into()),
                    to: "root".into(),
                }),
                perm(PermOp::Mode {
                    from: Some(0o600),
                    to: 0o644,
                }),
            ],
        ),
        (
            "enabled: from disabled",
            enabled(),
            with_enablement(file(TEXT, 0o644), Some("disabled")),
            Action::Update,
            vec![Op::Enable {
                from: "disabled".into(),
            }],
        ),
        (
            "enabled with a changed [Install]: re-enabled",
            enabled(),
            with_enablement(file(&new_install, 0o644), Some("enabled")),
            Action::Update,
            vec![write(Some(&new_install)), Op::Reenable],
        ),
        (
            "enabled and in sync",
            enabled(),
            with_enablement(file(TEXT, 0o644), Some("enabled")),
            Action::None,
            vec![],
        ),
        (
            "disabled: from enabled",
            disabled(),
            with_enablement(file(TEXT, 0o644), Some("enabled")),
            Action::Update,
            vec![Op::Disable {
                from: "enabled".into(),
            }],
        ),
        (
            "masked: true on a unit without a file",
            Unit {
                masked: Some(true),
                content: None,
                file: None,
                ..svc()
            },
            with_enablement(Live::Absent, Some("enabled")),
            Action::Update,
            vec![Op::Mask],
        ),
        (
            "masked: false unmasks, then disables what the mask hid",
            Unit {
                masked: Some(false),
                enabled: Some(false),
                content: None,
                file: None,
                ..svc()
            },
            with_enablement(Live::Masked, Some("masked")),
            Action::Update,
            vec![
                Op::Unmask,
                Op::Disable {
                    from: "masked".into(),
                },
            ],
        ),
        (
            "live: a changed file restarts the running unit",
            svc(),
            live(file("[Unit]\n", 0o644), running()),
            Action::Update,
            vec![
                write(Some("[Unit]\n")),
                restart("its unit file changes", "try-restart"),
            ],
        ),
        (
            "live: an outdated configuration is reloaded and restarts the unit",
            svc(),
            live(
                file(TEXT, 0o644),
                show_with(&[
                    ("ActiveState", "active"),
                    ("SubState", "running"),
                    ("NeedDaemonReload", "yes"),
                ]),
            ),
            Action::Update,
            vec![
                Op::DaemonReload,
                restart("systemd runs an outdated configuration", "try-restart"),
            ],
        ),
        (
            "live: a running oneshot is not interrupted",
            svc(),
            live(
                file("[Unit]\n", 0o644),
                show_with(&[
                    ("ActiveState", "activating"),
                    ("SubState", "start"),
                    ("Type", "oneshot"),
                ]),
            ),
            Action::Update,
            vec![write(Some("[Unit]\n"))],
        ),
        (
            "live: active: true starts a stopped unit (no restart besides)",
            Unit {
                active: Some(true),
                ..svc()
            },
            live(
                file("[Unit]\n", 0o644),
                show_with(&[("ActiveState", "inactive"), ("SubState", "dead")]),
            ),
            Action::Update,
            vec![
                write(Some("[Unit]\n")),
                Op::Start {
                    from: "inactive (dead)".into(),
                },
            ],
        ),
        (
            "live: active: false stops a running unit",
            Unit {
                active: Some(false),
                ..svc()
            },
            live(file(TEXT, 0o644), running()),
            Action::Update,
            vec![Op::Stop {
                from: "active (running)".into(),
            }],
        ),
        (
            "a temp file a killed run left beside the unit file is swept",
            svc(),
            with_temp(observed(file(TEXT, 0o644))),
            Action::Update,
            vec![sweep()],
        ),
        (
            "live: sweeping a temp file neither reloads nor restarts the unit",
            svc(),
            with_temp(live(file(TEXT, 0o644), running())),
            Action::Update,
            vec![sweep()],
        ),
        (
            "live: a changed file is written and the temp file beside it swept",
            svc(),
            with_temp(live(file("[Unit]\n", 0o644), running())),
            Action::Update,
            vec![
                write(Some("[Unit]\n")),
                sweep(),
                restart("its unit file changes", "try-restart"),
            ],
        ),
        (
            "live: a wrong mode is fixed in place, without a reload or restart",
            svc(),
            live(file(TEXT, 0o600), running()),
            Action::Update,
            vec![perm(PermOp::Mode {
                from: Some(0o600),
                to: 0o644,
            })],
        ),
        (
            "live: a declared drop-in that changes restarts its unit",
            svc(),
            Observed {
                dropin_changed: Some(ResourceId::new("unit", "u.service.d/x.conf")),
                ..live(file(TEXT, 0o644), running())
            },
            Action::Update,
            vec![restart(
                "its drop-in unit[u.service.d/x.conf] changes",
                "try-restart",
            )],
        ),
        (
            "live: a drop-in whose unit is declared restarts it through the unit",
            unit("u.service", Some("x.conf"), TEXT),
            Observed {
                main_declared: true,
                ..live(file("[Unit]\n", 0o644), running())
            },
            Action::Update,
            vec![write(Some("[Unit]\n"))],
        ),
        (
            "live: a drop-in alone restarts its unit itself",
            unit("u.service", Some("x.conf"), TEXT),
            live(file("[Unit]\n", 0o644), running()),
            Action::Update,
            vec![
                write(Some("[Unit]\n")),
                restart("its unit file changes", "try-restart"),
            ],
        ),
    ];
    for (name, u, o, action, ops) in cases {
        let d = u
            .diff_unit(&o, &DepView::none())
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(d.ops, ops, "{name}");
        assert_eq!(d.action, action, "{name}");
    }

    // Right after the flush: what it did for the member comes from the executor
    // (the step's result), never from the spec; apply is told it wrote the files.
    let after_flush: Vec<AfterFlushCase> = vec![
        (
            "after the flush: the file's work is kept and the assigned restart is due",
            svc(),
            live(file(TEXT, 0o644), running()),
            Flushed {
                done: vec![write(Some("[Unit]\n"))],
                done_action: Some(Action::Update),
                restart_due: Some("try-restart"),
                ..Flushed::default()
            },
            Action::Update,
            vec![
                write(Some("[Unit]\n")),
                restart(
                    "its unit file, a drop-in or a resource it listens to changed",
                    "try-restart",
                ),
                Op::Flushed,
            ],
        ),
        (
            "after the flush: a restart not assigned to this resource is not made",
            unit("u.service", Some("x.conf"), TEXT),
            live(file(TEXT, 0o644), running()),
            Flushed::default(),
            Action::None,
            vec![],
        ),
        (
            "after the flush: enablement is shown as the plan saw it",
            enabled(),
            Observed {
                enablement: Some(Some("disabled".into())),
                ..observed(file(TEXT, 0o644))
            },
            Flushed {
                planned_enabled: Some("not-found".into()),
                ..Flushed::default()
            },
            Action::Update,
            vec![
                Op::Enable {
                    from: "not-found".into(),
                },
                Op::Flushed,
            ],
        ),
    ];
    for (name, u, o, done, action, ops) in after_flush {
        let staged = contract::Staged::new(done);
        let d = u
            .diff_unit(&o, &DepView::none().after_step(&staged))
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(d.ops, ops, "{name}");
        assert_eq!(d.action, action, "{name}");
        // The same observation without the step's result plans the unit anew.
        let fresh = u
            .diff_unit(&o, &DepView::none())
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(!fresh.ops.contains(&Op::Flushed), "{name}");
    }
}

#[test]
fn restarts_follow_what_the_dependencies_do_in_this_run() {
    let file_id = ResourceId::new("file", "/etc/default/u");
    let conf_id = ResourceId::new("file", "/etc/u.conf");
    // on_notify: auto (the default) acts for restart_on and notify alike.
    let u = unit("u.service", None, TEXT);
    let o = Observed {
        notifiers: vec![file_id.clone(), conf_id.clone()],
        ..live(file(TEXT, 0o644), running())
    };
    let verb = "try-reload-or-restart";
    let cases: Vec<(&str, Vec<&ResourceId>, Vec<Op>)> = vec![
        ("nothing changes", vec![], vec![]),
        (
            "a restart_on target changes",
            vec![&file_id],
            vec![restart("file[/etc/default/u] changes", verb)],
        ),
        (
            "a notifier changes",
            vec![&conf_id],
            vec![restart("file[/etc/u.conf] changes", verb)],
        ),
        (
            "both: one restart, restart_on named first",
            vec![&conf_id, &file_id],
            vec![restart("file[/etc/default/u] changes", verb)],
        ),
    ];
    for (name, changing, ops) in cases {
        let lookup = |id: &ResourceId| Some(changing.contains(&id));
        let d = u
            .diff_unit(&o, &DepView::new(&lookup))
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(d.ops, ops, "{name}");
    }
    // A stopped unit is not restarted for a dependency.
    let stopped = Observed {
        show: Some(show_with(&[("ActiveState", "inactive")])),
        ..o.clone()
    };
    let lookup = |_: &ResourceId| Some(true);
    let d = u
        .diff_unit(&stopped, &DepView::new(&lookup))
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(d.ops.is_empty(), "{:?}", d.ops);
}

#[test]
fn unit_diffs_refuse_what_they_must_not_touch() {
    let svc = || unit("u.service", None, TEXT);
    let cases: Vec<(&str, Unit, Observed, &str)> = vec![
        (
            "a directory at the unit's path",
            svc(),
            observed(Live::Other("a directory")),
            "is a directory; a unit resource will not replace it",
        ),
        (
            "a hardlinked unit file that would change",
            svc(),
            observed(Live::File {
                uid: 0,
                gid: 0,
                mode: 0o644,
                nlink: 2,
                text: "[Unit]\n".into(),
            }),
            "hard link",
        ),
        (
            "masking over a unit file",
            Unit {
                masked: Some(true),
                content: None,
                file: None,
                ..svc()
            },
            Observed {
                enablement: Some(Some("enabled".into())),
                ..observed(file(TEXT, 0o644))
            },
            "cannot mask u.service",
        ),
        (
            "enabling a static unit",
            Unit {
                enabled: Some(true),
                content: None,
                file: None,
                ..svc()
            },
            Observed {
                enablement: Some(Some("static".into())),
                ..observed(Live::Absent)
            },
            "cannot be enabled",
        ),
        (
            "links through a symlinked directory (offline)",
            Unit {
                enabled: Some(true),
                ..svc()
            },
            Observed {
                enablement: Some(Some("disabled".into())),
                unsafe_links: Some(ResourceError::Failed("symlinked wants dir".into())),
                ..observed(file(TEXT, 0o644))
            },
            "symlinked wants dir",
        ),
        (
            "content systemd rejects",
            svc(),
            Observed {
                findings: Some(Findings {
                    errors: vec!["Unknown key Foo".into()],
                    ..Findings::default()
                }),
                ..observed(file(TEXT, 0o644))
            },
            "is rejected by systemd",
        ),
    ];
    for (name, u, o, says) in cases {
        match u.diff_unit(&o, &DepView::none()) {
            Ok(d) => panic!("{name}: accepted with {:?}", d.ops),
            Err(e) => assert!(e.to_string().contains(says), "{name}: {e}"),
        }
    }
    // A symlinked link directory matters only when links are written.
    let o = Observed {
        unsafe_links: Some(ResourceError::Failed("symlinked wants dir".into())),
        ..observed(file("[Unit]\n", 0o644))
    };
    assert!(svc().diff_unit(&o, &DepView::none()).is_ok());
}

#[test]
fn operations_render_the_plan_fields() {
    let u = unit("u.service", None, TEXT);
    let ops = [
        Op::File(managed_file::Op::Write {
            from: None,
            to: "abc".into(),
            shown: None,
        }),
        Op::ReplaceMask,
        perm(PermOp::Mode {
            from: Some(0o600),
            to: 0o644,
        }),
        perm(PermOp::Owner {
            from: Some("5".into()),
            to: "root".into(),
        }),
        perm(PermOp::Group {
            from: Some("6".into()),
            to: "root".into(),
        }),
        Op::File(managed_file::Op::SweepTemps {
            temps: vec!["u.service.reconcile-7-1~".into()],
        }),
        Op::Mask,
        Op::Unmask,
        Op::Enable {
            from: "disabled".into(),
        },
        Op::Reenable,
        Op::Disable {
            from: "enabled".into(),
        },
        Op::DaemonReload,
        Op::Start {
            from: "inactive (dead)".into(),
        },
        Op::Stop {
            from: "active (running)".into(),
        },
        restart("its unit file changes", "try-restart"),
    ];
    assert_eq!(
        shown(&u, &ops),
        [
            "content: - → abc",
            "masked: yes → no",
            "mode: 0600 → 0644",
            "owner: 5 → root",
            "group: 6 → root",
            "temp file u.service.reconcile-7-1~: left by a killed run → -",
            "masked: no → yes",
            "masked: yes → no",
            "enabled: disabled → enabled",
            "enabled: enabled (old [Install]) → re-enabled",
            "enabled: enabled → disabled",
            "daemon-reload: needed: files changed on disk since systemd loaded them → reloaded",
            "active: inactive (dead) → active",
            "active: active (running) → inactive",
            "restart: active (running) → restarted: its unit file changes",
        ]
    );
}
