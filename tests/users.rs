//! `user` and `group` against temporary roots holding a minimal /etc, driving the real
//! binary and the real shadow tools (`--prefix ROOT`). Every test also proves that the
//! machine's own account files are untouched.
//!
//! Applying needs root (the shadow tools refuse otherwise, and chown does too) and the
//! `passwd` package: those tests skip with a reason, except under CI=true where they
//! fail. The bad-input tests need neither: they are refused before anything runs.

mod support;

use std::os::unix::fs::MetadataExt;

use support::sandbox::Sandbox;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/users");

const MACHINE_FILES: &[&str] = &["/etc/passwd", "/etc/group", "/etc/shadow", "/etc/gshadow"];

/// The machine's account files as they were when the test started.
struct MachineFiles(Vec<(&'static str, Option<Vec<u8>>)>);

impl MachineFiles {
    fn record() -> MachineFiles {
        MachineFiles(
            MACHINE_FILES
                .iter()
                .map(|p| (*p, std::fs::read(p).ok()))
                .collect(),
        )
    }

    fn assert_unchanged(&self) {
        for (path, before) in &self.0 {
            let now = std::fs::read(path).ok();
            assert!(
                now == *before,
                "the machine's {path} changed during the test"
            );
        }
    }
}

fn in_ci() -> bool {
    std::env::var("CI").as_deref() == Ok("true")
}

/// Root and the shadow tools, or a printed reason to skip (a failure under CI=true).
fn can_apply(test: &str) -> bool {
    if !support::sandbox::require_root(test) {
        return false;
    }
    let missing: Vec<&str> = [
        "useradd", "usermod", "userdel", "groupadd", "groupmod", "groupdel",
    ]
    .into_iter()
    .filter(|t| {
        !["/usr/sbin", "/usr/bin", "/sbin", "/bin"]
            .iter()
            .any(|d| std::path::Path::new(d).join(t).is_file())
    })
    .collect();
    if missing.is_empty() {
        return true;
    }
    assert!(
        !in_ci(),
        "{test}: missing {} under CI=true (install `passwd`)",
        missing.join(", ")
    );
    eprintln!(
        "skipping {test}: missing {} (apt-get install passwd)",
        missing.join(", ")
    );
    false
}

/// A sandbox whose root holds the recorded minimal /etc.
fn sandbox() -> Sandbox {
    let s = Sandbox::new();
    for f in ["passwd", "group", "shadow", "gshadow", "login.defs"] {
        let bytes = std::fs::read(format!("{FIXTURES}/etc/{f}"))
            .unwrap_or_else(|e| panic!("fixture {f}: {e}"));
        let p = s.put(&format!("/etc/{f}"), &bytes);
        if f.contains("shadow") {
            std::fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o640))
                .unwrap_or_else(|e| panic!("chmod {f}: {e}"));
        }
    }
    s
}

fn fixture_manifest(s: &Sandbox, name: &str) {
    let text = std::fs::read_to_string(format!("{FIXTURES}/{name}"))
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    s.manifest("site.yaml", &text);
}

/// The line of `name` in one of the root's account files.
fn line(s: &Sandbox, file: &str, name: &str) -> Option<String> {
    s.read(file)
        .lines()
        .find(|l| l.split(':').next() == Some(name))
        .map(str::to_string)
}

fn owner(s: &Sandbox, path: &str) -> (u32, u32) {
    let m = std::fs::symlink_metadata(s.path(path)).unwrap_or_else(|e| panic!("stat {path}: {e}"));
    (m.uid(), m.gid())
}

