//! Owner, group and mode of a managed path: decoding, diffing and resolving, shared by
//! every kind that manages filesystem objects.

use crate::diag::Span;
use crate::host::accounts::Accounts;
use crate::host::{Perms, Stat};
use crate::manifest::decode::{format_mode, Decoder, Fields};
use crate::plan::Change;

use super::{Catalog, Need, ResourceError};

#[derive(Debug, Clone, Default)]
pub struct PermSpec {
    pub owner: Option<(String, Span)>,
    pub group: Option<(String, Span)>,
    pub mode: Option<u32>,
}

impl PermSpec {
    pub fn decode(d: &mut Decoder, f: &mut Fields) -> PermSpec {
        PermSpec {
            owner: f.name_or_id(d, "owner"),
            group: f.name_or_id(d, "group"),
            mode: f.mode(d, "mode"),
        }
    }

    pub fn owner(&self) -> Option<&str> {
        self.owner.as_ref().map(|(o, _)| o.as_str())
    }

    pub fn group(&self) -> Option<&str> {
        self.group.as_ref().map(|(g, _)| g.as_str())
    }

    /// An owned path needs its owner's account and its group.
    pub fn needs(&self) -> Vec<Need> {
        let mut needs = Vec::new();
        if let Some(o) = self.owner().filter(|o| o.parse::<u32>().is_err()) {
            needs.push(Need::account(o));
        }
        if let Some(g) = self.group().filter(|g| g.parse::<u32>().is_err()) {
            needs.push(Need::group(g));
        }
        needs
    }

    /// Refuses owners that neither exist on the target nor are declared.
    pub fn check_known(&self, accounts: &Accounts, catalog: &Catalog) -> Result<(), ResourceError> {
        if let Some(o) = self.owner() {
            let known = accounts.resolve_uid(o).is_some()
                || catalog.provider_for(&Need::account(o)).is_some();
            if !known {
                return Err(ResourceError::Failed(format!(
                    "owner `{o}` is not a user on the target (its /etc/passwd) and no user[{o}] is declared"
                )));
            }
        }
        if let Some(g) = self.group() {
            let known = accounts.resolve_gid(g).is_some()
                || catalog.provider_for(&Need::group(g)).is_some();
            if !known {
                return Err(ResourceError::Failed(format!(
                    "group `{g}` is not a group on the target (its /etc/group) and no group[{g}] is declared"
                )));
            }
        }
        Ok(())
    }

    /// What the target's accounts say about this spec against `live` (None: to be
    /// created): read while observing, so that [`PermSpec::changes`] is pure.
    pub fn observe(&self, accounts: &Accounts, catalog: &Catalog, live: Option<&Stat>) -> Owners {
        let uid = self.owner().and_then(|o| accounts.resolve_uid(o));
        let gid = self.group().and_then(|g| accounts.resolve_gid(g));
        // Names of the live ids only where they will be shown: a no-op allocates none.
        let live_user = live
            .filter(|st| self.owner().is_some() && uid != Some(st.uid))
            .map(|st| accounts.user_name(st.uid));
        let live_group = live
            .filter(|st| self.group().is_some() && gid != Some(st.gid))
            .map(|st| accounts.group_name(st.gid));
        Owners {
            unknown: self
                .check_known(accounts, catalog)
                .err()
                .map(|e| e.to_string()),
            uid,
            gid,
            live_user,
            live_group,
        }
    }

