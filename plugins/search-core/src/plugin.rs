// The glue between the `spar:search` world's bindings and `spar_search_core`, included by
// each search plugin after its `wit_bindgen::generate!` (the bindings are per crate).

use exports::spar::search::strategy::{Outcome, Task};
use spar::search::refiner;
use spar::types::types::{Error, Node as WitNode, PluginInfo};

/// The host imports as a `spar_search_core::Host`.
struct Imports {
    /// The first model failure, reported if the search produced nothing.
    #[allow(dead_code)]
    last_error: Option<Error>,
}

impl spar_search_core::Host for Imports {
    fn refine(&mut self, node: &spar_search_core::Node) -> Option<(String, String)> {
        let wit = WitNode {
            id: node.visit_sequence,
            parent: node.parent.map(|p| p as u32),
            depth: node.depth,
            response: node.response.clone(),
            critique: node.critique.clone(),
            value: node.value,
            refine_output: node.refine_output.clone(),
            visit_sequence: node.visit_sequence,
        };
        match refiner::refine(&wit) {
            Ok(r) if !r.response.trim().is_empty() => Some((r.response, r.output)),
            Ok(_) => None,
            Err(e) => {
                self.last_error.get_or_insert(e);
                None
            }
        }
    }

    fn judge(&mut self, response: &str) -> Option<(String, f64)> {
        match refiner::judge(response) {
            Ok(j) => Some((j.critique, j.value)),
            Err(e) => {
                self.last_error.get_or_insert(e);
                None
            }
        }
    }

    fn budget_left(&mut self) -> i32 {
        refiner::budget_left()
    }
}

type Strategy = fn(&mut Imports, &mut spar_search_core::Tree, &spar_search_core::Params) -> Option<usize>;

/// Run one search and list the tree in pre-order (ids = pre-order index, as the reference).
fn run(task: Task, strategy: Strategy) -> Result<Outcome, Error> {
    let p = task.params;
    if p.branch == 0 || p.select_branch == 0 || p.refine_attempts == 0 {
        return Err(Error::InvalidInput("branch, select-branch and refine-attempts must be positive".into()));
    }
    let params = spar_search_core::Params {
        branch: p.branch,
        select_branch: p.select_branch,
        max_depth: p.max_depth,
        end_gate: p.end_gate,
        refine_attempts: p.refine_attempts,
    };
    let root = task.root;
    let mut tree = spar_search_core::Tree::new(root.response, root.critique, root.value);
    let mut imports = Imports { last_error: None };
    let solution = strategy(&mut imports, &mut tree, &params);
    let fin = tree.finish(solution);
    let order = tree.preorder();
    let mut id = vec![0u32; tree.nodes.len()];
    for (k, &i) in order.iter().enumerate() {
        id[i] = k as u32;
    }
    let nodes = order
        .iter()
        .map(|&i| {
            let n = &tree.nodes[i];
            WitNode {
                id: id[i],
                parent: n.parent.map(|p| id[p]),
                depth: n.depth,
                response: n.response.clone(),
                critique: n.critique.clone(),
                value: n.value,
                refine_output: n.refine_output.clone(),
                visit_sequence: n.visit_sequence,
            }
        })
        .collect();
    Ok(Outcome {
        nodes,
        final_node: id[fin],
        found: tree.nodes[fin].value > params.end_gate,
    })
}