#[test]
fn runbook_account_setup_with_owned_files_in_one_apply() {
    if !can_apply("runbook_account_setup_with_owned_files_in_one_apply") {
        return;
    }
    let machine = MachineFiles::record();
    let s = sandbox();
    fixture_manifest(&s, "runbook.yaml");

    let plan = s.run("plan", &["--detailed-exitcode", "site.yaml"]);
    plan.assert_code(2);
    let out = plan.stdout();
    assert!(
        out.contains("+ group[intelluxe-prod]") && out.contains("+ user[intelluxe-service]"),
        "{out}"
    );
    // system: true with uid 2000 / gid 2001 is outside the target's system range.
    assert!(
        out.contains("uid 2000 is outside the target's system range 100-999"),
        "{out}"
    );

    let applied = s.converge(&["site.yaml"]);
    assert!(
        applied.stdout().contains("Apply: 4 changed"),
        "{}",
        applied.all()
    );

    assert_eq!(
        line(&s, "/etc/passwd", "intelluxe-service").as_deref(),
        Some("intelluxe-service:x:2000:2001:Intelluxe service account:/opt/intelluxe:/bin/false")
    );
    assert_eq!(
        line(&s, "/etc/group", "intelluxe-prod").as_deref(),
        Some("intelluxe-prod:x:2001:")
    );
    // No private group `intelluxe-service` (the runbook's useradd made one).
    assert_eq!(line(&s, "/etc/group", "intelluxe-service"), None);
    assert!(line(&s, "/etc/shadow", "intelluxe-service")
        .is_some_and(|l| l.starts_with("intelluxe-service:!:")));
    assert!(line(&s, "/etc/gshadow", "intelluxe-prod").is_some());
    assert_eq!(owner(&s, "/opt/intelluxe/stack/data"), (2000, 2001));
    assert_eq!(owner(&s, "/etc/intelluxe/auto-upgrade.conf"), (2000, 2001));
    // create_home: false: the home's parents exist only as implied parents of the
    // data directory, root-owned.
    assert_eq!(owner(&s, "/opt/intelluxe"), (0, 0));
    assert!(!s.path("/opt/intelluxe/.bashrc").exists());

    // Moving the group to another gid: groupmod updates the primary gid in passwd, the
    // plan names the owned paths, and their resources re-own them in the same run.
    let text = std::fs::read_to_string(format!("{FIXTURES}/runbook.yaml"))
        .unwrap_or_else(|e| panic!("{e}"));
    s.manifest("site.yaml", &text.replace("gid: 2001", "gid: 2002"));
    let plan = s.run("plan", &["--detailed-exitcode", "site.yaml"]);
    plan.assert_code(2);
    let out = plan.stdout();
    assert!(out.contains("gid: 2001 → 2002"), "{out}");
    assert!(
        out.contains("existing files keep the old numeric group 2001")
            && out.contains("/etc/intelluxe/auto-upgrade.conf, /opt/intelluxe/stack/data"),
        "{out}"
    );
    s.converge(&["site.yaml"]);
    assert_eq!(
        line(&s, "/etc/passwd", "intelluxe-service").map(|l| l.split(':').nth(3).map(String::from)),
        Some(Some("2002".to_string()))
    );
    assert_eq!(owner(&s, "/opt/intelluxe/stack/data"), (2000, 2002));
    assert_eq!(owner(&s, "/etc/intelluxe/auto-upgrade.conf"), (2000, 2002));
    machine.assert_unchanged();
}

