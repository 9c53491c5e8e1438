//! What applying a unit's change does, one typed operation each. The plan's fields
//! are rendered from them ([`Unit::describe`]); apply and the flush match on them and
//! never read a label back.

use super::*;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// The unit file's (or drop-in's) managed-file operations: the content written
    /// atomically (root:root 0644 when reconcile runs as root), owner or mode fixed in
    /// place (no reload, no restart), temp files of killed runs swept.
    File(managed_file::Op),
    /// The file written replaces a mask link (`/dev/null`) at its path: writing it
    /// unmasks the unit.
    ReplaceMask,
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
        matches!(self, Op::File(_) | Op::ReplaceMask)
    }

    /// Writes the unit file's content.
    pub fn writes_file(&self) -> bool {
        matches!(self, Op::File(managed_file::Op::Write { .. }))
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
                | Op::ReplaceMask
        )
    }

    /// The same kind of operation (a managed-file operation: the same one of those),
    /// so that work the flush did is reported once.
    pub fn same_kind(&self, other: &Op) -> bool {
        use std::mem::discriminant;
        match (self, other) {
            (Op::File(managed_file::Op::Perm(a)), Op::File(managed_file::Op::Perm(b))) => {
                discriminant(a) == discriminant(b)
            }
            (Op::File(a), Op::File(b)) => discriminant(a) == discriminant(b),
            (a, b) => discriminant(a) == discriminant(b),
        }
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
            Op::File(op) => ManagedFile::describe(op, change),
            Op::ReplaceMask => change.field("masked", Some("yes".into()), Some("no".into())),
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
