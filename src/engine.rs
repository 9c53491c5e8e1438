//! Orchestration shared by the commands: load → graph → observe (in parallel) → plan.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, PoisonError};

use crate::diag::Diagnostics;
use crate::graph::Graph;
use crate::host::Host;
use crate::manifest::{LoadOptions, Loaded};
use crate::plan::{Change, Plan, PlanError, PLAN_FORMAT, PLAN_VERSION};
use crate::resource::contract::{DepView, State};
use crate::resource::{Catalog, PlanCtx, Provide, Purpose, ResourceError};

/// Everything a command needs once the manifests are known to be valid.
pub struct Model {
    pub loaded: Loaded,
    pub graph: Graph,
    /// Which resources this run works on (all, unless `--tags` narrowed it).
    pub selected: Vec<bool>,
}

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("{0}")]
    Manifest(Diagnostics),
    #[error("{0}")]
    Host(#[from] crate::host::HostError),
    #[error("{0}")]
    Other(String),
}

pub fn load_model(opts: &LoadOptions, host: &Host) -> Result<Model, EngineError> {
    let started = std::time::Instant::now();
    let mut loaded = crate::manifest::load(opts, host).map_err(EngineError::Manifest)?;
    // What resources provide according to the target (a package's files): read once,
    // here, because `provides()` is pure and knows only the manifest.
    let found: Vec<(usize, Vec<Provide>)> = loaded
        .catalog
        .resources
        .iter()
        .enumerate()
        .map(|(i, r)| (i, r.target_provides(host, &loaded.catalog)))
        .filter(|(_, p)| !p.is_empty())
        .collect();
    for (i, provides) in found {
        loaded.catalog.add_target_provides(i, provides);
    }
    let (graph, warnings) = crate::graph::build(&loaded.catalog).map_err(|mut d| {
        d.0.splice(0..0, loaded.diags.0.iter().cloned());
        EngineError::Manifest(d)
    })?;
    loaded.diags.extend(warnings);
    tracing::debug!(elapsed = ?started.elapsed(), "dependency graph built");
    let lints = crate::lint::run(&loaded.catalog);
    if opts.strict && !lints.is_empty() {
        let mut all = Diagnostics(loaded.diags.0.clone());
        for mut d in lints {
            d.severity = crate::diag::Severity::Error;
            d.message.push_str(" [--strict]");
            all.push(d);
        }
        return Err(EngineError::Manifest(all));
    }
    loaded.diags.extend(Diagnostics(lints));
    let selected = vec![true; loaded.catalog.len()];
    let mut model = Model {
        loaded,
        graph,
        selected,
    };
    select_tags(&mut model, &opts.tags)?;
    crate::diag::release_sources();
    Ok(model)
}

/// Narrows a model to the resources carrying any of `tags`, plus everything they
/// depend on (a tagged resource cannot converge without its requirements).
pub fn select_tags(model: &mut Model, tags: &[String]) -> Result<usize, EngineError> {
    if tags.is_empty() {
        return Ok(model.selected.len());
    }
    let catalog = &model.loaded.catalog;
    let mut selected = vec![false; catalog.len()];
    let mut stack: Vec<usize> = (0..catalog.len())
        .filter(|&i| {
            catalog.resources[i]
                .meta()
                .tags
                .iter()
                .any(|t| tags.contains(t))
        })
        .collect();
    if stack.is_empty() {
        return Err(EngineError::Other(format!(
            "no resource has the tag(s) {}",
            tags.join(", ")
        )));
    }
    while let Some(i) = stack.pop() {
        if !selected[i] {
            selected[i] = true;
            stack.extend(model.graph.deps[i].iter().copied());
        }
    }
    let count = selected.iter().filter(|&&s| s).count();
    model.selected = selected;
    Ok(count)
}

/// How many resources are observed or applied at once.
pub fn default_jobs() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
        .clamp(2, 16)
}

/// Resources a worker takes at once when observing.
const OBSERVE_CHUNK: usize = 16;

