//! The `package` and `apt_source` kinds on the real apt and dpkg, inside booted test
//! hosts (tests/support/testhost.rs), offline: the test builds a local apt repository
//! of tiny packages with `dpkg-deb --build` and `dpkg-scanpackages` on this machine,
//! copies it into the host and points an `apt_source` resource at it.

mod support;

use std::path::Path;
use std::time::Duration;

use support::apt_repo::{build_repo, demo, Demo};
use support::sandbox::Sandbox;
use support::testhost::{boot_or_skip, TestHost, RECONCILE_IN_HOST};

/// The repository: demo-a 1.0 and 1.1, demo-b depending on demo-a, demo-c, demo-d 1.0
/// and 1.1, demo-slow (its preinst sleeps, so an apt-get installing it holds dpkg's
/// frontend lock for a while), demo-broken (its postinst fails: half-configured).
fn demos() -> Vec<Demo> {
    vec![
        demo("demo-a", "1.0", ""),
        demo("demo-a", "1.1", ""),
        demo("demo-b", "1.0", "demo-a"),
        demo("demo-c", "1.0", ""),
        demo("demo-d", "1.0", ""),
        demo("demo-d", "1.1", ""),
        Demo {
            script: Some(("preinst", "#!/bin/sh\nsleep 12\n")),
            ..demo("demo-slow", "1.0", "")
        },
        Demo {
            script: Some((
                "postinst",
                "#!/bin/sh\necho demo-broken fails >&2\nexit 1\n",
            )),
            ..demo("demo-broken", "1.0", "")
        },
    ]
}

/// A booted host holding the demo repository at /srv/repo, with no other apt source
/// (the image's Debian mirror is unreachable from a test host).
fn host_with_repo(test: &str) -> Option<(TestHost, tempfile::TempDir)> {
    let repo = build_repo(&demos())?;
    let host = boot_or_skip(test)?;
    host.copy_in(&repo.path().join("repo"), "/srv/repo");
    host.sh_ok(
        "mkdir -p /root/offline-sources && \
         for f in /etc/apt/sources.list /etc/apt/sources.list.d/*; do \
           [ -e \"$f\" ] && mv \"$f\" /root/offline-sources/; done; true",
    );
    Some((host, repo))
}

/// Runs reconcile inside the host on /root/m.
fn rc(host: &TestHost, args: &[&str]) -> support::testhost::ExecOutput {
    let mut argv = vec![RECONCILE_IN_HOST];
    argv.extend_from_slice(args);
    argv.push("/root/m");
    host.exec_timeout(&argv, Duration::from_secs(300))
}

fn put(host: &TestHost, manifest: &str) {
    host.sh_ok("rm -rf /root/m && mkdir -p /root/m");
    host.write_file("/root/m/site.yaml", manifest.as_bytes());
}

