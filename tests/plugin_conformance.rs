//! The conformance suite of each world, run against the real plugins, plus the reference
//! judge-parse vectors through the prompts plugin.

use crate::common;

use std::path::Path;

use spar_host::plugin::conformance;
use spar_host::plugin::prompts::{Prompts, Verdict};

async fn suite(path: &Path, min_cases: usize) {
    let host = common::host();
    let report = conformance::run(host.load(path).unwrap()).await.unwrap();
    let text = report.render();
    assert_eq!(report.failed(), 0, "{}:\n{text}", path.display());
    assert!(
        report.passed() >= min_cases,
        "only {} cases:\n{text}",
        report.passed()
    );
    assert!(text.ends_with(&format!("{} passed, 0 failed\n", report.passed())));
}

#[tokio::test]
async fn checker_spar_checks() {
    suite(&common::shipped("spar_checks"), 20).await;
}

#[tokio::test]
async fn checker_ifeval() {
    // 25 types × 3 cases each, plus the plugin-level cases.
    suite(&common::shipped("ifeval"), 75).await;
}

#[tokio::test]
async fn checker_written_in_python() {
    suite(&common::python_checker(), 12).await;
}

#[tokio::test]
async fn judge_prompts() {
    suite(&common::shipped("spar_prompts"), 10).await;
}

#[tokio::test]
async fn taxonomy() {
    suite(&common::shipped("taxonomy"), 5).await;
}

#[tokio::test]
async fn search_bfs() {
    suite(&common::shipped("bfs"), 8).await;
}

#[tokio::test]
async fn search_dfs() {
    suite(&common::shipped("dfs"), 8).await;
}

#[tokio::test]
async fn conformance_catches_a_broken_plugin() {
    // The hostile checker traps on most of its ids: the suite must report failures, not pass.
    let host = common::host();
    let report = conformance::run(host.load(&common::test_plugin("hostile")).unwrap())
        .await
        .unwrap();
    assert!(report.failed() > 0, "{}", report.render());
}

#[derive(serde::Deserialize)]
struct Vectors {
    judgments: Vec<Judgment>,
    refinements: Vec<Refinement>,
}

#[derive(serde::Deserialize)]
struct Judgment {
    text: String,
    verdict: i8,
}

#[derive(serde::Deserialize)]
struct Refinement {
    text: String,
    extracted: Option<String>,
}

#[tokio::test]
async fn prompts_plugin_reproduces_the_judge_parse_vectors() {
    let raw = std::fs::read_to_string(
        spar_host::plugin::repo_root().join("tests/fixtures/judge_parse_vectors.json"),
    )
    .unwrap();
    let v: Vectors = serde_json::from_str(&raw).unwrap();
    assert_eq!((v.judgments.len(), v.refinements.len()), (40, 12));
    let host = common::host();
    let mut p = Prompts::load(&host, &common::shipped("spar_prompts"))
        .await
        .unwrap();
    let mut failures = Vec::new();
    for j in &v.judgments {
        let got = p.parse_verdict(&j.text).await.unwrap();
        if got.as_i8() != j.verdict {
            failures.push(format!(
                "verdict {:?}: got {got:?}, want {}",
                j.text, j.verdict
            ));
        }
    }
    for r in &v.refinements {
        let got = p.extract_refinement(&r.text).await.unwrap();
        if got != r.extracted {
            failures.push(format!(
                "refinement {:?}: got {got:?}, want {:?}",
                r.text, r.extracted
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert_eq!(
        p.parse_verdict("Final Judgement: Yes").await.unwrap(),
        Verdict::Yes
    );
}
