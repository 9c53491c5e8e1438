//! The plan is a value: typed changes, rendered as text or JSON, saved and re-checked.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::id::ResourceId;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Hash)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Create,
    Update,
    Delete,
    None,
}

impl Action {
    pub fn symbol(self) -> &'static str {
        match self {
            Action::Create => "+",
            Action::Update => "~",
            Action::Delete => "-",
            Action::None => " ",
        }
    }
}

/// Shown instead of any value of a `secret: true` resource.
pub const SENSITIVE: &str = "(sensitive)";

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldChange {
    pub field: Cow<'static, str>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub before: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<String>,
}

/// One resource's planned change.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    pub id: ResourceId,
    pub action: Action,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fields: Vec<FieldChange>,
    /// Unified diff of text content; never present for secret or binary content, or
    /// content over the diff limit (a note summarises those).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub diff: Option<String>,
    #[serde(default)]
    pub sensitive: bool,
    /// Things the change brings along that the manifest did not name (parent dirs).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub implied: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    /// Informational lines (mode of operation, validation results).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
    /// Fingerprint of the observed live state, to detect a stale saved plan. Keyed for
    /// a sensitive resource, and empty (omitted) when the host has no key yet.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub live: String,
    /// Fingerprint of the desired state, to detect changed inputs (keyed or omitted
    /// like `live`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub desired: String,
    /// The typed operations of a contract kind's diff, for its apply (never
    /// serialised: the fields above are what the plan shows of them).
    #[serde(skip)]
    pub ops: crate::resource::contract::Ops,
}

impl Change {
    pub fn new(id: ResourceId, sensitive: bool) -> Change {
        Change {
            id,
            action: Action::None,
            fields: Vec::new(),
            diff: None,
            sensitive,
            implied: Vec::new(),
            warnings: Vec::new(),
            notes: Vec::new(),
            live: String::new(),
            desired: String::new(),
            ops: Default::default(),
        }
    }

    /// Records a field difference (values hidden for sensitive resources when asked).
    pub fn field(
        &mut self,
        name: impl Into<Cow<'static, str>>,
        before: Option<String>,
        after: Option<String>,
    ) {
        self.fields.push(FieldChange {
            field: name.into(),
            before,
            after,
        });
    }

    /// Records a field whose values are never shown when the resource is secret.
    pub fn secret_field(
        &mut self,
        name: impl Into<Cow<'static, str>>,
        before: Option<String>,
        after: Option<String>,
    ) {
        if self.sensitive {
            let hide = |v: Option<String>| v.map(|_| SENSITIVE.to_string());
            self.field(name, hide(before), hide(after));
        } else {
            self.field(name, before, after);
        }
    }

    pub fn changes_field(&self, name: &str) -> bool {
        self.fields.iter().any(|f| f.field == name)
    }

    pub fn is_change(&self) -> bool {
        self.action != Action::None
    }
}

/// Hex SHA-256 of some bytes.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

pub fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    push_hex(&mut s, bytes);
    s
}

/// Appends the lowercase hex of `bytes` to `s`.
fn push_hex(s: &mut String, bytes: &[u8]) {
    // A formatter call per byte showed up at 7-9% of a no-op check.
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for &b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
}

/// Marks a keyed fingerprint, so that keying is never applied twice.
pub const KEYED_PREFIX: &str = "hmac:";

/// A fingerprint keyed with the host's fingerprint key (HMAC-SHA256), so that the
/// fingerprint of a secret cannot be reproduced by planning a guess on another root.
pub fn keyed_fingerprint(key: &[u8], fingerprint: &str) -> String {
    use hmac::{Hmac, Mac};
    // HMAC accepts keys of any length: this error branch cannot happen.
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(key) else {
        return String::new();
    };
    mac.update(b"reconcile-fingerprint-v1\0");
    mac.update(fingerprint.as_bytes());
    format!("{KEYED_PREFIX}{}", &hex(&mac.finalize().into_bytes())[..32])
}

