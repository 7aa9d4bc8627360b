//! `spar-host run` end to end on a tiny random-weight model with the real plugins: one
//! iteration through every stage, then the same run killed at stage boundaries, mid-stage
//! and mid-training and restarted with the same command each time — its artifacts must be
//! those of the uninterrupted run.
//!
//! The tiny model's vocabulary holds the phrases the prompts plugin parses
//! (`Final Judgement: Yes`, `… No`, `[[start]]`, `[[end]]`), so a random model yields
//! parseable votes and refinements now and then, and every stage has work to do.

use crate::common;

use std::path::{Path, PathBuf};
use std::process::Command;

use spar_host::model::tiny::write_tiny_model_with;

const PHRASES: [&str; 4] = [
    "Final Judgement: Yes",
    "Final Judgement: No",
    "[[start]]",
    "[[end]]",
];

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_spar-host")
}

fn setup(tag: &str) -> (PathBuf, PathBuf) {
    let dir = common::tempdir(tag);
    let model = dir.join("model");
    write_tiny_model_with(&model, 16, 5, &PHRASES, 2048).unwrap();
    let prompts = dir.join("prompts.jsonl");
    let mut rows = String::new();
    for i in 0..6 {
        rows.push_str(&format!(
            "{{\"id\": {i}, \"prompt\": \"Write w{} w{} and end with !\", \"instruction_id_list\": [\"spar:ends_with_punctuation\"], \"kwargs\": [{{\"punctuation\": \"!\"}}]}}\n",
            3 + i,
            4 + i
        ));
    }
    std::fs::write(&prompts, rows).unwrap();
    (dir, model)
}

fn config(dir: &Path, model: &Path, run: &str) -> PathBuf {
    let text = format!(
        r#"
run_dir = "{run}"
prompts = "{prompts}"
iterations = 1
seed = 7
device = "cpu"
max_batch_rows = 16
concurrency = 4

[models]
actor = "{model}"
refiner = "{model}"

[sample]
n = 4
temperature = 1.0
top_p = 1.0
max_new_tokens = 6

[judge]
k = 3
temperature = 1.0
max_new_tokens = 6
tie_retries = 2

[search]
budget = 6
branch = 2
select_branch = 1
max_depth = 3
temperature = 1.0
max_new_tokens = 8

[actor_train]
lr = 1e-3
batch_size = 1
micro_batch_size = 1
max_length = 2048
save_steps = 1

[refiner_train]
lr = 1e-3
batch_size = 1
micro_batch_size = 1
max_length = 2048
save_steps = 1
"#,
        run = dir.join(run).display(),
        prompts = dir.join("prompts.jsonl").display(),
        model = model.display(),
    );
    let path = dir.join(format!("{run}.toml"));
    std::fs::write(&path, text).unwrap();
    path
}

fn run(cfg: &Path, abort_at: Option<&str>) -> std::process::Output {
    let mut c = Command::new(bin());
    c.args(["run", "--config"]).arg(cfg);
    match abort_at {
        Some(a) => c.env("SPAR_ABORT_AT", a),
        None => c.env_remove("SPAR_ABORT_AT"),
    };
    c.output().unwrap()
}

const ARTIFACTS: [&str; 9] = [
    "iter-1/prompts.jsonl",
    "iter-1/samples.jsonl",
    "iter-1/judgments.jsonl",
    "iter-1/roots.jsonl",
    "iter-1/trees.jsonl",
    "iter-1/pairs.jsonl",
    "iter-1/rft.jsonl",
    "iter-1/data.json",
    "iter-1/actor/final/model.safetensors",
];

