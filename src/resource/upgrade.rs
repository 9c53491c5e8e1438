//! `upgrade`: guarded package upgrades. See docs/upgrade.md.
//!
//! - Observe reads the clock (see [`now`]), dpkg's status database and ONE
//!   `apt-cache policy` for the packages in scope, the first-seen record of candidate
//!   versions (`ROOT/var/lib/reconcile/upgrade/NAME.json`), and runs the guards,
//!   concurrently, each bounded by its timeout.
//! - The diff is pure: window membership and the next window (in the declared time
//!   zone, by wall-clock time, `[from, to)`), soak eligibility, the guards' verdicts
//!   under the mode's fail-closed rule, and the operations: record newly seen
//!   candidate versions, and, inside a window with every guard passing, one upgrade.
//! - Outside every window, or blocked by a guard, the resource is in sync as far as
//!   apply is concerned (exit 0): the plan says why in its notes and warnings.
//! - Apply records the window and each guard's verdict as `decision` audit events,
//!   then runs one `apt-get install --only-upgrade NAME=VERSION...` through
//!   [`Apt`] (which waits for dpkg's frontend lock), then writes the first-seen
//!   record atomically.

use std::any::Any;
use std::collections::BTreeMap;
use std::time::Duration;

use jiff::civil::{Date, DateTime, Weekday};
use jiff::tz::{AmbiguousOffset, TimeZone};
use jiff::Timestamp;

use crate::diag::Span;
use crate::host::apt::{Apt, DEFAULT_LOCK_TIMEOUT};
use crate::host::exec::Cmd;
use crate::host::parse::dpkg::{compare_versions, PkgState, Want};
use crate::host::Perms;
use crate::id::ResourceId;
use crate::manifest::decode::{Decoder, Fields};
use crate::manifest::yaml::{Node, Value};
use crate::plan::{fingerprint, Action, Change};

use super::contract::{Contract, DepView, Diff};
use super::package::APT_LISTS;
use super::{ApplyCtx, Meta, Need, PlanCtx, Provide, Resource, ResourceError};

/// Where the first-seen times of candidate versions are kept, one file per resource.
pub const SEEN_DIR: &str = "/var/lib/reconcile/upgrade";
/// The longest timeout a guard may have.
const MAX_GUARD_TIMEOUT: Duration = Duration::from_secs(600);
const DISK_TIMEOUT: Duration = Duration::from_secs(10);
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);
/// How far ahead daylight-saving notes look (every weekly window recurs within).
const LOOKAHEAD_DAYS: i32 = 8;
/// How far ahead the next window is looked for: two weeks, as one weekly occurrence
/// can fall wholly in a skipped hour.
const NEXT_DAYS: i32 = 15;

/// The clock: the real time, or in a debug build (the tests' binary) the RFC 3339
/// timestamp in `RECONCILE_NOW`, so that window and soak tests are deterministic. A
/// release build ignores the variable: production never runs on a simulated clock.
pub fn now() -> Result<Timestamp, String> {
    if cfg!(debug_assertions) {
        if let Ok(v) = std::env::var("RECONCILE_NOW") {
            return v
                .parse::<Timestamp>()
                .map_err(|e| format!("RECONCILE_NOW=`{v}` is not an RFC 3339 timestamp: {e}"));
        }
    }
    Ok(Timestamp::now())
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Select {
    All,
    Security,
    Names(Vec<String>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Development,
    Staging,
    Production,
}

impl Mode {
    fn word(self) -> &'static str {
        match self {
            Mode::Development => "development",
            Mode::Staging => "staging",
            Mode::Production => "production",
        }
    }
}

/// A weekly maintenance window: on `days`, from `from` to `to` (minutes after local
/// midnight, `to` exclusive, at most 24:00).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Window {
    pub days: Vec<Weekday>,
    pub from: u16,
    pub to: u16,
    pub only_security: bool,
}

impl Window {
    fn label(&self) -> String {
        let days: Vec<&str> = self.days.iter().map(|d| day_word(*d)).collect();
        format!(
            "{} {}-{}{}",
            days.join(","),
            hhmm(self.from),
            hhmm(self.to),
            if self.only_security {
                " (security only)"
            } else {
                ""
            }
        )
    }

