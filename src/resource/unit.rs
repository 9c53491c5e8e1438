//! `unit`: a systemd unit file (or one drop-in of it), its enablement, its mask and
//! whether it runs. See docs/units.md.
//!
//! Ordering within a run, which is where hand-written playbooks go wrong:
//! 1. [`flush`] (the kind's batch step, run by the executor once the changed units
//!    whose dependencies converged are pending): their unit files and drop-ins are
//!    written, then ONE `systemctl daemon-reload` if any changed (live mode).
//! 2. [`Resource::apply`] per unit, in graph order: mask/unmask, enable/disable,
//!    start/stop, then a restart when its own file, a drop-in, or a resource it
//!    listens to (`restart_on`, or `notify` on the other side) changed.
//! 3. Each unit restarts at most once per run: per-run flags live in the resource
//!    (resources are decoded afresh for every run), shared by apply and refresh.

use std::any::Any;
use std::cell::Cell;
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use crate::diag::{Diagnostic, Span};
use crate::host::fs::ScratchDir;
use crate::host::parse::systemctl::{
    exec_program, parse_is_enabled, parse_security_json, parse_security_overall, parse_show_one,
    parse_unit_file, parse_verify, top_exposures, unit_value, unit_values, ShowUnit, UnitEntry,
    VerifyMessage,
};
use crate::host::{Cmd, FileKind, Host, HostError, Perms};
use crate::id::ResourceId;
use crate::manifest::decode::{Decoder, Fields};
use crate::manifest::yaml::{Node, Value};
use crate::plan::{fingerprint, short_hash, text_diff, Action, Change};

use super::{
    implied_parents, parent_dir_need, ApplyCtx, Catalog, Meta, Need, PlanCtx, Provide, Purpose,
    Resource, ResourceError,
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

/// What this run has done to the unit (resources are decoded afresh for every run).
#[derive(Debug, Default, Clone)]
struct RunFlags {
    /// [`flush`] staged this resource: files are written and reloaded already.
    batched: bool,
    /// What [`flush`] did for this resource (file fields, diff), so that the
    /// re-plan right before `apply` still reports it and the run records it.
    done: Vec<crate::plan::FieldChange>,
    done_diff: Option<String>,
    done_action: Option<Action>,
    /// Before-values of `enabled`/`masked` as the plan saw them, before [`flush`]
    /// wrote the file: the re-plan reports them, so that plan and apply agree.
    planned_before: Vec<(String, Option<String>)>,
    /// [`flush`] chose this resource to restart its unit (one per unit).
    restart_due: bool,
    started: bool,
    restarted: bool,
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
    pub enabled: Option<bool>,
    pub active: Option<bool>,
    pub masked: Option<bool>,
    pub restart_on: Vec<(ResourceId, Span)>,
    pub on_notify: OnNotify,
    pub max_exposure: Option<(f64, Span)>,
    run: Mutex<RunFlags>,
}

// ---------------------------------------------------------------------------------
// Decoding

pub fn decode(
    d: &mut Decoder,
    name: (String, Span),
    meta: Meta,
    f: &mut Fields,
) -> Option<Box<dyn Resource>> {
    let (raw_name, name_span) = name;
    let dropin_field = f.string(d, "dropin");
    // `unit: a.service.d/x.conf` is the same as `unit: a.service` + `dropin: x.conf`.
    let (unit_name, dropin) = match (raw_name.split_once(".d/"), dropin_field) {
        (Some(_), Some((_, span))) => {
            d.error(
                &span,
                "dropin",
                "the name already names a drop-in (UNIT.d/NAME.conf); remove `dropin`",
            );
            return None;
        }
        (Some((u, c)), None) => (u.to_string(), Some((c.to_string(), name_span.clone()))),
        (None, dropin) => (raw_name.clone(), dropin),
    };
    let type_ok = check_unit_name(d, &unit_name, &name_span);
    if let Some((c, span)) = &dropin {
        check_dropin_name(d, c, span);
    }
    let unit_type = unit_name
        .rsplit_once('.')
        .map(|(_, t)| t.to_string())
        .unwrap_or_default();

    let content = decode_content(
        d,
        f,
        &unit_name,
        &unit_type,
        dropin.as_ref().map(|(c, _)| c.as_str()),
    );
    let enabled = f.bool(d, "enabled");
    let active = f.bool(d, "active");
    let masked = f.bool(d, "masked");
    let restart_on = f.id_list(d, "restart_on");
    let on_notify = match f.string(d, "on_notify") {
        None => OnNotify::Auto,
        Some((s, _)) if s == "restart" => OnNotify::Restart,
        Some((s, _)) if s == "reload" => OnNotify::Reload,
        Some((s, _)) if s == "auto" => OnNotify::Auto,
        Some((s, span)) => {
            d.error(
                &span,
                "on_notify",
                format!("`{s}` is not one of auto, restart, reload"),
            );
            OnNotify::Auto
        }
    };
    let max_exposure = match f.raw("max_exposure").map(|n| n.span.clone()) {
        None => None,
        Some(span) => f.f64(d, "max_exposure").and_then(|v| {
            if !(0.0..=10.0).contains(&v) {
                d.error(
                    &span,
                    "max_exposure",
                    format!("{v} is not an exposure score (0.0 best to 10.0 worst)"),
                );
                None
            } else {
                Some((v, span))
            }
        }),
    };

    let entry = f.span.clone();
    let is_template = unit_name.contains("@.");
    if dropin.is_some() {
        for (field, given) in [
            ("enabled", enabled.is_some()),
            ("active", active.is_some()),
            ("masked", masked.is_some()),
        ] {
            if given {
                d.error(&entry, field, format!("`{field}` belongs to the unit, not to a drop-in; declare it on unit[{unit_name}]"));
            }
        }
        if content.is_none() {
            d.error(
                &entry,
                "sections",
                "a drop-in needs its content: give one of `sections`, `content` or `template`",
            );
        }
    }
    if is_template {
        for (field, given) in [("enabled", enabled.is_some()), ("active", active.is_some())] {
            if given {
                d.error(&entry, field, format!("{unit_name} is a template; `{field}` applies to an instance (name@instance.{unit_type})"));
            }
        }
    }
    if masked == Some(true) {
        if content.is_some() && dropin.is_none() {
            d.error(&entry, "masked", "a masked unit is a link to /dev/null at the unit file's place: it cannot also have content");
        }
        if enabled == Some(true) || active == Some(true) {
            d.error(
                &entry,
                "masked",
                "a masked unit can be neither enabled nor active",
            );
        }
    }
    if unit_type == "target" && active.is_some() {
        d.warn(
            &entry,
            "active",
            "starting or stopping a target pulls in or stops everything it wants",
        );
    }
    if let Some((_, span)) = &max_exposure {
        if unit_type != "service" {
            d.error(
                span,
                "max_exposure",
                format!("only services have an exposure score; {unit_name} is a {unit_type}"),
            );
        }
    }
    if let Some(r) = &content {
        lint_content(
            d,
            r,
            &unit_name,
            &unit_type,
            dropin.is_some(),
            enabled,
            active,
            on_notify,
            &entry,
        );
    } else if on_notify == OnNotify::Reload && unit_type != "service" {
        d.error(
            &entry,
            "on_notify",
            format!("only services can be reloaded; {unit_name} is a {unit_type}"),
        );
    }
    if !type_ok {
        return None;
    }
    let path = match &dropin {
        Some((c, _)) => format!("{UNIT_DIR}/{unit_name}.d/{c}"),
        None => format!("{UNIT_DIR}/{unit_name}"),
    };
    let id_name = match &dropin {
        Some((c, _)) => format!("{unit_name}.d/{c}"),
        None => unit_name.clone(),
    };
    Some(Box::new(Unit {
        id: ResourceId::new("unit", id_name),
        meta,
        unit: unit_name,
        dropin: dropin.map(|(c, _)| c),
        path,
        content,
        enabled,
        active,
        masked,
        restart_on,
        on_notify,
        max_exposure,
        run: Mutex::new(RunFlags::default()),
    }))
}

fn check_unit_name(d: &mut Decoder, name: &str, span: &Span) -> bool {
    let Some((stem, ty)) = name.rsplit_once('.') else {
        d.error(
            span,
            "unit",
            format!(
                "`{name}` needs its type suffix, one of: .{}",
                TYPES.join(", .")
            ),
        );
        return false;
    };
    if !TYPES.contains(&ty) {
        d.error(
            span,
            "unit",
            format!(
                "`.{ty}` units are not managed by reconcile; the type must be one of: .{}",
                TYPES.join(", .")
            ),
        );
        return false;
    }
    let valid = !stem.is_empty()
        && stem.len() + ty.len() < 256
        && !stem.starts_with('.')
        && stem
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || ":-_.\\@".contains(c));
    if !valid {
        d.error(
            span,
            "unit",
            format!("`{name}` is not a valid unit name (letters, digits and :-_.\\@ only)"),
        );
    }
    valid
}

