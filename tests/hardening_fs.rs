//! Filesystem hardening: hardlinked destinations, temp files of killed runs, modes of
//! copied trees, large and binary content in plans, control characters in output.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use support::sandbox::{snapshot, Sandbox};

fn outside() -> tempfile::TempDir {
    tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"))
}

fn write(path: &Path, content: &[u8]) {
    std::fs::write(path, content).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {}: {e}", path.display()));
}

fn names_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read_dir {}: {e}", dir.display()))
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

fn temp_files_in(dir: &Path) -> Vec<String> {
    names_in(dir)
        .into_iter()
        .filter(|n| n.contains(".reconcile-"))
        .collect()
}

#[test]
fn a_run_killed_during_validate_leaves_a_temp_file_logrotate_ignores_and_the_next_apply_removes() {
    let s = Sandbox::new();
    let out = outside();
    let log = s.put("/var/log/app.log", b"line\n");
    let old_policy = format!("{} {{\n  rotate 7\n  daily\n}}\n", log.display());
    s.put("/etc/logrotate.d/app", old_policy.as_bytes());
    let pid_file = out.path().join("validator.pid");
    let script = out.path().join("slow-validate");
    write(
        &script,
        format!(
            // Slow only on apply's temp file beside the destination: the plan that
            // apply makes first validates a scratch copy, which passes at once.
            "#!/bin/sh\ncase \"$1\" in *.reconcile-*) ;; *) exit 0 ;; esac\necho $$ > {}\nexec sleep 30\n",
            pid_file.display()
        )
        .as_bytes(),
    );
    chmod(&script, 0o755);
    let new_policy = format!("{} {{\\n  rotate 2555\\n  daily\\n}}\\n", log.display());
    s.manifest(
        "site.yaml",
        &format!(
            "resources:\n  - file: /etc/logrotate.d/app\n    content: \"{new_policy}\"\n    validate: \"{} %s\"\n",
            script.display()
        ),
    );
    let before_outside = snapshot(out.path());

    let mut apply = std::process::Command::new(assert_cmd::cargo::cargo_bin("reconcile"))
        .current_dir(&s.manifests)
        .args(["apply", "--root"])
        .arg(&s.root)
        .arg("site.yaml")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn: {e}"));
    let dir = s.path("/etc/logrotate.d");
    let deadline = Instant::now() + Duration::from_secs(20);
    while temp_files_in(&dir).is_empty() || !pid_file.exists() {
        assert!(Instant::now() < deadline, "no temp file appeared");
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = apply.kill();
    let _ = apply.wait();
    let validator = std::fs::read_to_string(&pid_file).unwrap_or_default();
    if let Ok(pid) = validator.trim().parse::<i32>() {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    let left = temp_files_in(&dir);
    assert_eq!(left.len(), 1, "{left:?}");
    assert!(left[0].starts_with("app.reconcile-") && left[0].ends_with('~'));
    assert_eq!(s.read("/etc/logrotate.d/app"), old_policy);

    // The real logrotate must not read the stray copy of the policy.
    let config = out.path().join("logrotate.conf");
    write(&config, format!("include {}\n", dir.display()).as_bytes());
    let rotate = std::process::Command::new("logrotate")
        .arg("-d")
        .arg("-s")
        .arg(out.path().join("state"))
        .arg(&config)
        .output();
    if let Ok(rotate) = rotate {
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&rotate.stdout),
            String::from_utf8_lossy(&rotate.stderr)
        );
        assert!(!text.contains("duplicate log entry"), "{text}");
        assert!(text.contains("(7 rotations)"), "{text}");
        assert!(!text.contains("(2555 rotations)"), "{text}");
    } else {
        eprintln!("logrotate not installed: only the temp name was checked");
    }
    let _ = std::fs::remove_file(out.path().join("state"));
    let _ = std::fs::remove_file(&config);

    // check reports the stray file as drift, read-only.
    let snap = s.snapshot();
    let check = s.run("check", &["site.yaml"]);
    check.assert_code(2);
    assert!(
        check.stdout().contains(&format!("temp file {}", left[0])),
        "{}",
        check.all()
    );
    assert_eq!(s.snapshot(), snap, "check changed the root");

    // Validation is fast now; the next apply removes the stray file.
    write(&script, b"#!/bin/sh\nexit 0\n");
    s.converge(&["site.yaml"]);
    assert!(temp_files_in(&dir).is_empty(), "{:?}", names_in(&dir));
    assert!(s.read("/etc/logrotate.d/app").contains("rotate 2555"));
    let _ = std::fs::remove_file(&pid_file);
    write(&script, b"#!/bin/sh\nexit 0\n");
    let mut after_outside = snapshot(out.path());
    after_outside.remove("slow-validate");
    let mut before = before_outside;
    before.remove("slow-validate");
    assert_eq!(after_outside, before, "outside directory changed");
}

