//! The core engine against real sandbox roots: converge-then-noop for every kind,
//! read-only commands proven read-only, the bad-input corpus, stale plans, the lock,
//! validation and failure isolation.

mod support;

use support::sandbox::Sandbox;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");

#[test]
fn file_converges_then_plans_no_changes() {
    let s = Sandbox::new();
    s.manifest(
        "site.yaml",
        r#"
vars: { greeting: hello }
resources:
  - file: /etc/motd
    content: "{{ greeting }} from {{ host.hostname }}\n"
    mode: "0640"
"#,
    );
    s.put("/etc/hostname", b"clinic-01\n");
    let run = s.converge(&["site.yaml"]);
    assert!(run.stdout().contains("Apply: 1 changed"), "{}", run.all());
    assert_eq!(s.read("/etc/motd"), "hello from clinic-01\n");
    assert_eq!(s.mode("/etc/motd"), 0o640);
}

#[test]
fn update_shows_field_changes_and_diff() {
    let s = Sandbox::new();
    s.put("/etc/app.conf", b"a = 1\nb = 2\n");
    std::fs::set_permissions(
        s.path("/etc/app.conf"),
        std::os::unix::fs::PermissionsExt::from_mode(0o644),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    s.manifest("site.yaml", "resources:\n  - file: /etc/app.conf\n    content: \"a = 1\\nb = 3\\n\"\n    mode: \"0640\"\n");
    let plan = s.run("plan", &["--detailed-exitcode", "site.yaml"]);
    plan.assert_code(2);
    let out = plan.stdout();
    assert!(out.contains("~ file[/etc/app.conf]"), "{out}");
    assert!(out.contains("mode: 0644 → 0640"), "{out}");
    assert!(out.contains("-b = 2") && out.contains("+b = 3"), "{out}");
    assert!(
        out.contains("Plan: 0 to add, 1 to change, 0 to remove."),
        "{out}"
    );
    s.converge(&["site.yaml"]);
    assert_eq!(s.read("/etc/app.conf"), "a = 1\nb = 3\n");
}

#[test]
fn directory_and_symlink_converge() {
    let s = Sandbox::new();
    s.manifest(
        "site.yaml",
        r#"
resources:
  - directory: /opt/app/data
    mode: "0700"
  - symlink: /opt/app/current
    target: /opt/app/data
"#,
    );
    s.converge(&["site.yaml"]);
    assert_eq!(s.mode("/opt/app/data"), 0o700);
    assert_eq!(
        std::fs::read_link(s.path("/opt/app/current")).ok(),
        Some("/opt/app/data".into())
    );
}

#[test]
fn directory_source_replaces_a_symlink_with_a_copy() {
    // The runbook's "replace symlinks with file copies".
    let s = Sandbox::new();
    s.put(
        "/home/intelluxe/scripts/backup.sh",
        b"#!/bin/sh\necho backup\n",
    );
    s.put("/home/intelluxe/scripts/lib/common.sh", b"X=1\n");
    std::fs::create_dir_all(s.path("/opt/intelluxe")).unwrap_or_else(|e| panic!("{e}"));
    std::os::unix::fs::symlink("/home/intelluxe/scripts", s.path("/opt/intelluxe/scripts"))
        .unwrap_or_else(|e| panic!("{e}"));
    s.manifest(
        "site.yaml",
        r#"
resources:
  - directory: /opt/intelluxe/scripts
    source: /home/intelluxe/scripts
    mode: "0750"
    file_mode: "0750"
    dir_mode: "0750"
"#,
    );
    let plan = s.run("plan", &["site.yaml"]);
    assert!(
        plan.stdout()
            .contains("type: symlink → /home/intelluxe/scripts → directory (copy)"),
        "{}",
        plan.all()
    );
    s.converge(&["site.yaml"]);
    let meta = std::fs::symlink_metadata(s.path("/opt/intelluxe/scripts"))
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(meta.is_dir(), "still a symlink");
    assert_eq!(s.read("/opt/intelluxe/scripts/lib/common.sh"), "X=1\n");
    assert_eq!(s.mode("/opt/intelluxe/scripts/backup.sh"), 0o750);
    assert_eq!(s.mode("/opt/intelluxe/scripts/lib"), 0o750);
    // Drift inside the copy is detected and repaired.
    s.put("/opt/intelluxe/scripts/backup.sh", b"tampered\n");
    s.run("check", &["site.yaml"]).assert_code(2);
    s.converge(&["site.yaml"]);
    assert_eq!(
        s.read("/opt/intelluxe/scripts/backup.sh"),
        "#!/bin/sh\necho backup\n"
    );
}

#[test]
fn template_files_and_environments() {
    let s = Sandbox::new();
    s.manifest(
        "site.yaml",
        r#"
vars: { level: info, mode: "0640" }
environments:
  development: { level: debug, mode: "0664" }
resources:
  - file: /etc/app.conf
    template: app.conf.tera
    mode: "{{ mode }}"
"#,
    );
    s.manifest(
        "templates/app.conf.tera",
        "level={{ level }}\nenv={{ environment | default(value=\"none\") }}\n",
    );
    s.converge(&["site.yaml", "--env", "development"]);
    assert_eq!(s.read("/etc/app.conf"), "level=debug\nenv=development\n");
    assert_eq!(s.mode("/etc/app.conf"), 0o664);
    // Without --env, the environment the last apply recorded on the target holds.
    s.converge(&["site.yaml", "--var", "level=warn"]);
    assert_eq!(s.read("/etc/app.conf"), "level=warn\nenv=development\n");
    let bad = s.run("plan", &["site.yaml", "--env", "staging", "--switch-env"]);
    bad.assert_code(1);
    assert!(
        bad.stderr().contains("no such environment"),
        "{}",
        bad.all()
    );
}

#[test]
fn absent_removes() {
    let s = Sandbox::new();
    s.put("/etc/old.conf", b"x");
    s.manifest(
        "site.yaml",
        "resources:\n  - file: /etc/old.conf\n    state: absent\n",
    );
    let plan = s.run("plan", &["site.yaml"]);
    assert!(
        plan.stdout().contains("- file[/etc/old.conf]"),
        "{}",
        plan.all()
    );
    s.converge(&["site.yaml"]);
    assert!(!s.path("/etc/old.conf").exists());
}

#[test]
fn plan_and_check_never_mutate() {
    let s = Sandbox::new();
    s.put("/etc/app.conf", b"old\n");
    s.put("/etc/remove-me", b"x");
    std::fs::create_dir_all(s.path("/opt")).unwrap_or_else(|e| panic!("{e}"));
    s.manifest(
        "site.yaml",
        r#"
resources:
  - file: /etc/app.conf
    content: "new\n"
    mode: "0600"
  - file: /etc/remove-me
    state: absent
  - directory: /opt/a/b/c
  - symlink: /opt/link
    target: /etc/app.conf
"#,
    );
    let before = s.snapshot();
    s.run("plan", &["site.yaml"]).assert_code(0);
    s.run("plan", &["site.yaml", "--format", "json"])
        .assert_code(0);
    s.run("check", &["site.yaml"]).assert_code(2);
    s.run("check", &["site.yaml", "--format", "json"])
        .assert_code(2);
    s.run("graph", &["site.yaml"]).assert_code(0);
    s.run("validate", &["site.yaml"]).assert_code(0);
    assert_eq!(before, s.snapshot(), "a read-only command changed the root");
    // Not even the lock file or run directory appear.
    assert!(!s.path("/run").exists());
}

#[test]
fn check_json_lists_drift() {
    let s = Sandbox::new();
    s.manifest(
        "site.yaml",
        "resources:\n  - file: /etc/a\n    content: \"a\\n\"\n",
    );
    s.converge(&["site.yaml"]);
    s.run("check", &["site.yaml"]).assert_code(0);
    s.put("/etc/a", b"drifted\n");
    let check = s.run("check", &["site.yaml", "--format", "json"]);
    check.assert_code(2);
    let v: serde_json::Value =
        serde_json::from_str(&check.stdout()).unwrap_or_else(|e| panic!("{e}: {}", check.all()));
    assert_eq!(v["in_sync"], false);
    assert_eq!(v["drifted"][0]["id"], "file[/etc/a]");
    assert_eq!(v["drifted"][0]["fields"][0]["field"], "content");
}

#[test]
fn secrets_never_appear_in_plans_or_output() {
    let s = Sandbox::new();
    let secret = "hunter2-PLANTED-SECRET";
    s.put("/etc/db.pass", b"old-PLANTED-OLDSECRET\n");
    s.manifest("site.yaml", &format!("resources:\n  - file: /etc/db.pass\n    content: \"{secret}\\n\"\n    mode: \"0600\"\n    secret: true\n"));
    for args in [vec!["site.yaml"], vec!["site.yaml", "--format", "json"]] {
        let plan = s.run("plan", &args);
        assert!(
            !plan.all().contains("PLANTED"),
            "secret leaked:\n{}",
            plan.all()
        );
        assert!(plan.stdout().contains("(sensitive)"), "{}", plan.all());
    }
    let check = s.run("check", &["site.yaml", "--format", "json"]);
    assert!(!check.all().contains("PLANTED"), "{}", check.all());
    let applied = s.run("apply", &["site.yaml", "--format", "json"]);
    applied.assert_code(0);
    assert!(!applied.all().contains("PLANTED"), "{}", applied.all());
    assert_eq!(s.read("/etc/db.pass"), format!("{secret}\n"));
    assert_eq!(s.mode("/etc/db.pass"), 0o600);
}

#[test]
fn failing_validate_leaves_the_old_file() {
    let s = Sandbox::new();
    s.put("/etc/app.conf", b"good\n");
    s.manifest("site.yaml", "resources:\n  - file: /etc/app.conf\n    content: \"bad\\n\"\n    validate: \"grep -q good %s\"\n");
    let run = s.run("apply", &["site.yaml"]);
    run.assert_code(1);
    assert!(run.stdout().contains("validation failed"), "{}", run.all());
    assert_eq!(s.read("/etc/app.conf"), "good\n");
    let leftovers: Vec<_> = std::fs::read_dir(s.path("/etc"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(leftovers.len(), 1, "temp files left behind: {leftovers:?}");
}

#[test]
fn a_failure_skips_only_its_dependents() {
    let s = Sandbox::new();
    // Passes on the plan's scratch copy, fails on apply's temp file: a failure that
    // only applying meets (validators also run while planning).
    let script = s.manifest(
        "fails-at-apply",
        "#!/bin/sh\ncase \"$1\" in *.reconcile-*) exit 1 ;; esac\nexit 0\n",
    );
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .unwrap_or_else(|e| panic!("{e}"));
    s.manifest(
        "site.yaml",
        r#"
resources:
  - file: /etc/broken.conf
    content: "x\n"
    validate: "./fails-at-apply %s"
  - file: /etc/needs-broken.conf
    content: "y\n"
    requires: ["file[/etc/broken.conf]"]
  - file: /etc/independent.conf
    content: "z\n"
"#,
    );
    let run = s.run("apply", &["site.yaml"]);
    run.assert_code(1);
    let out = run.stdout();
    assert!(out.contains("✗ file[/etc/broken.conf]"), "{out}");
    assert!(
        out.contains(
            "⊘ file[/etc/needs-broken.conf] skipped: file[/etc/broken.conf] did not converge"
        ),
        "{out}"
    );
    assert!(
        out.contains("Apply: 1 changed, 0 unchanged, 1 failed, 1 skipped."),
        "{out}"
    );
    assert_eq!(s.read("/etc/independent.conf"), "z\n");
    assert!(!s.path("/etc/needs-broken.conf").exists());
}

#[test]
fn saved_plan_applies_and_stale_plan_is_refused() {
    let s = Sandbox::new();
    s.manifest("site.yaml", "resources:\n  - file: /etc/a\n    content: \"a\\n\"\n  - file: /etc/b\n    content: \"b\\n\"\n");
    let plan_file = s.manifests.join("site.plan");
    let plan_path = plan_file.display().to_string();
    s.run("plan", &["site.yaml", "--out", &plan_path])
        .assert_code(0);
    // The live state moves after the plan was made: refused, nothing changes.
    s.put("/etc/b", b"someone else\n");
    let before = s.snapshot();
    let stale = s.run("apply", &[&plan_path]);
    stale.assert_code(1);
    assert!(
        stale
            .stderr()
            .contains("stale plan: file[/etc/b] changed on the target"),
        "{}",
        stale.all()
    );
    assert_eq!(before, s.snapshot());
    // A fresh plan applies exactly.
    s.run("plan", &["site.yaml", "--out", &plan_path])
        .assert_code(0);
    s.run("apply", &[&plan_path]).assert_code(0);
    assert_eq!(s.read("/etc/b"), "b\n");
    // Changed manifests make a saved plan stale too.
    s.run("plan", &["site.yaml", "--out", &plan_path])
        .assert_code(0);
    s.manifest("site.yaml", "resources:\n  - file: /etc/a\n    content: \"changed\\n\"\n  - file: /etc/b\n    content: \"b\\n\"\n");
    let stale = s.run("apply", &[&plan_path]);
    stale.assert_code(1);
    assert!(
        stale
            .stderr()
            .contains("manifests, templates or variables changed"),
        "{}",
        stale.all()
    );
}

#[test]
fn a_second_apply_is_refused_while_the_lock_is_held() {
    use nix::fcntl::{Flock, FlockArg};
    let s = Sandbox::new();
    s.manifest(
        "site.yaml",
        "resources:\n  - file: /etc/a\n    content: \"a\\n\"\n",
    );
    std::fs::create_dir_all(s.path("/run")).unwrap_or_else(|e| panic!("{e}"));
    let lock_path = s.path("/run/reconcile.lock");
    std::fs::write(&lock_path, "424242\n").unwrap_or_else(|e| panic!("{e}"));
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&lock_path)
        .unwrap_or_else(|e| panic!("{e}"));
    let held =
        Flock::lock(file, FlockArg::LockExclusiveNonblock).unwrap_or_else(|(_, e)| panic!("{e}"));
    let run = s.run("apply", &["site.yaml"]);
    run.assert_code(1);
    assert!(run.stderr().contains("pid 424242"), "{}", run.all());
    assert!(!s.path("/etc/a").exists());
    drop(held);
    s.converge(&["site.yaml"]);
}

#[test]
fn graph_prints_text_and_dot() {
    let s = Sandbox::new();
    s.manifest(
        "site.yaml",
        "resources:\n  - directory: /etc/app\n  - file: /etc/app/a.conf\n    content: \"\"\n",
    );
    let text = s.run("graph", &["site.yaml"]);
    assert!(
        text.stdout()
            .contains("file[/etc/app/a.conf]\n    after directory[/etc/app] (auto)"),
        "{}",
        text.all()
    );
    let dot = s.run("graph", &["site.yaml", "--format", "dot"]);
    assert!(
        dot.stdout()
            .contains("\"directory[/etc/app]\" -> \"file[/etc/app/a.conf]\" [style=dashed"),
        "{}",
        dot.all()
    );
}

/// Runs `apply` on a bad manifest: exit 1, the message names the place, and the root
/// is byte-identical afterwards.
fn refused(fixture: &str, expect: &[&str]) {
    let s = Sandbox::new();
    s.put("/etc/motd", b"original\n");
    let before = s.snapshot();
    let path = format!("{FIXTURES}/bad/{fixture}");
    let run = s.run("apply", &[&path]);
    run.assert_code(1);
    let err = run.stderr();
    for e in expect {
        assert!(err.contains(e), "expected `{e}` in:\n{}", run.all());
    }
    assert!(err.contains("nothing was changed"), "{}", run.all());
    assert_eq!(before, s.snapshot(), "the root changed");
}

#[test]
fn bad_yaml_in_the_second_of_several_files() {
    refused(
        "syntax-second-file",
        &["syntax-second-file/b.yaml:3:14", "unclosed quote"],
    );
}

#[test]
fn bad_unknown_field() {
    refused(
        "unknown-field.yaml",
        &[
            "unknown-field.yaml:4:5",
            "field `ownr`",
            "did you mean `owner`",
        ],
    );
}

#[test]
fn bad_duplicate_key() {
    refused(
        "duplicate-key.yaml",
        &["duplicate-key.yaml:5:5", "duplicate mapping key: mode"],
    );
}

#[test]
fn bad_duplicate_id_across_files() {
    refused(
        "duplicate-id",
        &[
            "duplicate-id/two.yaml:3:5: duplicate resource id file[/etc/motd]",
            "duplicate-id/one.yaml:2:5: first declared here",
        ],
    );
}

#[test]
fn bad_dependency_cycle() {
    refused(
        "cycle.yaml",
        &[
            "dependency cycle: file[/etc/a] → file[/etc/b] → file[/etc/c] → file[/etc/a]",
            "cycle.yaml:5:5: file[/etc/b] is declared here",
        ],
    );
}

#[test]
fn bad_unquoted_mode() {
    refused(
        "unquoted-mode.yaml",
        &["unquoted-mode.yaml:4:11", "field `mode`", "quoted octal"],
    );
}

#[test]
fn bad_relative_path() {
    refused(
        "relative-path.yaml",
        &["relative-path.yaml:2:11", "must be an absolute path"],
    );
}

#[test]
fn bad_dotdot_escape() {
    refused(
        "dotdot-escape.yaml",
        &["dotdot-escape.yaml:2:11", "must not contain `..`"],
    );
}

#[test]
fn bad_alias_bomb_fails_fast() {
    let started = std::time::Instant::now();
    refused("alias-bomb.yaml", &["alias-bomb.yaml:", "budget breached"]);
    // Generous bound: the point is that it does not expand 9^9 nodes.
    assert!(started.elapsed() < std::time::Duration::from_secs(20));
}

#[test]
fn bad_invalid_utf8() {
    refused(
        "invalid-utf8.yaml",
        &["invalid-utf8.yaml:3:18", "invalid UTF-8"],
    );
}

#[test]
fn bad_template_with_undefined_variable() {
    refused(
        "undefined-variable",
        &[
            "templates/app.conf.tera:3:1",
            "listen_port",
            "site.yaml:5:15: template used here",
        ],
    );
}

#[test]
fn bad_destination_symlink_to_outside_the_root() {
    let s = Sandbox::new();
    let outside = tempfile::NamedTempFile::new().unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(outside.path(), "precious\n").unwrap_or_else(|e| panic!("{e}"));
    std::fs::create_dir_all(s.path("/etc")).unwrap_or_else(|e| panic!("{e}"));
    std::os::unix::fs::symlink(outside.path(), s.path("/etc/motd"))
        .unwrap_or_else(|e| panic!("{e}"));
    let before = s.snapshot();
    let run = s.run(
        "apply",
        &[&format!("{FIXTURES}/bad/symlink-destination.yaml")],
    );
    run.assert_code(1);
    assert!(run.all().contains("is a symlink"), "{}", run.all());
    assert!(
        run.all().contains("symlink-destination.yaml:2:5"),
        "{}",
        run.all()
    );
    assert_eq!(
        std::fs::read_to_string(outside.path()).ok().as_deref(),
        Some("precious\n")
    );
    assert_eq!(before, s.snapshot());
}

#[test]
fn bad_symlinked_parent_directory_is_not_followed() {
    let s = Sandbox::new();
    let outside = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    std::os::unix::fs::symlink(outside.path(), s.path("/etc")).unwrap_or_else(|e| panic!("{e}"));
    s.manifest(
        "site.yaml",
        "resources:\n  - file: /etc/motd\n    content: \"x\\n\"\n",
    );
    let run = s.run("apply", &["site.yaml"]);
    run.assert_code(1);
    assert!(
        run.all()
            .contains("is a symlink; reconcile does not follow"),
        "{}",
        run.all()
    );
    assert_eq!(
        std::fs::read_dir(outside.path()).map(|d| d.count()).ok(),
        Some(0)
    );
}

#[test]
fn all_manifest_problems_are_reported_at_once() {
    let s = Sandbox::new();
    s.manifest(
        "site.yaml",
        "resources:\n  - file: relative\n  - file: /etc/a\n    mode: 644\n  - directory: /etc/b\n    colour: red\n  - nosuchkind: x\n",
    );
    let run = s.run("validate", &["site.yaml"]);
    run.assert_code(1);
    let err = run.stderr();
    for want in [
        "site.yaml:2:11",
        "site.yaml:4:11",
        "site.yaml:6:5",
        "site.yaml:7:5",
        "4 errors in the manifests",
    ] {
        assert!(err.contains(want), "missing `{want}` in\n{err}");
    }
}

#[test]
fn backup_keeps_the_replaced_content() {
    let s = Sandbox::new();
    s.put("/etc/app.conf", b"old\n");
    s.manifest(
        "site.yaml",
        "resources:\n  - file: /etc/app.conf\n    content: \"new\\n\"\n    backup: true\n",
    );
    s.converge(&["site.yaml"]);
    let backups: Vec<String> = std::fs::read_dir(s.path("/etc"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("app.conf.") && n.ends_with(".bak"))
        .collect();
    assert_eq!(backups.len(), 1, "{backups:?}");
    assert_eq!(s.read(&format!("/etc/{}", backups[0])), "old\n");
}

#[test]
fn owners_resolve_through_the_target_roots_passwd() {
    if !support::sandbox::require_root("owners_resolve_through_the_target_roots_passwd") {
        return;
    }
    use std::os::unix::fs::MetadataExt;
    let s = Sandbox::new();
    // Ids no real machine account is likely to have: resolution must come from ROOT/etc.
    s.put(
        "/etc/passwd",
        b"root:x:0:0:root:/root:/bin/bash\nsvc-test:x:4242:4343::/opt/svc:/bin/false\n",
    );
    s.put("/etc/group", b"root:x:0:\nsvc-grp:x:4343:\n");
    s.manifest(
        "site.yaml",
        "resources:\n  - file: /opt/svc/app.conf\n    content: \"x\\n\"\n    owner: svc-test\n    group: svc-grp\n    mode: \"0640\"\n  - directory: /opt/svc/data\n    owner: 4242\n    group: svc-grp\n    mode: \"0700\"\n",
    );
    s.converge(&["site.yaml"]);
    let meta = std::fs::metadata(s.path("/opt/svc/app.conf")).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((meta.uid(), meta.gid()), (4242, 4343));
    let meta = std::fs::metadata(s.path("/opt/svc/data")).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        (meta.uid(), meta.gid(), meta.mode() & 0o7777),
        (4242, 4343, 0o700)
    );
    // A drifted owner shows by name.
    nix::unistd::chown(
        &s.path("/opt/svc/app.conf"),
        Some(nix::unistd::Uid::from_raw(0)),
        None,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let plan = s.run("plan", &["site.yaml"]);
    assert!(
        plan.stdout().contains("owner: root → svc-test"),
        "{}",
        plan.all()
    );
}

#[test]
fn unknown_owner_is_refused_before_anything_changes() {
    let s = Sandbox::new();
    s.put("/etc/passwd", b"root:x:0:0:root:/root:/bin/bash\n");
    s.manifest("site.yaml", "resources:\n  - file: /etc/a\n    content: \"a\\n\"\n  - file: /etc/b\n    content: \"b\\n\"\n    owner: nobody-here\n");
    let before = s.snapshot();
    let run = s.run("apply", &["site.yaml"]);
    run.assert_code(1);
    assert!(
        run.all().contains(
            "site.yaml:4:5: file[/etc/b]: owner `nobody-here` is not a user on the target"
        ),
        "{}",
        run.all()
    );
    assert_eq!(before, s.snapshot());
}

#[test]
fn json_diagnostics_for_machines() {
    let s = Sandbox::new();
    s.manifest("site.yaml", "resources:\n  - file: /etc/a\n    mode: 644\n");
    let run = s.run("validate", &["--log-format", "json", "site.yaml"]);
    run.assert_code(1);
    let line = run
        .stderr()
        .lines()
        .next()
        .map(str::to_string)
        .unwrap_or_default();
    let v: serde_json::Value =
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {}", run.all()));
    assert_eq!(
        (
            v["line"].as_u64(),
            v["column"].as_u64(),
            v["field"].as_str()
        ),
        (Some(3), Some(11), Some("mode"))
    );
}

#[test]
fn completions_and_man_page() {
    let s = Sandbox::new();
    let mut c = assert_cmd::Command::cargo_bin("reconcile").unwrap_or_else(|e| panic!("{e}"));
    let out = c
        .args(["completions", "bash"])
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(String::from_utf8_lossy(&out.stdout).contains("_reconcile()"));
    let mut c = assert_cmd::Command::cargo_bin("reconcile").unwrap_or_else(|e| panic!("{e}"));
    let out = c.arg("man").output().unwrap_or_else(|e| panic!("{e}"));
    assert!(String::from_utf8_lossy(&out.stdout).contains(".TH reconcile 1"));
    drop(s);
}

#[test]
fn tags_narrow_a_run_to_tagged_resources_and_their_dependencies() {
    let s = Sandbox::new();
    s.manifest(
        "site.yaml",
        r#"
resources:
  - directory: /etc/app
  - file: /etc/app/upgrade.conf
    content: "window=sun\n"
    tags: [upgrade]
  - file: /etc/app/other.conf
    content: "x\n"
    tags: [web]
"#,
    );
    let plan = s.run("plan", &["site.yaml", "--tags", "upgrade"]);
    let out = plan.stdout();
    assert!(
        out.contains("+ directory[/etc/app]") && out.contains("+ file[/etc/app/upgrade.conf]"),
        "{out}"
    );
    assert!(!out.contains("other.conf"), "{out}");
    s.converge(&["site.yaml", "--tags", "upgrade"]);
    assert!(!s.path("/etc/app/other.conf").exists());
    s.run("check", &["site.yaml"]).assert_code(2);
    let none = s.run("plan", &["site.yaml", "--tags", "nosuch"]);
    none.assert_code(1);
    assert!(
        none.stderr().contains("no resource has the tag(s) nosuch"),
        "{}",
        none.all()
    );
}

/// SEED-NOTES 1: the runbook's logrotate policy has a trailing comment on `rotate`,
/// which logrotate rejects (and then skips the whole block). `validate:` with the real
/// logrotate catches it before the file is installed.
#[test]
fn logrotate_policy_is_validated_by_the_real_logrotate() {
    if !reconcile::host::exec::tool_exists("logrotate") {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI must install logrotate"
        );
        eprintln!("skipping: logrotate is not installed");
        return;
    }
    let s = Sandbox::new();
    let policy = |rotate_line: &str| {
        format!(
            "resources:\n  - file: /etc/logrotate.d/intelluxe-healthcare\n    validate: \"logrotate -d %s\"\n    content: |\n      /opt/intelluxe/logs/*.log {{\n          daily\n          missingok\n          {rotate_line}\n          compress\n          delaycompress\n          notifempty\n          create 0640 root adm\n      }}\n"
        )
    };
    s.manifest(
        "bad.yaml",
        &policy("rotate 2555  # 7 years (HIPAA requirement)"),
    );
    let run = s.run("apply", &["bad.yaml"]);
    run.assert_code(1);
    assert!(run.stdout().contains("bad rotation count"), "{}", run.all());
    assert!(!s.path("/etc/logrotate.d/intelluxe-healthcare").exists());
    s.manifest("good.yaml", &policy("rotate 2555"));
    s.converge(&["good.yaml"]);
}

#[test]
fn shipped_sources_for_files_and_trees() {
    let s = Sandbox::new();
    s.manifest("files/motd", "welcome\n");
    s.manifest("files/scripts/run.sh", "#!/bin/sh\n");
    s.manifest(
        "site.yaml",
        "resources:\n  - file: /etc/motd\n    source: files/motd\n  - directory: /opt/scripts\n    source: files/scripts\n    file_mode: \"0750\"\n  - file: /etc/bad\n    source: ../outside\n",
    );
    let bad = s.run("validate", &["site.yaml"]);
    bad.assert_code(1);
    assert!(
        bad.stderr()
            .contains("site.yaml:8:13: field `source`: `../outside` must not contain `..`"),
        "{}",
        bad.all()
    );
    s.manifest(
        "site.yaml",
        "resources:\n  - file: /etc/motd\n    source: files/motd\n  - directory: /opt/scripts\n    source: files/scripts\n    file_mode: \"0750\"\n",
    );
    s.converge(&["site.yaml"]);
    assert_eq!(s.read("/etc/motd"), "welcome\n");
    assert_eq!(s.mode("/opt/scripts/run.sh"), 0o750);
}

#[test]
fn children_of_a_symlink_that_a_copy_replaces_are_planned_as_new() {
    let s = Sandbox::new();
    s.put("/home/dev/stack/compose.yml", b"services: {}\n");
    std::fs::create_dir_all(s.path("/opt/app")).unwrap_or_else(|e| panic!("{e}"));
    std::os::unix::fs::symlink("/home/dev/stack", s.path("/opt/app/stack"))
        .unwrap_or_else(|e| panic!("{e}"));
    s.manifest(
        "site.yaml",
        "resources:\n  - directory: /opt/app/stack\n    source: /home/dev/stack\n  - directory: /opt/app/stack/data\n    mode: \"0700\"\n  - file: /opt/app/stack/.env\n    content: \"MODE=prod\\n\"\n",
    );
    let plan = s.run("plan", &["site.yaml"]);
    plan.assert_code(0);
    assert!(
        plan.stdout().contains("+ directory[/opt/app/stack/data]")
            && plan.stdout().contains("+ file[/opt/app/stack/.env]"),
        "{}",
        plan.all()
    );
    s.converge(&["site.yaml"]);
    assert_eq!(s.read("/opt/app/stack/.env"), "MODE=prod\n");
    // The development tree behind the old symlink was not written through.
    assert!(!s.path("/home/dev/stack/.env").exists());
    // A symlinked parent that nothing replaces is still refused.
    std::os::unix::fs::symlink("/home/dev", s.path("/opt/other")).unwrap_or_else(|e| panic!("{e}"));
    s.manifest(
        "other.yaml",
        "resources:\n  - file: /opt/other/x\n    content: \"x\\n\"\n",
    );
    s.run("plan", &["other.yaml"]).assert_code(1);
}

#[test]
fn apply_creates_a_missing_root_and_plan_does_not() {
    let s = Sandbox::new();
    s.manifest(
        "site.yaml",
        "resources:\n  - file: /etc/a\n    content: \"a\\n\"\n",
    );
    let fresh = s.root.join("new-root");
    let fresh_arg = fresh.display().to_string();
    let mut c = assert_cmd::Command::cargo_bin("reconcile").unwrap_or_else(|e| panic!("{e}"));
    let out = c
        .current_dir(&s.manifests)
        .args(["plan", "--root", &fresh_arg, "site.yaml"])
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr)
        .contains("does not exist (`reconcile apply` creates it"));
    assert!(!fresh.exists());
    let mut c = assert_cmd::Command::cargo_bin("reconcile").unwrap_or_else(|e| panic!("{e}"));
    let out = c
        .current_dir(&s.manifests)
        .args(["apply", "--root", &fresh_arg, "site.yaml"])
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(
        std::fs::read_to_string(fresh.join("etc/a")).ok().as_deref(),
        Some("a\n")
    );
}

