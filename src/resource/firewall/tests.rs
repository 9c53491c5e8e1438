//! Table tests of the firewall's pure parts: decode, render, diff, lockout.

use std::sync::Arc;

use super::*;
use crate::manifest::decode::{Decoder, Fields};
use crate::manifest::template::Templates;
use crate::manifest::yaml;

const RUNBOOK: &str = r#"
- firewall: inet reconcile
  sets:
    lan: [192.168.0.0/16]
  input:
    policy: drop
    rules:
      - allow: { proto: tcp, port: [22, 80, 443, 11434], from: "@lan" }
      - allow: { proto: udp, port: 51820 }
      - deny: { proto: tcp, port: 9123, log: "blocked: " }
  output:
    policy: accept
"#;

/// Decodes the first entry of `text`; the decoder's errors.
fn decode_text(text: &str) -> (Option<Box<dyn Resource>>, Vec<String>) {
    let file: Arc<str> = Arc::from("test.yaml");
    let mut d = Decoder::new(Templates::new(
        &serde_json::Map::new(),
        serde_json::Value::Null,
    ));
    let root = yaml::parse(&file, text.as_bytes()).unwrap_or_else(|e| panic!("{e}"));
    let yaml::Value::Seq(items) = &root.value else {
        panic!("not a list")
    };
    let Some(entries) = items[0].as_map() else {
        panic!("not a map")
    };
    let (k, v) = &entries[0];
    let name = match &v.value {
        yaml::Value::Str(s) => s.clone(),
        other => panic!("{other:?}"),
    };
    let mut fields = Fields::new(entries, k.span.clone(), "firewall");
    fields.consume_first();
    let r = decode(&mut d, (name, v.span.clone()), Meta::default(), &mut fields);
    fields.finish(&mut d);
    let errors = d.diags.errors().map(|e| e.to_string()).collect();
    (r, errors)
}

fn firewall(text: &str) -> Firewall {
    let (r, errors) = decode_text(text);
    assert!(errors.is_empty(), "{errors:?}");
    let r = r.unwrap_or_else(|| panic!("nothing decoded"));
    let Some(fw) = r.as_any().downcast_ref::<Firewall>() else {
        panic!("not a firewall")
    };
    fw.clone()
}

fn rules<'t>(t: &'t NftTable, chain: &str) -> &'t [String] {
    &t.chains
        .iter()
        .find(|c| c.name == chain)
        .unwrap_or_else(|| panic!("no chain {chain}"))
        .rules
}

#[test]
fn the_runbook_renders_to_the_rules_nft_list_prints() {
    let fw = firewall(RUNBOOK);
    assert_eq!(fw.id.to_string(), "firewall[inet reconcile]");
    let r = render(&fw, &[]);
    assert_eq!(r.table.sets[0].elements, vec!["192.168.0.0/16"]);
    let input = rules(&r.table, "input");
    assert_eq!(
        &input[6..],
        &[
            "ip saddr @lan tcp dport { 22, 80, 443, 11434 } accept",
            "udp dport 51820 accept",
            "tcp dport 9123 limit rate 5/minute log prefix \"blocked: \"",
            "tcp dport 9123 drop",
        ]
    );
    assert!(input[0].starts_with("iif \"lo\" accept"));
    let script = render::script(&fw, &r);
    assert!(script.text.starts_with(
        "table inet reconcile {}\ndelete table inet reconcile\ntable inet reconcile {\n"
    ));
    // The deny's two script lines point at its manifest line.
    let deny_line = script
        .text
        .lines()
        .position(|l| l.contains("tcp dport 9123 drop"))
        .map(|i| i + 1)
        .unwrap_or(0);
    assert_eq!(
        script.origin(deny_line).map(|s| s.line),
        Some(10),
        "{script:?}"
    );
}

#[test]
fn a_rule_expands_per_family_protocol_and_log() {
    let fw = firewall(
        r#"
- firewall: inet t
  sets:
    lan6: ["fd00::/8"]
  input:
    rules:
      - allow: { proto: [tcp, udp], port: ["1000-2000", 53], from: [10.0.0.0/8, "@lan6", 10.1.2.3] }
      - reject: { proto: tcp, port: 25 }
      - reject: { from: "fd00::1" }
      - deny: { iif: eth0, proto: icmp, counter: true, comment: "no ping" }
"#,
    );
    let r = render(&fw, &[]);
    let input = rules(&r.table, "input");
    assert_eq!(
        &input[6..],
        &[
            "ip saddr { 10.0.0.0/8, 10.1.2.3 } tcp dport { 53, 1000-2000 } accept",
            "ip saddr { 10.0.0.0/8, 10.1.2.3 } udp dport { 53, 1000-2000 } accept",
            "ip6 saddr @lan6 tcp dport { 53, 1000-2000 } accept",
            "ip6 saddr @lan6 udp dport { 53, 1000-2000 } accept",
            "tcp dport 25 reject with tcp reset",
            "ip6 saddr fd00::1 reject with icmpv6 port-unreachable",
            "iifname \"eth0\" meta l4proto icmp counter drop comment \"no ping\"",
        ]
    );
}

