//! Models: Llama-family decoders in libtorch, HF-format loading and saving, GGUF import,
//! tokenizers with chat templates, and batched generation. Knows nothing of plugins,
//! training or the pipeline.

pub mod config;
pub mod gemm;
pub mod generate;
pub mod gguf;
pub mod llama;
pub mod tiny;
pub mod tokenizer;
pub mod weights;

use std::path::{Path, PathBuf};

pub use config::ModelConfig;
pub use llama::Llama;
pub use tokenizer::Tokenizer;

/// Errors of the model layer: one line each, naming the file.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Format { path: String, message: String },
    #[error("{path}: unsupported: {message}")]
    Unsupported { path: String, message: String },
    #[error("{0}")]
    Input(String),
    #[error(transparent)]
    Gguf(#[from] gguf::GgufError),
    #[error("libtorch: {0}")]
    Torch(#[from] tch::TchError),
}

impl ModelError {
    pub fn io(path: &Path, source: std::io::Error) -> Self {
        ModelError::Io {
            path: path.display().to_string(),
            source,
        }
    }
}

/// A loaded model directory: weights, tokenizer and chat template.
pub struct LoadedModel {
    pub dir: PathBuf,
    pub model: Llama,
    pub tokenizer: Tokenizer,
}

/// `cpu`, `cuda`, `cuda:N` or `auto` (CUDA when available).
pub fn parse_device(s: &str) -> Result<tch::Device, ModelError> {
    match s {
        "cpu" => Ok(tch::Device::Cpu),
        "auto" => Ok(tch::Device::cuda_if_available()),
        "cuda" => Ok(tch::Device::Cuda(0)),
        s => s
            .strip_prefix("cuda:")
            .and_then(|n| n.parse().ok())
            .map(tch::Device::Cuda)
            .ok_or_else(|| {
                ModelError::Input(format!("unknown device `{s}` (cpu, cuda, cuda:N, auto)"))
            }),
    }
}

/// `f32` / `float32`, `bf16` / `bfloat16`, `f16` / `float16`.
pub fn parse_dtype(s: &str) -> Result<tch::Kind, ModelError> {
    match s {
        "f32" | "float32" => Ok(tch::Kind::Float),
        "bf16" | "bfloat16" => Ok(tch::Kind::BFloat16),
        "f16" | "float16" => Ok(tch::Kind::Half),
        s => Err(ModelError::Input(format!(
            "unknown dtype `{s}` (f32, bf16, f16)"
        ))),
    }
}

impl LoadedModel {
    /// Load `config.json`, the weights and the tokenizer of an HF model directory.
    pub fn load(dir: &Path, device: tch::Device, kind: tch::Kind) -> Result<Self, ModelError> {
        if !dir.is_dir() {
            return Err(ModelError::Input(format!(
                "{}: not a model directory",
                dir.display()
            )));
        }
        let cfg = ModelConfig::from_file(&dir.join("config.json"))?;
        let tokenizer = Tokenizer::load(dir, &cfg)?;
        if tokenizer.vocab_size() > cfg.vocab_size {
            return Err(ModelError::Format {
                path: dir.join("tokenizer.json").display().to_string(),
                message: format!(
                    "the tokenizer has {} tokens but the model only {} embeddings",
                    tokenizer.vocab_size(),
                    cfg.vocab_size
                ),
            });
        }
        let mut model = Llama::load(dir, cfg, device, kind)?;
        model.fuse_for_inference();
        Ok(Self {
            dir: dir.to_path_buf(),
            model,
            tokenizer,
        })
    }

    /// Save as an HF model directory (weights, config, tokenizer files), atomically per file.
    pub fn save(&self, dir: &Path) -> Result<(), ModelError> {
        weights::save_dir(&self.model, &self.dir, dir)
    }
}

/// Where the setup puts models, and the embedded default model's directory.
pub fn models_dir() -> PathBuf {
    std::env::var_os("SPAR_MODELS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| crate::plugin::repo_root().join("models"))
}

pub fn default_model_dir() -> PathBuf {
    models_dir().join("SmolLM2-135M-Instruct")
}
