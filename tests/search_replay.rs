//! The BFS and DFS plugins reproduce the reference vectors through wasmtime, searches run
//! concurrently, and `search replay` reports the first difference of a wrong vector.

use crate::common;

use std::process::Command;

use spar_host::plugin::conformance::ScriptedHost;
use spar_host::plugin::repo_root;
use spar_host::plugin::search::{Node, SearchParams, SearchStrategy};
use spar_host::selfplay::replay::replay;

fn vectors() -> std::path::PathBuf {
    repo_root().join("tests/fixtures/tree_search_vectors.json")
}

#[tokio::test]
async fn bfs_and_dfs_reproduce_every_vector() {
    let host = common::host();
    for algo in ["bfs", "dfs"] {
        let s = SearchStrategy::load(&host, &common::shipped(algo))
            .await
            .unwrap();
        let r = replay(&vectors(), &s, algo).await.unwrap();
        assert_eq!(
            (r.passed, r.failed),
            (104, 0),
            "{algo}: {:?}",
            r.failures.first()
        );
    }
}

#[tokio::test]
async fn dfs_does_not_pass_the_bfs_vectors() {
    // The replay is discriminating: the other algorithm's vectors fail somewhere.
    let host = common::host();
    let s = SearchStrategy::load(&host, &common::shipped("dfs"))
        .await
        .unwrap();
    let r = replay(&vectors(), &s, "bfs").await.unwrap();
    assert!(r.failed > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_trees_search_concurrently() {
    let host = common::host();
    let s = SearchStrategy::load(&host, &common::shipped("bfs"))
        .await
        .unwrap();
    let root = |i: usize| Node {
        id: 0,
        parent: None,
        depth: 0,
        response: format!("root{i}"),
        critique: format!("crit:root{i}"),
        value: 0.0,
        refine_output: String::new(),
        visit_sequence: 0,
    };
    let run = |i: usize| {
        let s = s.clone();
        async move {
            let (out, _) = s
                .search(
                    "P",
                    &root(i),
                    &SearchParams::default(),
                    Box::new(ScriptedHost::new(15)),
                )
                .await;
            out.unwrap()
        }
    };
    let sequential: Vec<_> = {
        let mut v = Vec::new();
        for i in 0..16 {
            v.push(run(i).await);
        }
        v
    };
    let handles: Vec<_> = (0..16).map(|i| tokio::spawn(run(i))).collect();
    for (i, h) in handles.into_iter().enumerate() {
        assert_eq!(h.await.unwrap(), sequential[i], "tree {i}");
    }
}

#[test]
fn replay_command_shows_the_first_difference() {
    let dir = common::tempdir("replay");
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(vectors()).unwrap()).unwrap();
    // Corrupt the expected solution of the first BFS vector.
    v["vectors"][0]["solution"] = "nonsense".into();
    let bad = dir.join("bad.json");
    std::fs::write(&bad, v.to_string()).unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_spar-host"))
        .args([
            "search",
            "replay",
            "--vectors",
            bad.to_str().unwrap(),
            "--plugin",
            "bfs",
        ])
        .env("SPAR_CACHE_DIR", dir.join("cache"))
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(!o.status.success());
    assert!(
        out.contains("first difference: vector 0 (all-low).solution"),
        "{out}"
    );
    assert!(out.contains("103 passed, 1 failed"), "{out}");
}
