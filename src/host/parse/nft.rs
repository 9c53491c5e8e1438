//! `nft -j list table FAMILY NAME`: the JSON listing of one nftables table, parsed
//! into sets, chains and rules, each rule normalised to the readable syntax
//! `nft list` prints (counter values and handles dropped), so a declared ruleset
//! rendered in the same syntax compares equal to what the kernel holds.
//!
//! Pure; tested against listings recorded from nftables 1.0.6.

use std::net::IpAddr;

use serde_json::Value;

use super::ParseError;

const FILE: &str = "nft -j list table";

/// One table as the kernel holds it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NftTable {
    pub family: String,
    pub name: String,
    pub sets: Vec<NftSet>,
    pub chains: Vec<NftChain>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NftSet {
    pub name: String,
    /// `ipv4_addr`, `ipv6_addr`, `inet_service`, ...
    pub kind: String,
    pub flags: Vec<String>,
    /// Elements as `nft list` writes them, in canonical order (see [`sort_elements`]).
    pub elements: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NftChain {
    pub name: String,
    /// For a base chain: type, hook, priority and policy.
    pub base: Option<BaseChain>,
    /// Rules in order, in `nft list` syntax without counter values.
    pub rules: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaseChain {
    pub kind: String,
    pub hook: String,
    pub prio: i64,
    pub policy: String,
}

impl BaseChain {
    /// The chain header as a script writes it.
    pub fn header(&self) -> String {
        format!(
            "type {} hook {} priority {}; policy {};",
            self.kind, self.hook, self.prio, self.policy
        )
    }
}

fn err(message: impl Into<String>) -> ParseError {
    ParseError {
        file: FILE,
        line: 1,
        message: message.into(),
    }
}

/// Parses the listing of one table.
pub fn parse_table(json: &str) -> Result<NftTable, ParseError> {
    let doc: Value = serde_json::from_str(json).map_err(|e| err(format!("not JSON: {e}")))?;
    let items = doc
        .get("nftables")
        .and_then(Value::as_array)
        .ok_or_else(|| err("no `nftables` array"))?;
    let mut table = NftTable::default();
    let mut saw_table = false;
    for item in items {
        if let Some(t) = item.get("table") {
            table.family = str_of(t, "family")?;
            table.name = str_of(t, "name")?;
            saw_table = true;
        } else if let Some(s) = item.get("set") {
            let mut elements: Vec<String> = s
                .get("elem")
                .and_then(Value::as_array)
                .map(|a| a.iter().map(value_text).collect())
                .unwrap_or_default();
            sort_elements(&mut elements);
            table.sets.push(NftSet {
                name: str_of(s, "name")?,
                kind: s
                    .get("type")
                    .map(|t| match t {
                        Value::String(s) => s.clone(),
                        other => other.to_string(),
                    })
                    .unwrap_or_default(),
                flags: s
                    .get("flags")
                    .and_then(Value::as_array)
                    .map(|a| {
                        a.iter()
                            .filter_map(Value::as_str)
                            .map(str::to_string)
                            .collect()
                    })
                    .unwrap_or_default(),
                elements,
            });
        } else if let Some(c) = item.get("chain") {
            let base = c.get("hook").map(|hook| BaseChain {
                kind: c
                    .get("type")
                    .and_then(Value::as_str)
                    .unwrap_or("filter")
                    .to_string(),
                hook: hook.as_str().unwrap_or_default().to_string(),
                prio: c.get("prio").and_then(Value::as_i64).unwrap_or(0),
                policy: c
                    .get("policy")
                    .and_then(Value::as_str)
                    .unwrap_or("accept")
                    .to_string(),
            });
            table.chains.push(NftChain {
                name: str_of(c, "name")?,
                base,
                rules: Vec::new(),
            });
        } else if let Some(r) = item.get("rule") {
            let chain = str_of(r, "chain")?;
            let text = rule_text(r);
            match table.chains.iter_mut().find(|c| c.name == chain) {
                Some(c) => c.rules.push(text),
                None => {
                    return Err(err(format!(
                        "a rule of chain `{chain}`, which is not listed"
                    )))
                }
            }
        }
    }
    if !saw_table {
        return Err(err("the listing holds no table"));
    }
    Ok(table)
}

fn str_of(v: &Value, key: &str) -> Result<String, ParseError> {
    v.get(key)
        .and_then(Value::as_str)
        .map(str::to_string)
        .ok_or_else(|| err(format!("an object without `{key}`: {v}")))
}

/// One rule in `nft list` syntax, without counter values: the statements in order,
/// then its comment.
pub fn rule_text(rule: &Value) -> String {
    let mut parts: Vec<String> = rule
        .get("expr")
        .and_then(Value::as_array)
        .map(|a| a.iter().map(statement_text).collect())
        .unwrap_or_default();
    if let Some(c) = rule.get("comment").and_then(Value::as_str) {
        parts.push(format!("comment {}", quote(c)));
    }
    parts.join(" ")
}

fn quote(s: &str) -> String {
    format!("\"{s}\"")
}

fn statement_text(stmt: &Value) -> String {
    let Some((key, body)) = stmt.as_object().and_then(|o| o.iter().next()) else {
        return stmt.to_string();
    };
    match key.as_str() {
        "match" => {
            let left = body.get("left").map(expr_text).unwrap_or_default();
            let quoted = matches!(left.as_str(), "iif" | "oif" | "iifname" | "oifname");
            let right = match body.get("right") {
                Some(Value::String(s)) if quoted => quote(s),
                Some(Value::Array(items)) => {
                    items.iter().map(value_text).collect::<Vec<_>>().join(",")
                }
                Some(v) => value_text(v),
                None => String::new(),
            };
            match body.get("op").and_then(Value::as_str) {
                None | Some("==") | Some("in") => format!("{left} {right}"),
                Some(op) => format!("{left} {op} {right}"),
            }
        }
        "accept" | "drop" | "return" | "continue" => key.clone(),
        "jump" | "goto" => format!(
            "{key} {}",
            body.get("target").and_then(Value::as_str).unwrap_or("")
        ),
        "counter" => "counter".into(),
        "reject" => {
            let kind = body.get("type").and_then(Value::as_str);
            let code = body.get("expr").and_then(Value::as_str);
            match (kind, code) {
                (None, _) => "reject".into(),
                (Some(k), None) => format!("reject with {k}"),
                (Some(k), Some(c)) => format!("reject with {k} {c}"),
            }
        }
        "limit" => {
            let rate = body.get("rate").and_then(Value::as_u64).unwrap_or(0);
            let per = body.get("per").and_then(Value::as_str).unwrap_or("second");
            let burst = body.get("burst").and_then(Value::as_u64).unwrap_or(5);
            let over = if body.get("inv").and_then(Value::as_bool) == Some(true) {
                "over "
            } else {
                ""
            };
            if burst == 5 {
                format!("limit rate {over}{rate}/{per}")
            } else {
                format!("limit rate {over}{rate}/{per} burst {burst} packets")
            }
        }
        "log" => {
            let mut s = "log".to_string();
            if let Some(p) = body.get("prefix").and_then(Value::as_str) {
                s.push_str(&format!(" prefix {}", quote(p)));
            }
            if let Some(l) = body.get("level").and_then(Value::as_str) {
                s.push_str(&format!(" level {l}"));
            }
            s
        }
        // Anything this reader does not spell out stays visible, so it still differs
        // from a declared rule and shows in the plan.
        _ => stmt.to_string(),
    }
}

/// The left side of a match: `ip saddr`, `tcp dport`, `meta l4proto`, `iif`,
/// `ct state`.
fn expr_text(e: &Value) -> String {
    if let Some(p) = e.get("payload") {
        let proto = p.get("protocol").and_then(Value::as_str).unwrap_or("");
        let field = p.get("field").and_then(Value::as_str).unwrap_or("");
        return format!("{proto} {field}");
    }
    if let Some(m) = e.get("meta") {
        let key = m.get("key").and_then(Value::as_str).unwrap_or("");
        return match key {
            "iif" | "oif" | "iifname" | "oifname" => key.to_string(),
            _ => format!("meta {key}"),
        };
    }
    if let Some(c) = e.get("ct") {
        let key = c.get("key").and_then(Value::as_str).unwrap_or("");
        return match c.get("dir").and_then(Value::as_str) {
            Some(dir) => format!("ct {dir} {key}"),
            None => format!("ct {key}"),
        };
    }
    e.to_string()
}

/// A value on the right of a match or in a set: `22`, `10.0.0.0/8`, `1000-2000`,
/// `@lan`, `{ 22, 80 }`.
fn value_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Object(o) => {
            if let Some(p) = o.get("prefix") {
                let addr = p.get("addr").and_then(Value::as_str).unwrap_or("");
                let len = p.get("len").and_then(Value::as_u64).unwrap_or(0);
                format!("{addr}/{len}")
            } else if let Some(Value::Array(r)) = o.get("range") {
                let ends: Vec<String> = r.iter().map(value_text).collect();
                ends.join("-")
            } else if let Some(Value::Array(items)) = o.get("set") {
                let mut elements: Vec<String> = items.iter().map(value_text).collect();
                sort_elements(&mut elements);
                format!("{{ {} }}", elements.join(", "))
            } else if let Some(e) = o.get("elem") {
                e.get("val").map(value_text).unwrap_or_default()
            } else {
                v.to_string()
            }
        }
        other => other.to_string(),
    }
}