    /// Whether a local wall-clock time is inside: `[from, to)` on one of the days.
    fn contains(&self, local: DateTime) -> bool {
        let minute = u16::try_from(local.hour()).unwrap_or(0) * 60
            + u16::try_from(local.minute()).unwrap_or(0);
        self.days.contains(&local.weekday()) && self.from <= minute && minute < self.to
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GuardKind {
    /// Blocks at or above `critical` percent used, warns at or above `warn`.
    Disk {
        path: String,
        warn: Option<u8>,
        critical: u8,
    },
    /// Exit 0 is safe; argv, no shell.
    Command { argv: Vec<String> },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Guard {
    pub name: String,
    pub kind: GuardKind,
    pub timeout: Duration,
}

#[derive(Debug)]
pub struct Upgrade {
    pub id: ResourceId,
    pub meta: Meta,
    pub span: Span,
    pub packages: Select,
    pub exclude: Vec<String>,
    pub timezone: TimeZone,
    pub tz_name: String,
    pub windows: Vec<Window>,
    /// How long a candidate version must have been seen before it is installed.
    pub soak: Duration,
    pub guards: Vec<Guard>,
    pub mode: Mode,
    pub lock_timeout: Duration,
}

fn day_word(d: Weekday) -> &'static str {
    match d {
        Weekday::Monday => "mon",
        Weekday::Tuesday => "tue",
        Weekday::Wednesday => "wed",
        Weekday::Thursday => "thu",
        Weekday::Friday => "fri",
        Weekday::Saturday => "sat",
        Weekday::Sunday => "sun",
    }
}

fn parse_day(s: &str) -> Option<Weekday> {
    Some(match s.to_ascii_lowercase().as_str() {
        "mon" | "monday" => Weekday::Monday,
        "tue" | "tuesday" => Weekday::Tuesday,
        "wed" | "wednesday" => Weekday::Wednesday,
        "thu" | "thursday" => Weekday::Thursday,
        "fri" | "friday" => Weekday::Friday,
        "sat" | "saturday" => Weekday::Saturday,
        "sun" | "sunday" => Weekday::Sunday,
        _ => return None,
    })
}

fn hhmm(m: u16) -> String {
    format!("{:02}:{:02}", m / 60, m % 60)
}

/// `HH:MM` (00:00 to 24:00) as minutes after midnight.
fn parse_hhmm(s: &str) -> Option<u16> {
    let (h, m) = s.split_once(':')?;
    if h.len() != 2 || m.len() != 2 {
        return None;
    }
    let (h, m): (u16, u16) = (h.parse().ok()?, m.parse().ok()?);
    let total = h * 60 + m;
    (m < 60 && total <= 24 * 60).then_some(total)
}

/// `7d`, `12h`, `30m`, `10s` (one unit), or `0`.
pub fn parse_duration(s: &str) -> Option<Duration> {
    if s == "0" {
        return Some(Duration::ZERO);
    }
    let unit = s.chars().last()?;
    let n: u64 = s[..s.len() - unit.len_utf8()].parse().ok()?;
    let secs = match unit {
        'd' => n.checked_mul(86_400)?,
        'h' => n.checked_mul(3_600)?,
        'm' => n.checked_mul(60)?,
        's' => n,
        _ => return None,
    };
    Some(Duration::from_secs(secs))
}

/// A span of time as the plan shows it: `3 d 4 h`, `2 h 5 min`, `40 s`.
pub fn human(d: Duration) -> String {
    let s = d.as_secs();
    let (days, hours, mins) = (s / 86_400, s % 86_400 / 3_600, s % 3_600 / 60);
    if days > 0 {
        format!("{days} d {hours} h")
    } else if hours > 0 {
        format!("{hours} h {mins} min")
    } else if mins > 0 {
        format!("{mins} min")
    } else {
        format!("{s} s")
    }
}

fn map_entries<'n>(d: &mut Decoder, node: &'n Node, field: &str) -> Option<&'n [(Node, Node)]> {
    match &node.value {
        Value::Map(m) => Some(m),
        other => {
            d.error(
                &node.span,
                field,
                format!("expected a mapping, found {}", other.type_name()),
            );
            None
        }
    }
}

fn decode_timeout(d: &mut Decoder, f: &mut Fields, default: Duration) -> Option<Duration> {
    let Some((t, sp)) = f.string(d, "timeout") else {
        return Some(default);
    };
    match parse_duration(&t) {
        Some(v) if v > MAX_GUARD_TIMEOUT => {
            d.error(
                &sp,
                "timeout",
                format!("{t} is over the limit of 10m: a guard must answer within 10 minutes"),
            );
            None
        }
        Some(v) if v.is_zero() => {
            d.error(&sp, "timeout", "a guard's timeout must be above 0");
            None
        }
        Some(v) => Some(v),
        None => {
            d.error(
                &sp,
                "timeout",
                format!("`{t}` is not a duration; write e.g. 10s, 2m"),
            );
            None
        }
    }
}

fn decode_percent(d: &mut Decoder, f: &mut Fields, key: &'static str) -> Option<u8> {
    let span = f.raw(key).map(|n| n.span.clone());
    let v = f.u32(d, key)?;
    if v > 100 {
        if let Some(sp) = span {
            d.error(&sp, key, format!("{v} is not a percentage (0 to 100)"));
        }
        return None;
    }
    u8::try_from(v).ok()
}

