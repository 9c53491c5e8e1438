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
