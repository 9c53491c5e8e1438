//! The `audit_rule` kind: rendered rules files byte-compared with hand-written
//! expectations in a scratch root, the runbook's mistakes refused with their line, and
//! in a booted test host with auditd: the rules parse with augenrules, and load and
//! record a write when auditd can run there.

mod support;

use std::time::Duration;

use support::sandbox::Sandbox;
use support::testhost::{boot_or_skip, in_ci, TestHost};

/// The runbook's audit rules (5.1), as it meant them, plus a syscall rule.
const RUNBOOK_RULES: &str = r#"resources:
  - audit_rule: 99-intelluxe-healthcare
    watches:
      - { path: /opt/intelluxe/stack/data/, permissions: rwxa, key: healthcare-phi-access }
      - { path: /opt/intelluxe/logs, permissions: rwxa, key: healthcare-logs }
      - { path: /opt/intelluxe/config, permissions: rwxa, key: healthcare-config-changes }
      - { path: /etc/passwd, permissions: aw, key: healthcare-user-changes }
      - { path: /etc/group, permissions: wa, key: healthcare-group-changes }
      - { path: /etc/systemd/system, permissions: wa, key: healthcare-service-changes }
    syscalls:
      - arch: b64
        syscalls: [chmod, fchmod, fchmodat]
        fields: ["auid>=1000", "auid!=unset"]
        key: perm-mod
"#;

const RUNBOOK_EXPECTED: &str =
    "## audit_rule[99-intelluxe-healthcare], managed by reconcile: changes here are overwritten
-w /opt/intelluxe/stack/data -p rwxa -k healthcare-phi-access
-w /opt/intelluxe/logs -p rwxa -k healthcare-logs
-w /opt/intelluxe/config -p rwxa -k healthcare-config-changes
-w /etc/passwd -p wa -k healthcare-user-changes
-w /etc/group -p wa -k healthcare-group-changes
-w /etc/systemd/system -p wa -k healthcare-service-changes
-a always,exit -F arch=b64 -S chmod,fchmod,fchmodat -F auid>=1000 -F auid!=unset -k perm-mod
";

#[test]
fn the_runbooks_rules_render_byte_for_byte_converge_and_plan_read_only() {
    let s = Sandbox::new();
    s.manifest("site.yaml", RUNBOOK_RULES);
    let before = s.snapshot();
    for cmd in ["plan", "check"] {
        let run = s.run(cmd, &["site.yaml"]);
        assert!(run.code() == 0 || run.code() == 2, "{}", run.all());
        assert_eq!(s.snapshot(), before, "{cmd} changed the root");
    }
    // A scratch root runs no auditd: nothing to load, and the plan says so.
    let plan = s.run("plan", &["site.yaml"]);
    assert!(
        plan.stdout().contains("auditd does not run on this target"),
        "{}",
        plan.all()
    );
    s.converge(&["site.yaml"]);
    assert_eq!(
        s.read("/etc/audit/rules.d/99-intelluxe-healthcare.rules"),
        RUNBOOK_EXPECTED
    );
    assert_eq!(
        s.mode("/etc/audit/rules.d/99-intelluxe-healthcare.rules"),
        0o640
    );
}

#[test]
fn watch_managed_watches_every_managed_path_in_a_stable_order() {
    let s = Sandbox::new();
    s.manifest(
        "site.yaml",
        r#"resources:
  - file: /etc/intelluxe/app.conf
    content: "a = 1\n"
  - directory: /opt/intelluxe/stack/data
    mode: "0700"
  - audit_rule: 50-reconcile-managed
    watch_managed: { key: reconcile-managed, permissions: wa }
  - logrotate: intelluxe-healthcare
    paths: ["/opt/intelluxe/logs/*.log"]
    missingok: true
"#,
    );
    s.converge(&["site.yaml"]);
    assert_eq!(
        s.read("/etc/audit/rules.d/50-reconcile-managed.rules"),
        "## audit_rule[50-reconcile-managed], managed by reconcile: changes here are overwritten
## every path the manifests manage (watch_managed, key reconcile-managed)
-w /etc/audit/rules.d/50-reconcile-managed.rules -p wa -k reconcile-managed
-w /etc/intelluxe/app.conf -p wa -k reconcile-managed
-w /etc/logrotate.d/intelluxe-healthcare -p wa -k reconcile-managed
-w /opt/intelluxe/stack/data -p wa -k reconcile-managed
"
    );
}

#[test]
fn a_relative_watch_a_long_key_a_glob_and_bad_permissions_are_refused_with_their_line() {
    let s = Sandbox::new();
    s.manifest(
        "site.yaml",
        r#"resources:
  - audit_rule: bad
    watches:
      - { path: opt/intelluxe/logs, permissions: wa, key: ok }
      - { path: /etc/passwd, permissions: wa, key: healthcare-user-account-changes-x }
      - { path: "/etc/systemd/system/intelluxe-*.service", permissions: wa, key: svc }
      - { path: /etc/group, permissions: rwq, key: grp }
    syscalls:
      - { arch: x86, syscalls: [chmod], key: perm }
"#,
    );
    let before = s.snapshot();
    let run = s.run("plan", &["site.yaml"]);
    run.assert_code(1);
    let out = run.all();
    assert!(out.contains("site.yaml:4:17"), "{out}");
    assert!(
        out.contains("an audit watch needs an absolute path"),
        "{out}"
    );
    assert!(out.contains("site.yaml:5:52"), "{out}");
    assert!(out.contains("auditd keys are at most 31"), "{out}");
    assert!(out.contains("site.yaml:6:17"), "{out}");
    assert!(out.contains("audit watches take no wildcards"), "{out}");
    assert!(out.contains("site.yaml:7:42"), "{out}");
    assert!(out.contains("`q` in `rwq` is not a permission"), "{out}");
    assert!(out.contains("site.yaml:9:17"), "{out}");
    assert!(out.contains("not an audit architecture"), "{out}");
    assert_eq!(s.snapshot(), before);
}