fn mode_of(path: &Path) -> u32 {
    std::os::unix::fs::MetadataExt::mode(
        &std::fs::symlink_metadata(path).unwrap_or_else(|e| panic!("stat {}: {e}", path.display())),
    ) & 0o7777
}

#[test]
fn a_hardlinked_destination_is_refused_and_the_outside_inode_keeps_its_mode_and_content() {
    let s = Sandbox::new();
    let out = outside();
    let secret = out.path().join("shadow");
    write(&secret, b"root:outside-hash:1:0:99999:7:::\n");
    chmod(&secret, 0o600);
    std::fs::create_dir_all(s.path("/srv")).unwrap_or_else(|e| panic!("{e}"));
    std::fs::hard_link(&secret, s.path("/srv/h")).unwrap_or_else(|e| panic!("link: {e}"));
    let before = snapshot(out.path());
    for spec in [
        "    content: \"mine\\n\"\n    mode: \"0644\"\n",
        "    mode: \"0644\"\n",
        "    owner: \"1234\"\n",
    ] {
        s.manifest(
            "site.yaml",
            &format!("resources:\n  - file: /srv/h\n{spec}"),
        );
        let snap = s.snapshot();
        let plan = s.run("plan", &["site.yaml"]);
        plan.assert_code(1);
        assert!(plan.stdout().contains("2 hard links"), "{}", plan.all());
        assert!(plan.stdout().contains("hardlinks: allow"), "{}", plan.all());
        assert!(!plan.all().contains("outside-hash"), "{}", plan.all());
        assert_eq!(s.snapshot(), snap, "plan changed the root");
        let apply = s.run("apply", &["site.yaml"]);
        assert_eq!(apply.code(), 1, "{}", apply.all());
        assert!(!apply.all().contains("outside-hash"), "{}", apply.all());
        assert_eq!(snapshot(out.path()), before, "outside changed");
        assert_eq!(mode_of(&secret), 0o600);
    }
}

#[test]
fn hardlinks_allow_manages_a_hardlinked_file_in_place() {
    let s = Sandbox::new();
    let out = outside();
    let other = out.path().join("other");
    write(&other, b"shared\n");
    chmod(&other, 0o600);
    std::fs::create_dir_all(s.path("/srv")).unwrap_or_else(|e| panic!("{e}"));
    std::fs::hard_link(&other, s.path("/srv/h")).unwrap_or_else(|e| panic!("link: {e}"));
    s.manifest(
        "site.yaml",
        "resources:\n  - file: /srv/h\n    mode: \"0640\"\n    hardlinks: allow\n",
    );
    s.converge(&["site.yaml"]);
    assert_eq!(s.mode("/srv/h"), 0o640);
    s.manifest(
        "site.yaml",
        "resources:\n  - file: /srv/h\n    hardlinks: sometimes\n",
    );
    let bad = s.run("validate", &["site.yaml"]);
    assert_eq!(bad.code(), 1, "{}", bad.all());
    assert!(bad.stderr().contains("site.yaml:3:"), "{}", bad.all());
}

#[test]
fn a_hardlinked_entry_of_a_copied_tree_is_refused_and_the_outside_inode_is_unchanged() {
    let s = Sandbox::new();
    let out = outside();
    let secret = out.path().join("key");
    write(&secret, b"outside-key\n");
    chmod(&secret, 0o600);
    s.put("/srv/src/key", b"new key\n");
    chmod(&s.path("/srv/src/key"), 0o640);
    std::fs::create_dir_all(s.path("/srv/copy")).unwrap_or_else(|e| panic!("{e}"));
    std::fs::hard_link(&secret, s.path("/srv/copy/key")).unwrap_or_else(|e| panic!("link: {e}"));
    s.manifest(
        "site.yaml",
        "resources:\n  - directory: /srv/copy\n    source: /srv/src\n",
    );
    let before = snapshot(out.path());
    let plan = s.run("plan", &["site.yaml"]);
    plan.assert_code(1);
    assert!(plan.stdout().contains("hard links"), "{}", plan.all());
    assert!(!plan.all().contains("outside-key"), "{}", plan.all());
    let apply = s.run("apply", &["site.yaml"]);
    assert_eq!(apply.code(), 1, "{}", apply.all());
    assert_eq!(snapshot(out.path()), before, "outside changed");
}

