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
    // The validator runs while planning: the apply is refused before any change.
    assert!(log.contains("\"event\":\"refused\""), "{log}");
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

fn outside() -> (
    tempfile::TempDir,
    std::collections::BTreeMap<String, String>,
) {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(dir.path().join("keep"), "outside\n").unwrap_or_else(|e| panic!("{e}"));
    let snap = support::sandbox::snapshot(dir.path());
    (dir, snap)
}

fn symlink(target: &std::path::Path, link: &std::path::Path) {
    if let Some(p) = link.parent() {
        std::fs::create_dir_all(p).unwrap_or_else(|e| panic!("{e}"));
    }
    std::os::unix::fs::symlink(target, link).unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn engine_files_under_symlinked_parents_are_refused_and_nothing_outside_changes() {
    for dir in [
        "/var/log",
        "/var/log/reconcile",
        "/var/lib/reconcile",
        "/run",
    ] {
        let s = Sandbox::new();
        site(&s);
        let (out, before) = outside();
        symlink(out.path(), &s.path(dir));
        let run = s.run("apply", &["site.yaml"]);
        run.assert_code(1);
        assert!(
            run.stderr().contains("symlink"),
            "{dir}: the refusal does not say why:\n{}",
            run.all()
        );
        assert_eq!(
            support::sandbox::snapshot(out.path()),
            before,
            "{dir}: something was written outside the root"
        );
        assert!(!s.path("/etc/app").exists(), "{dir}: something was applied");
        if dir.starts_with("/var/log") {
            // Reading the trail does not follow the symlink either.
            let planted = if dir == "/var/log" {
                out.path().join("reconcile/audit.jsonl")
            } else {
                out.path().join("audit.jsonl")
            };
            if let Some(p) = planted.parent() {
                std::fs::create_dir_all(p).unwrap_or_else(|e| panic!("{e}"));
            }
            std::fs::write(&planted, "{}\n").unwrap_or_else(|e| panic!("{e}"));
            let run = s.run("audit", &["verify"]);
            run.assert_code(1);
            assert!(run.stderr().contains("symlink"), "{dir}: {}", run.all());
        }
    }
}

#[test]
fn audit_log_setting_pointing_at_etc_passwd_is_refused_and_the_file_is_unchanged() {
    use std::os::unix::fs::PermissionsExt;
    let s = Sandbox::new();
    let (out, before) = outside();
    let passwd = "root:x:0:0:root:/root:/bin/bash\n";
    let p = s.put("/etc/passwd", passwd.as_bytes());
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644))
        .unwrap_or_else(|e| panic!("{e}"));
    s.manifest(
        "site.yaml",
        "settings:\n  audit_log: /etc/passwd\nresources:\n  - file: /srv/a\n    content: \"a\\n\"\n",
    );
    let snap = s.snapshot();
    // validate and plan already say so.
    for cmd in ["validate", "plan", "check"] {
        let run = s.run(cmd, &["site.yaml"]);
        run.assert_code(1);
        assert!(
            run.stderr().contains("is under /etc"),
            "{cmd}: {}",
            run.all()
        );
    }
    let run = s.run("apply", &["site.yaml"]);
    run.assert_code(1);
    assert!(
        run.stderr()
            .contains("settings.audit_log /etc/passwd is under /etc"),
        "{}",
        run.all()
    );
    assert_eq!(s.mode("/etc/passwd"), 0o644);
    assert_eq!(s.read("/etc/passwd"), passwd);
    assert_eq!(s.snapshot(), snap, "a refused apply changed the root");
    assert_eq!(support::sandbox::snapshot(out.path()), before);
    // The refusal is recorded in the default log.
    let records = lines(&s);
    assert_eq!(records[1]["data"]["reason"], "invalid settings.audit_log");

    // An existing file that is not an audit log, outside /etc, is refused unchanged too.
    let data = "not a log\n";
    let p = s.put("/srv/data.txt", data.as_bytes());
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o664))
        .unwrap_or_else(|e| panic!("{e}"));
    s.manifest(
        "site.yaml",
        "settings:\n  audit_log: /srv/data.txt\nresources:\n  - file: /srv/a\n    content: \"a\\n\"\n",
    );
    let run = s.run("apply", &["site.yaml", "--audit-recover"]);
    run.assert_code(1);
    assert!(
        run.stderr().contains("not a valid audit record")
            || run.stderr().contains("not an audit log"),
        "{}",
        run.all()
    );
    assert_eq!(s.read("/srv/data.txt"), data);
    assert_eq!(s.mode("/srv/data.txt"), 0o664);
    assert!(!s.path("/srv/a").exists());

    // A managed path is refused as the log.
    s.manifest(
        "site.yaml",
        "settings:\n  audit_log: /srv/a\nresources:\n  - file: /srv/a\n    content: \"a\\n\"\n",
    );
    let run = s.run("apply", &["site.yaml"]);
    run.assert_code(1);
    assert!(
        run.stderr().contains("is managed by file[/srv/a]"),
        "{}",
        run.all()
    );
    assert!(!s.path("/srv/a").exists());
}

