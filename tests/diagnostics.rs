//! What an operator reads when the manifests are wrong: each error names
//! `file:line:col` and the field, quotes its source line with a caret under the
//! offending text (never a line that may hold a secret), suggests the name that was
//! probably meant, and leaves the root and everything outside it untouched.

mod support;

use std::path::Path;

use support::sandbox::{snapshot, Run, Sandbox};

/// A directory outside the scratch root, with something in it to compare.
fn outside() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    std::fs::write(dir.path().join("precious"), "precious\n").unwrap_or_else(|e| panic!("{e}"));
    dir
}

struct Snap {
    root: std::collections::BTreeMap<String, String>,
    outside: std::collections::BTreeMap<String, String>,
}

fn snap(s: &Sandbox, outside: &Path) -> Snap {
    Snap {
        root: s.snapshot(),
        outside: snapshot(outside),
    }
}

/// Runs `cmd` (never `apply` on success: every manifest here is wrong), asserts exit
/// 1, each of `expect` in stderr, and that neither the root nor `outside` changed.
fn refused(s: &Sandbox, cmd: &str, args: &[&str], expect: &[&str]) -> Run {
    let out = outside();
    s.put("/etc/motd", b"original\n");
    let before = snap(s, out.path());
    let run = s.run(cmd, args);
    assert_eq!(run.code(), 1, "{}", run.all());
    let err = run.stderr();
    for e in expect {
        assert!(err.contains(e), "expected `{e}` in:\n{}", run.all());
    }
    assert_eq!(before.root, s.snapshot(), "the root changed");
    assert_eq!(
        before.outside,
        snapshot(out.path()),
        "outside the root changed"
    );
    run
}

// ---- snippets ----

#[test]
fn an_error_quotes_its_line_with_a_caret_under_the_offending_value() {
    let s = Sandbox::new();
    s.manifest(
        "m.yaml",
        "resources:\n  - file: /etc/motd\n    content: \"hi\\n\"\n    owner: [root]\n",
    );
    let run = refused(
        &s,
        "plan",
        &["m.yaml"],
        &["m.yaml:4:12: field `owner`: expected a string, found a list"],
    );
    let err = run.stderr();
    assert!(
        err.contains("  |\n4 |     owner: [root]\n  |            ^^^^^^\n"),
        "{err}"
    );
}

#[test]
fn a_diagnostic_on_a_secret_resources_line_does_not_echo_its_value() {
    let s = Sandbox::new();
    s.manifest(
        "m.yaml",
        "resources:\n  - file: /etc/app/key\n    secret: true\n    content: [\"s3cr3t-value\"]\n  - user: svc\n    password: \"s3cr3t pass\"\n  - file: /etc/motd\n    content: [\"public-value\"]\n",
    );
    let text: &[&str] = &[
        "m.yaml:4:14: field `content`",
        "m.yaml:6:15: field `password`",
    ];
    let json: &[&str] = &[
        r#""column":14,"field":"content","file":"m.yaml","level":"error","line":4"#,
        r#""column":15,"field":"password","file":"m.yaml","level":"error","line":6"#,
        r#""source":null"#,
    ];
    for (args, expect) in [
        (vec!["m.yaml"], text),
        (vec!["m.yaml", "--log-format", "json"], json),
    ] {
        let run = refused(&s, "validate", &args, expect);
        let err = run.stderr();
        assert!(!err.contains("s3cr3t"), "a secret was echoed:\n{err}");
        // Lines that hold nothing secret are still quoted.
        assert!(err.contains("public-value"), "{err}");
    }
    let run = s.run("validate", &["m.yaml"]);
    assert!(
        run.stderr()
            .contains("the line is not shown: it may hold a secret"),
        "{}",
        run.all()
    );
}

#[test]
fn a_syntax_error_in_a_file_with_a_secret_is_located_but_not_quoted() {
    let s = Sandbox::new();
    s.manifest(
        "m.yaml",
        "resources:\n  - file: /etc/app/key\n    secret: true\n    content: \"s3cr3t-value\n",
    );
    let run = refused(&s, "plan", &["m.yaml"], &["m.yaml:4:14"]);
    assert!(!run.stderr().contains("s3cr3t"), "{}", run.all());
}

#[test]
fn a_template_error_of_a_secret_resource_does_not_quote_the_template() {
    let s = Sandbox::new();
    s.manifest(
        "m.yaml",
        "resources:\n  - file: /etc/app/key\n    secret: true\n    template: key.tera\n",
    );
    s.manifest("templates/key.tera", "token = s3cr3t-value {{ nope }}\n");
    let run = refused(&s, "plan", &["m.yaml"], &["key.tera:1:", "nope"]);
    assert!(!run.stderr().contains("s3cr3t"), "{}", run.all());
}

