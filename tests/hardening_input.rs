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
fn deep_block_maps_flow_lists_mixed_nesting_and_nested_aliases_are_refused_on_a_small_stack() {
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
    // Each alias wraps the previous one in one more list: depth grows on replay.
    let mut aliases = String::from("vars:\n  l0: &a0 x\n");
    for i in 1..60 {
        aliases.push_str(&format!("  l{i}: &a{i} [*a{}]\n", i - 1));
    }
    s.manifest("aliases.yaml", &aliases);
    let before = snap(&s, out.path());
    for file in [
        "map.yaml",
        "list.yaml",
        "mixed.yaml",
        "mixed-flow.yaml",
        "aliases.yaml",
    ] {
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

// ---- item 9: input sizes ----

/// Runs `reconcile ARGS... --root ROOT` with at most `vmem_mib` of address space:
/// reading a 2 GiB input whole would fail (abort), not pass.
fn run_with_memory(s: &Sandbox, vmem_mib: u32, args: &[&str]) -> Run {
    let script = format!("ulimit -v {} && exec \"$0\" \"$@\"", vmem_mib * 1024);
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

#[test]
fn a_manifest_over_the_size_limit_is_refused_before_it_is_read() {
    let s = Sandbox::new();
    let out = outside();
    let big = s.manifest("big.yaml", "");
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&big)
        .unwrap_or_else(|e| panic!("{e}"));
    f.set_len(2 << 30).unwrap_or_else(|e| panic!("{e}"));
    let before = snap(&s, out.path());
    let started = std::time::Instant::now();
    let run = run_with_memory(&s, 1024, &["apply", "big.yaml"]);
    assert_refused(
        &s,
        out.path(),
        &run,
        &["big.yaml: cannot read manifest: is larger than the limit of 64 MiB"],
        &before,
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
}

#[test]
fn a_template_looping_a_hundred_million_times_fails_naming_the_template() {
    let s = Sandbox::new();
    let out = outside();
    s.manifest(
        "site.yaml",
        "resources:\n  - file: /etc/range\n    template: range.tera\n  - file: /etc/nested\n    template: nested.tera\n  - file: /etc/inline\n    content: \"{% for i in range(end=100000) %}{% for j in range(end=100000) %}xxxxxxxxxx{% endfor %}{% endfor %}\"\n",
    );
    s.manifest(
        "templates/range.tera",
        "{% for i in range(end=100000000) %}x{% endfor %}\n",
    );
    s.manifest(
        "templates/nested.tera",
        "{% for i in range(end=10000) %}{% for j in range(end=10000) %}xxxxxxxxxx{% endfor %}{% endfor %}\n",
    );
    let before = snap(&s, out.path());
    let run = run_with_memory(&s, 1024, &["apply", "site.yaml"]);
    assert_refused(
        &s,
        out.path(),
        &run,
        &[
            "templates/range.tera: template: Function call 'range' failed: `range` would produce 100000000 numbers",
            "site.yaml:3:15: template used here",
            "templates/nested.tera: template: the output is larger than the limit of 64 MiB",
            "site.yaml:5:15: template used here",
            "site.yaml:7:14: field `content`: template: the output is larger than the limit of 64 MiB",
            "3 errors in the manifests",
        ],
        &before,
    );
}

#[test]
fn a_huge_hostname_file_in_the_root_is_ignored_not_read() {
    let s = Sandbox::new();
    let out = outside();
    let hostname = s.put("/etc/hostname", b"");
    std::fs::OpenOptions::new()
        .write(true)
        .open(&hostname)
        .and_then(|f| f.set_len(2 << 30))
        .unwrap_or_else(|e| panic!("{e}"));
    s.put("/etc/os-release", &vec![b'#'; 1 << 20]);
    s.manifest(
        "site.yaml",
        "resources:\n  - file: /srv/host\n    content: \"{{ host.hostname }} {{ host.os }}.\"\n",
    );
    let before = snapshot(out.path());
    let run = run_with_memory(&s, 1024, &["apply", "site.yaml"]);
    run.assert_code(0);
    assert_eq!(s.read("/srv/host"), "localhost .");
    assert_eq!(before, snapshot(out.path()));
    let again = s.run("plan", &["--detailed-exitcode", "site.yaml"]);
    again.assert_code(0);
}

// ---- item 15: environment, includes, special files ----

#[test]
fn templates_cannot_read_the_operators_environment() {
    let s = Sandbox::new();
    let out = outside();
    s.manifest(
        "site.yaml",
        "resources:\n  - file: /etc/a\n    content: \"{{ get_env(name='HOME') }}\"\n  - file: /etc/b\n    template: b.tera\n  - file: /etc/c\n    content: x\n    when: get_env(name='HOME', default='') != ''\n",
    );
    s.manifest("templates/b.tera", "home={{ get_env(name=\"HOME\") }}\n");
    let before = snap(&s, out.path());
    let run = s.run("apply", &["site.yaml"]);
    assert_refused(
        &s,
        out.path(),
        &run,
        &[
            "site.yaml:3:14: field `content`: template: Function call 'get_env' failed: `get_env` is disabled",
            "templates/b.tera: template: Function call 'get_env' failed: `get_env` is disabled",
            "site.yaml:5:15: template used here",
            "site.yaml:8:11: field `when`",
            "3 errors in the manifests",
        ],
        &before,
    );
}

#[test]
fn an_include_with_dotdot_is_refused_like_template_and_source() {
    let s = Sandbox::new();
    let out = outside();
    s.manifest(
        "other.yaml",
        "resources:\n  - file: /etc/other\n    content: x\n",
    );
    s.manifest(
        "sub/site.yaml",
        "include:\n  - ../other.yaml\n  - ok/../../other.yaml\nresources:\n  - file: /etc/a\n    content: x\n",
    );
    let before = snap(&s, out.path());
    let run = s.run("apply", &["sub/site.yaml"]);
    assert_refused(
        &s,
        out.path(),
        &run,
        &[
            "sub/site.yaml:2:5: field `include`: include `../other.yaml` must not contain `..`",
            "sub/site.yaml:3:5: field `include`: include `ok/../../other.yaml` must not contain `..`",
            "2 errors in the manifests",
        ],
        &before,
    );
}

/// Waits for `child` at most `secs` seconds; kills it (by its own pid) if it hangs.
fn wait_bounded(mut child: std::process::Child, secs: u64) -> Run {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("reconcile hung on a special file");
            }
        }
    }
    Run(child
        .wait_with_output()
        .unwrap_or_else(|e| panic!("wait: {e}")))
}

