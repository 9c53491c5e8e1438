//! The audit trail through the real binary: records per apply, verification,
//! tampering, refusal when the log cannot be written, kill -9, rotation, secrets.

mod support;

use support::sandbox::Sandbox;

const LOG: &str = "/var/log/reconcile/audit.jsonl";

fn site(s: &Sandbox) {
    s.manifest(
        "site.yaml",
        r#"
resources:
  - directory: /etc/app
    mode: "0750"
  - file: /etc/app/app.conf
    content: "level = info\n"
    mode: "0640"
  - file: /etc/app/token
    content: "PLANTED-SECRET-7f3a\n"
    mode: "0600"
    secret: true
"#,
    );
}

fn lines(s: &Sandbox) -> Vec<serde_json::Value> {
    s.read(LOG)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

#[test]
fn an_apply_writes_a_verifiable_record_per_change() {
    let s = Sandbox::new();
    site(&s);
    s.converge(&["site.yaml"]);
    let records = lines(&s);
    let events: Vec<&str> = records.iter().filter_map(|r| r["event"].as_str()).collect();
    // `converge` also plans, which writes nothing.
    assert_eq!(
        events,
        ["run_start", "change", "change", "change", "run_end"],
        "{records:?}"
    );
    assert_eq!(records[1]["data"]["resource"], "directory[/etc/app]");
    assert_eq!(records[0]["data"]["manifests"][0], "site.yaml");
    assert_eq!(records[4]["data"]["counts"]["changed"], 3);
    let seqs: Vec<u64> = records.iter().filter_map(|r| r["seq"].as_u64()).collect();
    assert_eq!(seqs, (1..=5).collect::<Vec<_>>());
    s.run("audit", &["verify"]).assert_code(0);
    let show = s.run("audit", &["show", "--resource", "app.conf"]);
    assert!(
        show.stdout().contains("file[/etc/app/app.conf]"),
        "{}",
        show.all()
    );
    assert!(!show.stdout().contains("token"), "{}", show.all());
}

#[test]
fn secrets_never_reach_the_log() {
    let s = Sandbox::new();
    site(&s);
    s.converge(&["site.yaml"]);
    // A failing validate on a secret file must not echo its content either.
    s.manifest(
        "site.yaml",
        "resources:\n  - file: /etc/app/token\n    content: \"PLANTED-SECRET-new\\n\"\n    secret: true\n    validate: \"grep -q nomatch %s\"\n",
    );
    s.run("apply", &["site.yaml"]).assert_code(1);
    let log = s.read(LOG);
    assert!(!log.contains("PLANTED"), "secret in the audit log:\n{log}");
    assert!(log.contains("\"event\":\"failure\""), "{log}");
}

#[test]
fn tampering_is_detected_with_the_first_broken_seq() {
    let s = Sandbox::new();
    site(&s);
    s.converge(&["site.yaml"]);
    let original = s.read(LOG);
    let mut rows: Vec<String> = original.lines().map(String::from).collect();

    // Edit a field of record 3: the link from record 4 breaks.
    rows[2] = rows[2].replace("\"change\"", "\"chang3\"");
    s.put(LOG, (rows.join("\n") + "\n").as_bytes());
    let run = s.run("audit", &["verify"]);
    run.assert_code(1);
    assert!(run.stdout().contains("seq 4"), "{}", run.all());

    // Swap records 2 and 3.
    let mut rows: Vec<String> = original.lines().map(String::from).collect();
    rows.swap(1, 2);
    s.put(LOG, (rows.join("\n") + "\n").as_bytes());
    let run = s.run("audit", &["verify"]);
    run.assert_code(1);
    assert!(run.stdout().contains("seq 2"), "{}", run.all());

    // Delete record 5.
    let mut rows: Vec<String> = original.lines().map(String::from).collect();
    rows.remove(4);
    s.put(LOG, (rows.join("\n") + "\n").as_bytes());
    let run = s.run("audit", &["verify"]);
    run.assert_code(1);
    assert!(run.stdout().contains("seq 5"), "{}", run.all());

    // Truncate the last two records: the head file still knows seq 5.
    let rows: Vec<String> = original.lines().map(String::from).collect();
    s.put(LOG, (rows[..3].join("\n") + "\n").as_bytes());
    s.run("audit", &["verify"]).assert_code(1);

    // Append a forged record whose prev does not match the last line.
    let mut forged: serde_json::Value =
        serde_json::from_str(original.lines().last().unwrap_or("{}"))
            .unwrap_or_else(|e| panic!("{e}"));
    forged["seq"] = 6.into();
    forged["prev"] = "0".repeat(64).into();
    forged["event"] = "change".into();
    s.put(LOG, format!("{original}{forged}\n").as_bytes());
    let run = s.run("audit", &["verify"]);
    run.assert_code(1);
    assert!(run.stdout().contains("seq 6"), "{}", run.all());

    // The untouched log verifies again.
    s.put(LOG, original.as_bytes());
    s.run("audit", &["verify"]).assert_code(0);
}

#[test]
fn an_unwritable_log_refuses_the_apply() {
    let s = Sandbox::new();
    site(&s);
    // The log's folder is a file: the log cannot be created.
    s.put("/var/log/reconcile", b"not a directory");
    let run = s.run("apply", &["site.yaml"]);
    run.assert_code(1);
    assert!(
        run.stderr()
            .contains("cannot write the audit log, so nothing is applied"),
        "{}",
        run.all()
    );
    assert!(!s.path("/etc/app").exists(), "something was applied");
}

#[test]
fn refused_applies_are_recorded() {
    let s = Sandbox::new();
    s.manifest("site.yaml", "resources:\n  - file: /etc/a\n    mode: 644\n");
    s.run("apply", &["site.yaml"]).assert_code(1);
    let records = lines(&s);
    assert_eq!(records[1]["event"], "refused");
    assert_eq!(records[1]["data"]["reason"], "invalid manifests");
    s.run("audit", &["verify"]).assert_code(0);
}

#[test]
fn rotation_keeps_the_chain_verifiable() {
    let s = Sandbox::new();
    site(&s);
    s.converge(&["site.yaml"]);
    // What logrotate does with `create`: move the log away, the next writer starts a new file.
    std::fs::rename(s.path(LOG), s.path("/var/log/reconcile/audit.jsonl.1"))
        .unwrap_or_else(|e| panic!("{e}"));
    s.converge(&["site.yaml"]);
    let first = lines(&s);
    assert_eq!(first[0]["event"], "continued");
    assert_eq!(first[0]["seq"], 6);
    s.run("audit", &["verify"]).assert_code(0);
}

#[test]
fn kill_9_mid_apply_leaves_a_verifiable_log_that_the_next_apply_continues() {
    let s = Sandbox::new();
    let mut manifest = String::from("resources:\n");
    for i in 0..400 {
        manifest.push_str(&format!(
            "  - file: /srv/data/f{i:04}\n    content: \"{i}\\n\"\n"
        ));
    }
    s.manifest("site.yaml", &manifest);
    let bin = assert_cmd::cargo::cargo_bin("reconcile");
    let mut child = std::process::Command::new(bin)
        .current_dir(&s.manifests)
        .args(["apply", "--root"])
        .arg(&s.root)
        .args(["-j", "1", "site.yaml"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("{e}"));
    let log = s.path(LOG);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let n = std::fs::read_to_string(&log)
            .map(|t| t.lines().count())
            .unwrap_or(0);
        if n >= 20 || std::time::Instant::now() > deadline {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGKILL,
    );
    let status = child.wait().unwrap_or_else(|e| panic!("{e}"));
    assert!(
        !status.success(),
        "the apply finished before it could be killed"
    );
    s.run("audit", &["verify"]).assert_code(0);
    let before = lines(&s).len();
    s.converge(&["site.yaml"]);
    let after = lines(&s);
    assert!(after.len() > before);
    s.run("audit", &["verify"]).assert_code(0);
    assert_eq!(s.read("/srv/data/f0399"), "399\n");
}