#[test]
fn a_changed_template_makes_a_saved_plan_stale() {
    let s = Sandbox::new();
    s.manifest("templates/a.tera", "one\n");
    s.manifest("site.yaml", "resources:\n  - file: /etc/a\n    template: a.tera\n  - file: /etc/b\n    template: a.tera\n");
    let plan_path = s.manifests.join("site.plan").display().to_string();
    s.run("plan", &["site.yaml", "--out", &plan_path])
        .assert_code(0);
    s.manifest("templates/a.tera", "two\n");
    let stale = s.run("apply", &[&plan_path]);
    stale.assert_code(1);
    assert!(
        stale
            .stderr()
            .contains("manifests, templates or variables changed"),
        "{}",
        stale.all()
    );
    assert!(!s.path("/etc/a").exists());
}

/// Runs `reconcile ARGS --root ROOT` from the manifests folder with `TMPDIR` set, to see
/// where scratch copies go and that none is left.
fn run_with_tmpdir(
    s: &Sandbox,
    tmp: &std::path::Path,
    cmd: &str,
    args: &[&str],
) -> support::sandbox::Run {
    let out = std::process::Command::new(assert_cmd::cargo::cargo_bin("reconcile"))
        .current_dir(&s.manifests)
        .env("NO_COLOR", "1")
        .env("TMPDIR", tmp)
        .arg(cmd)
        .arg("--root")
        .arg(&s.root)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("run: {e}"));
    support::sandbox::Run(out)
}

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