fn decode_window(d: &mut Decoder, node: &Node) -> Option<Window> {
    let m = map_entries(d, node, "windows")?;
    let mut f = Fields::new(m, node.span.clone(), "upgrade window");
    let mut ok = true;
    let mut days = Vec::new();
    for (s, sp) in f.string_list(d, "days") {
        match parse_day(&s) {
            Some(w) if !days.contains(&w) => days.push(w),
            Some(_) => {}
            None => {
                d.error(
                    &sp,
                    "days",
                    format!("`{s}` is not a weekday; use mon, tue, wed, thu, fri, sat, sun"),
                );
                ok = false;
            }
        }
    }
    if days.is_empty() && ok {
        d.error(&node.span, "days", "a window needs `days:` (e.g. [sun])");
        ok = false;
    }
    let time = |d: &mut Decoder, f: &mut Fields, key: &'static str| {
        let present = f.has(key);
        match f.string(d, key) {
            Some((t, sp)) => {
                let v = parse_hhmm(&t);
                if v.is_none() {
                    d.error(
                        &sp,
                        key,
                        format!("`{t}` is not a time; write HH:MM (00:00 to 24:00)"),
                    );
                }
                v.map(|v| (v, sp))
            }
            None => {
                if !present {
                    d.error(&node.span, key, format!("a window needs `{key}:` (HH:MM)"));
                }
                None
            }
        }
    };
    let from = time(d, &mut f, "from");
    let to = time(d, &mut f, "to");
    let only_security = match f.string(d, "only") {
        None => false,
        Some((s, _)) if s == "security" => true,
        Some((s, sp)) => {
            d.error(
                &sp,
                "only",
                format!("`{s}` is not known; use `only: security`"),
            );
            ok = false;
            false
        }
    };
    f.finish(d);
    let ((from, _), (to, to_span)) = (from?, to?);
    if to <= from {
        d.error(
            &to_span,
            "to",
            format!(
                "the window ends ({}) before or when it starts ({}): `to` must be after `from` on the same day",
                hhmm(to),
                hhmm(from)
            ),
        );
        return None;
    }
    ok.then_some(Window {
        days,
        from,
        to,
        only_security,
    })
}

fn decode_guard(d: &mut Decoder, key: &Node, node: &Node) -> Option<Guard> {
    let name = key.as_str().unwrap_or_default().to_string();
    let m = map_entries(d, node, "guards")?;
    match name.as_str() {
        "disk" => {
            let mut f = Fields::new(m, node.span.clone(), "upgrade disk guard");
            // The root itself is a fine path to measure (abs_path refuses it: no
            // resource may manage `/`).
            let path = match f.string(d, "path") {
                Some((p, sp)) if p == "/" => Some((p, sp)),
                Some((p, sp)) => match crate::manifest::decode::normalize_abs(&p) {
                    Ok(p) => Some((p, sp)),
                    Err(msg) => {
                        d.error(&sp, "path", msg);
                        None
                    }
                },
                None => None,
            };
            if path.is_none() && !f.has("path") {
                d.error(&node.span, "path", "the disk guard needs `path:`");
            }
            let warn = decode_percent(d, &mut f, "warn");
            let crit_present = f.has("critical");
            let critical = decode_percent(d, &mut f, "critical");
            if !crit_present {
                d.error(
                    &node.span,
                    "critical",
                    "the disk guard needs `critical:` (percent used that blocks)",
                );
            }
            let timeout = decode_timeout(d, &mut f, DISK_TIMEOUT);
            f.finish(d);
            let (critical, timeout, (path, _)) = (critical?, timeout?, path?);
            if let Some(w) = warn.filter(|w| *w > critical) {
                d.error(
                    &node.span,
                    "warn",
                    format!("warn ({w}) is above critical ({critical})"),
                );
                return None;
            }
            Some(Guard {
                name,
                kind: GuardKind::Disk {
                    path,
                    warn,
                    critical,
                },
                timeout,
            })
        }
        "command" => {
            let mut f = Fields::new(m, node.span.clone(), "upgrade command guard");
            let argv: Vec<String> = f
                .string_list(d, "argv")
                .into_iter()
                .map(|(s, _)| s)
                .collect();
            let timeout = decode_timeout(d, &mut f, COMMAND_TIMEOUT);
            f.finish(d);
            if argv.is_empty() || !argv[0].starts_with('/') {
                d.error(
                    &node.span,
                    "argv",
                    "the command guard needs `argv:`, a list whose first item is an absolute program path (no shell)",
                );
                return None;
            }
            Some(Guard {
                name,
                kind: GuardKind::Command { argv },
                timeout: timeout?,
            })
        }
        other => {
            d.error(
                &key.span,
                "guards",
                format!(
                    "`{other}` is not a guard this version knows; use disk or command (business_hours, postgres and http are not implemented yet)"
                ),
            );
            None
        }
    }
}