/// Re-records the apt and dpkg fixtures of the parsers in src/host/parse/ from the
/// real tools: `cargo test --test packages record_apt_fixtures -- --ignored`.
#[test]
#[ignore]
fn record_apt_fixtures() {
    let Some((host, _repo)) = host_with_repo("record_apt_fixtures") else {
        return;
    };
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/parse/apt");
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
    let save = |name: &str, text: &str| {
        std::fs::write(dir.join(name), text).unwrap_or_else(|e| panic!("write {name}: {e}"));
    };
    host.write_file(
        "/etc/apt/sources.list.d/demo.sources",
        b"Types: deb\nURIs: file:/srv/repo\nSuites: ./\nTrusted: yes\n",
    );
    host.sh_ok("apt-get update -q");
    host.sh_ok("DEBIAN_FRONTEND=noninteractive apt-get install -y -q demo-a=1.0 demo-c demo-d=1.0");
    host.sh_ok("apt-mark hold demo-d");
    // demo-c removed but not purged: config-files.
    host.sh_ok("apt-get remove -y -q demo-c");
    // demo-broken: its postinst fails, it stays half-configured.
    let _ = host.sh("DEBIAN_FRONTEND=noninteractive apt-get install -y -q demo-broken");
    let both = |script: &str| {
        let out = host.sh(script);
        format!("{}{}", out.stdout, out.stderr)
    };
    save(
        "policy.txt",
        &host.exec_ok(&[
            "apt-cache",
            "policy",
            "demo-a",
            "demo-b",
            "demo-c",
            "demo-d",
            "no-such-package",
        ]),
    );
    save(
        "policy-unknown.txt",
        &both("apt-cache policy no-such-package 2>&1"),
    );
    save(
        "sim-install.txt",
        &host.exec_ok(&[
            "apt-get",
            "-s",
            "-o",
            "Dpkg::Options::=--force-confold",
            "install",
            "demo-b",
            "demo-d=1.1",
            "--allow-change-held-packages",
        ]),
    );
    save(
        "sim-remove.txt",
        &both("apt-get -s install demo-a- demo-d=1.0 2>&1"),
    );
    save(
        "sim-unknown.txt",
        &both("apt-get -s install no-such-package 2>&1"),
    );
    save(
        "sim-bad-version.txt",
        &both("apt-get -s install demo-a=9.9 2>&1"),
    );
    save(
        "sim-interrupted.txt",
        &both("apt-get -s install demo-b 2>&1"),
    );
    // Half-installed: a removal whose postrm fails leaves the package half-installed.
    host.write_file("/var/lib/dpkg/info/demo-a.postrm", b"#!/bin/sh\nexit 1\n");
    host.exec_ok(&["chmod", "755", "/var/lib/dpkg/info/demo-a.postrm"]);
    let _ = host.sh("dpkg --remove demo-a");
    save(
        "status",
        &String::from_utf8_lossy(&host.read_file("/var/lib/dpkg/status").unwrap_or_default()),
    );
    save(
        "demo-d.list",
        &String::from_utf8_lossy(
            &host
                .read_file("/var/lib/dpkg/info/demo-d.list")
                .unwrap_or_default(),
        ),
    );
    save(
        "sim-purge-mixed.txt",
        &both("apt-get -s remove demo-d demo-c_ demo-b+ 2>&1; echo ===; apt-get -s install demo-d- demo-c_ 2>&1; echo ===; apt-get -s purge demo-c 2>&1"),
    );
    let lock = host.sh("dpkg --configure -a 2>&1; apt-get -s install demo-b 2>&1");
    eprintln!("{lock}");
}

/// The demo repository as a plain sources file and fresh lists (the `apt_source`
/// kind has its own test).
fn point_apt_at_repo(host: &TestHost) {
    host.write_file(
        "/etc/apt/sources.list.d/demo.sources",
        b"Types: deb\nURIs: file:/srv/repo\nSuites: ./\nTrusted: yes\n",
    );
    host.sh_ok("apt-get update -q");
}

/// `dpkg-query`'s status and version of a package ("" when dpkg knows nothing).
fn dpkg_state(host: &TestHost, name: &str) -> String {
    host.sh(&format!(
        "dpkg-query -W -f '${{db:Status-Abbrev}}${{Version}}' {name} 2>/dev/null"
    ))
    .stdout
    .trim()
    .to_string()
}

/// How many apt transactions the history log records.
fn transactions(host: &TestHost) -> usize {
    host.sh("cat /var/log/apt/history.log 2>/dev/null")
        .stdout
        .lines()
        .filter(|l| l.starts_with("Start-Date:"))
        .count()
}

fn converged(host: &TestHost) {
    let again = rc(host, &["plan", "--detailed-exitcode"]);
    assert_eq!(again.status, 0, "plan after apply is not empty: {again}");
}

