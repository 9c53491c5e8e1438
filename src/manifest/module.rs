//! Modules: `modules/NAME/module.yaml` declares typed `params:` and `resources:`; a
//! manifest calls it with `- module: NAME`, `name:` (the call's name) and `with:`.
//!
//! A call is expanded while the manifests load: its `with:` is checked against the
//! declared parameters (type, required, `pattern`/`min`/`max`/`one_of`), then the
//! module's resources are decoded like a manifest's, templated with `params`, with
//! `templates/` and `files/` found in the module's folder and every id prefixed by
//! the call (`svc-dir[alpha]/directory[/srv/alpha]`, see [`crate::id::with_scope`]).
//! After all manifests are decoded, [`Modules::finish`] resolves references: an id
//! written in a module means the call's own resource when it declares one, else one
//! further out; a call's id (`svc-dir[alpha]`) means all its resources; and a call's
//! own `requires`/`before`/`notify`/`tags` apply to all of them.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::decode::{display_path, normalize_abs, parse_mode, read_input, Decoder, Fields};
use super::template::Templates;
use super::yaml::{self, Node, Value};
use crate::diag::{Diagnostic, Span};
use crate::id::ResourceId;
use crate::resource::{
    contract, ApplyCtx, Catalog, Meta, Need, PlanCtx, Provide, Resource, ResourceError,
};

/// The file of a module, in its folder.
pub const MODULE_FILE: &str = "module.yaml";

/// Deepest nesting of module calls (a module calling a module ...).
pub const MAX_NESTING: usize = 16;

const MODULE_TOP_LEVEL: &[&str] = &["description", "params", "resources"];
const PARAM_FIELDS: &[&str] = &[
    "type",
    "default",
    "required",
    "description",
    "pattern",
    "min",
    "max",
    "one_of",
];

/// A parameter's declared type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParamType {
    String,
    Int,
    /// A number with a fraction allowed (`max_exposure: 3.5`).
    Number,
    Bool,
    /// A quoted octal mode (`"0640"`), normalised to four digits.
    Mode,
    /// An absolute path on the target, normalised.
    Path,
    List(Box<ParamType>),
    Map(Box<ParamType>),
}

impl ParamType {
    /// `string`, `int`, `list<path>`, `map<list<string>>`, ...
    pub fn parse(text: &str) -> Option<ParamType> {
        let t = text.trim();
        let inner = |prefix: &str| {
            t.strip_prefix(prefix)
                .and_then(|r| r.strip_suffix('>'))
                .and_then(ParamType::parse)
                .map(Box::new)
        };
        Some(match t {
            "string" => ParamType::String,
            "int" => ParamType::Int,
            "number" => ParamType::Number,
            "bool" => ParamType::Bool,
            "mode" => ParamType::Mode,
            "path" => ParamType::Path,
            _ if t.starts_with("list<") => ParamType::List(inner("list<")?),
            _ if t.starts_with("map<") => ParamType::Map(inner("map<")?),
            _ => return None,
        })
    }
}

impl std::fmt::Display for ParamType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ParamType::String => f.write_str("string"),
            ParamType::Int => f.write_str("int"),
            ParamType::Number => f.write_str("number"),
            ParamType::Bool => f.write_str("bool"),
            ParamType::Mode => f.write_str("mode"),
            ParamType::Path => f.write_str("path"),
            ParamType::List(t) => write!(f, "list<{t}>"),
            ParamType::Map(t) => write!(f, "map<{t}>"),
        }
    }
}

/// One declared parameter.
#[derive(Debug, Clone)]
pub struct Param {
    pub name: String,
    pub ty: ParamType,
    /// Already checked against the type and constraints.
    pub default: Option<Node>,
    pub required: bool,
    pub description: String,
    pub pattern: Option<(String, regex::Regex)>,
    pub min: Option<f64>,
    pub max: Option<f64>,
    pub one_of: Vec<serde_json::Value>,
    /// Where it is declared (its key in module.yaml).
    pub span: Span,
}

impl Param {
    /// The constraints, in words, for messages and the doc table.
    pub fn constraints(&self) -> Vec<String> {
        let mut out = Vec::new();
        if let Some((p, _)) = &self.pattern {
            out.push(format!("pattern `{p}`"));
        }
        let counts = matches!(self.ty, ParamType::List(_) | ParamType::Map(_));
        let what = if counts { "items " } else { "" };
        if let Some(m) = self.min {
            out.push(format!("{what}min {m}"));
        }
        if let Some(m) = self.max {
            out.push(format!("{what}max {m}"));
        }
        if !self.one_of.is_empty() {
            let vals: Vec<String> = self.one_of.iter().map(show_json).collect();
            out.push(format!("one of {}", vals.join(", ")));
        }
        out
    }
}

