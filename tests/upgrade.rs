//! The `upgrade` kind on the real apt and dpkg, inside a booted test host
//! (tests/support/testhost.rs), offline: a local apt repository of tiny packages
//! (demo-a 1.0 and 1.1, demo-d 1.0 and 1.1) built by the test with `dpkg-deb` and
//! `dpkg-scanpackages`. The clock is injected with `RECONCILE_NOW` (honoured by
//! debug builds only, which the tests run), so window and soak decisions are
//! deterministic.

mod support;

use std::time::Duration;

use support::apt_repo::{build_repo, demo};
use support::testhost::{boot_or_skip, TestHost, RECONCILE_IN_HOST};

/// A booted host whose only apt source is the demo repository, with demo-a 1.0 and
/// demo-d 1.0 (held) installed.
fn host_with_demo(test: &str) -> Option<(TestHost, tempfile::TempDir)> {
    let repo = build_repo(&[
        demo("demo-a", "1.0", ""),
        demo("demo-a", "1.1", ""),
        demo("demo-d", "1.0", ""),
        demo("demo-d", "1.1", ""),
    ])?;
    let host = boot_or_skip(test)?;
    host.copy_in(&repo.path().join("repo"), "/srv/repo");
    host.sh_ok(
        "mkdir -p /root/offline-sources && \
         for f in /etc/apt/sources.list /etc/apt/sources.list.d/*; do \
           [ -e \"$f\" ] && mv \"$f\" /root/offline-sources/; done; true",
    );
    host.write_file(
        "/etc/apt/sources.list.d/demo.sources",
        b"Types: deb\nURIs: file:/srv/repo\nSuites: ./\nTrusted: yes\n",
    );
    host.sh_ok("apt-get update -q");
    host.sh_ok(
        "DEBIAN_FRONTEND=noninteractive apt-get install -y -q demo-a=1.0 demo-d=1.0 && apt-mark hold demo-d",
    );
    Some((host, repo))
}

/// Runs reconcile inside the host on /root/m, at the simulated time `now`.
fn rc(host: &TestHost, now: &str, args: &[&str]) -> support::testhost::ExecOutput {
    let env = format!("RECONCILE_NOW={now}");
    let mut argv = vec!["env", env.as_str(), RECONCILE_IN_HOST];
    argv.extend_from_slice(args);
    argv.push("/root/m");
    host.exec_timeout(&argv, Duration::from_secs(300))
}

fn put(host: &TestHost, mode: &str, guard: &str) {
    let manifest = format!(
        r#"resources:
  - upgrade: system
    packages: all
    mode: {mode}
    timezone: Europe/Berlin
    windows:
      - {{ days: [sun], from: "02:00", to: "04:00" }}
    soak: 7d
    guards:
      command: {guard}
"#
    );
    host.sh_ok("rm -rf /root/m && mkdir -p /root/m");
    host.write_file("/root/m/site.yaml", manifest.as_bytes());
}

fn version(host: &TestHost, name: &str) -> String {
    host.sh(&format!(
        "dpkg-query -W -f '${{db:Status-Abbrev}}${{Version}}' {name} 2>/dev/null"
    ))
    .stdout
    .trim()
    .to_string()
}

fn transactions(host: &TestHost) -> usize {
    host.sh("cat /var/log/apt/history.log 2>/dev/null")
        .stdout
        .lines()
        .filter(|l| l.starts_with("Start-Date:"))
        .count()
}

/// `plan --detailed-exitcode` at `now` shows no change.
fn in_sync(host: &TestHost, now: &str) -> String {
    let p = rc(host, now, &["plan", "--detailed-exitcode"]);
    assert_eq!(p.status, 0, "plan shows changes: {p}");
    p.to_string()
}