const POLICY_PATH: &str = "/etc/logrotate.d/intelluxe-healthcare";

fn runbook_policy(rotate_line: &str) -> String {
    format!(
        "resources:\n  - file: {POLICY_PATH}\n    validate: \"logrotate -d %s\"\n    content: |\n      /opt/intelluxe/logs/*.log {{\n          daily\n          missingok\n          {rotate_line}\n          compress\n      }}\n"
    )
}

#[test]
fn a_validator_rejects_the_plan_on_a_private_copy_naming_the_destination_and_manifest_line() {
    if !logrotate_or_skip() {
        return;
    }
    let s = Sandbox::new();
    let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    s.manifest("site.yaml", &runbook_policy("rotate 2555  # 7 years"));
    let before = s.snapshot();
    let outside = support::sandbox::snapshot(tmp.path());
    for cmd in ["plan", "check"] {
        let run = run_with_tmpdir(&s, tmp.path(), cmd, &["site.yaml"]);
        // A plan error, as any other: not "1 to add" with exit 0.
        run.assert_code(1);
        let out = run.stdout();
        assert!(
            out.contains(&format!(
                "error: {POLICY_PATH}:4 bad rotation count '2555  # 7 years' (declared at site.yaml:8:7)"
            )),
            "{}",
            run.all()
        );
        assert!(out.contains("validation failed"), "{}", run.all());
        // The scratch copy is named nowhere and removed.
        assert!(!run.all().contains("reconcile-validate-"), "{}", run.all());
        assert_eq!(
            support::sandbox::snapshot(tmp.path()),
            outside,
            "{cmd} left a scratch copy"
        );
        assert_eq!(s.snapshot(), before, "{cmd} changed the root");
    }
    // Quoted content with `\n` escapes: its lines are not the manifest's, so the
    // message names the value's place, not a made-up line.
    s.manifest(
        "quoted.yaml",
        &format!("resources:\n  - file: {POLICY_PATH}\n    validate: \"logrotate -d %s\"\n    content: \"/var/log/x.log {{\\n  daily\\n  rotate 2555  # 7 years\\n}}\\n\"\n"),
    );
    let quoted = s.run("plan", &["quoted.yaml"]);
    quoted.assert_code(1);
    assert!(
        quoted.stdout().contains(&format!(
            "{POLICY_PATH}:3 bad rotation count '2555  # 7 years' (declared at quoted.yaml:4:14)"
        )),
        "{}",
        quoted.all()
    );
    // apply refuses before changing anything.
    let apply = s.run("apply", &["site.yaml"]);
    apply.assert_code(1);
    assert!(!s.path(POLICY_PATH).exists());

    // The corrected policy plans, applies, and then plans no changes.
    s.manifest("site.yaml", &runbook_policy("rotate 2555"));
    let plan = s.run("plan", &["--detailed-exitcode", "site.yaml"]);
    plan.assert_code(2);
    assert!(
        plan.stdout().contains(&format!("+ file[{POLICY_PATH}]")),
        "{}",
        plan.all()
    );
    s.converge(&["site.yaml"]);
    assert!(s.read(POLICY_PATH).contains("rotate 2555\n"));
}