/// What observing one resource gave: its state, or why it could not be observed
/// (boxed: a slot is held for every resource, and errors are rare).
type Observed = Result<State, Box<ResourceError>>;

/// Observes the selected resources (read-only) in parallel and diffs each, in
/// dependency order, as soon as it and everything before it in that order is
/// observed: `diff` gets the resource's catalog index and its state.
///
/// Workers take chunks of the dependency order; the calling thread diffs, and
/// observes a chunk itself whenever the next state is not there yet. So a state lives
/// only until its turn comes, not until every resource is observed (at 100,000 files,
/// holding them all cost tens of MB of peak memory and the time to fault it in).
fn observe_and_diff(
    catalog: &Catalog,
    host: &Host,
    jobs: usize,
    selected: &[bool],
    order: &[usize],
    purpose: Purpose,
    mut diff: impl FnMut(usize, Result<State, ResourceError>),
) -> Result<(), EngineError> {
    let accounts = host.accounts()?;
    let ctx = PlanCtx {
        host,
        accounts: &accounts,
        catalog,
        purpose,
    };
    let is_selected = |i: usize| selected.get(i).copied().unwrap_or(true);
    let n = order.len();
    let next = AtomicUsize::new(0);
    // Filled in place as workers finish chunks, indexed by position in `order`.
    let slots: Mutex<Vec<Option<Observed>>> = Mutex::new((0..n).map(|_| None).collect());
    let filled = Condvar::new();
    // Set (under the slots' lock) while the differ waits: a notification is a system
    // call, and one per chunk when nobody waits cost more than the waits.
    let waiting = AtomicBool::new(false);
    let helpers = jobs.min(n.max(1)).saturating_sub(1);
    let running = AtomicUsize::new(helpers);
    // Observes the next chunk of the order; `false` when none is left.
    let observe_chunk = |done: &mut Vec<(usize, Observed)>| -> bool {
        let first = next.fetch_add(OBSERVE_CHUNK, Ordering::Relaxed);
        if first >= n {
            return false;
        }
        for (k, &i) in order
            .iter()
            .enumerate()
            .take(n.min(first + OBSERVE_CHUNK))
            .skip(first)
        {
            if is_selected(i) {
                if let Some(r) = catalog.resources.get(i) {
                    let span = tracing::debug_span!("observe", resource = %r.id());
                    let _entered = span.enter();
                    done.push((k, r.observe_state(&ctx).map_err(Box::new)));
                }
            }
        }
        let mut slots = slots.lock().unwrap_or_else(PoisonError::into_inner);
        for (k, r) in done.drain(..) {
            slots[k] = Some(r);
        }
        if waiting.load(Ordering::Relaxed) {
            filled.notify_all();
        }
        true
    };
    std::thread::scope(|s| -> Result<(), EngineError> {
        for _ in 0..helpers {
            s.spawn(|| {
                // Counts the worker out even when an observer panics, so the differ
                // never waits for a state nobody will deliver.
                struct Leaving<'a>(
                    &'a AtomicUsize,
                    &'a Condvar,
                    &'a Mutex<Vec<Option<Observed>>>,
                );
                impl Drop for Leaving<'_> {
                    fn drop(&mut self) {
                        let _slots = self.2.lock().unwrap_or_else(PoisonError::into_inner);
                        self.0.fetch_sub(1, Ordering::Relaxed);
                        self.1.notify_all();
                    }
                }
                let _leaving = Leaving(&running, &filled, &slots);
                // Observation is read-only: parent directories opened once per thread
                // serve every file below them.
                let _dirs = host.cache_dirs();
                let mut done = Vec::with_capacity(OBSERVE_CHUNK);
                // A panic stays in this thread (the scope would re-raise it): its
                // chunk's states never arrive, which the differ reports.
                let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    while observe_chunk(&mut done) {}
                }));
            });
        }
        // The calling thread diffs and helps observing; what it allocates reuses the
        // memory the manifest trees just gave back to its arena (glibc gives each
        // thread its own), which keeps the peak RSS down.
        let _dirs = host.cache_dirs();
        let mut done = Vec::with_capacity(OBSERVE_CHUNK);
        let mut ready = Vec::with_capacity(OBSERVE_CHUNK);
        let mut k = 0;
        while k < n {
            {
                let mut slots = slots.lock().unwrap_or_else(PoisonError::into_inner);
                loop {
                    while k < n && !order.get(k).is_some_and(|&i| is_selected(i)) {
                        k += 1;
                    }
                    if k >= n {
                        break;
                    }
                    if let Some(o) = slots[k].take() {
                        ready.push((order[k], o));
                        k += 1;
                        continue;
                    }
                    if !ready.is_empty() || next.load(Ordering::Relaxed) < n {
                        break;
                    }
                    if running.load(Ordering::Relaxed) == 0 {
                        return Err(EngineError::Other("an observer thread panicked".into()));
                    }
                    waiting.store(true, Ordering::Relaxed);
                    slots = filled.wait(slots).unwrap_or_else(PoisonError::into_inner);
                    waiting.store(false, Ordering::Relaxed);
                }
            }
            if ready.is_empty() {
                if k < n {
                    let helped = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        observe_chunk(&mut done)
                    }));
                    if helped.is_err() {
                        return Err(EngineError::Other("an observer thread panicked".into()));
                    }
                }
                continue;
            }
            for (i, o) in ready.drain(..) {
                diff(i, o.map_err(|e| *e));
            }
        }
        Ok(())
    })
}

