//! apt's output: `apt-cache policy NAMES` (installed and candidate versions, every
//! version the lists offer) and `apt-get -s` (the simulated transaction: the
//! `Inst`/`Remv`/`Purg`/`Conf` lines, and apt's `E:` errors).

use std::collections::HashMap;

/// One package of `apt-cache policy`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Policy {
    pub installed: Option<String>,
    pub candidate: Option<String>,
    /// Every version of the version table, as listed (highest first).
    pub versions: Vec<String>,
    /// The versions offered by a security suite (a source line naming a
    /// `*-security` suite or a `debian-security` archive): what `upgrade`'s
    /// `packages: security` and `only: security` windows install.
    pub security: Vec<String>,
}

/// Parses `apt-cache policy` output for several packages, by name. A package apt
/// does not know is absent from the output (apt says so on stderr, or nothing).
pub fn parse_policy(text: &str) -> HashMap<String, Policy> {
    let mut out = HashMap::new();
    let mut cur: Option<(String, Policy)> = None;
    let none = |v: &str| (v != "(none)").then(|| v.to_string());
    for line in text.lines() {
        if !line.starts_with(' ') {
            if let Some(name) = line.strip_suffix(':').filter(|n| !n.contains(' ')) {
                if let Some((n, p)) = cur.take() {
                    out.insert(n, p);
                }
                cur = Some((name.to_string(), Policy::default()));
            }
            continue;
        }
        let Some((_, p)) = cur.as_mut() else { continue };
        let t = line.trim();
        if let Some(v) = t.strip_prefix("Installed:") {
            p.installed = none(v.trim());
        } else if let Some(v) = t.strip_prefix("Candidate:") {
            p.candidate = none(v.trim());
        } else if t == "Version table:" {
        } else {
            // Version lines are indented five (` *** ` marks the installed one);
            // the sources below each are indented eight.
            let indent = line.len() - line.trim_start().len();
            let t = t.strip_prefix("*** ").unwrap_or(t);
            if indent <= 5 || line.starts_with(" *** ") {
                if let Some(v) = t.split_whitespace().next() {
                    p.versions.push(v.to_string());
                }
            } else if let Some(v) = p.versions.last() {
                // A source line of the version above: `500 URI SUITE/COMPONENT ARCH Packages`.
                let security = t.split_whitespace().any(|w| {
                    w.split('/')
                        .next()
                        .is_some_and(|s| s.ends_with("-security"))
                        || w.contains("debian-security")
                });
                if security && !p.security.contains(v) {
                    let v = v.clone();
                    p.security.push(v);
                }
            }
        }
    }
    if let Some((n, p)) = cur.take() {
        out.insert(n, p);
    }
    out
}

/// One package file of `apt-get download --print-uris NAMES`: `'URI' FILENAME SIZE
/// HASH`, FILENAME being `NAME_VERSION_ARCH.deb` with the version percent-encoded
/// (as apt names it in /var/cache/apt/archives).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DebUri {
    pub name: String,
    pub uri: String,
    pub filename: String,
}

impl DebUri {
    /// The file a `file:` URI names, percent-decoded; `None` for other schemes.
    pub fn local_path(&self) -> Option<String> {
        let rest = self.uri.strip_prefix("file:")?;
        let rest = rest.strip_prefix("//").unwrap_or(rest);
        percent_decode(rest)
    }
}

fn percent_decode(s: &str) -> Option<String> {
    let mut out = Vec::with_capacity(s.len());
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Parses `apt-get download --print-uris`; lines of any other shape are skipped.
pub fn parse_print_uris(text: &str) -> Vec<DebUri> {
    text.lines()
        .filter_map(|line| {
            let rest = line.strip_prefix('\'')?;
            let (uri, rest) = rest.split_once('\'')?;
            let filename = rest.split_whitespace().next()?;
            let name = filename.split_once('_')?.0;
            filename.ends_with(".deb").then(|| DebUri {
                name: name.to_string(),
                uri: uri.to_string(),
                filename: filename.to_string(),
            })
        })
        .collect()
}

/// One line of a simulated transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SimOp {
    /// Unpacked: `from` is the version replaced (an upgrade or downgrade), if any.
    Inst {
        name: String,
        from: Option<String>,
        to: String,
    },
    Remv {
        name: String,
        version: Option<String>,
    },
    Purg {
        name: String,
        version: Option<String>,
    },
    Conf {
        name: String,
        version: String,
    },
}