#[test]
fn check_runs_a_validator_only_for_drifted_content() {
    let s = Sandbox::new();
    let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let counter = tmp.path().join("runs");
    let script = s.manifest(
        "count-and-fail",
        &format!("#!/bin/sh\necho \"$1\" >> {}\nexit 1\n", counter.display()),
    );
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .unwrap_or_else(|e| panic!("{e}"));
    s.put("/etc/app.conf", b"in place\n");
    s.manifest(
        "site.yaml",
        &format!(
            "resources:\n  - file: /etc/app.conf\n    content: \"in place\\n\"\n    validate: \"{} %s\"\n",
            script.display()
        ),
    );
    // In sync: nothing to validate, nothing run.
    run_with_tmpdir(&s, tmp.path(), "check", &["site.yaml"]).assert_code(0);
    assert!(
        !counter.exists(),
        "the validator ran for content already in place"
    );
    // Drifted: the would-be content is validated, and the failure is a plan error.
    s.put("/etc/app.conf", b"edited by hand\n");
    let before = s.snapshot();
    let check = run_with_tmpdir(&s, tmp.path(), "check", &["site.yaml"]);
    check.assert_code(1);
    assert!(
        check.stdout().contains("validation failed"),
        "{}",
        check.all()
    );
    assert_eq!(s.snapshot(), before);
    // It checked a copy named like the destination in a private folder under $TMPDIR.
    let checked = std::fs::read_to_string(&counter).unwrap_or_default();
    let tmp_real = tmp.path().canonicalize().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(checked.lines().count(), 1, "{checked}");
    assert!(
        checked.starts_with(&format!("{}/reconcile-validate-", tmp_real.display()))
            && checked.trim_end().ends_with("/app.conf"),
        "{checked}"
    );
    assert!(
        std::fs::read_dir(tmp.path())
            .unwrap_or_else(|e| panic!("{e}"))
            .flatten()
            .all(|e| e.file_name() == "runs"),
        "a scratch folder was left behind"
    );
    // A $TMPDIR inside the target root is passed over.
    std::fs::remove_file(&counter).unwrap_or_else(|e| panic!("{e}"));
    let inside = s.path("/var/tmp");
    std::fs::create_dir_all(&inside).unwrap_or_else(|e| panic!("{e}"));
    let before = s.snapshot();
    run_with_tmpdir(&s, &inside, "check", &["site.yaml"]).assert_code(1);
    let checked = std::fs::read_to_string(&counter).unwrap_or_default();
    let root_real = s.root.canonicalize().unwrap_or_else(|e| panic!("{e}"));
    assert!(
        !checked.is_empty() && !checked.starts_with(&root_real.display().to_string()),
        "{checked}"
    );
    assert_eq!(s.snapshot(), before);
}

