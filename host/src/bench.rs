//! Benchmark commands: they print measurements side by side, never assert on time.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::plugin::checker::Checker;
use crate::plugin::{PluginHost, SandboxConfig};

fn quantile(sorted: &[Duration], q: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// Per-call overhead of `check` on a 1 KB response, instantiate time, and load time cold
/// (compile) vs cached, for one checker plugin.
pub async fn plugins(path: &Path, calls: usize) -> anyhow::Result<String> {
    let cache = tempdir("spar-bench-cache")?;
    let config = SandboxConfig {
        cache_dir: Some(cache.clone()),
        ..SandboxConfig::default()
    };
    let host = PluginHost::new(config)?;

    let mut cold = Vec::new();
    for _ in 0..3 {
        let _ = std::fs::remove_dir_all(&cache);
        let t = Instant::now();
        host.load(path)?;
        cold.push(t.elapsed());
    }
    let mut cached = Vec::new();
    for _ in 0..50 {
        let t = Instant::now();
        host.load(path)?;
        cached.push(t.elapsed());
    }
    let mut checker = Checker::from_plugin(host.load(path)?).await?;
    let mut inst = Vec::new();
    for _ in 0..200 {
        let t = Instant::now();
        checker.fresh_instance().await?;
        inst.push(t.elapsed());
    }
    let specs = checker.list().await?;
    let spec = specs
        .first()
        .ok_or_else(|| anyhow::anyhow!("{} lists no instruction", checker.label()))?;
    let instance = checker.instantiate(&spec.id, 0).await?;
    let kwargs = serde_json::Value::Object(instance.kwargs).to_string();
    let response: String = "The river runs to the sea, and the sea is never full. "
        .repeat(20)
        .chars()
        .take(1024)
        .collect();
    let prompt = format!("Write about rivers. {}", instance.text);
    for _ in 0..100 {
        checker.check(&spec.id, &kwargs, &prompt, &response).await?;
    }
    let mut per_call = Vec::with_capacity(calls);
    for _ in 0..calls {
        let t = Instant::now();
        checker.check(&spec.id, &kwargs, &prompt, &response).await?;
        per_call.push(t.elapsed());
    }
    let _ = std::fs::remove_dir_all(&cache);
    for v in [&mut cold, &mut cached, &mut inst, &mut per_call] {
        v.sort();
    }
    let call_med = quantile(&per_call, 0.5);
    let cached_med = quantile(&cached, 0.5);
    let mut out = String::new();
    out.push_str(&format!(
        "plugin {} · instruction `{}` · 1 KB response · {calls} calls\n",
        checker.label(),
        spec.id
    ));
    out.push_str(&format!(
        "{:<28}{:>14}{:>14}{:>12}\n",
        "measure", "value", "target", "headroom"
    ));
    let row = |name: &str, v: f64, unit: &str, target: Option<f64>| {
        let (t, h) = match target {
            Some(t) => (format!("< {t} {unit}"), format!("{:.1}×", t / v)),
            None => ("".into(), "".into()),
        };
        format!("{name:<28}{:>14}{t:>14}{h:>12}\n", format!("{v:.2} {unit}"))
    };
    out.push_str(&row("check call, median", us(call_med), "µs", Some(2.0)));
    out.push_str(&row(
        "check call, p99",
        us(quantile(&per_call, 0.99)),
        "µs",
        None,
    ));
    out.push_str(&row(
        "instantiate, median",
        us(quantile(&inst, 0.5)),
        "µs",
        None,
    ));
    out.push_str(&row(
        "load cold (compile), median",
        quantile(&cold, 0.5).as_secs_f64() * 1e3,
        "ms",
        None,
    ));
    out.push_str(&row(
        "load cached, median",
        cached_med.as_secs_f64() * 1e3,
        "ms",
        Some(5.0),
    ));
    out.push_str(&format!(
        "cached load is {:.0}× faster than a cold load\n",
        quantile(&cold, 0.5).as_secs_f64() / cached_med.as_secs_f64()
    ));
    Ok(out)
}

fn tempdir(prefix: &str) -> anyhow::Result<std::path::PathBuf> {
    let d = std::env::temp_dir().join(format!("{prefix}-{}", std::process::id()));
    std::fs::create_dir_all(&d)?;
    Ok(d)
}

/// Peak resident memory of this process, in MiB (`VmHWM`).
pub fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmHWM:")).and_then(|l| {
                l.split_whitespace()
                    .nth(1)
                    .and_then(|kb| kb.parse::<f64>().ok())
            })
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

