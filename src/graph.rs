//! The dependency graph: explicit `requires`/`before`/`notify` edges plus automatic ones,
//! a topological order, and cycles reported as the ids that form them.

use std::collections::BTreeSet;
use std::fmt::Write;

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use petgraph::algo::tarjan_scc;
use petgraph::graph::{DiGraph, NodeIndex};

use crate::diag::{Diagnostic, Diagnostics, Span};
use crate::id::ResourceId;
use crate::resource::Catalog;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EdgeKind {
    Requires,
    Before,
    Notify,
    Auto,
}

impl EdgeKind {
    fn label(self) -> &'static str {
        match self {
            EdgeKind::Requires => "requires",
            EdgeKind::Before => "before",
            EdgeKind::Notify => "notify",
            EdgeKind::Auto => "auto",
        }
    }
}

/// Node weights are indexes into the catalog; an edge a → b means b depends on a.
pub struct Graph {
    pub dag: DiGraph<usize, EdgeKind>,
    /// Catalog indexes in an order where every dependency comes first.
    pub order: Vec<usize>,
    /// For each resource, the resources it depends on.
    pub deps: Vec<Vec<usize>>,
    /// For each resource, the resources that depend on it.
    pub dependents: Vec<Vec<usize>>,
    /// For each resource, the resources it notifies.
    pub notifies: Vec<Vec<usize>>,
}

/// How many undeclared references get a "did you mean" (each compares every id).
const MAX_SUGGESTIONS: usize = 50;

/// The declared resource an undeclared reference most likely meant: the same name
/// under another kind, else the closest id by a few edits.
fn closest_id(id: &ResourceId, catalog: &Catalog) -> Option<usize> {
    if let Some(i) = catalog
        .resources
        .iter()
        .position(|r| r.id().name == id.name)
    {
        return Some(i);
    }
    let text = id.to_string();
    let limit = (text.chars().count() / 8).clamp(1, 3);
    let ids: Vec<String> = catalog
        .resources
        .iter()
        .map(|r| r.id().to_string())
        .collect();
    let best = crate::diag::closest_within(&text, ids.iter().map(String::as_str), limit)?;
    ids.iter().position(|s| s == best)
}

/// "; did you mean ...?" for an undeclared reference, or why none fits.
fn undeclared_hint(id: &ResourceId, close: Option<usize>, catalog: &Catalog) -> String {
    if crate::resource::kind(&id.kind).is_none() {
        let kinds: Vec<&str> = crate::resource::KINDS.iter().map(|k| k.name).collect();
        let close = crate::diag::closest(&id.kind, kinds.iter().copied())
            .map(|k| format!("did you mean `{k}[{}]`? ", id.name))
            .unwrap_or_default();
        return format!(
            "; `{}` is not a kind: {close}kinds: {}",
            id.kind,
            kinds.join(", ")
        );
    }
    match close {
        Some(i) => format!("; did you mean {}?", catalog.resources[i].id()),
        None => String::new(),
    }
}

