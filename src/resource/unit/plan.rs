//! Observing a unit (its file, `systemctl show`/`is-enabled`) and deciding its change.

use super::*;

// ---------------------------------------------------------------------------------
// Observing

thread_local! {
    /// >0 while this thread plans another resource on behalf of a unit (its
    /// notifiers): nested plans skip validation and their own notifiers.
    static NESTED: Cell<u32> = const { Cell::new(0) };
}

pub(super) struct Nested;

impl Nested {
    pub(super) fn enter() -> Nested {
        NESTED.with(|n| n.set(n.get() + 1));
        Nested
    }
}

impl Drop for Nested {
    fn drop(&mut self) {
        NESTED.with(|n| n.set(n.get().saturating_sub(1)));
    }
}

pub(super) fn nested() -> bool {
    NESTED.with(|n| n.get() > 0)
}

/// What the unit file's place holds now.
pub(super) enum FileState {
    Absent,
    File {
        uid: u32,
        gid: u32,
        mode: u32,
        /// Hard links: above 1, another name (possibly outside the root) shares it.
        nlink: u64,
        bytes: Vec<u8>,
    },
    /// `/dev/null` symlink: the unit is masked.
    Masked,
    Other(String),
}

pub(super) fn read_file_state(host: &Host, path: &str) -> Result<FileState, ResourceError> {
    Ok(match host.read(path)? {
        None => FileState::Absent,
        Some((st, Some(bytes))) => FileState::File {
            uid: st.uid,
            gid: st.gid,
            mode: st.mode,
            nlink: st.nlink,
            bytes,
        },
        Some((st, None)) if st.kind == FileKind::Symlink => {
            match host.read_link(path)?.as_deref() {
                Some("/dev/null") => FileState::Masked,
                Some(t) => FileState::Other(format!("a symlink to {t}")),
                None => FileState::Other("a symlink".into()),
            }
        }
        Some((st, None)) => FileState::Other(format!("a {}", st.kind.name())),
    })
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

    pub(super) fn flags(&self) -> MutexGuard<'_, RunFlags> {
        match self.run.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
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
    /// `notify` it.
    pub(super) fn notifiers<'c>(&self, catalog: &'c Catalog) -> Vec<&'c dyn Resource> {
        let mut ids: Vec<&ResourceId> = self.restart_on.iter().map(|(id, _)| id).collect();
        for r in &catalog.resources {
            if r.meta().notify.iter().any(|(id, _)| id == &self.id) {
                ids.push(r.id());
            }
        }
        let mut seen = HashSet::new();
        ids.into_iter()
            .filter(|id| seen.insert((*id).clone()))
            .filter_map(|id| catalog.get(id))
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
// Planning

impl Unit {
    pub(super) fn perms(&self) -> Perms {
        let owner = want_owner();
        Perms {
            uid: owner.then_some(0),
            gid: owner.then_some(0),
            mode: Some(0o644),
        }
    }