#[test]
fn packages_install_pin_hold_remove_and_purge_each_in_one_transaction() {
    let Some((host, _repo)) =
        host_with_repo("packages_install_pin_hold_remove_and_purge_each_in_one_transaction")
    else {
        return;
    };
    point_apt_at_repo(&host);

    // Three packages in one resource: one transaction, one dpkg run.
    put(&host, "resources:\n  - package: [demo-a, demo-b, demo-c]\n");
    let before = snapshot(&host);
    let plan = rc(&host, &["plan"]);
    assert!(plan.success(), "{plan}");
    eprintln!("{plan}");
    assert!(plan.stdout.contains("demo-a"), "{plan}");
    assert!(plan.stdout.contains("1.1"), "{plan}");
    let check = rc(&host, &["check"]);
    assert_eq!(check.status, 2, "{check}");
    unchanged(&before, &snapshot(&host), "plan and check");
    let n = transactions(&host);
    let apply = rc(&host, &["apply"]);
    assert!(apply.success(), "{apply}");
    assert_eq!(transactions(&host), n + 1, "one apt transaction: {apply}");
    let trail = host.sh_ok("cat /var/log/reconcile/audit.jsonl");
    assert!(
        trail
            .lines()
            .any(|l| l.contains("apt-transaction") && l.contains("demo-b=1.0")),
        "{trail}"
    );
    assert_eq!(dpkg_state(&host, "demo-a"), "ii 1.1");
    assert_eq!(dpkg_state(&host, "demo-b"), "ii 1.0");
    assert_eq!(dpkg_state(&host, "demo-c"), "ii 1.0");
    converged(&host);

    // A downgrade, a removal and a held install: still one transaction.
    put(
        &host,
        r#"resources:
  - package: demo-a
    version: "1.0"
  - package: demo-b
  - package: demo-c
    state: absent
  - package: demo-d
    version: "1.0"
    hold: true
"#,
    );
    let plan = rc(&host, &["plan"]);
    eprintln!("{plan}");
    assert!(plan.stdout.contains("1.1 → 1.0"), "{plan}");
    let n = transactions(&host);
    let apply = rc(&host, &["apply"]);
    assert!(apply.success(), "{apply}");
    assert_eq!(transactions(&host), n + 1, "one apt transaction: {apply}");
    assert_eq!(dpkg_state(&host, "demo-a"), "ii 1.0");
    assert_eq!(dpkg_state(&host, "demo-c"), "rc 1.0");
    assert_eq!(dpkg_state(&host, "demo-d"), "hi 1.0");
    converged(&host);

    // An upgrade by hand leaves the held package alone (and demo-a drifts).
    host.sh_ok("DEBIAN_FRONTEND=noninteractive apt-get upgrade -y -q");
    assert_eq!(dpkg_state(&host, "demo-d"), "hi 1.0");
    assert_eq!(dpkg_state(&host, "demo-a"), "ii 1.1");
    let plan = rc(&host, &["plan", "--detailed-exitcode"]);
    assert_eq!(plan.status, 2, "{plan}");
    let apply = rc(&host, &["apply"]);
    assert!(apply.success(), "{apply}");
    assert_eq!(dpkg_state(&host, "demo-a"), "ii 1.0");
    converged(&host);

    // Asking the held package for another version without `hold: false` is refused.
    put(
        &host,
        "resources:\n  - package: demo-d\n    version: \"1.1\"\n    hold: true\n",
    );
    let plan = rc(&host, &["plan"]);
    assert!(!plan.success(), "{plan}");
    assert!(
        plan.stdout.contains("hold: false") || plan.stderr.contains("hold: false"),
        "{plan}"
    );
    assert!(format!("{plan}").contains("site.yaml:2"), "{plan}");

    // Remove one, purge the one left with its config files, lift the hold.
    put(
        &host,
        r#"resources:
  - package: demo-b
    state: absent
  - package: demo-c
    state: purged
  - package: demo-d
    version: "1.1"
    hold: false
"#,
    );
    let apply = rc(&host, &["apply"]);
    assert!(apply.success(), "{apply}");
    assert_eq!(dpkg_state(&host, "demo-b"), "rc 1.0");
    assert_eq!(dpkg_state(&host, "demo-c"), "");
    assert_eq!(dpkg_state(&host, "demo-d"), "ii 1.1");
    assert!(host.read_file("/etc/demo-c/demo-c.conf").is_none());
    converged(&host);

    // `latest` follows apt's candidate: demo-a goes back up to 1.1.
    put(
        &host,
        "resources:\n  - package: demo-a\n    state: latest\n",
    );
    let plan = rc(&host, &["plan"]);
    assert!(plan.stdout.contains("demo-a: 1.0 → 1.1"), "{plan}");
    let apply = rc(&host, &["apply"]);
    assert!(apply.success(), "{apply}");
    assert_eq!(dpkg_state(&host, "demo-a"), "ii 1.1");
    converged(&host);
}

