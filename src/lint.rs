//! Lints: declarations that load and apply but do not do what their writer meant
//! (the runbooks' pitfalls). Run on the catalog before anything is observed, shown as
//! warnings with the manifest line and a one-line fix; `--strict` makes them errors.
//! Each has a stable code (docs/lints.md); `allow: [R0003]` on a resource silences
//! a code for that resource.
//!
//! A lint reads the typed specs of several kinds (a logrotate script that reloads a
//! oneshot unit); unlike kinds, which meet only through provides/needs, the linter is
//! allowed to know them all: it judges combinations and changes nothing.

use crate::diag::{Diagnostic, Span};
use crate::host::parse::systemctl::{unit_value, unit_values, UnitEntry};
use crate::resource::directory::Directory;
use crate::resource::file::{Content, File};
use crate::resource::logrotate::Logrotate;
use crate::resource::systemd_keys::keys;
use crate::resource::unit::{OnNotify, Unit};
use crate::resource::{Catalog, Ensure, Resource};

/// A lint: its code, a short name, and what it is about (docs/lints.md says more).
pub struct Lint {
    pub code: &'static str,
    pub name: &'static str,
    pub summary: &'static str,
}

pub const LINTS: &[Lint] = &[
    Lint {
        code: "R0001",
        name: "timer-requires-service",
        summary: "a timer that Requires= (or Wants=, BindsTo=...) the unit it triggers",
    },
    Lint {
        code: "R0002",
        name: "unit-key-wrong-section",
        summary: "a unit setting in a section it does not belong to",
    },
    Lint {
        code: "R0003",
        name: "reload-oneshot",
        summary: "a oneshot service that something reloads",
    },
    Lint {
        code: "R0004",
        name: "logrotate-inline-comment",
        summary: "a logrotate directive with a comment after its value",
    },
    Lint {
        code: "R0005",
        name: "plain-typed-config",
        summary: "a plain `file` in /etc/logrotate.d or /etc/audit/rules.d",
    },
    Lint {
        code: "R0006",
        name: "world-writable",
        summary: "a managed mode that lets every user write",
    },
    Lint {
        code: "R0007",
        name: "secret-readable",
        summary: "a secret file readable by its group or by others",
    },
];

/// Whether `code` is a lint's code.
pub fn known(code: &str) -> bool {
    LINTS.iter().any(|l| l.code == code)
}

struct Out<'a> {
    found: Vec<Diagnostic>,
    resource: &'a dyn Resource,
}

impl Out<'_> {
    fn fire(&mut self, code: &str, at: Option<Span>, message: String, fix: &str) {
        if self.resource.meta().allow.iter().any(|(c, _)| c == code) {
            return;
        }
        let at = at.or_else(|| self.resource.meta().span.clone());
        self.found.push(Diagnostic::warning(
            at,
            format!(
                "{code}: {}: {message}; fix: {fix} (or `allow: [{code}]` on the resource)",
                self.resource.id()
            ),
        ));
    }
}

/// Every lint over every declared resource, as warnings, in declaration order.
pub fn run(catalog: &Catalog) -> Vec<Diagnostic> {
    let mut found = Vec::new();
    for r in &catalog.resources {
        let mut out = Out {
            found: Vec::new(),
            resource: r.as_ref(),
        };
        let any = r.as_any();
        if let Some(u) = any.downcast_ref::<Unit>() {
            unit_lints(u, catalog, &mut out);
        }
        if let Some(f) = any.downcast_ref::<File>() {
            file_lints(f, &mut out);
        }
        if let Some(d) = any.downcast_ref::<Directory>() {
            let modes = [d.perms.mode, d.file_mode, d.dir_mode];
            for m in modes.into_iter().flatten() {
                world_writable(m, true, &mut out);
            }
        }
        if let Some(l) = any.downcast_ref::<Logrotate>() {
            if let Some(m) = l.policy.create.as_ref().and_then(|c| c.mode) {
                world_writable(m, false, &mut out);
            }
        }
        found.extend(out.found);
    }
    found
}

/// Where line `line` (1-based) of a unit's rendering is declared.
fn unit_line(u: &Unit, line: usize) -> Option<Span> {
    let c = u.content.as_ref()?;
    c.origins
        .get(line.checked_sub(1)?)
        .cloned()
        .flatten()
        .or_else(|| Some(c.span.clone()))
}

fn unit_type(u: &Unit) -> &str {
    u.unit.rsplit_once('.').map_or("", |(_, t)| t)
}

