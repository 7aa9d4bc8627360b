//! Batched generation with a KV cache over ragged (left-padded) prompts, `n` samples per
//! prompt, temperature / top-k / top-p, stop strings and EOS, per-request seeds; and an async
//! engine that batches whatever requests are waiting.

use std::sync::mpsc as std_mpsc;

use tch::{Device, Kind, Tensor};
use tokio::sync::oneshot;

use super::tokenizer::ChatMessage;
use super::{LoadedModel, ModelError};

/// How to sample one request; `temperature = 0` is greedy decoding.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SamplingParams {
    pub n: usize,
    pub temperature: f64,
    pub top_p: f64,
    /// 0 = no top-k cut.
    pub top_k: usize,
    pub max_new_tokens: usize,
    pub stop: Vec<String>,
    /// Same seed, same samples — whatever else shares the batch.
    pub seed: Option<u64>,
    /// Keep generating past EOS (as vLLM's `ignore_eos`; for benchmarks and parity tests).
    pub ignore_eos: bool,
}

impl Default for SamplingParams {
    fn default() -> Self {
        Self {
            n: 1,
            temperature: 0.0,
            top_p: 1.0,
            top_k: 0,
            max_new_tokens: 256,
            stop: Vec::new(),
            seed: None,
            ignore_eos: false,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FinishReason {
    /// An EOS token or a stop string.
    Stop,
    /// `max_new_tokens` reached.
    Length,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Completion {
    pub text: String,
    pub token_ids: Vec<i64>,
    pub finish_reason: FinishReason,
}

/// splitmix64: a tiny, seedable generator so a request's samples do not depend on batching.
struct Rng(u64);

impl Rng {
    fn next_f64(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// One sequence being generated.
struct Row {
    request: usize,
    params: SamplingParams,
    rng: Rng,
    tokens: Vec<i64>,
    done: Option<FinishReason>,
}

fn seed_for(seed: Option<u64>, sample: usize) -> u64 {
    let base = seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0)
    });
    base ^ (sample as u64).wrapping_mul(0xA24B_AED4_963E_E407)
}

/// Next token of each active row from its logits `[B, V]`: greedy rows take the argmax;
/// sampling rows apply temperature, then top-k, then top-p, then draw with their own RNG.
fn sample(logits: &Tensor, rows: &mut [Row], active: &[usize]) -> Vec<i64> {
    sample_with_head(logits, rows, active, 1024).0
}

/// [`sample`], preselecting the `head` most likely tokens for top-p/top-k rows; also says
/// whether the head held every row's cut (else the whole vocabulary was sorted).
fn sample_with_head(
    logits: &Tensor,
    rows: &mut [Row],
    active: &[usize],
    head_len: i64,
) -> (Vec<i64>, bool) {
    let greedy: Vec<i64> = Vec::<i64>::try_from(logits.argmax(-1, false).to_device(Device::Cpu))
        .expect("argmax to vec");
    let needs_sampling = active.iter().any(|&r| rows[r].params.temperature > 0.0);
    if !needs_sampling {
        return (greedy, false);
    }
    let temps: Vec<f32> = active
        .iter()
        .map(|&r| rows[r].params.temperature.max(1e-6) as f32)
        .collect();
    let temps = Tensor::from_slice(&temps)
        .to_device(logits.device())
        .unsqueeze(1);
    let probs = (logits.to_kind(Kind::Float) / temps).softmax(-1, Kind::Float);
    // Without a top-p or top-k cut, draw from the whole distribution: no sort needed.
    if active.iter().all(|&r| {
        let p = &rows[r].params;
        p.temperature <= 0.0 || (p.top_p >= 1.0 && p.top_k == 0)
    }) {
        let vocab = probs.size()[1] as usize;
        let all: Vec<f32> =
            Vec::<f32>::try_from(probs.to_device(Device::Cpu).flatten(0, 1)).expect("probs");
        let mut out = greedy;
        for (i, &r) in active.iter().enumerate() {
            if rows[r].params.temperature <= 0.0 {
                continue;
            }
            let row = &all[i * vocab..(i + 1) * vocab];
            let total: f64 = row.iter().map(|&x| x as f64).sum();
            let mut u = rows[r].rng.next_f64() * total;
            let mut pick = vocab - 1;
            for (j, &pj) in row.iter().enumerate() {
                u -= pj as f64;
                if u <= 0.0 && pj > 0.0 {
                    pick = j;
                    break;
                }
            }
            out[i] = pick as i64;
        }
        return (out, false);
    }
    // Only the head of each sorted row can be drawn. Sorting the whole vocabulary costs
    // ~2 ms per row (49152 tokens); the `head_len` most likely tokens (`topk`, in the same
    // order) usually hold every row's cut, and when one row's does not, the rows are sorted.
    let vocab = probs.size()[1];
    let tops: Vec<f32> = active
        .iter()
        .map(|&r| rows[r].params.top_p as f32)
        .collect();
    let tops = Tensor::from_slice(&tops)
        .to_device(logits.device())
        .unsqueeze(1);
    let widest_k = active
        .iter()
        .map(|&r| rows[r].params.top_k as i64)
        .max()
        .unwrap_or(0);
    let mut head = None;
    if vocab > head_len && widest_k <= head_len {
        let (vals, idx) = probs.topk(head_len, -1, true, true);
        let cum = vals.cumsum(-1, Kind::Float);
        // A row's cut lies in the head when it has a top-k (≤ head_len), or a top-p the head's
        // mass reaches; a row without either draws from the whole vocabulary.
        let mass: Vec<f32> = Vec::<f32>::try_from(
            cum.narrow(1, head_len - 1, 1)
                .flatten(0, 1)
                .to_device(Device::Cpu),
        )
        .expect("head mass");
        let fits = active.iter().enumerate().all(|(i, &r)| {
            let p = &rows[r].params;
            p.temperature <= 0.0 || p.top_k > 0 || (p.top_p < 1.0 && mass[i] >= p.top_p as f32)
        });
        if fits {
            head = Some((vals, idx, cum));
        }
    }
    let used_head = head.is_some();
    let (sorted, idx, cum) = match head {
        Some(h) => h,
        None => {
            let (sorted, idx) = probs.sort(-1, true);
            let cum = sorted.cumsum(-1, Kind::Float);
            (sorted, idx, cum)
        }
    };
    let mut widths = Vec::with_capacity(active.len());
    let below: Vec<i64> = Vec::<i64>::try_from(
        cum.lt_tensor(&tops)
            .sum_dim_intlist(-1, false, Kind::Int64)
            .to_device(Device::Cpu),
    )
    .expect("counts");
    // The candidates: the whole vocabulary, or its head.
    let vocab = sorted.size()[1];
    for (i, &r) in active.iter().enumerate() {
        let p = &rows[r].params;
        let mut w = if p.top_p < 1.0 { below[i] + 1 } else { vocab };
        if p.top_k > 0 {
            w = w.min(p.top_k as i64);
        }
        widths.push(w.clamp(1, vocab));
    }
    let m = *widths.iter().max().unwrap_or(&1);
    let head: Vec<f32> =
        Vec::<f32>::try_from(sorted.narrow(1, 0, m).to_device(Device::Cpu).flatten(0, 1))
            .expect("probs");
    let ids: Vec<i64> =
        Vec::<i64>::try_from(idx.narrow(1, 0, m).to_device(Device::Cpu).flatten(0, 1))
            .expect("ids");
    let mut out = greedy;
    for (i, &r) in active.iter().enumerate() {
        if rows[r].params.temperature <= 0.0 {
            continue;
        }
        let w = widths[i] as usize;
        let row = &head[i * m as usize..i * m as usize + w];
        let total: f64 = row.iter().map(|&x| x as f64).sum();
        let mut u = rows[r].rng.next_f64() * total;
        let mut pick = w - 1;
        for (j, &pj) in row.iter().enumerate() {
            u -= pj as f64;
            if u <= 0.0 {
                pick = j;
                break;
            }
        }
        out[i] = ids[i * m as usize + pick];
    }
    (out, used_head)
}

/// Generate for several tokenized prompts at once; returns `n` completions per prompt.
pub fn generate(
    lm: &LoadedModel,
    prompts: &[Vec<i64>],
    params: &[SamplingParams],
) -> Result<Vec<Vec<Completion>>, ModelError> {
    assert_eq!(prompts.len(), params.len());
    let model = &lm.model;
    let tok = &lm.tokenizer;
    let ctx = model.cfg.max_position_embeddings;
    let mut rows = Vec::new();
    for (i, (p, sp)) in prompts.iter().zip(params).enumerate() {
        if p.is_empty() {
            return Err(ModelError::Input(format!("prompt {i} is empty")));
        }
        if p.len() + sp.max_new_tokens > ctx {
            return Err(ModelError::Input(format!(
                "prompt {i} has {} tokens; with max_new_tokens {} it exceeds the context of {ctx}",
                p.len(),
                sp.max_new_tokens
            )));
        }
        for s in 0..sp.n.max(1) {
            rows.push(Row {
                request: i,
                params: sp.clone(),
                rng: Rng(seed_for(sp.seed, s)),
                tokens: Vec::new(),
                done: (sp.max_new_tokens == 0).then_some(FinishReason::Length),
            });
        }
    }
    if rows.is_empty() {
        return Ok(Vec::new());
    }
    let dev = model.device();
    let b = rows.len() as i64;
    let len = prompts.iter().map(|p| p.len()).max().unwrap_or(0) as i64;
    let max_new = rows
        .iter()
        .map(|r| r.params.max_new_tokens)
        .max()
        .unwrap_or(0) as i64;
    // Left padding: every row's last prompt token sits at column len-1.
    let mut ids = vec![tok.pad_id; (b * len) as usize];
    let mut attn = vec![0i64; (b * len) as usize];
    for (r, row) in rows.iter().enumerate() {
        let p = &prompts[row.request];
        let off = r * len as usize + (len as usize - p.len());
        ids[off..off + p.len()].copy_from_slice(p);
        attn[off..off + p.len()].iter_mut().for_each(|a| *a = 1);
    }
    let ids = Tensor::from_slice(&ids).view([b, len]).to_device(dev);
    let mut keys = Tensor::from_slice(&attn).view([b, len]).to_device(dev);
    let mut pos = (keys.cumsum(1, Kind::Int64) - 1).clamp_min(0);
    let mut cache = model.new_cache(b, len + max_new);
    let causal = Tensor::ones([len, len], (Kind::Bool, dev)).tril(0);
    let eye = Tensor::eye(len, (Kind::Bool, dev));
    let mask = causal
        .logical_and(&keys.to_kind(Kind::Bool).unsqueeze(1).unsqueeze(1))
        .logical_or(&eye);
    tch::no_grad(|| -> Result<(), ModelError> {
        let hidden = model.forward(&ids, &pos, &mask, Some(&mut cache));
        let mut logits = model.next_logits(&hidden.narrow(1, len - 1, 1).squeeze_dim(1));
        let mut last_pos = pos.narrow(1, len - 1, 1);
        for _step in 0..max_new {
            let active: Vec<usize> = (0..rows.len()).collect();
            let next = sample(&logits, &mut rows, &active);
            for (r, &t) in next.iter().enumerate() {
                if rows[r].done.is_none() {
                    push_token(tok, &mut rows[r], t)?;
                }
            }
            if rows.iter().all(|r| r.done.is_some()) {
                break;
            }
            // Finished rows keep decoding a pad token that nothing reads.
            let feed: Vec<i64> = rows
                .iter()
                .zip(&next)
                .map(|(r, &t)| if r.done.is_some() { tok.pad_id } else { t })
                .collect();
            let step_ids = Tensor::from_slice(&feed).view([b, 1]).to_device(dev);
            keys = Tensor::cat(&[&keys, &Tensor::ones([b, 1], (Kind::Int64, dev))], 1);
            last_pos = &last_pos + 1;
            pos = last_pos.shallow_clone();
            let mask = keys.to_kind(Kind::Bool).unsqueeze(1).unsqueeze(1);
            let hidden = model.forward(&step_ids, &pos, &mask, Some(&mut cache));
            logits = model.next_logits(&hidden.squeeze_dim(1));
        }
        Ok(())
    })?;
    let mut out: Vec<Vec<Completion>> = vec![Vec::new(); prompts.len()];
    for row in rows {
        let request = row.request;
        out[request].push(completion(tok, row)?);
    }
    Ok(out)
}

/// Record the next token of a row; marks the row done on EOS, a stop string or its length.
fn push_token(tok: &super::Tokenizer, row: &mut Row, t: i64) -> Result<(), ModelError> {
    row.tokens.push(t);
    if tok.eos_ids.contains(&t) && !row.params.ignore_eos {
        row.done = Some(FinishReason::Stop);
    } else if !row.params.stop.is_empty() {
        let text = tok.decode(&row.tokens, true)?;
        if row
            .params
            .stop
            .iter()
            .any(|s| !s.is_empty() && text.contains(s))
        {
            row.done = Some(FinishReason::Stop);
        }
    }
    if row.done.is_none() && row.tokens.len() >= row.params.max_new_tokens {
        row.done = Some(FinishReason::Length);
    }
    Ok(())
}

/// The completion of a finished row: text cut at the first stop string (not part of the
/// completion, as in vLLM), token ids without the final EOS.
fn completion(tok: &super::Tokenizer, row: Row) -> Result<Completion, ModelError> {
    let mut tokens = row.tokens;
    let reason = row.done.unwrap_or(FinishReason::Length);
    let mut text = tok.decode(&tokens, true)?;
    if let Some(&last) = tokens.last()
        && tok.eos_ids.contains(&last)
        && reason == FinishReason::Stop
    {
        tokens.pop();
    }
    if let Some(cut) = row
        .params
        .stop
        .iter()
        .filter(|s| !s.is_empty())
        .filter_map(|s| text.find(s.as_str()))
        .min()
    {
        text.truncate(cut);
    }
    Ok(Completion {
        text,
        token_ids: tokens,
        finish_reason: reason,
    })
}

/// One sampled token of a streamed request: which of its `n` samples, and the token id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamToken {
    pub sample: usize,
    pub token: i64,
}

/// Where a streamed request's tokens go as they are sampled. Dropping the receiver cancels
/// the request's remaining decoding (a client that went away frees its rows).
pub type TokenSink = tokio::sync::mpsc::UnboundedSender<StreamToken>;

/// One queued request.
struct Job {
    prompt: Vec<i64>,
    params: SamplingParams,
    reply: oneshot::Sender<Result<Vec<Completion>, String>>,
    stream: Option<TokenSink>,
}

/// A generation engine on its own thread: concurrent tasks submit requests and the engine
/// decodes every running sequence together, one token per step (continuous batching: a
/// request joins the running batch at the next step, up to `max_batch_rows` sequences, and
/// leaves it when it ends — nobody waits for the longest neighbour).
#[derive(Clone)]
pub struct Engine {
    tx: std_mpsc::Sender<Job>,
    tokenizer: std::sync::Arc<super::Tokenizer>,
    stats: std::sync::Arc<EngineStats>,
    context: usize,
}

/// Counters of the engine loop.
#[derive(Debug, Default)]
pub struct EngineStats {
    /// Decode steps (one token for every running row).
    pub steps: std::sync::atomic::AtomicU64,
    /// Rows decoded, summed over steps (÷ steps = mean batch).
    pub row_steps: std::sync::atomic::AtomicU64,
    /// Requests admitted while other rows were mid-generation.
    pub joined_running: std::sync::atomic::AtomicU64,
    /// Cache re-layouts (a longer prompt, more rows or more room needed), and their time in
    /// nanoseconds (part of `prefill_ns`).
    pub relayouts: std::sync::atomic::AtomicU64,
    pub relayout_ns: std::sync::atomic::AtomicU64,
    /// Time in prompt prefills and in decode steps, nanoseconds.
    pub prefill_ns: std::sync::atomic::AtomicU64,
    pub decode_ns: std::sync::atomic::AtomicU64,
    /// Prompt tokens prefilled.
    pub prefill_tokens: std::sync::atomic::AtomicU64,
    /// Times finished rows were dropped from the running batch.
    pub compactions: std::sync::atomic::AtomicU64,
    /// Requests whose prompt was served from the prompt cache (no prefill).
    pub prompt_cache_hits: std::sync::atomic::AtomicU64,
    /// Prompt tokens not prefilled because a cached prompt began with them (their keys and
    /// values copied; `prefill_tokens` counts only the rest).
    pub prefix_reused_tokens: std::sync::atomic::AtomicU64,
    /// Row-steps whose attention read the prompt's keys and values from another row's copy
    /// (rows placed from one prefilled prompt; decode attention on the `spar-gemm` kernel).
    pub shared_prompt_rows: std::sync::atomic::AtomicU64,
}

impl Engine {
    /// Start the engine thread; it owns the model.
    pub fn start(lm: LoadedModel, max_batch_rows: usize) -> Result<Self, ModelError> {
        let (tx, rx) = std_mpsc::channel::<Job>();
        let dir = lm.dir.clone();
        // The engine needs its own tokenizer copy for callers (encode/render happen on their side).
        let cfg = lm.model.cfg.clone();
        let tokenizer = std::sync::Arc::new(super::Tokenizer::load(&dir, &cfg)?);
        let stats = std::sync::Arc::new(EngineStats::default());
        let st = stats.clone();
        std::thread::Builder::new()
            .name("spar-generate".into())
            .spawn(move || tch::no_grad(|| serve(&lm, &rx, max_batch_rows, &st)))
            .map_err(|e| ModelError::Input(format!("cannot start the generation thread: {e}")))?;
        Ok(Self {
            tx,
            tokenizer,
            stats,
            context: cfg.max_position_embeddings,
        })
    }

    /// The model's context length (prompt plus generated tokens).
    pub fn context(&self) -> usize {
        self.context
    }

    pub fn tokenizer(&self) -> &super::Tokenizer {
        &self.tokenizer
    }

    pub fn stats(&self) -> &EngineStats {
        &self.stats
    }

    /// Generate for token ids.
    pub async fn submit(
        &self,
        prompt: Vec<i64>,
        params: SamplingParams,
    ) -> Result<Vec<Completion>, ModelError> {
        self.submit_streaming(prompt, params, None).await
    }

    /// Generate for token ids, sending every sampled token to `stream` as it is decided (the
    /// returned completions are what the request would have produced without streaming,
    /// except that a closed `stream` ends its rows early).
    pub async fn submit_streaming(
        &self,
        prompt: Vec<i64>,
        params: SamplingParams,
        stream: Option<TokenSink>,
    ) -> Result<Vec<Completion>, ModelError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Job {
                prompt,
                params,
                reply,
                stream,
            })
            .map_err(|_| ModelError::Input("the generation engine has stopped".into()))?;
        rx.await
            .map_err(|_| ModelError::Input("the generation engine has stopped".into()))?
            .map_err(ModelError::Input)
    }

