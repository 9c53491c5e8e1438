//! dpkg's status database (`/var/lib/dpkg/status`), its per-package file lists
//! (`/var/lib/dpkg/info/NAME.list`) and Debian version ordering.
//!
//! Only the fields the package kind decides on are kept (name, architecture, the
//! three words of `Status:`, version): the file is several megabytes on a real host
//! and a no-op check reads nothing else, so parsing must cost little more than
//! reading it.

use std::cmp::Ordering;
use std::collections::HashMap;

use super::ParseError;

/// The first word of `Status:`: what the administrator asked of the package.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Want {
    Unknown,
    Install,
    /// `apt-mark hold`: apt leaves the package's version alone.
    Hold,
    Deinstall,
    Purge,
}

/// The third word of `Status:`: where the package is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PkgState {
    NotInstalled,
    /// Removed; its configuration files remain (purging deletes them).
    ConfigFiles,
    /// An unpack or a removal was interrupted (or a maintainer script failed).
    HalfInstalled,
    Unpacked,
    /// Its postinst failed or was interrupted: `dpkg --configure -a` finishes it.
    HalfConfigured,
    TriggersAwaited,
    TriggersPending,
    Installed,
}

impl PkgState {
    pub fn word(self) -> &'static str {
        match self {
            PkgState::NotInstalled => "not-installed",
            PkgState::ConfigFiles => "config-files",
            PkgState::HalfInstalled => "half-installed",
            PkgState::Unpacked => "unpacked",
            PkgState::HalfConfigured => "half-configured",
            PkgState::TriggersAwaited => "triggers-awaited",
            PkgState::TriggersPending => "triggers-pending",
            PkgState::Installed => "installed",
        }
    }

    /// Files of the package are on disk (fully or partly).
    pub fn has_files(self) -> bool {
        !matches!(self, PkgState::NotInstalled | PkgState::ConfigFiles)
    }

    /// An earlier dpkg run stopped half-way through this package.
    pub fn interrupted(self) -> bool {
        matches!(
            self,
            PkgState::HalfInstalled
                | PkgState::Unpacked
                | PkgState::HalfConfigured
                | PkgState::TriggersAwaited
                | PkgState::TriggersPending
        )
    }
}

/// One package's stanza, as far as the package kind cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub name: String,
    pub arch: String,
    pub want: Want,
    /// The second word is `reinstreq` (the package must be reinstalled).
    pub reinstreq: bool,
    pub state: PkgState,
    pub version: Option<String>,
}

/// The status database: entries by package name (several for a multi-arch package).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Status {
    pub entries: Vec<Entry>,
    by_name: HashMap<String, Vec<usize>>,
}

