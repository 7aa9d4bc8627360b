//! `spar-host run`: SPaR self-play iterations (ALGORITHM.md §3), resumable.
//!
//! Per iteration `t` the run directory holds `iter-t/` with one artifact per stage:
//!
//! | stage | artifact | unit of work |
//! |---|---|---|
//! | prompts | `prompts.jsonl` | this iteration's slice of the pool |
//! | sample | `samples.jsonl` | one prompt: n responses of the actor |
//! | judge | `judgments.jsonl` | one prompt: each response judged by vote |
//! | roots | `roots.jsonl` | one negative response per prompt that has one |
//! | search | `trees.jsonl` | one tree (or the reason it failed) |
//! | data | `pairs.jsonl`, `rft.jsonl`, `data.json` | DPO pairs and refiner data |
//! | train-actor | `actor/` (+ `actor.done.json`) | DPO + SFT of the actor |
//! | train-refiner | `refiner/` (+ `refiner.done.json`) | RFT of the refiner |
//!
//! Item stages append one JSON line per finished unit to `X.jsonl.partial` (one `write` per
//! line; a torn last line is cut on restart) and, once every unit is done, write `X.jsonl`
//! sorted by prompt index (temporary file, then rename) and remove the partial file. A stage
//! whose artifact exists is skipped; a restarted stage does only the units missing from its
//! partial file. Every random choice and every sampling seed derives from the run seed, the
//! iteration and the prompt index, and the engine's samples do not depend on what shares
//! their batch, so a resumed run writes what an uninterrupted one would have.
//! `manifest.json` records the configuration's hash, the models of every iteration and each
//! stage's counts and time.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::backend::{Generator, Outage, Remote, RemoteConfig};
use crate::model::generate::{Engine, SamplingParams};
use crate::model::tokenizer::ChatMessage;
use crate::model::weights::write_atomic;
use crate::model::{LoadedModel, parse_device, parse_dtype};
use crate::plugin::checker::{Checker, CheckerSet};
use crate::plugin::prompts::Prompts;
use crate::plugin::search::{Judgment, Node, Outcome, SearchParams, SearchStrategy};
use crate::plugin::types::Message;
use crate::plugin::{Plugin, PluginHost, PluginKind};
use crate::selfplay::judge::{Constraints, ModelSearchHost, ValueMode, VoteConfig, judge_response};
use crate::selfplay::tree::critique_pools;
use crate::train::trainer::{Objective, TrainConfig, read_toml, train};

// ---------------------------------------------------------------------------------------
// Configuration

/// A self-play run, as read from TOML (`configs/spar.toml`, `configs/demo.toml`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunConfig {
    /// Where artifacts, models and the manifest go.
    pub run_dir: PathBuf,
    /// The prompt pool: JSONL rows with `prompt`, optionally `id`, and IFEval-style
    /// `instruction_id_list` + `kwargs` naming verifiable constraints.
    pub prompts: PathBuf,
    #[serde(default = "d_one")]
    pub iterations: usize,
    /// Prompts per iteration, each iteration a fresh slice of the pool (0 = the whole pool).
    #[serde(default)]
    pub prompts_per_iteration: usize,
    #[serde(default = "d_seed")]
    pub seed: u64,
    #[serde(default = "d_device")]
    pub device: String,
    #[serde(default = "d_dtype")]
    pub dtype: String,
    /// Sequences per generation batch.
    #[serde(default = "d_rows")]
    pub max_batch_rows: usize,
    /// Units of work (prompts, trees) in flight at once.
    #[serde(default = "d_concurrency")]
    pub concurrency: usize,
    /// Where a node's value comes from: `vote` (the paper), `checkers` or `both`.
    #[serde(default)]
    pub value: ValueMode,
    #[serde(default)]
    pub models: Models,
    #[serde(default)]
    pub plugins: Plugins,
    #[serde(default)]
    pub sample: Sample,
    #[serde(default)]
    pub judge: VoteConfig,
    #[serde(default)]
    pub search: Search,
    #[serde(default)]
    pub rft: RftCaps,
    /// DPO settings of the actor (the keys of `spar-host train`'s config except
    /// objective, model, data and output_dir, which the pipeline sets).
    #[serde(default = "d_actor_train")]
    pub actor_train: toml::Table,
    /// SFT settings of the refiner (as `actor_train`).
    #[serde(default = "d_refiner_train")]
    pub refiner_train: toml::Table,
    /// Roles served by OpenAI-compatible endpoints instead of the native engine. Not part
    /// of the run's identity: a run may resume on other servers.
    #[serde(default, skip_serializing_if = "Remotes::is_empty")]
    pub remote: Remotes,
}

/// `[remote.actor]`, `[remote.refiner]`, `[remote.judge]` (the judge is the refiner unless
/// given).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Remotes {
    #[serde(default)]
    pub actor: Option<RemoteConfig>,
    #[serde(default)]
    pub refiner: Option<RemoteConfig>,
    #[serde(default)]
    pub judge: Option<RemoteConfig>,
}

impl Remotes {
    pub fn is_empty(&self) -> bool {
        self == &Remotes::default()
    }
}

/// The starting models; the same directory for both means one model, loaded once.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Models {
    pub actor: PathBuf,
    pub refiner: PathBuf,
}

impl Default for Models {
    fn default() -> Self {
        let d = crate::model::default_model_dir();
        Self {
            actor: d.clone(),
            refiner: d,
        }
    }
}

/// Plugins by name (found on the plugin path) or path.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Plugins {
    pub search: String,
    pub prompts: String,
    pub checkers: Vec<String>,
}

impl Default for Plugins {
    fn default() -> Self {
        Self {
            search: "bfs".into(),
            prompts: "spar-prompts".into(),
            checkers: vec!["spar-checks".into()],
        }
    }
}

/// The actor's sampling (§3.1), paper values by default.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Sample {
    pub n: usize,
    pub temperature: f64,
    pub top_p: f64,
    pub max_new_tokens: usize,
}

impl Default for Sample {
    fn default() -> Self {
        Self {
            n: 5,
            temperature: 0.9,
            top_p: 0.9,
            max_new_tokens: 2048,
        }
    }
}

/// The tree search (§3.4) and the refiner's sampling for refinements.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Search {
    pub budget: i32,
    pub branch: u32,
    pub select_branch: u32,
    pub max_depth: u32,
    pub end_gate: f64,
    pub refine_attempts: u32,
    pub temperature: f64,
    pub top_p: f64,
    pub max_new_tokens: usize,
}

impl Default for Search {
    fn default() -> Self {
        let p = SearchParams::default();
        Self {
            budget: 15,
            branch: p.branch,
            select_branch: p.select_branch,
            max_depth: p.max_depth,
            end_gate: p.end_gate,
            refine_attempts: p.refine_attempts,
            temperature: 0.7,
            top_p: 1.0,
            max_new_tokens: 2048,
        }
    }
}

impl Search {
    pub fn params(&self) -> SearchParams {
        SearchParams {
            branch: self.branch,
            select_branch: self.select_branch,
            max_depth: self.max_depth,
            end_gate: self.end_gate,
            refine_attempts: self.refine_attempts,
        }
    }
}

/// Per-iteration caps on the refiner's data (§3.6, the reference's values).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RftCaps {
    pub refinement: usize,
    pub positive_critique: usize,
    pub negative_critique: usize,
    pub negative_judgment: usize,
    pub positive_judgment: usize,
}

