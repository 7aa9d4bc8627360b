//! Weights on disk in the Hugging Face layout: `model.safetensors`, or shards listed by
//! `model.safetensors.index.json`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use tch::{Tensor, nn};

use super::{Llama, ModelError};

/// The safetensors files of a model directory, and which tensor lives in which.
fn shards(dir: &Path) -> Result<Vec<PathBuf>, ModelError> {
    let single = dir.join("model.safetensors");
    if single.exists() {
        return Ok(vec![single]);
    }
    let index = dir.join("model.safetensors.index.json");
    if !index.exists() {
        return Err(ModelError::Format {
            path: dir.display().to_string(),
            message: "no model.safetensors or model.safetensors.index.json".into(),
        });
    }
    let text = std::fs::read_to_string(&index).map_err(|e| ModelError::io(&index, e))?;
    let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| ModelError::Format {
        path: index.display().to_string(),
        message: e.to_string(),
    })?;
    let map = v["weight_map"]
        .as_object()
        .ok_or_else(|| ModelError::Format {
            path: index.display().to_string(),
            message: "no `weight_map` object".into(),
        })?;
    let mut files: Vec<PathBuf> = map
        .values()
        .filter_map(|f| f.as_str())
        .map(|f| dir.join(f))
        .collect();
    files.sort();
    files.dedup();
    Ok(files)
}

/// Fill every variable of `vs` from the directory's safetensors, by name; a missing or
/// misshapen tensor is an error naming it.
pub fn load_into(vs: &mut nn::VarStore, dir: &Path) -> Result<(), ModelError> {
    let mut vars: HashMap<String, Tensor> = vs.variables();
    let mut found = 0usize;
    for file in shards(dir)? {
        let tensors = Tensor::read_safetensors(&file).map_err(|e| ModelError::Format {
            path: file.display().to_string(),
            message: e.to_string(),
        })?;
        for (name, t) in tensors {
            let Some(var) = vars.get_mut(&name) else {
                continue;
            };
            if var.size() != t.size() {
                return Err(ModelError::Format {
                    path: file.display().to_string(),
                    message: format!(
                        "tensor `{name}` has shape {:?}, the config implies {:?}",
                        t.size(),
                        var.size()
                    ),
                });
            }
            tch::no_grad(|| var.copy_(&t.to_kind(var.kind()).to_device(var.device())));
            found += 1;
            vars.remove(&name);
        }
    }
    if let Some(missing) = vars.keys().min() {
        return Err(ModelError::Format {
            path: dir.display().to_string(),
            message: format!(
                "weight `{missing}` is missing ({} of {} found)",
                found,
                found + vars.len()
            ),
        });
    }
    Ok(())
}

/// The tokenizer and generation files copied along with the weights.
pub const SIDE_FILES: [&str; 4] = [
    "tokenizer.json",
    "tokenizer_config.json",
    "generation_config.json",
    "special_tokens_map.json",
];

/// Write `model` as an HF directory at `out`: weights, `config.json` (dtype updated) and the
/// tokenizer files of `source_dir`. Each file goes to a temporary name, then is renamed.
pub fn save_dir(model: &Llama, source_dir: &Path, out: &Path) -> Result<(), ModelError> {
    std::fs::create_dir_all(out).map_err(|e| ModelError::io(out, e))?;
    let mut named: Vec<(String, Tensor)> = model.vs.variables().into_iter().collect();
    named.sort_by(|a, b| a.0.cmp(&b.0));
    let tmp = out.join("model.safetensors.tmp");
    Tensor::write_safetensors(&named, &tmp).map_err(|e| ModelError::Format {
        path: tmp.display().to_string(),
        message: e.to_string(),
    })?;
    rename(&tmp, &out.join("model.safetensors"))?;
    for f in SIDE_FILES {
        let src = source_dir.join(f);
        if src.exists() && source_dir != out {
            let tmp = out.join(format!("{f}.tmp"));
            std::fs::copy(&src, &tmp).map_err(|e| ModelError::io(&src, e))?;
            rename(&tmp, &out.join(f))?;
        }
    }
    let mut cfg = serde_json::to_value(&model.cfg).expect("config serializes");
    cfg["torch_dtype"] = match model.kind() {
        tch::Kind::BFloat16 => "bfloat16",
        tch::Kind::Half => "float16",
        _ => "float32",
    }
    .into();
    write_atomic(
        &out.join("config.json"),
        &serde_json::to_string_pretty(&cfg).expect("json"),
    )
}

fn rename(from: &Path, to: &Path) -> Result<(), ModelError> {
    std::fs::rename(from, to).map_err(|e| ModelError::io(to, e))
}

/// Write a text file through a temporary name.
pub fn write_atomic(path: &Path, text: &str) -> Result<(), ModelError> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).map_err(|e| ModelError::io(&tmp, e))?;
    rename(&tmp, path)
}