#[test]
fn each_builtin_can_be_switched_off() {
    let fw = firewall(
        r#"
- firewall: inet t
  builtins: { loopback: false, established: false, invalid: false, icmpv6_nd: false, echo: false }
  input:
    policy: drop
"#,
    );
    assert_eq!(rules(&render(&fw, &[]).table, "input"), &[] as &[String]);
    let fw = firewall("- firewall: ip t\n  input: {}\n");
    let input = rules(&render(&fw, &[]).table, "input").to_vec();
    assert!(input.iter().all(|r| !r.contains("icmpv6")), "{input:?}");
    assert_eq!(input.len(), 4, "{input:?}");
}

#[test]
fn bad_input_is_refused_with_its_place() {
    let cases: &[(&str, &str)] = &[
        ("- firewall: reconcile\n", "is not FAMILY NAME"),
        ("- firewall: bridge t\n", "not a table family"),
        (
            "- firewall: inet t\n  sets: { lan: [192.168.0.0/33] }\n",
            "prefix length is 0 to 32",
        ),
        (
            "- firewall: inet t\n  sets: { lan: [192.168.1.0/16] }\n",
            "host bits set",
        ),
        (
            "- firewall: inet t\n  sets: { lan: [10.0.0.1, \"::1\"] }\n",
            "IPv6 address in set `lan`",
        ),
        (
            "- firewall: ip t\n  sets: { lan: [\"::1\"] }\n",
            "only sees IPv4",
        ),
        (
            "- firewall: inet t\n  input: { rules: [ allow: { proto: tcp, port: 0 } ] }\n",
            "out of range",
        ),
        (
            "- firewall: inet t\n  input: { rules: [ allow: { proto: tcp, ports: 80-22 } ] }\n",
            "descending range",
        ),
        (
            "- firewall: inet t\n  input: { rules: [ allow: { proto: tcp, port: http } ] }\n",
            "not a port number",
        ),
        (
            "- firewall: inet t\n  input: { rules: [ allow: { proto: igmp } ] }\n",
            "not a protocol",
        ),
        (
            "- firewall: inet t\n  input: { rules: [ allow: { port: 22 } ] }\n",
            "ports need `proto",
        ),
        (
            "- firewall: inet t\n  input: { rules: [ allow: { proto: icmp, port: 22 } ] }\n",
            "ports need `proto",
        ),
        (
            "- firewall: inet t\n  input: { rules: [ allow: { from: \"@lan\" } ] }\n",
            "set `lan` is not defined",
        ),
        (
            "- firewall: inet t\n  input: { rules: [ allow: { from: 10.0.0.1, to: \"::1\" } ] }\n",
            "different address families",
        ),
        (
            "- firewall: inet t\n  input: { rules: [ allow: { comment: 'a\"b' } ] }\n",
            "without `\"`",
        ),
        (
            "- firewall: inet t\n  input: { policy: reject }\n",
            "not a policy",
        ),
        (
            "- firewall: inet t\n  input: { rules: [ permit: {} ] }\n",
            "not a rule",
        ),
        (
            "- firewall: inet t\n  builtins: { loopbak: false }\n",
            "did you mean `loopback`",
        ),
        (
            "- firewall: inet t\n  published_ports: {}\n",
            "needs `from:`",
        ),
    ];
    for (text, want) in cases {
        let (_, errors) = decode_text(text);
        assert!(
            errors
                .iter()
                .any(|e| e.contains(want) && e.contains("test.yaml:")),
            "{text}: want {want:?}, got {errors:?}"
        );
    }
}

fn observed(live: Option<NftTable>) -> Observed {
    Observed {
        live,
        ..Observed::default()
    }
}

fn ops(fw: &Firewall, o: &Observed) -> Result<Diff<Op>, ResourceError> {
    fw.diff(o, &DepView::none())
}

#[test]
fn the_diff_installs_a_missing_or_drifted_table_and_leaves_a_matching_one() {
    let fw = firewall(RUNBOOK);
    let want = render(&fw, &[]).table;
    let none = ops(&fw, &observed(Some(want.clone()))).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(none.action, Action::None);
    assert!(none.ops.is_empty());

    let create = ops(&fw, &observed(None)).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(create.action, Action::Create);

    let mut drifted = want.clone();
    drifted.chains[0].rules.push("tcp dport 5555 accept".into());
    let update = ops(&fw, &observed(Some(drifted))).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(update.action, Action::Update);
    let Some(Op::Install { fields, .. }) = update.ops.first() else {
        panic!("{update:?}")
    };
    assert_eq!(
        fields,
        &vec![(
            "input rule 11".to_string(),
            Some("tcp dport 5555 accept".to_string()),
            None
        )]
    );

    let mut o = observed(None);
    o.refused = Some("test.yaml:9:9: nft refuses".into());
    assert!(ops(&fw, &o).is_err());

    let mut absent = firewall("- firewall: inet reconcile\n  state: absent\n");
    absent.sets.clear();
    assert_eq!(
        ops(&absent, &observed(Some(want))).map(|d| d.action).ok(),
        Some(Action::Delete)
    );
    assert_eq!(
        ops(&absent, &observed(None)).map(|d| d.action).ok(),
        Some(Action::None)
    );
}

