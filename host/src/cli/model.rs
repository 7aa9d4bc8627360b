//! `spar-host model …`, `generate` and `chat`.

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::Args;
use spar_host::model::generate::{SamplingParams, generate};
use spar_host::model::tokenizer::ChatMessage;
use spar_host::model::{LoadedModel, default_model_dir, parse_device, parse_dtype};

/// Which model, on which device, in which precision.
#[derive(Args, Clone)]
pub struct ModelArgs {
    /// HF model directory (default: the embedded SmolLM2-135M-Instruct that setup imports).
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// cpu, cuda, cuda:N or auto.
    #[arg(long, default_value = "auto")]
    pub device: String,
    /// f32, bf16 or f16.
    #[arg(long, default_value = "f32")]
    pub dtype: String,
}

impl ModelArgs {
    pub fn dir(&self) -> PathBuf {
        self.model.clone().unwrap_or_else(default_model_dir)
    }

    pub fn load(&self) -> anyhow::Result<LoadedModel> {
        let dir = self.dir();
        if self.model.is_none() && !dir.join("config.json").exists() {
            bail!(
                "the default model is not imported yet ({}): run `bash scripts/setup.sh` or pass --model",
                dir.display()
            );
        }
        Ok(LoadedModel::load(
            &dir,
            parse_device(&self.device)?,
            parse_dtype(&self.dtype)?,
        )?)
    }
}

/// Sampling flags shared by `generate` and `chat`.
#[derive(Args, Clone)]
pub struct SamplingArgs {
    /// Samples per prompt.
    #[arg(long, default_value_t = 1)]
    pub n: usize,
    /// 0 = greedy.
    #[arg(long, default_value_t = 0.0)]
    pub temperature: f64,
    #[arg(long, default_value_t = 1.0)]
    pub top_p: f64,
    /// 0 = off.
    #[arg(long, default_value_t = 0)]
    pub top_k: usize,
    #[arg(long, default_value_t = 256)]
    pub max_new_tokens: usize,
    /// Stop strings (repeatable).
    #[arg(long)]
    pub stop: Vec<String>,
    #[arg(long)]
    pub seed: Option<u64>,
}

impl SamplingArgs {
    pub fn params(&self) -> SamplingParams {
        SamplingParams {
            n: self.n,
            temperature: self.temperature,
            top_p: self.top_p,
            top_k: self.top_k,
            max_new_tokens: self.max_new_tokens,
            stop: self.stop.clone(),
            seed: self.seed,
            ignore_eos: false,
        }
    }
}

/// One generate input: a chat (`messages`) or a raw `prompt`; other fields are kept.
struct Item {
    fields: serde_json::Map<String, serde_json::Value>,
    messages: Option<Vec<ChatMessage>>,
    prompt: Option<String>,
}

fn read_items(path: &Path) -> anyhow::Result<Vec<Item>> {
    let f = std::fs::File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut items = Vec::new();
    for (i, line) in std::io::BufReader::new(f).lines().enumerate() {
        let at = format!("{}:{}", path.display(), i + 1);
        let line = line.with_context(|| at.clone())?;
        if line.trim().is_empty() {
            continue;
        }
        let v: serde_json::Value =
            serde_json::from_str(&line).with_context(|| format!("{at}: not JSON"))?;
        let serde_json::Value::Object(fields) = v else {
            bail!("{at}: not a JSON object");
        };
        let messages = match fields.get("messages") {
            Some(m) => Some(
                serde_json::from_value::<Vec<ChatMessage>>(m.clone()).with_context(|| {
                    format!("{at}: `messages` must be a list of {{role, content}}")
                })?,
            ),
            None => None,
        };
        let prompt = match fields.get("prompt") {
            Some(serde_json::Value::String(s)) => Some(s.clone()),
            Some(_) => bail!("{at}: `prompt` must be a string"),
            None => None,
        };
        if messages.is_none() && prompt.is_none() {
            bail!("{at}: needs `messages` or `prompt`");
        }
        items.push(Item {
            fields,
            messages,
            prompt,
        });
    }
    Ok(items)
}