fn show_json(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// A module as loaded from its `module.yaml`.
#[derive(Debug)]
pub struct ModuleDef {
    pub name: String,
    pub dir: PathBuf,
    /// module.yaml as shown in messages.
    pub shown: Arc<str>,
    pub description: String,
    pub params: Vec<Param>,
    /// The `resources:` entries, untemplated.
    pub resources: Vec<Node>,
}

impl ModuleDef {
    fn param(&self, name: &str) -> Option<&Param> {
        self.params.iter().find(|p| p.name == name)
    }

    /// Reads and checks a module file; problems are returned, each at its line.
    pub fn load(name: &str, file: &Path) -> Result<(ModuleDef, Vec<u8>), Vec<Diagnostic>> {
        let shown: Arc<str> = Arc::from(display_path(file));
        let bytes = read_input(file, Some(yaml::MAX_MANIFEST_BYTES)).map_err(|e| {
            vec![Diagnostic::error(
                Some(Span::file_only(shown.clone())),
                format!("cannot read module: {e}"),
            )]
        })?;
        let text = String::from_utf8_lossy(&bytes).into_owned();
        crate::diag::register_source_hidden_by(&shown, text, Some(super::hidden::of_manifest));
        let root = yaml::parse(&shown, &bytes).map_err(|d| vec![d])?;
        let dir = file.parent().map(Path::to_path_buf).unwrap_or_default();
        let mut def = ModuleDef {
            name: name.to_string(),
            dir,
            shown: shown.clone(),
            description: String::new(),
            params: Vec::new(),
            resources: Vec::new(),
        };
        let mut diags = Vec::new();
        let top: &[(Node, Node)] = match &root.value {
            Value::Map(m) => m,
            Value::Null => &[],
            other => {
                return Err(vec![Diagnostic::error(
                    Some(root.span.clone()),
                    format!(
                        "a module must be a mapping with {}, found {}",
                        MODULE_TOP_LEVEL.join("/"),
                        other.type_name()
                    ),
                )])
            }
        };
        for (k, v) in top {
            match k.as_str() {
                Some("description") => match &v.value {
                    Value::Str(s) => def.description = s.clone(),
                    Value::Null => {}
                    other => diags.push(
                        Diagnostic::error(
                            Some(v.span.clone()),
                            format!("expected a string, found {}", other.type_name()),
                        )
                        .field("description"),
                    ),
                },
                Some("params") => match &v.value {
                    Value::Map(pairs) => {
                        for (pk, pv) in pairs {
                            if let Some(p) = parse_param(pk, pv, &mut diags) {
                                def.params.push(p);
                            }
                        }
                    }
                    Value::Null => {}
                    other => diags.push(
                        Diagnostic::error(
                            Some(v.span.clone()),
                            format!(
                                "`params` must be a mapping of parameter names to their declarations, found {}",
                                other.type_name()
                            ),
                        )
                        .field("params"),
                    ),
                },
                Some("resources") => match &v.value {
                    Value::Seq(items) => def.resources = items.clone(),
                    Value::Null => {}
                    other => diags.push(
                        Diagnostic::error(
                            Some(v.span.clone()),
                            format!("expected a list of resources, found {}", other.type_name()),
                        )
                        .field("resources"),
                    ),
                },
                _ => {
                    let key = k.key_text();
                    let hint = match crate::diag::closest(&key, MODULE_TOP_LEVEL.iter().copied())
                    {
                        Some(c) => format!("; did you mean `{c}`?"),
                        None => format!("; expected one of {}", MODULE_TOP_LEVEL.join(", ")),
                    };
                    diags.push(
                        Diagnostic::error(
                            Some(k.span.clone()),
                            format!("unknown top-level key of a module{hint}"),
                        )
                        .field(key),
                    );
                }
            }
        }
        if diags.is_empty() {
            Ok((def, bytes))
        } else {
            Err(diags)
        }
    }
}

fn is_param_name(s: &str) -> bool {
    let mut c = s.chars();
    c.next().is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && c.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

fn parse_param(key: &Node, decl: &Node, diags: &mut Vec<Diagnostic>) -> Option<Param> {
    let name = key.key_text();
    let err = |span: &Span, field: &str, msg: String| {
        Diagnostic::error(Some(span.clone()), msg).field(field.to_string())
    };
    if key.as_str().is_none() {
        diags.push(err(
            &key.span,
            &name,
            format!("a parameter name must be text, and YAML reads this key as {}: quote it, or choose another name", key.value.type_name()),
        ));
        return None;
    }
    if !is_param_name(&name) {
        diags.push(err(
            &key.span,
            &name,
            format!("`{name}` is not a parameter name: lowercase letters, digits and `_`, starting with a letter"),
        ));
        return None;
    }
    let Some(pairs) = decl.as_map() else {
        diags.push(err(
            &decl.span,
            &name,
            format!(
                "parameter `{name}` must be declared as a mapping (`{{ type: string, description: ... }}`), found {}",
                decl.value.type_name()
            ),
        ));
        return None;
    };
    let get = |k: &str| {
        pairs
            .iter()
            .find(|(pk, _)| pk.as_str() == Some(k))
            .map(|(_, v)| v)
    };
    let before = diags.len();
    for (pk, _) in pairs {
        let field = pk.key_text();
        if !PARAM_FIELDS.contains(&field.as_str()) {
            let hint = match crate::diag::closest(&field, PARAM_FIELDS.iter().copied()) {
                Some(c) => format!("; did you mean `{c}`?"),
                None => format!("; known fields: {}", PARAM_FIELDS.join(", ")),
            };
            diags.push(err(
                &pk.span,
                &field,
                format!("unknown field of parameter `{name}`{hint}"),
            ));
        }
    }
    let ty = match get("type") {
        None => {
            diags.push(err(
                &key.span,
                "type",
                format!("parameter `{name}` needs a `type`: string, int, number, bool, mode, path, list<T> or map<T>"),
            ));
            None
        }
        Some(node) => match node.as_str().and_then(ParamType::parse) {
            Some(t) => Some(t),
            None => {
                diags.push(err(
                    &node.span,
                    "type",
                    format!(
                        "`{}` is not a parameter type: string, int, number, bool, mode, path, list<T> or map<T>",
                        node.as_str().map_or_else(|| node.value.type_name().to_string(), str::to_string)
                    ),
                ));
                None
            }
        },
    };
    let string_field = |f: &str, diags: &mut Vec<Diagnostic>| -> Option<String> {
        let node = get(f)?;
        match &node.value {
            Value::Str(s) => Some(s.clone()),
            Value::Null => None,
            other => {
                diags.push(err(
                    &node.span,
                    f,
                    format!("expected a string, found {}", other.type_name()),
                ));
                None
            }
        }
    };
    let description = string_field("description", diags).unwrap_or_default();
    let required = match get("required").map(|n| (&n.value, n)) {
        None | Some((Value::Null, _)) => false,
        Some((Value::Bool(b), _)) => *b,
        Some((other, node)) => {
            diags.push(err(
                &node.span,
                "required",
                format!("expected true or false, found {}", other.type_name()),
            ));
            false
        }
    };
    let pattern = match string_field("pattern", diags) {
        None => None,
        Some(p) => match regex::Regex::new(&format!("^(?:{p})$")) {
            Ok(re) => Some((p, re)),
            Err(e) => {
                let span = get("pattern")
                    .map(|n| n.span.clone())
                    .unwrap_or(key.span.clone());
                diags.push(err(
                    &span,
                    "pattern",
                    format!("not a regular expression: {e}"),
                ));
                None
            }
        },
    };
    let number = |f: &str, diags: &mut Vec<Diagnostic>| -> Option<f64> {
        let node = get(f)?;
        match node.value {
            Value::Int(i) => Some(i as f64),
            Value::Float(x) => Some(x),
            Value::Null => None,
            ref other => {
                diags.push(err(
                    &node.span,
                    f,
                    format!("expected a number, found {}", other.type_name()),
                ));
                None
            }
        }
    };
    let min = number("min", diags);
    let max = number("max", diags);
    let one_of = match get("one_of").map(|n| (&n.value, n)) {
        None | Some((Value::Null, _)) => Vec::new(),
        Some((Value::Seq(items), _)) => items.iter().map(Node::to_json).collect(),
        Some((other, node)) => {
            diags.push(err(
                &node.span,
                "one_of",
                format!(
                    "expected a list of the allowed values, found {}",
                    other.type_name()
                ),
            ));
            Vec::new()
        }
    };
    let ty = ty?;
    let mut param = Param {
        name: name.clone(),
        ty,
        default: None,
        required,
        description,
        pattern,
        min,
        max,
        one_of,
        span: key.span.clone(),
    };
    // `one_of` values are checked as values of the type (a mode normalised, ...).
    let mut normalised = Vec::new();
    if let Some(Value::Seq(items)) = get("one_of").map(|n| &n.value) {
        for item in items {
            match check_type(&param.ty, item) {
                Ok(n) => normalised.push(n.to_json()),
                Err((span, msg)) => diags.push(err(
                    &span,
                    "one_of",
                    format!("not a value of type {}: {msg}", param.ty),
                )),
            }
        }
        param.one_of = normalised;
    }
    match get("default") {
        Some(node) if node.value != Value::Null => {
            if required {
                diags.push(err(
                    &node.span,
                    "default",
                    format!("parameter `{name}` is required and has a default: a required parameter is one every call must give; drop one of the two"),
                ));
            }
            match check_value(&param, node) {
                Ok(n) => param.default = Some(n),
                Err((span, msg)) => diags.push(err(
                    &span,
                    "default",
                    format!("the default of `{name}` ({}) is invalid: {msg}", param.ty),
                )),
            }
        }
        _ => {}
    }
    (diags.len() == before).then_some(param)
}

/// Checks a value against a type, normalising it (modes, paths; digits given as a
/// string for an int, as a template renders them). `Err` names the place and why.
fn check_type(ty: &ParamType, node: &Node) -> Result<Node, (Span, String)> {
    let wrong = |what: &str| {
        Err((
            node.span.clone(),
            format!("expected {what}, found {}", describe(node)),
        ))
    };
    let with = |value: Value| Node {
        span: node.span.clone(),
        value,
    };
    match (ty, &node.value) {
        (ParamType::String, Value::Str(_)) => Ok(node.clone()),
        (ParamType::String, Value::Int(_) | Value::Float(_) | Value::Bool(_)) => Err((
            node.span.clone(),
            format!(
                "expected a string, found {}; quote it to pass it as text",
                describe(node)
            ),
        )),
        (ParamType::String, _) => wrong("a string"),
        (ParamType::Int, Value::Int(_)) => Ok(node.clone()),
        (ParamType::Int, Value::Str(s)) => match s.trim().parse::<i64>() {
            Ok(i) => Ok(with(Value::Int(i))),
            Err(_) => wrong("a whole number"),
        },
        (ParamType::Int, _) => wrong("a whole number"),
        (ParamType::Number, Value::Int(_) | Value::Float(_)) => Ok(node.clone()),
        (ParamType::Number, Value::Str(s)) => match s.trim().parse::<f64>() {
            Ok(x) if x.is_finite() => Ok(with(Value::Float(x))),
            _ => wrong("a number"),
        },
        (ParamType::Number, _) => wrong("a number"),
        (ParamType::Bool, Value::Bool(_)) => Ok(node.clone()),
        (ParamType::Bool, Value::Str(s)) if s.trim() == "true" || s.trim() == "false" => {
            Ok(with(Value::Bool(s.trim() == "true")))
        }
        (ParamType::Bool, _) => wrong("true or false"),
        (ParamType::Mode, Value::Str(s)) => match parse_mode(s) {
            Ok(m) => Ok(with(Value::Str(super::decode::format_mode(m)))),
            Err(msg) => Err((node.span.clone(), msg)),
        },
        (ParamType::Mode, Value::Int(_) | Value::Float(_)) => Err((
            node.span.clone(),
            format!(
                "a mode must be a quoted octal string such as \"0640\"; unquoted, {} is a number in YAML",
                describe(node)
            ),
        )),
        (ParamType::Mode, _) => wrong("a quoted octal mode such as \"0640\""),
        (ParamType::Path, Value::Str(s)) => match normalize_abs(s) {
            Ok(p) => Ok(with(Value::Str(p))),
            Err(msg) => Err((node.span.clone(), msg)),
        },
        (ParamType::Path, _) => wrong("an absolute path"),
        (ParamType::List(t), Value::Seq(items)) => {
            let items = items
                .iter()
                .map(|i| check_type(t, i))
                .collect::<Result<Vec<_>, _>>()?;
            Ok(with(Value::Seq(items)))
        }
        (ParamType::List(_), _) => wrong("a list"),
        (ParamType::Map(t), Value::Map(pairs)) => {
            let pairs = pairs
                .iter()
                .map(|(k, v)| check_type(t, v).map(|v| (k.clone(), v)))
                .collect::<Result<Vec<_>, _>>()?;
            Ok(with(Value::Map(pairs)))
        }
        (ParamType::Map(_), _) => wrong("a mapping"),
    }
}

/// A value in a message: its type, and the value when it is a short scalar.
fn describe(node: &Node) -> String {
    match &node.value {
        Value::Str(s) if s.chars().count() <= 40 => format!("the string {s:?}"),
        Value::Int(i) => format!("the integer {i}"),
        Value::Float(f) => format!("the number {f}"),
        Value::Bool(b) => format!("{b}"),
        other => other.type_name().to_string(),
    }
}

/// The type, then the constraints.
fn check_value(p: &Param, node: &Node) -> Result<Node, (Span, String)> {
    let out = check_type(&p.ty, node)?;
    check_constraints(p, &out)?;
    Ok(out)
}

fn check_constraints(p: &Param, node: &Node) -> Result<(), (Span, String)> {
    let fail = |msg: String| Err((node.span.clone(), msg));
    match &node.value {
        Value::Seq(items) => {
            count_bounds(p, items.len(), node)?;
            for i in items {
                check_scalar(p, i)?;
            }
            Ok(())
        }
        Value::Map(pairs) => {
            count_bounds(p, pairs.len(), node)?;
            for (_, v) in pairs {
                check_scalar(p, v)?;
            }
            Ok(())
        }
        _ => {
            check_scalar(p, node)?;
            let n = match node.value {
                Value::Int(i) => Some(i as f64),
                Value::Float(f) => Some(f),
                _ => None,
            };
            if let Some(n) = n {
                if p.min.is_some_and(|m| n < m) {
                    return fail(format!(
                        "{n} is below the minimum {}",
                        p.min.unwrap_or_default()
                    ));
                }
                if p.max.is_some_and(|m| n > m) {
                    return fail(format!(
                        "{n} is above the maximum {}",
                        p.max.unwrap_or_default()
                    ));
                }
            }
            Ok(())
        }
    }
}

fn count_bounds(p: &Param, n: usize, node: &Node) -> Result<(), (Span, String)> {
    let n = n as f64;
    if p.min.is_some_and(|m| n < m) || p.max.is_some_and(|m| n > m) {
        return Err((
            node.span.clone(),
            format!(
                "{n} items; between {} and {} are allowed",
                p.min.map_or("0".into(), |m| m.to_string()),
                p.max.map_or("any number".into(), |m| m.to_string())
            ),
        ));
    }
    Ok(())
}

/// `pattern` and `one_of` on a scalar (each item of a list or map).
fn check_scalar(p: &Param, node: &Node) -> Result<(), (Span, String)> {
    if let (Some((text, re)), Value::Str(s)) = (&p.pattern, &node.value) {
        if !re.is_match(s) {
            return Err((
                node.span.clone(),
                format!("{} does not match the pattern `{text}`", describe(node)),
            ));
        }
    }
    if !p.one_of.is_empty()
        && matches!(
            node.value,
            Value::Str(_) | Value::Int(_) | Value::Float(_) | Value::Bool(_)
        )
        && !p.one_of.contains(&node.to_json())
    {
        let allowed: Vec<String> = p.one_of.iter().map(show_json).collect();
        return Err((
            node.span.clone(),
            format!("{} is not one of {}", describe(node), allowed.join(", ")),
        ));
    }
    Ok(())
}

/// Every string of `node` templated with the decoder's current templates: a call's
/// `with:` is written in the caller's terms (its variables, or the enclosing
/// module's params).
fn render_tree(d: &mut Decoder, node: &Node, field: &str) -> Option<Node> {
    let value = match &node.value {
        Value::Str(s) => match d.templates.render_inline(s, &node.span) {
            Ok(out) => Value::Str(out),
            Err(diag) => {
                d.diags.push(diag.field(field.to_string()));
                return None;
            }
        },
        Value::Seq(items) => Value::Seq(
            items
                .iter()
                .map(|i| render_tree(d, i, field))
                .collect::<Option<Vec<_>>>()?,
        ),
        Value::Map(pairs) => Value::Map(
            pairs
                .iter()
                .map(|(k, v)| render_tree(d, v, field).map(|v| (k.clone(), v)))
                .collect::<Option<Vec<_>>>()?,
        ),
        other => other.clone(),
    };
    Some(Node {
        span: node.span.clone(),
        value,
    })
}

/// The parameter a whole value stands for: `"{{ params.NAME }}"` and nothing else.
fn whole_param(s: &str) -> Option<&str> {
    // Exactly: `"{{ params.port }}\n"` is text with a newline, templated as text.
    let inner = s.strip_prefix("{{")?.strip_suffix("}}")?.trim();
    let name = inner.strip_prefix("params.")?;
    is_param_name(name).then_some(name)
}

/// Replaces every value that is exactly `"{{ params.NAME }}"` by the parameter's
/// value as YAML (so an int stays an int, a list a list, a map a map); other strings
/// are templated as usual when decoded. A parameter without a value is left to the
/// template, which fails on it unless the entry is skipped by `when:`.
fn substitute(node: &mut Node, params: &HashMap<String, Node>) {
    match &mut node.value {
        Value::Str(s) => {
            if let Some(p) = whole_param(s).and_then(|n| params.get(n)) {
                node.value = p.value.clone();
            }
        }
        Value::Seq(items) => items.iter_mut().for_each(|i| substitute(i, params)),
        Value::Map(pairs) => pairs.iter_mut().for_each(|(_, v)| substitute(v, params)),
        _ => {}
    }
}

/// A call, as recorded for resolving references after every manifest is decoded.
#[derive(Debug, Default)]
struct Call {
    span: Option<Span>,
    /// The ids of every resource the call declared, nested calls' included.
    members: Vec<ResourceId>,
    requires: Vec<(ResourceId, Span)>,
    before: Vec<(ResourceId, Span)>,
    notify: Vec<(ResourceId, Span)>,
    tags: Vec<String>,
}

/// Expands module calls while the manifests load, then resolves references.
pub struct Modules {
    /// `--modules DIR`s, searched after `modules/` beside the manifest.
    extra: Vec<PathBuf>,
    host: serde_json::Value,
    environment: serde_json::Value,
    /// Modules loaded, by file (`None`: invalid, already reported).
    defs: HashMap<PathBuf, Option<Arc<ModuleDef>>>,
    /// Calls by id (`svc-dir[alpha]`, `outer[a]/inner[b]`).
    calls: HashMap<String, Call>,
    /// Names of the modules being expanded, outermost first, with the call's place.
    stack: Vec<(String, Span)>,
}

impl Modules {
    pub fn new(extra: Vec<PathBuf>, host: serde_json::Value, environment: Option<&str>) -> Modules {
        Modules {
            extra,
            host,
            environment: environment
                .map(|e| serde_json::Value::String(e.to_string()))
                .unwrap_or(serde_json::Value::Null),
            defs: HashMap::new(),
            calls: HashMap::new(),
            stack: Vec::new(),
        }
    }

    /// Folders searched for a call: `modules/` beside the calling manifest, or, for a
    /// call made in a module, the folder holding that module (its siblings); then
    /// every `--modules` folder.
    fn search_path(&self, d: &Decoder) -> Vec<PathBuf> {
        let mut dirs = Vec::new();
        if self.stack.is_empty() {
            dirs.push(d.base_dir.join("modules"));
        } else if let Some(parent) = d.base_dir.parent() {
            dirs.push(parent.to_path_buf());
        }
        dirs.extend(self.extra.iter().cloned());
        dirs.dedup();
        dirs
    }

    /// Every module found in `dirs`, by name, sorted.
    pub fn available(dirs: &[PathBuf]) -> Vec<String> {
        let mut names: Vec<String> = dirs
            .iter()
            .filter_map(|dir| std::fs::read_dir(dir).ok())
            .flat_map(|rd| rd.filter_map(|e| e.ok()))
            .filter(|e| e.path().join(MODULE_FILE).is_file())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names.dedup();
        names
    }

    /// Finds a module's file in `dirs`.
    pub fn find(name: &str, dirs: &[PathBuf]) -> Option<PathBuf> {
        dirs.iter()
            .map(|d| d.join(name).join(MODULE_FILE))
            .find(|p| p.is_file())
    }

    fn def(
        &mut self,
        d: &mut Decoder,
        name: &str,
        file: &Path,
        call: &Span,
    ) -> Option<Arc<ModuleDef>> {
        let key = std::fs::canonicalize(file).unwrap_or_else(|_| file.to_path_buf());
        if let Some(known) = self.defs.get(&key) {
            return known.clone();
        }
        let loaded = match ModuleDef::load(name, file) {
            Ok((def, bytes)) => {
                d.record_input(&def.shown, &bytes);
                Some(Arc::new(def))
            }
            Err(errors) => {
                let shown = display_path(file);
                for e in errors {
                    d.diags.push(e.related(
                        call.clone(),
                        format!("module `{name}` ({shown}) is called here"),
                    ));
                }
                None
            }
        };
        self.defs.insert(key, loaded.clone());
        loaded
    }

    /// Expands one `- module: NAME` entry, decoding its resources into `out`.
    pub fn call(
        &mut self,
        d: &mut Decoder,
        pairs: &[(Node, Node)],
        out: &mut Vec<Box<dyn Resource>>,
    ) {
        let Some((module_key, module_node)) = pairs.first() else {
            return;
        };
        let at = module_key.span.clone();
        let mut f = Fields::new(pairs, at.clone(), "module");
        f.consume_first();
        if let Some((k, _)) = pairs.iter().find(|(k, _)| k.as_str() == Some("secret")) {
            // A call has no content of its own to hide; the kinds decide secrecy.
            d.error(
                &k.span,
                "secret",
                "`secret` is not a field of a module call: mark the resources inside the module `secret: true` (a parameter can decide it)",
            );
        }
        let (meta, enabled) = super::decode_meta(d, &mut f);
        let call_name = f.required_string(d, "name");
        let with = f.raw("with");
        f.finish(d);
        if !enabled {
            return;
        }
        let module = match &module_node.value {
            Value::Str(s) if crate::id::is_scope_segment(&format!("{s}[x]")) => s.clone(),
            other => {
                d.error(
                    &module_node.span,
                    "module",
                    format!(
                        "a module name is lowercase letters, digits, `_` and `-` (its folder under modules/), found {}",
                        match other {
                            Value::Str(s) => format!("`{s}`"),
                            o => o.type_name().to_string(),
                        }
                    ),
                );
                return;
            }
        };
        let Some((call_name, name_span)) = call_name else {
            return;
        };
        if !crate::id::is_scope_segment(&format!("m[{call_name}]")) || call_name.trim() != call_name
        {
            d.error(
                &name_span,
                "name",
                format!("`{call_name}` cannot name a call: a call's name is part of its ids (`{module}[NAME]/...`), so it may not hold `/`, `[`, `]` or surrounding spaces"),
            );
            return;
        }
        // The call's own id: in the scope of the call it is made in, if any.
        let call_id = ResourceId::new(module.clone(), call_name.clone()).to_string();
        if let Some(first) = self.calls.get(&call_id) {
            let mut diag = Diagnostic::error(
                Some(name_span.clone()),
                format!("a second call {call_id}: two calls of module `{module}` with the same name would declare the same ids; give this one another `name:`"),
            )
            .field("name");
            if let Some(s) = &first.span {
                diag = diag.related(s.clone(), format!("{call_id} is first called here"));
            }
            d.diags.push(diag);
            return;
        }
        // Recorded before anything else is checked: a second call of the same name is
        // an error even when this one is wrong otherwise.
        self.calls.insert(
            call_id.clone(),
            Call {
                span: Some(at.clone()),
                members: Vec::new(),
                requires: meta.requires,
                before: meta.before,
                notify: meta.notify,
                tags: meta.tags,
            },
        );
        if let Some(pos) = self.stack.iter().position(|(m, _)| *m == module) {
            let mut chain: Vec<&str> = self.stack[pos..].iter().map(|(m, _)| m.as_str()).collect();
            chain.push(&module);
            let mut diag = Diagnostic::error(
                Some(at.clone()),
                format!(
                    "module cycle: {} (a module may not call itself, directly or through others)",
                    chain.join(" → ")
                ),
            )
            .field("module");
            for (m, s) in self.stack[pos..].iter().rev() {
                diag = diag.related(s.clone(), format!("module `{m}` is called here"));
            }
            d.diags.push(diag);
            return;
        }
        if self.stack.len() >= MAX_NESTING {
            d.error(
                &at,
                "module",
                format!("module calls nest more than {MAX_NESTING} deep"),
            );
            return;
        }
        let dirs = self.search_path(d);
        let Some(file) = Modules::find(&module, &dirs) else {
            let found = Modules::available(&dirs);
            let close = crate::diag::closest(&module, found.iter().map(String::as_str))
                .map(|c| format!("did you mean `{c}`? "))
                .unwrap_or_default();
            let shown: Vec<String> = dirs.iter().map(|p| display_path(p)).collect();
            let list = if found.is_empty() {
                "none".to_string()
            } else {
                found.join(", ")
            };
            d.error(
                &module_node.span,
                "module",
                format!(
                    "no module `{module}` (no {module}/{MODULE_FILE} in {}); {close}modules found: {list}",
                    shown.join(", ")
                ),
            );
            return;
        };
        let Some(def) = self.def(d, &module, &file, &at) else {
            return;
        };
        let Some(params) = self.bind(d, &def, with, &at, &call_id) else {
            return;
        };
        let members = self.expand(d, &def, params, &call_id, &call_name, &at, out);
        if let Some(c) = self.calls.get_mut(&call_id) {
            c.members = members;
        }
    }

    /// Checks `with:` against the module's parameters: the values by name, defaults
    /// filled in. Every problem is reported at the call, with the declaration.
    fn bind(
        &mut self,
        d: &mut Decoder,
        def: &ModuleDef,
        with: Option<&Node>,
        at: &Span,
        call_id: &str,
    ) -> Option<HashMap<String, Node>> {
        let before = d.diags.0.len();
        let mut given: HashMap<String, Node> = HashMap::new();
        let pairs: &[(Node, Node)] = match with.map(|n| (&n.value, n)) {
            None | Some((Value::Null, _)) => &[],
            Some((Value::Map(p), _)) => p,
            Some((other, node)) => {
                d.error(
                    &node.span,
                    "with",
                    format!(
                        "`with` must be a mapping of parameter names to values, found {}",
                        other.type_name()
                    ),
                );
                return None;
            }
        };
        let declared_at = |p: &Param| {
            (
                p.span.clone(),
                format!(
                    "`{}` is declared here as {} (module `{}`)",
                    p.name, p.ty, def.name
                ),
            )
        };
        for (k, v) in pairs {
            let name = k.key_text();
            let Some(param) = def.param(&name) else {
                let names: Vec<&str> = def.params.iter().map(|p| p.name.as_str()).collect();
                let hint = match crate::diag::closest(&name, names.iter().copied())
                    .and_then(|c| def.param(c))
                {
                    Some(p) => format!("; did you mean `{}` ({})?", p.name, p.ty),
                    None if names.is_empty() => "; it takes no parameters".to_string(),
                    None => format!("; its parameters: {}", names.join(", ")),
                };
                let mut diag = Diagnostic::error(
                    Some(k.span.clone()),
                    format!("module `{}` has no parameter `{name}`{hint}", def.name),
                )
                .field(format!("with.{name}"));
                if let Some(p) =
                    crate::diag::closest(&name, names.iter().copied()).and_then(|c| def.param(c))
                {
                    let (s, note) = declared_at(p);
                    diag = diag.related(s, note);
                }
                d.diags.push(diag);
                continue;
            };
            let Some(rendered) = render_tree(d, v, &format!("with.{name}")) else {
                continue;
            };
            match check_value(param, &rendered) {
                Ok(n) => {
                    given.insert(name, n);
                }
                Err((span, msg)) => {
                    let (s, note) = declared_at(param);
                    d.diags.push(
                        Diagnostic::error(
                            Some(span),
                            format!(
                                "parameter `{name}` of module `{}` is declared {}: {msg}",
                                def.name, param.ty
                            ),
                        )
                        .field(format!("with.{name}"))
                        .related(s, note),
                    );
                }
            }
        }
        for p in &def.params {
            if given.contains_key(&p.name) {
                continue;
            }
            if let Some(default) = &p.default {
                given.insert(p.name.clone(), default.clone());
            } else if p.required {
                let (s, note) = declared_at(p);
                d.diags.push(
                    Diagnostic::error(
                        Some(with.map_or(at.clone(), |w| w.span.clone())),
                        format!(
                            "{call_id}: the required parameter `{}` ({}) is missing from `with`",
                            p.name, p.ty
                        ),
                    )
                    .field(format!("with.{}", p.name))
                    .related(s, note),
                );
            }
        }
        (d.diags.0.len() == before).then_some(given)
    }

    /// Decodes the module's resources for one call, in its scope; returns their ids.
    #[allow(clippy::too_many_arguments)]
    fn expand(
        &mut self,
        d: &mut Decoder,
        def: &ModuleDef,
        params: HashMap<String, Node>,
        call_id: &str,
        call_name: &str,
        at: &Span,
        out: &mut Vec<Box<dyn Resource>>,
    ) -> Vec<ResourceId> {
        let mut vars = serde_json::Map::new();
        let params_json: serde_json::Map<String, serde_json::Value> = params
            .iter()
            .map(|(k, v)| (k.clone(), v.to_json()))
            .collect();
        vars.insert("params".into(), serde_json::Value::Object(params_json));
        vars.insert(
            "module".into(),
            serde_json::json!({ "name": def.name, "call": call_name, "id": call_id }),
        );
        vars.insert("environment".into(), self.environment.clone());
        let templates = Templates::new(&vars, self.host.clone());
        let saved_templates = std::mem::replace(&mut d.templates, templates);
        let saved_base = std::mem::replace(&mut d.base_dir, def.dir.clone());
        let diags_before = d.diags.0.len();
        let first = out.len();
        self.stack.push((def.name.clone(), at.clone()));
        let scope: Arc<str> = Arc::from(call_id);
        for item in &def.resources {
            let mut item = item.clone();
            substitute(&mut item, &params);
            crate::id::with_scope(Some(scope.clone()), || {
                let is_call = item
                    .as_map()
                    .and_then(|p| p.first())
                    .is_some_and(|(k, _)| k.as_str() == Some("module"));
                if is_call {
                    if let Some(pairs) = item.as_map() {
                        self.call(d, pairs, out);
                    }
                    return;
                }
                // Optional parts of a module depend on its parameters: an entry whose
                // `when:` is false is not decoded at all (its fields may name values
                // the call did not give).
                if super::entry_enabled(d, &item) == Some(false) {
                    return;
                }
                if let Some(r) = super::decode_entry(d, &item) {
                    out.push(r);
                }
            });
        }
        self.stack.pop();
        // Problems inside the module name the call they came from.
        for diag in &mut d.diags.0[diags_before..] {
            let in_module = diag
                .span
                .as_ref()
                .is_some_and(|s| s.file.as_ref() != at.file.as_ref());
            if in_module && !diag.related.iter().any(|(s, _)| s == at) {
                diag.related
                    .push((at.clone(), format!("in the call {call_id}")));
            }
        }
        d.templates = saved_templates;
        d.base_dir = saved_base;
        out[first..].iter().map(|r| r.id().clone()).collect()
    }

    /// After every manifest is decoded: resolves ids written in modules and ids of
    /// calls, and gives each resource its calls' `requires`/`before`/`notify`/`tags`.
    pub fn finish(
        &self,
        resources: Vec<Box<dyn Resource>>,
        diags: &mut crate::diag::Diagnostics,
    ) -> Vec<Box<dyn Resource>> {
        if self.calls.is_empty() {
            return resources;
        }
        let mut reported: HashSet<(String, String)> = HashSet::new();
        let declared: HashSet<ResourceId> = resources.iter().map(|r| r.id().clone()).collect();
        let refreshable: HashSet<ResourceId> = resources
            .iter()
            .filter(|r| r.refreshable())
            .map(|r| r.id().clone())
            .collect();
        // A module's resources by their id without the call, for references that
        // name them so (`notify: ["unit[app.service]"]`): rewritten to the full id,
        // which is what kinds compare with their own.
        let unprefixed: HashMap<ResourceId, ResourceId> = resources
            .iter()
            .filter(|r| r.id().scope.is_some())
            .map(|r| (r.id().in_scope(None), r.id().clone()))
            .collect();
        let resolver = Resolver {
            declared: &declared,
            refreshable: &refreshable,
            calls: &self.calls,
            unprefixed: &unprefixed,
        };
        resources
            .into_iter()
            .map(|r| {
                let scope = r.id().scope.clone();
                let old = r.meta();
                let mut meta = old.clone();
                let mut changed = false;
                let mut fix = |list: &mut Vec<(ResourceId, Span)>, notify: bool| {
                    let mut outl = Vec::with_capacity(list.len());
                    for (id, span) in list.drain(..) {
                        let got = resolver.resolve(&id, scope.as_deref(), notify);
                        if got.len() != 1 || got[0] != id {
                            changed = true;
                        }
                        outl.extend(got.into_iter().map(|i| (i, span.clone())));
                    }
                    *list = outl;
                };
                fix(&mut meta.requires, false);
                fix(&mut meta.before, false);
                fix(&mut meta.notify, true);
                // The calls enclosing this resource, outermost first.
                for call in enclosing(scope.as_deref()) {
                    let Some(c) = self.calls.get(call) else {
                        continue;
                    };
                    let outer = parent_scope(call);
                    for (list, own, notify) in [
                        (&mut meta.requires, &c.requires, false),
                        (&mut meta.before, &c.before, false),
                        (&mut meta.notify, &c.notify, true),
                    ] {
                        for (id, span) in own {
                            let got = resolver.resolve(id, outer, notify);
                            list.extend(got.into_iter().map(|i| (i, span.clone())));
                            changed = true;
                        }
                    }
                    if !c.tags.is_empty() {
                        meta.tags.extend(c.tags.iter().cloned());
                        changed = true;
                    }
                }
                // What is left naming no kind named a call that was not made (or one
                // with nothing to notify): said here, in the terms of calls.
                for (list, field) in [
                    (&mut meta.requires, "requires"),
                    (&mut meta.before, "before"),
                    (&mut meta.notify, "notify"),
                ] {
                    list.retain(|(id, span)| {
                        if crate::resource::kind(&id.kind).is_some() {
                            return true;
                        }
                        changed = true;
                        if reported.insert((span.to_string(), id.to_string())) {
                            diags.push(self.unknown_call(id, span, field));
                        }
                        false
                    });
                }
                let needs = r.needs();
                let mut needs_changed = false;
                let needs: Vec<Need> = needs
                    .into_iter()
                    .flat_map(|n| match n {
                        Need::Resource(id) => {
                            let got = resolver.resolve(&id, scope.as_deref(), false);
                            if got.len() != 1 || got[0] != id {
                                needs_changed = true;
                            }
                            got.into_iter().map(Need::Resource).collect()
                        }
                        other => vec![other],
                    })
                    .collect();
                if !changed && !needs_changed {
                    return r;
                }
                Box::new(Scoped {
                    meta,
                    needs: needs_changed.then_some(needs),
                    inner: r,
                }) as Box<dyn Resource>
            })
            .collect()
    }
}

impl Modules {
    /// Why `id` (whose kind is no resource kind) names nothing.
    fn unknown_call(&self, id: &ResourceId, span: &Span, field: &str) -> Diagnostic {
        let text = id.to_string();
        let message = if self.calls.contains_key(&text) {
            format!(
                "{text} declares nothing that can be notified (only units react to notifications)"
            )
        } else {
            let mut made: Vec<&str> = self
                .calls
                .keys()
                .map(String::as_str)
                .filter(|c| {
                    c.rsplit('/')
                        .next()
                        .is_some_and(|last| last.starts_with(&format!("{}[", id.kind)))
                })
                .collect();
            made.sort_unstable();
            let close = crate::diag::closest(&text, made.iter().copied())
                .map(|c| format!("did you mean {c}? "))
                .unwrap_or_default();
            if made.is_empty() {
                format!("{text} is neither a resource nor a module call: no call of a module `{}` is made", id.kind)
            } else {
                format!(
                    "{text} is neither a resource nor a module call; {close}calls of `{}`: {}",
                    id.kind,
                    made.join(", ")
                )
            }
        };
        Diagnostic::error(Some(span.clone()), message).field(field.to_string())
    }
}

/// `a[x]/b[y]` → `a[x]`; `a[x]` → `None`.
fn parent_scope(scope: &str) -> Option<&str> {
    scope.rfind("]/").map(|i| &scope[..=i])
}

/// The calls a scope is made of, outermost first: `a[x]/b[y]` → `a[x]`, `a[x]/b[y]`.
fn enclosing(scope: Option<&str>) -> Vec<&str> {
    let Some(s) = scope else {
        return Vec::new();
    };
    let mut out: Vec<&str> = s.match_indices("]/").map(|(i, _)| &s[..=i]).collect();
    out.push(s);
    out
}

struct Resolver<'a> {
    declared: &'a HashSet<ResourceId>,
    refreshable: &'a HashSet<ResourceId>,
    calls: &'a HashMap<String, Call>,
    unprefixed: &'a HashMap<ResourceId, ResourceId>,
}

impl Resolver<'_> {
    /// What an id written in `scope` means: the scope's own resource or call if it
    /// declares one, else the next scope out's, up to the manifests'. A call's id
    /// stands for its resources (for `notify`, those that can be notified). Unknown
    /// ids are kept as written, for the graph to report.
    fn resolve(&self, id: &ResourceId, scope: Option<&str>, notify: bool) -> Vec<ResourceId> {
        // What was written, relative to the scope it was written in.
        let relative: Option<String> = match (&id.scope, scope) {
            (Some(t), Some(s)) if t.as_ref() == s => None,
            (Some(t), Some(s)) if t.starts_with(&format!("{s}/")) => {
                Some(t[s.len() + 1..].to_string())
            }
            (Some(t), _) => {
                return self
                    .meaning(&id.in_scope(Some(t.clone())), notify)
                    .unwrap_or_else(|| vec![id.clone()]);
            }
            (None, _) => None,
        };
        let mut candidates: Vec<Option<String>> = Vec::new();
        let mut cur = scope;
        loop {
            let joined = match (cur, &relative) {
                (Some(c), Some(r)) => Some(format!("{c}/{r}")),
                (Some(c), None) => Some(c.to_string()),
                (None, r) => r.clone(),
            };
            candidates.push(joined);
            match cur {
                Some(c) => cur = parent_scope(c),
                None => break,
            }
        }
        for c in &candidates {
            let cand = id.in_scope(c.as_deref().map(Arc::from));
            if let Some(found) = self.meaning(&cand, notify) {
                return found;
            }
        }
        match self.unprefixed.get(&id.in_scope(None)) {
            Some(full) if relative.is_none() => vec![full.clone()],
            _ => vec![id.clone()],
        }
    }

    fn meaning(&self, id: &ResourceId, notify: bool) -> Option<Vec<ResourceId>> {
        if self.declared.contains(id) {
            return Some(vec![id.clone()]);
        }
        let call = self.calls.get(&id.to_string())?;
        let members: Vec<ResourceId> = if notify {
            let r: Vec<ResourceId> = call
                .members
                .iter()
                .filter(|m| self.refreshable.contains(m))
                .cloned()
                .collect();
            if r.is_empty() {
                // Left to the graph, which says the call's resources cannot be notified.
                return None;
            }
            r
        } else {
            call.members.clone()
        };
        Some(members)
    }
}