impl SimOp {
    pub fn name(&self) -> &str {
        match self {
            SimOp::Inst { name, .. }
            | SimOp::Remv { name, .. }
            | SimOp::Purg { name, .. }
            | SimOp::Conf { name, .. } => name,
        }
    }
}

/// The `Inst`/`Remv`/`Purg`/`Conf` lines of `apt-get -s` output:
/// `Inst demo-a [1.0] (1.1 localhost [all])`, `Remv demo-a [1.0]`, `Purg demo-c`.
pub fn parse_simulation(text: &str) -> Vec<SimOp> {
    let mut ops = Vec::new();
    for line in text.lines() {
        let mut w = line.splitn(3, ' ');
        let (Some(verb), Some(name)) = (w.next(), w.next()) else {
            continue;
        };
        let rest = w.next().unwrap_or("");
        let bracket = rest
            .strip_prefix('[')
            .and_then(|r| r.split_once(']'))
            .map(|(v, _)| v.to_string());
        let paren = rest
            .split_once('(')
            .and_then(|(_, r)| r.split_whitespace().next())
            .map(|v| v.trim_end_matches(')').to_string());
        let name = name.to_string();
        let op = match verb {
            "Inst" => match paren {
                Some(to) => SimOp::Inst {
                    name,
                    from: bracket,
                    to,
                },
                None => continue,
            },
            "Conf" => match paren {
                Some(version) => SimOp::Conf { name, version },
                None => continue,
            },
            "Remv" => SimOp::Remv {
                name,
                version: bracket,
            },
            "Purg" => SimOp::Purg {
                name,
                version: bracket,
            },
            _ => continue,
        };
        ops.push(op);
    }
    ops
}

/// apt's error lines (`E: ...`), without the prefix.
pub fn errors(text: &str) -> Vec<&str> {
    text.lines()
        .filter_map(|l| l.strip_prefix("E: "))
        .map(str::trim)
        .collect()
}

/// What an apt error line says about one package the request named.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// `E: Unable to locate package NAME`.
    Unknown(String),
    /// `E: Version 'V' for 'NAME' was not found`.
    NoVersion { name: String, version: String },
}

