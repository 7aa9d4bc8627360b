//! The model configuration, read from a Hugging Face `config.json`.

use std::path::Path;

use super::ModelError;

/// llama3-style RoPE frequency scaling (`rope_scaling` with `rope_type = "llama3"`).
#[derive(Debug, Clone, PartialEq, serde::Deserialize, serde::Serialize)]
pub struct RopeScaling {
    #[serde(alias = "type")]
    pub rope_type: String,
    #[serde(default = "one")]
    pub factor: f64,
    #[serde(default = "one")]
    pub low_freq_factor: f64,
    #[serde(default = "four")]
    pub high_freq_factor: f64,
    #[serde(default = "ctx8k")]
    pub original_max_position_embeddings: usize,
}

fn one() -> f64 {
    1.0
}
fn four() -> f64 {
    4.0
}
fn ctx8k() -> usize {
    8192
}

/// The fields of HF `LlamaConfig` / `MistralConfig` / `Qwen2Config` the decoder needs.
#[derive(Debug, Clone, PartialEq, serde::Deserialize, serde::Serialize)]
pub struct ModelConfig {
    #[serde(default)]
    pub architectures: Vec<String>,
    #[serde(default = "llama")]
    pub model_type: String,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    #[serde(default)]
    pub num_key_value_heads: Option<usize>,
    #[serde(default)]
    pub head_dim: Option<usize>,
    #[serde(default = "eps")]
    pub rms_norm_eps: f64,
    #[serde(default = "theta")]
    pub rope_theta: f64,
    #[serde(default)]
    pub rope_scaling: Option<RopeScaling>,
    #[serde(default = "ctx")]
    pub max_position_embeddings: usize,
    pub vocab_size: usize,
    #[serde(default)]
    pub tie_word_embeddings: bool,
    #[serde(default)]
    pub attention_bias: bool,
    #[serde(default)]
    pub bos_token_id: Option<serde_json::Value>,
    #[serde(default)]
    pub eos_token_id: Option<serde_json::Value>,
    #[serde(default = "silu")]
    pub hidden_act: String,
    #[serde(default)]
    pub torch_dtype: Option<String>,
}

fn llama() -> String {
    "llama".into()
}
fn eps() -> f64 {
    1e-6
}
fn theta() -> f64 {
    10_000.0
}
fn ctx() -> usize {
    2048
}
fn silu() -> String {
    "silu".into()
}

impl ModelConfig {
    pub fn from_file(path: &Path) -> Result<Self, ModelError> {
        let text = std::fs::read_to_string(path).map_err(|e| ModelError::io(path, e))?;
        let cfg: ModelConfig = serde_json::from_str(&text).map_err(|e| ModelError::Format {
            path: path.display().to_string(),
            message: format!("line {}: {e}", e.line()),
        })?;
        cfg.validate(path)?;
        Ok(cfg)
    }

    fn validate(&self, path: &Path) -> Result<(), ModelError> {
        let unsupported = |m: String| ModelError::Unsupported {
            path: path.display().to_string(),
            message: m,
        };
        match self.model_type.as_str() {
            "llama" | "mistral" | "qwen2" => {}
            other => {
                return Err(unsupported(format!(
                    "model_type `{other}` (supported: llama, mistral, qwen2)"
                )));
            }
        }
        if self.hidden_act != "silu" {
            return Err(unsupported(format!("hidden_act `{}`", self.hidden_act)));
        }
        if self.num_attention_heads == 0 || self.num_heads_kv() == 0 {
            return Err(unsupported("zero attention heads".into()));
        }
        if !self.num_attention_heads.is_multiple_of(self.num_heads_kv()) {
            return Err(unsupported(format!(
                "{} attention heads are not a multiple of {} key/value heads",
                self.num_attention_heads,
                self.num_heads_kv()
            )));
        }
        if let Some(s) = &self.rope_scaling
            && s.rope_type != "llama3"
            && s.rope_type != "default"
        {
            return Err(unsupported(format!("rope_scaling type `{}`", s.rope_type)));
        }
        Ok(())
    }

    pub fn num_heads_kv(&self) -> usize {
        self.num_key_value_heads.unwrap_or(self.num_attention_heads)
    }

    pub fn head_size(&self) -> usize {
        self.head_dim
            .unwrap_or(self.hidden_size / self.num_attention_heads)
    }

    /// Qwen2 has biases on q/k/v; Llama only when `attention_bias` says so.
    pub fn qkv_bias(&self) -> bool {
        self.model_type == "qwen2" || self.attention_bias
    }

    /// The token ids that end generation (`eos_token_id` may be one id or a list).
    pub fn eos_ids(&self) -> Vec<i64> {
        ids_of(self.eos_token_id.as_ref())
    }
}

/// An HF token-id field: a number or a list of numbers.
pub fn ids_of(v: Option<&serde_json::Value>) -> Vec<i64> {
    match v {
        Some(serde_json::Value::Number(n)) => n.as_i64().into_iter().collect(),
        Some(serde_json::Value::Array(a)) => a.iter().filter_map(|x| x.as_i64()).collect(),
        _ => Vec::new(),
    }
}
