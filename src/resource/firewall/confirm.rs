//! `apply --confirm-within DURATION`: a changed table is rolled back to what it was
//! unless `reconcile confirm` runs in time (Junos' `commit confirmed`,
//! iptables-apply).
//!
//! Before installing, apply saves the table's previous listing as a script that
//! restores it (`ROOT/var/lib/reconcile/firewall/FAMILY-NAME.previous.nft`, always),
//! and with a deadline records a pending entry
//! (`ROOT/var/lib/reconcile/firewall/FAMILY-NAME.pending.json`: the deadline, a token,
//! the namespace, the restore script). A watcher then waits for the deadline and
//! restores the table if the entry is still pending with its token:
//! - on a host whose PID 1 is systemd, targeted as itself (`--root /`, no
//!   `--netns`): a transient timer, `systemd-run --on-active=`, so it survives the
//!   SSH session, reconcile and a crash of either;
//! - otherwise (a namespace, a scratch root, a container): a detached process in a
//!   session of its own (`setsid`), which the SSH session dropping does not end.
//!
//! The watcher is reconcile itself: `reconcile confirm --root ROOT --revert TOKEN`.
//! `reconcile confirm` removes the pending entries. Apply, confirm and revert are audit
//! records.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::host::{Cmd, Host};
use crate::resource::{ApplyCtx, ResourceError};

use super::Firewall;

pub const DIR: &str = "/var/lib/reconcile/firewall";
const DIR_MODE: u32 = 0o700;
const FILE_MODE: u32 = 0o600;
/// A pending entry or a saved ruleset is never larger than this.
const MAX_BYTES: u64 = 16 * 1024 * 1024;

/// A change waiting for `reconcile confirm`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pending {
    pub resource: String,
    pub family: String,
    pub table: String,
    pub netns: Option<String>,
    /// Seconds since the epoch after which the watcher restores the table.
    pub deadline: u64,
    pub token: String,
    /// The script that brings the previous table back (or deletes a new one).
    pub restore: String,
}

fn base(family: &str, table: &str) -> String {
    format!("{DIR}/{family}-{table}")
}

pub fn pending_path(family: &str, table: &str) -> String {
    format!("{}.pending.json", base(family, table))
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn token() -> String {
    let mut rnd = [0u8; 8];
    let got = std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut rnd))
        .is_ok();
    if !got {
        // Unique enough without randomness: a token only tells watchers apart.
        rnd = (u64::from(std::process::id()) << 32 ^ now()).to_le_bytes();
    }
    crate::plan::hex(&rnd)
}

/// The script that restores the live table as `nft list table` printed it (`None`:
/// there was no table, so restoring deletes it).
pub fn restore_script(family: &str, table: &str, listing: Option<&str>) -> String {
    let mut s = super::render::removal(family, table);
    if let Some(l) = listing {
        s.push_str(l);
    }
    s
}

/// Saves the previous table before apply replaces it; with `--confirm-within`, also
/// the pending entry. Returns the entry to arm after the install.
pub fn save_previous(
    fw: &Firewall,
    ctx: &ApplyCtx,
    nft: &Cmd,
) -> Result<Option<Pending>, ResourceError> {
    let host = ctx.host;
    let family = fw.family.name();
    let list = nft
        .clone()
        .args(["list", "table", family, fw.table.as_str()]);
    let out = list.run()?;
    let listing = if out.success() {
        Some(out.stdout)
    } else if crate::host::parse::nft::is_no_such_table(&out.stderr) {
        None
    } else {
        return Err(ResourceError::Failed(format!(
            "cannot save the previous table before replacing it: `{}`: {}",
            list.display(),
            out.reason()
        )));
    };
    let mut restore = restore_script(family, &fw.table, listing.as_deref());
    let pending = pending_path(family, &fw.table);
    if let Some(earlier) = read_pending(host, &pending).map_err(ResourceError::Failed)? {
        if host.kernel.confirm_within.is_some() {
            // Still unconfirmed: a rollback goes back to what was confirmed last.
            restore = earlier.restore;
        } else {
            // A plain apply over a pending change keeps it, as a plain `commit`
            // confirms a `commit confirmed`.
            host.remove(&pending)?;
            ctx.record(
                &fw.id,
                "confirm",
                json!({ "by": "apply", "token": earlier.token }),
            );
        }
    }
    host.write_state(
        &format!("{}.previous.nft", base(family, &fw.table)),
        restore.as_bytes(),
        DIR_MODE,
        FILE_MODE,
    )?;
    let Some(within) = host.kernel.confirm_within else {
        return Ok(None);
    };
    Ok(Some(Pending {
        resource: fw.id.to_string(),
        family: family.into(),
        table: fw.table.clone(),
        netns: host.netns().map(str::to_string),
        deadline: now() + within.as_secs().max(1),
        token: token(),
        restore,
    }))
}

