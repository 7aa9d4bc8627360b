//! A model directory spar writes is a real HF directory: spar reloads it bit for bit, and HF
//! transformers loads it and computes the same logits.

use spar_host::model::tiny::write_tiny_model;
use spar_host::model::{LoadedModel, llama::full_mask};
use tch::{Device, Kind, Tensor};

fn logits(lm: &LoadedModel, ids: &[i64]) -> Tensor {
    let t = ids.len() as i64;
    let input = Tensor::from_slice(ids).view([1, t]);
    let pos = Tensor::arange(t, (Kind::Int64, Device::Cpu)).view([1, t]);
    let mask = full_mask(&Tensor::ones([1, t], (Kind::Int64, Device::Cpu)), t);
    tch::no_grad(|| {
        lm.model
            .logits(&lm.model.forward(&input, &pos, &mask, None))
    })
    .squeeze_dim(0)
}

fn tempdir(tag: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("spar-save-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

#[test]
fn save_and_reload_is_exact() {
    let a = tempdir("a");
    write_tiny_model(&a, 64, 11).unwrap();
    let lm = LoadedModel::load(&a, Device::Cpu, Kind::Float).unwrap();
    let b = tempdir("b");
    lm.save(&b).unwrap();
    let again = LoadedModel::load(&b, Device::Cpu, Kind::Float).unwrap();
    let ids = [3i64, 7, 9, 4, 20];
    assert_eq!(
        (logits(&lm, &ids) - logits(&again, &ids))
            .abs()
            .max()
            .double_value(&[]),
        0.0
    );
    for f in [
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
        "generation_config.json",
    ] {
        assert!(b.join(f).exists(), "{f}");
    }
    assert!(
        std::fs::read_dir(&b).unwrap().all(|e| !e
            .unwrap()
            .file_name()
            .to_string_lossy()
            .ends_with(".tmp"))
    );
}

#[test]
fn transformers_loads_what_spar_saves() {
    let dir = tempdir("hf");
    write_tiny_model(&dir, 64, 12).unwrap();
    let lm = LoadedModel::load(&dir, Device::Cpu, Kind::Float).unwrap();
    let ids = [3i64, 7, 9, 4, 20, 33];
    let ours = logits(&lm, &ids);
    let python = spar_host::plugin::repo_root().join(".venv/bin/python");
    let code = format!(
        "import json,torch\nfrom transformers import AutoModelForCausalLM\n\
         m=AutoModelForCausalLM.from_pretrained({:?}, dtype=torch.float32).eval()\n\
         with torch.no_grad(): out=m(torch.tensor([{:?}])).logits[0]\n\
         print(json.dumps(out.tolist()))",
        dir.display().to_string(),
        ids
    );
    let out = std::process::Command::new(&python)
        .args(["-c", &code])
        .env("HF_HUB_OFFLINE", "1")
        .output()
        .expect("python runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let theirs: Vec<Vec<f32>> = serde_json::from_slice(&out.stdout).unwrap();
    let theirs = Tensor::from_slice(&theirs.concat()).view([ids.len() as i64, 64]);
    let d = (ours - theirs).abs().max().double_value(&[]);
    assert!(d < 1e-4, "spar vs transformers on a spar-saved model: {d}");
}