pub fn decode(
    d: &mut Decoder,
    name: (String, Span),
    meta: Meta,
    f: &mut Fields,
) -> Option<Box<dyn Resource>> {
    let (raw, span) = name;
    let mut ok = true;
    if !crate::manifest::decode::is_file_stem(&raw) {
        d.error(
            &span,
            "upgrade",
            format!("`{raw}` is not a name: letters, digits, - _ ."),
        );
        ok = false;
    }
    let packages = match f.raw("packages") {
        None => Select::All,
        Some(n) => match &n.value {
            Value::Str(s) if s == "all" => Select::All,
            Value::Str(s) if s == "security" => Select::Security,
            Value::Seq(items) => {
                let mut names = Vec::new();
                for i in items {
                    match i.as_str() {
                        Some(s) => names.push(s.to_string()),
                        None => {
                            d.error(&i.span, "packages", "expected a package name");
                            ok = false;
                        }
                    }
                }
                Select::Names(names)
            }
            _ => {
                d.error(
                    &n.span,
                    "packages",
                    "use all, security, or a list of package names",
                );
                ok = false;
                Select::All
            }
        },
    };
    let exclude: Vec<String> = f
        .string_list(d, "exclude")
        .into_iter()
        .map(|(s, _)| s)
        .collect();
    let (tz_name, tz) = match f.string(d, "timezone") {
        None => ("UTC".to_string(), Some(TimeZone::UTC)),
        Some((s, sp)) => match TimeZone::get(&s) {
            Ok(tz) => (s, Some(tz)),
            Err(e) => {
                d.error(
                    &sp,
                    "timezone",
                    format!("`{s}` is not a known IANA time zone ({e}); e.g. Europe/Berlin"),
                );
                (s, None)
            }
        },
    };
    let mut windows = Vec::new();
    match f.raw("windows") {
        None => {
            let sp = f.span.clone();
            d.error(
                &sp,
                "windows",
                "an upgrade needs at least one window (`windows:`)",
            );
            ok = false;
        }
        Some(n) => match &n.value {
            Value::Seq(items) => {
                for i in items {
                    match decode_window(d, i) {
                        Some(w) => windows.push(w),
                        None => ok = false,
                    }
                }
            }
            other => {
                d.error(
                    &n.span,
                    "windows",
                    format!("expected a list of windows, found {}", other.type_name()),
                );
                ok = false;
            }
        },
    }
    let soak = match f.string(d, "soak") {
        None => Duration::ZERO,
        Some((s, sp)) => parse_duration(&s).unwrap_or_else(|| {
            d.error(
                &sp,
                "soak",
                format!("`{s}` is not a duration; write e.g. 7d, 12h"),
            );
            ok = false;
            Duration::ZERO
        }),
    };
    let mut guards = Vec::new();
    if let Some(n) = f.raw("guards") {
        match map_entries(d, n, "guards") {
            Some(m) => {
                for (k, v) in m {
                    match decode_guard(d, k, v) {
                        Some(g) => guards.push(g),
                        None => ok = false,
                    }
                }
            }
            None => ok = false,
        }
    }
    let mode = match f.string(d, "mode") {
        None => Mode::Production,
        Some((s, sp)) => match s.as_str() {
            "development" => Mode::Development,
            "staging" => Mode::Staging,
            "production" => Mode::Production,
            _ => {
                d.error(
                    &sp,
                    "mode",
                    format!("`{s}` is not a mode; use development, staging or production"),
                );
                ok = false;
                Mode::Production
            }
        },
    };
    let lock_timeout = f
        .u32(d, "lock_timeout")
        .map(|s| Duration::from_secs(u64::from(s)))
        .unwrap_or(DEFAULT_LOCK_TIMEOUT);
    let tz = tz?;
    if !ok {
        return None;
    }
    Some(Box::new(Upgrade {
        id: ResourceId::new("upgrade", raw),
        meta,
        span,
        packages,
        exclude,
        timezone: tz,
        tz_name,
        windows,
        soak,
        guards,
        mode,
        lock_timeout,
    }))
}

impl Resource for Upgrade {
    fn id(&self) -> &ResourceId {
        &self.id
    }

    fn meta(&self) -> &Meta {
        &self.meta
    }

    /// After the apt lists' refresh and any `package` resource of the run.
    fn needs(&self) -> Vec<Need> {
        vec![Need::Exact(Provide::Package(APT_LISTS.to_string()))]
    }

    crate::on_the_contract!();

    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// An installed package with a newer candidate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub name: String,
    pub from: String,
    pub to: String,
    pub security: bool,
    pub held: bool,
}

/// What a guard found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Pass(String),
    Warn(String),
    Block(String),
    /// The guard could not decide (tool missing, timeout, path unreadable).
    Undecided(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub guard: String,
    pub outcome: Outcome,
}

/// What a verdict means under a mode: guards fail closed outside development.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    Pass,
    Warn,
    Block,
}

pub fn effect(outcome: &Outcome, mode: Mode) -> Effect {
    match (outcome, mode) {
        (Outcome::Pass(_), _) => Effect::Pass,
        (Outcome::Warn(_), _) => Effect::Warn,
        (Outcome::Block(_), _) => Effect::Block,
        (Outcome::Undecided(_), Mode::Development) => Effect::Warn,
        (Outcome::Undecided(_), _) => Effect::Block,
    }
}

