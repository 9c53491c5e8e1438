//! A `firewall` spec → the table it declares, rule by rule in the syntax `nft list`
//! prints (so it compares equal to the parsed listing of the live table), and the
//! script that installs it in one transaction.
//!
//! Pure: table-tested without a kernel.

use std::net::IpAddr;

use crate::diag::Span;
use crate::host::parse::nft::{sort_elements, BaseChain, NftChain, NftSet, NftTable};

use super::model::*;
use super::Firewall;

/// How often a `log:` rule writes, at most: a port scan must not flood the journal.
pub const LOG_RATE: &str = "5/minute";
/// Priority of the `published` chain: before Docker's filter chains (priority 0).
pub const PUBLISHED_PRIO: i64 = -10;
pub const PUBLISHED_CHAIN: &str = "published";

/// One rule of the declared table, where it comes from, and what the lockout check
/// needs to know of it.
#[derive(Debug, Clone, PartialEq)]
pub struct Expanded {
    pub text: String,
    /// The manifest rule it comes from; `None` for a built-in.
    pub span: Option<Span>,
    /// For a rule with a verdict from the manifest: its matches.
    pub eval: Option<Eval>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Eval {
    pub verdict: Verdict,
    /// Matches the lockout check cannot decide for a packet (interfaces, destination).
    pub undecidable: bool,
    pub saddr: Option<Vec<AddrItem>>,
    pub proto: Option<String>,
    pub ports: Vec<(u16, u16)>,
}

/// The declared table, its rules with their origins, and the script.
#[derive(Debug, Clone)]
pub struct Rendered {
    pub table: NftTable,
    /// Per chain (same order as `table.chains`), each rule's origin.
    pub origins: Vec<Vec<Expanded>>,
}

fn net_list(nets: &[Net]) -> String {
    let mut texts: Vec<String> = nets.iter().map(Net::text).collect();
    sort_elements(&mut texts);
    texts.dedup();
    match &texts[..] {
        [one] => one.clone(),
        _ => format!("{{ {} }}", texts.join(", ")),
    }
}

fn port_list(ports: &[(u16, u16)]) -> String {
    let mut texts: Vec<String> = ports
        .iter()
        .map(|&(a, b)| {
            if a == b {
                a.to_string()
            } else {
                format!("{a}-{b}")
            }
        })
        .collect();
    sort_elements(&mut texts);
    texts.dedup();
    match &texts[..] {
        [one] => one.clone(),
        _ => format!("{{ {} }}", texts.join(", ")),
    }
}

/// Groups of addresses one nft match can take: each set on its own, the literal
/// addresses of each family together. An empty list is one group: "any".
fn addr_groups(items: &[AddrItem], table: TableFamily) -> Vec<Option<(Family, Vec<AddrItem>)>> {
    if items.is_empty() {
        return vec![None];
    }
    let mut out = Vec::new();
    for fam in [Family::V4, Family::V6] {
        let nets: Vec<AddrItem> = items
            .iter()
            .filter(|i| matches!(i, AddrItem::Net(n) if n.family() == fam))
            .cloned()
            .collect();
        if !nets.is_empty() && table.sees(fam) {
            out.push(Some((fam, nets)));
        }
    }
    for i in items {
        if let AddrItem::Set(_, fam) = i {
            if table.sees(*fam) {
                out.push(Some((*fam, vec![i.clone()])));
            }
        }
    }
    out
}

fn addr_text(items: &[AddrItem]) -> String {
    match items {
        [AddrItem::Set(name, _)] => format!("@{name}"),
        _ => {
            let nets: Vec<Net> = items
                .iter()
                .filter_map(|i| match i {
                    AddrItem::Net(n) => Some(*n),
                    AddrItem::Set(..) => None,
                })
                .collect();
            net_list(&nets)
        }
    }
}

fn proto_l4(name: &str) -> &'static str {
    super::decode::PROTOCOLS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, l4)| *l4)
        .unwrap_or("tcp")
}

fn quoted(s: &str) -> String {
    format!("\"{s}\"")
}

