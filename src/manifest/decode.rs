//! Typed decoding of manifest entries, field by field, so every problem names its
//! `file:line:column` and field, and all problems are collected before refusing.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use sha2::{Digest, Sha256};

use super::template::Templates;
use super::yaml::{Node, Value, MAX_MANIFEST_BYTES};
use crate::diag::{Diagnostic, Diagnostics, Span};
use crate::id::ResourceId;

/// A template file as read: its shown path and its bytes.
type TemplateSource = (String, Arc<[u8]>);

/// Shared state while decoding all entries of all manifest files.
pub struct Decoder {
    pub diags: Diagnostics,
    pub templates: Templates,
    /// Folder of the manifest being decoded: relative `template:`/`source:` start here.
    pub base_dir: PathBuf,
    /// Hash of every input read (manifests, templates, shipped files), for stale plans.
    pub inputs: Sha256,
    /// Template files already read, by (manifest folder, name as written): a big
    /// manifest uses a few templates thousands of times, and each use used to cost two
    /// `stat`s and a read.
    template_sources: HashMap<(PathBuf, String), TemplateSource>,
    /// The entry being decoded may be `secret: true`: what it reads is never quoted.
    pub secret_entry: bool,
}

impl Decoder {
    pub fn new(templates: Templates) -> Decoder {
        Decoder {
            diags: Diagnostics::default(),
            templates,
            base_dir: PathBuf::from("."),
            inputs: Sha256::new(),
            template_sources: HashMap::new(),
            secret_entry: false,
        }
    }

    pub fn error(&mut self, span: &Span, field: &str, message: impl Into<String>) {
        self.diags
            .push(Diagnostic::error(Some(span.clone()), message).field(field));
    }

    pub fn warn(&mut self, span: &Span, field: &str, message: impl Into<String>) {
        self.diags
            .push(Diagnostic::warning(Some(span.clone()), message).field(field));
    }

    pub fn record_input(&mut self, name: &str, bytes: &[u8]) {
        self.inputs.update((name.len() as u64).to_le_bytes());
        self.inputs.update(name.as_bytes());
        self.inputs.update((bytes.len() as u64).to_le_bytes());
        self.inputs.update(bytes);
    }

    /// Records a shipped folder, everything below it, in the inputs: names, types,
    /// permission bits and file content, in name order. What cannot be read is left
    /// for the plan to report; symlinks are not followed (planning refuses them).
    pub fn record_tree(&mut self, dir: &Path) {
        use std::os::unix::fs::MetadataExt;
        let Ok(entries) = std::fs::read_dir(dir) else {
            self.record_input(&dir.display().to_string(), b"unreadable");
            return;
        };
        let mut names: Vec<_> = entries
            .filter_map(|e| e.ok().map(|e| e.file_name()))
            .collect();
        names.sort();
        for name in names {
            let path = dir.join(&name);
            let shown = path.display().to_string();
            let Ok(meta) = std::fs::symlink_metadata(&path) else {
                self.record_input(&shown, b"unreadable");
                continue;
            };
            let kind = if meta.file_type().is_symlink() {
                "symlink"
            } else if meta.is_dir() {
                "dir"
            } else {
                "file"
            };
            self.record_input(&shown, format!("{kind} {:o}", meta.mode()).as_bytes());
            match kind {
                "dir" => self.record_tree(&path),
                "file" => match read_input(&path, None) {
                    Ok(bytes) => self.record_input(&shown, &bytes),
                    Err(e) => self.record_input(&shown, e.as_bytes()),
                },
                _ => {}
            }
        }
    }

    /// Where a relative template is found: `templates/` beside the manifest first,
    /// then the manifest's folder itself.
    pub fn template_path(&self, rel: &str) -> PathBuf {
        let places = self.template_places(rel);
        places
            .iter()
            .find(|p| p.exists())
            .or(places.last())
            .cloned()
            .unwrap_or_else(|| self.base_dir.join(rel))
    }

    /// Every place a relative template is looked for, in order.
    fn template_places(&self, rel: &str) -> Vec<PathBuf> {
        let mut places = vec![self.base_dir.join("templates").join(rel)];
        if let Some(parent) = self.base_dir.parent() {
            places.push(parent.join("templates").join(rel));
        }
        places.push(self.base_dir.join(rel));
        places
    }

