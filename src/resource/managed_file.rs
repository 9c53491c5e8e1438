//! A managed file: content, owner, group, mode, `validate` (also run while planning, on
//! a scratch copy), atomic write, backup, the hardlink refusal and the sweeping of temp
//! files a killed run left. `file` is one of these with a `state:`; `unit` and the
//! typed-file kinds to come (logrotate, audit rules) embed one: they observe it with
//! [`ManagedFile::observe`], take its pure [`ManagedFile::diff`] into their own, render
//! its operations with [`ManagedFile::describe`] and carry them out with
//! [`ManagedFile::apply`].

use std::io::Write;
use std::sync::Arc;

use sha2::Digest;

use crate::diag::Span;
use crate::host::fs::{hardlink_reason, Body, ScratchDir};
use crate::host::{Cmd, FileKind, Host, HostError, Stat};
use crate::plan::{
    content_diff, diff_limit, fingerprint, hex, short_hash, size_summary, Action, Change,
    ContentDiff,
};

use super::contract::Diff;
use super::perms::{stat_fingerprint, Owners, PermOp, PermSpec};
use super::{implied_parents, observe_below_declared, Ensure, PlanCtx, ResourceError};

#[derive(Debug, Clone)]
pub enum Content {
    /// Known at load time: `content:`, a rendered `template:`, or a shipped `source:`.
    Bytes(Arc<[u8]>),
    /// An absolute `source:`: a file on the target, read when planning.
    TargetFile(String),
}

/// Where a file's content lines come from, to name them when a validator rejects one.
#[derive(Debug, Clone, Default)]
pub enum Origin {
    #[default]
    Unknown,
    /// A `content: |` block: line n of the file is line `first.line + n - 1` of the
    /// manifest (a multi-line value whose line count templating kept; a quoted value
    /// with `\n` escapes of the same count would be mistaken for one, which a
    /// manifest writes rarely for file content).
    Block(Span),
    /// Other inline content (one line, quoted): only the value's place is known.
    Inline(Span),
    /// A rendered template: a rendered line is found in its source when it appears
    /// there once, verbatim.
    Template {
        shown: String,
        source: Option<String>,
    },
    /// A file whose lines are the content's (a shipped or target `source:`).
    File(String),
}

impl Origin {
    /// The place of line `n` (1-based) of the content, whose text is `text`.
    pub fn of_line(&self, n: usize, text: Option<&str>) -> Option<String> {
        match self {
            Origin::Unknown => None,
            Origin::Block(first) => {
                let line = u32::try_from(n.checked_sub(1)?)
                    .ok()?
                    .checked_add(first.line)?;
                Some(format!("{}:{line}:{}", first.file, first.column))
            }
            Origin::Inline(span) => Some(span.to_string()),
            Origin::Template { shown, source } => {
                let found = text.zip(source.as_deref()).and_then(|(text, source)| {
                    let text = text.trim_end();
                    let mut hits = source
                        .lines()
                        .enumerate()
                        .filter(|(_, l)| l.trim_end() == text && !text.trim().is_empty());
                    let first = hits.next()?;
                    hits.next().is_none().then_some(first.0 + 1)
                });
                Some(match found {
                    Some(line) => format!("{shown}:{line}"),
                    None => format!("{shown}, rendered line {n}"),
                })
            }
            Origin::File(path) => Some(format!("{path}:{n}")),
        }
    }
}

/// Whether the value at `span` is a block scalar (`content: |`) rather than a quoted
/// string whose `\n` escapes only look like lines: a quoted value starts with its quote
/// where the span points. Looked up in the manifest again, only for validated files.
pub fn is_block(span: &Span) -> bool {
    let Ok(text) = crate::manifest::decode::read_input(
        std::path::Path::new(&*span.file),
        Some(crate::manifest::yaml::MAX_MANIFEST_BYTES),
    ) else {
        return false;
    };
    let line = (span.line as usize).checked_sub(1);
    let col = (span.column as usize).checked_sub(1);
    let first = line
        .and_then(|l| text.split(|&b| b == b'\n').nth(l))
        .zip(col)
        .and_then(|(l, c)| l.get(c).copied());
    matches!(first, Some(b) if b != b'"' && b != b'\'')
}

