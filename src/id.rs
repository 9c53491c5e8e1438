//! Typed resource ids with one canonical display: `kind[name]`.

use std::fmt;

#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ResourceId {
    pub kind: String,
    pub name: String,
}

impl ResourceId {
    pub fn new(kind: impl Into<String>, name: impl Into<String>) -> Self {
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
