//! Tiny random-weight models written as real HF directories, for fast tests of shapes,
//! masks, caching, generation and training on CPU (no registry ships a tiny causal LM).

use std::path::Path;

use tch::Device;

use super::weights::{save_dir, write_atomic};
use super::{Llama, ModelConfig, ModelError};

/// Tokens `<pad>`, `<eos>`, `<bos>`, then the words `w3` … `w{vocab-1}`.
pub fn word(i: usize) -> String {
    format!("w{i}")
}

/// Write a tiny Llama (2 layers, hidden 32, GQA 4/2 heads) with a word-level tokenizer of
/// `vocab` tokens and a ChatML-like template into `dir`.
pub fn write_tiny_model(dir: &Path, vocab: usize, seed: i64) -> Result<(), ModelError> {
    write_tiny_model_with(dir, vocab, seed, &[], 256)
}

/// As [`write_tiny_model`], plus `phrases` as added (non-special) tokens with ids `vocab…`,
/// and a context of `max_positions`. A random model samples a phrase such as
/// `Final Judgement: Yes` or `[[start]]` as readily as any word, so the self-play stages
/// get parseable verdicts and refinements from a tiny model (the end-to-end tests).
pub fn write_tiny_model_with(
    dir: &Path,
    vocab: usize,
    seed: i64,
    phrases: &[&str],
    max_positions: usize,
) -> Result<(), ModelError> {
    write_tiny(dir, vocab, seed, phrases, max_positions, 32)
}

/// As [`write_tiny_model`] with hidden size `hidden` (4 query heads of `hidden / 4`): 64 gives
/// heads of 16, the smallest the decode attention kernel takes.
pub fn write_tiny_model_hidden(
    dir: &Path,
    vocab: usize,
    seed: i64,
    hidden: usize,
) -> Result<(), ModelError> {
    write_tiny(dir, vocab, seed, &[], 256, hidden)
}

fn write_tiny(
    dir: &Path,
    vocab: usize,
    seed: i64,
    phrases: &[&str],
    max_positions: usize,
    hidden: usize,
) -> Result<(), ModelError> {
    let total = vocab + phrases.len();
    std::fs::create_dir_all(dir).map_err(|e| ModelError::io(dir, e))?;
    let cfg: ModelConfig = serde_json::from_value(serde_json::json!({
        "architectures": ["LlamaForCausalLM"], "model_type": "llama",
        "hidden_size": hidden, "intermediate_size": 2 * hidden, "num_hidden_layers": 2,
        "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": total,
        "max_position_embeddings": max_positions, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
        "tie_word_embeddings": true, "bos_token_id": 2, "eos_token_id": 1
    }))
    .expect("valid config");
    tch::manual_seed(seed);
    let model = tch::no_grad(|| Llama::new(cfg, Device::Cpu));
    let mut v = serde_json::Map::new();
    for (i, t) in ["<pad>", "<eos>", "<bos>"].iter().enumerate() {
        v.insert((*t).into(), i.into());
    }
    for i in 3..vocab {
        v.insert(word(i), i.into());
    }
    let mut added: Vec<_> = ["<pad>", "<eos>", "<bos>"]
        .iter()
        .enumerate()
        .map(|(i, t)| {
            serde_json::json!({"id": i, "content": t, "single_word": false,
            "lstrip": false, "rstrip": false, "normalized": false, "special": true})
        })
        .collect();
    for (k, p) in phrases.iter().enumerate() {
        v.insert((*p).into(), (vocab + k).into());
        added.push(
            serde_json::json!({"id": vocab + k, "content": p, "single_word": false,
            "lstrip": false, "rstrip": false, "normalized": false, "special": false}),
        );
    }
    let tokenizer = serde_json::json!({
        "version": "1.0", "truncation": null, "padding": null, "added_tokens": added,
        "normalizer": null, "pre_tokenizer": {"type": "Whitespace"}, "post_processor": null,
        "decoder": {"type": "WordPiece", "prefix": "##", "cleanup": false},
        "model": {"type": "WordLevel", "vocab": v, "unk_token": "<pad>"}
    });
    write_atomic(&dir.join("tokenizer.json"), &tokenizer.to_string())?;
    let template = "{% for m in messages %}<bos> {{ m['role'] }} {{ m['content'] }} <eos> {% endfor %}{% if add_generation_prompt %}<bos> assistant {% endif %}";
    write_atomic(
        &dir.join("tokenizer_config.json"),
        &serde_json::json!({"chat_template": template, "bos_token": "<bos>",
            "eos_token": "<eos>", "pad_token": "<pad>"})
        .to_string(),
    )?;
    write_atomic(
        &dir.join("generation_config.json"),
        &serde_json::json!({"bos_token_id": 2, "eos_token_id": 1}).to_string(),
    )?;
    save_dir(&model, dir, dir)
}

/// Overwrite every parameter with a fixed formula of its name's rank and element index, so a
/// Python script can build the very same weights without any file (see scripts/dpo_parity.py):
/// parameter k (names sorted) element j = 0.05·sin(0.1·(j+1) + 0.7·k), norms 1 + that.
pub fn fill_deterministic(vs: &tch::nn::VarStore) {
    let mut vars: Vec<(String, tch::Tensor)> = vs.variables().into_iter().collect();
    vars.sort_by(|a, b| a.0.cmp(&b.0));
    tch::no_grad(|| {
        for (k, (name, t)) in vars.iter_mut().enumerate() {
            let n = t.numel() as i64;
            let j = tch::Tensor::arange(n, (tch::Kind::Double, tch::Device::Cpu));
            let mut v = ((j + 1.0) * 0.1 + 0.7 * k as f64).sin() * 0.05;
            if name.contains("norm") {
                v += 1.0;
            }
            t.copy_(&v.to_kind(t.kind()).view(t.size().as_slice()));
        }
    });
}
