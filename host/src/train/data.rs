//! Training data in the conversational formats TRL and LLaMA-Factory use:
//! SFT rows `{"messages": [...]}`; preference rows `{"prompt" | "messages", "chosen", "rejected"}`
//! where each of them is a string or a list of messages. Tokenized with the chat template;
//! the loss covers assistant tokens only.

use std::path::Path;

use anyhow::{Context, bail};
use serde_json::Value;

use crate::model::Tokenizer;
use crate::model::tokenizer::ChatMessage;

/// One tokenized sequence and which of its next-token predictions are trained:
/// `mask[t] = 1` when token `t + 1` is an assistant token.
#[derive(Debug, Clone, PartialEq)]
pub struct Sequence {
    pub ids: Vec<i64>,
    pub mask: Vec<i64>,
}

impl Sequence {
    pub fn trained_tokens(&self) -> usize {
        self.mask.iter().filter(|&&m| m == 1).count()
    }
}

/// A tokenized preference pair.
#[derive(Debug, Clone, PartialEq)]
pub struct Pair {
    pub chosen: Sequence,
    pub rejected: Sequence,
}

/// Records dropped or cut while loading, reported to the user.
#[derive(Debug, Default, Clone, PartialEq, serde::Serialize)]
pub struct DataReport {
    pub records: usize,
    pub used: usize,
    /// Records cut to `max_length`.
    pub truncated: usize,
    /// Dropped: no chosen or no rejected response.
    pub missing_response: usize,
    /// Dropped: nothing left to train on after truncation.
    pub empty_after_truncation: usize,
    /// Dropped: the chat template does not extend the prompt's tokens (cannot mask).
    pub template_mismatch: usize,
}

fn parse_lines(path: &Path) -> anyhow::Result<Vec<(usize, serde_json::Map<String, Value>)>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let at = format!("{}:{}", path.display(), i + 1);
        match serde_json::from_str::<Value>(line).with_context(|| format!("{at}: not JSON"))? {
            Value::Object(o) => out.push((i + 1, o)),
            _ => bail!("{at}: not a JSON object"),
        }
    }
    Ok(out)
}

/// A turn list, or a string meaning one turn of `role`.
fn turns(v: &Value, role: &str, at: &str, field: &str) -> anyhow::Result<Vec<ChatMessage>> {
    match v {
        Value::String(s) => Ok(vec![ChatMessage::new(role, s)]),
        Value::Array(_) => serde_json::from_value(v.clone())
            .with_context(|| format!("{at}: `{field}` must be a list of {{role, content}}")),
        _ => bail!("{at}: `{field}` must be a string or a list of messages"),
    }
}

/// Tokens of `messages` with the mask over the assistant turns.
fn masked(tok: &Tokenizer, messages: &[ChatMessage]) -> anyhow::Result<Option<Sequence>> {
    let ids = tok.encode_chat(messages, false)?;
    let mut mask = vec![0i64; ids.len().saturating_sub(1)];
    for (i, m) in messages.iter().enumerate() {
        if m.role != "assistant" {
            continue;
        }
        let start = tok.encode_chat(&messages[..i], true)?;
        let end = tok.encode_chat(&messages[..=i], false)?;
        if !ids.starts_with(&start) || !ids.starts_with(&end) || end.len() < start.len() {
            return Ok(None);
        }
        // Token t+1 in [start, end) is predicted at position t.
        for t in start.len()..end.len() {
            mask[t - 1] = 1;
        }
    }
    Ok(Some(Sequence { ids, mask }))
}

/// Keep the first `max_length` tokens; true when something was cut.
fn truncate(s: &mut Sequence, max_length: usize) -> bool {
    if s.ids.len() <= max_length {
        return false;
    }
    s.ids.truncate(max_length);
    s.mask.truncate(max_length.saturating_sub(1));
    true
}

/// SFT rows (`messages` with at least one assistant turn).
pub fn load_sft(
    path: &Path,
    tok: &Tokenizer,
    max_length: usize,
) -> anyhow::Result<(Vec<Sequence>, DataReport)> {
    let rows = parse_lines(path)?;
    let mut report = DataReport {
        records: rows.len(),
        ..Default::default()
    };
    let mut out = Vec::new();
    for (line, o) in rows {
        let at = format!("{}:{line}", path.display());
        let msgs = turns(
            o.get("messages")
                .with_context(|| format!("{at}: missing `messages`"))?,
            "user",
            &at,
            "messages",
        )?;
        if !msgs.iter().any(|m| m.role == "assistant") {
            report.missing_response += 1;
            continue;
        }
        let Some(mut s) = masked(tok, &msgs)? else {
            report.template_mismatch += 1;
            continue;
        };
        report.truncated += truncate(&mut s, max_length) as usize;
        if s.trained_tokens() == 0 {
            report.empty_after_truncation += 1;
            continue;
        }
        out.push(s);
    }
    report.used = out.len();
    Ok((out, report))
}

