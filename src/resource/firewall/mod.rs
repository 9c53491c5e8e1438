//! `firewall`: one nftables table, declared whole (sets, the input/output/forward
//! chains with their policies and ordered rules, built-ins, a `published` chain for
//! container-published ports), validated with `nft -c` and installed in one kernel
//! transaction with `nft -f`. Only the table the resource names is touched: other
//! tables (Docker's, fail2ban's) stay byte-identical.
//!
//! Which kernel: the network namespace `--netns NAME` names (`ip netns exec`), or,
//! with `--root /`, the one reconcile runs in. With a scratch `--root DIR` and no
//! `--netns`, the kind refuses: the running kernel's ruleset is not under DIR.
//!
//! Observe is one `nft -j list table` process when the table is in sync; the listing
//! is parsed ([`crate::host::parse::nft`]) into rules in `nft list` syntax and
//! compared with the declared rules rendered the same way ([`render`]).

pub mod confirm;
pub mod decode;
pub mod import;
pub mod model;
pub mod render;

use std::any::Any;
use std::net::IpAddr;

use crate::diag::Span;
use crate::host::parse::nft::{error_location, is_no_such_table, parse_table, NftTable};
use crate::host::{Cmd, Host};
use crate::id::ResourceId;
use crate::plan::{fingerprint, Action, Change};

use super::contract::{Contract, DepView, Diff};
use super::{ApplyCtx, Ensure, Meta, PlanCtx, Resource, ResourceError};
use model::*;
use render::{drops_connection, render, Rendered, Script};

pub use decode::decode;

#[derive(Debug, Clone)]
pub struct Firewall {
    pub id: ResourceId,
    pub meta: Meta,
    pub span: Span,
    pub family: TableFamily,
    pub table: String,
    pub ensure: Ensure,
    pub sets: Vec<SetDef>,
    pub chains: Vec<ChainDef>,
    pub builtins: Builtins,
    pub published: Option<Published>,
    /// Networks that must keep reaching SSH (the lockout check).
    pub management: Vec<AddrItem>,
    pub ssh_port: Option<u16>,
    pub package_mirrors: bool,
}

impl Resource for Firewall {
    fn id(&self) -> &ResourceId {
        &self.id
    }

    fn meta(&self) -> &Meta {
        &self.meta
    }

    fn removes(&self) -> bool {
        self.ensure == Ensure::Absent
    }

    crate::on_the_contract!();

    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// `nft` aimed at the targeted kernel (see the module's header).
pub fn nft(host: &Host) -> Result<Cmd, ResourceError> {
    match host.netns() {
        Some(ns) => Ok(Cmd::new("ip").args(["netns", "exec", ns, "nft"])),
        None if host.is_machine_root() => Ok(Cmd::new("nft")),
        None => Err(ResourceError::Failed(format!(
            "a firewall changes the running kernel's ruleset, which is not under --root {}: \
             give --netns NAME to target a network namespace, or run with --root / on the host itself",
            host.root().display()
        ))),
    }
}

/// What observing found.
#[derive(Debug, Clone, Default)]
pub struct Observed {
    /// The live table; `None` when it does not exist.
    pub live: Option<NftTable>,
    /// `nft -c`'s verdict on the declared script (only checked when it differs):
    /// the refusal, mapped to the manifest.
    pub refused: Option<String>,
    /// The current SSH session's client address and the server port it reached
    /// (`SSH_CONNECTION`), when reconcile runs in one.
    pub ssh_session: Option<(IpAddr, u16)>,
    /// The SSH port from the target's sshd_config, when it says.
    pub sshd_port: Option<u16>,
    pub allow_lockout: bool,
    pub warnings: Vec<String>,
    /// With `package_mirrors: true`: apt's mirror hosts and their addresses.
    pub mirrors: Vec<(String, Vec<IpAddr>)>,
    /// A `package` or `upgrade` resource is declared: apt must reach its mirrors.
    pub installs_packages: bool,
}

impl Observed {
    fn mirror_addrs(&self) -> Vec<IpAddr> {
        self.mirrors
            .iter()
            .flat_map(|(_, a)| a.iter().copied())
            .collect()
    }
}

/// One thing apply does.
#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    /// Installs the declared table in one transaction (creating or replacing it).
    Install {
        script: Script,
        /// What the plan shows: (field, before, after).
        fields: Vec<(String, Option<String>, Option<String>)>,
    },
    /// Deletes the table.
    Remove { script: String },
}

