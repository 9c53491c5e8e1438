//! systemd's formats: `systemctl show` properties, `systemctl is-enabled`,
//! `systemd-analyze verify` diagnostics, `systemd-analyze security` scores
//! (`--json=short` items and the text "Overall exposure level" line), and the unit
//! file syntax itself (systemd.syntax(7)). All pure, tested against recorded output.

use std::collections::BTreeMap;

use super::ParseError;

/// The properties of one unit as printed by `systemctl show UNIT -p ...`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ShowUnit {
    pub props: BTreeMap<String, String>,
}

/// `ActiveState=` (systemd.unit(5) "ActiveState"), with unknown values kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ActiveState {
    Active,
    Reloading,
    Inactive,
    Failed,
    Activating,
    Deactivating,
    Maintenance,
    Other(String),
}

impl ActiveState {
    pub fn parse(s: &str) -> ActiveState {
        match s {
            "active" => ActiveState::Active,
            "reloading" => ActiveState::Reloading,
            "inactive" => ActiveState::Inactive,
            "failed" => ActiveState::Failed,
            "activating" => ActiveState::Activating,
            "deactivating" => ActiveState::Deactivating,
            "maintenance" => ActiveState::Maintenance,
            other => ActiveState::Other(other.to_string()),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            ActiveState::Active => "active",
            ActiveState::Reloading => "reloading",
            ActiveState::Inactive => "inactive",
            ActiveState::Failed => "failed",
            ActiveState::Activating => "activating",
            ActiveState::Deactivating => "deactivating",
            ActiveState::Maintenance => "maintenance",
            ActiveState::Other(s) => s,
        }
    }

    /// Whether the unit counts as running for `active: true` (a start job would be
    /// a no-op): active, or on its way there, or reloading.
    pub fn is_running(&self) -> bool {
        matches!(
            self,
            ActiveState::Active | ActiveState::Reloading | ActiveState::Activating
        )
    }
}

impl ShowUnit {
    pub fn get(&self, key: &str) -> Option<&str> {
        self.props.get(key).map(String::as_str)
    }

    pub fn id(&self) -> &str {
        self.get("Id").unwrap_or("")
    }

    /// `loaded`, `not-found`, `bad-setting`, `error`, `masked`.
    pub fn load_state(&self) -> &str {
        self.get("LoadState").unwrap_or("")
    }

    pub fn active_state(&self) -> ActiveState {
        ActiveState::parse(self.get("ActiveState").unwrap_or(""))
    }

    pub fn sub_state(&self) -> &str {
        self.get("SubState").unwrap_or("")
    }

    /// `enabled`, `disabled`, `static`, `masked`, ... (empty when not installed).
    pub fn unit_file_state(&self) -> &str {
        self.get("UnitFileState").unwrap_or("")
    }

    /// True when a unit file or drop-in changed on disk since systemd loaded it.
    pub fn need_daemon_reload(&self) -> bool {
        self.get("NeedDaemonReload").is_some_and(is_yes)
    }

    pub fn can_reload(&self) -> bool {
        self.get("CanReload").is_some_and(is_yes)
    }

    pub fn service_type(&self) -> Option<&str> {
        self.get("Type").filter(|t| !t.is_empty())
    }

    pub fn invocation_id(&self) -> Option<&str> {
        self.get("InvocationID").filter(|t| !t.is_empty())
    }

    /// `ExecMainStartTimestampMonotonic`: microseconds since boot of the main
    /// process start, 0 when it never started.
    pub fn exec_main_start_monotonic(&self) -> Option<u64> {
        self.get("ExecMainStartTimestampMonotonic")
            .and_then(|v| v.parse().ok())
    }

    /// `Result=` of the last run (`success`, `exit-code`, `signal`, ...).
    pub fn result(&self) -> Option<&str> {
        self.get("Result").filter(|t| !t.is_empty())
    }

    /// For timers: `NextElapseUSecRealtime`, as printed (`Sun 2026-11-29 02:00:00 UTC`).
    pub fn next_elapse_realtime(&self) -> Option<&str> {
        self.get("NextElapseUSecRealtime").filter(|t| !t.is_empty())
    }

    /// The state line shown in plans: `active (running)`.
    pub fn state_text(&self) -> String {
        let sub = self.sub_state();
        if sub.is_empty() {
            self.active_state().as_str().to_string()
        } else {
            format!("{} ({sub})", self.active_state().as_str())
        }
    }
}

fn is_yes(v: &str) -> bool {
    matches!(v, "yes" | "true" | "1" | "on")
}