/// Preference rows.
pub fn load_pairs(
    path: &Path,
    tok: &Tokenizer,
    max_length: usize,
) -> anyhow::Result<(Vec<Pair>, DataReport)> {
    let rows = parse_lines(path)?;
    let mut report = DataReport {
        records: rows.len(),
        ..Default::default()
    };
    let mut out = Vec::new();
    for (line, o) in rows {
        let at = format!("{}:{line}", path.display());
        let prompt = match (o.get("prompt"), o.get("messages")) {
            (Some(p), _) => turns(p, "user", &at, "prompt")?,
            (None, Some(m)) => turns(m, "user", &at, "messages")?,
            (None, None) => bail!("{at}: needs `prompt` or `messages`"),
        };
        let response = |field: &str| -> anyhow::Result<Option<Vec<ChatMessage>>> {
            match o.get(field) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(s)) if s.trim().is_empty() => Ok(None),
                Some(v) => turns(v, "assistant", &at, field).map(Some),
            }
        };
        let (Some(chosen), Some(rejected)) = (response("chosen")?, response("rejected")?) else {
            report.missing_response += 1;
            continue;
        };
        let full = |r: Vec<ChatMessage>| [prompt.clone(), r].concat();
        let (Some(mut c), Some(mut r)) =
            (masked(tok, &full(chosen))?, masked(tok, &full(rejected))?)
        else {
            report.template_mismatch += 1;
            continue;
        };
        let cut = truncate(&mut c, max_length) | truncate(&mut r, max_length);
        report.truncated += cut as usize;
        if c.trained_tokens() == 0 || r.trained_tokens() == 0 {
            report.empty_after_truncation += 1;
            continue;
        }
        out.push(Pair {
            chosen: c,
            rejected: r,
        });
    }
    report.used = out.len();
    Ok((out, report))
}

/// Right-pad sequences into `ids [B, T]`, `attn [B, T]`, `mask [B, T-1]`.
pub fn collate(seqs: &[&Sequence], pad: i64) -> (tch::Tensor, tch::Tensor, tch::Tensor) {
    let t = seqs.iter().map(|s| s.ids.len()).max().unwrap_or(1).max(2);
    let b = seqs.len();
    let (mut ids, mut attn, mut mask) =
        (vec![pad; b * t], vec![0i64; b * t], vec![0i64; b * (t - 1)]);
    for (i, s) in seqs.iter().enumerate() {
        ids[i * t..i * t + s.ids.len()].copy_from_slice(&s.ids);
        attn[i * t..i * t + s.ids.len()]
            .iter_mut()
            .for_each(|a| *a = 1);
        mask[i * (t - 1)..i * (t - 1) + s.mask.len()].copy_from_slice(&s.mask);
    }
    let (b, t) = (b as i64, t as i64);
    (
        tch::Tensor::from_slice(&ids).view([b, t]),
        tch::Tensor::from_slice(&attn).view([b, t]),
        tch::Tensor::from_slice(&mask).view([b, t - 1]),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::tiny::{word, write_tiny_model};

    fn tok() -> Tokenizer {
        let dir = std::env::temp_dir().join(format!(
            "spar-data-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        write_tiny_model(&dir, 64, 1).unwrap();
        let cfg = crate::model::ModelConfig::from_file(&dir.join("config.json")).unwrap();
        Tokenizer::load(&dir, &cfg).unwrap()
    }

    fn file(lines: &[String]) -> std::path::PathBuf {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static N: AtomicUsize = AtomicUsize::new(0);
        let p = std::env::temp_dir().join(format!(
            "spar-data-{}-{}.jsonl",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::write(&p, lines.join("\n")).unwrap();
        p
    }

    #[test]
    fn masks_cover_assistant_tokens_only() {
        let t = tok();
        let row = serde_json::json!({"messages": [
            {"role": "user", "content": format!("{} {}", word(5), word(6))},
            {"role": "assistant", "content": format!("{} {} {}", word(7), word(8), word(9))}]});
        let (seqs, rep) = load_sft(&file(&[row.to_string()]), &t, 100).unwrap();
        assert_eq!(rep.used, 1);
        let s = &seqs[0];
        let trained: Vec<i64> = s
            .mask
            .iter()
            .enumerate()
            .filter(|(_, m)| **m == 1)
            .map(|(i, _)| s.ids[i + 1])
            .collect();
        // The template writes "<bos> assistant w7 w8 w9 <eos>": the reply and its end token.
        let want: Vec<i64> = [word(7), word(8), word(9), "<eos>".into()]
            .iter()
            .map(|w| t.token_to_id(w).unwrap())
            .collect();
        assert_eq!(trained, want);
    }

    #[test]
    fn preference_rows_in_trl_formats_and_bad_records() {
        let t = tok();
        let good_str =
            serde_json::json!({"prompt": word(5), "chosen": word(6), "rejected": word(7)});
        let good_msgs = serde_json::json!({"prompt": [{"role": "user", "content": word(5)}],
            "chosen": [{"role": "assistant", "content": word(8)}],
            "rejected": [{"role": "assistant", "content": word(9)}]});
        let missing = serde_json::json!({"prompt": word(5), "chosen": word(6)});
        let long = serde_json::json!({"prompt": vec![word(5); 40].join(" "), "chosen": word(6), "rejected": word(7)});
        let (pairs, rep) = load_pairs(
            &file(&[
                good_str.to_string(),
                good_msgs.to_string(),
                missing.to_string(),
                long.to_string(),
            ]),
            &t,
            20,
        )
        .unwrap();
        assert_eq!(pairs.len(), 2);
        assert_eq!(
            (
                rep.records,
                rep.used,
                rep.missing_response,
                rep.empty_after_truncation,
                rep.truncated
            ),
            (4, 2, 1, 1, 1)
        );
        let e = load_pairs(&file(&[good_str.to_string(), "{broken".into()]), &t, 20)
            .unwrap_err()
            .to_string();
        assert!(e.contains(":2: not JSON"), "{e}");
    }
}