/// The plan's changes (graph order) as a table indexed like the catalog, for
/// `apply::execute`; rearranged in place when every resource has its change (the
/// usual case), so a large converge never holds two tables of changes.
pub fn by_catalog_index(model: &Model, changes: Vec<Change>) -> Vec<Option<Change>> {
    let catalog = &model.loaded.catalog;
    let n = catalog.len();
    let at: Vec<usize> = changes
        .iter()
        .map(|c| catalog.index_of(&c.id).unwrap_or(usize::MAX))
        .collect();
    // Same size as `Change` (the option uses a niche), so this reuses the buffer.
    let mut slots: Vec<Option<Change>> = changes.into_iter().map(Some).collect();
    let mut order = vec![usize::MAX; n];
    for (k, &i) in at.iter().enumerate() {
        if let Some(slot) = order.get_mut(i) {
            *slot = k;
        }
    }
    if slots.len() == n && permute(&mut slots, &order) {
        return slots;
    }
    let mut table: Vec<Option<Change>> = (0..n).map(|_| None).collect();
    for (slot, i) in slots.into_iter().zip(at) {
        if let Some(t) = table.get_mut(i) {
            *t = slot;
        }
    }
    table
}

/// Reorders `v` so that `v[k]` becomes the old `v[order[k]]`, in place, when `order` is
/// a permutation of `v`'s indices; `false` (and `v` untouched) otherwise.
fn permute<T>(v: &mut [T], order: &[usize]) -> bool {
    let n = v.len();
    if order.len() != n {
        return false;
    }
    let mut seen = vec![false; n];
    for &i in order {
        if i >= n || std::mem::replace(&mut seen[i], true) {
            return false;
        }
    }
    // Follow each cycle once, swapping the next element of the cycle into place.
    let mut done = vec![false; n];
    for start in 0..n {
        let mut k = start;
        while !done[k] {
            done[k] = true;
            let src = order[k];
            if src == start {
                break;
            }
            v.swap(k, src);
            k = src;
        }
    }
    true
}

