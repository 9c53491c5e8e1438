//! Tera templating, strict: an undefined variable is an error naming the template and line.

use std::collections::HashMap;
use std::sync::Arc;

use crate::diag::{Diagnostic, Span};

/// Most bytes one template (a file or an inline value) may render to: the same bound
/// as a manifest. Past it rendering stops, instead of growing until memory runs out.
pub const MAX_RENDERED_BYTES: usize = 64 * 1024 * 1024;

/// Most numbers one `range()` may produce: Tera builds the whole list before the loop
/// runs (`range(end=100000000)` alone was 3 GB).
pub const MAX_RANGE_ITEMS: usize = 1_000_000;

/// Deepest nesting of `if`/`for`/`macro`/`block`/`filter` blocks in one template, and
/// most brackets and operators one tag may hold. Tera parses, evaluates and drops
/// each level recursively (20,000 nested `if`s or a chain of 20,000 `+` overflowed a
/// 64 MiB stack); these bounds keep it a few hundred frames deep.
pub const MAX_TEMPLATE_BLOCKS: usize = 100;
pub const MAX_TAG_NESTING: usize = 200;

/// Tera registers its inline templates under this name (kept so messages match Tera's).
const INLINE_NAME: &str = "__tera_one_off";

pub struct Templates {
    /// Template files, by shown path.
    tera: tera::Tera,
    /// Inline strings and `when:` conditions, one at a time (Tera's `one_off`, with our
    /// restricted functions).
    inline: tera::Tera,
    context: tera::Context,
    /// Inline strings already rendered (manifests repeat `{{ svc_user }}` a lot).
    inline_cache: HashMap<String, Result<String, String>>,
    /// Template files already rendered, by path.
    file_cache: HashMap<String, Arc<str>>,
}

impl Templates {
    pub fn new(
        vars: &serde_json::Map<String, serde_json::Value>,
        host: serde_json::Value,
    ) -> Templates {
        let mut context = tera::Context::new();
        for (k, v) in vars {
            context.insert(k.as_str(), v);
        }
        context.insert("host", &host);
        Templates {
            tera: restricted_tera(),
            inline: restricted_tera(),
            context,
            inline_cache: HashMap::new(),
            file_cache: HashMap::new(),
        }
    }

    pub fn needs_render(s: &str) -> bool {
        has_pair(s, b'{', b"{%")
    }

    /// Renders a string value from a manifest; the span is the value's place.
    pub fn render_inline(&mut self, text: &str, span: &Span) -> Result<String, Diagnostic> {
        if !Self::needs_render(text) {
            return Ok(text.to_string());
        }
        if let Some(done) = self.substitute(text) {
            return Ok(done);
        }
        let result = match self.inline_cache.get(text) {
            Some(r) => r.clone(),
            None => {
                let r = self.render_inline_uncached(text);
                self.inline_cache.insert(text.to_string(), r.clone());
                r
            }
        };
        result.map_err(|msg| Diagnostic::error(Some(span.clone()), format!("template: {msg}")))
    }

    fn render_inline_uncached(&mut self, text: &str) -> Result<String, String> {
        check_shape(text).map_err(|(_, msg)| msg)?;
        self.inline
            .add_raw_template(INLINE_NAME, text)
            .map_err(|e| explain(&e))?;
        render_bounded(&self.inline, INLINE_NAME, &self.context)
    }

    /// The fast path for the common case, text with `{{ name }}` / `{{ a.b }}` whose
    /// values are strings: substituted directly, without parsing a Tera template per
    /// distinct string (a 100,000-path manifest spent half its load time there).
    /// `None` means "let Tera do it" -- anything else (filters, tags, comments,
    /// whitespace control, non-string or undefined values, keywords) goes to Tera,
    /// so errors and every other output are exactly Tera's.
    fn substitute(&self, text: &str) -> Option<String> {
        if has_pair(text, b'{', b"%#") {
            return None;
        }
        let mut out = String::with_capacity(text.len());
        let mut rest = text;
        while let Some(start) = rest.find("{{") {
            out.push_str(&rest[..start]);
            let after = &rest[start + 2..];
            let end = after.find("}}")?;
            let expr = after[..end].trim_matches([' ', '\t', '\r', '\n']);
            out.push_str(self.lookup_string(expr)?);
            rest = &after[end + 2..];
        }
        out.push_str(rest);
        Some(out)
    }