#[test]
fn a_typo_run_does_not_block_later_applies_with_a_configured_log() {
    let s = Sandbox::new();
    let good = "settings:\n  audit_log: /var/log/site/audit.jsonl\nresources:\n  - file: /srv/a\n    content: \"a\\n\"\n";
    s.manifest("site.yaml", good);
    s.converge(&["site.yaml"]);
    // A typo: the settings cannot be read, the refusal goes to the default log.
    s.manifest("site.yaml", &good.replace("content:", "contnet:"));
    s.run("apply", &["site.yaml"]).assert_code(1);
    assert_eq!(lines(&s)[1]["data"]["reason"], "invalid manifests");
    s.manifest("site.yaml", &good.replace("a\\n", "b\\n"));
    s.converge(&["site.yaml"]);
    s.converge(&["site.yaml"]);
    assert_eq!(s.read("/srv/a"), "b\n");
    // Both logs verify on their own, each against its own head.
    s.run("audit", &["verify"]).assert_code(0);
    let run = s.run("audit", &["--log", "/var/log/site/audit.jsonl", "verify"]);
    run.assert_code(0);
    assert!(run.stdout().contains("chain OK"), "{}", run.all());
    // The configured log's head is its own, next to the default one.
    let heads: Vec<String> = std::fs::read_dir(s.path("/var/lib/reconcile"))
        .unwrap_or_else(|e| panic!("{e}"))
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("audit-head"))
        .collect();
    assert_eq!(heads.len(), 2, "{heads:?}");
}

#[test]
fn a_middle_edited_log_refuses_the_next_apply_until_audit_recover_starts_a_recorded_segment() {
    let s = Sandbox::new();
    site(&s);
    s.converge(&["site.yaml"]);
    let original = s.read(LOG);
    let mut rows: Vec<String> = original.lines().map(String::from).collect();
    rows[1] = rows[1].replace("\"change\"", "\"chang3\"");
    let edited = rows.join("\n") + "\n";
    s.put(LOG, edited.as_bytes());

    let run = s.run("apply", &["site.yaml"]);
    run.assert_code(1);
    assert!(run.stderr().contains("seq 3"), "{}", run.all());
    assert!(run.stderr().contains("--audit-recover"), "{}", run.all());
    assert!(!run.stderr().contains("--head"), "{}", run.all());
    assert_eq!(s.read(LOG), edited, "the refused apply changed the log");

    let run = s.run("apply", &["site.yaml", "--audit-recover"]);
    run.assert_code(0);
    let moved: Vec<_> = std::fs::read_dir(s.path("/var/log/reconcile"))
        .unwrap_or_else(|e| panic!("{e}"))
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.to_string_lossy().contains(".broken-"))
        .collect();
    assert_eq!(moved.len(), 1, "{moved:?}");
    assert_eq!(
        std::fs::read_to_string(&moved[0]).unwrap_or_default(),
        edited,
        "the evidence was not kept as it was"
    );
    let records = lines(&s);
    assert_eq!(records[0]["event"], "segment");
    assert_eq!(records[0]["seq"], 6);
    assert!(
        records[0]["data"]["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("seq 3"),
        "{records:?}"
    );
    let run = s.run("audit", &["verify"]);
    run.assert_code(0);
    assert!(run.stdout().contains("new segment"), "{}", run.all());
    assert!(run.stdout().contains(".broken-"), "{}", run.all());
    // Later applies append normally.
    s.converge(&["site.yaml"]);
    s.run("audit", &["verify"]).assert_code(0);
}

#[test]
fn audit_verify_of_a_file_without_a_newline_is_not_reported_as_an_ok_chain() {
    let s = Sandbox::new();
    let p = s.put("/tmp/x.jsonl", b"hello, not a log");
    let run = s.run("audit", &["verify", p.to_str().unwrap_or_default()]);
    run.assert_code(1);
    assert!(!run.stdout().contains("chain OK"), "{}", run.all());
    assert!(run.stdout().contains("no complete record"), "{}", run.all());
}

const SECRET_SITE: &str = "resources:\n  - file: /etc/app/token\n    content: \"guess-me\\n\"\n    mode: \"0600\"\n    secret: true\n";

fn secret_change(s: &Sandbox) -> serde_json::Value {
    let run = s.run("plan", &["site.yaml", "--format", "json"]);
    run.assert_code(0);
    let v: serde_json::Value =
        serde_json::from_str(&run.stdout()).unwrap_or_else(|e| panic!("{e}"));
    v
}