fn unit_lints(u: &Unit, catalog: &Catalog, out: &mut Out) {
    let Some(c) = &u.content else {
        return;
    };
    let e: &[UnitEntry] = &c.entries;
    let ty = unit_type(u);
    if ty == "timer" {
        let stem = u.unit.rsplit_once('.').map_or(u.unit.as_str(), |(s, _)| s);
        let triggered = unit_value(e, "Timer", "Unit")
            .map(str::to_string)
            .unwrap_or_else(|| format!("{stem}.service"));
        for key in ["Requires", "Wants", "BindsTo", "Requisite", "Upholds"] {
            for entry in e.iter().filter(|x| x.section == "Unit" && x.key == key) {
                if entry.value.split_whitespace().any(|n| n == triggered) {
                    out.fire(
                        "R0001",
                        unit_line(u, entry.line),
                        format!("{key}={triggered} in a timer starts {triggered} at once whenever the timer starts (enable --now, boot), outside its schedule"),
                        &format!("remove {key}={triggered}: a timer needs nothing on the unit it triggers"),
                    );
                }
            }
        }
    }
    // Sections this unit type has: a key of one of them found in another is ignored
    // by systemd ("Unknown key ... ignoring").
    let own = type_section(ty);
    let sections: Vec<&str> = ["Unit", "Install"].into_iter().chain(own).collect();
    for entry in e {
        let here = keys(&entry.section);
        if here.is_empty() || here.contains(&entry.key.as_str()) {
            continue;
        }
        if let Some(right) = sections
            .iter()
            .find(|s| **s != entry.section && keys(s).contains(&entry.key.as_str()))
        {
            out.fire(
                "R0002",
                unit_line(u, entry.line),
                format!(
                    "{}= (line {} of the unit) is a [{right}] setting under [{}]: systemd ignores it there (the runbook's hardening, appended at the end of the file, lands in the last section)",
                    entry.key, entry.line, entry.section
                ),
                &format!("move {}= into [{right}]", entry.key),
            );
        }
    }
    if ty == "service" && u.dropin.is_none() && unit_value(e, "Service", "Type") == Some("oneshot")
    {
        let mut why = Vec::new();
        if u.on_notify == OnNotify::Reload
            && catalog
                .resources
                .iter()
                .any(|r| r.meta().notify.iter().any(|(id, _)| *id == u.id))
        {
            why.push("it is notified with `on_notify: reload`".to_string());
        }
        for r in &catalog.resources {
            for script in reload_scripts(r.as_ref()) {
                if reloads(&script, &u.unit) {
                    why.push(if r.meta().secret {
                        format!("{} reloads it (its script is secret, not shown)", r.id())
                    } else {
                        format!("{} runs `{}`", r.id(), script.trim())
                    });
                }
            }
        }
        if !why.is_empty() {
            let has_reload = !unit_values(e, "Service", "ExecReload").is_empty();
            out.fire(
                "R0003",
                u.meta.span.clone(),
                format!(
                    "{} is Type=oneshot{} and {}: a oneshot has no running process to reload, so the reload fails (or, hidden by `|| true`, does nothing)",
                    u.unit,
                    if has_reload { " with ExecReload=" } else { " without ExecReload=" },
                    why.join("; ")
                ),
                "do not reload a oneshot: restart the long-running service that reads the files, or nothing",
            );
        }
    }
}

fn type_section(ty: &str) -> Option<&'static str> {
    Some(match ty {
        "service" => "Service",
        "timer" => "Timer",
        "socket" => "Socket",
        "path" => "Path",
        "mount" => "Mount",
        _ => return None,
    })
}

/// Shell text a resource runs when logs rotate: a logrotate policy's scripts, or a
/// plain file's content in /etc/logrotate.d.
fn reload_scripts(r: &dyn Resource) -> Vec<String> {
    if let Some(l) = r.as_any().downcast_ref::<Logrotate>() {
        return l.scripts().into_iter().map(|(s, _)| s).collect();
    }
    if let Some(f) = r.as_any().downcast_ref::<File>() {
        if f.file.path.starts_with("/etc/logrotate.d/") {
            if let Some(Content::Bytes(b)) = &f.file.content {
                return String::from_utf8_lossy(b)
                    .lines()
                    .map(str::to_string)
                    .collect();
            }
        }
    }
    Vec::new()
}

/// Whether `script` runs `systemctl reload` (or `reload-or-*`) on `unit`, also through
/// a glob (`intelluxe-*.service`).
fn reloads(script: &str, unit: &str) -> bool {
    let words: Vec<&str> = script.split_whitespace().collect();
    let Some(i) = words.iter().position(|w| w.ends_with("systemctl")) else {
        return false;
    };
    let rest = &words[i + 1..];
    let Some(verb) = rest.iter().position(|w| !w.starts_with('-')) else {
        return false;
    };
    if !matches!(
        rest[verb],
        "reload" | "try-reload-or-restart" | "reload-or-restart"
    ) {
        return false;
    }
    rest[verb + 1..]
        .iter()
        .take_while(|w| !matches!(**w, ">" | "||" | "&&" | ";" | "|") && !w.starts_with('>'))
        .map(|w| w.trim_matches(['\'', '"']))
        .any(|w| w == unit || glob_matches(w, unit))
}

