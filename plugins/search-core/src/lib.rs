//! What SPaR's BFS and DFS share (§3.4), as plain sequential code over a [`Host`]: the node
//! arena, expanding a node, ranking children, the fallback and the pre-order listing.
//! The plugins wrap it in the `spar:search` world; the tests here replay the reference vectors
//! natively.

/// The model calls a strategy makes; the plugin forwards them to the host imports.
pub trait Host {
    /// One refinement attempt of `node`: the new response and the refiner's full output.
    fn refine(&mut self, node: &Node) -> Option<(String, String)>;
    /// One judgment by vote: critique and value. The host caches per response text and
    /// charges one budget unit per successful answer (cached ones too).
    fn judge(&mut self, response: &str) -> Option<(String, f64)>;
    fn budget_left(&mut self) -> i32;
}

/// Search settings (paper values: branch 3, select 2, depth 3, end gate 0.5, 3 attempts).
#[derive(Debug, Clone, Copy)]
pub struct Params {
    pub branch: u32,
    pub select_branch: u32,
    pub max_depth: u32,
    pub end_gate: f64,
    pub refine_attempts: u32,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub response: String,
    pub critique: String,
    pub value: f64,
    pub parent: Option<usize>,
    pub depth: u32,
    /// Creation order (root 0); equals the arena index.
    pub visit_sequence: u32,
    /// The refiner output that produced this node (empty for the root).
    pub refine_output: String,
    pub children: Vec<usize>,
}

/// The nodes in creation order; index 0 is the root.
#[derive(Debug, Clone)]
pub struct Tree {
    pub nodes: Vec<Node>,
}

impl Tree {
    pub fn new(response: String, critique: String, value: f64) -> Self {
        Self {
            nodes: vec![Node {
                response,
                critique,
                value,
                parent: None,
                depth: 0,
                visit_sequence: 0,
                refine_output: String::new(),
                children: Vec::new(),
            }],
        }
    }

    fn add(
        &mut self,
        parent: usize,
        response: String,
        critique: String,
        value: f64,
        output: String,
    ) -> usize {
        let idx = self.nodes.len();
        let depth = self.nodes[parent].depth + 1;
        self.nodes.push(Node {
            response,
            critique,
            value,
            parent: Some(parent),
            depth,
            visit_sequence: idx as u32,
            refine_output: output,
            children: Vec::new(),
        });
        self.nodes[parent].children.push(idx);
        idx
    }

    /// Up to `branch` children of `idx`, in creation order. Per child slot: up to
    /// `refine_attempts` refine calls until one succeeds (all failed: the slot is skipped),
    /// then one judgment (failed: the child is discarded, the slot used up). After each added
    /// child the search stops expanding once the budget is spent; there is no check before
    /// the first slot (the reference's order).
    pub fn expand(&mut self, host: &mut impl Host, idx: usize, p: &Params) -> Vec<usize> {
        let mut new = Vec::new();
        for _slot in 0..p.branch {
            let mut refined = None;
            for _attempt in 0..p.refine_attempts {
                refined = host.refine(&self.nodes[idx]);
                if refined.is_some() {
                    break;
                }
            }
            let Some((response, output)) = refined else {
                continue;
            };
            let Some((critique, value)) = host.judge(&response) else {
                continue;
            };
            new.push(self.add(idx, response, critique, value, output));
            if host.budget_left() <= 0 {
                break;
            }
        }
        new
    }

    /// Highest value first; a stable sort, so ties keep creation order.
    pub fn rank(&self, mut idxs: Vec<usize>) -> Vec<usize> {
        idxs.sort_by(|&a, &b| self.nodes[b].value.total_cmp(&self.nodes[a].value));
        idxs
    }

    /// Node indices in pre-order, children in creation order.
    pub fn preorder(&self) -> Vec<usize> {
        let mut out = Vec::with_capacity(self.nodes.len());
        let mut stack = vec![0];
        while let Some(i) = stack.pop() {
            out.push(i);
            stack.extend(self.nodes[i].children.iter().rev());
        }
        out
    }

