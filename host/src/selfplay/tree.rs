//! What the pipeline takes from a searched tree (§3.5–3.6).

use crate::plugin::search::{Node, Outcome};

/// Node indices in post-order (children in creation order, then the node), the order in
/// which the reference collects critique samples.
pub fn postorder(nodes: &[Node]) -> Vec<usize> {
    let mut children: Vec<Vec<usize>> = vec![Vec::new(); nodes.len()];
    for (i, n) in nodes.iter().enumerate() {
        if let Some(p) = n.parent {
            children[p as usize].push(i);
        }
    }
    for c in &mut children {
        c.sort_by_key(|&i| nodes[i].visit_sequence);
    }
    let mut out = Vec::with_capacity(nodes.len());
    // Iterative post-order: (node, next child to visit).
    let mut stack = vec![(0usize, 0usize)];
    while let Some((i, k)) = stack.pop() {
        if k < children[i].len() {
            stack.push((i, k + 1));
            stack.push((children[i][k], 0));
        } else {
            out.push(i);
        }
    }
    out
}

/// Critiques of nodes judged on the correct side without unanimity: positive for
/// `end_gate < v < 1`, negative for `0 < v < end_gate`, in the reference's traversal order.
/// The pipeline samples one of each per tree.
pub fn critique_pools(outcome: &Outcome, end_gate: f64) -> (Vec<usize>, Vec<usize>) {
    let (mut pos, mut neg) = (Vec::new(), Vec::new());
    for i in postorder(&outcome.nodes) {
        let v = outcome.nodes[i].value;
        if end_gate < v && v < 1.0 {
            pos.push(i);
        } else if 0.0 < v && v < end_gate {
            neg.push(i);
        }
    }
    (pos, neg)
}
