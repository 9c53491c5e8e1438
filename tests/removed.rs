//! Resources removed from the manifests: the record of what apply managed, `plan`/`check`
//! showing what is no longer declared, and `settings.removed: report | remove`.

mod support;

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};

use sha2::{Digest, Sha256};
use support::sandbox::Sandbox;

const RECORD: &str = "/var/lib/reconcile/managed.json";
const ORIGINALS: &str = "/var/lib/reconcile/originals";

/// Every file under the engine's state directory, byte for byte (the sandbox snapshot
/// leaves bookkeeping out, so this proves plan and check leave it alone too).
fn state_snapshot(s: &Sandbox) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let base = s.path("/var/lib/reconcile");
    let mut stack = vec![base.clone()];
    while let Some(dir) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            let Ok(m) = std::fs::symlink_metadata(&p) else {
                continue;
            };
            let rel = p
                .strip_prefix(&base)
                .map(|r| r.display().to_string())
                .unwrap_or_default();
            if m.is_dir() {
                stack.push(p.clone());
                out.insert(rel, format!("dir {:o}", m.mode() & 0o7777));
            } else {
                let bytes = std::fs::read(&p).unwrap_or_default();
                out.insert(
                    rel,
                    format!(
                        "{:x} {:o} {}",
                        Sha256::digest(&bytes),
                        m.mode() & 0o7777,
                        m.mtime_nsec()
                    ),
                );
            }
        }
    }
    out
}

/// Runs `plan` and `check` and asserts that neither changed the root nor the record.
fn read_only_runs(s: &Sandbox, args: &[&str]) -> (support::sandbox::Run, support::sandbox::Run) {
    let before = s.snapshot();
    let state = state_snapshot(s);
    let plan = s.run("plan", args);
    let check = s.run("check", args);
    assert_eq!(before, s.snapshot(), "plan/check changed the root");
    assert_eq!(state, state_snapshot(s), "plan/check changed the record");
    (plan, check)
}

fn systemd_tools_or_skip(test: &str) -> bool {
    let ok = ["systemctl", "systemd-analyze"].iter().all(|t| {
        ["/usr/bin", "/bin"]
            .iter()
            .any(|d| std::path::Path::new(d).join(t).is_file())
    });
    if !ok {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "{test}: systemctl and systemd-analyze are needed under CI=true"
        );
        eprintln!("skipping {test}: needs systemctl and systemd-analyze");
    }
    ok
}

const SERVICE: &str = r##"
  - unit: rc-clean.service
    sections:
      Unit: {Description: clean}
      Service: {Type: oneshot, ExecStart: /usr/local/sbin/rc-clean}
  - file: /usr/local/sbin/rc-clean
    mode: "0755"
    content: "#!/bin/sh\nexit 0\n"
"##;

const TIMER: &str = r#"
  - unit: rc-clean.timer
    enabled: true
    sections:
      Unit: {Description: daily clean}
      Timer: {OnCalendar: daily}
      Install: {WantedBy: timers.target}
"#;

