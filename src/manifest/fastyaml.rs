//! A fast path for the YAML that manifests are nearly always written in: block
//! mappings and sequences, plain and quoted one-line scalars, `|` blocks, and
//! one-line flow lists and flow mappings of scalars (`[a, "b"]`, `{k: v}`).
//!
//! Parsing through the general YAML stack costs ~15 µs per resource, three times the
//! cost of observing the resource on the host, so it dominated no-op runs. This parser
//! reads that common subset in one pass over the lines. It never reports errors and
//! never guesses: on anything outside the subset (anchors, tags, nested flow
//! collections, flow collections over several lines, folded or multi-line scalars,
//! numbers other than plain decimal integers, duplicate keys, tabs, CRLF, several
//! documents, nesting deeper than [`MAX_DEPTH`], any syntax error) it declines, and
//! the caller parses the file with the general parser, which gives the real
//! diagnostics. The `agrees_with_general_parser` tests hold the two to the same tree,
//! spans included.
//!
//! Every index into the text is checked (`get`, never `[]` on slices or strings): an
//! index that cannot happen on well-formed input declines instead of panicking, so no
//! manifest can crash the loader through this path.

use std::cell::Cell;
use std::sync::Arc;

use super::yaml::{to_u32, Node, Value, MAX_DEPTH};
use crate::diag::Span;

/// The tree for `text`, or `None` when the text is outside the fast subset.
pub(super) fn parse(file: &Arc<str>, text: &str) -> Option<Node> {
    if text.contains(['\t', '\r', '\u{feff}']) {
        return None;
    }
    let mut lines: Vec<Line> = text
        .split('\n')
        .map(|raw| {
            let indent = raw.len() - raw.trim_start_matches(' ').len();
            Line { indent, raw }
        })
        .collect();
    if text.ends_with('\n') {
        lines.pop();
    }
    let mut p = Parser {
        file,
        lines,
        at: 0,
        offset: 0,
        node_stack: Vec::new(),
        pair_stack: Vec::new(),
        depth: 0,
        out_of_range: Cell::new(false),
    };
    let first = p.next_significant()?;
    if p.lines.get(first)?.indent == 0 && p.content(first) == "---" {
        p.at += 1;
    }
    let start = p.next_significant()?;
    let root = p.block(start)?;
    let rest = p.next_significant();
    (rest.is_none() && !p.out_of_range.get()).then_some(root)
}

struct Line<'a> {
    indent: usize,
    raw: &'a str,
}

struct Parser<'f, 'a> {
    file: &'f Arc<str>,
    lines: Vec<Line<'a>>,
    /// Index of the current line.
    at: usize,
    /// For compact notation (`- key: v`, `- - x`): how far into the current line the
    /// node being parsed starts, so that line reads like a line indented that far.
    offset: usize,
    /// Items and entries of the collections being read, innermost last; each
    /// collection moves its own out in one exact-size allocation when it ends (a
    /// growing vector per collection was most of the tree's memory and its copying).
    node_stack: Vec<Node>,
    pair_stack: Vec<(Node, Node)>,
    /// Collections open around the current position (the general parser counts the
    /// same way); past [`MAX_DEPTH`] the text is declined and the general parser
    /// reports it.
    depth: usize,
    /// Set when an index fell outside its line, which well-formed input never causes:
    /// the parse is then declined rather than trusted.
    out_of_range: Cell<bool>,
}

