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