#[test]
fn a_timer_deleted_from_the_manifests_is_reported_left_by_default_and_disabled_and_removed_with_removed_remove(
) {
    if !systemd_tools_or_skip("timer removal") {
        return;
    }
    let s = Sandbox::new();
    s.manifest("site.yaml", &format!("resources:{SERVICE}{TIMER}"));
    s.converge(&["site.yaml"]);
    let unit = "/etc/systemd/system/rc-clean.timer";
    let wants = "/etc/systemd/system/timers.target.wants/rc-clean.timer";
    assert!(s.path(wants).is_symlink());

    // The timer is deleted from the manifests.
    s.manifest("site.yaml", &format!("resources:{SERVICE}"));
    let (plan, check) = read_only_runs(&s, &["site.yaml"]);
    plan.assert_code(0);
    assert!(
        plan.stdout()
            .contains("- unit[rc-clean.timer] (no longer declared)"),
        "{}",
        plan.all()
    );
    assert!(
        plan.stdout().contains("settings.removed: report"),
        "{}",
        plan.all()
    );
    assert!(!plan.stdout().contains("No changes."), "{}", plan.all());
    check.assert_code(2);
    assert!(
        check
            .stdout()
            .contains("unit[rc-clean.timer] (no longer declared)"),
        "{}",
        check.all()
    );
    let detailed = s.run("plan", &["--detailed-exitcode", "site.yaml"]);
    detailed.assert_code(2);

    // Default `report`: apply leaves it, and says so; the next check still reports it.
    let applied = s.run("apply", &["site.yaml"]);
    applied.assert_code(0);
    assert!(
        applied
            .stdout()
            .contains("Left in place, no longer declared")
            && applied.stdout().contains("unit[rc-clean.timer]"),
        "{}",
        applied.all()
    );
    assert!(s.path(unit).is_file() && s.path(wants).is_symlink());
    s.run("check", &["site.yaml"]).assert_code(2);
    let json = s.run("apply", &["site.yaml", "--format", "json"]);
    json.assert_code(0);
    let v: serde_json::Value =
        serde_json::from_str(&json.stdout()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        v["undeclared_left"],
        serde_json::json!(["unit[rc-clean.timer]"])
    );

    // `removed: remove`: disabled and its file removed; the service stays.
    s.manifest(
        "site.yaml",
        &format!("settings: {{removed: remove}}\nresources:{SERVICE}"),
    );
    let (plan, check) = read_only_runs(&s, &["site.yaml"]);
    assert!(
        plan.stdout().contains("enabled: enabled → disabled"),
        "{}",
        plan.all()
    );
    assert!(
        plan.stdout()
            .contains("its file /etc/systemd/system/rc-clean.timer is deleted"),
        "{}",
        plan.all()
    );
    check.assert_code(2);
    let json = s.run("plan", &["site.yaml", "--format", "json"]);
    let v: serde_json::Value =
        serde_json::from_str(&json.stdout()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(v["removed"][0]["id"], "unit[rc-clean.timer]");
    assert_eq!(v["removed"][0]["action"], "delete");
    let applied = s.converge(&["site.yaml"]);
    assert!(
        applied
            .stdout()
            .contains("- unit[rc-clean.timer] (no longer declared)"),
        "{}",
        applied.all()
    );
    assert!(!s.path(unit).exists(), "the timer's file is still there");
    assert!(
        std::fs::symlink_metadata(s.path(wants)).is_err(),
        "still enabled"
    );
    assert!(s.path("/etc/systemd/system/rc-clean.service").is_file());
    s.run("check", &["site.yaml"]).assert_code(0);
    // The trail says what happened and why.
    let log = s.read("/var/log/reconcile/audit.jsonl");
    assert!(
        log.lines()
            .any(|l| l.contains("\"undeclared\":true") && l.contains("unit[rc-clean.timer]")),
        "{log}"
    );
    assert!(log.contains("undeclared_left"), "{log}");
}

#[test]
fn a_file_that_existed_before_is_restored_byte_for_byte_with_owner_and_mode_and_a_created_one_is_deleted(
) {
    if !support::sandbox::require_root("file restore") {
        return;
    }
    let s = Sandbox::new();
    let original: Vec<u8> =
        b"# shipped by the distribution\nkeep = yes\n\x00\xff binary tail".to_vec();
    let p = s.put("/etc/app.conf", &original);
    std::os::unix::fs::chown(&p, Some(1234), Some(5678)).unwrap_or_else(|e| panic!("{e}"));
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o640))
        .unwrap_or_else(|e| panic!("{e}"));
    s.manifest(
        "site.yaml",
        r#"
resources:
  - file: /etc/app.conf
    content: "managed = true\n"
    owner: "0"
    group: "0"
    mode: "0600"
  - file: /etc/app.d/extra.conf
    content: "extra\n"
  - directory: /etc/app.d
"#,
    );
    s.converge(&["site.yaml"]);
    assert_eq!(s.read("/etc/app.conf"), "managed = true\n");
    // The original is kept root-only.
    assert_eq!(s.mode(RECORD), 0o600);
    assert_eq!(s.mode(ORIGINALS), 0o700);
    let saved: Vec<_> = std::fs::read_dir(s.path(ORIGINALS))
        .unwrap_or_else(|e| panic!("{e}"))
        .flatten()
        .collect();
    assert_eq!(saved.len(), 1);
    assert_eq!(
        saved[0].metadata().map(|m| m.mode() & 0o7777).ok(),
        Some(0o600)
    );
    assert_eq!(std::fs::read(saved[0].path()).ok(), Some(original.clone()));

    s.manifest("site.yaml", "settings:\n  removed: remove\nresources: []\n");
    let (plan, check) = read_only_runs(&s, &["site.yaml"]);
    let out = plan.stdout();
    assert!(
        out.contains("- file[/etc/app.conf] (no longer declared)"),
        "{}",
        plan.all()
    );
    assert!(
        out.contains("original restored: file 1234:5678 0640"),
        "{}",
        plan.all()
    );
    assert!(
        out.contains("- file[/etc/app.d/extra.conf] (no longer declared)"),
        "{}",
        plan.all()
    );
    assert!(
        out.contains("/etc/app.d/extra.conf is deleted"),
        "{}",
        plan.all()
    );
    check.assert_code(2);

    s.converge(&["site.yaml"]);
    let meta = std::fs::symlink_metadata(s.path("/etc/app.conf")).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(std::fs::read(s.path("/etc/app.conf")).ok(), Some(original));
    assert_eq!(
        (meta.uid(), meta.gid(), meta.mode() & 0o7777),
        (1234, 5678, 0o640)
    );
    assert!(!s.path("/etc/app.d/extra.conf").exists());
    assert!(
        !s.path("/etc/app.d").exists(),
        "the created directory, now empty, stays"
    );
    // Restored and forgotten: the saved copy goes too.
    assert_eq!(
        std::fs::read_dir(s.path(ORIGINALS))
            .map(|r| r.count())
            .unwrap_or(0),
        0
    );
    s.run("check", &["site.yaml"]).assert_code(0);
}

