//! Observing a unit (its file, `systemctl show`/`is-enabled`, systemd's verdict) and
//! the pure diff that decides its operations.

use super::*;

/// What the unit file's place holds now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileState {
    Absent,
    /// A regular file (for a unit with content, [`Observed::seen`] says how it differs).
    File,
    /// `/dev/null` symlink: the unit is masked.
    Masked,
    Other(String),
}

/// The mode of a unit file.
pub(super) const UNIT_MODE: u32 = 0o644;

/// What stands at a unit file's place: the mask link is the unit's own business (a
/// managed file would refuse it as a symlink), so it is looked at first.
pub(super) fn read_file_state(host: &Host, path: &str) -> Result<FileState, ResourceError> {
    Ok(match host.lstat(path)? {
        None => FileState::Absent,
        Some(st) if st.kind == FileKind::File => FileState::File,
        Some(st) if st.kind == FileKind::Symlink => match host.read_link(path)?.as_deref() {
            Some("/dev/null") => FileState::Masked,
            Some(t) => FileState::Other(format!("a symlink to {t}")),
            None => FileState::Other("a symlink".into()),
        },
        Some(st) => FileState::Other(format!("a {}", st.kind.name())),
    })
}

/// A unit's file as a managed file: the rendered text, root:root 0644 when reconcile
/// runs as root (`as_root`; 0644 only otherwise), no validator (systemd's verification
/// is the unit's own, on a scratch root of all units), no backup, hard links refused.
pub(super) fn unit_file(
    path: &str,
    text: &str,
    span: &Span,
    secret: bool,
    as_root: bool,
) -> ManagedFile {
    // Numeric: a bare `--root` tree has no /etc/passwd to name root in.
    let root = || ("0".to_string(), span.clone());
    ManagedFile {
        path: path.to_string(),
        content: Some(managed_file::Content::Bytes(Arc::from(text.as_bytes()))),
        perms: PermSpec {
            owner: as_root.then(root),
            group: as_root.then(root),
            mode: Some(UNIT_MODE),
        },
        default_mode: UNIT_MODE,
        validate: None,
        origin: None,
        backup: false,
        hardlinks_allowed: false,
        secret,
    }
}

pub(super) fn want_owner() -> bool {
    nix::unistd::geteuid().is_root()
}

impl Unit {
    /// Whether the unit should be running now: `active:` when given; for a timer,
    /// socket or path unit without it, what `enabled:` says (an enabled schedule is an
    /// armed one, as `systemctl enable --now` and NixOS do it; see docs/units.md).
    pub(super) fn wants_active(&self) -> Option<bool> {
        self.active.or_else(|| {
            let trigger =
                self.dropin.is_none() && matches!(self.unit_type(), "timer" | "socket" | "path");
            self.enabled.filter(|_| trigger)
        })
    }

    pub(super) fn unit_type(&self) -> &str {
        self.unit.rsplit_once('.').map(|(_, t)| t).unwrap_or("")
    }

    /// The main unit resource of this drop-in, when declared.
    pub(super) fn main_declared(&self, catalog: &Catalog) -> bool {
        self.dropin.is_some()
            && catalog
                .typed::<Unit>(&ResourceId::new("unit", self.unit.clone()))
                .is_some()
    }

    /// Declared drop-ins of this unit (for a main unit).
    pub(super) fn declared_dropins<'c>(&self, catalog: &'c Catalog) -> Vec<&'c Unit> {
        catalog
            .resources
            .iter()
            .filter_map(|r| r.as_any().downcast_ref::<Unit>())
            .filter(|u| u.unit == self.unit && u.dropin.is_some())
            .collect()
    }

    /// Resources whose change restarts this unit: `restart_on`, and those that
    /// `notify` it (both are its dependencies, so a diff learns whether they change).
    pub(super) fn notifiers(&self, catalog: &Catalog) -> Vec<ResourceId> {
        let mut ids: Vec<&ResourceId> = self.restart_on.iter().map(|(id, _)| id).collect();
        for r in &catalog.resources {
            if r.meta().notify.iter().any(|(id, _)| id == &self.id) {
                ids.push(r.id());
            }
        }
        let mut seen = HashSet::new();
        ids.into_iter()
            .filter(|id| seen.insert((*id).clone()))
            .filter(|id| catalog.contains(id))
            .cloned()
            .collect()
    }

    pub(super) fn restartable(&self, show: &ShowUnit) -> bool {
        if self.unit_type() == "target" {
            return false;
        }
        // A oneshot that runs right now would be killed mid-way by a restart; one that
        // finished (no RemainAfterExit) is not running and needs nothing.
        if show.service_type() == Some("oneshot")
            && !show.get("RemainAfterExit").is_some_and(is_yes)
        {
            return false;
        }
        show.active_state().is_running()
    }
}