#[test]
fn a_validator_failure_in_a_template_names_the_template_line_and_a_secret_file_shows_no_output() {
    if !logrotate_or_skip() {
        return;
    }
    let s = Sandbox::new();
    s.manifest(
        "templates/policy.tera",
        "{{ dir }}/*.log {\n    daily\n    rotate {{ keep }}  # PLANTED-comment\n}\n",
    );
    s.manifest(
        "site.yaml",
        "vars: { dir: /var/log/app, keep: 30 }\nresources:\n  - file: /etc/logrotate.d/app\n    template: policy.tera\n    validate: \"logrotate -d %s\"\n",
    );
    let before = s.snapshot();
    let plan = s.run("plan", &["site.yaml"]);
    plan.assert_code(1);
    // Line 3 of the rendered file differs from the template's text: found by its
    // rendered number when it cannot be found verbatim.
    assert!(
        plan.stdout()
            .contains("/etc/logrotate.d/app:3 bad rotation count")
            && plan
                .stdout()
                .contains("(declared at templates/policy.tera, rendered line 3)"),
        "{}",
        plan.all()
    );
    s.manifest(
        "templates/policy.tera",
        "/var/log/app/*.log {\n    daily\n    rotate 30  # PLANTED-comment\n}\n",
    );
    let plan = s.run("plan", &["site.yaml"]);
    plan.assert_code(1);
    assert!(
        plan.stdout()
            .contains("(declared at templates/policy.tera:3)"),
        "{}",
        plan.all()
    );
    // The same content, secret: the tool's output (which quotes the line) is not shown.
    s.manifest(
        "site.yaml",
        "vars: { dir: /var/log/app, keep: 30 }\nresources:\n  - file: /etc/logrotate.d/app\n    template: policy.tera\n    secret: true\n    validate: \"logrotate -d %s\"\n",
    );
    let plan = s.run("plan", &["site.yaml"]);
    plan.assert_code(1);
    assert!(
        plan.stdout().contains("validation failed"),
        "{}",
        plan.all()
    );
    assert!(!plan.all().contains("PLANTED"), "{}", plan.all());
    assert!(!plan.all().contains("bad rotation count"), "{}", plan.all());
    assert_eq!(s.snapshot(), before);
}