/// A line number that a tool's message gives right after a path: `PATH:12`,
/// `PATH line 12`, `PATH, line 12`, `PATH: line 12`.
fn line_after_path(rest: &str) -> Option<usize> {
    let digits = |s: &str| -> Option<usize> {
        let end = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
        s.get(..end).filter(|d| !d.is_empty())?.parse().ok()
    };
    if let Some(n) = rest.strip_prefix(':').and_then(digits) {
        return Some(n);
    }
    let rest = rest.trim_start_matches([':', ',', ' ']);
    rest.strip_prefix("line ").and_then(digits)
}

/// A validator's rejection, for a plan or apply error: the lines of its output that
/// name the file it checked (all of them when none does), with that scratch or temp
/// path replaced by the destination and, where a line number follows it, the place
/// in the manifest or template that line comes from.
pub fn explain_rejection(
    output: &str,
    checked: &str,
    dest: &str,
    content: Option<&[u8]>,
    origin: &Origin,
) -> String {
    const MAX_LINES: usize = 20;
    let lines: Vec<&str> = output.lines().filter(|l| !l.trim().is_empty()).collect();
    let naming: Vec<&str> = lines
        .iter()
        .copied()
        .filter(|l| l.contains(checked))
        .collect();
    let shown = if naming.is_empty() { lines } else { naming };
    let content_line = |n: usize| -> Option<String> {
        let text = std::str::from_utf8(content?).ok()?;
        text.lines().nth(n.checked_sub(1)?).map(str::to_string)
    };
    let mut out = Vec::new();
    for l in shown.iter().take(MAX_LINES) {
        let line = l.trim_end().replace(checked, dest);
        let at = line
            .find(dest)
            .and_then(|i| line.get(i + dest.len()..))
            .and_then(line_after_path)
            .and_then(|n| origin.of_line(n, content_line(n).as_deref()));
        out.push(match at {
            Some(at) => format!("{line} (declared at {at})"),
            None => line,
        });
    }
    if shown.len() > MAX_LINES {
        out.push(format!("({} more lines)", shown.len() - MAX_LINES));
    }
    out.join("\n  ")
}

/// The desired content while planning: shared bytes from the manifest, or what was
/// observed of an absolute `source:` (whole, or size and hash when large).
enum Want {
    Bytes(Arc<[u8]>),
    Observed(Body),
}

impl Want {
    fn bytes(&self) -> Option<&[u8]> {
        match self {
            Want::Bytes(b) => Some(b),
            Want::Observed(b) => b.bytes(),
        }
    }

    fn size(&self) -> u64 {
        match self {
            Want::Bytes(b) => u64::try_from(b.len()).unwrap_or(u64::MAX),
            Want::Observed(b) => b.size(),
        }
    }

    fn matches(&self, live: &Body) -> bool {
        match (self, live.bytes()) {
            (Want::Bytes(b), Some(l)) => &b[..] == l,
            (Want::Bytes(b), None) => {
                self.size() == live.size()
                    && <[u8; 32]>::from(sha2::Sha256::digest(b)) == live.sha256()
            }
            (Want::Observed(b), _) => b.same_as(live),
        }
    }

    fn hash(&self) -> String {
        match self {
            Want::Bytes(b) => short_hash(b),
            Want::Observed(b) => body_hash(b),
        }
    }
}

/// [`short_hash`] of observed content, whole or streamed.
pub fn body_hash(b: &Body) -> String {
    match b.bytes() {
        Some(bytes) => short_hash(bytes),
        None => format!("sha256:{}", &hex(&b.sha256())[..12]),
    }
}

/// Field name of a temp file a killed run left beside the destination.
pub const TEMP_FIELD: &str = "temp file ";