/// Builds the graph; on success also returns the warnings found on the way.
pub fn build(catalog: &Catalog) -> Result<(Graph, Diagnostics), Diagnostics> {
    let mut diags = Diagnostics::default();
    let n = catalog.len();
    let mut dag: DiGraph<usize, EdgeKind> = DiGraph::with_capacity(n, n * 2);
    let nodes: Vec<NodeIndex> = (0..n).map(|i| dag.add_node(i)).collect();
    let mut notifies = vec![Vec::new(); n];
    let mut edges: BTreeSet<(usize, usize)> = BTreeSet::new();
    let mut add = |dag: &mut DiGraph<usize, EdgeKind>, from: usize, to: usize, kind: EdgeKind| {
        if from != to && edges.insert((from, to)) {
            dag.add_edge(nodes[from], nodes[to], kind);
        }
    };
    let mut suggested = 0;
    let mut lookup = |id: &ResourceId, span: &Span, field: &str, diags: &mut Diagnostics| {
        let found = catalog.index_of(id);
        if found.is_none() {
            // Suggestions compare against every declared id: the first few typos get
            // one, a manifest with thousands of dangling references stays fast.
            suggested += 1;
            let close = (suggested <= MAX_SUGGESTIONS)
                .then(|| closest_id(id, catalog))
                .flatten();
            let hint = undeclared_hint(id, close, catalog);
            let mut d = Diagnostic::error(
                Some(span.clone()),
                format!("{id} is not declared in the manifests{hint}"),
            )
            .field(field);
            if let Some(close) = close {
                if let Some(at) = catalog.resources[close].meta().span.clone() {
                    d = d.related(
                        at,
                        format!("{} is declared here", catalog.resources[close].id()),
                    );
                }
            }
            diags.push(d);
        }
        found
    };
    for (i, r) in catalog.resources.iter().enumerate() {
        let meta = r.meta();
        for (id, span) in &meta.requires {
            if let Some(j) = lookup(id, span, "requires", &mut diags) {
                add(&mut dag, j, i, EdgeKind::Requires);
            }
        }
        for (id, span) in &meta.before {
            if let Some(j) = lookup(id, span, "before", &mut diags) {
                add(&mut dag, i, j, EdgeKind::Before);
            }
        }
        for (id, span) in &meta.notify {
            if let Some(j) = lookup(id, span, "notify", &mut diags) {
                if !catalog.resources[j].refreshable() {
                    diags.push(
                        Diagnostic::error(Some(span.clone()), format!("{id} cannot be notified: only services and similar resources react to notifications"))
                            .field("notify"),
                    );
                }
                add(&mut dag, i, j, EdgeKind::Notify);
                notifies[i].push(j);
            }
        }
        for dep in r.auto_requires() {
            if let Some(j) = dep.candidates.iter().find_map(|c| catalog.index_of(c)) {
                add(&mut dag, j, i, EdgeKind::Auto);
            }
        }
        for d in r.validate(catalog) {
            diags.push(d);
        }
    }
    let order = match declaration_order_toposort(&dag, n) {
        Some(order) => order,
        None => {
            for cycle in cycles(&dag) {
                let ids: Vec<String> = cycle
                    .iter()
                    .map(|&i| catalog.resources[i].id().to_string())
                    .collect();
                let first = catalog.resources[cycle[0]].meta().span.clone();
                let mut d = Diagnostic::error(
                    first,
                    format!("dependency cycle: {} → {}", ids.join(" → "), ids[0]),
                );
                for &i in &cycle {
                    if let Some(span) = catalog.resources[i].meta().span.clone() {
                        d = d.related(
                            span,
                            format!("{} is declared here", catalog.resources[i].id()),
                        );
                    }
                }
                diags.push(d);
            }
            Vec::new()
        }
    };
    if diags.has_errors() {
        return Err(diags);
    }
    let mut deps = vec![Vec::new(); n];
    let mut dependents = vec![Vec::new(); n];
    for e in dag.raw_edges() {
        let (a, b) = (dag[e.source()], dag[e.target()]);
        deps[b].push(a);
        dependents[a].push(b);
    }
    let graph = Graph {
        dag,
        order,
        deps,
        dependents,
        notifies,
    };
    Ok((graph, diags))
}

/// Kahn's algorithm, always taking the earliest-declared ready resource, so plans
/// read in manifest order wherever dependencies allow. `None` when there is a cycle.
fn declaration_order_toposort(dag: &DiGraph<usize, EdgeKind>, n: usize) -> Option<Vec<usize>> {
    let mut indegree = vec![0usize; n];
    for e in dag.raw_edges() {
        indegree[dag[e.target()]] += 1;
    }
    let mut ready: BinaryHeap<Reverse<usize>> =
        (0..n).filter(|&i| indegree[i] == 0).map(Reverse).collect();
    let mut order = Vec::with_capacity(n);
    while let Some(Reverse(i)) = ready.pop() {
        order.push(i);
        for next in dag.neighbors(NodeIndex::new(i)) {
            let j = dag[next];
            indegree[j] -= 1;
            if indegree[j] == 0 {
                ready.push(Reverse(j));
            }
        }
    }
    (order.len() == n).then_some(order)
}