#[test]
fn create_change_and_remove_converge() {
    if !can_apply("create_change_and_remove_converge") {
        return;
    }
    let machine = MachineFiles::record();
    let s = sandbox();
    s.manifest(
        "site.yaml",
        r#"
resources:
  - group: ops
    gid: 3000
  - group: dev
    gid: 3001
  - user: alice
    uid: 3010
    group: ops
    groups: [dev, sudo]
    append: false
    shell: /bin/sh
    home: /home/alice
    comment: Alice
"#,
    );
    s.converge(&["site.yaml"]);
    assert_eq!(
        line(&s, "/etc/passwd", "alice").as_deref(),
        Some("alice:x:3010:3000:Alice:/home/alice:/bin/sh")
    );
    assert_eq!(
        line(&s, "/etc/group", "dev").as_deref(),
        Some("dev:x:3001:alice")
    );
    assert_eq!(
        line(&s, "/etc/group", "sudo").as_deref(),
        Some("sudo:x:27:justin,alice")
    );
    // create_home defaults to true for a regular user: made by useradd, HOME_MODE 0750.
    assert_eq!(owner(&s, "/home/alice"), (3010, 3000));
    assert_eq!(s.mode("/home/alice"), 0o750);

    // Change shell, uid and groups (exact: sudo is dropped, users added).
    s.manifest(
        "site.yaml",
        r#"
resources:
  - group: ops
    gid: 3000
  - group: dev
    gid: 3001
  - user: alice
    uid: 3020
    group: ops
    groups: [dev, users]
    append: false
    shell: /bin/bash
    home: /home/alice
    comment: Alice
  - file: /srv/alice.txt
    owner: alice
    content: "hello\n"
"#,
    );
    s.put("/srv/alice.txt", b"hello\n");
    std::os::unix::fs::chown(s.path("/srv/alice.txt"), Some(3010), Some(0))
        .unwrap_or_else(|e| panic!("{e}"));
    let plan = s.run("plan", &["--detailed-exitcode", "site.yaml"]);
    plan.assert_code(2);
    let out = plan.stdout();
    assert!(out.contains("uid: 3010 → 3020"), "{out}");
    assert!(out.contains("shell: /bin/sh → /bin/bash"), "{out}");
    assert!(out.contains("groups: dev,sudo → dev,users"), "{out}");
    assert!(
        out.contains("existing files keep the old numeric owner 3010"),
        "{out}"
    );
    assert!(
        out.contains("/srv/alice.txt"),
        "the uid warning lists the managed path: {out}"
    );
    s.converge(&["site.yaml"]);
    assert_eq!(
        line(&s, "/etc/passwd", "alice").as_deref(),
        Some("alice:x:3020:3000:Alice:/home/alice:/bin/bash")
    );
    assert_eq!(
        line(&s, "/etc/group", "sudo").as_deref(),
        Some("sudo:x:27:justin")
    );
    assert_eq!(
        line(&s, "/etc/group", "users").as_deref(),
        Some("users:x:100:alice")
    );
    // The file depends on its owner, so it was re-planned after usermod and re-owned.
    assert_eq!(owner(&s, "/srv/alice.txt").0, 3020);

    // append: true keeps what is there and adds.
    s.manifest(
        "site.yaml",
        "resources:\n  - group: ops\n    gid: 3000\n  - group: dev\n    gid: 3001\n  - user: alice\n    groups: [sudo]\n    append: true\n  - file: /srv/alice.txt\n    owner: alice\n    content: \"hello\\n\"\n",
    );
    s.converge(&["site.yaml"]);
    assert_eq!(
        line(&s, "/etc/group", "users").as_deref(),
        Some("users:x:100:alice")
    );
    assert_eq!(
        line(&s, "/etc/group", "sudo").as_deref(),
        Some("sudo:x:27:justin,alice")
    );

    // Remove: the home stays unless remove_home: true.
    s.manifest(
        "site.yaml",
        // Offboarding: what reconcile made for alice and no longer declares goes too.
        "settings: {removed: remove}\nresources:\n  - user: alice\n    state: absent\n  - group: dev\n    state: absent\n",
    );
    let plan = s.run("plan", &["site.yaml"]);
    assert!(
        plan.stdout().contains("home /home/alice is kept"),
        "{}",
        plan.all()
    );
    s.converge(&["site.yaml"]);
    assert_eq!(line(&s, "/etc/passwd", "alice"), None);
    assert_eq!(line(&s, "/etc/shadow", "alice"), None);
    assert_eq!(line(&s, "/etc/group", "dev"), None);
    assert!(!s.read("/etc/group").contains("alice"));
    assert!(
        s.path("/home/alice").is_dir(),
        "home removed without remove_home"
    );
    machine.assert_unchanged();
}