// ---------------------------------------------------------------------------------
// Planning: observe (every host read), then a pure diff

/// What observing a unit found: its file, its enablement and run state, what its
/// validation said.
#[derive(Debug, Clone)]
pub struct Observed {
    pub mode: Mode,
    /// The plan's note on the mode (names the root offline).
    pub mode_note: String,
    /// The unit file's path as errors show it.
    pub shown: String,
    /// The target's root as messages show it.
    pub root: String,
    pub file: FileState,
    /// What the unit's managed file observed (for a unit with content, unless the place
    /// holds something it will not replace); a mask link is observed as absent, since
    /// the write replaces it.
    pub seen: Option<Seen>,
    /// The live file's content where it differs from the declared: its `[Install]`
    /// section decides a re-enable.
    pub old: Option<Vec<u8>>,
    /// `systemctl is-enabled` (`None`: not asked; `Some(None)`: not found).
    pub enablement: Option<Option<String>>,
    /// `systemctl show` (live only).
    pub show: Option<ShowUnit>,
    /// For a main unit that would restart: its first declared drop-in whose file
    /// differs from the declared one.
    pub dropin_changed: Option<ResourceId>,
    /// `restart_on` targets and notifiers.
    pub notifiers: Vec<ResourceId>,
    /// For a drop-in: its unit's resource is declared (and restarts it).
    pub main_declared: bool,
    pub lint: Option<String>,
    /// systemd's verdict on the content (`None`: not validated this time).
    pub findings: Option<Findings>,
    /// Why `systemctl --root` must not write this unit's links (offline).
    pub unsafe_links: Option<ResourceError>,
}

impl Unit {
    /// [`Contract::observe`]: every host read planning a unit needs.
    pub(super) fn observe_unit(&self, ctx: &PlanCtx) -> Result<Observed, ResourceError> {
        self.check_accounts(ctx)?;
        let host = ctx.host;
        let m = detect_mode(host);
        let file = read_file_state(host, &self.path)?;
        let mut o = Observed {
            mode: m,
            mode_note: mode_note(host, m),
            shown: host.show(&self.path),
            root: host.root().display().to_string(),
            file,
            seen: None,
            old: None,
            enablement: None,
            show: None,
            dropin_changed: None,
            notifiers: Vec::new(),
            main_declared: self.main_declared(ctx.catalog),
            lint: None,
            findings: None,
            unsafe_links: None,
        };
        if let Some(mf) = &self.file {
            if matches!(o.file, FileState::Other(_)) {
                // Refused by the diff whatever else is found.
                return Ok(o);
            }
            let masked = matches!(o.file, FileState::Masked);
            let (seen, body) = mf.observe_embedded(ctx, Ensure::Present, masked)?;
            if seen.content.is_some() && seen.live.is_some() {
                o.old = match body {
                    Some(Body::Whole(bytes)) => Some(bytes),
                    // Over the diff limit: read whole, for its [Install] section.
                    _ => host.read(&self.path)?.and_then(|(_, bytes)| bytes),
                };
            }
            o.seen = Some(seen);
        }
        let file_changes = o.seen.as_ref().is_some_and(|s| s.content.is_some());
        let links = self.dropin.is_none()
            && (self.enabled.is_some()
                || self.masked.is_some()
                || matches!(o.file, FileState::Masked));
        if links {
            o.enablement = Some(is_enabled(host, m, &self.unit)?);
        }
        if m == Mode::Live {
            let sh = show(host, &self.unit)?;
            let may_restart = self.dropin.is_none()
                && !file_changes
                && !sh.need_daemon_reload()
                && self.wants_active() != Some(false)
                && self.masked != Some(true)
                && self.restartable(&sh);
            if may_restart {
                o.dropin_changed = self.changed_dropin(ctx)?;
            }
            o.notifiers = self.notifiers(ctx.catalog);
            o.show = Some(sh);
        } else if links || matches!(o.file, FileState::Masked) {
            // Only consulted when the diff calls `systemctl --root` for links.
            o.unsafe_links = refuse_symlinked_install_dirs(host).err();
        }
        o.lint = self.boot_and_timer_lint(ctx.catalog);
        // A check reports drift: content already in place was verified when planned.
        if ctx.purpose != Purpose::Check || file_changes {
            let mut findings = Findings::default();
            self.validate_with_systemd(ctx, &mut findings);
            o.findings = Some(findings);
        }
        Ok(o)
    }

