//! Modules end to end: the shipped `hardened-service` converges twice over in a
//! scratch root, the issue's `svc-dir` example works as written, bad calls change
//! nothing, and `module doc` prints the parameters.

mod support;

use std::os::unix::fs::MetadataExt;

use support::sandbox::Sandbox;

const REPO: &str = env!("CARGO_MANIFEST_DIR");

fn shipped_modules() -> String {
    format!("{REPO}/modules")
}

fn systemd_tools() -> bool {
    ["systemctl", "systemd-analyze", "useradd", "groupadd"]
        .iter()
        .all(|t| reconcile::host::exec::tool_exists(t))
}

#[test]
fn two_hardened_service_calls_converge_in_a_scratch_root_then_plan_nothing() {
    if !support::sandbox::require_root(
        "two_hardened_service_calls_converge_in_a_scratch_root_then_plan_nothing",
    ) {
        return;
    }
    if !systemd_tools() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI must install systemd and the shadow tools"
        );
        eprintln!("skipping: systemctl, systemd-analyze or the shadow tools are missing");
        return;
    }
    let s = Sandbox::new();
    s.put("/etc/passwd", b"root:x:0:0:root:/root:/bin/sh\n");
    s.put("/etc/group", b"root:x:0:\n");
    s.put("/etc/shadow", b"root:*:19000:0:99999:7:::\n");
    s.put("/etc/gshadow", b"root:*::\n");
    s.put("/usr/sbin/nologin", b"#!/bin/sh\nexit 1\n");
    let example = format!("{REPO}/examples/services");
    let args = [example.as_str()];

    let before = s.snapshot();
    let plan = s.run("plan", &args);
    plan.assert_code(0);
    assert_eq!(s.snapshot(), before, "plan changed the scratch root");
    let text = plan.stdout();
    for id in [
        "+ hardened-service[health]/user[intelluxe-service]",
        "+ hardened-service[health]/directory[/opt/intelluxe/data]",
        "+ hardened-service[health]/unit[intelluxe-health.timer]",
        "+ hardened-service[api]/unit[intelluxe-api.service]",
    ] {
        assert!(text.contains(id), "{id} missing from\n{text}");
    }
    assert!(
        !text.contains("intelluxe-api.timer"),
        "no timer without on_calendar:\n{text}"
    );

    let run = s.converge(&args);
    assert!(
        run.stdout()
            .contains("Apply: 19 changed, 0 unchanged, 0 failed, 0 skipped."),
        "{}",
        run.all()
    );
    let passwd = s.read("/etc/passwd");
    assert!(
        passwd.contains(
            "intelluxe-service:x:2000:2001:intelluxe-health service account:/opt/intelluxe:/usr/sbin/nologin"
        ),
        "{passwd}"
    );
    assert!(passwd.contains("intelluxe-api:x:2010:2011:"), "{passwd}");
    for (path, mode, uid, gid) in [
        ("/opt/intelluxe", 0o750, 2000, 2001),
        ("/opt/intelluxe/data", 0o700, 2000, 2001),
        ("/opt/intelluxe/logs", 0o750, 2000, 2001),
        ("/srv/intelluxe-api/data", 0o700, 2010, 2011),
    ] {
        let meta = std::fs::metadata(s.path(path)).unwrap_or_else(|e| panic!("{path}: {e}"));
        assert_eq!(
            (meta.mode() & 0o7777, meta.uid(), meta.gid()),
            (mode, uid, gid),
            "{path}"
        );
    }
    let unit = s.read("/etc/systemd/system/intelluxe-api.service");
    for line in [
        "User=intelluxe-api",
        "ReadWritePaths=/srv/intelluxe-api/data /srv/intelluxe-api/logs /var/cache/intelluxe-api",
        "PrivateNetwork=no",
        "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6",
        "NoNewPrivileges=yes",
    ] {
        assert!(unit.contains(line), "{line} missing from\n{unit}");
    }
    let health = s.read("/etc/systemd/system/intelluxe-health.service");
    assert!(health.contains("PrivateNetwork=yes"), "{health}");
    assert!(health.contains("Type=oneshot"), "{health}");
    // The timer runs the oneshot; the long-running service starts at boot.
    assert!(s
        .path("/etc/systemd/system/timers.target.wants/intelluxe-health.timer")
        .is_symlink());
    assert!(s
        .path("/etc/systemd/system/multi-user.target.wants/intelluxe-api.service")
        .is_symlink());
    assert!(!s
        .path("/etc/systemd/system/multi-user.target.wants/intelluxe-health.service")
        .exists());

    // check is read-only and in sync.
    let before = s.snapshot();
    s.run("check", &args).assert_code(0);
    assert_eq!(s.snapshot(), before, "check changed the scratch root");
}

