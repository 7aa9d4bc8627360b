//! The training loop shared by SFT, RFT and DPO: gradient accumulation, clipping, schedules,
//! length bucketing, metrics, checkpoints that resume to the same weights, and a loss plot.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, bail};
use sha2::{Digest, Sha256};
use tch::{Device, Kind, Tensor};

use super::data::{self, DataReport, Pair, Sequence, collate};
use super::loss::{dpo_loss, sequence_logps, sft_loss};
use super::optim::{AdamW, AdamWConfig, Schedule, lr_at};
use crate::model::{LoadedModel, parse_device, parse_dtype};

/// What to optimise.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Objective {
    /// Next-token loss on assistant tokens (also RFT: SFT on the refiner's data).
    Sft,
    /// Sigmoid DPO against the frozen initial model, plus `sft_weight` × NLL of the chosen.
    Dpo,
}

/// A training run, as read from TOML (`configs/*.toml`) with CLI overrides.
#[derive(Debug, Clone, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    pub objective: Objective,
    /// The initial model (HF directory).
    pub model: PathBuf,
    /// JSONL training data.
    pub data: PathBuf,
    pub output_dir: PathBuf,
    #[serde(default = "d_lr")]
    pub lr: f64,
    #[serde(default = "d_one")]
    pub epochs: usize,
    /// Sequences (SFT) or pairs (DPO) per optimizer step.
    #[serde(default = "d_batch")]
    pub batch_size: usize,
    /// Sequences or pairs per forward pass; `batch_size / micro_batch_size` accumulation steps.
    #[serde(default = "d_micro")]
    pub micro_batch_size: usize,
    #[serde(default = "d_len")]
    pub max_length: usize,
    #[serde(default = "d_warmup")]
    pub warmup_ratio: f64,
    #[serde(default = "d_schedule")]
    pub schedule: Schedule,
    #[serde(default)]
    pub weight_decay: f64,
    #[serde(default = "d_b1")]
    pub adam_beta1: f64,
    #[serde(default = "d_b2")]
    pub adam_beta2: f64,
    #[serde(default = "d_eps")]
    pub adam_eps: f64,
    /// 0 disables clipping.
    #[serde(default = "d_one_f")]
    pub max_grad_norm: f64,
    /// DPO β.
    #[serde(default = "d_beta")]
    pub beta: f64,
    /// Weight of the NLL of the chosen response in DPO (SPaR: 0.1).
    #[serde(default = "d_beta")]
    pub sft_weight: f64,
    #[serde(default = "d_seed")]
    pub seed: u64,
    /// Checkpoint every N optimizer steps (0: only at the end).
    #[serde(default)]
    pub save_steps: usize,
    #[serde(default = "d_device")]
    pub device: String,
    #[serde(default = "d_dtype")]
    pub dtype: String,
}

fn d_lr() -> f64 {
    1e-6
}
fn d_one() -> usize {
    1
}
fn d_one_f() -> f64 {
    1.0
}
fn d_batch() -> usize {
    32
}
fn d_micro() -> usize {
    4
}
fn d_len() -> usize {
    1024
}
fn d_warmup() -> f64 {
    0.1
}
fn d_schedule() -> Schedule {
    Schedule::Linear
}
fn d_b1() -> f64 {
    0.9
}
fn d_b2() -> f64 {
    0.999
}
fn d_eps() -> f64 {
    1e-8
}
fn d_beta() -> f64 {
    0.1
}
fn d_seed() -> u64 {
    42
}
fn d_device() -> String {
    "auto".into()
}
fn d_dtype() -> String {
    "f32".into()
}

impl TrainConfig {
    /// Read TOML, apply `key=value` overrides (values in TOML syntax; bare strings allowed).
    pub fn load(path: &Path, overrides: &[String]) -> anyhow::Result<Self> {
        Self::from_table(read_toml(path, overrides)?, &path.display().to_string())
    }