    /// Generate the assistant's reply to a conversation (rendered with the chat template).
    pub async fn chat(
        &self,
        messages: &[ChatMessage],
        params: SamplingParams,
    ) -> Result<Vec<Completion>, ModelError> {
        let ids = self.tokenizer.encode_chat(messages, true)?;
        self.submit(ids, params).await
    }
}

/// Prefilled prompts kept for reuse: a request whose prompt equals a recent one (sibling
/// refinements of a tree node, a retried refinement, a re-voted judgment) skips its prefill,
/// with the very keys, values and logits computed before. A prompt that begins like a cached
/// one (the chat template, a judge's or refiner's instructions, the task) prefills only the
/// rest after copying the common prefix's keys and values — where the model computes each
/// position the same bits either way (`Llama::prefill_is_row_exact`), so results stay bitwise
/// independent of what was served earlier.
///
/// A prefilled prompt: its keys and values, the logits of its last position, and an id that
/// no other prefill of this engine has (rows placed from it hold copies of the same values).
type Prefilled = std::rc::Rc<(super::llama::KvCache, Tensor, u64)>;

struct PromptCache {
    entries: std::collections::VecDeque<(Vec<i64>, Prefilled)>,
    tokens: usize,
    max_tokens: usize,
    prefills: u64,
}

