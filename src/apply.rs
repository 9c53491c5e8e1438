//! The executor: runs planned changes in graph order, independent resources in
//! parallel (bounded), a failure failing only itself and its dependents, and each
//! notified resource refreshed at most once.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Condvar, Mutex};

use serde::Serialize;

use crate::engine::Model;
use crate::host::Host;
use crate::plan::{Action, Change};
use crate::resource::contract::{DepView, Staged};
use crate::resource::{self, ApplyCtx, Kind, PlanCtx, Purpose, Resource};

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "status", rename_all = "lowercase")]
pub enum Status {
    Unchanged,
    Changed,
    Refreshed,
    Failed { reason: String },
    Skipped { reason: String },
}

#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    pub id: crate::id::ResourceId,
    #[serde(flatten)]
    pub status: Status,
    /// Boxed: the outcome table has a slot per resource, most of them never holding one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub change: Option<Box<Change>>,
}

impl Outcome {
    pub fn failed(&self) -> bool {
        matches!(self.status, Status::Failed { .. } | Status::Skipped { .. })
    }

    pub fn changed(&self) -> bool {
        matches!(self.status, Status::Changed | Status::Refreshed)
    }
}

/// A member of a pending batch step: its catalog index and the change it was staged
/// with.
type Member = (usize, Change);

