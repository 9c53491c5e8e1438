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
    v.clone().unwrap_or_else(|| "(none)".into())
}

pub fn change(out: &mut String, c: &Change, style: Style) {
    let _ = writeln!(
        out,
        "  {} {}",
        style.action(c.action, c.action.symbol()),
        style.action(c.action, &c.id.to_string())
    );
    for f in &c.fields {
        let line = match (&f.before, &f.after, c.action) {
            (None, Some(a), _) => format!("{}: {a}", f.field),
            (Some(b), None, _) => format!("{}: {b} → (removed)", f.field),
            _ => format!("{}: {} → {}", f.field, value(&f.before), value(&f.after)),
        };
        let _ = writeln!(out, "      {line}");
    }
    for i in &c.implied {
        let _ = writeln!(out, "      implied: {i}");
    }
    for n in &c.notes {
        let _ = writeln!(out, "      note: {n}");
    }
    for w in &c.warnings {
        let _ = writeln!(out, "      {}", style.paint("33", &format!("warning: {w}")));
    }
    if c.sensitive && c.fields.iter().any(|f| f.field.ends_with("content")) {
        let _ = writeln!(out, "      (content hidden: secret)");
    }
    if let Some(diff) = &c.diff {
        for line in diff.lines() {
            let painted = if line.starts_with("+++") || line.starts_with("---") {
                style.paint("1", line)
            } else if line.starts_with('+') {
                style.paint("32", line)
            } else if line.starts_with('-') {
                style.paint("31", line)
            } else if line.starts_with("@@") {
                style.paint("36", line)
            } else {
                line.to_string()
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
        let _ = writeln!(out, "{}", style.paint("33", w));
    }
    let changed: Vec<&Change> = p.changes.iter().filter(|c| c.is_change()).collect();
    if changed.is_empty() && p.errors.is_empty() {
        let _ = writeln!(
            out,
            "No changes. {} resources in sync with {}.",
            p.summary.unchanged, p.root
        );
    } else {
        for c in changed {
            change(&mut out, c, style);
            out.push('\n');
        }
    }
    for e in &p.errors {
        let at =
            e.at.as_deref()
                .map(|a| format!("{a}: "))
                .unwrap_or_default();
        let _ = writeln!(
            out,
            "{}",
            style.paint("31", &format!("error: {at}{}: {}", e.id, e.message))
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
    out
}

/// One finished resource of an apply, printed as soon as it is done.
pub fn applied(o: &Outcome, style: Style) -> String {
    let mut out = String::new();
    if o.changed() {
        match &o.change {
            Some(c) => change(&mut out, c, style),
            None => {
                let _ = writeln!(out, "  ↻ {} (refreshed)", o.id);
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
            let _ = writeln!(out, "{}", style.paint("31", &line));
        }
    }
    let _ = writeln!(
        out,
        "Apply: {} changed, {} unchanged, {} failed, {} skipped.",
        counts.1, counts.0, counts.2, counts.3
    );
    out
}