#[test]
fn remove_home_only_when_asked() {
    if !can_apply("remove_home_only_when_asked") {
        return;
    }
    let machine = MachineFiles::record();
    let s = sandbox();
    s.manifest(
        "site.yaml",
        "resources:\n  - user: bob\n    uid: 3100\n    create_home: true\n",
    );
    s.put("/etc/skel/.profile", b"# the target's skeleton\n");
    s.converge(&["site.yaml"]);
    assert!(s.path("/home/bob").is_dir());
    // The target's /etc/skel, not the machine's.
    assert_eq!(s.read("/home/bob/.profile"), "# the target's skeleton\n");
    assert!(!s.path("/home/bob/.bashrc").exists());
    // An explicit create_home: true also recreates a home that went missing.
    std::fs::remove_dir_all(s.path("/home/bob")).unwrap_or_else(|e| panic!("{e}"));
    let plan = s.run("plan", &["site.yaml"]);
    assert!(
        plan.stdout()
            .contains("home directory: missing → /home/bob (created)"),
        "{}",
        plan.all()
    );
    s.converge(&["site.yaml"]);
    assert_eq!(owner(&s, "/home/bob").0, 3100);
    assert_eq!(s.mode("/home/bob"), 0o750);
    s.manifest(
        "site.yaml",
        "resources:\n  - user: bob\n    state: absent\n    remove_home: true\n",
    );
    let plan = s.run("plan", &["site.yaml"]);
    assert!(
        plan.stdout().contains("are deleted (remove_home: true)"),
        "{}",
        plan.all()
    );
    s.converge(&["site.yaml"]);
    assert!(!s.path("/home/bob").exists());
    assert_eq!(line(&s, "/etc/passwd", "bob"), None);
    machine.assert_unchanged();
}

#[test]
fn group_members_are_exact_in_group_and_gshadow() {
    if !can_apply("group_members_are_exact_in_group_and_gshadow") {
        return;
    }
    let machine = MachineFiles::record();
    let s = sandbox();
    // carol does not exist yet: she joins `ops` when her user resource creates her.
    s.manifest(
        "site.yaml",
        r#"
resources:
  - group: ops
    gid: 3200
    members: [justin, carol]
  - user: carol
    uid: 3201
    create_home: false
"#,
    );
    s.converge(&["site.yaml"]);
    let members = |file: &str| {
        let l = line(&s, file, "ops").unwrap_or_default();
        let mut m: Vec<String> = l
            .rsplit(':')
            .next()
            .unwrap_or("")
            .split(',')
            .filter(|x| !x.is_empty())
            .map(String::from)
            .collect();
        m.sort();
        m
    };
    assert_eq!(members("/etc/group"), vec!["carol", "justin"]);
    assert_eq!(members("/etc/gshadow"), vec!["carol", "justin"]);
    // No supplementary list on carol: the group decides alone.
    s.manifest(
        "site.yaml",
        "resources:\n  - group: ops\n    gid: 3200\n    members: [carol]\n  - user: carol\n    uid: 3201\n    create_home: false\n",
    );
    let plan = s.run("plan", &["--detailed-exitcode", "site.yaml"]);
    plan.assert_code(2);
    assert!(
        plan.stdout().contains("members: carol,justin → carol"),
        "{}",
        plan.all()
    );
    s.converge(&["site.yaml"]);
    assert_eq!(members("/etc/group"), vec!["carol"]);
    assert_eq!(members("/etc/gshadow"), vec!["carol"]);
    s.manifest(
        "site.yaml",
        "resources:\n  - group: ops\n    members: []\n  - user: carol\n    create_home: false\n",
    );
    s.converge(&["site.yaml"]);
    assert!(members("/etc/group").is_empty() && members("/etc/gshadow").is_empty());
    machine.assert_unchanged();
}

