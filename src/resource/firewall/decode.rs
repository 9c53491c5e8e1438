//! The `firewall` manifest entry → a typed [`Firewall`] spec. Every problem (a CIDR
//! that does not parse, a port out of range, a descending range, an unknown
//! protocol, a set that is not defined or mixes address families) is reported at its
//! `file:line:column` with the field, all at once.

use std::net::IpAddr;

use crate::diag::Span;
use crate::id::ResourceId;
use crate::manifest::decode::{Decoder, Fields};
use crate::manifest::yaml::{Node, Value};

use super::model::*;
use super::{Firewall, Meta};
use crate::resource::{Ensure, Resource};

/// Protocols a rule may name, with nftables' `meta l4proto` spelling.
pub const PROTOCOLS: &[(&str, &str)] = &[
    ("tcp", "tcp"),
    ("udp", "udp"),
    ("sctp", "sctp"),
    ("icmp", "icmp"),
    ("icmpv6", "ipv6-icmp"),
    ("esp", "esp"),
    ("ah", "ah"),
    ("gre", "gre"),
];

/// Protocols with ports.
const PORTED: &[&str] = &["tcp", "udp", "sctp"];

const BUILTINS: &[&str] = &["loopback", "established", "invalid", "icmpv6_nd", "echo"];

pub fn decode(
    d: &mut Decoder,
    name: (String, Span),
    meta: Meta,
    f: &mut Fields,
) -> Option<Box<dyn Resource>> {
    let (raw, span) = name;
    let table = parse_table_name(&raw).map_err(|msg| d.error(&span, "firewall", msg));
    let ensure = Ensure::decode(d, f);
    let sets = decode_sets(d, f, table.as_ref().ok().map(|t| t.0));
    let set_families: Vec<(String, Family)> =
        sets.iter().map(|s| (s.name.clone(), s.family)).collect();
    let mut chains = Vec::new();
    for hook in [Hook::Input, Hook::Output, Hook::Forward] {
        if let Some(node) = f.raw(hook.name()) {
            if let Some(c) = decode_chain(d, node, hook, &set_families) {
                chains.push(c);
            }
        }
    }
    let builtins = decode_builtins(d, f);
    let published = f
        .raw("published_ports")
        .and_then(|n| decode_published(d, n, &set_families));
    let management = f
        .raw("management")
        .map(|n| decode_addrs(d, n, "management", &set_families))
        .unwrap_or_default();
    let ssh_port = f.u32(d, "ssh_port").and_then(|p| {
        let span = f.span.clone();
        match u16::try_from(p) {
            Ok(p) if p > 0 => Some(p),
            _ => {
                d.error(&span, "ssh_port", format!("{p} is not a port (1 to 65535)"));
                None
            }
        }
    });
    let egress = f.bool(d, "package_mirrors").unwrap_or(false);
    if egress {
        for s in sets
            .iter()
            .filter(|s| s.name.starts_with("package_mirrors"))
        {
            d.error(
                &s.span,
                "sets",
                format!(
                    "set `{}` is filled by `package_mirrors: true`; name yours differently",
                    s.name
                ),
            );
        }
    }
    let (family, table) = table.ok()?;
    if let Some(t) = family.only() {
        for s in &sets {
            if s.family != t {
                d.error(
                    &s.span,
                    "sets",
                    format!(
                        "set `{}` holds {} addresses, but table `{} {table}` only sees {} packets; use an `inet` table for both",
                        s.name,
                        s.family.name(),
                        family.name(),
                        t.name()
                    ),
                );
            }
        }
    }
    Some(Box::new(Firewall {
        id: ResourceId::new("firewall", format!("{} {table}", family.name())),
        meta,
        span: f.span.clone(),
        family,
        table,
        ensure,
        sets,
        chains,
        builtins,
        published,
        management,
        ssh_port,
        package_mirrors: egress,
    }))
}

