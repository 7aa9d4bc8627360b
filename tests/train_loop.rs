//! The training loop on a tiny random model: SFT lowers its loss, DPO raises the reward
//! margin, a run killed mid-way resumes to exactly the weights of an uninterrupted run, and
//! bad data stops the run before anything is written.

use std::path::{Path, PathBuf};

use spar_host::model::tiny::{word, write_tiny_model};
use spar_host::train::trainer::{Objective, TrainConfig, train};

fn tempdir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("spar-train-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn sentence(seed: usize, n: usize) -> String {
    (0..n)
        .map(|k| word(3 + (seed * 7 + k * 5) % 60))
        .collect::<Vec<_>>()
        .join(" ")
}

fn sft_data(path: &Path, rows: usize) {
    let lines: Vec<String> = (0..rows)
        .map(|i| {
            serde_json::json!({"messages": [
                {"role": "user", "content": sentence(i, 3)},
                {"role": "assistant", "content": sentence(i + 1, 4)}]})
            .to_string()
        })
        .collect();
    std::fs::write(path, lines.join("\n")).unwrap();
}

fn dpo_data(path: &Path, rows: usize) {
    let lines: Vec<String> = (0..rows)
        .map(|i| {
            serde_json::json!({"prompt": sentence(i, 3), "chosen": sentence(i + 2, 3),
                "rejected": sentence(i + 9, 3)})
            .to_string()
        })
        .collect();
    std::fs::write(path, lines.join("\n")).unwrap();
}

fn config(dir: &Path, objective: Objective, data: PathBuf, out: &str) -> TrainConfig {
    let model = dir.join("model");
    if !model.exists() {
        write_tiny_model(&model, 64, 3).unwrap();
    }
    TrainConfig::load(
        &spar_host::plugin::repo_root().join("configs/train_tiny.toml"),
        &[
            format!("objective={:?}", format!("{objective:?}").to_lowercase()),
            format!("model={:?}", model.display().to_string()),
            format!("data={:?}", data.display().to_string()),
            format!("output_dir={:?}", dir.join(out).display().to_string()),
        ],
    )
    .unwrap()
}

fn metrics(out: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(out.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn sft_lowers_the_loss_and_writes_a_plot() {
    let dir = tempdir("sft");
    let data = dir.join("sft.jsonl");
    sft_data(&data, 16);
    let mut cfg = config(&dir, Objective::Sft, data, "out");
    cfg.epochs = 4;
    let s = train(&cfg, None).unwrap();
    assert_eq!(s.steps, 16);
    let m = metrics(&cfg.output_dir);
    assert_eq!(m.len(), 16);
    let first = m[0]["loss"].as_f64().unwrap();
    let last = m[15]["loss"].as_f64().unwrap();
    assert!(last < first * 0.8, "loss {first} -> {last}");
    assert!(cfg.output_dir.join("final/model.safetensors").exists());
    let png = std::fs::read(s.plot.unwrap()).unwrap();
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
}

#[test]
fn dpo_raises_the_margin_and_caches_reference_logps() {
    let dir = tempdir("dpo");
    let data = dir.join("pairs.jsonl");
    dpo_data(&data, 8);
    let mut cfg = config(&dir, Objective::Dpo, data, "out");
    cfg.epochs = 6;
    train(&cfg, None).unwrap();
    let m = metrics(&cfg.output_dir);
    let margin = |i: usize| m[i]["reward_margin"].as_f64().unwrap();
    assert!(
        margin(0).abs() < 1e-6,
        "starts at the reference: {}",
        margin(0)
    );
    assert!(margin(m.len() - 1) > 0.02, "margin {}", margin(m.len() - 1));
    assert!(m[m.len() - 1]["reward_accuracy"].as_f64().unwrap() > 0.5);
    let caches = std::fs::read_dir(&cfg.output_dir)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with("ref_logps-")
        })
        .count();
    assert_eq!(caches, 1);
}

#[test]
fn a_killed_run_resumes_to_identical_weights() {
    let dir = tempdir("resume");
    let data = dir.join("pairs.jsonl");
    dpo_data(&data, 12);
    let mut full = config(&dir, Objective::Dpo, data.clone(), "full");
    full.save_steps = 2;
    full.epochs = 2;
    train(&full, None).unwrap();
    let mut killed = config(&dir, Objective::Dpo, data, "killed");
    killed.save_steps = 2;
    killed.epochs = 2;
    // Killed after 3 steps: checkpoint-2 exists, step 3 is lost.
    let first = train(&killed, Some(3)).unwrap();
    assert_eq!(first.resumed_from, None);
    assert!(!killed.output_dir.join("final").exists());
    let second = train(&killed, None).unwrap();
    assert_eq!(second.resumed_from, Some(2));
    let a = std::fs::read(full.output_dir.join("final/model.safetensors")).unwrap();
    let b = std::fs::read(killed.output_dir.join("final/model.safetensors")).unwrap();
    assert!(a == b, "resumed weights differ from the uninterrupted run");
    let steps: Vec<u64> = metrics(&killed.output_dir)
        .iter()
        .map(|m| m["step"].as_u64().unwrap())
        .collect();
    assert_eq!(
        steps,
        (1..=6).collect::<Vec<_>>(),
        "no lost or duplicated metric lines"
    );
}

#[test]
fn malformed_data_stops_before_writing() {
    let dir = tempdir("bad");
    let data = dir.join("bad.jsonl");
    std::fs::write(
        &data,
        "{\"prompt\": \"w5\", \"chosen\": \"w6\", \"rejected\": \"w7\"}\n{oops\n",
    )
    .unwrap();
    let cfg = config(&dir, Objective::Dpo, data, "out");
    let e = train(&cfg, None).unwrap_err().to_string();
    assert!(e.contains("bad.jsonl:2"), "{e}");
    assert!(!cfg.output_dir.exists());
}
