//! `spar-host eval followbench | llmbar | refine` and `spar-host report`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, bail};
use clap::Args;
use spar_host::backend::{Generator, Outage, Remote, RemoteConfig};
use spar_host::eval::{chat_all, followbench, llmbar, refine};
use spar_host::model::generate::{Engine, SamplingParams};
use spar_host::model::tokenizer::ChatMessage;
use spar_host::model::{LoadedModel, parse_device, parse_dtype};
use spar_host::plugin::PluginHost;
use spar_host::plugin::prompts::{Prompts, Verdict};
use spar_host::score::write_jsonl_atomic;
use spar_host::selfplay::judge::chat;

use super::eval::bar;
use super::model::{ModelArgs, SamplingArgs};

/// Where the judge's answers come from.
#[derive(Args, Clone)]
pub struct JudgeArgs {
    /// Judge model directory (default: the model under evaluation).
    #[arg(long)]
    pub judge: Option<PathBuf>,
    /// An OpenAI-compatible endpoint serving the judge instead (e.g. `http://host:8000/v1`).
    #[arg(long)]
    pub judge_endpoint: Option<String>,
    /// New tokens per judgment.
    #[arg(long, default_value_t = 512)]
    pub judge_max_new_tokens: usize,
}

/// Options every evaluation shares.
#[derive(Args, Clone)]
pub struct EvalArgs {
    /// Only the first N items.
    #[arg(long)]
    pub limit: Option<usize>,
    /// Directory for metrics.json and the per-item records.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Requests in flight at once (the engine batches them).
    #[arg(long, default_value_t = 16)]
    pub concurrency: usize,
    /// Serve the model under evaluation from an OpenAI-compatible endpoint instead of --model.
    #[arg(long)]
    pub endpoint: Option<String>,
}

/// The generator of a model directory or an endpoint.
pub fn generator(
    m: &ModelArgs,
    dir: Option<&Path>,
    endpoint: Option<&str>,
    role: &str,
    rows: usize,
) -> anyhow::Result<Generator> {
    if let Some(url) = endpoint {
        return Ok(Generator::Remote(Arc::new(Remote::new(
            role,
            RemoteConfig::new(vec![url.to_string()]),
            Outage::default(),
        )?)));
    }
    let lm = match dir {
        Some(d) => LoadedModel::load(d, parse_device(&m.device)?, parse_dtype(&m.dtype)?)?,
        None => m.load()?,
    };
    Ok(Generator::Local(Engine::start(lm, rows.max(1))?))
}

fn write_out<T: serde::Serialize>(
    out: Option<&Path>,
    metrics: &impl serde::Serialize,
    records: &[(&str, &[T])],
) -> anyhow::Result<()> {
    let Some(dir) = out else { return Ok(()) };
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    spar_host::model::weights::write_atomic(
        &dir.join("metrics.json"),
        &(serde_json::to_string_pretty(metrics)? + "\n"),
    )?;
    for (name, rows) in records {
        write_jsonl_atomic(&dir.join(name), rows)?;
    }
    println!("wrote {}", dir.display());
    Ok(())
}

fn user(text: &str) -> Vec<ChatMessage> {
    vec![ChatMessage::new("user", text)]
}

/// Answers from a JSONL of `instruction` + `generation` (or `response`) rows.
fn read_answers(path: &Path) -> anyhow::Result<std::collections::HashMap<String, String>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut m = std::collections::HashMap::new();
    for (i, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let v: serde_json::Value = serde_json::from_str(line)
            .with_context(|| format!("{}:{}: not JSON", path.display(), i + 1))?;
        let (Some(ins), Some(g)) = (
            v["instruction"].as_str(),
            v["generation"].as_str().or(v["response"].as_str()),
        ) else {
            bail!(
                "{}:{}: needs `instruction` and `generation`",
                path.display(),
                i + 1
            );
        };
        m.insert(ins.to_string(), g.to_string());
    }
    Ok(m)
}