#[test]
fn a_created_directory_that_holds_other_files_is_left_in_place_and_the_apply_says_why() {
    let s = Sandbox::new();
    s.manifest("site.yaml", "resources:\n  - directory: /srv/data\n");
    s.converge(&["site.yaml"]);
    s.put("/srv/data/user-upload.bin", b"not reconcile's");
    s.manifest("site.yaml", "settings: {removed: remove}\nresources: []\n");
    let applied = s.run("apply", &["site.yaml"]);
    applied.assert_code(1);
    assert!(
        applied
            .all()
            .contains("still holds 1 entry reconcile does not remove (user-upload.bin)"),
        "{}",
        applied.all()
    );
    assert_eq!(s.read("/srv/data/user-upload.bin"), "not reconcile's");
    // Still remembered: reported until it is emptied or declared again.
    s.run("check", &["site.yaml"]).assert_code(2);
    std::fs::remove_file(s.path("/srv/data/user-upload.bin")).unwrap_or_else(|e| panic!("{e}"));
    s.converge(&["site.yaml"]);
    assert!(!s.path("/srv/data").exists());
}

#[test]
fn a_secret_original_never_appears_in_any_output_and_is_stored_root_only() {
    let s = Sandbox::new();
    let planted = "ORIGINAL-SECRET-d41c9";
    s.put("/etc/app/token", format!("{planted}\n").as_bytes());
    s.manifest(
        "site.yaml",
        "resources:\n  - file: /etc/app/token\n    content: \"NEW-SECRET-77aa\\n\"\n    mode: \"0600\"\n    secret: true\n",
    );
    let first = s.converge(&["site.yaml"]);
    let hash = format!("{:x}", Sha256::digest(format!("{planted}\n").as_bytes()));
    let managed_record = s.read(RECORD);
    assert!(!managed_record.contains(&hash[..12]), "{managed_record}");
    assert!(managed_record.contains("hmac:"), "{managed_record}");
    s.manifest("site.yaml", "settings: {removed: remove}\nresources: []\n");
    let (plan, check) = read_only_runs(&s, &["site.yaml"]);
    let json = s.run("plan", &["site.yaml", "--format", "json"]);
    let check_json = s.run("check", &["site.yaml", "--format", "json"]);
    assert!(
        plan.stdout().contains("content hidden: secret"),
        "{}",
        plan.all()
    );
    let applied = s.converge(&["site.yaml"]);
    assert_eq!(s.read("/etc/app/token"), format!("{planted}\n"));
    let record = s.read(RECORD);
    for (what, text) in [
        ("first apply", first.all()),
        ("plan", plan.all()),
        ("check", check.all()),
        ("plan json", json.all()),
        ("check json", check_json.all()),
        ("apply", applied.all()),
        ("audit log", s.read("/var/log/reconcile/audit.jsonl")),
        ("record", record),
    ] {
        assert!(
            !text.contains(planted),
            "{what} shows the original secret:\n{text}"
        );
        assert!(
            !text.contains(&hash[..12]),
            "{what} shows the original's hash:\n{text}"
        );
    }
}

