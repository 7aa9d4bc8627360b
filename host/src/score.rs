//! Scoring responses against verifiable instructions with checker plugins.
//!
//! Input rows follow IFEval's `input_data.jsonl` plus a `response` field:
//! `{"key", "prompt", "instruction_id_list": [...], "kwargs": [{...}], "response"}`;
//! other fields (such as `id`) are carried into the output. Rows written by
//! `spar-host generate` work too: their first completion is the response.

use std::path::Path;

use anyhow::{Context, bail};
use serde_json::{Map, Value};

use crate::plugin::checker::CheckerSet;

/// One input row, validated.
#[derive(Debug, Clone)]
pub struct Row {
    pub line: usize,
    pub id: Option<Value>,
    pub key: Option<Value>,
    pub prompt: String,
    pub response: String,
    pub instructions: Vec<(String, Map<String, Value>)>,
}

/// Read and validate every row before any work: a bad line is an error naming file and line.
pub fn read_rows(path: &Path) -> anyhow::Result<Vec<Row>> {
    read_rows_with(path, true)
}

/// As [`read_rows`]; without `require_response`, a row without one (IFEval's own
/// `input_data.jsonl`) gets an empty response, to be generated.
pub fn read_rows_with(path: &Path, require_response: bool) -> anyhow::Result<Vec<Row>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut rows = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let at = format!("{}:{}", path.display(), i + 1);
        if line.trim().is_empty() {
            continue;
        }
        let v: Value = serde_json::from_str(line).with_context(|| format!("{at}: not JSON"))?;
        let Value::Object(mut o) = v else {
            bail!("{at}: not a JSON object");
        };
        // `spar-host generate` output carries the answer as the first completion.
        if !o.contains_key("response")
            && let Some(text) = o
                .get("completions")
                .and_then(|c| c.get(0))
                .and_then(|c| c.get("text"))
                .cloned()
        {
            o.insert("response".into(), text);
        }
        let has_response = o.contains_key("response");
        let mut string = |k: &str| -> anyhow::Result<String> {
            match o.remove(k) {
                Some(Value::String(s)) => Ok(s),
                Some(_) => bail!("{at}: `{k}` is not a string"),
                None => bail!("{at}: missing `{k}`"),
            }
        };
        let prompt = string("prompt")?;
        let response = if has_response || require_response {
            string("response")?
        } else {
            String::new()
        };
        let ids = match o.remove("instruction_id_list") {
            Some(Value::Array(a)) => a,
            _ => bail!("{at}: `instruction_id_list` must be a list of strings"),
        };
        let kwargs = match o.remove("kwargs") {
            Some(Value::Array(a)) => a,
            None => vec![Value::Object(Map::new()); ids.len()],
            _ => bail!("{at}: `kwargs` must be a list of objects"),
        };
        if kwargs.len() != ids.len() {
            bail!(
                "{at}: {} instruction ids but {} kwargs",
                ids.len(),
                kwargs.len()
            );
        }
        let mut instructions = Vec::new();
        for (id, kw) in ids.into_iter().zip(kwargs) {
            let (Value::String(id), Value::Object(kw)) = (id, kw) else {
                bail!("{at}: instruction ids must be strings and kwargs objects");
            };
            // IFEval writes unused kwargs as null; they mean "not given".
            let kw = kw.into_iter().filter(|(_, v)| !v.is_null()).collect();
            instructions.push((id, kw));
        }
        rows.push(Row {
            line: i + 1,
            id: o.remove("id"),
            key: o.remove("key"),
            prompt,
            response,
            instructions,
        });
    }
    Ok(rows)
}

/// The verdicts of one row; an instruction that could not be checked has `None` and an error.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Scored {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<Value>,
    pub instruction_id_list: Vec<String>,
    pub strict: Vec<Option<bool>>,
    pub loose: Vec<Option<bool>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<String>,
}

/// Check every instruction of every row. A failing instruction (unknown id, bad kwargs, a
/// trapping plugin) is recorded in its row and the rest goes on.
pub async fn score(
    set: &mut CheckerSet,
    rows: &[Row],
    mut progress: impl FnMut(usize),
) -> Vec<Scored> {
    let mut out = Vec::with_capacity(rows.len());
    for (n, row) in rows.iter().enumerate() {
        let mut s = Scored {
            id: row.id.clone(),
            key: row.key.clone(),
            instruction_id_list: row.instructions.iter().map(|(id, _)| id.clone()).collect(),
            strict: Vec::new(),
            loose: Vec::new(),
            errors: Vec::new(),
        };
        for (id, kw) in &row.instructions {
            let kw = Value::Object(kw.clone()).to_string();
            match set.check(id, &kw, &row.prompt, &row.response).await {
                Ok(v) => {
                    s.strict.push(Some(v.strict));
                    s.loose.push(Some(v.loose));
                }
                Err(e) => {
                    s.strict.push(None);
                    s.loose.push(None);
                    s.errors.push(format!("line {}: {id}: {e}", row.line));
                }
            }
        }
        out.push(s);
        progress(n + 1);
    }
    out
}