impl Default for RftCaps {
    fn default() -> Self {
        Self {
            refinement: 4000,
            positive_critique: 1500,
            negative_critique: 1000,
            negative_judgment: 500,
            positive_judgment: 2500,
        }
    }
}

fn d_one() -> usize {
    1
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
fn d_rows() -> usize {
    64
}
fn d_concurrency() -> usize {
    64
}
fn d_actor_train() -> toml::Table {
    toml::toml! {
        lr = 2e-7
        epochs = 1
        batch_size = 32
        micro_batch_size = 2
        warmup_ratio = 0.1
        schedule = "linear"
        beta = 0.1
        sft_weight = 0.1
    }
}
fn d_refiner_train() -> toml::Table {
    toml::toml! {
        lr = 1e-6
        epochs = 1
        batch_size = 32
        micro_batch_size = 2
        warmup_ratio = 0.1
        schedule = "linear"
    }
}

impl RunConfig {
    /// Read TOML and apply `key=value` overrides (dotted keys reach into tables).
    pub fn load(path: &Path, overrides: &[String]) -> anyhow::Result<Self> {
        let table = read_toml(path, overrides)?;
        let cfg: RunConfig = toml::Value::Table(table)
            .try_into()
            .map_err(|e: toml::de::Error| anyhow::anyhow!("{}: {}", path.display(), e.message()))?;
        cfg.validate(&path.display().to_string())?;
        Ok(cfg)
    }

    fn validate(&self, origin: &str) -> anyhow::Result<()> {
        if self.iterations == 0 || self.sample.n == 0 || self.judge.k == 0 {
            bail!("{origin}: iterations, sample.n and judge.k must be at least 1");
        }
        if self.max_batch_rows == 0 || self.concurrency == 0 {
            bail!("{origin}: max_batch_rows and concurrency must be at least 1");
        }
        // The training tables must make valid training configs.
        self.train_config(
            Objective::Dpo,
            Path::new("m"),
            Path::new("d"),
            Path::new("o"),
        )
        .with_context(|| format!("{origin}: [actor_train]"))?;
        self.train_config(
            Objective::Sft,
            Path::new("m"),
            Path::new("d"),
            Path::new("o"),
        )
        .with_context(|| format!("{origin}: [refiner_train]"))?;
        Ok(())
    }

    fn train_config(
        &self,
        objective: Objective,
        model: &Path,
        data: &Path,
        out: &Path,
    ) -> anyhow::Result<TrainConfig> {
        let mut t = match objective {
            Objective::Dpo => self.actor_train.clone(),
            Objective::Sft => self.refiner_train.clone(),
        };
        for k in ["objective", "model", "data", "output_dir"] {
            if t.contains_key(k) {
                bail!("`{k}` is set by the pipeline");
            }
        }
        let s = |p: &Path| toml::Value::String(p.display().to_string());
        t.insert(
            "objective".into(),
            toml::Value::String(format!("{objective:?}").to_lowercase()),
        );
        t.insert("model".into(), s(model));
        t.insert("data".into(), s(data));
        t.insert("output_dir".into(), s(out));
        t.entry("device")
            .or_insert_with(|| toml::Value::String(self.device.clone()));
        t.entry("dtype")
            .or_insert_with(|| toml::Value::String(self.dtype.clone()));
        t.entry("seed")
            .or_insert_with(|| toml::Value::Integer(self.seed as i64));
        TrainConfig::from_table(t, "training")
    }

    /// The hash that ties a run directory to its configuration.
    pub fn sha256(&self) -> String {
        use sha2::Digest;
        let text = serde_json::to_string(&RunConfig {
            remote: Remotes::default(),
            ..self.clone()
        })
        .expect("config serializes");
        crate::plugin::hex(&sha2::Sha256::digest(text.as_bytes()))
    }
}

// ---------------------------------------------------------------------------------------
// Prompts

/// One prompt of the pool.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PromptRow {
    /// Position in the pool.
    pub idx: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<Value>,
    pub prompt: String,
    #[serde(default)]
    pub instruction_id_list: Vec<String>,
    #[serde(default)]
    pub kwargs: Vec<Map<String, Value>>,
}

/// Read and validate the whole pool before any work: a bad line is an error naming the file
/// and line.
pub fn read_prompts(path: &Path) -> anyhow::Result<Vec<PromptRow>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut rows = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let at = format!("{}:{}", path.display(), i + 1);
        let v: Value = serde_json::from_str(line).map_err(|e| anyhow::anyhow!("{at}: {e}"))?;
        let Value::Object(o) = v else {
            bail!("{at}: not a JSON object");
        };
        let prompt = match o.get("prompt") {
            Some(Value::String(s)) if !s.trim().is_empty() => s.clone(),
            Some(Value::String(_)) => bail!("{at}: `prompt` is empty"),
            Some(_) => bail!("{at}: `prompt` is not a string"),
            None => bail!("{at}: missing `prompt`"),
        };
        let ids: Vec<String> = match o.get("instruction_id_list") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(a)) => a
                .iter()
                .map(|x| x.as_str().map(str::to_string))
                .collect::<Option<_>>()
                .with_context(|| format!("{at}: `instruction_id_list` must hold strings"))?,
            Some(_) => bail!("{at}: `instruction_id_list` must be a list"),
        };
        let kwargs: Vec<Map<String, Value>> = match o.get("kwargs") {
            None | Some(Value::Null) => vec![Map::new(); ids.len()],
            Some(Value::Array(a)) => a
                .iter()
                .map(|x| match x {
                    // IFEval writes unused kwargs as null; they mean "not given".
                    Value::Object(m) => Some(
                        m.iter()
                            .filter(|(_, v)| !v.is_null())
                            .map(|(k, v)| (k.clone(), v.clone()))
                            .collect(),
                    ),
                    _ => None,
                })
                .collect::<Option<_>>()
                .with_context(|| format!("{at}: `kwargs` must hold objects"))?,
            Some(_) => bail!("{at}: `kwargs` must be a list"),
        };
        if kwargs.len() != ids.len() {
            bail!(
                "{at}: {} instruction ids but {} kwargs",
                ids.len(),
                kwargs.len()
            );
        }
        rows.push(PromptRow {
            idx: rows.len(),
            id: o.get("id").cloned(),
            prompt,
            instruction_id_list: ids,
            kwargs,
        });
    }
    if rows.is_empty() {
        bail!("{}: no prompts", path.display());
    }
    Ok(rows)
}

// ---------------------------------------------------------------------------------------
// Records

/// `samples.jsonl`: the actor's responses to one prompt.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SampleRec {
    pub idx: usize,
    pub responses: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// One response's judgment.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Judged {
    pub response: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub judgment: Option<Judgment>,
    /// Whether the checker plugins pass every constraint of the prompt (when it has any).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkers_pass: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// `judgments.jsonl`: the judgments of one prompt's responses.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JudgeRec {
    pub idx: usize,
    pub judged: Vec<Judged>,
}

impl JudgeRec {
    /// A prompt whose judging failed as a whole, with the reason.
    fn failed(idx: usize, error: String) -> Self {
        JudgeRec {
            idx,
            judged: vec![Judged {
                response: 0,
                judgment: None,
                checkers_pass: None,
                error: Some(error),
            }],
        }
    }
}