fn lines(p: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(p)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn one_iteration_through_every_stage_and_resume_after_kills() {
    let (dir, model) = setup("run");
    let full = config(&dir, &model, "full");
    let out = run(&full, None);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let a = dir.join("full");
    // Every stage did real work.
    let samples = lines(&a.join("iter-1/samples.jsonl"));
    assert_eq!(samples.len(), 6);
    assert!(
        samples
            .iter()
            .all(|s| s["responses"].as_array().unwrap().len() == 4)
    );
    let judgments = lines(&a.join("iter-1/judgments.jsonl"));
    let judged: Vec<&serde_json::Value> = judgments
        .iter()
        .flat_map(|j| j["judged"].as_array().unwrap())
        .filter(|j| j.get("judgment").is_some())
        .collect();
    assert!(!judged.is_empty(), "some votes parse");
    assert!(
        judged
            .iter()
            .all(|j| j["judgment"]["yes"] != j["judgment"]["no"]),
        "ties are dropped"
    );
    let roots = lines(&a.join("iter-1/roots.jsonl"));
    assert!(!roots.is_empty(), "some prompts have a negative response");
    let trees = lines(&a.join("iter-1/trees.jsonl"));
    assert_eq!(trees.len(), roots.len());
    let nodes: usize = trees
        .iter()
        .filter_map(|t| t.get("outcome"))
        .map(|o| o["nodes"].as_array().unwrap().len())
        .sum();
    assert!(nodes > trees.len(), "trees grew beyond their roots");
    let pairs = lines(&a.join("iter-1/pairs.jsonl"));
    assert!(
        !pairs.is_empty(),
        "some trees found a refinement that passes"
    );
    for p in &pairs {
        let t = trees.iter().find(|t| t["idx"] == p["idx"]).unwrap();
        let o = &t["outcome"];
        let fin = &o["nodes"][o["final_node"].as_u64().unwrap() as usize];
        assert_eq!(p["chosen"][0]["content"], fin["response"]);
        assert!(fin["value"].as_f64().unwrap() > 0.5);
        let root = roots.iter().find(|r| r["idx"] == p["idx"]).unwrap();
        assert_eq!(p["rejected"][0]["content"], root["text"]);
    }
    let rft = lines(&a.join("iter-1/rft.jsonl"));
    assert!(rft.iter().any(|r| r["kind"] == "refinement"));
    // Both models were trained: new weights, loadable.
    assert!(a.join("iter-1/actor/final/model.safetensors").exists());
    assert!(a.join("iter-1/refiner/final/model.safetensors").exists());
    assert_ne!(
        std::fs::read(a.join("iter-1/actor/final/model.safetensors")).unwrap(),
        std::fs::read(model.join("model.safetensors")).unwrap()
    );
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(a.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["finished"], true);
    let stages: Vec<&str> = manifest["iterations"][0]["stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        stages,
        [
            "prompts",
            "sample",
            "judge",
            "roots",
            "search",
            "data",
            "train-actor",
            "train-refiner"
        ]
    );
    assert!(stdout.contains("train-actor"), "{stdout}");

    // The pairs and refiner data, exported for TRL and LLaMA-Factory, read as TRL reads them.
    for fmt in ["trl", "llamafactory"] {
        let o = Command::new(bin())
            .args(["export"])
            .arg(&a)
            .args(["--format", fmt, "--out"])
            .arg(dir.join(fmt))
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    let o = Command::new(spar_host::plugin::repo_root().join(".venv/bin/python"))
        .arg(spar_host::plugin::repo_root().join("scripts/check_export.py"))
        .arg(dir.join("trl"))
        .arg(dir.join("llamafactory"))
        .arg(&model)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let counts: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(counts["dpo"], pairs.len());
    assert_eq!(counts["sft"], rft.len());

    // The same run, killed again and again and restarted with the same command.
    let resumed = config(&dir, &model, "resumed");
    let kills = [
        "sample:2",
        "sample:end",
        "judge:1",
        "judge:4",
        "roots:end",
        "search:1",
        "search:end",
        "data:end",
        "train-actor:1",
        "train-refiner:1",
    ];
    for k in kills {
        let out = run(&resumed, Some(k));
        assert!(
            !out.status.success(),
            "{k}: the abort point was not reached: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let out = run(&resumed, None);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let b = dir.join("resumed");
    for f in ARTIFACTS {
        assert_eq!(
            std::fs::read(a.join(f)).unwrap(),
            std::fs::read(b.join(f)).unwrap(),
            "{f} differs after kills and resumes"
        );
    }
    // No partial files are left behind.
    for e in std::fs::read_dir(b.join("iter-1")).unwrap() {
        let n = e.unwrap().file_name().to_string_lossy().to_string();
        assert!(!n.ends_with(".partial"), "{n} left behind");
    }
    // A finished run restarted does nothing and succeeds.
    let out = run(&resumed, None);
    assert!(out.status.success());
}

#[test]
fn bad_prompts_and_missing_plugins_fail_before_any_work() {
    let (dir, model) = setup("run-bad");
    let cfg = config(&dir, &model, "bad");
    std::fs::write(
        dir.join("prompts.jsonl"),
        "{\"prompt\": \"ok\"}\n{\"prompt\": \"unterminated\n",
    )
    .unwrap();
    let out = run(&cfg, None);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("prompts.jsonl:2"), "{err}");
    assert!(!dir.join("bad").exists(), "nothing was written");

    std::fs::write(dir.join("prompts.jsonl"), "{\"prompt\": \"ok\"}\n").unwrap();
    let out = Command::new(bin())
        .args(["run", "--config"])
        .arg(&cfg)
        .args(["--plugin", "no-such-plugin"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("no-such-plugin"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");

    let out = Command::new(bin())
        .args(["run", "--config"])
        .arg(&cfg)
        .args(["--set", "plugins.search=missing-search"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("missing-search"), "{err}");
    assert!(!dir.join("bad").exists(), "nothing was written");
}

/// A search plugin that traps, errs or returns an invalid tree on some roots: those trees are
/// recorded with their reasons, the other trees are searched, and the run finishes.
#[test]
fn failing_trees_are_recorded_and_the_run_goes_on() {
    let (dir, model) = setup("run-flaky");
    let cfg = config(&dir, &model, "flaky");
    // Checkers value the nodes, so nearly every random answer is a negative with a root.
    let text = std::fs::read_to_string(&cfg).unwrap().replace(
        "concurrency = 4\n",
        "concurrency = 4\nvalue = \"checkers\"\n",
    );
    std::fs::write(&cfg, text).unwrap();
    let flaky = common::test_plugin("flaky_search");
    let o = Command::new(bin())
        .args(["run", "--config"])
        .arg(&cfg)
        .arg("--plugin")
        .arg(&flaky)
        .env_remove("SPAR_ABORT_AT")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    let iter = dir.join("flaky/iter-1");
    let prompts: std::collections::HashMap<u64, String> = lines(&iter.join("prompts.jsonl"))
        .into_iter()
        .map(|p| {
            (
                p["idx"].as_u64().unwrap(),
                p["prompt"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let trees = lines(&iter.join("trees.jsonl"));
    let roots = lines(&iter.join("roots.jsonl"));
    assert_eq!(trees.len(), roots.len(), "one record per root");
    let (mut failed, mut searched) = (0, 0);
    for t in &trees {
        let prompt = &prompts[&t["idx"].as_u64().unwrap()];
        let error = t["error"].as_str();
        let expect = if prompt.contains("w3 ") {
            Some("trap")
        } else if prompt.contains("w4 ") {
            Some("deliberate error")
        } else if prompt.contains("w5 ") {
            Some("final")
        } else {
            None
        };
        match expect {
            Some(why) => {
                let e = error.unwrap_or_else(|| panic!("{prompt}: no error in {t}"));
                assert!(e.contains(why), "{prompt}: {e}");
                assert!(
                    e.contains("flaky-search"),
                    "the reason names the plugin: {e}"
                );
                failed += 1;
            }
            None => {
                assert!(error.is_none(), "{prompt}: {t}");
                assert!(!t["outcome"]["nodes"].as_array().unwrap().is_empty());
                searched += 1;
            }
        }
    }
    assert!(
        failed >= 2 && searched >= 1,
        "{failed} failed, {searched} searched"
    );
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains(&format!("failed {failed}")),
        "the summary counts them: {out}"
    );
    // The later stages ran to the end (here without pairs: the tiny model's refinements
    // rarely carry the markers, so the actor keeps its weights).
    for done in ["data.json", "actor.done.json", "refiner.done.json"] {
        assert!(iter.join(done).exists(), "{done}");
    }
}

/// The actor and the refiner served by `spar-host serve` on the same tiny model: the run's
/// artifacts are those of the native run, bit for bit. The server is killed mid-run: the
/// run retries, stops with one clear error and keeps every record written; restarted on a
/// new server (another port — endpoints are not part of the run's identity), it finishes.
#[test]
fn remote_roles_match_native_and_survive_a_killed_server() {
    let (dir, model) = setup("run-remote");
    let native = config(&dir, &model, "native");
    let out = run(&native, None);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let cfg = config(&dir, &model, "remote");
    let base = std::fs::read_to_string(&cfg).unwrap();
    let with_remote = |url: &str| {
        let mut text = base.clone();
        for role in ["actor", "refiner"] {
            text.push_str(&format!(
                "\n[remote.{role}]\nendpoints = [\"{url}\"]\nretries = 2\nbackoff_s = 0.05\n"
            ));
        }
        std::fs::write(&cfg, text).unwrap();
    };
    let server = common::Server::start(&model, &["--max-batch-rows", "16"]);
    with_remote(&server.url);
    let child = Command::new(bin())
        .args(["run", "--config"])
        .arg(&cfg)
        .env_remove("SPAR_ABORT_AT")
        .stderr(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Kill the server once the first judgments are written.
    let partial = dir.join("remote/iter-1/judgments.jsonl.partial");
    let t = std::time::Instant::now();
    let judged = dir.join("remote/iter-1/judgments.jsonl");
    while !std::fs::read_to_string(&partial).is_ok_and(|s| s.lines().count() >= 1)
        && !judged.exists()
    {
        assert!(t.elapsed().as_secs() < 120, "no judgments after 2 minutes");
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    drop(server);
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "the run went on without its server: {err}"
    );
    let last = err.trim().lines().last().unwrap_or_default();
    assert!(
        last.contains("remote")
            && last.contains("unavailable after 3 attempts")
            && last.contains("rerun"),
        "{err}"
    );
    // What was written is intact: complete records, none of them an outage error.
    let iter = dir.join("remote/iter-1");
    for e in std::fs::read_dir(&iter).unwrap() {
        let p = e.unwrap().path();
        if p.extension()
            .is_some_and(|x| x == "partial" || x == "jsonl")
        {
            for l in std::fs::read_to_string(&p).unwrap().lines() {
                assert!(!l.contains("unavailable"), "{}: {l}", p.display());
                serde_json::from_str::<serde_json::Value>(l).unwrap();
            }
        }
    }
    let server = common::Server::start(&model, &["--max-batch-rows", "16"]);
    with_remote(&server.url);
    let out = run(&cfg, None);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for f in ARTIFACTS {
        assert_eq!(
            std::fs::read(dir.join("native").join(f)).unwrap(),
            std::fs::read(dir.join("remote").join(f)).unwrap(),
            "{f}: remote and native differ"
        );
    }
}
