//! The `unit` kind: offline against temp roots (systemctl --root, systemd-analyze),
//! live in booted test hosts with a real systemd (see tests/support/testhost.rs).

mod support;

use std::time::Duration;

use support::sandbox::Sandbox;
use support::testhost::{boot_or_skip, in_ci, TestHost};

/// Offline tests need systemctl and systemd-analyze on this machine (never acting on
/// it: only `--root` into the sandbox).
fn systemd_tools_or_skip(test: &str) -> bool {
    let missing: Vec<&str> = ["systemctl", "systemd-analyze"]
        .into_iter()
        .filter(|t| {
            !["/usr/bin", "/bin", "/usr/sbin", "/sbin"]
                .iter()
                .any(|d| std::path::Path::new(d).join(t).is_file())
        })
        .collect();
    if missing.is_empty() {
        return true;
    }
    if in_ci() {
        panic!("{test}: missing {} under CI=true", missing.join(", "));
    }
    eprintln!("skipping {test}: missing {}", missing.join(", "));
    false
}

/// The upgrade service, fixed per SEED-NOTES 2: it runs as root (dpkg must write
/// /usr, /etc, /var and create setuid files), so ProtectSystem=, RestrictSUIDSGID=,
/// ProtectKernelModules=, PrivateDevices= and User= are deliberately absent; every
/// hardening dpkg can live with is kept. The application keeps its service account.
const UPGRADE_SERVICE: &str = r##"
  - unit: rc-upgrade.service
    max_exposure: MAX
    sections:
      Unit:
        Description: Guarded package upgrade (reconcile)
        After: network-online.target
        Wants: network-online.target
      Service:
        Type: oneshot
        ExecStart: /usr/local/sbin/rc-upgrade --window sun-02
        NoNewPrivileges: true
        PrivateTmp: true
        ProtectHome: true
        ProtectControlGroups: true
        ProtectClock: true
        ProtectHostname: true
        ProtectKernelLogs: true
        RestrictRealtime: true
        RestrictNamespaces: true
        LockPersonality: true
        SystemCallArchitectures: native
        RestrictAddressFamilies: AF_UNIX AF_INET AF_INET6 AF_NETLINK
        CapabilityBoundingSet: CAP_CHOWN CAP_DAC_OVERRIDE CAP_DAC_READ_SEARCH CAP_FOWNER CAP_FSETID CAP_SETUID CAP_SETGID CAP_SETFCAP CAP_KILL
        SystemCallFilter: "~@clock @cpu-emulation @debug @module @mount @obsolete @raw-io @reboot @swap"
        Environment: [HEALTHCARE_MODE=production, AUDIT_REQUIRED=true]
        MemoryMax: 512M
        TasksMax: 50
        TimeoutStartSec: 1800
        SyslogIdentifier: rc-upgrade
  - file: /usr/local/sbin/rc-upgrade
    mode: "0755"
    content: "#!/bin/sh\nexit 0\n"
"##;

/// The timer, fixed per SEED-NOTES 3: no Requires= on the service it triggers.
const UPGRADE_TIMER: &str = r#"
  - unit: rc-upgrade.timer
    enabled: true
    active: true
    sections:
      Unit:
        Description: Maintenance window for rc-upgrade
      Timer:
        OnCalendar: Sun *-*-* 02:00:00
        RandomizedDelaySec: 1800
        AccuracySec: 15min
        Persistent: true
      Install:
        WantedBy: timers.target
"#;

fn upgrade_manifest(max: &str) -> String {
    format!(
        "resources:{}{}",
        UPGRADE_SERVICE.replace("MAX", max),
        UPGRADE_TIMER
    )
}

