//! Diagnostics for manifest problems: every one names `file:line:column` and the field,
//! and all of a run's problems are collected before anything is refused.
//!
//! Shown to a person, a diagnostic also quotes its source line with a caret under
//! the offending text, as rustc does ([`Diagnostics::render`]). Lines that may hold a
//! secret are never quoted: the loader marks them ([`hide_lines`], [`hide_file`]) from
//! the parsed tree before any diagnostic can be shown, and for those only the
//! location is printed.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, LazyLock, Mutex, MutexGuard};

/// A place in a manifest or template file.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Span {
    pub file: Arc<str>,
    pub line: u32,
    pub column: u32,
}

impl Span {
    pub fn new(file: Arc<str>, line: u32, column: u32) -> Span {
        Span { file, line, column }
    }

    pub fn file_only(file: Arc<str>) -> Span {
        Span {
            file,
            line: 0,
            column: 0,
        }
    }
}

impl fmt::Display for Span {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}", self.file)
        } else {
            write!(f, "{}:{}:{}", self.file, self.line, self.column)
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Error,
    Warning,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnostic {
    pub severity: Severity,
    pub span: Option<Span>,
    pub field: Option<String>,
    pub message: String,
    /// Other places involved (the first definition of a duplicate, the rest of a cycle).
    pub related: Vec<(Span, String)>,
}

impl Diagnostic {
    pub fn error(span: Option<Span>, message: impl Into<String>) -> Diagnostic {
        Diagnostic {
            severity: Severity::Error,
            span,
            field: None,
            message: message.into(),
            related: Vec::new(),
        }
    }

    pub fn warning(span: Option<Span>, message: impl Into<String>) -> Diagnostic {
        Diagnostic {
            severity: Severity::Warning,
            ..Diagnostic::error(span, message)
        }
    }

    pub fn field(mut self, field: impl Into<String>) -> Diagnostic {
        self.field = Some(field.into());
        self
    }

    pub fn related(mut self, span: Span, note: impl Into<String>) -> Diagnostic {
        self.related.push((span, note.into()));
        self
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let level = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        write!(f, "{level}: ")?;
        if let Some(span) = &self.span {
            write!(f, "{span}: ")?;
        }
        if let Some(field) = &self.field {
            write!(f, "field `{field}`: ")?;
        }
        write!(f, "{}", self.message)?;
        for (span, note) in &self.related {
            write!(f, "\n  note: {span}: {note}")?;
        }
        Ok(())
    }
}

impl Diagnostic {
    /// The source line this diagnostic points at, unless it is unknown or hidden.
    pub fn snippet(&self) -> Quote {
        match &self.span {
            Some(span) if span.line > 0 => quote(span),
            _ => Quote::None,
        }
    }

    /// The text, with the quoted source line and caret under the header line.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let level = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        out.push_str(level);
        out.push_str(": ");
        if let Some(span) = &self.span {
            out.push_str(&format!("{span}: "));
        }
        if let Some(field) = &self.field {
            out.push_str(&format!("field `{field}`: "));
        }
        out.push_str(&self.message);
        match self.snippet() {
            Quote::Line(s) => {
                let number = s.line.to_string();
                let pad = " ".repeat(number.len());
                out.push_str(&format!(
                    "\n{pad} |\n{number} | {}\n{pad} | {}{}",
                    s.text,
                    " ".repeat(s.start),
                    "^".repeat(s.length.max(1))
                ));
            }
            Quote::Hidden => {
                out.push_str(&format!("\n  = the line is not shown: {}", HIDDEN_REASON))
            }
            Quote::None => {}
        }
        for (span, note) in &self.related {
            out.push_str(&format!("\n  note: {span}: {note}"));
        }
        out
    }
}

/// Why a line is not quoted (the same words for every hidden line: which rule hid it
/// would itself say something about the line).
pub const HIDDEN_REASON: &str =
    "it may hold a secret (a `secret: true` resource, a password, a variable, a module's parameters or an anchor)";