#[test]
fn a_copied_tree_keeps_the_source_modes_and_warns_when_a_mode_widens_them() {
    let s = Sandbox::new();
    let out = outside();
    s.put("/srv/etc/shadow", b"root:x:1::::::\n");
    s.put("/srv/etc/motd", b"hello\n");
    s.put("/srv/etc/ssh/key", b"private\n");
    chmod(&s.path("/srv/etc/shadow"), 0o640);
    chmod(&s.path("/srv/etc/motd"), 0o644);
    chmod(&s.path("/srv/etc/ssh/key"), 0o600);
    chmod(&s.path("/srv/etc/ssh"), 0o700);
    s.manifest(
        "site.yaml",
        "resources:\n  - directory: /srv/copy\n    source: /srv/etc\n",
    );
    let before = snapshot(out.path());
    let plan = s.run("plan", &["site.yaml"]);
    plan.assert_code(0);
    assert!(!plan.stdout().contains("wider"), "{}", plan.all());
    s.converge(&["site.yaml"]);
    assert_eq!(s.mode("/srv/copy/shadow"), 0o640);
    assert_eq!(s.mode("/srv/copy/motd"), 0o644);
    assert_eq!(s.mode("/srv/copy/ssh"), 0o700);
    assert_eq!(s.mode("/srv/copy/ssh/key"), 0o600);

    // An explicit file_mode wins, and the plan says where it widens the source.
    s.manifest(
        "site.yaml",
        "resources:\n  - directory: /srv/copy\n    source: /srv/etc\n    file_mode: \"0644\"\n",
    );
    let plan = s.run("plan", &["site.yaml"]);
    plan.assert_code(0);
    let text = plan.stdout();
    assert!(
        text.contains("warning: shadow: the copy would be 0644 where the source is 0640"),
        "{text}"
    );
    assert!(
        text.contains("ssh/key: the copy would be 0644 where the source is 0600"),
        "{text}"
    );
    assert!(!text.contains("motd: the copy"), "{text}");
    s.converge(&["site.yaml"]);
    assert_eq!(s.mode("/srv/copy/ssh/key"), 0o644);
    assert_eq!(snapshot(out.path()), before, "outside changed");
}

/// Runs `reconcile ARGS` under `/usr/bin/time -v`: its peak RSS in KiB, if measurable.
fn peak_rss_kib(s: &Sandbox, args: &[&str]) -> (Option<u64>, support::sandbox::Run) {
    let bin = assert_cmd::cargo::cargo_bin("reconcile");
    let time = Path::new("/usr/bin/time");
    let mut c = if time.is_file() {
        let mut c = std::process::Command::new(time);
        c.arg("-v").arg(&bin);
        c
    } else {
        std::process::Command::new(&bin)
    };
    let [cmd, rest @ ..] = args else {
        panic!("no command");
    };
    c.current_dir(&s.manifests)
        .env("NO_COLOR", "1")
        .arg(cmd)
        .arg("--root")
        .arg(&s.root)
        .args(rest);
    let out = c.output().unwrap_or_else(|e| panic!("run: {e}"));
    let rss = String::from_utf8_lossy(&out.stderr)
        .lines()
        .find_map(|l| {
            l.trim()
                .strip_prefix("Maximum resident set size (kbytes): ")
        })
        .and_then(|v| v.trim().parse().ok());
    (rss, support::sandbox::Run(out))
}