#[test]
fn unknown_packages_and_unavailable_versions_are_refused_at_plan_time_naming_the_line() {
    let Some((host, _repo)) = host_with_repo(
        "unknown_packages_and_unavailable_versions_are_refused_at_plan_time_naming_the_line",
    ) else {
        return;
    };
    point_apt_at_repo(&host);
    put(
        &host,
        r#"resources:
  - package: demo-c
  - package: no-such-package
  - package: demo-a
    version: "9.9"
"#,
    );
    let plan = rc(&host, &["plan"]);
    assert!(!plan.success(), "{plan}");
    let said = format!("{plan}");
    assert!(said.contains("site.yaml:3:"), "{said}");
    assert!(said.contains("no-such-package"), "{said}");
    assert!(said.contains("not offered by any apt source"), "{said}");
    assert!(said.contains("site.yaml:4:"), "{said}");
    assert!(said.contains("version 9.9"), "{said}");
    let apply = rc(&host, &["apply"]);
    assert!(!apply.success(), "{apply}");
    assert_eq!(dpkg_state(&host, "demo-c"), "", "nothing is installed");
    assert_eq!(transactions(&host), 0);
}

#[test]
fn the_plan_shows_what_apt_pulls_in_and_a_half_configured_package() {
    let Some((host, _repo)) =
        host_with_repo("the_plan_shows_what_apt_pulls_in_and_a_half_configured_package")
    else {
        return;
    };
    point_apt_at_repo(&host);
    let _ = host.sh("DEBIAN_FRONTEND=noninteractive apt-get install -y -q demo-broken");
    assert!(dpkg_state(&host, "demo-broken").starts_with("iF"));
    put(&host, "resources:\n  - package: demo-b\n");
    let plan = rc(&host, &["plan"]);
    assert!(plan.success(), "{plan}");
    assert!(
        plan.stdout
            .contains("package demo-a (1.1), pulled in by apt"),
        "{plan}"
    );
    assert!(
        plan.stdout.contains("demo-broken half-configured"),
        "{plan}"
    );

    // apt tries to finish demo-broken in the same transaction, and fails there: apply
    // fails with apt's last lines, and the next plan shows the true state.
    let apply = rc(&host, &["apply"]);
    assert!(!apply.success(), "{apply}");
    let said = format!("{apply}");
    assert!(said.contains("the apt transaction failed"), "{said}");
    assert!(said.contains("demo-broken"), "{said}");
    let installed = dpkg_state(&host, "demo-b") == "ii 1.0";
    let broken = dpkg_state(&host, "demo-broken");
    let plan = rc(&host, &["plan"]);
    assert_eq!(
        plan.stdout.contains("demo-broken half-"),
        !broken.starts_with("ii"),
        "demo-broken is {broken}; {plan}"
    );
    assert_eq!(
        plan.stdout.contains("+ package[demo-b]"),
        !installed,
        "demo-b installed: {installed}; {plan}"
    );
}

#[test]
fn a_held_dpkg_lock_is_waited_for_then_named_and_apply_converges_once_released() {
    let Some((host, _repo)) = host_with_repo(
        "a_held_dpkg_lock_is_waited_for_then_named_and_apply_converges_once_released",
    ) else {
        return;
    };
    point_apt_at_repo(&host);
    // An apt-get whose package's preinst sleeps holds dpkg's frontend lock meanwhile.
    let holder = host
        .sh_ok(
            "DEBIAN_FRONTEND=noninteractive setsid apt-get install -y -q demo-slow \
             >/root/slow.log 2>&1 & echo $!",
        )
        .trim()
        .to_string();
    host.sh_ok(
        "for i in $(seq 100); do grep -q 'Preparing to unpack' /root/slow.log && exit 0; sleep 0.1; done; exit 1",
    );
    put(
        &host,
        "resources:\n  - package: demo-c\n    lock_timeout: 2\n",
    );
    let started = std::time::Instant::now();
    let apply = rc(&host, &["apply"]);
    assert!(!apply.success(), "{apply}");
    assert!(started.elapsed() >= Duration::from_secs(2), "it waited");
    let said = format!("{apply}");
    assert!(said.contains(&format!("process {holder}")), "{said}");
    assert!(said.contains("lock-frontend"), "{said}");
    assert_eq!(dpkg_state(&host, "demo-c"), "", "nothing half-installed");
    assert!(host.read_file("/var/lib/dpkg/lock-frontend").is_some());
    host.sh_ok(&format!(
        "while kill -0 {holder} 2>/dev/null; do sleep 0.2; done"
    ));
    let apply = rc(&host, &["apply"]);
    assert!(apply.success(), "{apply}");
    assert_eq!(dpkg_state(&host, "demo-c"), "ii 1.0");
    converged(&host);
}

