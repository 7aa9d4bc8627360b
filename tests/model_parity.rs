//! Parity with HF transformers on the embedded SmolLM2-135M-Instruct (imported from its GGUF by
//! setup): tokenizer, chat template, logits (max abs diff < 1e-3 in f32) and 64 greedy tokens.
//! The fixture comes from `scripts/hf_parity.py`.

use serde_json::Value;
use spar_host::model::generate::{SamplingParams, generate};
use spar_host::model::tokenizer::ChatMessage;
use spar_host::model::{LoadedModel, default_model_dir};
use tch::{Device, Kind, Tensor};

fn fixture() -> Value {
    let p = spar_host::plugin::repo_root().join("tests/fixtures/smollm2_parity.json");
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

fn model() -> LoadedModel {
    let dir = default_model_dir();
    assert!(
        dir.join("config.json").exists(),
        "{} is missing: run `bash scripts/setup.sh` (it imports the embedded GGUF)",
        dir.display()
    );
    LoadedModel::load(&dir, Device::Cpu, Kind::Float).unwrap()
}

fn ids(v: &Value) -> Vec<i64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_i64().unwrap())
        .collect()
}

fn messages(v: &Value) -> Vec<ChatMessage> {
    serde_json::from_value(v.clone()).unwrap()
}

#[test]
fn tokenizer_and_chat_template_match_transformers() {
    let f = fixture();
    let lm = model();
    assert_eq!(
        lm.tokenizer.vocab_size(),
        f["vocab_size"].as_u64().unwrap() as usize
    );
    for case in f["tokenizer_roundtrip"].as_array().unwrap() {
        let text = case["text"].as_str().unwrap();
        let got = lm.tokenizer.encode(text, false).unwrap();
        assert_eq!(got, ids(&case["input_ids"]), "encoding {text:?}");
        assert_eq!(
            lm.tokenizer.decode(&got, false).unwrap(),
            case["decoded"].as_str().unwrap()
        );
    }
    for ex in f["chat_template"]["examples"].as_array().unwrap() {
        let msgs = messages(&ex["messages"]);
        let add_gen = ex["add_generation_prompt"].as_bool().unwrap();
        let text = lm.tokenizer.render_chat(&msgs, add_gen).unwrap();
        assert_eq!(text, ex["text"].as_str().unwrap(), "{}", ex["name"]);
        assert_eq!(
            lm.tokenizer.encode_chat(&msgs, add_gen).unwrap(),
            ids(&ex["input_ids"])
        );
    }
}