impl<'f, 'a> Parser<'f, 'a> {
    /// The raw text of `line` ("" and a declined parse if there is no such line).
    fn raw(&self, line: usize) -> &'a str {
        match self.lines.get(line) {
            Some(l) => l.raw,
            None => {
                self.out_of_range.set(true);
                ""
            }
        }
    }

    /// `s` from byte `from` on ("" and a declined parse if that is not a character
    /// boundary inside `s`).
    fn from(&self, s: &'a str, from: usize) -> &'a str {
        s.get(from..).unwrap_or_else(|| {
            self.out_of_range.set(true);
            ""
        })
    }

    fn span(&self, line: usize, byte_col: usize) -> Span {
        let raw = self.raw(line).as_bytes();
        let prefix = raw.get(..byte_col.min(raw.len())).unwrap_or_default();
        // Characters, counted on bytes so that no boundary can be missed: every byte
        // but a UTF-8 continuation byte starts one.
        let col = prefix.iter().filter(|&&b| b & 0xC0 != 0x80).count();
        Span::new(self.file.clone(), to_u32(line + 1), to_u32(col + 1))
    }

    /// Indentation of `line` as the parser sees it (compact notation shifts it).
    fn indent(&self, line: usize) -> usize {
        if line == self.at && self.offset > 0 {
            self.offset
        } else {
            self.lines.get(line).map_or(0, |l| l.indent)
        }
    }

    fn content(&self, line: usize) -> &'a str {
        self.from(self.raw(line), self.indent(line))
            .trim_end_matches(' ')
    }

    /// Enters one more collection, or declines past [`MAX_DEPTH`].
    fn enter(&mut self) -> Option<()> {
        if self.depth >= MAX_DEPTH {
            return None;
        }
        self.depth += 1;
        Some(())
    }

    /// Moves to the next line that is neither blank nor only a comment.
    fn next_significant(&mut self) -> Option<usize> {
        while self.at < self.lines.len() {
            let c = self.content(self.at);
            if c.is_empty() || c.starts_with('#') {
                self.advance();
            } else {
                return Some(self.at);
            }
        }
        None
    }

    fn advance(&mut self) {
        self.at += 1;
        self.offset = 0;
    }

    /// A block node starting at significant line `line`.
    fn block(&mut self, line: usize) -> Option<Node> {
        let c = self.content(line);
        if c.starts_with("---") || c.starts_with("...") || c.starts_with('%') {
            return None;
        }
        if is_seq_item(c) {
            self.sequence(line)
        } else {
            self.mapping(line)
        }
    }

    fn sequence(&mut self, first: usize) -> Option<Node> {
        self.enter()?;
        let node = self.sequence_items(first);
        self.depth -= 1;
        node
    }

    fn sequence_items(&mut self, first: usize) -> Option<Node> {
        let indent = self.indent(first);
        let span = self.span(first, indent);
        let base = self.node_stack.len();
        loop {
            let line = self.at;
            let c = self.content(line);
            let after_dash = c.get(1..)?;
            let rest = after_dash.trim_start_matches(' ');
            let spaces = after_dash.len() - rest.len();
            let col = indent + 1 + spaces;
            if rest.starts_with('#') {
                return None; // the general parser's spans get odd here; rare anyway
            }
            if rest.is_empty() {
                self.advance();
                match self.next_significant() {
                    Some(next) if self.indent(next) > indent => {
                        let item = self.block(next)?;
                        self.node_stack.push(item);
                    }
                    _ => return None,
                }
            } else if is_seq_item(rest) || split_key(rest).is_some() {
                self.offset = col;
                let item = self.block(line)?;
                self.node_stack.push(item);
            } else {
                let item = self.inline_value(line, col, indent)?;
                self.node_stack.push(item);
            }
            match self.next_significant() {
                Some(next) if self.indent(next) == indent && is_seq_item(self.content(next)) => {}
                Some(next) if self.indent(next) > indent => return None,
                _ => break,
            }
        }
        Some(Node {
            span,
            value: Value::Seq(self.node_stack.drain(base..).collect()),
        })
    }

    fn mapping(&mut self, first: usize) -> Option<Node> {
        self.enter()?;
        let node = self.mapping_entries(first);
        self.depth -= 1;
        node
    }

    fn mapping_entries(&mut self, first: usize) -> Option<Node> {
        let indent = self.indent(first);
        let span = self.span(first, indent);
        let base = self.pair_stack.len();
        loop {
            let line = self.at;
            let c = self.content(line);
            let (key_text, quoted, after_colon) = split_key(c)?;
            let key_value = if quoted {
                Value::Str(unquote(key_text)?)
            } else {
                resolve_plain(key_text)?
            };
            // Keys that are not strings (`on:`, `1:`) are left to the general parser:
            // its duplicate-key rules compare them with quoted strings in ways this
            // parser does not mirror (`true` and "true" collide there, 1 and "1" not).
            if !matches!(key_value, Value::Str(_)) {
                return None;
            }
            if self
                .pair_stack
                .get(base..)?
                .iter()
                .any(|(k, _)| k.value == key_value)
            {
                return None;
            }
            let key = Node {
                span: self.span(line, indent),
                value: key_value,
            };
            let after = c.get(after_colon..)?;
            let rest = after.trim_start_matches(' ');
            let spaces = after.len() - rest.len();
            let value = if rest.is_empty() || rest.starts_with('#') {
                let colon = self.span(line, indent + after_colon - 1);
                self.advance();
                match self.next_significant() {
                    Some(next) if self.indent(next) > indent => self.block(next)?,
                    // A sequence may sit at its key's own indentation.
                    Some(next)
                        if self.indent(next) == indent && is_seq_item(self.content(next)) =>
                    {
                        self.indentless_sequence(next)?
                    }
                    _ => Node {
                        span: colon,
                        value: Value::Null,
                    },
                }
            } else {
                self.inline_value(line, indent + after_colon + spaces, indent)?
            };
            self.pair_stack.push((key, value));
            match self.next_significant() {
                Some(next) if self.indent(next) == indent && !is_seq_item(self.content(next)) => {}
                Some(next) if self.indent(next) > indent => return None,
                _ => break,
            }
        }
        Some(Node {
            span,
            value: Value::Map(self.pair_stack.drain(base..).collect()),
        })
    }

    /// `key:` followed by `- item` lines at the key's own indentation; the general
    /// parser places such a sequence at its first item.
    fn indentless_sequence(&mut self, first: usize) -> Option<Node> {
        let expected = self.span(first, self.indent(first) + 2);
        let mut node = self.sequence(first)?;
        match &node.value {
            // Other layouts (`-   x`, an item on the next line) get spans we do not
            // mirror; leave them to the general parser.
            Value::Seq(items) if items.first().map(|i| &i.span) == Some(&expected) => {
                node.span = expected;
                Some(node)
            }
            _ => None,
        }
    }

    /// A value that starts on line `line` at byte column `col` (absolute), inside a
    /// block whose indentation is `parent`. Consumes its line(s).
    fn inline_value(&mut self, line: usize, col: usize, parent: usize) -> Option<Node> {
        let raw = self.raw(line).trim_end_matches(' ');
        let text = raw.get(col..)?;
        let span = self.span(line, col);
        let value = match *text.as_bytes().first()? {
            b'"' | b'\'' => {
                let end = quoted_end(text)?;
                trailing_ok(text.get(end..)?)?;
                Value::Str(unquote(text.get(..end)?)?)
            }
            b'[' | b'{' => return self.flow(line, col),
            b'|' => return self.literal_block(line, text, parent),
            b']' | b'}' | b',' | b'&' | b'*' | b'!' | b'>' | b'%' | b'@' | b'`' | b'?' | b':'
            | b'#' => return None,
            _ if is_seq_item(text) => return None,
            _ => {
                let plain = match find_pair(text, b" #") {
                    Some(i) => text.get(..i)?.trim_end_matches(' '),
                    None => text,
                };
                if find_pair(plain, b": ").is_some() || plain.ends_with(':') {
                    return None;
                }
                resolve_plain(plain)?
            }
        };
        self.advance();
        Some(Node { span, value })
    }

    /// A one-line flow list `[a, "b", 3]` or mapping `{ k: v, k2: "v2" }` of scalars,
    /// one level below the collection it is a value of.
    fn flow(&mut self, line: usize, col: usize) -> Option<Node> {
        if self.depth >= MAX_DEPTH {
            return None;
        }
        let raw = self.raw(line);
        let bytes = raw.as_bytes();
        let is_map = *bytes.get(col)? == b'{';
        let close = if is_map { b'}' } else { b']' };
        let mut items = Vec::new();
        let mut pairs = Vec::new();
        let mut pos = col + 1;
        let skip = |mut p: usize| {
            while bytes.get(p) == Some(&b' ') {
                p += 1;
            }
            p
        };
        pos = skip(pos);
        if bytes.get(pos) != Some(&close) {
            loop {
                let (node, end) = self.flow_scalar(line, pos, is_map)?;
                pos = skip(end);
                if is_map {
                    if bytes.get(pos) != Some(&b':') || bytes.get(pos + 1) != Some(&b' ') {
                        return None;
                    }
                    if !matches!(node.value, Value::Str(_)) {
                        return None; // as for block keys
                    }
                    let (value, end) = self.flow_scalar(line, skip(pos + 1), false)?;
                    if pairs
                        .iter()
                        .any(|(k, _): &(Node, Node)| k.value == node.value)
                    {
                        return None;
                    }
                    pairs.push((node, value));
                    pos = skip(end);
                } else {
                    items.push(node);
                }
                match bytes.get(pos) {
                    Some(b',') => pos = skip(pos + 1),
                    Some(&b) if b == close => break,
                    _ => return None,
                }
            }
        }
        trailing_ok(raw.get(pos + 1..)?)?;
        self.advance();
        Some(Node {
            span: self.span(line, col),
            value: if is_map {
                Value::Map(pairs)
            } else {
                Value::Seq(items)
            },
        })
    }

    /// A scalar inside a one-line flow collection, and the byte index after it.
    fn flow_scalar(&self, line: usize, pos: usize, is_key: bool) -> Option<(Node, usize)> {
        let raw = self.raw(line);
        let text = raw.get(pos..)?;
        let first = *text.as_bytes().first()?;
        let (value, len) = if first == b'"' || first == b'\'' {
            let end = quoted_end(text)?;
            (Value::Str(unquote(text.get(..end)?)?), end)
        } else {
            let len = text.find([',', ']', '}', ':']).unwrap_or(text.len());
            let word = text.get(..len)?.trim_end_matches(' ');
            if word.is_empty()
                || word.contains([
                    '[', '{', '"', '\'', '#', '&', '*', '!', '|', '>', '%', '@', '`', '?',
                ])
                || word.starts_with('-')
                || (!is_key && text.get(len..)?.starts_with(':'))
            {
                return None;
            }
            (resolve_plain(word)?, word.len())
        };
        Some((
            Node {
                span: self.span(line, pos),
                value,
            },
            pos + len,
        ))
    }

    /// `|` or `|-` followed by lines indented deeper than the parent block.
    fn literal_block(&mut self, line: usize, header: &str, parent: usize) -> Option<Node> {
        let keep_final_newline = match header.split(" #").next().map(|h| h.trim_end_matches(' ')) {
            Some("|") => true,
            Some("|-") => false,
            _ => return None,
        };
        let first = line + 1;
        let block_indent = match self.lines.get(first) {
            Some(l) if l.raw.len() > l.indent && l.indent > parent => l.indent,
            _ => return None,
        };
        let mut end = first;
        let mut last_content = first;
        while let Some(l) = self.lines.get(end) {
            let blank = l.indent == l.raw.len();
            if blank {
                if l.raw.len() > block_indent {
                    return None;
                }
            } else if l.indent < block_indent {
                break;
            } else {
                last_content = end;
            }
            end += 1;
        }
        let mut value = String::new();
        for (i, l) in self.lines.get(first..=last_content)?.iter().enumerate() {
            if i > 0 {
                value.push('\n');
            }
            if l.raw.len() > block_indent {
                value.push_str(l.raw.get(block_indent..)?);
            }
        }
        if keep_final_newline {
            value.push('\n');
        }
        let span = self.span(first, block_indent);
        self.at = end;
        self.offset = 0;
        Some(Node {
            span,
            value: Value::Str(value),
        })
    }
}