    /// Says where a template that exists nowhere was looked for, and names a file in
    /// those places whose name is close to the one written.
    fn missing_template(&self, rel: &str) -> String {
        let places = self.template_places(rel);
        let shown: Vec<String> = places.iter().map(|p| display_path(p)).collect();
        let wanted = Path::new(rel)
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let mut near: Vec<(PathBuf, String)> = Vec::new();
        for place in &places {
            let Some(dir) = place.parent() else { continue };
            let Ok(entries) = std::fs::read_dir(dir) else {
                continue;
            };
            near.extend(entries.filter_map(|e| e.ok()).filter_map(|e| {
                let is_file = e.file_type().is_ok_and(|t| t.is_file());
                is_file.then(|| (e.path(), e.file_name().to_string_lossy().into_owned()))
            }));
        }
        let limit = (wanted.chars().count() / 5).clamp(1, 3);
        let stem = |n: &str| n.rsplit_once('.').map_or(n, |(s, _)| s).to_string();
        let close =
            crate::diag::closest_within(&wanted, near.iter().map(|(_, n)| n.as_str()), limit)
                .or_else(|| {
                    // The same name with another extension (`.j2` for `.tera`).
                    near.iter()
                        .map(|(_, n)| n.as_str())
                        .find(|n| stem(n) == stem(&wanted))
                })
                .and_then(|name| near.iter().find(|(_, n)| n == name))
                .map(|(path, name)| {
                    let written = match rel.rsplit_once('/') {
                        Some((dir, _)) => format!("{dir}/{name}"),
                        None => name.clone(),
                    };
                    format!("; did you mean `{written}` ({})?", display_path(path))
                })
                .unwrap_or_default();
        format!(
            "template `{rel}` not found; looked in {}{close}",
            shown.join(", ")
        )
    }

    /// Reads and renders a template file named relative to the manifest.
    pub fn render_template(&mut self, rel: &str, span: &Span, field: &str) -> Option<Arc<str>> {
        if rel.starts_with('/') || rel.split('/').any(|c| c == "..") {
            self.error(span, field, format!("template `{rel}` must be a path relative to the manifest's templates/ folder, without `..`"));
            return None;
        }
        let key = (self.base_dir.clone(), rel.to_string());
        let (shown, source) = match self.template_sources.get(&key) {
            Some(hit) => hit.clone(),
            None => {
                let path = self.template_path(rel);
                if !path.exists() {
                    let message = self.missing_template(rel);
                    self.error(span, field, message);
                    return None;
                }
                let source = match read_input(&path, Some(MAX_MANIFEST_BYTES)) {
                    Ok(b) => b,
                    Err(e) => {
                        self.error(
                            span,
                            field,
                            format!("cannot read template {}: {e}", path.display()),
                        );
                        return None;
                    }
                };
                let entry = (path.display().to_string(), Arc::<[u8]>::from(source));
                crate::diag::register_source(
                    &Arc::from(entry.0.as_str()),
                    String::from_utf8_lossy(&entry.1).into_owned(),
                );
                // Once per template read: its content is what a stale plan must notice;
                // hashing it again for each of thousands of uses was 4% of a check.
                self.record_input(&entry.0, &entry.1);
                self.template_sources.insert(key, entry.clone());
                entry
            }
        };
        if self.secret_entry {
            crate::diag::hide_file(&Arc::from(shown.as_str()));
        }
        let Ok(text) = std::str::from_utf8(&source) else {
            self.error(span, field, format!("template {shown} is not valid UTF-8"));
            return None;
        };
        match self.templates.render_file(&shown, text) {
            Ok(out) => Some(out),
            Err(d) => {
                self.diags
                    .push(d.related(span.clone(), "template used here"));
                None
            }
        }
    }

    /// Reads a file shipped with the manifests (a relative `source:`, already joined).
    pub fn read_shipped(&mut self, path: &Path, span: &Span, field: &str) -> Option<Vec<u8>> {
        match read_input(path, None) {
            Ok(b) => {
                self.record_input(&path.display().to_string(), &b);
                Some(b)
            }
            Err(e) => {
                self.error(span, field, format!("cannot read {}: {e}", path.display()));
                None
            }
        }
    }

    /// A resource name that is a path on the target: normalised, or an error on it.
    pub fn path_name(&mut self, raw: &str, span: &Span, kind: &str) -> Option<String> {
        match normalize_abs(raw) {
            Ok(p) => Some(p),
            Err(msg) => {
                self.error(span, kind, msg);
                None
            }
        }
    }