/// One manifest rule → its nft rules: one per address family and set it names and per
/// protocol, each preceded by its rate-limited log rule when it logs.
pub fn expand_rule(r: &RuleDef, table: TableFamily) -> Vec<Expanded> {
    let mut out = Vec::new();
    let protos: Vec<Option<&str>> = if r.protos.is_empty() {
        vec![None]
    } else {
        r.protos.iter().map(|p| Some(p.as_str())).collect()
    };
    for from in addr_groups(&r.from, table) {
        for to in addr_groups(&r.to, table) {
            let fam = match (&from, &to) {
                (Some((a, _)), Some((b, _))) if a != b => continue,
                (Some((a, _)), _) | (_, Some((a, _))) => Some(*a),
                _ => None,
            };
            for proto in &protos {
                let mut parts = Vec::new();
                if let Some(i) = &r.iif {
                    parts.push(format!("iifname {}", quoted(i)));
                }
                if let Some(o) = &r.oif {
                    parts.push(format!("oifname {}", quoted(o)));
                }
                if let Some((f, items)) = &from {
                    parts.push(format!("{} saddr {}", f.proto(), addr_text(items)));
                }
                if let Some((f, items)) = &to {
                    parts.push(format!("{} daddr {}", f.proto(), addr_text(items)));
                }
                match (proto, r.ports.is_empty()) {
                    (Some(p), false) => parts.push(format!("{p} dport {}", port_list(&r.ports))),
                    (Some(p), true) => parts.push(format!("meta l4proto {}", proto_l4(p))),
                    (None, _) => {}
                }
                if let Some(prefix) = &r.log {
                    let mut log = parts.clone();
                    log.push(format!(
                        "limit rate {LOG_RATE} log prefix {}",
                        quoted(prefix)
                    ));
                    out.push(Expanded {
                        text: log.join(" "),
                        span: Some(r.span.clone()),
                        eval: None,
                    });
                }
                if r.counter {
                    parts.push("counter".into());
                }
                parts.push(match r.verdict {
                    Verdict::Accept => "accept".into(),
                    Verdict::Drop => "drop".into(),
                    Verdict::Reject => reject_text(*proto, fam, table),
                });
                if let Some(c) = &r.comment {
                    parts.push(format!("comment {}", quoted(c)));
                }
                out.push(Expanded {
                    text: parts.join(" "),
                    span: Some(r.span.clone()),
                    eval: Some(Eval {
                        verdict: r.verdict,
                        undecidable: r.iif.is_some() || r.oif.is_some() || to.is_some(),
                        saddr: from.as_ref().map(|(_, items)| items.clone()),
                        proto: proto.map(str::to_string),
                        ports: r.ports.clone(),
                    }),
                });
            }
        }
    }
    out
}

/// The reject a rule gets: a TCP reset for TCP, else "port unreachable" in the ICMP
/// of the packet's family, written as nft stores it so the listing compares equal.
fn reject_text(proto: Option<&str>, fam: Option<Family>, table: TableFamily) -> String {
    if proto == Some("tcp") {
        return "reject with tcp reset".into();
    }
    match fam.or(table.only()) {
        Some(Family::V4) => "reject with icmp port-unreachable".into(),
        Some(Family::V6) => "reject with icmpv6 port-unreachable".into(),
        None => "reject with icmpx port-unreachable".into(),
    }
}

fn builtin(text: &str, name: &str) -> Expanded {
    Expanded {
        text: format!("{text} comment \"builtin: {name}\""),
        span: None,
        eval: None,
    }
}

/// The built-ins of one chain, in order.
pub fn builtins(b: &Builtins, hook: Hook, table: TableFamily) -> Vec<Expanded> {
    let mut out = Vec::new();
    let v4 = table.sees(Family::V4);
    let v6 = table.sees(Family::V6);
    if b.loopback {
        match hook {
            Hook::Input => out.push(builtin("iif \"lo\" accept", "loopback")),
            Hook::Output => out.push(builtin("oif \"lo\" accept", "loopback")),
            Hook::Forward => {}
        }
    }
    if b.established {
        out.push(builtin(
            "ct state established,related accept",
            "established",
        ));
    }
    if b.invalid {
        out.push(builtin("ct state invalid drop", "invalid"));
    }
    if b.icmpv6_nd && v6 && hook != Hook::Forward {
        out.push(builtin(
            "icmpv6 type { nd-neighbor-advert, nd-neighbor-solicit, nd-router-advert, nd-router-solicit } accept",
            "icmpv6 neighbour discovery",
        ));
    }
    if b.echo && hook == Hook::Input {
        if v4 {
            out.push(builtin(
                "icmp type echo-request limit rate 5/second accept",
                "echo",
            ));
        }
        if v6 {
            out.push(builtin(
                "icmpv6 type echo-request limit rate 5/second accept",
                "echo",
            ));
        }
    }
    out
}