/// `roots.jsonl`: a negative response that a tree refines.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RootRec {
    pub idx: usize,
    pub response: usize,
    pub text: String,
    pub critique: String,
}

/// `trees.jsonl`: a searched tree, or why it failed.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TreeRec {
    pub idx: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<Outcome>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget_left: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

// ---------------------------------------------------------------------------------------
// Seeds and choices

/// A seed for one purpose, from the run seed and a path of integers (splitmix64 mixing).
pub fn derive(seed: u64, parts: &[u64]) -> u64 {
    let mut z = seed;
    for &p in parts {
        z = z.wrapping_add(p.wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
    }
    z
}

const S_SAMPLE: u64 = 1;
const S_JUDGE: u64 = 2;
const S_ROOT: u64 = 3;
const S_SEARCH: u64 = 4;
const S_CRITIQUE: u64 = 5;
const S_SHUFFLE: u64 = 6;

/// A seeded Fisher–Yates shuffle.
pub(crate) fn shuffle<T>(v: &mut [T], seed: u64) {
    for i in (1..v.len()).rev() {
        let j = (derive(seed, &[i as u64]) % (i as u64 + 1)) as usize;
        v.swap(i, j);
    }
}

// ---------------------------------------------------------------------------------------
// Artifacts

/// The rows of a JSONL file; a bad line is an error naming file and line.
pub(crate) fn read_jsonl<T: for<'de> Deserialize<'de>>(path: &Path) -> anyhow::Result<Vec<T>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str(l)
                .map_err(|e| anyhow::anyhow!("{}:{}: {e}", path.display(), i + 1))
        })
        .collect()
}

fn write_jsonl<T: Serialize>(path: &Path, rows: &[T]) -> anyhow::Result<()> {
    let mut text = String::new();
    for r in rows {
        text.push_str(&serde_json::to_string(r)?);
        text.push('\n');
    }
    write_atomic(path, &text)?;
    Ok(())
}

fn partial_path(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".partial");
    PathBuf::from(s)
}

/// The records of a partial file, after cutting a torn last line.
fn read_partial<T: for<'de> Deserialize<'de>>(path: &Path) -> anyhow::Result<Vec<T>> {
    let Ok(bytes) = std::fs::read(path) else {
        return Ok(Vec::new());
    };
    let keep = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    if keep < bytes.len() {
        tracing::warn!(
            "{}: dropping a torn last line ({} bytes)",
            path.display(),
            bytes.len() - keep
        );
        let f = std::fs::OpenOptions::new().write(true).open(path)?;
        f.set_len(keep as u64)?;
        f.sync_all()?;
    }
    read_jsonl(path)
}

/// Test hook: `SPAR_ABORT_AT=STAGE:N` aborts the process (as a kill would: no cleanup) once
/// `N` units of `STAGE` are written in this process, or `STAGE:end` right after the stage's
/// artifact is complete.
fn abort_point(stage: &str, what: &str) {
    if let Ok(v) = std::env::var("SPAR_ABORT_AT")
        && v == format!("{stage}:{what}")
    {
        eprintln!("SPAR_ABORT_AT={v}: aborting");
        std::process::abort();
    }
}

fn progress(stage: &str, total: usize, done: usize) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(total as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template(&format!(
            "{stage:>13} {{bar:30}} {{pos}}/{{len}} [{{elapsed_precise}}, ETA {{eta}}]"
        ))
        .expect("valid template"),
    );
    bar.set_position(done as u64);
    bar
}

/// Run `work` for every unit missing from the artifact at `path`, `concurrency` at a time,
/// appending each result to the partial file as it finishes; then write the artifact sorted
/// by index. A panicking unit is recorded through `on_panic`.
#[allow(clippy::too_many_arguments)]
async fn item_stage<I, R, F, Fut>(
    stage: &str,
    outage: &Outage,
    path: &Path,
    units: Vec<(usize, I)>,
    concurrency: usize,
    work: F,
    on_panic: impl Fn(usize, String) -> R,
) -> anyhow::Result<Vec<R>>
where
    I: Send + 'static,
    R: Serialize + for<'de> Deserialize<'de> + Send + 'static + HasIdx,
    F: Fn(usize, I) -> Fut,
    Fut: Future<Output = R> + Send + 'static,
{
    if path.exists() {
        return read_jsonl(path);
    }
    let partial = partial_path(path);
    let mut done: BTreeMap<usize, R> = BTreeMap::new();
    for r in read_partial::<R>(&partial)? {
        done.insert(r.idx(), r);
    }
    let total = units.len();
    let bar = progress(stage, total, done.len());
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&partial)
        .with_context(|| format!("cannot open {}", partial.display()))?;
    let mut set = tokio::task::JoinSet::new();
    let mut ids: HashMap<tokio::task::Id, usize> = HashMap::new();
    let mut written = 0usize;
    let mut pending = units
        .into_iter()
        .filter(|(i, _)| !done.contains_key(i))
        .collect::<Vec<_>>()
        .into_iter();
    loop {
        while set.len() < concurrency {
            let Some((i, unit)) = pending.next() else {
                break;
            };
            let h = set.spawn(work(i, unit));
            ids.insert(h.id(), i);
        }
        let Some(joined) = set.join_next_with_id().await else {
            break;
        };
        // A remote backend that gave up fails this record and would fail the rest: stop
        // here, keeping what was written, so a rerun continues once the server is back.
        if let Some(why) = outage.get() {
            set.abort_all();
            bar.abandon();
            bail!(
                "stage {stage} stopped: {why}; {} of {total} records are kept in {} — rerun the same command to continue",
                done.len(),
                partial.display()
            );
        }
        let rec = match joined {
            Ok((_, r)) => r,
            Err(e) => {
                let i = ids[&e.id()];
                on_panic(i, format!("the task failed: {e}"))
            }
        };
        // One write per line: a kill leaves at most a torn last line.
        let mut line = serde_json::to_string(&rec)?;
        line.push('\n');
        file.write_all(line.as_bytes())
            .with_context(|| format!("cannot append to {}", partial.display()))?;
        file.flush()?;
        written += 1;
        bar.inc(1);
        abort_point(stage, &written.to_string());
        done.insert(rec.idx(), rec);
    }
    bar.finish_and_clear();
    let rows: Vec<R> = done.into_values().collect();
    write_jsonl(path, &rows)?;
    let _ = std::fs::remove_file(&partial);
    abort_point(stage, "end");
    Ok(rows)
}

pub trait HasIdx {
    fn idx(&self) -> usize;
}
macro_rules! has_idx {
    ($($t:ty),*) => {$(
        impl HasIdx for $t {
            fn idx(&self) -> usize {
                self.idx
            }
        }
    )*};
}
has_idx!(SampleRec, JudgeRec, TreeRec);