/// A resource of a module call (or one naming a call), with its references resolved:
/// its own meta and needs; everything else is the kind's.
#[derive(Debug)]
struct Scoped {
    meta: Meta,
    needs: Option<Vec<Need>>,
    inner: Box<dyn Resource>,
}

impl Resource for Scoped {
    fn id(&self) -> &ResourceId {
        self.inner.id()
    }
    fn meta(&self) -> &Meta {
        &self.meta
    }
    fn provides(&self) -> Vec<Provide> {
        self.inner.provides()
    }
    fn needs(&self) -> Vec<Need> {
        match &self.needs {
            Some(n) => n.clone(),
            None => self.inner.needs(),
        }
    }
    fn removes(&self) -> bool {
        self.inner.removes()
    }
    fn group_gid(&self) -> Option<u32> {
        self.inner.group_gid()
    }
    fn group_members(&self) -> Option<(&[String], &Span)> {
        self.inner.group_members()
    }
    fn validate(&self, catalog: &Catalog) -> Vec<Diagnostic> {
        self.inner.validate(catalog)
    }
    fn plan(&self, ctx: &PlanCtx) -> Result<crate::plan::Change, ResourceError> {
        self.inner.plan(ctx)
    }
    fn observe_state(&self, ctx: &PlanCtx) -> Result<contract::State, ResourceError> {
        self.inner.observe_state(ctx)
    }
    fn diff_state(
        &self,
        state: contract::State,
        deps: &contract::DepView,
    ) -> Result<crate::plan::Change, ResourceError> {
        self.inner.diff_state(state, deps)
    }
    fn apply(&self, ctx: &ApplyCtx, change: &crate::plan::Change) -> Result<(), ResourceError> {
        self.inner.apply(ctx, change)
    }
    fn managed_path(&self) -> Option<&str> {
        self.inner.managed_path()
    }
    fn owners(&self) -> (Option<&str>, Option<&str>) {
        self.inner.owners()
    }
    fn refreshable(&self) -> bool {
        self.inner.refreshable()
    }
    fn refresh(&self, ctx: &ApplyCtx) -> Result<(), ResourceError> {
        self.inner.refresh(ctx)
    }
    fn as_any(&self) -> &dyn std::any::Any {
        // The kind's own type: flush steps and `Catalog::typed` downcast to it.
        self.inner.as_any()
    }
}