#[test]
fn offline_hardened_service_and_timer_from_sections_converge() {
    if !systemd_tools_or_skip("offline_hardened_service_and_timer_from_sections_converge") {
        return;
    }
    let s = Sandbox::new();
    s.manifest("site.yaml", &upgrade_manifest("4.5"));
    let plan = s.run("plan", &["--detailed-exitcode", "site.yaml"]);
    plan.assert_code(2);
    let out = plan.stdout();
    assert!(out.contains("+ unit[rc-upgrade.service]"), "{}", plan.all());
    assert!(out.contains("+ unit[rc-upgrade.timer]"), "{}", plan.all());
    assert!(out.contains("offline: no running systemd"), "{out}");
    assert!(out.contains("systemd-analyze verify: no problems"), "{out}");
    assert!(
        out.contains("exposure 4.0 OK (max_exposure 4.5)"),
        "exposure note missing:\n{out}"
    );
    assert!(
        out.contains("active: true is not manageable offline"),
        "offline `active` must be reported, not skipped:\n{out}"
    );
    // The ExecStart binary is declared, so no missing-binary warning.
    assert!(!out.contains("does not exist on the target"), "{out}");

    s.converge(&["site.yaml"]);
    let service = s.read("/etc/systemd/system/rc-upgrade.service");
    let unit = service.find("[Unit]").unwrap_or(usize::MAX);
    let svc = service.find("[Service]").unwrap_or(usize::MAX);
    assert!(unit < svc, "sections out of order:\n{service}");
    assert!(!service.contains("[Install]"), "{service}");
    for line in [
        "NoNewPrivileges=yes\n",
        "Environment=HEALTHCARE_MODE=production\nEnvironment=AUDIT_REQUIRED=true\n",
        "MemoryMax=512M\n",
        "SystemCallFilter=~@clock @cpu-emulation",
    ] {
        assert!(service.contains(line), "missing {line:?} in\n{service}");
    }
    assert_eq!(s.mode("/etc/systemd/system/rc-upgrade.service"), 0o644);
    let timer = s.read("/etc/systemd/system/rc-upgrade.timer");
    assert!(
        timer.contains("[Timer]\nOnCalendar=Sun *-*-* 02:00:00\n"),
        "{timer}"
    );
    assert!(timer.contains("Persistent=yes\n"), "{timer}");
    assert!(!timer.contains("Requires="), "{timer}");

    // A mode changed by hand is fixed in place.
    std::fs::set_permissions(
        s.path("/etc/systemd/system/rc-upgrade.timer"),
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap_or_else(|e| panic!("chmod: {e}"));
    let plan = s.run("plan", &["--detailed-exitcode", "site.yaml"]);
    plan.assert_code(2);
    assert!(
        plan.stdout().contains("mode: 0600 → 0644"),
        "{}",
        plan.all()
    );
    assert!(!plan.stdout().contains("content:"), "{}", plan.all());
    s.converge(&["site.yaml"]);
    assert_eq!(s.mode("/etc/systemd/system/rc-upgrade.timer"), 0o644);
}

#[test]
fn offline_check_does_not_reverify_units_already_in_place() {
    if !systemd_tools_or_skip("offline_check_does_not_reverify_units_already_in_place") {
        return;
    }
    let s = Sandbox::new();
    s.manifest("site.yaml", &upgrade_manifest("4.5"));
    s.converge(&["site.yaml"]);

    // -vv logs every program run on the target (program and verb only).
    let analyze = |run: &support::sandbox::Run| {
        run.stderr()
            .lines()
            .filter(|l| l.contains("program=systemd-analyze"))
            .map(str::to_string)
            .collect::<Vec<_>>()
            .join("\n")
    };

    // In sync: check spawns no validation at all.
    let check = s.run("check", &["-vv", "site.yaml"]);
    check.assert_code(0);
    assert_eq!(analyze(&check), "", "check re-verified units in place");

    // A plan still verifies and scores what is declared.
    let plan = s.run("plan", &["-vv", "site.yaml"]);
    plan.assert_code(0);
    let plan_calls = analyze(&plan);
    assert!(plan_calls.contains("verb=verify"), "{}", plan.all());
    assert!(plan_calls.contains("verb=security"), "{}", plan.all());

    // Drifted content is about to be written again: check verifies it.
    std::fs::write(
        s.path("/etc/systemd/system/rc-upgrade.service"),
        "[Service]\nExecStart=/bin/true\n",
    )
    .unwrap_or_else(|e| panic!("write: {e}"));
    let drift = s.run("check", &["-vv", "site.yaml"]);
    drift.assert_code(2);
    assert!(analyze(&drift).contains("verb=verify"), "{}", drift.all());
}

#[test]
fn offline_enable_creates_the_install_symlinks_and_disable_removes_them() {
    if !systemd_tools_or_skip(
        "offline_enable_creates_the_install_symlinks_and_disable_removes_them",
    ) {
        return;
    }
    let s = Sandbox::new();
    s.manifest("site.yaml", &upgrade_manifest("4.5"));
    s.converge(&["site.yaml"]);
    let link = s.path("/etc/systemd/system/timers.target.wants/rc-upgrade.timer");
    let target = std::fs::read_link(&link).unwrap_or_else(|e| panic!("{}: {e}", link.display()));
    assert_eq!(
        target,
        std::path::Path::new("/etc/systemd/system/rc-upgrade.timer")
    );
    // The service has no [Install]: nothing links it (it runs from the timer only).
    assert!(!s
        .path("/etc/systemd/system/multi-user.target.wants/rc-upgrade.service")
        .exists());

    s.manifest(
        "site.yaml",
        &upgrade_manifest("4.5").replace("enabled: true", "enabled: false"),
    );
    let plan = s.run("plan", &["--detailed-exitcode", "site.yaml"]);
    plan.assert_code(2);
    assert!(
        plan.stdout().contains("enabled: enabled → disabled"),
        "{}",
        plan.all()
    );
    s.converge(&["site.yaml"]);
    assert!(
        std::fs::symlink_metadata(&link).is_err(),
        "the wants link is still there"
    );
}

#[test]
fn enabling_a_timer_through_a_symlinked_wants_directory_is_refused_and_nothing_outside_changes() {
    if !systemd_tools_or_skip(
        "enabling_a_timer_through_a_symlinked_wants_directory_is_refused_and_nothing_outside_changes",
    ) {
        return;
    }
    let s = Sandbox::new();
    let outside = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    std::fs::write(outside.path().join("keep"), b"outside\n").unwrap_or_else(|e| panic!("{e}"));
    std::fs::create_dir_all(s.path("/etc/systemd/system")).unwrap_or_else(|e| panic!("{e}"));
    std::os::unix::fs::symlink(
        outside.path(),
        s.path("/etc/systemd/system/timers.target.wants"),
    )
    .unwrap_or_else(|e| panic!("symlink: {e}"));
    let before = support::sandbox::snapshot(outside.path());
    s.manifest("site.yaml", &upgrade_manifest("9.9"));
    let snap = s.snapshot();
    let plan = s.run("plan", &["site.yaml"]);
    plan.assert_code(1);
    assert!(
        plan.stdout().contains("timers.target.wants") && plan.stdout().contains("systemctl --root"),
        "{}",
        plan.all()
    );
    assert_eq!(s.snapshot(), snap, "plan changed the root");
    let apply = s.run("apply", &["site.yaml"]);
    assert_eq!(apply.code(), 1, "{}", apply.all());
    assert_eq!(
        support::sandbox::snapshot(outside.path()),
        before,
        "outside directory changed"
    );
    assert!(!outside.path().join("rc-upgrade.timer").exists());
}

#[test]
fn a_hardlinked_unit_file_is_refused_without_showing_the_other_names_content() {
    let s = Sandbox::new();
    let outside = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let other = outside.path().join("other.conf");
    std::fs::write(&other, b"outside-secret\n").unwrap_or_else(|e| panic!("{e}"));
    std::fs::create_dir_all(s.path("/etc/systemd/system")).unwrap_or_else(|e| panic!("{e}"));
    std::fs::hard_link(&other, s.path("/etc/systemd/system/rc-job.service"))
        .unwrap_or_else(|e| panic!("link: {e}"));
    let before = support::sandbox::snapshot(outside.path());
    s.manifest(
        "site.yaml",
        "resources:\n  - unit: rc-job.service\n    sections:\n      Service: { Type: oneshot, ExecStart: /bin/true }\n",
    );
    let plan = s.run("plan", &["site.yaml"]);
    plan.assert_code(1);
    assert!(plan.stdout().contains("2 hard links"), "{}", plan.all());
    assert!(!plan.all().contains("outside-secret"), "{}", plan.all());
    let apply = s.run("apply", &["site.yaml"]);
    assert_eq!(apply.code(), 1, "{}", apply.all());
    assert_eq!(
        support::sandbox::snapshot(outside.path()),
        before,
        "outside changed"
    );
}

#[test]
fn a_temp_file_a_killed_run_left_beside_a_unit_file_is_reported_and_swept() {
    if !systemd_tools_or_skip(
        "a_temp_file_a_killed_run_left_beside_a_unit_file_is_reported_and_swept",
    ) {
        return;
    }
    let s = Sandbox::new();
    s.manifest(
        "site.yaml",
        "resources:\n  - unit: rc-job.service\n    sections:\n      Service: { Type: oneshot, ExecStart: /bin/true }\n",
    );
    s.converge(&["site.yaml"]);
    let unit_file = s.read("/etc/systemd/system/rc-job.service");
    // Half a unit file by a writer that is gone (no pid is above the kernel's maximum),
    // and a name that only looks like a temp file.
    let stray = "rc-job.service.reconcile-4194305-0~";
    let lookalike = "rc-job.service.reconcile-new~";
    s.put(
        &format!("/etc/systemd/system/{stray}"),
        b"[Service]\nExecStart=/bin/tr",
    );
    s.put(&format!("/etc/systemd/system/{lookalike}"), b"not ours\n");
    let snap = s.snapshot();
    let check = s.run("check", &["site.yaml"]);
    check.assert_code(2);
    assert!(
        check
            .stdout()
            .contains(&format!("temp file {stray}: left by a killed run")),
        "{}",
        check.all()
    );
    assert!(!check.stdout().contains(lookalike), "{}", check.all());
    assert_eq!(s.snapshot(), snap, "check changed the root");
    s.converge(&["site.yaml"]);
    assert!(!s.path(&format!("/etc/systemd/system/{stray}")).exists());
    assert!(s.path(&format!("/etc/systemd/system/{lookalike}")).exists());
    assert_eq!(s.read("/etc/systemd/system/rc-job.service"), unit_file);
}

#[test]
fn offline_verify_rejects_a_typo_and_a_bad_value_naming_the_manifest_line() {
    if !systemd_tools_or_skip(
        "offline_verify_rejects_a_typo_and_a_bad_value_naming_the_manifest_line",
    ) {
        return;
    }
    let s = Sandbox::new();
    s.manifest(
        "site.yaml",
        // A key near no known one (a near miss is refused at load: see
        // tests/diagnostics.rs), so that it reaches systemd's verify.
        "resources:\n  - unit: rc-typo.service\n    sections:\n      Service:\n        ExecStart: /bin/true\n        Xyzzy: yes\n",
    );
    let before = s.snapshot();
    let plan = s.run("plan", &["site.yaml"]);
    plan.assert_code(1);
    let all = plan.all();
    assert!(
        all.contains("Unknown key 'Xyzzy' in section [Service]"),
        "{all}"
    );
    assert!(
        all.contains("/etc/systemd/system/rc-typo.service:"),
        "{all}"
    );
    assert!(
        all.contains("site.yaml:6:"),
        "the manifest line of the key:\n{all}"
    );
    let apply = s.run("apply", &["site.yaml"]);
    assert_eq!(apply.code(), 1, "{}", apply.all());
    assert_eq!(s.snapshot(), before, "a rejected unit must not be written");

    // A bad value (verify exits 0 on it; stderr decides).
    s.manifest(
        "site.yaml",
        "resources:\n  - unit: rc-typo.service\n    content: |\n      [Service]\n      Type=bogus\n      ExecStart=/bin/true\n",
    );
    let plan = s.run("plan", &["site.yaml"]);
    plan.assert_code(1);
    assert!(
        plan.all().contains("Failed to parse service type"),
        "{}",
        plan.all()
    );
}

#[test]
fn offline_exposure_above_max_is_an_error() {
    if !systemd_tools_or_skip("offline_exposure_above_max_is_an_error") {
        return;
    }
    let s = Sandbox::new();
    s.manifest("site.yaml", &upgrade_manifest("2.0"));
    let plan = s.run("plan", &["site.yaml"]);
    plan.assert_code(1);
    let all = plan.all();
    assert!(
        all.contains("exposure 4.0 OK is above max_exposure 2"),
        "{all}"
    );
    assert!(
        all.contains("largest contributions: PrivateNetwork= +0.5"),
        "{all}"
    );
}

#[test]
fn offline_runbook_mistakes_are_caught() {
    if !systemd_tools_or_skip("offline_runbook_mistakes_are_caught") {
        return;
    }
    let s = Sandbox::new();
    // SEED-NOTES 7: hardening appended after [Install] lands in [Install].
    s.manifest(
        "site.yaml",
        "resources:\n  - unit: rc-app.service\n    content: |\n      [Service]\n      ExecStart=/bin/true\n      [Install]\n      WantedBy=multi-user.target\n      ProtectSystem=strict\n",
    );
    let run = s.run("plan", &["site.yaml"]);
    run.assert_code(1);
    assert!(
        run.all()
            .contains("ProtectSystem= is not an [Install] setting"),
        "{}",
        run.all()
    );

    // SEED-NOTES 3: Requires= from a timer on its service is a warning.
    s.manifest(
        "site.yaml",
        "resources:\n  - unit: rc-job.service\n    sections:\n      Service: { Type: oneshot, ExecStart: /bin/true }\n  - unit: rc-job.timer\n    sections:\n      Unit: { Requires: rc-job.service }\n      Timer: { OnCalendar: daily }\n",
    );
    let run = s.run("plan", &["site.yaml"]);
    assert_eq!(run.code(), 0, "{}", run.all());
    assert!(
        run.all()
            .contains("Requires=rc-job.service in a timer starts rc-job.service at once"),
        "{}",
        run.all()
    );

    // SEED-NOTES 9: reloading a oneshot without ExecReload= always fails.
    s.manifest(
        "site.yaml",
        "resources:\n  - unit: rc-job.service\n    on_notify: reload\n    sections:\n      Service: { Type: oneshot, ExecStart: /bin/true }\n",
    );
    let run = s.run("plan", &["site.yaml"]);
    run.assert_code(1);
    assert!(run.all().contains("has no ExecReload="), "{}", run.all());

    // A oneshot that never stays active cannot be `active: true`.
    s.manifest(
        "site.yaml",
        "resources:\n  - unit: rc-job.service\n    active: true\n    sections:\n      Service: { Type: oneshot, ExecStart: /bin/true }\n",
    );
    let run = s.run("plan", &["site.yaml"]);
    run.assert_code(1);
    assert!(run.all().contains("RemainAfterExit=yes"), "{}", run.all());

    // The runbook enables its timer-triggered service with WantedBy=multi-user.target:
    // it would also run at every boot.
    s.manifest(
        "site.yaml",
        "resources:\n  - unit: rc-job.service\n    enabled: true\n    sections:\n      Service: { Type: oneshot, ExecStart: /bin/true }\n      Install: { WantedBy: multi-user.target }\n  - unit: rc-job.timer\n    sections:\n      Timer: { OnCalendar: daily }\n",
    );
    let run = s.run("plan", &["site.yaml"]);
    assert_eq!(run.code(), 0, "{}", run.all());
    assert!(
        run.all().contains("it runs at every boot too"),
        "{}",
        run.all()
    );

    // Unit types other than the managed ones are refused by name.
    s.manifest(
        "site.yaml",
        "resources:\n  - unit: sda.device\n    enabled: true\n",
    );
    let run = s.run("plan", &["site.yaml"]);
    run.assert_code(1);
    assert!(
        run.all().contains("`.device` units are not managed"),
        "{}",
        run.all()
    );
}

#[test]
fn offline_template_input_and_json_plan() {
    if !systemd_tools_or_skip("offline_template_input_and_json_plan") {
        return;
    }
    let s = Sandbox::new();
    s.manifest(
        "templates/app.service.tera",
        "[Unit]\nDescription={{ app }} on {{ host.hostname }}\n\n[Service]\nExecStart=/bin/true\nUser={{ svc_user }}\n",
    );
    s.manifest(
        "site.yaml",
        "vars: { app: intelluxe, svc_user: intelluxe-service }\nresources:\n  - unit: rc-app.service\n    template: app.service.tera\n",
    );
    s.put("/etc/hostname", b"clinic-01\n");
    // User= must name an account of the target (or a declared one).
    s.put(
        "/etc/passwd",
        b"root:x:0:0:root:/root:/bin/sh\nintelluxe-service:x:2000:2000::/:/bin/false\n",
    );
    let plan = s.run("plan", &["--format", "json", "site.yaml"]);
    assert_eq!(plan.code(), 0, "{}", plan.all());
    let v: serde_json::Value =
        serde_json::from_str(&plan.stdout()).unwrap_or_else(|e| panic!("{e}: {}", plan.all()));
    let text = v.to_string();
    assert!(text.contains("unit[rc-app.service]"), "{text}");
    assert!(
        text.contains("exposure "),
        "the score is in the JSON plan too: {text}"
    );
    assert!(text.contains("offline: no running systemd"), "{text}");
    s.converge(&["site.yaml"]);
    assert!(
        s.read("/etc/systemd/system/rc-app.service")
            .contains("Description=intelluxe on clinic-01\nUser=intelluxe-service\n")
            || s.read("/etc/systemd/system/rc-app.service")
                .contains("Description=intelluxe on clinic-01\n")
    );
    assert!(s
        .read("/etc/systemd/system/rc-app.service")
        .contains("User=intelluxe-service\n"));
}

#[test]
fn manifest_mistakes_are_load_errors_naming_the_place() {
    let s = Sandbox::new();
    let cases: &[(&str, &str)] = &[
        (
            "  - unit: rc-a.service\n    sections:\n      service: { ExecStart: /bin/true }\n",
            "did you mean `Service`?",
        ),
        (
            "  - unit: rc-a.service\n    sections:\n      Timer: { OnCalendar: daily }\n",
            "section [Timer] does not belong in a service unit",
        ),
        (
            "  - unit: rc-a.service\n    sections:\n      Service:\n        ExecStart: \"/bin/true\\n[Service]\\nUser=root\"\n",
            "a value must be one line",
        ),
        ("  - unit: rc-a\n    enabled: true\n", "needs its type suffix"),
        (
            "  - unit: rc-a.service\n    dropin: x.conf\n    enabled: true\n    content: \"[Service]\\n\"\n",
            "belongs to the unit, not to a drop-in",
        ),
        (
            "  - unit: rc-a.service\n    masked: true\n    content: \"[Service]\\nExecStart=/bin/true\\n\"\n",
            "a masked unit is a link to /dev/null",
        ),
        (
            "  - unit: rc-a.service\n    content: x\n    template: y.tera\n",
            "give exactly one of `sections`, `content` and `template`",
        ),
        ("  - unit: rc-a.timer\n    max_exposure: 3\n", "only services have an exposure score"),
        ("  - unit: rc-a.service\n    max_exposure: 11\n", "is not an exposure score"),
        (
            "  - unit: rc-a.service\n    restart_on: [\"file[/etc/nope]\"]\n",
            "file[/etc/nope] is not declared",
        ),
    ];
    for (entry, expected) in cases {
        s.manifest("site.yaml", &format!("resources:\n{entry}"));
        let run = s.run("plan", &["site.yaml"]);
        assert_eq!(run.code(), 1, "{entry}\n{}", run.all());
        assert!(
            run.all().contains(expected),
            "{entry}: expected {expected:?} in\n{}",
            run.all()
        );
        assert!(run.all().contains("site.yaml:"), "{}", run.all());
    }
}

#[test]
fn offline_dropin_is_written_beside_the_unit_and_verified() {
    if !systemd_tools_or_skip("offline_dropin_is_written_beside_the_unit_and_verified") {
        return;
    }
    let s = Sandbox::new();
    let manifest = r#"
resources:
  - unit: rc-app.service
    sections:
      Service: { ExecStart: /bin/sleep infinity }
      Install: { WantedBy: multi-user.target }
    enabled: true
  - unit: rc-app.service
    dropin: hardening.conf
    sections:
      Service:
        ProtectSystem: strict
        PrivateTmp: true
"#;
    s.manifest("site.yaml", manifest);
    let run = s.converge(&["site.yaml"]);
    assert!(
        run.stdout()
            .contains("unit[rc-app.service.d/hardening.conf]"),
        "{}",
        run.all()
    );
    let dropin = s.read("/etc/systemd/system/rc-app.service.d/hardening.conf");
    assert!(
        dropin.contains("[Service]\nProtectSystem=strict\nPrivateTmp=yes\n"),
        "{dropin}"
    );
    assert!(std::fs::symlink_metadata(
        s.path("/etc/systemd/system/multi-user.target.wants/rc-app.service")
    )
    .is_ok());

    // An unknown key in the drop-in is the drop-in's error (one near no known key:
    // a near miss is refused at load).
    s.manifest(
        "site.yaml",
        &manifest.replace("PrivateTmp: true", "Xyzzy: true"),
    );
    let run = s.run("plan", &["site.yaml"]);
    run.assert_code(1);
    let all = run.all();
    assert!(
        all.contains("unit[rc-app.service.d/hardening.conf]"),
        "{all}"
    );
    assert!(all.contains("Unknown key 'Xyzzy'"), "{all}");
}

#[test]
fn offline_mask_and_unmask() {
    if !systemd_tools_or_skip("offline_mask_and_unmask") {
        return;
    }
    let s = Sandbox::new();
    s.manifest(
        "site.yaml",
        "resources:\n  - unit: rc-legacy.service\n    masked: true\n",
    );
    s.converge(&["site.yaml"]);
    let link = std::fs::read_link(s.path("/etc/systemd/system/rc-legacy.service"))
        .unwrap_or_else(|e| panic!("mask link: {e}"));
    assert_eq!(link, std::path::Path::new("/dev/null"));

    // Giving the unit content replaces the mask with the file (unmasked).
    s.manifest(
        "site.yaml",
        "resources:\n  - unit: rc-legacy.service\n    sections:\n      Service: { ExecStart: /bin/true }\n",
    );
    let plan = s.run("plan", &["--detailed-exitcode", "site.yaml"]);
    plan.assert_code(2);
    assert!(plan.stdout().contains("masked: yes → no"), "{}", plan.all());
    s.converge(&["site.yaml"]);
    assert!(s
        .read("/etc/systemd/system/rc-legacy.service")
        .contains("ExecStart=/bin/true"));
}

#[test]
fn unit_accounts_that_are_neither_on_the_target_nor_declared_are_plan_errors_naming_the_line() {
    let s = Sandbox::new();
    s.put("/etc/passwd", b"root:x:0:0:root:/root:/bin/sh\n");
    s.put("/etc/group", b"root:x:0:\nadm:x:4:\n");
    let unit = |extra: &str| {
        format!(
            "  - unit: rc-acct.service\n    sections:\n      Service:\n        ExecStart: /bin/true\n        User: rc-svc\n        Group: rc-grp\n        SupplementaryGroups: adm rc-extra\n{extra}"
        )
    };
    s.manifest("site.yaml", &format!("resources:\n{}", unit("")));
    let before = s.snapshot();
    for cmd in ["plan", "check", "apply"] {
        let run = s.run(cmd, &["site.yaml"]);
        run.assert_code(1);
        let out = run.stdout();
        for want in [
            "User=rc-svc (declared at site.yaml:6:15): `rc-svc` is not a user on the target (its /etc/passwd) and no user[rc-svc] is declared",
            "Group=rc-grp (declared at site.yaml:7:16): `rc-grp` is not a group on the target",
            "SupplementaryGroups=rc-extra (declared at site.yaml:8:30)",
        ] {
            assert!(out.contains(want), "{cmd}: missing {want:?}\n{}", run.all());
        }
        // `adm` is on the target.
        assert!(!out.contains("SupplementaryGroups=adm"), "{}", run.all());
    }
    let mut after = s.snapshot();
    after.retain(|k, _| !k.starts_with("var/") && !k.starts_with("run"));
    let mut before = before;
    before.retain(|k, _| !k.starts_with("var/") && !k.starts_with("run"));
    assert_eq!(after, before, "a refused run changed the root");

    // Declared accounts are fine, and the unit is ordered after them.
    s.manifest(
        "site.yaml",
        &format!(
            "resources:\n{}  - group: rc-grp\n    gid: 2301\n  - group: rc-extra\n    gid: 2302\n  - user: rc-svc\n    uid: 2301\n    group: rc-grp\n    create_home: false\n",
            unit("")
        ),
    );
    let graph = s.run("graph", &["site.yaml"]);
    graph.assert_code(0);
    let text = graph.stdout();
    let unit_deps = text
        .split("unit[rc-acct.service]\n")
        .nth(1)
        .unwrap_or_else(|| panic!("{}", graph.all()));
    for dep in ["user[rc-svc]", "group[rc-grp]", "group[rc-extra]"] {
        let edge = format!("    after {dep} (auto)");
        assert!(
            unit_deps.contains(&edge),
            "no edge {edge}:\n{}",
            graph.all()
        );
    }
    // DynamicUser=yes: systemd allocates User= and Group= itself.
    s.manifest(
        "site.yaml",
        "resources:\n  - unit: rc-dyn.service\n    sections:\n      Service:\n        ExecStart: /bin/true\n        DynamicUser: true\n        User: rc-dyn\n        Group: rc-dyn\n",
    );
    let plan = s.run("plan", &["site.yaml"]);
    assert!(!plan.stdout().contains("is not a user"), "{}", plan.all());
    assert!(!plan.stdout().contains("is not a group"), "{}", plan.all());
}

#[test]
fn apply_shows_a_units_diff_and_the_same_timer_before_state_as_the_plan() {
    if !systemd_tools_or_skip(
        "apply_shows_a_units_diff_and_the_same_timer_before_state_as_the_plan",
    ) {
        return;
    }
    let manifest = "resources:\n  - unit: rc-job.service\n    sections:\n      Service: { Type: oneshot, ExecStart: /bin/true }\n  - unit: rc-job.timer\n    enabled: true\n    sections:\n      Unit: { Description: rc job window }\n      Timer: { OnCalendar: \"Sun *-*-* 02:00:00\" }\n      Install: { WantedBy: timers.target }\n";
    let enabled_of = |v: &serde_json::Value, list: &str| -> (Option<String>, Option<String>) {
        let items = v[list].as_array().cloned().unwrap_or_default();
        let timer = items
            .iter()
            .map(|o| if list == "outcomes" { &o["change"] } else { o })
            .find(|c| c["id"] == "unit[rc-job.timer]")
            .cloned()
            .unwrap_or_else(|| panic!("no timer in {v}"));
        assert!(
            timer["diff"]
                .as_str()
                .is_some_and(|d| d.contains("+OnCalendar=Sun *-*-* 02:00:00")),
            "{list}: no diff in {timer}"
        );
        let field = timer["fields"]
            .as_array()
            .and_then(|f| f.iter().find(|f| f["field"] == "enabled").cloned())
            .unwrap_or_else(|| panic!("no enabled field in {timer}"));
        let s = |k: &str| field[k].as_str().map(String::from);
        (s("before"), s("after"))
    };
    for format in ["text", "json"] {
        let s = Sandbox::new();
        s.manifest("site.yaml", manifest);
        let before = s.snapshot();
        let plan = s.run("plan", &["--format", format, "site.yaml"]);
        plan.assert_code(0);
        assert_eq!(s.snapshot(), before);
        let apply = s.run("apply", &["--format", format, "site.yaml"]);
        apply.assert_code(0);
        if format == "text" {
            for out in [plan.stdout(), apply.stdout()] {
                assert!(
                    out.contains("enabled: not-found → enabled"),
                    "{}",
                    apply.all()
                );
                assert!(
                    out.contains("+++ b/etc/systemd/system/rc-job.timer"),
                    "{out}"
                );
                assert!(out.contains("+ExecStart=/bin/true"), "{out}");
            }
        } else {
            let parse = |t: String| -> serde_json::Value {
                serde_json::from_str(&t).unwrap_or_else(|e| panic!("{e}: {t}"))
            };
            let planned = enabled_of(&parse(plan.stdout()), "changes");
            let applied = enabled_of(&parse(apply.stdout()), "outcomes");
            assert_eq!(planned, applied);
            assert_eq!(planned, (Some("not-found".into()), Some("enabled".into())));
        }
        let again = s.run("plan", &["--detailed-exitcode", "site.yaml"]);
        again.assert_code(0);
    }
}

// ---------------------------------------------------------------------------------
// Live: a booted Debian host with a real systemd.

const IN_HOST: &str = support::testhost::RECONCILE_IN_HOST;

/// The live test's manifest, with the knobs the test turns.
#[derive(Clone)]
struct Live {
    description: &'static str,
    active: bool,
    /// In a drop-in of rc-app.service.
    nice: i32,
    /// rc-app.service has `restart_on` this file.
    env: &'static str,
    /// This file `notify`s rc-app.service.
    level: i32,
}

impl Live {
    fn render(&self) -> String {
        let Live {
            description,
            active,
            nice,
            env,
            level,
        } = self.clone();
        format!(
            r#"
resources:
  - file: /etc/rc-app.conf
    content: "level = {level}\n"
    notify: ["unit[rc-app.service]"]
  - file: /etc/default/rc-app
    content: "MODE={env}\n"
  - unit: rc-app.service
    enabled: true
    active: {active}
    restart_on: ["file[/etc/default/rc-app]"]
    sections:
      Unit:
        Description: {description}
      Service:
        ExecStart: /bin/sleep infinity
        EnvironmentFile: /etc/default/rc-app
        NoNewPrivileges: true
      Install:
        WantedBy: multi-user.target
  - unit: rc-app.service
    dropin: limits.conf
    sections:
      Service: {{ Nice: {nice} }}
  - unit: rc-job.service
    sections:
      Service: {{ Type: oneshot, ExecStart: /bin/true }}
  - unit: rc-job.timer
    enabled: true
    active: true
    sections:
      Unit: {{ Description: rc job window }}
      Timer: {{ OnCalendar: "Sun *-*-* 02:00:00" }}
      Install: {{ WantedBy: timers.target }}
"#
        )
    }
}

const LIVE: Live = Live {
    description: "rc app",
    active: true,
    nice: 0,
    env: "a",
    level: 1,
};

/// Runs reconcile inside the host on /root/m.
fn rc(host: &TestHost, args: &[&str]) -> support::testhost::ExecOutput {
    let mut argv = vec![IN_HOST];
    argv.extend_from_slice(args);
    argv.push("/root/m");
    host.exec_timeout(&argv, Duration::from_secs(300))
}

fn prop(host: &TestHost, unit: &str, p: &str) -> String {
    host.exec_ok(&["systemctl", "show", unit, "--value", "-p", p])
        .trim()
        .to_string()
}

/// How often PID 1 logged a reload in this boot.
fn reloads(host: &TestHost) -> usize {
    // --sync first: every message logged so far is on disk before we count.
    let log = host.sh_ok("journalctl --sync; journalctl -b _PID=1 -o cat --no-pager");
    log.lines()
        .filter(|l| l.starts_with("Reloading"))
        .filter(|l| !l.starts_with("Reloading finished"))
        .count()
}

fn starts(host: &TestHost, unit: &str) -> usize {
    let log = host.sh_ok(&format!(
        "journalctl --sync; journalctl -b -u {unit} -o cat --no-pager"
    ));
    log.lines().filter(|l| l.starts_with("Started ")).count()
}

#[test]
fn live_service_and_timer_converge_restart_once_and_stop() {
    let Some(host) = boot_or_skip("live_service_and_timer_converge_restart_once_and_stop") else {
        return;
    };
    let put = |m: &Live| host.write_file("/root/m/site.yaml", m.render().as_bytes());
    put(&LIVE);
    let plan = rc(&host, &["plan"]);
    assert!(
        plan.stdout.contains("live: systemd runs the target"),
        "{plan}"
    );
    let apply = rc(&host, &["apply"]);
    assert!(apply.success(), "{apply}");
    assert_eq!(prop(&host, "rc-app.service", "ActiveState"), "active");
    assert_eq!(prop(&host, "rc-app.service", "UnitFileState"), "enabled");
    assert_eq!(prop(&host, "rc-job.timer", "ActiveState"), "active");
    assert_eq!(prop(&host, "rc-job.timer", "UnitFileState"), "enabled");
    assert_eq!(prop(&host, "rc-app.service", "Nice"), "0");
    let again = rc(&host, &["plan", "--detailed-exitcode"]);
    assert_eq!(again.status, 0, "plan after apply is not empty: {again}");

    // The timer's next elapse is what OnCalendar says.
    let next = prop(&host, "rc-job.timer", "NextElapseUSecRealtime");
    let expected = host.exec_ok(&["systemd-analyze", "calendar", "Sun *-*-* 02:00:00"]);
    let expected_next = expected
        .lines()
        .find_map(|l| l.trim().strip_prefix("Next elapse: "))
        .unwrap_or_else(|| panic!("no next elapse in {expected}"))
        .trim()
        .to_string();
    assert!(
        next.starts_with("Sun ") && next.contains(" 02:00:00"),
        "{next}"
    );
    assert_eq!(next, expected_next);

    // Editing the unit and its drop-in together: one daemon-reload, one restart.
    let invocation = prop(&host, "rc-app.service", "InvocationID");
    let (reloads_before, starts_before) = (reloads(&host), starts(&host, "rc-app.service"));
    let edited = Live {
        description: "rc app, edited",
        nice: 5,
        ..LIVE
    };
    put(&edited);
    let plan = rc(&host, &["plan"]);
    eprintln!("{plan}");
    assert!(
        plan.stdout
            .contains("restart: active (running) → restarted: its unit file changes"),
        "{plan}"
    );
    assert!(
        plan.stdout
            .contains("rc-app.service restarts through unit[rc-app.service]"),
        "{plan}"
    );
    let apply = rc(&host, &["apply"]);
    assert!(apply.success(), "{apply}");
    assert_eq!(
        reloads(&host),
        reloads_before + 1,
        "exactly one daemon-reload"
    );
    assert_eq!(
        starts(&host, "rc-app.service"),
        starts_before + 1,
        "exactly one restart"
    );
    assert_ne!(prop(&host, "rc-app.service", "InvocationID"), invocation);
    assert_eq!(
        prop(&host, "rc-app.service", "Description"),
        "rc app, edited"
    );
    assert_eq!(prop(&host, "rc-app.service", "Nice"), "5");
    assert_eq!(prop(&host, "rc-app.service", "NeedDaemonReload"), "no");
    let again = rc(&host, &["plan", "--detailed-exitcode"]);
    assert_eq!(again.status, 0, "{again}");

    // A drop-in alone restarts its unit once, through the unit's resource.
    let starts_before = starts(&host, "rc-app.service");
    put(&Live {
        nice: 7,
        ..edited.clone()
    });
    let apply = rc(&host, &["apply"]);
    assert!(apply.success(), "{apply}");
    assert_eq!(
        starts(&host, "rc-app.service"),
        starts_before + 1,
        "one restart for the drop-in"
    );
    assert_eq!(prop(&host, "rc-app.service", "Nice"), "7");

    // A notifying file and a restart_on file changing together: one restart, no reload.
    let (reloads_before, starts_before) = (reloads(&host), starts(&host, "rc-app.service"));
    let notified = Live {
        nice: 7,
        level: 2,
        env: "b",
        ..edited
    };
    put(&notified);
    let plan = rc(&host, &["plan"]);
    assert!(plan.stdout.contains("restarted: file["), "{plan}");
    let apply = rc(&host, &["apply"]);
    assert!(apply.success(), "{apply}");
    assert_eq!(
        starts(&host, "rc-app.service"),
        starts_before + 1,
        "one restart for both"
    );
    assert_eq!(
        reloads(&host),
        reloads_before,
        "no daemon-reload without a unit file change"
    );
    let env = host.sh_ok(
        "tr '\\0' '\\n' < /proc/$(systemctl show -p MainPID --value rc-app.service)/environ",
    );
    assert!(env.lines().any(|l| l == "MODE=b"), "{env}");

    // A restart_on file changing alone: the unit's apply sees it changed in this run
    // and restarts it once (the re-plan used to find the file converged already).
    let starts_before = starts(&host, "rc-app.service");
    let env_only = Live {
        env: "c",
        ..notified
    };
    put(&env_only);
    let apply = rc(&host, &["apply"]);
    assert!(apply.success(), "{apply}");
    assert_eq!(
        starts(&host, "rc-app.service"),
        starts_before + 1,
        "one restart for restart_on alone: {apply}"
    );
    let env = host.sh_ok(
        "tr '\\0' '\\n' < /proc/$(systemctl show -p MainPID --value rc-app.service)/environ",
    );
    assert!(env.lines().any(|l| l == "MODE=c"), "{env}");
    let again = rc(&host, &["plan", "--detailed-exitcode"]);
    assert_eq!(again.status, 0, "{again}");

    // active: false stops it.
    put(&Live {
        active: false,
        ..env_only
    });
    let apply = rc(&host, &["apply"]);
    assert!(apply.success(), "{apply}");
    assert_eq!(prop(&host, "rc-app.service", "ActiveState"), "inactive");
    let again = rc(&host, &["plan", "--detailed-exitcode"]);
    assert_eq!(again.status, 0, "{again}");
}

#[test]
fn live_failing_unit_reports_journal_and_skips_dependents() {
    let Some(host) = boot_or_skip("live_failing_unit_reports_journal_and_skips_dependents") else {
        return;
    };
    let manifest = r#"
resources:
  - unit: rc-broken.service
    active: true
    sections:
      Service:
        Type: oneshot
        RemainAfterExit: true
        ExecStart: /bin/sh -c "echo rc-broken-says-no >&2; exit 3"
  - file: /etc/rc-after-broken
    content: "never\n"
    requires: ["unit[rc-broken.service]"]
"#;
    host.write_file("/root/m/site.yaml", manifest.as_bytes());
    let apply = rc(&host, &["apply"]);
    eprintln!("{apply}");
    assert_eq!(apply.status, 1, "{apply}");
    let all = format!("{}{}", apply.stdout, apply.stderr);
    assert!(
        all.contains("last journal lines of rc-broken.service"),
        "{all}"
    );
    assert!(
        all.contains("rc-broken-says-no"),
        "the unit's own output:\n{all}"
    );
    assert!(all.contains("file[/etc/rc-after-broken]"), "{all}");
    assert!(all.to_lowercase().contains("skipped"), "{all}");
    assert_eq!(host.read_file("/etc/rc-after-broken"), None);
}

#[test]
fn live_mask_unmask_and_disable_a_packaged_unit() {
    let Some(host) = boot_or_skip("live_mask_unmask_and_disable_a_packaged_unit") else {
        return;
    };
    // A unit as a package ships it: in /usr/lib, enabled and running.
    host.write_file(
        "/usr/lib/systemd/system/rc-pkg.service",
        b"[Service]\nExecStart=/bin/sleep infinity\n[Install]\nWantedBy=multi-user.target\n",
    );
    host.sh_ok("systemctl daemon-reload && systemctl enable --now rc-pkg.service");
    host.write_file(
        "/root/m/site.yaml",
        b"resources:\n  - unit: rc-pkg.service\n    masked: true\n",
    );
    let apply = rc(&host, &["apply"]);
    assert!(apply.success(), "{apply}");
    assert_eq!(prop(&host, "rc-pkg.service", "UnitFileState"), "masked");
    assert_eq!(
        prop(&host, "rc-pkg.service", "ActiveState"),
        "inactive",
        "mask --now stops it"
    );
    let again = rc(&host, &["plan", "--detailed-exitcode"]);
    assert_eq!(again.status, 0, "{again}");

    host.write_file(
        "/root/m/site.yaml",
        b"resources:\n  - unit: rc-pkg.service\n    masked: false\n    enabled: false\n    active: true\n",
    );
    let apply = rc(&host, &["apply"]);
    assert!(apply.success(), "{apply}");
    assert_eq!(prop(&host, "rc-pkg.service", "UnitFileState"), "disabled");
    assert_eq!(prop(&host, "rc-pkg.service", "ActiveState"), "active");
    let again = rc(&host, &["plan", "--detailed-exitcode"]);
    assert_eq!(again.status, 0, "{again}");

    // A unit file touched behind systemd's back: reload (and restart) to converge.
    host.write_file(
        "/root/m/site.yaml",
        b"resources:\n  - unit: rc-t.service\n    active: true\n    sections:\n      Service: { ExecStart: /bin/sleep infinity }\n",
    );
    let apply = rc(&host, &["apply"]);
    assert!(apply.success(), "{apply}");
    host.sh_ok("sleep 1; touch /etc/systemd/system/rc-t.service");
    assert_eq!(prop(&host, "rc-t.service", "NeedDaemonReload"), "yes");
    let plan = rc(&host, &["plan", "--detailed-exitcode"]);
    assert_eq!(plan.status, 2, "{plan}");
    assert!(plan.stdout.contains("daemon-reload: needed"), "{plan}");
    assert!(
        plan.stdout
            .contains("restarted: systemd runs an outdated configuration"),
        "{plan}"
    );
    let apply = rc(&host, &["apply"]);
    assert!(apply.success(), "{apply}");
    assert_eq!(prop(&host, "rc-t.service", "NeedDaemonReload"), "no");
    let again = rc(&host, &["plan", "--detailed-exitcode"]);
    assert_eq!(again.status, 0, "{again}");

    // Masking a unit whose file is in /etc is refused with the way out.
    host.write_file(
        "/etc/systemd/system/rc-local.service",
        b"[Service]\nExecStart=/bin/true\n",
    );
    host.write_file(
        "/root/m/site.yaml",
        b"resources:\n  - unit: rc-local.service\n    masked: true\n",
    );
    let plan = rc(&host, &["plan"]);
    assert_eq!(plan.status, 1, "{plan}");
    assert!(
        format!("{plan}").contains("remove the file first"),
        "{plan}"
    );
}

#[test]
fn live_a_wrong_mode_and_a_killed_runs_temp_file_are_fixed_without_a_reload_or_restart() {
    let Some(host) = boot_or_skip(
        "live_a_wrong_mode_and_a_killed_runs_temp_file_are_fixed_without_a_reload_or_restart",
    ) else {
        return;
    };
    host.write_file(
        "/root/m/site.yaml",
        b"resources:\n  - unit: rc-fix.service\n    active: true\n    sections:\n      Service: { ExecStart: /bin/sleep infinity }\n",
    );
    let apply = rc(&host, &["apply"]);
    assert!(apply.success(), "{apply}");
    assert_eq!(prop(&host, "rc-fix.service", "ActiveState"), "active");
    let stray = "rc-fix.service.reconcile-4194305-0~";
    host.write_file(
        &format!("/etc/systemd/system/{stray}"),
        b"[Service]\nExecStart=/bin/sl",
    );
    host.sh_ok("chmod 0600 /etc/systemd/system/rc-fix.service");
    let (reloads_before, starts_before) = (reloads(&host), starts(&host, "rc-fix.service"));
    let plan = rc(&host, &["plan", "--detailed-exitcode"]);
    assert_eq!(plan.status, 2, "{plan}");
    assert!(plan.stdout.contains("mode: 0600 → 0644"), "{plan}");
    assert!(
        plan.stdout
            .contains(&format!("temp file {stray}: left by a killed run")),
        "{plan}"
    );
    assert!(!plan.stdout.contains("daemon-reload"), "{plan}");
    assert!(!plan.stdout.contains("restart"), "{plan}");
    let apply = rc(&host, &["apply"]);
    assert!(apply.success(), "{apply}");
    assert_eq!(
        host.exec_ok(&["stat", "-c", "%a", "/etc/systemd/system/rc-fix.service"])
            .trim(),
        "644"
    );
    host.sh_ok(&format!("test ! -e /etc/systemd/system/{stray}"));
    assert_eq!(reloads(&host), reloads_before, "a daemon-reload ran");
    assert_eq!(
        starts(&host, "rc-fix.service"),
        starts_before,
        "the unit restarted"
    );
    let again = rc(&host, &["plan", "--detailed-exitcode"]);
    assert_eq!(again.status, 0, "{again}");
}

/// Re-records the `systemctl show` fixtures from a real systemd:
/// `cargo test --test units record_show_fixtures -- --ignored`.
#[test]
#[ignore]
fn record_show_fixtures() {
    let Some(host) = boot_or_skip("record_show_fixtures") else {
        return;
    };
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/systemd");
    host.write_file("/etc/systemd/system/rc-demo.service", b"[Unit]\nDescription=reconcile fixture\n[Service]\nExecStart=/bin/sleep infinity\n[Install]\nWantedBy=multi-user.target\n");
    host.write_file("/etc/systemd/system/rc-demo.timer", b"[Unit]\nDescription=reconcile fixture timer\n[Timer]\nOnCalendar=Sun *-*-* 02:00:00\n[Install]\nWantedBy=timers.target\n");
    host.write_file(
        "/etc/systemd/system/rc-fail.service",
        b"[Service]\nType=oneshot\nExecStart=/bin/false\n",
    );
    host.sh_ok("systemctl daemon-reload && systemctl enable --now rc-demo.service rc-demo.timer");
    let _ = host.exec(&["systemctl", "start", "rc-fail.service"]);
    let save = |name: &str, unit: &str| {
        let out = host.exec_ok(&["systemctl", "show", unit]);
        std::fs::write(dir.join(name), out).unwrap_or_else(|e| panic!("write {name}: {e}"));
    };
    save("show-service-running.txt", "rc-demo.service");
    save("show-timer-waiting.txt", "rc-demo.timer");
    save("show-service-failed.txt", "rc-fail.service");
    save("show-service-not-found.txt", "rc-absent.service");
    host.write_file("/etc/systemd/system/rc-demo.service", b"[Unit]\nDescription=reconcile fixture, edited\n[Service]\nExecStart=/bin/sleep infinity\n[Install]\nWantedBy=multi-user.target\n");
    save("show-service-need-reload.txt", "rc-demo.service");
    let journal = host.exec_ok(&[
        "journalctl",
        "-u",
        "rc-fail.service",
        "-n",
        "20",
        "--no-pager",
    ]);
    std::fs::write(dir.join("journal-failed.txt"), journal)
        .unwrap_or_else(|e| panic!("write journal: {e}"));
}

#[test]
fn live_an_enabled_timer_is_armed_at_once_and_a_start_waits_for_its_job_then_reads_the_state_once()
{
    let Some(host) = boot_or_skip(
        "live_an_enabled_timer_is_armed_at_once_and_a_start_waits_for_its_job_then_reads_the_state_once",
    ) else {
        return;
    };
    // `enabled: true` alone on a timer: enabled for boot and started now.
    let timer = r#"
resources:
  - unit: rc-t.service
    sections:
      Service: { Type: oneshot, ExecStart: /bin/true }
  - unit: rc-t.timer
    enabled: true
    sections:
      Timer: { OnCalendar: "Sun *-*-* 03:00:00" }
      Install: { WantedBy: timers.target }
"#;
    host.write_file("/root/m/site.yaml", timer.as_bytes());
    let plan = rc(&host, &["plan"]);
    assert!(
        plan.stdout.contains("active: inactive (dead) → active"),
        "{plan}"
    );
    let apply = rc(&host, &["apply"]);
    assert!(apply.success(), "{apply}");
    // Plan and apply agree on the before-state, and apply shows the diff too.
    let enabled_line = |out: &str| {
        out.lines()
            .find(|l| l.trim_start().starts_with("enabled: "))
            .map(str::trim)
            .map(String::from)
    };
    assert_eq!(
        enabled_line(&plan.stdout),
        enabled_line(&apply.stdout),
        "{plan}
{apply}"
    );
    assert!(enabled_line(&apply.stdout).is_some(), "{apply}");
    assert!(
        apply.stdout.contains("+OnCalendar=Sun *-*-* 03:00:00"),
        "{apply}"
    );
    assert_eq!(prop(&host, "rc-t.timer", "UnitFileState"), "enabled");
    assert_eq!(prop(&host, "rc-t.timer", "ActiveState"), "active");
    let again = rc(&host, &["plan", "--detailed-exitcode"]);
    assert_eq!(again.status, 0, "{again}");
    // A timer stopped by hand is drift, not "in sync" until the next boot.
    host.exec_ok(&["systemctl", "stop", "rc-t.timer"]);
    let check = rc(&host, &["check"]);
    assert_eq!(check.status, 2, "{check}");
    assert!(check.stdout.contains("unit[rc-t.timer]"), "{check}");
    // `active: false` given explicitly keeps an enabled timer stopped.
    host.write_file(
        "/root/m/site.yaml",
        timer
            .replace(
                "    enabled: true\n",
                "    enabled: true\n    active: false\n",
            )
            .as_bytes(),
    );
    let check = rc(&host, &["check"]);
    assert_eq!(check.status, 0, "{check}");

    // A start waits for its job (a two-second oneshot is done when start returns) and
    // then reads the state once: one `show` after the `start`, no fixed sleep.
    let slow = r#"
settings: { removed: remove }
resources:
  - unit: rc-slow.service
    active: true
    sections:
      Service: { Type: oneshot, RemainAfterExit: true, ExecStart: /bin/sleep 2 }
"#;
    host.write_file("/root/m/site.yaml", slow.as_bytes());
    let apply = rc(&host, &["apply", "-vv"]);
    assert!(apply.success(), "{apply}");
    assert_eq!(prop(&host, "rc-slow.service", "ActiveState"), "active");
    let after_start = apply
        .stderr
        .split("program=systemctl verb=start")
        .nth(1)
        .unwrap_or_else(|| panic!("no start logged: {apply}"));
    // (Counted within the unit's own apply: the record of managed resources observes
    // the run's changes again afterwards.)
    assert_eq!(
        after_start
            .matches("apply{resource=unit[rc-slow.service]}: running program=systemctl verb=show")
            .count(),
        1,
        "{apply}"
    );
    let again = rc(&host, &["plan", "--detailed-exitcode"]);
    assert_eq!(again.status, 0, "{again}");
}

fn apply_with_fault(s: &Sandbox, fault: &str) -> support::sandbox::Run {
    let mut c =
        assert_cmd::Command::cargo_bin("reconcile").unwrap_or_else(|e| panic!("binary: {e}"));
    c.current_dir(&s.manifests)
        .env("NO_COLOR", "1")
        .env("RECONCILE_FAULT_PANIC", fault)
        .timeout(std::time::Duration::from_secs(120))
        .args(["apply", "--root"])
        .arg(&s.root)
        .arg("site.yaml");
    support::sandbox::Run(c.output().unwrap_or_else(|e| panic!("run: {e}")))
}

const FLUSH_SITE: &str = r##"resources:
  - file: /opt/app/run.sh
    mode: "0755"
    content: "#!/bin/sh\nexit 0\n"
  - file: /etc/app.conf
    content: "independent\n"
  - unit: app.service
    sections:
      Service: { Type: oneshot, ExecStart: /opt/app/run.sh }
  - unit: other.service
    sections:
      Service: { Type: oneshot, ExecStart: /bin/true }
"##;

#[test]
fn a_unit_whose_dependency_failed_is_not_written() {
    if !systemd_tools_or_skip("a_unit_whose_dependency_failed_is_not_written") {
        return;
    }
    let s = Sandbox::new();
    s.manifest("site.yaml", FLUSH_SITE);
    let run = apply_with_fault(&s, "file[/opt/app/run.sh]");
    assert_eq!(run.code(), 1, "{}", run.all());
    assert!(
        run.all().contains("unit[app.service] skipped"),
        "{}",
        run.all()
    );
    // Its ExecStart= file failed: the unit file was never written (the old batch wrote
    // every changed unit file before the graph ran).
    assert!(!s.path("/etc/systemd/system/app.service").exists());
    // Everything else converged, units included.
    assert!(s.path("/etc/systemd/system/other.service").is_file());
    assert_eq!(s.read("/etc/app.conf"), "independent\n");
    s.converge(&["site.yaml"]);
}

#[test]
fn a_failing_batch_step_fails_only_the_units_that_need_it() {
    if !systemd_tools_or_skip("a_failing_batch_step_fails_only_the_units_that_need_it") {
        return;
    }
    let s = Sandbox::new();
    s.manifest("site.yaml", FLUSH_SITE);
    let run = apply_with_fault(&s, "step:systemd daemon-reload");
    assert_eq!(run.code(), 1, "{}", run.all());
    let all = run.all();
    assert!(all.contains("unit[app.service]: internal error"), "{all}");
    assert!(all.contains("unit[other.service]: internal error"), "{all}");
    assert!(
        all.contains("injected fault in systemd daemon-reload"),
        "{all}"
    );
    // Files are not members of the step: they converged.
    assert_eq!(s.read("/etc/app.conf"), "independent\n");
    assert!(s.path("/opt/app/run.sh").is_file());
    s.converge(&["site.yaml"]);
}
