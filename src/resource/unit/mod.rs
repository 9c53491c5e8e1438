//! `unit`: a systemd unit file (or one drop-in of it), its enablement, its mask and
//! whether it runs. See docs/units.md.
//!
//! On the typed contract ([`Contract`]): `plan.rs` observes (the file through its
//! [`ManagedFile`], `systemctl is-enabled`/`show`, declared drop-in files, systemd's
//! verdict on the content) and diffs purely into [`Op`]s (the file's are the managed
//! file's, carried in [`Op::File`]); `ops.rs` renders them for the plan; `apply.rs` and
//! `flush.rs` match on them. `decode.rs` reads the manifest entry, `verify.rs` runs
//! `systemd-analyze` on a scratch root, `systemctl.rs` holds the modes and commands.
//!
//! Ordering within a run, which is where hand-written playbooks go wrong:
//! 1. [`flush`] (the kind's batch step, run by the executor once the changed units
//!    whose dependencies converged are pending): their unit files and drop-ins are
//!    written, then ONE `systemctl daemon-reload` if any changed (live mode).
//! 2. [`Resource::apply`] per unit, in graph order: mask/unmask, enable/disable,
//!    start/stop, then a restart when its own file, a drop-in, or a resource it
//!    listens to (`restart_on`, or `notify` on the other side) changed; the last two
//!    are its dependencies, so its diff asks the [`DepView`] instead of planning them.
//! 3. Each unit restarts at most once per run: the flush assigns the restart of each
//!    unit to one member (its main resource first). What the flush did for a member
//!    ([`Flushed`]) is its result for that member; the executor hands it to the
//!    member's diff right after the step ([`DepView::staged`]), so the spec holds no
//!    per-run state and the change applied still reports the file the flush wrote.

use std::any::Any;
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::diag::{Diagnostic, Span};
use crate::host::fs::{Body, ScratchDir};
use crate::host::parse::systemctl::{
    exec_program, parse_is_enabled, parse_security_json, parse_security_overall, parse_show_one,
    parse_unit_file, parse_verify, top_exposures, unit_value, unit_values, ShowUnit, UnitEntry,
    VerifyMessage,
};
use crate::host::{Cmd, FileKind, Host, HostError};
use crate::id::ResourceId;
use crate::manifest::decode::{Decoder, Fields};
use crate::manifest::yaml::{Node, Value};
use crate::plan::{fingerprint, short_hash, Action, Change};

use super::contract::{self, Contract, DepView, Diff};
use super::managed_file::{self, ManagedFile, Seen};
use super::perms::{PermOp, PermSpec};
use super::{
    parent_dir_need, ApplyCtx, Catalog, Ensure, Meta, Need, PlanCtx, Provide, Purpose, Resource,
    ResourceError,
};

/// Where reconcile writes units: the administrator's directory, which overrides
/// packaged units in /usr/lib/systemd/system.
pub const UNIT_DIR: &str = "/etc/systemd/system";

/// Unit types this kind manages; others are refused by name.
pub const TYPES: &[&str] = &["service", "timer", "socket", "path", "target", "mount"];

/// Sections in the order they are rendered; `Unit` first, `Install` last.
const SECTION_ORDER: &[&str] = &[
    "Unit", "Service", "Socket", "Timer", "Path", "Mount", "Install",
];

/// Settings of `[Install]` that make a unit enable-able.
const INSTALL_KEYS: &[&str] = &[
    "WantedBy",
    "RequiredBy",
    "UpheldBy",
    "Also",
    "Alias",
    "DefaultInstance",
];

/// `Exec*=` settings whose program must exist on the target.
const EXEC_KEYS: &[&str] = &[
    "ExecStart",
    "ExecStartPre",
    "ExecStartPost",
    "ExecReload",
    "ExecStop",
    "ExecStopPost",
    "ExecCondition",
];

/// Properties read from `systemctl show` in live mode.
const SHOW_PROPS: &str = "Id,LoadState,ActiveState,SubState,UnitFileState,NeedDaemonReload,Type,CanReload,Result,InvocationID,ExecMainStartTimestampMonotonic,RemainAfterExit";

/// How a notification (or `restart_on`) acts on a running unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnNotify {
    /// `try-reload-or-restart`: reload when the unit has `ExecReload=`, else restart.
    Auto,
    /// `try-restart`.
    Restart,
    /// `reload`; refused at load time for units without `ExecReload=`.
    Reload,
}

impl OnNotify {
    fn verb(self) -> &'static str {
        match self {
            OnNotify::Auto => "try-reload-or-restart",
            OnNotify::Restart => "try-restart",
            OnNotify::Reload => "reload",
        }
    }
}