/// Each strongly connected component with a cycle, as a path through it.
fn cycles(dag: &DiGraph<usize, EdgeKind>) -> Vec<Vec<usize>> {
    let mut out = Vec::new();
    for scc in tarjan_scc(dag) {
        if scc.len() < 2 {
            continue;
        }
        let members: BTreeSet<NodeIndex> = scc.iter().copied().collect();
        // Walk successors inside the component until we come back to a visited node.
        let start = *members.iter().next().unwrap_or(&scc[0]);
        let mut path = vec![start];
        let mut cur = start;
        loop {
            let next = dag.neighbors(cur).filter(|n| members.contains(n)).min();
            match next {
                Some(nx) if nx == start => break,
                Some(nx) if path.contains(&nx) => {
                    let at = path.iter().position(|&p| p == nx).unwrap_or(0);
                    path.drain(..at);
                    break;
                }
                Some(nx) => {
                    path.push(nx);
                    cur = nx;
                }
                None => break,
            }
        }
        out.push(path.into_iter().map(|ix| dag[ix]).collect());
    }
    out
}

impl Graph {
    pub fn to_text(&self, catalog: &Catalog) -> String {
        let mut out = String::new();
        for &i in &self.order {
            let _ = writeln!(out, "{}", catalog.resources[i].id());
            let mut incoming: Vec<(String, &str)> = self
                .dag
                .edges_directed(NodeIndex::new(i), petgraph::Direction::Incoming)
                .map(|e| {
                    (
                        catalog.resources[self.dag[petgraph::visit::EdgeRef::source(&e)]]
                            .id()
                            .to_string(),
                        e.weight().label(),
                    )
                })
                .collect();
            incoming.sort();
            for (id, label) in incoming {
                let _ = writeln!(out, "    after {id} ({label})");
            }
        }
        out
    }

    pub fn to_dot(&self, catalog: &Catalog) -> String {
        let mut out = String::from(
            "digraph reconcile {\n    rankdir=LR;\n    node [shape=box, fontname=\"monospace\"];\n",
        );
        for &i in &self.order {
            let _ = writeln!(out, "    {:?};", catalog.resources[i].id().to_string());
        }
        for e in self.dag.raw_edges() {
            let a = catalog.resources[self.dag[e.source()]].id().to_string();
            let b = catalog.resources[self.dag[e.target()]].id().to_string();
            let style = match e.weight {
                EdgeKind::Auto => " [style=dashed, label=\"auto\"]",
                EdgeKind::Notify => " [color=orange, label=\"notify\"]",
                EdgeKind::Before => " [label=\"before\"]",
                EdgeKind::Requires => "",
            };
            let _ = writeln!(out, "    {a:?} -> {b:?}{style};");
        }
        out.push_str("}\n");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::Change;
    use crate::resource::{ApplyCtx, Meta, PlanCtx, Resource, ResourceError};

    #[derive(Debug)]
    struct Linted {
        id: ResourceId,
        meta: Meta,
    }

    impl Resource for Linted {
        fn id(&self) -> &ResourceId {
            &self.id
        }
        fn meta(&self) -> &Meta {
            &self.meta
        }
        fn validate(&self, _: &Catalog) -> Vec<Diagnostic> {
            vec![Diagnostic::warning(None, "looks odd")]
        }
        fn plan(&self, _: &PlanCtx) -> Result<Change, ResourceError> {
            Ok(Change::new(self.id.clone(), false))
        }
        fn apply(&self, _: &ApplyCtx, _: &Change) -> Result<(), ResourceError> {
            Ok(())
        }
        fn as_any(&self) -> &dyn std::any::Any {
            self
        }
    }

    #[test]
    fn validation_warnings_are_kept() {
        let catalog = Catalog::new(vec![Box::new(Linted {
            id: ResourceId::new("test", "x"),
            meta: Meta::default(),
        })]);
        let warnings = build(&catalog).map(|(_, w)| w.0.len()).unwrap_or(0);
        assert_eq!(warnings, 1);
    }
}
