//! Users and groups of the *target root*, read from its /etc/passwd and /etc/group.
//! Never the machine's NSS: `--root DIR` must resolve names the way DIR would.

use std::collections::HashMap;

use super::parse::passwd::{parse_group, parse_passwd, GroupEntry, PasswdEntry};
use super::{Host, HostError};

#[derive(Debug, Clone, Default)]
pub struct Accounts {
    pub users: Vec<PasswdEntry>,
    pub groups: Vec<GroupEntry>,
    user_by_name: HashMap<String, usize>,
    user_by_id: HashMap<u32, usize>,
    group_by_name: HashMap<String, usize>,
    group_by_id: HashMap<u32, usize>,
}

impl Accounts {
    pub fn new(users: Vec<PasswdEntry>, groups: Vec<GroupEntry>) -> Accounts {
        let mut a = Accounts::default();
        for (i, u) in users.iter().enumerate() {
            a.user_by_name.entry(u.name.clone()).or_insert(i);
            a.user_by_id.entry(u.uid).or_insert(i);
        }
        for (i, g) in groups.iter().enumerate() {
            a.group_by_name.entry(g.name.clone()).or_insert(i);
            a.group_by_id.entry(g.gid).or_insert(i);
        }
        a.users = users;
        a.groups = groups;
        a
    }

    pub fn user(&self, name: &str) -> Option<&PasswdEntry> {
        self.user_by_name.get(name).map(|&i| &self.users[i])
    }

    pub fn group(&self, name: &str) -> Option<&GroupEntry> {
        self.group_by_name.get(name).map(|&i| &self.groups[i])
    }

    pub fn user_by_uid(&self, uid: u32) -> Option<&PasswdEntry> {
        self.user_by_id.get(&uid).map(|&i| &self.users[i])
    }

    pub fn group_by_gid(&self, gid: u32) -> Option<&GroupEntry> {
        self.group_by_id.get(&gid).map(|&i| &self.groups[i])
    }

    /// An owner as the manifest would write it: the name if the target knows the id.
    pub fn user_name(&self, uid: u32) -> String {
        self.user_by_uid(uid)
            .map(|u| u.name.clone())
            .unwrap_or_else(|| uid.to_string())
    }

    pub fn group_name(&self, gid: u32) -> String {
        self.group_by_gid(gid)
            .map(|g| g.name.clone())
            .unwrap_or_else(|| gid.to_string())
    }

    /// Resolves an owner given as a name or a numeric id.
    pub fn resolve_uid(&self, owner: &str) -> Option<u32> {
        owner
            .parse()
            .ok()
            .or_else(|| self.user(owner).map(|u| u.uid))
    }

    pub fn resolve_gid(&self, group: &str) -> Option<u32> {
        group
            .parse()
            .ok()
            .or_else(|| self.group(group).map(|g| g.gid))
    }
}

impl Host {
    /// Reads the target's account database afresh (it changes during an apply).
    pub fn accounts(&self) -> Result<Accounts, HostError> {
        // The shadow tools rewrite these files in place of whatever is there: one that
        // is not a regular file (a symlink out of the root) is refused, not read as empty.
        let text = |p: &str| -> Result<String, HostError> {
            match self.read(p)? {
                None => Ok(String::new()),
                Some((_, Some(c))) => Ok(String::from_utf8_lossy(&c).into_owned()),
                Some((st, None)) => Err(HostError::Unsafe {
                    path: self.show(p),
                    reason: format!(
                        "is a {}; account files must be regular files",
                        st.kind.name()
                    ),
                }),
            }
        };
        let users = parse_passwd(&text("/etc/passwd")?).map_err(|e| HostError::Path {
            path: self.show("/etc/passwd"),
            reason: e.to_string(),
        })?;
        let groups = parse_group(&text("/etc/group")?).map_err(|e| HostError::Path {
            path: self.show("/etc/group"),
            reason: e.to_string(),
        })?;
        Ok(Accounts::new(users, groups))
    }
}
