//! ufw's rules, from `ufw status numbered` / `ufw status verbose` output or from a
//! script of `ufw` commands (the runbook's `sudo ufw allow from ... to any port 22`),
//! into one typed list, for `reconcile import ufw`. Pure; tested on output recorded
//! from ufw 0.36.2 and on the runbook's commands.

/// What ufw was told, or shows.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Ufw {
    /// `default deny incoming` etc.: (direction, policy) with direction `incoming`,
    /// `outgoing` or `routed`, policy `allow`, `deny`, `reject` or `disabled`.
    pub defaults: Vec<(String, String)>,
    pub rules: Vec<UfwRule>,
    /// Lines or commands that have no equivalent here, with why.
    pub skipped: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UfwRule {
    /// `allow`, `deny`, `reject` or `limit`.
    pub action: String,
    /// Outgoing (`out`) rather than incoming.
    pub out: bool,
    /// `tcp`, `udp`; `None`: both (ufw's default for a port).
    pub proto: Option<String>,
    /// Destination ports as ufw writes them: `22`, `1000:2000`, `22,80`.
    pub port: Option<String>,
    /// Source and destination address or network; `None`: any.
    pub from: Option<String>,
    pub to: Option<String>,
    pub iface: Option<String>,
    /// The IPv6 twin ufw lists for a rule without addresses.
    pub v6: bool,
    pub comment: Option<String>,
}

const ACTIONS: &[&str] = &["allow", "deny", "reject", "limit"];

/// `ufw status numbered` or `ufw status verbose` output.
pub fn parse_status(text: &str) -> Ufw {
    let mut u = Ufw::default();
    for line in text.lines() {
        let line = line.trim_end();
        if let Some(d) = line.strip_prefix("Default:") {
            // "deny (incoming), deny (outgoing), disabled (routed)"
            for part in d.split(',') {
                let mut w = part.split_whitespace();
                if let (Some(policy), Some(dir)) = (w.next(), w.next()) {
                    u.defaults.push((
                        dir.trim_matches(|c| c == '(' || c == ')').to_string(),
                        policy.to_string(),
                    ));
                }
            }
            continue;
        }
        // Numbered lines start with `[ N]`; verbose ones with the To column.
        let body = match line.trim_start().strip_prefix('[') {
            Some(rest) => match rest.split_once(']') {
                Some((_, b)) => b,
                None => continue,
            },
            None => line,
        };
        let (body, comment) = match body.split_once(" # ") {
            Some((b, c)) => (b, Some(c.trim().to_string())),
            None => (body, None),
        };
        let words: Vec<&str> = body.split_whitespace().collect();
        let Some(ai) = words.iter().position(|w| {
            ACTIONS.contains(&w.to_ascii_lowercase().as_str()) && *w == w.to_ascii_uppercase()
        }) else {
            continue;
        };
        let action = words[ai].to_ascii_lowercase();
        let direction = words.get(ai + 1).copied().unwrap_or("IN");
        if direction == "FWD" {
            u.skipped
                .push(format!("{}: routed rules are not imported", line.trim()));
            continue;
        }
        let mut rule = UfwRule {
            action,
            out: direction == "OUT",
            comment,
            ..UfwRule::default()
        };
        let to: Vec<&str> = words[..ai].to_vec();
        let from: Vec<&str> = words[ai + 1..]
            .iter()
            .copied()
            .filter(|w| !matches!(*w, "IN" | "OUT" | "(out)"))
            .collect();
        let mut ok = true;
        let mut i = 0;
        while i < to.len() {
            match to[i] {
                "(v6)" => rule.v6 = true,
                "on" => {
                    rule.iface = to.get(i + 1).map(|s| s.to_string());
                    i += 1;
                }
                "Anywhere" => {}
                w => ok &= place(w, &mut rule),
            }
            i += 1;
        }
        let mut src_port = None;
        for w in from {
            match w {
                "Anywhere" | "(v6)" => {}
                w if is_port_spec(w) => src_port = Some(w),
                w => rule.from = Some(w.to_string()),
            }
        }
        if src_port.is_some() {
            u.skipped
                .push(format!("{}: source ports are not imported", line.trim()));
            continue;
        }
        if !ok {
            u.skipped.push(format!(
                "{}: application profiles are not imported; write the ports",
                line.trim()
            ));
            continue;
        }
        u.rules.push(rule);
    }
    u
}