#[test]
fn plan_and_check_never_create_the_record_and_a_first_apply_does() {
    let s = Sandbox::new();
    s.manifest(
        "site.yaml",
        "resources:\n  - file: /etc/motd\n    content: \"hi\\n\"\n",
    );
    read_only_runs(&s, &["site.yaml"]);
    assert!(
        !s.path("/var/lib/reconcile").exists(),
        "plan/check made the state directory"
    );
    s.converge(&["site.yaml"]);
    let record: serde_json::Value =
        serde_json::from_str(&s.read(RECORD)).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(record["resources"][0]["id"], "file[/etc/motd]");
    assert_eq!(record["resources"][0]["existed"], false);
    // A declared removal leaves nothing to remember.
    s.manifest(
        "site.yaml",
        "resources:\n  - file: /etc/motd\n    state: absent\n",
    );
    s.converge(&["site.yaml"]);
    let record: serde_json::Value =
        serde_json::from_str(&s.read(RECORD)).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(record["resources"], serde_json::json!([]));
    s.manifest("site.yaml", "resources: []\n");
    s.run("check", &["site.yaml"]).assert_code(0);
}

#[test]
fn an_unknown_settings_removed_value_is_refused_naming_the_choices() {
    let s = Sandbox::new();
    s.manifest("site.yaml", "settings:\n  removed: purge\nresources: []\n");
    let run = s.run("validate", &["site.yaml"]);
    run.assert_code(1);
    assert!(
        run.stderr()
            .contains("`purge` is not one of report, remove"),
        "{}",
        run.all()
    );
}

#[test]
fn with_tags_resources_no_longer_declared_are_reported_but_left() {
    let s = Sandbox::new();
    s.manifest(
        "site.yaml",
        "resources:\n  - file: /etc/a\n    content: \"a\\n\"\n    tags: [a]\n  - file: /etc/b\n    content: \"b\\n\"\n",
    );
    s.converge(&["site.yaml"]);
    s.manifest(
        "site.yaml",
        "settings: {removed: remove}\nresources:\n  - file: /etc/a\n    content: \"a\\n\"\n    tags: [a]\n",
    );
    let applied = s.run("apply", &["site.yaml", "--tags", "a"]);
    applied.assert_code(0);
    assert!(
        applied.stdout().contains("--tags narrows this run"),
        "{}",
        applied.all()
    );
    assert_eq!(s.read("/etc/b"), "b\n");
    s.converge(&["site.yaml"]);
    assert!(!s.path("/etc/b").exists());
}

fn shadow_tools_or_skip(test: &str) -> bool {
    if !support::sandbox::require_root(test) {
        return false;
    }
    let ok = ["useradd", "userdel", "groupadd", "groupdel"]
        .iter()
        .all(|t| {
            ["/usr/sbin", "/usr/bin", "/sbin"]
                .iter()
                .any(|d| std::path::Path::new(d).join(t).is_file())
        });
    if !ok {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "{test}: the shadow tools are needed under CI=true"
        );
        eprintln!("skipping {test}: needs useradd/userdel");
    }
    ok
}

#[test]
fn a_user_reconcile_created_is_removed_keeping_its_home_as_the_plan_states_and_one_that_existed_is_left(
) {
    if !shadow_tools_or_skip("user removal") {
        return;
    }
    let machine_passwd = std::fs::read("/etc/passwd").ok();
    let s = Sandbox::new();
    let fixtures = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/users/etc");
    for f in ["passwd", "group", "shadow", "gshadow", "login.defs"] {
        let bytes = std::fs::read(format!("{fixtures}/{f}")).unwrap_or_else(|e| panic!("{f}: {e}"));
        s.put(&format!("/etc/{f}"), &bytes);
    }
    s.manifest(
        "site.yaml",
        "resources:\n  - user: carol\n    uid: 3200\n    create_home: true\n  - user: justin\n    shell: /bin/bash\n",
    );
    s.converge(&["site.yaml"]);
    assert!(s.path("/home/carol").is_dir());
    s.manifest("site.yaml", "settings: {removed: remove}\nresources: []\n");
    let (plan, check) = read_only_runs(&s, &["site.yaml"]);
    let out = plan.stdout();
    assert!(
        out.contains("- user[carol] (no longer declared)"),
        "{}",
        plan.all()
    );
    assert!(
        out.contains("home /home/carol is kept (remove_home: false)"),
        "{}",
        plan.all()
    );
    assert!(
        out.contains("- user[justin] (no longer declared)"),
        "{}",
        plan.all()
    );
    assert!(
        out.contains("existed before reconcile managed it"),
        "{}",
        plan.all()
    );
    check.assert_code(2);
    s.converge(&["site.yaml"]);
    let passwd = s.read("/etc/passwd");
    assert!(!passwd.lines().any(|l| l.starts_with("carol:")), "{passwd}");
    assert!(passwd.lines().any(|l| l.starts_with("justin:")), "{passwd}");
    assert!(
        s.path("/home/carol").is_dir(),
        "the home was kept, as the plan said"
    );
    assert_eq!(std::fs::read("/etc/passwd").ok(), machine_passwd);
}