/// Records the entry and starts its watcher, after the new table is installed.
pub fn arm(fw: &Firewall, ctx: &ApplyCtx, p: &Pending) -> Result<(), ResourceError> {
    let host = ctx.host;
    let bytes = serde_json::to_vec_pretty(p)
        .map_err(|e| ResourceError::Failed(format!("cannot record the pending change: {e}")))?;
    host.write_state(
        &pending_path(&p.family, &p.table),
        &bytes,
        DIR_MODE,
        FILE_MODE,
    )?;
    let exe = std::env::current_exe()
        .map_err(|e| ResourceError::Failed(format!("cannot find reconcile's own program: {e}")))?;
    let exe = exe.display().to_string();
    let root = host.root().display().to_string();
    let watcher_args = [
        exe.as_str(),
        "confirm",
        "--root",
        root.as_str(),
        "--revert",
        p.token.as_str(),
    ];
    let left = p.deadline.saturating_sub(now()).max(1);
    let how = if uses_systemd(host) {
        Cmd::new("systemd-run")
            .args([
                "--quiet".to_string(),
                format!("--unit=reconcile-firewall-revert-{}", p.token),
                format!("--on-active={left}s"),
                "--timer-property=AccuracySec=1s".to_string(),
            ])
            .args(watcher_args)
            .run_ok()?;
        "systemd timer"
    } else {
        Cmd::new("setsid").args(watcher_args).spawn_detached()?;
        "detached process"
    };
    ctx.record(
        &fw.id,
        "confirm-pending",
        json!({ "deadline": p.deadline, "seconds": left, "watcher": how, "token": p.token }),
    );
    Ok(())
}

/// A transient systemd timer only when the target is this machine itself and systemd
/// runs it: a namespace or scratch root never gets units on the machine's systemd.
fn uses_systemd(host: &Host) -> bool {
    host.is_machine_root()
        && host.netns().is_none()
        && std::fs::read_to_string("/proc/1/comm").is_ok_and(|c| c.trim() == "systemd")
}

/// Reads a pending entry.
pub fn read_pending(host: &Host, path: &str) -> Result<Option<Pending>, String> {
    let Some((_, bytes)) = host
        .read_state(path, MAX_BYTES)
        .map_err(|e| e.to_string())?
    else {
        return Ok(None);
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| format!("{}: not a pending firewall change: {e}", host.show(path)))
}

/// The pending entries under the root, by their file names.
pub fn pending_entries(host: &Host) -> Result<Vec<(String, Pending)>, String> {
    if host.lstat(DIR).map_err(|e| e.to_string())?.is_none() {
        return Ok(Vec::new());
    }
    let names: Vec<String> = host
        .list_dir(DIR)
        .map_err(|e| e.to_string())?
        .into_iter()
        .filter(|n| n.ends_with(".pending.json"))
        .collect();
    let mut out = Vec::new();
    for n in names {
        let path = format!("{DIR}/{n}");
        if let Some(p) = read_pending(host, &path)? {
            out.push((path, p));
        }
    }
    Ok(out)
}

/// `reconcile confirm`: keeps every pending change; the ids confirmed.
pub fn confirm_all(host: &Host) -> Result<Vec<Pending>, String> {
    let mut done = Vec::new();
    for (path, p) in pending_entries(host)? {
        host.remove(&path).map_err(|e| e.to_string())?;
        done.push(p);
    }
    Ok(done)
}

/// The watcher: waits for the deadline of the entry with `token`, then restores the
/// previous table if it is still pending. `Ok(None)`: confirmed in time (or replaced
/// by a newer apply).
pub fn watch(host: &Host, token: &str) -> Result<Option<Pending>, String> {
    let find = || -> Result<Option<(String, Pending)>, String> {
        Ok(pending_entries(host)?
            .into_iter()
            .find(|(_, p)| p.token == token))
    };
    loop {
        let Some((path, p)) = find()? else {
            return Ok(None);
        };
        let left = p.deadline.saturating_sub(now());
        if left > 0 {
            std::thread::sleep(Duration::from_millis(200).min(Duration::from_secs(left)));
            continue;
        }
        let nft = match &p.netns {
            Some(ns) => Cmd::new("ip").args(["netns", "exec", ns.as_str(), "nft"]),
            None => Cmd::new("nft"),
        };
        let mut cmd = nft.args(["-f", "-"]);
        cmd.stdin = Some(p.restore.as_bytes().to_vec());
        let out = cmd.run().map_err(|e| e.to_string())?;
        if !out.success() {
            return Err(format!(
                "{}: restoring the previous table failed: {}",
                p.resource,
                out.reason()
            ));
        }
        host.remove(&path).map_err(|e| e.to_string())?;
        return Ok(Some(p));
    }
}
