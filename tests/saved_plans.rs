//! Saved plans as change control: they apply from any working directory, `show` prints
//! them, and their hash is printed when saved and recorded by `apply PLANFILE`.

mod support;

use std::path::Path;

use support::sandbox::{Run, Sandbox};

fn site(s: &Sandbox) {
    s.manifest(
        "site.yaml",
        r#"
vars:
  level: debug
environments:
  production:
    level: error
resources:
  - file: /etc/app.conf
    content: "level = {{ level }}\n"
  - file: /etc/motd
    template: motd.j2
"#,
    );
    s.manifest("templates/motd.j2", "welcome ({{ level }})\n");
}

/// Runs the binary from `cwd` (not the manifests folder).
fn run_in(cwd: &Path, args: &[&str]) -> Run {
    let mut c = assert_cmd::Command::cargo_bin("reconcile").unwrap_or_else(|e| panic!("{e}"));
    c.current_dir(cwd).env("NO_COLOR", "1").args(args);
    Run(c.output().unwrap_or_else(|e| panic!("{e}")))
}

fn saved_hash(run: &Run) -> String {
    let text = run.all();
    let start = text
        .find("(sha256:")
        .unwrap_or_else(|| panic!("no hash printed:\n{text}"));
    text[start + 1..]
        .split(')')
        .next()
        .unwrap_or_default()
        .to_string()
}

#[test]
fn a_saved_plan_applies_from_another_working_directory_and_its_hash_is_audited() {
    let s = Sandbox::new();
    site(&s);
    let elsewhere = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let plan_file = elsewhere.path().join("change-1234.plan");
    let pf = plan_file.display().to_string();
    let before = s.snapshot();
    let made = s.run("plan", &["site.yaml", "--env", "production", "--out", &pf]);
    made.assert_code(0);
    assert_eq!(before, s.snapshot(), "plan --out wrote under the root");
    let hash = saved_hash(&made);
    assert!(hash.starts_with("sha256:") && hash.len() == 71, "{hash}");

    let root = s.root.display().to_string();
    let applied = run_in(elsewhere.path(), &["apply", "--root", &root, &pf]);
    applied.assert_code(0);
    assert_eq!(s.read("/etc/app.conf"), "level = error\n");
    assert_eq!(s.read("/etc/motd"), "welcome (error)\n");
    // Plan again (the host now says production): nothing left to do.
    let again = s.run("plan", &["--detailed-exitcode", "site.yaml"]);
    again.assert_code(0);
    assert!(again.stdout().contains("No changes."), "{}", again.all());

    let log = s.read("/var/log/reconcile/audit.jsonl");
    let start: serde_json::Value = log
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|r| r["event"] == "run_start")
        .unwrap_or_default();
    assert_eq!(start["data"]["command"], "apply-plan");
    assert_eq!(start["data"]["plan_hash"], hash.as_str());
}

#[test]
fn a_saved_plan_whose_directory_is_gone_is_refused_with_a_clear_message() {
    let s = Sandbox::new();
    site(&s);
    let elsewhere = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let pf = elsewhere.path().join("p.plan").display().to_string();
    s.run("plan", &["site.yaml", "--env", "production", "--out", &pf])
        .assert_code(0);
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&pf).unwrap_or_else(|e| panic!("{e}")))
            .unwrap_or_else(|e| panic!("{e}"));
    v["base"] = serde_json::json!("/nonexistent/checkout");
    std::fs::write(&pf, v.to_string()).unwrap_or_else(|e| panic!("{e}"));
    let before = s.snapshot();
    let root = s.root.display().to_string();
    let run = run_in(elsewhere.path(), &["apply", "--root", &root, &pf]);
    run.assert_code(1);
    assert!(
        run.stderr()
            .contains("the plan was made in /nonexistent/checkout, which does not exist here"),
        "{}",
        run.all()
    );
    assert!(!run.all().contains("no such environment"), "{}", run.all());
    assert_eq!(before, s.snapshot());

    // A manifest deleted since: named, and nothing else claimed.
    let pf2 = elsewhere.path().join("q.plan").display().to_string();
    s.run("plan", &["site.yaml", "--out", &pf2]).assert_code(0);
    std::fs::remove_file(s.manifests.join("site.yaml")).unwrap_or_else(|e| panic!("{e}"));
    let run = run_in(elsewhere.path(), &["apply", "--root", &root, &pf2]);
    run.assert_code(1);
    assert!(
        run.stderr().contains("the plan's manifests are gone")
            && run.stderr().contains("site.yaml does not exist"),
        "{}",
        run.all()
    );
    assert!(!run.all().contains("no such environment"), "{}", run.all());
    assert_eq!(before, s.snapshot());
}

#[test]
fn show_prints_a_saved_plan_as_plan_does_with_its_hash() {
    let s = Sandbox::new();
    site(&s);
    let elsewhere = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let pf = elsewhere.path().join("p.plan").display().to_string();
    let made = s.run("plan", &["site.yaml", "--out", &pf]);
    made.assert_code(0);
    let hash = saved_hash(&made);
    let shown = run_in(elsewhere.path(), &["show", &pf]);
    shown.assert_code(0);
    let text = shown.stdout();
    assert!(text.contains(&hash), "{}", shown.all());
    assert!(text.contains("+ file[/etc/app.conf]"), "{}", shown.all());
    assert!(
        text.contains("Plan: 2 to add, 0 to change, 0 to remove."),
        "{}",
        shown.all()
    );
    assert!(
        text.contains("manifests: site.yaml (relative to "),
        "{}",
        shown.all()
    );
    // The body is what `plan` printed.
    let body = made
        .stdout()
        .lines()
        .filter(|l| !l.starts_with("Saved the plan"))
        .collect::<Vec<_>>()
        .join("\n");
    assert!(text.contains(&body), "{text}\n---\n{body}");
    let json = run_in(elsewhere.path(), &["show", &pf, "--format", "json"]);
    json.assert_code(0);
    let shown: serde_json::Value =
        serde_json::from_str(&json.stdout()).unwrap_or_else(|e| panic!("{e}"));
    let saved: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&pf).unwrap_or_else(|e| panic!("{e}")))
            .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(shown, saved);
    let not_a_plan = run_in(
        elsewhere.path(),
        &["show", &s.manifests.join("site.yaml").display().to_string()],
    );
    not_a_plan.assert_code(1);
    assert!(
        not_a_plan.stderr().contains("is not a saved plan"),
        "{}",
        not_a_plan.all()
    );
}

#[test]
fn a_saved_plan_is_stale_once_another_apply_changed_the_hosts_environment() {
    let s = Sandbox::new();
    site(&s);
    let elsewhere = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let pf = elsewhere.path().join("p.plan").display().to_string();
    s.run("plan", &["site.yaml", "--out", &pf]).assert_code(0);
    s.converge(&["site.yaml", "--env", "production"]);
    let before = s.snapshot();
    let run = s.run("apply", &[&pf]);
    run.assert_code(1);
    assert!(
        run.stderr().contains("stale plan")
            && run.stderr().contains("recorded as environment production"),
        "{}",
        run.all()
    );
    assert_eq!(before, s.snapshot());
}
