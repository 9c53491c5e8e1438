//! Applying a unit's change: systemctl verbs, starts and their checks.

use super::*;

// ---------------------------------------------------------------------------------
// Applying

impl Unit {
    /// Carries out the unit file's operations through its managed file (a mask link
    /// standing at the path is removed first, so that the file takes its place).
    /// Whether the content was written.
    pub(super) fn apply_file(&self, host: &Host, ops: &[Op]) -> Result<bool, ResourceError> {
        let Some(mf) = &self.file else {
            return Ok(false);
        };
        let file_ops: Vec<managed_file::Op> = ops
            .iter()
            .filter_map(|o| match o {
                Op::File(f) => Some(f.clone()),
                _ => None,
            })
            .collect();
        let writes = ops.iter().any(Op::writes_file);
        if writes && read_file_state(host, &self.path)? == FileState::Masked {
            host.remove(&self.path)?;
        }
        mf.apply(host, &file_ops)?;
        Ok(writes)
    }

    pub(super) fn start_timeout(&self) -> Duration {
        let from_unit = self.content.as_ref().and_then(|c| {
            unit_value(&c.entries, "Service", "TimeoutStartSec")
                .or_else(|| unit_value(&c.entries, "Service", "TimeoutSec"))
                .and_then(time_span_secs)
        });
        Duration::from_secs(
            from_unit
                .unwrap_or(90)
                .saturating_add(60)
                .clamp(120, 6 * 3600),
        )
    }

    /// Runs a state-changing systemctl verb; a failure carries the unit's journal.
    pub(super) fn act(&self, host: &Host, verb: &str, extra: &[&str]) -> Result<(), ResourceError> {
        let cmd = systemctl(host, Mode::Live)
            .arg(verb)
            .args(extra.iter().copied())
            .arg(self.unit.clone())
            .timeout(self.start_timeout());
        let out = cmd.run()?;
        if out.success() {
            return Ok(());
        }
        Err(ResourceError::Failed(format!(
            "`{}` failed: {}\nlast journal lines of {}:\n{}",
            cmd.display(),
            out.reason(),
            self.unit,
            journal_excerpt(&self.unit)
        )))
    }

    /// After a start or restart: `systemctl start` (without `--no-block`) returns when
    /// the start job is done (a oneshot has run, a notify service is ready, a simple
    /// one has been forked and executed), so the state is read once, right away,
    /// instead of sleeping a fixed time: a unit that failed its start job is failed
    /// by now.
    pub(super) fn check_started(&self, host: &Host) -> Result<(), ResourceError> {
        let sh = show(host, &self.unit)?;
        if sh.active_state() == crate::host::parse::systemctl::ActiveState::Failed {
            return Err(ResourceError::Failed(format!(
                "{} failed right after starting ({}; result {})\nlast journal lines of {}:\n{}",
                self.unit,
                sh.state_text(),
                sh.result().unwrap_or("unknown"),
                self.unit,
                journal_excerpt(&self.unit)
            )));
        }
        Ok(())
    }

    /// [`Resource::apply`]: the file (unless the flush wrote it), mask, enablement,
    /// start/stop, then the restart, as the change's operations say.
    pub(super) fn apply_unit(&self, ops: &[Op], ctx: &ApplyCtx) -> Result<(), ResourceError> {
        let host = ctx.host;
        let m = detect_mode(host);
        if !ops.contains(&Op::Flushed) {
            // The executor did not stage this resource (its change needed no batch).
            let writes = self.apply_file(host, ops)?;
            if (writes || ops.contains(&Op::DaemonReload)) && m == Mode::Live {
                run_ok(systemctl(host, m).arg("daemon-reload"))?;
            }
        }
        if self.dropin.is_none() && ops.iter().any(Op::writes_links) && m == Mode::Offline {
            refuse_symlinked_install_dirs(host)?;
        }
        for op in ops {
            let verb = match op {
                Op::Mask => {
                    let mut cmd = systemctl(host, m).arg("mask");
                    if m == Mode::Live {
                        cmd = cmd.arg("--now");
                    }
                    run_ok(cmd.arg(self.unit.clone()))?;
                    continue;
                }
                // With content, writing the file already replaced the mask link.
                Op::Unmask if self.content.is_none() => {
                    run_ok(systemctl(host, m).arg("unmask").arg(self.unit.clone()))?;
                    continue;
                }
                Op::Enable { .. } => "enable",
                Op::Reenable => "reenable",
                Op::Disable { .. } => "disable",
                _ => continue,
            };
            // Only symlinks change: the manager needs no reload to start or stop the
            // unit, and the run keeps its single daemon-reload.
            let mut cmd = systemctl(host, m).arg(verb);
            if m == Mode::Live {
                cmd = cmd.arg("--no-reload");
            }
            run_ok(cmd.arg(self.unit.clone()))?;
        }
        if m != Mode::Live {
            return Ok(());
        }
        // A unit started here runs the new configuration already: no restart besides.
        let mut started = false;
        for op in ops {
            match op {
                Op::Start { .. } => {
                    self.act(host, "start", &[])?;
                    started = true;
                    self.check_started(host)?;
                }
                Op::Stop { .. } => self.act(host, "stop", &[])?,
                _ => {}
            }
        }
        let restart = ops.iter().find_map(|o| match o {
            Op::Restart { verb, .. } => Some(*verb),
            _ => None,
        });
        if let Some(verb) = restart.filter(|_| !started) {
            if verb == OnNotify::Reload.verb() && !show(host, &self.unit)?.can_reload() {
                return Err(ResourceError::Failed(format!(
                    "{} cannot be reloaded (no ExecReload=); use on_notify: restart",
                    self.unit
                )));
            }
            self.act(host, verb, &[])?;
            self.check_started(host)?;
        }
        Ok(())
    }
}