    pub fn shipped_path(&self, rel: &str) -> PathBuf {
        self.base_dir.join(rel)
    }
}

/// Reads one input file of the manifests (a manifest, a template, a shipped file).
///
/// Only a regular file is read (see [`open_regular`]). With a `limit`, a larger file
/// is refused by its size before a byte of it is read, and a file that grows while
/// being read is cut off one byte past the limit and refused.
pub fn read_input(path: &Path, limit: Option<usize>) -> Result<Vec<u8>, String> {
    use std::io::Read;
    let too_big = |size: u64| match limit {
        Some(max) if size > max as u64 => Err(format!(
            "is larger than the limit of {} MiB ({size} bytes)",
            max / (1024 * 1024)
        )),
        _ => Ok(()),
    };
    let meta = std::fs::metadata(path).map_err(|e| e.to_string())?;
    too_big(meta.len())?;
    let file = open_regular(path)?;
    let meta = file.metadata().map_err(|e| e.to_string())?;
    too_big(meta.len())?;
    let cap = limit.map_or(u64::MAX, |max| max as u64 + 1);
    let mut bytes = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0));
    file.take(cap)
        .read_to_end(&mut bytes)
        .map_err(|e| e.to_string())?;
    too_big(bytes.len() as u64)?;
    Ok(bytes)
}

/// Opens a regular file for reading, refusing anything else: stat before opening, so
/// that a device is not even opened; `O_NONBLOCK`, so that a FIFO swapped in between
/// cannot hang the open; fstat after, so that such a swap is caught.
pub fn open_regular(path: &Path) -> Result<std::fs::File, String> {
    use std::os::unix::fs::OpenOptionsExt;
    let regular = |meta: &std::fs::Metadata| -> Result<(), String> {
        match special_kind(&meta.file_type()) {
            None => Ok(()),
            Some(kind) => Err(format!("is {kind}, not a regular file")),
        }
    };
    regular(&std::fs::metadata(path).map_err(|e| e.to_string())?)?;
    let flags = nix::fcntl::OFlag::O_NONBLOCK | nix::fcntl::OFlag::O_NOCTTY;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(flags.bits())
        .open(path)
        .map_err(|e| e.to_string())?;
    regular(&file.metadata().map_err(|e| e.to_string())?)?;
    Ok(file)
}

/// What a file that is neither a regular file nor a folder is, in words.
pub fn special_kind(t: &std::fs::FileType) -> Option<&'static str> {
    use std::os::unix::fs::FileTypeExt;
    if t.is_file() {
        None
    } else if t.is_dir() {
        Some("a folder")
    } else if t.is_fifo() {
        Some("a FIFO (named pipe)")
    } else if t.is_char_device() {
        Some("a character device")
    } else if t.is_block_device() {
        Some("a block device")
    } else if t.is_socket() {
        Some("a socket")
    } else {
        Some("an unknown kind of file")
    }
}

/// Where a `source:` points: absolute paths name a path on the target (read when
/// planning), relative ones a file or folder shipped with the manifests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceRef {
    Target(String),
    Shipped(PathBuf),
}

/// The settings of one manifest entry, consumed field by field; whatever is left at
/// `finish` is an unknown field.
pub struct Fields<'a> {
    entries: &'a [(Node, Node)],
    used: Vec<bool>,
    known: Vec<&'static str>,
    pub span: Span,
    pub kind: &'static str,
}

