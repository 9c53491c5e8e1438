//! `reconcile import ufw`: ufw's rules (parsed by [`crate::host::parse::ufw`]) as a
//! `firewall` resource, printed as a manifest. Pure.

use crate::host::parse::ufw::{Ufw, UfwRule};

/// The manifest text, and what could not be carried over (also written into the
/// manifest as comments).
pub fn ufw_manifest(u: &Ufw, table: &str) -> (String, Vec<String>) {
    let mut notes: Vec<String> = u.skipped.clone();
    // `ufw status numbered` does not show the defaults: ufw's own are assumed.
    let assumed = u.defaults.is_empty();
    if assumed {
        notes.push("the input shows no defaults (`ufw status numbered` does not): ufw's own are assumed, deny incoming and allow outgoing; `ufw status verbose` shows them".into());
    }
    let policy = |dir: &str| {
        let found = u
            .defaults
            .iter()
            .rev()
            .find(|(d, _)| d == dir)
            .map(|(_, p)| p.as_str());
        match (found, dir) {
            (None, "incoming") if assumed => Some("deny"),
            (None, "outgoing") if assumed => Some("allow"),
            (f, _) => f,
        }
    };
    let verdict = |p: &str| if p == "allow" { "accept" } else { "drop" };
    // An IPv6 twin without addresses is the same rule in an `inet` table.
    let rules: Vec<&UfwRule> = u
        .rules
        .iter()
        .filter(|r| !(r.v6 && r.from.is_none() && r.to.is_none()))
        .collect();
    for r in &rules {
        if r.action == "limit" {
            notes.push(format!(
                "ufw's `limit` on port {} (at most 6 new connections in 30 s per source) is imported as `allow`",
                r.port.as_deref().unwrap_or("any")
            ));
        }
        if r.action == "reject" && policy("incoming") == Some("reject") {
            notes.push("ufw's default `reject` is imported as the policy `drop`".into());
        }
    }
    let mut out =
        String::from("# Imported from ufw by `reconcile import ufw`: review before applying.\n");
    for n in &notes {
        out.push_str(&format!("# note: {n}\n"));
    }
    out.push_str(&format!("resources:\n  - firewall: {table}\n"));
    let chains: [(&str, Option<&str>, bool); 2] = [
        ("input", policy("incoming"), false),
        ("output", policy("outgoing"), true),
    ];
    for (name, pol, out_dir) in chains {
        let mine: Vec<&UfwRule> = rules.iter().copied().filter(|r| r.out == out_dir).collect();
        if pol.is_none() && mine.is_empty() {
            continue;
        }
        out.push_str(&format!("    {name}:\n"));
        out.push_str(&format!(
            "      policy: {}\n",
            verdict(pol.unwrap_or("allow"))
        ));
        if !mine.is_empty() {
            out.push_str("      rules:\n");
            for line in merged(&mine) {
                out.push_str(&format!("        - {line}\n"));
            }
        }
    }
    match policy("routed") {
        Some("allow") => out.push_str("    forward:\n      policy: accept\n"),
        Some("deny") | Some("reject") => out.push_str("    forward:\n      policy: drop\n"),
        _ => {}
    }
    (out, notes)
}

fn yaml_str(s: &str) -> String {
    // nft comments hold no quotes or backslashes: dropped rather than escaped.
    let clean: String = s.chars().filter(|c| *c != '"' && *c != '\\').collect();
    format!("\"{clean}\"")
}

