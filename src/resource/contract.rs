//! The typed kind contract: `observe → State` (the only host reads), a pure
//! `diff(spec, state, deps) → ops`, `describe(op)` for the plan, and `apply(ops)`.
//!
//! A kind implements [`Contract`] and forwards three methods of [`Resource`] to
//! [`observe`], [`diff`] and [`apply`] here with `crate::on_the_contract!()`; the
//! engine drives every kind through the object-safe calls
//! ([`Resource::observe_state`], [`Resource::diff_state`]).
//!
//! What this buys: apply matches on typed operations and never reads back the labels
//! it rendered for the plan; diffs are pure functions with table tests; a resource's
//! diff sees what its dependencies will do ([`DepView`]) instead of planning them again.

use std::any::Any;
use std::fmt::Debug;
use std::sync::Arc;

use crate::id::ResourceId;
use crate::plan::{Action, Change};

use super::{ApplyCtx, PlanCtx, Resource, ResourceError};

/// Inside `impl Resource for Kind`: forwards `observe_state`, `diff_state` and
/// `apply` to the kind's [`Contract`] (the same three methods for every kind on it).
#[macro_export]
macro_rules! on_the_contract {
    () => {
        fn observe_state(
            &self,
            ctx: &$crate::resource::PlanCtx,
        ) -> Result<$crate::resource::contract::State, $crate::resource::ResourceError> {
            $crate::resource::contract::observe(self, ctx)
        }

        fn diff_state(
            &self,
            state: $crate::resource::contract::State,
            deps: &$crate::resource::contract::DepView,
        ) -> Result<$crate::plan::Change, $crate::resource::ResourceError> {
            $crate::resource::contract::diff(self, state, deps)
        }

        fn apply(
            &self,
            ctx: &$crate::resource::ApplyCtx,
            change: &$crate::plan::Change,
        ) -> Result<(), $crate::resource::ResourceError> {
            $crate::resource::contract::apply(self, ctx, change)
        }
    };
}

/// What a kind observes, diffs and applies. `Self` is the kind's decoded spec.
pub trait Contract: Resource + Sized {
    /// What observing the host found for one resource.
    type State: Send + 'static;
    /// One thing apply does, carrying what the plan shows of it.
    type Op: Debug + Clone + PartialEq + Send + Sync + 'static;

    /// Reads the live state (read-only): the only place a kind looks at the host.
    fn observe(&self, ctx: &PlanCtx) -> Result<Self::State, ResourceError>;

    /// Pure: what to do about `state`. No host access, so it is table-tested.
    fn diff(&self, state: &Self::State, deps: &DepView) -> Result<Diff<Self::Op>, ResourceError>;

    /// The plan's account of one operation (fields, content diff, notes).
    fn describe(&self, op: &Self::Op, change: &mut Change);

    /// Carries out the operations of a diff made right before, in order.
    fn apply_ops(&self, ops: &[Self::Op], ctx: &ApplyCtx) -> Result<(), ResourceError>;
}

/// A diff: the operations, and what the plan says besides them.
#[derive(Debug, Clone, PartialEq)]
pub struct Diff<Op> {
    pub action: Action,
    pub ops: Vec<Op>,
    /// Parent directories and the like that the change brings along.
    pub implied: Vec<String>,
    pub warnings: Vec<String>,
    pub notes: Vec<String>,
    /// Fingerprints of the live and desired state, for stale saved plans.
    pub live: String,
    pub desired: String,
}

impl<Op> Diff<Op> {
    pub fn new(live: String, desired: String) -> Diff<Op> {
        Diff {
            action: Action::None,
            ops: Vec::new(),
            implied: Vec::new(),
            warnings: Vec::new(),
            notes: Vec::new(),
            live,
            desired,
        }
    }

    /// Adds an operation; the first one decides the action unless one was set.
    pub fn op(&mut self, action: Action, op: Op) {
        if self.action == Action::None {
            self.action = action;
        }
        self.ops.push(op);
    }
}

/// A diff's operations, carried by its [`Change`] from plan to apply. Not part of the
/// plan documents: the fields `describe` rendered are.
#[derive(Clone, Default)]
pub struct Ops(Carried);

#[derive(Clone, Default)]
enum Carried {
    /// Not made by a diff in this process (a change read back from a plan document).
    #[default]
    Absent,
    /// A diff with nothing to do: the usual case, so it allocates nothing.
    Empty,
    Some(Arc<dyn Any + Send + Sync>),
}

