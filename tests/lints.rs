//! Every lint fires on a minimal manifest, with its code, the manifest line and a fix,
//! and stays quiet on the fixed version; `allow:` silences one code for one resource;
//! `--strict` turns the warnings into errors that change nothing.

mod support;

use support::sandbox::Sandbox;

struct Case {
    code: &'static str,
    bad: &'static str,
    /// Where the warning points.
    at: &'static str,
    fixed: &'static str,
}

const CASES: &[Case] = &[
    Case {
        code: "R0001",
        bad: "resources:\n  - unit: rc-job.timer\n    sections:\n      Unit: { Requires: rc-job.service }\n      Timer: { OnCalendar: daily }\n",
        at: "site.yaml:4:25",
        fixed: "resources:\n  - unit: rc-job.timer\n    sections:\n      Unit: { Description: job }\n      Timer: { OnCalendar: daily }\n",
    },
    Case {
        code: "R0002",
        bad: "resources:\n  - unit: rc-app.service\n    content: |\n      [Unit]\n      Description=app\n      NoNewPrivileges=yes\n      [Service]\n      ExecStart=/bin/true\n",
        at: "site.yaml:4:7",
        fixed: "resources:\n  - unit: rc-app.service\n    content: |\n      [Unit]\n      Description=app\n      [Service]\n      ExecStart=/bin/true\n      NoNewPrivileges=yes\n",
    },
    Case {
        code: "R0003",
        bad: "resources:\n  - unit: rc-upgrade.service\n    sections:\n      Service: { Type: oneshot, ExecStart: /bin/true }\n  - logrotate: rc-app\n    paths: [/var/log/rc-app/*.log]\n    missingok: true\n    postrotate: \"systemctl reload rc-*.service > /dev/null 2>&1 || true\"\n",
        at: "site.yaml:2:5",
        fixed: "resources:\n  - unit: rc-upgrade.service\n    sections:\n      Service: { Type: oneshot, ExecStart: /bin/true }\n  - logrotate: rc-app\n    paths: [/var/log/rc-app/*.log]\n    missingok: true\n",
    },
    Case {
        code: "R0004",
        bad: "resources:\n  - file: /etc/logrotate.d/rc-app\n    allow: [R0005]\n    content: |\n      /var/log/rc-app/*.log {\n          rotate 2555  # 7 years\n      }\n",
        at: "site.yaml:2:5",
        fixed: "resources:\n  - file: /etc/logrotate.d/rc-app\n    allow: [R0005]\n    content: |\n      /var/log/rc-app/*.log {\n          # 7 years\n          rotate 2555\n      }\n",
    },
    Case {
        code: "R0005",
        bad: "resources:\n  - file: /etc/audit/rules.d/rc.rules\n    content: \"-w /etc/passwd -p wa -k rc-passwd\\n\"\n",
        at: "site.yaml:2:5",
        fixed: "resources:\n  - audit_rule: rc\n    watches: [{ path: /etc/passwd, permissions: wa, key: rc-passwd }]\n",
    },
    Case {
        code: "R0006",
        bad: "resources:\n  - directory: /srv/drop\n    mode: \"0777\"\n",
        at: "site.yaml:2:5",
        fixed: "resources:\n  - directory: /srv/drop\n    mode: \"1777\"\n",
    },
    Case {
        code: "R0007",
        bad: "resources:\n  - file: /etc/rc/api.key\n    secret: true\n    content: \"k\\n\"\n    mode: \"0640\"\n",
        at: "site.yaml:2:5",
        fixed: "resources:\n  - file: /etc/rc/api.key\n    secret: true\n    content: \"k\\n\"\n    mode: \"0600\"\n",
    },
];

#[test]
fn each_lint_fires_with_its_code_line_and_fix_and_is_quiet_once_fixed() {
    for c in CASES {
        let s = Sandbox::new();
        s.manifest("site.yaml", c.bad);
        let run = s.run("validate", &["site.yaml"]);
        run.assert_code(0);
        let err = run.stderr();
        let line = err
            .lines()
            .find(|l| l.contains(&format!("{}: ", c.code)))
            .unwrap_or_else(|| panic!("{} did not fire:\n{}", c.code, run.all()));
        assert!(
            line.starts_with(&format!("warning: {}", c.at)),
            "{}: {line}",
            c.code
        );
        assert!(line.contains("; fix: "), "{}: {line}", c.code);
        // The plan shows it too.
        let plan = s.run("plan", &["site.yaml"]);
        assert!(
            plan.all().contains(&format!("{}: ", c.code)),
            "{}",
            plan.all()
        );

        s.manifest("site.yaml", c.fixed);
        let run = s.run("validate", &["site.yaml"]);
        run.assert_code(0);
        assert!(
            !run.all().contains(" R00"),
            "{} still fires when fixed:\n{}",
            c.code,
            run.all()
        );
    }
}

#[test]
fn allow_silences_one_code_for_one_resource_and_an_unknown_code_is_an_error() {
    let s = Sandbox::new();
    s.manifest(
        "site.yaml",
        "resources:\n  - directory: /srv/drop\n    mode: \"0777\"\n    allow: [R0006]\n  - directory: /srv/other\n    mode: \"0777\"\n",
    );
    let run = s.run("validate", &["site.yaml"]);
    run.assert_code(0);
    assert_eq!(run.stderr().matches("R0006: ").count(), 1, "{}", run.all());
    assert!(
        run.stderr().contains("directory[/srv/other]"),
        "{}",
        run.all()
    );

    s.manifest(
        "site.yaml",
        "resources:\n  - directory: /srv/drop\n    mode: \"0777\"\n    allow: [R0600]\n",
    );
    let run = s.run("validate", &["site.yaml"]);
    run.assert_code(1);
    assert!(run.all().contains("site.yaml:4:13"), "{}", run.all());
    assert!(
        run.all().contains("`R0600` is not a lint code"),
        "{}",
        run.all()
    );
}

#[test]
fn strict_turns_lints_into_errors_and_changes_nothing() {
    let s = Sandbox::new();
    s.manifest(
        "site.yaml",
        "resources:\n  - directory: /srv/drop\n    mode: \"0777\"\n",
    );
    let before = s.snapshot();
    for cmd in ["validate", "plan", "apply"] {
        let run = s.run(cmd, &["--strict", "site.yaml"]);
        run.assert_code(1);
        assert!(
            run.all().contains("error: site.yaml:2:5: R0006: "),
            "{}",
            run.all()
        );
        assert_eq!(s.snapshot(), before, "{cmd} --strict changed the root");
    }
    // Without --strict: a warning, and the apply goes ahead.
    let run = s.run("apply", &["site.yaml"]);
    run.assert_code(0);
    assert!(
        run.all().contains("warning: site.yaml:2:5: R0006: "),
        "{}",
        run.all()
    );
}
