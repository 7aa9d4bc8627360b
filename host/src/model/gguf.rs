//! GGUF, llama.cpp's checkpoint format: parsing, dequantization to f32, and import of `llama` and
//! `qwen2` checkpoints into a Hugging Face model directory (safetensors, config, tokenizer files).
//!
//! Layout (ggml `docs/gguf.md`, little-endian): `GGUF`, version u32, tensor count u64, metadata
//! count u64, the metadata key/values, the tensor infos; tensor data starts at the next multiple
//! of `general.alignment` (default 32), each tensor at an aligned offset from there.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use safetensors::tensor::{Dtype, SafeTensorError, TensorView, serialize_to_file};
use serde_json::{Map, Value, json};

/// Errors of the GGUF reader and importer: one line each, naming the file.
#[derive(Debug, thiserror::Error)]
pub enum GgufError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: {msg}")]
    Format { path: String, msg: String },
    #[error("{path}: unsupported: {msg}")]
    Unsupported { path: String, msg: String },
}

impl GgufError {
    fn io(path: &Path, source: std::io::Error) -> Self {
        GgufError::Io {
            path: path.display().to_string(),
            source,
        }
    }

    fn format(path: &Path, msg: impl Into<String>) -> Self {
        GgufError::Format {
            path: path.display().to_string(),
            msg: msg.into(),
        }
    }

    fn unsupported(path: &Path, msg: impl Into<String>) -> Self {
        GgufError::Unsupported {
            path: path.display().to_string(),
            msg: msg.into(),
        }
    }
}

/// A metadata value (GGUF value types 0–12, in the spec's order).
#[derive(Debug, Clone, PartialEq)]
pub enum MetaValue {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    F32(f32),
    Bool(bool),
    Str(String),
    Array(Vec<MetaValue>),
    U64(u64),
    I64(i64),
    F64(f64),
}

impl MetaValue {
    /// Any integer that is not negative.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            MetaValue::U8(v) => Some(v.into()),
            MetaValue::U16(v) => Some(v.into()),
            MetaValue::U32(v) => Some(v.into()),
            MetaValue::U64(v) => Some(v),
            _ => self.as_i64().and_then(|v| u64::try_from(v).ok()),
        }
    }

    /// Any integer that fits an i64.
    pub fn as_i64(&self) -> Option<i64> {
        match *self {
            MetaValue::I8(v) => Some(v.into()),
            MetaValue::I16(v) => Some(v.into()),
            MetaValue::I32(v) => Some(v.into()),
            MetaValue::I64(v) => Some(v),
            MetaValue::U8(v) => Some(v.into()),
            MetaValue::U16(v) => Some(v.into()),
            MetaValue::U32(v) => Some(v.into()),
            MetaValue::U64(v) => i64::try_from(v).ok(),
            _ => None,
        }
    }

    /// Any number. An f32 goes through its shortest decimal form, so the `1e-5` a converter
    /// stored as f32 reads back as `1e-5`, not `9.999999747378752e-6`.
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            MetaValue::F32(v) => v.to_string().parse().ok(),
            MetaValue::F64(v) => Some(v),
            _ => self.as_i64().map(|v| v as f64),
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            MetaValue::Str(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            MetaValue::Bool(b) => Some(b),
            _ => None,
        }
    }

    pub fn as_array(&self) -> Option<&[MetaValue]> {
        match self {
            MetaValue::Array(a) => Some(a),
            _ => None,
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            MetaValue::Str(_) => "a string",
            MetaValue::Array(_) => "an array",
            MetaValue::Bool(_) => "a bool",
            MetaValue::F32(_) | MetaValue::F64(_) => "a float",
            _ => "an integer",
        }
    }
}

/// One tensor's entry in the header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorInfo {
    pub name: String,
    /// GGUF order: `dims[0]` varies fastest, so the row-major shape is `dims` reversed.
    pub dims: Vec<u64>,
    pub ggml_type: u32,
    /// From the start of the data section.
    pub offset: u64,
}

impl TensorInfo {
    /// `None` on overflow (only a corrupt header gets there).
    pub fn n_elements(&self) -> Option<u64> {
        self.dims.iter().try_fold(1u64, |n, &d| n.checked_mul(d))
    }

    /// Row-major shape, as Hugging Face and libtorch write it.
    pub fn shape(&self) -> Vec<usize> {
        self.dims.iter().rev().map(|&d| d as usize).collect()
    }
}

/// Elements per block, bytes per block and name of each ggml type (ggml's `type_traits`).
fn layout(ggml_type: u32) -> Option<(usize, usize, &'static str)> {
    Some(match ggml_type {
        0 => (1, 4, "F32"),
        1 => (1, 2, "F16"),
        2 => (32, 18, "Q4_0"),
        3 => (32, 20, "Q4_1"),
        6 => (32, 22, "Q5_0"),
        7 => (32, 24, "Q5_1"),
        8 => (32, 34, "Q8_0"),
        9 => (32, 40, "Q8_1"),
        10 => (256, 84, "Q2_K"),
        11 => (256, 110, "Q3_K"),
        12 => (256, 144, "Q4_K"),
        13 => (256, 176, "Q5_K"),
        14 => (256, 210, "Q6_K"),
        15 => (256, 292, "Q8_K"),
        16 => (256, 66, "IQ2_XXS"),
        17 => (256, 74, "IQ2_XS"),
        18 => (256, 98, "IQ3_XXS"),
        19 => (256, 50, "IQ1_S"),
        20 => (32, 18, "IQ4_NL"),
        21 => (256, 110, "IQ3_S"),
        22 => (256, 82, "IQ2_S"),
        23 => (256, 136, "IQ4_XS"),
        24 => (1, 1, "I8"),
        25 => (1, 2, "I16"),
        26 => (1, 4, "I32"),
        27 => (1, 8, "I64"),
        28 => (1, 8, "F64"),
        29 => (256, 56, "IQ1_M"),
        30 => (1, 2, "BF16"),
        34 => (256, 54, "TQ1_0"),
        35 => (256, 66, "TQ2_0"),
        39 => (32, 17, "MXFP4"),
        _ => return None,
    })
}

/// The ggml name of a tensor type (`Q4_K`), or `type N` for one this reader does not know.
pub fn ggml_type_name(ggml_type: u32) -> String {
    layout(ggml_type).map_or_else(|| format!("type {ggml_type}"), |l| l.2.to_string())
}

/// A parsed GGUF header; tensor data stays on disk until [`GgufFile::tensor_f32`] reads it.
#[derive(Debug, Clone)]
pub struct GgufFile {
    pub version: u32,
    pub metadata: BTreeMap<String, MetaValue>,
    pub tensors: Vec<TensorInfo>,
    data_offset: u64,
    path: PathBuf,
}

/// Sequential reader of the header, bounded by the file length so that a corrupt count or
/// length fails with a message instead of allocating gigabytes.
struct Reader<'a> {
    inner: BufReader<File>,
    pos: u64,
    len: u64,
    path: &'a Path,
}

impl Reader<'_> {
    fn fill(&mut self, buf: &mut [u8]) -> Result<(), GgufError> {
        let n = buf.len() as u64;
        if n > self.len - self.pos {
            return Err(GgufError::format(
                self.path,
                format!(
                    "truncated: {n} bytes needed at offset {} of a {}-byte file",
                    self.pos, self.len
                ),
            ));
        }
        self.inner
            .read_exact(buf)
            .map_err(|e| GgufError::io(self.path, e))?;
        self.pos += n;
        Ok(())
    }

    fn take<const N: usize>(&mut self) -> Result<[u8; N], GgufError> {
        let mut buf = [0u8; N];
        self.fill(&mut buf)?;
        Ok(buf)
    }

    fn u32(&mut self) -> Result<u32, GgufError> {
        Ok(u32::from_le_bytes(self.take::<4>()?))
    }

    fn u64(&mut self) -> Result<u64, GgufError> {
        Ok(u64::from_le_bytes(self.take::<8>()?))
    }

    /// A count of items that each take at least one byte: more than the bytes left is corrupt.
    fn count(&mut self, what: &str) -> Result<u64, GgufError> {
        let at = self.pos;
        let n = self.u64()?;
        if n > self.len - self.pos {
            return Err(GgufError::format(
                self.path,
                format!("{what} {n} at offset {at} runs past the end of the file"),
            ));
        }
        Ok(n)
    }

    fn raw_string(&mut self) -> Result<Vec<u8>, GgufError> {
        let mut buf = vec![0u8; self.count("string length")? as usize];
        self.fill(&mut buf)?;
        Ok(buf)
    }

    /// Keys and tensor names must be UTF-8; values are decoded leniently.
    fn name(&mut self, what: &str) -> Result<String, GgufError> {
        let at = self.pos;
        String::from_utf8(self.raw_string()?).map_err(|_| {
            GgufError::format(self.path, format!("{what} at offset {at} is not UTF-8"))
        })
    }

    fn value(&mut self, ty: u32, depth: usize) -> Result<MetaValue, GgufError> {
        Ok(match ty {
            0 => MetaValue::U8(self.take::<1>()?[0]),
            1 => MetaValue::I8(i8::from_le_bytes(self.take::<1>()?)),
            2 => MetaValue::U16(u16::from_le_bytes(self.take::<2>()?)),
            3 => MetaValue::I16(i16::from_le_bytes(self.take::<2>()?)),
            4 => MetaValue::U32(self.u32()?),
            5 => MetaValue::I32(i32::from_le_bytes(self.take::<4>()?)),
            6 => MetaValue::F32(f32::from_le_bytes(self.take::<4>()?)),
            7 => MetaValue::Bool(self.take::<1>()?[0] != 0),
            8 => MetaValue::Str(String::from_utf8_lossy(&self.raw_string()?).into_owned()),
            9 if depth < 4 => {
                let elem = self.u32()?;
                let n = self.count("array length")?;
                // The count is only bounded by the file size: let a corrupt one fail at EOF.
                let mut items = Vec::with_capacity(n.min(1 << 16) as usize);
                for _ in 0..n {
                    items.push(self.value(elem, depth + 1)?);
                }
                MetaValue::Array(items)
            }
            10 => MetaValue::U64(self.u64()?),
            11 => MetaValue::I64(i64::from_le_bytes(self.take::<8>()?)),
            12 => MetaValue::F64(f64::from_le_bytes(self.take::<8>()?)),
            _ => {
                return Err(GgufError::format(
                    self.path,
                    format!(
                        "metadata value type {ty} unknown or nested too deep, before offset {}",
                        self.pos
                    ),
                ));
            }
        })
    }
}