// ---------------------------------------------------------------------------------------
// Manifest

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct StageInfo {
    pub name: String,
    pub done: bool,
    pub seconds: f64,
    #[serde(default)]
    pub counts: BTreeMap<String, f64>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct IterInfo {
    pub iteration: usize,
    pub actor: PathBuf,
    pub refiner: PathBuf,
    pub stages: Vec<StageInfo>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Manifest {
    pub config_sha256: String,
    pub config: Value,
    pub iterations: Vec<IterInfo>,
    pub finished: bool,
}

impl Manifest {
    fn stage(&mut self, iteration: usize, name: &str) -> &mut StageInfo {
        let it = self
            .iterations
            .iter_mut()
            .find(|i| i.iteration == iteration)
            .expect("iteration registered");
        if let Some(k) = it.stages.iter().position(|s| s.name == name) {
            &mut it.stages[k]
        } else {
            it.stages.push(StageInfo {
                name: name.into(),
                ..Default::default()
            });
            it.stages.last_mut().expect("just pushed")
        }
    }
}

// ---------------------------------------------------------------------------------------
// The run

/// Everything the stages share.
struct Ctx {
    cfg: RunConfig,
    outage: Outage,
    host: PluginHost,
    search: SearchStrategy,
    prompts_plugin: Plugin,
    checker_plugins: Vec<Plugin>,
    manifest: Manifest,
    manifest_path: PathBuf,
}

/// Plugins given on the command line replace the configured ones of their kind.
pub fn apply_plugin_overrides(
    cfg: &mut RunConfig,
    host: &PluginHost,
    plugins: &[String],
) -> anyhow::Result<()> {
    let mut checkers = Vec::new();
    for p in plugins {
        let path = PluginHost::resolve(p)?;
        let plugin = host.load(&path)?;
        let s = path.display().to_string();
        match plugin.kind {
            Some(PluginKind::SearchStrategy) => cfg.plugins.search = s,
            Some(PluginKind::JudgePrompts) => cfg.plugins.prompts = s,
            Some(PluginKind::Checker) => checkers.push(s),
            Some(k) => bail!("--plugin {p}: a {} plugin has no role in a run", k.world()),
            None => bail!("--plugin {p}: exports no spar world"),
        }
    }
    if !checkers.is_empty() {
        cfg.plugins.checkers = checkers;
    }
    Ok(())
}

fn load_plugin(host: &PluginHost, name: &str, kind: PluginKind) -> anyhow::Result<Plugin> {
    let path = PluginHost::resolve(name)?;
    let p = host.load(&path)?;
    p.expect_kind(kind)?;
    Ok(p)
}

/// A summary of a finished run, per iteration.
#[derive(Debug, Clone, Serialize)]
pub struct RunSummary {
    pub run_dir: PathBuf,
    pub iterations: Vec<IterInfo>,
    pub final_actor: PathBuf,
    pub final_refiner: PathBuf,
}

impl std::fmt::Display for RunSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for it in &self.iterations {
            writeln!(f, "iteration {}", it.iteration)?;
            for s in &it.stages {
                let counts = s
                    .counts
                    .iter()
                    .map(|(k, v)| {
                        if v.fract() == 0.0 {
                            format!("{k} {v}")
                        } else {
                            format!("{k} {v:.3}")
                        }
                    })
                    .collect::<Vec<_>>()
                    .join(", ");
                writeln!(f, "  {:<13} {:>8.1} s  {counts}", s.name, s.seconds)?;
            }
        }
        writeln!(f, "actor: {}", self.final_actor.display())?;
        writeln!(f, "refiner: {}", self.final_refiner.display())?;
        write!(f, "run: {}", self.run_dir.display())
    }
}

/// Run (or resume) the self-play iterations of `cfg`.
pub async fn run(cfg: RunConfig, host: PluginHost) -> anyhow::Result<RunSummary> {
    // Everything that can be wrong with the input is found before any work.
    let pool = read_prompts(&cfg.prompts)?;
    let search = SearchStrategy::from_plugin(load_plugin(
        &host,
        &cfg.plugins.search,
        PluginKind::SearchStrategy,
    )?)
    .await?;
    let prompts_plugin = load_plugin(&host, &cfg.plugins.prompts, PluginKind::JudgePrompts)?;
    let checker_plugins = cfg
        .plugins
        .checkers
        .iter()
        .map(|c| load_plugin(&host, c, PluginKind::Checker))
        .collect::<anyhow::Result<Vec<_>>>()?;
    for m in [&cfg.models.actor, &cfg.models.refiner] {
        if !m.join("config.json").exists() {
            bail!("{}: not a model directory (no config.json)", m.display());
        }
    }
    // Constraint ids must be known to a checker when the value uses them.
    if cfg.value != ValueMode::Vote {
        let set = checker_set(&checker_plugins).await?;
        for r in &pool {
            for id in &r.instruction_id_list {
                if !set.specs.iter().any(|s| &s.id == id) {
                    bail!(
                        "{}: prompt {} names instruction `{id}`, which no loaded checker plugin lists",
                        cfg.prompts.display(),
                        r.idx + 1
                    );
                }
            }
        }
    }
    std::fs::create_dir_all(&cfg.run_dir)
        .with_context(|| format!("cannot create {}", cfg.run_dir.display()))?;
    let manifest_path = cfg.run_dir.join("manifest.json");
    let sha = cfg.sha256();
    let manifest = if manifest_path.exists() {
        let m: Manifest = serde_json::from_str(&std::fs::read_to_string(&manifest_path)?)
            .with_context(|| format!("{}: not a manifest", manifest_path.display()))?;
        if m.config_sha256 != sha {
            bail!(
                "{}: this run was started with another configuration; use a new run_dir or the original configuration",
                manifest_path.display()
            );
        }
        m
    } else {
        Manifest {
            config_sha256: sha,
            config: serde_json::to_value(&cfg)?,
            ..Default::default()
        }
    };
    let mut ctx = Ctx {
        cfg,
        outage: Outage::default(),
        host,
        search,
        prompts_plugin,
        checker_plugins,
        manifest,
        manifest_path,
    };
    ctx.save_manifest()?;
    let (mut actor, mut refiner) = (ctx.cfg.models.actor.clone(), ctx.cfg.models.refiner.clone());
    for t in 1..=ctx.cfg.iterations {
        let (a, r) = ctx.iteration(t, &pool, &actor, &refiner).await?;
        (actor, refiner) = (a, r);
    }
    ctx.manifest.finished = true;
    ctx.save_manifest()?;
    let _ = &ctx.host;
    Ok(RunSummary {
        run_dir: ctx.cfg.run_dir.clone(),
        iterations: ctx.manifest.iterations.clone(),
        final_actor: actor,
        final_refiner: refiner,
    })
}

async fn checker_set(plugins: &[Plugin]) -> anyhow::Result<CheckerSet> {
    let mut cs = Vec::new();
    for p in plugins {
        cs.push(Checker::from_plugin(p.clone()).await?);
    }
    Ok(CheckerSet::new(cs).await?)
}

fn chat_of(messages: Vec<Message>) -> Vec<Value> {
    messages
        .into_iter()
        .map(|m| json!({"role": m.role, "content": m.content}))
        .collect()
}

fn user(prompt: &str) -> Vec<ChatMessage> {
    vec![ChatMessage {
        role: "user".into(),
        content: prompt.into(),
    }]
}

impl Ctx {
    fn save_manifest(&self) -> anyhow::Result<()> {
        write_atomic(
            &self.manifest_path,
            &serde_json::to_string_pretty(&self.manifest)?,
        )?;
        Ok(())
    }

