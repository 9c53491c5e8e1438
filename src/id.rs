//! Typed resource ids with one canonical display: `kind[name]`.

use std::borrow::Cow;
use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;

/// A resource id: `kind[name]`, or `module[call]/kind[name]` for a resource a module
/// call declared (calls nest: `outer[a]/inner[b]/file[/x]`).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ResourceId {
    /// Borrowed from the kind registry (no allocation per id and copy of it).
    pub kind: Cow<'static, str>,
    pub name: String,
    /// The module calls that declared it, outermost first, as written in the id
    /// (`svc-dir[alpha]`); `None` for a resource declared in a manifest itself.
    pub scope: Option<Arc<str>>,
}

thread_local! {
    /// The module call whose body is being decoded on this thread, if any.
    ///
    /// Why a thread-local: every kind builds its own id with [`ResourceId::new`] in its
    /// decoder, and a module call must prefix those ids without every kind (and every
    /// kind still to come) taking a scope argument. Only the manifest loader sets it,
    /// for the span of one call's body ([`with_scope`]); everywhere else it is `None`.
    static SCOPE: RefCell<Option<Arc<str>>> = const { RefCell::new(None) };
}

/// Runs `f` with ids created by [`ResourceId::new`] (and so by every kind's decoder,
/// and by [`ResourceId::parse`] of an id written in a module) prefixed by `scope`.
pub fn with_scope<T>(scope: Option<Arc<str>>, f: impl FnOnce() -> T) -> T {
    let before = SCOPE.with(|s| s.replace(scope));
    let out = f();
    SCOPE.with(|s| s.replace(before));
    out
}

/// Whether `text` is one segment of a scope: `module[call]`, where a module name is
/// lowercase letters, digits, `_` and `-`, and a call name holds no `/`, `[` or `]`.
pub fn is_scope_segment(text: &str) -> bool {
    let Some((module, rest)) = text.split_once('[') else {
        return false;
    };
    let Some(call) = rest.strip_suffix(']') else {
        return false;
    };
    !module.is_empty()
        && module
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
        && !call.is_empty()
        && !call.contains(['/', '[', ']'])
}

impl ResourceId {
    /// An id with the scope of the module call being decoded, if any (see `SCOPE`).
    pub fn new(kind: impl Into<Cow<'static, str>>, name: impl Into<String>) -> Self {
        ResourceId {
            kind: kind.into(),
            name: name.into(),
            scope: SCOPE.with(|s| s.borrow().clone()),
        }
    }

    /// The same id in another scope.
    pub fn in_scope(&self, scope: Option<Arc<str>>) -> ResourceId {
        ResourceId {
            kind: self.kind.clone(),
            name: self.name.clone(),
            scope,
        }
    }

    /// Parses `kind[name]`, optionally prefixed by module calls
    /// (`svc-dir[alpha]/directory[/srv/alpha]`); the name may itself contain brackets
    /// (`file[/a[1]]`). A kind may hold `-` so that a module call's own id
    /// (`svc-dir[alpha]`, "all its resources") parses too.
    pub fn parse(text: &str) -> Option<ResourceId> {
        ResourceId::parse_scoped(text).or_else(|| ResourceId::parse_plain(text))
    }

    /// `module[call]/.../kind[name]`; `None` without a scope segment. A call name has
    /// no `/`, so a path in an ordinary id's name (`file[/a]/b]`) is never taken for
    /// a segment.
    fn parse_scoped(text: &str) -> Option<ResourceId> {
        let mut taken = 0;
        let mut rest = text;
        while let Some(end) = rest.find("]/") {
            if !is_scope_segment(&rest[..=end]) {
                break;
            }
            taken += end + 2;
            rest = &rest[end + 2..];
        }
        if taken == 0 {
            return None;
        }
        let mut id = ResourceId::parse_plain(rest)?;
        let written = &text[..taken - 1];
        id.scope = Some(match &id.scope {
            Some(current) => Arc::from(format!("{current}/{written}")),
            None => Arc::from(written),
        });
        Some(id)
    }

    fn parse_plain(text: &str) -> Option<ResourceId> {
        let open = text.find('[')?;
        let kind = &text[..open];
        let rest = text[open + 1..].strip_suffix(']')?;
        let kind_ok = !kind.is_empty()
            && kind
                .chars()
                .all(|c| c.is_ascii_lowercase() || c == '_' || c == '-' || c.is_ascii_digit());
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
        match &self.scope {
            Some(scope) => write!(f, "{scope}/{}[{}]", self.kind, self.name),
            None => write!(f, "{}[{}]", self.kind, self.name),
        }
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

    #[test]
    fn ids_of_module_calls_carry_their_scope_and_print_it_first() {
        let id = ResourceId::parse("svc-dir[alpha]/directory[/srv/alpha]");
        let mut want = ResourceId::new("directory", "/srv/alpha");
        want.scope = Some(Arc::from("svc-dir[alpha]"));
        assert_eq!(id.as_ref(), Some(&want));
        assert_eq!(want.to_string(), "svc-dir[alpha]/directory[/srv/alpha]");
        let nested = ResourceId::parse("outer[a]/inner[b]/file[/x]").map(|i| i.scope);
        assert_eq!(nested, Some(Some(Arc::from("outer[a]/inner[b]"))));
        // A path with `]/` in an ordinary id stays a name.
        let plain = ResourceId::parse("file[/a]/b]");
        assert_eq!(plain, Some(ResourceId::new("file", "/a]/b")));
        // A call's own id parses, for `requires: [svc-dir[alpha]]`.
        assert_eq!(
            ResourceId::parse("svc-dir[alpha]"),
            Some(ResourceId::new("svc-dir", "alpha"))
        );
        let inside = with_scope(Some(Arc::from("m[c]")), || ResourceId::new("user", "u"));
        assert_eq!(inside.to_string(), "m[c]/user[u]");
        assert_eq!(ResourceId::new("user", "u").scope, None);
    }
}