/// Prompt- and instruction-level accuracy, strict and loose (unchecked counts as failed).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Summary {
    pub rows: usize,
    pub instructions: usize,
    pub errors: usize,
    pub prompt_strict: f64,
    pub prompt_loose: f64,
    pub instruction_strict: f64,
    pub instruction_loose: f64,
}

pub fn summarize(scored: &[Scored]) -> Summary {
    let ok = |v: &Option<bool>| *v == Some(true);
    let frac = |n: usize, d: usize| if d == 0 { 0.0 } else { n as f64 / d as f64 };
    let instructions: usize = scored.iter().map(|s| s.strict.len()).sum();
    Summary {
        rows: scored.len(),
        instructions,
        errors: scored.iter().map(|s| s.errors.len()).sum(),
        prompt_strict: frac(
            scored.iter().filter(|s| s.strict.iter().all(ok)).count(),
            scored.len(),
        ),
        prompt_loose: frac(
            scored.iter().filter(|s| s.loose.iter().all(ok)).count(),
            scored.len(),
        ),
        instruction_strict: frac(
            scored
                .iter()
                .flat_map(|s| &s.strict)
                .filter(|v| ok(v))
                .count(),
            instructions,
        ),
        instruction_loose: frac(
            scored
                .iter()
                .flat_map(|s| &s.loose)
                .filter(|v| ok(v))
                .count(),
            instructions,
        ),
    }
}

/// Write JSONL to a temporary file, then rename: a reader never sees half a file.
pub fn write_jsonl_atomic<T: serde::Serialize>(path: &Path, rows: &[T]) -> anyhow::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let mut text = String::new();
    for r in rows {
        text.push_str(&serde_json::to_string(r)?);
        text.push('\n');
    }
    let tmp = path.with_extension("jsonl.tmp");
    std::fs::write(&tmp, text).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scored(strict: Vec<Option<bool>>, loose: Vec<Option<bool>>) -> Scored {
        Scored {
            id: None,
            key: None,
            instruction_id_list: vec!["a".into(); strict.len()],
            strict,
            loose,
            errors: vec![],
        }
    }

    #[test]
    fn summary_counts_prompts_and_instructions() {
        let s = summarize(&[
            scored(vec![Some(true), Some(false)], vec![Some(true), Some(true)]),
            scored(vec![Some(true)], vec![Some(true)]),
            scored(vec![None], vec![None]),
        ]);
        assert_eq!(s.rows, 3);
        assert_eq!(s.instructions, 4);
        assert!((s.prompt_strict - 1.0 / 3.0).abs() < 1e-12);
        assert!((s.prompt_loose - 2.0 / 3.0).abs() < 1e-12);
        assert!((s.instruction_strict - 0.5).abs() < 1e-12);
        assert!((s.instruction_loose - 0.75).abs() < 1e-12);
    }

    #[test]
    fn bad_rows_name_file_and_line() {
        let dir = std::env::temp_dir().join(format!("spar-score-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("rows.jsonl");
        std::fs::write(
            &p,
            "{\"prompt\":\"p\",\"response\":\"r\",\"instruction_id_list\":[]}\n{\"prompt\":\"p\"}\n",
        )
        .unwrap();
        let e = read_rows(&p).unwrap_err().to_string();
        assert!(e.contains("rows.jsonl:2") && e.contains("response"), "{e}");
        std::fs::write(&p, "not json\n").unwrap();
        let e = read_rows(&p).unwrap_err().to_string();
        assert!(e.contains("rows.jsonl:1"), "{e}");
        std::fs::write(
            &p,
            "{\"prompt\":\"p\",\"response\":\"r\",\"instruction_id_list\":[\"a\"],\"kwargs\":[{\"n\":null,\"k\":2}],\"id\":7}\n",
        )
        .unwrap();
        let rows = read_rows(&p).unwrap();
        assert_eq!(rows[0].instructions[0].1.len(), 1);
        assert_eq!(rows[0].id, Some(Value::from(7)));
    }
}