#[test]
fn a_fifo_a_device_or_a_socket_given_as_a_manifest_is_named_for_what_it_is_and_never_blocks() {
    let s = Sandbox::new();
    let out = outside();
    let fifo = s.manifests.join("pipe.yaml");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600))
        .unwrap_or_else(|e| panic!("mkfifo: {e}"));
    std::fs::create_dir_all(s.manifests.join("dir")).unwrap_or_else(|e| panic!("{e}"));
    nix::unistd::mkfifo(
        &s.manifests.join("dir/in-folder.yaml"),
        nix::sys::stat::Mode::from_bits_truncate(0o600),
    )
    .unwrap_or_else(|e| panic!("mkfifo: {e}"));
    let _socket = std::os::unix::net::UnixListener::bind(s.manifests.join("sock.yaml"))
        .unwrap_or_else(|e| panic!("bind: {e}"));
    s.manifest(
        "incl.yaml",
        "include:\n  - pipe.yaml\nresources:\n  - file: /etc/a\n    template: t.tera\n",
    );
    nix::unistd::mkfifo(
        &s.manifests.join("t.tera"),
        nix::sys::stat::Mode::from_bits_truncate(0o600),
    )
    .unwrap_or_else(|e| panic!("mkfifo: {e}"));
    let before = snap(&s, out.path());
    let cases: &[(&str, &[&str])] = &[
        (
            "pipe.yaml",
            &["pipe.yaml: cannot read manifest: is a FIFO (named pipe), not a regular file"],
        ),
        (
            "/dev/zero",
            &["/dev/zero: cannot read manifest: is a character device, not a regular file"],
        ),
        (
            "dir",
            &["dir/in-folder.yaml: cannot read manifest: is a FIFO (named pipe)"],
        ),
        (
            "sock.yaml",
            &["sock.yaml: cannot read manifest: is a socket, not a regular file"],
        ),
        (
            "incl.yaml",
            &[
                "incl.yaml:2:5: field `include`: cannot read manifest pipe.yaml: is a FIFO (named pipe)",
                "incl.yaml:5:15: field `template`: cannot read template",
                "t.tera: is a FIFO (named pipe), not a regular file",
            ],
        ),
    ];
    for (arg, expect) in cases {
        for cmd in ["validate", "apply"] {
            let child = Command::new(BIN)
                .current_dir(&s.manifests)
                .env("NO_COLOR", "1")
                .args([cmd, arg, "--root"])
                .arg(&s.root)
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap_or_else(|e| panic!("spawn: {e}"));
            let run = wait_bounded(child, 20);
            assert_refused(&s, out.path(), &run, expect, &before);
            assert!(!run.stderr().contains("does not exist"), "{}", run.all());
        }
    }
}

// ---- item 13: values that would fail only at apply ----

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");

#[test]
fn values_that_would_fail_only_at_apply_are_refused_at_load_all_at_once() {
    let s = Sandbox::new();
    let out = outside();
    s.put("/etc/motd", b"original\n");
    let fixture = format!("{FIXTURES}/bad/apply-only-values.yaml");
    let before = snap(&s, out.path());
    for cmd in ["validate", "plan", "apply"] {
        let run = s.run(cmd, &[&fixture]);
        assert_refused(
            &s,
            out.path(),
            &run,
            &[
                "apply-only-values.yaml:4:13: field `target`: the target contains a NUL byte",
                "apply-only-values.yaml:7:15: field `validate`: the validate command contains a NUL byte",
                "apply-only-values.yaml:10:12: field `owner`: 4294967295 is out of range",
                "apply-only-values.yaml:11:12: field `group`: 4294967295 is out of range",
                "apply-only-values.yaml:13:12: field `owner`: 4294967296 is out of range",
                "apply-only-values.yaml:14:12: field `group`: -1 is out of range",
                "apply-only-values.yaml:16:13: field `target`: the target must not be empty",
                "7 errors in the manifests",
            ],
            &before,
        );
    }
}

