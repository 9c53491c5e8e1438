//! YAML → a tree of nodes that remember their `file:line:column`.
//!
//! Parsing goes through serde-saphyr with tight alias/anchor budgets so an alias bomb
//! fails fast with bounded memory; typed decoding happens afterwards on this tree so
//! that every error can name its place and field.

use std::fmt;
use std::sync::Arc;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_saphyr::Spanned;

use crate::diag::{Diagnostic, Span};

/// Manifests larger than this are refused before they are read.
pub const MAX_MANIFEST_BYTES: usize = 64 * 1024 * 1024;

/// Deepest nesting of lists and mappings a manifest may have (the top-level mapping is
/// level 1). Real manifests stay below ten; the bound keeps every recursive walk of the
/// tree (the parsers, conversion, templating contexts, drop) a few dozen frames deep,
/// well inside the stack `load` runs on.
pub const MAX_DEPTH: usize = 32;

/// The message for a manifest nested deeper than [`MAX_DEPTH`].
pub fn too_deep_message() -> String {
    format!("nesting too deep: more than {MAX_DEPTH} levels of lists and mappings")
}

#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub span: Span,
    pub value: Value,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Seq(Vec<Node>),
    Map(Vec<(Node, Node)>),
}

impl Value {
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Null => "null",
            Value::Bool(_) => "a boolean",
            Value::Int(_) => "an integer",
            Value::Float(_) => "a number",
            Value::Str(_) => "a string",
            Value::Seq(_) => "a list",
            Value::Map(_) => "a mapping",
        }
    }
}