    /// Build from a TOML table; `origin` names it in errors.
    pub fn from_table(table: toml::Table, origin: &str) -> anyhow::Result<Self> {
        let cfg: TrainConfig = toml::Value::Table(table)
            .try_into()
            .map_err(|e: toml::de::Error| anyhow::anyhow!("{origin}: {}", e.message()))?;
        if cfg.micro_batch_size == 0
            || cfg.batch_size == 0
            || !cfg.batch_size.is_multiple_of(cfg.micro_batch_size)
        {
            bail!(
                "{origin}: batch_size ({}) must be a positive multiple of micro_batch_size ({})",
                cfg.batch_size,
                cfg.micro_batch_size
            );
        }
        Ok(cfg)
    }
}

/// A TOML file as a table (a syntax error names `file:line`), with `key=value` overrides.
pub fn read_toml(path: &Path, overrides: &[String]) -> anyhow::Result<toml::Table> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut table: toml::Table = toml::from_str(&text).map_err(|e| {
        let line = e
            .span()
            .map(|s| text[..s.start].matches('\n').count() + 1)
            .unwrap_or(0);
        anyhow::anyhow!("{}:{line}: {}", path.display(), e.message())
    })?;
    for o in overrides {
        set_override(&mut table, o)?;
    }
    Ok(table)
}

/// Apply one `key=value` override (a dotted key reaches into tables; the value in TOML
/// syntax, a bare string allowed) to a configuration table.
pub fn set_override(table: &mut toml::Table, o: &str) -> anyhow::Result<()> {
    let (k, v) = o
        .split_once('=')
        .with_context(|| format!("override `{o}` is not key=value"))?;
    let value = toml::from_str::<toml::Table>(&format!("v = {v}"))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(v.to_string()));
    let keys: Vec<&str> = k.trim().split('.').collect();
    let mut t = table;
    for key in &keys[..keys.len() - 1] {
        t = t
            .entry(key.to_string())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()))
            .as_table_mut()
            .with_context(|| format!("override `{o}`: `{key}` is not a table"))?;
    }
    t.insert(keys[keys.len() - 1].to_string(), value);
    Ok(())
}

/// What a finished run reports.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TrainSummary {
    pub steps: usize,
    pub resumed_from: Option<usize>,
    pub data: DataReport,
    pub final_loss: f64,
    pub final_dir: PathBuf,
    pub plot: Option<PathBuf>,
}

/// splitmix64-based permutation: the data order is a pure function of (seed, epoch).
fn permutation(n: usize, seed: u64, epoch: usize) -> Vec<usize> {
    let mut state = seed ^ (epoch as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let mut next = move || {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    };
    let mut p: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        p.swap(i, (next() % (i as u64 + 1)) as usize);
    }
    p
}

enum Examples {
    Sft(Vec<Sequence>),
    Dpo(Vec<Pair>),
}

impl Examples {
    fn len(&self) -> usize {
        match self {
            Examples::Sft(s) => s.len(),
            Examples::Dpo(p) => p.len(),
        }
    }

    fn length(&self, i: usize) -> usize {
        match self {
            Examples::Sft(s) => s[i].ids.len(),
            Examples::Dpo(p) => p[i].chosen.ids.len().max(p[i].rejected.ids.len()),
        }
    }
}

fn sha256_file(path: &Path) -> anyhow::Result<String> {
    let mut h = Sha256::new();
    let mut f =
        std::fs::File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
    std::io::copy(&mut f, &mut h)?;
    Ok(crate::plugin::hex(&h.finalize()))
}

/// The latest complete checkpoint in `dir` (`checkpoint-N` with `trainer_state.json`).
fn latest_checkpoint(dir: &Path) -> Option<(usize, PathBuf)> {
    std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join("trainer_state.json").exists())
        .filter_map(|p| {
            let n = p
                .file_name()?
                .to_str()?
                .strip_prefix("checkpoint-")?
                .parse()
                .ok()?;
            Some((n, p))
        })
        .max_by_key(|(n, _)| *n)
}

/// Append one JSON line with a single write, so a killed run leaves whole lines only.
fn append_line(path: &Path, v: &serde_json::Value) -> anyhow::Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    f.write_all(format!("{v}\n").as_bytes())?;
    Ok(())
}