/// A file's desired content, owner, group and mode, and how it is written.
#[derive(Debug, Clone)]
pub struct ManagedFile {
    pub path: String,
    pub content: Option<Content>,
    pub perms: PermSpec,
    /// The mode a new file gets when `perms` names none.
    pub default_mode: u32,
    pub validate: Option<String>,
    /// Where the content's lines come from (set when `validate` is).
    /// Boxed, as it is only known when `validate` is set (a spec is held for every
    /// resource of a run).
    pub origin: Option<Box<Origin>>,
    pub backup: bool,
    /// `hardlinks: allow`: manage a file that has other hard links (otherwise refused).
    pub hardlinks_allowed: bool,
    /// Never show the content (nor a validator's output about it).
    pub secret: bool,
}

/// What observing a managed file found: everything its pure diff needs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Seen {
    pub live: Option<Stat>,
    /// Set when the path holds something the file will not replace (the diff refuses).
    pub refused: Option<FileKind>,
    /// The live content against the desired, when content is managed and differs or
    /// the file is created; `None` when in sync or unmanaged. Boxed, as is rare: a
    /// state is held for every resource between observing and diffing.
    pub content: Option<Box<ContentSeen>>,
    /// What the plan shows of content that a removal deletes.
    pub removed: Option<ContentDiff>,
    pub owners: Owners,
    /// Temp files a killed run left beside the destination.
    pub temps: Vec<String>,
    /// Missing parents no declared directory creates.
    pub implied: Vec<String>,
    /// Why the plan-time validator rejected the content that would be written (or
    /// could not run), as the plan error says it.
    pub rejected: Option<String>,
    /// The path as errors show it (with the root in front), when the diff may refuse
    /// it (something other than a file there, or a file with other hard links).
    pub shown: String,
    /// Fingerprints of the live and desired state, for stale saved plans.
    pub live_fp: String,
    pub desired_fp: String,
}

/// Managed content that differs from the live (or is new).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContentSeen {
    /// Hash of the live content; `None` when the file is created.
    pub from: Option<String>,
    pub to: String,
    /// The diff or summary the plan shows (`None` for a secret or shared inode).
    pub shown: Option<ContentDiff>,
}

/// One thing applying a managed file does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// The whole content, written atomically (validated, then renamed into place);
    /// carries any owner/group/mode changes with it.
    Write {
        from: Option<String>,
        to: String,
        shown: Option<ContentDiff>,
    },
    /// Owner, group or mode; set in place unless the content is written too.
    Perm(PermOp),
    /// A timestamped copy of the live file before it is replaced (`backup: true`).
    Backup,
    Remove {
        shown: Option<ContentDiff>,
    },
    /// Temp files a killed run left beside the destination.
    SweepTemps {
        temps: Vec<String>,
    },
}

impl ManagedFile {
    /// Reads the live file, the desired content (an absolute `source:` on the target),
    /// leftovers and accounts; runs the validator on a scratch copy of content that
    /// would be written. Large files are hashed streaming, here, in parallel.
    pub fn observe(&self, ctx: &PlanCtx, ensure: Ensure) -> Result<Seen, ResourceError> {
        Ok(self.observe_embedded(ctx, ensure, false)?.0)
    }