#[test]
fn password_hash_and_lock_never_shown() {
    if !can_apply("password_hash_and_lock_never_shown") {
        return;
    }
    let machine = MachineFiles::record();
    let s = sandbox();
    let hash = "$6$Fq9xTn2rVw8kLmPz$Q41IOYv70.Z9jIZsO246KtSOq3v.7Cx4cPKmE7OGstpfLEblrWOsNbivXenN8ZMkD.JPdWKHfIQj1c5eUTj2I1";
    s.manifest(
        "site.yaml",
        &format!("resources:\n  - user: deploy\n    uid: 3300\n    password: \"{hash}\"\n    locked: true\n    create_home: false\n"),
    );
    let plan = s.run("plan", &["--format", "json", "site.yaml"]);
    assert!(!plan.all().contains("Fq9xTn2rVw8kLmPz"), "{}", plan.all());
    let applied = s.converge(&["site.yaml"]);
    assert!(
        !applied.all().contains("Fq9xTn2rVw8kLmPz"),
        "{}",
        applied.all()
    );
    let shadow = line(&s, "/etc/shadow", "deploy").unwrap_or_default();
    assert!(shadow.starts_with(&format!("deploy:!{hash}:")), "{shadow}");

    // Unlock: the same hash, without the `!`.
    s.manifest(
        "site.yaml",
        &format!("resources:\n  - user: deploy\n    password: \"{hash}\"\n    locked: false\n"),
    );
    let plan = s.run("plan", &["site.yaml"]);
    assert!(
        plan.stdout().contains("locked: true → false"),
        "{}",
        plan.all()
    );
    assert!(!plan.all().contains("Fq9xTn2rVw8kLmPz"));
    // -vv logs each program run, never its arguments.
    let unlocked = s.converge(&["-vv", "site.yaml"]);
    assert!(
        unlocked.all().contains("program=usermod"),
        "{}",
        unlocked.all()
    );
    assert!(
        !unlocked.all().contains("Fq9xTn2rVw8kLmPz"),
        "{}",
        unlocked.all()
    );
    let shadow = line(&s, "/etc/shadow", "deploy").unwrap_or_default();
    assert!(shadow.starts_with(&format!("deploy:{hash}:")), "{shadow}");

    // A new hash: shown as changed, never shown itself.
    let other = "$y$j9T$0123456789abcdefghijkl$AbCdEfGhIjKlMnOpQrStUvWxYz0123456789./AbCdE";
    s.manifest(
        "site.yaml",
        &format!("resources:\n  - user: deploy\n    password: \"{other}\"\n"),
    );
    let plan = s.run("plan", &["site.yaml"]);
    assert!(
        plan.stdout()
            .contains("password: (sensitive) → (sensitive)"),
        "{}",
        plan.all()
    );
    let applied = s.converge(&["site.yaml"]);
    assert!(
        !applied.all().contains("0123456789abcdefghijkl"),
        "{}",
        applied.all()
    );
    assert!(line(&s, "/etc/shadow", "deploy")
        .is_some_and(|l| l.starts_with(&format!("deploy:{other}:"))));
    machine.assert_unchanged();
}

/// Runs a manifest that must be refused: exit 1, each `needles` in the output, and the
/// root byte-identical afterwards (for plan and apply alike).
fn refused(fixture: &str, needles: &[&str]) -> String {
    let machine = MachineFiles::record();
    let s = sandbox();
    fixture_manifest(&s, fixture);
    let before = s.snapshot();
    let mut all = String::new();
    for cmd in ["plan", "apply"] {
        let run = s.run(cmd, &["site.yaml"]);
        run.assert_code(1);
        for n in needles {
            assert!(
                run.all().contains(n),
                "{cmd} {fixture}: `{n}` missing in\n{}",
                run.all()
            );
        }
        all.push_str(&run.all());
    }
    assert_eq!(s.snapshot(), before, "{fixture}: the root changed");
    machine.assert_unchanged();
    all
}

#[test]
fn invalid_names_are_refused() {
    refused(
        "bad-names.yaml",
        &[
            "site.yaml:2:",
            "site.yaml:4:",
            "site.yaml:6:",
            "not a valid account name",
            "at most 32",
        ],
    );
}

#[test]
fn uid_of_another_account_on_the_target_is_refused() {
    let out = refused(
        "bad-duplicate-uid.yaml",
        &[
            "site.yaml:3:",
            "uid 1000 is already used by account `justin`",
        ],
    );
    assert!(!out.contains("Apply: 1 changed"));
}

#[test]
fn clear_text_password_is_refused_and_never_echoed() {
    let out = refused(
        "bad-clear-password.yaml",
        &["site.yaml:4:", "clear-text password is not accepted"],
    );
    assert!(
        !out.contains("Sup3r-Secret-Passw0rd"),
        "the clear text leaked:\n{out}"
    );
}