/// Reference log-probs of every pair under the initial model, cached on disk keyed by the
/// model's weights, the data and the length limit, so the reference model is never held in
/// memory during training.
fn reference_logps(
    cfg: &TrainConfig,
    pairs: &[Pair],
    pad: i64,
    device: Device,
    kind: Kind,
) -> anyhow::Result<Vec<(f64, f64)>> {
    let weights = cfg.model.join("model.safetensors");
    let key = if weights.exists() {
        sha256_file(&weights)?
    } else {
        sha256_file(&cfg.model.join("config.json"))?
    };
    let data_key = sha256_file(&cfg.data)?;
    let cache = cfg.output_dir.join(format!(
        "ref_logps-{}-{}-{}.json",
        &key[..16],
        &data_key[..16],
        cfg.max_length
    ));
    if let Ok(text) = std::fs::read_to_string(&cache)
        && let Ok(v) = serde_json::from_str::<Vec<(f64, f64)>>(&text)
        && v.len() == pairs.len()
    {
        return Ok(v);
    }
    let reference = LoadedModel::load(&cfg.model, device, kind)?;
    let mut out = Vec::with_capacity(pairs.len());
    for chunk in pairs.chunks(cfg.micro_batch_size) {
        let logps = |side: &dyn Fn(&Pair) -> &Sequence| -> Vec<f64> {
            let seqs: Vec<&Sequence> = chunk.iter().map(side).collect();
            let (ids, attn, mask) = collate(&seqs, pad);
            let lp = tch::no_grad(|| {
                reference
                    .model
                    .token_logprobs(&ids.to_device(device), &attn.to_device(device))
            });
            let s = sequence_logps(&lp, &mask.to_device(device))
                .to_kind(Kind::Double)
                .to_device(Device::Cpu);
            Vec::<f64>::try_from(s).unwrap_or_default()
        };
        let c = logps(&|p| &p.chosen);
        let r = logps(&|p| &p.rejected);
        out.extend(c.into_iter().zip(r));
    }
    crate::model::weights::write_atomic(&cache, &serde_json::to_string(&out)?)?;
    Ok(out)
}

