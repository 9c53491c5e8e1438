//! What the commands print: JSON documents for programs, and the quiet mode.

mod support;

use serde_json::Value;
use support::sandbox::Sandbox;

fn doc(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not one JSON document ({e}):\n{text}"))
}

#[test]
fn every_json_document_carries_the_tool_version() {
    let s = Sandbox::new();
    s.manifest(
        "site.yaml",
        "resources:\n  - file: /srv/a\n    content: \"a\\n\"\n",
    );
    let version = env!("CARGO_PKG_VERSION");
    for cmd in ["plan", "check"] {
        let run = s.run(cmd, &["--format", "json", "site.yaml"]);
        let d = doc(&run.stdout());
        assert_eq!(d["reconcile_version"], version, "{cmd}: {}", run.all());
    }
    let run = s.run("apply", &["--format", "json", "site.yaml"]);
    assert_eq!(run.code(), 0, "{}", run.all());
    let d = doc(&run.stdout());
    assert_eq!(d["reconcile_version"], version);
    assert_eq!(d["summary"]["changed"], 1, "{d}");
    // The run id is the one the audit trail recorded for this apply.
    let run_id = d["run_id"].as_str().unwrap_or_default().to_string();
    assert!(!run_id.is_empty(), "{d}");
    let log = s.read("/var/log/reconcile/audit.jsonl");
    assert!(log.contains(&run_id), "{run_id} not in the audit log");
}

#[test]
fn a_manifest_error_under_format_json_prints_an_error_document_on_stdout() {
    let s = Sandbox::new();
    s.manifest("site.yaml", "resources:\n  - file: /srv/a\n    mode: 644\n");
    for cmd in ["plan", "check", "apply"] {
        let run = s.run(cmd, &["--format", "json", "site.yaml"]);
        assert_eq!(run.code(), 1, "{}", run.all());
        let d = doc(&run.stdout());
        assert_eq!(d["format"], "reconcile-error", "{cmd}: {d}");
        assert_eq!(d["errors"][0]["line"], 3, "{d}");
        assert_eq!(d["errors"][0]["field"], "mode", "{d}");
        // The human diagnostics still go to stderr.
        assert!(run.stderr().contains("site.yaml:3"), "{}", run.all());
    }
}

#[test]
fn quiet_prints_only_errors_and_the_summary_line() {
    let s = Sandbox::new();
    s.manifest(
        "site.yaml",
        "resources:\n  - file: /srv/a\n    content: \"a\\n\"\n  - file: /srv/b\n    content: \"b\\n\"\n",
    );
    let plan = s.run("plan", &["-q", "site.yaml"]);
    assert_eq!(plan.code(), 0, "{}", plan.all());
    assert_eq!(
        plan.stdout(),
        "Plan: 2 to add, 0 to change, 0 to remove.\n",
        "{}",
        plan.all()
    );
    let apply = s.run("apply", &["-q", "site.yaml"]);
    assert_eq!(apply.code(), 0, "{}", apply.all());
    assert_eq!(
        apply.stdout().trim(),
        "Apply: 2 changed, 0 unchanged, 0 failed, 0 skipped.",
        "{}",
        apply.all()
    );
    std::fs::write(s.path("/srv/a"), "drift\n").unwrap_or_else(|e| panic!("{e}"));
    let check = s.run("check", &["-q", "site.yaml"]);
    assert_eq!(check.code(), 2, "{}", check.all());
    assert!(!check.stdout().contains("drift"), "{}", check.all());
    assert_eq!(
        check.stdout(),
        "Plan: 0 to add, 1 to change, 0 to remove.\n",
        "{}",
        check.all()
    );
    // A resource that cannot be planned is an error: shown even with -q.
    s.manifest(
        "site.yaml",
        "resources:\n  - file: /srv/a\n    content: \"a\\n\"\n    owner: nobody-here\n",
    );
    let failing = s.run("plan", &["-q", "site.yaml"]);
    assert_eq!(failing.code(), 1, "{}", failing.all());
    assert!(failing.all().contains("nobody-here"), "{}", failing.all());
}

#[test]
fn manifest_errors_never_print_terminal_escape_codes_raw() {
    let s = Sandbox::new();
    s.manifest(
        "site.yaml",
        "resources:\n  - file: \"/srv/\\e[31mred\"\n  - file: \"/srv/\\e[31mred\"\n",
    );
    let run = s.run("validate", &["site.yaml"]);
    assert_eq!(run.code(), 1, "{}", run.all());
    // The duplicate id quotes the path, escaped.
    assert!(run.all().contains("/srv/\\u{1b}[31mred"), "{:?}", run.all());
    assert!(!run.all().contains('\u{1b}'), "{:?}", run.all());
}

#[test]
fn apply_format_jsonl_streams_one_line_per_resource_then_a_summary() {
    let s = Sandbox::new();
    s.manifest(
        "site.yaml",
        "resources:\n  - file: /srv/a\n    content: \"a\\n\"\n  - file: /srv/k\n    content: \"key\\n\"\n    secret: true\n",
    );
    let run = s.run("apply", &["--format", "jsonl", "site.yaml"]);
    assert_eq!(run.code(), 0, "{}", run.all());
    let lines: Vec<Value> = run.stdout().lines().map(doc).collect();
    assert_eq!(lines.len(), 3, "{}", run.all());
    let run_id = lines[2]["run_id"].clone();
    for l in &lines[..2] {
        assert_eq!(l["format"], "reconcile-apply-outcome", "{l}");
        assert_eq!(l["status"], "changed", "{l}");
        assert_eq!(l["run_id"], run_id, "{l}");
    }
    assert_eq!(lines[2]["format"], "reconcile-apply", "{}", lines[2]);
    assert_eq!(lines[2]["summary"]["changed"], 2, "{}", lines[2]);
    // The secret's fingerprints are keyed, as in every other document.
    let secret = lines[..2]
        .iter()
        .find(|l| l["id"] == "file[/srv/k]")
        .unwrap_or_else(|| panic!("{}", run.all()));
    let live = secret["change"]["live"].as_str().unwrap_or("hmac:");
    assert!(live.starts_with("hmac:"), "{secret}");
    assert!(!run.stdout().contains("key\\n"), "{}", run.all());
    // Only apply streams.
    let plan = s.run("plan", &["--format", "jsonl", "site.yaml"]);
    assert_eq!(plan.code(), 1, "{}", plan.all());
}