#[test]
fn a_large_source_and_destination_are_hashed_not_read_whole_and_the_plan_stays_small() {
    const BIG: u64 = 128 << 20;
    let s = Sandbox::new();
    let out = outside();
    std::fs::create_dir_all(s.path("/srv")).unwrap_or_else(|e| panic!("{e}"));
    let sparse = |p: &Path, tail: &[u8]| {
        let f = std::fs::File::create(p).unwrap_or_else(|e| panic!("create: {e}"));
        f.set_len(BIG).unwrap_or_else(|e| panic!("truncate: {e}"));
        std::os::unix::fs::FileExt::write_all_at(&f, tail, BIG - 8)
            .unwrap_or_else(|e| panic!("write: {e}"));
    };
    sparse(&s.path("/srv/big.img"), b"old-tail");
    sparse(&s.path("/srv/source.img"), b"new-tail");
    s.manifest(
        "site.yaml",
        "resources:\n  - file: /srv/big.img\n    source: /srv/source.img\n  - file: /srv/small\n    content: \"x\\n\"\n",
    );
    let before = snapshot(out.path());
    let (rss, plan) = peak_rss_kib(&s, &["plan", "site.yaml"]);
    plan.assert_code(0);
    let text = plan.stdout();
    assert!(
        text.contains(&format!("content differs ({BIG} bytes → {BIG} bytes)")),
        "{text}"
    );
    assert!(text.len() < 4096, "plan output is {} bytes", text.len());
    if let Some(kib) = rss {
        assert!(kib < 100 * 1024, "plan peak RSS {kib} KiB");
    }
    let (rss, apply) = peak_rss_kib(&s, &["apply", "site.yaml"]);
    apply.assert_code(0);
    if let Some(kib) = rss {
        assert!(kib < 100 * 1024, "apply peak RSS {kib} KiB");
    }
    let plan = s.run("plan", &["--detailed-exitcode", "site.yaml"]);
    plan.assert_code(0);
    let copied = std::fs::metadata(s.path("/srv/big.img")).map(|m| m.len());
    assert_eq!(copied.ok(), Some(BIG));
    let mut tail = [0u8; 8];
    let f = std::fs::File::open(s.path("/srv/big.img")).unwrap_or_else(|e| panic!("{e}"));
    std::os::unix::fs::FileExt::read_exact_at(&f, &mut tail, BIG - 8)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(&tail, b"new-tail");
    assert_eq!(snapshot(out.path()), before, "outside changed");
}

#[test]
fn diff_limit_sets_the_size_above_which_content_is_summarised() {
    let s = Sandbox::new();
    s.put("/etc/app.conf", b"a = 1\n");
    s.manifest(
        "site.yaml",
        "resources:\n  - file: /etc/app.conf\n    content: \"a = 2\\nb = 3\\n\"\n",
    );
    let plan = s.run("plan", &["site.yaml"]);
    assert!(plan.stdout().contains("+a = 2"), "{}", plan.all());
    let plan = s.run("plan", &["--diff-limit", "8", "site.yaml"]);
    plan.assert_code(0);
    assert!(
        plan.stdout()
            .contains("note: content differs (6 bytes → 12 bytes)"),
        "{}",
        plan.all()
    );
    assert!(!plan.stdout().contains("+a = 2"), "{}", plan.all());
    let check = s.run("check", &["--diff-limit", "8", "site.yaml"]);
    check.assert_code(2);
    assert!(
        check
            .stdout()
            .contains("content differs (6 bytes → 12 bytes)"),
        "{}",
        check.all()
    );
    let apply = s.run("apply", &["--diff-limit", "8", "site.yaml"]);
    apply.assert_code(0);
    assert!(
        apply
            .stdout()
            .contains("content differs (6 bytes → 12 bytes)"),
        "{}",
        apply.all()
    );
    s.converge(&["site.yaml"]);
}

#[test]
fn plan_and_check_escape_terminal_codes_and_summarise_binary_content() {
    let s = Sandbox::new();
    s.put("/etc/banner", b"hello\n\x1b]0;owned\x07\x1b[2J\tend\n");
    s.put("/srv/blob", b"\x00\x01\x02binary\xff");
    s.manifest(
        "site.yaml",
        "resources:\n  - file: /etc/banner\n    content: \"hello\\n\"\n  - file: /srv/blob\n    content: \"text\\n\"\n  - file: /srv/new.bin\n    content: \"a\\u0000b\"\n",
    );
    let snap = s.snapshot();
    for cmd in ["plan", "check"] {
        let run = s.run(cmd, &["site.yaml"]);
        let out = run.stdout();
        assert!(
            !out.contains('\x1b') && !out.contains('\x07'),
            "{cmd}: {out:?}"
        );
        assert!(!out.contains('\0'), "{cmd}: {out:?}");
        assert!(
            out.contains("-\\u{1b}]0;owned\\u{7}\\u{1b}[2J\tend"),
            "{cmd}: {out}"
        );
        assert!(
            out.contains("note: content differs (binary, 10 bytes → 5 bytes)"),
            "{cmd}: {out}"
        );
        assert!(
            out.contains("note: content differs (0 bytes → binary, 3 bytes)"),
            "{cmd}: {out}"
        );
        assert!(!out.contains("binary\u{fffd}"), "{cmd}: {out}");
    }
    assert_eq!(s.snapshot(), snap, "plan/check changed the root");
    let json = s.run("plan", &["--format", "json", "site.yaml"]);
    assert!(!json.stdout().contains('\x1b'), "{}", json.all());
    s.converge(&["site.yaml"]);
}