impl Contract for Firewall {
    type State = Observed;
    type Op = Op;

    fn observe(&self, ctx: &PlanCtx) -> Result<Observed, ResourceError> {
        let host = ctx.host;
        let nft = nft(host)?;
        let list = nft.clone().args([
            "-j",
            "list",
            "table",
            self.family.name(),
            self.table.as_str(),
        ]);
        let out = list.run()?;
        let live = if out.success() {
            Some(parse_table(&out.stdout).map_err(|e| {
                ResourceError::Failed(format!("cannot read `{}`: {e}", list.display()))
            })?)
        } else if is_no_such_table(&out.stderr) {
            None
        } else {
            return Err(ResourceError::Tool {
                tool: "nft".into(),
                command: list.display(),
                code: out.status,
                stderr: super::excerpt(out.stderr.trim()),
            });
        };
        let mut o = Observed {
            live,
            allow_lockout: host.kernel.allow_lockout,
            warnings: other_managers(host),
            installs_packages: ctx
                .catalog
                .resources
                .iter()
                .any(|r| matches!(&*r.id().kind, "package" | "upgrade")),
            ..Observed::default()
        };
        if self.ensure == Ensure::Absent {
            return Ok(o);
        }
        if self.package_mirrors {
            let (mirrors, warnings) = resolve_mirrors(host);
            o.mirrors = mirrors;
            o.warnings.extend(warnings);
        }
        let r = render(self, &o.mirror_addrs());
        if o.live.as_ref() == Some(&r.table) {
            return Ok(o);
        }
        // Only a change costs more processes: the check, and what the lockout
        // check needs.
        let script = render::script(self, &r);
        o.refused = check(&nft, &script)?;
        o.ssh_session = ssh_session();
        o.sshd_port = sshd_port(host);
        Ok(o)
    }

    fn diff(&self, o: &Observed, _deps: &DepView) -> Result<Diff<Op>, ResourceError> {
        let r = render(self, &o.mirror_addrs());
        let mut d = Diff::new(
            fingerprint([format!("{:?}", o.live).as_bytes()]),
            fingerprint([
                format!("{:?}", self.ensure).as_bytes(),
                format!("{:?}", r.table).as_bytes(),
            ]),
        );
        d.warnings.clone_from(&o.warnings);
        for (host, addrs) in &o.mirrors {
            let shown: Vec<String> = addrs.iter().map(IpAddr::to_string).collect();
            d.notes.push(format!(
                "package mirror {host}: {}",
                if shown.is_empty() {
                    "(did not resolve)".to_string()
                } else {
                    shown.join(", ")
                }
            ));
        }
        match (self.ensure, &o.live) {
            (Ensure::Absent, None) => {}
            (Ensure::Absent, Some(_)) => d.op(
                Action::Delete,
                Op::Remove {
                    script: render::removal(self.family.name(), &self.table),
                },
            ),
            (Ensure::Present, Some(live)) if *live == r.table => {}
            (Ensure::Present, live) => {
                if let Some(msg) = &o.refused {
                    return Err(ResourceError::Failed(msg.clone()));
                }
                if !o.allow_lockout {
                    if let Some(msg) = self.lockout(o, &r) {
                        return Err(ResourceError::Failed(msg));
                    }
                }
                d.warnings.extend(self.egress_warnings(o.installs_packages));
                let action = if live.is_some() {
                    Action::Update
                } else {
                    Action::Create
                };
                if live.is_some() {
                    d.notes.push(
                        "replaced in one nft transaction: rules added by hand to this table are removed".into(),
                    );
                }
                d.op(
                    action,
                    Op::Install {
                        script: render::script(self, &r),
                        fields: table_changes(live.as_ref(), &r.table),
                    },
                );
            }
        }
        Ok(d)
    }

    fn describe(&self, op: &Op, change: &mut Change) {
        match op {
            Op::Install { fields, .. } => {
                for (name, before, after) in fields {
                    change.field(name.clone(), before.clone(), after.clone());
                }
            }
            Op::Remove { .. } => change.field(
                "table",
                Some(format!("{} {}", self.family.name(), self.table)),
                None,
            ),
        }
    }