impl Node {
    pub fn as_str(&self) -> Option<&str> {
        match &self.value {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_map(&self) -> Option<&[(Node, Node)]> {
        match &self.value {
            Value::Map(m) => Some(m),
            _ => None,
        }
    }

    /// The plain-data view, used for template contexts.
    pub fn to_json(&self) -> serde_json::Value {
        match &self.value {
            Value::Null => serde_json::Value::Null,
            Value::Bool(b) => serde_json::Value::Bool(*b),
            Value::Int(i) => serde_json::Value::from(*i),
            Value::Float(f) => serde_json::Value::from(*f),
            Value::Str(s) => serde_json::Value::String(s.clone()),
            Value::Seq(items) => {
                serde_json::Value::Array(items.iter().map(Node::to_json).collect())
            }
            Value::Map(pairs) => serde_json::Value::Object(
                pairs
                    .iter()
                    .map(|(k, v)| (k.key_text(), v.to_json()))
                    .collect(),
            ),
        }
    }

    /// A mapping key as text (YAML allows non-string keys; we print them).
    pub fn key_text(&self) -> String {
        match &self.value {
            Value::Str(s) => s.clone(),
            Value::Int(i) => i.to_string(),
            Value::Bool(b) => b.to_string(),
            Value::Float(f) => f.to_string(),
            Value::Null => "null".into(),
            other => other.type_name().into(),
        }
    }
}

/// Intermediate tree with saphyr locations; converted to `Node` once the file is known.
#[derive(Debug)]
enum Raw {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Seq(Vec<Spanned<Raw>>),
    Map(Vec<(Spanned<Raw>, Spanned<Raw>)>),
}

struct RawVisitor;

impl<'de> Visitor<'de> for RawVisitor {
    type Value = Raw;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any YAML value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Raw, E> {
        Ok(Raw::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Raw, E> {
        Ok(Raw::Int(v))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Raw, E> {
        i64::try_from(v)
            .map(Raw::Int)
            .map_err(|_| E::custom("integer too large"))
    }
    fn visit_i128<E: de::Error>(self, v: i128) -> Result<Raw, E> {
        i64::try_from(v)
            .map(Raw::Int)
            .map_err(|_| E::custom("integer too large"))
    }
    fn visit_u128<E: de::Error>(self, v: u128) -> Result<Raw, E> {
        i64::try_from(v)
            .map(Raw::Int)
            .map_err(|_| E::custom("integer too large"))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Raw, E> {
        Ok(Raw::Float(v))
    }
    fn visit_str<E>(self, v: &str) -> Result<Raw, E> {
        Ok(Raw::Str(v.to_string()))
    }
    fn visit_string<E>(self, v: String) -> Result<Raw, E> {
        Ok(Raw::Str(v))
    }
    fn visit_unit<E>(self) -> Result<Raw, E> {
        Ok(Raw::Null)
    }
    fn visit_none<E>(self) -> Result<Raw, E> {
        Ok(Raw::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Raw, D::Error> {
        d.deserialize_any(RawVisitor)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Raw, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<Spanned<Raw>>()? {
            items.push(item);
        }
        Ok(Raw::Seq(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Raw, A::Error> {
        let mut pairs = Vec::new();
        while let Some((k, v)) = map.next_entry::<Spanned<Raw>, Spanned<Raw>>()? {
            pairs.push((k, v));
        }
        Ok(Raw::Map(pairs))
    }
}

impl<'de> Deserialize<'de> for Raw {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Raw, D::Error> {
        d.deserialize_any(RawVisitor)
    }
}

fn convert(file: &Arc<str>, raw: Spanned<Raw>, parent: &Span) -> Node {
    let loc = raw.referenced;
    let span = if loc.line() == 0 {
        parent.clone()
    } else {
        Span::new(
            file.clone(),
            u32::try_from(loc.line()).unwrap_or(u32::MAX),
            u32::try_from(loc.column()).unwrap_or(u32::MAX),
        )
    };
    let value = match raw.value {
        Raw::Null => Value::Null,
        Raw::Bool(b) => Value::Bool(b),
        Raw::Int(i) => Value::Int(i),
        Raw::Float(f) => Value::Float(f),
        Raw::Str(s) => Value::Str(s),
        // Collected into exactly-sized vectors: `collect()` here would reuse the larger
        // `Raw` buffers in place (capacity rounded up by the parser's pushes), and every
        // manifest's tree stays alive until all are decoded -- at 100,000 resources
        // that was over 100 MB of slack.
        Raw::Seq(items) => {
            let mut out = Vec::with_capacity(items.len());
            out.extend(items.into_iter().map(|i| convert(file, i, &span)));
            Value::Seq(out)
        }
        Raw::Map(pairs) => {
            let mut out = Vec::with_capacity(pairs.len());
            for (k, v) in pairs {
                let key = convert(file, k, &span);
                let val = convert(file, v, &key.span);
                out.push((key, val));
            }
            Value::Map(out)
        }
    };
    Node { span, value }
}

/// Budgets that stop alias bombs early while leaving room for very large manifests.
fn options() -> serde_saphyr::Options {
    let mut budget = serde_saphyr::Budget::default();
    budget.max_aliases = 1_000;
    budget.max_anchors = 10_000;
    budget.max_recorded_anchor_events = 100_000;
    budget.max_recorded_anchor_bytes = 4 * 1024 * 1024;
    budget.max_events = 50_000_000;
    budget.max_depth = MAX_DEPTH;
    // The scanner's own limit counts flow levels only and trips while it reads ahead,
    // so it can fire before the budget sees the events: keep it just above the
    // budget (never below a legal depth) and report it as the same error.
    budget.flow_nesting_limit = MAX_DEPTH + 1;
    let mut options = serde_saphyr::Options::default();
    options.budget = Some(budget);
    options
}

/// Parses one manifest file's bytes. Errors carry `file:line:column`.
pub fn parse(file: &Arc<str>, bytes: &[u8]) -> Result<Node, Diagnostic> {
    let whole = Span::file_only(file.clone());
    if bytes.len() > MAX_MANIFEST_BYTES {
        return Err(Diagnostic::error(
            Some(whole),
            format!(
                "manifest is larger than {} MiB",
                MAX_MANIFEST_BYTES / (1024 * 1024)
            ),
        ));
    }
    let text = std::str::from_utf8(bytes).map_err(|e| {
        let good = &bytes[..e.valid_up_to()];
        let line = good.iter().filter(|&&b| b == b'\n').count() + 1;
        let column = good.iter().rev().take_while(|&&b| b != b'\n').count() + 1;
        Diagnostic::error(
            Some(Span::new(file.clone(), to_u32(line), to_u32(column))),
            "invalid UTF-8: manifests must be UTF-8 text",
        )
    })?;
    if text.trim().is_empty() {
        return Ok(Node {
            span: whole,
            value: Value::Null,
        });
    }
    if let Some(node) = super::fastyaml::parse(file, text) {
        return Ok(node);
    }
    parse_general(file, text)
}

/// The full YAML parser: every construct, budgets against alias bombs, and the
/// diagnostics. `fastyaml` is tried first and must agree with it.
pub(super) fn parse_general(file: &Arc<str>, text: &str) -> Result<Node, Diagnostic> {
    let whole = Span::file_only(file.clone());
    let raw: Spanned<Raw> = serde_saphyr::from_str_with_options(text, options()).map_err(|e| {
        let span = e
            .location()
            .filter(|l| l.line() > 0)
            .map(|l| {
                Span::new(
                    file.clone(),
                    u32::try_from(l.line()).unwrap_or(u32::MAX),
                    u32::try_from(l.column()).unwrap_or(u32::MAX),
                )
            })
            .unwrap_or_else(|| whole.clone());
        let inner = e.without_snippet();
        if is_depth_error(inner) {
            return Diagnostic::error(Some(span), too_deep_message());
        }
        let raw = first_line(&inner.to_string());
        match super::syntax::explain(text, span.line, span.column, &raw) {
            Some(found) => Diagnostic::error(
                Some(Span::new(file.clone(), found.line, found.column)),
                format!("YAML: {}", found.message),
            ),
            None => Diagnostic::error(Some(span), format!("YAML: {raw}")),
        }
    })?;
    Ok(convert(file, raw, &whole))
}

/// A breach of the depth budget, or the parser's own nesting limit (which only trips
/// on block nesting the budget did not count yet).
fn is_depth_error(e: &serde_saphyr::Error) -> bool {
    if let serde_saphyr::Error::Budget { breach, .. } = e {
        return matches!(breach, serde_saphyr::budget::BudgetBreach::Depth { .. });
    }
    // A breach while replaying an alias arrives wrapped; its text still names it.
    let text = e.to_string();
    text.contains("recursion limit")
        || text.contains("nesting limit")
        || text.contains("budget breached: Depth")
}

/// The parser's message without its own location (we print ours) or API hints.
fn first_line(s: &str) -> String {
    let line = s.lines().next().unwrap_or(s).trim();
    let line = line.split(" at line ").next().unwrap_or(line);
    let line = line
        .split(", set DuplicateKeyPolicy")
        .next()
        .unwrap_or(line);
    line.trim().to_string()
}

pub(super) fn to_u32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file() -> Arc<str> {
        Arc::from("m.yaml")
    }

    #[test]
    fn spans_point_at_values() {
        let n = parse(&file(), b"a: 1\nlist:\n  - x: \"0644\"\n").unwrap_or_else(|e| panic!("{e}"));
        let map = n.as_map().unwrap_or_default();
        assert_eq!(map[0].0.span.line, 1);
        let list = &map[1].1;
        let Value::Seq(items) = &list.value else {
            panic!("not a list")
        };
        let inner = items[0].as_map().unwrap_or_default();
        assert_eq!((inner[0].1.span.line, inner[0].1.span.column), (3, 8));
        assert_eq!(inner[0].1.value, Value::Str("0644".into()));
    }

    #[test]
    fn unquoted_mode_is_an_integer() {
        let n = parse(&file(), b"mode: 644\n").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            n.as_map().map(|m| m[0].1.value.clone()),
            Some(Value::Int(644))
        );
    }

    #[test]
    fn duplicate_keys_are_errors() {
        let e = parse(&file(), b"a: 1\nb: 2\na: 3\n");
        assert!(e.is_err());
    }

    #[test]
    fn invalid_utf8_names_line() {
        let e = parse(&file(), b"a: 1\nb: \xff\n").err().map(|d| d.span);
        assert_eq!(e.flatten().map(|s| (s.line, s.column)), Some((2, 4)));
    }
}
