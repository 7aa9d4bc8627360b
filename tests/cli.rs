//! The `spar-host` binary end to end: plugin inspect/check, score, errors, libtorch loading.

use crate::common;

use std::process::{Command, Output};

fn spar(args: &[&str]) -> Output {
    let cache = common::tempdir("cli-cache");
    Command::new(env!("CARGO_BIN_EXE_spar-host"))
        .args(args)
        .env("SPAR_CACHE_DIR", &cache)
        // The rpath must be enough: no loader path from the environment.
        .env_remove("LD_LIBRARY_PATH")
        .output()
        .expect("spar-host runs")
}

fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

#[test]
fn info_loads_libtorch_through_the_rpath() {
    let o = spar(&["info"]);
    let (out, err) = text(&o);
    assert!(o.status.success(), "{out}{err}");
    // A = arange(6).view(2, 3); the entries of A·Aᵀ = [[5, 14], [14, 50]] sum to 83.
    assert!(out.contains("libtorch: loaded (check 83)"), "{out}");
}

#[test]
fn inspect_reads_kind_from_exports() {
    let p = common::shipped("spar_checks");
    let o = spar(&["plugin", "inspect", p.to_str().unwrap()]);
    let (out, err) = text(&o);
    assert!(o.status.success(), "{err}");
    assert!(out.contains("kind:     checker"), "{out}");
    assert!(
        out.contains("world:    spar:constraints/checker@0.1.0"),
        "{out}"
    );
    assert!(
        out.contains("exports:  spar:constraints/checks@0.1.0"),
        "{out}"
    );
    assert!(out.contains("name:     spar-checks 0.1.0"), "{out}");
    let sha = out.lines().find(|l| l.starts_with("sha256:")).unwrap();
    assert_eq!(sha.split_whitespace().nth(1).unwrap().len(), 64);

    let w = common::test_plugin("wrong_world");
    let o = spar(&["plugin", "inspect", w.to_str().unwrap()]);
    let (out, _) = text(&o);
    assert!(out.contains("kind:     none"), "{out}");
}

#[test]
fn check_prints_the_closing_line_and_a_bare_name_resolves() {
    let o = spar(&["plugin", "check", "spar-prompts"]);
    let (out, err) = text(&o);
    assert!(o.status.success(), "{out}{err}");
    assert!(out.trim_end().ends_with("passed, 0 failed"), "{out}");

    let o = spar(&["plugin", "check", "no-such-plugin"]);
    let (_, err) = text(&o);
    assert!(!o.status.success());
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("plugin `no-such-plugin` not found"), "{err}");

    let hostile = common::test_plugin("hostile");
    let o = spar(&[
        "--fuel",
        "100000000",
        "plugin",
        "check",
        hostile.to_str().unwrap(),
    ]);
    let (out, _) = text(&o);
    assert!(!o.status.success(), "a failing suite exits non-zero");
    assert!(out.contains("FAIL"), "{out}");
}

#[test]
fn score_writes_verdicts_and_names_bad_lines() {
    let dir = common::tempdir("score");
    let out_file = dir.join("verdicts.jsonl");
    let examples = spar_host::plugin::repo_root().join("examples/responses.jsonl");
    let py = common::python_checker();
    let o = spar(&[
        "score",
        examples.to_str().unwrap(),
        "--plugin",
        "spar-checks",
        "--plugin",
        py.to_str().unwrap(),
        "--out",
        out_file.to_str().unwrap(),
    ]);
    let (out, err) = text(&o);
    assert!(o.status.success(), "{out}{err}");
    assert!(
        out.contains("8 rows, 12 instructions (0 not checkable)"),
        "{out}"
    );
    let rows: Vec<serde_json::Value> = std::fs::read_to_string(&out_file)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 8);
    assert_eq!(rows[0]["id"], 1);
    // Row 2 passes only loosely (a preamble line before the JSON); row 6 has a comma.
    assert_eq!(rows[1]["strict"], serde_json::json!([false]));
    assert_eq!(rows[1]["loose"], serde_json::json!([true]));
    assert_eq!(rows[5]["strict"], serde_json::json!([true, false]));

    // One unknown id is reported in its row; the rest is still scored.
    let bad = dir.join("unknown.jsonl");
    std::fs::write(
        &bad,
        "{\"prompt\":\"p\",\"response\":\"Hi!\",\"instruction_id_list\":[\"nope:x\",\"spar:ends_with_punctuation\"],\"kwargs\":[{},{\"punctuation\":\"!\"}]}\n",
    )
    .unwrap();
    let o = spar(&["score", bad.to_str().unwrap(), "--plugin", "spar-checks"]);
    let (out, err) = text(&o);
    assert!(o.status.success(), "{err}");
    assert!(
        out.contains("1 rows, 2 instructions (1 not checkable)"),
        "{out}"
    );
    assert!(err.contains("nope:x"), "{err}");

    // A malformed line stops everything before any work, naming file:line; nothing written.
    let broken = dir.join("broken.jsonl");
    std::fs::write(
        &broken,
        "{\"prompt\":\"p\",\"response\":\"r\",\"instruction_id_list\":[]}\n{oops\n",
    )
    .unwrap();
    let out2 = dir.join("never.jsonl");
    let o = spar(&[
        "score",
        broken.to_str().unwrap(),
        "--plugin",
        "spar-checks",
        "--out",
        out2.to_str().unwrap(),
    ]);
    let (_, err) = text(&o);
    assert!(!o.status.success());
    assert!(err.contains("broken.jsonl:2"), "{err}");
    assert!(!out2.exists());
}