    /// Without a solution: the best-valued node of the whole tree, ties to the later node
    /// in pre-order (the reference keeps the last `>=`).
    pub fn fallback(&self) -> usize {
        let mut best = 0;
        for i in self.preorder() {
            if self.nodes[i].value >= self.nodes[best].value {
                best = i;
            }
        }
        best
    }

    /// The final node: the solution if any, else the fallback.
    pub fn finish(&self, solution: Option<usize>) -> usize {
        solution.unwrap_or_else(|| self.fallback())
    }
}

/// Breadth first: every node of a level gets `branch` children; the best child of the level
/// above `end_gate` is the solution, else the best `select_branch` children of the whole
/// level, in ranked order, make the next level.
pub fn bfs(host: &mut impl Host, tree: &mut Tree, p: &Params) -> Option<usize> {
    let mut level = vec![0];
    for _ in 0..p.max_depth {
        let mut new = Vec::new();
        for &idx in &level {
            if host.budget_left() <= 0 {
                break;
            }
            new.extend(tree.expand(host, idx, p));
        }
        if new.is_empty() {
            return None;
        }
        let ranked = tree.rank(new);
        // The solution check comes first: a level that spent the budget may still solve.
        if tree.nodes[ranked[0]].value > p.end_gate {
            return Some(ranked[0]);
        }
        if host.budget_left() <= 0 {
            return None;
        }
        level = ranked.into_iter().take(p.select_branch as usize).collect();
    }
    None
}

/// Depth first along the best children. Unlike BFS a node is entered without a budget check,
/// so the reference may overspend by one judgment (budget left −1).
pub fn dfs(host: &mut impl Host, tree: &mut Tree, p: &Params) -> Option<usize> {
    fn visit(host: &mut impl Host, tree: &mut Tree, p: &Params, idx: usize) -> Option<usize> {
        if tree.nodes[idx].depth >= p.max_depth {
            return None;
        }
        let new = tree.expand(host, idx, p);
        if new.is_empty() {
            return None;
        }
        let ranked = tree.rank(new);
        if tree.nodes[ranked[0]].value > p.end_gate {
            return Some(ranked[0]);
        }
        if host.budget_left() <= 0 {
            return None;
        }
        for child in ranked.into_iter().take(p.select_branch as usize) {
            if let Some(found) = visit(host, tree, p, child) {
                return Some(found);
            }
        }
        None
    }
    visit(host, tree, p, 0)
}

#[cfg(test)]
mod tests {
    //! Replays `tests/fixtures/tree_search_vectors.json` (the reference runs) natively.
    use super::*;
    use serde_json::{Value, json};
    use std::collections::HashMap;

    /// The vectors' scripted refiner/judge, with the host's cache and budget.
    struct Scripted {
        budget: i32,
        counts: HashMap<String, usize>,
        overrides: HashMap<(String, usize), String>,
        values: HashMap<String, Option<f64>>,
        cache: HashMap<String, (String, f64)>,
        calls: Vec<Value>,
    }

    impl Scripted {
        fn new(v: &Value) -> Self {
            let mut seen: HashMap<String, usize> = HashMap::new();
            let mut overrides = HashMap::new();
            let mut values = HashMap::new();
            for c in v["calls"].as_array().unwrap() {
                let x = c["response"].as_str().unwrap().to_string();
                if c["op"] == "refine" {
                    let k = seen.entry(x.clone()).or_default();
                    let result = c["result"].as_str().unwrap();
                    if result != format!("{x}.{k}") {
                        overrides.insert((x.clone(), *k), result.to_string());
                    }
                    *k += 1;
                } else {
                    values.entry(x).or_insert(c["value"].as_f64());
                }
            }
            Self {
                budget: v["params"]["budget"].as_i64().unwrap() as i32,
                counts: HashMap::new(),
                overrides,
                values,
                cache: HashMap::new(),
                calls: Vec::new(),
            }
        }
    }