pub fn refusal(error: &str) -> Option<Refusal> {
    if let Some(name) = error.strip_prefix("Unable to locate package ") {
        return Some(Refusal::Unknown(name.trim().to_string()));
    }
    let rest = error.strip_prefix("Version '")?;
    let (version, rest) = rest.split_once("' for '")?;
    let name = rest.strip_suffix("' was not found")?;
    Some(Refusal::NoVersion {
        name: name.to_string(),
        version: version.to_string(),
    })
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
    fn recorded_print_uris_give_each_package_file_and_where_a_file_source_keeps_it() {
        let uris = parse_print_uris(&fixture("print-uris.txt"));
        assert_eq!(uris.len(), 1);
        assert_eq!(uris[0].name, "demo-a");
        assert_eq!(uris[0].filename, "demo-a_1%3a1.0_all.deb");
        assert_eq!(
            uris[0].local_path().as_deref(),
            Some("/tmp/edgex/repo/./demo-a_1.0_all.deb")
        );
        let http = DebUri {
            name: "x".into(),
            uri: "http://deb.debian.org/x.deb".into(),
            filename: "x_1_all.deb".into(),
        };
        assert_eq!(http.local_path(), None);
    }

    #[test]
    fn recorded_policy_output_gives_installed_candidate_and_every_version() {
        let p = parse_policy(&fixture("policy.txt"));
        let a = &p["demo-a"];
        assert_eq!(a.installed.as_deref(), Some("1.0"));
        assert_eq!(a.candidate.as_deref(), Some("1.1"));
        assert_eq!(a.versions, vec!["1.1", "1.0"]);
        let b = &p["demo-b"];
        assert_eq!(
            (b.installed.as_deref(), b.candidate.as_deref()),
            (None, Some("1.0"))
        );
        assert_eq!(b.versions, vec!["1.0"]);
        assert!(!p.contains_key("no-such-package"));
        assert_eq!(p.len(), 4);
        assert!(parse_policy(&fixture("policy-unknown.txt")).is_empty());
    }

    #[test]
    fn a_recorded_simulation_gives_each_unpack_removal_and_configure() {
        let ops = parse_simulation(&fixture("sim-install.txt"));
        assert_eq!(
            ops,
            vec![
                SimOp::Inst {
                    name: "demo-b".into(),
                    from: None,
                    to: "1.0".into()
                },
                SimOp::Inst {
                    name: "demo-d".into(),
                    from: Some("1.0".into()),
                    to: "1.1".into()
                },
                SimOp::Conf {
                    name: "demo-b".into(),
                    version: "1.0".into()
                },
                SimOp::Conf {
                    name: "demo-d".into(),
                    version: "1.1".into()
                },
                SimOp::Conf {
                    name: "demo-broken".into(),
                    version: "1.0".into()
                },
            ]
        );
        let ops = parse_simulation(&fixture("sim-purge-mixed.txt"));
        assert!(ops.contains(&SimOp::Remv {
            name: "demo-a".into(),
            version: Some("1.0".into())
        }));
        assert!(ops.contains(&SimOp::Purg {
            name: "demo-c".into(),
            version: None
        }));
        assert!(parse_simulation(&fixture("sim-interrupted.txt"))
            .iter()
            .any(|o| o.name() == "demo-broken"));
    }

    #[test]
    fn recorded_refusals_name_the_unknown_package_and_the_missing_version() {
        let e = fixture("sim-unknown.txt");
        let errs = errors(&e);
        assert_eq!(
            errs.iter().filter_map(|l| refusal(l)).collect::<Vec<_>>(),
            vec![Refusal::Unknown("no-such-package".into())]
        );
        let e = fixture("sim-bad-version.txt");
        assert_eq!(
            errors(&e)
                .iter()
                .filter_map(|l| refusal(l))
                .collect::<Vec<_>>(),
            vec![Refusal::NoVersion {
                name: "demo-a".into(),
                version: "9.9".into()
            }]
        );
        assert_eq!(refusal("Some index files failed to download"), None);
    }
}

/// One entry of a legacy one-line sources file (`deb [opts] URI SUITE [COMPONENT...]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OneLine {
    pub line: usize,
    pub kind: String,
    pub uri: String,
    pub suite: String,
    pub components: Vec<String>,
}

/// The entries of a `sources.list`-style file; comments and blank lines skipped.
pub fn parse_one_line_sources(text: &str) -> Vec<OneLine> {
    let mut out = Vec::new();
    for (n, raw) in text.lines().enumerate() {
        let line = raw.split('#').next().unwrap_or("").trim();
        let mut words = line.split_whitespace().peekable();
        let Some(kind) = words.next().filter(|k| *k == "deb" || *k == "deb-src") else {
            continue;
        };
        // Options: `[a=b c=d]`, possibly spread over several words.
        if words.peek().is_some_and(|w| w.starts_with('[')) {
            for w in words.by_ref() {
                if w.ends_with(']') {
                    break;
                }
            }
        }
        let (Some(uri), Some(suite)) = (words.next(), words.next()) else {
            continue;
        };
        out.push(OneLine {
            line: n + 1,
            kind: kind.to_string(),
            uri: uri.to_string(),
            suite: suite.to_string(),
            components: words.map(str::to_string).collect(),
        });
    }
    out
}

#[cfg(test)]
mod one_line_tests {
    use super::*;

    #[test]
    fn one_line_sources_give_uri_suite_and_components_past_options_and_comments() {
        let text = "# comment\ndeb [trusted=yes arch=amd64] file:/srv/repo ./\n\ndeb http://deb.debian.org/debian bookworm main contrib # x\ndeb-src http://x y\nnot a line\n";
        let got = parse_one_line_sources(text);
        assert_eq!(got.len(), 3);
        assert_eq!(
            (got[0].line, got[0].uri.as_str(), got[0].suite.as_str()),
            (2, "file:/srv/repo", "./")
        );
        assert_eq!(got[1].components, vec!["main", "contrib"]);
        assert_eq!(got[2].kind, "deb-src");
    }
}