/// A rendered unit file: the text, and for `sections:` the manifest place of each line.
#[derive(Debug, Clone)]
pub struct Rendered {
    pub text: Arc<str>,
    /// `origins[n]` is the manifest place of line n+1, when known.
    pub origins: Vec<Option<Span>>,
    /// The manifest place of the content as a whole (`template:`, `content:`, `sections:`).
    pub span: Span,
    pub entries: Vec<UnitEntry>,
}

/// What [`flush`] did for one member: its result, which the executor hands to the
/// member's diff right after the step (its presence: files are written and reloaded
/// already).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Flushed {
    /// What [`flush`] did for this resource (the file's operations), so that the
    /// re-plan right before `apply` still reports it and the run records it.
    done: Vec<Op>,
    done_action: Option<Action>,
    /// The enablement as the plan saw it, before [`flush`] wrote the file: the
    /// re-plan reports it, so that plan and apply agree.
    planned_enabled: Option<String>,
    /// [`flush`] chose this resource to restart its unit (one per unit), with this
    /// systemctl verb.
    restart_due: Option<&'static str>,
}

#[derive(Debug)]
pub struct Unit {
    pub id: ResourceId,
    pub meta: Meta,
    /// The unit's name with its type: `intelluxe-auto-upgrade.timer`.
    pub unit: String,
    /// For a drop-in: its file name (`hardening.conf`).
    pub dropin: Option<String>,
    /// The managed file: `/etc/systemd/system/UNIT` or `.../UNIT.d/NAME.conf`.
    pub path: String,
    pub content: Option<Rendered>,
    /// The file as a managed file (set exactly when `content` is): observed, diffed,
    /// described and written through the component that `file` uses too.
    pub file: Option<ManagedFile>,
    pub enabled: Option<bool>,
    pub active: Option<bool>,
    pub masked: Option<bool>,
    pub restart_on: Vec<(ResourceId, Span)>,
    pub on_notify: OnNotify,
    pub max_exposure: Option<(f64, Span)>,
}

mod apply;
mod decode;
#[cfg(test)]
mod diff_tests;
mod flush;
mod ops;
mod plan;
mod systemctl;
mod verify;

pub use decode::decode;
pub use flush::flush;
pub use systemctl::{detect_mode, Mode};

use decode::*;
pub use ops::Op;
use ops::*;
use plan::*;
use systemctl::*;
use verify::*;

impl Contract for Unit {
    type State = Observed;
    type Op = Op;

    fn observe(&self, ctx: &PlanCtx) -> Result<Observed, ResourceError> {
        self.observe_unit(ctx)
    }

    fn diff(&self, state: &Observed, deps: &DepView) -> Result<Diff<Op>, ResourceError> {
        self.diff_unit(state, deps)
    }

    fn describe(&self, op: &Op, change: &mut Change) {
        self.describe_op(op, change)
    }

    fn apply_ops(&self, ops: &[Op], ctx: &ApplyCtx) -> Result<(), ResourceError> {
        self.apply_unit(ops, ctx)
    }
}

impl Resource for Unit {
    fn id(&self) -> &ResourceId {
        &self.id
    }

    fn meta(&self) -> &Meta {
        &self.meta
    }

    fn provides(&self) -> Vec<Provide> {
        let mut out = Vec::new();
        if self.content.is_some() {
            out.push(Provide::Path(self.path.clone()));
        }
        if self.dropin.is_none() {
            out.push(Provide::Unit(self.unit.clone()));
        }
        out
    }

    fn needs(&self) -> Vec<Need> {
        let mut deps = vec![parent_dir_need(&self.path)];
        for (id, _) in &self.restart_on {
            deps.push(Need::Resource(id.clone()));
        }
        let Some(c) = &self.content else {
            return deps;
        };
        let e = &c.entries;
        let ty = self.unit_type();
        if self.dropin.is_none() && matches!(ty, "timer" | "socket" | "path") {
            let section = type_section(ty).unwrap_or("");
            let stem = self
                .unit
                .rsplit_once('.')
                .map(|(s, _)| s)
                .unwrap_or(&self.unit);
            let triggered = unit_value(e, section, "Unit")
                .map(str::to_string)
                .unwrap_or_else(|| format!("{stem}.service"));
            deps.push(Need::unit(triggered));
        }
        let section = type_section(ty).unwrap_or("Service");
        for key in EXEC_KEYS {
            for v in unit_values(e, section, key) {
                if let Some(p) = exec_program(v).filter(|p| p.starts_with('/')) {
                    deps.push(Need::path(p));
                }
            }
        }
        // A declared account is created before the unit that runs as it.
        for (_, name, _, is_user) in self.named_accounts() {
            deps.push(if is_user {
                Need::account(name)
            } else {
                Need::group(name)
            });
        }
        // The service fails to set up its namespace when one of these is missing.
        for key in ["ReadWritePaths", "ReadOnlyPaths", "WorkingDirectory"] {
            for v in unit_values(e, section, key) {
                for p in v.split_whitespace() {
                    let p = p.trim_start_matches(['-', '+', '~']);
                    if p.starts_with('/') {
                        deps.push(Need::directory(p.trim_end_matches('/')));
                    }
                }
            }
        }
        // A missing EnvironmentFile= fails the start (unless marked optional with `-`).
        for v in unit_values(e, section, "EnvironmentFile") {
            if v.starts_with('/') {
                deps.push(Need::path(v));
            }
        }
        deps
    }