    /// The first declared drop-in of this unit whose file is not its content yet.
    fn changed_dropin(&self, ctx: &PlanCtx) -> Result<Option<ResourceId>, ResourceError> {
        for d in self.declared_dropins(ctx.catalog) {
            let Some(c) = &d.content else { continue };
            let same = matches!(ctx.host.read(&d.path)?, Some((_, Some(ref bytes))) if bytes.as_slice() == c.text.as_bytes());
            if !same {
                return Ok(Some(d.id.clone()));
            }
        }
        Ok(None)
    }

    /// [`Contract::diff`]: pure. What the unit's change is, given what was observed
    /// whether its `restart_on` targets and notifiers change in this run, and what the
    /// flush did for it when it ran for it ([`DepView::staged`]).
    pub(super) fn diff_unit(
        &self,
        o: &Observed,
        deps: &DepView,
    ) -> Result<Diff<Op>, ResourceError> {
        let m = o.mode;
        let staged = deps.staged().and_then(|s| s.get::<Flushed>());
        let batched = staged.is_some();
        let flags = staged.cloned().unwrap_or_default();
        let mut live_parts: Vec<String> = vec![match &o.file {
            FileState::Absent => "absent".into(),
            FileState::File => "file".into(),
            FileState::Masked => "masked".into(),
            FileState::Other(what) => what.clone(),
        }];
        if let Some(seen) = &o.seen {
            live_parts.push(seen.live_fp.clone());
        }
        let desired = format!(
            "{}|{:?}|{:?}|{:?}|{:?}",
            self.content
                .as_ref()
                .map(|c| short_hash(c.text.as_bytes()))
                .unwrap_or_default(),
            self.enabled,
            self.wants_active(),
            self.masked,
            self.on_notify
        );
        let mut d: Diff<Op> = Diff::new(String::new(), fingerprint([desired.as_bytes()]));
        d.notes.push(o.mode_note.clone());

        // The file, through its managed file.
        let mut file_changes = false;
        if let Some(mf) = &self.file {
            let refuse = |what: &str| -> ResourceError {
                HostError::Unsafe {
                    path: o.shown.clone(),
                    reason: format!("is {what}; a unit resource will not replace it (remove it, or manage the unit without content)"),
                }
                .into()
            };
            if let FileState::Other(what) = &o.file {
                return Err(refuse(what));
            }
            let seen = o.seen.as_ref().ok_or_else(|| {
                ResourceError::Failed(format!("{}: the unit file was not observed", self.path))
            })?;
            if let Some(kind) = seen.refused {
                return Err(refuse(&format!("a {}", kind.name())));
            }
            // A unit has no `hardlinks: allow`: a change to a file with other names is
            // refused with the links named only.
            if let Some(st) = seen
                .live
                .filter(|s| s.kind == FileKind::File && s.nlink > 1)
            {
                let perms = mf.perms.changes(&seen.owners, Some(&st), UNIT_MODE);
                if seen.content.is_some() || !perms.is_empty() {
                    return Err(HostError::Unsafe {
                        path: o.shown.clone(),
                        reason: crate::host::fs::hardlink_reason(st.nlink),
                    }
                    .into());
                }
            }
            let fd = mf.diff(Ensure::Present, seen)?;
            d.implied = fd.implied;
            let created = seen.live.is_none();
            for op in fd.ops {
                let op = match op {
                    // A new file gets root:root 0644 with its write: the plan shows its
                    // content, as for every unit file created.
                    managed_file::Op::Perm(_) if created => continue,
                    // Owner and group are root, set numerically (a bare root has no
                    // /etc/passwd): the plan names them.
                    managed_file::Op::Perm(PermOp::Owner { from, .. }) => {
                        managed_file::Op::Perm(PermOp::Owner {
                            from,
                            to: "root".into(),
                        })
                    }
                    managed_file::Op::Perm(PermOp::Group { from, .. }) => {
                        managed_file::Op::Perm(PermOp::Group {
                            from,
                            to: "root".into(),
                        })
                    }
                    op => op,
                };
                let write = matches!(op, managed_file::Op::Write { .. });
                d.op(fd.action, Op::File(op));
                if write {
                    file_changes = true;
                    if o.file == FileState::Masked {
                        d.op(fd.action, Op::ReplaceMask);
                    }
                }
            }
        }

        // Work done by the flush in this run stays part of this resource's change.
        if batched {
            for done in &flags.done {
                if !d.ops.iter().any(|o| o.same_kind(done)) {
                    d.op(Action::Update, done.clone());
                }
            }
            if let Some(a) = flags.done_action {
                d.action = a;
            }
        }

        // Enablement and mask (the unit itself, not drop-ins).
        if let Some(enablement) = &o.enablement {
            live_parts.push(enablement.clone().unwrap_or_else(|| "not-found".into()));
            let now = enablement.as_deref().unwrap_or("not-found");
            let masked_now = now.starts_with("masked");
            let wants_it = self.enabled == Some(true) || self.wants_active() == Some(true);
            if enablement.is_none() && self.content.is_none() && wants_it {
                d.warnings.push(format!(
                    "{} is not installed on the target and has no content here: enabling or starting it fails unless a resource applied before it installs it",
                    self.unit
                ));
            }
            match self.masked {
                Some(true) if !masked_now => {
                    if o.file == FileState::File {
                        return Err(ResourceError::Failed(format!(
                            "cannot mask {}: {} is a unit file, and a mask is a link to /dev/null at that place; remove the file first (a `file` resource with `state: absent` that this unit requires)",
                            self.unit,
                            o.shown
                        )));
                    }
                    d.op(Action::Update, Op::Mask)
                }
                Some(false) if masked_now && !d.ops.iter().any(Op::changes_mask) => {
                    d.op(Action::Update, Op::Unmask)
                }
                _ => {}
            }
            // Enablement as the plan saw it, before the flush wrote the file (a new
            // unit is `not-found` until then, `disabled` after): plan and apply agree.
            let shown_now = flags
                .planned_enabled
                .clone()
                .filter(|_| batched)
                .unwrap_or_else(|| now.to_string());
            match self.enabled {
                Some(true) => {
                    if self.content.is_none() && now == "static" {
                        return Err(ResourceError::Failed(format!("{} has no [Install] section (is-enabled: static): it cannot be enabled", self.unit)));
                    }
                    let install_changed =
                        self.content
                            .as_ref()
                            .zip(o.old.as_ref())
                            .is_some_and(|(c, old)| {
                                install_section(&parse_unit_file(&String::from_utf8_lossy(old)).0)
                                    != install_section(&c.entries)
                            });
                    if now != "enabled" {
                        d.op(Action::Update, Op::Enable { from: shown_now });
                    } else if install_changed {
                        d.op(Action::Update, Op::Reenable);
                    }
                }
                // A mask hides the links underneath: after unmasking, disable anyway.
                Some(false)
                    if now.starts_with("enabled")
                        || now.starts_with("linked")
                        || (masked_now && self.masked == Some(false)) =>
                {
                    d.op(Action::Update, Op::Disable { from: shown_now });
                }
                _ => {}
            }
        }

        // Run state (live only).
        if let Some(sh) = &o.show {
            live_parts.push(format!("{}:{}", sh.state_text(), sh.need_daemon_reload()));
            if sh.need_daemon_reload() && !file_changes {
                d.op(Action::Update, Op::DaemonReload);
            }
            if self.dropin.is_none() {
                let running = sh.active_state().is_running();
                match self.wants_active() {
                    Some(true) if !running && self.masked != Some(true) => d.op(
                        Action::Update,
                        Op::Start {
                            from: sh.state_text(),
                        },
                    ),
                    Some(false) if running => d.op(
                        Action::Update,
                        Op::Stop {
                            from: sh.state_text(),
                        },
                    ),
                    _ => {}
                }
            }
            let stays_up = self.wants_active() != Some(false)
                && self.masked != Some(true)
                && !d
                    .ops
                    .iter()
                    .any(|o| matches!(o, Op::Start { .. } | Op::Stop { .. }));
            // (why, the systemctl verb)
            let mut restart: Option<(String, &'static str)> = None;
            if stays_up && self.restartable(sh) {
                if file_changes || sh.need_daemon_reload() {
                    let why = if file_changes {
                        "its unit file changes"
                    } else {
                        "systemd runs an outdated configuration"
                    };
                    restart = Some((why.to_string(), "try-restart"));
                }
                if restart.is_none() && self.dropin.is_none() {
                    restart = o
                        .dropin_changed
                        .as_ref()
                        .map(|id| (format!("its drop-in {id} changes"), "try-restart"));
                }
                if restart.is_none() {
                    // `on_notify` says how both act (docs/units.md).
                    restart = o
                        .notifiers
                        .iter()
                        .find(|id| deps.changes(id))
                        .map(|id| (format!("{id} changes"), self.on_notify.verb()));
                }
            } else if (file_changes || sh.need_daemon_reload())
                && sh.active_state().is_running()
                && stays_up
            {
                d.notes.push(format!("{} is a oneshot running now: it is not interrupted; the new unit applies from its next run", self.unit));
            }
            let delegated = self.dropin.is_some() && o.main_declared;
            if delegated && restart.is_some() {
                d.notes.push(format!(
                    "{} restarts through unit[{}] (once per run)",
                    self.unit, self.unit
                ));
                restart = None;
            }
            if batched {
                // Files are written and reloaded already; only what the flush
                // assigned to this resource is left.
                restart = None;
            }
            if let Some(verb) = flags.restart_due {
                restart = Some((
                    "its unit file, a drop-in or a resource it listens to changed".into(),
                    verb,
                ));
            }
            if let Some((reason, verb)) = restart {
                d.op(
                    Action::Update,
                    Op::Restart {
                        from: sh.state_text(),
                        reason,
                        verb,
                    },
                );
            }
        } else {
            if let Some(a) = self.active {
                d.warnings.push(format!(
                    "active: {a} is not manageable offline (no running systemd at {}): nothing is started or stopped; {}",
                    o.root,
                    if self.enabled.is_some() { "enablement decides what runs at boot" } else { "declare `enabled` to decide what runs at boot" }
                ));
            }
            if file_changes && self.dropin.is_none() {
                d.notes.push("offline: no daemon-reload or restart; systemd reads the new files when it starts".into());
            }
        }

        // Validation.
        if let Some(w) = &o.lint {
            d.warnings.push(w.clone());
        }
        if let Some(f) = &o.findings {
            d.warnings.extend(f.warnings.iter().cloned());
            d.notes.extend(f.notes.iter().cloned());
            if !f.errors.is_empty() {
                return Err(ResourceError::Failed(format!(
                    "{} is rejected by systemd:\n  {}",
                    self.path,
                    f.errors.join("\n  ")
                )));
            }
        }

        if d.ops.is_empty() {
            d.action = Action::None;
        }
        if batched && d.action != Action::None {
            // Tells apply that the flush wrote the files: it acts on the rest only.
            d.ops.push(Op::Flushed);
        }
        if d.action != Action::None && file_changes && m == Mode::Live {
            d.implied
                .push("systemctl daemon-reload (once for all units of this run)".into());
        }
        if m == Mode::Offline && d.ops.iter().any(Op::writes_links) {
            if let Some(e) = &o.unsafe_links {
                return Err(e.clone());
            }
        }
        d.live = fingerprint(live_parts.iter().map(|s| s.as_bytes()));
        Ok(d)
    }

    /// A timer-triggered service that is also enabled at boot runs outside the
    /// schedule (the runbook enables both).
    pub(super) fn boot_and_timer_lint(&self, catalog: &Catalog) -> Option<String> {
        if self.unit_type() != "service" || self.enabled != Some(true) {
            return None;
        }
        let install = self.content.as_ref().is_some_and(|c| {
            ["WantedBy", "RequiredBy"]
                .iter()
                .any(|k| unit_value(&c.entries, "Install", k).is_some())
        });
        let stem = self.unit.trim_end_matches(".service");
        let timer = catalog
            .resources
            .iter()
            .filter_map(|r| r.as_any().downcast_ref::<Unit>())
            .find(|u| {
                u.unit_type() == "timer"
                    && u.dropin.is_none()
                    && u.content
                        .as_ref()
                        .map_or(u.unit == format!("{stem}.timer"), |c| {
                            unit_value(&c.entries, "Timer", "Unit")
                                .map_or(u.unit == format!("{stem}.timer"), |t| t == self.unit)
                        })
            })?;
        install.then(|| format!("{} is started by {} and also enabled with WantedBy=/RequiredBy=: it runs at every boot too, outside the timer's schedule; enable the timer only", self.unit, timer.id))
    }
}

/// Accounts systemd knows without a database entry (nss-systemd synthesises them).
pub(super) const BUILTIN_ACCOUNTS: &[&str] = &["root", "nobody"];

/// The unit settings that name accounts: (key, whether it names a user, list-valued).
pub(super) const ACCOUNT_KEYS: &[(&str, bool, bool)] = &[
    ("User", true, false),
    ("Group", false, false),
    ("SupplementaryGroups", false, true),
];

impl Unit {
    /// The account names this unit's settings use, with the key and unit-file line:
    /// (key, name, line, is a user). Numeric ids and specifiers (`%i`) are left out,
    /// and with `DynamicUser=yes` systemd makes the User=/Group= pair itself.
    pub(super) fn named_accounts(&self) -> Vec<(&'static str, &str, usize, bool)> {
        let Some(c) = &self.content else {
            return Vec::new();
        };
        let section = type_section(self.unit_type()).unwrap_or("Service");
        let dynamic = unit_value(&c.entries, section, "DynamicUser").is_some_and(is_yes);
        let mut out = Vec::new();
        for &(key, is_user, list) in ACCOUNT_KEYS {
            if dynamic && !list {
                continue;
            }
            let mut found: Vec<(&str, usize)> = Vec::new();
            for e in c
                .entries
                .iter()
                .filter(|e| e.section == section && e.key == key)
            {
                if e.value.is_empty() {
                    // An empty assignment resets the setting.
                    found.clear();
                } else if list {
                    found.extend(e.value.split_whitespace().map(|n| (n, e.line)));
                } else {
                    found = vec![(e.value.as_str(), e.line)];
                }
            }
            out.extend(
                found
                    .into_iter()
                    .filter(|(n, _)| n.parse::<u32>().is_err() && !n.contains('%'))
                    .map(|(n, line)| (key, n, line, is_user)),
            );
        }
        out
    }

