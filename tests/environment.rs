//! The environment belongs to the host: the last successful apply records it, later runs
//! without `--env` use it, and a different `--env` needs `--switch-env`.

mod support;

use support::sandbox::Sandbox;

fn site(s: &Sandbox) {
    s.manifest(
        "site.yaml",
        r#"
vars:
  level: debug
environments:
  production:
    level: error
  development: {}
resources:
  - file: /etc/app.conf
    content: "level = {{ level }}\n"
"#,
    );
}

fn audit_lines(s: &Sandbox) -> Vec<serde_json::Value> {
    s.read("/var/log/reconcile/audit.jsonl")
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

#[test]
fn check_without_env_uses_the_environment_the_last_apply_recorded_and_says_so() {
    let s = Sandbox::new();
    site(&s);
    s.converge(&["site.yaml", "--env", "production"]);
    assert_eq!(s.read("/etc/app.conf"), "level = error\n");
    let before = s.snapshot();
    let check = s.run("check", &["site.yaml"]);
    check.assert_code(0);
    assert!(
        check
            .stdout()
            .contains("Environment: production (recorded on"),
        "{}",
        check.all()
    );
    let json = s.run("check", &["site.yaml", "--format", "json"]);
    json.assert_code(0);
    let v: serde_json::Value =
        serde_json::from_str(&json.stdout()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(v["environment"], "production");
    assert_eq!(v["environment_source"], "recorded");
    let plan = s.run("plan", &["site.yaml", "--format", "json"]);
    let v: serde_json::Value =
        serde_json::from_str(&plan.stdout()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(v["environment"], "production");
    assert_eq!(v["summary"]["change"], 0);
    // An apply without --env keeps production rather than downgrading it.
    s.converge(&["site.yaml"]);
    assert_eq!(s.read("/etc/app.conf"), "level = error\n");
    assert_eq!(before, s.snapshot());
    let start = audit_lines(&s)
        .into_iter()
        .rfind(|r| r["event"] == "run_start")
        .unwrap_or_default();
    assert_eq!(start["data"]["environment"], "production");
    assert_eq!(start["data"]["environment_source"], "recorded");
}

#[test]
fn a_different_env_is_refused_without_switch_env_and_nothing_changes() {
    let s = Sandbox::new();
    site(&s);
    s.converge(&["site.yaml", "--env", "production"]);
    let before = s.snapshot();
    for cmd in ["plan", "check", "apply"] {
        let run = s.run(cmd, &["site.yaml", "--env", "development"]);
        run.assert_code(1);
        assert!(
            run.stderr()
                .contains("was last applied with --env production")
                && run.stderr().contains("--switch-env"),
            "{cmd}: {}",
            run.all()
        );
    }
    assert_eq!(before, s.snapshot());
    assert_eq!(s.read("/etc/app.conf"), "level = error\n");
}

#[test]
fn switch_env_is_shown_in_the_plan_and_recorded_in_the_audit_trail() {
    let s = Sandbox::new();
    site(&s);
    s.converge(&["site.yaml", "--env", "production"]);
    let args = ["site.yaml", "--env", "development", "--switch-env"];
    let plan = s.run("plan", &args);
    plan.assert_code(0);
    assert!(
        plan.stdout()
            .contains("Environment: development, switching from production (--switch-env)"),
        "{}",
        plan.all()
    );
    let json = s.run("plan", &[&args[..], &["--format", "json"]].concat());
    let v: serde_json::Value =
        serde_json::from_str(&json.stdout()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(v["switch_env_from"], "production");
    s.converge(&args);
    assert_eq!(s.read("/etc/app.conf"), "level = debug\n");
    let start = audit_lines(&s)
        .into_iter()
        .rfind(|r| r["event"] == "run_start")
        .unwrap_or_default();
    assert_eq!(start["data"]["environment"], "development");
    assert_eq!(start["data"]["switch_env_from"], "production");
    // Development is now the host's.
    let check = s.run("check", &["site.yaml"]);
    check.assert_code(0);
    assert!(
        check
            .stdout()
            .contains("Environment: development (recorded"),
        "{}",
        check.all()
    );
    s.run("check", &["site.yaml", "--env", "production"])
        .assert_code(1);
}

#[test]
fn switch_env_without_env_is_a_usage_error() {
    let s = Sandbox::new();
    site(&s);
    let run = s.run("plan", &["site.yaml", "--switch-env"]);
    run.assert_code(1);
    assert!(run.stderr().contains("--env"), "{}", run.all());
}

#[test]
fn a_failed_apply_does_not_record_its_environment() {
    let s = Sandbox::new();
    site(&s);
    s.converge(&["site.yaml", "--env", "production"]);
    // Development with a resource that fails: the host stays production.
    s.put("/srv/blocker", b"a file where a directory must go");
    s.manifest(
        "site.yaml",
        &format!(
            "{}  - file: /srv/blocker/x\n    content: \"x\\n\"\n",
            std::fs::read_to_string(s.manifests.join("site.yaml")).unwrap_or_default()
        ),
    );
    let run = s.run(
        "apply",
        &["site.yaml", "--env", "development", "--switch-env"],
    );
    assert_ne!(run.code(), 0, "{}", run.all());
    let record: serde_json::Value =
        serde_json::from_str(&s.read("/var/lib/reconcile/managed.json"))
            .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(record["environment"], "production");
}
