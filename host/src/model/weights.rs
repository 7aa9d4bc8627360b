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

/// One tensor's place in a safetensors file.
struct Entry {
    dtype: String,
    shape: Vec<i64>,
    start: u64,
    end: u64,
}

/// The header of a safetensors file: tensor name → dtype, shape and byte range.
fn read_header(file: &Path) -> Result<(std::fs::File, u64, HashMap<String, Entry>), ModelError> {
    use std::io::Read;
    let bad = |m: String| ModelError::Format {
        path: file.display().to_string(),
        message: m,
    };
    let mut f = std::fs::File::open(file).map_err(|e| ModelError::io(file, e))?;
    let size = f.metadata().map_err(|e| ModelError::io(file, e))?.len();
    let mut len = [0u8; 8];
    f.read_exact(&mut len)
        .map_err(|_| bad("not a safetensors file (too short)".into()))?;
    let n = u64::from_le_bytes(len);
    if n > size.saturating_sub(8) || n > 100 << 20 {
        return Err(bad("not a safetensors file (bad header length)".into()));
    }
    let mut header = vec![0u8; n as usize];
    f.read_exact(&mut header)
        .map_err(|e| ModelError::io(file, e))?;
    let v: serde_json::Value =
        serde_json::from_slice(&header).map_err(|e| bad(format!("bad safetensors header: {e}")))?;
    let mut out = HashMap::new();
    for (name, t) in v.as_object().into_iter().flatten() {
        if name == "__metadata__" {
            continue;
        }
        let off = t["data_offsets"].as_array().filter(|a| a.len() == 2);
        let (Some(dtype), Some(shape), Some(off)) =
            (t["dtype"].as_str(), t["shape"].as_array(), off)
        else {
            return Err(bad(format!("bad header entry for `{name}`")));
        };
        let (start, end) = (
            off[0].as_u64().unwrap_or(u64::MAX),
            off[1].as_u64().unwrap_or(0),
        );
        if start > end || 8 + n + end > size {
            return Err(bad(format!("tensor `{name}` lies outside the file")));
        }
        out.insert(
            name.clone(),
            Entry {
                dtype: dtype.to_string(),
                shape: shape.iter().filter_map(|d| d.as_i64()).collect(),
                start,
                end,
            },
        );
    }
    Ok((f, 8 + n, out))
}

/// Fill every variable of `vs` from the directory's safetensors, by name, reading one tensor
/// at a time (peak memory: the model plus its largest tensor). A missing or misshapen tensor
/// is an error naming it.
pub fn load_into(vs: &mut nn::VarStore, dir: &Path) -> Result<(), ModelError> {
    use std::os::unix::fs::FileExt;
    let mut vars: HashMap<String, Tensor> = vs.variables();
    let total = vars.len();
    for file in shards(dir)? {
        let (f, base, entries) = read_header(&file)?;
        let bad = |m: String| ModelError::Format {
            path: file.display().to_string(),
            message: m,
        };
        for (name, e) in entries {
            let Some(var) = vars.get_mut(&name) else {
                continue;
            };
            if var.size() != e.shape {
                return Err(bad(format!(
                    "tensor `{name}` has shape {:?}, the config implies {:?}",
                    e.shape,
                    var.size()
                )));
            }
            let kind = match e.dtype.as_str() {
                "F32" => tch::Kind::Float,
                "F16" => tch::Kind::Half,
                "BF16" => tch::Kind::BFloat16,
                other => {
                    return Err(bad(format!(
                        "tensor `{name}` has unsupported dtype {other}"
                    )));
                }
            };
            let mut bytes = vec![0u8; (e.end - e.start) as usize];
            if bytes.len() != var.numel() * kind.elt_size_in_bytes() {
                return Err(bad(format!(
                    "tensor `{name}` has {} bytes for its shape",
                    bytes.len()
                )));
            }
            f.read_exact_at(&mut bytes, base + e.start)
                .map_err(|err| ModelError::io(&file, err))?;
            let t = Tensor::from_data_size(&bytes, &e.shape, kind);
            tch::no_grad(|| var.copy_(&t.to_kind(var.kind()).to_device(var.device())));
            vars.remove(&name);
        }
    }
    if let Some(missing) = vars.keys().min() {
        return Err(ModelError::Format {
            path: dir.display().to_string(),
            message: format!(
                "weight `{missing}` is missing ({} of {total} found)",
                total - vars.len()
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
    // Inference keeps projections input-major (transposed views); files are row-major.
    let mut named: Vec<(String, Tensor)> = model
        .vs
        .variables()
        .into_iter()
        .map(|(n, t)| (n, t.contiguous()))
        .collect();
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