    /// [`ManagedFile::observe`] for a kind that embeds a managed file and decides itself
    /// what a symlink at the path means (a unit's mask link to /dev/null): with
    /// `over_symlink`, a symlink there is observed as absent, since the write renames
    /// the file over the link itself (the live fingerprint still names the link).
    /// Hands back the live content as read (whole up to the diff limit) for the kind's
    /// own comparisons.
    pub fn observe_embedded(
        &self,
        ctx: &PlanCtx,
        ensure: Ensure,
        over_symlink: bool,
    ) -> Result<(Seen, Option<Body>), ResourceError> {
        let host = ctx.host;
        let live =
            observe_below_declared(ctx, &self.path, host.read_body(&self.path, diff_limit()))?;
        let (mut stat, mut live_body) = match &live {
            Some((st, body)) => (Some(*st), body.as_ref()),
            None => (None, None),
        };
        let over_link = over_symlink && stat.is_some_and(|s| s.kind == FileKind::Symlink);
        let live_hash = live_body.map(body_hash).unwrap_or_default();
        let temps =
            observe_below_declared(ctx, &self.path, host.stale_temps_of(&self.path).map(Some))?
                .unwrap_or_default();
        let mut seen = Seen {
            live_fp: fingerprint(
                [
                    stat_fingerprint(stat.as_ref()).as_bytes(),
                    live_hash.as_bytes(),
                ]
                .into_iter()
                .chain(temps.iter().map(|t| t.as_bytes())),
            ),
            temps,
            // Only a refusal shows the path: a no-op formats none.
            shown: stat
                .filter(|s| !over_link && (s.kind != FileKind::File || s.nlink > 1))
                .map(|_| host.show(&self.path))
                .unwrap_or_default(),
            ..Seen::default()
        };
        if over_link {
            stat = None;
            live_body = None;
        }
        seen.live = stat;
        if let Some(st) = stat.filter(|s| s.kind != FileKind::File) {
            if ensure == Ensure::Present || st.kind != FileKind::Symlink {
                seen.refused = Some(st.kind);
                return Ok((seen, None));
            }
        }
        let desired = match ensure {
            Ensure::Present => self.desired(host)?,
            Ensure::Absent => None,
        };
        let in_sync = match (&desired, live_body) {
            (Some(want), Some(body)) => want.matches(body),
            _ => false,
        };
        // In sync, the content hash is the one just taken (hashing was a tenth of a
        // no-op run).
        let desired_hash = match &desired {
            Some(_) if in_sync => live_hash,
            Some(want) => want.hash(),
            None => String::new(),
        };
        seen.desired_fp = fingerprint([
            // As `{ensure:?}` printed it, without a string per file.
            match ensure {
                Ensure::Present => b"Present".as_slice(),
                Ensure::Absent => b"Absent".as_slice(),
            },
            desired_hash.as_bytes(),
            self.perms.fingerprint_parts().as_bytes(),
            self.validate.as_deref().unwrap_or("").as_bytes(),
        ]);
        // Another name of the same inode may be outside the root: its content is never
        // shown, and it is never changed in place.
        let shared_inode = stat.is_some_and(|s| s.nlink > 1 && s.kind == FileKind::File)
            && !self.hardlinks_allowed;
        match (ensure, stat) {
            (Ensure::Absent, None) => {}
            (Ensure::Absent, Some(_)) => {
                seen.removed = live_body
                    .filter(|_| !self.secret && !shared_inode)
                    .map(|old| match old.bytes() {
                        Some(b) => content_diff(b, b"", &self.path),
                        None => size_summary(old.size(), 0),
                    });
            }
            (Ensure::Present, None) => {
                seen.owners = self.perms.observe(ctx.accounts, ctx.catalog, None);
                seen.implied = implied_parents(ctx, &self.path)?;
                let shown = (!self.secret).then(|| match &desired {
                    Some(w) => match w.bytes() {
                        Some(new) => content_diff(b"", new, &self.path),
                        None => size_summary(0, w.size()),
                    },
                    None => content_diff(b"", b"", &self.path),
                });
                seen.content = Some(Box::new(ContentSeen {
                    from: None,
                    to: desired
                        .as_ref()
                        .map(Want::hash)
                        .unwrap_or_else(|| short_hash(b"")),
                    shown,
                }));
                if seen.owners.unknown.is_none() {
                    seen.rejected = self.validate_planned(host, desired.as_ref()).err();
                }
            }
            (Ensure::Present, Some(_)) => {
                seen.owners = self.perms.observe(ctx.accounts, ctx.catalog, stat.as_ref());
                if let (Some(new), false) = (&desired, in_sync) {
                    let shown = (!self.secret).then(|| {
                        let old_size = live_body.map_or(0, Body::size);
                        match (live_body.and_then(Body::bytes), new.bytes()) {
                            (Some(old), Some(new)) => content_diff(old, new, &self.path),
                            _ => size_summary(old_size, new.size()),
                        }
                    });
                    seen.content = Some(Box::new(ContentSeen {
                        from: Some(live_body.map(body_hash).unwrap_or_else(|| short_hash(b""))),
                        to: new.hash(),
                        shown,
                    }));
                    if seen.owners.unknown.is_none() && !shared_inode {
                        seen.rejected = self.validate_planned(host, desired.as_ref()).err();
                    }
                }
            }
        }
        Ok((seen, live.and_then(|(_, body)| body)))
    }