#[test]
fn secret_fingerprints_are_keyed_per_host_and_absent_before_the_first_apply() {
    let a = Sandbox::new();
    let b = Sandbox::new();
    for s in [&a, &b] {
        s.manifest("site.yaml", SECRET_SITE);
        // Before any apply: no key, no fingerprint of the secret, and plan/check make none.
        let snap = s.snapshot();
        let plan = secret_change(s);
        let c = &plan["changes"][0];
        assert_eq!(c["sensitive"], true);
        assert!(c.get("desired").is_none() && c.get("live").is_none(), "{c}");
        assert!(plan.get("inputs").is_none(), "{plan}");
        s.run("check", &["site.yaml", "--format", "json"]);
        assert!(!s.path("/var/lib/reconcile/fingerprint.key").exists());
        assert_eq!(s.snapshot(), snap);
        // The first apply makes the key; its JSON carries keyed fingerprints only.
        let run = s.run("apply", &["site.yaml", "--format", "json"]);
        run.assert_code(0);
        let applied: serde_json::Value =
            serde_json::from_str(&run.stdout()).unwrap_or_else(|e| panic!("{e}"));
        let c = &applied["outcomes"][0]["change"];
        assert_eq!(c["sensitive"], true, "{applied}");
        for f in ["live", "desired"] {
            assert!(
                c[f].as_str().is_some_and(|v| v.starts_with("hmac:")),
                "{f} not keyed: {c}"
            );
        }
        s.converge(&["site.yaml"]);
        assert_eq!(s.mode("/var/lib/reconcile/fingerprint.key"), 0o600);
    }
    let pa = secret_change(&a);
    let pb = secret_change(&b);
    let (ca, cb) = (&pa["changes"][0], &pb["changes"][0]);
    for f in ["live", "desired"] {
        let (x, y) = (ca[f].as_str().unwrap_or(""), cb[f].as_str().unwrap_or(""));
        assert!(!x.is_empty() && !y.is_empty(), "{ca} {cb}");
        assert_ne!(x, y, "{f} is the same on two roots for the same secret");
    }
    assert_ne!(pa["inputs"], pb["inputs"]);
    assert!(
        ca["live"].as_str().is_some_and(|v| v.starts_with("hmac:")),
        "{ca}"
    );
    assert!(pa["inputs"].as_str().is_some_and(|s| !s.is_empty()));
    // Plan/check with a key change nothing either.
    let snap = a.snapshot();
    let key = std::fs::read(a.path("/var/lib/reconcile/fingerprint.key")).unwrap_or_default();
    a.run("check", &["site.yaml"]).assert_code(0);
    assert_eq!(a.snapshot(), snap);
    assert_eq!(
        std::fs::read(a.path("/var/lib/reconcile/fingerprint.key")).unwrap_or_default(),
        key
    );
}

#[test]
fn a_saved_plan_made_before_the_first_apply_still_detects_stale_non_secret_state() {
    let s = Sandbox::new();
    s.manifest(
        "site.yaml",
        &format!("{SECRET_SITE}  - file: /srv/plain\n    content: \"p\\n\"\n"),
    );
    let plan = s.path("/../plan.json");
    s.run(
        "plan",
        &["site.yaml", "--out", plan.to_str().unwrap_or_default()],
    )
    .assert_code(0);
    let saved = std::fs::read_to_string(&plan).unwrap_or_default();
    assert!(!saved.contains("fingerprint_key"), "{saved}");
    s.put("/srv/plain", b"changed meanwhile\n");
    let run = s.run("apply", &[plan.to_str().unwrap_or_default()]);
    run.assert_code(1);
    assert!(run.stderr().contains("stale plan"), "{}", run.all());
    std::fs::remove_file(s.path("/srv/plain")).unwrap_or_else(|e| panic!("{e}"));
    s.run(
        "plan",
        &["site.yaml", "--out", plan.to_str().unwrap_or_default()],
    )
    .assert_code(0);
    s.run("apply", &[plan.to_str().unwrap_or_default()])
        .assert_code(0);
    // Made with the key: applies, and a second saved plan names the key id.
    s.run(
        "plan",
        &["site.yaml", "--out", plan.to_str().unwrap_or_default()],
    )
    .assert_code(0);
    let saved = std::fs::read_to_string(&plan).unwrap_or_default();
    assert!(saved.contains("fingerprint_key"), "{saved}");
    s.run("apply", &[plan.to_str().unwrap_or_default()])
        .assert_code(0);
}