/// Fingerprint of a list of parts (length-prefixed so parts cannot run together).
pub fn fingerprint<'a>(parts: impl IntoIterator<Item = &'a [u8]>) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_le_bytes());
        h.update(p);
    }
    // The first 32 hex digits: hex of the first 16 bytes, in one allocation.
    hex(&h.finalize()[..16])
}

/// Contents larger than this (either side, in bytes) are summarised rather than diffed.
pub const DEFAULT_DIFF_LIMIT: u64 = 1 << 20;

static DIFF_LIMIT: std::sync::atomic::AtomicU64 =
    std::sync::atomic::AtomicU64::new(DEFAULT_DIFF_LIMIT);

/// Sets the diff limit for this process (`--diff-limit`).
pub fn set_diff_limit(bytes: u64) {
    DIFF_LIMIT.store(bytes, std::sync::atomic::Ordering::Relaxed);
}

/// The size up to which content is diffed, and so read whole while planning.
pub fn diff_limit() -> u64 {
    DIFF_LIMIT.load(std::sync::atomic::Ordering::Relaxed)
}

/// What a plan shows of a content change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ContentDiff {
    /// A unified diff of two texts (goes to `Change::diff`).
    Text(String),
    /// One line instead of a diff (goes to `Change::notes`): binary content, or content
    /// over the diff limit.
    Summary(String),
}

impl ContentDiff {
    /// Puts the diff where it belongs in `change`; `label` names a tree entry.
    pub fn record(self, change: &mut Change, label: Option<&str>) {
        match self {
            ContentDiff::Text(d) => change.diff.get_or_insert_with(String::new).push_str(&d),
            ContentDiff::Summary(s) => change.notes.push(match label {
                Some(l) => format!("{l}: {s}"),
                None => s,
            }),
        }
    }
}

/// Binary for a plan: not UTF-8, or holding a NUL byte.
pub fn is_binary(bytes: &[u8]) -> bool {
    bytes.contains(&0) || std::str::from_utf8(bytes).is_err()
}

/// "content differs (N bytes → M bytes)": for content too large to diff or read whole.
pub fn size_summary(old: u64, new: u64) -> ContentDiff {
    ContentDiff::Summary(format!("content differs ({old} bytes → {new} bytes)"))
}

/// A unified diff of two texts; binary content, or content over the diff limit, gets a
/// one-line summary so that a plan never carries raw bytes or a gigabyte of diff.
pub fn content_diff(old: &[u8], new: &[u8], path: &str) -> ContentDiff {
    let len = |b: &[u8]| u64::try_from(b.len()).unwrap_or(u64::MAX);
    let limit = diff_limit();
    if len(old) > limit || len(new) > limit {
        return size_summary(len(old), len(new));
    }
    let (old_bin, new_bin) = (is_binary(old), is_binary(new));
    if old_bin || new_bin {
        let show = |bin: bool, b: &[u8]| {
            if bin {
                format!("binary, {} bytes", b.len())
            } else {
                format!("{} bytes", b.len())
            }
        };
        return ContentDiff::Summary(format!(
            "content differs ({} → {})",
            show(old_bin, old),
            show(new_bin, new)
        ));
    }
    match (std::str::from_utf8(old), std::str::from_utf8(new)) {
        (Ok(old), Ok(new)) => {
            let diff = similar::TextDiff::from_lines(old, new);
            ContentDiff::Text(
                diff.unified_diff()
                    .context_radius(3)
                    .header(&format!("a{path}"), &format!("b{path}"))
                    .to_string(),
            )
        }
        _ => size_summary(len(old), len(new)),
    }
}