/// Orders set elements the way that does not depend on how the kernel stores them:
/// numbers and port ranges by their first number, addresses by address and prefix,
/// the rest by name. Declared sets are sorted the same way before comparing.
pub fn sort_elements(elements: &mut [String]) {
    elements.sort_by_cached_key(|e| element_key(e));
}

fn element_key(e: &str) -> (u8, u128, u32, String) {
    let first = e.split('-').next().unwrap_or(e);
    if let Ok(n) = first.parse::<u128>() {
        return (0, n, 0, e.to_string());
    }
    let (addr, len) = match e.split_once('/') {
        Some((a, l)) => (a, l.parse().unwrap_or(0)),
        None => (e, 129),
    };
    match addr.parse::<IpAddr>() {
        Ok(IpAddr::V4(a)) => (1, u32::from(a) as u128, len, String::new()),
        Ok(IpAddr::V6(a)) => (2, u128::from(a), len, String::new()),
        Err(_) => (3, 0, 0, e.to_string()),
    }
}

/// Whether nft's error says the table does not exist (`list table` of a table that
/// is absent), as opposed to nft failing.
pub fn is_no_such_table(stderr: &str) -> bool {
    // nft's own error, not `ip netns exec` failing to open a namespace (which also
    // says "No such file or directory").
    stderr.contains("Error: No such file or directory") && stderr.contains("list table")
}