#[test]
fn a_file_path_with_glob_characters_is_planned_with_a_warning() {
    let s = Sandbox::new();
    s.manifest(
        "site.yaml",
        "resources:\n  - file: /opt/intelluxe/logs/*.log\n    content: \"x\\n\"\n  - file: /etc/plain.conf\n    content: \"y\\n\"\n",
    );
    let before = s.snapshot();
    let plan = s.run("plan", &["site.yaml"]);
    plan.assert_code(0);
    assert!(
        plan.stdout().contains(
            "site.yaml:2:11: field `file`: `/opt/intelluxe/logs/*.log` contains a glob character"
        ),
        "{}",
        plan.all()
    );
    assert!(
        !plan.stdout().contains("`/etc/plain.conf` contains"),
        "{}",
        plan.all()
    );
    assert_eq!(s.snapshot(), before);
    let json = s.run("plan", &["--format", "json", "site.yaml"]);
    assert!(
        json.stdout().contains("contains a glob character"),
        "{}",
        json.all()
    );
}

#[test]
fn a_changed_file_inside_a_shipped_tree_makes_a_saved_plan_stale() {
    let s = Sandbox::new();
    let outside = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    std::fs::write(outside.path().join("keep"), "outside\n").unwrap_or_else(|e| panic!("{e}"));
    let outside_before = support::sandbox::snapshot(outside.path());
    s.manifest("files/tree/top", "top\n");
    s.manifest("files/tree/sub/deep", "one\n");
    s.manifest(
        "site.yaml",
        "resources:\n  - directory: /opt/tree\n    source: files/tree\n",
    );
    let plan_path = s.manifests.join("site.plan").display().to_string();
    s.run("plan", &["site.yaml", "--out", &plan_path])
        .assert_code(0);
    let before = s.snapshot();
    s.manifest("files/tree/sub/deep", "two\n");
    let stale = s.run("apply", &[&plan_path]);
    stale.assert_code(1);
    assert!(
        stale
            .stderr()
            .contains("manifests, templates or variables changed"),
        "{}",
        stale.all()
    );
    assert_eq!(s.snapshot(), before, "nothing applied from a stale plan");
    assert!(!s.path("/opt/tree").exists());
    assert_eq!(support::sandbox::snapshot(outside.path()), outside_before);
    // Applying the manifests as they are now copies the changed tree, and a plan
    // after it has nothing left to do.
    s.converge(&["site.yaml"]);
    assert_eq!(s.read("/opt/tree/sub/deep"), "two\n");
}