/// Consecutive rules that differ only in a single port become one rule with a port
/// list, as the runbook writes them.
fn merged(rules: &[&UfwRule]) -> Vec<String> {
    // (the rule without port and comment, its ports, comments, whether more single
    // ports may join)
    let mut groups: Vec<(UfwRule, Vec<String>, Vec<String>, bool)> = Vec::new();
    for r in rules {
        let key = UfwRule {
            port: None,
            comment: None,
            ..(*r).clone()
        };
        let single = r
            .port
            .as_deref()
            .filter(|p| p.chars().all(|c| c.is_ascii_digit()));
        if let (Some(p), Some(last)) = (single, groups.last_mut()) {
            if last.0 == key && last.3 {
                last.1.push(p.to_string());
                last.2.extend(r.comment.clone());
                continue;
            }
        }
        let ports = match &r.port {
            Some(p) => p.split(',').map(|p| p.replace(':', "-")).collect(),
            None => Vec::new(),
        };
        groups.push((
            key,
            ports,
            r.comment.clone().into_iter().collect(),
            single.is_some(),
        ));
    }
    groups
        .into_iter()
        .map(|(k, ports, comments, _)| {
            let action = match k.action.as_str() {
                "limit" => "allow",
                a => a,
            };
            let mut fields = Vec::new();
            if !ports.is_empty() {
                fields.push(match &k.proto {
                    Some(p) => format!("proto: {p}"),
                    None => "proto: [tcp, udp]".into(),
                });
                let shown: Vec<String> = ports
                    .iter()
                    .map(|p| {
                        if p.contains('-') {
                            yaml_str(p)
                        } else {
                            p.clone()
                        }
                    })
                    .collect();
                fields.push(if shown.len() == 1 {
                    format!("port: {}", shown[0])
                } else {
                    format!("port: [{}]", shown.join(", "))
                });
            } else if let Some(p) = &k.proto {
                fields.push(format!("proto: {p}"));
            }
            if let Some(f) = &k.from {
                fields.push(format!("from: {}", yaml_str(f)));
            }
            if let Some(t) = &k.to {
                fields.push(format!("to: {}", yaml_str(t)));
            }
            if let Some(i) = &k.iface {
                let key = if k.out { "oif" } else { "iif" };
                fields.push(format!("{key}: {}", yaml_str(i)));
            }
            if !comments.is_empty() {
                let mut c = comments.join("; ");
                if c.len() > 120 {
                    let mut end = 120;
                    while !c.is_char_boundary(end) {
                        end -= 1;
                    }
                    c.truncate(end);
                }
                fields.push(format!("comment: {}", yaml_str(&c)));
            }
            format!("{action}: {{ {} }}", fields.join(", "))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::parse::ufw::{parse_commands, parse_status};

    fn fixture(name: &str) -> String {
        let path = format!("{}/tests/fixtures/parse/{name}", env!("CARGO_MANIFEST_DIR"));
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    const RUNBOOK_IMPORTED: &str = "resources:
  - firewall: inet reconcile
    input:
      policy: drop
      rules:
        - allow: { proto: [tcp, udp], port: [22, 80, 443, 11434], from: \"192.168.0.0/16\" }
        - allow: { proto: udp, port: 51820 }
        - deny: { proto: [tcp, udp], port: 9123 }
    output:
      policy: drop
";

    #[test]
    fn the_runbooks_ufw_status_imports_as_the_runbooks_firewall() {
        let (text, notes) = ufw_manifest(
            &parse_status(&fixture("ufw-status-verbose-runbook.txt")),
            "inet reconcile",
        );
        assert!(notes.is_empty(), "{notes:?}");
        assert!(text.ends_with(RUNBOOK_IMPORTED), "{text}");
        // `status numbered` shows no defaults: ufw's own are assumed, and said so.
        let (numbered, notes) = ufw_manifest(
            &parse_status(&fixture("ufw-status-numbered-runbook.txt")),
            "inet reconcile",
        );
        assert!(
            numbered.contains("port: [22, 80, 443, 11434]"),
            "{numbered}"
        );
        assert!(
            numbered.contains("    input:\n      policy: drop\n"),
            "{numbered}"
        );
        assert!(
            numbered.contains("    output:\n      policy: accept\n"),
            "{numbered}"
        );
        assert!(notes.iter().any(|n| n.contains("assumed")), "{notes:?}");
    }

    #[test]
    fn the_runbooks_ufw_commands_import_with_their_comments() {
        let (text, _) = ufw_manifest(
            &parse_commands(&fixture("ufw-commands-runbook.sh")),
            "inet reconcile",
        );
        assert!(
            text.contains(
                "comment: \"SSH (LAN only); HTTP (LAN only); HTTPS (LAN only); Ollama (LAN only)\""
            ),
            "{text}"
        );
        assert!(
            text.contains("    forward:\n      policy: accept\n"),
            "{text}"
        );
    }

    #[test]
    fn limits_ranges_interfaces_and_outgoing_rules_are_carried_or_noted() {
        let (text, notes) = ufw_manifest(
            &parse_status(&fixture("ufw-status-verbose-mixed.txt")),
            "inet t",
        );
        assert!(notes.iter().any(|n| n.contains("limit")), "{notes:?}");
        assert!(text.contains("- allow: { proto: udp, port: \"1000-2000\", from: \"10.0.0.0/8\", comment: \"game range\" }"), "{text}");
        assert!(text.contains("iif: \"eth0\""), "{text}");
        assert!(
            text.contains("- deny: { to: \"203.0.113.0/24\" }"),
            "{text}"
        );
        assert!(
            text.contains("- allow: { proto: tcp, port: 443, from: \"fd00::/8\" }"),
            "{text}"
        );
    }
}