impl GgufFile {
    /// Parse the header, metadata and tensor infos, and check that every tensor's data lies
    /// aligned and inside the file.
    pub fn open(path: &Path) -> Result<Self, GgufError> {
        let file = File::open(path).map_err(|e| GgufError::io(path, e))?;
        let len = file.metadata().map_err(|e| GgufError::io(path, e))?.len();
        let mut r = Reader {
            inner: BufReader::with_capacity(1 << 20, file),
            pos: 0,
            len,
            path,
        };
        if len < 4 || r.take::<4>()? != *b"GGUF" {
            return Err(GgufError::format(path, "not a GGUF file (no `GGUF` magic)"));
        }
        let version = r.u32()?;
        match version {
            2 | 3 => {}
            1 => {
                return Err(GgufError::unsupported(
                    path,
                    "GGUF version 1 (re-convert it with a current llama.cpp)",
                ));
            }
            v if matches!(v.swap_bytes(), 2 | 3) => {
                return Err(GgufError::unsupported(path, "big-endian GGUF"));
            }
            v => {
                return Err(GgufError::unsupported(
                    path,
                    format!("GGUF version {v} (supported: 2, 3)"),
                ));
            }
        }
        // Every tensor info and key/value takes well over 8 bytes.
        let n_tensors = r.u64()?;
        let n_kv = r.u64()?;
        if n_tensors > len / 8 || n_kv > len / 8 {
            return Err(GgufError::format(
                path,
                format!(
                    "{n_tensors} tensors and {n_kv} metadata entries cannot fit in {len} bytes"
                ),
            ));
        }
        let mut metadata = BTreeMap::new();
        for _ in 0..n_kv {
            let key = r.name("metadata key")?;
            let ty = r.u32()?;
            let value = r.value(ty, 0)?;
            if metadata.insert(key.clone(), value).is_some() {
                return Err(GgufError::format(
                    path,
                    format!("metadata key `{key}` appears twice"),
                ));
            }
        }
        let mut tensors = Vec::with_capacity(n_tensors.min(1 << 16) as usize);
        for _ in 0..n_tensors {
            let name = r.name("tensor name")?;
            let n_dims = r.u32()?;
            if !(1..=4).contains(&n_dims) {
                return Err(GgufError::format(
                    path,
                    format!("tensor `{name}` has {n_dims} dimensions (GGUF allows 1 to 4)"),
                ));
            }
            let dims = (0..n_dims)
                .map(|_| r.u64())
                .collect::<Result<Vec<_>, _>>()?;
            let ggml_type = r.u32()?;
            let offset = r.u64()?;
            tensors.push(TensorInfo {
                name,
                dims,
                ggml_type,
                offset,
            });
        }
        let alignment = match metadata.get("general.alignment") {
            None => 32,
            Some(v) => v.as_u64().filter(|a| a.is_power_of_two()).ok_or_else(|| {
                GgufError::format(
                    path,
                    format!("general.alignment {v:?} is not a power of two"),
                )
            })?,
        };
        let data_offset = r.pos.next_multiple_of(alignment);
        let gguf = GgufFile {
            version,
            metadata,
            tensors,
            data_offset,
            path: path.to_path_buf(),
        };
        gguf.validate(alignment, len)?;
        Ok(gguf)
    }

    fn validate(&self, alignment: u64, len: u64) -> Result<(), GgufError> {
        let mut names = HashSet::new();
        for t in &self.tensors {
            let err =
                |msg: String| GgufError::format(&self.path, format!("tensor `{}`: {msg}", t.name));
            if !names.insert(t.name.as_str()) {
                return Err(err("appears twice".into()));
            }
            let Some((block, block_bytes, type_name)) = layout(t.ggml_type) else {
                return Err(GgufError::unsupported(
                    &self.path,
                    format!("tensor `{}` has unknown ggml type {}", t.name, t.ggml_type),
                ));
            };
            // ggml quantizes rows, so a row is a whole number of blocks.
            if !t.dims[0].is_multiple_of(block as u64) {
                return Err(err(format!(
                    "rows of {} are not whole {type_name} blocks of {block}",
                    t.dims[0]
                )));
            }
            let size = t
                .n_elements()
                .and_then(|n| (n / block as u64).checked_mul(block_bytes as u64))
                .ok_or_else(|| err(format!("dims {:?} overflow", t.dims)))?;
            if !t.offset.is_multiple_of(alignment) {
                return Err(err(format!(
                    "offset {} is not a multiple of the alignment {alignment}",
                    t.offset
                )));
            }
            let end = self
                .data_offset
                .checked_add(t.offset)
                .and_then(|o| o.checked_add(size));
            if !matches!(end, Some(end) if end <= len) {
                return Err(err(format!(
                    "{size} bytes at data offset {} run past the end of the {len}-byte file",
                    t.offset
                )));
            }
        }
        Ok(())
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Where the tensor data section starts in the file.
    pub fn data_offset(&self) -> u64 {
        self.data_offset
    }

    pub fn get(&self, key: &str) -> Option<&MetaValue> {
        self.metadata.get(key)
    }

    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.tensors.iter().find(|t| t.name == name)
    }

    /// Read one tensor and dequantize it to f32, row-major with shape [`TensorInfo::shape`].
    pub fn tensor_f32(&self, info: &TensorInfo) -> Result<Vec<f32>, GgufError> {
        let unsupported = |msg: String| {
            GgufError::unsupported(&self.path, format!("tensor `{}`: {msg}", info.name))
        };
        let (block, block_bytes, _) = layout(info.ggml_type)
            .ok_or_else(|| unsupported(format!("unknown ggml type {}", info.ggml_type)))?;
        let n = info
            .n_elements()
            .and_then(|n| usize::try_from(n).ok())
            .ok_or_else(|| {
                GgufError::format(&self.path, format!("tensor `{}` is too large", info.name))
            })?;
        let mut bytes = vec![0u8; n / block * block_bytes];
        let mut f = File::open(&self.path).map_err(|e| GgufError::io(&self.path, e))?;
        f.seek(SeekFrom::Start(
            self.data_offset.saturating_add(info.offset),
        ))
        .and_then(|_| f.read_exact(&mut bytes))
        .map_err(|e| GgufError::io(&self.path, e))?;
        dequantize(info.ggml_type, &bytes, n).map_err(unsupported)
    }

    fn meta_u64(&self, key: &str) -> Result<Option<u64>, GgufError> {
        self.get(key)
            .map(|v| {
                v.as_u64().ok_or_else(|| {
                    GgufError::format(
                        &self.path,
                        format!(
                            "metadata `{key}` is {}, expected a non-negative integer",
                            v.kind()
                        ),
                    )
                })
            })
            .transpose()
    }

    fn meta_f64(&self, key: &str) -> Result<Option<f64>, GgufError> {
        self.get(key)
            .map(|v| {
                v.as_f64().ok_or_else(|| {
                    GgufError::format(
                        &self.path,
                        format!("metadata `{key}` is {}, expected a number", v.kind()),
                    )
                })
            })
            .transpose()
    }

    fn require<T>(&self, key: &str, value: Option<T>) -> Result<T, GgufError> {
        value.ok_or_else(|| GgufError::format(&self.path, format!("metadata `{key}` is missing")))
    }

    fn meta_str(&self, key: &str) -> Option<&str> {
        self.get(key).and_then(MetaValue::as_str)
    }
}

