//! `/etc/shadow` (shadow(5)), `/etc/gshadow` (gshadow(5)) and `/etc/login.defs`
//! (login.defs(5)).
//!
//! Like the passwd parser: comment lines, blank lines and NIS compat lines (`+`, `-`)
//! carry no local account and are skipped; a malformed line is an error naming its
//! line. Password fields are kept verbatim (they are compared, never shown).

use std::collections::HashMap;

use super::passwd::split_list;
use super::ParseError;

#[derive(Clone, PartialEq, Eq)]
pub struct ShadowEntry {
    pub name: String,
    /// The encrypted password field as written (`!`, `*`, `!$6$...`, `$y$...`).
    pub password: String,
    /// Days since 1970-01-01 of the last change; `None` when the field is empty.
    pub last_change: Option<i64>,
    pub min_age: Option<i64>,
    pub max_age: Option<i64>,
    pub warn_period: Option<i64>,
    pub inactive: Option<i64>,
    pub expire: Option<i64>,
}

// Hand-written so a hash never reaches a log line through `{:?}`.
impl std::fmt::Debug for ShadowEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShadowEntry")
            .field("name", &self.name)
            .field("password", &"(sensitive)")
            .field("locked", &self.locked())
            .field("last_change", &self.last_change)
            .finish_non_exhaustive()
    }
}

impl ShadowEntry {
    /// `usermod -L` prepends `!`; `!` or `!*` alone also mean no password login.
    pub fn locked(&self) -> bool {
        self.password.starts_with('!')
    }
}

#[derive(Clone, PartialEq, Eq)]
pub struct GshadowEntry {
    pub name: String,
    pub password: String,
    pub admins: Vec<String>,
    pub members: Vec<String>,
}

impl std::fmt::Debug for GshadowEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GshadowEntry")
            .field("name", &self.name)
            .field("password", &"(sensitive)")
            .field("admins", &self.admins)
            .field("members", &self.members)
            .finish()
    }
}

fn account_lines(text: &str) -> impl Iterator<Item = (usize, &str)> {
    text.lines().enumerate().filter_map(|(i, l)| {
        let t = l.trim_end_matches('\r');
        let skip =
            t.trim().is_empty() || t.starts_with('#') || t.starts_with('+') || t.starts_with('-');
        (!skip).then_some((i + 1, t))
    })
}

fn optional_number(
    file: &'static str,
    line: usize,
    what: &str,
    s: &str,
) -> Result<Option<i64>, ParseError> {
    if s.trim().is_empty() {
        return Ok(None);
    }
    s.trim().parse().map(Some).map_err(|_| ParseError {
        file,
        line,
        message: format!("{what} `{s}` is not a number"),
    })
}

pub fn parse_shadow(text: &str) -> Result<Vec<ShadowEntry>, ParseError> {
    account_lines(text)
        .map(|(line, l)| {
            let f: Vec<&str> = l.split(':').collect();
            // The ninth field is reserved; some tools drop the empty trailing field.
            if f.len() != 9 && f.len() != 8 {
                return Err(ParseError {
                    file: "shadow",
                    line,
                    message: format!("expected 9 fields, found {}", f.len()),
                });
            }
            let num = |i: usize, what: &str| optional_number("shadow", line, what, f[i]);
            Ok(ShadowEntry {
                name: f[0].to_string(),
                password: f[1].to_string(),
                last_change: num(2, "date of last change")?,
                min_age: num(3, "minimum password age")?,
                max_age: num(4, "maximum password age")?,
                warn_period: num(5, "warning period")?,
                inactive: num(6, "inactivity period")?,
                expire: num(7, "expiration date")?,
            })
        })
        .collect()
}

pub fn parse_gshadow(text: &str) -> Result<Vec<GshadowEntry>, ParseError> {
    account_lines(text)
        .map(|(line, l)| {
            let f: Vec<&str> = l.split(':').collect();
            if f.len() != 4 {
                return Err(ParseError {
                    file: "gshadow",
                    line,
                    message: format!("expected 4 fields, found {}", f.len()),
                });
            }
            Ok(GshadowEntry {
                name: f[0].to_string(),
                password: f[1].to_string(),
                admins: split_list(f[2]),
                members: split_list(f[3]),
            })
        })
        .collect()
}

/// The settings of login.defs that decide account ranges and home creation.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LoginDefs {
    values: HashMap<String, String>,
}

impl LoginDefs {
    pub fn get(&self, key: &str) -> Option<&str> {
        self.values.get(key).map(String::as_str)
    }

    pub fn number(&self, key: &str) -> Option<u32> {
        self.get(key).and_then(parse_c_number)
    }

    /// `[SYS_UID_MIN, SYS_UID_MAX]` with shadow-utils' defaults (101 and UID_MIN-1)
    /// for what the file leaves commented out.
    pub fn sys_uid_range(&self) -> (u32, u32) {
        self.sys_range("SYS_UID_MIN", "SYS_UID_MAX", "UID_MIN")
    }

    pub fn sys_gid_range(&self) -> (u32, u32) {
        self.sys_range("SYS_GID_MIN", "SYS_GID_MAX", "GID_MIN")
    }

    fn sys_range(&self, min: &str, max: &str, regular_min: &str) -> (u32, u32) {
        let regular = self.number(regular_min).unwrap_or(1000);
        let lo = self.number(min).unwrap_or(101);
        let hi = self.number(max).unwrap_or(regular.saturating_sub(1));
        (lo, hi)
    }

