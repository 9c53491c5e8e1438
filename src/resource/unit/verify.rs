//! Validation: `systemd-analyze verify` and `security` on a scratch root.

use super::*;

// ---------------------------------------------------------------------------------
// Validation: systemd-analyze verify and security on a scratch root

/// A scratch root holding the target's units plus every declared unit, removed on drop.
pub(super) struct VerifyRoot {
    /// Removes the scratch root when the verification is done.
    _dir: ScratchDir,
    path: PathBuf,
    pub(super) notes: Vec<String>,
}

pub(super) const UNIT_SEARCH: &[&str] = &[
    "/etc/systemd/system",
    "/usr/lib/systemd/system",
    "/lib/systemd/system",
];

/// Copies one unit directory of the target (files, symlinks, `*.d/*.conf`) into the
/// scratch root; `.wants`/`.requires` links are not needed to verify.
pub(super) fn copy_target_dir(host: &Host, dir: &str, dest: &Path) -> bool {
    let Ok(names) = host.list_dir(dir) else {
        return false;
    };
    if std::fs::create_dir_all(dest).is_err() {
        return false;
    }
    for name in names {
        let path = format!("{dir}/{name}");
        match host.read(&path) {
            Ok(Some((_, Some(bytes)))) => {
                let _ = std::fs::write(dest.join(&name), bytes);
            }
            Ok(Some((st, None))) if st.kind == FileKind::Symlink => {
                if let Ok(Some(t)) = host.read_link(&path) {
                    let _ = std::os::unix::fs::symlink(t, dest.join(&name));
                }
            }
            Ok(Some((st, None))) if st.kind == FileKind::Directory && name.ends_with(".d") => {
                for conf in host.list_dir(&path).unwrap_or_default() {
                    if let Ok(Some((_, Some(bytes)))) = host.read(&format!("{path}/{conf}")) {
                        let d = dest.join(&name);
                        let _ = std::fs::create_dir_all(&d);
                        let _ = std::fs::write(d.join(&conf), bytes);
                    }
                }
            }
            _ => {}
        }
    }
    true
}

/// The same from this machine (only when the target has no systemd units at all).
pub(super) fn copy_machine_dir(src: &Path, dest: &Path) -> bool {
    let Ok(entries) = std::fs::read_dir(src) else {
        return false;
    };
    if std::fs::create_dir_all(dest).is_err() {
        return false;
    }
    for e in entries.flatten() {
        let Ok(ft) = e.file_type() else { continue };
        let to = dest.join(e.file_name());
        if ft.is_symlink() {
            if let Ok(t) = std::fs::read_link(e.path()) {
                let _ = std::os::unix::fs::symlink(t, to);
            }
        } else if ft.is_file() {
            let _ = std::fs::copy(e.path(), to);
        }
    }
    true
}

pub(super) fn build_verify_root(host: &Host, catalog: &Catalog) -> Result<VerifyRoot, String> {
    let dir = ScratchDir::new("unit-verify", host.root()).map_err(|e| e.to_string())?;
    let mut root = VerifyRoot {
        path: dir.path().to_path_buf(),
        _dir: dir,
        notes: Vec::new(),
    };
    let rel = |p: &str| root.path.join(p.trim_start_matches('/'));
    let mut have_units = false;
    for dir in UNIT_SEARCH {
        let dest = rel(dir);
        if copy_target_dir(host, dir, &dest) {
            have_units |= dest.join("sysinit.target").exists();
        }
    }
    if !have_units {
        copy_machine_dir(
            Path::new("/usr/lib/systemd/system"),
            &rel("/usr/lib/systemd/system"),
        );
        root.notes.push(format!(
            "{} has no systemd units of its own; verified against this machine's standard units",
            host.root().display()
        ));
    }
    // Merged-/usr layout, so absolute links such as /lib/systemd/system/x resolve.
    for (link, to) in [("lib", "usr/lib"), ("bin", "usr/bin"), ("sbin", "usr/sbin")] {
        let at = root.path.join(link);
        if std::fs::symlink_metadata(&at).is_err() {
            let _ = std::os::unix::fs::symlink(to, at);
        }
    }
    // An empty file reads as masked to systemd, as /dev/null does.
    let _ = std::fs::create_dir_all(root.path.join("dev"));
    let _ = std::fs::write(root.path.join("dev/null"), b"");
    for u in catalog
        .resources
        .iter()
        .filter_map(|r| r.as_any().downcast_ref::<Unit>())
    {
        let Some(c) = &u.content else { continue };
        let dest = rel(&u.path);
        if let Some(parent) = dest.parent() {
            std::fs::create_dir_all(parent).map_err(|e| format!("{}: {e}", parent.display()))?;
        }
        let _ = std::fs::remove_file(&dest);
        std::fs::write(&dest, c.text.as_bytes()).map_err(|e| format!("{}: {e}", dest.display()))?;
    }
    Ok(root)
}