impl Verdict {
    fn line(&self, mode: Mode) -> String {
        let (word, why) = match (&self.outcome, effect(&self.outcome, mode)) {
            (Outcome::Pass(w), _) => ("passes", w.clone()),
            (Outcome::Warn(w), _) => ("warns", w.clone()),
            (Outcome::Block(w), _) => ("blocks", w.clone()),
            (Outcome::Undecided(w), Effect::Block) => (
                "blocks",
                format!(
                    "cannot decide ({w}); guards fail closed in {} mode",
                    mode.word()
                ),
            ),
            (Outcome::Undecided(w), _) => (
                "warns",
                format!("cannot decide ({w}); only a warning in development mode"),
            ),
        };
        format!("guard {} {word}: {why}", self.guard)
    }
}

/// Decides a disk guard from a measured fill level.
pub fn disk_outcome(percent: u8, warn: Option<u8>, critical: u8) -> Outcome {
    if percent >= critical {
        Outcome::Block(format!("{percent}% used, at or above critical {critical}%"))
    } else if warn.is_some_and(|w| percent >= w) {
        Outcome::Warn(format!(
            "{percent}% used, at or above warn {}%",
            warn.unwrap_or(0)
        ))
    } else {
        Outcome::Pass(format!("{percent}% used"))
    }
}

fn run_guard(ctx: &PlanCtx, g: &Guard) -> Verdict {
    let outcome = match &g.kind {
        GuardKind::Disk {
            path,
            warn,
            critical,
        } => match ctx.host.disk_usage(path, g.timeout) {
            Ok(u) => disk_outcome(u.percent, *warn, *critical),
            Err(e) => Outcome::Undecided(e.to_string()),
        },
        GuardKind::Command { argv } => {
            let cmd = Cmd::new(argv[0].clone())
                .args(argv[1..].iter().cloned())
                .timeout(g.timeout);
            match cmd.run() {
                Ok(out) if out.success() => Outcome::Pass("exit code 0".into()),
                Ok(out) => Outcome::Block(super::excerpt(&out.reason())),
                Err(e) => Outcome::Undecided(e.to_string()),
            }
        }
    };
    Verdict {
        guard: g.name.clone(),
        outcome,
    }
}

/// What observing found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observed {
    pub now: Timestamp,
    /// Packages in scope with a newer candidate, held ones included (never touched).
    pub candidates: Vec<Candidate>,
    /// Named packages that are not installed (nothing to upgrade).
    pub missing: Vec<String>,
    /// The first-seen record: name → (version, when first seen).
    pub seen: BTreeMap<String, (String, Timestamp)>,
    pub verdicts: Vec<Verdict>,
    pub interrupted: Vec<String>,
    /// Observed for `reconcile check`: pending upgrades and first sights are
    /// information there, not drift.
    pub for_check: bool,
}

/// The window state at a time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WindowState {
    /// Inside these windows (indexes); `security_only` when all of them are.
    Inside {
        windows: Vec<usize>,
        security_only: bool,
    },
    /// Outside every window; the next start within a week, if any.
    Outside { next: Option<(Timestamp, usize)> },
}

/// Where `now` stands with respect to `windows` in `tz`: membership by local wall
/// clock time (`[from, to)`), and the next start (a start in a skipped hour begins
/// when the clock resumes, as jiff's `compatible` resolution does).
pub fn window_state(windows: &[Window], tz: &TimeZone, now: Timestamp) -> WindowState {
    let local = now.to_zoned(tz.clone()).datetime();
    let inside: Vec<usize> = windows
        .iter()
        .enumerate()
        .filter(|(_, w)| w.contains(local))
        .map(|(i, _)| i)
        .collect();
    if !inside.is_empty() {
        let security_only = inside.iter().all(|&i| windows[i].only_security);
        return WindowState::Inside {
            windows: inside,
            security_only,
        };
    }
    let mut next: Option<(Timestamp, usize)> = None;
    for (date, (i, w)) in upcoming(local.date(), NEXT_DAYS)
        .flat_map(|d| windows.iter().enumerate().map(move |x| (d, x)))
    {
        if !w.days.contains(&date.weekday()) {
            continue;
        }
        let Some((start, _)) = occurrence(w, date, tz) else {
            continue;
        };
        if start > now && next.is_none_or(|(t, _)| start < t) {
            next = Some((start, i));
        }
    }
    WindowState::Outside { next }
}

fn upcoming(from: Date, days: i32) -> impl Iterator<Item = Date> {
    (0..days).filter_map(move |n| from.checked_add(jiff::Span::new().days(n)).ok())
}

/// The civil time `minutes` after midnight of `date`.
fn civil(date: Date, minutes: u16) -> DateTime {
    if minutes >= 24 * 60 {
        let next = date.tomorrow().unwrap_or(date);
        return next.at(0, 0, 0, 0);
    }
    date.at((minutes / 60) as i8, (minutes % 60) as i8, 0, 0)
}

