//! The executor: runs planned changes in graph order, independent resources in
//! parallel (bounded), a failure failing only itself and its dependents, and each
//! notified resource refreshed at most once.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Condvar, Mutex};

use serde::Serialize;

use crate::engine::Model;
use crate::host::Host;
use crate::plan::{Action, Change};
use crate::resource::{self, ApplyCtx, PlanCtx, Purpose, Resource};

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

struct Shared {
    ready: VecDeque<usize>,
    waiting_on: Vec<usize>,
    outcomes: Vec<Option<Outcome>>,
    done: usize,
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
) -> Vec<Outcome> {
    let catalog = &model.loaded.catalog;
    let graph = &model.graph;
    let n = catalog.len();
    let ctx = ApplyCtx { host, catalog };
    let mut notified_by: Vec<Vec<usize>> = vec![Vec::new(); n];
    for (src, targets) in graph.notifies.iter().enumerate() {
        for &t in targets {
            notified_by[t].push(src);
        }
    }

    // Batched work per kind (systemd writes all unit files, then reloads once).
    let mut failed_early: BTreeMap<usize, String> = BTreeMap::new();
    for kind in resource::KINDS {
        let Some(batch) = kind.before_apply else {
            continue;
        };
        let members: Vec<(usize, &Change)> = planned
            .iter()
            .enumerate()
            .filter_map(|(i, c)| {
                c.as_ref()
                    .filter(|c| c.is_change() && catalog.resources[i].id().kind == kind.name)
                    .map(|c| (i, c))
            })
            .collect();
        if members.is_empty() {
            continue;
        }
        let items: Vec<(&dyn Resource, &Change)> = members
            .iter()
            .map(|(i, c)| (catalog.resources[*i].as_ref(), *c))
            .collect();
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| batch(&ctx, &items)))
            .unwrap_or_else(|panic| {
                Err(resource::ResourceError::Failed(format!(
                    "internal error: reconcile panicked in the {} batch step ({})",
                    kind.name,
                    panic_message(panic.as_ref())
                )))
            });
        if let Err(e) = result {
            for (i, _) in &members {
                failed_early.insert(*i, e.to_string());
            }
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
            .collect(),
        waiting_on: graph.deps.iter().map(Vec::len).collect(),
        outcomes: (0..n).map(|_| None).collect(),
        done: 0,
    });
    let wake = Condvar::new();

    let run_one = |i: usize, outcomes: &std::collections::HashMap<usize, Outcome>| -> Outcome {
        let r = catalog.resources[i].as_ref();
        let id = r.id().clone();
        let planned_i = take_planned(i);
        fault_hook(&id);
        if !model.selected.get(i).copied().unwrap_or(true) {
            return Outcome {
                id,
                status: Status::Unchanged,
                change: None,
            };
        }
        if let Some(reason) = failed_early.get(&i) {
            return Outcome {
                id,
                status: Status::Failed {
                    reason: reason.clone(),
                },
                change: planned_i.map(Box::new),
            };
        }
        let status_of = |j: usize| outcomes.get(&j).map(|o| &o.status);
        if let Some(&bad) = graph.deps[i].iter().find(|&&j| {
            matches!(
                status_of(j),
                Some(Status::Failed { .. } | Status::Skipped { .. })
            )
        }) {
            return Outcome {
                id,
                status: Status::Skipped {
                    reason: format!("{} did not converge", catalog.resources[bad].id()),
                },
                change: planned_i.map(Box::new),
            };
        }
        let dep_changed = graph.deps[i]
            .iter()
            .any(|&j| outcomes.get(&j).is_some_and(Outcome::changed));
        let planned_change = planned_i.as_ref().is_some_and(Change::is_change);
        let mut status = Status::Unchanged;
        let mut applied = None;
        if planned_change || dep_changed {
            // Observe again right before acting: earlier resources of this run may
            // have changed what this one sees (a new user, a copied source).
            let fresh = host
                .accounts()
                .map_err(|e| e.to_string())
                .and_then(|accounts| {
                    r.plan(&PlanCtx {
                        host,
                        accounts: &accounts,
                        catalog,
                        purpose: Purpose::Apply,
                    })
                    .map_err(|e| e.to_string())
                });
            match fresh {
                Err(reason) => {
                    return Outcome {
                        id,
                        status: Status::Failed { reason },
                        change: planned_i.map(Box::new),
                    }
                }
                Ok(change) if change.action == Action::None => {}
                Ok(change) => {
                    if let Err(e) = r.apply(&ctx, &change) {
                        return Outcome {
                            id,
                            status: Status::Failed {
                                reason: e.to_string(),
                            },
                            change: Some(Box::new(change)),
                        };
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
                return Outcome {
                    id,
                    status: Status::Failed {
                        reason: format!("refresh failed: {e}"),
                    },
                    change: applied,
                };
            }
            status = Status::Refreshed;
        }
        Outcome {
            id,
            status,
            change: applied,
        }
    };

    let workers = jobs.clamp(1, n.max(1));
    std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| loop {
                let (i, snapshot) = {
                    let mut st = match shared.lock() {
                        Ok(g) => g,
                        Err(p) => p.into_inner(),
                    };
                    loop {
                        if st.done == n {
                            return;
                        }
                        if let Some(i) = st.ready.pop_front() {
                            // Dependencies' outcomes are final; copy what this one needs.
                            let view: std::collections::HashMap<usize, Outcome> = graph.deps[i]
                                .iter()
                                .chain(notified_by[i].iter())
                                .filter_map(|&j| st.outcomes[j].clone().map(|o| (j, o)))
                                .collect();
                            break (i, view);
                        }
                        st = match wake.wait(st) {
                            Ok(g) => g,
                            Err(p) => p.into_inner(),
                        };
                    }
                };
                let outcome = {
                    let span = tracing::info_span!("apply", resource = %catalog.resources[i].id());
                    let _entered = span.enter();
                    // A panicking resource fails itself (its dependents are skipped);
                    // it must not take its worker down, or the others would wait for
                    // its slot forever while the run lock is held.
                    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        run_one(i, &snapshot)
                    }))
                    .unwrap_or_else(|panic| Outcome {
                        id: catalog.resources[i].id().clone(),
                        status: Status::Failed {
                            reason: format!(
                                "internal error: reconcile panicked while applying this resource ({}); \
                                 please report it",
                                panic_message(panic.as_ref())
                            ),
                        },
                        change: None,
                    });
                    tracing::debug!(status = ?outcome.status, "done");
                    outcome
                };
                // The audit log and output hook: a panic there still counts the
                // resource as done so the run ends.
                let _ =
                    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| on_done(&outcome)));
                let mut outcome = outcome;
                if !keep_changes {
                    outcome.change = None;
                }
                let mut st = match shared.lock() {
                    Ok(g) => g,
                    Err(p) => p.into_inner(),
                };
                st.outcomes[i] = Some(outcome);
                st.done += 1;
                for &d in &graph.dependents[i] {
                    st.waiting_on[d] -= 1;
                    if st.waiting_on[d] == 0 {
                        st.ready.push_back(d);
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
/// resource panic, so tests can prove a panic fails one resource and ends the run.
#[cfg(debug_assertions)]
fn fault_hook(id: &crate::id::ResourceId) {
    if std::env::var("RECONCILE_FAULT_PANIC").is_ok_and(|v| v == id.to_string()) {
        panic!("injected fault in {id}");
    }
}

#[cfg(not(debug_assertions))]
fn fault_hook(_: &crate::id::ResourceId) {}
