//! Live and offline modes, and the `systemctl` commands both use.

use super::*;

// ---------------------------------------------------------------------------------
// Modes and commands

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// The target is this machine and systemd runs it: `systemctl` acts on the manager.
    Live,
    /// A root directory without a running systemd: files and `systemctl --root`.
    Offline,
}

/// Live when the target is `/` and systemd is running (`/run/systemd/system` exists,
/// the check sd_booted(3) uses); offline otherwise.
pub fn detect_mode(host: &Host) -> Mode {
    let booted =
        matches!(host.lstat("/run/systemd/system"), Ok(Some(st)) if st.kind == FileKind::Directory);
    if host.is_machine_root() && booted {
        Mode::Live
    } else {
        Mode::Offline
    }
}

pub(super) fn mode_note(host: &Host, m: Mode) -> String {
    match m {
        Mode::Live => {
            "live: systemd runs the target; observed with systemctl show, changed with systemctl"
                .into()
        }
        Mode::Offline => format!(
            "offline: no running systemd at {}; unit files and enablement only (systemctl --root)",
            host.root().display()
        ),
    }
}

/// Where `systemctl --root` enable/disable/mask/unmask create and remove links.
pub(super) const UNIT_CONFIG_DIR: &str = "/etc/systemd/system";

/// `systemctl --root` makes and removes its links with the kernel's own path
/// resolution, following symlinks: a symlinked `/etc/systemd/system` or
/// `timers.target.wants` would put them outside the root. Refuse any symlinked
/// component of the paths it writes (the walk refuses symlinked parents) before
/// calling it.
pub(super) fn refuse_symlinked_install_dirs(host: &Host) -> Result<(), ResourceError> {
    let unsafe_path = |path: &str, what: &str| -> ResourceError {
        HostError::Unsafe {
            path: host.show(path),
            reason: format!(
                "is {what}; `systemctl --root` would follow it when it writes the unit's links, possibly outside the root"
            ),
        }
        .into()
    };
    match host.lstat(UNIT_CONFIG_DIR)? {
        None => return Ok(()),
        Some(st) if st.kind == FileKind::Directory => {}
        Some(st) => {
            return Err(unsafe_path(
                UNIT_CONFIG_DIR,
                &format!("a {}", st.kind.name()),
            ))
        }
    }
    for name in host.list_dir(UNIT_CONFIG_DIR)? {
        let link_dir = [".wants", ".requires", ".upholds", ".d"]
            .iter()
            .any(|suffix| name.ends_with(suffix));
        if !link_dir {
            continue;
        }
        let path = format!("{UNIT_CONFIG_DIR}/{name}");
        if let Some(st) = host.lstat(&path)? {
            if st.kind == FileKind::Symlink {
                return Err(unsafe_path(&path, "a symlink"));
            }
        }
    }
    Ok(())
}

pub(super) fn systemctl(host: &Host, m: Mode) -> Cmd {
    match m {
        Mode::Live => Cmd::new("systemctl").arg("--no-ask-password"),
        Mode::Offline => Cmd::new("systemctl").arg(format!("--root={}", host.root().display())),
    }
}

pub(super) fn failed(cmd: &Cmd, out: &crate::host::Output) -> ResourceError {
    ResourceError::Host(HostError::Command {
        command: cmd.display(),
        reason: out.reason(),
    })
}

pub(super) fn run_ok(cmd: Cmd) -> Result<crate::host::Output, ResourceError> {
    Ok(cmd.run_ok()?)
}

/// The last journal lines of a unit, for failure reports (live mode only).
pub(super) fn journal_excerpt(unit: &str) -> String {
    let cmd =
        Cmd::new("journalctl").args(["-u", unit, "-n", "20", "--no-pager", "-o", "short-iso"]);
    match cmd.run() {
        Ok(out) if !out.stdout.trim().is_empty() => out.stdout.trim_end().to_string(),
        Ok(out) => format!("(no journal lines: {})", out.reason()),
        Err(e) => format!("(journal unavailable: {e})"),
    }
}

pub(super) fn show(host: &Host, unit: &str) -> Result<ShowUnit, ResourceError> {
    let cmd = systemctl(host, Mode::Live).args(["show", unit, "--property", SHOW_PROPS]);
    let out = cmd.run()?;
    if !out.success() {
        return Err(failed(&cmd, &out));
    }
    parse_show_one(&out.stdout)
        .map_err(|e| ResourceError::Failed(format!("{}: {e}", cmd.display())))
}

pub(super) fn is_enabled(
    host: &Host,
    m: Mode,
    unit: &str,
) -> Result<Option<String>, ResourceError> {
    // Exit status 1 is normal here (disabled, masked, not found): read stdout.
    let out = systemctl(host, m).args(["is-enabled", unit]).run()?;
    Ok(parse_is_enabled(&out.stdout))
}

/// A systemd time span (`90`, `30s`, `5min`, `1h 30min`, `infinity`) in seconds.
pub(super) fn time_span_secs(v: &str) -> Option<u64> {
    if v.trim() == "infinity" {
        return Some(u64::MAX / 4);
    }
    let mut total = 0u64;
    let mut num = String::new();
    let mut unit = String::new();
    let flush = |num: &mut String, unit: &mut String, total: &mut u64| -> Option<()> {
        if num.is_empty() {
            return if unit.is_empty() { Some(()) } else { None };
        }
        let n: u64 = num.parse().ok()?;
        let mult = match unit.as_str() {
            "" | "s" | "sec" | "second" | "seconds" => 1,
            "m" | "min" | "minute" | "minutes" => 60,
            "h" | "hr" | "hour" | "hours" => 3600,
            "ms" | "msec" | "us" | "usec" => 0,
            _ => return None,
        };
        *total += n * mult;
        num.clear();
        unit.clear();
        Some(())
    };
    for c in v.chars() {
        if c.is_ascii_digit() {
            if !unit.is_empty() {
                flush(&mut num, &mut unit, &mut total)?;
            }
            num.push(c);
        } else if c.is_ascii_alphabetic() {
            unit.push(c);
        } else if c.is_whitespace() {
            continue;
        } else {
            return None;
        }
    }
    flush(&mut num, &mut unit, &mut total)?;
    Some(total)
}