/// What a task came to: finished resources, tasks it makes ready, and a resource that
/// joins its kind's pending batch step.
struct TaskResult {
    finished: Vec<(usize, Outcome)>,
    next: Vec<Task>,
    staged: Option<(&'static Kind, Member)>,
}

/// Work a worker can take.
enum Task {
    /// A resource whose dependencies are done.
    Resource(usize),
    /// A resource whose kind's batch step ran for it: observe again, diff with what
    /// the step did for it, and apply.
    AfterFlush(usize, Box<(Change, Staged)>),
    /// A kind's batch step for the members pending (catalog index, staged change).
    Flush(&'static Kind, Vec<Member>),
}

/// What a resource's turn came to.
enum Step {
    Done(Outcome),
    /// Joins its kind's pending batch step with this (freshly observed) change.
    Staged(&'static Kind, Change),
}

struct Shared {
    ready: VecDeque<Task>,
    waiting_on: Vec<usize>,
    outcomes: Vec<Option<Outcome>>,
    done: usize,
    /// Workers busy with a task: a batch step runs only when none are and nothing is
    /// ready, so that every member that can join before it has.
    running: usize,
    /// Members waiting for their kind's batch step, by kind.
    pending: BTreeMap<&'static str, (&'static Kind, Vec<Member>)>,
}

/// Applies `planned` (catalog-indexed; `None` = nothing planned). `on_done` is called
/// for every outcome before it counts as done (the audit log and streamed output hook
/// in here). Without `keep_changes`, an outcome's change (fields, diff) is dropped
/// once `on_done` has seen it and only its status is kept: a large converge would
/// otherwise hold a change per created file until the end.
pub fn execute(
    model: &Model,
    host: &Host,
    planned: Vec<Option<Change>>,
    jobs: usize,
    keep_changes: bool,
    on_done: &(dyn Fn(&Outcome) + Sync),
    events: resource::EventSink,
) -> Vec<Outcome> {
    let catalog = &model.loaded.catalog;
    let graph = &model.graph;
    let n = catalog.len();
    let ctx = ApplyCtx {
        host,
        catalog,
        events,
    };
    let mut notified_by: Vec<Vec<usize>> = vec![Vec::new(); n];
    for (src, targets) in graph.notifies.iter().enumerate() {
        for &t in targets {
            notified_by[t].push(src);
        }
    }

    // Each planned change is taken by the worker that handles its resource, so a large
    // run does not hold every planned change until the end.
    // One lock for the table rather than one per slot: wrapping every slot would copy
    // the whole table (tens of MB at 100,000 resources) while both exist.
    let planned = Mutex::new(planned);
    let take_planned = |i: usize| -> Option<Change> {
        let mut slots = match planned.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        slots.get_mut(i).and_then(Option::take)
    };

    let shared = Mutex::new(Shared {
        ready: graph
            .order
            .iter()
            .copied()
            .filter(|&i| graph.deps[i].is_empty())
            .map(Task::Resource)
            .collect(),
        waiting_on: graph.deps.iter().map(Vec::len).collect(),
        outcomes: (0..n).map(|_| None).collect(),
        done: 0,
        running: 0,
        pending: BTreeMap::new(),
    });
    let wake = Condvar::new();

    // `staged`: the change this resource was staged with and what its kind's batch
    // step did for it, when the step has run for it (it is observed again, diffed
    // with what the step did, and applied now, never staged twice).
    let run_one = |i: usize,
                   outcomes: &std::collections::HashMap<usize, Outcome>,
                   staged: Option<(Change, Staged)>|
     -> Step {
        let r = catalog.resources[i].as_ref();
        let id = r.id().clone();
        let (staged_change, step_did) = match staged {
            Some((c, did)) => (Some(c), Some(did)),
            None => (None, None),
        };
        let after_flush = step_did.is_some();
        let planned_i = staged_change.or_else(|| take_planned(i));
        fault_hook(&id);
        if !model.selected.get(i).copied().unwrap_or(true) {
            return Step::Done(Outcome {
                id,
                status: Status::Unchanged,
                change: None,
            });
        }
        let status_of = |j: usize| outcomes.get(&j).map(|o| &o.status);
        if let Some(&bad) = graph.deps[i].iter().find(|&&j| {
            matches!(
                status_of(j),
                Some(Status::Failed { .. } | Status::Skipped { .. })
            )
        }) {
            return Step::Done(Outcome {
                id,
                status: Status::Skipped {
                    reason: format!("{} did not converge", catalog.resources[bad].id()),
                },
                change: planned_i.map(Box::new),
            });
        }
        let dep_changed = graph.deps[i]
            .iter()
            .any(|&j| outcomes.get(&j).is_some_and(Outcome::changed));
        let planned_change = planned_i.as_ref().is_some_and(Change::is_change);
        // A member of a batch step whose dependencies changed nothing joins the step
        // with its planned change: it is observed again after the step, right before
        // it acts, and observing it twice costs a unit two systemd-analyze runs.
        if let (false, false, Some(kind), Some(planned)) = (
            after_flush,
            dep_changed,
            flush_kind(&id),
            planned_i.as_ref(),
        ) {
            if planned.is_change() {
                if let Some(planned) = planned_i {
                    return Step::Staged(kind, planned);
                }
            }
        }
        let mut status = Status::Unchanged;
        let mut applied = None;
        if planned_change || dep_changed {
            // Observe again right before acting: earlier resources of this run may
            // have changed what this one sees (a new user, a copied source).
            let lookup = |id: &crate::id::ResourceId| {
                catalog
                    .index_of(id)
                    .and_then(|j| outcomes.get(&j))
                    .map(Outcome::changed)
            };
            let fresh = host
                .accounts()
                .map_err(|e| e.to_string())
                .and_then(|accounts| {
                    let ctx = PlanCtx {
                        host,
                        accounts: &accounts,
                        catalog,
                        purpose: Purpose::Apply,
                    };
                    let deps = match &step_did {
                        Some(did) => DepView::new(&lookup).after_step(did),
                        None => DepView::new(&lookup),
                    };
                    r.observe_state(&ctx)
                        .and_then(|state| r.diff_state(state, &deps))
                        .map_err(|e| e.to_string())
                });
            match fresh {
                Err(reason) => {
                    return Step::Done(Outcome {
                        id,
                        status: Status::Failed { reason },
                        change: planned_i.map(Box::new),
                    })
                }
                Ok(change) if change.action == Action::None => {}
                Ok(change) => {
                    if let (false, Some(kind)) = (after_flush, flush_kind(&id)) {
                        return Step::Staged(kind, change);
                    }
                    if let Err(e) = r.apply(&ctx, &change) {
                        return Step::Done(Outcome {
                            id,
                            status: Status::Failed {
                                reason: e.to_string(),
                            },
                            change: Some(Box::new(change)),
                        });
                    }
                    status = Status::Changed;
                    applied = Some(Box::new(change));
                }
            }
        }
        let notified = notified_by[i]
            .iter()
            .any(|&j| outcomes.get(&j).is_some_and(Outcome::changed));
        if notified && status == Status::Unchanged && r.refreshable() {
            if let Err(e) = r.refresh(&ctx) {
                return Step::Done(Outcome {
                    id,
                    status: Status::Failed {
                        reason: format!("refresh failed: {e}"),
                    },
                    change: applied,
                });
            }
            status = Status::Refreshed;
        }
        Step::Done(Outcome {
            id,
            status,
            change: applied,
        })
    };

    // A resource's turn, or the members of a batch step: outcomes of finished
    // resources, and the members to apply now that their step has run.
    let run_task = |task: Task, view: &std::collections::HashMap<usize, Outcome>| -> TaskResult {
        let guarded = |i: usize, f: &dyn Fn() -> Step| -> Step {
            // A panicking resource fails itself (its dependents are skipped); it must
            // not take its worker down, or the others would wait for its slot forever
            // while the run lock is held.
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or_else(|panic| {
                Step::Done(Outcome {
                    id: catalog.resources[i].id().clone(),
                    status: Status::Failed {
                        reason: format!(
                            "internal error: reconcile panicked while applying this resource ({}); \
                             please report it",
                            panic_message(panic.as_ref())
                        ),
                    },
                    change: None,
                })
            })
        };
        let finish = |i: usize, step: Step| match step {
            Step::Done(o) => TaskResult {
                finished: vec![(i, o)],
                next: Vec::new(),
                staged: None,
            },
            Step::Staged(kind, change) => TaskResult {
                finished: Vec::new(),
                next: Vec::new(),
                staged: Some((kind, (i, change))),
            },
        };
        match task {
            Task::Resource(i) => {
                let span = tracing::info_span!("apply", resource = %catalog.resources[i].id());
                let _entered = span.enter();
                finish(i, guarded(i, &|| run_one(i, view, None)))
            }
            Task::AfterFlush(i, staged) => {
                let span = tracing::info_span!("apply", resource = %catalog.resources[i].id());
                let _entered = span.enter();
                let change = std::sync::Mutex::new(Some(*staged));
                let step = guarded(i, &|| {
                    let staged = change.lock().ok().and_then(|mut c| c.take());
                    run_one(i, view, staged)
                });
                finish(i, step)
            }
            Task::Flush(kind, members) => {
                let Some(flush) = &kind.flush else {
                    return TaskResult {
                        finished: Vec::new(),
                        next: Vec::new(),
                        staged: None,
                    };
                };
                let span = tracing::info_span!("flush", step = flush.step);
                let _entered = span.enter();
                let items: Vec<(&dyn Resource, &Change)> = members
                    .iter()
                    .map(|(i, c)| (catalog.resources[*i].as_ref(), c))
                    .collect();
                let results = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    fault_hook_step(flush.step);
                    (flush.run)(&ctx, &items)
                }))
                .unwrap_or_else(|panic| {
                    let why = format!(
                        "internal error: reconcile panicked in {} ({})",
                        flush.step,
                        panic_message(panic.as_ref())
                    );
                    items
                        .iter()
                        .map(|_| Err(resource::ResourceError::Failed(why.clone())))
                        .collect()
                });
                let mut done = Vec::new();
                let mut next = Vec::new();
                let mut results = results.into_iter();
                for (i, change) in members {
                    // A step that answered for fewer members than it was given did
                    // not fail the rest: they are applied as staged.
                    match results.next().unwrap_or_else(|| Ok(Staged::nothing())) {
                        Ok(did) => next.push(Task::AfterFlush(i, Box::new((change, did)))),
                        Err(e) => done.push((
                            i,
                            Outcome {
                                id: catalog.resources[i].id().clone(),
                                status: Status::Failed {
                                    reason: e.to_string(),
                                },
                                change: Some(Box::new(change)),
                            },
                        )),
                    }
                }
                TaskResult {
                    finished: done,
                    next,
                    staged: None,
                }
            }
        }
    };

    let workers = jobs.clamp(1, n.max(1));
    std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| loop {
                let (task, view) = {
                    let mut st = match shared.lock() {
                        Ok(g) => g,
                        Err(p) => p.into_inner(),
                    };
                    loop {
                        if st.done == n {
                            return;
                        }
                        if let Some(task) = st.ready.pop_front() {
                            // Dependencies' outcomes are final; copy what this one needs.
                            let view: std::collections::HashMap<usize, Outcome> = match &task {
                                Task::Resource(i) | Task::AfterFlush(i, _) => graph.deps[*i]
                                    .iter()
                                    .chain(notified_by[*i].iter())
                                    .filter_map(|&j| st.outcomes[j].clone().map(|o| (j, o)))
                                    .collect(),
                                Task::Flush(..) => Default::default(),
                            };
                            st.running += 1;
                            break (task, view);
                        }
                        if st.running == 0 {
                            if let Some((_, (kind, members))) = st.pending.pop_first() {
                                st.running += 1;
                                break (Task::Flush(kind, members), Default::default());
                            }
                        }
                        st = match wake.wait(st) {
                            Ok(g) => g,
                            Err(p) => p.into_inner(),
                        };
                    }
                };
                let TaskResult {
                    finished,
                    next,
                    staged,
                } = run_task(task, &view);
                for (_, outcome) in &finished {
                    tracing::debug!(status = ?outcome.status, "done");
                    // The audit log and output hook: a panic there still counts the
                    // resource as done so the run ends.
                    let _ =
                        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| on_done(outcome)));
                }
                let mut st = match shared.lock() {
                    Ok(g) => g,
                    Err(p) => p.into_inner(),
                };
                st.running -= 1;
                if let Some((kind, member)) = staged {
                    st.pending
                        .entry(kind.name)
                        .or_insert_with(|| (kind, Vec::new()))
                        .1
                        .push(member);
                }
                st.ready.extend(next);
                for (i, mut outcome) in finished {
                    if !keep_changes {
                        outcome.change = None;
                    }
                    st.outcomes[i] = Some(outcome);
                    st.done += 1;
                    for &d in &graph.dependents[i] {
                        st.waiting_on[d] -= 1;
                        if st.waiting_on[d] == 0 {
                            st.ready.push_back(Task::Resource(d));
                        }
                    }
                }
                wake.notify_all();
            });
        }
    });
    let st = match shared.into_inner() {
        Ok(s) => s,
        Err(p) => p.into_inner(),
    };
    // Moved out, not cloned.
    let mut outcomes = st.outcomes;
    graph
        .order
        .iter()
        .filter(|&&i| model.selected.get(i).copied().unwrap_or(true))
        .filter_map(|&i| outcomes[i].take())
        .collect()
}