/// Builds the plan value for a model. For apply (which shows the diffs of what it
/// actually changes) content diffs are dropped as soon as made.
pub fn make_plan(
    model: &Model,
    opts: &LoadOptions,
    host: &Host,
    jobs: usize,
    purpose: Purpose,
) -> Result<Plan, EngineError> {
    let catalog = &model.loaded.catalog;
    let started = std::time::Instant::now();
    let mut errors = Vec::new();
    let mut error_of = |i: usize, e: ResourceError| {
        let r = &catalog.resources[i];
        errors.push(PlanError {
            id: r.id().clone(),
            at: r.meta().span.as_ref().map(ToString::to_string),
            message: e.to_string(),
        });
    };
    let order = &model.graph.order;
    // Diffs run in dependency order, each seeing whether its dependencies change.
    let changing: Vec<AtomicU8> = (0..catalog.len()).map(|_| AtomicU8::new(0)).collect();
    let lookup = |id: &crate::id::ResourceId| {
        catalog
            .index_of(id)
            .and_then(|i| changing.get(i))
            .and_then(|c| match c.load(Ordering::Relaxed) {
                0 => None,
                c => Some(c == 2),
            })
    };
    let deps = DepView::new(&lookup);
    let keep_diffs = purpose != Purpose::Apply;
    // Sized once: a growing vector would briefly hold two copies of every change made
    // so far (tens of MB at 100,000 resources).
    let mut changes: Vec<Change> = Vec::with_capacity(catalog.len());
    observe_and_diff(
        catalog,
        host,
        jobs,
        &model.selected,
        order,
        purpose,
        |i, state| {
            let Some(r) = catalog.resources.get(i) else {
                return;
            };
            match state.and_then(|s| r.diff_state(s, &deps)) {
                Ok(mut c) => {
                    changing[i].store(if c.is_change() { 2 } else { 1 }, Ordering::Relaxed);
                    if !keep_diffs {
                        c.diff = None;
                    }
                    changes.push(c);
                }
                Err(e) => error_of(i, e),
            }
        },
    )?;
    tracing::debug!(elapsed = ?started.elapsed(), jobs, "host observed and diffed");
    let warnings = model
        .loaded
        .diags
        .warnings()
        .map(ToString::to_string)
        .collect();
    Ok(Plan {
        format: PLAN_FORMAT.into(),
        version: PLAN_VERSION,
        root: host.root().display().to_string(),
        manifests: model
            .loaded
            .files
            .iter()
            .map(|p| crate::manifest::decode::display_path(p))
            .collect(),
        environment: opts.env.clone(),
        vars: opts.vars.clone(),
        tags: opts.tags.clone(),
        modules: opts
            .modules
            .iter()
            .map(|p| crate::manifest::decode::display_path(p))
            .collect(),
        inputs: model.loaded.fingerprint.clone(),
        fingerprint_key: None,
        summary: Plan::summarize(&changes, errors.len()),
        changes,
        errors,
        warnings,
        environment_source: None,
        switch_env_from: None,
        removed: Vec::new(),
        base: None,
    })
}

/// The per-host key that fingerprints of sensitive resources are keyed with. Root-only,
/// under the root; made by the first apply, never by `plan` or `check`.
pub const FINGERPRINT_KEY: &str = "/var/lib/reconcile/fingerprint.key";
const KEY_BYTES: usize = 32;
const KEY_DIR_MODE: u32 = 0o750;

/// The host's fingerprint key and its public id.
pub struct FingerprintKey {
    key: Vec<u8>,
    pub id: String,
}

impl FingerprintKey {
    /// A fingerprint keyed with this host's key (`hmac:` prefixed).
    pub fn keyed(&self, fingerprint: &str) -> String {
        crate::plan::keyed_fingerprint(&self.key, fingerprint)
    }

    fn new(key: Vec<u8>) -> FingerprintKey {
        let full = crate::plan::keyed_fingerprint(&key, "key-id");
        let hex = full.trim_start_matches(crate::plan::KEYED_PREFIX);
        let id = hex.get(..16).unwrap_or(hex).to_string();
        FingerprintKey { key, id }
    }
}

