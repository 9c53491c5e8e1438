//! Human-readable rendering of plans and apply results; colour only on a terminal.

use std::fmt::Write;

use crate::apply::{Outcome, Status};
use crate::plan::{Action, Change, Plan, Summary};

#[derive(Clone, Copy)]
pub struct Style {
    pub colour: bool,
}

impl Style {
    fn paint(self, code: &str, text: &str) -> String {
        if self.colour {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_string()
        }
    }

    fn action(self, a: Action, text: &str) -> String {
        match a {
            Action::Create => self.paint("32", text),
            Action::Update => self.paint("33", text),
            Action::Delete => self.paint("31", text),
            Action::None => text.to_string(),
        }
    }
}

fn value(v: &Option<String>) -> String {
    v.as_deref()
        .map_or_else(|| "(none)".into(), escape_controls)
}

fn is_hostile(c: char) -> bool {
    let bidi =
        matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}');
    c.is_control() || bidi
}

fn escape_except(s: &str, keep: impl Fn(char) -> bool) -> String {
    if !s.chars().any(|c| is_hostile(c) && !keep(c)) {
        return s.to_string();
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if is_hostile(c) && !keep(c) {
            let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
        } else {
            out.push(c);
        }
    }
    out
}

/// Escapes control and bidi-override characters (as `audit show` does) so that a
/// hostile path, live value or message cannot move the cursor, recolour the terminal
/// or visually reorder what an operator reads.
pub fn escape_controls(s: &str) -> String {
    escape_except(s, |_| false)
}

/// As [`escape_controls`] for a message of several lines (a validator's or systemd's
/// findings): line breaks are kept, and every line after the first is indented, so
/// that a newline in a hostile value cannot start a line that passes for one of ours.
pub fn escape_message(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for (i, line) in s.split('\n').enumerate() {
        if i > 0 {
            out.push('\n');
            if !line.starts_with("  ") {
                out.push_str("  ");
            }
        }
        out.push_str(&escape_controls(line));
    }
    out
}

/// As [`escape_controls`] for a line of file content: tabs are kept.
fn escape_content(s: &str) -> String {
    escape_except(s, |c| c == '\t')
}

pub fn change(out: &mut String, c: &Change, style: Style) {
    let id = escape_controls(&c.id.to_string());
    let _ = writeln!(
        out,
        "  {} {}",
        style.action(c.action, c.action.symbol()),
        style.action(c.action, &id)
    );
    for f in &c.fields {
        let field = escape_controls(&f.field);
        let line = match (&f.before, &f.after, c.action) {
            (None, Some(a), _) => format!("{field}: {}", escape_controls(a)),
            (Some(b), None, _) => format!("{field}: {} → (removed)", escape_controls(b)),
            _ => format!("{field}: {} → {}", value(&f.before), value(&f.after)),
        };
        let _ = writeln!(out, "      {line}");
    }
    for i in &c.implied {
        let _ = writeln!(out, "      implied: {}", escape_controls(i));
    }
    for n in &c.notes {
        let _ = writeln!(out, "      note: {}", escape_controls(n));
    }
    for w in &c.warnings {
        let _ = writeln!(
            out,
            "      {}",
            style.paint("33", &format!("warning: {}", escape_controls(w)))
        );
    }
    if c.sensitive && c.fields.iter().any(|f| f.field.ends_with("content")) {
        let _ = writeln!(out, "      (content hidden: secret)");
    }
    if let Some(diff) = &c.diff {
        for line in diff.lines() {
            let line = escape_content(line);
            let painted = if line.starts_with("+++") || line.starts_with("---") {
                style.paint("1", &line)
            } else if line.starts_with('+') {
                style.paint("32", &line)
            } else if line.starts_with('-') {
                style.paint("31", &line)
            } else if line.starts_with("@@") {
                style.paint("36", &line)
            } else {
                line
            };
            let _ = writeln!(out, "      {painted}");
        }
    }
}

pub fn summary_line(s: &Summary) -> String {
    format!(
        "Plan: {} to add, {} to change, {} to remove.",
        s.add, s.change, s.remove
    )
}

