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
use crate::resource::{Catalog, Provide};

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
        for need in r.needs() {
            if let Some(j) = catalog.provider_for(&need) {
                add(&mut dag, j, i, EdgeKind::Auto);
            }
        }
        for d in r.validate(catalog) {
            diags.push(d);
        }
    }
    if catalog.has_packaged_paths() {
        packaged_path_edges(catalog, &mut dag, &nodes, &mut add);
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

/// Every resource that manages a path a declared package puts on disk comes after
/// that package: installing the package would otherwise overwrite (or, for a
/// conffile, leave dpkg asking about) what the resource wrote first. Packages list
/// only regular files and symlinks as [`Provide::PackagedPath`]: directories like
/// `/etc` or `/usr/share/doc` are shipped by hundreds of packages, and a declared
/// directory there is no reason to order it after whichever package came first.
/// Added after every explicit and other automatic edge, and skipped (with a debug
/// log) where it would close a cycle: an explicit `requires`/`before` that says the
/// opposite order is the manifest's decision.
fn packaged_path_edges(
    catalog: &Catalog,
    dag: &mut DiGraph<usize, EdgeKind>,
    nodes: &[NodeIndex],
    add: &mut impl FnMut(&mut DiGraph<usize, EdgeKind>, usize, usize, EdgeKind),
) {
    let mut space = petgraph::algo::DfsSpace::new(&*dag);
    for (i, r) in catalog.resources.iter().enumerate() {
        let Some(path) = r.managed_path() else {
            continue;
        };
        let Some(j) = catalog.provider_of(&Provide::PackagedPath(path.to_string())) else {
            continue;
        };
        if i == j {
            continue;
        }
        if petgraph::algo::has_path_connecting(&*dag, nodes[i], nodes[j], Some(&mut space)) {
            tracing::debug!(
                package = %catalog.resources[j].id(),
                resource = %r.id(),
                "no automatic edge from the package that ships this path: the declared order says otherwise"
            );
            continue;
        }
        add(dag, j, i, EdgeKind::Auto);
    }
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
    use crate::resource::{contract, ApplyCtx, Meta, Need, PlanCtx, Resource, ResourceError};

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
        fn observe_state(&self, _: &PlanCtx) -> Result<contract::State, ResourceError> {
            Ok(Box::new(()))
        }
        fn diff_state(
            &self,
            _: contract::State,
            _: &contract::DepView,
        ) -> Result<Change, ResourceError> {
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

    /// A resource of no particular kind: what it provides and needs is all the
    /// engine sees, which is the point (a `package` kind would look the same).
    #[derive(Debug)]
    struct Fake {
        id: ResourceId,
        meta: Meta,
        provides: Vec<Provide>,
        needs: Vec<Need>,
    }

    impl Resource for Fake {
        fn id(&self) -> &ResourceId {
            &self.id
        }
        fn meta(&self) -> &Meta {
            &self.meta
        }
        fn provides(&self) -> Vec<Provide> {
            self.provides.clone()
        }
        fn needs(&self) -> Vec<Need> {
            self.needs.clone()
        }
        fn observe_state(&self, _: &PlanCtx) -> Result<contract::State, ResourceError> {
            Ok(Box::new(()))
        }
        fn diff_state(
            &self,
            _: contract::State,
            _: &contract::DepView,
        ) -> Result<Change, ResourceError> {
            Ok(Change::new(self.id.clone(), false))
        }
        fn apply(&self, _: &ApplyCtx, _: &Change) -> Result<(), ResourceError> {
            Ok(())
        }
        fn as_any(&self) -> &dyn std::any::Any {
            self
        }
    }

    fn fake(id: &str, provides: &[Provide], needs: &[Need]) -> Box<dyn Resource> {
        Box::new(Fake {
            id: ResourceId::parse(id).unwrap_or_else(|| panic!("bad id {id}")),
            meta: Meta::default(),
            provides: provides.to_vec(),
            needs: needs.to_vec(),
        })
    }

    fn dir(path: &str) -> Box<dyn Resource> {
        fake(
            &format!("directory[{path}]"),
            &[Provide::Path(path.into()), Provide::Directory(path.into())],
            &[Need::DirectoryAbove(path.into())],
        )
    }

    /// The automatic edges as "from -> to", sorted.
    fn auto_edges(resources: Vec<Box<dyn Resource>>) -> Vec<String> {
        let catalog = Catalog::new(resources);
        let graph = match build(&catalog) {
            Ok((g, _)) => g,
            Err(d) => panic!("{d:?}"),
        };
        let mut out: Vec<String> = graph
            .dag
            .raw_edges()
            .iter()
            .filter(|e| e.weight == EdgeKind::Auto)
            .map(|e| {
                format!(
                    "{} -> {}",
                    catalog.resources[graph.dag[e.source()]].id(),
                    catalog.resources[graph.dag[e.target()]].id()
                )
            })
            .collect();
        out.sort();
        out
    }

    #[test]
    fn needs_are_matched_to_what_declared_resources_provide() {
        let file = |needs: &[Need]| {
            fake(
                "file[/srv/app/conf/app.ini]",
                &[Provide::Path("/srv/app/conf/app.ini".into())],
                needs,
            )
        };
        let near = &[Need::DirectoryAbove("/srv/app/conf/app.ini".into())];
        type Case = (&'static str, Vec<Box<dyn Resource>>, Vec<&'static str>);
        let cases: Vec<Case> = vec![
            (
                "the nearest declared ancestor directory, not every one",
                vec![dir("/srv"), dir("/srv/app"), file(near)],
                vec![
                    "directory[/srv/app] -> file[/srv/app/conf/app.ini]",
                    "directory[/srv] -> directory[/srv/app]",
                ],
            ),
            (
                "an ancestor declared later in the manifests still counts",
                vec![file(near), dir("/srv/app/conf")],
                vec!["directory[/srv/app/conf] -> file[/srv/app/conf/app.ini]"],
            ),
            (
                "a file at an ancestor is no directory to be created in",
                vec![
                    fake("file[/srv]", &[Provide::Path("/srv".into())], &[]),
                    file(near),
                ],
                vec![],
            ),
            (
                "owner and group",
                vec![
                    fake("user[app]", &[Provide::Account("app".into())], &[]),
                    fake("group[app]", &[Provide::Group("app".into())], &[]),
                    file(&[Need::account("app"), Need::group("app")]),
                ],
                vec![
                    "group[app] -> file[/srv/app/conf/app.ini]",
                    "user[app] -> file[/srv/app/conf/app.ini]",
                ],
            ),
            (
                "an account that is only on the target is no edge",
                vec![
                    fake("group[app]", &[Provide::Group("app".into())], &[]),
                    file(&[Need::account("app")]),
                ],
                vec![],
            ),
            (
                "an account is not a group of the same name",
                vec![
                    fake("user[app]", &[Provide::Account("app".into())], &[]),
                    file(&[Need::group("app")]),
                ],
                vec![],
            ),
            (
                "any kind that provides the need will do",
                vec![
                    fake(
                        "package[app]",
                        &[
                            Provide::Path("/usr/bin/app".into()),
                            Provide::Account("app".into()),
                            Provide::Unit("app.service".into()),
                        ],
                        &[],
                    ),
                    file(&[Need::account("app"), Need::path("/usr/bin/app")]),
                    fake("unit[app.timer]", &[], &[Need::unit("app.service")]),
                ],
                vec![
                    "package[app] -> file[/srv/app/conf/app.ini]",
                    "package[app] -> unit[app.timer]",
                ],
            ),
            (
                "an exact directory need does not look above",
                vec![dir("/srv"), file(&[Need::directory("/srv/app")])],
                vec![],
            ),
            (
                "a resource named on purpose",
                vec![
                    fake("unit[a.service]", &[], &[]),
                    file(&[Need::Resource(ResourceId::new("unit", "a.service"))]),
                ],
                vec!["unit[a.service] -> file[/srv/app/conf/app.ini]"],
            ),
        ];
        for (what, resources, want) in cases {
            assert_eq!(auto_edges(resources), want, "{what}");
        }
    }

    /// A resource managing a path, like a file, directory or unit.
    #[derive(Debug)]
    struct AtPath {
        fake: Fake,
        path: String,
    }

    impl Resource for AtPath {
        fn id(&self) -> &ResourceId {
            &self.fake.id
        }
        fn meta(&self) -> &Meta {
            &self.fake.meta
        }
        fn managed_path(&self) -> Option<&str> {
            Some(&self.path)
        }
        fn observe_state(&self, c: &PlanCtx) -> Result<contract::State, ResourceError> {
            self.fake.observe_state(c)
        }
        fn diff_state(
            &self,
            s: contract::State,
            d: &contract::DepView,
        ) -> Result<Change, ResourceError> {
            self.fake.diff_state(s, d)
        }
        fn apply(&self, c: &ApplyCtx, ch: &Change) -> Result<(), ResourceError> {
            self.fake.apply(c, ch)
        }
        fn as_any(&self) -> &dyn std::any::Any {
            self
        }
    }

    fn at(id: &str, path: &str, requires: &[&str], before: &[&str]) -> Box<dyn Resource> {
        let ids = |l: &[&str]| -> Vec<(ResourceId, Span)> {
            l.iter()
                .map(|i| {
                    let id = ResourceId::parse(i).unwrap_or_else(|| panic!("bad id {i}"));
                    (id, Span::file_only("site.yaml".into()))
                })
                .collect()
        };
        Box::new(AtPath {
            fake: Fake {
                id: ResourceId::parse(id).unwrap_or_else(|| panic!("bad id {id}")),
                meta: Meta {
                    requires: ids(requires),
                    before: ids(before),
                    ..Meta::default()
                },
                provides: Vec::new(),
                needs: Vec::new(),
            },
            path: path.into(),
        })
    }

    /// The automatic edges once packages `(catalog index, paths)` are known to ship
    /// these paths, as the engine adds them at load.
    fn packaged_edges(
        resources: Vec<Box<dyn Resource>>,
        shipped: &[(usize, &[&str])],
    ) -> Vec<String> {
        let mut catalog = Catalog::new(resources);
        for (i, paths) in shipped {
            catalog.add_target_provides(
                *i,
                paths
                    .iter()
                    .map(|p| Provide::PackagedPath(p.to_string()))
                    .collect(),
            );
        }
        let graph = match build(&catalog) {
            Ok((g, _)) => g,
            Err(d) => panic!("{d:?}"),
        };
        let mut out: Vec<String> = graph
            .dag
            .raw_edges()
            .iter()
            .filter(|e| e.weight == EdgeKind::Auto)
            .map(|e| {
                format!(
                    "{} -> {}",
                    catalog.resources[graph.dag[e.source()]].id(),
                    catalog.resources[graph.dag[e.target()]].id()
                )
            })
            .collect();
        out.sort();
        out
    }

    #[test]
    fn a_resource_managing_a_path_a_declared_package_ships_comes_after_that_package() {
        let pkg = || fake("package[demo-a]", &[], &[]);
        type Case = (
            &'static str,
            Vec<Box<dyn Resource>>,
            Vec<(usize, &'static [&'static str])>,
            Vec<&'static str>,
        );
        let cases: Vec<Case> = vec![
            (
                "a file the package ships, declared before it",
                vec![
                    at("file[/etc/demo-a.conf]", "/etc/demo-a.conf", &[], &[]),
                    pkg(),
                ],
                vec![(1, &["/etc/demo-a.conf", "/usr/bin/demo-a"])],
                vec!["package[demo-a] -> file[/etc/demo-a.conf]"],
            ),
            (
                "any kind with a managed path: a unit file the package ships",
                vec![
                    pkg(),
                    at(
                        "unit[demo-a.service]",
                        "/lib/systemd/system/demo-a.service",
                        &[],
                        &[],
                    ),
                ],
                vec![(0, &["/lib/systemd/system/demo-a.service"])],
                vec!["package[demo-a] -> unit[demo-a.service]"],
            ),
            (
                "a path the package does not ship is no edge",
                vec![pkg(), at("file[/etc/other]", "/etc/other", &[], &[])],
                vec![(0, &["/etc/demo-a.conf"])],
                vec![],
            ),
            (
                "no package known to ship anything: no edge",
                vec![
                    pkg(),
                    at("file[/etc/demo-a.conf]", "/etc/demo-a.conf", &[], &[]),
                ],
                vec![],
                vec![],
            ),
            (
                "an explicit order the other way wins: before",
                vec![
                    pkg(),
                    at(
                        "file[/etc/demo-a.conf]",
                        "/etc/demo-a.conf",
                        &[],
                        &["package[demo-a]"],
                    ),
                ],
                vec![(0, &["/etc/demo-a.conf"])],
                vec![],
            ),
            (
                "an explicit order the other way wins: requires",
                vec![
                    Box::new(AtPath {
                        fake: Fake {
                            id: ResourceId::new("package", "demo-a"),
                            meta: Meta {
                                requires: vec![(
                                    ResourceId::new("file", "/etc/demo-a.conf"),
                                    Span::file_only("site.yaml".into()),
                                )],
                                ..Meta::default()
                            },
                            provides: Vec::new(),
                            needs: Vec::new(),
                        },
                        path: "/nowhere".into(),
                    }),
                    at("file[/etc/demo-a.conf]", "/etc/demo-a.conf", &[], &[]),
                ],
                vec![(0, &["/etc/demo-a.conf"])],
                vec![],
            ),
            (
                "an explicit order the other way wins, through another resource",
                vec![
                    pkg(),
                    at(
                        "file[/etc/demo-a.conf]",
                        "/etc/demo-a.conf",
                        &[],
                        &["file[/etc/mid]"],
                    ),
                    at("file[/etc/mid]", "/etc/mid", &[], &["package[demo-a]"]),
                ],
                vec![(0, &["/etc/demo-a.conf"])],
                vec![],
            ),
            (
                "the first package shipping a path gives the edge",
                vec![
                    pkg(),
                    fake("package[demo-b]", &[], &[]),
                    at("file[/etc/shared]", "/etc/shared", &[], &[]),
                ],
                vec![(0, &["/etc/shared"]), (1, &["/etc/shared"])],
                vec!["package[demo-a] -> file[/etc/shared]"],
            ),
        ];
        for (what, resources, shipped, want) in cases {
            assert_eq!(packaged_edges(resources, &shipped), want, "{what}");
        }
    }

    #[test]
    fn a_path_provided_twice_is_still_a_path_conflict() {
        use crate::resource::PathConflict;
        let catalog = Catalog::new(vec![
            fake("file[/etc/x]", &[Provide::Path("/etc/x".into())], &[]),
            fake("symlink[/etc/x]", &[Provide::Path("/etc/x".into())], &[]),
            fake("file[/etc/x/y]", &[Provide::Path("/etc/x/y".into())], &[]),
            dir("/etc/d"),
            fake("file[/etc/d/z]", &[Provide::Path("/etc/d/z".into())], &[]),
        ]);
        assert_eq!(
            catalog.path_conflicts(),
            vec![
                (1, 0, PathConflict::SamePath),
                (2, 0, PathConflict::BelowNonDirectory)
            ]
        );
        assert_eq!(
            catalog.provider_of(&Provide::Path("/etc/x".into())),
            Some(0)
        );
    }
}