impl PromptCache {
    fn get(&mut self, p: &[i64]) -> Option<Prefilled> {
        let i = self.entries.iter().position(|(k, _)| k.as_slice() == p)?;
        Some(self.touch(i))
    }

    /// The cached prompt sharing the longest prefix with `p` among those `usable` says may
    /// lend theirs, and that prefix's length (at most `max`); None when no prefix is shared.
    fn longest_prefix(
        &mut self,
        p: &[i64],
        max: usize,
        usable: impl Fn(&[i64]) -> bool,
    ) -> Option<(usize, Prefilled)> {
        let common = |k: &[i64]| k.iter().zip(p).take_while(|(a, b)| a == b).count();
        let (i, n) = self
            .entries
            .iter()
            .enumerate()
            .filter(|(_, (k, _))| usable(k))
            .map(|(i, (k, _))| (i, common(k).min(max)))
            .max_by_key(|&(i, n)| (n, i))?;
        (n > 0).then(|| (n, self.touch(i)))
    }

    /// Entry `i`, now the most recently used.
    fn touch(&mut self, i: usize) -> Prefilled {
        let e = self.entries.remove(i).expect("an entry");
        let v = e.1.clone();
        self.entries.push_back(e);
        v
    }

    fn put(&mut self, p: Vec<i64>, v: Prefilled) {
        if p.len() > self.max_tokens {
            return;
        }
        self.tokens += p.len();
        self.entries.push_back((p, v));
        while self.tokens > self.max_tokens {
            let Some((k, _)) = self.entries.pop_front() else {
                break;
            };
            self.tokens -= k.len();
        }
    }
}