pub fn plan(p: &Plan, style: Style) -> String {
    let mut out = String::new();
    for w in &p.warnings {
        let _ = writeln!(out, "{}", style.paint("33", &escape_controls(w)));
    }
    let changed: Vec<&Change> = p.changes.iter().filter(|c| c.is_change()).collect();
    if changed.is_empty() && p.errors.is_empty() {
        no_changes(&mut out, p);
    } else {
        for c in changed {
            change(&mut out, c, style);
            out.push('\n');
        }
    }
    // A resource in sync can still see something wrong around it (a package that an
    // earlier dpkg run left half-configured): its warnings are shown all the same.
    for c in p.changes.iter().filter(|c| !c.is_change()) {
        for w in &c.warnings {
            let _ = writeln!(
                out,
                "{}",
                style.paint("33", &format!("warning: {}: {}", c.id, escape_controls(w)))
            );
        }
    }
    plan_end(&mut out, p, style);
    out
}

/// A plan as `-q` shows it: the resources that could not be planned and the
/// summary line, nothing else.
pub fn plan_quiet(p: &Plan, style: Style) -> String {
    let mut out = String::new();
    if !p.has_changes() && p.errors.is_empty() {
        no_changes(&mut out, p);
    }
    plan_end(&mut out, p, style);
    out
}

fn no_changes(out: &mut String, p: &Plan) {
    let _ = writeln!(
        out,
        "No changes. {} resources in sync with {}.",
        p.summary.unchanged,
        escape_controls(&p.root)
    );
}

/// The resources that could not be planned, then the summary line.
fn plan_end(out: &mut String, p: &Plan, style: Style) {
    for e in &p.errors {
        let at =
            e.at.as_deref()
                .map(|a| format!("{a}: "))
                .unwrap_or_default();
        let _ = writeln!(
            out,
            "{}",
            style.paint(
                "31",
                &escape_message(&format!("error: {at}{}: {}", e.id, e.message))
            )
        );
    }
    let _ = write!(out, "{}", summary_line(&p.summary));
    if p.summary.errors > 0 {
        let _ = write!(
            out,
            " {} resource(s) could not be planned.",
            p.summary.errors
        );
    }
    out.push('\n');
}

/// One finished resource of an apply, printed as soon as it is done.
pub fn applied(o: &Outcome, style: Style) -> String {
    let mut out = String::new();
    if o.changed() {
        match &o.change {
            Some(c) => change(&mut out, c, style),
            None => {
                let _ = writeln!(
                    out,
                    "  ↻ {} (refreshed)",
                    escape_controls(&o.id.to_string())
                );
            }
        }
    }
    out
}

/// The end of an apply: every failure with its reason, and the counts.
pub fn apply_summary(outcomes: &[Outcome], style: Style) -> String {
    let mut out = String::new();
    let mut counts = (0, 0, 0, 0);
    for o in outcomes {
        match &o.status {
            Status::Unchanged => counts.0 += 1,
            Status::Changed | Status::Refreshed => counts.1 += 1,
            Status::Failed { .. } => counts.2 += 1,
            Status::Skipped { .. } => counts.3 += 1,
        }
    }
    let failures: Vec<&Outcome> = outcomes.iter().filter(|o| o.failed()).collect();
    if !failures.is_empty() {
        let _ = writeln!(out, "\nFailures:");
        for o in failures {
            let line = match &o.status {
                Status::Failed { reason } => format!("  ✗ {}: {reason}", o.id),
                Status::Skipped { reason } => format!("  ⊘ {} skipped: {reason}", o.id),
                _ => continue,
            };
            let _ = writeln!(out, "{}", style.paint("31", &escape_message(&line)));
        }
    }
    let _ = writeln!(
        out,
        "Apply: {} changed, {} unchanged, {} failed, {} skipped.",
        counts.1, counts.0, counts.2, counts.3
    );
    out
}

#[cfg(test)]
mod tests {
    use super::{escape_content, escape_controls, escape_message};

    #[test]
    fn control_and_bidi_characters_are_escaped_and_tabs_kept_in_content() {
        assert_eq!(
            escape_controls("a\x1b[31mb\u{202e}c"),
            "a\\u{1b}[31mb\\u{202e}c"
        );
        assert_eq!(escape_controls("plain → text"), "plain → text");
        assert_eq!(escape_content("+\tkey\x07"), "+\tkey\\u{7}");
        assert_eq!(escape_controls("a\tb"), "a\\u{9}b");
        assert_eq!(
            escape_message("bad:\n  line 1\nerror: fake\x1b"),
            "bad:\n  line 1\n  error: fake\\u{1b}"
        );
    }
}
