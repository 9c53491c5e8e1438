//! The mirror hosts of apt's sources (`/etc/apt/sources.list`, `sources.list.d/*.list`
//! one-line entries and `*.sources` deb822 stanzas): what a firewall with a drop
//! output policy must let apt reach. Pure; tested on recorded Debian files.

/// The host names (or literal addresses) of the http/https/ftp URIs in one sources
/// file, in order of first appearance. `deb822` says which format the file is in.
pub fn mirror_hosts(text: &str, deb822: bool) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut add = |uri: &str| {
        if let Some(h) = uri_host(uri) {
            if !out.contains(&h) {
                out.push(h);
            }
        }
    };
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        if deb822 {
            let Some((key, value)) = line.split_once(':') else {
                continue;
            };
            if key.trim().eq_ignore_ascii_case("URIs") {
                value.split_whitespace().for_each(&mut add);
            }
            continue;
        }
        let mut words = line.split_whitespace();
        if !matches!(words.next(), Some("deb" | "deb-src")) {
            continue;
        }
        // `deb [arch=amd64 signed-by=...] URI suite ...`: options may hold spaces.
        let rest: Vec<&str> = words.collect();
        let mut i = 0;
        if rest.first().is_some_and(|w| w.starts_with('[')) {
            while i < rest.len() && !rest[i].ends_with(']') {
                i += 1;
            }
            i += 1;
        }
        if let Some(uri) = rest.get(i) {
            add(uri);
        }
    }
    out
}

/// `http://deb.debian.org/debian` → `deb.debian.org`; `None` for local schemes
/// (`file:`, `cdrom:`) that need no network.
fn uri_host(uri: &str) -> Option<String> {
    let (scheme, rest) = uri.split_once("://")?;
    if !matches!(scheme, "http" | "https" | "ftp" | "tor+http" | "tor+https") {
        return None;
    }
    let authority = rest.split('/').next()?;
    let host_port = authority.rsplit('@').next()?;
    let host = if let Some(v6) = host_port.strip_prefix('[') {
        v6.split(']').next()?
    } else {
        host_port.split(':').next()?
    };
    (!host.is_empty()).then(|| host.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> String {
        let path = format!("{}/tests/fixtures/parse/{name}", env!("CARGO_MANIFEST_DIR"));
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    #[test]
    fn mirrors_come_from_one_line_and_deb822_sources() {
        assert_eq!(
            mirror_hosts(&fixture("apt-debian.sources"), true),
            vec!["deb.debian.org"]
        );
        assert_eq!(
            mirror_hosts(&fixture("apt-sources.list"), false),
            vec!["deb.debian.org"]
        );
        assert_eq!(
            mirror_hosts(&fixture("apt-google-cloud-sdk.list"), false),
            vec!["packages.cloud.google.com"]
        );
        assert_eq!(
            mirror_hosts(
                "deb [arch=amd64 signed-by=/k.gpg] https://user@Mirror.example:8443/debian x main\ndeb file:/srv/repo ./\ndeb http://[fd00::1]/d x main\n",
                false
            ),
            vec!["mirror.example", "fd00::1"]
        );
    }
}
