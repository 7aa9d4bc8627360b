//! The evaluation suite and prompt construction: FollowBench and LLMBar loaders against the
//! shared copies of the datasets; each evaluator on small fixtures whose scores were computed
//! by hand (answers from a scripted OpenAI-compatible server, so every judgment is known);
//! refinement accuracy; prompts evolve/compose/split; the run report; bad datasets.

use crate::common;

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

use serde_json::Value;
use spar_host::eval::{followbench, llmbar};
use spar_host::plugin::repo_root;

fn spar(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_spar-host"))
        .args(args)
        .output()
        .unwrap()
}

fn ok(o: &Output) -> String {
    assert!(
        o.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn fixture(rel: &str) -> PathBuf {
    repo_root().join("tests/fixtures").join(rel)
}

/// The shared dataset copies: `$SPAR_SHARED_DATA`, else `../shared/data` beside the
/// repository, else `/work/shared/data`.
fn shared(name: &str) -> PathBuf {
    let candidates = [
        std::env::var_os("SPAR_SHARED_DATA").map(PathBuf::from),
        Some(repo_root().join("../shared/data")),
        Some(PathBuf::from("/work/shared/data")),
    ];
    candidates
        .into_iter()
        .flatten()
        .map(|d| d.join(name))
        .find(|d| d.exists())
        .unwrap_or_else(|| panic!("the shared copy of {name} is missing: set SPAR_SHARED_DATA"))
}

/// The scripted chat server, answering by the rules of `rules` (copied into a temp dir).
struct Scripted {
    child: Child,
    url: String,
    log: PathBuf,
}

impl Scripted {
    fn start(rules: &Path) -> Self {
        let dir = common::tempdir("scripted");
        let copy = dir.join("rules.json");
        std::fs::copy(rules, &copy).unwrap();
        let mut child = Command::new(repo_root().join(".venv/bin/python"))
            .arg(fixture("scripted_openai.py"))
            .arg(&copy)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        Self {
            child,
            url: line.trim().to_string(),
            log: dir.join("rules.json.log"),
        }
    }

    fn requests(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

impl Drop for Scripted {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn json(p: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

fn close(a: &Value, b: f64) {
    let a = a.as_f64().unwrap_or_else(|| panic!("not a number: {a}"));
    assert!((a - b).abs() < 1e-6, "{a} != {b}");
}

#[test]
fn loaders_read_the_shared_copies() {
    let items = followbench::load(&shared("followbench")).unwrap();
    assert_eq!(items.len(), 820);
    let groups = |c: &str| {
        items
            .iter()
            .filter(|i| i.category == c)
            .map(|i| i.example_id)
            .collect::<std::collections::BTreeSet<_>>()
            .len()
    };
    assert_eq!(
        [
            groups("content"),
            groups("situation"),
            groups("style"),
            groups("format"),
            groups("example"),
            groups("mixed")
        ],
        [25, 22, 30, 30, 40, 17]
    );
    let judged = items
        .iter()
        .filter(|i| i.method() == followbench::Method::Judge)
        .count();
    assert_eq!(
        (judged, items.len() - judged),
        (470, 350),
        "the official rule/judge split"
    );
    // The example category's stored answers fit their templates, except the five whose answer
    // spans lines (FollowBench's `.*` does not cross a newline either).
    let raw: Vec<Value> = serde_json::from_str(
        &std::fs::read_to_string(shared("followbench").join("example_constraints.json")).unwrap(),
    )
    .unwrap();
    let fits = raw
        .iter()
        .filter(|r| {
            followbench::example_match(r["target"].as_str().unwrap(), r["answer"].as_str().unwrap())
        })
        .count();
    assert_eq!(fits, 195);
    // Judge prompts show every level up to the item's.
    let it = items
        .iter()
        .find(|i| i.category == "style" && i.level == 3)
        .unwrap();
    let p = followbench::judge_prompt(it, "ANSWER");
    assert!(
        p.contains(&it.levels[0]) && p.contains(&it.levels[3]) && p.contains("3 added constraints")
    );

    let subsets = llmbar::load(&shared("llmbar")).unwrap();
    let sizes: Vec<(String, usize, usize)> = subsets
        .iter()
        .map(|(s, v)| {
            (
                s.clone(),
                v.len(),
                v.iter().filter(|i| i.label == 1).count(),
            )
        })
        .collect();
    assert_eq!(
        sizes,
        [
            ("Natural".to_string(), 100, 42),
            ("Adversarial_Neighbor".to_string(), 134, 75),
            ("Adversarial_GPTInst".to_string(), 92, 45),
            ("Adversarial_GPTOut".to_string(), 47, 22),
            ("Adversarial_Manual".to_string(), 46, 22),
        ]
    );
}

/// Scores worked out by hand in tests/fixtures (see the comments of this test).
#[test]
fn followbench_scores_by_hand() {
    let judge = Scripted::start(&fixture("followbench_judge.json"));
    let out = common::tempdir("fb");
    let stdout = ok(&spar(&[
        "eval",
        "followbench",
        "--data",
        fixture("followbench").to_str().unwrap(),
        "--responses",
        fixture("followbench_responses.jsonl").to_str().unwrap(),
        "--judge-endpoint",
        &judge.url,
        "--out",
        out.to_str().unwrap(),
    ]));
    assert!(stdout.contains("HSR"), "{stdout}");
    let m = json(&out.join("metrics.json"));
    // content: E2E L1 exact (1), L2 wrong (0); judged L1 ['YES'] (1), L2 ['YES','NO'] (0, ½).
    let c = &m["categories"]["content"];
    close(&c["hsr"][0], 100.0);
    close(&c["hsr"][1], 0.0);
    close(&c["ssr"][1], 25.0);
    close(&c["csl"], 1.0);
    // example: template fits at L1, not at L2; mixed xsum: one sentence (1), then two (0).
    close(&m["categories"]["example"]["hsr"][0], 100.0);
    close(&m["categories"]["example"]["hsr"][1], 0.0);
    close(&m["categories"]["mixed"]["hsr"][0], 100.0);
    close(&m["categories"]["situation"]["hsr"][0], 100.0); // gsm_8k: last $ amount
    close(&m["categories"]["style"]["hsr"][0], 0.0); // judged NO
    close(&m["categories"]["format"]["hsr"][0], 0.0); // unparseable → unsatisfied
    // Levels averaged over categories: L1 (100·4 + 0·2)/6, L2 (0,0,0); SSR L2 (25,0,0)/3.
    close(&m["hsr"][0], 400.0 / 6.0);
    close(&m["hsr_avg"], 200.0 / 6.0);
    close(&m["ssr_avg"], (400.0 / 6.0 + 25.0 / 3.0) / 2.0);
    close(&m["csl"], 4.0 / 6.0);
    assert_eq!(m["judged"], 4);
    assert_eq!(m["unparsed"], 1);
    // Only the judge items went to the judge, with FollowBench's prompt.
    let reqs = judge.requests();
    assert_eq!(reqs.len(), 4);
    let p = reqs[0]["messages"][0]["content"].as_str().unwrap();
    assert!(p.starts_with("Given an initial instruction"), "{p}");
    let items: Vec<Value> = std::fs::read_to_string(out.join("items.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(items.len(), 11);
}

#[test]
fn llmbar_scores_by_hand() {
    let judge = Scripted::start(&fixture("llmbar_judge.json"));
    let out = common::tempdir("lb");
    ok(&spar(&[
        "eval",
        "llmbar",
        "--data",
        fixture("llmbar").to_str().unwrap(),
        "--endpoint",
        &judge.url,
        "--out",
        out.to_str().unwrap(),
    ]));
    let m = json(&out.join("metrics.json"));
    let n = &m["subsets"]["Natural"];
    // n1 right in both orders; n2 always "Output (a)": right once → 3 of 4; agreement ½.
    close(&n["pairwise_accuracy"], 75.0);
    close(&n["positional_agreement"], 50.0);
    close(&n["pointwise_accuracy"], 100.0);
    close(&n["pointwise_f1"], 100.0);
    // Neighbor: its worse output judged Yes (FP) → ½ right, F1 2/3, no pair.
    let nb = &m["subsets"]["Adversarial_Neighbor"];
    close(&nb["pairwise_accuracy"], 100.0);
    close(&nb["pointwise_accuracy"], 50.0);
    close(&nb["pointwise_f1"], 200.0 / 3.0);
    close(&nb["pointwise_pair_accuracy"], 0.0);
    // GPTInst: its better output's verdict unparseable (FN) → ½ right, F1 0.
    let gi = &m["subsets"]["Adversarial_GPTInst"];
    close(&gi["pointwise_accuracy"], 50.0);
    close(&gi["pointwise_f1"], 0.0);
    assert_eq!(gi["unparsed"], 1);
    let adv = &m["adversarial"];
    close(&adv["pairwise_accuracy"], 100.0);
    close(&adv["pointwise_accuracy"], 75.0);
    close(
        &adv["pointwise_f1"],
        (200.0 / 3.0 + 0.0 + 100.0 + 100.0) / 4.0,
    );
    close(&adv["pointwise_pair_accuracy"], 50.0);
    assert_eq!(
        judge.requests().len(),
        6 * 4,
        "both orders and both outputs per item"
    );
}

#[test]
fn refinement_accuracy_by_hand() {
    let refiner = Scripted::start(&fixture("refine_script.json"));
    let out = common::tempdir("rf");
    ok(&spar(&[
        "eval",
        "refine",
        "--data",
        fixture("refine_rows.jsonl").to_str().unwrap(),
        "--endpoint",
        &refiner.url,
        "--out",
        out.to_str().unwrap(),
    ]));
    let m = json(&out.join("metrics.json"));
    // Four rows: one already passes; of the three failing, one refinement passes, one still
    // has a comma, one has no markers.
    assert_eq!(m["responses"], 4);
    assert_eq!(m["failing"], 3);
    assert_eq!(m["refined_passing"], 1);
    assert_eq!(m["unextracted"], 1);
    close(&m["accuracy"], 100.0 / 3.0);
    // The refine conversation carried the judge's critique.
    let reqs = refiner.requests();
    assert!(reqs.iter().any(|r| {
        r["messages"].as_array().unwrap().len() == 3
            && r["messages"][1]["content"]
                .as_str()
                .unwrap()
                .contains("Final Judgement")
    }));
}

#[test]
fn prompts_compose_evolve_and_split() {
    let dir = common::tempdir("prompts");
    let seeds = dir.join("seeds.jsonl");
    std::fs::write(
        &seeds,
        "{\"prompt\": \"Describe a lighthouse.\"}\n{\"instruction\": \"Solve 2+2.\"}\n{\"prompt\": \"Plan a picnic.\"}\n{\"prompt\": \"describe a   LIGHTHOUSE.\"}\n",
    )
    .unwrap();
    let composed = dir.join("composed.jsonl");
    ok(&spar(&[
        "prompts",
        "compose",
        "--seeds",
        seeds.to_str().unwrap(),
        "--out",
        composed.to_str().unwrap(),
        "--plugin",
        "ifeval",
        "--plugin",
        "spar-checks",
    ]));
    let rows: Vec<Value> = std::fs::read_to_string(&composed)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 4);
    for r in &rows {
        let ids: Vec<&str> = r["instruction_id_list"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        assert!((1..=4).contains(&ids.len()), "{r}");
        assert_eq!(ids.len(), r["kwargs"].as_array().unwrap().len());
        let groups: std::collections::HashSet<&str> = ids
            .iter()
            .map(|i| {
                if i.starts_with("spar:") {
                    i
                } else {
                    i.split(':').next().unwrap()
                }
            })
            .collect();
        assert_eq!(groups.len(), ids.len(), "one constraint per group: {ids:?}");
        assert!(
            r["prompt"]
                .as_str()
                .unwrap()
                .starts_with(r["seed_prompt"].as_str().unwrap())
        );
    }
    // Every composed constraint is checkable by the plugins that drew it.
    let with_response = dir.join("answered.jsonl");
    let answered: String = rows
        .iter()
        .map(|r| {
            let mut r = r.clone();
            r["response"] = "A plain answer.".into();
            r.to_string() + "\n"
        })
        .collect();
    std::fs::write(&with_response, answered).unwrap();
    let scored = ok(&spar(&[
        "score",
        with_response.to_str().unwrap(),
        "--plugin",
        "ifeval",
        "--plugin",
        "spar-checks",
    ]));
    assert!(
        scored.contains("4 rows") && scored.contains("(0 not checkable)"),
        "{scored}"
    );

    // Evolution through a (scripted) model: the math seed is dropped.
    let model = Scripted::start(&fixture("evolve_script.json"));
    let evolved = dir.join("evolved.jsonl");
    let s = ok(&spar(&[
        "prompts",
        "evolve",
        "--seeds",
        seeds.to_str().unwrap(),
        "--endpoint",
        &model.url,
        "--out",
        evolved.to_str().unwrap(),
    ]));
    assert!(
        s.contains("evolved 3 prompts") && s.contains("dropped 1"),
        "{s}"
    );
    let rows: Vec<Value> = std::fs::read_to_string(&evolved)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(
        rows.iter()
            .all(|r| r["prompt"].as_str().unwrap().starts_with("Evolved:"))
    );
    assert!(
        rows.iter()
            .all(|r| r["main_constraint"].as_str().unwrap().contains('/'))
    );
    // The taxonomy's conversation carried the seed and the main constraint.
    let reqs = model.requests();
    assert_eq!(reqs.len(), 4);
    assert!(
        reqs.iter()
            .any(|r| r.to_string().contains("Plan a picnic."))
    );

    // Splits: the duplicate lighthouse is dropped, every prompt lands in one split.
    let out = dir.join("splits");
    let pool = dir.join("pool.jsonl");
    std::fs::write(
        &pool,
        "{\"prompt\": \"Describe a lighthouse.\"}\n{\"prompt\": \"Plan a picnic.\"}\n{\"prompt\": \"Name a river.\"}\n{\"prompt\": \"describe a   LIGHTHOUSE.\"}\n",
    )
    .unwrap();
    let s = ok(&spar(&[
        "prompts",
        "split",
        pool.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--shares",
        "1,1,1",
    ]));
    assert!(s.contains("1 duplicates dropped"), "{s}");
    let n: usize = ["actor_sft", "refiner_sft", "selfplay"]
        .iter()
        .map(|f| {
            std::fs::read_to_string(out.join(format!("{f}.jsonl")))
                .unwrap()
                .lines()
                .count()
        })
        .sum();
    assert_eq!(n, 3);
}

#[test]
fn bad_datasets_name_file_and_record_before_any_work() {
    let dir = common::tempdir("bad-data");
    let fb = dir.join("followbench");
    std::fs::create_dir_all(&fb).unwrap();
    for e in std::fs::read_dir(fixture("followbench")).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), fb.join(e.file_name())).unwrap();
    }
    std::fs::write(
        fb.join("style_constraints.json"),
        r#"[{"example_id": 1, "source": "x", "level": 0, "instruction": "a", "target": ""}, {"example_id": 1, "source": "x", "instruction": "b"}]"#,
    )
    .unwrap();
    let o = spar(&[
        "eval",
        "followbench",
        "--data",
        fb.to_str().unwrap(),
        "--model",
        "/nonexistent",
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(
        err.contains("style_constraints.json: record 2") && err.contains("level"),
        "{err}"
    );
    assert!(
        !err.contains("nonexistent"),
        "the data is checked before the model: {err}"
    );

    let lb = dir.join("llmbar");
    std::fs::create_dir_all(&lb).unwrap();
    for e in std::fs::read_dir(fixture("llmbar")).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), lb.join(e.file_name())).unwrap();
    }
    std::fs::write(
        lb.join("Adversarial_GPTOut.json"),
        r#"{"input": "not a list"}"#,
    )
    .unwrap();
    let o = spar(&["eval", "llmbar", "--data", lb.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(
        err.contains("Adversarial_GPTOut.json") && err.contains("array"),
        "{err}"
    );
    std::fs::write(
        lb.join("Adversarial_GPTOut.json"),
        r#"[{"input": "i", "output_1": "a", "output_2": "b", "label": 3}]"#,
    )
    .unwrap();
    let err =
        String::from_utf8_lossy(&spar(&["eval", "llmbar", "--data", lb.to_str().unwrap()]).stderr)
            .into_owned();
    assert!(
        err.contains("Adversarial_GPTOut.json: record 1: label"),
        "{err}"
    );
}

#[test]
fn report_plots_every_metric_across_iterations() {
    let run = common::tempdir("report");
    let w = |rel: &str, text: &str| {
        let p = run.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    };
    w(
        "manifest.json",
        r#"{"iterations": [{"iteration": 1, "stages": [{"name": "search", "done": true, "seconds": 3.5, "counts": {"trees": 4, "solved": 2}}, {"name": "data", "done": true, "seconds": 0.1, "counts": {"pairs": 2}}]}]}"#,
    );
    w(
        "iter-1/actor/metrics.jsonl",
        "{\"step\": 1, \"loss\": 0.9}\n{\"step\": 2, \"loss\": 0.7}\n",
    );
    for (t, ps) in [(0, 0.20), (1, 0.25)] {
        w(
            &format!("iter-{t}/eval/ifeval/report.json"),
            &format!(
                r#"{{"prompt_strict": {ps}, "prompt_loose": 0.3, "instruction_strict": 0.4, "instruction_loose": 0.5}}"#
            ),
        );
        w(
            &format!("iter-{t}/eval/refine/metrics.json"),
            &format!(r#"{{"accuracy": {}}}"#, 10.0 * (t + 1) as f64),
        );
    }
    w(
        "iter-1/eval/followbench/metrics.json",
        r#"{"hsr_avg": 33.3, "ssr_avg": 40.0, "csl": 0.7}"#,
    );
    w(
        "iter-1/eval/llmbar/metrics.json",
        r#"{"subsets": {"Natural": {"pairwise_accuracy": 75.0}}, "adversarial": {"pairwise_accuracy": 60.0, "pointwise_accuracy": 55.0, "pointwise_f1": 50.0}}"#,
    );
    let s = ok(&spar(&["report", run.to_str().unwrap()]));
    assert!(s.trim().ends_with("report.md"), "{s}");
    let md = std::fs::read_to_string(run.join("report.md")).unwrap();
    for want in [
        "IFEval prompt_strict",
        "iter 0: 20.00 · iter 1: 25.00",
        "FollowBench hsr_avg",
        "LLMBar Adversarial pointwise_f1",
        "refinement accuracy",
        "actor mean training loss",
        "search solved",
        "| 1 | search | 3.5 |",
    ] {
        assert!(md.contains(want), "`{want}` missing from\n{md}");
    }
    // Every image the report links exists and is a PNG.
    let mut images = 0;
    for part in md.split("](report/").skip(1) {
        let name = &part[..part.find(')').unwrap()];
        let bytes = std::fs::read(run.join("report").join(name)).unwrap();
        assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "{name}");
        images += 1;
    }
    assert!(images >= 10, "{images} images");
    assert!(
        !spar(&["report", run.join("nothing").to_str().unwrap()])
            .status
            .success()
    );
}

/// The native-engine path of an evaluation, on a tiny random-weight model.
#[test]
fn llmbar_on_a_tiny_model() {
    let dir = common::tempdir("lb-tiny");
    let model = dir.join("model");
    spar_host::model::tiny::write_tiny_model_with(
        &model,
        16,
        5,
        &["Output (a)", "Final Judgement: Yes"],
        2048,
    )
    .unwrap();
    let out = dir.join("out");
    let s = ok(&spar(&[
        "eval",
        "llmbar",
        "--data",
        fixture("llmbar").to_str().unwrap(),
        "--model",
        model.to_str().unwrap(),
        "--device",
        "cpu",
        "--max-new-tokens",
        "8",
        "--out",
        out.to_str().unwrap(),
    ]));
    assert!(s.contains("Natural"), "{s}");
    let m = json(&out.join("metrics.json"));
    assert_eq!(m["subsets"]["Natural"]["n"], 2);
    assert_eq!(
        std::fs::read_to_string(out.join("items.jsonl"))
            .unwrap()
            .lines()
            .count(),
        6
    );
}