    /// A string variable named by a plain dotted path, or `None`.
    fn lookup_string(&self, expr: &str) -> Option<&str> {
        let mut parts = expr.split('.');
        let first = parts.next()?;
        if !is_plain_ident(first) {
            return None;
        }
        let mut value = self.context.get(first)?;
        for key in parts {
            if !is_plain_ident(key) {
                return None;
            }
            value = value.as_object()?.get(key)?;
        }
        value.as_str()
    }

    /// Evaluates a `when:` expression to a boolean.
    pub fn eval_condition(&mut self, expr: &str, span: &Span) -> Result<bool, Diagnostic> {
        let text = format!("{{% if {expr} %}}true{{% else %}}false{{% endif %}}");
        let out = self
            .render_inline_uncached(&text)
            .map_err(|msg| Diagnostic::error(Some(span.clone()), format!("condition: {msg}")))?;
        Ok(out == "true")
    }

    /// Renders a template file; errors name the template file and, where it can be
    /// found, the line of the offending expression.
    pub fn render_file(&mut self, shown_name: &str, source: &str) -> Result<Arc<str>, Diagnostic> {
        if let Some(done) = self.file_cache.get(shown_name) {
            return Ok(done.clone());
        }
        // Templates that only substitute string variables skip Tera's parser (a
        // tenth of a 1,000-file no-op run); anything else, errors included, is Tera's.
        if let Some(out) = self.substitute(source) {
            let out: Arc<str> = Arc::from(out);
            self.file_cache.insert(shown_name.to_string(), out.clone());
            return Ok(out);
        }
        let fail = |msg: String, at: Option<(usize, usize)>| {
            let span = match at {
                Some((l, c)) => Span::new(
                    Arc::from(shown_name),
                    u32::try_from(l).unwrap_or(0),
                    u32::try_from(c).unwrap_or(1),
                ),
                None => Span::file_only(Arc::from(shown_name)),
            };
            Diagnostic::error(Some(span), format!("template: {msg}"))
        };
        check_shape(source).map_err(|(line, msg)| fail(msg, Some((line, 1))))?;
        self.tera
            .add_raw_template(shown_name, source)
            .map_err(|e| fail(explain(&e), parse_error_line(&e)))?;
        let out = render_bounded(&self.tera, shown_name, &self.context).map_err(|msg| {
            let line = missing_variable(&msg).and_then(|var| line_of_variable(source, &var));
            fail(msg, line)
        })?;
        let out: Arc<str> = Arc::from(out);
        self.file_cache.insert(shown_name.to_string(), out.clone());
        Ok(out)
    }
}