#[test]
fn rules_are_compared_by_position() {
    let old: Vec<String> = ["a", "b", "c"].map(String::from).to_vec();
    let new: Vec<String> = ["a", "x", "c", "d"].map(String::from).to_vec();
    let s = |v: &str| Some(v.to_string());
    assert_eq!(
        rule_changes("input", &old, &new),
        vec![
            ("input rule 2".to_string(), s("b"), s("x")),
            ("input rule 4".to_string(), None, s("d")),
        ]
    );
}

#[test]
fn a_ruleset_that_drops_the_current_ssh_session_is_refused_unless_allowed() {
    let fw = firewall(RUNBOOK);
    let session = |ip: &str| Observed {
        ssh_session: parse_ssh_connection(&format!("{ip} 50123 192.168.1.1 22")),
        ..observed(None)
    };
    // From the LAN: port 22 is allowed.
    assert!(ops(&fw, &session("192.168.7.7")).is_ok());
    // From elsewhere: the input policy drops it.
    let refused = ops(&fw, &session("203.0.113.9"))
        .err()
        .map(|e| e.to_string());
    assert!(
        refused
            .as_deref()
            .is_some_and(|m| m.contains("lock you out") && m.contains("--allow-lockout")),
        "{refused:?}"
    );
    let mut allowed = session("203.0.113.9");
    allowed.allow_lockout = true;
    assert!(ops(&fw, &allowed).is_ok());
    // A management network is checked the same way, on the configured port.
    let fw = firewall(
        "- firewall: inet t\n  management: [10.9.0.0/16]\n  ssh_port: 2222\n  input:\n    policy: drop\n    rules:\n      - deny: { proto: tcp, port: 2222 }\n",
    );
    let refused = ops(&fw, &observed(None)).err().map(|e| e.to_string());
    assert!(
        refused
            .as_deref()
            .is_some_and(|m| m.contains("10.9.0.0") && m.contains("test.yaml:7")),
        "{refused:?}"
    );
}

#[test]
fn a_drop_output_policy_without_dns_ntp_or_mirrors_is_a_warning() {
    let fw = firewall("- firewall: inet t\n  output:\n    policy: drop\n    rules:\n      - allow: { proto: udp, port: 53 }\n");
    let d = ops(&fw, &observed(None)).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(d.warnings.len(), 1, "{:?}", d.warnings);
    assert!(d.warnings[0].contains("NTP") && !d.warnings[0].contains("DNS"));
    assert!(
        !d.warnings[0].contains("mirrors"),
        "no package resource declared"
    );
    let mut o = observed(None);
    o.installs_packages = true;
    let d = ops(&fw, &o).unwrap_or_else(|e| panic!("{e}"));
    assert!(
        d.warnings[0].contains("package mirrors"),
        "{:?}",
        d.warnings
    );
}

#[test]
fn package_mirrors_fill_two_sets_and_an_output_rule_and_show_in_the_plan() {
    let fw = firewall("- firewall: inet t\n  package_mirrors: true\n  output:\n    policy: drop\n");
    let mut o = observed(None);
    o.mirrors = vec![(
        "deb.debian.org".into(),
        vec![
            "151.101.2.132".parse().unwrap_or_else(|e| panic!("{e}")),
            "2a04:4e42::644".parse().unwrap_or_else(|e| panic!("{e}")),
        ],
    )];
    o.installs_packages = true;
    let r = render(&fw, &o.mirror_addrs());
    assert_eq!(r.table.sets[0].name, "package_mirrors");
    assert_eq!(r.table.sets[0].elements, vec!["151.101.2.132"]);
    assert_eq!(r.table.sets[1].elements, vec!["2a04:4e42::644"]);
    let output = rules(&r.table, "output");
    assert!(output.contains(
        &"ip daddr @package_mirrors tcp dport { 80, 443 } accept comment \"package mirrors\""
            .to_string()
    ));
    let d = ops(&fw, &o).unwrap_or_else(|e| panic!("{e}"));
    assert!(d
        .notes
        .iter()
        .any(|n| n.contains("deb.debian.org: 151.101.2.132, 2a04:4e42::644")));
    assert!(
        d.warnings.iter().all(|w| !w.contains("package mirrors")),
        "{:?}",
        d.warnings
    );
    let script = render::script(&fw, &r);
    assert!(
        script.text.contains("elements = { 151.101.2.132 }"),
        "{}",
        script.text
    );
}

#[test]
fn ssh_connection_gives_the_client_and_the_server_port() {
    assert_eq!(
        parse_ssh_connection("10.0.0.5 51000 10.0.0.1 2222"),
        Some(("10.0.0.5".parse().unwrap_or_else(|e| panic!("{e}")), 2222))
    );
    assert_eq!(parse_ssh_connection("garbage"), None);
}
