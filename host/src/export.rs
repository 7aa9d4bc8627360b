//! `spar-host export`: a run's DPO pairs and refiner data in other training stacks' dataset
//! formats, so training can move to their multi-GPU setups.
//!
//! - `trl`: `dpo.jsonl` in TRL's conversational preference format (`prompt`, `chosen`,
//!   `rejected` as message lists, what `DPOTrainer` takes) and `sft.jsonl` in its
//!   conversational language-modeling format (`messages`, what `SFTTrainer` takes).
//! - `llamafactory`: `spar_dpo.json` and `spar_rft.json` in LLaMA-Factory's ShareGPT format
//!   (`conversations` of `from`/`value` turns; `chosen`/`rejected` turns for ranking data),
//!   and the `dataset_info.json` that registers them.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use serde_json::{Value, json};

use crate::model::weights::write_atomic;
use crate::selfplay::pipeline::read_jsonl;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Trl,
    LlamaFactory,
}

impl Format {
    pub fn parse(s: &str) -> anyhow::Result<Self> {
        match s {
            "trl" => Ok(Format::Trl),
            "llamafactory" | "llama-factory" | "llama_factory" => Ok(Format::LlamaFactory),
            _ => bail!("unknown export format `{s}`: use trl or llamafactory"),
        }
    }
}

/// What was written.
#[derive(Debug)]
pub struct Exported {
    pub iteration: usize,
    pub pairs: usize,
    pub rft: usize,
    pub files: Vec<PathBuf>,
}

impl std::fmt::Display for Exported {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "iteration {}: {} DPO pairs, {} refiner rows →",
            self.iteration, self.pairs, self.rft
        )?;
        for p in &self.files {
            write!(f, " {}", p.display())?;
        }
        Ok(())
    }
}

/// The iteration directories of a run that have finished their data stage, in order.
fn iterations_with_data(run: &Path) -> anyhow::Result<Vec<(usize, PathBuf)>> {
    let rd = std::fs::read_dir(run).with_context(|| format!("cannot read {}", run.display()))?;
    let mut found = Vec::new();
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if let Some(t) = name
            .strip_prefix("iter-")
            .and_then(|t| t.parse::<usize>().ok())
        {
            let d = e.path();
            if d.join("data.json").exists() {
                found.push((t, d));
            }
        }
    }
    found.sort();
    Ok(found)
}

/// A list of `{role, content}` messages from field `key` of row `line` of `path`.
fn messages<'a>(
    row: &'a Value,
    key: &str,
    path: &Path,
    line: usize,
) -> anyhow::Result<&'a [Value]> {
    let m = row
        .get(key)
        .and_then(Value::as_array)
        .with_context(|| format!("{}:{line}: no `{key}` message list", path.display()))?;
    for msg in m {
        if msg.get("role").and_then(Value::as_str).is_none()
            || msg.get("content").and_then(Value::as_str).is_none()
        {
            bail!(
                "{}:{line}: a `{key}` message lacks role or content",
                path.display()
            );
        }
    }
    Ok(m)
}

fn sharegpt(m: &Value) -> Value {
    let from = match m["role"].as_str().unwrap_or_default() {
        "user" => "human",
        "assistant" => "gpt",
        other => other,
    };
    json!({"from": from, "value": m["content"]})
}