    fn apply_ops(&self, ops: &[Op], ctx: &ApplyCtx) -> Result<(), ResourceError> {
        let nft = nft(ctx.host)?;
        for op in ops {
            match op {
                Op::Install { script, .. } => {
                    let pending = confirm::save_previous(self, ctx, &nft)?;
                    if let Some(msg) = run_script(&nft, &script.text, Some(script), false)? {
                        return Err(ResourceError::Failed(msg));
                    }
                    if let Some(p) = pending {
                        confirm::arm(self, ctx, &p)?;
                    }
                }
                Op::Remove { script } => {
                    let pending = confirm::save_previous(self, ctx, &nft)?;
                    if let Some(msg) = run_script(&nft, script, None, false)? {
                        return Err(ResourceError::Failed(msg));
                    }
                    if let Some(p) = pending {
                        confirm::arm(self, ctx, &p)?;
                    }
                }
            }
        }
        Ok(())
    }
}

impl Firewall {
    /// Why applying would lock the operator out, if it would: new SSH connections
    /// from the current session's address or a `management` network dropped.
    fn lockout(&self, o: &Observed, r: &Rendered) -> Option<String> {
        let port = self.ssh_port.or(o.sshd_port).unwrap_or(22);
        let mut sources: Vec<(IpAddr, u16, String)> = Vec::new();
        if let Some((ip, server_port)) = o.ssh_session {
            sources.push((ip, server_port, "the current SSH session's address".into()));
        }
        for m in &self.management {
            match m {
                AddrItem::Net(n) => {
                    sources.push((n.addr, port, format!("management network {}", n.text())))
                }
                AddrItem::Set(name, _) => {
                    for s in self.sets.iter().filter(|s| &s.name == name) {
                        for n in &s.elements {
                            sources.push((
                                n.addr,
                                port,
                                format!("management network {} (@{name})", n.text()),
                            ));
                        }
                    }
                }
            }
        }
        for (ip, port, what) in sources {
            if let Some(by) = drops_connection(self, r, ip, port) {
                let by = match by {
                    Some(span) => format!("the rule at {span}"),
                    None => "the input policy `drop`".into(),
                };
                return Some(format!(
                    "{}: refusing a ruleset that would lock you out: new SSH connections (tcp port {port}) from {ip}, {what}, would be dropped by {by}; \
                     allow them first (e.g. `- allow: {{ proto: tcp, port: {port}, from: \"{ip}\" }}`), or pass --allow-lockout",
                    self.span
                ));
            }
        }
        None
    }

    /// Warnings about outgoing traffic a drop policy cuts off.
    fn egress_warnings(&self, installs_packages: bool) -> Vec<String> {
        let Some(out) = self.chains.iter().find(|c| c.hook == Hook::Output) else {
            return Vec::new();
        };
        if out.policy != Policy::Drop {
            return Vec::new();
        }
        let allows = |proto: &str, port: u16| {
            out.rules.iter().any(|r| {
                r.verdict == Verdict::Accept
                    && (r.protos.is_empty() || r.protos.iter().any(|p| p == proto))
                    && (r.ports.is_empty() || r.ports.iter().any(|&(a, b)| a <= port && port <= b))
            })
        };
        let mut missing = Vec::new();
        if !allows("udp", 53) {
            missing.push("DNS (udp 53)");
        }
        if !allows("udp", 123) {
            missing.push("NTP (udp 123)");
        }
        if installs_packages && !self.package_mirrors && !allows("tcp", 443) && !allows("tcp", 80) {
            missing.push("package mirrors (tcp 80/443)");
        }
        if missing.is_empty() {
            return Vec::new();
        }
        vec![format!(
            "output policy is drop and no rule allows {}: name resolution, time sync and package downloads will fail",
            missing.join(", ")
        )]
    }
}

/// Runs `nft [-c] -f -` with `script`; `Ok(Some(message))` when nft refuses it, the
/// message pointing at the manifest line of the rule nft names when it can.
fn run_script(
    nft: &Cmd,
    script: &str,
    map: Option<&Script>,
    check_only: bool,
) -> Result<Option<String>, ResourceError> {
    let mut cmd = nft.clone();
    if check_only {
        cmd = cmd.arg("-c");
    }
    cmd = cmd.args(["-f", "-"]);
    cmd.stdin = Some(script.as_bytes().to_vec());
    let out = cmd.run()?;
    if out.success() {
        return Ok(None);
    }
    Ok(Some(refusal(&out.stderr, script, map)))
}

