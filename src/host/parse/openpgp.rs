//! A structural check of an ASCII-armored OpenPGP public key (RFC 4880 §6): the
//! armor lines, base64, the CRC-24 checksum when present, and that the first packet
//! is a public key. It catches a truncated, mangled or wrong file (a private key, a
//! signature) before apt does; `gpg --show-keys` goes further where it is installed.

const BEGIN: &str = "-----BEGIN PGP PUBLIC KEY BLOCK-----";
const END: &str = "-----END PGP PUBLIC KEY BLOCK-----";

/// Whether `text` looks like an armored public key at all (for telling an inline key
/// from a file name).
pub fn is_armored(text: &str) -> bool {
    text.trim_start().starts_with(BEGIN)
}

/// Checks an armored public key; the error says what is wrong.
pub fn check_armored_key(text: &str) -> Result<(), String> {
    let mut lines = text.lines().map(str::trim_end);
    if !lines.by_ref().any(|l| l == BEGIN) {
        return Err(format!(
            "no `{BEGIN}` line: not an armored OpenPGP public key"
        ));
    }
    // Armor headers (`Comment: ...`) end at the first blank line; some keys have none.
    let rest: Vec<&str> = lines.collect();
    let end = rest
        .iter()
        .position(|l| *l == END)
        .ok_or_else(|| format!("no `{END}` line: the key is cut short"))?;
    let body = &rest[..end];
    let start = if body
        .iter()
        .take_while(|l| !l.is_empty())
        .any(|l| l.contains(": "))
    {
        body.iter().position(|l| l.is_empty()).map_or(0, |p| p + 1)
    } else {
        0
    };
    let mut data = String::new();
    let mut crc: Option<&str> = None;
    for l in &body[start..] {
        if let Some(c) = l.strip_prefix('=') {
            crc = Some(c);
        } else {
            data.push_str(l.trim());
        }
    }
    let bytes = base64(&data).ok_or("the key's base64 is damaged")?;
    if bytes.is_empty() {
        return Err("the key block is empty".into());
    }
    if let Some(c) = crc {
        let want = base64(c)
            .filter(|b| b.len() == 3)
            .ok_or("the checksum line is damaged")?;
        let got = crc24(&bytes);
        if [(got >> 16) as u8, (got >> 8) as u8, got as u8] != want[..] {
            return Err("the key's checksum does not match: the key is damaged".into());
        }
    }
    let first = bytes[0];
    if first & 0x80 == 0 {
        return Err("the key block does not start with an OpenPGP packet".into());
    }
    let tag = if first & 0x40 != 0 {
        first & 0x3f
    } else {
        (first & 0x3c) >> 2
    };
    if tag != 6 {
        return Err(format!(
            "the first packet is of type {tag}, not a public key (6): a private key or a signature?"
        ));
    }
    Ok(())
}

fn base64(s: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let mut acc: u32 = 0;
    let mut bits = 0;
    for c in s.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            b'=' => break,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

fn crc24(data: &[u8]) -> u32 {
    let mut crc: u32 = 0xB704CE;
    for &b in data {
        crc ^= u32::from(b) << 16;
        for _ in 0..8 {
            crc <<= 1;
            if crc & 0x1000000 != 0 {
                crc ^= 0x1864CFB;
            }
        }
    }
    crc & 0xFFFFFF
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture() -> String {
        let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/parse/apt/demo-key.asc");
        std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
    }

    #[test]
    fn a_key_exported_by_gpg_passes_and_damage_is_named() {
        let key = fixture();
        assert_eq!(check_armored_key(&key), Ok(()));
        assert!(is_armored(&key));
        let cut: String = key.lines().take(5).collect::<Vec<_>>().join("\n");
        assert!(check_armored_key(&cut).is_err_and(|e| e.contains("cut short")));
        // One character of the body changed: the checksum catches it.
        let mut lines: Vec<String> = key.lines().map(str::to_string).collect();
        let i = lines.iter().position(|l| l.len() > 60).unwrap_or(3);
        let flipped: String = lines[i]
            .chars()
            .enumerate()
            .map(|(k, c)| {
                if k == 10 {
                    if c == 'A' {
                        'B'
                    } else {
                        'A'
                    }
                } else {
                    c
                }
            })
            .collect();
        lines[i] = flipped;
        let e = check_armored_key(&lines.join("\n"));
        assert!(e.is_err(), "{e:?}");
        assert!(check_armored_key("hello").is_err_and(|e| e.contains("not an armored")));
    }
}
