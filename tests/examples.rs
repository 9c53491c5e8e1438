//! The bundled examples work as the README says: converge, then nothing to change.

mod support;

use std::os::unix::fs::MetadataExt;
use std::process::Command;

use support::sandbox::Sandbox;

fn example(name: &str) -> String {
    format!("{}/examples/{name}", env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn quickstart_converges() {
    let s = Sandbox::new();
    let path = example("quickstart");
    s.converge(&[&path]);
    assert!(s
        .read("/etc/intelluxe/app.conf")
        .contains("log_level = info"));
    assert_eq!(s.mode("/etc/intelluxe/db-password"), 0o600);
    s.converge(&[&path, "--env", "development"]);
    assert!(s
        .read("/etc/intelluxe/app.conf")
        .contains("log_level = debug"));
}

#[test]
fn hardening_runbook_converges_on_a_development_host() {
    if !support::sandbox::require_root("hardening_runbook_converges_on_a_development_host") {
        return;
    }
    for tool in ["useradd", "systemd-analyze", "logrotate"] {
        if !reconcile::host::exec::tool_exists(tool) {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "CI must install {tool}"
            );
            eprintln!("skipping: {tool} is not installed");
            return;
        }
    }
    let s = Sandbox::new();
    let prepared = Command::new("bash")
        .arg(example("hardening/prepare.sh"))
        .arg(&s.root)
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(prepared.status.success(), "{prepared:?}");
    let path = example("hardening");
    // The timer is declared running, not only enabled: on a live host it is armed at
    // once (offline, where nothing runs, the plan says so rather than staying silent).
    let plan = s.run("plan", &["--format", "json", &path]);
    plan.assert_code(0);
    let plan: serde_json::Value =
        serde_json::from_str(&plan.stdout()).unwrap_or_else(|e| panic!("{e}"));
    let timer = plan["changes"]
        .as_array()
        .and_then(|c| {
            c.iter()
                .find(|c| c["id"] == "unit[intelluxe-health.timer]")
                .cloned()
        })
        .unwrap_or_else(|| panic!("no timer in {plan}"));
    assert!(
        timer["warnings"]
            .as_array()
            .is_some_and(|w| w.iter().any(|w| w
                .as_str()
                .is_some_and(|w| w.starts_with("active: true is not manageable offline")))),
        "{timer}"
    );
    let run = s.converge(&[&path]);
    assert!(
        run.stdout()
            .contains("Apply: 15 changed, 0 unchanged, 0 failed, 0 skipped."),
        "{}",
        run.all()
    );
    // The development symlinks are real copies now, owned by the service account.
    let scripts = std::fs::symlink_metadata(s.path("/opt/intelluxe/scripts"))
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(scripts.is_dir());
    let backup = std::fs::metadata(s.path("/opt/intelluxe/scripts/backup.sh"))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        (backup.uid(), backup.gid(), backup.mode() & 0o7777),
        (2000, 2001, 0o750)
    );
    assert_eq!(s.mode("/opt/intelluxe/stack/data"), 0o700);
    assert!(s
        .read("/etc/passwd")
        .contains("intelluxe-service:x:2000:2001:"));
    // An absolute link, as systemctl makes it: look at the link, not through it.
    let wants = s.path("/etc/systemd/system/timers.target.wants/intelluxe-health.timer");
    assert!(
        std::fs::symlink_metadata(&wants).is_ok(),
        "timer not enabled"
    );
    s.run("audit", &["verify"]).assert_code(0);
}