    /// A `User=`/`Group=`/`SupplementaryGroups=` that is neither on the target nor
    /// declared makes the unit fail when systemd starts it (status 217/USER): refused
    /// while planning, naming the line it comes from.
    pub(super) fn check_accounts(&self, ctx: &PlanCtx) -> Result<(), ResourceError> {
        let mut problems = Vec::new();
        for (key, name, line, is_user) in self.named_accounts() {
            if BUILTIN_ACCOUNTS.contains(&name) {
                continue;
            }
            let (known, kind, db) = if is_user {
                (
                    ctx.accounts.resolve_uid(name).is_some(),
                    "user",
                    "/etc/passwd",
                )
            } else {
                (
                    ctx.accounts.resolve_gid(name).is_some(),
                    "group",
                    "/etc/group",
                )
            };
            if known || ctx.catalog.contains(&ResourceId::new(kind, name)) {
                continue;
            }
            problems.push(format!(
                "{key}={name}{}: `{name}` is not a {kind} on the target (its {db}) and no {kind}[{name}] is declared; systemd would fail to start the unit",
                self.origin_of_line(u32::try_from(line).unwrap_or(0)).unwrap_or_default()
            ));
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ResourceError::Failed(problems.join("\n  ")))
        }
    }
}

pub(super) fn install_section(entries: &[UnitEntry]) -> Vec<(String, String)> {
    entries
        .iter()
        .filter(|e| e.section == "Install")
        .map(|e| (e.key.clone(), e.value.clone()))
        .collect()
}