#[test]
fn one_path_declared_as_two_kinds_or_below_a_file_is_refused_naming_both_declarations() {
    let s = Sandbox::new();
    let out = outside();
    s.put("/etc/motd", b"original\n");
    let fixture = format!("{FIXTURES}/bad/same-path-two-kinds.yaml");
    let before = snap(&s, out.path());
    for cmd in ["validate", "plan", "apply", "graph"] {
        let run = s.run(cmd, &[&fixture]);
        assert_refused(
            &s,
            out.path(),
            &run,
            &[
                "same-path-two-kinds.yaml:5:5: symlink[/etc/motd] and file[/etc/motd] both manage /etc/motd",
                "same-path-two-kinds.yaml:3:5: file[/etc/motd] is declared here",
                "same-path-two-kinds.yaml:8:5: file[/srv/app] and directory[/srv/app] both manage /srv/app",
                "same-path-two-kinds.yaml:7:5: directory[/srv/app] is declared here",
                "same-path-two-kinds.yaml:12:5: directory[/srv/link] and symlink[/srv/link] both manage /srv/link",
                "same-path-two-kinds.yaml:10:5: symlink[/srv/link] is declared here",
                "same-path-two-kinds.yaml:15:5: directory[/srv/plain/inner/deeper] is below file[/srv/plain]: nothing can be created below a file",
                "same-path-two-kinds.yaml:13:5: file[/srv/plain] is declared here",
                "4 errors in the manifests",
            ],
            &before,
        );
    }
}

#[test]
fn a_unit_file_also_declared_as_a_file_is_refused_with_other_errors_of_other_files() {
    let s = Sandbox::new();
    let out = outside();
    s.manifest(
        "a.yaml",
        "resources:\n  - unit: app.service\n    content: \"[Service]\\nExecStart=/bin/true\\n\"\n",
    );
    s.manifest(
        "b.yaml",
        "resources:\n  - file: /etc/systemd/system/app.service\n    content: x\n  - file: /etc/x\n    owner: 4294967295\n",
    );
    let before = snap(&s, out.path());
    let run = s.run("apply", &["a.yaml", "b.yaml"]);
    assert_refused(
        &s,
        out.path(),
        &run,
        &[
            "b.yaml:5:12: field `owner`: 4294967295 is out of range",
            "b.yaml:2:5: file[/etc/systemd/system/app.service] and unit[app.service] both manage /etc/systemd/system/app.service",
            "a.yaml:2:5: unit[app.service] is declared here",
            "2 errors in the manifests",
        ],
        &before,
    );
}

#[test]
fn numeric_owners_in_range_still_converge() {
    if !support::sandbox::is_root() {
        return; // chown to another uid needs root
    }
    let s = Sandbox::new();
    s.manifest(
        "site.yaml",
        "resources:\n  - file: /srv/a\n    content: x\n    owner: 4294967294\n    group: \"0\"\n  - symlink: /srv/l\n    target: a\n",
    );
    s.converge(&["site.yaml"]);
}

#[test]
fn templates_nested_or_recursing_without_bound_are_refused_on_a_small_stack() {
    let s = Sandbox::new();
    let out = outside();
    s.manifest(
        "site.yaml",
        "resources:\n  - file: /etc/a\n    template: ifs.tera\n  - file: /etc/b\n    template: plus.tera\n  - file: /etc/c\n    template: macro.tera\n  - file: /etc/d\n    template: self.tera\n  - file: /etc/e\n    content: x\n    when: 1 == 1 and (((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((true))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))\n",
    );
    s.manifest(
        "templates/ifs.tera",
        &format!(
            "{}x{}",
            "{% if true %}".repeat(20_000),
            "{% endif %}".repeat(20_000)
        ),
    );
    s.manifest(
        "templates/plus.tera",
        &format!("a\n{{{{ {}1 }}}}\n", "1 + ".repeat(20_000)),
    );
    s.manifest(
        "templates/macro.tera",
        "{% macro f(n) %}{{ self::f(n=n+1) }}{% endmacro f %}\n{{ self::f(n=1) }}\n",
    );
    s.manifest(
        "templates/self.tera",
        "{% include \"templates/self.tera\" %}\n",
    );
    let before = snap(&s, out.path());
    let run = run_with_stack(&s, 256, &["apply", "site.yaml"]);
    assert_refused(
        &s,
        out.path(),
        &run,
        &[
            "templates/ifs.tera:1:1: template: nesting too deep",
            "templates/plus.tera:2:1: template: nesting too deep",
            "templates/macro.tera:1:1: template: a macro may not call macros",
            "templates/self.tera:1:1: template: `include` is not supported",
            "site.yaml:12:11: field `when`: condition: nesting too deep",
            "5 errors in the manifests",
        ],
        &before,
    );
}