/// What a diagnostic can quote of its source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Quote {
    /// No source known (command line, a file not kept, no line).
    None,
    /// The line may hold a secret: only the location is shown.
    Hidden,
    Line(Snippet),
}

/// One source line, made safe to print, and where the caret goes on it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Snippet {
    pub line: u32,
    /// The line with tabs expanded and control characters replaced, cut around the
    /// column when it is very long.
    pub text: String,
    /// Characters of `text` before the caret.
    pub start: usize,
    /// Characters under the caret (at least one).
    pub length: usize,
}

/// A source file kept for quoting, and which of its lines must never be quoted.
struct Source {
    text: String,
    /// Where the text can be read again, and how to know it is the same: after loading, the texts of
    /// manifests are let go (at 100,000 resources they were 15 MB of a no-op check's
    /// peak) and read back only when a line is quoted, if the file is unchanged.
    from: Option<(std::path::PathBuf, Identity)>,
    /// The text was let go; `from` reads it back.
    released: bool,
    /// Read back, the file had changed: none of its lines is quoted.
    vanished: bool,
    /// Byte offset where each line starts; built on first use.
    starts: Option<Vec<usize>>,
    hidden: Vec<(u32, u32)>,
    all_hidden: bool,
    /// Finds the lines of `text` that may hold a secret (`None`: all of them), run on
    /// first use: only a run that quotes a line pays for it.
    hider: Option<Hider>,
}

/// See [`Source::hider`].
pub type Hider = fn(&str) -> Option<Vec<(u32, u32)>>;

/// Sources by shown file name. Diagnostics are made in every layer (decoding, the
/// graph, resources, validators) from a `Span` alone; the loader is the only place
/// that holds the text, so it registers the text here once rather than threading it
/// through every layer that might report a problem.
static SOURCES: LazyLock<Mutex<HashMap<Arc<str>, Source>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));

fn sources() -> MutexGuard<'static, HashMap<Arc<str>, Source>> {
    SOURCES
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Keeps `text` as the source of `file`. Registering a file again (a template read
/// for manifests in two folders) replaces its text but keeps what was hidden:
/// hiding is never undone.
pub fn register_source(file: &Arc<str>, text: String) {
    register_source_hidden_by(file, text, None);
}

/// As [`register_source`], with the function that finds its secret lines, run the
/// first time a line of it would be quoted.
pub fn register_source_hidden_by(file: &Arc<str>, text: String, hider: Option<Hider>) {
    register(file, text, None, hider);
}

/// As [`register_source_hidden_by`], for a file that [`release_sources`] may let go
/// of: it is read back from `path` when a line of it is quoted.
pub fn register_source_from(
    file: &Arc<str>,
    text: String,
    path: &std::path::Path,
    hider: Option<Hider>,
) {
    let from = Identity::of(path, text.len()).map(|id| (path.to_path_buf(), id));
    register(file, text, from, hider);
}

/// What tells a file read back from the one loaded: size, modification time and
/// inode (hashing every manifest again cost 8% of a no-op check at 100,000 files).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Identity {
    len: u64,
    mtime: (i64, i64),
    inode: (u64, u64),
}

impl Identity {
    fn of(path: &std::path::Path, len: usize) -> Option<Identity> {
        use std::os::unix::fs::MetadataExt;
        let meta = std::fs::metadata(path).ok()?;
        (meta.len() == len as u64).then(|| Identity {
            len: meta.len(),
            mtime: (meta.mtime(), meta.mtime_nsec()),
            inode: (meta.dev(), meta.ino()),
        })
    }
}

/// Lets go of the texts that can be read back (see [`Source::from`]); for when the
/// manifests are loaded and few diagnostics remain likely.
pub fn release_sources() {
    for src in sources().values_mut() {
        if src.from.is_some() && !src.released {
            src.text = String::new();
            src.starts = None;
            src.released = true;
        }
    }
}