#[test]
fn an_audit_log_or_lock_hard_linked_to_a_file_outside_is_refused_and_the_file_is_unchanged() {
    for path in [LOG, "/run/reconcile.lock"] {
        let s = Sandbox::new();
        site(&s);
        let out = tempfile::tempdir_in(s.root.parent().unwrap_or(&s.root))
            .unwrap_or_else(|e| panic!("{e}"));
        let target = out.path().join("f");
        std::fs::write(&target, "outside\n").unwrap_or_else(|e| panic!("{e}"));
        let before = support::sandbox::snapshot(out.path());
        let link = s.path(path);
        if let Some(p) = link.parent() {
            std::fs::create_dir_all(p).unwrap_or_else(|e| panic!("{e}"));
        }
        std::fs::hard_link(&target, &link).unwrap_or_else(|e| panic!("{e}"));
        let run = s.run("apply", &["site.yaml"]);
        run.assert_code(1);
        assert!(run.stderr().contains("hard link"), "{path}: {}", run.all());
        assert_eq!(support::sandbox::snapshot(out.path()), before, "{path}");
        assert!(
            !s.path("/etc/app").exists(),
            "{path}: something was applied"
        );
    }
}

/// Holds the target's run lock from the test process, as another apply would.
fn hold_run_lock(s: &Sandbox) -> nix::fcntl::Flock<std::fs::File> {
    std::fs::create_dir_all(s.path("/run")).unwrap_or_else(|e| panic!("{e}"));
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(s.path("/run/reconcile.lock"))
        .unwrap_or_else(|e| panic!("{e}"));
    nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock)
        .unwrap_or_else(|(_, e)| panic!("{e}"))
}

#[test]
fn a_lock_refused_apply_is_recorded_in_the_audit_trail_by_the_next_apply() {
    let s = Sandbox::new();
    site(&s);
    s.converge(&["site.yaml"]);
    let lock = hold_run_lock(&s);
    let before = s.snapshot();
    let refused = s.run("apply", &["site.yaml"]);
    refused.assert_code(1);
    assert!(
        refused.stderr().contains("holds the lock")
            && refused
                .stderr()
                .contains("enters the audit trail with the next apply"),
        "{}",
        refused.all()
    );
    assert_eq!(before, s.snapshot());
    drop(lock);
    s.converge(&["site.yaml"]);
    let records = lines(&s);
    let noted: Vec<&serde_json::Value> = records
        .iter()
        .filter(|r| r["event"] == "lock_refused")
        .collect();
    assert_eq!(noted.len(), 1, "{records:?}");
    assert!(noted[0]["data"]["reason"]
        .as_str()
        .is_some_and(|r| r.contains("holds the lock")));
    assert!(noted[0]["data"]["refused_at"].is_string());
    s.run("audit", &["verify"]).assert_code(0);
    // Taken once: a later apply does not repeat it.
    s.converge(&["site.yaml"]);
    assert_eq!(
        lines(&s)
            .iter()
            .filter(|r| r["event"] == "lock_refused")
            .count(),
        1
    );
}

#[test]
fn lock_timeout_waits_for_the_lock_and_gives_up_after_it() {
    let s = Sandbox::new();
    site(&s);
    let lock = hold_run_lock(&s);
    let started = std::time::Instant::now();
    let gave_up = s.run("apply", &["site.yaml", "--lock-timeout", "400ms"]);
    gave_up.assert_code(1);
    assert!(started.elapsed() >= std::time::Duration::from_millis(400));
    assert!(
        gave_up.stderr().contains("after waiting 0.4s"),
        "{}",
        gave_up.all()
    );
    let release = std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_millis(700));
        drop(lock);
    });
    let started = std::time::Instant::now();
    let waited = s.run("apply", &["site.yaml", "--lock-timeout", "30s"]);
    waited.assert_code(0);
    assert!(started.elapsed() >= std::time::Duration::from_millis(600));
    release.join().unwrap_or_else(|_| panic!("release thread"));
    let again = s.run("plan", &["--detailed-exitcode", "site.yaml"]);
    again.assert_code(0);
    s.run("apply", &["site.yaml", "--lock-timeout", "5 parsecs"])
        .assert_code(1);
}

#[test]
fn audit_verify_and_show_accept_root_after_the_subcommand() {
    let s = Sandbox::new();
    site(&s);
    s.converge(&["site.yaml"]);
    let root = s.root.display().to_string();
    for args in [
        vec!["audit", "verify", "--root", &root],
        vec!["audit", "show", "--root", &root],
        vec!["audit", "--root", &root, "verify"],
    ] {
        let mut c = assert_cmd::Command::cargo_bin("reconcile").unwrap_or_else(|e| panic!("{e}"));
        let out = c.args(&args).output().unwrap_or_else(|e| panic!("{e}"));
        let run = support::sandbox::Run(out);
        run.assert_code(0);
        assert!(!run.stdout().is_empty(), "{args:?}: {}", run.all());
    }
}
