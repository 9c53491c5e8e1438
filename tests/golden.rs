//! Golden snapshots of rendered plans (text and JSON) for representative manifests.

mod support;

use support::sandbox::Sandbox;

fn site(s: &Sandbox) {
    s.put("/etc/hostname", b"clinic-01\n");
    s.put(
        "/etc/intelluxe/app.conf",
        b"[app]\nname = intelluxe\nlog_level = debug\n",
    );
    s.put("/etc/intelluxe/old.conf", b"legacy\n");
    s.manifest(
        "site.yaml",
        r#"
vars:
  app: intelluxe
resources:
  - directory: /etc/{{ app }}
    mode: "0750"
  - file: /etc/{{ app }}/app.conf
    template: app.conf.tera
    mode: "0640"
  - file: /etc/{{ app }}/db-password
    content: "do-not-show\n"
    mode: "0600"
    secret: true
  - file: /etc/{{ app }}/old.conf
    state: absent
  - symlink: /opt/{{ app }}/current
    target: /opt/{{ app }}/releases/1
"#,
    );
    s.manifest(
        "templates/app.conf.tera",
        "[app]\nname = {{ app }}\nhost = {{ host.hostname }}\nlog_level = info\n",
    );
    for p in [
        "/etc/intelluxe",
        "/etc/intelluxe/app.conf",
        "/etc/intelluxe/old.conf",
    ] {
        let mode = if p.ends_with("intelluxe") {
            0o755
        } else {
            0o644
        };
        std::fs::set_permissions(
            s.path(p),
            std::os::unix::fs::PermissionsExt::from_mode(mode),
        )
        .unwrap_or_else(|e| panic!("{e}"));
    }
}

fn redact(text: &str, s: &Sandbox) -> String {
    text.replace(&s.root.display().to_string(), "[ROOT]")
}

#[test]
fn plan_text() {
    let s = Sandbox::new();
    site(&s);
    let run = s.run("plan", &["site.yaml"]);
    run.assert_code(0);
    insta::assert_snapshot!(redact(&run.stdout(), &s));
}

#[test]
fn plan_json() {
    let s = Sandbox::new();
    site(&s);
    let run = s.run("plan", &["site.yaml", "--format", "json"]);
    run.assert_code(0);
    let mut v: serde_json::Value =
        serde_json::from_str(&run.stdout()).unwrap_or_else(|e| panic!("{e}"));
    v["root"] = "[ROOT]".into();
    v["inputs"] = "[inputs]".into();
    v["reconcile_version"] = "[version]".into();
    // Live fingerprints include the test user's uid; they are covered by the stale-plan tests.
    if let Some(changes) = v["changes"].as_array_mut() {
        for c in changes {
            c["live"] = "[live]".into();
        }
    }
    insta::assert_json_snapshot!(v);
}