/// Parses `systemctl show` output for one or more units (blocks separated by a
/// blank line, each line `Key=Value`; values may contain `=`).
pub fn parse_show(text: &str) -> Result<Vec<ShowUnit>, ParseError> {
    let mut units = Vec::new();
    let mut current = ShowUnit::default();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim_end_matches('\r');
        if line.is_empty() {
            if !current.props.is_empty() {
                units.push(std::mem::take(&mut current));
            }
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            return Err(ParseError {
                file: "systemctl show",
                line: i + 1,
                message: format!("expected Key=Value, found `{line}`"),
            });
        };
        if key.is_empty() || !key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(ParseError {
                file: "systemctl show",
                line: i + 1,
                message: format!("`{key}` is not a property name"),
            });
        }
        current.props.insert(key.to_string(), value.to_string());
    }
    if !current.props.is_empty() {
        units.push(current);
    }
    Ok(units)
}

/// Parses the output for exactly one unit.
pub fn parse_show_one(text: &str) -> Result<ShowUnit, ParseError> {
    let mut units = parse_show(text)?;
    match units.len() {
        1 => Ok(units.remove(0)),
        n => Err(ParseError {
            file: "systemctl show",
            line: 0,
            message: format!("expected the properties of one unit, found {n}"),
        }),
    }
}

/// The enablement state printed by `systemctl is-enabled` (first stdout line), or
/// `None` when the unit file does not exist (it prints nothing on stdout then).
pub fn parse_is_enabled(stdout: &str) -> Option<String> {
    stdout
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .map(str::to_string)
}

/// One stderr line of `systemd-analyze verify`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VerifyMessage {
    /// `/path/to/unit:LINE: message`: a problem in a unit file or drop-in.
    File {
        path: String,
        line: u32,
        message: String,
    },
    /// `unit.service: message`: a problem of a loaded unit.
    Unit { unit: String, message: String },
    /// Anything else (`Unit x.service has a bad unit file setting.`).
    Other(String),
}

/// Splits `systemd-analyze verify` stderr into messages.
pub fn parse_verify(stderr: &str) -> Vec<VerifyMessage> {
    stderr
        .lines()
        .map(|l| l.trim_end_matches('\r'))
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            if line.starts_with('/') {
                // `/p/a.service:12: msg`; a path may itself contain `:`, so take
                // the first `:DIGITS: ` after the last `/`.
                if let Some(m) = split_file_line(line) {
                    return m;
                }
            }
            if let Some((unit, message)) = line.split_once(": ") {
                if is_unit_name(unit) {
                    return VerifyMessage::Unit {
                        unit: unit.to_string(),
                        message: message.to_string(),
                    };
                }
            }
            VerifyMessage::Other(line.to_string())
        })
        .collect()
}

fn split_file_line(line: &str) -> Option<VerifyMessage> {
    let slash = line.rfind('/')?;
    let rest = &line[slash..];
    let mut search = 0;
    while let Some(pos) = rest[search..].find(':') {
        let colon = search + pos;
        let after = &rest[colon + 1..];
        let digits: String = after.chars().take_while(char::is_ascii_digit).collect();
        if !digits.is_empty() && after[digits.len()..].starts_with(": ") {
            let line_no = digits.parse().ok()?;
            return Some(VerifyMessage::File {
                path: line[..slash + colon].to_string(),
                line: line_no,
                message: after[digits.len() + 2..].to_string(),
            });
        }
        search = colon + 1;
    }
    None
}

/// `name.type` where type is one of systemd's unit types (names may hold `@`, `\`).
pub fn is_unit_name(s: &str) -> bool {
    const TYPES: &[&str] = &[
        "service",
        "socket",
        "device",
        "mount",
        "automount",
        "swap",
        "target",
        "path",
        "timer",
        "slice",
        "scope",
    ];
    let Some((stem, ty)) = s.rsplit_once('.') else {
        return false;
    };
    !stem.is_empty()
        && TYPES.contains(&ty)
        && stem
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || ":-_.\\@".contains(c))
}

/// One assessed setting from `systemd-analyze security --json=short`.
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
pub struct SecurityItem {
    pub name: String,
    #[serde(default)]
    pub json_field: String,
    #[serde(default)]
    pub description: String,
    /// Whether the setting is in effect; `None` when it does not apply (e.g.
    /// `SupplementaryGroups=` of a service running as root).
    #[serde(default)]
    pub set: Option<bool>,
    /// How much this setting adds to the score (as printed, 0.0-1.0); `None` when
    /// the setting is satisfied.
    #[serde(default, deserialize_with = "exposure_value")]
    pub exposure: Option<f64>,
}