/// `inet reconcile` → (family, table name).
pub fn parse_table_name(raw: &str) -> Result<(TableFamily, String), String> {
    let words: Vec<&str> = raw.split_whitespace().collect();
    let [family, name] = words[..] else {
        return Err(format!(
            "`{raw}` is not FAMILY NAME: write the nftables table this resource owns, e.g. `inet reconcile`"
        ));
    };
    let family = match family {
        "inet" => TableFamily::Inet,
        "ip" => TableFamily::Ip,
        "ip6" => TableFamily::Ip6,
        other => {
            return Err(format!(
                "`{other}` is not a table family this kind manages; use inet (IPv4 and IPv6), ip or ip6"
            ))
        }
    };
    if !valid_name(name) {
        return Err(format!(
            "`{name}` is not a valid table name: letters, digits and `_`, starting with a letter"
        ));
    }
    Ok((family, name.to_string()))
}

/// An nftables identifier this kind writes unquoted: set, table and chain names.
fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && name.len() <= 64
}

fn map_of<'n>(d: &mut Decoder, node: &'n Node, field: &str) -> Option<&'n [(Node, Node)]> {
    match &node.value {
        Value::Map(m) => Some(m),
        other => {
            d.error(
                &node.span,
                field,
                format!("expected a mapping, found {}", other.type_name()),
            );
            None
        }
    }
}

fn items_of(node: &Node) -> Vec<&Node> {
    match &node.value {
        Value::Seq(items) => items.iter().collect(),
        _ => vec![node],
    }
}

/// A scalar as text (strings and numbers; templates rendered).
fn text_of(d: &mut Decoder, node: &Node, field: &str) -> Option<String> {
    match &node.value {
        Value::Str(s) => match d.templates.render_inline(s, &node.span) {
            Ok(t) => Some(t),
            Err(diag) => {
                d.diags.push(diag.field(field));
                None
            }
        },
        Value::Int(i) => Some(i.to_string()),
        other => {
            d.error(
                &node.span,
                field,
                format!("expected a string, found {}", other.type_name()),
            );
            None
        }
    }
}

fn decode_sets(d: &mut Decoder, f: &mut Fields, only: Option<TableFamily>) -> Vec<SetDef> {
    let Some(node) = f.raw("sets") else {
        return Vec::new();
    };
    let Some(entries) = map_of(d, node, "sets") else {
        return Vec::new();
    };
    let mut out: Vec<SetDef> = Vec::new();
    for (k, v) in entries {
        let name = k.key_text();
        if !valid_name(&name) {
            d.error(
                &k.span,
                "sets",
                format!("`{name}` is not a valid set name: letters, digits and `_`, starting with a letter"),
            );
            continue;
        }
        // `lan: [..]`, or `lan: { type: ipv4, elements: [..] }` to fix the family of
        // a set that may be empty.
        let (declared, elements_node) = match &v.value {
            Value::Map(m) => {
                let mut sf = Fields::new(m, v.span.clone(), "firewall set");
                let declared = sf.string(d, "type").and_then(|(t, span)| match t.as_str() {
                    "ipv4" => Some(Family::V4),
                    "ipv6" => Some(Family::V6),
                    other => {
                        d.error(
                            &span,
                            "type",
                            format!("`{other}` is not a set type; use ipv4 or ipv6"),
                        );
                        None
                    }
                });
                let el = sf.raw("elements");
                sf.finish(d);
                (declared, el)
            }
            Value::Null => (None, None),
            _ => (None, Some(v)),
        };
        let mut family = declared;
        let mut elements = Vec::new();
        for item in elements_node.map(items_of).unwrap_or_default() {
            let Some(text) = text_of(d, item, "sets") else {
                continue;
            };
            match parse_net(&text) {
                Ok(net) => match family {
                    Some(fam) if fam != net.family() => d.error(
                        &item.span,
                        "sets",
                        format!(
                            "`{text}` is an {} address in set `{name}`, which holds {} addresses (nftables sets hold one family: put it in a set of its own, e.g. `{name}6`)",
                            net.family().name(),
                            fam.name()
                        ),
                    ),
                    _ => {
                        family = Some(net.family());
                        elements.push(net);
                    }
                },
                Err(msg) => d.error(&item.span, "sets", msg),
            }
        }
        let family = family.unwrap_or(match only {
            Some(TableFamily::Ip6) => Family::V6,
            _ => Family::V4,
        });
        out.push(SetDef {
            name,
            family,
            elements,
            span: k.span.clone(),
        });
    }
    out
}