/// nft's error, pointed at the manifest.
pub fn refusal(stderr: &str, script: &str, map: Option<&Script>) -> String {
    let located = error_location(stderr).and_then(|(line, _col, msg)| {
        let span = map?.origin(line)?;
        let text = script.lines().nth(line.checked_sub(1)?)?.trim();
        Some(format!(
            "{span}: field `rules`: nft refuses `{text}`: {msg}"
        ))
    });
    located.unwrap_or_else(|| format!("nft refuses the ruleset: {}", super::excerpt(stderr.trim())))
}

fn check(nft: &Cmd, script: &Script) -> Result<Option<String>, ResourceError> {
    run_script(nft, &script.text, Some(script), true)
}

/// `SSH_CONNECTION` = "client_ip client_port server_ip server_port".
fn ssh_session() -> Option<(IpAddr, u16)> {
    let v = std::env::var("SSH_CONNECTION").ok()?;
    parse_ssh_connection(&v)
}

pub fn parse_ssh_connection(v: &str) -> Option<(IpAddr, u16)> {
    let words: Vec<&str> = v.split_whitespace().collect();
    let [client, _, _, server_port] = words[..] else {
        return None;
    };
    Some((client.parse().ok()?, server_port.parse().ok()?))
}

/// The SSH port: `sshd -T` on the host itself (the effective configuration, with
/// includes and defaults), else the first `Port` of the target's sshd_config.
fn sshd_port(host: &Host) -> Option<u16> {
    let first_port = |text: &str| {
        text.lines().find_map(|l| {
            let mut w = l.split_whitespace();
            (w.next()?.eq_ignore_ascii_case("port")).then(|| w.next()?.parse().ok())?
        })
    };
    if host.is_machine_root() && host.netns().is_none() {
        let out = Cmd::new("sshd")
            .arg("-T")
            .run()
            .ok()
            .filter(|o| o.success());
        if let Some(port) = out.and_then(|o| first_port(&o.stdout)) {
            return Some(port);
        }
    }
    let text = super::group::read_text(host, "/etc/ssh/sshd_config").ok()??;
    first_port(&text)
}

/// apt's mirror hosts on the target and the addresses they resolve to now (with the
/// resolver of the machine reconcile runs on), and warnings for those that do not.
fn resolve_mirrors(host: &Host) -> (Vec<(String, Vec<IpAddr>)>, Vec<String>) {
    use crate::host::parse::apt_mirrors::mirror_hosts;
    use std::net::ToSocketAddrs;
    let mut hosts: Vec<String> = Vec::new();
    let mut files: Vec<(String, bool)> = vec![("/etc/apt/sources.list".into(), false)];
    if let Ok(names) = host.list_dir("/etc/apt/sources.list.d") {
        for n in names {
            if n.ends_with(".list") || n.ends_with(".sources") {
                let deb822 = n.ends_with(".sources");
                files.push((format!("/etc/apt/sources.list.d/{n}"), deb822));
            }
        }
    }
    for (path, deb822) in files {
        if let Ok(Some(text)) = super::group::read_text(host, &path) {
            for h in mirror_hosts(&text, deb822) {
                if !hosts.contains(&h) {
                    hosts.push(h);
                }
            }
        }
    }
    let mut warnings = Vec::new();
    let mirrors = hosts
        .into_iter()
        .map(|h| {
            let addrs: Vec<IpAddr> = match h.parse::<IpAddr>() {
                Ok(a) => vec![a],
                Err(_) => match (h.as_str(), 443).to_socket_addrs() {
                    Ok(it) => {
                        let mut v: Vec<IpAddr> = it.map(|s| s.ip()).collect();
                        v.sort();
                        v.dedup();
                        v
                    }
                    Err(e) => {
                        warnings.push(format!("package mirror {h} does not resolve ({e}): it is not in the package_mirrors set"));
                        Vec::new()
                    }
                },
            };
            (h, addrs)
        })
        .collect();
    (mirrors, warnings)
}