fn exposure_value<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
    use serde::Deserialize;
    let v = Option::<serde_json::Value>::deserialize(d)?;
    Ok(match v {
        Some(serde_json::Value::String(s)) => s.trim().parse().ok(),
        Some(serde_json::Value::Number(n)) => n.as_f64(),
        _ => None,
    })
}

/// Parses the `--json=short` list of assessed settings.
pub fn parse_security_json(text: &str) -> Result<Vec<SecurityItem>, ParseError> {
    serde_json::from_str(text.trim()).map_err(|e| ParseError {
        file: "systemd-analyze security --json",
        line: e.line(),
        message: e.to_string(),
    })
}

/// The settings that add most to the exposure, largest first.
pub fn top_exposures(items: &[SecurityItem], n: usize) -> Vec<(&str, f64)> {
    let mut v: Vec<(&str, f64)> = items
        .iter()
        .filter_map(|i| {
            i.exposure
                .filter(|e| *e > 0.0)
                .map(|e| (i.name.as_str(), e))
        })
        .collect();
    v.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(b.0)));
    v.truncate(n);
    v
}

/// The overall score line of the text report.
#[derive(Debug, Clone, PartialEq)]
pub struct Exposure {
    pub unit: String,
    /// 0.0 (best) to 10.0 (worst), as printed.
    pub score: f64,
    /// `OK`, `MEDIUM`, `EXPOSED`, `UNSAFE`, ...
    pub rating: String,
}

/// Finds `→ Overall exposure level for UNIT: 9.2 UNSAFE 😨` in the text report.
pub fn parse_security_overall(text: &str) -> Option<Exposure> {
    text.lines().find_map(|line| {
        let rest = line.split_once("Overall exposure level for ")?.1;
        let (unit, tail) = rest.split_once(": ")?;
        let mut words = tail.split_whitespace();
        let score = words.next()?.parse().ok()?;
        let rating = words.next().unwrap_or("").to_string();
        Some(Exposure {
            unit: unit.to_string(),
            score,
            rating,
        })
    })
}

/// One `Key=Value` assignment of a unit file, with its section and line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnitEntry {
    pub section: String,
    pub key: String,
    pub value: String,
    pub line: usize,
}

/// Parses unit file syntax (systemd.syntax(7)): `[Section]` headers, `Key=Value`,
/// `#`/`;` comment lines, a trailing `\` continuing a value on the next line.
/// Lines that are neither are reported, as systemd does, but do not stop parsing.
pub fn parse_unit_file(text: &str) -> (Vec<UnitEntry>, Vec<ParseError>) {
    let mut entries = Vec::new();
    let mut errors = Vec::new();
    let mut section = String::new();
    let mut pending: Option<(String, String, usize)> = None;
    for (i, raw) in text.lines().enumerate() {
        let line_no = i + 1;
        let line = raw.trim_end_matches('\r');
        if let Some((key, mut value, start)) = pending.take() {
            let t = line.trim();
            // Comment lines inside a continuation are skipped (systemd does so too).
            if t.starts_with('#') || t.starts_with(';') {
                pending = Some((key, value, start));
                continue;
            }
            match t.strip_suffix('\\') {
                Some(part) => {
                    value.push(' ');
                    value.push_str(part.trim());
                    pending = Some((key, value, start));
                }
                None => {
                    value.push(' ');
                    value.push_str(t);
                    entries.push(UnitEntry {
                        section: section.clone(),
                        key,
                        value: value.trim().to_string(),
                        line: start,
                    });
                }
            }
            continue;
        }
        let t = line.trim();
        if t.is_empty() || t.starts_with('#') || t.starts_with(';') {
            continue;
        }
        if t.starts_with('[') {
            match t.strip_prefix('[').and_then(|s| s.strip_suffix(']')) {
                Some(name) if !name.is_empty() => section = name.to_string(),
                _ => errors.push(ParseError {
                    file: "unit file",
                    line: line_no,
                    message: format!("invalid section header `{t}`"),
                }),
            }
            continue;
        }
        let Some((key, value)) = t.split_once('=') else {
            errors.push(ParseError {
                file: "unit file",
                line: line_no,
                message: format!("expected Key=Value, found `{t}`"),
            });
            continue;
        };
        let key = key.trim().to_string();
        let value = value.trim();
        match value.strip_suffix('\\') {
            Some(part) => pending = Some((key, part.trim().to_string(), line_no)),
            None => entries.push(UnitEntry {
                section: section.clone(),
                key,
                value: value.to_string(),
                line: line_no,
            }),
        }
    }
    if let Some((key, value, start)) = pending {
        entries.push(UnitEntry {
            section,
            key,
            value: value.trim().to_string(),
            line: start,
        });
    }
    (entries, errors)
}