    /// Pure: the operations that make `seen` match this file in state `ensure`.
    pub fn diff(&self, ensure: Ensure, seen: &Seen) -> Result<Diff<Op>, ResourceError> {
        let mut d = Diff::new(seen.live_fp.clone(), seen.desired_fp.clone());
        if let Some(kind) = seen.refused {
            return Err(HostError::Unsafe {
                path: seen.shown.clone(),
                reason: format!(
                    "is a {}; a file resource will not replace or follow it (declare a symlink resource, or remove it first)",
                    kind.name()
                ),
            }
            .into());
        }
        let known = || match &seen.owners.unknown {
            Some(why) => Err(ResourceError::Failed(why.clone())),
            None => Ok(()),
        };
        let validated = || match &seen.rejected {
            Some(why) => Err(ResourceError::Failed(why.clone())),
            None => Ok(()),
        };
        match (ensure, seen.live) {
            (Ensure::Absent, None) => {}
            (Ensure::Absent, Some(_)) => d.op(
                Action::Delete,
                Op::Remove {
                    shown: seen.removed.clone(),
                },
            ),
            (Ensure::Present, None) => {
                known()?;
                validated()?;
                d.implied.clone_from(&seen.implied);
                let content = seen.content.as_deref().cloned().unwrap_or(ContentSeen {
                    from: None,
                    to: short_hash(b""),
                    shown: None,
                });
                d.op(
                    Action::Create,
                    Op::Write {
                        from: None,
                        to: content.to,
                        shown: content.shown,
                    },
                );
                for p in self.perms.changes(&seen.owners, None, self.default_mode) {
                    d.op(Action::Create, Op::Perm(p));
                }
            }
            (Ensure::Present, Some(st)) => {
                known()?;
                let perms = self
                    .perms
                    .changes(&seen.owners, Some(&st), self.default_mode);
                if seen.content.is_some() || !perms.is_empty() {
                    self.check_hardlinks(&seen.shown, &st)?;
                }
                if let Some(c) = &seen.content {
                    validated()?;
                    if self.backup {
                        d.op(Action::Update, Op::Backup);
                    }
                    d.op(
                        Action::Update,
                        Op::Write {
                            from: c.from.clone(),
                            to: c.to.clone(),
                            shown: c.shown.clone(),
                        },
                    );
                }
                for p in perms {
                    d.op(Action::Update, Op::Perm(p));
                }
            }
        }
        if !seen.temps.is_empty() {
            d.op(
                Action::Update,
                Op::SweepTemps {
                    temps: seen.temps.clone(),
                },
            );
        }
        Ok(d)
    }

    /// The plan's fields for one operation (hashes hidden for a secret file).
    pub fn describe(op: &Op, change: &mut Change) {
        match op {
            Op::Write { from, to, shown } => {
                change.secret_field("content", from.clone(), Some(to.clone()));
                if let Some(shown) = shown {
                    shown.clone().record(change, None);
                }
            }
            Op::Perm(p) => p.describe("", change),
            Op::Backup => {}
            Op::Remove { shown } => {
                if let Some(shown) = shown {
                    shown.clone().record(change, None);
                }
            }
            Op::SweepTemps { temps } => {
                for t in temps {
                    change.field(
                        format!("{TEMP_FIELD}{t}"),
                        Some("left by a killed run".into()),
                        None,
                    );
                }
            }
        }
    }