#[test]
fn the_svc_dir_example_of_the_issue_works_as_written() {
    let s = Sandbox::new();
    let example = format!("{REPO}/examples/modules");
    let before = s.snapshot();
    let plan = s.run("plan", &[&example]);
    plan.assert_code(0);
    assert_eq!(s.snapshot(), before, "plan changed the scratch root");
    assert!(
        plan.stdout()
            .contains("+ svc-dir[alpha]/directory[/srv/alpha]"),
        "{}",
        plan.all()
    );
    s.converge(&[&example]);
    assert_eq!(s.mode("/srv/alpha"), 0o750);
    assert_eq!(s.mode("/srv/beta"), 0o700);
    assert_eq!(s.read("/srv/beta/README"), "service beta\n");
}

#[test]
fn the_docs_show_the_svc_dir_module_and_site_as_shipped() {
    let doc = std::fs::read_to_string(format!("{REPO}/docs/modules.md"))
        .unwrap_or_else(|e| panic!("{e}"));
    for file in ["modules/svc-dir/module.yaml", "site.yaml"] {
        let text = std::fs::read_to_string(format!("{REPO}/examples/modules/{file}"))
            .unwrap_or_else(|e| panic!("{file}: {e}"));
        assert!(
            doc.contains(&text),
            "docs/modules.md does not show examples/modules/{file} verbatim"
        );
    }
}

#[test]
fn a_mistyped_parameter_is_refused_at_the_call_and_changes_nothing() {
    let s = Sandbox::new();
    s.manifest(
        "modules/svc-dir/module.yaml",
        &std::fs::read_to_string(format!(
            "{REPO}/examples/modules/modules/svc-dir/module.yaml"
        ))
        .unwrap_or_else(|e| panic!("{e}")),
    );
    s.manifest(
        "site.yaml",
        "resources:\n  - module: svc-dir\n    name: alpha\n    with: { name: alpha, mode: 750 }\n  - module: svc-dri\n    name: beta\n",
    );
    let before = s.snapshot();
    for cmd in ["validate", "plan", "apply"] {
        let run = s.run(cmd, &["site.yaml"]);
        run.assert_code(1);
        let err = run.stderr();
        assert!(
            err.contains("site.yaml:4:32: field `with.mode`: parameter `mode` of module `svc-dir` is declared mode"),
            "{err}"
        );
        assert!(
            err.contains("modules/svc-dir/module.yaml:4:3: `mode` is declared here as mode"),
            "{err}"
        );
        assert!(
            err.contains("no module `svc-dri`") && err.contains("did you mean `svc-dir`?"),
            "{err}"
        );
    }
    assert_eq!(
        s.snapshot(),
        before,
        "a refused run changed the scratch root"
    );
}

#[test]
fn module_doc_prints_the_parameters_table_of_hardened_service() {
    let out = assert_cmd::Command::cargo_bin("reconcile")
        .unwrap_or_else(|e| panic!("{e}"))
        .args(["module", "doc", "hardened-service", "--modules"])
        .arg(shipped_modules())
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(out.status.success(), "{out:?}");
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table.starts_with("# module `hardened-service`\n"),
        "{table}"
    );
    for row in [
        "| `uid` | int | yes |  | min 1; max 65533 | the user's fixed uid |",
        "| `max_exposure` | number | no | `3` | min 0; max 10 |",
        "| `read_write` | list<path> | no | `[]` |",
    ] {
        assert!(table.contains(row), "{row} missing from\n{table}");
    }
    let missing = assert_cmd::Command::cargo_bin("reconcile")
        .unwrap_or_else(|e| panic!("{e}"))
        .args(["module", "doc", "hardened-servic", "--modules"])
        .arg(shipped_modules())
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(missing.status.code(), Some(1));
    let err = String::from_utf8_lossy(&missing.stderr);
    assert!(err.contains("did you mean `hardened-service`?"), "{err}");
}