/// Byte index of the two-byte `pair` in `s` (a plain loop: `str::find` with a
/// string pattern sets up a substring searcher per call, on every line).
fn find_pair(s: &str, pair: &[u8; 2]) -> Option<usize> {
    s.as_bytes().windows(2).position(|w| w == pair)
}

fn is_seq_item(c: &str) -> bool {
    c == "-" || c.starts_with("- ")
}

/// Splits `key: rest` into the key text, whether it is quoted, and the byte index just
/// past the colon. `None` when the line is not a simple mapping entry.
fn split_key(c: &str) -> Option<(&str, bool, usize)> {
    let first = *c.as_bytes().first()?;
    if first == b'"' || first == b'\'' {
        let end = quoted_end(c)?;
        let rest = c.get(end..)?.strip_prefix(':')?;
        if rest.is_empty() || rest.starts_with(' ') {
            return Some((c.get(..end)?, true, end + 1));
        }
        return None;
    }
    if b"-?:,[]{}#&*!|>%@`".contains(&first) {
        return None;
    }
    let colon = match find_pair(c, b": ") {
        Some(i) => i,
        None if c.ends_with(':') => c.len() - 1,
        None => return None,
    };
    let key = c.get(..colon)?;
    if find_pair(key, b" #").is_some() || key.ends_with(' ') || key == "<<" {
        return None;
    }
    Some((key, false, colon + 1))
}