pub async fn followbench_cmd(
    data: &Path,
    m: &ModelArgs,
    s: &SamplingArgs,
    e: &EvalArgs,
    j: &JudgeArgs,
    responses: Option<&Path>,
) -> anyhow::Result<()> {
    // Every input is checked before a model loads.
    let mut items = followbench::load(data)?;
    if let Some(n) = e.limit {
        items.truncate(n);
    }
    let answers = responses.map(read_answers).transpose()?;
    if let Some(a) = &answers {
        for it in &items {
            if !a.contains_key(&it.instruction) {
                bail!(
                    "{}: no generation for {} item {} level {}",
                    responses.unwrap().display(),
                    it.category,
                    it.example_id,
                    it.level
                );
            }
        }
    }
    let generations: Vec<String> = match answers {
        Some(a) => items.iter().map(|it| a[&it.instruction].clone()).collect(),
        None => {
            let g = generator(m, None, e.endpoint.as_deref(), "model", e.concurrency)?;
            let pb = bar(items.len(), "answering");
            let convs = items.iter().map(|it| user(&it.instruction)).collect();
            let out = chat_all(&g, convs, &s.params(), e.concurrency, || pb.inc(1)).await;
            pb.finish_and_clear();
            out.into_iter()
                .zip(&items)
                .map(|(r, it)| {
                    r.map_err(|err| {
                        anyhow::anyhow!(
                            "{} item {} level {}: {err}",
                            it.category,
                            it.example_id,
                            it.level
                        )
                    })
                })
                .collect::<anyhow::Result<_>>()?
        }
    };
    // Judge what the rules cannot score.
    let need: Vec<usize> = (0..items.len())
        .filter(|&i| followbench::score_without_judge(&items[i], &generations[i]).is_none())
        .collect();
    let mut judged: std::collections::HashMap<usize, Result<String, String>> = Default::default();
    if !need.is_empty() {
        let jg = match (&j.judge_endpoint, &j.judge) {
            (Some(url), _) => generator(m, None, Some(url), "judge", e.concurrency)?,
            (None, Some(dir)) => generator(m, Some(dir), None, "judge", e.concurrency)?,
            (None, None) => generator(m, None, e.endpoint.as_deref(), "judge", e.concurrency)?,
        };
        let params = SamplingParams {
            max_new_tokens: j.judge_max_new_tokens,
            ..SamplingParams::default()
        };
        let pb = bar(need.len(), "judging");
        let convs = need
            .iter()
            .map(|&i| user(&followbench::judge_prompt(&items[i], &generations[i])))
            .collect();
        let out = chat_all(&jg, convs, &params, e.concurrency, || pb.inc(1)).await;
        pb.finish_and_clear();
        judged = need.iter().copied().zip(out).collect();
    }
    let scored: Vec<followbench::Scored> = items
        .into_iter()
        .zip(generations)
        .enumerate()
        .map(|(i, (item, generation))| {
            let method = item.method();
            let (hard, soft, judge_output, unparsed) =
                match followbench::score_without_judge(&item, &generation) {
                    Some(x) => (x, x, None, false),
                    None => match &judged[&i] {
                        Ok(out) => match followbench::parse_judgment(out, item.level) {
                            Some((h, s)) => (h, s, Some(out.clone()), false),
                            None => (0.0, 0.0, Some(out.clone()), true),
                        },
                        Err(err) => (0.0, 0.0, Some(format!("error: {err}")), true),
                    },
                };
            followbench::Scored {
                item,
                method,
                generation,
                hard,
                soft,
                judge_output,
                unparsed,
            }
        })
        .collect();
    let metrics = followbench::metrics(&scored);
    print!("{}", followbench::render(&metrics));
    write_out(e.out.as_deref(), &metrics, &[("items.jsonl", &scored)])
}

/// Some(true) for "follows", Some(false) for "does not", None when unparseable.
async fn verdict(p: &mut Prompts, text: &str) -> Option<bool> {
    match p.parse_verdict(text).await {
        Ok(Verdict::Yes) => Some(true),
        Ok(Verdict::No) => Some(false),
        _ => None,
    }
}

