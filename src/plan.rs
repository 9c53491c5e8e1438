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
    /// Unified diff of text content; never present for secret or binary content.
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
    // A formatter call per byte showed up at 7-9% of a no-op check.
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    s
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
    hex(&h.finalize())[..32].to_string()
}

/// A unified diff of two contents, or `None` when either is not UTF-8 text.
pub fn text_diff(old: &[u8], new: &[u8], path: &str) -> Option<String> {
    let old = std::str::from_utf8(old).ok()?;
    let new = std::str::from_utf8(new).ok()?;
    let diff = similar::TextDiff::from_lines(old, new);
    let text = diff
        .unified_diff()
        .context_radius(3)
        .header(&format!("a{path}"), &format!("b{path}"))
        .to_string();
    Some(text)
}

#[cfg(test)]
mod tests {
    #[test]
    fn hex_digits() {
        assert_eq!(super::hex(&[0x00, 0x0f, 0xa5, 0xff]), "000fa5ff");
    }
}

/// A short content id for plans: enough to tell contents apart, never the content.
pub fn short_hash(bytes: &[u8]) -> String {
    format!("sha256:{}", &sha256_hex(bytes)[..12])
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
