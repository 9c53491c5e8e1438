//! The `firewall` kind against real kernels: every test builds its own network
//! namespaces (`ip netns add`), joins them with veth pairs, listens and connects
//! inside them, and points reconcile at the "host" namespace with `--netns`. The
//! machine's own ruleset is never read or changed.
//!
//! Topology of a [`Lab`]:
//! ```text
//!   lan  192.168.231.2, fd31:50::2 ──veth── host 192.168.231.1, fd31:50::1
//!   far  10.231.61.2               ──veth── host 10.231.61.1
//!   box  10.231.52.2 (a "container") ─veth── host 10.231.52.1   (only with_box)
//! ```

mod support;

use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::AsFd;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use support::sandbox::{require_root, Run, Sandbox};

const CONNECT_TIMEOUT: Duration = Duration::from_millis(600);

/// The runbook's ruleset, exactly as docs/firewall.md shows it.
const RUNBOOK: &str = r#"resources:
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

fn ip(args: &[&str]) {
    let out = Command::new("ip")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("ip: {e}"));
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs a command inside namespace `ns`; its stdout.
fn in_ns(ns: &str, argv: &[&str]) -> String {
    let out = Command::new("ip")
        .args(["netns", "exec", ns])
        .args(argv)
        .output()
        .unwrap_or_else(|e| panic!("{argv:?}: {e}"));
    assert!(
        out.status.success(),
        "{argv:?} in {ns}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn nft_in(ns: &str, script: &str) {
    let mut child = Command::new("ip")
        .args(["netns", "exec", ns, "nft", "-f", "-"])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("nft: {e}"));
    if let Some(mut stdin) = child.stdin.take() {
        use std::io::Write;
        stdin
            .write_all(script.as_bytes())
            .unwrap_or_else(|e| panic!("nft stdin: {e}"));
    }
    let status = child.wait().unwrap_or_else(|e| panic!("nft: {e}"));
    assert!(status.success(), "nft -f refused:\n{script}");
}

/// Runs `f` on a thread that entered network namespace `ns` first.
fn on_ns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> JoinHandle<T> {
    let path = format!("/run/netns/{ns}");
    std::thread::spawn(move || {
        let file = std::fs::File::open(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        nix::sched::setns(file.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET)
            .unwrap_or_else(|e| panic!("setns {path}: {e}"));
        f()
    })
}

fn join<T>(h: JoinHandle<T>) -> T {
    h.join()
        .unwrap_or_else(|_| panic!("a namespace thread panicked"))
}

/// Whether a new TCP connection from namespace `ns` to `to` is accepted in time.
fn connects(ns: &str, to: &str) -> bool {
    let addr: SocketAddr = to.parse().unwrap_or_else(|e| panic!("{to}: {e}"));
    join(on_ns(ns, move || {
        TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT).is_ok()
    }))
}

/// Whether a UDP datagram from namespace `ns` to `to` is echoed back in time.
fn udp_echoes(ns: &str, to: &str) -> bool {
    let addr: SocketAddr = to.parse().unwrap_or_else(|e| panic!("{to}: {e}"));
    join(on_ns(ns, move || {
        let local = if addr.is_ipv4() {
            "0.0.0.0:0"
        } else {
            "[::]:0"
        };
        let Ok(sock) = UdpSocket::bind(local) else {
            return false;
        };
        let _ = sock.set_read_timeout(Some(CONNECT_TIMEOUT));
        if sock.send_to(b"ping", addr).is_err() {
            return false;
        }
        let mut buf = [0u8; 16];
        sock.recv_from(&mut buf).is_ok()
    }))
}

static LABS: AtomicUsize = AtomicUsize::new(0);

/// Namespaces, links and listeners of one test; all removed on drop.
struct Lab {
    host: String,
    lan: String,
    far: String,
    boxed: Option<String>,
    stop: Arc<AtomicBool>,
    servers: Vec<JoinHandle<()>>,
}

