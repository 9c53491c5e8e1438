//! A local apt repository of tiny demo packages, built on this machine with
//! `dpkg-deb` and `dpkg-scanpackages` for the tests that boot a host and point apt
//! at it (packages, upgrade).

use std::path::Path;

use super::testhost::in_ci;

/// A package of the demo repository: name, version, Depends, and a maintainer
/// script (name, body) if any.
pub struct Demo {
    pub name: &'static str,
    pub version: &'static str,
    pub depends: &'static str,
    pub script: Option<(&'static str, &'static str)>,
}

pub const fn demo(name: &'static str, version: &'static str, depends: &'static str) -> Demo {
    Demo {
        name,
        version,
        depends,
        script: None,
    }
}

pub fn machine(program: &str, args: &[&str], dir: &Path) -> String {
    let out = std::process::Command::new(program)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Builds a repository of `demos` on this machine (dpkg-deb, dpkg-scanpackages):
/// each ships `/etc/NAME/NAME.conf` (a conffile) and `/usr/share/NAME/VERSION`.
pub fn build_repo(demos: &[Demo]) -> Option<tempfile::TempDir> {
    let tools = ["dpkg-deb", "dpkg-scanpackages"];
    if let Some(t) = tools
        .iter()
        .find(|t| !Path::new("/usr/bin").join(t).is_file())
    {
        if in_ci() {
            panic!("{t} is missing under CI=true (package dpkg-dev)");
        }
        eprintln!("skipping: {t} is missing (package dpkg-dev)");
        return None;
    }
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let repo = dir.path().join("repo");
    std::fs::create_dir_all(&repo).unwrap_or_else(|e| panic!("{e}"));
    for d in demos {
        let build = dir.path().join(format!("{}_{}", d.name, d.version));
        let debian = build.join("DEBIAN");
        let share = build.join("usr/share").join(d.name);
        let etc = build.join("etc").join(d.name);
        for p in [&debian, &share, &etc] {
            std::fs::create_dir_all(p).unwrap_or_else(|e| panic!("{e}"));
        }
        let mut control = format!(
            "Package: {}\nVersion: {}\nArchitecture: all\nMaintainer: reconcile tests <tests@example.invalid>\nPriority: optional\nSection: misc\nDescription: reconcile demo package {}\n",
            d.name, d.version, d.name
        );
        if !d.depends.is_empty() {
            control.push_str(&format!("Depends: {}\n", d.depends));
        }
        let write = |p: &Path, s: &str| std::fs::write(p, s).unwrap_or_else(|e| panic!("{e}"));
        write(&debian.join("control"), &control);
        write(
            &debian.join("conffiles"),
            &format!("/etc/{0}/{0}.conf\n", d.name),
        );
        write(&etc.join(format!("{}.conf", d.name)), "setting = 1\n");
        write(&share.join("VERSION"), &format!("{}\n", d.version));
        if let Some((name, body)) = d.script {
            let p = debian.join(name);
            write(&p, body);
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755))
                .unwrap_or_else(|e| panic!("{e}"));
        }
        let deb = repo.join(format!("{}_{}_all.deb", d.name, d.version));
        let build_s = build.to_string_lossy().into_owned();
        let deb_s = deb.to_string_lossy().into_owned();
        machine(
            "dpkg-deb",
            &["--root-owner-group", "-Zgzip", "--build", &build_s, &deb_s],
            dir.path(),
        );
    }
    let packages = machine("dpkg-scanpackages", &["-m", "."], &repo);
    std::fs::write(repo.join("Packages"), packages).unwrap_or_else(|e| panic!("{e}"));
    Some(dir)
}