/// Byte index just past the closing quote of the quoted scalar `text` starts with.
fn quoted_end(text: &str) -> Option<usize> {
    let bytes = text.as_bytes();
    let quote = *bytes.first()?;
    let mut i = 1;
    while let Some(&b) = bytes.get(i) {
        match b {
            b'\\' if quote == b'"' => i += 2,
            b'\'' if quote == b'\'' && bytes.get(i + 1) == Some(&b'\'') => i += 2,
            _ if b == quote => return Some(i + 1),
            _ => i += 1,
        }
    }
    None
}

/// What may follow a value on its line: nothing, or a comment.
fn trailing_ok(after: &str) -> Option<()> {
    let t = after.trim_start_matches(' ');
    (t.is_empty() || (t.starts_with('#') && t.len() < after.len())).then_some(())
}

/// The text of a quoted scalar (including its quotes), with escapes resolved.
fn unquote(quoted: &str) -> Option<String> {
    let inner = quoted.get(1..quoted.len().checked_sub(1)?)?;
    if quoted.starts_with('\'') {
        return Some(inner.replace("''", "'"));
    }
    if !inner.contains('\\') {
        return Some(inner.to_string());
    }
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(ch) = chars.next() {
        if ch != '\\' {
            out.push(ch);
            continue;
        }
        let escaped = match chars.next()? {
            '\\' => '\\',
            '"' => '"',
            '/' => '/',
            'n' => '\n',
            't' => '\t',
            'r' => '\r',
            '0' => '\0',
            ' ' => ' ',
            'e' => '\u{1b}',
            _ => return None,
        };
        out.push(escaped);
    }
    Some(out)
}

