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

    /// Adds owner/group/mode field changes between the live stat (None: to be
    /// created) and the spec; `default_mode` is what a new object gets unmanaged.
    pub fn diff(
        &self,
        accounts: &Accounts,
        live: Option<&Stat>,
        default_mode: u32,
        change: &mut Change,
    ) {
        self.diff_named(accounts, live, default_mode, change, "");
    }

    /// As `diff`, with field names prefixed (for entries of a copied tree).
    pub fn diff_named(
        &self,
        accounts: &Accounts,
        live: Option<&Stat>,
        default_mode: u32,
        change: &mut Change,
        prefix: &str,
    ) {
        let name = |f: &str| format!("{prefix}{f}");
        match live {
            None => {
                if let Some(o) = self.owner() {
                    change.field(name("owner"), None, Some(o.to_string()));
                }
                if let Some(g) = self.group() {
                    change.field(name("group"), None, Some(g.to_string()));
                }
                change.field(
                    name("mode"),
                    None,
                    Some(format_mode(self.mode.unwrap_or(default_mode))),
                );
            }
            Some(st) => {
                if let Some(o) = self.owner() {
                    if !owner_matches(o, st.uid, |n| accounts.resolve_uid(n)) {
                        change.field(
                            name("owner"),
                            Some(accounts.user_name(st.uid)),
                            Some(o.to_string()),
                        );
                    }
                }
                if let Some(g) = self.group() {
                    if !owner_matches(g, st.gid, |n| accounts.resolve_gid(n)) {
                        change.field(
                            name("group"),
                            Some(accounts.group_name(st.gid)),
                            Some(g.to_string()),
                        );
                    }
                }
                if let Some(m) = self.mode {
                    if m != st.mode {
                        change.field(
                            name("mode"),
                            Some(format_mode(st.mode)),
                            Some(format_mode(m)),
                        );
                    }
                }
            }
        }
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

/// A live id matches a desired owner given as a number or as a name the target knows.
/// A name the target does not know yet (declared user, created in this run) never matches.
fn owner_matches(desired: &str, live: u32, resolve: impl Fn(&str) -> Option<u32>) -> bool {
    resolve(desired) == Some(live)
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