/// A request being served.
struct Served {
    job: Job,
    rows: Vec<Option<Completion>>,
    left: usize,
    failed: bool,
}

/// Per-slot bookkeeping of the running batch.
struct Slot {
    served: usize,
    sample: usize,
    /// First cache column this row attends to.
    first_col: i64,
    /// Position (RoPE) of the token fed at the next step.
    pos: i64,
    next: i64,
    /// The prefilled prompt this row's first `prompt_len` columns were copied from.
    prompt: u64,
    prompt_len: i64,
    /// That prompt's tokens, when it was prefilled row-exact (`Llama::prefill_is_row_exact`):
    /// then the keys and values of a prefix it shares with another such prompt are the same
    /// bits in both rows.
    exact_ids: Option<std::rc::Rc<Vec<i64>>>,
}

/// Rows whose prompts share a prefix of at least this many tokens read it from one copy.
const MIN_SHARED_PREFIX: usize = 16;

/// The engine loop: admit waiting requests (prefill each prompt once, its `n` samples share
/// the prefix), then decode one token for every running row, finish rows, reply, repeat.
/// Each row's tokens depend only on its prompt, its parameters and its seed.
fn serve(lm: &LoadedModel, rx: &std_mpsc::Receiver<Job>, max_rows: usize, st: &EngineStats) {
    use std::sync::atomic::Ordering::Relaxed;
    let model = &lm.model;
    let tok = &lm.tokenizer;
    let dev = model.device();
    let ctx = model.cfg.max_position_embeddings as i64;
    let mut queue: std::collections::VecDeque<Job> = Default::default();
    let mut served: std::collections::HashMap<usize, Served> = Default::default();
    let mut next_id = 0usize;
    let mut rows: Vec<Row> = Vec::new();
    let mut slots: Vec<Option<Slot>> = Vec::new();
    let mut cache: Option<super::llama::KvCache> = None;
    let mut prompts = PromptCache {
        entries: Default::default(),
        tokens: 0,
        max_tokens: 8192,
        prefills: 0,
    };
    let mut open = true;
    // The batch cache need not be zeroed where only the decode kernel reads it.
    let unzeroed = model.decode_attention_on_kernel(max_rows as i64);
    loop {
        let live = slots.iter().filter(|s| s.is_some()).count();
        if live == 0 && queue.is_empty() {
            // Idle: free the cache and wait.
            rows.clear();
            slots.clear();
            cache = None;
            if !open {
                return;
            }
            match rx.recv() {
                Ok(j) => queue.push_back(j),
                Err(_) => return,
            }
        }
        while open {
            match rx.try_recv() {
                Ok(j) => queue.push_back(j),
                Err(std_mpsc::TryRecvError::Empty) => break,
                Err(std_mpsc::TryRecvError::Disconnected) => open = false,
            }
        }
        // Admit what fits.
        let mut live = slots.iter().filter(|s| s.is_some()).count();
        while let Some(job) = queue.front() {
            let n = job.params.n.max(1);
            if live > 0 && live + n > max_rows {
                break;
            }
            let job = queue.pop_front().expect("front exists");
            let id = next_id;
            next_id += 1;
            if live > 0 {
                st.joined_running.fetch_add(1, Relaxed);
            }
            let t0 = std::time::Instant::now();
            let admitted = admit(
                lm,
                job,
                id,
                (&mut rows, &mut slots, &mut cache),
                &mut prompts,
                ctx,
                unzeroed,
                st,
            );
            st.prefill_ns
                .fetch_add(t0.elapsed().as_nanos() as u64, Relaxed);
            match admitted {
                Ok(Some(s)) => {
                    live += s.left;
                    served.insert(id, s);
                }
                Ok(None) => {}
                Err((job, e)) => {
                    let _ = job.reply.send(Err(e.to_string()));
                }
            }
        }
        if live == 0 {
            continue;
        }
        let t0 = std::time::Instant::now();
        let c = cache.as_mut().expect("a running batch has a cache");
        // One decode step for every slot; dead slots feed a pad token nothing reads.
        let b = slots.len() as i64;
        let end = c.len;
        let mut ids = Vec::with_capacity(slots.len());
        let mut pos = Vec::with_capacity(slots.len());
        let mut first = Vec::with_capacity(slots.len());
        for s in &slots {
            match s {
                Some(s) => {
                    ids.push(s.next);
                    pos.push(s.pos);
                    first.push(s.first_col);
                }
                None => {
                    ids.push(tok.pad_id);
                    pos.push(0);
                    first.push(end);
                }
            }
        }
        // Rows placed from one prefilled prompt hold copies of its keys and values, and so do
        // rows whose row-exact prompts begin alike for the shared prefix: attention reads the
        // first such live row's copy for all of them (once from memory, not per row).
        let mut leaders = std::collections::HashMap::new();
        let borrowed = (0..slots.len())
            .map(|i| {
                let s = slots[i].as_ref()?;
                let lead = *leaders.entry(s.prompt).or_insert(i);
                let (lead, len) = if lead != i {
                    (lead, s.prompt_len as usize)
                } else {
                    let ids = s.exact_ids.as_ref()?;
                    (0..i)
                        .filter_map(|j| {
                            let o = slots[j].as_ref()?.exact_ids.as_ref()?;
                            let n = o.iter().zip(ids.iter()).take_while(|(a, b)| a == b);
                            Some((j, n.count()))
                        })
                        .max_by_key(|&(j, n)| (n, std::cmp::Reverse(j)))
                        .filter(|&(_, n)| n >= MIN_SHARED_PREFIX)?
                };
                let l = slots[lead].as_ref().expect("a leader is live");
                Some(spar_gemm::Borrowed {
                    leader: lead,
                    leader_col: (l.first_col - c.start) as usize,
                    own_col: (s.first_col - c.start) as usize,
                    len,
                })
            })
            .collect::<Vec<_>>();
        if model.uses_decode_kernel() {
            let shared = borrowed.iter().flatten().count() as u64;
            st.shared_prompt_rows.fetch_add(shared, Relaxed);
        }
        c.borrowed = borrowed;
        let cols = Tensor::arange_start(c.start, end + 1, (Kind::Int64, dev));
        let first_t = Tensor::from_slice(&first).to_device(dev).unsqueeze(1);
        let mask = cols
            .unsqueeze(0)
            .ge_tensor(&first_t)
            .view([b, 1, 1, end + 1 - c.start]);
        let hidden = model.forward(
            &Tensor::from_slice(&ids).view([b, 1]).to_device(dev),
            &Tensor::from_slice(&pos).view([b, 1]).to_device(dev),
            &mask,
            Some(c),
        );
        let active: Vec<usize> = (0..slots.len()).filter(|&i| slots[i].is_some()).collect();
        let mut logits = model.next_logits(&hidden.squeeze_dim(1));
        if active.len() < slots.len() {
            let idx: Vec<i64> = active.iter().map(|&i| i as i64).collect();
            logits = logits.index_select(0, &Tensor::from_slice(&idx).to_device(dev));
        }
        let next = sample(&logits, &mut rows, &active);
        st.steps.fetch_add(1, Relaxed);
        st.decode_ns
            .fetch_add(t0.elapsed().as_nanos() as u64, Relaxed);
        st.row_steps.fetch_add(active.len() as u64, Relaxed);
        for (k, &i) in active.iter().enumerate() {
            let t = next[k];
            let res = push_token(tok, &mut rows[i], t);
            let slot = slots[i].as_mut().expect("active");
            slot.next = t;
            slot.pos += 1;
            if let Some(s) = served.get(&slot.served) {
                // Nobody waits for this request any more (a client that went away): stop.
                let gone = s.job.reply.is_closed()
                    || s.job
                        .stream
                        .as_ref()
                        .is_some_and(|k| !emit(k, slot.sample, t));
                if gone {
                    rows[i].done.get_or_insert(FinishReason::Stop);
                }
            }
            if res.is_err() || rows[i].done.is_some() {
                let s = slots[i].take().expect("active");
                let row = std::mem::replace(&mut rows[i], dead_row());
                finish(tok, &mut served, s.served, s.sample, row, res.err());
            }
        }
        // Columns no live row reads any more are skipped by attention.
        if let Some(m) = slots.iter().flatten().map(|s| s.first_col).min() {
            c.start = m.min(c.len);
        }
        // Finished rows still cost compute until a request reuses their slot: when they are
        // the majority, drop them (one copy of the live window).
        let dead = slots.iter().filter(|s| s.is_none()).count();
        if dead >= 4 && dead * 2 > slots.len() && dead < slots.len() {
            let keep: Vec<usize> = (0..slots.len()).filter(|&i| slots[i].is_some()).collect();
            let start = c.start;
            c.keep_rows(&keep.iter().map(|&i| i as i64).collect::<Vec<_>>());
            let mut kept_slots = Vec::with_capacity(keep.len());
            let mut kept_rows = Vec::with_capacity(keep.len());
            for &i in &keep {
                let mut s = slots[i].take().expect("live");
                s.first_col -= start;
                kept_slots.push(Some(s));
                kept_rows.push(std::mem::replace(&mut rows[i], dead_row()));
            }
            slots = kept_slots;
            rows = kept_rows;
            st.compactions.fetch_add(1, Relaxed);
        }
    }
}