/// Refuses, before Tera parses it, a template whose nesting Tera would follow
/// recursively without bound: blocks deeper than [`MAX_TEMPLATE_BLOCKS`], a tag with
/// more than [`MAX_TAG_NESTING`] brackets and operators, a macro that calls macros
/// (recursion that no bound could stop), or `include`/`import`/`extends`. The line of
/// the offending tag and why.
fn check_shape(source: &str) -> Result<(), (usize, String)> {
    let b = source.as_bytes();
    let (mut at, mut line, mut counted) = (0, 1, 0);
    let mut blocks = 0usize;
    // Block depth just outside the macro being defined, if inside one.
    let mut in_macro: Option<usize> = None;
    while let Some(off) = b
        .get(at..)
        .and_then(|rest| rest.iter().position(|&c| c == b'{'))
    {
        let start = at + off;
        line += b
            .get(counted..start)
            .map_or(0, |s| s.iter().filter(|&&c| c == b'\n').count());
        counted = start;
        let close = match b.get(start + 1) {
            Some(b'{') => b'}',
            Some(b'%') => b'%',
            Some(b'#') => {
                at = find(b, start + 2, b"#}").map_or(b.len(), |e| e + 2);
                continue;
            }
            _ => {
                at = start + 1;
                continue;
            }
        };
        let tag = scan_tag(b, start + 2, close);
        at = tag.end;
        let too_deep = |what: String| Err((line, format!("nesting too deep: {what}")));
        if tag.brackets + tag.operators > MAX_TAG_NESTING {
            return too_deep(format!(
                "a tag with more than {MAX_TAG_NESTING} brackets and operators"
            ));
        }
        if close == b'%' {
            match tag.first_word.as_str() {
                "raw" => {
                    at = find(b, at, b"endraw")
                        .and_then(|e| find(b, e, b"%}"))
                        .map_or(b.len(), |e| e + 2);
                }
                "if" | "for" | "macro" | "block" | "filter" => {
                    if tag.first_word == "macro" && in_macro.is_none() {
                        in_macro = Some(blocks);
                    }
                    blocks += 1;
                    if blocks > MAX_TEMPLATE_BLOCKS {
                        return too_deep(format!(
                            "more than {MAX_TEMPLATE_BLOCKS} levels of blocks"
                        ));
                    }
                }
                // Templates are added one by one as resources use them, so another
                // template is there or not depending on the order of resources; and a
                // template including itself recursed until the stack overflowed.
                w @ ("include" | "import" | "extends") => {
                    return Err((
                        line,
                        format!("`{w}` is not supported: each template is rendered on its own; share text through variables, or macros in the same file"),
                    ));
                }
                w if w.starts_with("end") => {
                    blocks = blocks.saturating_sub(1);
                    if in_macro == Some(blocks) {
                        in_macro = None;
                    }
                }
                _ => {}
            }
        }
        if in_macro.is_some() && tag.calls_macro && tag.first_word != "macro" {
            return Err((
                line,
                "a macro may not call macros: recursion could not be bounded".into(),
            ));
        }
    }
    Ok(())
}

/// What [`check_shape`] needs to know about one tag.
struct Tag {
    /// Byte index just past the tag's closing delimiter (or the end of the text).
    end: usize,
    /// Deepest bracket nesting inside it.
    brackets: usize,
    /// Operators in it: each nests one level in Tera's tree.
    operators: usize,
    first_word: String,
    /// Whether it has a `ns::macro` call.
    calls_macro: bool,
}

/// Scans a tag from `from` (just past `{{` or `{%`) to its closing `}}` or `%}`,
/// skipping string literals.
fn scan_tag(b: &[u8], from: usize, close: u8) -> Tag {
    let mut tag = Tag {
        end: b.len(),
        brackets: 0,
        operators: 0,
        first_word: String::new(),
        calls_macro: false,
    };
    let (mut depth, mut i, mut in_operator) = (0usize, from, false);
    let mut word = String::new();
    let mut words_seen = 0;
    while let Some(&c) = b.get(i) {
        if c.is_ascii_alphanumeric() || c == b'_' {
            word.push(char::from(c));
            i += 1;
            continue;
        }
        if !word.is_empty() {
            if words_seen == 0 {
                tag.first_word = std::mem::take(&mut word);
            } else if matches!(word.as_str(), "and" | "or" | "not" | "in" | "is") {
                tag.operators += 1;
            }
            word.clear();
            words_seen += 1;
        }
        let operator = b"+-*/%~<>=!".contains(&c);
        if operator && !in_operator {
            tag.operators += 1;
        }
        in_operator = operator;
        match c {
            _ if c == close && b.get(i + 1) == Some(&b'}') => {
                tag.end = i + 2;
                return tag;
            }
            b'"' | b'\'' | b'`' => {
                i = b
                    .get(i + 1..)
                    .and_then(|rest| rest.iter().position(|&q| q == c))
                    .map_or(b.len(), |e| i + 1 + e);
            }
            b'(' | b'[' | b'{' => {
                depth += 1;
                tag.brackets = tag.brackets.max(depth);
            }
            b')' | b']' | b'}' => depth = depth.saturating_sub(1),
            b':' if b.get(i + 1) == Some(&b':') => tag.calls_macro = true,
            _ => {}
        }
        i += 1;
    }
    tag
}