/// A location in an nft error: `/dev/stdin:12:5-9: Error: ...` → (12, 5, message).
pub fn error_location(stderr: &str) -> Option<(usize, usize, String)> {
    stderr.lines().find_map(|line| {
        let (place, message) = line.split_once(": Error: ")?;
        let mut parts = place.rsplitn(3, ':');
        let cols = parts.next()?;
        let line_no = parts.next()?.parse().ok()?;
        let col = cols.split('-').next()?.parse().ok()?;
        Some((line_no, col, message.trim().to_string()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(name: &str) -> NftTable {
        parse_table(&fixture(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
    }

    fn base(c: &NftChain) -> &BaseChain {
        c.base
            .as_ref()
            .unwrap_or_else(|| panic!("{} is no base chain", c.name))
    }

    fn fixture(name: &str) -> String {
        let path = format!("{}/tests/fixtures/parse/{name}", env!("CARGO_MANIFEST_DIR"));
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    #[test]
    fn a_recorded_listing_reads_as_the_rules_nft_list_prints() {
        let t = table("nft-list-table.json");
        assert_eq!((t.family.as_str(), t.name.as_str()), ("inet", "reconcile"));
        assert_eq!(t.sets.len(), 2);
        assert_eq!(t.sets[0].name, "lan");
        assert_eq!(t.sets[0].kind, "ipv4_addr");
        assert_eq!(t.sets[0].elements, vec!["192.168.0.0/16"]);
        assert_eq!(t.sets[1].elements, vec!["fd00::/8"]);
        let input = &t.chains[0];
        assert_eq!(input.name, "input");
        assert_eq!(
            base(input).header(),
            "type filter hook input priority 0; policy drop;"
        );
        let want = [
            "iif \"lo\" accept comment \"builtin: loopback\"",
            "ct state established,related accept",
            "ct state invalid drop",
            "icmpv6 type { nd-neighbor-advert, nd-neighbor-solicit, nd-router-advert, nd-router-solicit } accept",
            "icmp type echo-request limit rate 5/second accept",
            "ip saddr @lan tcp dport { 22, 80, 443, 11434 } accept",
            "ip6 saddr @lan6 tcp dport 22 counter accept",
            "udp dport 51820 accept",
            "tcp dport 9123 limit rate 5/minute log prefix \"blocked: \" counter drop",
            "tcp dport 1000-2000 reject with icmpx port-unreachable",
            "iifname \"eth0\" ip saddr 10.0.0.1 tcp dport 22 counter accept comment \"mgmt\"",
            "counter drop",
        ];
        assert_eq!(input.rules, want);
        let output = &t.chains[1];
        assert_eq!(output.rules, Vec::<String>::new());
        assert_eq!(base(output).policy, "accept");
    }

    #[test]
    fn set_elements_port_ranges_negations_and_priorities_are_normalised() {
        let t = table("nft-list-table-forward.json");
        assert_eq!(t.sets[0].elements, vec!["10.0.0.1", "10.2.0.0/16"]);
        let c = &t.chains[0];
        assert_eq!(base(c).prio, -10);
        assert_eq!(base(c).hook, "forward");
        let want = [
            "meta l4proto tcp accept",
            "meta l4proto ipv6-icmp accept",
            "meta l4proto icmp accept",
            "ip saddr { 10.0.0.0/8, 172.16.0.1, 192.168.0.0/16 } accept",
            "ct status dnat ct state new ip saddr @s return",
            "ct status dnat ct state new drop",
            "oifname \"eth1\" ip6 daddr fd00::/8 udp dport { 53, 123, 1000-2000 } reject with icmpv6 port-unreachable",
            "tcp dport 22 reject with tcp reset",
            "icmpv6 type echo-request limit rate 5/second accept",
            "oif \"lo\" accept",
            "ip daddr != 10.0.0.0/8 drop",
        ];
        assert_eq!(c.rules, want);
    }

    #[test]
    fn nft_errors_give_their_script_line_and_column() {
        let said = "/dev/stdin:10:70-75: Error: you cannot use tcp reset with this protocol\n  oifname ...\n";
        assert_eq!(
            error_location(said),
            Some((10, 70, "you cannot use tcp reset with this protocol".into()))
        );
        assert!(is_no_such_table(
            "Error: No such file or directory\nlist table inet nope\n"
        ));
        assert!(!is_no_such_table(
            "Cannot open network namespace \"x\": No such file or directory\n"
        ));
        assert!(parse_table("{}").is_err());
        assert!(parse_table("not json").is_err());
    }
}