fn check_dropin_name(d: &mut Decoder, name: &str, span: &Span) {
    let ok = name.ends_with(".conf")
        && name.len() > 5
        && !name.starts_with('.')
        && !name.contains('/')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.@".contains(c));
    if !ok {
        d.error(
            span,
            "dropin",
            format!("`{name}` is not a drop-in file name: NAME.conf (letters, digits, -_.@)"),
        );
    }
}

fn decode_content(
    d: &mut Decoder,
    f: &mut Fields,
    unit: &str,
    ty: &str,
    dropin: Option<&str>,
) -> Option<Rendered> {
    let shown_id = match dropin {
        Some(c) => format!("unit[{unit}.d/{c}]"),
        None => format!("unit[{unit}]"),
    };
    let sections_node = f.raw("sections");
    let content_span = f.raw("content").map(|n| n.span.clone());
    let content = f.string(d, "content");
    let template = f.string(d, "template");
    let given = [
        sections_node.is_some(),
        content_span.is_some(),
        template.is_some(),
    ]
    .iter()
    .filter(|&&b| b)
    .count();
    if given > 1 {
        d.error(
            &f.span,
            "sections",
            "give exactly one of `sections`, `content` and `template`",
        );
        return None;
    }
    let (text, origins, span): (Arc<str>, Vec<Option<Span>>, Span) =
        if let Some(node) = sections_node {
            let lines = render_sections(d, node, &shown_id, ty)?;
            let mut text = String::new();
            let mut origins = Vec::with_capacity(lines.len());
            for (line, origin) in lines {
                text.push_str(&line);
                text.push('\n');
                origins.push(origin);
            }
            (Arc::from(text), origins, node.span.clone())
        } else if let Some((text, span)) = content {
            (Arc::from(text), Vec::new(), span)
        } else if let Some((rel, span)) = template {
            let out = d.render_template(&rel, &span, "template")?;
            (out, Vec::new(), span)
        } else {
            return None;
        };
    let (entries, errors) = parse_unit_file(&text);
    for e in errors {
        let at = origins
            .get(e.line.saturating_sub(1))
            .cloned()
            .flatten()
            .unwrap_or_else(|| span.clone());
        d.error(
            &at,
            "content",
            format!("line {} of the unit: {}", e.line, e.message),
        );
    }
    Some(Rendered {
        text,
        origins,
        span,
        entries,
    })
}

/// `sections:` → lines of a unit file with the manifest place of each.
fn render_sections(
    d: &mut Decoder,
    node: &Node,
    shown_id: &str,
    ty: &str,
) -> Option<Vec<(String, Option<Span>)>> {
    let Some(pairs) = node.as_map() else {
        d.error(
            &node.span,
            "sections",
            format!(
                "expected a mapping of sections (Unit, {}, Install), found {}",
                type_section(ty).unwrap_or("Install"),
                node.value.type_name()
            ),
        );
        return None;
    };
    let allowed: Vec<&str> = ["Unit"]
        .into_iter()
        .chain(type_section(ty))
        .chain(["Install"])
        .collect();
    let mut ok = true;
    let mut by_section: Vec<(usize, &Node, &Node)> = Vec::new();
    for (k, v) in pairs {
        let name = k.key_text();
        match SECTION_ORDER.iter().position(|s| *s == name) {
            Some(pos) if allowed.contains(&name.as_str()) => by_section.push((pos, k, v)),
            _ => {
                let hint =
                    if let Some(good) = allowed.iter().find(|a| a.eq_ignore_ascii_case(&name)) {
                        format!("; section names are case-sensitive: did you mean `{good}`?")
                    } else {
                        String::new()
                    };
                d.error(
                    &k.span,
                    "sections",
                    format!(
                        "section [{name}] does not belong in a {ty} unit; allowed: {}{hint}",
                        allowed.join(", ")
                    ),
                );
                ok = false;
            }
        }
    }
    by_section.sort_by_key(|(pos, _, _)| *pos);
    let mut lines: Vec<(String, Option<Span>)> = vec![(
        format!("# Managed by reconcile ({shown_id}); local edits are overwritten."),
        None,
    )];
    for (_, k, v) in by_section {
        let section = k.key_text();
        if lines.len() > 1 {
            lines.push((String::new(), None));
        }
        lines.push((format!("[{section}]"), Some(k.span.clone())));
        let Some(settings) = v.as_map() else {
            if v.value != Value::Null {
                d.error(
                    &v.span,
                    "sections",
                    format!(
                        "[{section}] must be a mapping of settings, found {}",
                        v.value.type_name()
                    ),
                );
                ok = false;
            }
            continue;
        };
        for (key_node, value) in settings {
            let key = key_node.key_text();
            let key_ok = key.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
                && key
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
            if !key_ok {
                d.error(
                    &key_node.span,
                    "sections",
                    format!("`{key}` is not a setting name"),
                );
                ok = false;
                continue;
            }
            if let Some(message) = super::systemd_keys::misspelt(&section, &key, &allowed) {
                d.error(&key_node.span, "sections", message);
                ok = false;
                continue;
            }
            let items: Vec<&Node> = match &value.value {
                Value::Seq(items) => items.iter().collect(),
                _ => vec![value],
            };
            for item in items {
                match scalar(d, item, &section, &key) {
                    Some(text) => lines.push((format!("{key}={text}"), Some(item.span.clone()))),
                    None => ok = false,
                }
            }
        }
    }
    ok.then_some(lines)
}