    /// Carries out the operations of a diff made right before: leftovers first, then
    /// the removal, or one atomic write that sets owner, group and mode too, or those
    /// set in place.
    pub fn apply(&self, host: &Host, ops: &[Op]) -> Result<(), ResourceError> {
        if ops.iter().any(|op| matches!(op, Op::SweepTemps { .. })) {
            host.remove_stale_temps(&self.path)?;
        }
        if ops.iter().any(|op| matches!(op, Op::Remove { .. })) {
            return Ok(host.remove(&self.path)?);
        }
        let writes = ops.iter().any(|op| matches!(op, Op::Write { .. }));
        let sets_perms = ops.iter().any(|op| matches!(op, Op::Perm(_)));
        if !writes && !sets_perms {
            return Ok(());
        }
        let accounts = host.accounts()?;
        let mut perms = self.perms.resolve(&accounts)?;
        if !writes {
            if self.hardlinks_allowed {
                host.set_perms_hardlinked(&self.path, &perms)?;
            } else {
                host.set_perms(&self.path, &perms)?;
            }
            return Ok(());
        }
        let live = host.lstat(&self.path)?;
        // Unmanaged attributes of a replaced file keep their live values.
        if let Some(st) = &live {
            perms.uid = perms.uid.or(Some(st.uid));
            perms.gid = perms.gid.or(Some(st.gid));
            perms.mode = perms.mode.or(Some(st.mode));
        }
        if ops.contains(&Op::Backup) {
            if let Some(st) = live.filter(|s| s.kind == FileKind::File) {
                let stamp = jiff::Timestamp::now()
                    .strftime("%Y%m%dT%H%M%SZ")
                    .to_string();
                let backup = format!("{}.{stamp}.bak", self.path);
                let keep = crate::host::Perms {
                    uid: Some(st.uid),
                    gid: Some(st.gid),
                    mode: Some(st.mode),
                };
                host.copy_atomic(&backup, &self.path, &keep, &mut Vec::new(), None)?;
            }
        }
        let mut implied = Vec::new();
        let bytes = match &self.content {
            Some(Content::Bytes(b)) => Some(&b[..]),
            _ => None,
        };
        let check = |p: &std::path::Path| match &self.validate {
            Some(cmd) => self.run_validate(cmd, p, bytes),
            None => Ok(()),
        };
        match &self.content {
            Some(Content::TargetFile(src)) => {
                host.copy_atomic(&self.path, src, &perms, &mut implied, Some(&check))?
            }
            Some(Content::Bytes(b)) => {
                host.write_atomic(&self.path, b, &perms, &mut implied, Some(&check))?
            }
            None => host.write_atomic(&self.path, b"", &perms, &mut implied, Some(&check))?,
        }
        Ok(())
    }

    fn desired(&self, host: &Host) -> Result<Option<Want>, ResourceError> {
        match &self.content {
            None => Ok(None),
            Some(Content::Bytes(b)) => Ok(Some(Want::Bytes(b.clone()))),
            Some(Content::TargetFile(src)) => match host.read_body(src, diff_limit())? {
                Some((_, Some(body))) => Ok(Some(Want::Observed(body))),
                Some((st, None)) => Err(ResourceError::Failed(format!(
                    "source {} is a {}, not a file",
                    host.show(src),
                    st.kind.name()
                ))),
                None => Err(ResourceError::Failed(format!(
                    "source {} does not exist",
                    host.show(src)
                ))),
            },
        }
    }

    /// Refuses to change a file that has other hard links, unless allowed.
    fn check_hardlinks(&self, shown: &str, st: &Stat) -> Result<(), ResourceError> {
        if st.kind == FileKind::File && st.nlink > 1 && !self.hardlinks_allowed {
            return Err(HostError::Unsafe {
                path: shown.to_string(),
                reason: format!(
                    "{} (add `hardlinks: allow` to the resource to manage it anyway)",
                    hardlink_reason(st.nlink)
                ),
            }
            .into());
        }
        Ok(())
    }