/// Follows symlinks inside the target root (never out of it) to see whether `path`
/// exists there.
pub(super) fn exists_in_root(host: &Host, path: &str) -> bool {
    let mut todo: std::collections::VecDeque<String> = path
        .split('/')
        .filter(|c| !c.is_empty())
        .map(String::from)
        .collect();
    let mut resolved = String::new();
    let mut hops = 0;
    while let Some(comp) = todo.pop_front() {
        match comp.as_str() {
            "." => continue,
            ".." => {
                if let Some(i) = resolved.rfind('/') {
                    resolved.truncate(i);
                }
                continue;
            }
            _ => {}
        }
        let candidate = format!("{resolved}/{comp}");
        match host.lstat(&candidate) {
            Ok(Some(st)) if st.kind == FileKind::Symlink => {
                hops += 1;
                if hops > 40 {
                    return false;
                }
                let Ok(Some(target)) = host.read_link(&candidate) else {
                    return false;
                };
                if target.starts_with('/') {
                    resolved.clear();
                }
                let mut next: std::collections::VecDeque<String> = target
                    .split('/')
                    .filter(|c| !c.is_empty())
                    .map(String::from)
                    .collect();
                next.extend(todo.drain(..));
                todo = next;
            }
            Ok(Some(_)) => resolved = candidate,
            _ => return false,
        }
    }
    true
}

/// Problems found by validation: errors refuse the plan, warnings are shown.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Findings {
    pub(super) errors: Vec<String>,
    pub(super) warnings: Vec<String>,
    pub(super) notes: Vec<String>,
}

impl Unit {
    pub(super) fn origin_of_line(&self, line: u32) -> Option<String> {
        let c = self.content.as_ref()?;
        let span = c
            .origins
            .get((line as usize).checked_sub(1)?)
            .cloned()
            .flatten();
        Some(format!(
            " (declared at {})",
            span.unwrap_or_else(|| c.span.clone())
        ))
    }

    pub(super) fn validate_with_systemd(&self, ctx: &PlanCtx, f: &mut Findings) {
        if self.content.is_none() {
            return;
        }
        let main_declared = self.main_declared(ctx.catalog);
        let wants_score = self.unit_type() == "service"
            && (self.dropin.is_none() || !main_declared || self.max_exposure.is_some());
        if !crate::host::exec::tool_exists("systemd-analyze") {
            f.warnings
                .push("systemd-analyze is not installed here: the unit was not verified".into());
            if let Some((max, _)) = self.max_exposure {
                f.errors.push(format!(
                    "max_exposure {max} cannot be checked: systemd-analyze is not installed"
                ));
            }
            return;
        }
        let root = match build_verify_root(ctx.host, ctx.catalog) {
            Ok(r) => r,
            Err(e) => {
                f.errors
                    .push(format!("cannot prepare the verification root: {e}"));
                return;
            }
        };
        f.notes.extend(root.notes.iter().cloned());
        let root_str = root.path.display().to_string();
        let cmd = Cmd::new("systemd-analyze")
            .args(["verify", "--man=no", "--recursive-errors=no"])
            .arg(format!("--root={root_str}"))
            .arg(self.unit.clone())
            .timeout(Duration::from_secs(60));
        let out = match cmd.run() {
            Ok(o) => o,
            Err(e) => {
                f.errors.push(format!("cannot verify: {e}"));
                return;
            }
        };
        let host = ctx.host;
        let verify_errors = self.classify_verify(
            &out.stderr,
            &root_str,
            ctx.catalog,
            &|p: &str| exists_in_root(host, p),
            f,
        );
        if verify_errors == 0 {
            f.notes.push("systemd-analyze verify: no problems".into());
        }
        if wants_score {
            self.exposure(&root_str, f);
        }
    }