/// Prompts of the generation benchmarks.
pub const BENCH_QUESTIONS: [&str; 16] = [
    "What is the capital of France?",
    "Write a haiku about autumn.",
    "Explain photosynthesis to a child.",
    "Give three tips for learning to cook.",
    "Why is the sky blue?",
    "Summarize the plot of Romeo and Juliet.",
    "What are prime numbers?",
    "Describe a sunrise over the sea.",
    "How do vaccines work?",
    "Write a short thank-you note to a teacher.",
    "What is the difference between weather and climate?",
    "List four planets of the solar system.",
    "How does a bicycle stay upright?",
    "Suggest a name for a friendly robot.",
    "What is machine learning in one paragraph?",
    "Write two sentences about the ocean.",
];

/// spar vs HF transformers `generate()` on the same model directory, dtype, prompts, batch
/// sizes and token counts (greedy, EOS ignored so both produce exactly `new_tokens`).
pub fn generate(
    model_dir: &Path,
    device: tch::Device,
    kind: tch::Kind,
    batch_sizes: &[usize],
    new_tokens: usize,
) -> anyhow::Result<String> {
    use crate::model::LoadedModel;
    use crate::model::generate::{SamplingParams, generate};
    use crate::model::tokenizer::ChatMessage;
    let lm = LoadedModel::load(model_dir, device, kind)?;
    let prompts: Vec<Vec<i64>> = BENCH_QUESTIONS
        .iter()
        .map(|q| {
            lm.tokenizer
                .encode_chat(&[ChatMessage::new("user", q)], true)
        })
        .collect::<Result<_, _>>()?;
    let params = SamplingParams {
        max_new_tokens: new_tokens,
        ignore_eos: true,
        ..SamplingParams::default()
    };
    generate(
        &lm,
        &prompts[..1],
        std::slice::from_ref(&SamplingParams {
            max_new_tokens: 2,
            ..params.clone()
        }),
    )?;
    let mut spar = Vec::new();
    for &bs in batch_sizes {
        let batch = &prompts[..bs.min(prompts.len())];
        let t = Instant::now();
        let out = generate(&lm, batch, &vec![params.clone(); batch.len()])?;
        let secs = t.elapsed().as_secs_f64();
        let n: usize = out.iter().flatten().map(|c| c.token_ids.len()).sum();
        spar.push((bs, n as f64 / secs));
    }
    let spar_rss = peak_rss_mb();
    drop(lm);

    let dir = tempdir("spar-bench-gen")?;
    let pfile = dir.join("prompts.json");
    std::fs::write(&pfile, serde_json::to_string(&prompts)?)?;
    let python = crate::plugin::repo_root().join(".venv/bin/python");
    let script = crate::plugin::repo_root().join("scripts/bench_generate_hf.py");
    let sizes = batch_sizes
        .iter()
        .map(|b| b.to_string())
        .collect::<Vec<_>>()
        .join(",");
    let out = std::process::Command::new(&python)
        .arg(&script)
        .args(["--model", &model_dir.display().to_string()])
        .args(["--prompts", &pfile.display().to_string()])
        .args([
            "--new-tokens",
            &new_tokens.to_string(),
            "--batch-sizes",
            &sizes,
        ])
        .args([
            "--dtype",
            if kind == tch::Kind::BFloat16 {
                "bfloat16"
            } else {
                "float32"
            },
        ])
        .args(["--device", if device.is_cuda() { "cuda" } else { "cpu" }])
        .output()
        .map_err(|e| anyhow::anyhow!("cannot run {}: {e}", python.display()))?;
    let _ = std::fs::remove_dir_all(&dir);
    if !out.status.success() {
        anyhow::bail!(
            "the transformers side failed (is `transformers` installed in .venv? scripts/setup.sh --bench installs it): {}",
            String::from_utf8_lossy(&out.stderr)
                .lines()
                .last()
                .unwrap_or("")
        );
    }
    let hf: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let mut s = format!(
        "generate: {} · {:?} · {new_tokens} new tokens per sequence, greedy\n",
        model_dir.display(),
        kind
    );
    s.push_str(&format!(
        "{:>6}{:>14}{:>22}{:>10}\n",
        "batch", "spar tok/s", "transformers tok/s", "ratio"
    ));
    for (bs, tps) in &spar {
        let h = hf
            .iter()
            .find(|v| v["batch"].as_u64() == Some(*bs as u64))
            .and_then(|v| v["tokens_per_s"].as_f64())
            .unwrap_or(f64::NAN);
        s.push_str(&format!("{bs:>6}{tps:>14.1}{h:>22.1}{:>9.2}×\n", tps / h));
    }
    let hf_rss = hf
        .iter()
        .filter_map(|v| v["peak_rss_mb"].as_f64())
        .fold(0.0, f64::max);
    s.push_str(&format!(
        "peak RSS: spar {spar_rss:.0} MiB, transformers {hf_rss:.0} MiB ({:.2}×)\n",
        spar_rss / hf_rss
    ));
    Ok(s)
}