/// The `published` chain's rules: DNAT'ed new connections from the allowed sources
/// leave the chain, every other one is dropped.
fn published(p: &Published, table: TableFamily) -> Vec<Expanded> {
    let mut out = Vec::new();
    for group in addr_groups(&p.from, table).into_iter().flatten() {
        let (f, items) = group;
        out.push(Expanded {
            text: format!(
                "ct status dnat ct state new {} saddr {} return",
                f.proto(),
                addr_text(&items)
            ),
            span: Some(p.span.clone()),
            eval: None,
        });
    }
    out.push(Expanded {
        text: if p.counter {
            "ct status dnat ct state new counter drop".into()
        } else {
            "ct status dnat ct state new drop".into()
        },
        span: Some(p.span.clone()),
        eval: None,
    });
    out
}

/// The sets `package_mirrors: true` fills with the addresses apt's mirrors resolve to.
pub const MIRRORS: &str = "package_mirrors";
pub const MIRRORS6: &str = "package_mirrors6";

/// The declared table; `mirrors` are the addresses of apt's mirrors, resolved when
/// observing (used with `package_mirrors: true`).
pub fn render(fw: &Firewall, mirrors: &[IpAddr]) -> Rendered {
    let mut table = NftTable {
        family: fw.family.name().into(),
        name: fw.table.clone(),
        ..NftTable::default()
    };
    for s in &fw.sets {
        let mut elements: Vec<String> = s.elements.iter().map(Net::text).collect();
        sort_elements(&mut elements);
        elements.dedup();
        table.sets.push(NftSet {
            name: s.name.clone(),
            kind: s.family.set_type().into(),
            flags: vec!["interval".into()],
            elements,
        });
    }
    if fw.package_mirrors {
        for (name, fam) in [(MIRRORS, Family::V4), (MIRRORS6, Family::V6)] {
            if !fw.family.sees(fam) {
                continue;
            }
            let mut elements: Vec<String> = mirrors
                .iter()
                .filter(|a| a.is_ipv4() == (fam == Family::V4))
                .map(IpAddr::to_string)
                .collect();
            sort_elements(&mut elements);
            elements.dedup();
            table.sets.push(NftSet {
                name: name.into(),
                kind: fam.set_type().into(),
                flags: vec!["interval".into()],
                elements,
            });
        }
    }
    let mut origins = Vec::new();
    for c in &fw.chains {
        let mut rules = builtins(&fw.builtins, c.hook, fw.family);
        if fw.package_mirrors && c.hook == Hook::Output {
            for (name, fam) in [(MIRRORS, Family::V4), (MIRRORS6, Family::V6)] {
                if fw.family.sees(fam) {
                    rules.push(Expanded {
                        text: format!(
                            "{} daddr @{name} tcp dport {{ 80, 443 }} accept comment \"package mirrors\"",
                            fam.proto()
                        ),
                        span: None,
                        eval: None,
                    });
                }
            }
        }
        for r in &c.rules {
            rules.extend(expand_rule(r, fw.family));
        }
        table.chains.push(NftChain {
            name: c.hook.name().into(),
            base: Some(BaseChain {
                kind: "filter".into(),
                hook: c.hook.name().into(),
                prio: 0,
                policy: c.policy.name().into(),
            }),
            rules: rules.iter().map(|e| e.text.clone()).collect(),
        });
        origins.push(rules);
    }
    if let Some(p) = &fw.published {
        let rules = published(p, fw.family);
        table.chains.push(NftChain {
            name: PUBLISHED_CHAIN.into(),
            base: Some(BaseChain {
                kind: "filter".into(),
                hook: "forward".into(),
                prio: PUBLISHED_PRIO,
                policy: "accept".into(),
            }),
            rules: rules.iter().map(|e| e.text.clone()).collect(),
        });
        origins.push(rules);
    }
    Rendered { table, origins }
}