const IN_HOST: &str = "/opt/reconcile/bin/reconcile";

fn rc(host: &TestHost, args: &[&str]) -> support::testhost::ExecOutput {
    let mut argv = vec![IN_HOST];
    argv.extend_from_slice(args);
    argv.push("/root/m");
    host.exec_timeout(&argv, Duration::from_secs(300))
}

/// In a booted host with auditd installed: the rules file is what augenrules builds
/// the kernel's rule set from; where auditd runs, the rules load once and a write
/// to a watched file is found by its key.
#[test]
fn in_a_booted_host_the_rules_parse_with_augenrules_and_load_where_auditd_runs() {
    let Some(host) = boot_or_skip("audit rules in a booted host") else {
        return;
    };
    if !host.exec(&["test", "-x", "/sbin/augenrules"]).success() {
        let why = "the test-host image has no auditd (rebuild it: bash scripts/testhost-image.sh)";
        assert!(!in_ci(), "{why}");
        eprintln!("skipping: {why}");
        return;
    }
    let manifest = r#"resources:
  - file: /etc/intelluxe-demo.conf
    content: "a = 1\n"
  - audit_rule: 99-intelluxe-demo
    watches:
      - { path: /etc/intelluxe-demo.conf, permissions: wa, key: rc-demo-watch }
    syscalls:
      - { arch: b64, syscalls: [fchmodat, chmod], fields: ["auid>=1000", "auid!=unset"], key: rc-perm-mod }
"#;
    host.write_file("/root/m/site.yaml", manifest.as_bytes());
    let apply = rc(&host, &["apply"]);
    assert_eq!(apply.status, 0, "{apply}");
    let again = rc(&host, &["plan", "--detailed-exitcode"]);
    assert_eq!(again.status, 0, "plan after apply: {again}");
    // augenrules builds /etc/audit/audit.rules from rules.d: our lines must be in it
    // as written (it concatenates and reorders control lines only).
    let built = host.sh("augenrules; cat /etc/audit/audit.rules");
    assert!(
        built
            .stdout
            .contains("-w /etc/intelluxe-demo.conf -p wa -k rc-demo-watch"),
        "{built}"
    );
    assert!(
        built.stdout.contains("-a always,exit -F arch=b64 -S fchmodat,chmod -F auid>=1000 -F auid!=unset -k rc-perm-mod"),
        "{built}"
    );
    // The image keeps auditd disabled (it cannot run in a container, see below):
    // started on purpose here, to find out.
    let _ = host.exec(&["systemctl", "start", "auditd"]);
    let status = host.exec(&["auditctl", "-s"]);
    let active = host.exec(&["systemctl", "is-active", "auditd"]);
    // auditd's own words (its syslog identifier), not systemd's about it.
    let journal = host.exec(&[
        "journalctl",
        "-t",
        "auditd",
        "-n",
        "3",
        "-o",
        "cat",
        "--no-pager",
    ]);
    // It restarts in a loop when it cannot run: stopped, the host stays quiet.
    let _ = host.exec(&["systemctl", "stop", "auditd"]);
    let running = status.success()
        && reconcile::host::parse::auditctl::parse_status(&status.stdout)
            .is_some_and(|s| s.pid > 0);
    if !running {
        // Measured here: the audit netlink socket belongs to the initial network and
        // user namespaces; a container's auditd cannot bind it, so nothing loads.
        eprintln!(
            "skipping the load and ausearch part: auditd cannot run in this container (the audit netlink socket is not namespaced): auditd is {}; auditctl -s: {}{}; its journal: {}",
            active.stdout.trim(),
            status.stdout.trim(),
            status.stderr.trim(),
            journal.stdout.trim().replace('\n', " | ")
        );
        return;
    }
    let listed = host.exec_ok(&["auditctl", "-l"]);
    assert!(
        listed.contains("-w /etc/intelluxe-demo.conf -p wa -k rc-demo-watch"),
        "{listed}"
    );
    host.sh_ok("echo b = 2 >> /etc/intelluxe-demo.conf");
    let found = host.exec(&["ausearch", "-k", "rc-demo-watch"]);
    assert!(found.success(), "{found}");
    assert!(found.stdout.contains("intelluxe-demo.conf"), "{found}");
}

/// Re-records the auditctl fixtures from a booted host:
/// `cargo test --test audit_rules record_auditctl_fixtures -- --ignored`.
#[test]
#[ignore]
fn record_auditctl_fixtures() {
    let Some(host) = boot_or_skip("record_auditctl_fixtures") else {
        return;
    };
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/parse");
    for (name, argv) in [
        ("auditctl-s.txt", &["auditctl", "-s"][..]),
        ("auditctl-l.txt", &["auditctl", "-l"][..]),
    ] {
        let out = host.exec(argv);
        std::fs::write(dir.join(name), format!("{}{}", out.stdout, out.stderr))
            .unwrap_or_else(|e| panic!("write {name}: {e}"));
    }
    let _ = host.exec(&["systemctl", "start", "auditd"]);
    let active = host.exec(&["systemctl", "status", "auditd", "--no-pager"]);
    eprintln!("{active}");
}