impl Ops {
    pub fn new<Op: Send + Sync + 'static>(ops: Vec<Op>) -> Ops {
        Ops(if ops.is_empty() {
            Carried::Empty
        } else {
            Carried::Some(Arc::new(ops))
        })
    }

    pub fn get<Op: 'static>(&self) -> Option<&[Op]> {
        match &self.0 {
            Carried::Absent => None,
            Carried::Empty => Some(&[]),
            Carried::Some(a) => a.downcast_ref::<Vec<Op>>().map(Vec::as_slice),
        }
    }
}

impl Debug for Ops {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self.0 {
            Carried::Absent => "Ops(-)",
            Carried::Empty | Carried::Some(_) => "Ops(..)",
        })
    }
}

/// Ops follow from the rest of a change: two changes are compared on what they show.
impl PartialEq for Ops {
    fn eq(&self, _: &Ops) -> bool {
        true
    }
}

impl Eq for Ops {}

/// What a batch step ([`super::Flush`]) did for one member, in the kind's own type:
/// handed to the member's diff right after the step (through [`DepView::staged`]), so
/// that the change it is applied with still reports the step's work and knows what
/// is left. Per run by construction: the executor holds it, not the resource.
#[derive(Clone, Default)]
pub struct Staged(Option<Arc<dyn Any + Send + Sync>>);

impl Staged {
    pub fn new<T: Send + Sync + 'static>(done: T) -> Staged {
        Staged(Some(Arc::new(done)))
    }

    /// Nothing to report beyond the member having been staged.
    pub fn nothing() -> Staged {
        Staged(None)
    }

    pub fn get<T: 'static>(&self) -> Option<&T> {
        self.0.as_ref().and_then(|a| a.downcast_ref::<T>())
    }
}

impl Debug for Staged {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "Staged(..)"
        } else {
            "Staged(-)"
        })
    }
}

/// What a resource's diff may know of the resources it depends on, decided before
/// its own (diffs run in dependency order; apply observes again right before acting),
/// and, right after its kind's batch step, what that step did for it.
pub struct DepView<'a> {
    lookup: &'a (dyn Fn(&ResourceId) -> Option<bool> + Sync),
    staged: Option<&'a Staged>,
}

impl<'a> DepView<'a> {
    pub fn new(lookup: &'a (dyn Fn(&ResourceId) -> Option<bool> + Sync)) -> DepView<'a> {
        DepView {
            lookup,
            staged: None,
        }
    }

    /// Nothing known (a diff made on its own, as in tests).
    pub fn none() -> DepView<'static> {
        DepView {
            lookup: &|_| None,
            staged: None,
        }
    }

    /// The same view, for a member whose kind's batch step ran for it.
    pub fn after_step(self, staged: &'a Staged) -> DepView<'a> {
        DepView {
            staged: Some(staged),
            ..self
        }
    }

    /// Whether `id` changes (plan) or changed (apply) in this run; `false` when it is
    /// not a dependency or is in sync.
    pub fn changes(&self, id: &ResourceId) -> bool {
        (self.lookup)(id).unwrap_or(false)
    }

    /// What this resource's batch step did for it in this run, when it ran (`None`
    /// when planning, and for a member applied without the step).
    pub fn staged(&self) -> Option<&'a Staged> {
        self.staged
    }
}

/// What observing found, type-erased between the parallel observe pass and the diff.
pub type State = Box<dyn Any + Send>;

/// [`Resource::observe_state`] of a contract kind.
pub fn observe<K: Contract>(k: &K, ctx: &PlanCtx) -> Result<State, ResourceError> {
    Ok(Box::new(k.observe(ctx)?))
}

/// [`Resource::diff_state`] of a contract kind: the diff, described for the plan.
pub fn diff<K: Contract>(k: &K, state: State, deps: &DepView) -> Result<Change, ResourceError> {
    let state = state.downcast::<K::State>().map_err(|_| {
        ResourceError::Failed(format!(
            "internal error: {} observed a foreign state",
            k.id()
        ))
    })?;
    let d = k.diff(&state, deps)?;
    let mut change = Change::new(k.id().clone(), k.meta().secret);
    change.action = d.action;
    change.implied = d.implied;
    change.warnings = d.warnings;
    change.notes = d.notes;
    change.live = d.live;
    change.desired = d.desired;
    for op in &d.ops {
        k.describe(op, &mut change);
    }
    change.ops = Ops::new(d.ops);
    Ok(change)
}

/// [`Resource::apply`] of a contract kind: the change's own operations.
pub fn apply<K: Contract>(k: &K, ctx: &ApplyCtx, change: &Change) -> Result<(), ResourceError> {
    if change.action == Action::None {
        return Ok(());
    }
    let ops = change.ops.get::<K::Op>().ok_or_else(|| {
        ResourceError::Failed(format!(
            "internal error: the change of {} carries no operations",
            k.id()
        ))
    })?;
    k.apply_ops(ops, ctx)
}
