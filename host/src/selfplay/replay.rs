//! `spar-host search replay`: drive a search plugin with the scripted refiner and judge that a
//! vector file describes (format of `tree_search_vectors.json`, ALGORITHM.md §6) and compare
//! every call, the tree, the solution and the critique pools.

use std::collections::HashMap;
use std::path::Path;

use anyhow::{Context, bail};
use serde_json::{Value, json};

use super::tree::critique_pools;
use crate::plugin::GuestError;
use crate::plugin::search::{
    BoxFuture, Judgment, Node, Outcome, Refinement, SearchHost, SearchParams, SearchStrategy,
};

/// The scripted refiner/judge of one vector, with the host's per-tree cache and budget.
pub struct ScriptedVector {
    budget: i32,
    counts: HashMap<String, usize>,
    overrides: HashMap<(String, usize), String>,
    values: HashMap<String, Option<f64>>,
    cache: HashMap<String, Judgment>,
    pub calls: Vec<Value>,
}

impl ScriptedVector {
    pub fn new(v: &Value) -> anyhow::Result<Self> {
        let mut seen: HashMap<String, usize> = HashMap::new();
        let mut overrides = HashMap::new();
        let mut values = HashMap::new();
        for c in v["calls"].as_array().context("`calls` is not a list")? {
            let x = c["response"]
                .as_str()
                .context("a call without `response`")?
                .to_string();
            match c["op"].as_str() {
                Some("refine") => {
                    let k = seen.entry(x.clone()).or_default();
                    let result = c["result"]
                        .as_str()
                        .context("a refine call without `result`")?;
                    if result != format!("{x}.{k}") {
                        overrides.insert((x.clone(), *k), result.to_string());
                    }
                    *k += 1;
                }
                Some("judge") => {
                    values.entry(x).or_insert(c["value"].as_f64());
                }
                other => bail!("unknown call op {other:?}"),
            }
        }
        Ok(Self {
            budget: v["params"]["budget"].as_i64().context("`params.budget`")? as i32,
            counts: HashMap::new(),
            overrides,
            values,
            cache: HashMap::new(),
            calls: Vec::new(),
        })
    }
}

impl SearchHost for ScriptedVector {
    fn refine<'a>(&'a mut self, parent: &'a Node) -> BoxFuture<'a, Result<Refinement, GuestError>> {
        Box::pin(async move {
            let x = &parent.response;
            let k = self.counts.entry(x.clone()).or_default();
            let result = self
                .overrides
                .get(&(x.clone(), *k))
                .cloned()
                .unwrap_or_else(|| format!("{x}.{k}"));
            *k += 1;
            self.calls.push(json!({"op": "refine", "response": x,
                "critique": parent.critique, "result": result}));
            if result.is_empty() {
                return Err(GuestError::Model("scripted refinement failure".into()));
            }
            Ok(Refinement {
                output: format!("cot:{result}"),
                response: result,
            })
        })
    }

    fn judge<'a>(&'a mut self, response: &'a str) -> BoxFuture<'a, Result<Judgment, GuestError>> {
        Box::pin(async move {
            if let Some(j) = self.cache.get(response).cloned() {
                self.calls.push(json!({"op": "judge", "response": response,
                    "cached": true, "value": j.value}));
                self.budget -= 1;
                return Ok(Judgment { cached: true, ..j });
            }
            let Some(value) = self.values.get(response).copied() else {
                self.calls.push(json!({"op": "judge", "response": response,
                    "cached": false, "value": null}));
                return Err(GuestError::Model(format!(
                    "`{response}` is not in the script"
                )));
            };
            self.calls.push(json!({"op": "judge", "response": response,
                "cached": false, "value": value}));
            let Some(value) = value else {
                return Err(GuestError::Model("scripted judgment failure".into()));
            };
            let j = Judgment {
                critique: format!("crit:{response}"),
                value,
                yes: 0,
                no: 0,
                unparseable: 0,
                cached: false,
            };
            self.cache.insert(response.to_string(), j.clone());
            self.budget -= 1;
            Ok(j)
        })
    }

    fn budget_left(&self) -> i32 {
        self.budget
    }

    fn into_any(self: Box<Self>) -> Box<dyn std::any::Any + Send> {
        self
    }
}