    pub(super) fn plan_inner(&self, ctx: &PlanCtx) -> Result<Change, ResourceError> {
        let host = ctx.host;
        let m = detect_mode(host);
        let flags = self.flags().clone();
        let mut p = Planned {
            change: Change::new(self.id.clone(), self.meta.secret),
            ops: Vec::new(),
        };
        p.change.notes.push(mode_note(host, m));

        // The file.
        let state = read_file_state(host, &self.path)?;
        let mut file_changes = false;
        let mut live_parts: Vec<String> = Vec::new();
        match &state {
            FileState::Absent => live_parts.push("absent".into()),
            FileState::File {
                uid,
                gid,
                mode,
                bytes,
                ..
            } => live_parts.push(format!("{uid}:{gid}:{mode:o}:{}", short_hash(bytes))),
            FileState::Masked => live_parts.push("masked".into()),
            FileState::Other(what) => live_parts.push(what.clone()),
        }
        if let Some(c) = &self.content {
            let new = c.text.as_bytes();
            match &state {
                FileState::Other(what) => {
                    return Err(HostError::Unsafe {
                        path: host.show(&self.path),
                        reason: format!("is {what}; a unit resource will not replace it (remove it, or manage the unit without content)"),
                    }
                    .into())
                }
                FileState::Absent | FileState::Masked => {
                    p.change.action = Action::Create;
                    p.change.implied = implied_parents(ctx, &self.path)?;
                    let diff = if self.meta.secret {
                        None
                    } else {
                        text_diff(b"", new, &self.path)
                    };
                    p.op(self, Op::WriteFile {
                        before: None,
                        after: short_hash(new),
                        diff,
                        replaces_mask: matches!(state, FileState::Masked),
                    });
                    file_changes = true;
                }
                FileState::File { uid, gid, mode, nlink, bytes } => {
                    let owner_differs = want_owner() && (*uid != 0 || *gid != 0);
                    if *nlink > 1 && (bytes.as_slice() != new || *mode != 0o644 || owner_differs) {
                        return Err(HostError::Unsafe {
                            path: host.show(&self.path),
                            reason: crate::host::fs::hardlink_reason(*nlink),
                        }
                        .into());
                    }
                    if bytes.as_slice() != new {
                        let diff = if self.meta.secret {
                            None
                        } else {
                            text_diff(bytes, new, &self.path)
                        };
                        p.op(self, Op::WriteFile {
                            before: Some(short_hash(bytes)),
                            after: short_hash(new),
                            diff,
                            replaces_mask: false,
                        });
                        file_changes = true;
                    }
                    // Owner and mode are fixed in place: no reload, no restart.
                    if *mode != 0o644 {
                        p.op(self, Op::SetMode { from: *mode });
                    }
                    if want_owner() && (*uid != 0 || *gid != 0) {
                        p.op(self, Op::SetOwner { uid: *uid, gid: *gid });
                    }
                }
            }
        }

        // Work done by the flush in this run stays part of this resource's p.change.
        if flags.batched {
            for done in &flags.done {
                let kind = std::mem::discriminant(done);
                if !p.has(|o| std::mem::discriminant(o) == kind) {
                    p.op(self, done.clone());
                }
            }
            if let Some(a) = flags.done_action {
                p.change.action = a;
            }
        }

        // Enablement and mask (the unit itself, not drop-ins).
        if self.dropin.is_none()
            && (self.enabled.is_some()
                || self.masked.is_some()
                || matches!(state, FileState::Masked))
        {
            let enablement = is_enabled(host, m, &self.unit)?;
            live_parts.push(enablement.clone().unwrap_or_else(|| "not-found".into()));
            let now = enablement.as_deref().unwrap_or("not-found");
            let masked_now = now.starts_with("masked");
            let wants_it = self.enabled == Some(true) || self.wants_active() == Some(true);
            if enablement.is_none() && self.content.is_none() && wants_it {
                p.change.warnings.push(format!(
                    "{} is not installed on the target and has no content here: enabling or starting it fails unless a resource applied before it installs it",
                    self.unit
                ));
            }
            match self.masked {
                Some(true) if !masked_now => {
                    if let FileState::File { .. } = state {
                        return Err(ResourceError::Failed(format!(
                            "cannot mask {}: {} is a unit file, and a mask is a link to /dev/null at that place; remove the file first (a `file` resource with `state: absent` that this unit requires)",
                            self.unit,
                            host.show(&self.path)
                        )));
                    }
                    p.op(self, Op::Mask)
                }
                Some(false) if masked_now && !p.has(Op::changes_mask) => p.op(self, Op::Unmask),
                _ => {}
            }
            match self.enabled {
                Some(true) => {
                    if self.content.is_none() && now == "static" {
                        return Err(ResourceError::Failed(format!("{} has no [Install] section (is-enabled: static): it cannot be enabled", self.unit)));
                    }
                    let install_changed = self.content.as_ref().is_some_and(|c| match &state {
                        FileState::File { bytes, .. } => {
                            install_section(&parse_unit_file(&String::from_utf8_lossy(bytes)).0)
                                != install_section(&c.entries)
                        }
                        _ => false,
                    });
                    if now != "enabled" {
                        p.op(
                            self,
                            Op::Enable {
                                from: now.to_string(),
                            },
                        );
                    } else if install_changed {
                        p.op(self, Op::Reenable);
                    }
                }
                // A mask hides the links underneath: after unmasking, disable anyway.
                Some(false)
                    if now.starts_with("enabled")
                        || now.starts_with("linked")
                        || (masked_now && self.masked == Some(false)) =>
                {
                    p.op(
                        self,
                        Op::Disable {
                            from: now.to_string(),
                        },
                    );
                }
                _ => {}
            }
        }

        if flags.batched {
            for f in p.change.fields.iter_mut() {
                if let Some((_, before)) = flags.planned_before.iter().find(|(n, _)| *n == f.field)
                {
                    f.before = before.clone();
                }
            }
        }

        // Run state (live only).
        let mut restart_reason: Option<String> = None;
        if m == Mode::Live {
            let sh = show(host, &self.unit)?;
            live_parts.push(format!("{}:{}", sh.state_text(), sh.need_daemon_reload()));
            if sh.need_daemon_reload() && !file_changes {
                p.op(self, Op::DaemonReload);
            }
            if self.dropin.is_none() {
                let running = sh.active_state().is_running();
                match self.wants_active() {
                    Some(true) if !running && self.masked != Some(true) => {
                        p.op(
                            self,
                            Op::Start {
                                from: sh.state_text(),
                            },
                        );
                    }
                    Some(false) if running => p.op(
                        self,
                        Op::Stop {
                            from: sh.state_text(),
                        },
                    ),
                    _ => {}
                }
            }
            let stays_up = self.wants_active() != Some(false)
                && self.masked != Some(true)
                && !p.has(|o| matches!(o, Op::Start { .. } | Op::Stop { .. }));
            if stays_up && self.restartable(&sh) {
                if file_changes || sh.need_daemon_reload() {
                    restart_reason = Some(
                        if file_changes {
                            "its unit file changes"
                        } else {
                            "systemd runs an outdated configuration"
                        }
                        .to_string(),
                    );
                }
                if restart_reason.is_none() && self.dropin.is_none() {
                    restart_reason = self.changed_dropin(ctx)?;
                }
                if restart_reason.is_none() && !nested() {
                    restart_reason = self.changing_notifier(ctx)?;
                }
            } else if (file_changes || sh.need_daemon_reload())
                && sh.active_state().is_running()
                && stays_up
            {
                p.change.notes.push(format!("{} is a oneshot running now: it is not interrupted; the new unit applies from its next run", self.unit));
            }
            let delegated = self.dropin.is_some() && self.main_declared(ctx.catalog);
            if delegated && restart_reason.is_some() {
                p.change.notes.push(format!(
                    "{} restarts through unit[{}] (once per run)",
                    self.unit, self.unit
                ));
                restart_reason = None;
            }
            if flags.batched {
                // Files are written and reloaded already; only what the flush
                // assigned to this resource is left.
                restart_reason = None;
            }
            if flags.restart_due && !flags.restarted && !flags.started {
                restart_reason =
                    Some("its unit file, a drop-in or a resource it listens to changed".into());
            }
            if let Some(why) = restart_reason {
                p.op(
                    self,
                    Op::Restart {
                        from: sh.state_text(),
                        reason: why,
                    },
                );
            }
        } else {
            if let Some(a) = self.active {
                p.change.warnings.push(format!(
                    "active: {a} is not manageable offline (no running systemd at {}): nothing is started or stopped; {}",
                    host.root().display(),
                    if self.enabled.is_some() { "enablement decides what runs at boot" } else { "declare `enabled` to decide what runs at boot" }
                ));
            }
            if file_changes && self.dropin.is_none() {
                p.change.notes.push("offline: no daemon-reload or restart; systemd reads the new files when it starts".into());
            }
        }

        // Validation.
        if let Some(w) = self.boot_and_timer_lint(ctx.catalog) {
            p.change.warnings.push(w);
        }
        // A check reports drift: content already in place was verified when planned.
        let skip_validation = nested() || (ctx.purpose == Purpose::Check && !file_changes);
        if !skip_validation {
            let mut findings = Findings::default();
            self.validate_with_systemd(ctx, &mut findings);
            p.change.warnings.extend(findings.warnings);
            p.change.notes.extend(findings.notes);
            if !findings.errors.is_empty() {
                return Err(ResourceError::Failed(format!(
                    "{} is rejected by systemd:\n  {}",
                    self.path,
                    findings.errors.join("\n  ")
                )));
            }
        }

        if p.ops.is_empty() {
            p.change.action = Action::None;
        } else if p.change.action == Action::None {
            p.change.action = Action::Update;
        }
        let mut change = p.finish();
        if change.action != Action::None && file_changes && m == Mode::Live {
            change
                .implied
                .push("systemctl daemon-reload (once for all units of this run)".into());
        }
        change.live = fingerprint(live_parts.iter().map(|s| s.as_bytes()));
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
        change.desired = fingerprint([desired.as_bytes()]);
        Ok(change)
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

    /// Why a declared drop-in of this unit makes it restart, if one changes.
    pub(super) fn changed_dropin(&self, ctx: &PlanCtx) -> Result<Option<String>, ResourceError> {
        for d in self.declared_dropins(ctx.catalog) {
            let Some(c) = &d.content else { continue };
            let same = matches!(read_file_state(ctx.host, &d.path)?, FileState::File { ref bytes, .. } if bytes.as_slice() == c.text.as_bytes());
            if !same {
                return Ok(Some(format!("its drop-in {} changes", d.id)));
            }
        }
        Ok(None)
    }

    /// Why a notifier makes this unit restart, if one changes.
    pub(super) fn changing_notifier(&self, ctx: &PlanCtx) -> Result<Option<String>, ResourceError> {
        let _guard = Nested::enter();
        for r in self.notifiers(ctx.catalog) {
            // A notifier that cannot be planned is reported on its own; here it only
            // means we cannot promise a restart.
            if r.plan(ctx).map(|c| c.is_change()).unwrap_or(false) {
                return Ok(Some(format!("{} changes", r.id())));
            }
        }
        Ok(None)
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

/// Whether applying `change` runs systemctl verbs that write or remove links.
pub(super) fn calls_systemctl_links(change: &Change) -> bool {
    ops_of(change).iter().any(Op::writes_links)
}

pub(super) fn install_section(entries: &[UnitEntry]) -> Vec<(String, String)> {
    entries
        .iter()
        .filter(|e| e.section == "Install")
        .map(|e| (e.key.clone(), e.value.clone()))
        .collect()
}