fn type_section(ty: &str) -> Option<&'static str> {
    match ty {
        "service" => Some("Service"),
        "socket" => Some("Socket"),
        "timer" => Some("Timer"),
        "path" => Some("Path"),
        "mount" => Some("Mount"),
        _ => None,
    }
}

/// One value of a setting: strings templated, booleans as yes/no, null as the empty
/// assignment (which resets a list in systemd).
fn scalar(d: &mut Decoder, node: &Node, section: &str, key: &str) -> Option<String> {
    let text = match &node.value {
        Value::Null => String::new(),
        Value::Bool(b) => if *b { "yes" } else { "no" }.to_string(),
        Value::Int(i) => i.to_string(),
        Value::Float(x) => x.to_string(),
        Value::Str(s) => match d.templates.render_inline(s, &node.span) {
            Ok(out) => out,
            Err(diag) => {
                d.diags.push(diag.field(key));
                return None;
            }
        },
        other => {
            d.error(
                &node.span,
                key,
                format!(
                    "[{section}] {key}: expected a value or a list of values, found {}",
                    other.type_name()
                ),
            );
            return None;
        }
    };
    if text.contains('\n') || text.contains('\r') {
        d.error(
            &node.span,
            key,
            format!(
                "[{section}] {key}: a value must be one line (a newline would start a new setting)"
            ),
        );
        return None;
    }
    if text.contains(" #") || text.contains("\t#") {
        d.warn(&node.span, key, format!("[{section}] {key}: systemd has no trailing comments; ` #...` becomes part of the value"));
    }
    Some(text)
}

#[allow(clippy::too_many_arguments)]
fn lint_content(
    d: &mut Decoder,
    r: &Rendered,
    unit: &str,
    ty: &str,
    is_dropin: bool,
    enabled: Option<bool>,
    active: Option<bool>,
    on_notify: OnNotify,
    entry: &Span,
) {
    let at = |key: &str, section: &str| -> Span {
        r.entries
            .iter()
            .rev()
            .find(|e| e.section == section && e.key == key)
            .and_then(|e| r.origins.get(e.line.saturating_sub(1)).cloned().flatten())
            .unwrap_or_else(|| r.span.clone())
    };
    let e = &r.entries;
    if !is_dropin
        && enabled == Some(true)
        && !INSTALL_KEYS
            .iter()
            .any(|k| unit_value(e, "Install", k).is_some())
    {
        d.error(entry, "enabled", format!("{unit} has no [Install] section (WantedBy=, RequiredBy=, ...): it cannot be enabled; start it from another unit or add WantedBy="));
    }
    if ty == "service" && !is_dropin {
        let oneshot = unit_value(e, "Service", "Type") == Some("oneshot");
        let remain = unit_value(e, "Service", "RemainAfterExit").is_some_and(is_yes);
        if oneshot && !remain && active == Some(true) {
            d.error(entry, "active", format!("{unit} is a oneshot without RemainAfterExit=yes: it is never `active` once it finished, so `active: true` would run it on every apply; trigger it with a timer instead, or set RemainAfterExit=yes"));
        }
        if on_notify == OnNotify::Reload && unit_values(e, "Service", "ExecReload").is_empty() {
            d.error(entry, "on_notify", format!("{unit} has no ExecReload=: `systemctl reload` would always fail{}; use on_notify: restart or add ExecReload=", if oneshot { " (a oneshot cannot be reloaded)" } else { "" }));
        }
    } else if on_notify == OnNotify::Reload && ty != "service" {
        d.error(
            entry,
            "on_notify",
            format!("only services can be reloaded; {unit} is a {ty}"),
        );
    }
    if ty == "timer" {
        let stem = unit.rsplit_once('.').map(|(s, _)| s).unwrap_or(unit);
        let triggered = unit_value(e, "Timer", "Unit")
            .map(str::to_string)
            .unwrap_or_else(|| format!("{stem}.service"));
        for key in ["Requires", "Wants", "BindsTo", "Requisite", "Upholds"] {
            let names = unit_values(e, "Unit", key);
            if names
                .iter()
                .flat_map(|v| v.split_whitespace())
                .any(|n| n == triggered)
            {
                d.warn(
                    &at(key, "Unit"),
                    "sections",
                    format!("{key}={triggered} in a timer starts {triggered} at once whenever the timer starts (enable --now, boot), outside its schedule; a timer needs no {key}= on the unit it triggers"),
                );
            }
        }
        if !is_dropin
            && ![
                "OnCalendar",
                "OnActiveSec",
                "OnBootSec",
                "OnStartupSec",
                "OnUnitActiveSec",
                "OnUnitInactiveSec",
            ]
            .iter()
            .any(|k| unit_value(e, "Timer", k).is_some())
        {
            d.error(&r.span, "sections", format!("{unit} has no trigger (OnCalendar=, OnBootSec=, ...): systemd refuses to load it"));
        }
    }
    for entry in e.iter().filter(|x| x.section == "Install") {
        if ![
            "WantedBy",
            "RequiredBy",
            "UpheldBy",
            "Also",
            "Alias",
            "DefaultInstance",
        ]
        .contains(&entry.key.as_str())
        {
            let span = r
                .origins
                .get(entry.line.saturating_sub(1))
                .cloned()
                .flatten()
                .unwrap_or_else(|| r.span.clone());
            d.error(&span, "sections", format!("{}= is not an [Install] setting; systemd ignores it there (did it belong in another section?)", entry.key));
        }
    }
}

fn is_yes(v: &str) -> bool {
    matches!(v, "yes" | "true" | "1" | "on")
}

// ---------------------------------------------------------------------------------
// Modes and commands

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// The target is this machine and systemd runs it: `systemctl` acts on the manager.
    Live,
    /// A root directory without a running systemd: files and `systemctl --root`.
    Offline,
}

/// Live when the target is `/` and systemd is running (`/run/systemd/system` exists,
/// the check sd_booted(3) uses); offline otherwise.
pub fn detect_mode(host: &Host) -> Mode {
    let booted =
        matches!(host.lstat("/run/systemd/system"), Ok(Some(st)) if st.kind == FileKind::Directory);
    if host.is_machine_root() && booted {
        Mode::Live
    } else {
        Mode::Offline
    }
}

fn mode_note(host: &Host, m: Mode) -> String {
    match m {
        Mode::Live => {
            "live: systemd runs the target; observed with systemctl show, changed with systemctl"
                .into()
        }
        Mode::Offline => format!(
            "offline: no running systemd at {}; unit files and enablement only (systemctl --root)",
            host.root().display()
        ),
    }
}

/// Where `systemctl --root` enable/disable/mask/unmask create and remove links.
const UNIT_CONFIG_DIR: &str = "/etc/systemd/system";