#[test]
fn unknown_primary_group_is_refused() {
    refused(
        "bad-unknown-group.yaml",
        &[
            "site.yaml:4:",
            "primary group `intelluxe-prod` is neither declared nor present",
        ],
    );
}

/// A directory outside the scratch root, and its snapshot, to prove nothing there
/// changed.
fn outside_dir() -> (
    tempfile::TempDir,
    std::collections::BTreeMap<String, String>,
) {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    std::fs::write(dir.path().join("keep"), b"outside\n").unwrap_or_else(|e| panic!("{e}"));
    std::fs::create_dir(dir.path().join("bob")).unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(dir.path().join("bob/notes"), b"someone else's\n")
        .unwrap_or_else(|e| panic!("{e}"));
    let snap = support::sandbox::snapshot(dir.path());
    (dir, snap)
}

#[test]
fn home_under_a_symlinked_parent_is_refused_and_nothing_outside_is_created() {
    if !can_apply("home_under_a_symlinked_parent_is_refused_and_nothing_outside_is_created") {
        return;
    }
    let machine = MachineFiles::record();
    let s = sandbox();
    s.put("/etc/skel/.profile", b"# skeleton\n");
    let (outside, before) = outside_dir();
    std::os::unix::fs::symlink(outside.path(), s.path("/home")).unwrap_or_else(|e| panic!("{e}"));
    s.manifest(
        "site.yaml",
        "resources:\n  - user: carol\n    uid: 3200\n    create_home: true\n",
    );
    let root_before = s.snapshot();
    let run = s.run("apply", &["site.yaml"]);
    assert_eq!(run.code(), 1, "{}", run.all());
    assert!(run.all().contains("symlink"), "{}", run.all());
    assert_eq!(support::sandbox::snapshot(outside.path()), before);
    // Refused at plan time: not even the account was added.
    assert_eq!(line(&s, "/etc/passwd", "carol"), None);
    assert_eq!(s.snapshot(), root_before);
    machine.assert_unchanged();
}

#[test]
fn removing_a_home_under_a_symlinked_parent_is_refused_and_nothing_outside_is_deleted() {
    if !can_apply(
        "removing_a_home_under_a_symlinked_parent_is_refused_and_nothing_outside_is_deleted",
    ) {
        return;
    }
    let machine = MachineFiles::record();
    let s = sandbox();
    s.manifest(
        "site.yaml",
        "resources:\n  - user: bob\n    uid: 3100\n    create_home: false\n",
    );
    s.converge(&["site.yaml"]);
    let (outside, before) = outside_dir();
    std::os::unix::fs::symlink(outside.path(), s.path("/home")).unwrap_or_else(|e| panic!("{e}"));
    s.manifest(
        "site.yaml",
        "resources:\n  - user: bob\n    state: absent\n    remove_home: true\n",
    );
    let run = s.run("apply", &["site.yaml"]);
    assert_eq!(run.code(), 1, "{}", run.all());
    assert!(run.all().contains("symlink"), "{}", run.all());
    assert_eq!(support::sandbox::snapshot(outside.path()), before);
    assert!(line(&s, "/etc/passwd", "bob").is_some());
    machine.assert_unchanged();
}

#[test]
fn a_home_shared_with_another_account_or_not_owned_is_kept_on_removal() {
    if !can_apply("a_home_shared_with_another_account_or_not_owned_is_kept_on_removal") {
        return;
    }
    let machine = MachineFiles::record();
    let s = sandbox();
    s.put("/srv/shared/data", b"keep me\n");
    s.manifest(
        "site.yaml",
        "resources:\n  - user: bob\n    uid: 3100\n    home: /srv/shared\n    create_home: false\n  - user: dave\n    uid: 3101\n    home: /srv/shared\n    create_home: false\n",
    );
    s.converge(&["site.yaml"]);
    s.manifest(
        "site.yaml",
        "resources:\n  - user: bob\n    state: absent\n    remove_home: true\n",
    );
    let run = s.run("apply", &["site.yaml"]);
    assert_eq!(run.code(), 0, "{}", run.all());
    assert!(run.all().contains("kept"), "{}", run.all());
    assert_eq!(s.read("/srv/shared/data"), "keep me\n");
    assert_eq!(line(&s, "/etc/passwd", "bob"), None);
    machine.assert_unchanged();
}