/// Reads the fingerprint key without creating anything (`plan`, `check`); `None` before the
/// first apply. A key others can read, or of the wrong size, is an error, not a silent
/// downgrade to unkeyed fingerprints.
pub fn read_fingerprint_key(host: &Host) -> Result<Option<FingerprintKey>, EngineError> {
    let Some((mode, key)) = host.read_state(FINGERPRINT_KEY, 4096)? else {
        return Ok(None);
    };
    let path = host.show(FINGERPRINT_KEY);
    let euid = nix::unistd::geteuid().as_raw();
    let owner = host.lstat(FINGERPRINT_KEY)?.map_or(euid, |st| st.uid);
    if owner != 0 && owner != euid {
        return Err(EngineError::Other(format!(
            "{path}: the fingerprint key is owned by uid {owner}, not root or uid {euid}; someone else could have chosen it"
        )));
    }
    if mode & 0o077 != 0 {
        return Err(EngineError::Other(format!(
            "{path}: the fingerprint key has mode {mode:04o}; it must be readable by its owner only (chmod 0600 {path})"
        )));
    }
    if key.len() != KEY_BYTES {
        return Err(EngineError::Other(format!(
            "{path}: the fingerprint key is {} bytes, expected {KEY_BYTES}; remove it to have the next apply make a new one (saved plans then become stale)",
            key.len()
        )));
    }
    Ok(Some(FingerprintKey::new(key)))
}

/// The fingerprint key, made (0600, random) when the host has none yet. Apply only, under the
/// run lock.
pub fn ensure_fingerprint_key(host: &Host) -> Result<FingerprintKey, EngineError> {
    if let Some(k) = read_fingerprint_key(host)? {
        return Ok(k);
    }
    let mut key = vec![0u8; KEY_BYTES];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut key))
        .map_err(|e| {
            EngineError::Other(format!(
                "cannot read /dev/urandom for the fingerprint key: {e}"
            ))
        })?;
    host.write_state(FINGERPRINT_KEY, &key, KEY_DIR_MODE, 0o600)?;
    Ok(FingerprintKey::new(key))
}

/// Keys the fingerprints of sensitive resources (and the plan's `inputs`, which cover their
/// content, when the manifests have any) with the host key, or blanks them when there is no
/// key: an unkeyed fingerprint of a secret lets anyone confirm a guess by planning it on
/// another root.
pub fn seal(plan: &mut Plan, model: &Model, key: Option<&FingerprintKey>) {
    let any = model
        .loaded
        .catalog
        .resources
        .iter()
        .any(|r| r.meta().secret);
    seal_plan(plan, any, key);
}

fn seal_plan(plan: &mut Plan, has_secrets: bool, key: Option<&FingerprintKey>) {
    for c in &mut plan.changes {
        seal_change(c, key);
    }
    if has_secrets {
        seal_one(&mut plan.inputs, key);
    }
    plan.fingerprint_key = key.map(|k| k.id.clone());
}

/// [`seal`] for one change (apply re-observes before acting, so its outcomes carry fresh
/// changes). Idempotent: an already keyed fingerprint is left as it is.
pub fn seal_change(c: &mut Change, key: Option<&FingerprintKey>) {
    if c.sensitive {
        seal_one(&mut c.live, key);
        seal_one(&mut c.desired, key);
    }
}

fn seal_one(fp: &mut String, key: Option<&FingerprintKey>) {
    if fp.starts_with(crate::plan::KEYED_PREFIX) {
        return;
    }
    *fp = match key {
        Some(k) if !fp.is_empty() => crate::plan::keyed_fingerprint(&k.key, fp),
        _ => String::new(),
    };
}