/// Index of `needle` in `b` at or after `from`.
fn find(b: &[u8], from: usize, needle: &[u8]) -> Option<usize> {
    b.get(from..)?
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|p| from + p)
}

/// A Tera with our limits: no `get_env()` (a manifest must mean the same whoever runs
/// it, from whatever shell; variables come from `vars`, `--env` and `--var`), and a
/// `range()` that refuses to build more than [`MAX_RANGE_ITEMS`] numbers.
fn restricted_tera() -> tera::Tera {
    let mut tera = tera::Tera::default();
    tera.autoescape_on(Vec::new());
    tera.register_function("get_env", |_: &HashMap<String, tera::Value>| {
        Err(tera::Error::msg(
            "`get_env` is disabled: a manifest must not depend on the environment of whoever runs reconcile; use `vars`, `--env` or `--var`",
        ))
    });
    tera.register_function("range", bounded_range);
    tera
}

/// Tera's `range(start=0, end, step_by=1)`, refusing huge ranges before building them.
fn bounded_range(args: &HashMap<String, tera::Value>) -> tera::Result<tera::Value> {
    let arg = |name: &str, default: Option<usize>| -> tera::Result<usize> {
        match args.get(name) {
            Some(v) => tera::from_value::<usize>(v.clone()).map_err(|_| {
                tera::Error::msg(format!(
                    "Function `range` received {name}={v} but `{name}` can only be a number"
                ))
            }),
            None => default.ok_or_else(|| {
                tera::Error::msg(format!(
                    "Function `range` was called without a `{name}` argument"
                ))
            }),
        }
    };
    let start = arg("start", Some(0))?;
    let end = arg("end", None)?;
    let step = arg("step_by", Some(1))?;
    if start > end {
        return Err(tera::Error::msg(
            "Function `range` was called with a `start` argument greater than the `end` one",
        ));
    }
    if step == 0 {
        return Err(tera::Error::msg(
            "Function `range` needs a `step_by` above 0",
        ));
    }
    let count = (end - start).div_ceil(step);
    if count > MAX_RANGE_ITEMS {
        return Err(tera::Error::msg(format!(
            "`range` would produce {count} numbers; at most {MAX_RANGE_ITEMS} are allowed"
        )));
    }
    Ok(tera::to_value(
        (start..end).step_by(step).collect::<Vec<_>>(),
    )?)
}

/// Renders `name` into memory, stopping with an error once the output passes
/// [`MAX_RENDERED_BYTES`] (a loop of 10^8 iterations must fail, not take gigabytes).
fn render_bounded(
    tera: &tera::Tera,
    name: &str,
    context: &tera::Context,
) -> Result<String, String> {
    let mut out = Bounded {
        bytes: Vec::new(),
        exceeded: false,
    };
    if let Err(e) = tera.render_to(name, context, &mut out) {
        if out.exceeded {
            return Err(format!(
                "the output is larger than the limit of {} MiB; rendering stopped there",
                MAX_RENDERED_BYTES / (1024 * 1024)
            ));
        }
        return Err(explain(&e));
    }
    String::from_utf8(out.bytes).map_err(|e| format!("the output is not UTF-8: {e}"))
}

/// A buffer that refuses to grow past [`MAX_RENDERED_BYTES`].
struct Bounded {
    bytes: Vec<u8>,
    exceeded: bool,
}