#[test]
fn account_files_behind_a_symlinked_etc_are_refused() {
    if !can_apply("account_files_behind_a_symlinked_etc_are_refused") {
        return;
    }
    let machine = MachineFiles::record();
    let s = sandbox();
    let outside = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    for f in ["passwd", "group", "shadow", "gshadow", "login.defs"] {
        std::fs::copy(s.path(&format!("/etc/{f}")), outside.path().join(f))
            .unwrap_or_else(|e| panic!("{e}"));
    }
    let before = support::sandbox::snapshot(outside.path());
    std::fs::remove_dir_all(s.path("/etc")).unwrap_or_else(|e| panic!("{e}"));
    std::os::unix::fs::symlink(outside.path(), s.path("/etc")).unwrap_or_else(|e| panic!("{e}"));
    s.manifest(
        "site.yaml",
        "resources:\n  - group: ops\n    gid: 3300\n  - user: erin\n    uid: 3301\n    create_home: false\n",
    );
    let run = s.run("apply", &["site.yaml"]);
    assert_eq!(run.code(), 1, "{}", run.all());
    assert!(run.all().contains("symlink"), "{}", run.all());
    assert_eq!(support::sandbox::snapshot(outside.path()), before);
    machine.assert_unchanged();
}

#[test]
fn an_id_that_means_no_id_is_refused_and_a_missing_shell_is_warned() {
    let s = Sandbox::new();
    s.manifest(
        "site.yaml",
        "resources:\n  - user: frank\n    uid: 4294967295\n  - group: frankg\n    gid: 4294967295\n",
    );
    let run = s.run("validate", &["site.yaml"]);
    assert_eq!(run.code(), 1, "{}", run.all());
    assert!(run.all().contains("site.yaml:3:10"), "{}", run.all());
    assert!(run.all().contains("site.yaml:5:10"), "{}", run.all());
    assert!(run.all().contains("(uid_t)-1"), "{}", run.all());
    s.put("/etc/passwd", b"root:x:0:0:root:/root:/bin/bash\n");
    s.put("/etc/group", b"root:x:0:\n");
    s.put("/usr/bin/false", b"");
    s.manifest(
        "site.yaml",
        "resources:\n  - user: frank\n    uid: 3400\n    shell: /bin/fasle\n  - user: gina\n    uid: 3401\n    shell: /bin/false\n",
    );
    let before = s.snapshot();
    let plan = s.run("plan", &["site.yaml"]);
    assert_eq!(plan.code(), 0, "{}", plan.all());
    assert!(
        plan.all()
            .contains("shell /bin/fasle does not exist on the target"),
        "{}",
        plan.all()
    );
    assert!(
        !plan.all().contains("shell /bin/false does not"),
        "{}",
        plan.all()
    );
    assert_eq!(s.snapshot(), before);
}

#[test]
fn a_symlinked_account_file_is_refused_before_any_tool_runs() {
    let s = sandbox();
    let outside = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let real = outside.path().join("passwd");
    std::fs::copy(s.path("/etc/passwd"), &real).unwrap_or_else(|e| panic!("{e}"));
    let before = support::sandbox::snapshot(outside.path());
    std::fs::remove_file(s.path("/etc/passwd")).unwrap_or_else(|e| panic!("{e}"));
    std::os::unix::fs::symlink(&real, s.path("/etc/passwd")).unwrap_or_else(|e| panic!("{e}"));
    s.manifest(
        "site.yaml",
        "resources:\n  - user: hank\n    uid: 3500\n    create_home: false\n",
    );
    let root_before = s.snapshot();
    let run = s.run("apply", &["site.yaml"]);
    assert_eq!(run.code(), 1, "{}", run.all());
    assert!(
        run.all().contains("account files must be regular files"),
        "{}",
        run.all()
    );
    assert_eq!(support::sandbox::snapshot(outside.path()), before);
    assert_eq!(s.snapshot(), root_before);
}