/// `192.168.0.0/16`, `10.0.0.1`, `fd00::/8`.
pub fn parse_net(text: &str) -> Result<Net, String> {
    let (addr, len) = match text.split_once('/') {
        Some((a, l)) => (a, Some(l)),
        None => (text, None),
    };
    let addr: IpAddr = addr.trim().parse().map_err(|_| {
        format!("`{text}` is not an IP address or CIDR network (e.g. 192.168.0.0/16, fd00::/8)")
    })?;
    let max = match addr {
        IpAddr::V4(_) => 32,
        IpAddr::V6(_) => 128,
    };
    let len = match len {
        None => max,
        Some(l) => match l.parse::<u8>() {
            Ok(n) if n <= max => n,
            _ => {
                return Err(format!(
                    "`{text}` is not a CIDR network: an {} prefix length is 0 to {max}",
                    if max == 32 { "IPv4" } else { "IPv6" }
                ))
            }
        },
    };
    let net = Net { addr, len };
    if net.network() != addr {
        return Err(format!(
            "`{text}` has host bits set below its /{len} prefix; write the network `{}`",
            Net {
                addr: net.network(),
                len
            }
            .text()
        ));
    }
    Ok(net)
}

fn decode_chain(
    d: &mut Decoder,
    node: &Node,
    hook: Hook,
    sets: &[(String, Family)],
) -> Option<ChainDef> {
    let m = map_of(d, node, hook.name())?;
    let mut f = Fields::new(m, node.span.clone(), "firewall chain");
    let policy = match f.string(d, "policy") {
        None => Policy::Accept,
        Some((p, _)) if p == "accept" => Policy::Accept,
        Some((p, _)) if p == "drop" => Policy::Drop,
        Some((p, span)) => {
            d.error(
                &span,
                "policy",
                format!("`{p}` is not a policy; use accept or drop"),
            );
            Policy::Accept
        }
    };
    let mut rules = Vec::new();
    if let Some(list) = f.raw("rules") {
        match &list.value {
            Value::Seq(items) => {
                for item in items {
                    if let Some(r) = decode_rule(d, item, sets) {
                        rules.push(r);
                    }
                }
            }
            other => d.error(
                &list.span,
                "rules",
                format!("expected a list of rules, found {}", other.type_name()),
            ),
        }
    }
    f.finish(d);
    Some(ChainDef {
        hook,
        policy,
        rules,
        span: node.span.clone(),
    })
}