impl std::io::Write for Bounded {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.bytes.len() + buf.len() > MAX_RENDERED_BYTES {
            self.exceeded = true;
            return Err(std::io::Error::other("template output too large"));
        }
        self.bytes.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Whether `s` has `first` directly followed by one of `seconds` (`{{`, `{%`...),
/// scanning bytes: `str::contains` with a two-byte pattern builds a substring
/// searcher per call, and every string value of every resource is checked.
fn has_pair(s: &str, first: u8, seconds: &[u8]) -> bool {
    s.as_bytes()
        .windows(2)
        .any(|w| w[0] == first && seconds.contains(&w[1]))
}

/// An identifier Tera reads as a variable name (not a literal, operator or magic name).
fn is_plain_ident(s: &str) -> bool {
    const KEYWORDS: &[&str] = &[
        "true", "false", "True", "False", "and", "or", "not", "in", "is", "loop", "self", "super",
    ];
    let mut chars = s.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
    first_ok
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !s.starts_with("__")
        && !KEYWORDS.contains(&s)
}

/// Every message of the error's source chain, as Tera wrote them.
fn chain(e: &tera::Error) -> Vec<String> {
    let mut parts = vec![e.to_string()];
    let mut cur: Option<&dyn std::error::Error> = std::error::Error::source(e);
    while let Some(inner) = cur {
        parts.push(inner.to_string());
        cur = inner.source();
    }
    parts
}

/// A parse error's own quote of the template (` --> 2:8`, `2 | text`, `^---`) taken
/// out, its explanation (`= expected ...`) kept: the diagnostic quotes the line
/// itself, and only where the line may be shown (a secret resource's template is
/// never quoted, so Tera's quote must not slip through in the message).
fn without_quote(part: &str) -> String {
    if !part.contains("\n") {
        return part.to_string();
    }
    let mut lines = part.lines();
    let mut kept: Vec<String> = lines
        .next()
        .filter(|first| !first.trim_start().starts_with("-->"))
        .map(str::to_string)
        .into_iter()
        .collect();
    kept.extend(
        lines
            .filter_map(|l| l.trim_start().strip_prefix("= "))
            .map(str::to_string),
    );
    kept.join(" ")
}

/// Tera hides the useful part of an error in its source chain.
fn explain(e: &tera::Error) -> String {
    let msg = chain(e)
        .iter()
        .map(|p| without_quote(p))
        .filter(|p| !p.starts_with("Failed to render") && !p.trim().is_empty())
        .collect::<Vec<_>>()
        .join(": ");
    let msg = if msg.is_empty() {
        e.to_string()
    } else {
        msg.replace('\n', " ")
    };
    shorten(msg)
}

/// Longest template error message kept: Tera quotes the offending line whole, and a
/// one-line template of megabytes made a message of megabytes.
const MAX_MESSAGE_CHARS: usize = 1_000;

fn shorten(msg: String) -> String {
    match msg.char_indices().nth(MAX_MESSAGE_CHARS) {
        Some((cut, _)) => format!("{}… (message cut)", &msg[..cut]),
        None => msg,
    }
}

fn missing_variable(msg: &str) -> Option<String> {
    let start = msg.find("Variable `")? + "Variable `".len();
    let end = msg[start..].find('`')? + start;
    Some(msg[start..end].to_string())
}

/// The first line, and the character column on it, where `var` appears inside a
/// `{{ }}` or `{% %}` tag.
fn line_of_variable(source: &str, var: &str) -> Option<(usize, usize)> {
    let root = var.split(['.', '[']).next().unwrap_or(var);
    source.lines().enumerate().find_map(|(i, line)| {
        let in_tag = line.contains("{{") || line.contains("{%");
        let at = in_tag.then(|| word_at(line, root)).flatten()?;
        Some((i + 1, line[..at].chars().count() + 1))
    })
}

/// Byte offset of the first whole-word occurrence of `word` in `line`.
fn word_at(line: &str, word: &str) -> Option<usize> {
    line.match_indices(word).map(|(i, _)| i).find(|&i| {
        let before = line[..i].chars().next_back();
        let after = line[i + word.len()..].chars().next();
        let ident = |c: Option<char>| c.is_some_and(|c| c.is_alphanumeric() || c == '_');
        !ident(before) && !ident(after)
    })
}

fn parse_error_line(e: &tera::Error) -> Option<(usize, usize)> {
    // Tera's parse errors embed " --> LINE:COL".
    let msg = chain(e).join("\n");
    let at = msg.find("--> ")? + 4;
    let rest = &msg[at..];
    let (line, col) = rest.split_once(':')?;
    let col: String = col.chars().take_while(char::is_ascii_digit).collect();
    Some((line.trim().parse().ok()?, col.parse().unwrap_or(1)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn templates() -> Templates {
        let mut vars = serde_json::Map::new();
        vars.insert("user".into(), serde_json::Value::String("svc".into()));
        Templates::new(&vars, serde_json::json!({"hostname": "h1"}))
    }

    #[test]
    fn renders_inline_and_files() {
        let mut t = templates();
        let span = Span::file_only(Arc::from("m.yaml"));
        assert_eq!(
            t.render_inline("{{ user }}@{{ host.hostname }}", &span)
                .ok(),
            Some("svc@h1".into())
        );
        let out = t.render_file("a.tera", "x\n{{ user }}\n");
        assert_eq!(out.ok().as_deref(), Some("x\nsvc\n"));
    }

    #[test]
    fn undefined_variable_names_template_and_line() {
        let mut t = templates();
        let err = t.render_file("conf.tera", "line one\nuser={{ user }}\nport={{ port }}\n");
        let err = err.err().map(|d| d.to_string()).unwrap_or_default();
        assert!(err.contains("conf.tera:3:1"), "{err}");
        assert!(err.contains("port"), "{err}");
    }

    #[test]
    fn fast_path_matches_tera() {
        let mut vars = serde_json::Map::new();
        vars.insert("user".into(), serde_json::Value::String("svc".into()));
        vars.insert("port".into(), serde_json::json!(8080));
        vars.insert("flag".into(), serde_json::json!(true));
        vars.insert("true".into(), serde_json::Value::String("x".into()));
        vars.insert(
            "tricky".into(),
            serde_json::Value::String("{{ user }} }}".into()),
        );
        let mut t = Templates::new(
            &vars,
            serde_json::json!({"hostname": "h1", "n": {"a": "b"}}),
        );
        let span = Span::file_only(Arc::from("m.yaml"));
        let cases = [
            "/etc/{{ user }}/x",
            "{{user}}{{ host.hostname }}",
            "a }} b {{ user }}",
            "{{ port }}",
            "{{ flag }}",
            "{{ true }}",
            "{{ tricky }}",
            "{{ host.n.a }}",
            "{{ user | upper }}",
            "{{- user }} x",
            "{{ user }}{# c #}",
            "{% if flag %}{{ user }}{% endif %}",
            "{{ host['hostname'] }}",
            "{{\n user\t}}",
            "{{ missing }}",
            "{{ host.missing }}",
            "{{ user }",
            "{{ __tera_context }}",
        ];
        for case in cases {
            let tera = tera::Tera::one_off(case, &t.context, false).map_err(|e| explain(&e));
            let fast = t.substitute(case);
            if let Some(f) = &fast {
                assert_eq!(Ok(f.clone()), tera, "fast path differs for {case:?}");
            }
            let ours = t.render_inline(case, &span).map_err(|d| d.to_string());
            assert_eq!(ours.is_ok(), tera.is_ok(), "{case:?}");
            if let (Ok(a), Ok(b)) = (&ours, &tera) {
                assert_eq!(a, b, "{case:?}");
            }
        }
        let file = "# managed\nuser = {{ user }}\nhost = {{host.hostname}}\n\n}} {\n";
        let mut tera = tera::Tera::default();
        tera.autoescape_on(Vec::new());
        let by_tera = tera
            .add_raw_template("f", file)
            .and_then(|_| tera.render("f", &t.context))
            .ok();
        assert_eq!(t.render_file("f", file).ok().as_deref(), by_tera.as_deref());
        assert!(t.substitute(file).is_some());
        assert!(t.substitute("/etc/{{ user }}/x").is_some());
        assert!(t.substitute("{{ missing }}").is_none());
    }

    /// Shapes Tera would parse or render recursively without bound are refused with
    /// the line of the tag, in files and inline; ordinary templates still render.
    #[test]
    fn template_shapes_tera_would_recurse_on_are_refused() {
        let n = 20_000;
        let refused = [
            (
                format!("{}x{}", "{% if true %}".repeat(n), "{% endif %}".repeat(n)),
                "1:1",
                "more than 100 levels of blocks",
            ),
            (
                format!("line\n{{{{ {}1 }}}}", "1 + ".repeat(n)),
                "2:1",
                "more than 200 brackets and operators",
            ),
            (
                format!("{{{{ {}1{} }}}}", "(".repeat(n), ")".repeat(n)),
                "1:1",
                "more than 200 brackets and operators",
            ),
            (
                "{% macro f(n) %}\n{{ self::f(n=n) }}{% endmacro f %}{{ self::f(n=1) }}".into(),
                "2:1",
                "a macro may not call macros",
            ),
            (
                "a\n\n{% include \"t.tera\" %}".into(),
                "3:1",
                "`include` is not supported",
            ),
            ("{% import \"m\" as m %}".into(), "1:1", "`import`"),
            ("{% extends \"t.tera\" %}".into(), "1:1", "`extends`"),
        ];
        let span = Span::file_only(Arc::from("m.yaml"));
        for (text, at, why) in refused {
            let mut t = templates();
            let err = t
                .render_file("t.tera", &text)
                .err()
                .map(|d| d.to_string())
                .unwrap_or_default();
            assert!(err.contains(&format!("t.tera:{at}")), "{err}");
            assert!(err.contains(why), "{err}");
            let inline = t.render_inline(&text, &span).err().map(|d| d.to_string());
            assert!(inline.unwrap_or_default().contains(why));
        }
        let fine = "{% macro g(n) %}<{{ n }}>{% endmacro g %}{% raw %}{{ {% if %}{% endraw %}\
            {# {% if x %} #}{{ self::g(n=\"}}\") }}{% for i in [1, 2] %}\
            {% if i == 1 and true or not false %}{{ i + 1 - 2 * 3 }}{% endif %}{% endfor %}";
        let mut t = templates();
        assert_eq!(
            t.render_file("ok.tera", fine).ok().as_deref(),
            Some("{{ {% if %}<}}>-4-3")
        );
    }

    #[test]
    fn errors_on_a_huge_line_stay_short_and_name_the_template() {
        let mut t = templates();
        let text = format!("ok\n{{{{ a {} + }}}}", "x".repeat(1_000_000));
        let err = t
            .render_file("big.tera", &text)
            .err()
            .map(|d| d.to_string())
            .unwrap_or_default();
        assert!(err.contains("big.tera:2:") && err.contains(": template: Failed to parse"));
        assert!(err.len() < 2_000, "{} bytes", err.len());
    }

    #[test]
    fn get_env_is_disabled_and_range_is_bounded() {
        let mut t = templates();
        let span = Span::file_only(Arc::from("m.yaml"));
        let env = t.render_inline("{{ get_env(name='HOME') }}", &span);
        assert!(env
            .err()
            .map(|d| d.to_string())
            .unwrap_or_default()
            .contains("`get_env` is disabled"));
        let out = t.render_inline(
            "{% for i in range(start=1, end=7, step_by=2) %}{{ i }}{% endfor %}",
            &span,
        );
        assert_eq!(out.ok().as_deref(), Some("135"));
        let big = t.render_inline("{% for i in range(end=1000001) %}{% endfor %}", &span);
        assert!(big.is_err());
        assert!(t
            .render_inline("{{ range(end=3, step_by=0) }}", &span)
            .is_err());
    }

    #[test]
    fn conditions() {
        let mut t = templates();
        let span = Span::file_only(Arc::from("m.yaml"));
        assert_eq!(t.eval_condition("user == \"svc\"", &span).ok(), Some(true));
        assert_eq!(t.eval_condition("user == \"x\"", &span).ok(), Some(false));
    }
}