/// Two firewall managers on one host undo each other: ufw or firewalld enabled on the
/// target is a warning. Read from their files, without running anything.
fn other_managers(host: &Host) -> Vec<String> {
    let mut out = Vec::new();
    let ufw = super::group::read_text(host, "/etc/ufw/ufw.conf")
        .ok()
        .flatten()
        .is_some_and(|t| {
            t.lines()
                .any(|l| l.trim().eq_ignore_ascii_case("ENABLED=yes"))
        });
    if ufw {
        out.push("ufw is enabled on this host (/etc/ufw/ufw.conf ENABLED=yes): two firewall managers undo each other; disable it (`ufw disable`) once this table is in place".into());
    }
    let firewalld = matches!(
        host.lstat("/etc/systemd/system/multi-user.target.wants/firewalld.service"),
        Ok(Some(_))
    );
    if firewalld {
        out.push("firewalld is enabled on this host: two firewall managers undo each other; disable it (`systemctl disable --now firewalld`) once this table is in place".into());
    }
    out
}

/// The plan's fields: table, sets, chain headers, and rules added, removed or changed
/// by position.
pub fn table_changes(
    live: Option<&NftTable>,
    want: &NftTable,
) -> Vec<(String, Option<String>, Option<String>)> {
    let mut out = Vec::new();
    let empty = NftTable::default();
    let live = match live {
        Some(t) => t,
        None => {
            out.push((
                "table".into(),
                None,
                Some(format!("{} {}", want.family, want.name)),
            ));
            &empty
        }
    };
    for s in &want.sets {
        let before = live.sets.iter().find(|l| l.name == s.name);
        let show = |s: &crate::host::parse::nft::NftSet| {
            format!("{} {{ {} }}", s.kind, s.elements.join(", "))
        };
        if before != Some(s) {
            out.push((format!("set {}", s.name), before.map(show), Some(show(s))));
        }
    }
    for s in &live.sets {
        if !want.sets.iter().any(|w| w.name == s.name) {
            out.push((
                format!("set {}", s.name),
                Some(format!("{} {{ {} }}", s.kind, s.elements.join(", "))),
                None,
            ));
        }
    }
    let header = |c: &crate::host::parse::nft::NftChain| {
        c.base
            .as_ref()
            .map(|b| b.header())
            .unwrap_or_else(|| "(regular chain)".into())
    };
    let no_rules: Vec<String> = Vec::new();
    for c in &want.chains {
        let before = live.chains.iter().find(|l| l.name == c.name);
        if before.map(header) != Some(header(c)) {
            out.push((
                format!("chain {}", c.name),
                before.map(header),
                Some(header(c)),
            ));
        }
        let old = before.map_or(&no_rules, |b| &b.rules);
        out.extend(rule_changes(&c.name, old, &c.rules));
    }
    for c in &live.chains {
        if !want.chains.iter().any(|w| w.name == c.name) {
            out.push((format!("chain {}", c.name), Some(header(c)), None));
            out.extend(rule_changes(&c.name, &c.rules, &no_rules));
        }
    }
    out
}

/// Rules added, removed and changed, by their 1-based position in the chain (the new
/// position for added and changed rules, the old one for removed rules).
fn rule_changes(
    chain: &str,
    old: &[String],
    new: &[String],
) -> Vec<(String, Option<String>, Option<String>)> {
    use similar::{capture_diff_slices, Algorithm, DiffOp};
    let mut out = Vec::new();
    let name = |pos: usize| format!("{chain} rule {}", pos + 1);
    for op in capture_diff_slices(Algorithm::Myers, old, new) {
        match op {
            DiffOp::Equal { .. } => {}
            DiffOp::Delete {
                old_index, old_len, ..
            } => {
                for k in 0..old_len {
                    out.push((name(old_index + k), Some(old[old_index + k].clone()), None));
                }
            }
            DiffOp::Insert {
                new_index, new_len, ..
            } => {
                for k in 0..new_len {
                    out.push((name(new_index + k), None, Some(new[new_index + k].clone())));
                }
            }
            DiffOp::Replace {
                old_index,
                old_len,
                new_index,
                new_len,
            } => {
                for k in 0..old_len.max(new_len) {
                    let before = (k < old_len).then(|| old[old_index + k].clone());
                    let after = (k < new_len).then(|| new[new_index + k].clone());
                    let pos = if k < new_len {
                        new_index + k
                    } else {
                        old_index + k
                    };
                    out.push((name(pos), before, after));
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests;