    fn validate(&self, catalog: &Catalog) -> Vec<Diagnostic> {
        let mut out = Vec::new();
        for (id, span) in &self.restart_on {
            if !catalog.contains(id) {
                out.push(
                    Diagnostic::error(
                        Some(span.clone()),
                        format!("{id} is not declared in the manifests"),
                    )
                    .field("restart_on"),
                );
            }
        }
        let other = catalog
            .provider_for(&Need::path(self.path.clone()))
            .map(|j| catalog.resources[j].id())
            .filter(|id| **id != self.id);
        if let (Some(_), Some(other)) = (&self.content, other) {
            out.push(Diagnostic::error(
                self.meta.span.clone(),
                format!(
                    "{} is managed twice: by {} and by {other}",
                    self.path, self.id
                ),
            ));
        }
        out
    }

    crate::on_the_contract!();

    fn managed_path(&self) -> Option<&str> {
        self.content.as_ref().map(|_| self.path.as_str())
    }

    fn refreshable(&self) -> bool {
        self.dropin.is_none() && self.unit_type() != "target"
    }

    fn refresh(&self, ctx: &ApplyCtx) -> Result<(), ResourceError> {
        let host = ctx.host;
        if detect_mode(host) != Mode::Live {
            tracing::info!(unit = %self.unit, "offline: nothing runs, nothing to restart");
            return Ok(());
        }
        // Called only when this run did not apply the unit: nothing started or
        // restarted it yet.
        let sh = show(host, &self.unit)?;
        if !self.restartable(&sh) {
            // Not running: the next start uses the new configuration.
            return Ok(());
        }
        if self.on_notify == OnNotify::Reload && !sh.can_reload() {
            return Err(ResourceError::Failed(format!(
                "{} cannot be reloaded (no ExecReload=); use on_notify: restart",
                self.unit
            )));
        }
        self.act(host, self.on_notify.verb(), &[])
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_spans() {
        assert_eq!(time_span_secs("90"), Some(90));
        assert_eq!(time_span_secs("30min"), Some(1800));
        assert_eq!(time_span_secs("1h 30min"), Some(5400));
        assert_eq!(time_span_secs("5s"), Some(5));
        assert_eq!(time_span_secs("bogus!"), None);
        assert!(time_span_secs("infinity").is_some_and(|s| s > 1_000_000));
    }

    const VERIFY_TYPO: &str = include_str!("../../../tests/fixtures/systemd/verify-typo.stderr");
    /// The scratch root the fixture was recorded in.
    const RECORDED_ROOT: &str = "/tmp/tmp.e36T9m4uz5";

    pub(super) fn unit(name: &str, dropin: Option<&str>, text: &str) -> Unit {
        let span = Span::file_only(Arc::from("site.yaml"));
        let (entries, _) = parse_unit_file(text);
        Unit {
            id: ResourceId::new(
                "unit",
                match dropin {
                    Some(c) => format!("{name}.d/{c}"),
                    None => name.to_string(),
                },
            ),
            meta: Meta::default(),
            unit: name.to_string(),
            dropin: dropin.map(String::from),
            path: match dropin {
                Some(c) => format!("{UNIT_DIR}/{name}.d/{c}"),
                None => format!("{UNIT_DIR}/{name}"),
            },
            file: Some(unit_file(
                &match dropin {
                    Some(c) => format!("{UNIT_DIR}/{name}.d/{c}"),
                    None => format!("{UNIT_DIR}/{name}"),
                },
                text,
                &span,
                false,
                true,
            )),
            content: Some(Rendered {
                text: Arc::from(text),
                origins: Vec::new(),
                span,
                entries,
            }),
            enabled: None,
            active: None,
            masked: None,
            restart_on: Vec::new(),
            on_notify: OnNotify::Auto,
            max_exposure: None,
        }
    }

    #[test]
    fn verify_output_is_sorted_into_errors_warnings_and_noise() {
        let typo = unit(
            "rc-typo.service",
            None,
            "[Service]\nExecStart=/opt/rc/run.sh\nTypo=yes\n",
        );
        let catalog = Catalog::new(vec![Box::new(unit("rc-typo.service", None, ""))]);
        let mut f = Findings::default();
        let n = typo.classify_verify(VERIFY_TYPO, RECORDED_ROOT, &catalog, &|_| false, &mut f);
        assert_eq!(n, 1, "{:?}", f.errors);
        assert!(
            f.errors[0].starts_with("/etc/systemd/system/rc-typo.service:7: Unknown key 'Typo'"),
            "{:?}",
            f.errors
        );
        assert_eq!(f.warnings.len(), 1, "{:?}", f.warnings);
        assert!(
            f.warnings[0].contains("/opt/rc/run.sh does not exist on the target"),
            "{:?}",
            f.warnings
        );

        // The program exists on the target: the scratch root's complaint is noise.
        let mut f = Findings::default();
        typo.classify_verify(
            VERIFY_TYPO,
            RECORDED_ROOT,
            &catalog,
            &|p| p == "/opt/rc/run.sh",
            &mut f,
        );
        assert!(f.warnings.is_empty(), "{:?}", f.warnings);

        // Lines about other units and other roots are not this resource's business.
        let other = unit("rc-other.service", None, "");
        let mut f = Findings::default();
        assert_eq!(
            other.classify_verify(VERIFY_TYPO, RECORDED_ROOT, &catalog, &|_| false, &mut f),
            0
        );
        assert!(f.errors.is_empty() && f.warnings.is_empty());
        let mut f = Findings::default();
        assert_eq!(
            typo.classify_verify(VERIFY_TYPO, "/elsewhere", &catalog, &|_| true, &mut f),
            0
        );
    }

    #[test]
    fn verify_lines_of_dropins_and_unmanaged_files() {
        let stderr = "/r/etc/systemd/system/a.service.d/x.conf:2: Unknown key 'Foo' in section [Service], ignoring.\n\
/r/usr/lib/systemd/system/a.service.d/pkg.conf:3: Unknown key 'Bar' in section [Service], ignoring.\n\
a.timer: Timer unit lacks value setting. Refusing.\n\
Unit a.timer has a bad unit file setting.\n\
a.service: Failed to create a.service/start: Unit b.service not found.\n";
        let main = unit("a.service", None, "[Service]\nExecStart=/bin/true\n");
        let dropin = unit("a.service", Some("x.conf"), "[Service]\nFoo=1\n");
        let catalog = Catalog::new(vec![
            Box::new(unit("a.service", None, "")),
            Box::new(unit("a.service", Some("x.conf"), "")),
        ]);
        let mut f = Findings::default();
        assert_eq!(
            dropin.classify_verify(stderr, "/r", &catalog, &|_| true, &mut f),
            1
        );
        assert!(
            f.errors[0].contains("a.service.d/x.conf:2: Unknown key 'Foo'"),
            "{:?}",
            f.errors
        );
        // The main unit leaves the declared drop-in's line to it, warns about the
        // package's drop-in, and warns about the missing dependency.
        let mut f = Findings::default();
        assert_eq!(
            main.classify_verify(stderr, "/r", &catalog, &|_| true, &mut f),
            0,
            "{:?}",
            f.errors
        );
        assert!(
            f.warnings
                .iter()
                .any(|w| w.contains("pkg.conf:3 (not managed by reconcile)")),
            "{:?}",
            f.warnings
        );
        assert!(
            f.warnings
                .iter()
                .any(|w| w.contains("Unit b.service not found")),
            "{:?}",
            f.warnings
        );
        let timer = unit("a.timer", None, "[Timer]\n");
        let mut f = Findings::default();
        assert_eq!(
            timer.classify_verify(stderr, "/r", &catalog, &|_| true, &mut f),
            2,
            "{:?}",
            f.errors
        );
    }

    #[test]
    fn paths_belong_to_units() {
        assert!(belongs_to("/etc/systemd/system/a.service", "a.service"));
        assert!(belongs_to(
            "/usr/lib/systemd/system/a.service.d/x.conf",
            "a.service"
        ));
        assert!(!belongs_to("/etc/systemd/system/ab.service", "a.service"));
    }
}
