//! Hostile manifests and inputs: nesting that would overflow the stack, inputs too
//! large to read, special files given as manifests, values that would fail only at
//! apply. Each is refused with its place, and nothing in the root or outside changes.

mod support;

use std::path::Path;
use std::process::Command;

use support::sandbox::{snapshot, Run, Sandbox};

const BIN: &str = env!("CARGO_BIN_EXE_reconcile");

/// Runs `reconcile ARGS... --root ROOT` from the manifests folder in a child shell
/// whose stack limit is `stack_kib`.
fn run_with_stack(s: &Sandbox, stack_kib: u32, args: &[&str]) -> Run {
    let script = format!("ulimit -s {stack_kib} && exec \"$0\" \"$@\"");
    let out = Command::new("sh")
        .current_dir(&s.manifests)
        .env("NO_COLOR", "1")
        .arg("-c")
        .arg(script)
        .arg(BIN)
        .args(args)
        .arg("--root")
        .arg(&s.root)
        .output()
        .unwrap_or_else(|e| panic!("run: {e}"));
    Run(out)
}

/// A directory outside the scratch root, with something in it to compare.
fn outside() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    std::fs::write(dir.path().join("precious"), "precious\n").unwrap_or_else(|e| panic!("{e}"));
    dir
}

/// Asserts a refused run: exit 1 (never a signal), every `expect` in stderr, and
/// neither the root nor `outside` changed.
fn assert_refused(s: &Sandbox, outside: &Path, run: &Run, expect: &[&str], before: &Snap) {
    assert_eq!(run.code(), 1, "{}", run.all());
    let err = run.stderr();
    for e in expect {
        assert!(err.contains(e), "expected `{e}` in:\n{}", run.all());
    }
    assert_eq!(before.root, s.snapshot(), "the root changed");
    assert_eq!(
        before.outside,
        snapshot(outside),
        "outside the root changed"
    );
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

// ---- item 5: nesting ----

#[test]
fn twenty_thousand_levels_of_compact_nesting_are_refused_on_a_small_stack_by_every_command() {
    let s = Sandbox::new();
    let out = outside();
    s.put("/etc/motd", b"original\n");
    s.manifest("deep.yaml", &format!("{}x\n", "- ".repeat(20_000)));
    let before = snap(&s, out.path());
    for cmd in ["validate", "plan", "apply", "check", "graph"] {
        let run = run_with_stack(&s, 256, &[cmd, "deep.yaml"]);
        assert_refused(
            &s,
            out.path(),
            &run,
            &["deep.yaml:1:65", "nesting too deep"],
            &before,
        );
    }
}

#[test]
fn a_fifty_level_flow_map_is_refused_on_a_small_stack() {
    let s = Sandbox::new();
    let out = outside();
    s.manifest(
        "flow.yaml",
        &format!("vars:\n  a: {}1{}\n", "{b: ".repeat(50), "}".repeat(50)),
    );
    let before = snap(&s, out.path());
    for cmd in ["validate", "apply"] {
        let run = run_with_stack(&s, 256, &[cmd, "flow.yaml"]);
        assert_refused(
            &s,
            out.path(),
            &run,
            &["flow.yaml:2:", "nesting too deep"],
            &before,
        );
    }
}

#[test]
fn deep_block_maps_flow_lists_and_mixed_nesting_are_refused_on_a_small_stack() {
    let s = Sandbox::new();
    let out = outside();
    let mut block_map = String::from("vars:\n");
    for i in 1..3_000 {
        block_map.push_str(&format!("{}k:\n", " ".repeat(i)));
    }
    block_map.push_str(&format!("{}k: 1\n", " ".repeat(3_000)));
    s.manifest("map.yaml", &block_map);
    s.manifest(
        "list.yaml",
        &format!("vars:\n  a: {}{}\n", "[".repeat(5_000), "]".repeat(5_000)),
    );
    s.manifest(
        "mixed.yaml",
        &format!("vars:\n  - k:\n    {}x\n", "- ".repeat(3_000)),
    );
    s.manifest(
        "mixed-flow.yaml",
        &format!("vars:\n  a: {}\n", "[{k: ".repeat(3_000)),
    );
    let before = snap(&s, out.path());
    for file in ["map.yaml", "list.yaml", "mixed.yaml", "mixed-flow.yaml"] {
        let run = run_with_stack(&s, 256, &["validate", file]);
        assert_refused(
            &s,
            out.path(),
            &run,
            &[&format!("{file}:"), "nesting too deep"],
            &before,
        );
    }
}

#[test]
fn nesting_up_to_the_limit_still_loads_on_a_small_stack() {
    let s = Sandbox::new();
    // 32 levels: the top-level mapping, `vars`, and 30 flow mappings.
    s.manifest(
        "site.yaml",
        &format!(
            "vars:\n  a: {}ok{}\nresources:\n  - file: /etc/x\n    content: \"{{{{ a{} }}}}\"\n",
            "{b: ".repeat(30),
            "}".repeat(30),
            ".b".repeat(30)
        ),
    );
    let run = run_with_stack(&s, 256, &["validate", "site.yaml"]);
    run.assert_code(0);
}