/// The window's occurrence on `date` as instants, `None` when all of it falls in a
/// skipped hour (a DST spring-forward gap): then it does not happen that day.
fn occurrence(w: &Window, date: Date, tz: &TimeZone) -> Option<(Timestamp, Timestamp)> {
    let start_civil = civil(date, w.from);
    let end_civil = civil(date, w.to);
    let start = tz.to_ambiguous_timestamp(start_civil).compatible().ok()?;
    let end = tz.to_ambiguous_timestamp(end_civil).compatible().ok()?;
    (end > start).then_some((start, end))
}

/// Notes on the windows' next week: a window that falls wholly or partly in a skipped
/// hour, or partly in a repeated hour, on a DST change day.
pub fn dst_notes(windows: &[Window], tz: &TimeZone, now: Timestamp) -> Vec<String> {
    let today = now.to_zoned(tz.clone()).date();
    let mut out = Vec::new();
    for date in upcoming(today, LOOKAHEAD_DAYS) {
        for w in windows.iter().filter(|w| w.days.contains(&date.weekday())) {
            let mut gap = 0;
            let mut fold = 0;
            let mut m = w.from;
            while m < w.to {
                match tz.to_ambiguous_timestamp(civil(date, m)).offset() {
                    AmbiguousOffset::Gap { .. } => gap += 1,
                    AmbiguousOffset::Fold { .. } => fold += 1,
                    AmbiguousOffset::Unambiguous { .. } => {}
                }
                m += 1;
            }
            let len = w.to - w.from;
            let when = format!("window {} on {date}", w.label());
            if gap == len {
                out.push(format!(
                    "{when} falls wholly in the hour skipped by the daylight-saving change: it does not happen that day"
                ));
            } else if gap > 0 {
                out.push(format!(
                    "{when} is {gap} min shorter: part of it falls in the hour skipped by the daylight-saving change"
                ));
            } else if fold > 0 {
                out.push(format!(
                    "{when} is {fold} min longer: part of it falls in the hour repeated by the daylight-saving change"
                ));
            }
        }
    }
    out
}

/// A candidate's soak: when it was first seen and whether it is eligible at `now`.
pub fn soak_state(
    c: &Candidate,
    seen: &BTreeMap<String, (String, Timestamp)>,
    now: Timestamp,
    soak: Duration,
) -> (Timestamp, bool) {
    let first = match seen.get(&c.name) {
        Some((v, t)) if *v == c.to => *t,
        _ => now,
    };
    let age = now.duration_since(first);
    let eligible = age >= jiff::SignedDuration::try_from(soak).unwrap_or(jiff::SignedDuration::MAX);
    (first, eligible)
}

fn age_of(first: Timestamp, now: Timestamp) -> Duration {
    Duration::try_from(now.duration_since(first)).unwrap_or(Duration::ZERO)
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// One apt transaction: (name, from, to); with the window and the guards'
    /// verdicts it was decided under, for the audit trail.
    Upgrade {
        packages: Vec<(String, String, String)>,
        window: String,
        verdicts: Vec<(String, String)>,
    },
    /// Record first-seen times: the whole new record.
    RecordSeen {
        record: BTreeMap<String, (String, Timestamp)>,
        new: Vec<(String, String)>,
    },
}

impl Upgrade {
    fn seen_path(&self) -> String {
        format!("{SEEN_DIR}/{}.json", self.id.name)
    }

    fn in_scope(&self, name: &str) -> bool {
        !self.exclude.iter().any(|e| e == name)
            && match &self.packages {
                Select::Names(n) => n.iter().any(|x| x == name),
                _ => true,
            }
    }
}

fn parse_record(bytes: &[u8]) -> BTreeMap<String, (String, Timestamp)> {
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(bytes) else {
        return BTreeMap::new();
    };
    let mut out = BTreeMap::new();
    if let Some(m) = v.get("first_seen").and_then(|m| m.as_object()) {
        for (name, e) in m {
            let version = e.get("version").and_then(|x| x.as_str());
            let at = e
                .get("at")
                .and_then(|x| x.as_str())
                .and_then(|s| s.parse::<Timestamp>().ok());
            if let (Some(v), Some(t)) = (version, at) {
                out.insert(name.clone(), (v.to_string(), t));
            }
        }
    }
    out
}

fn render_record(r: &BTreeMap<String, (String, Timestamp)>) -> Vec<u8> {
    let m: serde_json::Map<String, serde_json::Value> = r
        .iter()
        .map(|(n, (v, t))| {
            (
                n.clone(),
                serde_json::json!({ "version": v, "at": t.to_string() }),
            )
        })
        .collect();
    let doc =
        serde_json::json!({ "format": "reconcile-upgrade-seen", "version": 1, "first_seen": m });
    let mut out = serde_json::to_vec_pretty(&doc).unwrap_or_default();
    out.push(b'\n');
    out
}

impl Contract for Upgrade {
    type State = Observed;
    type Op = Op;

