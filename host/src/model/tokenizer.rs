//! Tokenizer (HF `tokenizer.json` through the `tokenizers` crate) and the Jinja chat template
//! of `tokenizer_config.json`, rendered by minijinja the way transformers renders it.

use std::path::Path;

use minijinja::{Environment, ErrorKind, context};

use super::ModelError;
use super::config::{ModelConfig, ids_of};

/// One chat turn.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ChatMessage {
    pub role: String,
    pub content: String,
}

impl ChatMessage {
    pub fn new(role: &str, content: &str) -> Self {
        Self {
            role: role.into(),
            content: content.into(),
        }
    }
}

pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    template: Option<String>,
    bos_token: Option<String>,
    eos_token: Option<String>,
    /// Token ids that end generation.
    pub eos_ids: Vec<i64>,
    /// Id used to pad batches (pad token, else the first EOS).
    pub pad_id: i64,
    path: String,
}

/// A special-token field: a string or an `AddedToken` object with `content`.
fn token_string(v: &serde_json::Value) -> Option<String> {
    match v {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Object(o) => o.get("content").and_then(|c| c.as_str()).map(String::from),
        _ => None,
    }
}

fn read_json(path: &Path) -> Result<Option<serde_json::Value>, ModelError> {
    if !path.exists() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(path).map_err(|e| ModelError::io(path, e))?;
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|e| ModelError::Format {
            path: path.display().to_string(),
            message: format!("line {}: {e}", e.line()),
        })
}

impl Tokenizer {
    pub fn load(dir: &Path, cfg: &ModelConfig) -> Result<Self, ModelError> {
        let path = dir.join("tokenizer.json");
        if !path.exists() {
            return Err(ModelError::Format {
                path: dir.display().to_string(),
                message: "no tokenizer.json".into(),
            });
        }
        let inner = tokenizers::Tokenizer::from_file(&path).map_err(|e| ModelError::Format {
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
        let tc = read_json(&dir.join("tokenizer_config.json"))?.unwrap_or_default();
        let gc = read_json(&dir.join("generation_config.json"))?.unwrap_or_default();
        let template = match &tc["chat_template"] {
            serde_json::Value::String(s) => Some(s.clone()),
            // A list of named templates: take `default`.
            serde_json::Value::Array(a) => a
                .iter()
                .find(|t| t["name"] == "default")
                .and_then(|t| t["template"].as_str())
                .map(String::from),
            _ => None,
        };
        let bos_token = token_string(&tc["bos_token"]);
        let eos_token = token_string(&tc["eos_token"]);
        let mut eos_ids = ids_of(gc.get("eos_token_id"));
        eos_ids.extend(cfg.eos_ids());
        if let Some(id) = eos_token.as_deref().and_then(|t| inner.token_to_id(t)) {
            eos_ids.push(id as i64);
        }
        eos_ids.sort();
        eos_ids.dedup();
        let pad_id = token_string(&tc["pad_token"])
            .and_then(|t| inner.token_to_id(&t))
            .map(|i| i as i64)
            .or_else(|| eos_ids.first().copied())
            .unwrap_or(0);
        Ok(Self {
            inner,
            template,
            bos_token,
            eos_token,
            eos_ids,
            pad_id,
            path: path.display().to_string(),
        })
    }

    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    pub fn encode(&self, text: &str, add_special_tokens: bool) -> Result<Vec<i64>, ModelError> {
        let enc = self
            .inner
            .encode(text, add_special_tokens)
            .map_err(|e| ModelError::Input(format!("{}: cannot encode: {e}", self.path)))?;
        Ok(enc.get_ids().iter().map(|&i| i as i64).collect())
    }

    pub fn decode(&self, ids: &[i64], skip_special_tokens: bool) -> Result<String, ModelError> {
        let ids: Vec<u32> = ids.iter().map(|&i| i as u32).collect();
        self.inner
            .decode(&ids, skip_special_tokens)
            .map_err(|e| ModelError::Input(format!("{}: cannot decode: {e}", self.path)))
    }

    pub fn token_to_id(&self, token: &str) -> Option<i64> {
        self.inner.token_to_id(token).map(|i| i as i64)
    }

    /// Render a conversation with the model's chat template (as transformers'
    /// `apply_chat_template(messages, tokenize=False, add_generation_prompt=...)`).
    pub fn render_chat(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
    ) -> Result<String, ModelError> {
        let Some(template) = &self.template else {
            return Err(ModelError::Input(format!(
                "{}: the model has no chat_template",
                self.path
            )));
        };
        let mut env = Environment::new();
        // transformers renders with trim_blocks and lstrip_blocks.
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function(
            "raise_exception",
            |msg: String| -> Result<String, minijinja::Error> {
                Err(minijinja::Error::new(ErrorKind::InvalidOperation, msg))
            },
        );
        let tmpl = env
            .template_from_str(template)
            .map_err(|e| ModelError::Format {
                path: self.path.clone(),
                message: format!("chat_template: {e}"),
            })?;
        tmpl.render(context! {
            messages => messages,
            add_generation_prompt => add_generation_prompt,
            bos_token => self.bos_token.clone().unwrap_or_default(),
            eos_token => self.eos_token.clone().unwrap_or_default(),
        })
        .map_err(|e| ModelError::Input(format!("chat template: {e}")))
    }

    /// Token ids of a rendered conversation. The template already writes any BOS it wants,
    /// so no special tokens are added (transformers does the same).
    pub fn encode_chat(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
    ) -> Result<Vec<i64>, ModelError> {
        self.encode(&self.render_chat(messages, add_generation_prompt)?, false)
    }
}