/// All values of `key` in `section`, honouring the empty assignment that resets a
/// list (`ExecStart=` then `ExecStart=/new`).
pub fn unit_values<'a>(entries: &'a [UnitEntry], section: &str, key: &str) -> Vec<&'a str> {
    let mut out = Vec::new();
    for e in entries
        .iter()
        .filter(|e| e.section == section && e.key == key)
    {
        if e.value.is_empty() {
            out.clear();
        } else {
            out.push(e.value.as_str());
        }
    }
    out
}

/// The last value of a single-valued setting.
pub fn unit_value<'a>(entries: &'a [UnitEntry], section: &str, key: &str) -> Option<&'a str> {
    unit_values(entries, section, key).last().copied()
}

/// The executable of an `Exec*=` value: prefixes (`-@:+!`) removed, first word.
pub fn exec_program(value: &str) -> Option<&str> {
    let v = value.trim_start_matches(['-', '@', ':', '+', '!']);
    v.split_whitespace().next().filter(|p| !p.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHOW_SERVICE: &str =
        include_str!("../../../tests/fixtures/systemd/show-service-running.txt");
    const SHOW_TIMER: &str = include_str!("../../../tests/fixtures/systemd/show-timer-waiting.txt");
    const SHOW_FAILED: &str =
        include_str!("../../../tests/fixtures/systemd/show-service-failed.txt");
    const SHOW_STALE: &str =
        include_str!("../../../tests/fixtures/systemd/show-service-need-reload.txt");
    const SHOW_MISSING: &str =
        include_str!("../../../tests/fixtures/systemd/show-service-not-found.txt");
    const SECURITY_JSON: &str = include_str!("../../../tests/fixtures/systemd/security-short.json");
    const SECURITY_TEXT: &str = include_str!("../../../tests/fixtures/systemd/security.txt");
    const VERIFY_STDERR: &str = include_str!("../../../tests/fixtures/systemd/verify-typo.stderr");

    #[test]
    fn show_running_service() -> Result<(), ParseError> {
        let u = parse_show_one(SHOW_SERVICE)?;
        assert_eq!(u.id(), "rc-demo.service");
        assert_eq!(u.load_state(), "loaded");
        assert_eq!(u.active_state(), ActiveState::Active);
        assert!(u.active_state().is_running());
        assert_eq!(u.sub_state(), "running");
        assert_eq!(u.state_text(), "active (running)");
        assert_eq!(u.unit_file_state(), "enabled");
        assert!(!u.need_daemon_reload());
        assert!(u.exec_main_start_monotonic().is_some_and(|t| t > 0));
        assert!(u.invocation_id().is_some_and(|i| i.len() == 32));
        assert_eq!(u.service_type(), Some("simple"));
        Ok(())
    }

    #[test]
    fn show_timer() -> Result<(), ParseError> {
        let u = parse_show_one(SHOW_TIMER)?;
        assert_eq!(u.active_state(), ActiveState::Active);
        assert_eq!(u.sub_state(), "waiting");
        assert!(
            u.next_elapse_realtime()
                .is_some_and(|n| n.starts_with("Sun ")),
            "{u:?}"
        );
        Ok(())
    }

    #[test]
    fn show_failed_and_stale_and_missing() -> Result<(), ParseError> {
        let failed = parse_show_one(SHOW_FAILED)?;
        assert_eq!(failed.active_state(), ActiveState::Failed);
        assert!(!failed.active_state().is_running());
        assert_eq!(failed.result(), Some("exit-code"));
        let stale = parse_show_one(SHOW_STALE)?;
        assert!(stale.need_daemon_reload());
        let missing = parse_show_one(SHOW_MISSING)?;
        assert_eq!(missing.load_state(), "not-found");
        assert_eq!(missing.active_state(), ActiveState::Inactive);
        assert_eq!(missing.unit_file_state(), "");
        Ok(())
    }

    #[test]
    fn show_several_and_garbage() {
        let two = format!("{SHOW_SERVICE}\n{SHOW_TIMER}");
        assert_eq!(parse_show(&two).map(|v| v.len()), Ok(2));
        assert!(parse_show_one(&two).is_err());
        let bad = parse_show("Id=a.service\nnot a property\n");
        assert!(matches!(bad, Err(ParseError { line: 2, .. })), "{bad:?}");
        // Values keep their own `=`.
        let env = parse_show_one("Environment=A=1 B=2\n");
        assert_eq!(
            env.ok()
                .and_then(|u| u.get("Environment").map(String::from))
                .as_deref(),
            Some("A=1 B=2")
        );
    }

    #[test]
    fn is_enabled_output() {
        assert_eq!(parse_is_enabled("enabled\n").as_deref(), Some("enabled"));
        assert_eq!(parse_is_enabled("\n"), None);
        assert_eq!(parse_is_enabled(""), None);
    }

    #[test]
    fn security_json_items() -> Result<(), ParseError> {
        let items = parse_security_json(SECURITY_JSON)?;
        assert!(items.len() > 60, "{}", items.len());
        let nnp = items.iter().find(|i| i.json_field == "NoNewPrivileges");
        assert!(
            nnp.is_some_and(|i| i.set == Some(true) && i.exposure.is_none()),
            "{nnp:?}"
        );
        // Settings that do not apply print `"set":null` (a service running as root).
        let na = parse_security_json(
            r#"[{"set":null,"name":"SupplementaryGroups=","json_field":"SupplementaryGroups","description":"Service runs as root, option does not matter","exposure":null}]"#,
        )?;
        assert_eq!(na[0].set, None);
        let top = top_exposures(&items, 3);
        assert_eq!(top.len(), 3);
        assert!(top[0].1 >= top[1].1 && top[1].1 >= top[2].1);
        assert!(parse_security_json("not json").is_err());
        Ok(())
    }

    #[test]
    fn security_overall_line() {
        let e = parse_security_overall(SECURITY_TEXT);
        let e = e.unwrap_or_else(|| panic!("no overall line in fixture"));
        assert_eq!(e.unit, "rc-hardened.service");
        assert!((0.0..=10.0).contains(&e.score));
        assert!(!e.rating.is_empty());
        assert_eq!(
            parse_security_overall("→ Overall exposure level for a.service: 9.2 UNSAFE 😨\n"),
            Some(Exposure {
                unit: "a.service".into(),
                score: 9.2,
                rating: "UNSAFE".into()
            })
        );
        assert_eq!(parse_security_overall("nothing here"), None);
    }

    #[test]
    fn verify_messages() {
        let msgs = parse_verify(VERIFY_STDERR);
        assert!(msgs.iter().any(|m| matches!(m,
            VerifyMessage::File { path, line: 7, message }
                if path.ends_with("/etc/systemd/system/rc-typo.service") && message.contains("Unknown key 'Typo'"))),
            "{msgs:?}");
        assert!(msgs.iter().any(|m| matches!(m,
            VerifyMessage::Unit { unit, message } if unit == "rc-typo.service" && message.starts_with("Command "))),
            "{msgs:?}");
        let other =
            parse_verify("Unit x.timer has a bad unit file setting.\n/a:b/c.service:3: Bad\n");
        assert_eq!(
            other[0],
            VerifyMessage::Other("Unit x.timer has a bad unit file setting.".into())
        );
        assert_eq!(
            other[1],
            VerifyMessage::File {
                path: "/a:b/c.service".into(),
                line: 3,
                message: "Bad".into()
            }
        );
    }

    #[test]
    fn unit_names() {
        assert!(is_unit_name("a.service"));
        assert!(is_unit_name("getty@tty1.service"));
        assert!(!is_unit_name("a.conf"));
        assert!(!is_unit_name(".service"));
        assert!(!is_unit_name("Failed to create x"));
    }

    #[test]
    fn unit_file_syntax() {
        let text = "# c\n[Unit]\nDescription=x \nRequires=a.service\n\n[Service]\nExecStart=/bin/echo a \\\n  b\nExecStart=\nExecStart=-/bin/true x\n; c\nbogus line\n[Install]\nWantedBy=multi-user.target\n";
        let (entries, errors) = parse_unit_file(text);
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].line, 12);
        assert_eq!(unit_value(&entries, "Unit", "Description"), Some("x"));
        assert_eq!(
            unit_values(&entries, "Service", "ExecStart"),
            vec!["-/bin/true x"]
        );
        let first = entries.iter().find(|e| e.key == "ExecStart");
        assert_eq!(
            first.map(|e| (e.value.as_str(), e.line)),
            Some(("/bin/echo a b", 7))
        );
        assert_eq!(
            unit_value(&entries, "Install", "WantedBy"),
            Some("multi-user.target")
        );
        assert_eq!(exec_program("-/bin/true x"), Some("/bin/true"));
        assert_eq!(exec_program("!!/usr/bin/id"), Some("/usr/bin/id"));
    }
}