    /// Sorts `systemd-analyze verify` stderr into errors (this resource's file and
    /// unit), warnings (unmanaged files of the unit, missing programs or
    /// dependencies) and noise (other units, scratch-root artefacts); returns how
    /// many errors it found. `exists` says whether a path exists on the target.
    pub(super) fn classify_verify(
        &self,
        stderr: &str,
        root_str: &str,
        catalog: &Catalog,
        exists: &dyn Fn(&str) -> bool,
        f: &mut Findings,
    ) -> usize {
        let main_declared = self.main_declared(catalog);
        let mut verify_errors = 0;
        for msg in parse_verify(stderr) {
            match msg {
                VerifyMessage::File {
                    path,
                    line,
                    message,
                } => {
                    let Some(rel) = path.strip_prefix(root_str) else {
                        continue;
                    };
                    let rel = rel.to_string();
                    let text = if self.meta.secret {
                        "systemd rejects or ignores this line (details hidden: the resource is secret)".to_string()
                    } else {
                        message
                    };
                    if rel == self.path {
                        verify_errors += 1;
                        f.errors.push(format!(
                            "{rel}:{line}: {text}{}",
                            self.origin_of_line(line).unwrap_or_default()
                        ));
                    } else if is_declared_path(catalog, &rel) {
                        // That resource reports its own file.
                    } else if belongs_to(&rel, &self.unit) && self.dropin.is_none() {
                        f.warnings
                            .push(format!("{rel}:{line} (not managed by reconcile): {text}"));
                    }
                }
                VerifyMessage::Unit { unit, message } if unit == self.unit => {
                    if self.dropin.is_some() && main_declared {
                        continue;
                    }
                    if let Some(rest) = message.strip_prefix("Command ") {
                        let program = rest
                            .split(" is not executable")
                            .next()
                            .unwrap_or(rest)
                            .to_string();
                        let managed = catalog.provider_for(&Need::path(program.clone())).is_some();
                        if !managed && !exists(&program) {
                            f.warnings.push(format!(
                                "{program} does not exist on the target and no file[{program}] is declared: {} will fail to start",
                                self.unit
                            ));
                        }
                    } else if message.contains(" not found.")
                        && message.starts_with("Failed to create ")
                    {
                        f.warnings.push(format!(
                            "{}: {message} (neither declared nor installed on the target)",
                            self.unit
                        ));
                    } else {
                        verify_errors += 1;
                        f.errors.push(format!("{}: {message}", self.unit));
                    }
                }
                VerifyMessage::Other(line) if line.contains(&self.unit) => {
                    if line.starts_with("Unit ") && line.ends_with(" not found.") {
                        f.warnings.push(format!("{} is not installed on the target and not declared: the drop-in was not verified", self.unit));
                    } else if !(self.dropin.is_some() && main_declared) {
                        verify_errors += 1;
                        f.errors.push(line);
                    }
                }
                _ => {}
            }
        }
        verify_errors
    }

    pub(super) fn exposure(&self, root: &str, f: &mut Findings) {
        let base = Cmd::new("systemd-analyze")
            .args(["security", "--offline=yes"])
            .arg(format!("--root={root}"))
            .timeout(Duration::from_secs(60));
        let out = match base.clone().arg(self.unit.clone()).run() {
            Ok(o) => o,
            Err(e) => {
                f.errors
                    .push(format!("cannot compute the exposure score: {e}"));
                return;
            }
        };
        let Some(score) = parse_security_overall(&out.stdout) else {
            let msg = format!("systemd-analyze security gave no score: {}", out.reason());
            if self.max_exposure.is_some() {
                f.errors.push(msg);
            } else {
                f.warnings.push(msg);
            }
            return;
        };
        let limit = self
            .max_exposure
            .as_ref()
            .map(|(m, _)| format!(" (max_exposure {m})"))
            .unwrap_or_default();
        f.notes.push(format!(
            "exposure {:.1} {}{limit} by systemd-analyze security",
            score.score, score.rating
        ));
        if let Some((max, span)) = &self.max_exposure {
            if score.score > *max + 1e-9 {
                let top = base
                    .arg("--json=short")
                    .arg(self.unit.clone())
                    .run()
                    .ok()
                    .and_then(|o| parse_security_json(&o.stdout).ok())
                    .map(|items| {
                        top_exposures(&items, 6)
                            .into_iter()
                            .map(|(n, e)| format!("{n} +{e:.1}"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    })
                    .unwrap_or_default();
                f.errors.push(format!(
                    "exposure {:.1} {} is above max_exposure {max} ({span}); largest contributions: {top}",
                    score.score, score.rating
                ));
            }
        }
    }
}

pub(super) fn is_declared_path(catalog: &Catalog, path: &str) -> bool {
    catalog
        .resources
        .iter()
        .filter_map(|r| r.as_any().downcast_ref::<Unit>())
        .any(|u| u.content.is_some() && u.path == path)
}

/// Whether a unit-directory path is `unit`'s file or one of its drop-ins.
pub(super) fn belongs_to(path: &str, unit: &str) -> bool {
    let name = path.rsplit('/').next().unwrap_or("");
    name == unit || path.contains(&format!("/{unit}.d/"))
}