fn register(
    file: &Arc<str>,
    text: String,
    from: Option<(std::path::PathBuf, Identity)>,
    hider: Option<Hider>,
) {
    let mut map = sources();
    let (hidden, all_hidden) = map
        .remove(file)
        .map(|old| (old.hidden, old.all_hidden))
        .unwrap_or_default();
    map.insert(
        file.clone(),
        Source {
            text,
            from,
            released: false,
            vanished: false,
            starts: None,
            hidden,
            all_hidden,
            hider,
        },
    );
}

/// Never quote lines `from..=to` of `file`.
pub fn hide_lines(file: &str, from: u32, to: u32) {
    if let Some(src) = sources().get_mut(file) {
        src.hidden.push((from, to.max(from)));
    }
}

/// Never quote any line of `file` (also a file not registered yet: hiding wins).
pub fn hide_file(file: &Arc<str>) {
    let mut map = sources();
    match map.get_mut(file) {
        Some(src) => src.all_hidden = true,
        None => {
            map.insert(
                file.clone(),
                Source {
                    text: String::new(),
                    from: None,
                    released: false,
                    vanished: false,
                    starts: None,
                    hidden: Vec::new(),
                    all_hidden: true,
                    hider: None,
                },
            );
        }
    }
}

/// Whether `file` has a hidden line in `from..=to` (or is hidden as a whole).
pub fn is_hidden(file: &str, line: u32) -> bool {
    sources().get_mut(file).is_some_and(|s| s.hides(line))
}

/// The raw text of the token at `span` (a scalar as written, a key), when its line is
/// known and may be shown. For hints that should repeat what was written.
pub fn token_at(span: &Span) -> Option<String> {
    let mut map = sources();
    let src = map.get_mut(&*span.file)?;
    let line = src.line(span.line)?.to_string();
    if src.hides(span.line) {
        return None;
    }
    let (start, len) = token_extent(&line, span.column);
    Some(line.chars().skip(start).take(len).collect())
}

impl Source {
    /// Reads a released text back; a file that changed since it was loaded is never
    /// quoted (its lines would not be the ones the diagnostic is about).
    fn read_back(&mut self) {
        if !self.released {
            return;
        }
        self.released = false;
        let Some((path, identity)) = self.from.take() else {
            return;
        };
        let same = |bytes: &Vec<u8>| Identity::of(&path, bytes.len()) == Some(identity);
        match std::fs::read(&path) {
            Ok(bytes) if same(&bytes) => {
                self.text = String::from_utf8(bytes)
                    .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned());
            }
            _ => self.vanished = true,
        }
    }

    fn hides(&mut self, line: u32) -> bool {
        // The hider reads the text: it must be back first.
        self.read_back();
        if let Some(hider) = self.hider.take() {
            match hider(&self.text) {
                Some(ranges) => self.hidden.extend(ranges),
                None => self.all_hidden = true,
            }
        }
        self.all_hidden || self.hidden.iter().any(|&(a, b)| (a..=b).contains(&line))
    }

    fn line(&mut self, line: u32) -> Option<&str> {
        self.read_back();
        if self.vanished {
            return None;
        }
        let text = &self.text;
        let starts = self.starts.get_or_insert_with(|| {
            std::iter::once(0)
                .chain(text.match_indices('\n').map(|(i, _)| i + 1))
                .collect()
        });
        let i = usize::try_from(line).ok()?.checked_sub(1)?;
        let from = *starts.get(i)?;
        let to = starts.get(i + 1).map_or(text.len(), |&n| n - 1);
        let raw = text.get(from..to)?;
        Some(raw.strip_suffix('\r').unwrap_or(raw))
    }
}

/// Longest line quoted in full; longer ones are cut around the column.
const MAX_QUOTED_CHARS: usize = 160;