    /// Runs the `validate` command on `checked`, a complete copy of the new content
    /// (the temp file beside the destination at apply, a scratch copy when planning).
    fn run_validate(
        &self,
        command: &str,
        checked: &std::path::Path,
        content: Option<&[u8]>,
    ) -> Result<(), String> {
        let checked = checked.display().to_string();
        let mut words = command
            .split_whitespace()
            .map(|w| w.replace("%s", &checked));
        let program = words.next().ok_or("empty validate command")?;
        let out = Cmd::new(program)
            .args(words)
            .run()
            .map_err(|e| e.to_string())?;
        if out.success() {
            return Ok(());
        }
        let code = out
            .status
            .map_or("killed by a signal".into(), |c| format!("exit code {c}"));
        // Tools often echo the offending line; for a secret file that could leak it.
        if self.secret {
            return Err(format!(
                "`{command}` rejected the new content ({code}; its output is not shown: the file is secret)"
            ));
        }
        let text = if out.stderr.trim().is_empty() {
            &out.stdout
        } else {
            &out.stderr
        };
        let explained = explain_rejection(
            text,
            &checked,
            &self.path,
            content,
            self.origin.as_deref().unwrap_or(&Origin::Unknown),
        );
        if explained.is_empty() {
            Err(format!("`{command}` rejected the new content ({code})"))
        } else {
            Err(format!(
                "`{command}` rejected the new content ({code}):\n  {explained}"
            ))
        }
    }

    /// Runs `validate` while planning, on a private scratch copy of the content that
    /// would be written (never on the target), so that a plan that passes is one that
    /// applies. The error is the plan's: the validator's rejection, or why it could not
    /// run.
    fn validate_planned(&self, host: &Host, want: Option<&Want>) -> Result<(), String> {
        let Some(command) = &self.validate else {
            return Ok(());
        };
        let scratch = ScratchDir::new("validate", host.root()).map_err(|e| e.to_string())?;
        // The destination's own name: tools that look at the name or the extension see
        // what they will see at apply.
        let name = self
            .path
            .rsplit('/')
            .next()
            .filter(|n| !n.is_empty())
            .unwrap_or("file");
        let bytes = want.and_then(Want::bytes);
        let checked = scratch
            .file(name, &mut |out| match (bytes, &self.content) {
                (Some(b), _) => out
                    .write_all(b)
                    .map_err(|e| HostError::Other(format!("cannot write a scratch copy: {e}"))),
                (None, Some(Content::TargetFile(src))) if want.is_some() => host.copy_out(src, out),
                _ => Ok(()),
            })
            .map_err(|e| e.to_string())?;
        self.run_validate(command, &checked, bytes)
            .map_err(|e| format!("validation failed, apply would refuse this content: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::{explain_rejection, line_after_path, Origin};
    use crate::diag::Span;

    #[test]
    fn line_numbers_after_a_path_in_the_usual_tool_formats() {
        assert_eq!(line_after_path(":4 bad rotation count"), Some(4));
        assert_eq!(line_after_path(":12: error"), Some(12));
        assert_eq!(
            line_after_path(" line 3: Bad configuration option"),
            Some(3)
        );
        assert_eq!(line_after_path(", line 7"), Some(7));
        assert_eq!(line_after_path(": line 9 near"), Some(9));
        assert_eq!(line_after_path(": syntax error"), None);
        assert_eq!(line_after_path(""), None);
    }

    #[test]
    fn a_rejection_names_the_destination_and_where_its_line_is_declared() {
        let origin = Origin::Block(Span::new("site.yaml".into(), 10, 7));
        let out =
            "warning: debug mode\nreading config file /tmp/s/x\nerror: /tmp/s/x:2 bad value\n";
        let got = explain_rejection(out, "/tmp/s/x", "/etc/x", Some(b"a\nb\n"), &origin);
        assert_eq!(
            got,
            "reading config file /etc/x\n  error: /etc/x:2 bad value (declared at site.yaml:11:7)"
        );
        // No line naming the file: everything is shown, nothing mapped.
        let got = explain_rejection("bad\n\nworse\n", "/tmp/s/x", "/etc/x", None, &origin);
        assert_eq!(got, "bad\n  worse");
        let template = Origin::Template {
            shown: "templates/t.tera".into(),
            source: Some("a\nkey = {{ v }}\nfixed = 1\n".into()),
        };
        assert_eq!(
            template.of_line(3, Some("fixed = 1")).as_deref(),
            Some("templates/t.tera:3")
        );
        assert_eq!(
            template.of_line(2, Some("key = 5")).as_deref(),
            Some("templates/t.tera, rendered line 2")
        );
        assert_eq!(
            Origin::File("files/p".into()).of_line(4, None).as_deref(),
            Some("files/p:4")
        );
    }
}
