//! The `logrotate` kind against scratch roots and the real logrotate: the runbook's
//! two 7-year policies converge and validate, a forced rotation honours `create`, and
//! the runbook's mistakes are refused with their manifest line.

mod support;

use std::os::unix::fs::MetadataExt;

use support::sandbox::Sandbox;

fn logrotate_or_skip() -> bool {
    if reconcile::host::exec::tool_exists("logrotate") {
        return true;
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "CI must install logrotate"
    );
    eprintln!("skipping: logrotate is not installed");
    false
}

/// The target's accounts: the service account and group exist only in the target
/// root, never on the machine running the tests.
fn accounts(s: &Sandbox) {
    s.put(
        "/etc/passwd",
        b"root:x:0:0:root:/root:/bin/bash\ndaemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin\nintelluxe-service:x:2000:2001::/opt/intelluxe:/bin/false\n",
    );
    s.put(
        "/etc/group",
        b"root:x:0:\ndaemon:x:1:\nadm:x:4:\nintelluxe-prod:x:2001:\n",
    );
}

/// The runbooks' two policies, as the runbooks meant them: 7 years of daily logs,
/// owned by the service account (which only the target has).
const RUNBOOK_POLICIES: &str = r#"resources:
  - directory: /var/log/intelluxe-healthcare
    owner: intelluxe-service
    group: intelluxe-prod
    mode: "0750"
  - logrotate: intelluxe-auto-upgrade
    paths: ["/var/log/intelluxe-healthcare/*.log"]
    frequency: daily
    rotate: 2555          # 7 years (HIPAA requirement): a YAML comment, not logrotate's
    compress: true
    delaycompress: true
    missingok: true
    notifempty: true
    create: { mode: "0640", owner: intelluxe-service, group: intelluxe-prod }
  - logrotate: intelluxe-healthcare
    paths: ["/opt/intelluxe/logs/*.log"]
    frequency: daily
    rotate: 2555          # 7 years retention
    compress: true
    delaycompress: true
    missingok: true
    notifempty: true
    create: { mode: "0640", owner: intelluxe-service, group: intelluxe-prod }
"#;