fn quote(span: &Span) -> Quote {
    let mut map = sources();
    let Some(src) = map.get_mut(&*span.file) else {
        return Quote::None;
    };
    if src.hides(span.line) {
        return Quote::Hidden;
    }
    let Some(raw) = src.line(span.line) else {
        return Quote::None;
    };
    let (token_start, token_len) = token_extent(raw, span.column);
    // Expand tabs and neuter control characters (a manifest must not drive the
    // terminal), keeping track of where the caret's characters land.
    let mut text = String::new();
    let (mut start, mut end) = (None, None);
    let mut width: usize = 0;
    for (i, c) in raw.chars().enumerate() {
        if i == token_start {
            start = Some(width);
        }
        if i == token_start + token_len {
            end = Some(width);
        }
        match c {
            '\t' => {
                text.push_str("    ");
                width += 4;
            }
            c if c.is_control() => {
                text.push(char::REPLACEMENT_CHARACTER);
                width += 1;
            }
            c => {
                text.push(c);
                width += 1;
            }
        }
    }
    // A column past the end of the line (an unclosed quote, end of input) puts the
    // caret just after the last character.
    let start = start.unwrap_or(width);
    let end = end.unwrap_or(width);
    let length = end.saturating_sub(start).max(1);
    let snippet = if width <= MAX_QUOTED_CHARS {
        Snippet {
            line: span.line,
            text: text.trim_end().to_string(),
            start,
            length,
        }
    } else {
        let from = start.saturating_sub(MAX_QUOTED_CHARS / 3);
        let cut: String = text.chars().skip(from).take(MAX_QUOTED_CHARS).collect();
        let lead = if from > 0 { "…" } else { "" };
        let tail = if from + MAX_QUOTED_CHARS < width {
            "…"
        } else {
            ""
        };
        Snippet {
            line: span.line,
            text: format!("{lead}{cut}{tail}"),
            start: start - from + lead.chars().count(),
            length: length.min(MAX_QUOTED_CHARS),
        }
    };
    Quote::Line(snippet)
}

/// The characters (start, count) of the token at 1-based `column` of `line`: a quoted
/// string to its closing quote, a flow collection to its closing bracket, a key to its
/// colon, a plain value to the end of the line or a comment.
fn token_extent(line: &str, column: u32) -> (usize, usize) {
    let chars: Vec<char> = line.chars().collect();
    let start = usize::try_from(column)
        .unwrap_or(1)
        .saturating_sub(1)
        .min(chars.len());
    let rest = &chars[start..];
    let Some(&first) = rest.first() else {
        return (start, 1);
    };
    let len = match first {
        ':' | ',' | ']' | '}' | '\t' => 1,
        '"' | '\'' => {
            let mut i = 1;
            while i < rest.len() {
                if first == '"' && rest[i] == '\\' {
                    i += 2;
                    continue;
                }
                if rest[i] == first {
                    if first == '\'' && rest.get(i + 1) == Some(&'\'') {
                        i += 2;
                        continue;
                    }
                    break;
                }
                i += 1;
            }
            (i + 1).min(rest.len())
        }
        '[' | '{' => {
            let close = if first == '[' { ']' } else { '}' };
            let mut depth = 0usize;
            let mut i = 0;
            while i < rest.len() {
                if rest[i] == first {
                    depth += 1;
                } else if rest[i] == close {
                    depth = depth.saturating_sub(1);
                    if depth == 0 {
                        break;
                    }
                }
                i += 1;
            }
            (i + 1).min(rest.len())
        }
        c if (c.is_alphanumeric() || c == '_') && in_template_tag(&chars[..start]) => rest
            .iter()
            .take_while(|c| c.is_alphanumeric() || matches!(c, '_' | '.'))
            .count(),
        _ => {
            let in_flow = chars[..start].iter().any(|c| matches!(c, '[' | '{'));
            let mut i = 0;
            while i < rest.len() {
                let c = rest[i];
                let next_blank = rest.get(i + 1).is_none_or(|n| n.is_whitespace());
                if c == ':' && next_blank && i > 0 {
                    break;
                }
                if c == '#' && i > 0 && rest[i - 1].is_whitespace() {
                    break;
                }
                if in_flow && matches!(c, ',' | ']' | '}') {
                    break;
                }
                i += 1;
            }
            let token: String = rest[..i].iter().collect();
            token.trim_end().chars().count()
        }
    };
    (start, len.max(1))
}

