//! `file`: a regular file's content, owner, group and mode.

use std::any::Any;
use std::io::Write;
use std::sync::Arc;

use sha2::Digest;

use crate::diag::Span;
use crate::host::fs::{hardlink_reason, Body, ScratchDir};
use crate::host::{Cmd, FileKind, HostError, Stat};
use crate::id::ResourceId;
use crate::manifest::decode::{Decoder, Fields, SourceRef};
use crate::plan::{
    content_diff, diff_limit, fingerprint, hex, short_hash, size_summary, Action, Change,
};

use super::perms::{stat_fingerprint, PermSpec};
use super::{
    implied_parents, observe_below_declared, parent_dir_need, ApplyCtx, Ensure, Meta, Need,
    PlanCtx, Provide, Resource, ResourceError,
};

#[derive(Debug, Clone)]
pub enum Content {
    /// Known at load time: `content:`, a rendered `template:`, or a shipped `source:`.
    Bytes(Arc<[u8]>),
    /// An absolute `source:`: a file on the target, read when planning.
    TargetFile(String),
}

#[derive(Debug)]
pub struct File {
    pub id: ResourceId,
    pub meta: Meta,
    pub path: String,
    pub ensure: Ensure,
    pub content: Option<Content>,
    pub perms: PermSpec,
    pub validate: Option<String>,
    /// Where the content's lines come from (set when `validate` is).
    pub origin: Origin,
    pub backup: bool,
    /// `hardlinks: allow`: manage a file that has other hard links (otherwise refused).
    pub hardlinks_allowed: bool,
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
fn is_block(span: &Span) -> bool {
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

pub fn decode(
    d: &mut Decoder,
    name: (String, Span),
    meta: Meta,
    f: &mut Fields,
) -> Option<Box<dyn Resource>> {
    let (raw_path, span) = name;
    let path = d.path_name(&raw_path, &span, "file");
    let ensure = Ensure::decode(d, f);
    let perms = PermSpec::decode(d, f);
    let inline = f.raw("content").map(|n| n.span.clone());
    // The text as written: a `|` block keeps the manifest's line breaks, so its lines
    // can be named in validator messages.
    let inline_lines = f
        .raw("content")
        .and_then(|n| n.as_str())
        .map(|raw| raw.lines().count());
    let content_text = f.string(d, "content");
    let template = f.string(d, "template");
    let source = f.source(d, "source");
    let validate = f.string(d, "validate");
    let backup = f.bool(d, "backup").unwrap_or(false);
    let hardlinks_allowed = match f.string(d, "hardlinks") {
        None => false,
        Some((v, _)) if v == "allow" => true,
        Some((v, _)) if v == "refuse" => false,
        Some((v, vspan)) => {
            d.error(
                &vspan,
                "hardlinks",
                format!("`{v}` is not a hardlinks policy; use allow or refuse"),
            );
            false
        }
    };
    let given = [inline.is_some(), template.is_some(), source.is_some()]
        .iter()
        .filter(|&&b| b)
        .count();
    if given > 1 {
        d.error(
            &f.span,
            "content",
            "give at most one of `content`, `template` and `source`",
        );
    }
    let wants_origin = validate.is_some();
    let mut origin = Origin::Unknown;
    let content = if let Some((text, cspan)) = content_text {
        if wants_origin {
            origin = match inline_lines {
                Some(n) if n > 1 && n == text.lines().count() && is_block(&cspan) => {
                    Origin::Block(cspan)
                }
                _ => Origin::Inline(cspan),
            };
        }
        Some(Content::Bytes(Arc::from(text.into_bytes())))
    } else if let Some((rel, tspan)) = template {
        if wants_origin {
            let shown = d.template_path(&rel);
            // Read again only for validated files: the decoder's copy is private to it.
            origin = Origin::Template {
                source: crate::manifest::decode::read_input(&shown, None)
                    .ok()
                    .and_then(|b| String::from_utf8(b).ok()),
                shown: crate::manifest::decode::display_path(&shown),
            };
        }
        d.render_template(&rel, &tspan, "template")
            // Shares the rendered text: a template used by many files is stored once.
            .map(|out| Content::Bytes(Arc::<[u8]>::from(out)))
    } else if let Some((src, sspan)) = source {
        match src {
            SourceRef::Target(p) => {
                origin = Origin::File(p.clone());
                Some(Content::TargetFile(p))
            }
            SourceRef::Shipped(p) => {
                origin = Origin::File(crate::manifest::decode::display_path(&p));
                d.read_shipped(&p, &sspan, "source")
                    .map(|b| Content::Bytes(Arc::from(b)))
            }
        }
    } else {
        None
    };
    if let Some(p) = path.as_deref().filter(|p| p.contains(['*', '?', '['])) {
        d.warn(
            &span,
            "file",
            format!("`{p}` contains a glob character: a file resource manages one file of exactly that name (a literal `*` here), it does not expand patterns; name each file, or manage the directory"),
        );
    }
    if let Some((v, vspan)) = &validate {
        if v.contains('\0') {
            // A program's arguments cannot hold NUL: the command could never run.
            d.error(
                vspan,
                "validate",
                "the validate command contains a NUL byte",
            );
        } else if !v.split_whitespace().any(|w| w.contains("%s")) {
            d.error(
                vspan,
                "validate",
                "the validate command must contain %s (the file to check)",
            );
        }
    }
    if ensure == Ensure::Absent
        && (content.is_some() || perms.mode.is_some() || perms.owner.is_some())
    {
        d.warn(
            &f.span,
            "state",
            "state: absent ignores content, owner, group and mode",
        );
    }
    let path = path?;
    Some(Box::new(File {
        id: ResourceId::new("file", path.clone()),
        meta,
        path,
        ensure,
        content,
        perms,
        validate: validate.map(|(v, _)| v),
        origin,
        backup,
        hardlinks_allowed,
    }))
}

impl File {
    fn desired(&self, ctx: &PlanCtx) -> Result<Option<Want>, ResourceError> {
        match &self.content {
            None => Ok(None),
            Some(Content::Bytes(b)) => Ok(Some(Want::Bytes(b.clone()))),
            Some(Content::TargetFile(src)) => match ctx.host.read_body(src, diff_limit())? {
                Some((_, Some(body))) => Ok(Some(Want::Observed(body))),
                Some((st, None)) => Err(ResourceError::Failed(format!(
                    "source {} is a {}, not a file",
                    ctx.host.show(src),
                    st.kind.name()
                ))),
                None => Err(ResourceError::Failed(format!(
                    "source {} does not exist",
                    ctx.host.show(src)
                ))),
            },
        }
    }

    /// Refuses to change a file that has other hard links, unless allowed.
    fn check_hardlinks(&self, ctx: &PlanCtx, st: &Stat) -> Result<(), ResourceError> {
        if st.kind == FileKind::File && st.nlink > 1 && !self.hardlinks_allowed {
            return Err(HostError::Unsafe {
                path: ctx.host.show(&self.path),
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
        if self.meta.secret {
            return Err(format!(
                "`{command}` rejected the new content ({code}; its output is not shown: the file is secret)"
            ));
        }
        let text = if out.stderr.trim().is_empty() {
            &out.stdout
        } else {
            &out.stderr
        };
        let explained = explain_rejection(text, &checked, &self.path, content, &self.origin);
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
    /// applies.
    fn validate_planned(&self, ctx: &PlanCtx, want: Option<&Want>) -> Result<(), ResourceError> {
        let Some(command) = &self.validate else {
            return Ok(());
        };
        let scratch = ScratchDir::new("validate", ctx.host.root())?;
        // The destination's own name: tools that look at the name or the extension see
        // what they will see at apply.
        let name = self
            .path
            .rsplit('/')
            .next()
            .filter(|n| !n.is_empty())
            .unwrap_or("file");
        let bytes = want.and_then(Want::bytes);
        let checked = scratch.file(name, &mut |out| match (bytes, &self.content) {
            (Some(b), _) => out
                .write_all(b)
                .map_err(|e| HostError::Other(format!("cannot write a scratch copy: {e}"))),
            (None, Some(Content::TargetFile(src))) if want.is_some() => ctx.host.copy_out(src, out),
            _ => Ok(()),
        })?;
        self.run_validate(command, &checked, bytes).map_err(|e| {
            ResourceError::Failed(format!(
                "validation failed, apply would refuse this content: {e}"
            ))
        })
    }
}

impl Resource for File {
    fn id(&self) -> &ResourceId {
        &self.id
    }

    fn meta(&self) -> &Meta {
        &self.meta
    }

    fn provides(&self) -> Vec<Provide> {
        vec![Provide::Path(self.path.clone())]
    }

    fn needs(&self) -> Vec<Need> {
        let mut needs = vec![parent_dir_need(&self.path)];
        needs.extend(self.perms.needs());
        if let Some(Content::TargetFile(src)) = &self.content {
            needs.push(Need::path(src.clone()));
        }
        needs
    }

    fn removes(&self) -> bool {
        self.ensure == Ensure::Absent
    }

    fn managed_path(&self) -> Option<&str> {
        Some(&self.path)
    }

    fn owners(&self) -> (Option<&str>, Option<&str>) {
        (self.perms.owner(), self.perms.group())
    }

    fn plan(&self, ctx: &PlanCtx) -> Result<Change, ResourceError> {
        let mut change = Change::new(self.id.clone(), self.meta.secret);
        let live = observe_below_declared(
            ctx,
            &self.path,
            ctx.host.read_body(&self.path, diff_limit()),
        )?;
        let (stat, live_body) = match &live {
            Some((st, body)) => (Some(*st), body.as_ref()),
            None => (None, None),
        };
        let live_hash = live_body.map(body_hash).unwrap_or_default();
        let stale = observe_below_declared(
            ctx,
            &self.path,
            ctx.host.stale_temps_of(&self.path).map(Some),
        )?
        .unwrap_or_default();
        change.live = fingerprint(
            [
                stat_fingerprint(stat.as_ref()).as_bytes(),
                live_hash.as_bytes(),
            ]
            .into_iter()
            .chain(stale.iter().map(|t| t.as_bytes())),
        );
        if let Some(st) = stat.filter(|s| s.kind != FileKind::File) {
            if self.ensure == Ensure::Present || st.kind != FileKind::Symlink {
                return Err(HostError::Unsafe {
                    path: ctx.host.show(&self.path),
                    reason: format!(
                        "is a {}; a file resource will not replace or follow it (declare a symlink resource, or remove it first)",
                        st.kind.name()
                    ),
                }
                .into());
            }
        }
        let desired = match self.ensure {
            Ensure::Present => self.desired(ctx)?,
            Ensure::Absent => None,
        };
        let in_sync = match (&desired, live_body) {
            (Some(want), Some(body)) => want.matches(body),
            _ => false,
        };
        // In sync, the content hash is the one just taken (hashing was a tenth of a
        // no-op run).
        let desired_hash = match &desired {
            Some(_) if in_sync => live_hash.clone(),
            Some(want) => want.hash(),
            None => String::new(),
        };
        change.desired = fingerprint([
            format!("{:?}", self.ensure).as_bytes(),
            desired_hash.as_bytes(),
            self.perms.fingerprint_parts().as_bytes(),
            self.validate.as_deref().unwrap_or("").as_bytes(),
        ]);
        // Another name of the same inode may be outside the root: its content is never
        // shown, and it is never changed in place.
        let shared_inode = stat.is_some_and(|s| s.nlink > 1 && s.kind == FileKind::File)
            && !self.hardlinks_allowed;
        match (self.ensure, stat) {
            (Ensure::Absent, None) => {}
            (Ensure::Absent, Some(_)) => {
                change.action = Action::Delete;
                if let Some(old) = live_body {
                    if !self.meta.secret && !shared_inode {
                        match old.bytes() {
                            Some(b) => content_diff(b, b"", &self.path).record(&mut change, None),
                            None => size_summary(old.size(), 0).record(&mut change, None),
                        }
                    }
                }
            }
            (Ensure::Present, None) => {
                self.perms.check_known(ctx.accounts, ctx.catalog)?;
                self.validate_planned(ctx, desired.as_ref())?;
                change.action = Action::Create;
                change.implied = implied_parents(ctx, &self.path)?;
                let new_hash = desired
                    .as_ref()
                    .map(Want::hash)
                    .unwrap_or_else(|| short_hash(b""));
                change.secret_field("content", None, Some(new_hash));
                self.perms.diff(ctx.accounts, None, 0o644, &mut change);
                if !self.meta.secret {
                    match desired.as_ref().map(|w| (w.bytes(), w.size())) {
                        Some((Some(new), _)) => {
                            content_diff(b"", new, &self.path).record(&mut change, None)
                        }
                        Some((None, size)) => size_summary(0, size).record(&mut change, None),
                        None => content_diff(b"", b"", &self.path).record(&mut change, None),
                    }
                }
            }
            (Ensure::Present, Some(st)) => {
                self.perms.check_known(ctx.accounts, ctx.catalog)?;
                let mut perm_changes = Change::new(self.id.clone(), self.meta.secret);
                self.perms
                    .diff(ctx.accounts, Some(&st), 0o644, &mut perm_changes);
                let content_changes = desired.is_some() && !in_sync;
                if content_changes || !perm_changes.fields.is_empty() {
                    self.check_hardlinks(ctx, &st)?;
                }
                if content_changes {
                    self.validate_planned(ctx, desired.as_ref())?;
                }
                if let (Some(new), false) = (&desired, in_sync) {
                    let old_hash = live_body.map(body_hash).unwrap_or_else(|| short_hash(b""));
                    change.secret_field("content", Some(old_hash), Some(new.hash()));
                    if !self.meta.secret {
                        let old_size = live_body.map_or(0, Body::size);
                        match (live_body.map(Body::bytes), new.bytes()) {
                            (Some(Some(old)), Some(new)) => {
                                content_diff(old, new, &self.path).record(&mut change, None)
                            }
                            _ => size_summary(old_size, new.size()).record(&mut change, None),
                        }
                    }
                }
                change.fields.extend(perm_changes.fields);
                if !change.fields.is_empty() {
                    change.action = Action::Update;
                }
            }
        }
        for t in &stale {
            change.field(
                format!("{TEMP_FIELD}{t}"),
                Some("left by a killed run".into()),
                None,
            );
        }
        if change.action == Action::None && !stale.is_empty() {
            change.action = Action::Update;
        }
        Ok(change)
    }

    fn apply(&self, ctx: &ApplyCtx, change: &Change) -> Result<(), ResourceError> {
        let host = ctx.host;
        if change
            .fields
            .iter()
            .any(|f| f.field.starts_with(TEMP_FIELD))
        {
            host.remove_stale_temps(&self.path)?;
        }
        let changes_perms = ["owner", "group", "mode"]
            .iter()
            .any(|f| change.changes_field(f));
        match change.action {
            Action::None => Ok(()),
            Action::Delete => Ok(host.remove(&self.path)?),
            Action::Update if self.ensure == Ensure::Absent => Ok(()),
            Action::Create | Action::Update => {
                let accounts = host.accounts()?;
                let mut perms = self.perms.resolve(&accounts)?;
                let live = host.lstat(&self.path)?;
                let writes_content =
                    change.action == Action::Create || change.changes_field("content");
                if !writes_content {
                    if !changes_perms {
                        return Ok(());
                    }
                    if self.hardlinks_allowed {
                        host.set_perms_hardlinked(&self.path, &perms)?;
                    } else {
                        host.set_perms(&self.path, &perms)?;
                    }
                    return Ok(());
                }
                // Unmanaged attributes of a replaced file keep their live values.
                if let Some(st) = &live {
                    perms.uid = perms.uid.or(Some(st.uid));
                    perms.gid = perms.gid.or(Some(st.gid));
                    perms.mode = perms.mode.or(Some(st.mode));
                }
                if self.backup {
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
                    None => {
                        host.write_atomic(&self.path, b"", &perms, &mut implied, Some(&check))?
                    }
                }
                Ok(())
            }
        }
    }

    fn as_any(&self) -> &dyn Any {
        self
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
