//! The typed pieces of a `firewall` spec.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::diag::Span;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TableFamily {
    Inet,
    Ip,
    Ip6,
}

impl TableFamily {
    pub fn name(self) -> &'static str {
        match self {
            TableFamily::Inet => "inet",
            TableFamily::Ip => "ip",
            TableFamily::Ip6 => "ip6",
        }
    }

    /// The one address family a non-`inet` table sees.
    pub fn only(self) -> Option<Family> {
        match self {
            TableFamily::Inet => None,
            TableFamily::Ip => Some(Family::V4),
            TableFamily::Ip6 => Some(Family::V6),
        }
    }

    pub fn sees(self, f: Family) -> bool {
        self.only().is_none_or(|o| o == f)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    pub fn name(self) -> &'static str {
        match self {
            Family::V4 => "IPv4",
            Family::V6 => "IPv6",
        }
    }

    /// The payload protocol of addresses (`ip saddr`, `ip6 saddr`).
    pub fn proto(self) -> &'static str {
        match self {
            Family::V4 => "ip",
            Family::V6 => "ip6",
        }
    }

    pub fn set_type(self) -> &'static str {
        match self {
            Family::V4 => "ipv4_addr",
            Family::V6 => "ipv6_addr",
        }
    }
}

/// An address or a network.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Net {
    pub addr: IpAddr,
    pub len: u8,
}

impl Net {
    pub fn family(&self) -> Family {
        match self.addr {
            IpAddr::V4(_) => Family::V4,
            IpAddr::V6(_) => Family::V6,
        }
    }

    fn max(&self) -> u8 {
        match self.addr {
            IpAddr::V4(_) => 32,
            IpAddr::V6(_) => 128,
        }
    }

    /// The address with the host bits cleared.
    pub fn network(&self) -> IpAddr {
        match self.addr {
            IpAddr::V4(a) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(self.len)).unwrap_or(0);
                IpAddr::V4(Ipv4Addr::from(u32::from(a) & mask))
            }
            IpAddr::V6(a) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.len))
                    .unwrap_or(0);
                IpAddr::V6(Ipv6Addr::from(u128::from(a) & mask))
            }
        }
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let other = Net {
            addr: ip,
            len: self.len,
        };
        other.family() == self.family() && other.network() == self.network()
    }

    /// As `nft list` writes it: a host without its `/32`.
    pub fn text(&self) -> String {
        if self.len == self.max() {
            self.addr.to_string()
        } else {
            format!("{}/{}", self.addr, self.len)
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hook {
    Input,
    Output,
    Forward,
}

impl Hook {
    pub fn name(self) -> &'static str {
        match self {
            Hook::Input => "input",
            Hook::Output => "output",
            Hook::Forward => "forward",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    Accept,
    Drop,
}

impl Policy {
    pub fn name(self) -> &'static str {
        match self {
            Policy::Accept => "accept",
            Policy::Drop => "drop",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Accept,
    Drop,
    Reject,
}

/// One entry of `from`/`to`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AddrItem {
    Net(Net),
    /// A named set and the family of its addresses.
    Set(String, Family),
}

impl AddrItem {
    pub fn family(&self) -> Family {
        match self {
            AddrItem::Net(n) => n.family(),
            AddrItem::Set(_, f) => *f,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetDef {
    pub name: String,
    pub family: Family,
    pub elements: Vec<Net>,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainDef {
    pub hook: Hook,
    pub policy: Policy,
    pub rules: Vec<RuleDef>,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleDef {
    pub verdict: Verdict,
    /// Protocol names as written (`tcp`, `icmpv6`); empty: any.
    pub protos: Vec<String>,
    /// Destination port ranges (inclusive); a single port is `(p, p)`.
    pub ports: Vec<(u16, u16)>,
    pub from: Vec<AddrItem>,
    pub to: Vec<AddrItem>,
    pub iif: Option<String>,
    pub oif: Option<String>,
    /// Log prefix; logging is rate-limited.
    pub log: Option<String>,
    pub counter: bool,
    pub comment: Option<String>,
    /// Where the rule is written (its `allow`/`deny`/`reject` key).
    pub span: Span,
}

/// The rules every sane ruleset has; each can be switched off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Builtins {
    pub loopback: bool,
    pub established: bool,
    pub invalid: bool,
    pub icmpv6_nd: bool,
    pub echo: bool,
}

impl Default for Builtins {
    fn default() -> Builtins {
        Builtins {
            loopback: true,
            established: true,
            invalid: true,
            icmpv6_nd: true,
            echo: true,
        }
    }
}

/// `published_ports:` new connections to DNAT'ed (container-published) ports are
/// allowed only from these sources.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    pub from: Vec<AddrItem>,
    pub counter: bool,
    pub span: Span,
}
