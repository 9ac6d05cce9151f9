//! The execution plan of an item: its actions as a DAG. List order is sequential (every
//! action of a step waits for every action of the step before), a `parallel` block's members
//! start together (up to `max_concurrency`), and `depends_on` adds edges — to an action or to
//! a whole parallel group. Post-fulfillment actions run one after another once the main
//! actions are done.

use std::collections::BTreeMap;

use crate::catalog::model::{ActionSpec, ActionStep, CatalogItem, OnFailure};

/// Which part of the fulfillment an action belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// `fulfillment.actions`.
    Main,
    /// `fulfillment.post_fulfillment`.
    Post,
}

/// One action in the plan.
#[derive(Debug, Clone)]
pub struct PlanNode {
    /// The action as written.
    pub spec: ActionSpec,
    /// Index of the step (list position) it belongs to.
    pub step: usize,
    /// Main or post-fulfillment.
    pub phase: Phase,
    /// Index into [`Plan::groups`] when inside a parallel block.
    pub group: Option<usize>,
    /// Nodes that must finish first (direct edges: previous step and `depends_on`).
    pub deps: Vec<usize>,
}

impl PlanNode {
    /// The action's failure policy (rollback by default). A post-fulfillment action's
    /// failure never fails the request: the resources exist by then, so it is reported and
    /// the request completes.
    pub fn on_failure(&self) -> OnFailure {
        if self.phase == Phase::Post {
            return OnFailure::Continue;
        }
        self.spec.on_failure.unwrap_or(OnFailure::Rollback)
    }
}

/// A parallel group.
#[derive(Debug, Clone)]
pub struct PlanGroup {
    /// Its id.
    pub id: String,
    /// At most this many members run at once (unbounded when `None`).
    pub max_concurrency: Option<u32>,
}

/// The DAG of an item's actions.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    /// Actions, main first, in list order.
    pub nodes: Vec<PlanNode>,
    /// Parallel groups.
    pub groups: Vec<PlanGroup>,
    index: BTreeMap<String, usize>,
}

impl Plan {
    /// Builds the plan. The catalog loader has already refused unknown ids and cycles.
    pub fn of(item: &CatalogItem) -> Plan {
        let mut plan = Plan::default();
        let mut steps: Vec<Vec<usize>> = Vec::new();
        let mut group_members: BTreeMap<String, Vec<usize>> = BTreeMap::new();
        for (si, step) in item.fulfillment.actions.iter().flatten().enumerate() {
            let mut members = Vec::new();
            match step {
                ActionStep::Action(a) => members.push(plan.push(a, si, Phase::Main, None)),
                ActionStep::Parallel(p) => {
                    let g = plan.groups.len();
                    plan.groups.push(PlanGroup {
                        id: p.parallel.id.clone(),
                        max_concurrency: p.parallel.max_concurrency,
                    });
                    for a in &p.parallel.actions {
                        members.push(plan.push(a, si, Phase::Main, Some(g)));
                    }
                    group_members.insert(p.parallel.id.clone(), members.clone());
                }
            }
            steps.push(members);
        }
        let main_steps = steps.len();
        for (pi, a) in item
            .fulfillment
            .post_fulfillment
            .iter()
            .flatten()
            .enumerate()
        {
            let n = plan.push(a, main_steps + pi, Phase::Post, None);
            steps.push(vec![n]);
        }
        for w in 1..steps.len() {
            for &n in &steps[w] {
                plan.nodes[n].deps.extend(steps[w - 1].iter().copied());
            }
        }
        for n in 0..plan.nodes.len() {
            let deps: Vec<String> = plan.nodes[n].spec.depends_on.clone().unwrap_or_default();
            for d in deps {
                if let Some(&j) = plan.index.get(&d) {
                    plan.nodes[n].deps.push(j);
                } else if let Some(members) = group_members.get(&d) {
                    plan.nodes[n]
                        .deps
                        .extend(members.iter().copied().filter(|&m| m != n));
                }
            }
            plan.nodes[n].deps.sort_unstable();
            plan.nodes[n].deps.dedup();
        }
        plan
    }

    fn push(&mut self, a: &ActionSpec, step: usize, phase: Phase, group: Option<usize>) -> usize {
        let n = self.nodes.len();
        self.index.insert(a.id.clone(), n);
        self.nodes.push(PlanNode {
            spec: a.clone(),
            step,
            phase,
            group,
            deps: Vec::new(),
        });
        n
    }

    /// The node of an action id.
    pub fn node(&self, action_id: &str) -> Option<usize> {
        self.index.get(action_id).copied()
    }

    /// Every node reachable backwards from `n` (its transitive dependencies).
    pub fn ancestors(&self, n: usize) -> Vec<usize> {
        let mut seen = vec![false; self.nodes.len()];
        let mut stack = self.nodes[n].deps.clone();
        let mut out = Vec::new();
        while let Some(i) = stack.pop() {
            if !seen[i] {
                seen[i] = true;
                out.push(i);
                stack.extend(self.nodes[i].deps.iter().copied());
            }
        }
        out.sort_unstable();
        out
    }
}