#[test]
fn a_dead_runs_temp_file_in_a_copied_tree_is_reported_by_check_and_removed_by_apply() {
    let s = Sandbox::new();
    s.put("/srv/src/app.conf", b"a\n");
    s.manifest(
        "site.yaml",
        "resources:\n  - directory: /srv/copy\n    source: /srv/src\n",
    );
    s.converge(&["site.yaml"]);
    // pid 2^22+1 is above the kernel's pid_max limit: never a live process.
    let stray = "app.conf.reconcile-4194305-0~";
    s.put(&format!("/srv/copy/{stray}"), b"half-written\n");
    let lookalike = "app.conf.reconcile-4194305-x~";
    s.put(&format!("/srv/copy/{lookalike}"), b"not ours\n");
    let snap = s.snapshot();
    let check = s.run("check", &["site.yaml"]);
    check.assert_code(2);
    assert!(
        check
            .stdout()
            .contains(&format!("app.conf: temp file {stray}")),
        "{}",
        check.all()
    );
    assert_eq!(s.snapshot(), snap, "check changed the root");
    s.converge(&["site.yaml"]);
    assert!(!s.path(&format!("/srv/copy/{stray}")).exists());
    assert!(s.path(&format!("/srv/copy/{lookalike}")).exists());

    // A copy half-built beside a symlink it was to replace, by a killed run.
    s.put("/srv/.copy.reconcile-new/app.conf", b"a\n");
    let check = s.run("check", &["site.yaml"]);
    check.assert_code(2);
    assert!(
        check
            .stdout()
            .contains("temp file /srv/.copy.reconcile-new: left by a killed run"),
        "{}",
        check.all()
    );
    s.converge(&["site.yaml"]);
    assert!(!s.path("/srv/.copy.reconcile-new").exists());
}

#[test]
fn copying_a_users_setuid_program_root_owned_is_warned() {
    if !support::sandbox::require_root("copying_a_users_setuid_program_root_owned_is_warned") {
        return;
    }
    let s = Sandbox::new();
    let prog = s.put("/srv/src/tool", b"#!/bin/sh\n");
    std::os::unix::fs::chown(&prog, Some(1234), Some(1234)).unwrap_or_else(|e| panic!("{e}"));
    chmod(&prog, 0o4755);
    s.manifest(
        "site.yaml",
        "resources:\n  - directory: /srv/copy\n    source: /srv/src\n",
    );
    let plan = s.run("plan", &["site.yaml"]);
    plan.assert_code(0);
    assert!(
        plan.stdout().contains(
            "warning: tool: keeps setuid of a source owned by 1234:1234 on a copy owned by 0:0"
        ),
        "{}",
        plan.all()
    );
}

#[test]
fn a_fifo_in_a_shipped_tree_is_refused_at_plan_without_blocking() {
    let s = Sandbox::new();
    s.manifest("files/tree/ok.conf", "fine\n");
    let fifo = s.manifests.join("files/tree/pipe");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600))
        .unwrap_or_else(|e| panic!("mkfifo: {e}"));
    s.manifest(
        "site.yaml",
        "resources:\n  - directory: /opt/tree\n    source: files/tree\n",
    );
    let before = s.snapshot();
    for cmd in ["plan", "check", "apply"] {
        let mut child = std::process::Command::new(assert_cmd::cargo::cargo_bin("reconcile"))
            .current_dir(&s.manifests)
            .args([cmd, "--root"])
            .arg(&s.root)
            .arg("site.yaml")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn: {e}"));
        let deadline = Instant::now() + Duration::from_secs(30);
        while child.try_wait().ok().flatten().is_none() {
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("`{cmd}` blocked on the FIFO");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let out = child.wait_with_output().unwrap_or_else(|e| panic!("{e}"));
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(out.status.code(), Some(1), "{cmd}: {text}");
        assert!(
            text.contains("pipe: is a FIFO (named pipe), not a regular file"),
            "{cmd}: {text}"
        );
        assert!(!s.path("/opt/tree").exists(), "{cmd} created the copy");
    }
    let mut after = s.snapshot();
    // apply keeps its audit trail; nothing else may change.
    after.retain(|k, _| !k.starts_with("var/") && !k.starts_with("run"));
    let mut before = before;
    before.retain(|k, _| !k.starts_with("var/") && !k.starts_with("run"));
    assert_eq!(after, before);
}