/// Reads a saved plan file, or `None` when the path is not one (a manifest).
pub fn read_plan_file(path: &Path) -> Option<Result<Plan, EngineError>> {
    if path.is_dir() {
        return None;
    }
    // A plan is at most as large as the manifests it was made from may be.
    let bytes =
        crate::manifest::decode::read_input(path, Some(crate::manifest::yaml::MAX_MANIFEST_BYTES))
            .ok()?;
    let value: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    if value.get("format").and_then(|f| f.as_str()) != Some(PLAN_FORMAT) {
        return None;
    }
    Some(
        serde_json::from_value(value).map_err(|e| {
            EngineError::Other(format!("{}: not a valid plan file: {e}", path.display()))
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::ResourceId;
    use std::os::unix::fs::PermissionsExt;

    fn plan_of(changes: Vec<Change>) -> Plan {
        Plan {
            format: PLAN_FORMAT.into(),
            version: PLAN_VERSION,
            root: "/".into(),
            manifests: Vec::new(),
            environment: None,
            vars: Vec::new(),
            tags: Vec::new(),
            modules: Vec::new(),
            inputs: "inputs-fp".into(),
            fingerprint_key: None,
            summary: Plan::summarize(&changes, 0),
            changes,
            errors: Vec::new(),
            warnings: Vec::new(),
            environment_source: None,
            switch_env_from: None,
            removed: Vec::new(),
            base: None,
        }
    }

    fn change(path: &str, sensitive: bool) -> Change {
        let mut c = Change::new(ResourceId::new("file", path.to_string()), sensitive);
        c.live = "live-fp".into();
        c.desired = "desired-fp".into();
        c
    }

    #[test]
    fn secret_fingerprints_are_keyed_or_blanked_and_others_kept() {
        let mut p = plan_of(vec![change("/a", true), change("/b", false)]);
        seal_plan(&mut p, true, None);
        assert_eq!(
            (p.changes[0].live.as_str(), p.changes[0].desired.as_str()),
            ("", "")
        );
        assert_eq!(p.changes[1].live, "live-fp");
        assert_eq!(p.inputs, "");
        assert_eq!(p.fingerprint_key, None);

        let k1 = FingerprintKey::new(vec![1; KEY_BYTES]);
        let k2 = FingerprintKey::new(vec![2; KEY_BYTES]);
        let mut a = plan_of(vec![change("/a", true), change("/b", false)]);
        let mut b = a.clone();
        seal_plan(&mut a, true, Some(&k1));
        seal_plan(&mut b, true, Some(&k2));
        assert!(a.changes[0].live.starts_with(crate::plan::KEYED_PREFIX));
        assert_ne!(a.changes[0].live, b.changes[0].live);
        assert_ne!(a.changes[0].desired, b.changes[0].desired);
        assert_ne!(a.inputs, b.inputs);
        assert_eq!(a.changes[1], b.changes[1]);
        assert_eq!(a.fingerprint_key.as_deref(), Some(k1.id.as_str()));
        // Keying twice changes nothing.
        let once = a.clone();
        seal_plan(&mut a, true, Some(&k1));
        assert_eq!(a, once);
        // Without secret resources `inputs` stays plain.
        let mut c = plan_of(vec![change("/b", false)]);
        seal_plan(&mut c, false, Some(&k1));
        assert_eq!(c.inputs, "inputs-fp");
    }

    #[test]
    fn the_fingerprint_key_is_made_by_apply_only_and_must_be_private(
    ) -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let host = Host::open(dir.path())?;
        assert!(read_fingerprint_key(&host)?.is_none());
        assert!(
            !dir.path().join("var").exists(),
            "reading created something"
        );
        let made = ensure_fingerprint_key(&host)?;
        let again = ensure_fingerprint_key(&host)?;
        assert_eq!(made.id, again.id);
        let file = dir.path().join(FINGERPRINT_KEY.trim_start_matches('/'));
        assert_eq!(
            std::fs::metadata(&file)?.permissions().mode() & 0o7777,
            0o600
        );
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o640))?;
        let err = read_fingerprint_key(&host)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("0640"), "{err}");
        Ok(())
    }

    #[test]
    fn permute_matches_indexing() {
        let orders: [&[usize]; 5] = [
            &[0, 1, 2, 3, 4],
            &[4, 3, 2, 1, 0],
            &[1, 2, 3, 4, 0],
            &[2, 0, 1, 4, 3],
            &[3, 4, 0, 2, 1],
        ];
        for order in orders {
            let old = vec!['a', 'b', 'c', 'd', 'e'];
            let mut v = old.clone();
            assert!(permute(&mut v, order));
            let want: Vec<char> = order.iter().map(|&i| old[i]).collect();
            assert_eq!(v, want, "{order:?}");
        }
        let mut v = vec![1, 2, 3];
        assert!(!permute(&mut v, &[0, 0, 1]));
        assert!(!permute(&mut v, &[0, 1]));
        assert!(!permute(&mut v, &[0, 1, 3]));
        assert_eq!(v, vec![1, 2, 3]);
    }

    /// A resource whose observer panics when its name says so; its diff records the
    /// order diffs ran in and what each saw of the resource before it.
    #[derive(Debug)]
    struct Probe {
        id: ResourceId,
        meta: crate::resource::Meta,
    }

    impl crate::resource::Resource for Probe {
        fn id(&self) -> &ResourceId {
            &self.id
        }
        fn meta(&self) -> &crate::resource::Meta {
            &self.meta
        }
        fn observe_state(&self, _: &PlanCtx) -> Result<State, ResourceError> {
            if self.id.name == "panics" {
                panic!("observer fault injected by the test");
            }
            Ok(Box::new(self.id.name.clone()))
        }
        fn diff_state(&self, state: State, _: &DepView) -> Result<Change, ResourceError> {
            let mut c = Change::new(self.id.clone(), false);
            if state.downcast_ref::<String>() != Some(&self.id.name) {
                return Err(ResourceError::Failed("got another resource's state".into()));
            }
            c.action = crate::plan::Action::Update;
            Ok(c)
        }
        fn apply(&self, _: &crate::resource::ApplyCtx, _: &Change) -> Result<(), ResourceError> {
            Ok(())
        }
        fn as_any(&self) -> &dyn std::any::Any {
            self
        }
    }

    fn probes(names: &[&str]) -> Catalog {
        Catalog::new(
            names
                .iter()
                .map(|n| {
                    Box::new(Probe {
                        id: ResourceId::new("probe", *n),
                        meta: crate::resource::Meta::default(),
                    }) as Box<dyn crate::resource::Resource>
                })
                .collect(),
        )
    }

    #[test]
    fn diffs_run_in_dependency_order_each_with_its_own_state_whatever_the_workers(
    ) -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let host = Host::open(dir.path())?;
        let names: Vec<String> = (0..100).map(|i| format!("r{i}")).collect();
        let catalog = probes(&names.iter().map(String::as_str).collect::<Vec<_>>());
        // A dependency order that is not the catalog's.
        let order: Vec<usize> = (0..100).rev().collect();
        let mut selected = vec![true; 100];
        selected[7] = false;
        for jobs in [1, 2, 8] {
            let mut seen = Vec::new();
            observe_and_diff(
                &catalog,
                &host,
                jobs,
                &selected,
                &order,
                Purpose::Plan,
                |i, s| {
                    let r = &catalog.resources[i];
                    seen.push((i, s.and_then(|s| r.diff_state(s, &DepView::none())).is_ok()));
                },
            )?;
            let want: Vec<(usize, bool)> = order
                .iter()
                .filter(|&&i| i != 7)
                .map(|&i| (i, true))
                .collect();
            assert_eq!(seen, want, "jobs {jobs}");
        }
        Ok(())
    }

    #[test]
    fn a_panicking_observer_ends_the_plan_with_an_error_instead_of_hanging(
    ) -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let host = Host::open(dir.path())?;
        let mut names: Vec<String> = (0..200).map(|i| format!("r{i}")).collect();
        names[150] = "panics".into();
        let catalog = probes(&names.iter().map(String::as_str).collect::<Vec<_>>());
        let order: Vec<usize> = (0..200).collect();
        for jobs in [1, 2, 4] {
            let mut diffs = 0;
            let got =
                observe_and_diff(&catalog, &host, jobs, &[], &order, Purpose::Plan, |_, _| {
                    diffs += 1
                });
            let err = got.err().map(|e| e.to_string()).unwrap_or_default();
            assert!(err.contains("panicked"), "jobs {jobs}: {err}");
            assert!(
                diffs <= 150,
                "jobs {jobs}: diffed past the panicked one ({diffs})"
            );
        }
        Ok(())
    }
}