/// The manifest of docs/packages.md ("Works as written"), as examples/packages has it.
fn docs_manifest() -> String {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/packages/site.yaml");
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// Every path, size, mtime and mode under what apt and dpkg keep, hashed: plan and
/// check must leave it as it is.
fn snapshot(host: &TestHost) -> Vec<String> {
    host.sh_ok(
        "find /etc/apt /var/lib/dpkg /var/lib/apt /var/cache/apt /var/log/apt -xdev \
         -printf '%p %s %T@ %m\n' 2>/dev/null | sort",
    )
    .lines()
    .map(str::to_string)
    .collect()
}

/// Asserts two snapshots are equal, showing only what differs.
fn unchanged(before: &[String], after: &[String], what: &str) {
    let gone: Vec<&String> = before.iter().filter(|l| !after.contains(l)).collect();
    let new: Vec<&String> = after.iter().filter(|l| !before.contains(l)).collect();
    assert!(
        gone.is_empty() && new.is_empty(),
        "{what} changed the host: before {gone:#?}, after {new:#?}"
    );
}

/// How many `apt-get update` runs finished (apt's own post-update hook counts them).
fn updates(host: &TestHost) -> usize {
    host.sh("cat /root/updates 2>/dev/null")
        .stdout
        .lines()
        .count()
}

#[test]
fn an_apt_source_and_its_packages_converge_with_one_update_per_changed_run() {
    let Some((host, _repo)) =
        host_with_repo("an_apt_source_and_its_packages_converge_with_one_update_per_changed_run")
    else {
        return;
    };
    host.write_file(
        "/etc/apt/apt.conf.d/99count-updates",
        b"APT::Update::Post-Invoke { \"echo update >> /root/updates\"; };\n",
    );
    put(&host, &docs_manifest());
    let before = snapshot(&host);
    let plan = rc(&host, &["plan"]);
    assert!(plan.success(), "{plan}");
    let check = rc(&host, &["check"]);
    assert_eq!(check.status, 2, "check finds drift: {check}");
    unchanged(&before, &snapshot(&host), "plan and check");
    assert!(plan.stdout.contains("apt_source[demo]"), "{plan}");
    assert!(
        plan.stdout.contains("(the candidate after apt-get update)"),
        "{plan}"
    );
    assert!(host
        .read_file("/etc/apt/sources.list.d/demo.sources")
        .is_none());
    let apply = rc(&host, &["apply"]);
    assert!(apply.success(), "{apply}");
    assert_eq!(updates(&host), 1, "{apply}");
    assert_eq!(dpkg_state(&host, "demo-a"), "ii 1.1");
    assert_eq!(dpkg_state(&host, "demo-b"), "ii 1.0");
    assert_eq!(dpkg_state(&host, "demo-c"), "");
    assert_eq!(dpkg_state(&host, "demo-d"), "hi 1.0");
    let sources = host.sh_ok("stat -c '%a %U' /etc/apt/sources.list.d/demo.sources");
    assert_eq!(sources.trim(), "644 root");
    converged(&host);
    let apply = rc(&host, &["apply"]);
    assert!(apply.success(), "{apply}");
    assert_eq!(updates(&host), 1, "no update when no source changed");

    // A signing key shipped with the manifests, and a legacy duplicate reported.
    let key = std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/parse/apt/demo-key.asc"),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    put(
        &host,
        &docs_manifest().replace(
            "    trusted: true\n",
            "    trusted: true\n    signed_by: keys/demo.asc\n",
        ),
    );
    host.write_file("/root/m/keys/demo.asc", &key);
    host.write_file(
        "/etc/apt/sources.list.d/old.list",
        b"deb [trusted=yes] file:/srv/repo ./\n",
    );
    let plan = rc(&host, &["plan"]);
    assert!(plan.success(), "{plan}");
    assert!(
        format!("{plan}").contains("old.list:1 names the same source"),
        "{plan}"
    );
    host.sh_ok("rm /etc/apt/sources.list.d/old.list");
    let apply = rc(&host, &["apply"]);
    assert!(apply.success(), "{apply}");
    assert_eq!(updates(&host), 2, "one update for the changed source");
    assert_eq!(
        host.sh_ok("stat -c '%a' /etc/apt/keyrings/demo.asc").trim(),
        "644"
    );
    assert_eq!(host.read_file("/etc/apt/keyrings/demo.asc"), Some(key));
    assert!(host
        .sh_ok("cat /etc/apt/sources.list.d/demo.sources")
        .contains("Signed-By: /etc/apt/keyrings/demo.asc"));
    converged(&host);

    // A key file that is no key: refused naming the line, nothing changes.
    host.write_file("/root/m/keys/demo.asc", b"not a key\n");
    let before =
        host.sh_ok("md5sum /etc/apt/sources.list.d/demo.sources /etc/apt/keyrings/demo.asc");
    let apply = rc(&host, &["apply"]);
    assert!(!apply.success(), "{apply}");
    let said = format!("{apply}");
    assert!(said.contains("site.yaml:9"), "{said}");
    assert!(
        said.contains("not a valid armored OpenPGP public key"),
        "{said}"
    );
    assert_eq!(
        host.sh_ok("md5sum /etc/apt/sources.list.d/demo.sources /etc/apt/keyrings/demo.asc"),
        before
    );
    assert_eq!(updates(&host), 2);

    // The source removed: its file and key go, one update.
    put(
        &host,
        "resources:\n  - apt_source: demo\n    state: absent\n",
    );
    let apply = rc(&host, &["apply"]);
    assert!(apply.success(), "{apply}");
    assert!(host
        .read_file("/etc/apt/sources.list.d/demo.sources")
        .is_none());
    assert!(host.read_file("/etc/apt/keyrings/demo.asc").is_none());
    assert_eq!(updates(&host), 3);
    converged(&host);
}

