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
    let greedy: Vec<i64> = Vec::<i64>::try_from(logits.argmax(-1, false).to_device(Device::Cpu))
        .expect("argmax to vec");
    let needs_sampling = active.iter().any(|&r| rows[r].params.temperature > 0.0);
    if !needs_sampling {
        return greedy;
    }
    let temps: Vec<f32> = active
        .iter()
        .map(|&r| rows[r].params.temperature.max(1e-6) as f32)
        .collect();
    let temps = Tensor::from_slice(&temps)
        .to_device(logits.device())
        .unsqueeze(1);
    let probs = (logits.to_kind(Kind::Float) / temps).softmax(-1, Kind::Float);
    let (sorted, idx) = probs.sort(-1, true);
    // Only the head of each sorted row can be drawn: copy up to the widest head.
    let cum = sorted.cumsum(-1, Kind::Float);
    let mut widths = Vec::with_capacity(active.len());
    let below: Vec<i64> = Vec::<i64>::try_from(
        cum.lt_tensor(
            &Tensor::from_slice(
                &active
                    .iter()
                    .map(|&r| rows[r].params.top_p as f32)
                    .collect::<Vec<_>>(),
            )
            .to_device(logits.device())
            .unsqueeze(1),
        )
        .sum_dim_intlist(-1, false, Kind::Int64)
        .to_device(Device::Cpu),
    )
    .expect("counts");
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
    out
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
    let eos = &tok.eos_ids;
    tch::no_grad(|| -> Result<(), ModelError> {
        let hidden = model.forward(&ids, &pos, &mask, Some(&mut cache));
        let mut logits = model.logits(&hidden.narrow(1, len - 1, 1).squeeze_dim(1));
        let mut last_pos = pos.narrow(1, len - 1, 1);
        for _step in 0..max_new {
            let active: Vec<usize> = (0..rows.len()).collect();
            let next = sample(&logits, &mut rows, &active);
            for (r, &t) in next.iter().enumerate() {
                let row = &mut rows[r];
                if row.done.is_some() {
                    continue;
                }
                row.tokens.push(t);
                if eos.contains(&t) && !row.params.ignore_eos {
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
            logits = model.logits(&hidden.squeeze_dim(1));
        }
        Ok(())
    })?;
    let mut out: Vec<Vec<Completion>> = vec![Vec::new(); prompts.len()];
    for row in rows {
        let mut tokens = row.tokens;
        let reason = row.done.unwrap_or(FinishReason::Length);
        let mut text = tok.decode(&tokens, true)?;
        if let Some(&last) = tokens.last()
            && eos.contains(&last)
            && reason == FinishReason::Stop
        {
            tokens.pop();
        }
        // Cut at the first stop string (it is not part of the completion, as in vLLM).
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
        out[row.request].push(Completion {
            text,
            token_ids: tokens,
            finish_reason: reason,
        });
    }
    Ok(out)
}

/// One queued request.
struct Job {
    prompt: Vec<i64>,
    params: SamplingParams,
    reply: oneshot::Sender<Result<Vec<Completion>, String>>,
}

/// A generation engine on its own thread: concurrent tasks submit requests and the engine
/// batches whatever is waiting (up to `max_batch_rows` sequences) into one `generate` call.
#[derive(Clone)]
pub struct Engine {
    tx: std_mpsc::Sender<Job>,
    tokenizer: std::sync::Arc<super::Tokenizer>,
}

impl Engine {
    /// Start the engine thread; it owns the model.
    pub fn start(lm: LoadedModel, max_batch_rows: usize) -> Result<Self, ModelError> {
        let (tx, rx) = std_mpsc::channel::<Job>();
        let dir = lm.dir.clone();
        // The engine needs its own tokenizer copy for callers (encode/render happen on their side).
        let cfg = lm.model.cfg.clone();
        let tokenizer = std::sync::Arc::new(super::Tokenizer::load(&dir, &cfg)?);
        std::thread::Builder::new()
            .name("spar-generate".into())
            .spawn(move || {
                while let Ok(first) = rx.recv() {
                    let mut jobs = vec![first];
                    let mut rows = jobs[0].params.n.max(1);
                    while rows < max_batch_rows {
                        match rx.try_recv() {
                            Ok(j) => {
                                rows += j.params.n.max(1);
                                jobs.push(j);
                            }
                            Err(_) => break,
                        }
                    }
                    let prompts: Vec<Vec<i64>> = jobs.iter().map(|j| j.prompt.clone()).collect();
                    let params: Vec<SamplingParams> =
                        jobs.iter().map(|j| j.params.clone()).collect();
                    match generate(&lm, &prompts, &params) {
                        Ok(outs) => {
                            for (job, out) in jobs.into_iter().zip(outs) {
                                let _ = job.reply.send(Ok(out));
                            }
                        }
                        Err(e) => {
                            // One bad request must not fail its batch neighbours: retry alone.
                            for job in jobs {
                                let r = generate(
                                    &lm,
                                    std::slice::from_ref(&job.prompt),
                                    std::slice::from_ref(&job.params),
                                )
                                .map(|mut o| o.pop().unwrap_or_default())
                                .map_err(|_| e.to_string());
                                let _ = job.reply.send(r);
                            }
                        }
                    }
                }
            })
            .map_err(|e| ModelError::Input(format!("cannot start the generation thread: {e}")))?;
        Ok(Self { tx, tokenizer })
    }

    pub fn tokenizer(&self) -> &super::Tokenizer {
        &self.tokenizer
    }

    /// Generate for token ids.
    pub async fn submit(
        &self,
        prompt: Vec<i64>,
        params: SamplingParams,
    ) -> Result<Vec<Completion>, ModelError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Job {
                prompt,
                params,
                reply,
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
}
