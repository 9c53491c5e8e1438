//! Which lines of a manifest a diagnostic may never quote: a diagnostic's snippet
//! prints its source line, and a line can hold a secret.
//!
//! Hidden, from the parsed tree: the whole extent of any mapping with a `secret:` key
//! that is not literally `false` (a resource entry: its `content:`, block scalars
//! included), every entry whose key names a credential (`password`, `token`, ...),
//! the top-level `vars:` and `environments:` and a module call's `with:` (values flow
//! into secret resources through templates and parameters), and every anchored node (an alias can carry its value into a
//! secret resource from anywhere). A node's extent runs from its first line to the
//! line before the next sibling starts, so block scalars and comments are covered,
//! and a line shared with a sibling (flow style) counts for both.
//!
//! A file that does not parse has no tree: if any line mentions a credential word the
//! whole file is hidden; otherwise `vars:`/`environments:` blocks, `with:` blocks and
//! anchors are found from the text.

use super::yaml::{Node, Value};

/// Key words that mark a credential: an entry whose key contains one is hidden.
const CREDENTIAL_WORDS: &[&str] = &[
    "password",
    "passwd",
    "passphrase",
    "secret",
    "token",
    "private_key",
    "api_key",
    "apikey",
    "credential",
];

/// Case-insensitively, without allocating: called for every key of every manifest.
fn is_credential(key: &str) -> bool {
    let key = key.as_bytes();
    CREDENTIAL_WORDS.iter().any(|w| {
        key.windows(w.len())
            .any(|part| part.eq_ignore_ascii_case(w.as_bytes()))
    })
}

/// The lines of a manifest's text that must not be quoted (`None`: none may be), for
/// [`crate::diag::register_source_hidden_by`]: the text is parsed again, which only
/// happens when a diagnostic of this file quotes a line.
pub fn of_manifest(text: &str) -> Option<Vec<(u32, u32)>> {
    // On a thread with the loader's stack: the caller may be a small main thread.
    std::thread::scope(|s| {
        std::thread::Builder::new()
            .stack_size(super::LOAD_STACK_BYTES)
            .spawn_scoped(s, || {
                match super::yaml::parse(&std::sync::Arc::from("manifest"), text.as_bytes()) {
                    Ok(root) => Some(from_tree(&root, text)),
                    Err(_) => from_text(text),
                }
            })
            .ok()
            .and_then(|h| h.join().ok())
            // Could not tell which lines are safe: quote none.
            .unwrap_or(None)
    })
}

/// Inclusive line ranges of `text` (parsed as `root`) that must not be quoted.
pub fn from_tree(root: &Node, text: &str) -> Vec<(u32, u32)> {
    let lines: Vec<&str> = text.split('\n').collect();
    let last = u32::try_from(lines.len()).unwrap_or(u32::MAX).max(1);
    let mut out = Vec::new();
    let walker = Walker { lines: &lines };
    walker.node(root, root.span.line.max(1), last, true, &mut out);
    out.extend(anchors(&lines));
    out
}

/// For a file that did not parse: `None` when the whole file must be hidden, else the
/// ranges found from the text.
pub fn from_text(text: &str) -> Option<Vec<(u32, u32)>> {
    let lower = text.to_ascii_lowercase();
    if CREDENTIAL_WORDS.iter().any(|w| lower.contains(w)) {
        return None;
    }
    let lines: Vec<&str> = text.split('\n').collect();
    let mut out = anchors(&lines);
    out.extend(indented_blocks(&lines, |line| {
        let t = line.trim_start().trim_start_matches("- ");
        t.starts_with("with:")
    }));
    let mut open: Option<usize> = None;
    for (i, line) in lines.iter().enumerate() {
        let top_key = line.split_once(':').map(|(k, _)| k).filter(|k| {
            !k.is_empty()
                && !k.starts_with(char::is_whitespace)
                && k.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        });
        let Some(key) = top_key else { continue };
        if let Some(start) = open.take() {
            out.push((line_no(start), line_no(i).saturating_sub(1)));
        }
        if key == "vars" || key == "environments" {
            open = Some(i);
        }
    }
    if let Some(start) = open {
        out.push((line_no(start), line_no(lines.len())));
    }
    Some(out)
}

fn line_no(index: usize) -> u32 {
    u32::try_from(index + 1).unwrap_or(u32::MAX)
}

struct Walker<'a> {
    lines: &'a [&'a str],
}

impl Walker<'_> {
    /// Where a node that starts on `start` ends, given where its next sibling starts
    /// (line and column) and where its parent ends.
    fn end(&self, start: u32, next: Option<&Node>, parent_end: u32) -> u32 {
        let Some(next) = next.filter(|n| n.span.line > 0) else {
            return parent_end;
        };
        let (line, column) = (next.span.line, next.span.column);
        if line <= start {
            return start;
        }
        // The next sibling's first line is shared when something other than
        // indentation and a `- ` precedes it there (`}, {key: ...` in flow style).
        let index = usize::try_from(line)
            .unwrap_or(usize::MAX)
            .saturating_sub(1);
        let prefix = usize::try_from(column).unwrap_or(1).saturating_sub(1);
        let shared = self.lines.get(index).is_some_and(|l| {
            l.chars()
                .take(prefix)
                .any(|c| !c.is_whitespace() && c != '-' && c != '?')
        });
        if shared {
            line
        } else {
            line - 1
        }
    }

    fn node(&self, node: &Node, start: u32, end: u32, root: bool, out: &mut Vec<(u32, u32)>) {
        match &node.value {
            Value::Map(pairs) => {
                let secret = pairs.iter().any(|(k, v)| {
                    k.as_str() == Some("secret") && !matches!(v.value, Value::Bool(false))
                });
                if secret {
                    out.push((start, end));
                }
                let module_call = pairs.iter().any(|(k, _)| k.as_str() == Some("module"));
                for (i, (k, v)) in pairs.iter().enumerate() {
                    let from = if k.span.line > 0 { k.span.line } else { start };
                    let to = self.end(from, pairs.get(i + 1).map(|(k, _)| k), end);
                    // Keys are strings but for rare ones (`1:`, `true:`); those
                    // are spelt out, the rest read in place.
                    let spelt;
                    let key = match k.as_str() {
                        Some(key) => key,
                        None => {
                            spelt = k.key_text();
                            spelt.as_str()
                        }
                    };
                    if is_credential(key)
                        || (root && (key == "vars" || key == "environments"))
                        || (module_call && key == "with")
                    {
                        out.push((from, to));
                    }
                    self.node(v, from, to, false, out);
                }
            }
            Value::Seq(items) => {
                for (i, item) in items.iter().enumerate() {
                    let from = if item.span.line > 0 {
                        item.span.line
                    } else {
                        start
                    };
                    let to = self.end(from, items.get(i + 1), end);
                    self.node(item, from, to, false, out);
                }
            }
            _ => {}
        }
    }
}