#[test]
fn a_saved_plan_with_modules_applies_from_its_file() {
    let s = Sandbox::new();
    let extra = s.manifests.join("../extra-modules");
    let module = extra.join("motd/module.yaml");
    std::fs::create_dir_all(module.parent().unwrap_or(&extra)).unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(
        &module,
        "params:\n  text: { type: string, required: true }\nresources:\n  - file: /etc/motd\n    content: \"{{ params.text }}\\n\"\n",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    s.manifest(
        "site.yaml",
        "resources:\n  - module: motd\n    name: main\n    with: { text: hello }\n",
    );
    let extra = extra.display().to_string();
    s.run(
        "plan",
        &["--modules", &extra, "--out", "p.json", "site.yaml"],
    )
    .assert_code(0);
    let applied = s.run("apply", &["p.json"]);
    applied.assert_code(0);
    assert_eq!(s.read("/etc/motd"), "hello\n");
    let again = s.run(
        "plan",
        &["--detailed-exitcode", "--modules", &extra, "site.yaml"],
    );
    assert_eq!(again.code(), 0, "{}", again.all());
}

#[test]
fn the_docs_show_the_generated_table_of_hardened_service() {
    let out = assert_cmd::Command::cargo_bin("reconcile")
        .unwrap_or_else(|e| panic!("{e}"))
        .current_dir(REPO)
        .args(["module", "doc", "hardened-service"])
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(out.status.success(), "{out:?}");
    let table = String::from_utf8_lossy(&out.stdout);
    // Below the title: the description, where it is defined, and the table.
    let body = table.split_once("\n\n").map_or("", |(_, b)| b);
    let doc = std::fs::read_to_string(format!("{REPO}/docs/modules.md"))
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        doc.contains(body.trim_end()),
        "docs/modules.md does not hold the output of `reconcile module doc hardened-service`:\n{body}"
    );
}

/// Live, in a booted test host with a real systemd: the two services converge, the
/// hardened units really run under their sandboxing (the timer's oneshot succeeds,
/// the long-running one stays up), and a plan afterwards has nothing to do.
#[test]
fn live_two_hardened_services_run_under_systemd_and_then_plan_nothing() {
    let Some(host) = support::testhost::boot_or_skip(
        "live_two_hardened_services_run_under_systemd_and_then_plan_nothing",
    ) else {
        return;
    };
    let bin = support::testhost::RECONCILE_IN_HOST;
    host.copy_in(
        std::path::Path::new(&format!("{REPO}/examples/services/site.yaml")),
        "/root/m/site.yaml",
    );
    host.copy_in(
        std::path::Path::new(&format!("{REPO}/modules/hardened-service")),
        "/root/m/modules/hardened-service",
    );
    let long = std::time::Duration::from_secs(300);
    let apply = host.exec_timeout(&[bin, "apply", "/root/m"], long);
    assert!(apply.success(), "{apply}");
    let prop = |unit: &str, p: &str| {
        host.exec_ok(&["systemctl", "show", unit, "--value", "-p", p])
            .trim()
            .to_string()
    };
    assert_eq!(prop("intelluxe-health.timer", "ActiveState"), "active");
    assert_eq!(prop("intelluxe-api.service", "UnitFileState"), "enabled");
    assert_eq!(
        prop("intelluxe-health.service", "UnitFileState"),
        "disabled"
    );

    // The oneshot runs as its account inside the sandbox and succeeds.
    let run = host.exec_timeout(&["systemctl", "start", "intelluxe-health.service"], long);
    assert!(run.success(), "{run}\n{}", host.log_tail(40));
    assert_eq!(prop("intelluxe-health.service", "Result"), "success");
    // The long-running one starts and stays up as its own user, without network.
    let run = host.exec_timeout(&["systemctl", "start", "intelluxe-api.service"], long);
    assert!(run.success(), "{run}\n{}", host.log_tail(40));
    std::thread::sleep(std::time::Duration::from_millis(500));
    let journal = || host.sh("journalctl --sync; journalctl -u intelluxe-api.service --no-pager");
    assert_eq!(
        prop("intelluxe-api.service", "SubState"),
        "running",
        "{}",
        journal()
    );
    let pid = prop("intelluxe-api.service", "MainPID");
    let owner = host.exec_ok(&["ps", "-o", "user=", "-p", &pid]);
    assert_eq!(owner.trim(), "intelluxe-api");

    let again = host.exec_timeout(&[bin, "plan", "--detailed-exitcode", "/root/m"], long);
    assert_eq!(again.status, 0, "plan after apply is not empty: {again}");
}
