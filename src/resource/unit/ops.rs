//! What applying a unit's change does, one typed operation each. The plan's fields
//! are rendered from them ([`Unit::describe`]); apply and the flush match on them and
//! never read a label back.

use super::*;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// The unit file or drop-in written with the declared content.
    WriteFile {
        /// Short hashes of the content there now (`None`: nothing there) and to be.
        before: Option<String>,
        after: String,
        /// The content diff, unless the resource is secret.
        diff: Option<String>,
        /// A mask link (`/dev/null`) stands at the path: writing the file unmasks.
        replaces_mask: bool,
    },
    /// The file's mode set to 0644 in place (no reload, no restart).
    SetMode { from: u32 },
    /// The file's owner set to root in place.
    SetOwner { uid: u32, gid: u32 },
    /// `systemctl mask` (`--now` live).
    Mask,
    /// `systemctl unmask`; with content, writing the file already replaced the link.
    Unmask,
    /// `systemctl enable`, from the enablement shown.
    Enable { from: String },
    /// `systemctl reenable`: enabled, with an `[Install]` section that changes.
    Reenable,
    /// `systemctl disable`, from the enablement shown.
    Disable { from: String },
    /// `systemctl daemon-reload`: systemd runs files older than those on disk.
    DaemonReload,
    /// `systemctl start`, from the state shown.
    Start { from: String },
    /// `systemctl stop`, from the state shown.
    Stop { from: String },
    /// A restart from the state shown, and why: `try-restart`, or for a notifier
    /// what `on_notify` says (`try-reload-or-restart`, `reload`).
    Restart {
        from: String,
        reason: String,
        verb: &'static str,
    },
    /// Not shown: the batch step wrote this change's files (and reloaded) already, so
    /// apply does the rest only. Set by the diff made right after the step.
    Flushed,
}

impl Op {
    /// Changes the unit file or its permissions (the flush's part).
    pub fn is_file_op(&self) -> bool {
        matches!(
            self,
            Op::WriteFile { .. } | Op::SetMode { .. } | Op::SetOwner { .. }
        )
    }

    /// Runs systemctl verbs that write or remove links under /etc/systemd/system.
    pub fn writes_links(&self) -> bool {
        matches!(
            self,
            Op::Mask
                | Op::Unmask
                | Op::Enable { .. }
                | Op::Reenable
                | Op::Disable { .. }
                | Op::WriteFile {
                    replaces_mask: true,
                    ..
                }
        )
    }

    /// Changes whether the unit is masked.
    pub fn changes_mask(&self) -> bool {
        self.writes_links()
            && !matches!(self, Op::Enable { .. } | Op::Reenable | Op::Disable { .. })
    }
}

impl Unit {
    /// The plan's account of one operation: exactly the fields (and content diff)
    /// the plan text and JSON show for it.
    pub(super) fn describe_op(&self, op: &Op, change: &mut Change) {
        match op {
            Op::WriteFile {
                before,
                after,
                diff,
                replaces_mask,
            } => {
                change.secret_field("content", before.clone(), Some(after.clone()));
                if diff.is_some() && change.diff.is_none() {
                    change.diff.clone_from(diff);
                }
                if *replaces_mask {
                    change.field("masked", Some("yes".into()), Some("no".into()));
                }
            }
            Op::SetMode { from } => {
                change.field("mode", Some(format!("{from:04o}")), Some("0644".into()))
            }
            Op::SetOwner { uid, gid } => change.field(
                "owner",
                Some(format!("{uid}:{gid}")),
                Some("0:0 (root)".into()),
            ),
            Op::Mask => change.field("masked", Some("no".into()), Some("yes".into())),
            Op::Unmask => change.field("masked", Some("yes".into()), Some("no".into())),
            Op::Enable { from } => {
                change.field("enabled", Some(from.clone()), Some("enabled".into()))
            }
            Op::Reenable => change.field(
                "enabled",
                Some("enabled (old [Install])".into()),
                Some("re-enabled".into()),
            ),
            Op::Disable { from } => {
                change.field("enabled", Some(from.clone()), Some("disabled".into()))
            }
            Op::DaemonReload => change.field(
                "daemon-reload",
                Some("needed: files changed on disk since systemd loaded them".into()),
                Some("reloaded".into()),
            ),
            Op::Start { from } => change.field("active", Some(from.clone()), Some("active".into())),
            Op::Stop { from } => {
                change.field("active", Some(from.clone()), Some("inactive".into()))
            }
            Op::Restart { from, reason, .. } => change.field(
                "restart",
                Some(from.clone()),
                Some(format!("restarted: {reason}")),
            ),
            Op::Flushed => {}
        }
    }
}

/// The operations a change carries; none for a change not made by this kind's plan.
pub(super) fn ops_of(change: &Change) -> &[Op] {
    change.ops.get::<Op>().unwrap_or(&[])
}