/// Lines that define an anchor (`&name`), with the more indented lines after them
/// (the anchored block): an alias elsewhere may carry that value into a secret.
fn anchors(lines: &[&str]) -> Vec<(u32, u32)> {
    indented_blocks(lines, has_anchor)
}

/// Each line `starts` accepts, with the more indented lines after it (its block).
fn indented_blocks(lines: &[&str], starts: impl Fn(&str) -> bool) -> Vec<(u32, u32)> {
    let mut out = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        if !starts(line) {
            continue;
        }
        let indent = indent_of(line);
        let mut last = i;
        for (j, next) in lines.iter().enumerate().skip(i + 1) {
            if next.trim().is_empty() {
                continue;
            }
            if indent_of(next) <= indent {
                break;
            }
            last = j;
        }
        out.push((line_no(i), line_no(last)));
    }
    out
}

fn indent_of(line: &str) -> usize {
    line.len() - line.trim_start().len()
}

fn has_anchor(line: &str) -> bool {
    if !line.contains('&') {
        return false;
    }
    let chars: Vec<char> = line.chars().collect();
    chars.iter().enumerate().any(|(i, &c)| {
        c == '&'
            && chars
                .get(i + 1)
                .is_some_and(|n| n.is_alphanumeric() || *n == '_' || *n == '-')
            && (i == 0 || matches!(chars[i - 1], ' ' | '\t' | '[' | '{' | ',' | '-' | ':'))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn hidden(text: &str) -> Vec<u32> {
        let file: Arc<str> = Arc::from("h.yaml");
        let root =
            super::super::yaml::parse(&file, text.as_bytes()).unwrap_or_else(|e| panic!("{e}"));
        let ranges = from_tree(&root, text);
        let n = u32::try_from(text.lines().count()).unwrap_or(0);
        (1..=n)
            .filter(|l| ranges.iter().any(|&(a, b)| (a..=b).contains(l)))
            .collect()
    }

    #[test]
    fn a_secret_entry_is_hidden_to_the_next_entry_and_block_scalars_with_it() {
        let text = "resources:\n  - file: /a\n    content: x\n  - file: /s\n    secret: true\n    content: |\n      s3cr3t\n      more\n  - file: /b\n    content: y\n";
        assert_eq!(hidden(text), vec![4, 5, 6, 7, 8]);
    }

    #[test]
    fn the_last_secret_entry_runs_to_the_next_top_level_key() {
        let text = "resources:\n  - file: /s\n    content: |\n      s3cr3t\n    secret: true\n# c\nsettings:\n  audit_log: /x\n";
        assert_eq!(hidden(text), vec![2, 3, 4, 5, 6]);
    }

    #[test]
    fn flow_entries_sharing_a_line_with_a_secret_are_hidden() {
        let text = "resources: [{file: /a, content: x}, {file: /s, secret: true,\n  content: s3cr3t}, {file: /b, content: y}]\n";
        assert_eq!(hidden(text), vec![1, 2]);
    }

    #[test]
    fn passwords_vars_and_anchors_are_hidden() {
        let text = "vars:\n  a: 1\nx: &pw\n  - s3cr3t\nresources:\n  - user: u\n    password: \"$6$x\"\n    shell: /bin/sh\n";
        assert_eq!(hidden(text), vec![1, 2, 3, 4, 7]);
    }

    #[test]
    fn an_unparsed_file_with_a_credential_word_is_hidden_whole() {
        assert_eq!(
            from_text("resources:\n  - file: /a\n    secret: true\n"),
            None
        );
        assert_eq!(
            from_text("vars:\n  a: 1\nresources:\n  - file: /a\n\tx\n"),
            Some(vec![(1, 2)])
        );
    }

    #[test]
    fn a_module_calls_with_is_hidden_whatever_its_keys_are_called() {
        let text = "resources:\n  - module: app\n    name: a\n    with:\n      db_url: \"postgres://u:hunter2@h/db\"\n      port: 5432\n  - file: /b\n    content: y\n";
        assert_eq!(hidden(text), vec![4, 5, 6]);
        let flow = "resources:\n  - module: app\n    name: a\n    with: { db_url: \"postgres://u:hunter2@h/db\" }\n";
        assert_eq!(hidden(flow), vec![4]);
        // Not a module call: `with` is an ordinary key there.
        assert!(hidden("resources:\n  - file: /w\n    with: x\n").is_empty());
        assert_eq!(
            from_text("resources:\n  - module: app\n    with:\n      db_url: x\n\tbad\n"),
            Some(vec![(3, 4)])
        );
    }
}