/// The script and, for each of its lines that holds a rule or a set, the manifest
/// place it comes from (to point nft's errors at the manifest).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Script {
    pub text: String,
    pub origins: Vec<(usize, Span)>,
}

impl Script {
    /// The manifest place of a script line.
    pub fn origin(&self, line: usize) -> Option<&Span> {
        self.origins
            .iter()
            .find(|(l, _)| *l == line)
            .map(|(_, s)| s)
    }
}

/// The lines that remove the table if present, in the same transaction: nft has
/// no "delete if exists" before 1.0.8, so the table is first created empty.
fn replace_prelude(family: &str, name: &str) -> String {
    format!("table {family} {name} {{}}\ndelete table {family} {name}\n")
}

/// One transaction: (create the table if absent and) delete it, then declare it
/// whole. Only this table is named; every other table is untouched.
pub fn script(fw: &Firewall, r: &Rendered) -> Script {
    let t = &r.table;
    let mut text = replace_prelude(&t.family, &t.name);
    let mut origins = Vec::new();
    let mut line = 2;
    let mut push = |text: &mut String, s: String, origin: Option<Span>| {
        line += 1;
        if let Some(o) = origin {
            origins.push((line, o));
        }
        text.push_str(&s);
        text.push('\n');
    };
    push(&mut text, format!("table {} {} {{", t.family, t.name), None);
    for s in &t.sets {
        let origin = fw
            .sets
            .iter()
            .find(|d| d.name == s.name)
            .map(|d| d.span.clone());
        push(&mut text, format!("\tset {} {{", s.name), origin.clone());
        push(&mut text, format!("\t\ttype {}", s.kind), origin.clone());
        push(&mut text, "\t\tflags interval".into(), origin.clone());
        if !s.elements.is_empty() {
            push(
                &mut text,
                format!("\t\telements = {{ {} }}", s.elements.join(", ")),
                origin.clone(),
            );
        }
        push(&mut text, "\t}".into(), None);
    }
    for (c, rules) in t.chains.iter().zip(&r.origins) {
        push(&mut text, format!("\tchain {} {{", c.name), None);
        if let Some(b) = &c.base {
            push(&mut text, format!("\t\t{}", b.header()), None);
        }
        for e in rules {
            push(&mut text, format!("\t\t{}", e.text), e.span.clone());
        }
        push(&mut text, "\t}".into(), None);
    }
    push(&mut text, "}".into(), None);
    Script { text, origins }
}

/// The script that removes the table (`state: absent`).
pub fn removal(family: &str, name: &str) -> String {
    replace_prelude(family, name)
}

/// What the declared input chain does with a new TCP connection from `src` to
/// `port`: `None` when it is accepted, else the rule that drops it (`None` inside:
/// the chain's policy).
pub fn drops_connection(
    fw: &Firewall,
    r: &Rendered,
    src: IpAddr,
    port: u16,
) -> Option<Option<Span>> {
    let fam = Net { addr: src, len: 0 }.family();
    if !fw.family.sees(fam) {
        // An `ip6` table never sees an IPv4 session (and `ip` an IPv6 one).
        return None;
    }
    let i = fw.chains.iter().position(|c| c.hook == Hook::Input)?;
    let chain = &fw.chains[i];
    let in_sets = |items: &[AddrItem]| {
        items.iter().any(|it| match it {
            AddrItem::Net(n) => n.contains(src),
            AddrItem::Set(name, _) => fw
                .sets
                .iter()
                .filter(|s| &s.name == name)
                .any(|s| s.elements.iter().any(|n| n.contains(src))),
        })
    };
    for e in &r.origins[i] {
        let Some(ev) = &e.eval else { continue };
        let src_ok = ev.saddr.as_deref().is_none_or(in_sets);
        let proto_ok = ev.proto.as_deref().is_none_or(|p| p == "tcp");
        let port_ok = ev.ports.is_empty() || ev.ports.iter().any(|&(a, b)| a <= port && port <= b);
        if !(src_ok && proto_ok && port_ok) {
            continue;
        }
        match ev.verdict {
            // An accept counts only when it surely matches.
            Verdict::Accept if !ev.undecidable => return None,
            Verdict::Accept => {}
            Verdict::Drop | Verdict::Reject => return Some(e.span.clone()),
        }
    }
    (chain.policy == Policy::Drop).then_some(None)
}