#[test]
fn a_file_already_as_declared_before_the_first_apply_is_kept_when_no_longer_declared() {
    let s = Sandbox::new();
    s.put("/etc/issue", b"Welcome\n");
    std::fs::set_permissions(s.path("/etc/issue"), std::fs::Permissions::from_mode(0o644))
        .unwrap_or_else(|e| panic!("{e}"));
    s.manifest(
        "site.yaml",
        "resources:\n  - file: /etc/issue\n    content: \"Welcome\\n\"\n    mode: \"0644\"\n",
    );
    let first = s.converge(&["site.yaml"]);
    assert!(first.stdout().contains("0 changed"), "{}", first.all());
    let record: serde_json::Value =
        serde_json::from_str(&s.read(RECORD)).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(record["resources"][0]["existed"], true);
    s.manifest("site.yaml", "settings: {removed: remove}\nresources: []\n");
    let (plan, _) = read_only_runs(&s, &["site.yaml"]);
    assert!(
        plan.stdout().contains("original restored"),
        "{}",
        plan.all()
    );
    s.converge(&["site.yaml"]);
    assert_eq!(s.read("/etc/issue"), "Welcome\n");
    assert_eq!(s.mode("/etc/issue"), 0o644);
}

/// Live: on a booted test host (systemd as PID 1), a timer deleted from the manifests is
/// stopped, disabled and its file removed, and systemd no longer knows it.
#[test]
fn live_a_timer_no_longer_declared_is_stopped_disabled_and_unloaded() {
    let Some(host) = support::testhost::boot_or_skip(
        "live_a_timer_no_longer_declared_is_stopped_disabled_and_unloaded",
    ) else {
        return;
    };
    let rc = |args: &[&str]| {
        let mut argv = vec![support::testhost::RECONCILE_IN_HOST];
        argv.extend_from_slice(args);
        argv.push("/root/m");
        host.exec_timeout(&argv, std::time::Duration::from_secs(300))
    };
    let prop = |unit: &str, p: &str| {
        host.exec_ok(&["systemctl", "show", unit, "--value", "-p", p])
            .trim()
            .to_string()
    };
    let job = r#"
  - unit: rc-gone.service
    sections:
      Service: { Type: oneshot, ExecStart: /bin/true }
"#;
    let timer = r#"
  - unit: rc-gone.timer
    enabled: true
    active: true
    sections:
      Unit: { Description: rc job window }
      Timer: { OnCalendar: "Sun *-*-* 02:00:00" }
      Install: { WantedBy: timers.target }
"#;
    host.write_file(
        "/root/m/site.yaml",
        format!("resources:{job}{timer}").as_bytes(),
    );
    let apply = rc(&["apply"]);
    assert!(apply.success(), "{apply}");
    assert_eq!(prop("rc-gone.timer", "ActiveState"), "active");
    host.write_file(
        "/root/m/site.yaml",
        format!("settings: {{removed: remove}}\nresources:{job}").as_bytes(),
    );
    let check = rc(&["check"]);
    assert_eq!(check.status, 2, "{check}");
    assert!(
        check.stdout.contains("stopped, disabled, and its file"),
        "{check}"
    );
    let apply = rc(&["apply"]);
    assert!(apply.success(), "{apply}");
    assert_eq!(prop("rc-gone.timer", "ActiveState"), "inactive");
    assert_eq!(prop("rc-gone.timer", "LoadState"), "not-found");
    let gone = host.exec(&["test", "-e", "/etc/systemd/system/rc-gone.timer"]);
    assert_ne!(gone.status, 0, "the timer's file is still there");
    let again = rc(&["plan", "--detailed-exitcode"]);
    assert_eq!(again.status, 0, "plan after apply is not empty: {again}");
}