/// `*` globs, as systemctl matches unit names.
fn glob_matches(pattern: &str, name: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == name,
        Some((head, tail)) => {
            name.starts_with(head)
                && name.len() >= head.len() + tail.len().min(name.len())
                && glob_matches_tail(tail, &name[head.len()..])
        }
    }
}

fn glob_matches_tail(pattern: &str, name: &str) -> bool {
    if !pattern.contains('*') {
        return name.ends_with(pattern);
    }
    (0..=name.len())
        .filter(|&i| name.is_char_boundary(i))
        .any(|i| glob_matches(pattern, &name[i..]))
}

fn file_lints(f: &File, out: &mut Out) {
    let path = f.file.path.as_str();
    if f.ensure == Ensure::Absent {
        return;
    }
    let typed = if path.starts_with("/etc/logrotate.d/") {
        Some("a `logrotate:` resource (typed fields, checked by logrotate -d in every plan)")
    } else if path.starts_with("/etc/audit/rules.d/") {
        Some("an `audit_rule:` resource (typed watches and syscall rules, loaded once per run)")
    } else {
        None
    };
    if let Some(kind) = typed {
        out.fire(
            "R0005",
            None,
            format!("{path} is written as plain content: a mistake in it is found only when the tool reads it, and it skips the block silently"),
            &format!("declare it as {kind}"),
        );
    }
    if path.starts_with("/etc/logrotate.d/") {
        if let Some(Content::Bytes(b)) = &f.file.content {
            let text = String::from_utf8_lossy(b);
            let mut in_script = false;
            for (n, line) in text.lines().enumerate() {
                let t = line.trim();
                if matches!(
                    t,
                    "postrotate" | "prerotate" | "firstaction" | "lastaction" | "preremove"
                ) {
                    in_script = true;
                } else if t == "endscript" {
                    in_script = false;
                } else if !in_script && !t.starts_with('#') && t.contains('#') {
                    // A secret file's content is never quoted, not even one line.
                    let shown = if f.meta.secret {
                        " (not shown: the file is secret)".to_string()
                    } else {
                        format!(", `{t}`")
                    };
                    out.fire(
                        "R0004",
                        None,
                        format!("line {} of the content{shown}: logrotate allows comments only on their own line and skips the whole block (the runbook's `rotate 2555  # 7 years` rotates nothing)", n + 1),
                        "put the comment on its own line",
                    );
                }
            }
        }
    }
    if let Some(m) = f.file.perms.mode {
        world_writable(m, false, out);
    }
    if f.meta.secret {
        let mode = f.file.perms.mode;
        let effective = mode.unwrap_or(f.file.default_mode);
        if effective & 0o044 != 0 {
            out.fire(
                "R0007",
                None,
                format!(
                    "a secret file with mode {}{}: readable by {}",
                    crate::manifest::decode::format_mode(effective),
                    if mode.is_none() {
                        " (no mode given: the default)"
                    } else {
                        ""
                    },
                    if effective & 0o004 != 0 {
                        "every user"
                    } else {
                        "its group"
                    }
                ),
                "set `mode: \"0600\"` (or \"0400\")",
            );
        }
    }
}

fn world_writable(mode: u32, directory: bool, out: &mut Out) {
    // A sticky world-writable folder (/tmp's 1777) is shared on purpose: each user
    // can remove only their own entries.
    if mode & 0o002 != 0 && !(directory && mode & 0o1000 != 0) {
        out.fire(
            "R0006",
            None,
            format!(
                "mode {} lets every user on the host write",
                crate::manifest::decode::format_mode(mode)
            ),
            "remove write for others (e.g. \"0644\", \"0755\", or \"0770\" with a group)",
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reload_commands_are_recognised_with_globs_and_redirections() {
        assert!(reloads(
            "systemctl reload intelluxe-auto-upgrade.service > /dev/null 2>&1 || true",
            "intelluxe-auto-upgrade.service"
        ));
        assert!(reloads(
            "/usr/bin/systemctl reload intelluxe-*.service > /dev/null 2>&1 || true",
            "intelluxe-auto-upgrade.service"
        ));
        assert!(!reloads(
            "systemctl try-restart intelluxe-app.service",
            "intelluxe-app.service"
        ));
        assert!(!reloads(
            "systemctl reload other.service",
            "intelluxe-app.service"
        ));
        assert!(glob_matches("a*c", "abbc"));
        assert!(!glob_matches("a*c", "abbd"));
        assert!(glob_matches("*", "x"));
    }

    #[test]
    fn codes_are_unique_and_in_order() {
        for (i, l) in LINTS.iter().enumerate() {
            assert_eq!(l.code, format!("R{:04}", i + 1));
        }
        assert!(known("R0003") && !known("R0099"));
    }
}