/// `systemctl --root` makes and removes its links with the kernel's own path
/// resolution, following symlinks: a symlinked `/etc/systemd/system` or
/// `timers.target.wants` would put them outside the root. Refuse any symlinked
/// component of the paths it writes (the walk refuses symlinked parents) before
/// calling it.
fn refuse_symlinked_install_dirs(host: &Host) -> Result<(), ResourceError> {
    let unsafe_path = |path: &str, what: &str| -> ResourceError {
        HostError::Unsafe {
            path: host.show(path),
            reason: format!(
                "is {what}; `systemctl --root` would follow it when it writes the unit's links, possibly outside the root"
            ),
        }
        .into()
    };
    match host.lstat(UNIT_CONFIG_DIR)? {
        None => return Ok(()),
        Some(st) if st.kind == FileKind::Directory => {}
        Some(st) => {
            return Err(unsafe_path(
                UNIT_CONFIG_DIR,
                &format!("a {}", st.kind.name()),
            ))
        }
    }
    for name in host.list_dir(UNIT_CONFIG_DIR)? {
        let link_dir = [".wants", ".requires", ".upholds", ".d"]
            .iter()
            .any(|suffix| name.ends_with(suffix));
        if !link_dir {
            continue;
        }
        let path = format!("{UNIT_CONFIG_DIR}/{name}");
        if let Some(st) = host.lstat(&path)? {
            if st.kind == FileKind::Symlink {
                return Err(unsafe_path(&path, "a symlink"));
            }
        }
    }
    Ok(())
}

fn systemctl(host: &Host, m: Mode) -> Cmd {
    match m {
        Mode::Live => Cmd::new("systemctl").arg("--no-ask-password"),
        Mode::Offline => Cmd::new("systemctl").arg(format!("--root={}", host.root().display())),
    }
}

fn failed(cmd: &Cmd, out: &crate::host::Output) -> ResourceError {
    ResourceError::Host(HostError::Command {
        command: cmd.display(),
        reason: out.reason(),
    })
}

fn run_ok(cmd: Cmd) -> Result<crate::host::Output, ResourceError> {
    Ok(cmd.run_ok()?)
}

/// The last journal lines of a unit, for failure reports (live mode only).
fn journal_excerpt(unit: &str) -> String {
    let cmd =
        Cmd::new("journalctl").args(["-u", unit, "-n", "20", "--no-pager", "-o", "short-iso"]);
    match cmd.run() {
        Ok(out) if !out.stdout.trim().is_empty() => out.stdout.trim_end().to_string(),
        Ok(out) => format!("(no journal lines: {})", out.reason()),
        Err(e) => format!("(journal unavailable: {e})"),
    }
}

fn show(host: &Host, unit: &str) -> Result<ShowUnit, ResourceError> {
    let cmd = systemctl(host, Mode::Live).args(["show", unit, "--property", SHOW_PROPS]);
    let out = cmd.run()?;
    if !out.success() {
        return Err(failed(&cmd, &out));
    }
    parse_show_one(&out.stdout)
        .map_err(|e| ResourceError::Failed(format!("{}: {e}", cmd.display())))
}

fn is_enabled(host: &Host, m: Mode, unit: &str) -> Result<Option<String>, ResourceError> {
    // Exit status 1 is normal here (disabled, masked, not found): read stdout.
    let out = systemctl(host, m).args(["is-enabled", unit]).run()?;
    Ok(parse_is_enabled(&out.stdout))
}

/// A systemd time span (`90`, `30s`, `5min`, `1h 30min`, `infinity`) in seconds.
fn time_span_secs(v: &str) -> Option<u64> {
    if v.trim() == "infinity" {
        return Some(u64::MAX / 4);
    }
    let mut total = 0u64;
    let mut num = String::new();
    let mut unit = String::new();
    let flush = |num: &mut String, unit: &mut String, total: &mut u64| -> Option<()> {
        if num.is_empty() {
            return if unit.is_empty() { Some(()) } else { None };
        }
        let n: u64 = num.parse().ok()?;
        let mult = match unit.as_str() {
            "" | "s" | "sec" | "second" | "seconds" => 1,
            "m" | "min" | "minute" | "minutes" => 60,
            "h" | "hr" | "hour" | "hours" => 3600,
            "ms" | "msec" | "us" | "usec" => 0,
            _ => return None,
        };
        *total += n * mult;
        num.clear();
        unit.clear();
        Some(())
    };
    for c in v.chars() {
        if c.is_ascii_digit() {
            if !unit.is_empty() {
                flush(&mut num, &mut unit, &mut total)?;
            }
            num.push(c);
        } else if c.is_ascii_alphabetic() {
            unit.push(c);
        } else if c.is_whitespace() {
            continue;
        } else {
            return None;
        }
    }
    flush(&mut num, &mut unit, &mut total)?;
    Some(total)
}

// ---------------------------------------------------------------------------------
// Observing

thread_local! {
    /// >0 while this thread plans another resource on behalf of a unit (its
    /// notifiers): nested plans skip validation and their own notifiers.
    static NESTED: Cell<u32> = const { Cell::new(0) };
}

struct Nested;

impl Nested {
    fn enter() -> Nested {
        NESTED.with(|n| n.set(n.get() + 1));
        Nested
    }
}

impl Drop for Nested {
    fn drop(&mut self) {
        NESTED.with(|n| n.set(n.get().saturating_sub(1)));
    }
}

fn nested() -> bool {
    NESTED.with(|n| n.get() > 0)
}

/// What the unit file's place holds now.
enum FileState {
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

fn read_file_state(host: &Host, path: &str) -> Result<FileState, ResourceError> {
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

fn want_owner() -> bool {
    nix::unistd::geteuid().is_root()
}

impl Unit {
    /// Whether the unit should be running now: `active:` when given; for a timer,
    /// socket or path unit without it, what `enabled:` says (an enabled schedule is an
    /// armed one, as `systemctl enable --now` and NixOS do it; see docs/units.md).
    fn wants_active(&self) -> Option<bool> {
        self.active.or_else(|| {
            let trigger =
                self.dropin.is_none() && matches!(self.unit_type(), "timer" | "socket" | "path");
            self.enabled.filter(|_| trigger)
        })
    }

    fn flags(&self) -> MutexGuard<'_, RunFlags> {
        match self.run.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    fn unit_type(&self) -> &str {
        self.unit.rsplit_once('.').map(|(_, t)| t).unwrap_or("")
    }

    /// The main unit resource of this drop-in, when declared.
    fn main_declared(&self, catalog: &Catalog) -> bool {
        self.dropin.is_some()
            && catalog
                .typed::<Unit>(&ResourceId::new("unit", self.unit.clone()))
                .is_some()
    }

    /// Declared drop-ins of this unit (for a main unit).
    fn declared_dropins<'c>(&self, catalog: &'c Catalog) -> Vec<&'c Unit> {
        catalog
            .resources
            .iter()
            .filter_map(|r| r.as_any().downcast_ref::<Unit>())
            .filter(|u| u.unit == self.unit && u.dropin.is_some())
            .collect()
    }