/// One DPO epoch of spar and of TRL's DPOTrainer on CPU: same model, data, batch size,
/// sequence length and precision (f32); tokens/s over the whole run (loading included) and
/// peak RSS, side by side.
pub fn train(
    model_dir: &Path,
    pairs: usize,
    batch_size: usize,
    micro: usize,
    max_length: usize,
) -> anyhow::Result<String> {
    use crate::train::trainer::{Objective, TrainConfig, train};
    let dir = tempdir("spar-bench-train")?;
    let data = dir.join("pairs.jsonl");
    let lines: Vec<String> = (0..pairs)
        .map(|i| {
            let q = BENCH_QUESTIONS[i % BENCH_QUESTIONS.len()];
            serde_json::json!({
                "prompt": [{"role": "user", "content": format!("{q} (variant {i})")}],
                "chosen": [{"role": "assistant", "content": format!("Here is a careful answer to \"{q}\", in three short sentences that stay on topic and end politely. Thank you for asking.")}],
                "rejected": [{"role": "assistant", "content": format!("I do not know much about that, but here are some loosely related words instead: river, mountain, {i}, sky, lamp.")}],
            })
            .to_string()
        })
        .collect();
    std::fs::write(&data, lines.join("\n"))?;
    let cfg = TrainConfig::load(
        &crate::plugin::repo_root().join("configs/dpo.toml"),
        &[
            format!("model={:?}", model_dir.display().to_string()),
            format!("data={:?}", data.display().to_string()),
            format!("output_dir={:?}", dir.join("spar").display().to_string()),
            format!("batch_size={batch_size}"),
            format!("micro_batch_size={micro}"),
            format!("max_length={max_length}"),
            "lr=1e-6".into(),
            "save_steps=0".into(),
            "device=\"cpu\"".into(),
        ],
    )?;
    debug_assert_eq!(cfg.objective, Objective::Dpo);
    let tok_cfg = crate::model::ModelConfig::from_file(&model_dir.join("config.json"))?;
    let tok = crate::model::Tokenizer::load(model_dir, &tok_cfg)?;
    let (tokenized, _) = crate::train::data::load_pairs(&data, &tok, max_length)?;
    let tokens: usize = tokenized
        .iter()
        .map(|p| p.chosen.ids.len() + p.rejected.ids.len())
        .sum();
    let t = Instant::now();
    let summary = train(&cfg, None)?;
    let spar_secs = t.elapsed().as_secs_f64();
    let spar_rss = peak_rss_mb();

    let python = crate::plugin::repo_root().join(".venv/bin/python");
    let out = std::process::Command::new(&python)
        .arg(crate::plugin::repo_root().join("scripts/bench_train_trl.py"))
        .args([
            "--model",
            &model_dir.display().to_string(),
            "--data",
            &data.display().to_string(),
        ])
        .args(["--out", &dir.join("trl").display().to_string()])
        .args([
            "--batch-size",
            &batch_size.to_string(),
            "--micro-batch-size",
            &micro.to_string(),
        ])
        .args(["--max-length", &max_length.to_string()])
        .output()
        .map_err(|e| anyhow::anyhow!("cannot run {}: {e}", python.display()))?;
    let _ = std::fs::remove_dir_all(&dir);
    if !out.status.success() {
        anyhow::bail!(
            "the TRL side failed (is `trl` installed in .venv? `bash scripts/setup.sh` installs it): {}",
            String::from_utf8_lossy(&out.stderr)
                .lines()
                .last()
                .unwrap_or("")
        );
    }
    let trl: serde_json::Value = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .next_back()
        .ok_or_else(|| anyhow::anyhow!("no result line from the TRL side"))?;
    let trl_secs = trl["seconds"].as_f64().unwrap_or(f64::NAN);
    let trl_rss = trl["peak_rss_mb"].as_f64().unwrap_or(f64::NAN);
    let (spar_tps, trl_tps) = (tokens as f64 / spar_secs, tokens as f64 / trl_secs);
    Ok(format!(
        "train: DPO, 1 epoch, {pairs} pairs ({tokens} tokens), batch {batch_size} (micro {micro}), max length {max_length}, f32, CPU\n\
         {:<14}{:>12}{:>12}{:>10}\n\
         {:<14}{:>12.1}{:>12.1}{:>9.2}×\n\
         {:<14}{:>12.0}{:>12.0}{:>9.2}×\n\
         spar: {} steps, final loss {:.4}; TRL: {} steps, first loss {}\n",
        "",
        "spar",
        "TRL",
        "ratio",
        "tokens/s",
        spar_tps,
        trl_tps,
        spar_tps / trl_tps,
        "peak RSS MiB",
        spar_rss,
        trl_rss,
        spar_rss / trl_rss,
        summary.steps,
        summary.final_loss,
        trl["steps"],
        trl["first_loss"]
    ))
}