/// Send a streamed row's new token (EOS included: it decodes to no text); false when the
/// receiver is gone.
fn emit(sink: &TokenSink, sample: usize, token: i64) -> bool {
    sink.send(StreamToken { sample, token }).is_ok()
}

fn dead_row() -> Row {
    Row {
        request: 0,
        params: SamplingParams::default(),
        rng: Rng(0),
        tokens: Vec::new(),
        done: Some(FinishReason::Stop),
    }
}

/// Send a request whose rows are all done its completions.
fn answer(s: Served) {
    let reply = if s.failed {
        Err("decoding the completion failed".to_string())
    } else {
        Ok(s.rows.into_iter().flatten().collect())
    };
    let _ = s.job.reply.send(reply);
}

/// Store a finished row's completion; reply when the request's last row is done.
fn finish(
    tok: &super::Tokenizer,
    served: &mut std::collections::HashMap<usize, Served>,
    id: usize,
    sample: usize,
    row: Row,
    err: Option<ModelError>,
) {
    let Some(s) = served.get_mut(&id) else {
        return;
    };
    match err.map_or_else(|| completion(tok, row), Err) {
        Ok(c) => s.rows[sample] = Some(c),
        Err(_) => s.failed = true,
    }
    s.left -= 1;
    if s.left == 0 {
        answer(served.remove(&id).expect("present"));
    }
}