    /// Resources whose change restarts this unit: `restart_on`, and those that
    /// `notify` it.
    fn notifiers<'c>(&self, catalog: &'c Catalog) -> Vec<&'c dyn Resource> {
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

    fn restartable(&self, show: &ShowUnit) -> bool {
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
// Validation: systemd-analyze verify and security on a scratch root

/// A scratch root holding the target's units plus every declared unit, removed on drop.
struct VerifyRoot {
    /// Removes the scratch root when the verification is done.
    _dir: ScratchDir,
    path: PathBuf,
    notes: Vec<String>,
}

const UNIT_SEARCH: &[&str] = &[
    "/etc/systemd/system",
    "/usr/lib/systemd/system",
    "/lib/systemd/system",
];

/// Copies one unit directory of the target (files, symlinks, `*.d/*.conf`) into the
/// scratch root; `.wants`/`.requires` links are not needed to verify.
fn copy_target_dir(host: &Host, dir: &str, dest: &Path) -> bool {
    let Ok(names) = host.list_dir(dir) else {
        return false;
    };
    if std::fs::create_dir_all(dest).is_err() {
        return false;
    }
    for name in names {
        let path = format!("{dir}/{name}");
        match host.read(&path) {
            Ok(Some((_, Some(bytes)))) => {
                let _ = std::fs::write(dest.join(&name), bytes);
            }
            Ok(Some((st, None))) if st.kind == FileKind::Symlink => {
                if let Ok(Some(t)) = host.read_link(&path) {
                    let _ = std::os::unix::fs::symlink(t, dest.join(&name));
                }
            }
            Ok(Some((st, None))) if st.kind == FileKind::Directory && name.ends_with(".d") => {
                for conf in host.list_dir(&path).unwrap_or_default() {
                    if let Ok(Some((_, Some(bytes)))) = host.read(&format!("{path}/{conf}")) {
                        let d = dest.join(&name);
                        let _ = std::fs::create_dir_all(&d);
                        let _ = std::fs::write(d.join(&conf), bytes);
                    }
                }
            }
            _ => {}
        }
    }
    true
}

/// The same from this machine (only when the target has no systemd units at all).
fn copy_machine_dir(src: &Path, dest: &Path) -> bool {
    let Ok(entries) = std::fs::read_dir(src) else {
        return false;
    };
    if std::fs::create_dir_all(dest).is_err() {
        return false;
    }
    for e in entries.flatten() {
        let Ok(ft) = e.file_type() else { continue };
        let to = dest.join(e.file_name());
        if ft.is_symlink() {
            if let Ok(t) = std::fs::read_link(e.path()) {
                let _ = std::os::unix::fs::symlink(t, to);
            }
        } else if ft.is_file() {
            let _ = std::fs::copy(e.path(), to);
        }
    }
    true
}

fn build_verify_root(host: &Host, catalog: &Catalog) -> Result<VerifyRoot, String> {
    let dir = ScratchDir::new("unit-verify", host.root()).map_err(|e| e.to_string())?;
    let mut root = VerifyRoot {
        path: dir.path().to_path_buf(),
        _dir: dir,
        notes: Vec::new(),
    };
    let rel = |p: &str| root.path.join(p.trim_start_matches('/'));
    let mut have_units = false;
    for dir in UNIT_SEARCH {
        let dest = rel(dir);
        if copy_target_dir(host, dir, &dest) {
            have_units |= dest.join("sysinit.target").exists();
        }
    }
    if !have_units {
        copy_machine_dir(
            Path::new("/usr/lib/systemd/system"),
            &rel("/usr/lib/systemd/system"),
        );
        root.notes.push(format!(
            "{} has no systemd units of its own; verified against this machine's standard units",
            host.root().display()
        ));
    }
    // Merged-/usr layout, so absolute links such as /lib/systemd/system/x resolve.
    for (link, to) in [("lib", "usr/lib"), ("bin", "usr/bin"), ("sbin", "usr/sbin")] {
        let at = root.path.join(link);
        if std::fs::symlink_metadata(&at).is_err() {
            let _ = std::os::unix::fs::symlink(to, at);
        }
    }
    // An empty file reads as masked to systemd, as /dev/null does.
    let _ = std::fs::create_dir_all(root.path.join("dev"));
    let _ = std::fs::write(root.path.join("dev/null"), b"");
    for u in catalog
        .resources
        .iter()
        .filter_map(|r| r.as_any().downcast_ref::<Unit>())
    {
        let Some(c) = &u.content else { continue };
        let dest = rel(&u.path);
        if let Some(parent) = dest.parent() {
            std::fs::create_dir_all(parent).map_err(|e| format!("{}: {e}", parent.display()))?;
        }
        let _ = std::fs::remove_file(&dest);
        std::fs::write(&dest, c.text.as_bytes()).map_err(|e| format!("{}: {e}", dest.display()))?;
    }
    Ok(root)
}

/// Follows symlinks inside the target root (never out of it) to see whether `path`
/// exists there.
fn exists_in_root(host: &Host, path: &str) -> bool {
    let mut todo: std::collections::VecDeque<String> = path
        .split('/')
        .filter(|c| !c.is_empty())
        .map(String::from)
        .collect();
    let mut resolved = String::new();
    let mut hops = 0;
    while let Some(comp) = todo.pop_front() {
        match comp.as_str() {
            "." => continue,
            ".." => {
                if let Some(i) = resolved.rfind('/') {
                    resolved.truncate(i);
                }
                continue;
            }
            _ => {}
        }
        let candidate = format!("{resolved}/{comp}");
        match host.lstat(&candidate) {
            Ok(Some(st)) if st.kind == FileKind::Symlink => {
                hops += 1;
                if hops > 40 {
                    return false;
                }
                let Ok(Some(target)) = host.read_link(&candidate) else {
                    return false;
                };
                if target.starts_with('/') {
                    resolved.clear();
                }
                let mut next: std::collections::VecDeque<String> = target
                    .split('/')
                    .filter(|c| !c.is_empty())
                    .map(String::from)
                    .collect();
                next.extend(todo.drain(..));
                todo = next;
            }
            Ok(Some(_)) => resolved = candidate,
            _ => return false,
        }
    }
    true
}

/// Problems found by validation: errors refuse the plan, warnings are shown.
#[derive(Default)]
struct Findings {
    errors: Vec<String>,
    warnings: Vec<String>,
    notes: Vec<String>,
}

impl Unit {
    fn origin_of_line(&self, line: u32) -> Option<String> {
        let c = self.content.as_ref()?;
        let span = c
            .origins
            .get((line as usize).checked_sub(1)?)
            .cloned()
            .flatten();
        Some(format!(
            " (declared at {})",
            span.unwrap_or_else(|| c.span.clone())
        ))
    }

    fn validate_with_systemd(&self, ctx: &PlanCtx, f: &mut Findings) {
        if self.content.is_none() {
            return;
        }
        let main_declared = self.main_declared(ctx.catalog);
        let wants_score = self.unit_type() == "service"
            && (self.dropin.is_none() || !main_declared || self.max_exposure.is_some());
        if !crate::host::exec::tool_exists("systemd-analyze") {
            f.warnings
                .push("systemd-analyze is not installed here: the unit was not verified".into());
            if let Some((max, _)) = self.max_exposure {
                f.errors.push(format!(
                    "max_exposure {max} cannot be checked: systemd-analyze is not installed"
                ));
            }
            return;
        }
        let root = match build_verify_root(ctx.host, ctx.catalog) {
            Ok(r) => r,
            Err(e) => {
                f.errors
                    .push(format!("cannot prepare the verification root: {e}"));
                return;
            }
        };
        f.notes.extend(root.notes.iter().cloned());
        let root_str = root.path.display().to_string();
        let cmd = Cmd::new("systemd-analyze")
            .args(["verify", "--man=no", "--recursive-errors=no"])
            .arg(format!("--root={root_str}"))
            .arg(self.unit.clone())
            .timeout(Duration::from_secs(60));
        let out = match cmd.run() {
            Ok(o) => o,
            Err(e) => {
                f.errors.push(format!("cannot verify: {e}"));
                return;
            }
        };
        let host = ctx.host;
        let verify_errors = self.classify_verify(
            &out.stderr,
            &root_str,
            ctx.catalog,
            &|p: &str| exists_in_root(host, p),
            f,
        );
        if verify_errors == 0 {
            f.notes.push("systemd-analyze verify: no problems".into());
        }
        if wants_score {
            self.exposure(&root_str, f);
        }
    }

    /// Sorts `systemd-analyze verify` stderr into errors (this resource's file and
    /// unit), warnings (unmanaged files of the unit, missing programs or
    /// dependencies) and noise (other units, scratch-root artefacts); returns how
    /// many errors it found. `exists` says whether a path exists on the target.
    fn classify_verify(
        &self,
        stderr: &str,
        root_str: &str,
        catalog: &Catalog,
        exists: &dyn Fn(&str) -> bool,
        f: &mut Findings,
    ) -> usize {
        let main_declared = self.main_declared(catalog);
        let mut verify_errors = 0;
        for msg in parse_verify(stderr) {
            match msg {
                VerifyMessage::File {
                    path,
                    line,
                    message,
                } => {
                    let Some(rel) = path.strip_prefix(root_str) else {
                        continue;
                    };
                    let rel = rel.to_string();
                    let text = if self.meta.secret {
                        "systemd rejects or ignores this line (details hidden: the resource is secret)".to_string()
                    } else {
                        message
                    };
                    if rel == self.path {
                        verify_errors += 1;
                        f.errors.push(format!(
                            "{rel}:{line}: {text}{}",
                            self.origin_of_line(line).unwrap_or_default()
                        ));
                    } else if is_declared_path(catalog, &rel) {
                        // That resource reports its own file.
                    } else if belongs_to(&rel, &self.unit) && self.dropin.is_none() {
                        f.warnings
                            .push(format!("{rel}:{line} (not managed by reconcile): {text}"));
                    }
                }
                VerifyMessage::Unit { unit, message } if unit == self.unit => {
                    if self.dropin.is_some() && main_declared {
                        continue;
                    }
                    if let Some(rest) = message.strip_prefix("Command ") {
                        let program = rest
                            .split(" is not executable")
                            .next()
                            .unwrap_or(rest)
                            .to_string();
                        let managed = catalog.provider_for(&Need::path(program.clone())).is_some();
                        if !managed && !exists(&program) {
                            f.warnings.push(format!(
                                "{program} does not exist on the target and no file[{program}] is declared: {} will fail to start",
                                self.unit
                            ));
                        }
                    } else if message.contains(" not found.")
                        && message.starts_with("Failed to create ")
                    {
                        f.warnings.push(format!(
                            "{}: {message} (neither declared nor installed on the target)",
                            self.unit
                        ));
                    } else {
                        verify_errors += 1;
                        f.errors.push(format!("{}: {message}", self.unit));
                    }
                }
                VerifyMessage::Other(line) if line.contains(&self.unit) => {
                    if line.starts_with("Unit ") && line.ends_with(" not found.") {
                        f.warnings.push(format!("{} is not installed on the target and not declared: the drop-in was not verified", self.unit));
                    } else if !(self.dropin.is_some() && main_declared) {
                        verify_errors += 1;
                        f.errors.push(line);
                    }
                }
                _ => {}
            }
        }
        verify_errors
    }

    fn exposure(&self, root: &str, f: &mut Findings) {
        let base = Cmd::new("systemd-analyze")
            .args(["security", "--offline=yes"])
            .arg(format!("--root={root}"))
            .timeout(Duration::from_secs(60));
        let out = match base.clone().arg(self.unit.clone()).run() {
            Ok(o) => o,
            Err(e) => {
                f.errors
                    .push(format!("cannot compute the exposure score: {e}"));
                return;
            }
        };
        let Some(score) = parse_security_overall(&out.stdout) else {
            let msg = format!("systemd-analyze security gave no score: {}", out.reason());
            if self.max_exposure.is_some() {
                f.errors.push(msg);
            } else {
                f.warnings.push(msg);
            }
            return;
        };
        let limit = self
            .max_exposure
            .as_ref()
            .map(|(m, _)| format!(" (max_exposure {m})"))
            .unwrap_or_default();
        f.notes.push(format!(
            "exposure {:.1} {}{limit} by systemd-analyze security",
            score.score, score.rating
        ));
        if let Some((max, span)) = &self.max_exposure {
            if score.score > *max + 1e-9 {
                let top = base
                    .arg("--json=short")
                    .arg(self.unit.clone())
                    .run()
                    .ok()
                    .and_then(|o| parse_security_json(&o.stdout).ok())
                    .map(|items| {
                        top_exposures(&items, 6)
                            .into_iter()
                            .map(|(n, e)| format!("{n} +{e:.1}"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    })
                    .unwrap_or_default();
                f.errors.push(format!(
                    "exposure {:.1} {} is above max_exposure {max} ({span}); largest contributions: {top}",
                    score.score, score.rating
                ));
            }
        }
    }
}

fn is_declared_path(catalog: &Catalog, path: &str) -> bool {
    catalog
        .resources
        .iter()
        .filter_map(|r| r.as_any().downcast_ref::<Unit>())
        .any(|u| u.content.is_some() && u.path == path)
}

/// Whether a unit-directory path is `unit`'s file or one of its drop-ins.
fn belongs_to(path: &str, unit: &str) -> bool {
    let name = path.rsplit('/').next().unwrap_or("");
    name == unit || path.contains(&format!("/{unit}.d/"))
}

// ---------------------------------------------------------------------------------
// Planning

impl Unit {
    fn perms(&self) -> Perms {
        let owner = want_owner();
        Perms {
            uid: owner.then_some(0),
            gid: owner.then_some(0),
            mode: Some(0o644),
        }
    }

    fn plan_inner(&self, ctx: &PlanCtx) -> Result<Change, ResourceError> {
        let host = ctx.host;
        let m = detect_mode(host);
        let flags = self.flags().clone();
        let mut change = Change::new(self.id.clone(), self.meta.secret);
        change.notes.push(mode_note(host, m));

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
                    change.action = Action::Create;
                    change.implied = implied_parents(ctx, &self.path)?;
                    change.secret_field("content", None, Some(short_hash(new)));
                    if !self.meta.secret {
                        change.diff = text_diff(b"", new, &self.path);
                    }
                    file_changes = true;
                    if matches!(state, FileState::Masked) {
                        change.field("masked", Some("yes".into()), Some("no".into()));
                    }
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
                        change.secret_field("content", Some(short_hash(bytes)), Some(short_hash(new)));
                        if !self.meta.secret {
                            change.diff = text_diff(bytes, new, &self.path);
                        }
                        file_changes = true;
                    }
                    // Owner and mode are fixed in place: no reload, no restart.
                    if *mode != 0o644 {
                        change.field("mode", Some(format!("{mode:04o}")), Some("0644".into()));
                    }
                    if want_owner() && (*uid != 0 || *gid != 0) {
                        change.field("owner", Some(format!("{uid}:{gid}")), Some("0:0 (root)".into()));
                    }
                }
            }
        }

        // Work done by the flush in this run stays part of this resource's change.
        if flags.batched {
            for done in &flags.done {
                if !change.changes_field(&done.field) {
                    change.fields.push(done.clone());
                }
            }
            if change.diff.is_none() {
                change.diff = flags.done_diff.clone();
            }
            if let Some(a) = flags.done_action {
                change.action = a;
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
                change.warnings.push(format!(
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
                    change.field("masked", Some("no".into()), Some("yes".into()))
                }
                Some(false) if masked_now && !change.changes_field("masked") => {
                    change.field("masked", Some("yes".into()), Some("no".into()))
                }
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
                        change.field("enabled", Some(now.to_string()), Some("enabled".into()));
                    } else if install_changed {
                        change.field(
                            "enabled",
                            Some("enabled (old [Install])".into()),
                            Some("re-enabled".into()),
                        );
                    }
                }
                // A mask hides the links underneath: after unmasking, disable anyway.
                Some(false)
                    if now.starts_with("enabled")
                        || now.starts_with("linked")
                        || (masked_now && self.masked == Some(false)) =>
                {
                    change.field("enabled", Some(now.to_string()), Some("disabled".into()));
                }
                _ => {}
            }
        }

        if flags.batched {
            for f in change.fields.iter_mut() {
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
                change.field(
                    "daemon-reload",
                    Some("needed: files changed on disk since systemd loaded them".into()),
                    Some("reloaded".into()),
                );
            }
            if self.dropin.is_none() {
                let running = sh.active_state().is_running();
                match self.wants_active() {
                    Some(true) if !running && self.masked != Some(true) => {
                        change.field("active", Some(sh.state_text()), Some("active".into()));
                    }
                    Some(false) if running => {
                        change.field("active", Some(sh.state_text()), Some("inactive".into()))
                    }
                    _ => {}
                }
            }
            let stays_up = self.wants_active() != Some(false)
                && self.masked != Some(true)
                && !change.changes_field("active");
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
                change.notes.push(format!("{} is a oneshot running now: it is not interrupted; the new unit applies from its next run", self.unit));
            }
            let delegated = self.dropin.is_some() && self.main_declared(ctx.catalog);
            if delegated && restart_reason.is_some() {
                change.notes.push(format!(
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
                change.field(
                    "restart",
                    Some(sh.state_text()),
                    Some(format!("restarted: {why}")),
                );
            }
        } else {
            if let Some(a) = self.active {
                change.warnings.push(format!(
                    "active: {a} is not manageable offline (no running systemd at {}): nothing is started or stopped; {}",
                    host.root().display(),
                    if self.enabled.is_some() { "enablement decides what runs at boot" } else { "declare `enabled` to decide what runs at boot" }
                ));
            }
            if file_changes && self.dropin.is_none() {
                change.notes.push("offline: no daemon-reload or restart; systemd reads the new files when it starts".into());
            }
        }

        // Validation.
        if let Some(w) = self.boot_and_timer_lint(ctx.catalog) {
            change.warnings.push(w);
        }
        // A check reports drift: content already in place was verified when planned.
        let skip_validation = nested() || (ctx.purpose == Purpose::Check && !file_changes);
        if !skip_validation {
            let mut findings = Findings::default();
            self.validate_with_systemd(ctx, &mut findings);
            change.warnings.extend(findings.warnings);
            change.notes.extend(findings.notes);
            if !findings.errors.is_empty() {
                return Err(ResourceError::Failed(format!(
                    "{} is rejected by systemd:\n  {}",
                    self.path,
                    findings.errors.join("\n  ")
                )));
            }
        }

        if change.fields.is_empty() {
            change.action = Action::None;
        } else if change.action == Action::None {
            change.action = Action::Update;
        }
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
    fn boot_and_timer_lint(&self, catalog: &Catalog) -> Option<String> {
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
    fn changed_dropin(&self, ctx: &PlanCtx) -> Result<Option<String>, ResourceError> {
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
    fn changing_notifier(&self, ctx: &PlanCtx) -> Result<Option<String>, ResourceError> {
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
const BUILTIN_ACCOUNTS: &[&str] = &["root", "nobody"];

/// The unit settings that name accounts: (key, whether it names a user, list-valued).
const ACCOUNT_KEYS: &[(&str, bool, bool)] = &[
    ("User", true, false),
    ("Group", false, false),
    ("SupplementaryGroups", false, true),
];

impl Unit {
    /// The account names this unit's settings use, with the key and unit-file line:
    /// (key, name, line, is a user). Numeric ids and specifiers (`%i`) are left out,
    /// and with `DynamicUser=yes` systemd makes the User=/Group= pair itself.
    fn named_accounts(&self) -> Vec<(&'static str, &str, usize, bool)> {
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
    fn check_accounts(&self, ctx: &PlanCtx) -> Result<(), ResourceError> {
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
fn calls_systemctl_links(change: &Change) -> bool {
    change.changes_field("enabled") || change.changes_field("masked")
}

fn install_section(entries: &[UnitEntry]) -> Vec<(String, String)> {
    entries
        .iter()
        .filter(|e| e.section == "Install")
        .map(|e| (e.key.clone(), e.value.clone()))
        .collect()
}

// ---------------------------------------------------------------------------------
// Applying

impl Unit {
    /// Writes this resource's file (unmasking first when a mask link stands there).
    fn write_file(&self, host: &Host) -> Result<(), ResourceError> {
        let Some(c) = &self.content else {
            return Ok(());
        };
        if matches!(read_file_state(host, &self.path)?, FileState::Masked) {
            host.remove(&self.path)?;
        }
        let mut implied = Vec::new();
        host.write_atomic(
            &self.path,
            c.text.as_bytes(),
            &self.perms(),
            &mut implied,
            None,
        )?;
        Ok(())
    }

    fn start_timeout(&self) -> Duration {
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
    fn act(&self, host: &Host, verb: &str, extra: &[&str]) -> Result<(), ResourceError> {
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
    fn check_started(&self, host: &Host) -> Result<(), ResourceError> {
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
}

/// Batch step for all changed units of a run (see the module docs): write every
/// changed unit file and drop-in, then one daemon-reload (live), then decide which
/// resource restarts each unit so that it restarts once.
/// The kind's batch step (see [`crate::resource::Flush`]): writes the members' files,
/// then one daemon-reload. A file that cannot be written fails its own unit; a failed
/// reload fails every member.
pub fn flush(ctx: &ApplyCtx, items: &[(&dyn Resource, &Change)]) -> Vec<Result<(), ResourceError>> {
    let mut results: Vec<Result<(), ResourceError>> = items.iter().map(|_| Ok(())).collect();
    let units: Vec<(usize, &Unit, &Change)> = items
        .iter()
        .enumerate()
        .filter_map(|(k, (r, c))| r.as_any().downcast_ref::<Unit>().map(|u| (k, u, *c)))
        .collect();
    let mut reload = false;
    for (k, u, c) in &units {
        match stage(ctx.host, u, c) {
            Ok(needs_reload) => reload |= needs_reload,
            Err(e) => results[*k] = Err(e),
        }
    }
    if reload && detect_mode(ctx.host) == Mode::Live {
        if let Err(e) = run_ok(systemctl(ctx.host, Mode::Live).arg("daemon-reload")) {
            for r in results.iter_mut().filter(|r| r.is_ok()) {
                *r = Err(ResourceError::Failed(format!(
                    "systemd daemon-reload failed: {e}"
                )));
            }
        }
    }
    // Mains first, so a unit whose own resource changes restarts through it.
    let staged: Vec<&(usize, &Unit, &Change)> = units
        .iter()
        .filter(|(k, _, _)| results[*k].is_ok())
        .collect();
    let mut assigned: HashSet<&str> = HashSet::new();
    let mut ordered: Vec<&&(usize, &Unit, &Change)> = staged
        .iter()
        .filter(|(_, u, _)| u.dropin.is_none())
        .collect();
    ordered.extend(staged.iter().filter(|(_, u, _)| u.dropin.is_some()));
    for (_, u, c) in ordered {
        if c.changes_field("restart") && assigned.insert(u.unit.as_str()) {
            u.flags().restart_due = true;
        }
    }
    results
}

/// One member's part of [`flush`]: its file written (or its perms fixed) and what was
/// done kept for the re-plan right before its apply. Whether it needs a reload.
fn stage(host: &Host, u: &Unit, c: &Change) -> Result<bool, ResourceError> {
    let mut reload = false;
    let writes = c.changes_field("content");
    let perms = c.changes_field("mode") || c.changes_field("owner");
    // The plan apply runs on keeps no diffs: take the diff of what is written here,
    // so that apply shows it as the plan did.
    let diff = match (&u.content, writes && !u.meta.secret) {
        (Some(content), true) => {
            let new = content.text.as_bytes();
            match read_file_state(host, &u.path)? {
                FileState::File { bytes, .. } => text_diff(&bytes, new, &u.path),
                _ => text_diff(b"", new, &u.path),
            }
        }
        _ => None,
    };
    // Enablement as planned, before the file is written (a new unit is
    // `not-found` until then, `disabled` after).
    let planned_before: Vec<(String, Option<String>)> = c
        .fields
        .iter()
        .filter(|x| x.field == "enabled" || x.field == "masked")
        .map(|x| (x.field.to_string(), x.before.clone()))
        .collect();
    if writes {
        u.write_file(host)?;
        reload = true;
    } else if perms {
        host.set_perms(&u.path, &u.perms())?;
    }
    reload |= c.changes_field("daemon-reload");
    let mut f = u.flags();
    f.batched = true;
    f.planned_before = planned_before;
    if writes || perms {
        // The mask link is replaced by the file, so unmasking is done too.
        let unmasked = |x: &crate::plan::FieldChange| {
            x.field == "masked" && x.after.as_deref() == Some("no") && u.content.is_some()
        };
        f.done = c
            .fields
            .iter()
            .filter(|x| ["content", "mode", "owner"].contains(&&*x.field) || unmasked(x))
            .cloned()
            .collect();
        f.done_diff = c.diff.clone().or(diff);
        f.done_action = Some(c.action);
    }
    if c.changes_field("daemon-reload") {
        f.done.extend(
            c.fields
                .iter()
                .filter(|x| x.field == "daemon-reload")
                .cloned(),
        );
    }
    Ok(reload)
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

    fn plan(&self, ctx: &PlanCtx) -> Result<Change, ResourceError> {
        self.check_accounts(ctx)?;
        let change = self.plan_inner(ctx)?;
        if calls_systemctl_links(&change) && detect_mode(ctx.host) == Mode::Offline {
            refuse_symlinked_install_dirs(ctx.host)?;
        }
        Ok(change)
    }

    fn apply(&self, ctx: &ApplyCtx, change: &Change) -> Result<(), ResourceError> {
        let host = ctx.host;
        let m = detect_mode(host);
        let batched = self.flags().batched;
        if !batched {
            // The executor did not stage this resource (its change needed no batch).
            let writes = change.changes_field("content");
            if writes {
                self.write_file(host)?;
            } else if change.changes_field("mode") || change.changes_field("owner") {
                host.set_perms(&self.path, &self.perms())?;
            }
            if (writes || change.changes_field("daemon-reload")) && m == Mode::Live {
                run_ok(systemctl(host, m).arg("daemon-reload"))?;
            }
        }
        if self.dropin.is_none() {
            if calls_systemctl_links(change) && m == Mode::Offline {
                refuse_symlinked_install_dirs(host)?;
            }
            if change.changes_field("masked") {
                match self.masked {
                    Some(true) => {
                        let mut cmd = systemctl(host, m).arg("mask");
                        if m == Mode::Live {
                            cmd = cmd.arg("--now");
                        }
                        run_ok(cmd.arg(self.unit.clone()))?;
                    }
                    // With content, writing the file already replaced the mask link.
                    _ if self.content.is_none() => {
                        run_ok(systemctl(host, m).arg("unmask").arg(self.unit.clone()))?;
                    }
                    _ => {}
                }
            }
            if change.changes_field("enabled") {
                let re = change
                    .fields
                    .iter()
                    .any(|f| f.field == "enabled" && f.after.as_deref() == Some("re-enabled"));
                let verb = match (self.enabled, re) {
                    (Some(true), true) => "reenable",
                    (Some(true), false) => "enable",
                    _ => "disable",
                };
                // Only symlinks change: the manager needs no reload to start or stop
                // the unit, and the run keeps its single daemon-reload.
                let mut cmd = systemctl(host, m).arg(verb);
                if m == Mode::Live {
                    cmd = cmd.arg("--no-reload");
                }
                run_ok(cmd.arg(self.unit.clone()))?;
            }
        }
        if m == Mode::Live {
            if change.changes_field("active") {
                match self.wants_active() {
                    Some(true) => {
                        self.act(host, "start", &[])?;
                        self.flags().started = true;
                        self.check_started(host)?;
                    }
                    Some(false) => self.act(host, "stop", &[])?,
                    None => {}
                }
            }
            if change.changes_field("restart") {
                let skip = {
                    let f = self.flags();
                    f.started || f.restarted
                };
                if !skip {
                    self.flags().restarted = true;
                    self.act(host, "try-restart", &[])?;
                    self.check_started(host)?;
                }
            }
        }
        Ok(())
    }

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
        {
            let f = self.flags();
            if f.started || f.restarted {
                return Ok(());
            }
        }
        let sh = show(host, &self.unit)?;
        if !self.restartable(&sh) {
            // Not running: the next start uses the new configuration.
            return Ok(());
        }
        self.flags().restarted = true;
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

    const VERIFY_TYPO: &str = include_str!("../../tests/fixtures/systemd/verify-typo.stderr");
    /// The scratch root the fixture was recorded in.
    const RECORDED_ROOT: &str = "/tmp/tmp.e36T9m4uz5";

    fn unit(name: &str, dropin: Option<&str>, text: &str) -> Unit {
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
            run: Mutex::new(RunFlags::default()),
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
