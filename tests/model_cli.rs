//! `spar-host generate` / `model info` end to end on a tiny random model, and one clear error
//! for each kind of bad model directory or input.

use std::process::{Command, Output};

use spar_host::model::tiny::{word, write_tiny_model};

fn spar(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_spar-host"))
        .args(args)
        .env_remove("LD_LIBRARY_PATH")
        .output()
        .expect("spar-host runs")
}

fn tempdir(tag: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("spar-mcli-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).trim().to_string()
}

#[test]
fn generate_jsonl_keeps_fields_and_writes_completions() {
    let d = tempdir("gen");
    let model = d.join("tiny");
    write_tiny_model(&model, 64, 5).unwrap();
    let input = d.join("in.jsonl");
    std::fs::write(
        &input,
        format!(
            "{{\"id\": \"a\", \"messages\": [{{\"role\": \"user\", \"content\": \"{} {}\"}}]}}\n{{\"id\": \"b\", \"prompt\": \"{}\"}}\n",
            word(5),
            word(6),
            word(9)
        ),
    )
    .unwrap();
    let out = d.join("out.jsonl");
    let o = spar(&[
        "generate",
        "--model",
        model.to_str().unwrap(),
        "--device",
        "cpu",
        "--input",
        input.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--n",
        "2",
        "--temperature",
        "0.8",
        "--seed",
        "1",
        "--max-new-tokens",
        "4",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let rows: Vec<serde_json::Value> = std::fs::read_to_string(&out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0]["id"], "a");
    assert_eq!(rows[1]["id"], "b");
    for r in &rows {
        let c = r["completions"].as_array().unwrap();
        assert_eq!(c.len(), 2);
        assert!(
            c.iter()
                .all(|c| c["token_ids"].as_array().unwrap().len() <= 4)
        );
    }
    let info = spar(&[
        "model",
        "info",
        "--model",
        model.to_str().unwrap(),
        "--device",
        "cpu",
    ]);
    let text = String::from_utf8_lossy(&info.stdout);
    assert!(text.contains("layers 2 · hidden 32 · heads 4/2"), "{text}");
}

#[test]
fn bad_inputs_and_models_give_one_line_errors() {
    let d = tempdir("bad");
    let model = d.join("tiny");
    write_tiny_model(&model, 64, 6).unwrap();
    let m = model.to_str().unwrap();

    let bad = d.join("bad.jsonl");
    std::fs::write(&bad, "{\"prompt\": \"w5\"}\n{\"nothing\": 1}\n").unwrap();
    let o = spar(&["generate", "--model", m, "--input", bad.to_str().unwrap()]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("bad.jsonl:2: needs `messages` or `prompt`"),
        "{}",
        stderr(&o)
    );

    let o = spar(&["generate", "--model", "/no/such/model", "--prompt", "hi"]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("/no/such/model: not a model directory"),
        "{}",
        stderr(&o)
    );

    let long = vec!["w7"; 300].join(" ");
    let o = spar(&[
        "generate", "--model", m, "--device", "cpu", "--raw", "--prompt", &long,
    ]);
    assert!(
        stderr(&o).contains("exceeds the context of 256"),
        "{}",
        stderr(&o)
    );

    // Unsupported architecture.
    let arch = d.join("arch");
    write_tiny_model(&arch, 64, 6).unwrap();
    let cfg = std::fs::read_to_string(arch.join("config.json"))
        .unwrap()
        .replace("\"llama\"", "\"gpt2\"");
    std::fs::write(arch.join("config.json"), cfg).unwrap();
    let o = spar(&["model", "info", "--model", arch.to_str().unwrap()]);
    assert!(
        stderr(&o).contains("unsupported: model_type `gpt2`"),
        "{}",
        stderr(&o)
    );

    // Corrupt weights.
    let corrupt = d.join("corrupt");
    write_tiny_model(&corrupt, 64, 6).unwrap();
    std::fs::write(corrupt.join("model.safetensors"), b"not safetensors").unwrap();
    let o = spar(&["model", "info", "--model", corrupt.to_str().unwrap()]);
    assert!(
        !o.status.success() && stderr(&o).contains("model.safetensors"),
        "{}",
        stderr(&o)
    );

    // Tokenizer larger than the embedding table.
    let small = d.join("small");
    write_tiny_model(&small, 64, 6).unwrap();
    let cfg = std::fs::read_to_string(small.join("config.json"))
        .unwrap()
        .replace("\"vocab_size\": 64", "\"vocab_size\": 32");
    std::fs::write(small.join("config.json"), cfg).unwrap();
    let o = spar(&["model", "info", "--model", small.to_str().unwrap()]);
    assert!(
        stderr(&o).contains("the tokenizer has 64 tokens but the model only 32 embeddings"),
        "{}",
        stderr(&o)
    );

    {
        let o = &o;
        assert_eq!(stderr(o).lines().count(), 1, "{}", stderr(o));
    }
}

#[test]
fn chat_reads_turns_until_quit() {
    use std::io::Write;
    let d = tempdir("chat");
    let model = d.join("tiny");
    write_tiny_model(&model, 64, 8).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_spar-host"))
        .args([
            "chat",
            "--model",
            model.to_str().unwrap(),
            "--device",
            "cpu",
            "--max-new-tokens",
            "3",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(format!("{} {}\n/reset\n{}\n/quit\n", word(5), word(6), word(7)).as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    // Three prompts shown, two replies (one per user turn), then the session ends.
    assert_eq!(text.matches("> ").count(), 4, "{text}");
    assert_eq!(text.lines().count(), 3, "{text:?}");
}