/// What apt, dpkg and reconcile keep on the host: paths, sizes, times, modes.
fn snapshot(host: &TestHost) -> Vec<String> {
    host.sh_ok(
        "find /etc/apt /var/lib/dpkg /var/lib/apt /var/cache/apt /var/log/apt /var/lib/reconcile \
         -xdev -printf '%p %s %T@ %m\\n' 2>/dev/null | sort; true",
    )
    .lines()
    .map(str::to_string)
    .collect()
}

const SEEN: &str = "/var/lib/reconcile/upgrade/system.json";
/// Wednesday 2026-12-02 13:00 in Berlin: outside the window.
const WEDNESDAY: &str = "2026-12-02T12:00:00Z";
/// Sunday 2026-12-06 02:30 in Berlin: inside, 3.5 days after Wednesday.
const SUNDAY: &str = "2026-12-06T01:30:00Z";
/// Sunday 2026-12-13 02:30 in Berlin: inside, 10.5 days after Wednesday.
const NEXT_SUNDAY: &str = "2026-12-13T01:30:00Z";

#[test]
fn an_upgrade_waits_for_its_window_and_soak_is_blocked_by_guards_and_then_upgrades_once() {
    let Some((host, _repo)) = host_with_demo(
        "an_upgrade_waits_for_its_window_and_soak_is_blocked_by_guards_and_then_upgrades_once",
    ) else {
        return;
    };
    put(&host, "production", r#"{ argv: ["/bin/true"] }"#);
    let n = transactions(&host);

    // Outside the window: deferred with the next window; the first sight of demo-a
    // 1.1 is the only change, and plan and check write nothing.
    let before = snapshot(&host);
    let plan = rc(&host, WEDNESDAY, &["plan"]);
    let check = rc(&host, WEDNESDAY, &["check"]);
    assert_eq!(check.status, 0, "pending upgrades are no drift: {check}");
    assert_eq!(before, snapshot(&host), "plan or check changed the host");
    assert!(plan.success(), "{plan}");
    let text = plan.to_string();
    assert!(
        text.contains("outside all windows; next: Sun 2026-12-06 02:00 Europe/Berlin"),
        "{text}"
    );
    assert!(text.contains("demo-a 1.1 first seen"), "{text}");
    assert!(text.contains("demo-d 1.0 → 1.1: held"), "{text}");
    assert!(host.read_file(SEEN).is_none(), "plan wrote the record");
    let apply = rc(&host, WEDNESDAY, &["apply"]);
    assert!(apply.success(), "{apply}");
    assert_eq!(version(&host, "demo-a"), "ii 1.0");
    assert_eq!(transactions(&host), n, "{apply}");
    assert!(host.read_file(SEEN).is_some());
    in_sync(&host, WEDNESDAY);

    // Inside the window, but soaked for 3.5 days of 7: nothing, and it says when.
    let text = in_sync(&host, SUNDAY);
    assert!(text.contains("inside window sun 02:00-04:00"), "{text}");
    assert!(
        text.contains("seen 3 d 13 h ago") && text.contains("soaking"),
        "{text}"
    );
    let apply = rc(&host, SUNDAY, &["apply"]);
    assert!(apply.success(), "{apply}");
    assert_eq!(version(&host, "demo-a"), "ii 1.0");

    // Soak met, inside, a failing guard: blocked, exit 0, nothing installed.
    put(&host, "production", r#"{ argv: ["/bin/false"] }"#);
    let text = in_sync(&host, NEXT_SUNDAY);
    assert!(text.contains("guard command blocks: exit code 1"), "{text}");
    let apply = rc(&host, NEXT_SUNDAY, &["apply"]);
    assert!(apply.success(), "{apply}");
    assert_eq!(version(&host, "demo-a"), "ii 1.0");

    // A guard that cannot decide (it times out): blocks in production...
    let sleepy = r#"{ argv: ["/bin/sleep", "30"], timeout: 1s }"#;
    put(&host, "production", sleepy);
    let text = in_sync(&host, NEXT_SUNDAY);
    assert!(
        text.contains("cannot decide") && text.contains("fail closed in production mode"),
        "{text}"
    );
    let apply = rc(&host, NEXT_SUNDAY, &["apply"]);
    assert!(apply.success(), "{apply}");
    assert_eq!(version(&host, "demo-a"), "ii 1.0");
    assert_eq!(transactions(&host), n);

    // ...and only warns in development: one transaction upgrades demo-a, the held
    // demo-d is left alone, and a plan afterwards is empty.
    put(&host, "development", sleepy);
    let before = snapshot(&host);
    let plan = rc(&host, NEXT_SUNDAY, &["plan", "--detailed-exitcode"]);
    assert_eq!(before, snapshot(&host), "plan changed the host");
    assert_eq!(plan.status, 2, "{plan}");
    assert!(plan.to_string().contains("1.0 → 1.1"), "{plan}");
    let apply = rc(&host, NEXT_SUNDAY, &["apply"]);
    assert!(apply.success(), "{apply}");
    assert_eq!(version(&host, "demo-a"), "ii 1.1");
    assert_eq!(version(&host, "demo-d"), "hi 1.0");
    assert_eq!(transactions(&host), n + 1, "one apt transaction: {apply}");
    in_sync(&host, NEXT_SUNDAY);

    // Every decision of the upgrade is in the audit trail.
    let trail = host.sh_ok("cat /var/log/reconcile/audit.jsonl");
    for what in ["upgrade-window", "upgrade-guard", "upgrade-transaction"] {
        assert!(
            trail
                .lines()
                .any(|l| l.contains("decision") && l.contains(what)),
            "{what} missing: {trail}"
        );
    }
    assert!(
        trail.contains("only a warning in development mode"),
        "{trail}"
    );
}

/// Runs this build's reconcile on this machine (no host needed: `validate` reads
/// only the manifests).
fn validate(manifest: &str) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    std::fs::write(dir.path().join("site.yaml"), manifest).unwrap_or_else(|e| panic!("{e}"));
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_reconcile"))
        .arg("validate")
        .arg(dir.path())
        .output()
        .unwrap_or_else(|e| panic!("reconcile: {e}"));
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn bad_windows_zones_thresholds_and_timeouts_are_refused_with_their_place() {
    let (ok, text) = validate(
        r#"resources:
  - upgrade: system
    timezone: Mars/Olympus
    windows:
      - { days: [sun, funday], from: "04:00", to: "02:00" }
      - { days: [mon], from: "25:00", to: "26:00", only: bugfixes }
    soak: a week
    mode: yolo
    guards:
      disk: { path: /data, critical: 101, timeout: 11m }
      command: { argv: ["sh", "-c", "true"] }
      postgres: { max_active: 5 }
"#,
    );
    assert!(!ok, "{text}");
    for (place, what) in [
        ("site.yaml:3:", "not a known IANA time zone"),
        ("site.yaml:5:", "`funday` is not a weekday"),
        ("site.yaml:5:", "`to` must be after `from` on the same day"),
        ("site.yaml:6:", "`25:00` is not a time"),
        ("site.yaml:6:", "use `only: security`"),
        ("site.yaml:7:", "`a week` is not a duration"),
        ("site.yaml:8:", "`yolo` is not a mode"),
        ("site.yaml:10:", "101 is not a percentage"),
        ("site.yaml:10:", "over the limit of 10m"),
        ("site.yaml:11:", "absolute program path"),
        (
            "site.yaml:12:",
            "`postgres` is not a guard this version knows",
        ),
    ] {
        assert!(
            text.lines().any(|l| l.contains(place) && l.contains(what)),
            "{place} {what}: {text}"
        );
    }
    let (ok, text) = validate(
        r#"resources:
  - upgrade: system
    windows:
      - { days: [sun], from: "02:00", to: "04:00" }
    guards:
      disk: { path: /data, warn: 96, critical: 95 }
"#,
    );
    assert!(
        !ok && text.contains("warn (96) is above critical (95)"),
        "{text}"
    );
}