/// Export iteration `iteration` (default: the last with data) of `run` into `out`.
pub fn export(
    run: &Path,
    format: Format,
    out: &Path,
    iteration: Option<usize>,
) -> anyhow::Result<Exported> {
    let its = iterations_with_data(run)?;
    let (t, dir) = match iteration {
        Some(t) => its
            .into_iter()
            .find(|(k, _)| *k == t)
            .with_context(|| format!("{}: iteration {t} has no data yet", run.display()))?,
        None => its.into_iter().last().with_context(|| {
            format!(
                "{}: no iteration has finished its data stage",
                run.display()
            )
        })?,
    };
    let pairs_path = dir.join("pairs.jsonl");
    let rft_path = dir.join("rft.jsonl");
    let pairs: Vec<Value> = read_jsonl(&pairs_path)?;
    let rft: Vec<Value> = read_jsonl(&rft_path)?;
    // Check every row before writing anything.
    for (i, r) in pairs.iter().enumerate() {
        for k in ["prompt", "chosen", "rejected"] {
            messages(r, k, &pairs_path, i + 1)?;
        }
    }
    for (i, r) in rft.iter().enumerate() {
        messages(r, "messages", &rft_path, i + 1)?;
    }
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    let mut files = Vec::new();
    let mut write = |name: &str, text: String| -> anyhow::Result<()> {
        let p = out.join(name);
        write_atomic(&p, &text)?;
        files.push(p);
        Ok(())
    };
    let jsonl = |rows: Vec<Value>| {
        rows.iter()
            .map(|r| r.to_string() + "\n")
            .collect::<String>()
    };
    match format {
        Format::Trl => {
            write(
                "dpo.jsonl",
                jsonl(
                    pairs
                        .iter()
                        .map(|r| json!({"prompt": r["prompt"], "chosen": r["chosen"], "rejected": r["rejected"]}))
                        .collect(),
                ),
            )?;
            write(
                "sft.jsonl",
                jsonl(
                    rft.iter()
                        .map(|r| json!({"messages": r["messages"]}))
                        .collect(),
                ),
            )?;
        }
        Format::LlamaFactory => {
            let dpo: Vec<Value> = pairs
                .iter()
                .map(|r| {
                    let conv: Vec<Value> = r["prompt"].as_array().into_iter().flatten().map(sharegpt).collect();
                    let last = |k: &str| r[k].as_array().and_then(|m| m.last()).map(sharegpt);
                    json!({"conversations": conv, "chosen": last("chosen"), "rejected": last("rejected")})
                })
                .collect();
            let sft: Vec<Value> = rft
                .iter()
                .map(|r| {
                    json!({"conversations": r["messages"].as_array().into_iter().flatten().map(sharegpt).collect::<Vec<_>>()})
                })
                .collect();
            write("spar_dpo.json", serde_json::to_string_pretty(&dpo)?)?;
            write("spar_rft.json", serde_json::to_string_pretty(&sft)?)?;
            let info = json!({
                "spar_dpo": {
                    "file_name": "spar_dpo.json",
                    "formatting": "sharegpt",
                    "ranking": true,
                    "columns": {"messages": "conversations", "chosen": "chosen", "rejected": "rejected"},
                },
                "spar_rft": {
                    "file_name": "spar_rft.json",
                    "formatting": "sharegpt",
                    "columns": {"messages": "conversations"},
                },
            });
            write(
                "dataset_info.json",
                serde_json::to_string_pretty(&info)? + "\n",
            )?;
        }
    }
    Ok(Exported {
        iteration: t,
        pairs: pairs.len(),
        rft: rft.len(),
        files,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run_dir(pairs: &str, rft: &str) -> tempdir::Dir {
        let d = tempdir::Dir::new();
        let it = d.0.join("iter-1");
        std::fs::create_dir_all(&it).unwrap();
        std::fs::write(it.join("pairs.jsonl"), pairs).unwrap();
        std::fs::write(it.join("rft.jsonl"), rft).unwrap();
        std::fs::write(it.join("data.json"), "{}").unwrap();
        d
    }

    mod tempdir {
        pub struct Dir(pub std::path::PathBuf);
        impl Dir {
            pub fn new() -> Self {
                static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
                let p = std::env::temp_dir().join(format!(
                    "spar-export-{}-{}",
                    std::process::id(),
                    N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
                ));
                let _ = std::fs::remove_dir_all(&p);
                std::fs::create_dir_all(&p).unwrap();
                Self(p)
            }
        }
        impl Drop for Dir {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir_all(&self.0);
            }
        }
    }

    const PAIR: &str = r#"{"idx":0,"prompt":[{"role":"user","content":"Say hi in 2 words."}],"chosen":[{"role":"assistant","content":"Hi there"}],"rejected":[{"role":"assistant","content":"Hello"}]}"#;
    const RFT: &str = r#"{"messages":[{"role":"system","content":"judge"},{"role":"user","content":"Is it right?"},{"role":"assistant","content":"Yes"}],"kind":"positive_judgment"}"#;

    #[test]
    fn llamafactory_sharegpt_with_dataset_info() {
        let d = run_dir(&format!("{PAIR}\n"), &format!("{RFT}\n"));
        let out = d.0.join("lf");
        let e = export(&d.0, Format::LlamaFactory, &out, None).unwrap();
        assert_eq!((e.iteration, e.pairs, e.rft), (1, 1, 1));
        let dpo: Value =
            serde_json::from_str(&std::fs::read_to_string(out.join("spar_dpo.json")).unwrap())
                .unwrap();
        assert_eq!(
            dpo[0]["conversations"],
            json!([{"from": "human", "value": "Say hi in 2 words."}])
        );
        assert_eq!(
            dpo[0]["chosen"],
            json!({"from": "gpt", "value": "Hi there"})
        );
        assert_eq!(dpo[0]["rejected"], json!({"from": "gpt", "value": "Hello"}));
        let sft: Value =
            serde_json::from_str(&std::fs::read_to_string(out.join("spar_rft.json")).unwrap())
                .unwrap();
        assert_eq!(
            sft[0]["conversations"][0],
            json!({"from": "system", "value": "judge"})
        );
        assert_eq!(
            sft[0]["conversations"][2],
            json!({"from": "gpt", "value": "Yes"})
        );
        let info: Value =
            serde_json::from_str(&std::fs::read_to_string(out.join("dataset_info.json")).unwrap())
                .unwrap();
        assert_eq!(info["spar_dpo"]["ranking"], true);
        assert_eq!(info["spar_dpo"]["file_name"], "spar_dpo.json");
        assert_eq!(info["spar_rft"]["columns"]["messages"], "conversations");
    }

    #[test]
    fn a_bad_row_names_file_and_line_and_writes_nothing() {
        let d = run_dir(&format!("{PAIR}\n{{\"prompt\": 3}}\n"), "");
        let out = d.0.join("trl");
        let e = export(&d.0, Format::Trl, &out, None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("pairs.jsonl:2") && e.contains("prompt"), "{e}");
        assert!(!out.exists());
        let e = export(&d.0, Format::Trl, &out, Some(2))
            .unwrap_err()
            .to_string();
        assert!(e.contains("iteration 2"), "{e}");
        assert!(Format::parse("axolotl").is_err());
    }
}