/// One word of a To column: the destination address or network, or ports with a
/// protocol. `false` for what is neither (an application profile name).
fn place(w: &str, rule: &mut UfwRule) -> bool {
    if is_port_spec(w) {
        let (port, proto) = match w.split_once('/') {
            Some((p, proto)) => (p, Some(proto.to_string())),
            None => (w, None),
        };
        rule.port = Some(port.to_string());
        rule.proto = proto;
        return true;
    }
    if is_address(w) {
        rule.to = Some(w.to_string());
        return true;
    }
    false
}

fn is_port_spec(w: &str) -> bool {
    let port = w.split('/').next().unwrap_or(w);
    let proto_ok = w
        .split_once('/')
        .is_none_or(|(_, p)| matches!(p, "tcp" | "udp"));
    !port.is_empty()
        && proto_ok
        && port
            .chars()
            .all(|c| c.is_ascii_digit() || c == ':' || c == ',')
}

fn is_address(w: &str) -> bool {
    let addr = w.split('/').next().unwrap_or(w);
    addr.parse::<std::net::IpAddr>().is_ok()
}

/// A script of `ufw` commands (`sudo` and `#` comments allowed).
pub fn parse_commands(text: &str) -> Ufw {
    let mut u = Ufw::default();
    for raw in text.lines() {
        let (line, comment) = match raw.split_once('#') {
            Some((l, c)) => (l.trim(), Some(c.trim())),
            None => (raw.trim(), None),
        };
        let mut words: Vec<&str> = line.split_whitespace().collect();
        if words.first() == Some(&"sudo") {
            words.remove(0);
        }
        if words.first() != Some(&"ufw") {
            continue;
        }
        words.remove(0);
        words.retain(|w| *w != "--force");
        match words.first().copied() {
            Some("default") => {
                if let [_, policy, dir, ..] = words[..] {
                    u.defaults.push((dir.to_string(), policy.to_string()));
                }
            }
            Some("reset" | "enable" | "reload" | "status" | "logging") | None => {}
            Some(a) if ACTIONS.contains(&a) => match command_rule(&words, comment) {
                Some(r) => u.rules.push(r),
                None => u.skipped.push(format!("{}: not understood", raw.trim())),
            },
            Some(_) => u.skipped.push(format!("{}: not imported", raw.trim())),
        }
    }
    u
}