pub struct GenerateOpts<'a> {
    pub prompt: Option<&'a str>,
    pub input: Option<&'a Path>,
    pub out: Option<&'a Path>,
    pub raw: bool,
    pub batch_size: usize,
}

pub fn generate_cmd(m: &ModelArgs, s: &SamplingArgs, o: GenerateOpts) -> anyhow::Result<()> {
    // Read and validate the input before loading the model.
    let items = match (o.prompt, o.input) {
        (Some(p), None) => vec![Item {
            fields: Default::default(),
            messages: None,
            prompt: Some(p.to_string()),
        }],
        (None, Some(f)) => read_items(f)?,
        _ => bail!("give either --prompt or --input FILE.jsonl"),
    };
    let lm = m.load()?;
    let mut encoded = Vec::with_capacity(items.len());
    for (i, it) in items.iter().enumerate() {
        let ids = match (&it.messages, &it.prompt) {
            (Some(msgs), _) => lm.tokenizer.encode_chat(msgs, true)?,
            (None, Some(p)) if o.raw => lm.tokenizer.encode(p, false)?,
            (None, Some(p)) => lm
                .tokenizer
                .encode_chat(&[ChatMessage::new("user", p)], true)?,
            (None, None) => unreachable!("validated"),
        };
        if ids.is_empty() {
            bail!("item {}: empty prompt", i + 1);
        }
        encoded.push(ids);
    }
    let params = s.params();
    let bar = indicatif::ProgressBar::new(items.len() as u64).with_style(
        indicatif::ProgressStyle::with_template(
            "generating {bar:30} {pos}/{len} prompts, ETA {eta}",
        )
        .expect("template"),
    );
    let mut rows = Vec::with_capacity(items.len());
    for (chunk_items, chunk_ids) in items
        .chunks(o.batch_size.max(1))
        .zip(encoded.chunks(o.batch_size.max(1)))
    {
        let outs = generate(&lm, chunk_ids, &vec![params.clone(); chunk_ids.len()])?;
        for (it, comps) in chunk_items.iter().zip(outs) {
            let mut row = it.fields.clone();
            row.insert("completions".into(), serde_json::to_value(&comps)?);
            rows.push(serde_json::Value::Object(row));
        }
        bar.inc(chunk_items.len() as u64);
    }
    bar.finish_and_clear();
    match o.out {
        Some(path) => spar_host::score::write_jsonl_atomic(path, &rows)?,
        None => {
            if o.prompt.is_some() {
                for c in rows[0]["completions"].as_array().into_iter().flatten() {
                    println!("{}", c["text"].as_str().unwrap_or_default());
                }
            } else {
                for r in &rows {
                    println!("{r}");
                }
            }
        }
    }
    Ok(())
}

/// An interactive chat on stdin/stdout; `/reset` clears the history, `/quit` or EOF ends.
pub fn chat_cmd(m: &ModelArgs, s: &SamplingArgs, system: Option<&str>) -> anyhow::Result<()> {
    let lm = m.load()?;
    let mut history: Vec<ChatMessage> = system
        .map(|s| ChatMessage::new("system", s))
        .into_iter()
        .collect();
    let stdin = std::io::stdin();
    let mut out = std::io::stdout();
    let params = SamplingParams { n: 1, ..s.params() };
    loop {
        write!(out, "> ")?;
        out.flush()?;
        let mut line = String::new();
        if stdin.lock().read_line(&mut line)? == 0 {
            break;
        }
        let line = line.trim();
        match line {
            "" => continue,
            "/quit" | "/exit" => break,
            "/reset" => {
                history.retain(|m| m.role == "system");
                continue;
            }
            _ => {}
        }
        history.push(ChatMessage::new("user", line));
        let ids = lm.tokenizer.encode_chat(&history, true)?;
        let reply = generate(&lm, &[ids], std::slice::from_ref(&params))?
            .pop()
            .and_then(|mut v| v.pop())
            .map(|c| c.text)
            .unwrap_or_default();
        writeln!(out, "{reply}")?;
        history.push(ChatMessage::new("assistant", &reply));
    }
    Ok(())
}