fn decode_rule(d: &mut Decoder, node: &Node, sets: &[(String, Family)]) -> Option<RuleDef> {
    let m = map_of(d, node, "rules")?;
    let [(k, body)] = m else {
        d.error(
            &node.span,
            "rules",
            "a rule is one of `allow: {...}`, `deny: {...}` or `reject: {...}`",
        );
        return None;
    };
    let verdict = match k.as_str() {
        Some("allow") => Verdict::Accept,
        Some("deny") => Verdict::Drop,
        Some("reject") => Verdict::Reject,
        _ => {
            let name = k.key_text();
            let hint = crate::diag::closest_within(&name, ["allow", "deny", "reject"], 2)
                .map(|s| format!("; did you mean `{s}`?"))
                .unwrap_or_default();
            d.error(
                &k.span,
                &name,
                format!("`{name}` is not a rule: use allow, deny or reject{hint}"),
            );
            return None;
        }
    };
    let empty: Vec<(Node, Node)> = Vec::new();
    let entries: &[(Node, Node)] = match &body.value {
        Value::Map(m) => m,
        Value::Null => &empty,
        other => {
            d.error(
                &body.span,
                "rules",
                format!(
                    "expected the rule's settings as a mapping, found {}",
                    other.type_name()
                ),
            );
            return None;
        }
    };
    let mut f = Fields::new(entries, k.span.clone(), "firewall rule");
    let mut ok = true;
    let protos: Vec<(String, Span)> = match f.raw("proto") {
        None => Vec::new(),
        Some(n) => items_of(n)
            .into_iter()
            .filter_map(|i| Some((text_of(d, i, "proto")?, i.span.clone())))
            .collect(),
    };
    let mut proto_names = Vec::new();
    for (p, span) in &protos {
        match PROTOCOLS.iter().find(|(name, _)| name == p) {
            Some((name, _)) => proto_names.push(name.to_string()),
            None => {
                ok = false;
                let known: Vec<&str> = PROTOCOLS.iter().map(|(n, _)| *n).collect();
                d.error(
                    span,
                    "proto",
                    format!(
                        "`{p}` is not a protocol this kind knows; use one of {}",
                        known.join(", ")
                    ),
                );
            }
        }
    }
    let port_node = match (f.raw("port"), f.raw("ports")) {
        (Some(a), Some(_)) => {
            d.error(&a.span, "port", "write `port` or `ports`, not both");
            ok = false;
            None
        }
        (a, b) => a.or(b),
    };
    let mut ports = Vec::new();
    if let Some(n) = port_node {
        for item in items_of(n) {
            let Some(text) = text_of(d, item, "port") else {
                ok = false;
                continue;
            };
            match parse_port_range(&text) {
                Ok(r) => ports.push(r),
                Err(msg) => {
                    ok = false;
                    d.error(&item.span, "port", msg);
                }
            }
        }
        if ok
            && (proto_names.is_empty() || proto_names.iter().any(|p| !PORTED.contains(&p.as_str())))
        {
            ok = false;
            d.error(
                &n.span,
                "port",
                "ports need `proto: tcp`, `udp` or `sctp` (or a list of them, e.g. `proto: [tcp, udp]`)",
            );
        }
    }
    let from = f
        .raw("from")
        .map(|n| decode_addrs(d, n, "from", sets))
        .unwrap_or_default();
    let to = f
        .raw("to")
        .map(|n| decode_addrs(d, n, "to", sets))
        .unwrap_or_default();
    let iif = f
        .string(d, "iif")
        .and_then(|(s, span)| iface(d, s, &span, "iif"));
    let oif = f
        .string(d, "oif")
        .and_then(|(s, span)| iface(d, s, &span, "oif"));
    let log = f.string(d, "log").and_then(|(s, span)| {
        // nft holds 127 bytes; its own check (`nft -c`) says so, at the rule.
        nft_string(d, &s, &span, "log", 1024)?;
        Some(s)
    });
    let counter = f.bool(d, "counter").unwrap_or(false);
    let comment = f.string(d, "comment").and_then(|(s, span)| {
        nft_string(d, &s, &span, "comment", 128)?;
        Some(s)
    });
    f.finish(d);
    let families = |a: &[AddrItem]| -> Vec<Family> {
        let mut v: Vec<Family> = a.iter().map(AddrItem::family).collect();
        v.dedup();
        v
    };
    let (ff, tf) = (families(&from), families(&to));
    if !ff.is_empty() && !tf.is_empty() && !ff.iter().any(|x| tf.contains(x)) {
        d.error(
            &k.span,
            "to",
            "`from` and `to` are of different address families (IPv4 and IPv6): no packet matches both",
        );
        ok = false;
    }
    ok.then_some(RuleDef {
        verdict,
        protos: proto_names,
        ports,
        from,
        to,
        iif,
        oif,
        log,
        counter,
        comment,
        span: k.span.clone(),
    })
}

fn iface(d: &mut Decoder, s: String, span: &Span, field: &str) -> Option<String> {
    let ok = !s.is_empty()
        && s.len() < 16
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '*' | '@'));
    if !ok {
        d.error(
            span,
            field,
            format!("`{s}` is not an interface name (at most 15 letters, digits, `-`, `_`, `.`)"),
        );
        return None;
    }
    Some(s)
}