impl<'a> Fields<'a> {
    pub fn new(entries: &'a [(Node, Node)], span: Span, kind: &'static str) -> Fields<'a> {
        Fields {
            entries,
            used: vec![false; entries.len()],
            known: Vec::new(),
            span,
            kind,
        }
    }

    /// Marks the first entry (the `kind: name` key) as consumed.
    pub fn consume_first(&mut self) {
        if let Some(u) = self.used.first_mut() {
            *u = true;
        }
    }

    pub fn raw(&mut self, key: &'static str) -> Option<&'a Node> {
        self.known.push(key);
        let i = self
            .entries
            .iter()
            .position(|(k, _)| k.as_str() == Some(key))?;
        self.used[i] = true;
        let node = &self.entries[i].1;
        (node.value != Value::Null).then_some(node)
    }

    pub fn has(&self, key: &str) -> bool {
        self.entries.iter().any(|(k, _)| k.as_str() == Some(key))
    }

    /// A string value, templated.
    pub fn string(&mut self, d: &mut Decoder, key: &'static str) -> Option<(String, Span)> {
        let node = self.raw(key)?;
        string_of(d, node, key)
    }

    pub fn required_string(
        &mut self,
        d: &mut Decoder,
        key: &'static str,
    ) -> Option<(String, Span)> {
        let present = self.has(key);
        let out = self.string(d, key);
        if !present {
            let span = self.span.clone();
            d.error(
                &span,
                key,
                format!("`{}` requires the field `{key}`", self.kind),
            );
        }
        out
    }

    /// A user or group: a name, or a numeric id (written as an integer or digits).
    ///
    /// Numeric ids are 0 to 4294967294: 4294967295 is `(uid_t)-1`, which chown(2)
    /// reads as "leave unchanged", so such an owner would be set on every run and
    /// never hold; anything larger is no id at all.
    pub fn name_or_id(&mut self, d: &mut Decoder, key: &'static str) -> Option<(String, Span)> {
        let node = self.raw(key)?;
        let (text, span) = match &node.value {
            Value::Int(i) => (i.to_string(), node.span.clone()),
            _ => string_of(d, node, key)?,
        };
        let numeric = text.strip_prefix('-').unwrap_or(&text);
        if !numeric.is_empty() && numeric.bytes().all(|b| b.is_ascii_digit()) {
            let in_range =
                !text.starts_with('-') && text.parse::<u32>().is_ok_and(|id| id < u32::MAX);
            if !in_range {
                d.error(
                    &span,
                    key,
                    format!(
                        "{text} is out of range: numeric ids are 0 to {} ({} means \"leave unchanged\" to chown)",
                        u32::MAX - 1,
                        u32::MAX
                    ),
                );
                return None;
            }
        }
        Some((text, span))
    }

    pub fn bool(&mut self, d: &mut Decoder, key: &'static str) -> Option<bool> {
        let node = self.raw(key)?;
        match &node.value {
            Value::Bool(b) => Some(*b),
            Value::Str(s) if Templates::needs_render(s) => {
                let out = d.templates.render_inline(s, &node.span);
                match out.as_deref().map(str::trim) {
                    Ok("true") => Some(true),
                    Ok("false") => Some(false),
                    Ok(other) => {
                        d.error(
                            &node.span,
                            key,
                            format!("expected true or false, the template gave `{other}`"),
                        );
                        None
                    }
                    Err(_) => {
                        if let Err(diag) = out {
                            d.diags.push(diag.field(key));
                        }
                        None
                    }
                }
            }
            other => {
                d.error(
                    &node.span,
                    key,
                    format!("expected true or false, found {}", other.type_name()),
                );
                None
            }
        }
    }

    pub fn u32(&mut self, d: &mut Decoder, key: &'static str) -> Option<u32> {
        let node = self.raw(key)?;
        let n = number_of(d, node, key)?;
        match u32::try_from(n) {
            Ok(v) => Some(v),
            Err(_) => {
                d.error(
                    &node.span,
                    key,
                    format!("{n} is out of range (0 to {})", u32::MAX),
                );
                None
            }
        }
    }

    pub fn f64(&mut self, d: &mut Decoder, key: &'static str) -> Option<f64> {
        let node = self.raw(key)?;
        match &node.value {
            Value::Float(f) => Some(*f),
            Value::Int(i) => Some(*i as f64),
            other => {
                d.error(
                    &node.span,
                    key,
                    format!("expected a number, found {}", other.type_name()),
                );
                None
            }
        }
    }

    /// A permission mode: a quoted octal string such as `"0640"`. An unquoted integer
    /// is refused because `mode: 644` silently means decimal 644 in most YAML tools.
    pub fn mode(&mut self, d: &mut Decoder, key: &'static str) -> Option<u32> {
        let node = self.raw(key)?;
        if matches!(node.value, Value::Int(_) | Value::Float(_)) {
            d.error(&node.span, key, unquoted_mode_message(node));
            return None;
        }
        let (text, span) = string_of(d, node, key)?;
        match parse_mode(&text) {
            Ok(m) => Some(m),
            Err(msg) => {
                d.error(&span, key, msg);
                None
            }
        }
    }

    /// An absolute, normalised path on the target.
    pub fn abs_path(&mut self, d: &mut Decoder, key: &'static str) -> Option<(String, Span)> {
        let (text, span) = self.string(d, key)?;
        match normalize_abs(&text) {
            Ok(p) => Some((p, span)),
            Err(msg) => {
                d.error(&span, key, msg);
                None
            }
        }
    }

    /// A `source:` field: normalised target path, or a shipped path without `..`.
    pub fn source(&mut self, d: &mut Decoder, key: &'static str) -> Option<(SourceRef, Span)> {
        let (src, span) = self.string(d, key)?;
        if src.starts_with('/') {
            let path = d.path_name(&src, &span, key)?;
            Some((SourceRef::Target(path), span))
        } else if src.split('/').any(|c| c == "..") {
            d.error(&span, key, format!("`{src}` must not contain `..`"));
            None
        } else {
            let path = d.shipped_path(&src);
            if path.is_dir() {
                // A shipped folder is read when planning, not here; its content still
                // belongs to the plan's inputs, or a saved plan would apply a tree
                // edited since it was reviewed.
                d.record_tree(&path);
            }
            Some((SourceRef::Shipped(path), span))
        }
    }

    /// A list of strings; a single string is accepted as a list of one.
    pub fn string_list(&mut self, d: &mut Decoder, key: &'static str) -> Vec<(String, Span)> {
        let Some(node) = self.raw(key) else {
            return Vec::new();
        };
        match &node.value {
            Value::Seq(items) => items.iter().filter_map(|n| string_of(d, n, key)).collect(),
            Value::Str(_) => string_of(d, node, key).into_iter().collect(),
            other => {
                d.error(
                    &node.span,
                    key,
                    format!("expected a list of strings, found {}", other.type_name()),
                );
                Vec::new()
            }
        }
    }

    /// A list of resource ids (`kind[name]`).
    pub fn id_list(&mut self, d: &mut Decoder, key: &'static str) -> Vec<(ResourceId, Span)> {
        self.string_list(d, key)
            .into_iter()
            .filter_map(|(text, span)| match ResourceId::parse(&text) {
                Some(id) => Some((id, span)),
                None => {
                    d.error(&span, key, format!("`{text}` is not a resource id; write it as kind[name], e.g. file[/etc/motd]"));
                    None
                }
            })
            .collect()
    }

    /// Reports every field nobody asked for.
    pub fn finish(self, d: &mut Decoder) {
        for (i, (k, _)) in self.entries.iter().enumerate() {
            if self.used[i] {
                continue;
            }
            if k.value == Value::Null {
                d.error(
                    &k.span,
                    "(no key)",
                    format!(
                        "an entry of `{}` with no key before its `:`: write `key: value`",
                        self.kind
                    ),
                );
                continue;
            }
            let name = k.key_text();
            let mut known: Vec<&str> = self.known.clone();
            known.sort_unstable();
            known.dedup();
            let hint = match suggest(&name, &known) {
                Some(s) => format!("; did you mean `{s}`?"),
                None => format!("; known fields: {}", known.join(", ")),
            };
            d.error(
                &k.span,
                &name,
                format!("unknown field for `{}`{hint}", self.kind),
            );
        }
    }
}