#[test]
fn the_runbooks_two_policies_converge_validate_and_plan_read_only() {
    if !logrotate_or_skip() {
        return;
    }
    let s = Sandbox::new();
    accounts(&s);
    s.manifest("site.yaml", RUNBOOK_POLICIES);
    let before = s.snapshot();
    for cmd in ["plan", "check"] {
        let run = s.run(cmd, &["site.yaml"]);
        assert!(run.code() == 0 || run.code() == 2, "{}", run.all());
        assert!(!run.all().contains("error"), "{}", run.all());
        assert_eq!(s.snapshot(), before, "{cmd} changed the root");
    }
    let plan = s.run("plan", &["site.yaml"]);
    assert!(
        plan.stdout().contains("+ logrotate[intelluxe-healthcare]"),
        "{}",
        plan.all()
    );
    assert!(plan.stdout().contains("+    rotate 2555"), "{}", plan.all());
    s.converge(&["site.yaml"]);
    let want =
        "# logrotate[intelluxe-healthcare], managed by reconcile: changes here are overwritten
/opt/intelluxe/logs/*.log {
    daily
    rotate 2555
    missingok
    notifempty
    compress
    delaycompress
    create 0640 intelluxe-service intelluxe-prod
}
";
    assert_eq!(s.read("/etc/logrotate.d/intelluxe-healthcare"), want);
    assert_eq!(s.mode("/etc/logrotate.d/intelluxe-healthcare"), 0o644);
    // The installed files pass the real logrotate too (owners as the target has them
    // are not this machine's: the check in plan used root for them, so do we).
    for name in ["intelluxe-healthcare", "intelluxe-auto-upgrade"] {
        let text = s
            .read(&format!("/etc/logrotate.d/{name}"))
            .replace("intelluxe-service intelluxe-prod", "root root");
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let conf = dir.path().join(name);
        std::fs::write(&conf, text).unwrap_or_else(|e| panic!("{e}"));
        let out = std::process::Command::new("logrotate")
            .arg("-d")
            .arg("-s")
            .arg(dir.path().join("status"))
            .arg(&conf)
            .output()
            .unwrap_or_else(|e| panic!("{e}"));
        let said = String::from_utf8_lossy(&out.stderr);
        assert!(said.contains("2555 rotations"), "{said}");
        assert!(!said.contains("error:"), "{said}");
    }
    // The log folder comes first: an automatic edge from its directory resource.
    let graph = s.run("graph", &["site.yaml"]);
    graph.assert_code(0);
    assert!(
        graph.stdout().contains(
            "logrotate[intelluxe-auto-upgrade]\n    after directory[/var/log/intelluxe-healthcare] (auto)"
        ),
        "{}",
        graph.all()
    );
}

#[test]
fn a_forced_rotation_of_the_installed_policy_creates_the_new_log_with_its_mode_and_owner() {
    if !logrotate_or_skip() || !support::sandbox::require_root("forced rotation") {
        return;
    }
    let s = Sandbox::new();
    accounts(&s);
    // The policy points at the sandbox's own log folder, so the installed file can be
    // run as it is; `daemon`/`adm` exist on the target and on this machine alike.
    let logs = s.path("/srv/app/logs");
    std::fs::create_dir_all(&logs).unwrap_or_else(|e| panic!("{e}"));
    let logs = logs.display().to_string();
    s.manifest(
        "site.yaml",
        &format!(
            r#"resources:
  - logrotate: app
    paths: ["{logs}/*.log"]
    frequency: daily
    rotate: 3
    missingok: true
    create: {{ mode: "0640", owner: daemon, group: adm }}
"#
        ),
    );
    s.converge(&["site.yaml"]);
    std::fs::write(format!("{logs}/app.log"), "line 1\n").unwrap_or_else(|e| panic!("{e}"));
    let state = s.path("/var/lib/logrotate/status");
    std::fs::create_dir_all(state.parent().unwrap_or(logs.as_ref()))
        .unwrap_or_else(|e| panic!("{e}"));
    let out = std::process::Command::new("logrotate")
        .arg("-f")
        .arg("-s")
        .arg(&state)
        .arg(s.path("/etc/logrotate.d/app"))
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rotated = std::fs::read_to_string(format!("{logs}/app.log.1"))
        .unwrap_or_else(|e| panic!("no rotated log: {e}"));
    assert_eq!(rotated, "line 1\n");
    let fresh = std::fs::metadata(format!("{logs}/app.log")).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(fresh.len(), 0);
    assert_eq!(fresh.mode() & 0o7777, 0o640);
    assert_eq!((fresh.uid(), fresh.gid()), (1, 4));
    assert!(std::fs::read_to_string(&state)
        .unwrap_or_default()
        .contains("app.log"));
}

#[test]
fn the_runbooks_inline_comment_and_a_negative_rotate_are_refused_with_their_line() {
    let s = Sandbox::new();
    accounts(&s);
    s.manifest(
        "site.yaml",
        r#"resources:
  - logrotate: intelluxe-healthcare
    paths: ["/opt/intelluxe/logs/*.log"]
    frequency: daily
    rotate: "2555  # 7 years (HIPAA requirement)"
    dateformat: "-%Y%m%d # dated"
  - logrotate: forever
    paths: ["/var/log/x.log"]
    rotate: -1
"#,
    );
    let before = s.snapshot();
    let run = s.run("plan", &["site.yaml"]);
    run.assert_code(1);
    let out = run.all();
    assert!(out.contains("site.yaml:5:13"), "{out}");
    assert!(out.contains("has a trailing comment"), "{out}");
    assert!(out.contains("write `2555`"), "{out}");
    assert!(out.contains("site.yaml:6:17"), "{out}");
    assert!(out.contains("site.yaml:9:13"), "{out}");
    assert!(
        out.contains("rotate: -1 keeps every rotated log forever"),
        "{out}"
    );
    assert_eq!(s.snapshot(), before);
}

#[test]
fn an_owner_the_target_does_not_have_is_a_plan_error_naming_the_manifest_line() {
    if !logrotate_or_skip() {
        return;
    }
    let s = Sandbox::new();
    accounts(&s);
    s.manifest(
        "site.yaml",
        r#"resources:
  - logrotate: app
    paths: ["/var/log/app/*.log"]
    missingok: true
    create: { mode: "0640", owner: nobody-here, group: intelluxe-prod }
"#,
    );
    let before = s.snapshot();
    let run = s.run("plan", &["site.yaml"]);
    run.assert_code(1);
    assert!(
        run.all().contains(
            "create: user `nobody-here` (declared at site.yaml:5:36) is not a user on the target"
        ),
        "{}",
        run.all()
    );
    assert_eq!(s.snapshot(), before);
    // Declared in the same manifest: known, and created first.
    s.manifest(
        "site.yaml",
        r#"resources:
  - user: nobody-here
    uid: 2100
    group: intelluxe-prod
    system: true
  - logrotate: app
    paths: ["/var/log/app/*.log"]
    missingok: true
    create: { mode: "0640", owner: nobody-here, group: intelluxe-prod }
"#,
    );
    let run = s.run("plan", &["site.yaml"]);
    assert!(!run.all().contains("error"), "{}", run.all());
}

#[test]
fn an_error_only_logrotate_finds_is_a_plan_error_with_the_manifest_line() {
    if !logrotate_or_skip() {
        return;
    }
    let s = Sandbox::new();
    accounts(&s);
    // A count reconcile's own rules accept (a whole number) but logrotate's parser
    // does not (over its int): its message, mapped back to the manifest line.
    s.manifest(
        "site.yaml",
        r#"resources:
  - logrotate: app
    paths: ["/var/log/app/*.log"]
    missingok: true
    rotate: 4000000000
    su: { owner: daemon, group: adm }
"#,
    );
    let before = s.snapshot();
    let run = s.run("plan", &["site.yaml"]);
    run.assert_code(1);
    assert!(
        run.all().contains(
            "/etc/logrotate.d/app:3 bad rotation count '4000000000' (declared at site.yaml:5:13)"
        ),
        "{}",
        run.all()
    );
    assert!(!run.all().contains("reconcile-logrotate-"), "{}", run.all());
    assert_eq!(s.snapshot(), before);
    // A secret policy: logrotate quotes what it rejects, so its output is not shown.
    s.manifest(
        "site.yaml",
        "resources:\n  - logrotate: app\n    secret: true\n    paths: [\"/var/log/app/*.log\"]\n    missingok: true\n    rotate: 4000000000\n",
    );
    let run = s.run("plan", &["site.yaml"]);
    run.assert_code(1);
    assert!(
        run.all().contains("its output is not shown"),
        "{}",
        run.all()
    );
    assert!(!run.all().contains("bad rotation count"), "{}", run.all());
    // An unknown `su` group is the target's business, found by reconcile.
    s.manifest(
        "site.yaml",
        r#"resources:
  - logrotate: app
    paths: ["/var/log/app/*.log"]
    missingok: true
    su: { owner: daemon, group: nogroup-here }
"#,
    );
    let run = s.run("plan", &["site.yaml"]);
    run.assert_code(1);
    assert!(
        run.all()
            .contains("su: group `nogroup-here` (declared at site.yaml:5:9)"),
        "{}",
        run.all()
    );
}