    fn observe(&self, ctx: &PlanCtx) -> Result<Observed, ResourceError> {
        let now = now().map_err(ResourceError::Failed)?;
        let verdicts = std::thread::scope(|s| {
            let handles: Vec<_> = self
                .guards
                .iter()
                .map(|g| s.spawn(move || run_guard(ctx, g)))
                .collect();
            handles
                .into_iter()
                .zip(&self.guards)
                .map(|(h, g)| {
                    h.join().unwrap_or_else(|_| Verdict {
                        guard: g.name.clone(),
                        outcome: Outcome::Undecided("the guard panicked".into()),
                    })
                })
                .collect::<Vec<_>>()
        });
        let apt = Apt::new(ctx.host);
        let status = apt.status()?;
        let mut names = Vec::new();
        let mut missing = Vec::new();
        match &self.packages {
            Select::Names(list) => {
                for n in list.iter().filter(|n| self.in_scope(n)) {
                    if status
                        .find(n)
                        .is_some_and(|e| e.state == PkgState::Installed)
                    {
                        names.push(n.clone());
                    } else {
                        missing.push(n.clone());
                    }
                }
            }
            _ => {
                for e in status
                    .entries
                    .iter()
                    .filter(|e| e.state == PkgState::Installed)
                {
                    if self.in_scope(&e.name) {
                        names.push(e.name.clone());
                    }
                }
            }
        }
        names.sort();
        names.dedup();
        let policy = apt.policy(&names)?;
        let mut candidates = Vec::new();
        for n in &names {
            let (Some(e), Some(p)) = (status.find(n), policy.get(n)) else {
                continue;
            };
            let (Some(from), Some(to)) = (e.version.as_ref(), p.candidate.as_ref()) else {
                continue;
            };
            if compare_versions(to, from) != std::cmp::Ordering::Greater {
                continue;
            }
            let security = p.security.contains(to);
            if self.packages == Select::Security && !security {
                continue;
            }
            candidates.push(Candidate {
                name: n.clone(),
                from: from.clone(),
                to: to.clone(),
                security,
                held: e.want == Want::Hold,
            });
        }
        let seen = match ctx.host.read(&self.seen_path())? {
            Some((_, Some(bytes))) => parse_record(&bytes),
            _ => BTreeMap::new(),
        };
        let interrupted = status
            .interrupted()
            .iter()
            .map(|e| format!("{} ({})", e.name, e.state.word()))
            .collect();
        Ok(Observed {
            now,
            candidates,
            missing,
            seen,
            verdicts,
            interrupted,
            for_check: ctx.purpose == super::Purpose::Check,
        })
    }