/// A package's name and version.
type NameVersion = (String, String);

/// This machine's dpkg database, and up to `n` of its installed packages.
fn installed_here(n: usize) -> Option<(Vec<u8>, Vec<NameVersion>)> {
    let status = std::fs::read("/var/lib/dpkg/status").ok()?;
    let text = String::from_utf8_lossy(&status).into_owned();
    let mut out = Vec::new();
    for stanza in text.split("\n\n") {
        let field = |k: &str| {
            stanza
                .lines()
                .find_map(|l| l.strip_prefix(k))
                .map(|v| v.trim().to_string())
        };
        if field("Status:").as_deref() == Some("install ok installed") {
            if let (Some(name), Some(version)) = (field("Package:"), field("Version:")) {
                out.push((name, version));
            }
        }
        if out.len() == n {
            break;
        }
    }
    Some((status, out))
}

#[test]
fn a_noop_check_of_installed_packages_reads_dpkgs_database_and_spawns_nothing() {
    let Some((status, installed)) = installed_here(30) else {
        eprintln!("skipping: no dpkg database on this machine");
        return;
    };
    let s = Sandbox::new();
    s.put("/var/lib/dpkg/status", &status);
    let mut m = String::from("resources:\n");
    for (i, (name, version)) in installed.iter().enumerate() {
        m.push_str(&format!("  - package: {name}\n"));
        if i % 3 == 0 {
            m.push_str(&format!("    version: \"{version}\"\n"));
        }
    }
    m.push_str("  - package: [no-such-package-here, another-missing-one]\n    state: purged\n");
    s.manifest("site.yaml", &m);
    let before = s.snapshot();
    let check = s.run("check", &["-vv", "site.yaml"]);
    assert_eq!(check.code(), 0, "{}", check.all());
    assert!(
        !check.stderr().contains("running"),
        "a process was spawned: {}",
        check.stderr()
    );
    assert_eq!(s.snapshot(), before);
}

#[test]
fn package_manifest_mistakes_are_refused_naming_the_place() {
    let s = Sandbox::new();
    s.manifest(
        "site.yaml",
        r#"resources:
  - package: demo-a
    state: absent
    version: "1.0"
  - package: [demo-b, Bad_Name]
  - package: demo-e
    state: latest
    version: "1.*"
  - apt_source: demo
    uris: ["file:/srv/repo"]
    suites: [bookworm]
  - apt_source: keyed
    uris: ["file:/srv/repo"]
    suites: ["./"]
    signed_by: "-----BEGIN PGP PUBLIC KEY BLOCK-----\n\nAAAA\n-----END PGP PUBLIC KEY BLOCK-----\n"
"#,
    );
    let run = s.run("validate", &["site.yaml"]);
    assert_ne!(run.code(), 0);
    let said = run.all();
    for want in [
        "site.yaml:4:",
        "`version:` with `state: absent`",
        "site.yaml:5:",
        "`Bad_Name` is not a Debian package name",
        "site.yaml:8:",
        "site.yaml:9:",
        "needs `components`",
        "site.yaml:15:",
        "the inline key is not valid",
    ] {
        assert!(said.contains(want), "missing {want:?} in:\n{said}");
    }
    // One package both present and purged, in two resources.
    s.manifest(
        "site.yaml",
        "resources:\n  - package: [demo-c, demo-x]\n  - package: demo-c\n    state: purged\n",
    );
    let run = s.run("validate", &["site.yaml"]);
    assert_ne!(run.code(), 0);
    let said = run.all();
    assert!(
        said.contains("site.yaml:4:") || said.contains("site.yaml:3:"),
        "{said}"
    );
    assert!(
        said.contains("package `demo-c` is purged here and present"),
        "{said}"
    );
}