    fn finish_stage<K: AsRef<str>>(
        &mut self,
        t: usize,
        name: &str,
        started: Instant,
        counts: &[(K, f64)],
    ) -> anyhow::Result<()> {
        let s = self.manifest.stage(t, name);
        if !s.done {
            s.seconds += started.elapsed().as_secs_f64();
        }
        s.done = true;
        // JSON has no NaN (a resumed training that had no step left reports no loss).
        s.counts = counts
            .iter()
            .filter(|(_, v)| v.is_finite())
            .map(|(k, v)| (k.as_ref().to_string(), *v))
            .collect();
        self.save_manifest()
    }

    /// Time spent in a stage that did not finish is kept for the summary.
    fn stage_done(&mut self, t: usize, name: &str) -> bool {
        self.manifest.stage(t, name).done
    }

    /// The generators of the actor, the refiner and the judge: remote where configured,
    /// else native engines (one for both models when they are the same directory).
    fn engines(
        &self,
        t: usize,
        actor: &Path,
        refiner: &Path,
    ) -> anyhow::Result<(Generator, Generator, Generator)> {
        let device = parse_device(&self.cfg.device)?;
        let kind = parse_dtype(&self.cfg.dtype)?;
        let rows = self.cfg.max_batch_rows;
        let remote = |role: &str, c: &RemoteConfig, model: &Path| -> anyhow::Result<Generator> {
            if t > 1 {
                tracing::warn!(
                    "iteration {t}: the {role} is served remotely; serve {} there (see docs/scaling.md)",
                    model.display()
                );
            }
            Ok(Generator::Remote(std::sync::Arc::new(Remote::new(
                role,
                c.clone(),
                self.outage.clone(),
            )?)))
        };
        let r = &self.cfg.remote;
        let local_actor = match &r.actor {
            Some(_) => None,
            None => Some(Engine::start(
                LoadedModel::load(actor, device, kind)?,
                rows,
            )?),
        };
        let same = std::fs::canonicalize(actor).ok() == std::fs::canonicalize(refiner).ok();
        let a = match (&r.actor, &local_actor) {
            (Some(c), _) => remote("actor", c, actor)?,
            (None, Some(e)) => Generator::Local(e.clone()),
            (None, None) => unreachable!("a local actor was started"),
        };
        let f = match (&r.refiner, &local_actor) {
            (Some(c), _) => remote("refiner", c, refiner)?,
            (None, Some(e)) if same => Generator::Local(e.clone()),
            (None, _) => Generator::Local(Engine::start(
                LoadedModel::load(refiner, device, kind)?,
                rows,
            )?),
        };
        let j = match &r.judge {
            Some(c) => remote("judge", c, refiner)?,
            None => f.clone(),
        };
        Ok((a, f, j))
    }

    async fn iteration(
        &mut self,
        t: usize,
        pool: &[PromptRow],
        actor: &Path,
        refiner: &Path,
    ) -> anyhow::Result<(PathBuf, PathBuf)> {
        let dir = self.cfg.run_dir.join(format!("iter-{t}"));
        std::fs::create_dir_all(&dir)?;
        if !self.manifest.iterations.iter().any(|i| i.iteration == t) {
            self.manifest.iterations.push(IterInfo {
                iteration: t,
                actor: actor.to_path_buf(),
                refiner: refiner.to_path_buf(),
                stages: Vec::new(),
            });
        }
        let seed = derive(self.cfg.seed, &[t as u64]);

        // prompts: this iteration's slice of the pool (wrapping around it).
        let started = Instant::now();
        let per = match self.cfg.prompts_per_iteration {
            0 => pool.len(),
            n => n,
        };
        let slice: Vec<PromptRow> = (0..per)
            .map(|k| pool[((t - 1) * per + k) % pool.len()].clone())
            .collect();
        let prompts_path = dir.join("prompts.jsonl");
        if !prompts_path.exists() {
            write_jsonl(&prompts_path, &slice)?;
        }
        let by_idx: HashMap<usize, PromptRow> = slice.iter().map(|p| (p.idx, p.clone())).collect();
        self.finish_stage(t, "prompts", started, &[("prompts", slice.len() as f64)])?;

        let training_done =
            dir.join("actor.done.json").exists() && dir.join("refiner.done.json").exists();
        let need_models = !training_done && !dir.join("data.json").exists();
        let engines = if need_models {
            Some(self.engines(t, actor, refiner)?)
        } else {
            None
        };

        if let Some((actor_engine, refiner_engine, judge_engine)) = engines {
            // sample
            let started = Instant::now();
            let sample = self.cfg.sample.clone();
            let units: Vec<(usize, PromptRow)> = slice.iter().map(|p| (p.idx, p.clone())).collect();
            let eng = actor_engine.clone();
            let samples = item_stage(
                "sample",
                &self.outage,
                &dir.join("samples.jsonl"),
                units,
                self.cfg.concurrency,
                move |i, p: PromptRow| {
                    let eng = eng.clone();
                    let params = SamplingParams {
                        n: sample.n,
                        temperature: sample.temperature,
                        top_p: sample.top_p,
                        max_new_tokens: sample.max_new_tokens,
                        seed: Some(derive(seed, &[S_SAMPLE, i as u64])),
                        ..SamplingParams::default()
                    };
                    async move {
                        match eng.chat(&user(&p.prompt), params).await {
                            Ok(c) => SampleRec {
                                idx: i,
                                responses: c.into_iter().map(|c| c.text).collect(),
                                error: None,
                            },
                            Err(e) => SampleRec {
                                idx: i,
                                responses: Vec::new(),
                                error: Some(e.to_string()),
                            },
                        }
                    }
                },
                |i, e| SampleRec {
                    idx: i,
                    responses: Vec::new(),
                    error: Some(e),
                },
            )
            .await?;
            let errors = samples.iter().filter(|s| s.error.is_some()).count();
            let responses: usize = samples.iter().map(|s| s.responses.len()).sum();
            self.finish_stage(
                t,
                "sample",
                started,
                &[
                    ("prompts", samples.len() as f64),
                    ("responses", responses as f64),
                    ("errors", errors as f64),
                ],
            )?;

            // judge
            let started = Instant::now();
            let units: Vec<(usize, (PromptRow, Vec<String>))> = samples
                .iter()
                .filter(|s| s.error.is_none())
                .map(|s| (s.idx, (by_idx[&s.idx].clone(), s.responses.clone())))
                .collect();
            let (eng, plugin, checkers) = (
                judge_engine.clone(),
                self.prompts_plugin.clone(),
                self.checker_plugins.clone(),
            );
            let (vote, mode) = (self.cfg.judge.clone(), self.cfg.value);
            let judgments = item_stage(
                "judge",
                &self.outage,
                &dir.join("judgments.jsonl"),
                units,
                self.cfg.concurrency,
                move |i, (p, responses): (PromptRow, Vec<String>)| {
                    let (eng, plugin, checkers, vote) =
                        (eng.clone(), plugin.clone(), checkers.clone(), vote.clone());
                    async move {
                        judge_prompt(
                            &eng, plugin, &checkers, mode, &vote, &p, &responses, seed, i,
                        )
                        .await
                    }
                },
                JudgeRec::failed,
            )
            .await?;
            let counts = judge_counts(&judgments);
            self.finish_stage(t, "judge", started, &counts)?;

            // roots
            let started = Instant::now();
            let roots_path = dir.join("roots.jsonl");
            let roots: Vec<RootRec> = if roots_path.exists() {
                read_jsonl(&roots_path)?
            } else {
                let roots = pick_roots(&judgments, &samples, seed);
                write_jsonl(&roots_path, &roots)?;
                roots
            };
            abort_point("roots", "end");
            self.finish_stage(t, "roots", started, &[("roots", roots.len() as f64)])?;

            // search
            let started = Instant::now();
            let units: Vec<(usize, (PromptRow, RootRec))> = roots
                .iter()
                .map(|r| (r.idx, (by_idx[&r.idx].clone(), r.clone())))
                .collect();
            let (eng, plugin, checkers, strategy) = (
                (refiner_engine.clone(), judge_engine.clone()),
                self.prompts_plugin.clone(),
                self.checker_plugins.clone(),
                self.search.clone(),
            );
            let (vote, mode, search) = (
                self.cfg.judge.clone(),
                self.cfg.value,
                self.cfg.search.clone(),
            );
            let trees = item_stage(
                "search",
                &self.outage,
                &dir.join("trees.jsonl"),
                units,
                self.cfg.concurrency,
                move |i, (p, root): (PromptRow, RootRec)| {
                    let (eng, plugin, checkers, strategy, vote, search) = (
                        eng.clone(),
                        plugin.clone(),
                        checkers.clone(),
                        strategy.clone(),
                        vote.clone(),
                        search.clone(),
                    );
                    async move {
                        search_tree(
                            eng,
                            plugin,
                            &checkers,
                            strategy,
                            mode,
                            vote,
                            &search,
                            &p,
                            &root,
                            derive(seed, &[S_SEARCH, i as u64]),
                        )
                        .await
                    }
                },
                |i, e| TreeRec {
                    idx: i,
                    outcome: None,
                    budget_left: None,
                    error: Some(e),
                },
            )
            .await?;
            let solved = trees
                .iter()
                .filter(|t| t.outcome.as_ref().is_some_and(|o| o.found))
                .count();
            let failed = trees.iter().filter(|t| t.error.is_some()).count();
            let nodes: usize = trees
                .iter()
                .filter_map(|t| t.outcome.as_ref())
                .map(|o| o.nodes.len())
                .sum();
            self.finish_stage(
                t,
                "search",
                started,
                &[
                    ("trees", trees.len() as f64),
                    ("solved", solved as f64),
                    ("failed", failed as f64),
                    ("nodes", nodes as f64),
                ],
            )?;

            // data
            let started = Instant::now();
            let stats = self
                .build_data(&dir, &by_idx, &samples, &judgments, &roots, &trees, seed)
                .await?;
            self.finish_stage(t, "data", started, &stats)?;
            drop((actor_engine, refiner_engine, judge_engine));
        }

        // train-actor: DPO + SFT against the frozen actor of this iteration.
        let new_actor = self
            .train_stage(
                t,
                &dir,
                "train-actor",
                Objective::Dpo,
                actor,
                "pairs.jsonl",
                "actor",
            )
            .await?;
        let new_refiner = self
            .train_stage(
                t,
                &dir,
                "train-refiner",
                Objective::Sft,
                refiner,
                "rft.jsonl",
                "refiner",
            )
            .await?;
        Ok((new_actor, new_refiner))
    }

