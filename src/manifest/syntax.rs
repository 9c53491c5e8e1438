//! The YAML parser's messages for the usual mistakes, said in the manifest's terms and
//! pointed at the line that is really at fault: a tab, bad indentation, a missing
//! `:`, an unclosed quote or bracket. The parser's position is where it noticed the
//! problem, which for a tab or an unclosed bracket can be lines away.
//!
//! Messages never repeat the text of a line (it may hold a secret); they name lines
//! and indentation widths only.

/// A rephrased syntax error and its place (1-based line and character column).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    pub line: u32,
    pub column: u32,
    pub message: String,
}

/// Rephrases the parser's `raw` message, noticed at `line`:`column` of `text`; `None`
/// when it is not one of the common cases (the parser's words are then shown).
pub fn explain(text: &str, line: u32, column: u32, raw: &str) -> Option<Found> {
    let lines: Vec<&str> = text
        .split('\n')
        .map(|l| l.strip_suffix('\r').unwrap_or(l))
        .collect();
    let at = usize::try_from(line).ok()?.checked_sub(1)?;
    if raw.contains("tab") {
        return tab(&lines, at, column);
    }
    if raw.contains("unclosed quote") {
        return Some(Found {
            line,
            column,
            message: "unclosed quote: the quoted string that starts here never ends; add the closing quote (a value that spans lines needs `|` instead)".into(),
        });
    }
    if raw.contains("mismatched bracket") {
        return Some(Found {
            line,
            column,
            message: "brackets do not match here: a flow list `[` ends with `]`, a flow mapping `{` with `}`".into(),
        });
    }
    if raw.contains("bracket") || raw.contains("illegal placement of ':'") {
        if let Some(found) = unclosed_flow(&lines, at, column) {
            return Some(found);
        }
    }
    let this = *lines.get(at)?;
    if raw.contains("mapping values are not allowed") {
        if let Some(found) = unquoted_colon(this, line, column) {
            return Some(found);
        }
    }
    if raw.contains("expected ':'") {
        return Some(missing_colon(this, line));
    }
    let indentation_family = raw.contains("did not find expected")
        || raw.contains("mapping values are not allowed")
        || raw.contains("block sequence entries are not allowed");
    if indentation_family {
        return indentation(&lines, at);
    }
    None
}

fn line_no(index: usize) -> u32 {
    u32::try_from(index + 1).unwrap_or(u32::MAX)
}

fn col_no(chars: usize) -> u32 {
    u32::try_from(chars + 1).unwrap_or(u32::MAX)
}

fn indent(line: &str) -> usize {
    line.len() - line.trim_start_matches(' ').len()
}

fn is_blank(line: &str) -> bool {
    let t = line.trim();
    t.is_empty() || t.starts_with('#')
}

/// The tab itself: the first line from the parser's line on whose indentation holds
/// a tab, else the first tab from the parser's position on.
fn tab(lines: &[&str], at: usize, column: u32) -> Option<Found> {
    let message = "a tab character: YAML indents with spaces only; replace the tab with spaces";
    let indented = lines.iter().enumerate().skip(at).find_map(|(i, l)| {
        let lead = l.len() - l.trim_start().len();
        l.get(..lead)?
            .chars()
            .position(|c| c == '\t')
            .map(|p| (i, p))
    });
    let anywhere = || {
        let from = usize::try_from(column).unwrap_or(1).saturating_sub(1);
        lines.iter().enumerate().skip(at).find_map(|(i, l)| {
            let skip = if i == at { from } else { 0 };
            l.chars()
                .enumerate()
                .skip(skip)
                .find(|(_, c)| *c == '\t')
                .map(|(p, _)| (i, p))
        })
    };
    let (i, p) = indented.or_else(anywhere)?;
    Some(Found {
        line: line_no(i),
        column: col_no(p),
        message: message.into(),
    })
}

/// The `[` or `{` still open at the parser's position, outside quotes.
fn unclosed_flow(lines: &[&str], at: usize, column: u32) -> Option<Found> {
    let mut open: Vec<(usize, usize, char)> = Vec::new();
    let end_col = usize::try_from(column).unwrap_or(usize::MAX);
    for (i, l) in lines.iter().enumerate().take(at + 1) {
        let mut quote: Option<char> = None;
        let mut prev = ' ';
        for (p, c) in l.chars().enumerate() {
            if i == at && p + 1 > end_col {
                break;
            }
            match (quote, c) {
                (Some(q), c) if c == q => quote = None,
                (Some(_), _) => {}
                (None, '"' | '\'') if matches!(prev, ' ' | '[' | '{' | ',' | ':') => {
                    quote = Some(c)
                }
                (None, '#') if prev == ' ' => break,
                (None, '[' | '{') => open.push((i, p, c)),
                (None, ']' | '}') => {
                    open.pop();
                }
                _ => {}
            }
            prev = c;
        }
    }
    let (i, p, c) = open.pop()?;
    let (what, close) = if c == '[' {
        ("flow list", ']')
    } else {
        ("flow mapping", '}')
    };
    Some(Found {
        line: line_no(i),
        column: col_no(p),
        message: format!(
            "this `{c}` is never closed: the {what} it starts must end with `{close}`"
        ),
    })
}