/// Dequantize `n_elements` values of `ggml_type` from `bytes` (exactly their blocks).
/// Implemented: F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q5_K, Q6_K.
pub fn dequantize(ggml_type: u32, bytes: &[u8], n_elements: usize) -> Result<Vec<f32>, String> {
    let (block, block_bytes, name) =
        layout(ggml_type).ok_or_else(|| format!("unknown ggml type {ggml_type}"))?;
    if !n_elements.is_multiple_of(block) || bytes.len() != n_elements / block * block_bytes {
        return Err(format!(
            "{} bytes do not hold {n_elements} {name} values ({block_bytes} bytes per {block})",
            bytes.len()
        ));
    }
    let decode: fn(&[u8], &mut [f32]) = match ggml_type {
        0 => f32_block,
        1 => f16_block,
        30 => bf16_block,
        2 => q4_0,
        3 => q4_1,
        6 => q5_0,
        7 => q5_1,
        8 => q8_0,
        12 => q4_k,
        13 => q5_k,
        14 => q6_k,
        _ => {
            return Err(format!(
                "{name} is not implemented (F32, F16, BF16, Q4_0/1, Q5_0/1, Q8_0, Q4_K, Q5_K, Q6_K are)"
            ));
        }
    };
    let mut out = vec![0f32; n_elements];
    for (b, o) in bytes
        .chunks_exact(block_bytes)
        .zip(out.chunks_exact_mut(block))
    {
        decode(b, o);
    }
    Ok(out)
}

fn f16_at(b: &[u8], i: usize) -> f32 {
    half::f16::from_bits(u16::from_le_bytes([b[i], b[i + 1]])).to_f32()
}

fn f32_block(b: &[u8], out: &mut [f32]) {
    out[0] = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
}

fn f16_block(b: &[u8], out: &mut [f32]) {
    out[0] = f16_at(b, 0);
}

fn bf16_block(b: &[u8], out: &mut [f32]) {
    out[0] = half::bf16::from_bits(u16::from_le_bytes([b[0], b[1]])).to_f32();
}

// The 32-weight blocks keep weight j in the low nibble of byte j and weight j+16 in its high
// nibble; Q5 adds the fifth bit of weight j as bit j of the u32 `qh`.

/// Q4_0: f16 scale d, 16 bytes of nibbles; w = (q - 8)·d.
fn q4_0(b: &[u8], out: &mut [f32]) {
    let d = f16_at(b, 0);
    for (j, &q) in b[2..18].iter().enumerate() {
        out[j] = ((q & 0xF) as i32 - 8) as f32 * d;
        out[j + 16] = ((q >> 4) as i32 - 8) as f32 * d;
    }
}

/// Q4_1: f16 scale d, f16 minimum m, 16 bytes of nibbles; w = q·d + m.
fn q4_1(b: &[u8], out: &mut [f32]) {
    let (d, m) = (f16_at(b, 0), f16_at(b, 2));
    for (j, &q) in b[4..20].iter().enumerate() {
        out[j] = (q & 0xF) as f32 * d + m;
        out[j + 16] = (q >> 4) as f32 * d + m;
    }
}

/// The two 5-bit values of byte `j` of a Q5 block.
fn q5_pair(qh: u32, q: u8, j: usize) -> (u32, u32) {
    let lo = (q & 0xF) as u32 | (((qh >> j) & 1) << 4);
    let hi = (q >> 4) as u32 | (((qh >> (j + 16)) & 1) << 4);
    (lo, hi)
}

/// Q5_0: f16 d, u32 high bits, 16 bytes of nibbles; w = (q - 16)·d.
fn q5_0(b: &[u8], out: &mut [f32]) {
    let d = f16_at(b, 0);
    let qh = u32::from_le_bytes([b[2], b[3], b[4], b[5]]);
    for (j, &q) in b[6..22].iter().enumerate() {
        let (lo, hi) = q5_pair(qh, q, j);
        out[j] = (lo as i32 - 16) as f32 * d;
        out[j + 16] = (hi as i32 - 16) as f32 * d;
    }
}

/// Q5_1: f16 d, f16 m, u32 high bits, 16 bytes of nibbles; w = q·d + m.
fn q5_1(b: &[u8], out: &mut [f32]) {
    let (d, m) = (f16_at(b, 0), f16_at(b, 2));
    let qh = u32::from_le_bytes([b[4], b[5], b[6], b[7]]);
    for (j, &q) in b[8..24].iter().enumerate() {
        let (lo, hi) = q5_pair(qh, q, j);
        out[j] = lo as f32 * d + m;
        out[j + 16] = hi as f32 * d + m;
    }
}

/// Q8_0: f16 d, 32 signed bytes; w = q·d.
fn q8_0(b: &[u8], out: &mut [f32]) {
    let d = f16_at(b, 0);
    for (o, &q) in out.iter_mut().zip(&b[2..34]) {
        *o = q as i8 as f32 * d;
    }
}

/// Scale and minimum of sub-block `j` (of 8), six bits each, packed into 12 bytes: sub-blocks
/// 0–3 in the low six bits of bytes 0–3 / 4–7, sub-blocks 4–7 in the nibbles of bytes 8–11 plus
/// the top two bits of bytes 0–7 (ggml `get_scale_min_k4`).
fn scale_min_k4(j: usize, s: &[u8]) -> (f32, f32) {
    if j < 4 {
        ((s[j] & 63) as f32, (s[j + 4] & 63) as f32)
    } else {
        let sc = (s[j + 4] & 0xF) | ((s[j - 4] >> 6) << 4);
        let m = (s[j + 4] >> 4) | ((s[j] >> 6) << 4);
        (sc as f32, m as f32)
    }
}

/// Q4_K and Q5_K super-blocks of 256: f16 d, f16 dmin, 12 bytes of scales (and for Q5_K 32
/// bytes of fifth bits), then 128 bytes of nibbles. Each 64 weights share 32 bytes: the low
/// nibbles are sub-block 2c, the high ones 2c+1; w = d·scale·q - dmin·min.
fn k_quant(b: &[u8], qs: &[u8], qh: Option<&[u8]>, out: &mut [f32]) {
    let (d, dmin) = (f16_at(b, 0), f16_at(b, 2));
    for (c, q) in qs.chunks_exact(32).enumerate() {
        for nib in 0..2 {
            let sub = 2 * c + nib;
            let (sc, m) = scale_min_k4(sub, &b[4..16]);
            let (scale, min) = (d * sc, dmin * m);
            for (l, &byte) in q.iter().enumerate() {
                let mut v = (byte >> (4 * nib)) & 0xF;
                if let Some(qh) = qh {
                    v |= ((qh[l] >> sub) & 1) << 4;
                }
                out[64 * c + 32 * nib + l] = scale * v as f32 - min;
            }
        }
    }
}

fn q4_k(b: &[u8], out: &mut [f32]) {
    k_quant(b, &b[16..144], None, out);
}

fn q5_k(b: &[u8], out: &mut [f32]) {
    k_quant(b, &b[48..176], Some(&b[16..48]), out);
}

/// Q6_K super-block of 256: 128 bytes of low nibbles, 64 bytes of 2-bit high parts, 16 signed
/// scales (one per 16 weights), f16 d; w = d·scale·(q - 32). Each half of 128 weights uses 64
/// low-nibble bytes, 32 high-bit bytes and 8 scales.
fn q6_k(b: &[u8], out: &mut [f32]) {
    let d = f16_at(b, 208);
    for n in 0..2 {
        let ql = &b[64 * n..64 * n + 64];
        let qh = &b[128 + 32 * n..128 + 32 * n + 32];
        let sc = &b[192 + 8 * n..192 + 8 * n + 8];
        let o = &mut out[128 * n..128 * n + 128];
        for (l, &h) in qh.iter().enumerate() {
            let qs = [
                (ql[l] & 0xF) | ((h & 3) << 4),
                (ql[l + 32] & 0xF) | (((h >> 2) & 3) << 4),
                (ql[l] >> 4) | (((h >> 4) & 3) << 4),
                (ql[l + 32] >> 4) | ((h >> 6) << 4),
            ];
            for (k, &q) in qs.iter().enumerate() {
                let scale = d * (sc[l / 16 + 2 * k] as i8) as f32;
                o[l + 32 * k] = scale * (q as i32 - 32) as f32;
            }
        }
    }
}

/// Undo the row interleaving llama.cpp's converter applies to Llama's Q and K weights (and
/// biases): within each head, GGUF row `2i + j` is HF row `j·head_dim/2 + i`. Equivalently
/// reshape to (heads, head_dim/2, 2, cols), swap axes 1 and 2, reshape back.
fn unpermute_rows(w: &[f32], heads: usize, cols: usize) -> Vec<f32> {
    let head_dim = w.len() / cols / heads;
    let half = head_dim / 2;
    let mut out = vec![0f32; w.len()];
    for h in 0..heads {
        for i in 0..half {
            for j in 0..2 {
                let src = (h * head_dim + 2 * i + j) * cols;
                let dst = (h * head_dim + j * half + i) * cols;
                out[dst..dst + cols].copy_from_slice(&w[src..src + cols]);
            }
        }
    }
    out
}

