//! Dependency graphs: cycles and reachability (edges point at dependencies).

use std::collections::BTreeSet;

/// A cycle in the graph (edges point at dependencies), as a closed list of nodes.
pub(super) fn find_cycle(edges: &[BTreeSet<usize>]) -> Option<Vec<usize>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        Active,
        Done,
    }
    let n = edges.len();
    let mut mark = vec![Mark::New; n];
    for start in 0..n {
        if mark[start] != Mark::New {
            continue;
        }
        // Iterative DFS with an explicit path.
        let mut stack: Vec<(usize, Vec<usize>)> =
            vec![(start, edges[start].iter().copied().collect())];
        mark[start] = Mark::Active;
        while let Some((node, pending)) = stack.last_mut() {
            if let Some(next) = pending.pop() {
                match mark[next] {
                    Mark::Active => {
                        let pos = stack.iter().position(|(n, _)| *n == next).unwrap_or(0);
                        let mut cycle: Vec<usize> = stack[pos..].iter().map(|(n, _)| *n).collect();
                        cycle.reverse();
                        cycle.insert(0, next);
                        // Read as "a waits for b waits for ... a".
                        cycle.reverse();
                        return Some(cycle);
                    }
                    Mark::New => {
                        mark[next] = Mark::Active;
                        let children = edges[next].iter().copied().collect();
                        stack.push((next, children));
                    }
                    Mark::Done => {}
                }
            } else {
                mark[*node] = Mark::Done;
                stack.pop();
            }
        }
    }
    None
}

/// Every node `from` depends on, directly or through others; never `from` itself.
pub(super) fn reach(edges: &[BTreeSet<usize>], from: usize) -> BTreeSet<usize> {
    let mut seen = BTreeSet::new();
    let mut stack: Vec<usize> = edges[from].iter().copied().collect();
    while let Some(i) = stack.pop() {
        if i != from && seen.insert(i) {
            stack.extend(edges[i].iter().copied());
        }
    }
    seen
}