/// The ids of an `apply --format jsonl` run's outcome lines, in the order they came.
fn outcome_order(out: &str) -> Vec<String> {
    out.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["format"] == "reconcile-apply-outcome")
        .filter_map(|v| v["id"].as_str().map(str::to_string))
        .collect()
}

#[test]
fn a_file_a_declared_package_ships_is_applied_after_the_package_even_when_declared_before() {
    let Some((host, _repo)) = host_with_repo(
        "a_file_a_declared_package_ships_is_applied_after_the_package_even_when_declared_before",
    ) else {
        return;
    };
    point_apt_at_repo(&host);
    // demo-a ships /etc/demo-a/demo-a.conf (a conffile); the file is declared first.
    let manifest = "resources:\n  - file: /etc/demo-a/demo-a.conf\n    content: \"managed = 1\\n\"\n  - package: demo-a\n";
    put(&host, manifest);
    let edge = "file[/etc/demo-a/demo-a.conf]\n    after package[demo-a] (auto)";

    // Not installed yet: the edge comes from the candidate's package file in the
    // `file:` source.
    let graph = rc(&host, &["graph"]);
    assert!(graph.success(), "{graph}");
    assert!(graph.stdout.contains(edge), "{graph}");
    assert!(
        graph.stdout.find("package[demo-a]") < graph.stdout.find("file[/etc/demo-a/demo-a.conf]"),
        "{graph}"
    );
    let plan = rc(&host, &["plan"]);
    assert!(plan.success(), "{plan}");
    assert!(!plan.stdout.contains("cannot be known"), "{plan}");

    let apply = rc(&host, &["apply", "--format", "jsonl"]);
    assert!(apply.success(), "{apply}");
    assert_eq!(
        outcome_order(&apply.stdout),
        vec!["package[demo-a]", "file[/etc/demo-a/demo-a.conf]"],
        "{apply}"
    );
    assert_eq!(dpkg_state(&host, "demo-a"), "ii 1.1");
    assert_eq!(
        host.read_file("/etc/demo-a/demo-a.conf").as_deref(),
        Some(&b"managed = 1\n"[..])
    );
    converged(&host);

    // Installed, with no source left that offers it: the edge comes from dpkg's list.
    host.sh_ok("rm /etc/apt/sources.list.d/demo.sources && apt-get update -q");
    let graph = rc(&host, &["graph"]);
    assert!(graph.stdout.contains(edge), "{graph}");
    converged(&host);

    // A package whose files cannot be known (not installed, no package file here):
    // no edge, and the plan says so.
    put(
        &host,
        "resources:\n  - file: /etc/demo-c/demo-c.conf\n    content: \"x\\n\"\n  - package: demo-c\n  - package: demo-d\n",
    );
    host.write_file(
        "/etc/apt/sources.list.d/demo.sources",
        b"Types: deb\nURIs: file:/srv/repo\nSuites: ./\nTrusted: yes\n",
    );
    host.sh_ok("apt-get update -q && mv /srv/repo/demo-c_1.0_all.deb /root/");
    let graph = rc(&host, &["graph"]);
    assert!(!graph.stdout.contains("after package[demo-c]"), "{graph}");
    let plan = rc(&host, &["plan", "-vv"]);
    assert!(
        plan.stdout
            .contains("the files of package demo-c cannot be known before it is installed"),
        "{plan}"
    );
    assert!(!plan.stdout.contains("package demo-d cannot"), "{plan}");
    // Both packages' files were looked up in one apt query.
    assert_eq!(plan.stderr.matches("verb=download").count(), 1, "{plan}");
}