/// The text of a panic payload, for the failure it becomes.
fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "no message".into())
}

/// Test builds only: `RECONCILE_FAULT_PANIC=<resource id>` makes applying that
/// resource panic, so tests can prove a panic fails one resource and ends the run (and,
/// with a failed dependency, that dependents are neither applied nor staged).
#[cfg(debug_assertions)]
fn fault_hook(id: &crate::id::ResourceId) {
    if std::env::var("RECONCILE_FAULT_PANIC").is_ok_and(|v| v == id.to_string()) {
        panic!("injected fault in {id}");
    }
}

#[cfg(not(debug_assertions))]
fn fault_hook(_: &crate::id::ResourceId) {}

/// Test builds only: `RECONCILE_FAULT_PANIC=step:<name>` makes that batch step panic.
#[cfg(debug_assertions)]
fn fault_hook_step(step: &str) {
    if std::env::var("RECONCILE_FAULT_PANIC").is_ok_and(|v| v.strip_prefix("step:") == Some(step)) {
        panic!("injected fault in {step}");
    }
}

#[cfg(not(debug_assertions))]
fn fault_hook_step(_: &str) {}

/// The kind of a resource when that kind has a batch step.
fn flush_kind(id: &crate::id::ResourceId) -> Option<&'static Kind> {
    resource::kind(&id.kind).filter(|k| k.flush.is_some())
}