/// The tree search of the self-play pipeline on the same roots, budget and model, one tree
/// at a time vs all trees concurrently (their refine and judge calls batched by the
/// engine); settings from a run config (`configs/demo.toml` by default).
pub async fn search(
    cfg: &crate::selfplay::pipeline::RunConfig,
    host: &PluginHost,
    trees: usize,
) -> anyhow::Result<String> {
    use crate::model::generate::{Engine, SamplingParams};
    use crate::model::tokenizer::ChatMessage;
    use crate::model::{LoadedModel, parse_device, parse_dtype};
    use crate::plugin::PluginKind;
    use crate::plugin::search::SearchStrategy;
    use crate::selfplay::pipeline::{RootRec, constraints_of, read_prompts, search_tree};

    let load = |name: &str, kind: PluginKind| -> anyhow::Result<crate::plugin::Plugin> {
        let p = host.load(&PluginHost::resolve(name)?)?;
        p.expect_kind(kind)?;
        Ok(p)
    };
    let strategy =
        SearchStrategy::from_plugin(load(&cfg.plugins.search, PluginKind::SearchStrategy)?).await?;
    let prompts_plugin = load(&cfg.plugins.prompts, PluginKind::JudgePrompts)?;
    let checkers = cfg
        .plugins
        .checkers
        .iter()
        .map(|c| load(c, PluginKind::Checker))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let pool = read_prompts(&cfg.prompts)?;
    // A fresh engine per phase: neither inherits the other's prompt cache.
    let fresh = || -> anyhow::Result<Engine> {
        let lm = LoadedModel::load(
            &cfg.models.refiner,
            parse_device(&cfg.device)?,
            parse_dtype(&cfg.dtype)?,
        )?;
        Ok(Engine::start(lm, cfg.max_batch_rows)?)
    };
    let engine = fresh()?;
    // Roots: a sampled answer per tree (distinct even where prompts repeat), with the
    // checkers' critique (or a fixed one).
    let rows: Vec<_> = (0..trees).map(|i| pool[i % pool.len()].clone()).collect();
    let mut roots = Vec::new();
    for (k, p) in rows.iter().enumerate() {
        let out = engine
            .chat(
                &[ChatMessage::new("user", &p.prompt)],
                SamplingParams {
                    temperature: cfg.sample.temperature,
                    top_p: cfg.sample.top_p,
                    max_new_tokens: cfg.sample.max_new_tokens,
                    seed: Some(k as u64),
                    ..SamplingParams::default()
                },
            )
            .await?;
        let text = out.into_iter().next().map(|c| c.text).unwrap_or_default();
        let critique = match constraints_of(p, &checkers).await? {
            Some(mut c) => c
                .judge(&p.prompt, &text)
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?
                .critique,
            None => "Step-by-step verification: the Output misses constraints of the Prompt.\nFinal Judgement (if the Output accurately follows the Prompt): No".into(),
        };
        roots.push(RootRec {
            idx: k,
            response: 0,
            text,
            critique,
        });
    }
    let one = |engine: &Engine, k: usize| {
        let (engine, plugin, checkers, strategy) = (
            crate::backend::Generator::from(engine.clone()),
            prompts_plugin.clone(),
            checkers.clone(),
            strategy.clone(),
        );
        let (vote, search, mode) = (cfg.judge.clone(), cfg.search.clone(), cfg.value);
        let mut p = rows[k].clone();
        p.idx = k;
        let root = roots[k].clone();
        async move {
            search_tree(
                (engine.clone(), engine),
                plugin,
                &checkers,
                strategy,
                mode,
                vote,
                &search,
                &p,
                &root,
                k as u64,
            )
            .await
        }
    };
    let engine = fresh()?;
    let t = Instant::now();
    let mut sequential = Vec::new();
    for k in 0..rows.len() {
        sequential.push(one(&engine, k).await);
    }
    let seq_s = t.elapsed().as_secs_f64();
    use std::sync::atomic::Ordering::Relaxed;
    let seq = EngineTime::of(&engine);
    drop(engine);
    let engine = fresh()?;
    let st = engine.stats();
    let (s0, r0) = (st.steps.load(Relaxed), st.row_steps.load(Relaxed));
    let h0 = st.prompt_cache_hits.load(Relaxed);
    let x0 = st.prefix_reused_tokens.load(Relaxed);
    let (p0, d0, t0) = (
        st.prefill_ns.load(Relaxed),
        st.decode_ns.load(Relaxed),
        st.prefill_tokens.load(Relaxed),
    );
    let t = Instant::now();
    let handles: Vec<_> = (0..rows.len())
        .map(|k| tokio::spawn(one(&engine, k)))
        .collect();
    let mut concurrent = Vec::new();
    for h in handles {
        concurrent.push(h.await?);
    }
    let con_s = t.elapsed().as_secs_f64();
    let steps = (st.steps.load(Relaxed) - s0).max(1);
    let mean_batch = (st.row_steps.load(Relaxed) - r0) as f64 / steps as f64;
    let prefill_s = (st.prefill_ns.load(Relaxed) - p0) as f64 / 1e9;
    let decode_s = (st.decode_ns.load(Relaxed) - d0) as f64 / 1e9;
    let prefill_tokens = st.prefill_tokens.load(Relaxed) - t0;
    let nodes = |v: &[crate::selfplay::pipeline::TreeRec]| -> usize {
        v.iter()
            .filter_map(|t| t.outcome.as_ref())
            .map(|o| o.nodes.len())
            .sum()
    };
    let same = serde_json::to_string(&sequential)? == serde_json::to_string(&concurrent)?;
    let (ns, nc) = (nodes(&sequential), nodes(&concurrent));
    let mut s = format!(
        "search: {} · {} trees · budget {} · branch {} · depth {} · value {:?}\n",
        cfg.models.refiner.display(),
        rows.len(),
        cfg.search.budget,
        cfg.search.branch,
        cfg.search.max_depth,
        cfg.value
    );
    s.push_str(&format!(
        "{:<26}{:>10}{:>8}{:>12}{:>12}\n",
        "", "seconds", "nodes", "trees/min", "nodes/min"
    ));
    for (name, secs, n) in [
        ("one tree at a time", seq_s, ns),
        ("concurrent, batched", con_s, nc),
    ] {
        s.push_str(&format!(
            "{name:<26}{secs:>10.1}{n:>8}{:>12.2}{:>12.1}\n",
            rows.len() as f64 * 60.0 / secs,
            n as f64 * 60.0 / secs
        ));
    }
    s.push_str(&format!(
        "ratio (trees/s, concurrent ÷ sequential): {:.2}×; identical trees: {}; mean rows per decode step when concurrent: {mean_batch:.1}\n",
        seq_s / con_s,
        if same { "yes" } else { "no" }
    ));
    s.push_str(&format!(
        "one tree at a time, engine time: prefill {:.1} s ({} prompt tokens), decode {:.1} s ({} steps, {:.1} ms/step, {:.1} rows per step)\n",
        seq.prefill_s,
        seq.prefill_tokens,
        seq.decode_s,
        seq.steps,
        seq.decode_s * 1e3 / seq.steps.max(1) as f64,
        seq.rows as f64 / seq.steps.max(1) as f64
    ));
    s.push_str(&format!(
        "concurrent engine time: prefill {prefill_s:.1} s ({prefill_tokens} prompt tokens; {} prompts reused from the prompt cache, {} tokens of cached prefixes; {} cache re-layouts, {:.1} s), decode {decode_s:.1} s ({steps} steps, {:.1} ms/step; {:.1} rows per step read their prompt from another row's copy)\n",
        st.prompt_cache_hits.load(Relaxed) - h0,
        st.prefix_reused_tokens.load(Relaxed) - x0,
        st.relayouts.load(Relaxed),
        st.relayout_ns.load(Relaxed) as f64 / 1e9,
        decode_s * 1e3 / steps as f64,
        st.shared_prompt_rows.load(Relaxed) as f64 / steps as f64
    ));
    Ok(s)
}

/// An engine's time so far, from its counters.
struct EngineTime {
    prefill_s: f64,
    prefill_tokens: u64,
    decode_s: f64,
    steps: u64,
    rows: u64,
}

impl EngineTime {
    fn of(engine: &crate::model::generate::Engine) -> Self {
        use std::sync::atomic::Ordering::Relaxed;
        let st = engine.stats();
        Self {
            prefill_s: st.prefill_ns.load(Relaxed) as f64 / 1e9,
            prefill_tokens: st.prefill_tokens.load(Relaxed),
            decode_s: st.decode_ns.load(Relaxed) as f64 / 1e9,
            steps: st.steps.load(Relaxed),
            rows: st.row_steps.load(Relaxed),
        }
    }
}