/// The Hugging Face Llama/Qwen2 name of a llama.cpp tensor.
fn hf_tensor_name(gguf: &str) -> Option<String> {
    match gguf {
        "token_embd.weight" => return Some("model.embed_tokens.weight".into()),
        "output_norm.weight" => return Some("model.norm.weight".into()),
        "output.weight" => return Some("lm_head.weight".into()),
        _ => {}
    }
    let (layer, rest) = gguf.strip_prefix("blk.")?.split_once('.')?;
    let layer: usize = layer.parse().ok()?;
    let (part, suffix) = rest.split_once('.')?;
    let hf = match part {
        "attn_q" => "self_attn.q_proj",
        "attn_k" => "self_attn.k_proj",
        "attn_v" => "self_attn.v_proj",
        "attn_output" => "self_attn.o_proj",
        "ffn_gate" => "mlp.gate_proj",
        "ffn_up" => "mlp.up_proj",
        "ffn_down" => "mlp.down_proj",
        "attn_norm" => "input_layernorm",
        "ffn_norm" => "post_attention_layernorm",
        _ => return None,
    };
    matches!(suffix, "weight" | "bias").then(|| format!("model.layers.{layer}.{hf}.{suffix}"))
}

/// What [`import_gguf`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportSummary {
    pub tensors: usize,
    pub parameters: u64,
    /// Rows of the embedding: the config's `vocab_size`.
    pub vocab_size: usize,
    pub architecture: String,
}

/// The decoder's shape, from the `{arch}.*` metadata.
struct Hparams {
    layers: u64,
    hidden: u64,
    ffn: u64,
    heads: u64,
    kv_heads: u64,
    head_dim: u64,
    eps: f64,
    theta: f64,
    context: u64,
}

impl Hparams {
    fn read(file: &GgufFile, arch: &str) -> Result<Self, GgufError> {
        let key = |k: &str| format!("{arch}.{k}");
        let required = |k: &str| {
            file.meta_u64(&key(k))
                .and_then(|v| file.require(&key(k), v))
        };
        let hidden = required("embedding_length")?;
        let heads = required("attention.head_count")?;
        let kv_heads = file
            .meta_u64(&key("attention.head_count_kv"))?
            .unwrap_or(heads);
        if heads == 0 || kv_heads == 0 || !heads.is_multiple_of(kv_heads) {
            return Err(GgufError::format(
                &file.path,
                format!("{heads} attention heads do not group into {kv_heads} key/value heads"),
            ));
        }
        let head_dim = file
            .meta_u64(&key("attention.key_length"))?
            .unwrap_or(hidden / heads);
        let value_dim = file
            .meta_u64(&key("attention.value_length"))?
            .unwrap_or(head_dim);
        let rope_dim = file
            .meta_u64(&key("rope.dimension_count"))?
            .unwrap_or(head_dim);
        if value_dim != head_dim || rope_dim != head_dim || !head_dim.is_multiple_of(2) {
            return Err(GgufError::unsupported(
                &file.path,
                format!(
                    "head sizes key {head_dim}, value {value_dim}, rotary {rope_dim} (need equal, even)"
                ),
            ));
        }
        let eps_key = key("attention.layer_norm_rms_epsilon");
        Ok(Hparams {
            layers: required("block_count")?,
            hidden,
            ffn: required("feed_forward_length")?,
            heads,
            kv_heads,
            head_dim,
            eps: file.require(&eps_key, file.meta_f64(&eps_key)?)?,
            theta: file.meta_f64(&key("rope.freq_base"))?.unwrap_or(10_000.0),
            context: file.meta_u64(&key("context_length"))?.unwrap_or(2048),
        })
    }
}

/// `RoPE` frequency scaling from `{arch}.rope.scaling.*`, as HF `rope_scaling`.
fn rope_scaling(file: &GgufFile, arch: &str) -> Result<Option<Value>, GgufError> {
    // llama.cpp stores Llama 3.1's llama3-type scaling as this per-frequency tensor instead.
    if file.tensor("rope_freqs.weight").is_some() {
        return Err(GgufError::unsupported(
            &file.path,
            "RoPE scaling stored as per-frequency factors (`rope_freqs.weight`, Llama 3.1 style)",
        ));
    }
    let key = |k: &str| format!("{arch}.rope.scaling.{k}");
    let kind = file.meta_str(&key("type")).unwrap_or("none");
    let factor = file.meta_f64(&key("factor"))?;
    let original = file.meta_u64(&key("original_context_length"))?;
    Ok(match (kind, factor) {
        ("none", _) => None,
        ("linear", Some(f)) => Some(json!({"rope_type": "linear", "factor": f})),
        ("yarn", Some(f)) => {
            let mut s = json!({"rope_type": "yarn", "factor": f});
            if let Some(o) = original {
                s["original_max_position_embeddings"] = json!(o);
            }
            Some(s)
        }
        _ => {
            return Err(GgufError::unsupported(
                &file.path,
                format!("RoPE scaling `{kind}` with factor {factor:?}"),
            ));
        }
    })
}

/// llama.cpp token types (`llama_token_type`).
const TOKEN_CONTROL: i64 = 3;
const TOKEN_USER_DEFINED: i64 = 4;

/// The vocabulary and special tokens of `tokenizer.ggml.*`.
struct Vocab<'a> {
    tokens: Vec<&'a str>,
    types: Vec<i64>,
    bos: Option<usize>,
    eos: Option<usize>,
    pad: Option<usize>,
    unk: Option<usize>,
    /// EOS, then the end-of-turn and end-of-message tokens: all of them end generation.
    stop: Vec<usize>,
}

fn string_array<'a>(file: &'a GgufFile, key: &str) -> Result<Option<Vec<&'a str>>, GgufError> {
    let Some(value) = file.get(key) else {
        return Ok(None);
    };
    let bad = || {
        GgufError::format(
            &file.path,
            format!("metadata `{key}` is not an array of strings"),
        )
    };
    let items = value.as_array().ok_or_else(bad)?;
    items
        .iter()
        .map(|s| s.as_str().ok_or_else(bad))
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

impl<'a> Vocab<'a> {
    fn read(file: &'a GgufFile) -> Result<Self, GgufError> {
        let model = file.meta_str("tokenizer.ggml.model").unwrap_or("(none)");
        if model != "gpt2" {
            return Err(GgufError::unsupported(
                &file.path,
                format!(
                    "tokenizer `{model}`: only byte-level BPE (`gpt2`) converts to tokenizer.json"
                ),
            ));
        }
        let tokens = string_array(file, "tokenizer.ggml.tokens")?;
        let tokens = file.require("tokenizer.ggml.tokens", tokens)?;
        let types = match file.get("tokenizer.ggml.token_type") {
            None => vec![1; tokens.len()],
            Some(v) => v
                .as_array()
                .and_then(|a| a.iter().map(MetaValue::as_i64).collect::<Option<Vec<_>>>())
                .filter(|t| t.len() == tokens.len())
                .ok_or_else(|| {
                    GgufError::format(
                        &file.path,
                        "`tokenizer.ggml.token_type` is not one integer per token",
                    )
                })?,
        };
        let id = |name: &str| -> Result<Option<usize>, GgufError> {
            let key = format!("tokenizer.ggml.{name}_token_id");
            match file.meta_u64(&key)? {
                Some(id) if id >= tokens.len() as u64 => Err(GgufError::format(
                    &file.path,
                    format!(
                        "metadata `{key}` = {id} is past the {} tokens",
                        tokens.len()
                    ),
                )),
                id => Ok(id.map(|i| i as usize)),
            }
        };
        let (bos, eos, pad, unk) = (id("bos")?, id("eos")?, id("padding")?, id("unknown")?);
        let mut stop = Vec::new();
        for t in [eos, id("eot")?, id("eom")?].into_iter().flatten() {
            if !stop.contains(&t) {
                stop.push(t);
            }
        }
        Ok(Vocab {
            tokens,
            types,
            bos,
            eos,
            pad,
            unk,
            stop,
        })
    }

    /// Control tokens (special) and user-defined ones (not special): matched whole in the text.
    fn added(&self) -> impl Iterator<Item = (usize, &str, bool)> + '_ {
        self.tokens
            .iter()
            .zip(&self.types)
            .enumerate()
            .filter_map(|(id, (&token, &ty))| {
                matches!(ty, TOKEN_CONTROL | TOKEN_USER_DEFINED).then_some((
                    id,
                    token,
                    ty == TOKEN_CONTROL,
                ))
            })
    }
}

/// HF `pre_tokenizer` equivalent to the split llama.cpp applies for `tokenizer.ggml.pre`.
fn pre_tokenizer(pre: &str) -> Option<Value> {
    const LLAMA3: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
    const QWEN2: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
    let byte_level = |use_regex: bool| {
        json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true,
               "use_regex": use_regex})
    };
    let split = |regex: &str| {
        json!({"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": regex}, "behavior": "Isolated", "invert": false},
            byte_level(false)
        ]})
    };
    Some(match pre {
        // llama.cpp isolates each `\p{N}`, then applies the GPT-2 regex (SmolLM's own
        // tokenizer.json: Digits, then ByteLevel).
        "smollm" | "starcoder" | "refact" | "command-r" | "codeshell" | "exaone" | "minerva-7b" => {
            json!({"type": "Sequence", "pretokenizers": [
                {"type": "Digits", "individual_digits": true},
                byte_level(true)
            ]})
        }
        "default" | "gpt-2" | "gpt2" | "mpt" | "olmo" | "jais" => byte_level(true),
        "llama-bpe" | "llama3" | "llama-v3" | "smaug-bpe" | "falcon3" | "dbrx" => split(LLAMA3),
        "qwen2" | "deepseek-r1-qwen" => split(QWEN2),
        _ => return None,
    })
}