fn string_of(d: &mut Decoder, node: &Node, key: &str) -> Option<(String, Span)> {
    match &node.value {
        Value::Str(s) => match d.templates.render_inline(s, &node.span) {
            Ok(out) => Some((out, node.span.clone())),
            Err(diag) => {
                d.diags.push(diag.field(key));
                None
            }
        },
        other => {
            d.error(
                &node.span,
                key,
                format!("expected a string, found {}", other.type_name()),
            );
            None
        }
    }
}

fn number_of(d: &mut Decoder, node: &Node, key: &str) -> Option<i64> {
    match &node.value {
        Value::Int(i) => Some(*i),
        Value::Str(s) if Templates::needs_render(s) => {
            let (text, span) = string_of(d, node, key)?;
            match text.trim().parse() {
                Ok(n) => Some(n),
                Err(_) => {
                    d.error(
                        &span,
                        key,
                        format!("expected a whole number, the template gave `{text}`"),
                    );
                    None
                }
            }
        }
        other => {
            d.error(
                &node.span,
                key,
                format!("expected a whole number, found {}", other.type_name()),
            );
            None
        }
    }
}

/// Why an unquoted number is not a mode, with the quoted form to write instead: YAML
/// reads `644` as decimal, `0640` as a number that lost its zero, `0o640` as octal,
/// and none of them as the string of digits that was meant.
fn unquoted_mode_message(node: &Node) -> String {
    let value = match node.value {
        Value::Int(i) => i.to_string(),
        Value::Float(f) => f.to_string(),
        _ => String::new(),
    };
    // What was written, when the line may be quoted; else the number YAML read.
    let written = crate::diag::token_at(&node.span)
        .filter(|t| !t.is_empty())
        .unwrap_or_else(|| value.clone());
    let digits = written.strip_prefix("0o").unwrap_or(&written);
    let meant = if digits.len() < 4 && digits.chars().all(|c| ('0'..='7').contains(&c)) {
        format!("0{digits}")
    } else {
        digits.to_string()
    };
    let read_as = if value == written {
        String::new()
    } else {
        format!(" (read as {value})")
    };
    format!("mode must be a quoted octal string: write \"{meant}\"; unquoted, {written} is a number in YAML{read_as}, not the octal digits meant")
}