/// Run (or resume) training. `stop_after` ends the run after that many optimizer steps of
/// this invocation, as a kill would (tests use it).
pub fn train(cfg: &TrainConfig, stop_after: Option<usize>) -> anyhow::Result<TrainSummary> {
    let device = parse_device(&cfg.device)?;
    let kind = parse_dtype(&cfg.dtype)?;
    let tok_cfg = crate::model::ModelConfig::from_file(&cfg.model.join("config.json"))?;
    let tok = crate::model::Tokenizer::load(&cfg.model, &tok_cfg)?;
    // All data is read and validated before anything is written.
    let (examples, report) = match cfg.objective {
        Objective::Sft => {
            let (s, r) = data::load_sft(&cfg.data, &tok, cfg.max_length)?;
            (Examples::Sft(s), r)
        }
        Objective::Dpo => {
            let (p, r) = data::load_pairs(&cfg.data, &tok, cfg.max_length)?;
            (Examples::Dpo(p), r)
        }
    };
    if examples.len() == 0 {
        bail!("{}: no usable records ({report:?})", cfg.data.display());
    }
    std::fs::create_dir_all(&cfg.output_dir)
        .with_context(|| format!("cannot create {}", cfg.output_dir.display()))?;
    let pad = tok.pad_id;
    let refs = match &examples {
        Examples::Dpo(pairs) => Some(reference_logps(cfg, pairs, pad, device, kind)?),
        Examples::Sft(_) => None,
    };
    let resume = latest_checkpoint(&cfg.output_dir);
    let model_dir = resume
        .as_ref()
        .map_or(cfg.model.clone(), |(_, p)| p.clone());
    let lm = LoadedModel::load(&model_dir, device, kind)?;
    let params: Vec<(String, Tensor)> = lm.model.vs.variables().into_iter().collect();
    let mut opt = AdamW::new(
        params,
        AdamWConfig {
            beta1: cfg.adam_beta1,
            beta2: cfg.adam_beta2,
            eps: cfg.adam_eps,
            weight_decay: cfg.weight_decay,
        },
    );
    let metrics = cfg.output_dir.join("metrics.jsonl");
    let mut start = 0;
    if let Some((step, dir)) = &resume {
        let state = Tensor::read_safetensors(dir.join("optimizer.safetensors"))?;
        opt.load_state(&state, *step as i64)
            .map_err(|e| anyhow::anyhow!("{}: {e}", dir.display()))?;
        start = *step;
        // Drop metric lines the killed run wrote after its last checkpoint.
        if let Ok(text) = std::fs::read_to_string(&metrics) {
            let kept: Vec<&str> = text
                .lines()
                .filter(|l| {
                    serde_json::from_str::<serde_json::Value>(l)
                        .ok()
                        .and_then(|v| v["step"].as_u64())
                        .is_some_and(|s| s as usize <= start)
                })
                .collect();
            crate::model::weights::write_atomic(
                &metrics,
                &(kept.join("\n") + if kept.is_empty() { "" } else { "\n" }),
            )?;
        }
    } else {
        let _ = std::fs::remove_file(&metrics);
    }
    let n = examples.len();
    let steps_per_epoch = n.div_ceil(cfg.batch_size);
    let total = steps_per_epoch * cfg.epochs;
    let bar = indicatif::ProgressBar::new(total as u64).with_style(
        indicatif::ProgressStyle::with_template(
            "training {bar:30} {pos}/{len} steps, loss {msg}, ETA {eta}",
        )
        .expect("template"),
    );
    bar.set_position(start as u64);
    let mut last_loss = f64::NAN;
    for (done_now, step) in (start..total).enumerate() {
        if stop_after.is_some_and(|k| done_now >= k) {
            break;
        }
        let t0 = Instant::now();
        let epoch = step / steps_per_epoch;
        let order = permutation(n, cfg.seed, epoch);
        let at = (step % steps_per_epoch) * cfg.batch_size;
        let mut batch: Vec<usize> = order[at..(at + cfg.batch_size).min(n)].to_vec();
        // Length bucketing: similar lengths share a forward pass (less padding).
        batch.sort_by_key(|&i| (examples.length(i), i));
        let rows = batch.len() as f64;
        let (mut loss_sum, mut tokens) = (0.0, 0usize);
        let (mut rc, mut rr, mut acc) = (0.0, 0.0, 0.0);
        for micro in batch.chunks(cfg.micro_batch_size) {
            let scale = micro.len() as f64 / rows;
            let loss = match &examples {
                Examples::Sft(seqs) => {
                    let s: Vec<&Sequence> = micro.iter().map(|&i| &seqs[i]).collect();
                    let (ids, attn, mask) = collate(&s, pad);
                    tokens += s.iter().map(|x| x.ids.len()).sum::<usize>();
                    let lp = lm
                        .model
                        .token_logprobs(&ids.to_device(device), &attn.to_device(device));
                    sft_loss(&lp, &mask.to_device(device))
                }
                Examples::Dpo(pairs) => {
                    let refs = refs.as_ref().expect("computed for DPO");
                    let c: Vec<&Sequence> = micro.iter().map(|&i| &pairs[i].chosen).collect();
                    let r: Vec<&Sequence> = micro.iter().map(|&i| &pairs[i].rejected).collect();
                    tokens += c.iter().chain(&r).map(|x| x.ids.len()).sum::<usize>();
                    let (ci, ca, cm) = collate(&c, pad);
                    let (ri, ra, rm) = collate(&r, pad);
                    let (cm, rm) = (cm.to_device(device), rm.to_device(device));
                    let lc = lm
                        .model
                        .token_logprobs(&ci.to_device(device), &ca.to_device(device));
                    let lr = lm
                        .model
                        .token_logprobs(&ri.to_device(device), &ra.to_device(device));
                    let ref_c: Vec<f32> = micro.iter().map(|&i| refs[i].0 as f32).collect();
                    let ref_r: Vec<f32> = micro.iter().map(|&i| refs[i].1 as f32).collect();
                    let out = dpo_loss(
                        (&sequence_logps(&lc, &cm), &sequence_logps(&lr, &rm)),
                        (
                            &Tensor::from_slice(&ref_c).to_device(device),
                            &Tensor::from_slice(&ref_r).to_device(device),
                        ),
                        cfg.beta,
                        cfg.sft_weight,
                        &lc,
                        &cm,
                    );
                    rc += out.chosen_rewards.sum(Kind::Double).double_value(&[]);
                    rr += out.rejected_rewards.sum(Kind::Double).double_value(&[]);
                    acc += out
                        .chosen_rewards
                        .gt_tensor(&out.rejected_rewards)
                        .to_kind(Kind::Double)
                        .sum(Kind::Double)
                        .double_value(&[]);
                    out.loss
                }
            };
            loss_sum += loss.double_value(&[]) * scale;
            (loss * scale).backward();
        }
        let grad_norm = opt.clip_grad_norm(cfg.max_grad_norm);
        let lr = lr_at(cfg.lr, cfg.schedule, cfg.warmup_ratio, step, total);
        opt.step(lr);
        last_loss = loss_sum;
        let secs = t0.elapsed().as_secs_f64();
        let mut m = serde_json::json!({"step": step + 1, "epoch": epoch, "loss": loss_sum, "lr": lr,
            "grad_norm": grad_norm, "tokens_per_s": tokens as f64 / secs});
        if cfg.objective == Objective::Dpo {
            m["rewards_chosen"] = (rc / rows).into();
            m["rewards_rejected"] = (rr / rows).into();
            m["reward_margin"] = ((rc - rr) / rows).into();
            m["reward_accuracy"] = (acc / rows).into();
        }
        append_line(&metrics, &m)?;
        tracing::info!(
            step = step + 1,
            loss = loss_sum,
            lr,
            grad_norm,
            "train step"
        );
        bar.set_message(format!("{loss_sum:.4}"));
        bar.inc(1);
        let finished = step + 1 == total;
        if finished || (cfg.save_steps > 0 && (step + 1) % cfg.save_steps == 0) {
            save_checkpoint(&lm, &model_dir, &opt, &cfg.output_dir, step + 1)?;
        }
    }
    bar.finish_and_clear();
    let final_dir = cfg.output_dir.join("final");
    let completed = latest_checkpoint(&cfg.output_dir).is_some_and(|(s, _)| s == total);
    if completed {
        lm.save(&final_dir)?;
    }
    let plot = if completed {
        plot_metrics(&metrics, &cfg.output_dir.join("loss.png")).ok()
    } else {
        None
    };
    Ok(TrainSummary {
        steps: total,
        resumed_from: resume.map(|(s, _)| s),
        data: report,
        final_loss: last_loss,
        final_dir,
        plot,
    })
}

