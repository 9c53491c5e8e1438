//! Typed resource ids with one canonical display: `kind[name]`.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;
use std::hash::{BuildHasherDefault, Hasher};

#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ResourceId {
    /// Borrowed from the kind registry (no allocation per id and copy of it).
    pub kind: Cow<'static, str>,
    pub name: String,
}

impl ResourceId {
    pub fn new(kind: impl Into<Cow<'static, str>>, name: impl Into<String>) -> Self {
        ResourceId {
            kind: kind.into(),
            name: name.into(),
        }
    }

    /// Parses `kind[name]`; the name may itself contain brackets (`file[/a[1]]`).
    pub fn parse(text: &str) -> Option<ResourceId> {
        let open = text.find('[')?;
        let kind = &text[..open];
        let rest = text[open + 1..].strip_suffix(']')?;
        let kind_ok = !kind.is_empty()
            && kind
                .chars()
                .all(|c| c.is_ascii_lowercase() || c == '_' || c.is_ascii_digit());
        if !kind_ok || rest.is_empty() {
            return None;
        }
        let kind: Cow<'static, str> = match crate::resource::kind(kind) {
            Some(known) => Cow::Borrowed(known.name),
            None => Cow::Owned(kind.to_string()),
        };
        Some(ResourceId::new(kind, rest))
    }
}

impl fmt::Display for ResourceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}[{}]", self.kind, self.name)
    }
}

impl serde::Serialize for ResourceId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for ResourceId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        ResourceId::parse(&text)
            .ok_or_else(|| serde::de::Error::custom(format!("not a resource id: {text}")))
    }
}

/// A map keyed by resource id, with a fast non-cryptographic hash (the multiply-
/// rotate hash rustc uses): ids come from the operator's own manifests, so SipHash's
/// resistance to chosen keys buys nothing, while every automatic dependency of every
/// resource is a lookup (SipHash was 5% of loading 10,000 resources).
pub type IdMap<V> = HashMap<ResourceId, V, BuildHasherDefault<IdHasher>>;

/// A map keyed by names from the operator's manifests (paths, accounts, units), with
/// the same fast hash as [`IdMap`].
pub type NameMap<V> = HashMap<String, V, BuildHasherDefault<IdHasher>>;

#[derive(Default, Clone, Copy)]
pub struct IdHasher(u64);

impl IdHasher {
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

impl Hasher for IdHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            let mut word = [0u8; 8];
            word.copy_from_slice(chunk);
            self.add(u64::from_le_bytes(word));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut word = [0u8; 8];
            word[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(word));
        }
    }

    fn write_u8(&mut self, n: u8) {
        self.add(u64::from(n));
    }

    fn write_usize(&mut self, n: usize) {
        self.add(n as u64);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_displays() {
        let id = ResourceId::parse("file[/etc/a[1]]");
        assert_eq!(id, Some(ResourceId::new("file", "/etc/a[1]")));
        assert_eq!(ResourceId::new("user", "x").to_string(), "user[x]");
        assert_eq!(ResourceId::parse("File[x]"), None);
        assert_eq!(ResourceId::parse("file[]"), None);
        assert_eq!(ResourceId::parse("file"), None);
    }
}