/// Whether the text before a position leaves it inside a `{{ }}` or `{% %}` tag.
fn in_template_tag(before: &[char]) -> bool {
    let text: String = before.iter().collect();
    let opened = text.rfind("{{").max(text.rfind("{%"));
    let closed = text.rfind("}}").max(text.rfind("%}"));
    match (opened, closed) {
        (Some(o), Some(c)) => o > c,
        (Some(_), None) => true,
        _ => false,
    }
}

/// The closest of `known` to `name` when it is close enough to be a likely typo:
/// the same but for case, or within two edits and fewer than half of `name`'s
/// characters.
pub fn closest<'k>(name: &str, known: impl IntoIterator<Item = &'k str>) -> Option<&'k str> {
    let limit = (name.chars().count() / 2).clamp(1, 2);
    closest_within(name, known, limit)
}

/// The closest of `known` to `name` within `limit` edits (a match but for case counts
/// as no edit); ties go to the first.
pub fn closest_within<'k>(
    name: &str,
    known: impl IntoIterator<Item = &'k str>,
    limit: usize,
) -> Option<&'k str> {
    let mut best: Option<(usize, &'k str)> = None;
    for k in known {
        if k == name {
            continue;
        }
        let d = if k.eq_ignore_ascii_case(name) {
            Some(0)
        } else {
            bounded_distance(name, k, limit)
        };
        if let Some(d) = d {
            if best.is_none_or(|(b, _)| d < b) {
                best = Some((d, k));
            }
        }
    }
    best.map(|(_, k)| k)
}

/// Levenshtein distance in characters, when it is at most `limit`. Gives up as soon
/// as it cannot be: thousands of declared names are compared against each typo.
pub fn bounded_distance(a: &str, b: &str, limit: usize) -> Option<usize> {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    if a.len().abs_diff(b.len()) > limit {
        return None;
    }
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut cur = Vec::with_capacity(b.len() + 1);
        cur.push(i + 1);
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != cb);
            cur.push((prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        if cur.iter().min().is_some_and(|&m| m > limit) {
            return None;
        }
        prev = cur;
    }
    prev.last().copied().filter(|&d| d <= limit)
}

/// All problems found in one run.
#[derive(Debug, Default, Clone)]
pub struct Diagnostics(pub Vec<Diagnostic>);

impl Diagnostics {
    pub fn push(&mut self, d: Diagnostic) {
        self.0.push(d);
    }

    pub fn has_errors(&self) -> bool {
        self.0.iter().any(|d| d.severity == Severity::Error)
    }

    pub fn errors(&self) -> impl Iterator<Item = &Diagnostic> {
        self.0.iter().filter(|d| d.severity == Severity::Error)
    }

    pub fn warnings(&self) -> impl Iterator<Item = &Diagnostic> {
        self.0.iter().filter(|d| d.severity == Severity::Warning)
    }

    pub fn extend(&mut self, other: Diagnostics) {
        self.0.extend(other.0);
    }

