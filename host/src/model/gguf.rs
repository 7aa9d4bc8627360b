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
                let mut items = Vec::with_capacity(n as usize);
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
                    format!("unknown metadata value type {ty} (or arrays nested too deep) before offset {}", self.pos),
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
            1 => return Err(GgufError::unsupported(path, "GGUF version 1 (re-convert it with a current llama.cpp)")),
            v if matches!(v.swap_bytes(), 2 | 3) => {
                return Err(GgufError::unsupported(path, "big-endian GGUF"));
            }
            v => return Err(GgufError::unsupported(path, format!("GGUF version {v} (supported: 2, 3)"))),
        }
        // Every tensor info and key/value takes well over 8 bytes.
        let n_tensors = r.u64()?;
        let n_kv = r.u64()?;
        if n_tensors > len / 8 || n_kv > len / 8 {
            return Err(GgufError::format(
                path,
                format!("{n_tensors} tensors and {n_kv} metadata entries cannot fit in {len} bytes"),
            ));
        }
        let mut metadata = BTreeMap::new();
        for _ in 0..n_kv {
            let key = r.name("metadata key")?;
            let ty = r.u32()?;
            let value = r.value(ty, 0)?;
            if metadata.insert(key.clone(), value).is_some() {
                return Err(GgufError::format(path, format!("metadata key `{key}` appears twice")));
            }
        }
        let mut tensors = Vec::with_capacity(n_tensors as usize);
        for _ in 0..n_tensors {
            let name = r.name("tensor name")?;
            let n_dims = r.u32()?;
            if !(1..=4).contains(&n_dims) {
                return Err(GgufError::format(
                    path,
                    format!("tensor `{name}` has {n_dims} dimensions (GGUF allows 1 to 4)"),
                ));
            }
            let dims = (0..n_dims).map(|_| r.u64()).collect::<Result<Vec<_>, _>>()?;
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
                GgufError::format(path, format!("general.alignment {v:?} is not a power of two"))
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
            let err = |msg: String| GgufError::format(&self.path, format!("tensor `{}`: {msg}", t.name));
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
            if t.dims[0] % block as u64 != 0 {
                return Err(err(format!("rows of {} are not whole {type_name} blocks of {block}", t.dims[0])));
            }
            let size = t
                .n_elements()
                .and_then(|n| (n / block as u64).checked_mul(block_bytes as u64))
                .ok_or_else(|| err(format!("dims {:?} overflow", t.dims)))?;
            if t.offset % alignment != 0 {
                return Err(err(format!("offset {} is not a multiple of the alignment {alignment}", t.offset)));
            }
            let end = self.data_offset.checked_add(t.offset).and_then(|o| o.checked_add(size));
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
        let unsupported = |msg: String| GgufError::unsupported(&self.path, format!("tensor `{}`: {msg}", info.name));
        let (block, block_bytes, _) = layout(info.ggml_type)
            .ok_or_else(|| unsupported(format!("unknown ggml type {}", info.ggml_type)))?;
        let n = info
            .n_elements()
            .and_then(|n| usize::try_from(n).ok())
            .ok_or_else(|| GgufError::format(&self.path, format!("tensor `{}` is too large", info.name)))?;
        let mut bytes = vec![0u8; n / block * block_bytes];
        let mut f = File::open(&self.path).map_err(|e| GgufError::io(&self.path, e))?;
        f.seek(SeekFrom::Start(self.data_offset + info.offset))
            .and_then(|_| f.read_exact(&mut bytes))
            .map_err(|e| GgufError::io(&self.path, e))?;
        dequantize(info.ggml_type, &bytes, n).map_err(unsupported)
    }

    fn meta_u64(&self, key: &str) -> Result<Option<u64>, GgufError> {
        self.get(key)
            .map(|v| {
                v.as_u64().ok_or_else(|| {
                    GgufError::format(&self.path, format!("metadata `{key}` is {}, expected a non-negative integer", v.kind()))
                })
            })
            .transpose()
    }

    fn meta_f64(&self, key: &str) -> Result<Option<f64>, GgufError> {
        self.get(key)
            .map(|v| {
                v.as_f64().ok_or_else(|| {
                    GgufError::format(&self.path, format!("metadata `{key}` is {}, expected a number", v.kind()))
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
    if n_elements % block != 0 || bytes.len() != n_elements / block * block_bytes {
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
                "{name} is not implemented (F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q5_K, Q6_K are)"
            ));
        }
    };
    let mut out = vec![0f32; n_elements];
    for (b, o) in bytes.chunks_exact(block_bytes).zip(out.chunks_exact_mut(block)) {
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
    let lo = (q & 0xF) as u32 | ((qh >> j) & 1) << 4;
    let hi = (q >> 4) as u32 | ((qh >> (j + 16)) & 1) << 4;
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
    for c in 0..4 {
        let q = &qs[32 * c..32 * c + 32];
        for nib in 0..2 {
            let sub = 2 * c + nib;
            let (sc, m) = scale_min_k4(sub, &b[4..16]);
            let (scale, min) = (d * sc, dmin * m);
            for l in 0..32 {
                let mut v = (q[l] >> (4 * nib)) & 0xF;
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
        for l in 0..32 {
            let h = qh[l];
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