/// `reconcile module doc NAME`: the module's parameters as a Markdown table,
/// generated from its module.yaml.
pub fn doc(name: &str, dirs: &[PathBuf]) -> Result<String, String> {
    let Some(file) = Modules::find(name, dirs) else {
        let found = Modules::available(dirs);
        let shown: Vec<String> = dirs.iter().map(|p| display_path(p)).collect();
        let close = crate::diag::closest(name, found.iter().map(String::as_str))
            .map(|c| format!("did you mean `{c}`? "))
            .unwrap_or_default();
        return Err(format!(
            "no module `{name}` in {}; {close}modules found: {}",
            shown.join(", "),
            if found.is_empty() {
                "none".to_string()
            } else {
                found.join(", ")
            }
        ));
    };
    let def = match ModuleDef::load(name, &file) {
        Ok((def, _)) => def,
        Err(errors) => {
            let text: Vec<String> = errors.iter().map(Diagnostic::render).collect();
            return Err(text.join("\n"));
        }
    };
    Ok(doc_table(&def))
}

/// The table itself (a pure function of the module, for tests).
pub fn doc_table(def: &ModuleDef) -> String {
    let cell = |s: &str| s.replace('|', "\\|").replace('\n', " ");
    let mut out = format!("# module `{}`\n\n", def.name);
    if !def.description.trim().is_empty() {
        out.push_str(def.description.trim());
        out.push_str("\n\n");
    }
    out.push_str(&format!("Defined in {}.\n\n", def.shown));
    if def.params.is_empty() {
        out.push_str("No parameters.\n");
        return out;
    }
    out.push_str("| parameter | type | required | default | constraints | description |\n");
    out.push_str("|---|---|---|---|---|---|\n");
    for p in &def.params {
        let default = p
            .default
            .as_ref()
            .map(|d| format!("`{}`", cell(&d.to_json().to_string())))
            .unwrap_or_default();
        out.push_str(&format!(
            "| `{}` | {} | {} | {} | {} | {} |\n",
            p.name,
            cell(&p.ty.to_string()),
            if p.required { "yes" } else { "no" },
            default,
            cell(&p.constraints().join("; ")),
            cell(&p.description)
        ));
    }
    out
}