    /// Pure: the owner/group/mode operations between the live stat (None: to be
    /// created) and the spec; `default_mode` is what a new object gets unmanaged. A
    /// name the target does not know yet (a user declared in this run) never matches.
    pub fn changes(&self, owners: &Owners, live: Option<&Stat>, default_mode: u32) -> Vec<PermOp> {
        let mut out = Vec::new();
        match live {
            None => {
                if let Some(o) = self.owner() {
                    out.push(PermOp::Owner {
                        from: None,
                        to: o.to_string(),
                    });
                }
                if let Some(g) = self.group() {
                    out.push(PermOp::Group {
                        from: None,
                        to: g.to_string(),
                    });
                }
                out.push(PermOp::Mode {
                    from: None,
                    to: self.mode.unwrap_or(default_mode),
                });
            }
            Some(st) => {
                if let Some(o) = self.owner().filter(|_| owners.uid != Some(st.uid)) {
                    out.push(PermOp::Owner {
                        from: Some(owners.live_user.clone().unwrap_or_default()),
                        to: o.to_string(),
                    });
                }
                if let Some(g) = self.group().filter(|_| owners.gid != Some(st.gid)) {
                    out.push(PermOp::Group {
                        from: Some(owners.live_group.clone().unwrap_or_default()),
                        to: g.to_string(),
                    });
                }
                if let Some(m) = self.mode.filter(|&m| m != st.mode) {
                    out.push(PermOp::Mode {
                        from: Some(st.mode),
                        to: m,
                    });
                }
            }
        }
        out
    }

    /// The ids to set, resolved against the target's accounts as they are *now* (users
    /// declared in the same run exist by the time their dependents apply). Unmanaged
    /// attributes keep the live value.
    pub fn resolve(&self, accounts: &Accounts) -> Result<Perms, ResourceError> {
        let uid = match self.owner() {
            Some(o) => Some(accounts.resolve_uid(o).ok_or_else(|| {
                ResourceError::Failed(format!("owner `{o}` does not exist on the target"))
            })?),
            None => None,
        };
        let gid = match self.group() {
            Some(g) => Some(accounts.resolve_gid(g).ok_or_else(|| {
                ResourceError::Failed(format!("group `{g}` does not exist on the target"))
            })?),
            None => None,
        };
        Ok(Perms {
            uid,
            gid,
            mode: self.mode,
        })
    }

    pub fn fingerprint_parts(&self) -> String {
        format!(
            "{}:{}:{}",
            self.owner().unwrap_or("-"),
            self.group().unwrap_or("-"),
            self.mode.map(format_mode).unwrap_or_else(|| "-".into())
        )
    }
}

/// What observing found of a spec's owner and group on the target.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Owners {
    /// Why the owner or group is neither on the target nor declared (a plan error).
    pub unknown: Option<String>,
    /// The desired owner and group as ids on the target now (None: unmanaged, or
    /// declared and not created yet).
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    /// The live owner's and group's names, where they differ from the desired.
    pub live_user: Option<String>,
    pub live_group: Option<String>,
}

/// One owner, group or mode operation on a managed path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PermOp {
    Owner { from: Option<String>, to: String },
    Group { from: Option<String>, to: String },
    Mode { from: Option<u32>, to: u32 },
}

impl PermOp {
    /// The plan's field for this operation, its name after `prefix` (a tree entry's).
    pub fn describe(&self, prefix: &str, change: &mut Change) {
        let name = |f: &'static str| -> std::borrow::Cow<'static, str> {
            if prefix.is_empty() {
                f.into()
            } else {
                format!("{prefix}{f}").into()
            }
        };
        match self {
            PermOp::Owner { from, to } => {
                change.field(name("owner"), from.clone(), Some(to.clone()))
            }
            PermOp::Group { from, to } => {
                change.field(name("group"), from.clone(), Some(to.clone()))
            }
            PermOp::Mode { from, to } => {
                change.field(name("mode"), from.map(format_mode), Some(format_mode(*to)))
            }
        }
    }
}

/// A stat summary for live fingerprints.
pub fn stat_fingerprint(st: Option<&Stat>) -> String {
    match st {
        None => "absent".into(),
        Some(s) => format!(
            "{}:{}:{}:{:o}:{}",
            s.kind.name(),
            s.uid,
            s.gid,
            s.mode,
            s.size
        ),
    }
}