impl Status {
    /// The entries of `name` (`name:arch` picks one architecture).
    pub fn get(&self, name: &str) -> Vec<&Entry> {
        let (base, arch) = match name.split_once(':') {
            Some((b, a)) => (b, Some(a)),
            None => (name, None),
        };
        self.by_name
            .get(base)
            .map(|ix| {
                ix.iter()
                    .map(|&i| &self.entries[i])
                    .filter(|e| arch.is_none_or(|a| a == e.arch))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The most installed entry of `name`: one with files on disk before one without.
    pub fn find(&self, name: &str) -> Option<&Entry> {
        let entries = self.get(name);
        entries
            .iter()
            .find(|e| e.state == PkgState::Installed)
            .or_else(|| entries.iter().find(|e| e.state.has_files()))
            .or_else(|| entries.first())
            .copied()
    }

    /// Packages an earlier dpkg run left half-way, with their state.
    pub fn interrupted(&self) -> Vec<&Entry> {
        self.entries
            .iter()
            .filter(|e| e.state.interrupted() || e.reinstreq)
            .collect()
    }
}

/// Parses the whole status file. Stanzas are separated by blank lines; continuation
/// lines (starting with a space) belong to the field before and are skipped.
pub fn parse_status(text: &str) -> Result<Status, ParseError> {
    let mut status = Status::default();
    let mut cur: Option<(usize, Partial)> = None;
    let finish = |status: &mut Status, (line, p): (usize, Partial)| -> Result<(), ParseError> {
        let err = |message: String| ParseError {
            file: "dpkg status",
            line,
            message,
        };
        let name = p
            .name
            .ok_or_else(|| err("a stanza without `Package:`".into()))?;
        let words = p
            .status
            .ok_or_else(|| err(format!("package {name} has no `Status:`")))?;
        let (want, reinstreq, state) = parse_status_words(&words)
            .ok_or_else(|| err(format!("package {name}: unknown status `{words}`")))?;
        let i = status.entries.len();
        status.by_name.entry(name.clone()).or_default().push(i);
        status.entries.push(Entry {
            name,
            arch: p.arch.unwrap_or_default(),
            want,
            reinstreq,
            state,
            version: p.version,
        });
        Ok(())
    };
    for (n, line) in text.lines().enumerate() {
        // Only four fields matter: the others (and continuation lines, which start
        // with a space) are skipped on their first byte or prefix, without splitting.
        let Some(&first) = line.as_bytes().first() else {
            if let Some(c) = cur.take() {
                finish(&mut status, c)?;
            }
            continue;
        };
        if first == b' ' || first == b'\t' {
            continue;
        }
        let field = match first {
            b'P' => line.strip_prefix("Package:").map(|v| (0, v)),
            b'S' => line.strip_prefix("Status:").map(|v| (1, v)),
            b'V' => line.strip_prefix("Version:").map(|v| (2, v)),
            b'A' => line.strip_prefix("Architecture:").map(|v| (3, v)),
            _ => None,
        };
        let (_, p) = cur.get_or_insert_with(|| (n + 1, Partial::default()));
        let Some((k, value)) = field else { continue };
        let value = Some(value.trim().to_string());
        match k {
            0 => p.name = value,
            1 => p.status = value,
            2 => p.version = value,
            _ => p.arch = value,
        }
    }
    if let Some(c) = cur.take() {
        finish(&mut status, c)?;
    }
    Ok(status)
}

#[derive(Default)]
struct Partial {
    name: Option<String>,
    status: Option<String>,
    version: Option<String>,
    arch: Option<String>,
}

fn parse_status_words(s: &str) -> Option<(Want, bool, PkgState)> {
    let mut w = s.split_whitespace();
    let want = match w.next()? {
        "unknown" => Want::Unknown,
        "install" => Want::Install,
        "hold" => Want::Hold,
        "deinstall" => Want::Deinstall,
        "purge" => Want::Purge,
        _ => return None,
    };
    let reinstreq = match w.next()? {
        "ok" => false,
        "reinstreq" => true,
        _ => return None,
    };
    let state = match w.next()? {
        "not-installed" => PkgState::NotInstalled,
        "config-files" => PkgState::ConfigFiles,
        "half-installed" => PkgState::HalfInstalled,
        "unpacked" => PkgState::Unpacked,
        "half-configured" => PkgState::HalfConfigured,
        "triggers-awaited" => PkgState::TriggersAwaited,
        "triggers-pending" => PkgState::TriggersPending,
        "installed" => PkgState::Installed,
        _ => return None,
    };
    w.next().is_none().then_some((want, reinstreq, state))
}

/// A `NAME.list` file: the paths the package put on disk (`/.` is the root itself).
pub fn parse_list(text: &str) -> Vec<&str> {
    text.lines()
        .map(str::trim_end)
        .filter(|l| l.starts_with('/') && *l != "/.")
        .collect()
}

/// The entries of a `.list` that nothing else listed is below: its regular files,
/// symlinks (and empty directories, which a list does not tell apart). A listed
/// path with another below it is a directory, and directories (`/etc`,
/// `/usr/share/doc`) are shared by many packages.
pub fn list_leaves<'a>(paths: &[&'a str]) -> Vec<&'a str> {
    let mut parents = std::collections::HashSet::new();
    for p in paths {
        let mut at = *p;
        while let Some(i) = at.rfind('/') {
            at = &at[..i];
            if at.is_empty() || !parents.insert(at) {
                break;
            }
        }
    }
    paths
        .iter()
        .copied()
        .filter(|p| !parents.contains(p))
        .collect()
}

/// One member of a package file, from `dpkg-deb -c`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DebMember {
    /// The absolute path it is installed at (`./etc/x` → `/etc/x`).
    pub path: String,
    pub directory: bool,
}

/// `dpkg-deb -c FILE` (tar's verbose listing): `MODE OWNER/GROUP SIZE DATE TIME
/// PATH`, where a symlink's PATH is followed by ` -> TARGET` and a hard link's by
/// ` link to TARGET`. The root (`./`) is left out.
pub fn parse_deb_contents(text: &str) -> Vec<DebMember> {
    let mut out = Vec::new();
    for line in text.lines() {
        let Some(kind) = line.bytes().next() else {
            continue;
        };
        // Skip the five fields before the path; the path itself may hold spaces.
        let mut rest = line;
        let mut ok = true;
        for _ in 0..5 {
            rest = rest.trim_start();
            match rest.find(' ') {
                Some(i) => rest = &rest[i..],
                None => ok = false,
            }
        }
        if !ok {
            continue;
        }
        let mut path = rest.trim_start();
        if kind == b'l' {
            path = path.split_once(" -> ").map_or(path, |(p, _)| p);
        } else if kind == b'h' {
            path = path.split_once(" link to ").map_or(path, |(p, _)| p);
        }
        let Some(rel) = path.strip_prefix("./") else {
            continue;
        };
        let rel = rel.trim_end_matches('/');
        if rel.is_empty() {
            continue;
        }
        out.push(DebMember {
            path: format!("/{rel}"),
            directory: kind == b'd',
        });
    }
    out
}