/// Two declarations of one thing from different calls (or a call and a manifest):
/// `svc[a]/user[x]` and `svc[b]/user[x]` have different ids but manage the same
/// account, and each would undo the other on every run.
pub fn same_thing_twice(catalog: &Catalog) -> Vec<Diagnostic> {
    if catalog.resources.iter().all(|r| r.id().scope.is_none()) {
        return Vec::new();
    }
    let mut first: HashMap<ResourceId, usize> = HashMap::new();
    let mut out = Vec::new();
    for (i, r) in catalog.resources.iter().enumerate() {
        if r.managed_path().is_some() {
            // Paths are compared by the catalog's path conflicts, whatever the kinds.
            continue;
        }
        let bare = r.id().in_scope(None);
        match first.get(&bare) {
            None => {
                first.insert(bare, i);
            }
            Some(&j) => {
                let other = &catalog.resources[j];
                let mut d = Diagnostic::error(
                    r.meta().span.clone(),
                    format!(
                        "{} and {} both declare {bare}: give the calls different parameters, or declare it once",
                        r.id(),
                        other.id()
                    ),
                );
                if let Some(s) = &other.meta().span {
                    d = d.related(s.clone(), format!("{} is declared here", other.id()));
                }
                out.push(d);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::{load, LoadOptions, Loaded};

    fn node(yaml: &str) -> Node {
        let file: Arc<str> = Arc::from("t.yaml");
        match yaml::parse(&file, format!("v: {yaml}\n").as_bytes()) {
            Ok(root) => root
                .as_map()
                .and_then(|m| m.first().map(|(_, v)| v.clone()))
                .unwrap_or_else(|| panic!("no value in {yaml}")),
            Err(e) => panic!("{e}"),
        }
    }

    fn typed(ty: &str, yaml: &str) -> Result<serde_json::Value, String> {
        let ty = ParamType::parse(ty).unwrap_or_else(|| panic!("type {ty}"));
        check_type(&ty, &node(yaml))
            .map(|n| n.to_json())
            .map_err(|(_, m)| m)
    }

    /// Writes `files` into a scratch folder and loads `site.yaml` from it.
    fn load_files(files: &[(&str, &str)]) -> (tempfile::TempDir, Result<Loaded, String>) {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        for (name, text) in files {
            let path = dir.path().join(name);
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent).unwrap_or_else(|e| panic!("{e}"));
            }
            std::fs::write(&path, text).unwrap_or_else(|e| panic!("{e}"));
        }
        let root = dir.path().join("root");
        std::fs::create_dir_all(&root).unwrap_or_else(|e| panic!("{e}"));
        let host = crate::host::Host::open(&root).unwrap_or_else(|e| panic!("{e}"));
        let opts = LoadOptions {
            paths: vec![dir.path().join("site.yaml")],
            modules: vec![dir.path().join("extra")],
            ..LoadOptions::default()
        };
        let out = load(&opts, &host).map_err(|d| d.to_string_all());
        (dir, out)
    }

    fn ids(loaded: &Loaded) -> Vec<String> {
        loaded
            .catalog
            .resources
            .iter()
            .map(|r| r.id().to_string())
            .collect()
    }

    const SVC_DIR: &str = r#"params:
  name: { type: string, required: true, description: "service name" }
  mode: { type: mode, default: "0750", description: "directory mode" }
  uid: { type: int, default: 0, min: 0, max: 65533 }
resources:
  - directory: /srv/{{ params.name }}
    mode: "{{ params.mode }}"
  - file: /srv/{{ params.name }}/README
    content: "service {{ params.name }} {{ params.uid }}\n"
"#;

    trait AllText {
        fn to_string_all(&self) -> String;
    }

    impl AllText for crate::diag::Diagnostics {
        fn to_string_all(&self) -> String {
            self.0
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("\n")
        }
    }

    #[test]
    fn parameter_types_check_and_normalise_values() {
        assert_eq!(typed("string", "abc"), Ok(serde_json::json!("abc")));
        assert!(typed("string", "7").is_err_and(|m| m.contains("quote it")));
        assert_eq!(typed("int", "2000"), Ok(serde_json::json!(2000)));
        assert_eq!(typed("int", "\"2000\""), Ok(serde_json::json!(2000)));
        assert!(typed("int", "\"two thousand\"")
            .is_err_and(|m| m.contains("whole number") && m.contains("two thousand")));
        assert_eq!(typed("number", "3.5"), Ok(serde_json::json!(3.5)));
        assert_eq!(typed("bool", "\"true\""), Ok(serde_json::json!(true)));
        assert!(typed("bool", "yes please").is_err());
        assert_eq!(typed("mode", "\"750\""), Ok(serde_json::json!("0750")));
        assert!(typed("mode", "750").is_err_and(|m| m.contains("quoted")));
        assert_eq!(typed("path", "/srv//a/"), Ok(serde_json::json!("/srv/a")));
        assert!(typed("path", "srv/a").is_err());
        assert_eq!(
            typed("list<path>", "[/a, /b/]"),
            Ok(serde_json::json!(["/a", "/b"]))
        );
        assert!(typed("list<int>", "[1, x]").is_err());
        assert_eq!(
            typed("map<list<int>>", "{ a: [1], b: [] }"),
            Ok(serde_json::json!({"a": [1], "b": []}))
        );
        for t in ["string", "list<map<mode>>", "map<path>"] {
            assert_eq!(
                ParamType::parse(t).map(|p| p.to_string()).as_deref(),
                Some(t)
            );
        }
        assert_eq!(ParamType::parse("integer"), None);
        assert_eq!(ParamType::parse("list<>"), None);
    }

    #[test]
    fn defaults_fill_in_and_ids_are_prefixed_by_the_call() {
        let (_dir, loaded) = load_files(&[
            ("modules/svc-dir/module.yaml", SVC_DIR),
            (
                "site.yaml",
                "resources:\n  - module: svc-dir\n    name: alpha\n    with: { name: alpha }\n  - module: svc-dir\n    name: beta\n    with: { name: beta, mode: \"0700\", uid: \"7\" }\n",
            ),
        ]);
        let loaded = loaded.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            ids(&loaded),
            [
                "svc-dir[alpha]/directory[/srv/alpha]",
                "svc-dir[alpha]/file[/srv/alpha/README]",
                "svc-dir[beta]/directory[/srv/beta]",
                "svc-dir[beta]/file[/srv/beta/README]",
            ]
        );
        let beta = loaded
            .catalog
            .typed::<crate::resource::directory::Directory>(
                &ResourceId::parse("svc-dir[beta]/directory[/srv/beta]")
                    .unwrap_or_else(|| panic!("id")),
            )
            .map(|d| format!("{d:?}"))
            .unwrap_or_default();
        assert!(beta.contains("448"), "mode 0700 in {beta}");
        // A module resource is found by its unprefixed id too.
        assert!(loaded
            .catalog
            .contains(&ResourceId::new("file", "/srv/alpha/README")));
    }

    #[test]
    fn a_mistyped_parameter_is_an_error_at_the_call_naming_its_declaration() {
        let (_dir, loaded) = load_files(&[
            ("modules/svc-dir/module.yaml", SVC_DIR),
            (
                "site.yaml",
                "resources:\n  - module: svc-dir\n    name: alpha\n    with:\n      name: alpha\n      uid: \"two thousand\"\n      nmae: x\n",
            ),
        ]);
        let err = loaded.err().unwrap_or_default();
        assert!(
            err.contains("site.yaml:6:12: field `with.uid`: parameter `uid` of module `svc-dir` is declared int"),
            "{err}"
        );
        assert!(
            err.contains("svc-dir/module.yaml:4:3: `uid` is declared here as int"),
            "{err}"
        );
        assert!(
            err.contains("site.yaml:7:7: field `with.nmae`: module `svc-dir` has no parameter `nmae`; did you mean `name` (string)?"),
            "{err}"
        );
    }

    #[test]
    fn missing_required_and_constraint_failures_are_refused() {
        let (_dir, loaded) = load_files(&[
            ("modules/svc-dir/module.yaml", SVC_DIR),
            (
                "site.yaml",
                "resources:\n  - module: svc-dir\n    name: a\n    with: { uid: 70000 }\n",
            ),
        ]);
        let err = loaded.err().unwrap_or_default();
        assert!(
            err.contains("the required parameter `name` (string) is missing"),
            "{err}"
        );
        assert!(err.contains("70000 is above the maximum 65533"), "{err}");
    }

    #[test]
    fn an_invalid_module_is_reported_in_its_file_and_at_the_call() {
        let (_dir, loaded) = load_files(&[
            (
                "modules/bad/module.yaml",
                "params:\n  uid: { type: integer }\n  count: { type: int, default: x }\n  y: { type: int }\nresource: []\n",
            ),
            ("site.yaml", "resources:\n  - module: bad\n    name: one\n"),
        ]);
        let err = loaded.err().unwrap_or_default();
        assert!(
            err.contains("bad/module.yaml:2:16: field `type`: `integer` is not a parameter type"),
            "{err}"
        );
        assert!(err.contains("bad/module.yaml:3:32: field `default`: the default of `count` (int) is invalid: expected a whole number"), "{err}");
        assert!(
            err.contains("bad/module.yaml:4:3: field `true`: a parameter name must be text"),
            "{err}"
        );
        assert!(err.contains("did you mean `resources`?"), "{err}");
        assert!(
            err.contains("site.yaml:2:5: module `bad`") && err.contains("is called here"),
            "{err}"
        );
        // Problems in a module's resources name the call too.
        let (_dir, loaded) = load_files(&[
            (
                "modules/m/module.yaml",
                "resources:\n  - file: /x\n    contnet: a\n",
            ),
            ("site.yaml", "resources:\n  - module: m\n    name: one\n"),
        ]);
        let err = loaded.err().unwrap_or_default();
        assert!(err.contains("m/module.yaml:3:5: field `contnet`"), "{err}");
        assert!(err.contains("site.yaml:2:5: in the call m[one]"), "{err}");
    }

    #[test]
    fn an_unknown_module_lists_those_found_and_the_closest() {
        let (_dir, loaded) = load_files(&[
            ("modules/svc-dir/module.yaml", SVC_DIR),
            ("extra/other/module.yaml", "resources: []\n"),
            (
                "site.yaml",
                "resources:\n  - module: svc-dri\n    name: a\n",
            ),
        ]);
        let err = loaded.err().unwrap_or_default();
        assert!(
            err.contains("no module `svc-dri`")
                && err.contains("did you mean `svc-dir`?")
                && err.contains("modules found: other, svc-dir"),
            "{err}"
        );
    }

    #[test]
    fn modules_nest_and_a_cycle_or_a_repeated_call_is_refused() {
        let inner = "params:\n  dir: { type: path, required: true }\nresources:\n  - directory: \"{{ params.dir }}\"\n";
        let outer = "params:\n  root: { type: path, required: true }\nresources:\n  - directory: \"{{ params.root }}\"\n  - module: inner\n    name: one\n    with: { dir: \"{{ params.root }}/one\" }\n";
        let (_dir, loaded) = load_files(&[
            ("modules/inner/module.yaml", inner),
            ("modules/outer/module.yaml", outer),
            (
                "site.yaml",
                "resources:\n  - module: outer\n    name: o\n    with: { root: /srv/o }\n  - file: /etc/motd\n    content: x\n    requires: [\"outer[o]/inner[one]\"]\n",
            ),
        ]);
        let loaded = loaded.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            ids(&loaded),
            [
                "outer[o]/directory[/srv/o]",
                "outer[o]/inner[one]/directory[/srv/o/one]",
                "file[/etc/motd]"
            ]
        );
        let motd = loaded
            .catalog
            .get(&ResourceId::new("file", "/etc/motd"))
            .map(|r| {
                r.meta()
                    .requires
                    .iter()
                    .map(|(i, _)| i.to_string())
                    .collect::<Vec<_>>()
            });
        assert_eq!(
            motd,
            Some(vec!["outer[o]/inner[one]/directory[/srv/o/one]".to_string()])
        );

        let (_dir, loaded) = load_files(&[
            (
                "modules/a/module.yaml",
                "resources:\n  - module: b\n    name: bb\n",
            ),
            (
                "modules/b/module.yaml",
                "resources:\n  - module: a\n    name: aa\n",
            ),
            ("site.yaml", "resources:\n  - module: a\n    name: top\n"),
        ]);
        let err = loaded.err().unwrap_or_default();
        assert!(
            err.contains("b/module.yaml:2:5: field `module`: module cycle: a → b → a"),
            "{err}"
        );

        let (_dir, loaded) = load_files(&[
            ("modules/svc-dir/module.yaml", SVC_DIR),
            (
                "site.yaml",
                "resources:\n  - module: svc-dir\n    name: a\n    with: { name: a }\n  - module: svc-dir\n    name: a\n    with: { name: b }\n",
            ),
        ]);
        let err = loaded.err().unwrap_or_default();
        assert!(
            err.contains("site.yaml:6:11: field `name`: a second call svc-dir[a]"),
            "{err}"
        );
        assert!(
            err.contains("site.yaml:2:5: svc-dir[a] is first called here"),
            "{err}"
        );
    }

    #[test]
    fn a_calls_requires_and_tags_apply_to_all_its_resources() {
        let (_dir, loaded) = load_files(&[
            ("modules/svc-dir/module.yaml", SVC_DIR),
            (
                "site.yaml",
                "resources:\n  - directory: /srv\n  - module: svc-dir\n    name: a\n    with: { name: a }\n    requires: [\"directory[/srv]\"]\n    tags: [web]\n",
            ),
        ]);
        let loaded = loaded.unwrap_or_else(|e| panic!("{e}"));
        for r in loaded.catalog.resources.iter().skip(1) {
            let req: Vec<String> = r
                .meta()
                .requires
                .iter()
                .map(|(i, _)| i.to_string())
                .collect();
            assert_eq!(req, ["directory[/srv]"], "{}", r.id());
            assert_eq!(r.meta().tags, ["web"], "{}", r.id());
        }
    }

    #[test]
    fn a_call_id_reaches_its_units_by_notify_and_a_mistyped_one_names_the_calls() {
        let m = "resources:\n  - file: /etc/app.conf\n    content: x\n  - unit: app.service\n    sections:\n      Service: { ExecStart: /bin/true }\n    restart_on: [\"file[/etc/app.conf]\"]\n";
        let (_dir, loaded) = load_files(&[
            ("modules/app/module.yaml", m),
            (
                "site.yaml",
                "resources:\n  - module: app\n    name: a\n  - file: /etc/motd\n    content: x\n    notify: [\"app[a]\"]\n",
            ),
        ]);
        let loaded = loaded.unwrap_or_else(|e| panic!("{e}"));
        let motd = loaded
            .catalog
            .get(&ResourceId::new("file", "/etc/motd"))
            .map(|r| {
                r.meta()
                    .notify
                    .iter()
                    .map(|(i, _)| i.to_string())
                    .collect::<Vec<_>>()
            });
        assert_eq!(motd, Some(vec!["app[a]/unit[app.service]".to_string()]));
        // restart_on written in the module names the call's own file.
        let unit = loaded
            .catalog
            .get(&ResourceId::parse("app[a]/unit[app.service]").unwrap_or_else(|| panic!("id")))
            .map(|r| r.needs())
            .unwrap_or_default();
        assert!(
            unit.contains(&Need::Resource(
                ResourceId::parse("app[a]/file[/etc/app.conf]").unwrap_or_else(|| panic!("id"))
            )),
            "{unit:?}"
        );

        let (_dir, loaded) = load_files(&[
            ("modules/app/module.yaml", m),
            (
                "site.yaml",
                "resources:\n  - module: app\n    name: a\n  - file: /etc/motd\n    content: x\n    requires: [\"app[b]\"]\n",
            ),
        ]);
        let err = loaded.err().unwrap_or_default();
        assert!(
            err.contains("site.yaml:6:16: field `requires`: app[b] is neither a resource nor a module call; did you mean app[a]? calls of `app`: app[a]"),
            "{err}"
        );
    }

    #[test]
    fn two_calls_declaring_the_same_account_are_refused() {
        let m = "params:\n  u: { type: string, required: true }\nresources:\n  - group: \"{{ params.u }}\"\n";
        let (_dir, loaded) = load_files(&[
            ("modules/g/module.yaml", m),
            (
                "site.yaml",
                "resources:\n  - module: g\n    name: a\n    with: { u: svc }\n  - module: g\n    name: b\n    with: { u: svc }\n",
            ),
        ]);
        let err = loaded.err().unwrap_or_default();
        assert!(
            err.contains("g[b]/group[svc] and g[a]/group[svc] both declare group[svc]"),
            "{err}"
        );
    }

    #[test]
    fn the_doc_table_is_generated_from_the_parameters() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let file = dir.path().join("svc-dir").join(MODULE_FILE);
        std::fs::create_dir_all(dir.path().join("svc-dir")).unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(&file, format!("description: Folders.\n{SVC_DIR}"))
            .unwrap_or_else(|e| panic!("{e}"));
        let table = doc("svc-dir", &[dir.path().to_path_buf()]).unwrap_or_else(|e| panic!("{e}"));
        assert!(
            table.starts_with("# module `svc-dir`\n\nFolders.\n"),
            "{table}"
        );
        assert!(
            table.contains("| `name` | string | yes |  |  | service name |\n"),
            "{table}"
        );
        assert!(
            table.contains("| `mode` | mode | no | `\"0750\"` |  | directory mode |\n"),
            "{table}"
        );
        assert!(
            table.contains("| `uid` | int | no | `0` | min 0; max 65533 |  |\n"),
            "{table}"
        );
        let missing = doc("nope", &[dir.path().to_path_buf()])
            .err()
            .unwrap_or_default();
        assert!(missing.contains("modules found: svc-dir"), "{missing}");
    }
}