/// `"0640"`, `"640"`, `"1777"` → the bits; anything else is explained.
pub fn parse_mode(text: &str) -> Result<u32, String> {
    let t = text.trim();
    let digits = t.strip_prefix("0o").unwrap_or(t);
    if digits.is_empty() || digits.len() > 4 || !digits.chars().all(|c| ('0'..='7').contains(&c)) {
        return Err(format!("`{text}` is not an octal mode such as \"0640\""));
    }
    u32::from_str_radix(digits, 8).map_err(|e| e.to_string())
}

pub fn format_mode(mode: u32) -> String {
    format!("{mode:04o}")
}

/// Absolute, without `.`/`..`/empty components or NUL; trailing slash dropped.
/// Whether `name` can be used as is for a file a kind writes into a drop-in folder:
/// letters, digits, `.`, `_` and `-`, not empty and not hidden (a leading `.`).
pub fn is_file_stem(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

pub fn normalize_abs(path: &str) -> Result<String, String> {
    if !path.starts_with('/') {
        return Err(format!(
            "`{path}` must be an absolute path (starting with /)"
        ));
    }
    if path.contains('\0') {
        return Err("path contains a NUL byte".into());
    }
    let mut out = String::with_capacity(path.len());
    for comp in path.split('/').filter(|c| !c.is_empty()) {
        if comp == ".." || comp == "." {
            return Err(format!("`{path}` must not contain `{comp}`: paths may not escape or wander within the root"));
        }
        out.push('/');
        out.push_str(comp);
    }
    if out.is_empty() {
        return Err("the root directory itself cannot be managed".into());
    }
    Ok(out)
}

/// The parent directories of a normalised path, nearest first.
pub fn ancestors(path: &str) -> impl Iterator<Item = &str> {
    let mut cur = path;
    std::iter::from_fn(move || {
        let idx = cur.rfind('/')?;
        if idx == 0 {
            return None;
        }
        cur = &cur[..idx];
        Some(cur)
    })
}

fn suggest<'k>(name: &str, known: &[&'k str]) -> Option<&'k str> {
    crate::diag::closest_within(name, known.iter().copied(), 2)
}

/// Shows a path relative to the current directory when it is below it.
pub fn display_path(p: &Path) -> String {
    std::env::current_dir()
        .ok()
        .and_then(|cwd| p.strip_prefix(cwd).ok().map(|r| r.display().to_string()))
        .unwrap_or_else(|| p.display().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes() {
        assert_eq!(parse_mode("0640"), Ok(0o640));
        assert_eq!(parse_mode("1777"), Ok(0o1777));
        assert!(parse_mode("0999").is_err());
        assert!(parse_mode("rw-r--r--").is_err());
        assert!(parse_mode("07777").is_err());
        assert_eq!(format_mode(0o640), "0640");
    }

    #[test]
    fn paths() {
        assert_eq!(normalize_abs("/etc//x/"), Ok("/etc/x".into()));
        assert!(normalize_abs("etc/x").is_err());
        assert!(normalize_abs("/etc/../../shadow").is_err());
        assert!(normalize_abs("/").is_err());
        let a: Vec<&str> = ancestors("/a/b/c").collect();
        assert_eq!(a, vec!["/a/b", "/a"]);
    }

    #[test]
    fn suggestions() {
        assert_eq!(suggest("ownr", &["owner", "group", "mode"]), Some("owner"));
        assert_eq!(suggest("colour", &["owner"]), None);
    }
}