#[test]
fn a_path_declared_again_as_another_kind_keeps_its_original_and_is_not_removed() {
    let s = Sandbox::new();
    s.put("/etc/tool.conf", b"distribution default\n");
    s.manifest(
        "site.yaml",
        "settings: {removed: remove}\nresources:\n  - file: /etc/tool.conf\n    content: \"ours\\n\"\n",
    );
    s.converge(&["site.yaml"]);
    // The same path, now a symlink: not "no longer declared", so not removed.
    s.manifest(
        "site.yaml",
        "settings: {removed: remove}\nresources:\n  - symlink: /etc/tool.conf\n    target: /etc/tool.d/default.conf\n    force: true\n",
    );
    let (plan, _) = read_only_runs(&s, &["site.yaml"]);
    assert!(
        !plan.stdout().contains("no longer declared"),
        "{}",
        plan.all()
    );
    s.converge(&["site.yaml"]);
    assert!(s.path("/etc/tool.conf").is_symlink());
    let record: serde_json::Value =
        serde_json::from_str(&s.read(RECORD)).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(record["resources"].as_array().map(Vec::len), Some(1));
    assert_eq!(record["resources"][0]["id"], "symlink[/etc/tool.conf]");
    assert_eq!(record["resources"][0]["existed"], true);
    // Deleted from the manifests at last: the distribution's file comes back.
    s.manifest("site.yaml", "settings: {removed: remove}\nresources: []\n");
    s.converge(&["site.yaml"]);
    assert_eq!(s.read("/etc/tool.conf"), "distribution default\n");
}

#[test]
fn with_report_what_has_nothing_to_undo_is_forgotten_by_the_next_apply() {
    let s = Sandbox::new();
    s.manifest(
        "site.yaml",
        "resources:\n  - file: /etc/gone.conf\n    content: \"x\\n\"\n  - file: /etc/kept.conf\n    content: \"y\\n\"\n",
    );
    s.converge(&["site.yaml"]);
    std::fs::remove_file(s.path("/etc/gone.conf")).unwrap_or_else(|e| panic!("{e}"));
    s.manifest("site.yaml", "resources: []\n");
    let (plan, check) = read_only_runs(&s, &["site.yaml"]);
    let out = plan.stdout();
    assert!(
        out.contains("- file[/etc/gone.conf] (no longer declared)"),
        "{}",
        plan.all()
    );
    assert!(out.contains("already gone; forgotten"), "{}", plan.all());
    assert!(
        out.contains("- file[/etc/kept.conf] (no longer declared)"),
        "{}",
        plan.all()
    );
    assert!(
        out.contains("2 no longer declared (1 left in place, 1 undone or forgotten by apply)"),
        "{}",
        plan.all()
    );
    check.assert_code(2);
    s.run("apply", &["site.yaml"]).assert_code(0);
    let plan = s.run("plan", &["site.yaml"]);
    assert!(!plan.stdout().contains("gone.conf"), "{}", plan.all());
    assert!(
        plan.stdout()
            .contains("file[/etc/kept.conf] (no longer declared)"),
        "{}",
        plan.all()
    );
    assert_eq!(s.read("/etc/kept.conf"), "y\n");
}

#[test]
fn nothing_is_removed_in_a_run_whose_declared_resources_failed() {
    let s = Sandbox::new();
    s.manifest(
        "site.yaml",
        "resources:\n  - file: /etc/old.conf\n    content: \"old\\n\"\n",
    );
    s.converge(&["site.yaml"]);
    // The replacement fails while it is applied (the debug build's fault hook).
    s.manifest(
        "site.yaml",
        "settings: {removed: remove}\nresources:\n  - file: /etc/new.conf\n    content: \"new\\n\"\n",
    );
    let mut c = assert_cmd::Command::cargo_bin("reconcile").unwrap_or_else(|e| panic!("{e}"));
    c.current_dir(&s.manifests)
        .env("NO_COLOR", "1")
        .env("RECONCILE_FAULT_PANIC", "file[/etc/new.conf]")
        .args(["apply", "--root"])
        .arg(&s.root)
        .arg("site.yaml");
    let run = support::sandbox::Run(c.output().unwrap_or_else(|e| panic!("{e}")));
    run.assert_code(1);
    assert!(
        run.stdout().contains(
            "file[/etc/old.conf] skipped: not removed: 1 declared resource(s) did not converge"
        ),
        "{}",
        run.all()
    );
    assert_eq!(s.read("/etc/old.conf"), "old\n");
    s.run("check", &["site.yaml"]).assert_code(2);
    // Once the replacement converges, the old one goes.
    s.converge(&["site.yaml"]);
    assert!(!s.path("/etc/old.conf").exists());
}