    /// The mode `useradd -m` gives a new home: HOME_MODE, else 0777 & ~UMASK.
    pub fn home_mode(&self) -> u32 {
        if let Some(m) = self
            .get("HOME_MODE")
            .and_then(|v| u32::from_str_radix(v, 8).ok())
        {
            return m & 0o7777;
        }
        let umask = self
            .get("UMASK")
            .and_then(|v| u32::from_str_radix(v, 8).ok())
            .unwrap_or(0o022);
        0o777 & !umask
    }
}

/// login.defs numbers are read with strtol(base 0): `0x` hex, leading-zero octal.
fn parse_c_number(v: &str) -> Option<u32> {
    let v = v.trim();
    if let Some(hex) = v.strip_prefix("0x").or_else(|| v.strip_prefix("0X")) {
        return u32::from_str_radix(hex, 16).ok();
    }
    if v.len() > 1 && v.starts_with('0') {
        return u32::from_str_radix(&v[1..], 8).ok();
    }
    v.parse().ok()
}

/// `KEY value` lines; `#` starts a comment line. Never fails: unknown lines are
/// ignored as the shadow tools ignore them.
pub fn parse_login_defs(text: &str) -> LoginDefs {
    let mut values = HashMap::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut parts = line.split_whitespace();
        let (Some(key), Some(value)) = (parts.next(), parts.next()) else {
            continue;
        };
        let value = value.trim_matches('"');
        values.insert(key.to_string(), value.to_string());
    }
    LoginDefs { values }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shadow_fixture() {
        let text = include_str!("../../../tests/fixtures/parse/shadow");
        let entries = parse_shadow(text).unwrap_or_else(|e| panic!("{e}"));
        assert!(entries
            .iter()
            .all(|e| !e.name.starts_with('+') && !e.name.starts_with('-')));
        assert_eq!(entries.len(), 10);
        let root = entries.iter().find(|e| e.name == "root");
        assert_eq!(
            root.map(|e| (e.password.as_str(), e.last_change, e.max_age)),
            Some(("*", Some(19850), Some(99999)))
        );
        let justin = entries.iter().find(|e| e.name == "justin");
        assert_eq!(
            justin.map(|e| (e.locked(), e.inactive, e.expire)),
            Some((true, Some(30), Some(20500)))
        );
        let svc = entries.iter().find(|e| e.name == "intelluxe-service");
        assert_eq!(
            svc.map(|e| (e.password.as_str(), e.min_age, e.warn_period)),
            Some(("!", None, None))
        );
        let deploy = entries.iter().find(|e| e.name == "deploy");
        assert_eq!(
            deploy.map(|e| (e.locked(), e.password.starts_with("$y$"))),
            Some((false, true))
        );
    }

    #[test]
    fn shadow_debug_hides_the_hash() {
        let entries = parse_shadow("deploy:$6$salt$abcdefghijklmnopqrstuv:20000:0:99999:7:::\n")
            .unwrap_or_default();
        let shown = format!("{entries:?}");
        assert!(shown.contains("deploy"));
        assert!(!shown.contains("abcdefghijklmnop"));
    }

    #[test]
    fn shadow_errors_name_their_line() {
        let err = parse_shadow("root:*:19850:0:99999:7:::\nbroken:x:1\n");
        assert_eq!(err.map_err(|e| e.line), Err(2));
        let err = parse_shadow("# c\nroot:*:soon:0:99999:7:::\n");
        assert!(matches!(
            err,
            Err(ParseError {
                line: 2,
                file: "shadow",
                ..
            })
        ));
        // Eight fields (no trailing reserved field) are accepted.
        assert_eq!(parse_shadow("a:!:1:::::\n").map(|v| v.len()), Ok(1));
    }

    #[test]
    fn gshadow_fixture() {
        let text = include_str!("../../../tests/fixtures/parse/gshadow");
        let groups = parse_gshadow(text).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(groups.len(), 13);
        let ix = groups.iter().find(|g| g.name == "intelluxe");
        assert_eq!(
            ix.map(|g| (g.admins.clone(), g.members.clone())),
            Some((
                vec!["justin".to_string()],
                vec!["justin".to_string(), "intelluxe-service".to_string()]
            ))
        );
        let prod = groups.iter().find(|g| g.name == "intelluxe-prod");
        assert_eq!(prod.map(|g| g.members.is_empty()), Some(true));
        assert!(parse_gshadow("g:!:\n").is_err());
    }

    #[test]
    fn login_defs_fixture() {
        let defs = parse_login_defs(include_str!("../../../tests/fixtures/parse/login.defs"));
        assert_eq!(defs.sys_uid_range(), (100, 999));
        // SYS_GID_* are commented out: shadow-utils' defaults apply.
        assert_eq!(defs.sys_gid_range(), (101, 999));
        assert_eq!(defs.home_mode(), 0o750);
        assert_eq!(defs.get("USERGROUPS_ENAB"), Some("yes"));
        let empty = parse_login_defs("");
        assert_eq!(empty.sys_uid_range(), (101, 999));
        assert_eq!(empty.home_mode(), 0o755);
        assert_eq!(
            parse_login_defs("UID_MIN 0x3e8\n").number("UID_MIN"),
            Some(1000)
        );
    }
}