    #[allow(clippy::too_many_arguments)]
    async fn train_stage(
        &mut self,
        t: usize,
        dir: &Path,
        stage: &str,
        objective: Objective,
        model: &Path,
        data: &str,
        out: &str,
    ) -> anyhow::Result<PathBuf> {
        let marker = dir.join(format!("{out}.done.json"));
        if marker.exists() {
            let v: Value = serde_json::from_str(&std::fs::read_to_string(&marker)?)
                .with_context(|| format!("{}: not JSON", marker.display()))?;
            let m = v["model"]
                .as_str()
                .with_context(|| format!("{}: no `model`", marker.display()))?;
            if !self.stage_done(t, stage) {
                self.finish_stage::<&str>(t, stage, Instant::now(), &[])?;
            }
            return Ok(PathBuf::from(m));
        }
        let started = Instant::now();
        let data = dir.join(data);
        let records = read_jsonl::<Value>(&data)?.len();
        let (model_out, counts) = if records == 0 {
            eprintln!("{stage}: no training data this iteration; the model stays as it is");
            (model.to_path_buf(), vec![("records", 0.0)])
        } else {
            let cfg = self
                .cfg
                .train_config(objective, model, &data, &dir.join(out))?;
            let stop = std::env::var("SPAR_ABORT_AT")
                .ok()
                .and_then(|v| v.strip_prefix(&format!("{stage}:"))?.parse::<usize>().ok());
            let summary = tokio::task::block_in_place(|| train(&cfg, stop))?;
            if stop.is_some() {
                abort_point(stage, &stop.unwrap_or(0).to_string());
            }
            (
                summary.final_dir.clone(),
                vec![
                    ("records", records as f64),
                    ("used", summary.data.used as f64),
                    ("steps", summary.steps as f64),
                    ("final_loss", summary.final_loss),
                ],
            )
        };
        write_atomic(
            &marker,
            &json!({"model": model_out, "counts": counts.iter().filter(|(_, v)| v.is_finite()).map(|(k, v)| (k.to_string(), *v)).collect::<BTreeMap<_, _>>()})
                .to_string(),
        )?;
        self.finish_stage(t, stage, started, &counts)?;
        Ok(model_out)
    }