/// A unified diff of two texts, or `None` for binary or over-limit content.
pub fn text_diff(old: &[u8], new: &[u8], path: &str) -> Option<String> {
    match content_diff(old, new, path) {
        ContentDiff::Text(d) => Some(d),
        ContentDiff::Summary(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::{content_diff, ContentDiff};

    #[test]
    fn hex_digits() {
        assert_eq!(super::hex(&[0x00, 0x0f, 0xa5, 0xff]), "000fa5ff");
    }

    #[test]
    fn binary_content_is_summarised_not_diffed() {
        let d = content_diff(b"a\n", b"a\0b\n", "/x");
        assert_eq!(
            d,
            ContentDiff::Summary("content differs (2 bytes → binary, 4 bytes)".into())
        );
        let d = content_diff(b"", &[0xff, 0xfe], "/x");
        assert_eq!(
            d,
            ContentDiff::Summary("content differs (0 bytes → binary, 2 bytes)".into())
        );
    }

    #[test]
    fn text_content_gets_a_unified_diff() {
        let ContentDiff::Text(d) = content_diff(b"a\n", b"b\n", "/x") else {
            panic!("not a text diff");
        };
        assert!(d.contains("-a\n+b\n"), "{d}");
    }
}

/// A short content id for plans: enough to tell contents apart, never the content.
pub fn short_hash(bytes: &[u8]) -> String {
    // `sha256:` and the first 12 hex digits, in one allocation (two per file showed in
    // a no-op check).
    let mut s = String::with_capacity(7 + 12);
    s.push_str("sha256:");
    push_hex(&mut s, &Sha256::digest(bytes)[..6]);
    s
}

/// Counts for the summary line.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    pub add: usize,
    pub change: usize,
    pub remove: usize,
    pub unchanged: usize,
    pub errors: usize,
}

/// A resource that could not be planned (observe failed, unsafe path, unknown owner...).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanError {
    pub id: ResourceId,
    /// `file:line:column` of the resource's declaration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at: Option<String>,
    pub message: String,
}

pub const PLAN_FORMAT: &str = "reconcile-plan";
pub const PLAN_VERSION: u32 = 1;

/// The whole plan: what `plan --format json` prints and `plan --out` saves.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    pub format: String,
    pub version: u32,
    pub root: String,
    pub manifests: Vec<String>,
    #[serde(default)]
    pub environment: Option<String>,
    /// `--var` overrides, so `apply PLANFILE` can rebuild the same desired state.
    #[serde(default)]
    pub vars: Vec<(String, String)>,
    /// `--tags` the plan was narrowed to (empty: every resource).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// `--modules` folders, so `apply PLANFILE` finds the same modules.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub modules: Vec<String>,
    /// Fingerprint of every input (manifests, templates, shipped files, overrides);
    /// keyed when the plan holds a sensitive resource, empty (omitted) when it does and
    /// the host has no fingerprint key yet.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub inputs: String,
    /// Id of the host fingerprint key the sensitive fingerprints were keyed with (not
    /// the key); absent when the host had none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fingerprint_key: Option<String>,
    pub summary: Summary,
    /// Every resource, in dependency order; unchanged ones have action `none`.
    pub changes: Vec<Change>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<PlanError>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    /// How `environment` was chosen when `--env` did not name it: `"recorded"` (the
    /// environment of the last successful apply on the target).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment_source: Option<String>,
    /// `--switch-env`: the environment recorded on the target that this plan moves from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub switch_env_from: Option<String>,
    /// Resources an earlier apply managed that the manifests no longer declare, with
    /// what apply does about them (`settings.removed`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub removed: Vec<Change>,
    /// Saved plans only: the absolute working directory of `plan`, which the relative
    /// paths in `manifests` are relative to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base: Option<String>,
}

impl Plan {
    pub fn summarize(changes: &[Change], errors: usize) -> Summary {
        let mut s = Summary {
            errors,
            ..Summary::default()
        };
        for c in changes {
            match c.action {
                Action::Create => s.add += 1,
                Action::Update => s.change += 1,
                Action::Delete => s.remove += 1,
                Action::None => s.unchanged += 1,
            }
        }
        s
    }

    /// Changes to declared resources, or resources no longer declared (which `check`
    /// reports as drift whatever `settings.removed` says).
    pub fn has_changes(&self) -> bool {
        self.changes.iter().any(Change::is_change) || !self.removed.is_empty()
    }
}