#[test]
fn a_gshadow_that_drifted_alone_is_made_exact_and_the_next_plan_is_empty() {
    if !can_apply("a_gshadow_that_drifted_alone_is_made_exact_and_the_next_plan_is_empty") {
        return;
    }
    let machine = MachineFiles::record();
    let s = sandbox();
    // /etc/group says justin alone; /etc/gshadow also lets daemon in.
    let gshadow = s
        .read("/etc/gshadow")
        .replace("sudo:*::justin", "sudo:*::justin,daemon");
    let p = s.put("/etc/gshadow", gshadow.as_bytes());
    std::fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o640))
        .unwrap_or_else(|e| panic!("chmod: {e}"));
    s.manifest(
        "site.yaml",
        "resources:\n  - group: sudo\n    members: [justin]\n",
    );
    let plan = s.run("plan", &["--detailed-exitcode", "site.yaml"]);
    plan.assert_code(2);
    assert!(
        plan.stdout()
            .contains("members (gshadow): daemon,justin → justin"),
        "{}",
        plan.all()
    );
    s.converge(&["site.yaml"]);
    assert_eq!(
        line(&s, "/etc/gshadow", "sudo").as_deref(),
        Some("sudo:*::justin")
    );
    assert_eq!(
        line(&s, "/etc/group", "sudo").map(|l| l.ends_with(":justin")),
        Some(true)
    );
    machine.assert_unchanged();
}

#[test]
fn removing_an_account_deletes_its_own_mail_spool_and_no_one_elses() {
    if !can_apply("removing_an_account_deletes_its_own_mail_spool_and_no_one_elses") {
        return;
    }
    let machine = MachineFiles::record();
    let s = sandbox();
    s.manifest(
        "site.yaml",
        "resources:\n  - user: bob\n    uid: 3100\n    create_home: false\n  - user: dave\n    uid: 3101\n    create_home: false\n",
    );
    s.converge(&["site.yaml"]);
    let bob = s.put("/var/mail/bob", b"bob's mail\n");
    std::os::unix::fs::chown(&bob, Some(3100), Some(3100)).unwrap_or_else(|e| panic!("{e}"));
    // A spool by dave's name that dave does not own is not his to lose.
    s.put("/var/mail/dave", b"root's file\n");
    s.manifest(
        "site.yaml",
        "resources:\n  - user: bob\n    state: absent\n    remove_home: true\n  - user: dave\n    state: absent\n    remove_home: true\n",
    );
    s.converge(&["site.yaml"]);
    assert!(!s.path("/var/mail/bob").exists());
    assert_eq!(s.read("/var/mail/dave"), "root's file\n");
    assert_eq!(line(&s, "/etc/passwd", "bob"), None);
    assert_eq!(line(&s, "/etc/passwd", "dave"), None);
    machine.assert_unchanged();
}

#[test]
fn a_kind_records_its_own_decisions_in_the_audit_chain() {
    if !can_apply("a_kind_records_its_own_decisions_in_the_audit_chain") {
        return;
    }
    let s = sandbox();
    s.manifest(
        "site.yaml",
        "resources:\n  - user: ivy\n    uid: 3600\n    create_home: true\n",
    );
    s.converge(&["site.yaml"]);
    s.manifest(
        "site.yaml",
        "resources:\n  - user: ivy\n    state: absent\n    remove_home: true\n",
    );
    s.converge(&["site.yaml"]);
    let log = s.read("/var/log/reconcile/audit.jsonl");
    let decision = log
        .lines()
        .find(|l| l.contains("\"decision\"") && l.contains("account_removed"))
        .unwrap_or_else(|| panic!("no decision record:\n{log}"));
    assert!(decision.contains("user[ivy]"), "{decision}");
    assert!(
        decision.contains("\"home_deleted\":\"/home/ivy\""),
        "{decision}"
    );
    // In the same hash chain as every other record.
    let verify = s.run("audit", &["verify"]);
    assert_eq!(verify.code(), 0, "{}", verify.all());
}