    impl Host for Scripted {
        fn refine(&mut self, node: &Node) -> Option<(String, String)> {
            let x = &node.response;
            let k = self.counts.entry(x.clone()).or_default();
            let result = self
                .overrides
                .get(&(x.clone(), *k))
                .cloned()
                .unwrap_or_else(|| format!("{x}.{k}"));
            *k += 1;
            self.calls.push(
                json!({"op": "refine", "response": x, "critique": node.critique, "result": result}),
            );
            (!result.is_empty()).then(|| (result.clone(), format!("cot:{result}")))
        }

        fn judge(&mut self, response: &str) -> Option<(String, f64)> {
            if let Some((c, v)) = self.cache.get(response).cloned() {
                self.calls
                    .push(json!({"op": "judge", "response": response, "cached": true, "value": v}));
                self.budget -= 1;
                return Some((c, v));
            }
            let value = *self.values.get(response).expect("scripted response");
            self.calls.push(
                json!({"op": "judge", "response": response, "cached": false, "value": value}),
            );
            let value = value?;
            let c = format!("crit:{response}");
            self.cache.insert(response.to_string(), (c.clone(), value));
            self.budget -= 1;
            Some((c, value))
        }

        fn budget_left(&mut self) -> i32 {
            self.budget
        }
    }

    #[test]
    fn replays_every_reference_vector() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../tests/fixtures/tree_search_vectors.json"
        );
        let all: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        let vectors = all["vectors"].as_array().unwrap();
        assert_eq!(vectors.len(), 208);
        let mut failures = Vec::new();
        for (i, v) in vectors.iter().enumerate() {
            let mut host = Scripted::new(v);
            let r = &v["root"];
            let mut tree = Tree::new(
                r["response"].as_str().unwrap().into(),
                r["critique"].as_str().unwrap().into(),
                r["value"].as_f64().unwrap(),
            );
            let p = Params {
                branch: v["params"]["branch"].as_u64().unwrap() as u32,
                select_branch: v["params"]["select_branch"].as_u64().unwrap() as u32,
                max_depth: v["params"]["max_depth"].as_u64().unwrap() as u32,
                end_gate: 0.5,
                refine_attempts: 3,
            };
            let sol = match v["algorithm"].as_str().unwrap() {
                "bfs" => bfs(&mut host, &mut tree, &p),
                _ => dfs(&mut host, &mut tree, &p),
            };
            let fin = tree.finish(sol);
            let order = tree.preorder();
            let mut id = vec![0; tree.nodes.len()];
            for (k, &i) in order.iter().enumerate() {
                id[i] = k;
            }
            let listing: Vec<Value> = order
                .iter()
                .map(|&i| {
                    let n = &tree.nodes[i];
                    json!({"id": id[i], "parent": n.parent.map(|p| id[p]), "depth": n.depth,
                        "response": n.response, "critique": n.critique, "value": n.value,
                        "visit_sequence": n.visit_sequence, "final": (i == fin) as u8})
                })
                .collect();
            let mut bad = Vec::new();
            if Value::from(host.calls.clone()) != v["calls"] {
                bad.push("calls");
            }
            // JSON writes the root's value as the integer 0; compare values as numbers.
            let mut want = v["tree"].clone();
            for n in want.as_array_mut().unwrap() {
                n["value"] = json!(n["value"].as_f64().unwrap());
            }
            if Value::from(listing) != want {
                bad.push("tree");
            }
            if tree.nodes[fin].response != v["solution"].as_str().unwrap() {
                bad.push("solution");
            }
            if (tree.nodes[fin].value > 0.5) != v["found"].as_bool().unwrap() {
                bad.push("found");
            }
            if host.budget != v["budget_left"].as_i64().unwrap() as i32 {
                bad.push("budget_left");
            }
            if !bad.is_empty() {
                failures.push(format!(
                    "#{i} {} {}: {bad:?}",
                    v["scenario"], v["algorithm"]
                ));
            }
        }
        assert!(
            failures.is_empty(),
            "{} failed:\n{}",
            failures.len(),
            failures.join("\n")
        );
    }
}