/// `allow 51820/udp`, `allow from X to any port 22 [proto tcp]`, `deny in on eth0 ...`.
fn command_rule(words: &[&str], note: Option<&str>) -> Option<UfwRule> {
    let mut r = UfwRule {
        action: words[0].to_string(),
        ..UfwRule::default()
    };
    let any = |s: &str| (s != "any").then(|| s.to_string());
    let mut i = 1;
    let mut simple = true;
    while i < words.len() {
        let next = words.get(i + 1).copied();
        match words[i] {
            "in" => {}
            "out" => r.out = true,
            "log" | "log-all" => {}
            "on" => {
                r.iface = next.map(str::to_string);
                i += 1;
            }
            "from" => {
                r.from = any(next?);
                simple = false;
                i += 1;
            }
            "to" => {
                r.to = any(next?);
                simple = false;
                i += 1;
            }
            "port" => {
                r.port = Some(next?.to_string());
                i += 1;
            }
            "proto" => {
                r.proto = Some(next?.to_string());
                i += 1;
            }
            "comment" => {
                r.comment = Some(words[i + 1..].join(" ").trim_matches('\'').to_string());
                break;
            }
            w if simple && is_port_spec(w) => {
                place(w, &mut r);
            }
            _ => return None,
        }
        i += 1;
    }
    if r.comment.is_none() {
        r.comment = note.filter(|n| !n.is_empty()).map(str::to_string);
    }
    Some(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> String {
        let path = format!("{}/tests/fixtures/parse/{name}", env!("CARGO_MANIFEST_DIR"));
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    fn rule(action: &str, proto: Option<&str>, port: &str, from: Option<&str>) -> UfwRule {
        UfwRule {
            action: action.into(),
            proto: proto.map(str::to_string),
            port: Some(port.into()),
            from: from.map(str::to_string),
            ..UfwRule::default()
        }
    }

    #[test]
    fn the_runbook_status_reads_as_its_rules_with_v6_twins() {
        let u = parse_status(&fixture("ufw-status-numbered-runbook.txt"));
        let lan = Some("192.168.0.0/16");
        let mut want = vec![
            rule("allow", None, "22", lan),
            rule("allow", None, "80", lan),
            rule("allow", None, "443", lan),
            rule("allow", None, "11434", lan),
            rule("allow", Some("udp"), "51820", None),
            rule("deny", None, "9123", None),
        ];
        let mut twins = vec![
            rule("allow", Some("udp"), "51820", None),
            rule("deny", None, "9123", None),
        ];
        twins.iter_mut().for_each(|r| r.v6 = true);
        want.extend(twins);
        assert_eq!(u.rules, want);
        assert!(u.skipped.is_empty(), "{:?}", u.skipped);
        let verbose = parse_status(&fixture("ufw-status-verbose-runbook.txt"));
        assert_eq!(verbose.rules, want);
        assert_eq!(
            verbose.defaults,
            vec![
                ("incoming".to_string(), "deny".to_string()),
                ("outgoing".to_string(), "deny".to_string()),
                ("routed".to_string(), "disabled".to_string()),
            ]
        );
    }

    #[test]
    fn mixed_status_lines_read_their_interfaces_ranges_comments_and_directions() {
        let u = parse_status(&fixture("ufw-status-numbered-mixed.txt"));
        let r = &u.rules;
        assert_eq!(r[0].action, "limit");
        assert_eq!(r[1].iface.as_deref(), Some("eth0"));
        assert_eq!(r[2].port.as_deref(), Some("1000:2000"));
        assert_eq!(r[2].comment.as_deref(), Some("game range"));
        assert_eq!(r[3].action, "reject");
        assert!(r[4].out && r[4].to.as_deref() == Some("203.0.113.0/24") && r[4].port.is_none());
        assert!(r[5].out && r[5].port.as_deref() == Some("53"));
        assert_eq!(r[6].to.as_deref(), Some("192.168.1.1"));
        assert_eq!(r[6].from.as_deref(), Some("192.168.1.10"));
        assert!(r[8].v6 && r[8].iface.as_deref() == Some("eth0"));
        assert_eq!(r[10].from.as_deref(), Some("fd00::/8"));
        assert_eq!(r.len(), 12);
    }

    #[test]
    fn the_runbook_commands_read_as_the_same_rules() {
        let u = parse_commands(&fixture("ufw-commands-runbook.sh"));
        assert_eq!(
            u.defaults,
            vec![
                ("incoming".to_string(), "deny".to_string()),
                ("outgoing".to_string(), "deny".to_string()),
                ("routed".to_string(), "allow".to_string()),
            ]
        );
        assert_eq!(u.rules.len(), 6);
        assert_eq!(u.rules[0].from.as_deref(), Some("192.168.0.0/16"));
        assert_eq!(u.rules[0].port.as_deref(), Some("22"));
        assert_eq!(u.rules[0].comment.as_deref(), Some("SSH (LAN only)"));
        assert_eq!(u.rules[4].proto.as_deref(), Some("udp"));
        assert_eq!(u.rules[5].action, "deny");
        assert_eq!(u.rules[5].from, None);
        assert!(u.skipped.is_empty(), "{:?}", u.skipped);
        let odd = parse_commands("ufw allow OpenSSH\nufw route allow 80\nufw delete 3\n");
        assert_eq!(odd.skipped.len(), 3, "{:?}", odd.skipped);
    }
}