/// YAML's reading of a plain scalar, as the general parser resolves it; `None` for
/// numeric-looking spellings other than plain decimal integers (octal, hex, floats,
/// leading zeros, dates, versions), which are left to the general parser.
fn resolve_plain(s: &str) -> Option<Value> {
    match s {
        "~" | "null" | "Null" | "NULL" => return Some(Value::Null),
        _ => {}
    }
    for (words, b) in [
        (["true", "yes", "y", "on"], true),
        (["false", "no", "n", "off"], false),
    ] {
        if words.iter().any(|w| s.eq_ignore_ascii_case(w)) {
            return Some(Value::Bool(b));
        }
    }
    let first = *s.as_bytes().first()?;
    if s.trim_start_matches(['+', '-']).starts_with('.') {
        return None; // `.inf`, `-.5`, `.nan`
    }
    let numeric_alphabet = |b: u8| b.is_ascii_hexdigit() || b"xXoO+-._".contains(&b);
    if (first.is_ascii_digit() || matches!(first, b'+' | b'-' | b'.'))
        && s.bytes().all(numeric_alphabet)
    {
        let unsigned = s.strip_prefix('-').unwrap_or(s);
        let (whole, fraction) = match unsigned.split_once('.') {
            Some((w, f)) => (w, Some(f)),
            None => (unsigned, None),
        };
        let decimal =
            |d: &str| !d.is_empty() && d.len() <= 15 && d.bytes().all(|b| b.is_ascii_digit());
        if !decimal(whole) || (whole != "0" && whole.starts_with('0')) {
            return None;
        }
        return match fraction {
            None => s.parse::<i64>().ok().map(Value::Int),
            Some(f) if decimal(f) => s.parse::<f64>().ok().map(Value::Float),
            Some(_) => None,
        };
    }
    Some(Value::Str(s.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::yaml::parse_general;

    fn file() -> Arc<str> {
        Arc::from("m.yaml")
    }

    /// Where the fast path accepts, its tree (values and spans) must equal the
    /// general parser's.
    fn agree(text: &str) -> bool {
        let Some(fast) = parse(&file(), text) else {
            return false;
        };
        match parse_general(&file(), text) {
            Ok(general) => assert_eq!(fast, general, "trees differ for:\n{text}"),
            Err(e) => panic!("fast path accepted what the general parser refuses ({e}):\n{text:?}"),
        }
        true
    }

    const ACCEPTED: &[&str] = &[
        "a: 1\n",
        "a: 1\nb: two\nc:\nd: 'it''s'\ne: \"q \\\"x\\\" \\n\"\n",
        "vars:\n  a: 1\n  list: [x, y, 3]\n  empty: []\n  spaced: [ a , b ]\n",
        "f: yes\ng: ~\nh: Off\ni: NULL\nj: -12\nk: 0\n",
        "h: |\n  line1\n\n   indented\n  line2\ni: |-\n  only\nj: x\n",
        "h: |\n  a\n\n\nk: v\n",
        "- a\n- b\n",
        "resources:\n  - file: /etc/a   # trailing\n    mode: \"0644\"\n    requires:\n      - file[/etc/b]\n  -\n    file: /etc/b\n  - - nested\n    - seq\n",
        "list:\n- a\n- b\nnext: 1\n",
        "list:\n- file: x\n  mode: y\n- file: z\nafter:\n  - 1\n",
        "# c\n---\n# c2\na:   b  \n\n\n",
        "key: value # comment\n\"quoted key\": 1\n'single': 2\n",
        "a:\n  b:\n    c:\n      d: deep\n  e: f\n",
        "- - - x\n    - y\n  - z\n",
        "é: ü\nname: \"ünïcode\" # c\nx: ü\n",
        "a: b#c\nurl: http://x/y\nw: file[/etc/a]\n",
        "c: |\n  # not a comment\n  x\nd: 1\n",
        "- a: |\n    text\n  b: 2\n",
        "h: |\n  last line without a newline",
        "h: |-\n  x\n  y",
        "k: v",
        "a: # c\n  b: 1\nc: # c\n- x\n",
        "p: 3.0\nq: -0.25\nr: 10.5 # c\nm: 256M\nt: 10s\nv: 1.2.3-rc1\n",
        "env:\n  dev: { log_level: debug, conf_mode: \"0664\" }\n  prod: {}\n  x: {a: 1,b: 'q'}\n",
        "l: [\"a\", 'b', c ,d]\n",
    ];

    const DECLINED: &[&str] = &[
        "a: &x 1\nb: *x\n",
        "a: !!str 1\n",
        "a: {b: {c: 1}}\n",
        "on: 1\n",
        "1: one\n",
        "true: a\n\"true\": b\n",
        "m: {true: a, \"true\": b}\n",
        "a: {b: 1, b: 2}\n",
        "a: [x,]\n",
        "a: {b: 1\n",
        "a: >\n  folded\n",
        "a: 0644\n",
        "a: 0x1f\n",
        "a: 1.5e3\n",
        "a: 1.\n",
        "a: .5\n",
        "a: 1_000\n",
        "a: 2024-01-01\n",
        "a: plain\n  continued\n",
        "a: \"multi\n  line\"\n",
        "a: 1\na: 2\n",
        "a: 1\r\n",
        "a:\t1\n",
        "a: [x, [y]]\n",
        "a: b: c\n",
        "---\na: 1\n---\nb: 2\n",
        "a:\n    b: 1\n  c: 2\n",
        "- a\nb: c\n",
        "a: 1\n- b\n",
        "just a scalar\n",
        "a: |2\n   x\n",
        "a: |\n\n  x\n",
        "? complex\n: key\n",
        "a: \"\\x41\"\n",
        "<<: {a: 1}\n",
        "a: .inf\n",
        "a: -x\n",
    ];

    #[test]
    fn agrees_with_general_parser() {
        for text in ACCEPTED {
            assert!(agree(text), "the fast path declined:\n{text}");
        }
        for text in DECLINED {
            assert!(
                parse(&file(), text).is_none(),
                "the fast path accepted:\n{text}"
            );
        }
    }

    /// Texts nested `levels` deep in each nesting form the parsers know.
    fn nested(levels: usize) -> Vec<String> {
        let compact = format!("{}x\n", "- ".repeat(levels));
        let mut block_seq = String::new();
        for i in 0..levels {
            block_seq.push_str(&format!("{}-\n", "  ".repeat(i)));
        }
        block_seq.push_str(&format!("{}x\n", "  ".repeat(levels)));
        let mut block_map = String::new();
        for i in 0..levels - 1 {
            block_map.push_str(&format!("{}k:\n", "  ".repeat(i)));
        }
        block_map.push_str(&format!("{}k: x\n", "  ".repeat(levels - 1)));
        let mut with_flow = String::new();
        for i in 0..levels - 2 {
            with_flow.push_str(&format!("{}k:\n", "  ".repeat(i)));
        }
        with_flow.push_str(&format!("{}k: {{a: 1}}\n", "  ".repeat(levels - 2)));
        let flow_only = format!(
            "k: {}1{}\n",
            "{a: ".repeat(levels - 1),
            "}".repeat(levels - 1)
        );
        let mixed = format!("- k:\n  - {}x\n", "- ".repeat(levels - 3));
        vec![compact, block_seq, block_map, with_flow, flow_only, mixed]
    }

    /// Up to [`MAX_DEPTH`] levels both parsers build the same tree; one more, the fast
    /// path declines and the general parser says where nesting went too deep.
    #[test]
    fn depth_limit_is_the_same_in_both_parsers() {
        for text in nested(MAX_DEPTH) {
            if parse(&file(), &text).is_some() {
                assert!(agree(&text));
            } else {
                assert!(parse_general(&file(), &text).is_ok(), "refused:\n{text}");
            }
        }
        assert!(
            agree(&nested(MAX_DEPTH)[0]),
            "compact nesting is in the fast subset"
        );
        for text in nested(MAX_DEPTH + 1) {
            assert!(parse(&file(), &text).is_none(), "accepted:\n{text}");
            let err = parse_general(&file(), &text)
                .err()
                .map(|d| d.to_string())
                .unwrap_or_default();
            assert!(err.contains("nesting too deep"), "{err}\n{text}");
            assert!(err.contains("m.yaml:"), "{err}");
        }
    }

    /// Every YAML file shipped in the repository: where the fast path accepts, it
    /// must agree; and it must accept the examples (else it is no fast path).
    #[test]
    fn agrees_on_every_shipped_yaml_file() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut stack = vec![
            root.join("examples"),
            root.join("tests"),
            root.join("manifests"),
            root.join("modules"),
        ];
        let (mut seen, mut fast) = (0, 0);
        let mut declined_examples = Vec::new();
        while let Some(dir) = stack.pop() {
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries.flatten() {
                let path = entry.path();
                if path.is_dir() {
                    stack.push(path);
                } else if matches!(
                    path.extension().and_then(|e| e.to_str()),
                    Some("yaml" | "yml")
                ) {
                    let Ok(text) = std::fs::read_to_string(&path) else {
                        continue;
                    };
                    seen += 1;
                    if agree(&text) {
                        fast += 1;
                    } else if path.starts_with(root.join("examples")) {
                        declined_examples.push(path.display().to_string());
                    }
                }
            }
        }
        assert!(seen > 20, "found only {seen} YAML files");
        assert!(
            declined_examples.is_empty(),
            "the fast path declined shipped examples: {declined_examples:?}"
        );
        assert!(
            fast * 2 > seen,
            "fast path took only {fast} of {seen} files"
        );
    }

    /// Random small edits of accepted texts (a character inserted, deleted or
    /// replaced, a line re-indented or duplicated): wherever the fast path still
    /// accepts, the general parser must build the same tree. Deterministic seed.
    #[test]
    fn agrees_under_random_edits() {
        const ALPHABET: &[u8] = b" :-#\"'\n[]{},|>&*!0.1ayx~\\";
        // FASTYAML_ROUNDS=1000000 FASTYAML_SEED=n fuzzes longer, from another seed.
        let env = |name: &str| std::env::var(name).ok().and_then(|v| v.parse::<u64>().ok());
        let rounds = env("FASTYAML_ROUNDS").unwrap_or(4000);
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15 ^ env("FASTYAML_SEED").unwrap_or(0);
        let mut next = move |bound: usize| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            usize::try_from(state % bound as u64).unwrap_or(0)
        };
        let mut accepted = 0;
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let examples: Vec<String> = [
            "examples/quickstart/site.yaml",
            "examples/hardening/site.yaml",
        ]
        .iter()
        .filter_map(|p| std::fs::read_to_string(root.join(p)).ok())
        .collect();
        let mut bases: Vec<&str> = ACCEPTED.to_vec();
        bases.extend(examples.iter().map(String::as_str));
        for round in 0..rounds {
            let base = bases[usize::try_from(round).unwrap_or(0) % bases.len()];
            let mut bytes = base.as_bytes().to_vec();
            for _ in 0..1 + next(3) {
                let at = next(bytes.len() + 1);
                match next(5) {
                    0 if at < bytes.len() => {
                        bytes.remove(at);
                    }
                    1 if at < bytes.len() => bytes[at] = ALPHABET[next(ALPHABET.len())],
                    2 => {
                        for _ in 0..1 + next(3) {
                            bytes.insert(at.min(bytes.len()), b' ');
                        }
                    }
                    3 => {
                        let lines: Vec<&[u8]> = base.as_bytes().split(|&b| b == b'\n').collect();
                        let line = lines[next(lines.len())].to_vec();
                        let mut copy = line;
                        copy.push(b'\n');
                        let at = at.min(bytes.len());
                        bytes.splice(at..at, copy);
                    }
                    _ => bytes.insert(at.min(bytes.len()), ALPHABET[next(ALPHABET.len())]),
                }
            }
            let Ok(text) = String::from_utf8(bytes) else {
                continue;
            };
            if text.trim().is_empty() {
                continue;
            }
            if agree(&text) {
                accepted += 1;
            }
        }
        assert!(
            accepted > 500,
            "only {accepted} edits stayed in the fast subset"
        );
    }
}