/// `checkpoint-N`: an HF model directory plus `optimizer.safetensors` and
/// `trainer_state.json`, written under a temporary name and renamed when complete.
fn save_checkpoint(
    lm: &LoadedModel,
    source: &Path,
    opt: &AdamW,
    out: &Path,
    step: usize,
) -> anyhow::Result<()> {
    let dir = out.join(format!("checkpoint-{step}"));
    let tmp = out.join(format!(".checkpoint-{step}.tmp"));
    let _ = std::fs::remove_dir_all(&tmp);
    crate::model::weights::save_dir(&lm.model, source, &tmp)?;
    Tensor::write_safetensors(&opt.state(), tmp.join("optimizer.safetensors"))?;
    crate::model::weights::write_atomic(
        &tmp.join("trainer_state.json"),
        &serde_json::json!({"step": step, "optimizer_step": opt.step}).to_string(),
    )?;
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::rename(&tmp, &dir)?;
    // Keep only the newest checkpoint: it is all a resume needs.
    for entry in std::fs::read_dir(out)?.flatten() {
        let p = entry.path();
        if p != dir
            && p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("checkpoint-"))
        {
            let _ = std::fs::remove_dir_all(p);
        }
    }
    Ok(())
}

/// A PNG of the loss (and DPO reward margin) per step from `metrics.jsonl`.
pub fn plot_metrics(metrics: &Path, out: &Path) -> anyhow::Result<PathBuf> {
    let text = std::fs::read_to_string(metrics)?;
    let mut loss = Vec::new();
    let mut margin = Vec::new();
    for l in text.lines() {
        let v: serde_json::Value = serde_json::from_str(l)?;
        let s = v["step"].as_f64().unwrap_or(0.0);
        if let Some(x) = v["loss"].as_f64() {
            loss.push((s, x));
        }
        if let Some(x) = v["reward_margin"].as_f64() {
            margin.push((s, x));
        }
    }
    let mut series = vec![("loss", loss)];
    if !margin.is_empty() {
        series.push(("reward margin", margin));
    }
    crate::plot::line_chart(out, "training", &series)?;
    Ok(out.to_path_buf())
}