/// The stored last-position logits of every prompt, `vocab` floats each.
fn last_logits(f: &Value) -> Vec<f32> {
    let raw = std::fs::read(
        spar_host::plugin::repo_root()
            .join("tests/fixtures")
            .join(f["last_logits_file"].as_str().unwrap()),
    )
    .unwrap();
    raw.chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

/// The largest difference from the fixture's logits at a prompt's recorded positions, given
/// the model's logits `[V]` at a position.
fn at_positions(p: &Value, logits_at: impl Fn(usize) -> Tensor) -> f64 {
    let mut worst = 0.0f64;
    for pp in p["positions"].as_array().unwrap() {
        let at = pp["position"].as_u64().unwrap() as usize;
        let cols = Tensor::from_slice(&ids(&pp["token_ids"]));
        let want: Vec<f32> = pp["logits"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap() as f32)
            .collect();
        let d = (logits_at(at).index_select(0, &cols) - Tensor::from_slice(&want))
            .abs()
            .max()
            .double_value(&[]);
        worst = worst.max(d);
    }
    worst
}

#[test]
fn logits_match_transformers_within_1e_3() {
    let f = fixture();
    let lm = model();
    let vocab = f["vocab_size"].as_u64().unwrap() as usize;
    let reference = last_logits(&f);
    let mut worst = 0.0f64;
    for (i, p) in f["prompts"].as_array().unwrap().iter().enumerate() {
        let want_ids = ids(&p["input_ids"]);
        assert_eq!(
            lm.tokenizer
                .encode(p["text"].as_str().unwrap(), false)
                .unwrap(),
            want_ids
        );
        let t = want_ids.len() as i64;
        let input = Tensor::from_slice(&want_ids).view([1, t]);
        let attn = Tensor::ones([1, t], (Kind::Int64, Device::Cpu));
        let pos = Tensor::arange(t, (Kind::Int64, Device::Cpu)).view([1, t]);
        let mask = spar_host::model::llama::full_mask(&attn, t);
        let logits = tch::no_grad(|| {
            lm.model
                .logits(&lm.model.forward(&input, &pos, &mask, None))
        })
        .squeeze_dim(0);
        let last = Tensor::from_slice(&reference[i * vocab..(i + 1) * vocab]);
        let d = (logits.get(t - 1) - &last).abs().max().double_value(&[]);
        worst = worst.max(d);
        worst = worst.max(at_positions(p, |at| logits.get(at as i64)));
        let argmax = logits.get(t - 1).argmax(0, false).int64_value(&[]);
        assert_eq!(argmax, p["logits_stats"]["argmax"].as_i64().unwrap());
    }
    assert!(
        worst < 1e-3,
        "max |spar - transformers| logit difference {worst}"
    );
}

/// The decode path (one position per step through the KV cache: the packed small-batch
/// products and the batched decode attention) against the same transformers logits.
#[test]
fn decode_steps_match_transformers_logits() {
    let f = fixture();
    let lm = model();
    assert_eq!(
        lm.model.uses_decode_kernel(),
        spar_host::model::gemm::available(),
        "f32 on a CPU with AVX-512 decodes with the packed kernel"
    );
    let vocab = f["vocab_size"].as_u64().unwrap() as usize;
    let reference = last_logits(&f);
    let mut worst = 0.0f64;
    for (i, p) in f["prompts"].as_array().unwrap().iter().enumerate() {
        let prompt = ids(&p["input_ids"]);
        let t = prompt.len() as i64;
        let mut cache = lm.model.new_cache(1, t);
        let steps: Vec<Tensor> = tch::no_grad(|| {
            (0..t)
                .map(|at| {
                    let input =
                        Tensor::from_slice(&prompt[at as usize..at as usize + 1]).view([1, 1]);
                    let pos = Tensor::from_slice(&[at]).view([1, 1]);
                    let mask = Tensor::ones([1, 1, 1, at + 1], (Kind::Bool, Device::Cpu));
                    let h = lm.model.forward(&input, &pos, &mask, Some(&mut cache));
                    lm.model.next_logits(&h.squeeze_dim(1)).squeeze_dim(0)
                })
                .collect()
        });
        let last = Tensor::from_slice(&reference[i * vocab..(i + 1) * vocab]);
        let d = (&steps[t as usize - 1] - last)
            .abs()
            .max()
            .double_value(&[]);
        worst = worst.max(d);
        worst = worst.max(at_positions(p, |at| steps[at].shallow_clone()));
    }
    assert!(
        worst < 1e-3,
        "max |spar decode - transformers| logit difference {worst}"
    );
}

#[test]
fn greedy_decoding_matches_64_tokens() {
    let f = fixture();
    let lm = model();
    for case in f["greedy"].as_array().unwrap() {
        let msgs = messages(&case["messages"]);
        let prompt = lm.tokenizer.encode_chat(&msgs, true).unwrap();
        assert_eq!(prompt, ids(&case["input_ids"]));
        let want = ids(&case["greedy_new_ids"]);
        let p = SamplingParams {
            max_new_tokens: want.len(),
            ignore_eos: true,
            ..Default::default()
        };
        let out = generate(&lm, &[prompt], &[p]).unwrap();
        assert_eq!(out[0][0].token_ids, want, "{:?}", case["messages"]);
        // With EOS honoured it stops where transformers' generate() stops.
        let stop = ids(&case["generate_new_ids"]);
        let p = SamplingParams {
            max_new_tokens: 64,
            ..Default::default()
        };
        let out = generate(&lm, &[ids(&case["input_ids"])], &[p]).unwrap();
        let mut got = out[0][0].token_ids.clone();
        if stop.last() == Some(&2) {
            got.push(2);
        }
        assert_eq!(got, stop);
    }
}