/// `tokenizer.json` (HF `tokenizers` format) for a byte-level BPE vocabulary.
fn tokenizer_json(file: &GgufFile, v: &Vocab<'_>) -> Result<Value, GgufError> {
    let pre = file.meta_str("tokenizer.ggml.pre").unwrap_or("default");
    let pre_tokenizer = pre_tokenizer(pre).ok_or_else(|| {
        GgufError::unsupported(
            &file.path,
            format!("pre-tokenizer `{pre}` (tokenizer.ggml.pre)"),
        )
    })?;
    let mut vocab = Map::new();
    for (id, &token) in v.tokens.iter().enumerate() {
        vocab.entry(token).or_insert(json!(id));
    }
    let merges = string_array(file, "tokenizer.ggml.merges")?;
    let merges = file.require("tokenizer.ggml.merges", merges)?;
    let mut pairs = Vec::with_capacity(merges.len());
    for m in merges {
        // Split at the first space after the first character, as llama.cpp does; byte-level
        // tokens spell a space `Ġ`, so this is the only space.
        let (a, b) = m
            .char_indices()
            .skip(1)
            .find(|&(_, c)| c == ' ')
            .map(|(i, _)| (&m[..i], &m[i + 1..]))
            .ok_or_else(|| {
                GgufError::format(&file.path, format!("merge `{m}` is not two tokens"))
            })?;
        // `tokenizers` refuses a merge whose parts or result are not in the vocabulary.
        let joined = format!("{a}{b}");
        for t in [a, b, joined.as_str()] {
            if !vocab.contains_key(t) {
                return Err(GgufError::format(
                    &file.path,
                    format!("merge `{m}` needs `{t}`, which is not in the vocabulary"),
                ));
            }
        }
        pairs.push(json!([a, b]));
    }
    let added: Vec<Value> = v
        .added()
        .map(|(id, token, special)| {
            json!({"id": id, "content": token, "single_word": false, "lstrip": false,
                   "rstrip": false, "normalized": false, "special": special})
        })
        .collect();
    let flag = |key: &str| file.get(key).and_then(MetaValue::as_bool) == Some(true);
    let prefix: Vec<usize> = v
        .bos
        .filter(|_| flag("tokenizer.ggml.add_bos_token"))
        .into_iter()
        .collect();
    let suffix: Vec<usize> = v
        .eos
        .filter(|_| flag("tokenizer.ggml.add_eos_token"))
        .into_iter()
        .collect();
    let post_processor = if prefix.is_empty() && suffix.is_empty() {
        json!({"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": false,
               "use_regex": true})
    } else {
        let part = |seq: &str, type_id: u32| -> Vec<Value> {
            let special =
                |&id: &usize| json!({"SpecialToken": {"id": v.tokens[id], "type_id": type_id}});
            prefix
                .iter()
                .map(special)
                .chain([json!({"Sequence": {"id": seq, "type_id": type_id}})])
                .chain(suffix.iter().map(special))
                .collect()
        };
        let mut pair = part("A", 0);
        pair.extend(part("B", 1));
        let special_tokens: Map<String, Value> = prefix
            .iter()
            .chain(&suffix)
            .map(|&id| {
                let token = v.tokens[id];
                (
                    token.to_string(),
                    json!({"id": token, "ids": [id], "tokens": [token]}),
                )
            })
            .collect();
        json!({"type": "TemplateProcessing", "single": part("A", 0), "pair": pair,
               "special_tokens": special_tokens})
    };
    Ok(json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": null,
        "pre_tokenizer": pre_tokenizer,
        "post_processor": post_processor,
        "decoder": {
            "type": "ByteLevel",
            "add_prefix_space": true,
            "trim_offsets": true,
            "use_regex": true
        },
        "model": {
            "type": "BPE",
            "dropout": null,
            "unk_token": null,
            "continuing_subword_prefix": null,
            "end_of_word_suffix": null,
            "fuse_unk": false,
            "byte_fallback": false,
            "ignore_merges": false,
            "vocab": vocab,
            "merges": pairs
        }
    }))
}

/// `tokenizer_config.json`: special tokens by string, chat template, BOS/EOS flags.
fn tokenizer_config(file: &GgufFile, v: &Vocab<'_>, context: u64) -> Value {
    let decoder: Map<String, Value> = v
        .added()
        .map(|(id, token, special)| {
            let entry = json!({"content": token, "lstrip": false, "normalized": false,
                               "rstrip": false, "single_word": false, "special": special});
            (id.to_string(), entry)
        })
        .collect();
    let mut config = json!({
        "added_tokens_decoder": decoder,
        "clean_up_tokenization_spaces": false,
        "model_max_length": context,
        // The generic fast tokenizer uses tokenizer.json as written.
        "tokenizer_class": "PreTrainedTokenizerFast"
    });
    if let Value::Object(map) = &mut config {
        for (key, id) in [
            ("bos_token", v.bos),
            ("eos_token", v.eos),
            ("pad_token", v.pad),
            ("unk_token", v.unk),
        ] {
            if let Some(id) = id {
                map.insert(key.into(), json!(v.tokens[id]));
            }
        }
        for (key, flag) in [
            ("add_bos_token", "tokenizer.ggml.add_bos_token"),
            ("add_eos_token", "tokenizer.ggml.add_eos_token"),
        ] {
            if let Some(b) = file.get(flag).and_then(MetaValue::as_bool) {
                map.insert(key.into(), json!(b));
            }
        }
        if let Some(template) = file.meta_str("tokenizer.chat_template") {
            map.insert("chat_template".into(), json!(template));
        }
    }
    config
}

/// One id as a number, several as a list (HF's `eos_token_id` convention).
fn ids_value(ids: &[usize]) -> Option<Value> {
    match ids {
        [] => None,
        [one] => Some(json!(one)),
        many => Some(json!(many)),
    }
}

/// Write through a temporary file in the same directory, then rename, so that a crash never
/// leaves a half-written file under the final name.
fn write_atomic(
    path: &Path,
    write: impl FnOnce(&Path) -> Result<(), GgufError>,
) -> Result<(), GgufError> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.partial"));
    if let Err(e) = write(&tmp) {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    std::fs::rename(tmp, path).map_err(|e| GgufError::io(path, e))
}

fn write_json(path: &Path, value: &Value, pretty: bool) -> Result<(), GgufError> {
    let text = if pretty {
        serde_json::to_string_pretty(value)
    } else {
        serde_json::to_string(value)
    }
    .map_err(|e| GgufError::format(path, e.to_string()))?;
    write_atomic(path, |tmp| {
        std::fs::write(tmp, text).map_err(|e| GgufError::io(tmp, e))
    })
}

fn safetensors_error(path: &Path, e: SafeTensorError) -> GgufError {
    match e {
        SafeTensorError::IoError(e) => GgufError::io(path, e),
        e => GgufError::format(path, format!("cannot write safetensors: {e}")),
    }
}

/// Dequantize every tensor to f32 under its HF name, un-permuting Q/K rows where llama.cpp
/// permuted them, and write `model.safetensors`. Returns the parameter count.
fn write_weights(
    file: &GgufFile,
    names: &[String],
    hp: &Hparams,
    permuted: bool,
    path: &Path,
) -> Result<u64, GgufError> {
    let mut tensors = Vec::with_capacity(names.len());
    let mut parameters = 0u64;
    for (info, name) in file.tensors.iter().zip(names) {
        let mut data = file.tensor_f32(info)?;
        let shape = info.shape();
        let heads = if info.name.contains(".attn_q.") {
            hp.heads
        } else if info.name.contains(".attn_k.") {
            hp.kv_heads
        } else {
            0
        };
        if permuted && heads > 0 {
            let rows = (heads * hp.head_dim) as usize;
            if shape[0] != rows {
                return Err(GgufError::format(
                    &file.path,
                    format!(
                        "tensor `{}` has {} rows; {heads} heads of {} need {rows}",
                        info.name, shape[0], hp.head_dim
                    ),
                ));
            }
            data = unpermute_rows(&data, heads as usize, data.len() / rows);
        }
        parameters += data.len() as u64;
        let bytes: Vec<u8> = data.iter().flat_map(|x| x.to_le_bytes()).collect();
        tensors.push((name.as_str(), shape, bytes));
    }
    let views = tensors
        .iter()
        .map(|(name, shape, bytes)| {
            TensorView::new(Dtype::F32, shape.clone(), bytes).map(|t| (*name, t))
        })
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| safetensors_error(path, e))?;
    let metadata = Some(HashMap::from([("format".to_string(), "pt".to_string())]));
    write_atomic(path, |tmp| {
        serialize_to_file(views, &metadata, tmp).map_err(|e| safetensors_error(tmp, e))
    })?;
    Ok(parameters)
}