#[test]
fn json_diagnostics_keep_their_fields_and_carry_the_quoted_line() {
    let s = Sandbox::new();
    s.manifest(
        "m.yaml",
        "resources:\n  - file: /etc/motd\n    owner: [root]\n",
    );
    let run = refused(&s, "validate", &["m.yaml", "--log-format", "json"], &[]);
    let line = run
        .stderr()
        .lines()
        .find(|l| l.contains("\"level\":\"error\""))
        .map(str::to_string)
        .unwrap_or_else(|| panic!("{}", run.all()));
    let v: serde_json::Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(v["file"], "m.yaml");
    assert_eq!(v["line"], 3);
    assert_eq!(v["column"], 12);
    assert_eq!(v["field"], "owner");
    assert_eq!(v["source"]["text"], "    owner: [root]");
    assert_eq!(v["source"]["start"], 11);
    assert_eq!(v["source"]["length"], 6);
}

#[test]
fn a_template_parse_error_of_a_secret_resource_does_not_echo_the_template_line() {
    let s = Sandbox::new();
    s.manifest(
        "m.yaml",
        "resources:\n  - file: /etc/app/key\n    secret: true\n    template: key.tera\n",
    );
    s.manifest("templates/key.tera", "ok\n{{ \"s3cr3t-value\" + }}\n");
    let run = refused(&s, "plan", &["m.yaml"], &["key.tera:2:", "Failed to parse"]);
    assert!(!run.stderr().contains("s3cr3t"), "{}", run.all());
}

#[test]
fn a_template_error_quotes_the_template_line_under_the_variable() {
    let s = Sandbox::new();
    s.manifest(
        "m.yaml",
        "resources:\n  - file: /etc/app.conf\n    template: app.tera\n",
    );
    s.manifest("templates/app.tera", "a = 1\nb = {{ missing_var }}\n");
    let run = refused(
        &s,
        "plan",
        &["m.yaml"],
        &[
            "templates/app.tera:2:8: template: Variable `missing_var` not found",
            "m.yaml:3:15: template used here",
        ],
    );
    assert!(
        run.stderr()
            .contains("2 | b = {{ missing_var }}\n  |        ^^^^^^^^^^^\n"),
        "{}",
        run.all()
    );
}

// ---- --var ----

#[test]
fn a_var_that_no_manifest_declares_is_refused_with_the_closest_declared_name() {
    let s = Sandbox::new();
    s.manifest(
        "m.yaml",
        "vars:\n  log_level: info\nresources:\n  - file: /etc/app.conf\n    content: \"level={{ log_level }}\\n\"\n",
    );
    for cmd in ["validate", "plan", "check", "apply"] {
        refused(
            &s,
            cmd,
            &["m.yaml", "--var", "log_levle=debug"],
            &[
                "field `--var`: --var log_levle: no manifest declares a variable `log_levle`; did you mean `log_level`?",
                "note: m.yaml:2:3: `log_level` is declared here",
            ],
        );
    }
    refused(
        &s,
        "plan",
        &["m.yaml", "--var", "environment=production"],
        &["`environment` is set by --env"],
    );
    // A declared variable is still overridden.
    s.converge(&["m.yaml", "--var", "log_level=debug"]);
    assert_eq!(s.read("/etc/app.conf"), "level=debug\n");
}

// ---- hints ----

#[test]
fn an_unquoted_mode_with_a_leading_zero_gets_the_quoting_hint() {
    let s = Sandbox::new();
    s.manifest(
        "m.yaml",
        "resources:\n  - file: /etc/a\n    content: x\n    mode: 0640\n  - directory: /etc/d\n    mode: 0o750\n",
    );
    refused(
        &s,
        "plan",
        &["m.yaml"],
        &[
            "m.yaml:4:11: field `mode`: mode must be a quoted octal string: write \"0640\"; unquoted, 0640 is a number in YAML (read as 640)",
            "m.yaml:6:11: field `mode`: mode must be a quoted octal string: write \"0750\"",
        ],
    );
}

#[test]
fn a_missing_template_lists_every_place_looked_in_and_a_close_name() {
    let s = Sandbox::new();
    s.manifest(
        "site/m.yaml",
        "resources:\n  - file: /etc/a\n    template: app.conf.tmpl\n  - file: /etc/b\n    template: nothing.tera\n",
    );
    s.manifest("site/templates/app.conf.tera", "x\n");
    let run = refused(
        &s,
        "plan",
        &["site/m.yaml"],
        &[
            "site/m.yaml:3:15: field `template`: template `app.conf.tmpl` not found; looked in site/templates/app.conf.tmpl, templates/app.conf.tmpl, site/app.conf.tmpl; did you mean `app.conf.tera` (site/templates/app.conf.tera)?",
            "site/m.yaml:5:15: field `template`: template `nothing.tera` not found; looked in site/templates/nothing.tera, templates/nothing.tera, site/nothing.tera",
        ],
    );
    let nothing = run
        .stderr()
        .lines()
        .find(|l| l.contains("template `nothing.tera`"))
        .map(str::to_string)
        .unwrap_or_default();
    assert!(!nothing.contains("did you mean"), "{nothing}");
}