/// Debian version ordering (deb-version(7)): `[epoch:]upstream[-revision]`, each part
/// compared by alternating non-digit runs (letters before non-letters, `~` before
/// everything, even the end) and numeric runs.
pub fn compare_versions(a: &str, b: &str) -> Ordering {
    let (ea, ua, ra) = split_version(a);
    let (eb, ub, rb) = split_version(b);
    ea.cmp(&eb)
        .then_with(|| compare_part(ua, ub))
        .then_with(|| compare_part(ra, rb))
}

fn split_version(v: &str) -> (u64, &str, &str) {
    let (epoch, rest) = match v.split_once(':') {
        Some((e, r)) if !e.is_empty() && e.bytes().all(|b| b.is_ascii_digit()) => {
            (e.parse().unwrap_or(u64::MAX), r)
        }
        _ => (0, v),
    };
    match rest.rsplit_once('-') {
        Some((u, r)) => (epoch, u, r),
        None => (epoch, rest, ""),
    }
}

fn order(c: Option<u8>) -> i32 {
    match c {
        None => 0,
        Some(b'~') => -1,
        Some(c) if c.is_ascii_alphabetic() => i32::from(c),
        Some(c) => i32::from(c) + 256,
    }
}

fn compare_part(a: &str, b: &str) -> Ordering {
    let (mut a, mut b) = (a.as_bytes(), b.as_bytes());
    while !a.is_empty() || !b.is_empty() {
        // Non-digit prefix.
        loop {
            let ca = a.first().copied().filter(|c| !c.is_ascii_digit());
            let cb = b.first().copied().filter(|c| !c.is_ascii_digit());
            if ca.is_none() && cb.is_none() {
                break;
            }
            let (oa, ob) = (order(ca), order(cb));
            if oa != ob {
                return oa.cmp(&ob);
            }
            if ca.is_some() {
                a = &a[1..];
            }
            if cb.is_some() {
                b = &b[1..];
            }
        }
        // Numeric run, compared as numbers (leading zeros ignored).
        let na = a.iter().take_while(|c| c.is_ascii_digit()).count();
        let nb = b.iter().take_while(|c| c.is_ascii_digit()).count();
        let da = trim_zeros(&a[..na]);
        let db = trim_zeros(&b[..nb]);
        let c = da.len().cmp(&db.len()).then_with(|| da.cmp(db));
        if c != Ordering::Equal {
            return c;
        }
        a = &a[na..];
        b = &b[nb..];
    }
    Ordering::Equal
}

fn trim_zeros(d: &[u8]) -> &[u8] {
    let z = d.iter().take_while(|&&c| c == b'0').count();
    &d[z..]
}

/// Whether `version` matches `pattern`: exactly, or as a glob where `*` is any run
/// and `?` any one character (`3.0.*`).
pub fn version_matches(pattern: &str, version: &str) -> bool {
    if !is_glob(pattern) {
        return pattern == version;
    }
    glob(pattern.as_bytes(), version.as_bytes())
}

pub fn is_glob(pattern: &str) -> bool {
    pattern.contains(['*', '?'])
}