/// Convert a `llama` or `qwen2` GGUF into a Hugging Face model directory: `model.safetensors`
/// (f32), `config.json`, `tokenizer.json`, `tokenizer_config.json`, `generation_config.json`.
/// Everything is checked before the first write; each file appears atomically, `config.json`
/// last, so a directory with a `config.json` is complete.
pub fn import_gguf(gguf: &Path, out_dir: &Path) -> Result<ImportSummary, GgufError> {
    let file = GgufFile::open(gguf)?;
    let arch = file
        .meta_str("general.architecture")
        .unwrap_or("(none)")
        .to_string();
    let (class, permuted) = match arch.as_str() {
        "llama" => ("LlamaForCausalLM", true),
        "qwen2" => ("Qwen2ForCausalLM", false),
        other => {
            return Err(GgufError::unsupported(
                gguf,
                format!("architecture `{other}` (llama and qwen2 import)"),
            ));
        }
    };
    let hp = Hparams::read(&file, &arch)?;
    let vocab = Vocab::read(&file)?;
    let embed = file
        .tensor("token_embd.weight")
        .ok_or_else(|| GgufError::format(gguf, "no tensor `token_embd.weight`"))?;
    let vocab_size = embed.dims.get(1).map_or(0, |&n| n as usize);
    if embed.dims.len() != 2 || embed.dims[0] != hp.hidden || vocab.tokens.len() > vocab_size {
        return Err(GgufError::format(
            gguf,
            format!(
                "token_embd.weight has dims {:?}; expected [{}, at least {} tokens]",
                embed.dims,
                hp.hidden,
                vocab.tokens.len()
            ),
        ));
    }
    let names = file
        .tensors
        .iter()
        .map(|t| {
            hf_tensor_name(&t.name).ok_or_else(|| {
                GgufError::unsupported(
                    gguf,
                    format!(
                        "tensor `{}` has no Hugging Face {class} counterpart",
                        t.name
                    ),
                )
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let tokenizer = tokenizer_json(&file, &vocab)?;
    let tokenizer_cfg = tokenizer_config(&file, &vocab, hp.context);
    let mut generation = json!({});
    let mut config = json!({
        "architectures": [class],
        "model_type": arch,
        "hidden_size": hp.hidden,
        "intermediate_size": hp.ffn,
        "num_hidden_layers": hp.layers,
        "num_attention_heads": hp.heads,
        "num_key_value_heads": hp.kv_heads,
        "head_dim": hp.head_dim,
        "rms_norm_eps": hp.eps,
        "rope_theta": hp.theta,
        "max_position_embeddings": hp.context,
        "vocab_size": vocab_size,
        "tie_word_embeddings": file.tensor("output.weight").is_none(),
        "hidden_act": "silu",
        "torch_dtype": "float32"
    });
    if let Some(scaling) = rope_scaling(&file, &arch)? {
        config["rope_scaling"] = scaling;
    }
    if arch == "llama" {
        let bias = file
            .tensors
            .iter()
            .any(|t| t.name.ends_with(".attn_q.bias"));
        config["attention_bias"] = json!(bias);
    }
    for (key, value) in [
        ("bos_token_id", vocab.bos.map(|id| json!(id))),
        ("eos_token_id", ids_value(&vocab.stop)),
        ("pad_token_id", vocab.pad.map(|id| json!(id))),
    ] {
        if let Some(value) = value {
            config[key] = value.clone();
            generation[key] = value;
        }
    }

    std::fs::create_dir_all(out_dir).map_err(|e| GgufError::io(out_dir, e))?;
    // A config.json from an earlier import would make a half-replaced directory look complete.
    let config_path = out_dir.join("config.json");
    if let Err(e) = std::fs::remove_file(&config_path)
        && e.kind() != std::io::ErrorKind::NotFound
    {
        return Err(GgufError::io(&config_path, e));
    }
    write_json(&out_dir.join("tokenizer.json"), &tokenizer, false)?;
    write_json(&out_dir.join("tokenizer_config.json"), &tokenizer_cfg, true)?;
    write_json(&out_dir.join("generation_config.json"), &generation, true)?;
    let parameters = write_weights(
        &file,
        &names,
        &hp,
        permuted,
        &out_dir.join("model.safetensors"),
    )?;
    write_json(&config_path, &config, true)?;
    Ok(ImportSummary {
        tensors: names.len(),
        parameters,
        vocab_size,
        architecture: arch,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f16_bytes(x: f32) -> [u8; 2] {
        half::f16::from_f32(x).to_bits().to_le_bytes()
    }

    /// Byte j holds weight j = j (low nibble) and weight j+16 = 15 - j (high nibble).
    fn nibbles() -> Vec<u8> {
        (0..16u8).map(|j| j | ((15 - j) << 4)).collect()
    }

    fn block(parts: &[&[u8]]) -> Vec<u8> {
        parts.concat()
    }

    #[test]
    fn scalar_types() {
        let f32s: Vec<u8> = [1.5f32, -2.0]
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .collect();
        assert_eq!(dequantize(0, &f32s, 2).unwrap(), [1.5, -2.0]);
        let f16s = block(&[&f16_bytes(1.0), &f16_bytes(-2.5), &f16_bytes(65504.0)]);
        assert_eq!(dequantize(1, &f16s, 3).unwrap(), [1.0, -2.5, 65504.0]);
        let bf16s = block(&[&0x3FC0u16.to_le_bytes(), &0xC020u16.to_le_bytes()]);
        assert_eq!(dequantize(30, &bf16s, 2).unwrap(), [1.5, -2.5]);
    }

    #[test]
    fn q4_0_and_q4_1() {
        // Q4_0, d = 0.5: w = (q - 8)·d.
        let w = dequantize(2, &block(&[&f16_bytes(0.5), &nibbles()]), 32).unwrap();
        assert_eq!(
            [w[0], w[9], w[15], w[16], w[31]],
            [-4.0, 0.5, 3.5, 3.5, -4.0]
        );
        // Q4_1, d = 0.5, m = -1: w = q·d + m.
        let w = dequantize(
            3,
            &block(&[&f16_bytes(0.5), &f16_bytes(-1.0), &nibbles()]),
            32,
        )
        .unwrap();
        assert_eq!(
            [w[0], w[3], w[15], w[16], w[31]],
            [-1.0, 0.5, 6.5, 6.5, -1.0]
        );
    }

    #[test]
    fn q5_0_and_q5_1() {
        // Q5_0, d = 1: fifth bits for weights 0 and 20; w = q - 16.
        let qh = (1u32 | (1 << 20)).to_le_bytes();
        let w = dequantize(6, &block(&[&f16_bytes(1.0), &qh, &nibbles()]), 32).unwrap();
        assert_eq!(
            [w[0], w[1], w[15], w[16], w[20], w[31]],
            [0.0, -15.0, -1.0, -1.0, 11.0, -16.0]
        );
        // Q5_1, d = 2, m = 0.5: fifth bit for weight 31 only.
        let qh = (1u32 << 31).to_le_bytes();
        let w = dequantize(
            7,
            &block(&[&f16_bytes(2.0), &f16_bytes(0.5), &qh, &nibbles()]),
            32,
        )
        .unwrap();
        assert_eq!([w[0], w[5], w[16], w[31]], [0.5, 10.5, 30.5, 32.5]);
    }

    #[test]
    fn q8_0() {
        let qs: Vec<u8> = (0..32).map(|j: i8| (j - 16) as u8).collect();
        let w = dequantize(8, &block(&[&f16_bytes(0.25), &qs]), 32).unwrap();
        assert_eq!([w[0], w[16], w[31]], [-4.0, 0.0, 3.75]);
    }

    /// Sub-block scales 1, 2, 3, 4, 21, 6, 7, 8 and minimums 0, 1, 0, 1, 2, 0, 3, 0, packed as
    /// `get_scale_min_k4` reads them: 21 = 5 in byte 8's low nibble + 16 from byte 0's bit 6.
    const K_SCALES: [u8; 12] = [1 | 0x40, 2, 3, 4, 0, 1, 0, 1, 0x25, 0x06, 0x37, 0x08];
    const K_SC: [f32; 8] = [1.0, 2.0, 3.0, 4.0, 21.0, 6.0, 7.0, 8.0];
    const K_MIN: [f32; 8] = [0.0, 1.0, 0.0, 1.0, 2.0, 0.0, 3.0, 0.0];

    /// d = 1, dmin = 0.5; weight 64c + 32h + l belongs to sub-block 2c + h.
    fn k_expected(fifth_bits: bool) -> Vec<f32> {
        let mut out = Vec::new();
        for (sub, (&sc, &min)) in K_SC.iter().zip(&K_MIN).enumerate() {
            for l in 0..32 {
                let mut q = if sub.is_multiple_of(2) {
                    l % 16
                } else {
                    15 - l % 16
                };
                if fifth_bits && (sub == 0 || sub == 2) && l % 2 == 0 {
                    q += 16;
                }
                out.push(sc * q as f32 - 0.5 * min);
            }
        }
        out
    }

    #[test]
    fn q4_k_and_q5_k() {
        let qs: Vec<u8> = (0..4)
            .flat_map(|_| (0..32u8).map(|l| (l % 16) | ((15 - l % 16) << 4)))
            .collect();
        let w = dequantize(
            12,
            &block(&[&f16_bytes(1.0), &f16_bytes(0.5), &K_SCALES, &qs]),
            256,
        )
        .unwrap();
        assert_eq!(w, k_expected(false));
        assert_eq!([w[0], w[33], w[133], w[224]], [0.0, 27.5, 104.0, 120.0]);
        // Q5_K: fifth bits 0 and 2 set in even bytes, so sub-blocks 0 and 2 gain 16 at even l.
        let qh: Vec<u8> = (0..32)
            .map(|l| if l % 2 == 0 { 0b101 } else { 0 })
            .collect();
        let w = dequantize(
            13,
            &block(&[&f16_bytes(1.0), &f16_bytes(0.5), &K_SCALES, &qh, &qs]),
            256,
        )
        .unwrap();
        assert_eq!(w, k_expected(true));
        assert_eq!([w[0], w[1], w[66]], [16.0, 1.0, 54.0]);
    }

    #[test]
    fn q6_k() {
        let ql: Vec<u8> = (0..128).collect();
        // Every high-bit byte is 0b11_10_01_00: the 2-bit part of quarter k of each half is k.
        let qh = [0xE4u8; 64];
        let sc: Vec<u8> = [1i8, -1, 2, -2, 3, -3, 4, -4, 5, -5, 6, -6, 7, -7, 8, -8]
            .iter()
            .map(|&s| s as u8)
            .collect();
        let w = dequantize(14, &block(&[&ql, &qh, &sc, &f16_bytes(0.5)]), 256).unwrap();
        for (k, &got) in w.iter().enumerate() {
            let (half, quarter, l) = (k / 128, k % 128 / 32, k % 32);
            let byte = ql[64 * half + l + 32 * (quarter % 2)];
            let low = if quarter < 2 { byte & 0xF } else { byte >> 4 };
            let q = (low | ((quarter as u8) << 4)) as f32 - 32.0;
            let scale = (sc[8 * half + l / 16 + 2 * quarter] as i8) as f32;
            assert_eq!(got, 0.5 * scale * q, "weight {k}");
        }
        assert_eq!([w[0], w[32], w[81], w[255]], [-16.0, -16.0, -1.5, -92.0]);
    }

    #[test]
    fn dequantize_rejects_bad_input() {
        assert!(dequantize(2, &[0; 17], 32).unwrap_err().contains("Q4_0"));
        assert!(
            dequantize(10, &[0; 84], 256)
                .unwrap_err()
                .contains("Q2_K is not implemented")
        );
        assert!(
            dequantize(99, &[], 0)
                .unwrap_err()
                .contains("unknown ggml type 99")
        );
    }

    /// llama.cpp's `permute` (convert_hf_to_gguf.py): reshape(heads, 2, head_dim/2, cols), swap
    /// axes 1 and 2: HF row (h, j, i) becomes GGUF row (h, i, j).
    fn permute_rows(w: &[f32], heads: usize, cols: usize) -> Vec<f32> {
        let head_dim = w.len() / cols / heads;
        let half = head_dim / 2;
        let mut out = vec![0f32; w.len()];
        for h in 0..heads {
            for j in 0..2 {
                for i in 0..half {
                    let src = (h * head_dim + j * half + i) * cols;
                    let dst = (h * head_dim + 2 * i + j) * cols;
                    out[dst..dst + cols].copy_from_slice(&w[src..src + cols]);
                }
            }
        }
        out
    }

    #[test]
    fn unpermute_known_rows() {
        // One head of 6 rows: llama.cpp interleaves the halves of the rotary pairs.
        let gguf = [0.0, 3.0, 1.0, 4.0, 2.0, 5.0];
        assert_eq!(permute_rows(&[0.0, 1.0, 2.0, 3.0, 4.0, 5.0], 1, 1), gguf);
        assert_eq!(unpermute_rows(&gguf, 1, 1), [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]);
    }

    #[test]
    fn unpermute_inverts_permute() {
        // Two heads of 8 rows, 3 columns; with head_dim/2 ≠ 2 the two directions differ.
        let w: Vec<f32> = (0..48).map(|x| x as f32).collect();
        let permuted = permute_rows(&w, 2, 3);
        assert_ne!(permuted, w);
        assert_ne!(unpermute_rows(&w, 2, 3), permuted);
        assert_eq!(unpermute_rows(&permuted, 2, 3), w);
    }

    #[test]
    fn tensor_names() {
        assert_eq!(
            hf_tensor_name("token_embd.weight").unwrap(),
            "model.embed_tokens.weight"
        );
        assert_eq!(
            hf_tensor_name("blk.12.attn_q.bias").unwrap(),
            "model.layers.12.self_attn.q_proj.bias"
        );
        assert_eq!(
            hf_tensor_name("blk.0.ffn_norm.weight").unwrap(),
            "model.layers.0.post_attention_layernorm.weight"
        );
        assert_eq!(hf_tensor_name("output.weight").unwrap(), "lm_head.weight");
        assert!(hf_tensor_name("rope_freqs.weight").is_none());
        assert!(hf_tensor_name("blk.x.attn_q.weight").is_none());
    }

    fn put_str(buf: &mut Vec<u8>, s: &str) {
        buf.extend((s.len() as u64).to_le_bytes());
        buf.extend(s.as_bytes());
    }

    /// Builds GGUF v3 files: metadata, then tensors at 32-byte aligned offsets.
    #[derive(Default)]
    struct Builder {
        kv: Vec<u8>,
        n_kv: u64,
        infos: Vec<u8>,
        n_tensors: u64,
        data: Vec<u8>,
    }

    impl Builder {
        fn kv(&mut self, key: &str, ty: u32, value: &[u8]) -> &mut Self {
            put_str(&mut self.kv, key);
            self.kv.extend(ty.to_le_bytes());
            self.kv.extend(value);
            self.n_kv += 1;
            self
        }

        fn str(&mut self, key: &str, value: &str) -> &mut Self {
            let mut b = Vec::new();
            put_str(&mut b, value);
            self.kv(key, 8, &b)
        }

        fn u32(&mut self, key: &str, value: u32) -> &mut Self {
            self.kv(key, 4, &value.to_le_bytes())
        }

        fn f32(&mut self, key: &str, value: f32) -> &mut Self {
            self.kv(key, 6, &value.to_le_bytes())
        }

        fn strs(&mut self, key: &str, values: &[&str]) -> &mut Self {
            let mut b = 8u32.to_le_bytes().to_vec();
            b.extend((values.len() as u64).to_le_bytes());
            values.iter().for_each(|v| put_str(&mut b, v));
            self.kv(key, 9, &b)
        }

        fn i32s(&mut self, key: &str, values: &[i32]) -> &mut Self {
            let mut b = 5u32.to_le_bytes().to_vec();
            b.extend((values.len() as u64).to_le_bytes());
            values.iter().for_each(|v| b.extend(v.to_le_bytes()));
            self.kv(key, 9, &b)
        }

        fn raw_tensor(&mut self, name: &str, dims: &[u64], ty: u32, bytes: &[u8]) -> &mut Self {
            put_str(&mut self.infos, name);
            self.infos.extend((dims.len() as u32).to_le_bytes());
            dims.iter().for_each(|d| self.infos.extend(d.to_le_bytes()));
            self.infos.extend(ty.to_le_bytes());
            self.infos.extend((self.data.len() as u64).to_le_bytes());
            self.data.extend(bytes);
            while !self.data.len().is_multiple_of(32) {
                self.data.push(0);
            }
            self.n_tensors += 1;
            self
        }

        /// An F32 tensor holding 0, 1, 2, … in GGUF order.
        fn tensor(&mut self, name: &str, dims: &[u64]) -> &mut Self {
            let n: u64 = dims.iter().product();
            let bytes: Vec<u8> = (0..n).flat_map(|i| (i as f32).to_le_bytes()).collect();
            self.raw_tensor(name, dims, 0, &bytes)
        }

        fn bytes(&self) -> Vec<u8> {
            let mut out = b"GGUF".to_vec();
            out.extend(3u32.to_le_bytes());
            out.extend(self.n_tensors.to_le_bytes());
            out.extend(self.n_kv.to_le_bytes());
            out.extend(&self.kv);
            out.extend(&self.infos);
            while !out.len().is_multiple_of(32) {
                out.push(0);
            }
            out.extend(&self.data);
            out
        }
    }

    fn temp_path(name: &str) -> PathBuf {
        std::env::temp_dir().join(format!("spar-gguf-{}-{name}", std::process::id()))
    }

    fn write_temp(name: &str, bytes: &[u8]) -> PathBuf {
        let path = temp_path(name);
        std::fs::write(&path, bytes).unwrap();
        path
    }

    /// Three metadata entries, a tiny vocabulary and one 2×4 F32 tensor that ends the file.
    fn small_file() -> Vec<u8> {
        Builder::default()
            .str("general.architecture", "llama")
            .u32("llama.block_count", 1)
            .f32("llama.attention.layer_norm_rms_epsilon", 1e-5)
            .strs("tokenizer.ggml.tokens", &["<s>", "a", "b", "ab"])
            .tensor("w", &[4, 2])
            .bytes()
    }

    fn assert_one_line_naming(err: &GgufError, path: &Path) {
        let msg = err.to_string();
        assert!(msg.starts_with(&path.display().to_string()), "{msg}");
        assert!(!msg.contains('\n'), "{msg}");
    }

    #[test]
    fn parses_a_synthetic_file() {
        let path = write_temp("small.gguf", &small_file());
        let f = GgufFile::open(&path).unwrap();
        assert_eq!(f.version, 3);
        assert_eq!(
            f.get("general.architecture").and_then(MetaValue::as_str),
            Some("llama")
        );
        assert_eq!(
            f.get("llama.block_count").and_then(MetaValue::as_u64),
            Some(1)
        );
        assert_eq!(
            f.get("llama.attention.layer_norm_rms_epsilon")
                .and_then(MetaValue::as_f64),
            Some(1e-5)
        );
        let tokens = f
            .get("tokenizer.ggml.tokens")
            .and_then(MetaValue::as_array)
            .unwrap();
        assert_eq!(tokens.len(), 4);
        assert_eq!(tokens[3], MetaValue::Str("ab".into()));
        let t = f.tensor("w").unwrap();
        assert_eq!(t.dims, [4, 2]);
        assert_eq!(t.shape(), [2, 4]);
        assert_eq!(t.ggml_type, 0);
        assert_eq!(
            f.tensor_f32(t).unwrap(),
            [0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0]
        );
        std::fs::remove_file(path).unwrap();
    }

    #[test]
    fn every_truncation_is_a_one_line_error() {
        let bytes = small_file();
        let path = temp_path("truncated.gguf");
        for cut in 0..bytes.len() {
            std::fs::write(&path, &bytes[..cut]).unwrap();
            let Err(err) = GgufFile::open(&path) else {
                panic!("a file cut at {cut} of {} bytes parsed", bytes.len());
            };
            assert_one_line_naming(&err, &path);
        }
        std::fs::remove_file(path).unwrap();
    }

    #[test]
    fn bad_magic_and_versions() {
        let mut bytes = small_file();
        bytes[3] = b'X';
        let path = write_temp("magic.gguf", &bytes);
        let err = GgufFile::open(&path).unwrap_err();
        assert!(err.to_string().contains("not a GGUF file"), "{err}");
        assert_one_line_naming(&err, &path);
        for (version, expect) in [
            (1u32, "version 1"),
            (7, "version 7"),
            (3 << 24, "big-endian"),
        ] {
            let mut bytes = small_file();
            bytes[4..8].copy_from_slice(&version.to_le_bytes());
            std::fs::write(&path, bytes).unwrap();
            let err = GgufFile::open(&path).unwrap_err();
            assert!(
                matches!(err, GgufError::Unsupported { .. }) && err.to_string().contains(expect),
                "{err}"
            );
        }
        std::fs::remove_file(path).unwrap();
    }

    #[test]
    fn unsupported_tensor_type_names_tensor_and_type() {
        let bytes = Builder::default()
            .raw_tensor("blk.0.attn_q.weight", &[256], 10, &[0; 84])
            .bytes();
        let path = write_temp("q2k.gguf", &bytes);
        let f = GgufFile::open(&path).unwrap();
        let err = f.tensor_f32(&f.tensors[0]).unwrap_err();
        assert!(matches!(err, GgufError::Unsupported { .. }), "{err}");
        assert!(
            err.to_string()
                .contains("`blk.0.attn_q.weight`: Q2_K is not implemented"),
            "{err}"
        );
        std::fs::remove_file(path).unwrap();
    }

    /// A one-layer Llama: hidden 8, 2 heads of 4, 1 KV head, FFN 16, a 6-token byte-level vocab.
    fn tiny_llama(tokenizer_model: &str) -> Vec<u8> {
        let mut b = Builder::default();
        b.str("general.architecture", "llama")
            .u32("llama.block_count", 1)
            .u32("llama.context_length", 64)
            .u32("llama.embedding_length", 8)
            .u32("llama.feed_forward_length", 16)
            .u32("llama.attention.head_count", 2)
            .u32("llama.attention.head_count_kv", 1)
            .u32("llama.attention.key_length", 4)
            .f32("llama.rope.freq_base", 10000.0)
            .f32("llama.attention.layer_norm_rms_epsilon", 1e-5)
            .str("tokenizer.ggml.model", tokenizer_model)
            .str("tokenizer.ggml.pre", "smollm")
            .strs(
                "tokenizer.ggml.tokens",
                &["<|end|>", "a", "b", "ab", "Ġ", "Ġa"],
            )
            .i32s("tokenizer.ggml.token_type", &[3, 1, 1, 1, 1, 1])
            .strs("tokenizer.ggml.merges", &["a b", "Ġ a"])
            .u32("tokenizer.ggml.eos_token_id", 0)
            .str("tokenizer.chat_template", "{{ messages }}");
        b.tensor("token_embd.weight", &[8, 6])
            .tensor("output_norm.weight", &[8])
            .tensor("blk.0.attn_norm.weight", &[8])
            .tensor("blk.0.attn_q.weight", &[8, 8])
            .tensor("blk.0.attn_k.weight", &[8, 4])
            .tensor("blk.0.attn_v.weight", &[8, 4])
            .tensor("blk.0.attn_output.weight", &[8, 8])
            .tensor("blk.0.ffn_norm.weight", &[8])
            .tensor("blk.0.ffn_gate.weight", &[8, 16])
            .tensor("blk.0.ffn_up.weight", &[8, 16])
            .tensor("blk.0.ffn_down.weight", &[16, 8]);
        b.bytes()
    }

    fn read_json(path: &Path) -> Value {
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
    }

    #[test]
    fn imports_a_tiny_llama() {
        let gguf = write_temp("tiny.gguf", &tiny_llama("gpt2"));
        let out = temp_path("tiny-model");
        let summary = import_gguf(&gguf, &out).unwrap();
        assert_eq!(summary.tensors, 11);
        assert_eq!(
            summary.parameters,
            48 + 8 + 8 + 64 + 32 + 32 + 64 + 8 + 3 * 128
        );
        assert_eq!(
            (summary.vocab_size, summary.architecture.as_str()),
            (6, "llama")
        );
        let mut files: Vec<String> = std::fs::read_dir(&out)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        files.sort();
        let expected = [
            "config.json",
            "generation_config.json",
            "model.safetensors",
            "tokenizer.json",
            "tokenizer_config.json",
        ];
        assert_eq!(files, expected);

        let config = read_json(&out.join("config.json"));
        assert_eq!(config["architectures"], json!(["LlamaForCausalLM"]));
        assert_eq!(config["num_key_value_heads"], 1);
        assert_eq!(config["head_dim"], 4);
        assert_eq!(config["rms_norm_eps"], 1e-5);
        assert_eq!(config["tie_word_embeddings"], true);
        assert_eq!(config["eos_token_id"], 0);
        assert_eq!(
            read_json(&out.join("generation_config.json")),
            json!({"eos_token_id": 0})
        );

        let bytes = std::fs::read(out.join("model.safetensors")).unwrap();
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        let rows = |name: &str| -> Vec<Vec<f32>> {
            let t = st.tensor(name).unwrap();
            let cols = t.shape()[1];
            let v: Vec<f32> = t
                .data()
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
            v.chunks(cols).map(<[f32]>::to_vec).collect()
        };
        let row = |r: usize| (0..8).map(|c| (8 * r + c) as f32).collect::<Vec<f32>>();
        // One KV head of 4: GGUF rows 0, 1, 2, 3 hold HF rows 0, 2, 1, 3.
        assert_eq!(
            rows("model.layers.0.self_attn.k_proj.weight"),
            [row(0), row(2), row(1), row(3)]
        );
        assert_eq!(
            rows("model.layers.0.self_attn.v_proj.weight"),
            [row(0), row(1), row(2), row(3)]
        );
        assert_eq!(
            rows("model.layers.0.self_attn.q_proj.weight")[4..],
            [row(4), row(6), row(5), row(7)]
        );
        assert_eq!(
            st.tensor("model.embed_tokens.weight").unwrap().shape(),
            [6, 8]
        );
        assert!(st.tensor("lm_head.weight").is_err());

        let tok = read_json(&out.join("tokenizer.json"));
        assert_eq!(tok["model"]["merges"], json!([["a", "b"], ["Ġ", "a"]]));
        assert_eq!(tok["model"]["vocab"]["Ġa"], 5);
        assert_eq!(tok["added_tokens"][0]["content"], "<|end|>");
        assert_eq!(tok["added_tokens"][0]["special"], true);
        assert_eq!(tok["pre_tokenizer"]["pretokenizers"][0]["type"], "Digits");
        let tc = read_json(&out.join("tokenizer_config.json"));
        assert_eq!(
            (tc["eos_token"].as_str(), tc["chat_template"].as_str()),
            (Some("<|end|>"), Some("{{ messages }}"))
        );
        assert_eq!(tc["added_tokens_decoder"]["0"]["special"], true);

        std::fs::remove_dir_all(out).unwrap();
        std::fs::remove_file(gguf).unwrap();
    }

    #[test]
    fn refuses_sentencepiece_before_writing() {
        let gguf = write_temp("spm.gguf", &tiny_llama("llama"));
        let out = temp_path("spm-model");
        let err = import_gguf(&gguf, &out).unwrap_err();
        assert!(
            matches!(err, GgufError::Unsupported { .. })
                && err.to_string().contains("tokenizer `llama`"),
            "{err}"
        );
        assert!(!out.exists());
        std::fs::remove_file(gguf).unwrap();
    }
}