/// What a run produced, in the vector's shape.
fn actual(outcome: &Outcome, host: &ScriptedVector) -> Value {
    let nodes = &outcome.nodes;
    let fin = outcome.final_node as usize;
    let tree: Vec<Value> = nodes
        .iter()
        .enumerate()
        .map(|(i, n)| {
            json!({"id": i, "parent": n.parent, "depth": n.depth, "response": n.response,
                "critique": n.critique, "value": n.value, "visit_sequence": n.visit_sequence,
                "final": (i == fin) as u8})
        })
        .collect();
    let f = &nodes[fin];
    let (pos, neg) = critique_pools(outcome, 0.5);
    json!({
        "calls": host.calls,
        "tree": tree,
        "solution": f.response,
        "final_node": {
            "response": f.response,
            "value": f.value,
            "parent_response": f.parent.map(|p| nodes[p as usize].response.clone()),
            "refine_cot": if f.parent.is_some() { Value::from(f.refine_output.clone()) } else { Value::Null },
        },
        "found": outcome.found,
        "budget_left": host.budget,
        "rft_positive": pos.iter().map(|&i| nodes[i].critique.clone()).collect::<Vec<_>>(),
        "rft_negative": neg.iter().map(|&i| nodes[i].critique.clone()).collect::<Vec<_>>(),
    })
}

/// Numbers compare by value (the reference writes 0 for 0.0).
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| same(a, b))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| same(v, w)))
        }
        _ => a == b,
    }
}

/// The first difference between expected and actual, as one line.
fn first_difference(path: &str, want: &Value, got: &Value) -> Option<String> {
    if same(want, got) {
        return None;
    }
    match (want, got) {
        (Value::Array(w), Value::Array(g)) => {
            for (i, (a, b)) in w.iter().zip(g).enumerate() {
                if let Some(d) = first_difference(&format!("{path}[{i}]"), a, b) {
                    return Some(d);
                }
            }
            Some(format!(
                "{path}: {} entries expected, {} produced",
                w.len(),
                g.len()
            ))
        }
        (Value::Object(w), Value::Object(g)) => {
            for (k, a) in w {
                if let Some(d) =
                    first_difference(&format!("{path}.{k}"), a, g.get(k).unwrap_or(&Value::Null))
                {
                    return Some(d);
                }
            }
            Some(format!("{path}: unexpected fields"))
        }
        _ => Some(format!("{path}: expected {want}, got {got}")),
    }
}

/// The result of replaying a file.
pub struct ReplayReport {
    pub passed: usize,
    pub failed: usize,
    /// `(vector index, scenario, first difference)` of each failure.
    pub failures: Vec<(usize, String, String)>,
}

/// Replay every vector of `algorithm` (e.g. `bfs`) in `path` through `strategy`.
pub async fn replay(
    path: &Path,
    strategy: &SearchStrategy,
    algorithm: &str,
) -> anyhow::Result<ReplayReport> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let all: Value =
        serde_json::from_str(&text).with_context(|| format!("{}: not JSON", path.display()))?;
    let vectors = all["vectors"]
        .as_array()
        .with_context(|| format!("{}: no `vectors` list", path.display()))?;
    let mut report = ReplayReport {
        passed: 0,
        failed: 0,
        failures: Vec::new(),
    };
    for (i, v) in vectors.iter().enumerate() {
        if v["algorithm"].as_str() != Some(algorithm) {
            continue;
        }
        let scenario = v["scenario"].as_str().unwrap_or("?").to_string();
        let at = |what: &str| format!("{}: vector {i} ({scenario}): {what}", path.display());
        let host = ScriptedVector::new(v).with_context(|| at("bad script"))?;
        let p = &v["params"];
        let params = SearchParams {
            branch: p["branch"].as_u64().with_context(|| at("params.branch"))? as u32,
            select_branch: p["select_branch"]
                .as_u64()
                .with_context(|| at("params.select_branch"))? as u32,
            max_depth: p["max_depth"]
                .as_u64()
                .with_context(|| at("params.max_depth"))? as u32,
            end_gate: p["end_gate"].as_f64().unwrap_or(0.5),
            refine_attempts: p["refine_attempts"].as_u64().unwrap_or(3) as u32,
        };
        let r = &v["root"];
        let root = Node {
            id: 0,
            parent: None,
            depth: 0,
            response: r["response"]
                .as_str()
                .with_context(|| at("root.response"))?
                .into(),
            critique: r["critique"].as_str().unwrap_or_default().into(),
            value: r["value"].as_f64().unwrap_or(0.0),
            refine_output: String::new(),
            visit_sequence: 0,
        };
        let (out, host) = strategy.search("P", &root, &params, Box::new(host)).await;
        let host = host.and_then(|h| h.into_any().downcast::<ScriptedVector>().ok());
        let diff = match (out, host) {
            (Ok(o), Some(h)) => {
                let got = actual(&o, &h);
                let mut want = serde_json::Map::new();
                for k in got.as_object().into_iter().flat_map(|o| o.keys()) {
                    want.insert(k.clone(), v[k].clone());
                }
                first_difference("", &Value::Object(want), &got)
            }
            (Err(e), _) => Some(format!("search failed: {e}")),
            (Ok(_), None) => Some("the host was lost".into()),
        };
        match diff {
            None => report.passed += 1,
            Some(d) => {
                report.failed += 1;
                report.failures.push((i, scenario, d));
            }
        }
    }
    Ok(report)
}