/// Prefill one request and give its rows slots in the running batch (their prompt keys end
/// at the batch's current column, so every row writes its next key at the same column).
/// `Ok(None)`: the request finished at once and has been answered.
#[allow(
    clippy::type_complexity,
    clippy::result_large_err,
    clippy::too_many_arguments
)]
fn admit(
    lm: &LoadedModel,
    job: Job,
    id: usize,
    (rows, slots, cache): (
        &mut Vec<Row>,
        &mut Vec<Option<Slot>>,
        &mut Option<super::llama::KvCache>,
    ),
    prompts: &mut PromptCache,
    ctx: i64,
    unzeroed: bool,
    st: &EngineStats,
) -> Result<Option<Served>, (Job, ModelError)> {
    let model = &lm.model;
    let tok = &lm.tokenizer;
    let p = &job.prompt;
    let sp = job.params.clone();
    let l = p.len() as i64;
    if p.is_empty() {
        return Err((job, ModelError::Input("the prompt is empty".into())));
    }
    if l + sp.max_new_tokens as i64 > ctx {
        let e = ModelError::Input(format!(
            "the prompt has {l} tokens; with max_new_tokens {} it exceeds the context of {ctx}",
            sp.max_new_tokens
        ));
        return Err((job, e));
    }
    let n = sp.n.max(1);
    let mut fresh: Vec<Row> = (0..n)
        .map(|s| Row {
            request: 0,
            params: sp.clone(),
            rng: Rng(seed_for(sp.seed, s)),
            tokens: Vec::new(),
            done: (sp.max_new_tokens == 0).then_some(FinishReason::Length),
        })
        .collect();
    let prefilled = match prompts.get(p) {
        Some(hit) => {
            st.prompt_cache_hits
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            hit
        }
        None => {
            // Each layer writes the prompt's columns before its attention reads them.
            let mut pre = model.new_cache_unzeroed(1, l);
            // Positions a cached prompt shares with this one are copied, not computed, where
            // that gives the same bits (the rest keeps at least 5 rows; see
            // `Llama::prefill_is_row_exact`).
            let exact = |k: &[i64]| model.prefill_is_row_exact(k.len() as i64);
            let from = match exact(p) {
                true => prompts.longest_prefix(p, p.len() - 5, exact),
                false => None,
            }
            .map_or(0, |(n, src)| {
                let n = n as i64;
                pre.place(&[0], &src.0, n, 0);
                pre.len = n;
                n
            });
            st.prefix_reused_tokens
                .fetch_add(from as u64, std::sync::atomic::Ordering::Relaxed);
            st.prefill_tokens
                .fetch_add((l - from) as u64, std::sync::atomic::Ordering::Relaxed);
            let last = model.prefill(p, &mut pre);
            prompts.prefills += 1;
            let v = std::rc::Rc::new((pre, last, prompts.prefills));
            prompts.put(p.clone(), v.clone());
            v
        }
    };
    let pre = &prefilled.0;
    let logits = prefilled.1.expand([n as i64, -1], false);
    if sp.max_new_tokens > 0 {
        let all: Vec<usize> = (0..n).collect();
        let first = sample(&logits, &mut fresh, &all);
        for (r, &t) in first.iter().enumerate() {
            if let Err(e) = push_token(tok, &mut fresh[r], t) {
                return Err((job, e));
            }
            if let Some(sink) = job.stream.as_ref()
                && !emit(sink, r, t)
            {
                fresh[r].done.get_or_insert(FinishReason::Stop);
            }
        }
    }
    let mut s = Served {
        job,
        rows: vec![None; n],
        left: n,
        failed: false,
    };
    let mut going = Vec::new();
    for (k, row) in fresh.into_iter().enumerate() {
        if row.done.is_some() {
            match completion(tok, row) {
                Ok(c) => s.rows[k] = Some(c),
                Err(_) => s.failed = true,
            }
            s.left -= 1;
        } else {
            going.push((k, row));
        }
    }
    if going.is_empty() {
        answer(s);
        return Ok(None);
    }
    let exact_ids = model
        .prefill_is_row_exact(l)
        .then(|| std::rc::Rc::new(s.job.prompt.clone()));
    // Slots: dead ones first, then new ones.
    let free: Vec<usize> = (0..slots.len()).filter(|&i| slots[i].is_none()).collect();
    let grow = going.len().saturating_sub(free.len());
    let need_tokens = |r: &Row| (r.params.max_new_tokens - r.tokens.len()) as i64 + 1;
    let remaining = rows
        .iter()
        .zip(slots.iter())
        .filter(|(_, s)| s.is_some())
        .map(|(r, _)| need_tokens(r))
        .chain(going.iter().map(|(_, r)| need_tokens(r)))
        .max()
        .unwrap_or(0);
    let c = match cache {
        Some(c) => {
            let at = c.len - l;
            if grow > 0 || at < 0 || c.len + remaining > c.capacity {
                // A new layout: room for the prompt on the left, the longest remaining
                // generation on the right, and the extra rows.
                let w = c.len - c.start;
                let new_end = w.max(l);
                let shift = new_end - c.len;
                let batch = slots.len() as i64 + grow as i64;
                let t0 = std::time::Instant::now();
                c.relayout(batch, new_end + remaining + 64, new_end - w);
                st.relayouts
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                st.relayout_ns.fetch_add(
                    t0.elapsed().as_nanos() as u64,
                    std::sync::atomic::Ordering::Relaxed,
                );
                for s in slots.iter_mut().flatten() {
                    s.first_col += shift;
                }
            }
            c
        }
        None => {
            let (b, cap) = (going.len() as i64, l + remaining + 64);
            cache.insert(match unzeroed {
                true => model.new_cache_unzeroed(b, cap),
                false => model.new_cache(b, cap),
            })
        }
    };
    if c.len == 0 {
        c.len = l;
        c.start = 0;
    }
    let at = c.len - l;
    c.start = c.start.min(at);
    let mut placed = Vec::new();
    let mut free = free.into_iter();
    for (k, row) in going {
        let i = match free.next() {
            Some(i) => i,
            None => {
                slots.push(None);
                rows.push(dead_row());
                slots.len() - 1
            }
        };
        let next = *row.tokens.last().expect("one token sampled");
        rows[i] = row;
        slots[i] = Some(Slot {
            served: id,
            sample: k,
            first_col: at,
            pos: l,
            next,
            prompt: prefilled.2,
            prompt_len: l,
            exact_ids: exact_ids.clone(),
        });
        placed.push(i as i64);
    }
    c.place(&placed, pre, l, at);
    Ok(Some(s))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::tiny::{word, write_tiny_model};

    fn tiny() -> LoadedModel {
        let dir = std::env::temp_dir().join(format!(
            "spar-gen-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        write_tiny_model(&dir, 64, 7).unwrap();
        LoadedModel::load(&dir, Device::Cpu, Kind::Float).unwrap()
    }

    fn prompt(lm: &LoadedModel, words: &[usize]) -> Vec<i64> {
        let text: Vec<String> = words.iter().map(|&i| word(i)).collect();
        lm.tokenizer.encode(&text.join(" "), false).unwrap()
    }

    /// Top-p/top-k draws from the preselected head are the draws from the sorted vocabulary.
    #[test]
    fn sampling_from_the_head_equals_sorting_the_vocabulary() {
        tch::manual_seed(3);
        let vocab = 5000;
        let settings = [(0.9, 0), (0.5, 50), (1.0, 40), (0.95, 0)];
        let rows_for = |seed: u64| -> Vec<Row> {
            settings
                .iter()
                .enumerate()
                .map(|(i, &(top_p, top_k))| Row {
                    request: 0,
                    params: SamplingParams {
                        temperature: 0.8,
                        top_p,
                        top_k,
                        ..Default::default()
                    },
                    rng: Rng(seed + i as u64),
                    tokens: Vec::new(),
                    done: None,
                })
                .collect()
        };
        let active: Vec<usize> = (0..settings.len()).collect();
        let mut heads = 0;
        for step in 0..50u64 {
            // Peaked logits: the cuts fall within the 1024 most likely tokens.
            let logits =
                Tensor::randn([settings.len() as i64, vocab], (Kind::Float, Device::Cpu)) * 4.0;
            let (a, head) = sample_with_head(&logits, &mut rows_for(step), &active, 1024);
            let (b, sorted) = sample_with_head(&logits, &mut rows_for(step), &active, i64::MAX);
            assert!(!sorted);
            assert_eq!(a, b, "step {step}");
            heads += head as usize;
        }
        assert!(heads > 40, "the head held the cuts {heads} times of 50");
        // A row without a cut (top_p 1, no top_k) draws from the whole vocabulary.
        let mut rows = rows_for(0);
        rows[0].params.top_p = 1.0;
        let logits =
            Tensor::randn([settings.len() as i64, vocab], (Kind::Float, Device::Cpu)) * 4.0;
        assert!(!sample_with_head(&logits, &mut rows, &active, 1024).1);
    }

    #[test]
    fn batched_greedy_equals_one_at_a_time() {
        let lm = tiny();
        let prompts = vec![
            prompt(&lm, &[5, 6, 7]),
            prompt(&lm, &[9]),
            prompt(&lm, &[10, 11, 12, 13, 14, 15]),
        ];
        let p = SamplingParams {
            max_new_tokens: 12,
            ..Default::default()
        };
        let batched = generate(&lm, &prompts, &vec![p.clone(); 3]).unwrap();
        for (i, pr) in prompts.iter().enumerate() {
            let alone = generate(&lm, std::slice::from_ref(pr), std::slice::from_ref(&p)).unwrap();
            assert_eq!(batched[i][0].token_ids, alone[0][0].token_ids, "prompt {i}");
        }
    }

    #[test]
    fn seeded_samples_do_not_depend_on_batch_neighbours() {
        let lm = tiny();
        let a = prompt(&lm, &[20, 21]);
        let b = prompt(&lm, &[30, 31, 32, 33]);
        let p = SamplingParams {
            n: 3,
            temperature: 1.0,
            top_p: 0.9,
            top_k: 20,
            max_new_tokens: 10,
            seed: Some(42),
            ..Default::default()
        };
        let alone = generate(&lm, std::slice::from_ref(&a), std::slice::from_ref(&p)).unwrap();
        let q = SamplingParams {
            seed: Some(7),
            ..p.clone()
        };
        let together = generate(&lm, &[b, a], &[q, p]).unwrap();
        assert_eq!(alone[0], together[1]);
        assert_eq!(alone[0].len(), 3);
        // Different samples of one request differ (random weights give a flat distribution).
        assert!(
            alone[0][0].token_ids != alone[0][1].token_ids
                || alone[0][1].token_ids != alone[0][2].token_ids
        );
    }

    #[test]
    fn bf16_generation_runs_and_agrees_with_f32_on_the_first_token() {
        let lm = tiny();
        let bf = LoadedModel::load(&lm.dir, Device::Cpu, Kind::BFloat16).unwrap();
        assert_eq!(bf.model.kind(), Kind::BFloat16);
        let pr = prompt(&lm, &[5, 6, 7]);
        let p = SamplingParams {
            max_new_tokens: 4,
            ignore_eos: true,
            ..Default::default()
        };
        let a = generate(&lm, std::slice::from_ref(&pr), std::slice::from_ref(&p)).unwrap();
        let b = generate(&bf, std::slice::from_ref(&pr), std::slice::from_ref(&p)).unwrap();
        assert_eq!(b[0][0].token_ids.len(), 4);
        assert_eq!(a[0][0].token_ids[0], b[0][0].token_ids[0]);
    }

    #[test]
    fn stop_strings_length_and_context_limits() {
        let lm = tiny();
        let pr = prompt(&lm, &[5, 6]);
        let greedy = generate(
            &lm,
            std::slice::from_ref(&pr),
            &[SamplingParams {
                max_new_tokens: 8,
                ..Default::default()
            }],
        )
        .unwrap();
        let c = &greedy[0][0];
        if c.finish_reason == FinishReason::Length {
            assert_eq!(c.token_ids.len(), 8);
        }
        // Stop at the text of the third generated token: the completion ends before it.
        if c.token_ids.len() >= 3 && !lm.tokenizer.eos_ids.contains(&c.token_ids[2]) {
            let third = lm.tokenizer.decode(&c.token_ids[2..3], true).unwrap();
            let p = SamplingParams {
                max_new_tokens: 8,
                stop: vec![third.clone()],
                ..Default::default()
            };
            let s = generate(&lm, std::slice::from_ref(&pr), &[p]).unwrap();
            assert_eq!(s[0][0].finish_reason, FinishReason::Stop);
            assert!(!s[0][0].text.contains(&third), "{:?}", s[0][0].text);
        }
        let long = vec![5i64; 250];
        let e = generate(
            &lm,
            &[long],
            &[SamplingParams {
                max_new_tokens: 10,
                ..Default::default()
            }],
        )
        .unwrap_err();
        assert!(e.to_string().contains("exceeds the context of 256"), "{e}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn engine_batches_concurrent_requests() {
        let lm = tiny();
        let expected: Vec<_> = (0..6)
            .map(|i| {
                let pr = prompt(&lm, &[3 + i, 4 + i]);
                generate(
                    &lm,
                    &[pr],
                    &[SamplingParams {
                        max_new_tokens: 6,
                        ..Default::default()
                    }],
                )
                .unwrap()
            })
            .collect();
        let prompts: Vec<_> = (0..6).map(|i| prompt(&lm, &[3 + i, 4 + i])).collect();
        let engine = Engine::start(lm, 64).unwrap();
        let handles: Vec<_> = prompts
            .into_iter()
            .map(|p| {
                let e = engine.clone();
                tokio::spawn(async move {
                    e.submit(
                        p,
                        SamplingParams {
                            max_new_tokens: 6,
                            ..Default::default()
                        },
                    )
                    .await
                })
            })
            .collect();
        for (i, h) in handles.into_iter().enumerate() {
            assert_eq!(h.await.unwrap().unwrap(), expected[i][0], "request {i}");
        }
    }

    /// Continuous batching: requests of different lengths arrive while others decode, rows
    /// end at different steps (slots are reused, the cache is re-laid out for a long prompt
    /// and for more rows), and every request still gets exactly what it gets alone.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn engine_rows_join_and_leave_a_running_batch() {
        rows_join_and_leave(tiny()).await;
    }

    /// The same with heads of 16, where decode attention runs on the `spar-gemm` kernel, rows
    /// of one prompt (the `n` samples, the repeated prompt) read one copy of its cache, and a
    /// prompt beginning with an earlier one prefills only its rest.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn engine_rows_sharing_a_prompt_read_one_copy_and_match_alone() {
        let dir = std::env::temp_dir().join(format!("spar-gen-wide-{}", std::process::id()));
        crate::model::tiny::write_tiny_model_hidden(&dir, 64, 7, 64).unwrap();
        let lm = LoadedModel::load(&dir, Device::Cpu, Kind::Float).unwrap();
        assert_eq!(
            lm.model.uses_decode_kernel(),
            crate::model::gemm::available(),
            "the packed decode path applies on this CPU"
        );
        let (shared, reused) = rows_join_and_leave(lm).await;
        if crate::model::gemm::available() {
            assert!(shared > 0, "no row read a shared prompt copy");
            assert!(
                reused >= 10,
                "{reused} prompt tokens reused from a cached prefix"
            );
        }
    }

    /// Two requests whose prompts begin with the same 20 tokens (then 6 of their own): the second prefills only its
    /// rest, and while both decode, its attention reads the shared prefix from the first
    /// row's copy; each still gets exactly what it gets alone.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn prompts_sharing_a_prefix_prefill_and_read_it_once() {
        if !crate::model::gemm::available() {
            return;
        }
        let dir = std::env::temp_dir().join(format!("spar-gen-prefix-{}", std::process::id()));
        crate::model::tiny::write_tiny_model_hidden(&dir, 64, 11, 64).unwrap();
        let lm = LoadedModel::load(&dir, Device::Cpu, Kind::Float).unwrap();
        let base: Vec<usize> = (0..20).map(|k| 3 + (k * 7) % 60).collect();
        let reqs: Vec<(Vec<i64>, SamplingParams)> =
            [[40, 41, 42, 43, 44, 45], [50, 51, 52, 53, 54, 55]]
                .iter()
                .enumerate()
                .map(|(i, tail)| {
                    let words: Vec<usize> = base.iter().chain(tail.iter()).copied().collect();
                    let p = SamplingParams {
                        temperature: 0.8,
                        max_new_tokens: 60,
                        ignore_eos: true,
                        seed: Some(i as u64),
                        ..Default::default()
                    };
                    (prompt(&lm, &words), p)
                })
                .collect();
        let alone: Vec<_> = reqs
            .iter()
            .map(|(pr, p)| generate(&lm, std::slice::from_ref(pr), std::slice::from_ref(p)))
            .collect::<Result<_, _>>()
            .unwrap();
        let engine = Engine::start(lm, 8).unwrap();
        let handles: Vec<_> = reqs
            .into_iter()
            .map(|(pr, p)| {
                let e = engine.clone();
                tokio::spawn(async move { e.submit(pr, p).await })
            })
            .collect();
        for (i, h) in handles.into_iter().enumerate() {
            assert_eq!(h.await.unwrap().unwrap(), alone[i][0], "request {i}");
        }
        use std::sync::atomic::Ordering::Relaxed;
        let st = engine.stats();
        assert_eq!(st.prefix_reused_tokens.load(Relaxed), 20, "{st:?}");
        assert!(
            st.row_steps.load(Relaxed) > st.steps.load(Relaxed),
            "both rows decoded together"
        );
        assert!(st.shared_prompt_rows.load(Relaxed) > 0, "{st:?}");
    }

    /// Rows that read a shared prompt copy, and prompt tokens copied from a cached prefix.
    async fn rows_join_and_leave(lm: LoadedModel) -> (u64, u64) {
        let reqs: Vec<(Vec<i64>, SamplingParams)> = (0..10)
            .map(|i| {
                let words: Vec<usize> = (0..(1 + (i * 7) % 13)).map(|k| 3 + (k + i) % 60).collect();
                let p = SamplingParams {
                    n: 1 + i % 3,
                    temperature: if i % 2 == 0 { 0.0 } else { 0.9 },
                    top_p: 0.95,
                    max_new_tokens: 3 + (i * 5) % 17,
                    seed: Some(100 + i as u64),
                    ..Default::default()
                };
                (prompt(&lm, &words), p)
            })
            .collect();
        // The same prompt again with another seed: served from the prompt cache.
        let mut reqs = reqs;
        let mut again = reqs[3].clone();
        again.1.seed = Some(7);
        reqs.push(again);
        // A prompt that begins with another's: prefilled after a copy of the shared prefix
        // where the model computes it the same bits.
        let mut longer = reqs[5].clone();
        longer.0.extend(prompt(&lm, &[9, 8, 7, 6, 5, 4]));
        longer.1.seed = Some(9);
        reqs.push(longer);
        let expected: Vec<_> = reqs
            .iter()
            .map(|(pr, p)| {
                generate(&lm, std::slice::from_ref(pr), std::slice::from_ref(p))
                    .unwrap()
                    .remove(0)
            })
            .collect();
        let engine = Engine::start(lm, 8).unwrap();
        let handles: Vec<_> = reqs
            .into_iter()
            .enumerate()
            .map(|(i, (pr, p))| {
                let e = engine.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(std::time::Duration::from_millis(2 * i as u64)).await;
                    e.submit(pr, p).await
                })
            })
            .collect();
        for (i, h) in handles.into_iter().enumerate() {
            let got = h.await.unwrap().unwrap();
            let ids: Vec<_> = got.iter().map(|c| c.token_ids.clone()).collect();
            let want: Vec<_> = expected[i].iter().map(|c| c.token_ids.clone()).collect();
            assert_eq!(ids, want, "request {i}");
        }
        let st = engine.stats();
        use std::sync::atomic::Ordering::Relaxed;
        assert!(st.joined_running.load(Relaxed) > 0, "{st:?}");
        assert!(st.relayouts.load(Relaxed) > 0, "{st:?}");
        assert!(st.prompt_cache_hits.load(Relaxed) > 0, "{st:?}");
        (
            st.shared_prompt_rows.load(Relaxed),
            st.prefix_reused_tokens.load(Relaxed),
        )
    }

    /// When most rows of the running batch have finished, they are dropped from the cache and
    /// the rows still going continue unchanged.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn engine_drops_finished_rows() {
        let lm = tiny();
        let long = (
            prompt(&lm, &[5, 6, 7, 8]),
            SamplingParams {
                max_new_tokens: 40,
                ignore_eos: true,
                ..Default::default()
            },
        );
        let short = (
            prompt(&lm, &[9, 10]),
            SamplingParams {
                n: 6,
                temperature: 1.0,
                max_new_tokens: 2,
                ignore_eos: true,
                seed: Some(3),
                ..Default::default()
            },
        );
        let want: Vec<_> = [&long, &short]
            .iter()
            .map(|(p, sp)| {
                generate(&lm, std::slice::from_ref(p), std::slice::from_ref(sp))
                    .unwrap()
                    .remove(0)
            })
            .collect();
        let engine = Engine::start(lm, 16).unwrap();
        let (a, b) = tokio::join!(
            engine.submit(long.0.clone(), long.1.clone()),
            engine.submit(short.0.clone(), short.1.clone())
        );
        assert_eq!(a.unwrap(), want[0]);
        assert_eq!(b.unwrap(), want[1]);
        use std::sync::atomic::Ordering::Relaxed;
        assert!(engine.stats().compactions.load(Relaxed) > 0);
    }
}