/// `key: text: more` — a second `: ` in a plain value.
fn unquoted_colon(this: &str, line: u32, column: u32) -> Option<Found> {
    let first = this
        .find(": ")
        .or_else(|| this.strip_suffix(':').map(str::len))?;
    let first_col = this[..first].chars().count() + 1;
    (usize::try_from(column).ok()? > first_col).then(|| Found {
        line,
        column,
        message: "a second `: ` in this value: a value that contains `: ` must be quoted (\"...\")"
            .into(),
    })
}

fn missing_colon(this: &str, line: u32) -> Found {
    let column = col_no(indent(this));
    let body = this.trim_start().trim_start_matches("- ");
    let glued = body
        .split_once(':')
        .is_some_and(|(k, v)| !k.contains(' ') && !v.is_empty() && !v.starts_with(' '));
    let message = if glued {
        "a `:` must be followed by a space: write `key: value` (`key:value` is one word in YAML)"
    } else {
        "a key without `:`: a mapping entry is `key: value` (if this line continues the value above, indent it further or quote the value)"
    };
    Found {
        line,
        column,
        message: message.into(),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Level {
    /// Keys of a mapping start here.
    Key,
    /// `- ` of a list starts here.
    Dash,
}

/// Where blocks open above line `at`: (indentation, kind, line index), outermost
/// first; and the last content line above it, with its key indentation and whether
/// it holds a value on the line.
struct Above {
    levels: Vec<(usize, Level, usize)>,
    last: Option<(usize, usize, bool)>,
}

fn above(lines: &[&str], at: usize) -> Above {
    let mut levels: Vec<(usize, Level, usize)> = Vec::new();
    let mut last = None;
    let mut scalar_block: Option<usize> = None;
    for (i, l) in lines.iter().enumerate().take(at) {
        if is_blank(l) {
            continue;
        }
        let n = indent(l);
        if let Some(b) = scalar_block {
            if n > b {
                continue;
            }
            scalar_block = None;
        }
        while levels.last().is_some_and(|(m, _, _)| *m > n) {
            levels.pop();
        }
        if levels.last().is_some_and(|(m, _, _)| *m == n) {
            levels.pop();
        }
        let mut body = l.trim_start();
        let mut key_at = n;
        if body == "-" || body.starts_with("- ") {
            levels.push((n, Level::Dash, i));
            let rest = body.get(1..).unwrap_or("");
            let inner = rest.len() - rest.trim_start().len();
            body = rest.trim_start();
            key_at = n + 1 + inner;
            if !body.is_empty() {
                let kind = if body == "-" || body.starts_with("- ") {
                    Level::Dash
                } else {
                    Level::Key
                };
                levels.push((key_at, kind, i));
            }
        } else {
            levels.push((n, Level::Key, i));
        }
        let value = body.split_once(": ").map(|(_, v)| v.trim());
        let opens_scalar = value.is_some_and(|v| {
            let v = v.split(" #").next().unwrap_or(v).trim();
            (v.starts_with('|') || v.starts_with('>'))
                && v[1..]
                    .chars()
                    .all(|c| matches!(c, '-' | '+') || c.is_ascii_digit())
        });
        if opens_scalar {
            scalar_block = Some(key_at);
        }
        let inline_value =
            value.is_some_and(|v| !v.is_empty() && !v.starts_with('#')) && !opens_scalar;
        last = Some((i, key_at, inline_value));
    }
    Above { levels, last }
}

fn widths(levels: &[(usize, Level, usize)]) -> String {
    let mut w: Vec<usize> = levels.iter().map(|(n, _, _)| *n).collect();
    w.sort_unstable();
    w.dedup();
    w.reverse();
    let shown: Vec<String> = w.iter().map(usize::to_string).collect();
    match shown.split_last() {
        Some((last, rest)) if !rest.is_empty() => format!("{} or {last}", rest.join(", ")),
        Some((only, _)) => only.clone(),
        None => "0".into(),
    }
}

fn indentation(lines: &[&str], at: usize) -> Option<Found> {
    let this = *lines.get(at)?;
    let n = indent(this);
    let dash = this.trim_start() == "-" || this.trim_start().starts_with("- ");
    let found = |message: String| {
        Some(Found {
            line: line_no(at),
            column: col_no(n),
            message,
        })
    };
    let Above { levels, last } = above(lines, at);
    if let Some((p, key_at, true)) = last {
        if n > key_at {
            return found(format!(
                "bad indentation: this line is indented more than the entry on line {} ({n} spaces, not {key_at}), so YAML reads it as part of that entry's value; indent it by {key_at} spaces to make it an entry of its own",
                line_no(p)
            ));
        }
    }
    if let Some(&(_, _, p)) = levels
        .iter()
        .find(|(m, kind, _)| *m == n && *kind == Level::Dash)
    {
        if !dash {
            let inner = levels
                .iter()
                .find(|(m, _, q)| *q == p && *m > n)
                .map_or(n + 2, |(m, _, _)| *m);
            return found(format!(
                "bad indentation: this line is indented like the list item on line {} ({n} spaces) but does not start with `- `: indent it by {inner} spaces to continue that item, or start it with `- ` for a new item",
                line_no(p)
            ));
        }
    }
    if dash {
        if let Some(&(_, _, p)) = levels
            .iter()
            .rev()
            .find(|(m, kind, _)| *m == n && *kind == Level::Key)
        {
            return found(format!(
                "a list item among the keys of the mapping on line {}: a list goes under a key (`key:`, then `- item` lines indented below it)",
                line_no(p)
            ));
        }
    }
    if !levels.iter().any(|(m, _, _)| *m == n) {
        return found(format!(
            "bad indentation: this line is indented by {n} space{}, but the blocks above it are indented by {}; indent it like the entries it belongs with",
            if n == 1 { "" } else { "s" },
            widths(&levels)
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str, line: u32, column: u32, raw: &str) -> (u32, u32, String) {
        let f = explain(text, line, column, raw).unwrap_or_else(|| panic!("no explanation"));
        (f.line, f.column, f.message)
    }

    #[test]
    fn a_tab_is_found_where_it_is_not_where_the_parser_stopped() {
        let (l, c, m) = at(
            "resources:\n  - file: /etc/a\n\tcontent: x\n",
            2,
            11,
            "while scanning a plain scalar, found a tab",
        );
        assert_eq!((l, c), (3, 1));
        assert!(m.contains("tab"), "{m}");
    }

    #[test]
    fn indentation_mistakes_are_named() {
        let text = "resources:\n  - file: /etc/a\n    content: x\n   mode: \"0644\"\n";
        let (l, c, m) = at(text, 4, 4, "did not find expected '-' indicator");
        assert_eq!((l, c), (4, 4));
        assert!(
            m.contains("indented by 3 spaces") && m.contains("4, 2 or 0"),
            "{m}"
        );

        let text = "resources:\n  - file: /etc/a\n    content: x\n  mode: \"0644\"\n";
        let (_, _, m) = at(text, 4, 3, "did not find expected '-' indicator");
        assert!(
            m.contains("list item on line 2") && m.contains("by 4 spaces"),
            "{m}"
        );

        let text = "resources:\n  - file: /etc/a\n    content: x\n      mode: \"0644\"\n";
        let (_, c, m) = at(
            text,
            4,
            11,
            "mapping values are not allowed in this context",
        );
        assert_eq!(c, 7);
        assert!(m.contains("more than the entry on line 3"), "{m}");

        let text = "resources:\n  - file: /etc/a\n    content: |\n      hello\n   mode: x\n";
        let (_, _, m) = at(text, 5, 4, "did not find expected '-' indicator");
        assert!(m.contains("indented by 3 spaces"), "{m}");
    }

    #[test]
    fn missing_colons_and_unquoted_colons_are_named() {
        let (_, c, m) = at("a:\n  owner:root\n", 2, 3, "simple key expected ':'");
        assert_eq!(c, 3);
        assert!(m.contains("followed by a space"), "{m}");
        let (_, _, m) = at("a:\n  content x\n", 2, 3, "simple key expected ':'");
        assert!(m.contains("without `:`"), "{m}");
        let (_, c, m) = at(
            "a:\n  command: echo a: b\n",
            2,
            18,
            "mapping values are not allowed in this context",
        );
        assert_eq!(c, 18);
        assert!(m.contains("must be quoted"), "{m}");
    }

    #[test]
    fn an_unclosed_bracket_is_pointed_at() {
        let text = "resources:\n  - file: /etc/a\n    requires: [a, b\n  - file: /etc/b\n";
        let (l, c, m) = at(text, 4, 9, "illegal placement of ':' indicator");
        assert_eq!((l, c), (3, 15));
        assert!(m.contains("never closed"), "{m}");
    }
}