    /// DPO pairs and refiner data from the trees and the judgments (§3.5–3.6).
    #[allow(clippy::too_many_arguments)]
    async fn build_data(
        &mut self,
        dir: &Path,
        by_idx: &HashMap<usize, PromptRow>,
        samples: &[SampleRec],
        judgments: &[JudgeRec],
        roots: &[RootRec],
        trees: &[TreeRec],
        seed: u64,
    ) -> anyhow::Result<Vec<(String, f64)>> {
        let pairs_path = dir.join("pairs.jsonl");
        let rft_path = dir.join("rft.jsonl");
        let stats_path = dir.join("data.json");
        if pairs_path.exists() && rft_path.exists() && stats_path.exists() {
            let v: BTreeMap<String, f64> =
                serde_json::from_str(&std::fs::read_to_string(&stats_path)?)?;
            return Ok(v.into_iter().collect());
        }
        let mut prompts = Prompts::from_plugin(self.prompts_plugin.clone()).await?;
        let end_gate = self.cfg.search.end_gate;
        let roots_by: HashMap<usize, &RootRec> = roots.iter().map(|r| (r.idx, r)).collect();
        let mut pairs = Vec::new();
        // (kind, first user message, row)
        let mut rft: Vec<(&'static str, String, Value)> = Vec::new();
        for tree in trees {
            let Some(o) = &tree.outcome else { continue };
            let p = &by_idx[&tree.idx].prompt;
            let fin = &o.nodes[o.final_node as usize];
            if o.found
                && fin.value > end_gate
                && let Some(parent) = fin.parent
            {
                let root = roots_by[&tree.idx];
                pairs.push(json!({
                    "idx": tree.idx,
                    "prompt": [{"role": "user", "content": p}],
                    "chosen": [{"role": "assistant", "content": fin.response}],
                    "rejected": [{"role": "assistant", "content": root.text}],
                }));
                let parent: &Node = &o.nodes[parent as usize];
                let mut msgs = chat_of(
                    prompts
                        .refine_messages(p, &parent.response, &parent.critique)
                        .await?,
                );
                let first = msgs[0]["content"].as_str().unwrap_or_default().to_string();
                msgs.push(json!({"role": "assistant", "content": fin.refine_output}));
                rft.push(("refinement", first, json!({"messages": msgs})));
            }
            let (pos, neg) = critique_pools(o, end_gate);
            for (kind, pool, tag) in [
                ("positive_critique", pos, 0u64),
                ("negative_critique", neg, 1u64),
            ] {
                if pool.is_empty() {
                    continue;
                }
                let k = (derive(seed, &[S_CRITIQUE, tree.idx as u64, tag]) % pool.len() as u64)
                    as usize;
                let node = &o.nodes[pool[k]];
                let mut msgs = chat_of(prompts.judge_messages(p, &node.response).await?);
                let first = msgs[0]["content"].as_str().unwrap_or_default().to_string();
                msgs.push(json!({"role": "assistant", "content": node.critique}));
                rft.push((kind, first, json!({"messages": msgs})));
            }
        }
        // Judgment samples: votes with a majority and a minority, balanced by label.
        let responses: HashMap<usize, &SampleRec> = samples.iter().map(|s| (s.idx, s)).collect();
        let (mut jpos, mut jneg) = (Vec::new(), Vec::new());
        for jr in judgments {
            for j in &jr.judged {
                let Some(jd) = &j.judgment else { continue };
                if jd.yes == 0 || jd.no == 0 {
                    continue;
                }
                let Some(text) = responses
                    .get(&jr.idx)
                    .and_then(|s| s.responses.get(j.response))
                else {
                    continue;
                };
                let p = &by_idx[&jr.idx].prompt;
                let mut msgs = chat_of(prompts.judge_messages(p, text).await?);
                let first = msgs[0]["content"].as_str().unwrap_or_default().to_string();
                msgs.push(json!({"role": "assistant", "content": jd.critique}));
                if jd.value > 0.5 {
                    jpos.push(("positive_judgment", first, json!({"messages": msgs})));
                } else {
                    jneg.push(("negative_judgment", first, json!({"messages": msgs})));
                }
            }
        }
        shuffle(&mut jpos, derive(seed, &[S_SHUFFLE, 1]));
        shuffle(&mut jneg, derive(seed, &[S_SHUFFLE, 2]));
        let balanced = jpos.len().min(jneg.len());
        jpos.truncate(balanced);
        jneg.truncate(balanced);
        rft.extend(jpos);
        rft.extend(jneg);
        // Caps per kind (after a shuffle), dedup by the first user message, shuffle.
        shuffle(&mut rft, derive(seed, &[S_SHUFFLE, 3]));
        let caps = &self.cfg.rft;
        let cap = |k: &str| match k {
            "refinement" => caps.refinement,
            "positive_critique" => caps.positive_critique,
            "negative_critique" => caps.negative_critique,
            "negative_judgment" => caps.negative_judgment,
            _ => caps.positive_judgment,
        };
        let mut seen = HashSet::new();
        let mut taken: HashMap<&str, usize> = HashMap::new();
        let mut rows = Vec::new();
        for (kind, first, mut row) in rft {
            let n = taken.entry(kind).or_default();
            if *n >= cap(kind) || !seen.insert(first) {
                continue;
            }
            *n += 1;
            row["kind"] = json!(kind);
            rows.push(row);
        }
        write_jsonl(&pairs_path, &pairs)?;
        write_jsonl(&rft_path, &rows)?;
        let mut stats: Vec<(String, f64)> = vec![("pairs".into(), pairs.len() as f64)];
        for k in [
            "refinement",
            "positive_critique",
            "negative_critique",
            "positive_judgment",
            "negative_judgment",
        ] {
            stats.push((k.into(), taken.get(k).copied().unwrap_or(0) as f64));
        }
        stats.push(("rft".into(), rows.len() as f64));
        let map: BTreeMap<String, f64> = stats.iter().cloned().collect();
        write_atomic(&stats_path, &serde_json::to_string_pretty(&map)?)?;
        abort_point("data", "end");
        Ok(stats)
    }
}

/// Judge every response of one prompt (stage 2).
#[allow(clippy::too_many_arguments)]
async fn judge_prompt(
    eng: &Generator,
    plugin: Plugin,
    checkers: &[Plugin],
    mode: ValueMode,
    vote: &VoteConfig,
    p: &PromptRow,
    responses: &[String],
    seed: u64,
    i: usize,
) -> JudgeRec {
    let fail = |e: String| JudgeRec::failed(i, e);
    let mut prompts = match Prompts::from_plugin(plugin).await {
        Ok(p) => p,
        Err(e) => return fail(e.to_string()),
    };
    let mut constraints = match constraints_of(p, checkers).await {
        Ok(c) => c,
        Err(e) => return fail(e.to_string()),
    };
    let mut judged = Vec::new();
    for (r, text) in responses.iter().enumerate() {
        let checkers_pass = match constraints.as_mut() {
            Some(c) => match c.judge(&p.prompt, text).await {
                Ok(j) => Some(j.no == 0),
                Err(_) => None,
            },
            None => None,
        };
        let s = derive(seed, &[S_JUDGE, i as u64, r as u64]);
        let (judgment, error) = match judge_response(
            eng,
            &mut prompts,
            constraints.as_mut(),
            mode,
            &p.prompt,
            text,
            vote,
            s,
        )
        .await
        {
            Ok(Some(j)) => (Some(j), None),
            Ok(None) => (None, Some("the vote was tied after every retry".into())),
            Err(e) => (None, Some(e.to_string())),
        };
        judged.push(Judged {
            response: r,
            judgment,
            checkers_pass,
            error,
        });
    }
    JudgeRec { idx: i, judged }
}

pub async fn constraints_of(
    p: &PromptRow,
    checkers: &[Plugin],
) -> anyhow::Result<Option<Constraints>> {
    if p.instruction_id_list.is_empty() || checkers.is_empty() {
        return Ok(None);
    }
    let set = checker_set(checkers).await?;
    // Only the constraints some loaded checker verifies.
    let list = p
        .instruction_id_list
        .iter()
        .zip(&p.kwargs)
        .filter(|(id, _)| set.specs.iter().any(|s| &s.id == *id))
        .map(|(id, kw)| (id.clone(), Value::Object(kw.clone()).to_string()))
        .collect::<Vec<_>>();
    if list.is_empty() {
        return Ok(None);
    }
    Ok(Some(Constraints { set, list }))
}

fn judge_counts(judgments: &[JudgeRec]) -> Vec<(&'static str, f64)> {
    let (mut judged, mut positive, mut negative, mut dropped, mut agree_sum) =
        (0usize, 0usize, 0usize, 0usize, 0f64);
    let (mut checked, mut checker_agree) = (0usize, 0usize);
    let mut with_negative = 0usize;
    for jr in judgments {
        let mut neg_here = false;
        for j in &jr.judged {
            match &j.judgment {
                Some(jd) => {
                    judged += 1;
                    agree_sum += jd.yes.max(jd.no) as f64 / (jd.yes + jd.no).max(1) as f64;
                    let yes = jd.value > 0.5;
                    if yes {
                        positive += 1;
                    } else {
                        negative += 1;
                        neg_here = true;
                    }
                    if let Some(pass) = j.checkers_pass {
                        checked += 1;
                        checker_agree += usize::from(pass == yes);
                    }
                }
                None => dropped += 1,
            }
        }
        with_negative += usize::from(neg_here);
    }
    let mut c = vec![
        ("judged", judged as f64),
        ("positive", positive as f64),
        ("negative", negative as f64),
        ("dropped", dropped as f64),
        ("prompts_with_negative", with_negative as f64),
        (
            "vote_agreement",
            if judged > 0 {
                agree_sum / judged as f64
            } else {
                0.0
            },
        ),
    ];
    if checked > 0 {
        c.push((
            "judge_checker_agreement",
            checker_agree as f64 / checked as f64,
        ));
    }
    c
}

/// One negative response per prompt that has one, chosen at random (stage 3).
fn pick_roots(judgments: &[JudgeRec], samples: &[SampleRec], seed: u64) -> Vec<RootRec> {
    let responses: HashMap<usize, &SampleRec> = samples.iter().map(|s| (s.idx, s)).collect();
    let mut roots = Vec::new();
    for jr in judgments {
        let negatives: Vec<(&Judged, &Judgment)> = jr
            .judged
            .iter()
            .filter_map(|j| j.judgment.as_ref().map(|jd| (j, jd)))
            .filter(|(_, jd)| jd.value <= 0.5)
            .collect();
        if negatives.is_empty() {
            continue;
        }
        let k = (derive(seed, &[S_ROOT, jr.idx as u64]) % negatives.len() as u64) as usize;
        let (j, jd) = negatives[k];
        let Some(text) = responses
            .get(&jr.idx)
            .and_then(|s| s.responses.get(j.response))
        else {
            continue;
        };
        roots.push(RootRec {
            idx: jr.idx,
            response: j.response,
            text: text.clone(),
            critique: jd.critique.clone(),
        });
    }
    roots
}

/// Search one tree (stage 4); any failure becomes the record's reason.
#[allow(clippy::too_many_arguments)]
pub async fn search_tree(
    (eng, judge): (Generator, Generator),
    plugin: Plugin,
    checkers: &[Plugin],
    strategy: SearchStrategy,
    mode: ValueMode,
    vote: VoteConfig,
    search: &Search,
    p: &PromptRow,
    root: &RootRec,
    seed: u64,
) -> TreeRec {
    let fail = |e: String| TreeRec {
        idx: p.idx,
        outcome: None,
        budget_left: None,
        error: Some(e),
    };
    let prompts = match Prompts::from_plugin(plugin).await {
        Ok(x) => x,
        Err(e) => return fail(e.to_string()),
    };
    let constraints = match constraints_of(p, checkers).await {
        Ok(c) => c,
        Err(e) => return fail(e.to_string()),
    };
    let refine = SamplingParams {
        temperature: search.temperature,
        top_p: search.top_p,
        max_new_tokens: search.max_new_tokens,
        ..SamplingParams::default()
    };
    let mut h = ModelSearchHost::new(eng, prompts, &p.prompt, vote, refine, search.budget, seed);
    h.judge = judge;
    h.constraints = constraints;
    h.value_mode = mode;
    let root_node = Node {
        id: 0,
        parent: None,
        depth: 0,
        response: root.text.clone(),
        critique: root.critique.clone(),
        value: 0.0,
        refine_output: String::new(),
        visit_sequence: 0,
    };
    let (out, h) = strategy
        .search(&p.prompt, &root_node, &search.params(), Box::new(h))
        .await;
    let budget_left = h
        .and_then(|h| h.into_any().downcast::<ModelSearchHost>().ok())
        .map(|h| h.budget);
    match out {
        Ok(o) => TreeRec {
            idx: p.idx,
            outcome: Some(o),
            budget_left,
            error: None,
        },
        Err(e) => TreeRec {
            idx: p.idx,
            outcome: None,
            budget_left,
            error: Some(e.to_string()),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_seeds_differ_by_every_part() {
        let a = derive(1, &[S_SAMPLE, 0]);
        assert_ne!(a, derive(1, &[S_SAMPLE, 1]));
        assert_ne!(a, derive(2, &[S_SAMPLE, 0]));
        assert_ne!(a, derive(1, &[S_JUDGE, 0]));
        assert_eq!(a, derive(1, &[S_SAMPLE, 0]));
    }

    #[test]
    fn torn_lines_are_cut() {
        let dir = std::env::temp_dir().join(format!("spar-partial-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("x.jsonl.partial");
        std::fs::write(&p, "{\"idx\":0,\"responses\":[]}\n{\"idx\":1,\"resp").unwrap();
        let r: Vec<SampleRec> = read_partial(&p).unwrap();
        assert_eq!(r.len(), 1);
        assert_eq!(
            std::fs::read_to_string(&p).unwrap(),
            "{\"idx\":0,\"responses\":[]}\n"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn prompts_are_validated_with_file_and_line() {
        let dir = std::env::temp_dir().join(format!("spar-prompts-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("p.jsonl");
        std::fs::write(
            &p,
            "{\"prompt\": \"a\", \"instruction_id_list\": [\"x\"], \"kwargs\": [{\"n\": null}]}\n\n{\"prompt\": 3}\n",
        )
        .unwrap();
        let e = read_prompts(&p).unwrap_err().to_string();
        assert!(e.contains("p.jsonl:3") && e.contains("not a string"), "{e}");
        std::fs::write(
            &p,
            "{\"prompt\": \"a\", \"instruction_id_list\": [\"x\"], \"kwargs\": [{\"n\": null}]}\n",
        )
        .unwrap();
        let rows = read_prompts(&p).unwrap();
        assert!(rows[0].kwargs[0].is_empty(), "null kwargs are dropped");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn shipped_configs_load_and_overrides_reach_tables() {
        let root = crate::plugin::repo_root();
        let paper = RunConfig::load(&root.join("configs/spar.toml"), &[]).unwrap();
        assert_eq!(
            (paper.sample.n, paper.judge.k, paper.search.budget),
            (5, 5, 15)
        );
        assert_eq!(paper.actor_train["lr"].as_float(), Some(2e-7));
        let demo = RunConfig::load(
            &root.join("configs/demo.toml"),
            &["search.budget=2".into(), "value=\"both\"".into()],
        )
        .unwrap();
        assert_eq!((demo.search.budget, demo.value), (2, ValueMode::Both));
        let e = RunConfig::load(&root.join("configs/demo.toml"), &["sample.m=1".into()])
            .unwrap_err()
            .to_string();
        assert!(e.contains("demo.toml") && e.contains("m"), "{e}");
        let e = RunConfig::load(
            &root.join("configs/demo.toml"),
            &["actor_train.model=\"x\"".into()],
        )
        .unwrap_err();
        assert!(format!("{e:#}").contains("set by the pipeline"), "{e:#}");
    }

    #[test]
    fn shuffles_are_permutations() {
        let mut v: Vec<usize> = (0..50).collect();
        shuffle(&mut v, 7);
        let mut s = v.clone();
        s.sort();
        assert_eq!(s, (0..50).collect::<Vec<_>>());
        assert_ne!(v, s);
    }
}