/// Text nft takes between double quotes: no quote, backslash or control character.
fn nft_string(d: &mut Decoder, s: &str, span: &Span, field: &str, max: usize) -> Option<()> {
    if s.len() > max || s.chars().any(|c| c == '"' || c == '\\' || c.is_control()) {
        d.error(
            span,
            field,
            format!("at most {max} characters, without `\"`, `\\` or control characters"),
        );
        return None;
    }
    Some(())
}

/// `22`, `1000-2000`.
pub fn parse_port_range(text: &str) -> Result<(u16, u16), String> {
    let one = |p: &str| -> Result<u16, String> {
        match p.trim().parse::<u32>() {
            Ok(n) if (1..=65535).contains(&n) => Ok(n as u16),
            Ok(n) => Err(format!("port {n} is out of range (1 to 65535)")),
            Err(_) => Err(format!("`{p}` is not a port number")),
        }
    };
    match text.split_once('-') {
        None => {
            let p = one(text)?;
            Ok((p, p))
        }
        Some((a, b)) => {
            let (a, b) = (one(a)?, one(b)?);
            if a > b {
                return Err(format!(
                    "`{text}` is a descending range; write the low port first: {b}-{a}"
                ));
            }
            Ok((a, b))
        }
    }
}

/// Addresses, networks and `@set` references.
pub fn decode_addrs(
    d: &mut Decoder,
    node: &Node,
    field: &str,
    sets: &[(String, Family)],
) -> Vec<AddrItem> {
    let mut out = Vec::new();
    for item in items_of(node) {
        let Some(text) = text_of(d, item, field) else {
            continue;
        };
        if let Some(name) = text.strip_prefix('@') {
            match sets.iter().find(|(n, _)| n == name) {
                Some((_, fam)) => out.push(AddrItem::Set(name.to_string(), *fam)),
                None => {
                    let names: Vec<&str> = sets.iter().map(|(n, _)| n.as_str()).collect();
                    let hint = match crate::diag::closest(name, names.iter().copied()) {
                        Some(s) => format!("; did you mean `@{s}`?"),
                        None if names.is_empty() => "; define it under `sets:`".to_string(),
                        None => format!("; defined sets: {}", names.join(", ")),
                    };
                    d.error(
                        &item.span,
                        field,
                        format!("set `{name}` is not defined{hint}"),
                    );
                }
            }
            continue;
        }
        match parse_net(&text) {
            Ok(net) => out.push(AddrItem::Net(net)),
            Err(msg) => d.error(&item.span, field, msg),
        }
    }
    out
}

fn decode_builtins(d: &mut Decoder, f: &mut Fields) -> Builtins {
    let mut b = Builtins::default();
    let Some(node) = f.raw("builtins") else {
        return b;
    };
    let Some(m) = map_of(d, node, "builtins") else {
        return b;
    };
    let mut bf = Fields::new(m, node.span.clone(), "firewall builtins");
    for name in BUILTINS {
        if let Some(on) = bf.bool(d, name) {
            match *name {
                "loopback" => b.loopback = on,
                "established" => b.established = on,
                "invalid" => b.invalid = on,
                "icmpv6_nd" => b.icmpv6_nd = on,
                _ => b.echo = on,
            }
        }
    }
    bf.finish(d);
    b
}

fn decode_published(d: &mut Decoder, node: &Node, sets: &[(String, Family)]) -> Option<Published> {
    let m = map_of(d, node, "published_ports")?;
    let mut f = Fields::new(m, node.span.clone(), "firewall published_ports");
    let from = f
        .raw("from")
        .map(|n| decode_addrs(d, n, "from", sets))
        .unwrap_or_default();
    let counter = f.bool(d, "counter").unwrap_or(true);
    f.finish(d);
    if from.is_empty() {
        d.error(
            &node.span,
            "published_ports",
            "`published_ports` needs `from:` (the sources allowed to reach published ports)",
        );
        return None;
    }
    Some(Published {
        from,
        counter,
        span: node.span.clone(),
    })
}