#[test]
fn an_undeclared_id_in_requires_before_or_notify_suggests_the_closest_declared_id() {
    let s = Sandbox::new();
    s.manifest(
        "m.yaml",
        "resources:\n  - directory: /etc/app\n  - file: /etc/app/app.conf\n    content: x\n  - file: /etc/b\n    content: x\n    requires:\n      - file[/etc/app/app.cnf]\n      - file[/etc/app]\n    before: [\"service[nginx]\"]\n    notify:\n      - file[/etc/app/app.con]\n",
    );
    refused(
        &s,
        "plan",
        &["m.yaml"],
        &[
            "m.yaml:8:9: field `requires`: file[/etc/app/app.cnf] is not declared in the manifests; did you mean file[/etc/app/app.conf]?",
            "note: m.yaml:3:5: file[/etc/app/app.conf] is declared here",
            "m.yaml:9:9: field `requires`: file[/etc/app] is not declared in the manifests; did you mean directory[/etc/app]?",
            "m.yaml:10:14: field `before`: service[nginx] is not declared in the manifests; `service` is not a kind",
            "m.yaml:12:9: field `notify`: file[/etc/app/app.con] is not declared in the manifests; did you mean file[/etc/app/app.conf]?",
        ],
    );
}

#[test]
fn a_misspelt_systemd_key_suggests_the_closest_known_key() {
    let s = Sandbox::new();
    s.manifest(
        "m.yaml",
        "resources:\n  - unit: app.service\n    sections:\n      Unit:\n        ExecStart: /bin/true\n      Service:\n        ExecStrat: /bin/true\n      Install:\n        wantedBy: multi-user.target\n",
    );
    refused(
        &s,
        "plan",
        &["m.yaml"],
        &[
            "m.yaml:5:9: field `sections`: `ExecStart=` is a [Service] setting, not a [Unit] one",
            "m.yaml:7:9: field `sections`: [Service] has no setting `ExecStrat=`; did you mean `ExecStart=`?",
            "m.yaml:9:9: field `sections`: [Install] has no setting `wantedBy=`; did you mean `WantedBy=`?",
        ],
    );
}

// ---- YAML syntax ----

#[test]
fn a_tab_in_the_indentation_is_named_on_its_own_line() {
    let s = Sandbox::new();
    s.manifest(
        "m.yaml",
        "resources:\n  - file: /etc/a\n    content: x\n\tmode: \"0644\"\n",
    );
    let run = refused(
        &s,
        "plan",
        &["m.yaml"],
        &["m.yaml:4:1: YAML: a tab character: YAML indents with spaces only"],
    );
    assert!(
        run.stderr().contains("4 |     mode: \"0644\"\n  | ^^^^\n"),
        "{}",
        run.all()
    );
}

#[test]
fn bad_indentation_is_said_in_manifest_terms_at_the_line_at_fault() {
    let s = Sandbox::new();
    for (text, expect) in [
        (
            "resources:\n  - file: /etc/a\n    content: x\n   mode: \"0644\"\n",
            "m.yaml:4:4: YAML: bad indentation: this line is indented by 3 spaces, but the blocks above it are indented by 4, 2 or 0",
        ),
        (
            "resources:\n  - file: /etc/a\n    content: x\n  mode: \"0644\"\n",
            "m.yaml:4:3: YAML: bad indentation: this line is indented like the list item on line 2 (2 spaces) but does not start with `- `: indent it by 4 spaces",
        ),
        (
            "resources:\n  - file: /etc/a\n    content: x\n      mode: \"0644\"\n",
            "m.yaml:4:7: YAML: bad indentation: this line is indented more than the entry on line 3 (6 spaces, not 4)",
        ),
    ] {
        s.manifest("m.yaml", text);
        refused(&s, "plan", &["m.yaml"], &[expect]);
    }
}

#[test]
fn a_missing_colon_a_missing_key_and_an_unquoted_colon_are_named() {
    let s = Sandbox::new();
    for (text, expect) in [
        (
            "resources:\n  - file: /etc/a\n    content x\n",
            "m.yaml:3:5: YAML: a key without `:`",
        ),
        (
            "resources:\n  - file: /etc/a\n    : x\n",
            "m.yaml:3:5: field `(no key)`: an entry of `file` with no key before its `:`",
        ),
        (
            "resources:\n  - file: /etc/a\n    owner:root\n",
            "m.yaml:3:5: YAML: a `:` must be followed by a space",
        ),
        (
            "resources:\n  - file: /etc/a\n    content: echo a: b\n",
            "m.yaml:3:20: YAML: a second `: ` in this value: a value that contains `: ` must be quoted",
        ),
        (
            "resources:\n  - file: /etc/a\n    requires: [a, b\n  - file: /etc/b\n",
            "m.yaml:3:15: YAML: this `[` is never closed",
        ),
    ] {
        s.manifest("m.yaml", text);
        refused(&s, "plan", &["m.yaml"], &[expect]);
    }
}
