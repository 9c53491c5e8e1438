//! `/etc/passwd` and `/etc/group` (passwd(5), group(5)).
//! Comment lines, blank lines and NIS compat lines (`+`, `-`) carry no local account
//! and are skipped; a malformed line is an error naming its line.

use super::ParseError;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PasswdEntry {
    pub name: String,
    pub password: String,
    pub uid: u32,
    pub gid: u32,
    pub gecos: String,
    pub home: String,
    pub shell: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupEntry {
    pub name: String,
    pub password: String,
    pub gid: u32,
    pub members: Vec<String>,
}

fn account_lines(text: &str) -> impl Iterator<Item = (usize, &str)> {
    text.lines().enumerate().filter_map(|(i, l)| {
        let t = l.trim_end_matches('\r');
        let skip =
            t.trim().is_empty() || t.starts_with('#') || t.starts_with('+') || t.starts_with('-');
        (!skip).then_some((i + 1, t))
    })
}

fn number(file: &'static str, line: usize, what: &str, s: &str) -> Result<u32, ParseError> {
    s.parse().map_err(|_| ParseError {
        file,
        line,
        message: format!("{what} `{s}` is not a number"),
    })
}

pub fn parse_passwd(text: &str) -> Result<Vec<PasswdEntry>, ParseError> {
    account_lines(text)
        .map(|(line, l)| {
            let f: Vec<&str> = l.split(':').collect();
            if f.len() != 7 {
                return Err(ParseError {
                    file: "passwd",
                    line,
                    message: format!("expected 7 fields, found {}", f.len()),
                });
            }
            Ok(PasswdEntry {
                name: f[0].to_string(),
                password: f[1].to_string(),
                uid: number("passwd", line, "uid", f[2])?,
                gid: number("passwd", line, "gid", f[3])?,
                gecos: f[4].to_string(),
                home: f[5].to_string(),
                shell: f[6].to_string(),
            })
        })
        .collect()
}

pub fn parse_group(text: &str) -> Result<Vec<GroupEntry>, ParseError> {
    account_lines(text)
        .map(|(line, l)| {
            let f: Vec<&str> = l.split(':').collect();
            if f.len() != 4 {
                return Err(ParseError {
                    file: "group",
                    line,
                    message: format!("expected 4 fields, found {}", f.len()),
                });
            }
            Ok(GroupEntry {
                name: f[0].to_string(),
                password: f[1].to_string(),
                gid: number("group", line, "gid", f[2])?,
                members: split_list(f[3]),
            })
        })
        .collect()
}

pub(crate) fn split_list(s: &str) -> Vec<String> {
    s.split(',')
        .map(str::trim)
        .filter(|m| !m.is_empty())
        .map(String::from)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwd_fixture() {
        let text = include_str!("../../../tests/fixtures/parse/passwd");
        let entries = parse_passwd(text).unwrap_or_default();
        assert!(entries.iter().any(|e| e.name == "root" && e.uid == 0));
        let svc = entries.iter().find(|e| e.name == "intelluxe-service");
        assert_eq!(
            svc.map(|e| (e.uid, e.gid, e.shell.as_str())),
            Some((2000, 2001, "/bin/false"))
        );
        assert!(entries.iter().all(|e| !e.name.starts_with('+')));
    }

    #[test]
    fn group_fixture() {
        let text = include_str!("../../../tests/fixtures/parse/group");
        let groups = parse_group(text).unwrap_or_default();
        let sudo = groups.iter().find(|g| g.name == "sudo");
        assert_eq!(
            sudo.map(|g| g.members.clone()),
            Some(vec!["justin".to_string()])
        );
        let prod = groups.iter().find(|g| g.name == "intelluxe-prod");
        assert_eq!(
            prod.map(|g| (g.gid, g.members.is_empty())),
            Some((2001, true))
        );
    }

    #[test]
    fn malformed_line_names_its_line() {
        let err = parse_passwd("root:x:0:0:root:/root:/bin/bash\nbroken:x:1\n");
        assert_eq!(err.map_err(|e| e.line), Err(2));
        let err = parse_group("g:x:abc:\n");
        assert!(matches!(err, Err(ParseError { line: 1, .. })));
    }
}
