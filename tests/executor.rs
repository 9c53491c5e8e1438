//! The executor's own guarantees, through the binary: a resource that panics while
//! being applied fails itself, skips its dependents, and the run ends and releases
//! the lock (the debug build's `RECONCILE_FAULT_PANIC` hook injects the panic).

mod support;

use std::time::{Duration, Instant};

use support::sandbox::{Run, Sandbox};

fn apply_with_panic(s: &Sandbox, id: &str) -> Run {
    let mut c =
        assert_cmd::Command::cargo_bin("reconcile").unwrap_or_else(|e| panic!("binary: {e}"));
    c.current_dir(&s.manifests)
        .env("NO_COLOR", "1")
        .env("RECONCILE_FAULT_PANIC", id)
        .timeout(Duration::from_secs(60))
        .args(["apply", "--root"])
        .arg(&s.root)
        .args(["-j", "2", "site.yaml"]);
    Run(c.output().unwrap_or_else(|e| panic!("run: {e}")))
}

#[test]
fn a_panicking_resource_fails_alone_and_the_run_ends_with_exit_1() {
    let s = Sandbox::new();
    s.manifest(
        "site.yaml",
        "resources:\n  - directory: /srv/app\n  - file: /srv/app/a.conf\n    content: \"a\\n\"\n  - file: /srv/other.conf\n    content: \"b\\n\"\n",
    );
    let started = Instant::now();
    let run = apply_with_panic(&s, "directory[/srv/app]");
    assert!(started.elapsed() < Duration::from_secs(30), "{}", run.all());
    assert_eq!(run.code(), 1, "{}", run.all());
    let all = run.all();
    assert!(all.contains("internal error: reconcile panicked"), "{all}");
    assert!(
        all.contains("injected fault in directory[/srv/app]"),
        "{all}"
    );
    // Its dependent is skipped; an independent resource still converges.
    assert!(!s.path("/srv/app/a.conf").exists());
    assert_eq!(s.read("/srv/other.conf"), "b\n");
    // The failure is in the audit trail, and the lock was released: a normal apply
    // takes it and converges.
    let trail = s.run("audit", &["show"]);
    assert!(
        trail.all().contains("directory[/srv/app]"),
        "{}",
        trail.all()
    );
    s.converge(&["site.yaml"]);
    assert_eq!(s.read("/srv/app/a.conf"), "a\n");
}

#[test]
fn command_line_mistakes_exit_1_never_the_drift_code_2() {
    let s = Sandbox::new();
    s.manifest("site.yaml", "resources:\n  - directory: /srv\n");
    for args in [
        vec!["--envv", "production", "site.yaml"],
        vec!["--format", "yaml", "site.yaml"],
        vec!["--no-such-flag"],
    ] {
        let run = s.run("check", &args);
        assert_eq!(run.code(), 1, "check {args:?}: {}", run.all());
    }
    let run = s.run("chek", &[]);
    assert_eq!(run.code(), 1, "{}", run.all());
    let help = s.run("check", &["--help"]);
    assert_eq!(help.code(), 0, "{}", help.all());
}

#[test]
fn each_command_has_the_man_page_the_tools_page_refers_to() {
    let man = |args: &[&str]| {
        let mut c =
            assert_cmd::Command::cargo_bin("reconcile").unwrap_or_else(|e| panic!("binary: {e}"));
        Run(c
            .arg("man")
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("run: {e}")))
    };
    let page = man(&["plan"]);
    assert_eq!(page.code(), 0, "{}", page.all());
    assert!(
        page.stdout().contains(".TH reconcile-plan 1"),
        "{}",
        page.all()
    );
    assert!(man(&[]).stdout().contains("reconcile\\-plan(1)"));
    let unknown = man(&["nope"]);
    assert_eq!(unknown.code(), 1, "{}", unknown.all());
    assert!(
        unknown.all().contains("pages exist for: plan"),
        "{}",
        unknown.all()
    );
}