    fn diff(&self, o: &Observed, _deps: &DepView) -> Result<Diff<Op>, ResourceError> {
        let live: Vec<String> = o
            .candidates
            .iter()
            .map(|c| format!("{} {} {} {}", c.name, c.from, c.to, c.held))
            .collect();
        let mut d = Diff::new(
            fingerprint(live.iter().map(String::as_bytes)),
            fingerprint([self.id.name.as_bytes()]),
        );
        let tz = &self.timezone;
        let state = window_state(&self.windows, tz, o.now);
        let local = o.now.to_zoned(tz.clone());
        let at = local.strftime("%a %Y-%m-%d %H:%M").to_string();
        let (inside, security_only, window_label) = match &state {
            WindowState::Inside {
                windows,
                security_only,
            } => {
                let labels: Vec<String> =
                    windows.iter().map(|&i| self.windows[i].label()).collect();
                let label = labels.join(" and ");
                d.notes
                    .push(format!("{at} {}: inside window {label}", self.tz_name));
                (true, *security_only, label)
            }
            WindowState::Outside { next } => {
                d.notes.push(match next {
                    Some((t, i)) => format!(
                        "deferred: {at} {} is outside all windows; next: {} {} ({}), in {}",
                        self.tz_name,
                        t.to_zoned(tz.clone()).strftime("%a %Y-%m-%d %H:%M"),
                        self.tz_name,
                        self.windows[*i].label(),
                        human(age_of(o.now, *t))
                    ),
                    None => format!(
                        "deferred: {at} {} is outside all windows; none in the next week",
                        self.tz_name
                    ),
                });
                (false, false, String::new())
            }
        };
        d.warnings.extend(dst_notes(&self.windows, tz, o.now));
        // Guards.
        let mut blocked = false;
        for v in &o.verdicts {
            let line = v.line(self.mode);
            match effect(&v.outcome, self.mode) {
                Effect::Pass => d.notes.push(line),
                Effect::Warn => d.warnings.push(line),
                Effect::Block => {
                    blocked = true;
                    d.warnings.push(line);
                }
            }
        }
        for n in &o.missing {
            d.notes
                .push(format!("package {n} is not installed: nothing to upgrade"));
        }
        for i in &o.interrupted {
            d.warnings.push(format!(
                "dpkg left package {i} half-way; `dpkg --configure -a` is not run by this version"
            ));
        }
        // Candidates, their soak and eligibility.
        let mut eligible = Vec::new();
        let mut record = BTreeMap::new();
        let mut new = Vec::new();
        for c in &o.candidates {
            let (first, ok) = soak_state(c, &o.seen, o.now, self.soak);
            let recorded = o.seen.get(&c.name).is_some_and(|(v, _)| *v == c.to);
            if !recorded {
                new.push((c.name.clone(), c.to.clone()));
            }
            record.insert(c.name.clone(), (c.to.clone(), first));
            let age = human(age_of(first, o.now));
            let kind = if c.security { ", security" } else { "" };
            if c.held {
                d.notes.push(format!(
                    "{} {} → {}{kind}: held (apt-mark hold), never upgraded here",
                    c.name, c.from, c.to
                ));
                continue;
            }
            if !ok {
                let left = self.soak.saturating_sub(age_of(first, o.now));
                let when = first
                    .checked_add(jiff::SignedDuration::try_from(self.soak).unwrap_or_default())
                    .map(|t| {
                        t.to_zoned(tz.clone())
                            .strftime("%Y-%m-%d %H:%M")
                            .to_string()
                    })
                    .unwrap_or_default();
                d.notes.push(format!(
                    "{} {} → {}{kind}: seen {age} ago{}, soaking: eligible {when} {} (in {})",
                    c.name,
                    c.from,
                    c.to,
                    if recorded { "" } else { " (first seen now)" },
                    self.tz_name,
                    human(left)
                ));
                continue;
            }
            if security_only && !c.security {
                d.notes.push(format!(
                    "{} {} → {}: eligible (seen {age} ago), but the open window is for security updates only",
                    c.name, c.from, c.to
                ));
                continue;
            }
            d.notes.push(format!(
                "{} {} → {}{kind}: seen {age} ago, eligible",
                c.name, c.from, c.to
            ));
            eligible.push((c.name.clone(), c.from.clone(), c.to.clone()));
        }
        if inside && blocked && !eligible.is_empty() {
            d.notes
                .push("blocked: a guard blocks; nothing is upgraded in this run".into());
        }
        if inside && !blocked && !eligible.is_empty() {
            for (n, _, _) in &eligible {
                record.remove(n);
            }
            d.op(
                Action::Update,
                Op::Upgrade {
                    packages: eligible,
                    window: window_label,
                    verdicts: o
                        .verdicts
                        .iter()
                        .map(|v| (v.guard.clone(), v.line(self.mode)))
                        .collect(),
                },
            );
        }
        if !new.is_empty() {
            d.op(Action::Update, Op::RecordSeen { record, new });
        }
        if o.for_check && d.action != Action::None {
            d.notes.push(
                "pending upgrades are information for `check`, not drift: apply decides them in a window"
                    .into(),
            );
            d.action = Action::None;
            d.ops.clear();
        }
        if d.action == Action::None {
            // The plan shows only warnings of a resource in sync: a deferred or
            // blocked upgrade, its guards and its pending packages must still be seen.
            let mut notes = std::mem::take(&mut d.notes);
            notes.append(&mut d.warnings);
            d.warnings = notes;
        }
        Ok(d)
    }

    fn describe(&self, op: &Op, change: &mut Change) {
        match op {
            Op::Upgrade { packages, .. } => {
                for (n, from, to) in packages {
                    change.field(n.clone(), Some(from.clone()), Some(to.clone()));
                }
            }
            Op::RecordSeen { new, .. } => {
                for (n, v) in new {
                    change.field(format!("{n} {v} first seen"), None, Some("now".into()));
                }
            }
        }
    }

    fn apply_ops(&self, ops: &[Op], ctx: &ApplyCtx) -> Result<(), ResourceError> {
        for op in ops {
            match op {
                Op::Upgrade {
                    packages,
                    window,
                    verdicts,
                } => {
                    ctx.record(
                        &self.id,
                        "upgrade-window",
                        serde_json::json!({ "inside": window, "timezone": self.tz_name }),
                    );
                    for (g, line) in verdicts {
                        ctx.record(
                            &self.id,
                            "upgrade-guard",
                            serde_json::json!({ "guard": g, "verdict": line, "mode": self.mode.word() }),
                        );
                    }
                    let mut args = vec![
                        "install".to_string(),
                        "--only-upgrade".to_string(),
                        "--no-install-recommends".to_string(),
                    ];
                    args.extend(packages.iter().map(|(n, _, to)| format!("{n}={to}")));
                    let result = Apt::new(ctx.host).get(&args, self.lock_timeout);
                    ctx.record(
                        &self.id,
                        "upgrade-transaction",
                        serde_json::json!({
                            "packages": packages.iter().map(|(n, f, t)| serde_json::json!({"name": n, "from": f, "to": t})).collect::<Vec<_>>(),
                            "result": match &result { Ok(_) => "ok".to_string(), Err(e) => e.to_string() },
                        }),
                    );
                    result?;
                }
                Op::RecordSeen { record, .. } => {
                    let mut implied = Vec::new();
                    ctx.host.write_atomic(
                        &self.seen_path(),
                        &render_record(record),
                        &Perms {
                            mode: Some(0o600),
                            ..Perms::default()
                        },
                        &mut implied,
                        None,
                    )?;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