impl Lab {
    fn new(with_box: bool) -> Lab {
        let n = LABS.fetch_add(1, Ordering::SeqCst);
        let tag = format!("{}{n}", std::process::id() % 100_000);
        let name = |role: &str| format!("rcfw-{tag}-{role}");
        let mut lab = Lab {
            host: name("host"),
            lan: name("lan"),
            far: name("far"),
            boxed: with_box.then(|| name("box")),
            stop: Arc::new(AtomicBool::new(false)),
            servers: Vec::new(),
        };
        let mut all = vec![lab.host.clone(), lab.lan.clone(), lab.far.clone()];
        all.extend(lab.boxed.clone());
        for ns in &all {
            ip(&["netns", "add", ns]);
            ip(&["-n", ns, "link", "set", "lo", "up"]);
        }
        let link = |peer: &str, suffix: &str, host_addr: &[&str], peer_addr: &[&str]| {
            let (h, p) = (format!("h{tag}{suffix}"), format!("p{tag}{suffix}"));
            ip(&[
                "link", "add", &h, "netns", &lab.host, "type", "veth", "peer", "name", &p, "netns",
                peer,
            ]);
            for (ns, dev, addrs) in [(&lab.host[..], &h, host_addr), (peer, &p, peer_addr)] {
                for a in addrs {
                    let mut args = vec!["-n", ns, "addr", "add", a, "dev", dev];
                    if a.contains(':') {
                        args.push("nodad");
                    }
                    ip(&args);
                }
                ip(&["-n", ns, "link", "set", dev, "up"]);
            }
            ip(&[
                "-n",
                peer,
                "route",
                "add",
                "default",
                "via",
                host_addr[0].split('/').next().unwrap_or(""),
            ]);
        };
        link(
            &lab.lan,
            "l",
            &["192.168.231.1/24", "fd31:50::1/64"],
            &["192.168.231.2/24", "fd31:50::2/64"],
        );
        ip(&[
            "-n",
            &lab.lan,
            "-6",
            "route",
            "add",
            "default",
            "via",
            "fd31:50::1",
        ]);
        link(&lab.far, "f", &["10.231.61.1/24"], &["10.231.61.2/24"]);
        if let Some(b) = lab.boxed.clone() {
            link(&b, "b", &["10.231.52.1/24"], &["10.231.52.2/24"]);
            in_ns(&lab.host, &["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
            lab.listen(&b, 8080);
        }
        let host = lab.host.clone();
        for port in [22, 80, 9123, 8081] {
            lab.listen(&host, port);
        }
        lab.udp_echo(&host, 51820);
        let far = lab.far.clone();
        for port in [80, 8081] {
            lab.listen(&far, port);
        }
        lab
    }

    /// A TCP listener on every address of `ns` (IPv4 and IPv6) that accepts and
    /// closes connections until the lab is dropped.
    fn listen(&mut self, ns: &str, port: u16) {
        let stop = self.stop.clone();
        let (tx, rx) = std::sync::mpsc::channel();
        self.servers.push(on_ns(ns, move || {
            let l = TcpListener::bind(("::", port)).unwrap_or_else(|e| panic!("bind {port}: {e}"));
            l.set_nonblocking(true)
                .unwrap_or_else(|e| panic!("nonblocking: {e}"));
            let _ = tx.send(());
            while !stop.load(Ordering::SeqCst) {
                match l.accept() {
                    Ok((s, _)) => drop(s),
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        }));
        rx.recv().unwrap_or_else(|e| panic!("listener {port}: {e}"));
    }

    fn udp_echo(&mut self, ns: &str, port: u16) {
        let stop = self.stop.clone();
        let (tx, rx) = std::sync::mpsc::channel();
        self.servers.push(on_ns(ns, move || {
            let s = UdpSocket::bind(("::", port)).unwrap_or_else(|e| panic!("bind {port}: {e}"));
            let _ = s.set_read_timeout(Some(Duration::from_millis(50)));
            let _ = tx.send(());
            let mut buf = [0u8; 64];
            while !stop.load(Ordering::SeqCst) {
                if let Ok((n, from)) = s.recv_from(&mut buf) {
                    let _ = s.send_to(&buf[..n], from);
                }
            }
        }));
        rx.recv().unwrap_or_else(|e| panic!("udp {port}: {e}"));
    }

    /// `reconcile CMD --root ROOT --netns HOST ARGS` with extra environment.
    fn run(&self, sb: &Sandbox, cmd: &str, args: &[&str], env: &[(&str, &str)]) -> Run {
        let mut c =
            assert_cmd::Command::cargo_bin("reconcile").unwrap_or_else(|e| panic!("binary: {e}"));
        c.current_dir(&sb.manifests)
            .env("NO_COLOR", "1")
            .env_remove("SSH_CONNECTION")
            .arg(cmd)
            .arg("--root")
            .arg(&sb.root)
            .args(["--netns", &self.host])
            .args(args)
            .arg(".");
        for (k, v) in env {
            c.env(k, v);
        }
        Run(c.output().unwrap_or_else(|e| panic!("run: {e}")))
    }

    fn ruleset(&self) -> String {
        in_ns(&self.host, &["nft", "list", "ruleset"])
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for s in self.servers.drain(..) {
            let _ = s.join();
        }
        let mut all = vec![self.host.clone(), self.lan.clone(), self.far.clone()];
        all.extend(self.boxed.clone());
        for ns in all {
            let _ = Command::new("ip").args(["netns", "del", &ns]).status();
        }
    }
}

fn ready(test: &str) -> bool {
    if !require_root(test) {
        return false;
    }
    let nft = Command::new("nft").arg("--version").output();
    if !nft.is_ok_and(|o| o.status.success()) {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "{test} needs nft, and CI runs everything"
        );
        eprintln!("skipping {test}: nft is not installed");
        return false;
    }
    true
}

/// Applies and asserts that a plan right after shows no change.
fn converge(lab: &Lab, sb: &Sandbox) {
    lab.run(sb, "apply", &[], &[]).assert_code(0);
    let again = lab.run(sb, "plan", &["--detailed-exitcode"], &[]);
    assert_eq!(
        again.code(),
        0,
        "plan after apply is not empty:\n{}",
        again.all()
    );
}

#[test]
fn the_runbook_ruleset_lets_the_lan_reach_22_and_80_and_drops_9123_and_everything_else() {
    if !ready("runbook traffic") {
        return;
    }
    let lab = Lab::new(false);
    let sb = Sandbox::new();
    sb.manifest("fw.yaml", RUNBOOK);
    // Before: everything is open.
    assert!(connects(&lab.lan, "192.168.231.1:9123"));
    converge(&lab, &sb);
    assert!(connects(&lab.lan, "192.168.231.1:22"), "22 from the LAN");
    assert!(connects(&lab.lan, "192.168.231.1:80"), "80 from the LAN");
    assert!(!connects(&lab.lan, "192.168.231.1:9123"), "9123 is denied");
    assert!(
        !connects(&lab.lan, "192.168.231.1:8081"),
        "8081 falls to the drop policy"
    );
    assert!(
        !connects(&lab.far, "10.231.61.1:22"),
        "22 from outside the LAN"
    );
    assert!(
        udp_echoes(&lab.lan, "192.168.231.1:51820"),
        "WireGuard from the LAN"
    );
    assert!(
        udp_echoes(&lab.far, "10.231.61.1:51820"),
        "WireGuard from anywhere"
    );
    // IPv6: the LAN set is IPv4 only, so IPv6 reaches only what is open to all.
    assert!(!connects(&lab.lan, "[fd31:50::1]:22"));
    assert!(udp_echoes(&lab.lan, "[fd31:50::1]:51820"));
}

#[test]
fn ipv6_sets_and_counters_work_and_the_drop_counter_rises() {
    if !ready("ipv6 and counters") {
        return;
    }
    let lab = Lab::new(false);
    let sb = Sandbox::new();
    sb.manifest(
        "fw.yaml",
        r#"resources:
  - firewall: inet reconcile
    sets:
      lan: [192.168.0.0/16]
      lan6: ["fd31:50::/64"]
    input:
      policy: drop
      rules:
        - allow: { proto: tcp, port: [22, 80], from: ["@lan", "@lan6"] }
        - deny: { proto: tcp, port: 9123, counter: true, comment: "the drop counter" }
"#,
    );
    converge(&lab, &sb);
    assert!(
        connects(&lab.lan, "[fd31:50::1]:22"),
        "22 over IPv6 from lan6"
    );
    assert!(connects(&lab.lan, "[fd31:50::1]:80"));
    assert!(!connects(&lab.lan, "[fd31:50::1]:8081"));
    let packets = || -> u64 {
        let listing = in_ns(
            &lab.host,
            &["nft", "list", "chain", "inet", "reconcile", "input"],
        );
        listing
            .lines()
            .find(|l| l.contains("tcp dport 9123"))
            .and_then(|l| l.split("counter packets ").nth(1))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no counter on the 9123 rule:\n{listing}"))
    };
    let before = packets();
    assert!(!connects(&lab.lan, "192.168.231.1:9123"));
    assert!(!connects(&lab.lan, "[fd31:50::1]:9123"));
    assert!(packets() >= before + 2, "the drop counter did not rise");
    // Counter values are not drift.
    lab.run(&sb, "check", &[], &[]).assert_code(0);
}

#[test]
fn a_hand_added_rule_is_drift_that_apply_removes_and_other_tables_stay_byte_identical() {
    if !ready("drift") {
        return;
    }
    let lab = Lab::new(false);
    let sb = Sandbox::new();
    sb.manifest("fw.yaml", RUNBOOK);
    // Another manager's table (Docker's, fail2ban's), made by the test.
    nft_in(
        &lab.host,
        "table ip other {\n chain c {\n  type filter hook input priority 10; policy accept;\n  tcp dport 4444 counter accept\n }\n}\n",
    );
    let other = || in_ns(&lab.host, &["nft", "list", "table", "ip", "other"]);
    let before = other();

    // plan and check are read-only: the ruleset and the root.
    let ruleset = lab.ruleset();
    let files = sb.snapshot();
    lab.run(&sb, "plan", &[], &[]).assert_code(0);
    assert_eq!(lab.run(&sb, "check", &[], &[]).code(), 2);
    assert_eq!(lab.ruleset(), ruleset, "plan or check changed the ruleset");
    assert_eq!(sb.snapshot(), files, "plan or check wrote to the root");

    converge(&lab, &sb);
    assert_eq!(other(), before);
    lab.run(&sb, "check", &[], &[]).assert_code(0);

    in_ns(
        &lab.host,
        &[
            "nft",
            "add",
            "rule",
            "inet",
            "reconcile",
            "input",
            "tcp",
            "dport",
            "8081",
            "accept",
        ],
    );
    assert!(
        connects(&lab.lan, "192.168.231.1:8081"),
        "the hand-added rule opens 8081"
    );
    let drift = lab.run(&sb, "check", &[], &[]);
    assert_eq!(drift.code(), 2, "{}", drift.all());
    assert!(
        drift.stdout().contains("tcp dport 8081 accept"),
        "{}",
        drift.all()
    );
    converge(&lab, &sb);
    assert!(
        !connects(&lab.lan, "192.168.231.1:8081"),
        "apply removed it"
    );
    assert!(!lab.ruleset().contains("8081"));
    assert_eq!(other(), before, "another table changed");
}

#[test]
fn a_rule_nft_refuses_is_reported_at_its_manifest_line_and_the_live_ruleset_is_unchanged() {
    if !ready("nft -c") {
        return;
    }
    let lab = Lab::new(false);
    let sb = Sandbox::new();
    sb.manifest("fw.yaml", RUNBOOK);
    converge(&lab, &sb);
    let live = lab.ruleset();
    // nft's log prefix holds at most 127 characters: its limit, its check.
    let long = "x".repeat(130);
    sb.manifest(
        "fw.yaml",
        &RUNBOOK.replace("log: \"blocked: \"", &format!("log: \"{long}\"")),
    );
    for cmd in ["plan", "apply"] {
        let run = lab.run(&sb, cmd, &[], &[]);
        assert_eq!(run.code(), 1, "{}", run.all());
        assert!(run.all().contains("fw.yaml:10:11"), "{cmd}: {}", run.all());
        assert!(run.all().contains("nft refuses"), "{}", run.all());
    }
    assert_eq!(lab.ruleset(), live, "the live ruleset changed");
    assert!(!connects(&lab.lan, "192.168.231.1:9123"));
}

#[test]
fn published_ports_reach_the_container_from_the_lan_only() {
    if !ready("published ports") {
        return;
    }
    let lab = Lab::new(true);
    let sb = Sandbox::new();
    // Docker's DNAT, as Docker's own table would do it: made by the test.
    nft_in(
        &lab.host,
        "table ip nat {\n chain prerouting {\n  type nat hook prerouting priority dstnat; policy accept;\n  tcp dport 8080 dnat to 10.231.52.2:8080\n }\n}\n",
    );
    let nat_before = in_ns(&lab.host, &["nft", "list", "table", "ip", "nat"]);
    assert!(
        connects(&lab.far, "10.231.61.1:8080"),
        "published to all before"
    );
    sb.manifest(
        "fw.yaml",
        r#"resources:
  - firewall: inet reconcile
    sets:
      lan: [192.168.0.0/16]
    input:
      policy: drop
      rules:
        - allow: { proto: tcp, port: 22, from: "@lan" }
    published_ports:
      from: "@lan"
"#,
    );
    converge(&lab, &sb);
    assert!(
        connects(&lab.lan, "192.168.231.1:8080"),
        "the LAN reaches the container"
    );
    assert!(
        !connects(&lab.far, "10.231.61.1:8080"),
        "another range is dropped"
    );
    assert_eq!(
        in_ns(&lab.host, &["nft", "list", "table", "ip", "nat"]),
        nat_before,
        "the NAT table changed"
    );
}

#[test]
fn removing_the_firewall_deletes_only_its_table() {
    if !ready("absent") {
        return;
    }
    let lab = Lab::new(false);
    let sb = Sandbox::new();
    sb.manifest("fw.yaml", RUNBOOK);
    converge(&lab, &sb);
    sb.manifest(
        "fw.yaml",
        "resources:\n  - firewall: inet reconcile\n    state: absent\n",
    );
    converge(&lab, &sb);
    assert!(!lab.ruleset().contains("reconcile"));
    assert!(connects(&lab.lan, "192.168.231.1:9123"));
}

#[test]
fn the_runbook_example_in_the_docs_is_the_one_these_tests_apply() {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/firewall.md"))
        .unwrap_or_else(|e| panic!("docs/firewall.md: {e}"));
    assert!(
        doc.contains(&format!("```yaml no-run\n{RUNBOOK}```")),
        "docs/firewall.md no longer shows the tested runbook ruleset"
    );
}

#[test]
fn another_firewall_manager_enabled_on_the_target_is_a_warning() {
    if !ready("ufw warning") {
        return;
    }
    let lab = Lab::new(false);
    let sb = Sandbox::new();
    sb.manifest("fw.yaml", RUNBOOK);
    sb.put(
        "/etc/ufw/ufw.conf",
        b"# /etc/ufw/ufw.conf\nENABLED=yes\nLOGLEVEL=low\n",
    );
    let plan = lab.run(&sb, "plan", &[], &[]);
    plan.assert_code(0);
    assert!(plan.all().contains("ufw is enabled"), "{}", plan.all());
}

#[test]
fn a_scratch_root_without_netns_is_refused_before_any_nft_runs() {
    let sb = Sandbox::new();
    sb.manifest("fw.yaml", RUNBOOK);
    let run = sb.run("plan", &["."]);
    assert_eq!(run.code(), 1, "{}", run.all());
    assert!(run.all().contains("--netns NAME"), "{}", run.all());
}

#[test]
fn bad_input_is_refused_at_its_line_with_every_problem_at_once() {
    let sb = Sandbox::new();
    sb.manifest(
        "fw.yaml",
        r#"resources:
  - firewall: inet reconcile
    sets:
      lan: [192.168.0.0/33]
      mixed: [10.0.0.0/8, "fd00::/8"]
    input:
      policy: drop
      rules:
        - allow: { proto: tcp, port: 70000 }
        - allow: { proto: tcp, ports: 80-22 }
        - allow: { proto: tpc, port: 22 }
        - allow: { proto: tcp, port: 22, from: "@nope" }
  - firewall: inet reconcile
"#,
    );
    let run = sb.run("validate", &["."]);
    assert_eq!(run.code(), 1, "{}", run.all());
    let all = run.all();
    for want in [
        "fw.yaml:4:13: field `sets`: `192.168.0.0/33` is not a CIDR network",
        "fw.yaml:5:27: field `sets`: `fd00::/8` is an IPv6 address in set `mixed`",
        "fw.yaml:9:38: field `port`: port 70000 is out of range",
        "fw.yaml:10:39: field `port`: `80-22` is a descending range",
        "fw.yaml:11:27: field `proto`: `tpc` is not a protocol",
        "fw.yaml:12:48: field `from`: set `nope` is not defined",
        "fw.yaml:13:5: duplicate resource id firewall[inet reconcile]",
    ] {
        assert!(all.contains(want), "missing {want:?} in\n{all}");
    }
}

#[test]
fn a_ruleset_that_drops_the_ssh_session_is_refused_unless_lockout_is_allowed() {
    if !ready("lockout") {
        return;
    }
    let lab = Lab::new(false);
    let sb = Sandbox::new();
    sb.manifest("fw.yaml", RUNBOOK);
    // The operator is logged in over SSH from outside the LAN.
    let ssh = [("SSH_CONNECTION", "10.231.61.2 50022 10.231.61.1 22")];
    let live = lab.ruleset();
    let refused = lab.run(&sb, "apply", &[], &ssh);
    assert_eq!(refused.code(), 1, "{}", refused.all());
    assert!(refused.all().contains("lock you out"), "{}", refused.all());
    assert!(
        refused.all().contains("--allow-lockout"),
        "{}",
        refused.all()
    );
    assert_eq!(lab.ruleset(), live);
    assert!(
        connects(&lab.far, "10.231.61.1:22"),
        "the session's source still gets in"
    );
    // From the LAN the same ruleset is fine.
    let lan = [("SSH_CONNECTION", "192.168.231.2 50022 192.168.231.1 22")];
    lab.run(&sb, "plan", &[], &lan).assert_code(0);
    lab.run(&sb, "apply", &["--allow-lockout"], &ssh)
        .assert_code(0);
    assert!(
        !connects(&lab.far, "10.231.61.1:22"),
        "applied when allowed"
    );
}

/// The runbook with 9123 allowed instead of denied.
fn opened() -> String {
    RUNBOOK.replace(
        "- deny: { proto: tcp, port: 9123, log: \"blocked: \" }",
        "- allow: { proto: tcp, port: 9123 }",
    )
}

fn audit_log(sb: &Sandbox) -> String {
    std::fs::read_to_string(sb.path("/var/log/reconcile/audit.jsonl")).unwrap_or_default()
}

#[test]
fn an_unconfirmed_change_is_rolled_back_at_the_deadline_and_a_confirmed_one_stays() {
    if !ready("confirm") {
        return;
    }
    let lab = Lab::new(false);
    let sb = Sandbox::new();
    sb.manifest("fw.yaml", RUNBOOK);
    converge(&lab, &sb);
    assert!(!connects(&lab.lan, "192.168.231.1:9123"));

    // Not confirmed: back to the runbook's table after 2 s.
    sb.manifest("fw.yaml", &opened());
    lab.run(&sb, "apply", &["--confirm-within", "2s"], &[])
        .assert_code(0);
    assert!(
        connects(&lab.lan, "192.168.231.1:9123"),
        "the new ruleset is live"
    );
    std::thread::sleep(Duration::from_millis(3500));
    assert!(
        !connects(&lab.lan, "192.168.231.1:9123"),
        "the previous ruleset is back"
    );
    sb.manifest("fw.yaml", RUNBOOK);
    lab.run(&sb, "check", &[], &[]).assert_code(0);
    let log = audit_log(&sb);
    assert!(log.contains("confirm-pending"), "{log}");
    assert!(log.contains("\"revert\""), "{log}");

    // Confirmed in time: it stays.
    sb.manifest("fw.yaml", &opened());
    lab.run(&sb, "apply", &["--confirm-within", "2s"], &[])
        .assert_code(0);
    let mut c =
        assert_cmd::Command::cargo_bin("reconcile").unwrap_or_else(|e| panic!("binary: {e}"));
    let confirmed = Run(c
        .args(["confirm", "--root"])
        .arg(&sb.root)
        .output()
        .unwrap_or_else(|e| panic!("confirm: {e}")));
    confirmed.assert_code(0);
    assert!(confirmed
        .stdout()
        .contains("confirmed firewall[inet reconcile]"));
    std::thread::sleep(Duration::from_millis(3500));
    assert!(
        connects(&lab.lan, "192.168.231.1:9123"),
        "the confirmed ruleset stays"
    );
    lab.run(&sb, "check", &[], &[]).assert_code(0);
    assert!(audit_log(&sb).contains("\"confirm\""));
    // The audit trail is still one intact chain.
    let mut v =
        assert_cmd::Command::cargo_bin("reconcile").unwrap_or_else(|e| panic!("binary: {e}"));
    let verified = Run(v
        .args(["audit", "--root"])
        .arg(&sb.root)
        .arg("verify")
        .output()
        .unwrap_or_else(|e| panic!("verify: {e}")));
    verified.assert_code(0);
}

#[test]
fn with_output_dropped_only_the_package_mirrors_of_apt_sources_are_reachable() {
    if !ready("package mirrors") {
        return;
    }
    let lab = Lab::new(false);
    let sb = Sandbox::new();
    // The target's apt sources name a mirror by address (no DNS needed here).
    sb.put(
        "/etc/apt/sources.list.d/mirror.list",
        b"deb http://10.231.61.2/debian bookworm main\n",
    );
    sb.manifest(
        "fw.yaml",
        "resources:\n  - firewall: inet reconcile\n    package_mirrors: true\n    output:\n      policy: drop\n",
    );
    let plan = lab.run(&sb, "plan", &[], &[]);
    plan.assert_code(0);
    assert!(
        plan.stdout()
            .contains("package mirror 10.231.61.2: 10.231.61.2"),
        "{}",
        plan.all()
    );
    assert!(plan.stdout().contains("DNS (udp 53)"), "{}", plan.all());
    assert!(connects(&lab.host, "10.231.61.2:8081"), "open before");
    converge(&lab, &sb);
    assert!(
        connects(&lab.host, "10.231.61.2:80"),
        "the mirror over http"
    );
    assert!(
        !connects(&lab.host, "10.231.61.2:8081"),
        "anything else is dropped"
    );
}

#[test]
fn the_runbooks_ufw_rules_imported_from_ufw_status_pass_the_traffic_test() {
    if !ready("import ufw") {
        return;
    }
    let lab = Lab::new(false);
    let sb = Sandbox::new();
    let status = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/parse/ufw-status-numbered-runbook.txt"
    );
    let mut c =
        assert_cmd::Command::cargo_bin("reconcile").unwrap_or_else(|e| panic!("binary: {e}"));
    let imported = Run(c
        .args(["import", "ufw", status])
        .output()
        .unwrap_or_else(|e| panic!("import: {e}")));
    imported.assert_code(0);
    sb.manifest("fw.yaml", &imported.stdout());
    converge(&lab, &sb);
    assert!(connects(&lab.lan, "192.168.231.1:22"));
    assert!(connects(&lab.lan, "192.168.231.1:80"));
    assert!(!connects(&lab.lan, "192.168.231.1:9123"));
    assert!(!connects(&lab.lan, "192.168.231.1:8081"));
    assert!(!connects(&lab.far, "10.231.61.1:22"));
    assert!(udp_echoes(&lab.far, "10.231.61.1:51820"));
}

/// Inside a booted test host (its own network namespace, systemd as PID 1), with
/// `--root /`: the firewall targets the kernel reconcile runs on, and the rollback
/// watcher is a transient systemd timer.
#[test]
fn inside_a_booted_host_root_slash_targets_its_kernel_and_the_rollback_is_a_systemd_timer() {
    let Some(host) = support::testhost::boot_or_skip("firewall in a booted host") else {
        return;
    };
    let rc = |args: &[&str]| {
        let mut argv = vec![support::testhost::RECONCILE_IN_HOST];
        argv.extend_from_slice(args);
        argv.push("/root/m");
        host.exec_timeout(&argv, Duration::from_secs(120))
    };
    host.write_file("/root/m/fw.yaml", RUNBOOK.as_bytes());
    let applied = rc(&["apply"]);
    assert!(applied.success(), "{applied}");
    let listing = host.exec_ok(&["nft", "list", "table", "inet", "reconcile"]);
    assert!(listing.contains("tcp dport 9123 drop"), "{listing}");
    assert_eq!(rc(&["check"]).status, 0);

    host.write_file("/root/m/fw.yaml", opened().as_bytes());
    let applied = rc(&["apply", "--confirm-within", "2s"]);
    assert!(applied.success(), "{applied}");
    let timers = host.exec_ok(&["systemctl", "list-timers", "--all", "--no-pager"]);
    assert!(timers.contains("reconcile-firewall-revert-"), "{timers}");
    let open = host.exec_ok(&["nft", "list", "table", "inet", "reconcile"]);
    assert!(open.contains("tcp dport 9123 accept"), "{open}");
    std::thread::sleep(Duration::from_secs(4));
    let back = host.exec_ok(&["nft", "list", "table", "inet", "reconcile"]);
    assert!(
        back.contains("tcp dport 9123 drop"),
        "not rolled back:\n{back}"
    );
    let trail = host.exec_ok(&[support::testhost::RECONCILE_IN_HOST, "audit", "show"]);
    assert!(trail.contains("revert"), "{trail}");
}