fn glob(p: &[u8], s: &[u8]) -> bool {
    // Iterative matcher with one backtrack point (the last `*`).
    let (mut pi, mut si) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while si < s.len() {
        match p.get(pi) {
            Some(b'*') => {
                star = Some((pi, si));
                pi += 1;
            }
            Some(&c) if c == b'?' || c == s[si] => {
                pi += 1;
                si += 1;
            }
            _ => match star {
                Some((sp, ss)) => {
                    pi = sp + 1;
                    si = ss + 1;
                    star = Some((sp, ss + 1));
                }
                None => return false,
            },
        }
    }
    p[pi..].iter().all(|&c| c == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> String {
        let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/parse/apt")
            .join(name);
        std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
    }

    #[test]
    fn a_recorded_package_listing_gives_files_symlinks_and_hard_links_apart_from_directories() {
        let got = parse_deb_contents(&fixture("deb-contents.txt"));
        let show: Vec<(&str, bool)> = got.iter().map(|m| (m.path.as_str(), m.directory)).collect();
        assert_eq!(
            show,
            vec![
                ("/etc", true),
                ("/etc/demo-a", true),
                ("/etc/demo-a/demo-a.conf", false),
                ("/etc/demo-a/hard.conf", false),
                ("/usr", true),
                ("/usr/bin", true),
                ("/usr/bin/we ird", false),
            ]
        );
    }

    #[test]
    fn a_list_s_leaves_are_what_nothing_else_listed_is_below() {
        let list = fixture("demo-d.list");
        let paths = parse_list(&list);
        assert_eq!(
            list_leaves(&paths),
            vec!["/etc/demo-d/demo-d.conf", "/usr/share/demo-d/VERSION"]
        );
        assert_eq!(list_leaves(&["/a", "/a/b", "/ab"]), vec!["/a/b", "/ab"]);
    }

    #[test]
    fn a_recorded_status_file_gives_every_package_and_its_state() {
        let s = parse_status(&fixture("status")).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(s.entries.len(), 149);
        let one = |n: &str| s.find(n).unwrap_or_else(|| panic!("{n} missing"));
        let d = one("demo-d");
        assert_eq!(
            (d.want, d.state, d.version.as_deref()),
            (Want::Hold, PkgState::Installed, Some("1.0"))
        );
        let c = one("demo-c");
        assert_eq!((c.want, c.state), (Want::Deinstall, PkgState::ConfigFiles));
        assert_eq!(one("demo-a").state, PkgState::HalfInstalled);
        assert_eq!(one("demo-broken").state, PkgState::HalfConfigured);
        assert_eq!(one("bash").version.as_deref(), Some("5.2.15-2+b13"));
        assert_eq!(one("bash").arch, "amd64");
        assert!(s.find("no-such-package").is_none());
        let broken: Vec<&str> = s.interrupted().iter().map(|e| e.name.as_str()).collect();
        assert_eq!(broken, vec!["demo-a", "demo-broken"]);
        assert_eq!(s.get("bash:amd64").len(), 1);
        assert_eq!(s.get("bash:i386").len(), 0);
    }

    #[test]
    fn whitespace_only_lines_inside_a_stanza_do_not_end_it() {
        let s = parse_status(
            "Package: a\nStatus: install ok installed\nDescription: x\n  \n .\nVersion: 1\n",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(s.entries.len(), 1);
        assert_eq!(s.entries[0].version.as_deref(), Some("1"));
    }

    #[test]
    fn a_stanza_without_status_or_with_an_unknown_word_is_an_error_naming_the_line() {
        let e = parse_status("Package: a\nVersion: 1\n\nPackage: b\nStatus: install ok weird\n")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains("line 1") && e.contains("no `Status:`"), "{e}");
        let e = parse_status("Package: b\nStatus: install ok weird\n")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains("unknown status"), "{e}");
    }

    #[test]
    fn a_recorded_file_list_names_the_paths_below_the_root() {
        let text = fixture("demo-d.list");
        let paths = parse_list(&text);
        assert!(paths.contains(&"/etc/demo-d/demo-d.conf"), "{paths:?}");
        assert!(!paths.contains(&"/."));
    }

    #[test]
    fn versions_order_as_dpkg_orders_them() {
        use Ordering::*;
        let cases = [
            ("1.0", "1.1", Less),
            ("1.1", "1.0", Greater),
            ("1.0", "1.0", Equal),
            ("1:1.0", "2.0", Greater),
            ("1.0~rc1", "1.0", Less),
            ("1.0", "1.0+b1", Less),
            ("3.0.15-1", "3.0.17-1", Less),
            ("3.0.9-1", "3.0.10-1", Less),
            ("1.0-1", "1.0-1~bpo1", Greater),
            ("1.01", "1.1", Equal),
            ("2.38.1-5+deb12u3", "2.38.1-5+deb12u2", Greater),
            ("1.0a", "1.0", Greater),
            ("1.0a", "1.0+", Less),
        ];
        for (a, b, want) in cases {
            assert_eq!(compare_versions(a, b), want, "{a} vs {b}");
        }
    }

    #[test]
    fn a_version_pattern_is_exact_or_a_glob() {
        assert!(version_matches("1:3.0.9-1", "1:3.0.9-1"));
        assert!(!version_matches("3.0.9", "3.0.9-1"));
        assert!(version_matches("3.0.*", "3.0.17-1"));
        assert!(!version_matches("3.0.*", "3.1.0-1"));
        assert!(version_matches("1.?", "1.1"));
        assert!(version_matches("*", "anything"));
    }
}