    /// Every diagnostic with its source line quoted (see [`Diagnostic::render`]),
    /// then the count: what `Display` shows. For people; logs and the audit trail
    /// take each `Diagnostic`'s one-line `Display` instead.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for d in &self.0 {
            out.push_str(&d.render());
            out.push('\n');
        }
        out.push_str(&self.summary());
        out
    }

    fn summary(&self) -> String {
        let errors = self.errors().count();
        if errors == 0 {
            return String::new();
        }
        format!(
            "{errors} error{} in the manifests; nothing was changed.",
            if errors == 1 { "" } else { "s" }
        )
    }
}

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.render())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(file: &str, line: u32, column: u32) -> Diagnostic {
        Diagnostic::error(Some(Span::new(Arc::from(file), line, column)), "m").field("f")
    }

    #[test]
    fn a_released_manifest_is_quoted_from_disk_and_not_at_all_once_it_changed(
    ) -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("released.yaml");
        std::fs::write(&path, "resources:\n  - file: /etc/x\n")?;
        let shown: Arc<str> = Arc::from(format!("{}", path.display()));
        register_source_from(&shown, std::fs::read_to_string(&path)?, &path, None);
        release_sources();
        let token = Span::new(shown.clone(), 2, 11);
        assert_eq!(token_at(&token).as_deref(), Some("/etc/x"));
        let other = dir.path().join("changed.yaml");
        std::fs::write(&other, "resources:\n  - file: /etc/x\n")?;
        let shown: Arc<str> = Arc::from(format!("{}", other.display()));
        register_source_from(&shown, std::fs::read_to_string(&other)?, &other, None);
        release_sources();
        std::fs::write(&other, "resources:\n  - file: /etc/changed-meanwhile\n")?;
        assert_eq!(token_at(&Span::new(shown, 2, 11)), None);
        Ok(())
    }

    #[test]
    fn tokens_are_underlined_whole() {
        let line = r#"  a: "x \" y" # c"#;
        assert_eq!(token_extent(line, 6), (5, 8));
        assert_eq!(token_extent("  k: [a, [b]], x", 6), (5, 8));
        assert_eq!(token_extent("  owner: root # comment", 3), (2, 5));
        assert_eq!(token_extent("  owner: root # comment", 10), (9, 4));
        assert_eq!(token_extent("k: {a: b, c: d}", 5), (4, 1));
        assert_eq!(token_extent("x = {{ var.name }} y", 8), (7, 8));
        assert_eq!(token_extent("short", 40), (5, 1));
    }

    #[test]
    fn a_quoted_line_is_made_safe_and_the_caret_follows_tabs() {
        let file: Arc<str> = Arc::from("diag-safe.yaml");
        register_source(&file, "a:\n\tb: \u{1b}[31mred\n".into());
        let out = at("diag-safe.yaml", 2, 5).render();
        assert!(!out.contains('\u{1b}'), "{out}");
        assert!(
            out.contains("2 |     b: \u{fffd}[31mred\n  |        ^^^^^^^^"),
            "{out}"
        );
    }

    #[test]
    fn hidden_lines_show_only_the_place_and_hiding_survives_a_second_read() {
        let file: Arc<str> = Arc::from("diag-hidden.yaml");
        register_source(&file, "a: 1\nb: s3cr3t\n".into());
        hide_lines(&file, 2, 2);
        assert!(matches!(
            at("diag-hidden.yaml", 1, 4).snippet(),
            Quote::Line(_)
        ));
        assert_eq!(at("diag-hidden.yaml", 2, 4).snippet(), Quote::Hidden);
        let out = at("diag-hidden.yaml", 2, 4).render();
        assert!(
            !out.contains("s3cr3t") && out.contains("not shown"),
            "{out}"
        );
        let template: Arc<str> = Arc::from("diag-hidden.tera");
        register_source(&template, "s3cr3t\n".into());
        hide_file(&template);
        register_source(&template, "s3cr3t\n".into());
        assert_eq!(at("diag-hidden.tera", 1, 1).snippet(), Quote::Hidden);
        assert_eq!(token_at(&Span::new(file, 2, 4)), None);
    }

    #[test]
    fn close_names() {
        assert_eq!(
            closest("log_levle", ["log_level", "app"]),
            Some("log_level")
        );
        assert_eq!(closest("WantedBy", ["wantedby"]), Some("wantedby"));
        assert_eq!(closest("zzz", ["log_level"]), None);
        assert_eq!(bounded_distance("kitten", "sitting", 3), Some(3));
        assert_eq!(bounded_distance("kitten", "sitting", 2), None);
    }
}