pub async fn llmbar_cmd(
    host: &PluginHost,
    data: &Path,
    m: &ModelArgs,
    e: &EvalArgs,
    prompts_plugin: &str,
    max_new_tokens: usize,
) -> anyhow::Result<()> {
    let mut subsets = llmbar::load(data)?;
    if let Some(n) = e.limit {
        for (_, items) in &mut subsets {
            items.truncate(n);
        }
    }
    let plugin = host.load(&PluginHost::resolve(prompts_plugin)?)?;
    let mut prompts = Prompts::from_plugin(plugin).await?;
    let g = generator(m, None, e.endpoint.as_deref(), "judge", e.concurrency)?;
    let items: Vec<(String, llmbar::Item)> = subsets
        .into_iter()
        .flat_map(|(s, v)| v.into_iter().map(move |it| (s.clone(), it)))
        .collect();
    // Four conversations per item: both orders of the pair, each output alone.
    let mut convs = Vec::with_capacity(items.len() * 4);
    for (_, it) in &items {
        for (a, b) in [(&it.output_1, &it.output_2), (&it.output_2, &it.output_1)] {
            convs.push(vec![
                ChatMessage::new("system", llmbar::PAIRWISE_SYSTEM),
                ChatMessage::new("user", &llmbar::pairwise_prompt(&it.input, a, b)),
            ]);
        }
        for o in [&it.output_1, &it.output_2] {
            convs.push(chat(prompts.judge_messages(&it.input, o).await?));
        }
    }
    let pb = bar(convs.len(), "judging");
    // Pairwise answers are short; pointwise ones reason first.
    let params = SamplingParams {
        max_new_tokens,
        ..SamplingParams::default()
    };
    let out = chat_all(&g, convs, &params, e.concurrency, || pb.inc(1)).await;
    pb.finish_and_clear();
    let mut judged = Vec::with_capacity(items.len());
    for (k, (subset, it)) in items.iter().enumerate() {
        let o = &out[4 * k..4 * k + 4];
        let text = |r: &Result<String, String>| r.as_deref().unwrap_or("").to_string();
        judged.push(llmbar::Judged {
            subset: subset.clone(),
            label: it.label,
            pair: llmbar::parse_pairwise(&text(&o[0])),
            pair_swapped: llmbar::parse_pairwise(&text(&o[1])).map(|w| 3 - w),
            point_1: verdict(&mut prompts, &text(&o[2])).await,
            point_2: verdict(&mut prompts, &text(&o[3])).await,
        });
    }
    let metrics = llmbar::metrics(&judged);
    print!("{}", llmbar::render(&metrics));
    write_out(e.out.as_deref(), &metrics, &[("items.jsonl", &judged)])
}

#[allow(clippy::too_many_arguments)]
pub async fn refine_cmd(
    host: &PluginHost,
    data: Option<&Path>,
    m: &ModelArgs,
    refiner: Option<&Path>,
    s: &SamplingArgs,
    e: &EvalArgs,
    checkers: &[String],
    prompts_plugin: &str,
) -> anyhow::Result<()> {
    let path = match data {
        Some(p) => p.to_path_buf(),
        None => spar_host::eval::ifeval::default_data()?,
    };
    let mut rows = spar_host::score::read_rows_with(&path, false)?;
    if let Some(n) = e.limit {
        rows.truncate(n);
    }
    let mut set = super::eval::checker_set(host, checkers).await?;
    let plugin = host.load(&PluginHost::resolve(prompts_plugin)?)?;
    let mut prompts = Prompts::from_plugin(plugin).await?;
    // Answers: given, or the actor's.
    let actor = generator(m, None, e.endpoint.as_deref(), "actor", e.concurrency)?;
    let missing: Vec<usize> = (0..rows.len())
        .filter(|&i| rows[i].response.is_empty())
        .collect();
    if !missing.is_empty() {
        let pb = bar(missing.len(), "answering");
        let convs = missing.iter().map(|&i| user(&rows[i].prompt)).collect();
        let out = chat_all(&actor, convs, &s.params(), e.concurrency, || pb.inc(1)).await;
        pb.finish_and_clear();
        for (&i, r) in missing.iter().zip(out) {
            rows[i].response =
                r.map_err(|err| anyhow::anyhow!("{}:{}: {err}", path.display(), rows[i].line))?;
        }
    }
    let mut failing = Vec::new();
    for r in &rows {
        if !refine::passes(&mut set, r, &r.response).await? {
            failing.push(r.clone());
        }
    }
    let refiner_gen = match refiner {
        Some(dir) => generator(m, Some(dir), None, "refiner", e.concurrency)?,
        None => actor,
    };
    let pb = bar(failing.len(), "refining");
    let mut refined = Vec::with_capacity(failing.len());
    for r in &failing {
        refined
            .push(refine::refine_one(&refiner_gen, &mut prompts, &mut set, r, &s.params()).await);
        pb.inc(1);
    }
    pb.finish_and_clear();
    let metrics = refine::metrics(rows.len(), &refined);
    print!("{}", refine::render(&metrics));
    write_out(e.out.as_deref(), &metrics, &[("refined.jsonl", &refined)])
}
