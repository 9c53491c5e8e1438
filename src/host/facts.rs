//! Facts about the target host, read from the target root (never the machine's own
//! files unless the root is `/`): available to templates as `host.*`.

use std::collections::BTreeMap;

use super::Host;

#[derive(Debug, Clone, serde::Serialize)]
pub struct Facts {
    pub hostname: String,
    pub os: String,
    pub os_version: String,
    pub os_pretty: String,
    pub arch: String,
    pub root: String,
}

/// Largest facts file read (os-release is under 1 KiB): a bigger one is ignored, as if
/// absent, rather than read whole into memory.
pub const MAX_FACT_FILE_BYTES: u64 = 64 * 1024;

impl Host {
    pub fn facts(&self) -> Facts {
        let read = |p: &str| -> Option<String> {
            // The size is checked before reading; a file that grows in between is
            // still refused after (the host layer has no bounded read).
            let size = self.lstat(p).ok().flatten()?.size;
            if size > MAX_FACT_FILE_BYTES {
                tracing::warn!(
                    path = %self.show(p),
                    size,
                    "facts file larger than {MAX_FACT_FILE_BYTES} bytes ignored"
                );
                return None;
            }
            self.read(p)
                .ok()
                .flatten()
                .and_then(|(_, c)| c)
                .filter(|c| c.len() as u64 <= MAX_FACT_FILE_BYTES)
                .map(|c| String::from_utf8_lossy(&c).into_owned())
        };
        let hostname = read("/etc/hostname")
            .map(|h| h.trim().to_string())
            .filter(|h| !h.is_empty())
            .or_else(|| {
                if self.is_machine_root() {
                    nix::unistd::gethostname()
                        .ok()
                        .map(|h| h.to_string_lossy().into_owned())
                } else {
                    None
                }
            })
            .unwrap_or_else(|| "localhost".to_string());
        let release = read("/etc/os-release")
            .or_else(|| read("/usr/lib/os-release"))
            .map(|t| parse_os_release(&t))
            .unwrap_or_default();
        let get = |k: &str| release.get(k).cloned().unwrap_or_default();
        Facts {
            hostname,
            os: get("ID"),
            os_version: get("VERSION_ID"),
            os_pretty: get("PRETTY_NAME"),
            arch: std::env::consts::ARCH.to_string(),
            root: self.root().display().to_string(),
        }
    }
}

/// Parses os-release(5): `KEY=value` with optional quotes.
pub fn parse_os_release(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| {
            let l = l.trim();
            if l.starts_with('#') {
                return None;
            }
            let (k, v) = l.split_once('=')?;
            let v = v.trim().trim_matches('"').trim_matches('\'');
            Some((k.trim().to_string(), v.to_string()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn os_release() {
        let m = super::parse_os_release(
            "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nID=debian\nVERSION_ID=\"12\"\n# c\n",
        );
        assert_eq!(m.get("ID").map(String::as_str), Some("debian"));
        assert_eq!(m.get("VERSION_ID").map(String::as_str), Some("12"));
    }
}
