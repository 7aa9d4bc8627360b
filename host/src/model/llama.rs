//! The Llama-family decoder (Llama 2/3, Mistral, Qwen2, SmolLM2) in libtorch: RMSNorm,
//! RoPE (with llama3 scaling), grouped-query attention, SwiGLU, tied or untied embeddings.
//! Parameter names follow the HF checkpoint keys, so loading and saving are name-for-name.

use std::path::Path;

use tch::{Device, Kind, Tensor, nn};

use super::gemm::{self, Packed};
use super::{ModelConfig, ModelError};

struct Linear {
    w: Tensor,
    b: Option<Tensor>,
}

impl Linear {
    fn new(p: nn::Path, inp: usize, out: usize, bias: bool) -> Self {
        let init = nn::Init::Randn {
            mean: 0.0,
            stdev: 0.02,
        };
        Self {
            w: p.var("weight", &[out as i64, inp as i64], init),
            b: bias.then(|| p.var("bias", &[out as i64], nn::Init::Const(0.0))),
        }
    }

    fn forward(&self, xs: &Tensor) -> Tensor {
        xs.linear(&self.w, self.b.as_ref())
    }
}

/// RMSNorm. In f32 libtorch's fused kernel computes exactly HF's formula; other dtypes go
/// through f32 first, as HF does, before the weight.
fn rms_norm(xs: &Tensor, w: &Tensor, eps: f64) -> Tensor {
    let kind = xs.kind();
    if kind == Kind::Float {
        return xs.rms_norm([xs.size()[xs.dim() - 1]], Some(w), eps);
    }
    let x = xs.to_kind(Kind::Float);
    let var = x.pow_tensor_scalar(2).mean_dim(-1, true, Kind::Float);
    let x = x * (var + eps).rsqrt();
    w * x.to_kind(kind)
}

struct Layer {
    q: Linear,
    k: Linear,
    v: Linear,
    o: Linear,
    gate: Linear,
    up: Linear,
    down: Linear,
    ln1: Tensor,
    ln2: Tensor,
}

/// Keys and values of past positions, one preallocated buffer per layer: `[B, H_kv, S_max, D]`.
pub struct KvCache {
    k: Vec<Tensor>,
    v: Vec<Tensor>,
    /// Columns filled so far; a forward step writes at `len`.
    pub len: i64,
    pub capacity: i64,
    /// First column attention reads (columns before it are dead for every row); the mask's
    /// key dimension covers `start..len + T`.
    pub start: i64,
    /// Empty, or one entry per row for the next decode step: a span of the row's columns
    /// (counted from `start`) that holds the same keys and values as a span of another
    /// row's, which decode attention reads instead (rows placed from one prefilled prompt).
    /// Whoever sets it keeps the equality; `place`, `keep_rows` and `relayout` clear it.
    pub borrowed: Vec<Option<spar_gemm::Borrowed>>,
    /// Columns nobody wrote hold zeros. When false they hold whatever the allocator gave
    /// (no pass over the memory): only for caches whose unwritten columns nothing reads (see
    /// `Llama::new_cache_unzeroed`).
    zeroed: bool,
}

impl KvCache {
    pub fn batch(&self) -> i64 {
        self.k.first().map_or(0, |k| k.size()[0])
    }

    /// Copy the first `cols` columns of batch row 0 of `src` (a prefilled prompt) into the
    /// rows `slots` of this cache at columns `at..at + cols`.
    pub fn place(&mut self, slots: &[i64], src: &KvCache, cols: i64, at: i64) {
        self.borrowed.clear();
        let idx = Tensor::from_slice(slots).to_device(self.k[0].device());
        let n = slots.len() as i64;
        for (dst, from) in self
            .k
            .iter_mut()
            .zip(&src.k)
            .chain(self.v.iter_mut().zip(&src.v))
        {
            let s = from.narrow(0, 0, 1).narrow(2, 0, cols);
            let sz = s.size();
            let s = s.expand([n, sz[1], sz[2], sz[3]], false);
            let _ = dst.narrow(2, at, cols).index_copy_(0, &idx, &s);
        }
    }

    /// Keep only the batch rows `keep` (in that order) and drop the columns before `start`:
    /// one copy of the live window, after which column `c` is `c - start`.
    pub fn keep_rows(&mut self, keep: &[i64]) {
        self.borrowed.clear();
        let idx = Tensor::from_slice(keep).to_device(self.k[0].device());
        let room = self.capacity - self.start;
        for t in self.k.iter_mut().chain(self.v.iter_mut()) {
            *t = t.narrow(2, self.start, room).index_select(0, &idx);
        }
        self.len -= self.start;
        self.capacity = room;
        self.start = 0;
    }

    /// A new layout: `batch` rows (the existing ones first), `capacity` columns, the live
    /// window `start..len` moved to begin at column `to`.
    pub fn relayout(&mut self, batch: i64, capacity: i64, to: i64) {
        self.borrowed.clear();
        let w = self.len - self.start;
        assert!(to + w <= capacity, "the window fits the new capacity");
        for t in self.k.iter_mut().chain(self.v.iter_mut()) {
            let sz = t.size();
            let shape = [batch, sz[1], capacity, sz[3]];
            let fresh = match self.zeroed {
                true => Tensor::zeros(shape, (t.kind(), t.device())),
                false => unzeroed(shape, (t.kind(), t.device())),
            };
            if w > 0 {
                fresh
                    .narrow(0, 0, sz[0])
                    .narrow(2, to, w)
                    .copy_(&t.narrow(2, self.start, w));
            }
            *t = fresh;
        }
        self.start = to;
        self.len = to + w;
        self.capacity = capacity;
    }
}

/// Memory for a cache's columns, not zeroed. The crate's unit tests fill it with NaN instead,
/// so that a read of a column nobody wrote shows in their results.
fn unzeroed(shape: [i64; 4], opts: (Kind, Device)) -> Tensor {
    if cfg!(test) {
        Tensor::full(shape, f64::NAN, opts)
    } else {
        Tensor::empty(shape, opts)
    }
}

/// Concatenated projections for inference: one matmul for q/k/v and one for gate/up.
struct Fused {
    qkv_w: Tensor,
    qkv_b: Option<Tensor>,
    gate_up_w: Tensor,
}

/// Every projection repacked for small-batch products (see `gemm`), used by cached forward
/// passes of few rows: decode steps.
struct DecodeWeights {
    /// Per layer: q/k/v, o, gate/up, down.
    layers: Vec<[Packed; 4]>,
    lm_head: Packed,
}

/// Forwards with a KV cache of up to this many rows (batch × new positions) use the packed
/// weights: every decode step, and the prefill of prompts up to 512 tokens. Measured on the
/// embedded model (2 AVX-512 cores, AMD EPYC), prefill of a 100-token prompt took 145–185 ms
/// on the kernel vs 326 ms on libtorch's GEMM, 300 tokens 515–557 vs 617 ms, 600 tokens about
/// the same, 1000 tokens 2.4–2.5 vs 2.0 s: libtorch's attention runs single-threaded beside
/// the kernel's pool and grows with the square of the length, so longer prompts go to
/// libtorch.
fn small_gemm_rows() -> i64 {
    static ROWS: std::sync::OnceLock<i64> = std::sync::OnceLock::new();
    *ROWS.get_or_init(|| {
        std::env::var("SPAR_SMALL_GEMM_ROWS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(512)
    })
}

/// While alive, libtorch's operations on this thread run single-threaded: during a decode
/// step the products run on the `gemm` pool, and libtorch's worker threads spinning between
/// its (small) parallel operations would take the pool's cores. OpenMP's (and MKL's) thread
/// count is per thread; ATen also keeps a process-wide default that threads read when they
/// first compute in parallel, so the drop restores the count every thread had before the
/// first decode step, not whatever this thread read (which another step may have lowered).
struct TorchSerial(i32);

impl TorchSerial {
    fn new() -> Self {
        static USUAL: std::sync::OnceLock<i32> = std::sync::OnceLock::new();
        let usual = *USUAL.get_or_init(tch::get_num_threads);
        if usual > 1 {
            tch::set_num_threads(1);
        }
        Self(usual)
    }
}

impl Drop for TorchSerial {
    fn drop(&mut self) {
        if self.0 > 1 {
            tch::set_num_threads(self.0);
        }
    }
}

/// A decoder-only language model.
pub struct Llama {
    pub cfg: ModelConfig,
    pub vs: nn::VarStore,
    embed: Tensor,
    layers: Vec<Layer>,
    norm: Tensor,
    lm_head: Option<Tensor>,
    cos: Tensor,
    sin: Tensor,
    fused: Option<Vec<Fused>>,
    /// Made on the first decode step that can use it; `unpack` drops it.
    decode: std::sync::OnceLock<Option<DecodeWeights>>,
}

/// `inv_freq` of RoPE, with llama3's frequency-dependent scaling when configured.
fn inv_freq(cfg: &ModelConfig) -> Vec<f64> {
    let d = cfg.head_size();
    let mut f: Vec<f64> = (0..d / 2)
        .map(|i| 1.0 / cfg.rope_theta.powf((2 * i) as f64 / d as f64))
        .collect();
    if let Some(s) = cfg
        .rope_scaling
        .as_ref()
        .filter(|s| s.rope_type == "llama3")
    {
        let old = s.original_max_position_embeddings as f64;
        let (low_wl, high_wl) = (old / s.low_freq_factor, old / s.high_freq_factor);
        for x in &mut f {
            let wl = 2.0 * std::f64::consts::PI / *x;
            if wl > low_wl {
                *x /= s.factor;
            } else if wl >= high_wl {
                let smooth =
                    (old / wl - s.low_freq_factor) / (s.high_freq_factor - s.low_freq_factor);
                *x = (1.0 - smooth) * *x / s.factor + smooth * *x;
            }
        }
    }
    f
}

impl Llama {
    /// Parameters with random initial values (for tests and as the skeleton `load` fills).
    pub fn new(cfg: ModelConfig, device: Device) -> Self {
        let vs = nn::VarStore::new(device);
        let root = vs.root();
        let m = &root / "model";
        let (h, i, d) = (cfg.hidden_size, cfg.intermediate_size, cfg.head_size());
        let (nh, nkv) = (cfg.num_attention_heads, cfg.num_heads_kv());
        let bias = cfg.qkv_bias();
        let embed = (&m / "embed_tokens").var(
            "weight",
            &[cfg.vocab_size as i64, h as i64],
            nn::Init::Randn {
                mean: 0.0,
                stdev: 0.02,
            },
        );
        let ones = nn::Init::Const(1.0);
        let layers = (0..cfg.num_hidden_layers)
            .map(|l| {
                let p = &m / "layers" / l;
                let at = &p / "self_attn";
                let mlp = &p / "mlp";
                Layer {
                    q: Linear::new(&at / "q_proj", h, nh * d, bias),
                    k: Linear::new(&at / "k_proj", h, nkv * d, bias),
                    v: Linear::new(&at / "v_proj", h, nkv * d, bias),
                    o: Linear::new(&at / "o_proj", nh * d, h, false),
                    gate: Linear::new(&mlp / "gate_proj", h, i, false),
                    up: Linear::new(&mlp / "up_proj", h, i, false),
                    down: Linear::new(&mlp / "down_proj", i, h, false),
                    ln1: (&p / "input_layernorm").var("weight", &[h as i64], ones),
                    ln2: (&p / "post_attention_layernorm").var("weight", &[h as i64], ones),
                }
            })
            .collect();
        let norm = (&m / "norm").var("weight", &[h as i64], ones);
        let lm_head = (!cfg.tie_word_embeddings).then(|| {
            (&root / "lm_head").var(
                "weight",
                &[cfg.vocab_size as i64, h as i64],
                nn::Init::Randn {
                    mean: 0.0,
                    stdev: 0.02,
                },
            )
        });
        let freqs = Tensor::from_slice(&inv_freq(&cfg)).to_kind(Kind::Float);
        let pos = Tensor::arange(
            cfg.max_position_embeddings as i64,
            (Kind::Float, Device::Cpu),
        );
        let angles = pos.outer(&freqs);
        let angles = Tensor::cat(&[&angles, &angles], -1).to_device(device);
        Self {
            cos: angles.cos(),
            sin: angles.sin(),
            cfg,
            vs,
            embed,
            layers,
            norm,
            lm_head,
            fused: None,
            decode: std::sync::OnceLock::new(),
        }
    }

    /// Store q/k/v and gate/up weights each in one matrix, so generation runs one matmul for
    /// q/k/v and one for gate/up per layer. The separate weights become views into the fused
    /// storage: no extra memory, and training updates reach both.
    ///
    /// Every projection is also stored input-major (`[in, out]` contiguous; the `[out, in]`
    /// weight is a transposed view): `x · Wᵀ` then runs as a plain matrix product, which
    /// libtorch's CPU GEMM does about twice as fast for the few rows of a decode step
    /// (measured 0.53 vs 0.98 ms per layer at 10 rows on SmolLM2-135M).
    pub fn fuse_for_inference(&mut self) {
        if self.fused.is_some() {
            return;
        }
        // `[out, in]` weights → one `[in, Σout]` matrix, returned as its `[Σout, in]` view.
        let input_major = |ws: &[&Tensor]| {
            let t: Vec<Tensor> = ws.iter().map(|w| w.tr()).collect();
            Tensor::cat(&t, 1).tr()
        };
        let fused = tch::no_grad(|| {
            self.layers
                .iter_mut()
                .map(|l| {
                    for lin in [&mut l.o, &mut l.down] {
                        let w = input_major(&[&lin.w]);
                        lin.w.set_data(&w);
                    }
                    let qkv_w = input_major(&[&l.q.w, &l.k.w, &l.v.w]);
                    let qkv_b = match (&l.q.b, &l.k.b, &l.v.b) {
                        (Some(q), Some(k), Some(v)) => Some(Tensor::cat(&[q, k, v], 0)),
                        _ => None,
                    };
                    let gate_up_w = input_major(&[&l.gate.w, &l.up.w]);
                    let mut at = 0;
                    for lin in [&mut l.q, &mut l.k, &mut l.v] {
                        let n = lin.w.size()[0];
                        lin.w.set_data(&qkv_w.narrow(0, at, n));
                        if let (Some(b), Some(fb)) = (lin.b.as_mut(), qkv_b.as_ref()) {
                            b.set_data(&fb.narrow(0, at, n));
                        }
                        at += n;
                    }
                    let n = l.gate.w.size()[0];
                    l.gate.w.set_data(&gate_up_w.narrow(0, 0, n));
                    l.up.w.set_data(&gate_up_w.narrow(0, n, n));
                    Fused {
                        qkv_w,
                        qkv_b,
                        gate_up_w,
                    }
                })
                .collect()
        });
        self.fused = Some(fused);
    }

    /// The packed copies of the weights for decode steps, made on first use where they apply:
    /// f32 on a CPU with AVX-512, after `fuse_for_inference`. `SPAR_SMALL_GEMM=0` turns them
    /// off (libtorch's GEMM everywhere).
    fn decode_weights(&self) -> Option<&DecodeWeights> {
        self.decode
            .get_or_init(|| {
                let fused = self.fused.as_ref()?;
                let on = std::env::var("SPAR_SMALL_GEMM").map_or(true, |v| v != "0");
                if !on
                    || !gemm::available()
                    || self.kind() != Kind::Float
                    || self.device() != Device::Cpu
                {
                    return None;
                }
                gemm::set_threads(tch::get_num_threads().max(1) as usize);
                let layers = self
                    .layers
                    .iter()
                    .zip(fused)
                    .map(|(l, f)| {
                        [
                            Packed::new(&f.qkv_w, f.qkv_b.as_ref()),
                            Packed::new(&l.o.w, None),
                            Packed::new(&f.gate_up_w, None),
                            Packed::new(&l.down.w, None),
                        ]
                    })
                    .collect();
                let lm_head = Packed::new(self.lm_head.as_ref().unwrap_or(&self.embed), None);
                Some(DecodeWeights { layers, lm_head })
            })
            .as_ref()
    }

    /// Whether decode steps run on the packed small-batch kernel (packing it now if it applies).
    pub fn uses_decode_kernel(&self) -> bool {
        self.decode_weights().is_some()
    }

    /// Whether the cached prefill of a `len`-token prompt computes each position the same bits
    /// whether it is prefilled whole or after a prefix prefilled before: its products run on
    /// the packed kernel with at least 5 rows (see `spar_gemm`'s tiles) and its attention on
    /// the decode kernel; libtorch's element-wise operations work row by row. The engine reuses
    /// cached prefixes only then, so its results do not depend on what it served before.
    pub fn prefill_is_row_exact(&self, len: i64) -> bool {
        len >= 5 && self.decode_attention_on_kernel(len)
    }

    /// Drop the packed decode copies; whoever changes weights in place after generating must
    /// call this (the next decode step repacks).
    pub fn unpack(&mut self) {
        self.decode = std::sync::OnceLock::new();
    }

    /// Load an HF model directory's weights (`model.safetensors` or a sharded index).
    pub fn load(
        dir: &Path,
        cfg: ModelConfig,
        device: Device,
        kind: Kind,
    ) -> Result<Self, ModelError> {
        let mut model = tch::no_grad(|| Self::new(cfg, device));
        super::weights::load_into(&mut model.vs, dir)?;
        if kind != Kind::Float {
            model.vs.set_kind(kind);
        }
        Ok(model)
    }

    pub fn device(&self) -> Device {
        self.vs.device()
    }

    pub fn kind(&self) -> Kind {
        self.embed.kind()
    }

    /// An empty cache for `batch` rows and up to `capacity` positions.
    pub fn new_cache(&self, batch: i64, capacity: i64) -> KvCache {
        self.cache(batch, capacity, true)
    }

    /// A cache whose columns are not zeroed first (allocating it, and every re-layout, skips
    /// a pass over the memory), for a caller that never lets attention read a column nobody
    /// wrote: a prompt's prefill (each layer writes its columns before reading them), or a
    /// decoding batch whose masked columns only the decode kernel sees (it skips them; other
    /// attention would multiply their garbage by zero, and NaN · 0 is NaN). The latter: only
    /// where `decode_attention_on_kernel` for the most rows the batch can have.
    pub fn new_cache_unzeroed(&self, batch: i64, capacity: i64) -> KvCache {
        self.cache(batch, capacity, false)
    }

    /// Whether the attention of every decode step of up to `rows` rows runs on the
    /// `spar-gemm` kernel, which reads only the columns each row's mask opens.
    pub fn decode_attention_on_kernel(&self, rows: i64) -> bool {
        rows <= small_gemm_rows()
            && self.cfg.head_size().is_multiple_of(16)
            && self.uses_decode_kernel()
    }

    fn cache(&self, batch: i64, capacity: i64, zeroed: bool) -> KvCache {
        let shape = [
            batch,
            self.cfg.num_heads_kv() as i64,
            capacity,
            self.cfg.head_size() as i64,
        ];
        let opts = (self.kind(), self.device());
        let new = || match zeroed {
            true => Tensor::zeros(shape, opts),
            false => unzeroed(shape, opts),
        };
        KvCache {
            k: (0..self.layers.len()).map(|_| new()).collect(),
            v: (0..self.layers.len()).map(|_| new()).collect(),
            len: 0,
            capacity,
            start: 0,
            borrowed: Vec::new(),
            zeroed,
        }
    }

    /// Hidden states after the final norm, `[B, T, H]`.
    ///
    /// `pos` are the RoPE positions `[B, T]`; `mask` is a boolean `[B, 1, T, S]` of which keys
    /// each query may see (S = past − start + T with a cache, else T). With a cache, keys and values
    /// of these T positions are written at `cache.len..cache.len + T`.
    pub fn forward(
        &self,
        ids: &Tensor,
        pos: &Tensor,
        mask: &Tensor,
        mut cache: Option<&mut KvCache>,
    ) -> Tensor {
        let (b, t) = ids.size2().expect("ids are [B, T]");
        let (nh, nkv, d) = (
            self.cfg.num_attention_heads as i64,
            self.cfg.num_heads_kv() as i64,
            self.cfg.head_size() as i64,
        );
        let cos = self
            .cos
            .index_select(0, &pos.flatten(0, 1))
            .view([b, 1, t, d])
            .to_kind(self.kind());
        let sin = self
            .sin
            .index_select(0, &pos.flatten(0, 1))
            .view([b, 1, t, d])
            .to_kind(self.kind());
        let rope = |x: &Tensor| {
            let half = x.chunk(2, -1);
            let rotated = Tensor::cat(&[&half[1].neg(), &half[0]], -1);
            x * &cos + rotated * &sin
        };
        let mut xs = Tensor::embedding(&self.embed, ids, -1, false, false);
        let past = cache.as_ref().map_or(0, |c| c.len);
        // Decode steps and short prefills (a cache, few rows) multiply with the packed weights.
        let packed = if cache.is_some() && b * t <= small_gemm_rows() {
            self.decode_weights()
        } else {
            None
        };
        let _serial = packed.map(|_| TorchSerial::new());
        let borrowed = match cache.as_ref() {
            Some(c) if t == 1 && c.borrowed.len() as i64 == b => c.borrowed.clone(),
            _ => Vec::new(),
        };
        for (l, layer) in self.layers.iter().enumerate() {
            let h = rms_norm(&xs, &layer.ln1, self.cfg.rms_norm_eps);
            let fused = self.fused.as_ref().map(|f| &f[l]);
            let pk = packed.map(|p| &p.layers[l]);
            let (q, k, v) = match fused {
                Some(f) => {
                    // One matmul, and RoPE on the q and k heads together.
                    let qkv = match pk {
                        Some(p) => p[0].forward(&h),
                        None => h.linear(&f.qkv_w, f.qkv_b.as_ref()),
                    };
                    let qkv = qkv.view([b, t, nh + 2 * nkv, d]).transpose(1, 2);
                    let qk = rope(&qkv.narrow(1, 0, nh + nkv));
                    (
                        qk.narrow(1, 0, nh),
                        qk.narrow(1, nh, nkv),
                        qkv.narrow(1, nh + nkv, nkv),
                    )
                }
                None => (
                    rope(&layer.q.forward(&h).view([b, t, nh, d]).transpose(1, 2)),
                    rope(&layer.k.forward(&h).view([b, t, nkv, d]).transpose(1, 2)),
                    layer.v.forward(&h).view([b, t, nkv, d]).transpose(1, 2),
                ),
            };
            let (k, v) = match cache.as_deref_mut() {
                Some(c) => {
                    c.k[l].narrow(2, past, t).copy_(&k);
                    c.v[l].narrow(2, past, t).copy_(&v);
                    let s0 = c.start;
                    (
                        c.k[l].narrow(2, s0, past + t - s0),
                        c.v[l].narrow(2, s0, past + t - s0),
                    )
                }
                None => (k, v),
            };
            // Decode steps, and prefills of one sequence (each query position a row of the
            // kernel, all reading the one cache row), go through the kernel.
            let att = if packed.is_some() && (t == 1 || b == 1) {
                decode_attention(&q, &k, &v, mask, nkv, &borrowed)
            } else {
                // GQA inside SDPA: no copies of the cache per query-head group.
                Tensor::scaled_dot_product_attention(
                    &q,
                    &k,
                    &v,
                    Some(mask),
                    0.0,
                    false,
                    None,
                    nh != nkv,
                )
            };
            let att = att.transpose(1, 2).reshape([b, t, nh * d]);
            // Not `+=`: an in-place add would corrupt tensors autograd saved for backward.
            #[allow(clippy::assign_op_pattern)]
            {
                xs = xs
                    + match pk {
                        Some(p) => p[1].forward(&att),
                        None => layer.o.forward(&att),
                    };
            }
            let h = rms_norm(&xs, &layer.ln2, self.cfg.rms_norm_eps);
            let act = match fused {
                Some(f) => {
                    let gu = match pk {
                        Some(p) => p[2].forward(&h),
                        None => h.linear::<Tensor>(&f.gate_up_w, None),
                    }
                    .chunk(2, -1);
                    gu[0].silu() * &gu[1]
                }
                None => layer.gate.forward(&h).silu() * layer.up.forward(&h),
            };
            let mlp = match pk {
                Some(p) => p[3].forward(&act),
                None => layer.down.forward(&act),
            };
            #[allow(clippy::assign_op_pattern)]
            {
                xs = xs + mlp;
            }
        }
        if let Some(c) = cache {
            c.len += t;
        }
        rms_norm(&xs, &self.norm, self.cfg.rms_norm_eps)
    }

    /// Prefill a prompt into a one-row `cache` that already holds its first `cache.len`
    /// positions (none, or a prefix copied from another prompt's cache): the rest are computed
    /// under the causal mask. Returns the logits of the last position, `[1, V]`.
    pub fn prefill(&self, ids: &[i64], cache: &mut KvCache) -> Tensor {
        let dev = self.device();
        let (l, from) = (ids.len() as i64, cache.len);
        let t = l - from;
        let mask = Tensor::ones([l, l], (Kind::Bool, dev))
            .tril(0)
            .narrow(0, from, t)
            .view([1, 1, t, l]);
        let hidden = self.forward(
            &Tensor::from_slice(&ids[from as usize..])
                .view([1, t])
                .to_device(dev),
            &Tensor::arange_start(from, l, (Kind::Int64, dev)).unsqueeze(0),
            &mask,
            Some(cache),
        );
        self.next_logits(&hidden.narrow(1, t - 1, 1).squeeze_dim(1))
    }

    /// Vocabulary logits of hidden states `[.., H]` → `[.., V]`.
    pub fn logits(&self, hidden: &Tensor) -> Tensor {
        hidden.linear::<Tensor>(self.lm_head.as_ref().unwrap_or(&self.embed), None)
    }

    /// Logits of the next token during generation (`[.., H]` → `[.., V]`, no gradient): few
    /// rows go through the packed head where the decode weights apply.
    pub fn next_logits(&self, hidden: &Tensor) -> Tensor {
        let rows = hidden.numel() as i64 / self.cfg.hidden_size as i64;
        match self.decode_weights() {
            Some(p) if rows <= small_gemm_rows() => {
                let _serial = TorchSerial::new();
                p.lm_head.forward(hidden)
            }
            _ => self.logits(hidden),
        }
    }

    /// Log-probabilities of each next token of right-padded sequences: entry `[b, t]` is
    /// `log p(ids[b, t+1] | ids[b, ..=t])`, zero where `attn[b, t+1]` is 0. Shape `[B, T-1]`.
    pub fn token_logprobs(&self, ids: &Tensor, attn: &Tensor) -> Tensor {
        let (b, t) = ids.size2().expect("ids are [B, T]");
        let pos = (attn.cumsum(1, Kind::Int64) - 1).clamp_min(0);
        let mask = full_mask(attn, t);
        let hidden = self.forward(ids, &pos, &mask, None);
        let logits = self
            .logits(&hidden.narrow(1, 0, t - 1))
            .to_kind(Kind::Float);
        let targets = ids.narrow(1, 1, t - 1);
        let lp = logits
            .log_softmax(-1, Kind::Float)
            .gather(2, &targets.unsqueeze(-1), false)
            .squeeze_dim(-1);
        lp * attn
            .narrow(1, 1, t - 1)
            .to_kind(Kind::Float)
            .view([b, t - 1])
    }
}

/// Attention of one new position per row (`q`: `[B, H, 1, D]`), or of the `T` new positions of
/// one sequence (`q`: `[1, H, T, D]`), over the cached keys and values (`[B, H_kv, S, D]` views
/// of the cache) under `mask` (`[B, 1, T, S]`): the `spar-gemm` kernel, which reads each row's
/// visible span of the cache in place (libtorch's CPU attention loops over every (row, head)
/// pair with small products and copies, and computes the padding of ragged batches too);
/// `borrowed` (empty or one per row) are the cache's shared spans. The `T` positions of a
/// prefill are the kernel's rows, all reading cache row 0 (a batch stride of 0): each
/// position's result is computed as a decode step computes it, the same bits whether the
/// positions before it were prefilled with it or earlier. Other layouts go through
/// libtorch's SDPA.
fn decode_attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    mask: &Tensor,
    nkv: i64,
    borrowed: &[Option<spar_gemm::Borrowed>],
) -> Tensor {
    let (b, nh, t, d) = q.size4().expect("q is [B, H, T, D]");
    let s = k.size()[2];
    let on_cpu_f32 = |t: &Tensor| t.kind() == Kind::Float && t.device() == Device::Cpu;
    let fits = d % 16 == 0
        && on_cpu_f32(q)
        && on_cpu_f32(k)
        && on_cpu_f32(v)
        && k.size() == [b, nkv, s, d]
        && v.size() == k.size()
        && k.stride()[3] == 1
        && v.stride()[3] == 1
        && (t == 1 || b == 1)
        && mask.kind() == Kind::Bool
        && mask.numel() as i64 == b * t * s;
    if !fits {
        return Tensor::scaled_dot_product_attention(
            q,
            k,
            v,
            Some(mask),
            0.0,
            false,
            None,
            nh != nkv,
        );
    }
    // Rows of the kernel: `[B·T, H, D]` (for a prefill, `B` is 1 and the rows share the cache
    // row: batch stride 0).
    let rows = b * t;
    let q = q.transpose(1, 2).contiguous();
    // A bool tensor stores one byte (0 or 1) per element: read in place, no conversion per layer.
    let mask = mask.contiguous();
    let out = Tensor::empty([b, t, nh, d], (Kind::Float, Device::Cpu));
    let (mut ks, mut vs) = (k.stride(), v.stride());
    if t > 1 {
        (ks[0], vs[0]) = (0, 0);
    }
    let shape = spar_gemm::AttentionShape {
        batch: rows as usize,
        heads: nh as usize,
        kv_heads: nkv as usize,
        head_dim: d as usize,
        s: s as usize,
        k_strides: [ks[0] as usize, ks[1] as usize, ks[2] as usize],
        v_strides: [vs[0] as usize, vs[1] as usize, vs[2] as usize],
    };
    let n = (rows * nh * d) as usize;
    // SAFETY: contiguous f32 tensors of the sizes given; `k` and `v` are live views whose
    // strides describe every element the kernel reads (a prefill's rows read cache row 0);
    // `out` is fresh.
    unsafe {
        spar_gemm::attend_decode_borrowing(
            std::slice::from_raw_parts(q.data_ptr() as *const f32, n),
            k.data_ptr() as *const f32,
            v.data_ptr() as *const f32,
            std::slice::from_raw_parts(mask.data_ptr() as *const u8, (rows * s) as usize),
            shape,
            borrowed,
            std::slice::from_raw_parts_mut(out.data_ptr() as *mut f32, n),
        );
    }
    out.transpose(1, 2)
}

/// Causal attention over right-padded rows without a cache: query i sees keys j ≤ i that are
/// real tokens; a padding query sees itself (so no row of the softmax is empty).
pub fn full_mask(attn: &Tensor, t: i64) -> Tensor {
    let dev = attn.device();
    let causal = Tensor::ones([t, t], (Kind::Bool, dev)).tril(0);
    let keys = attn.to_kind(Kind::Bool).unsqueeze(1).unsqueeze(1); // [B,1,1,T]
    let eye = Tensor::eye(t, (Kind::Bool, dev));
    causal.logical_and(&keys).logical_or(&eye)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A tiny random model: 2 layers, GQA 4/2 heads, vocabulary 64.
    pub fn tiny(seed: i64) -> Llama {
        tiny_with(seed, 32)
    }

    /// As [`tiny`] with hidden size `hidden` (64: heads of 16, the kernels' smallest).
    fn tiny_with(seed: i64, hidden: usize) -> Llama {
        tch::manual_seed(seed);
        let cfg: ModelConfig = serde_json::from_value(serde_json::json!({
            "hidden_size": hidden, "intermediate_size": 2 * hidden, "num_hidden_layers": 2,
            "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 64,
            "max_position_embeddings": 128, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
            "tie_word_embeddings": true
        }))
        .unwrap();
        tch::no_grad(|| Llama::new(cfg, Device::Cpu))
    }

    /// A prompt prefilled whole, and prefilled after a prefix prefilled before (the engine's
    /// reuse of a cached prompt's prefix), give the same bits: every key and value of every
    /// layer, and the last position's logits. Heads of 16 (the kernels' smallest), with
    /// several batch rows of products (5–40 rows, so tiles of every kind).
    #[test]
    fn prefill_after_a_cached_prefix_gives_the_same_bits() {
        let mut m = tiny_with(3, 64);
        m.fuse_for_inference();
        let l = 45i64;
        assert_eq!(m.prefill_is_row_exact(l), crate::model::gemm::available());
        if !m.prefill_is_row_exact(l) {
            return;
        }
        let ids: Vec<i64> = (0..l).map(|i| (i * 37 + 11) % 61 + 3).collect();
        let prefill = |ids: &[i64], cache: &mut KvCache| tch::no_grad(|| m.prefill(ids, cache));
        let bits = |t: &Tensor| -> Vec<u32> {
            Vec::<f32>::try_from(t.flatten(0, -1))
                .unwrap()
                .iter()
                .map(|x| x.to_bits())
                .collect()
        };
        let mut whole = m.new_cache(1, l);
        let want = bits(&prefill(&ids, &mut whole));
        for p in [1, 4, 5, 12, 23, 40] {
            // An earlier prompt (of 5 tokens or more) beginning with the prefix, then the rest
            // of this one after a copy of the prefix's columns.
            let mut other = ids[..p as usize].to_vec();
            other.extend((0..5).map(|i| 60 - i));
            let mut first = m.new_cache(1, other.len() as i64);
            let _ = prefill(&other, &mut first);
            let mut cache = m.new_cache(1, l);
            cache.place(&[0], &first, p, 0);
            cache.len = p;
            assert_eq!(
                bits(&prefill(&ids, &mut cache)),
                want,
                "logits after a prefix of {p}"
            );
            for (layer, (a, b)) in cache
                .k
                .iter()
                .zip(&whole.k)
                .chain(cache.v.iter().zip(&whole.v))
                .enumerate()
            {
                assert_eq!(
                    bits(a),
                    bits(b),
                    "keys/values {layer} after a prefix of {p}"
                );
            }
        }
    }

    #[test]
    fn cached_decoding_equals_full_forward() {
        let m = tiny(1);
        let ids = Tensor::from_slice(&[3i64, 9, 27, 5, 11, 42, 7, 1]).view([1, 8]);
        let attn = Tensor::ones([1, 8], (Kind::Int64, Device::Cpu));
        let pos = Tensor::arange(8, (Kind::Int64, Device::Cpu)).view([1, 8]);
        let full = tch::no_grad(|| m.logits(&m.forward(&ids, &pos, &full_mask(&attn, 8), None)));
        // Prefill 5 tokens, then 3 single steps.
        let mut cache = m.new_cache(1, 16);
        let mut outs = Vec::new();
        tch::no_grad(|| {
            let mask = full_mask(&attn.narrow(1, 0, 5), 5);
            let mask = Tensor::cat(&[mask], 3);
            outs.push(m.logits(&m.forward(
                &ids.narrow(1, 0, 5),
                &pos.narrow(1, 0, 5),
                &mask,
                Some(&mut cache),
            )));
            for t in 5..8 {
                let mask = Tensor::ones([1, 1, 1, t + 1], (Kind::Bool, Device::Cpu));
                outs.push(m.logits(&m.forward(
                    &ids.narrow(1, t, 1),
                    &pos.narrow(1, t, 1),
                    &mask,
                    Some(&mut cache),
                )));
            }
        });
        let cached = Tensor::cat(&outs, 1);
        let diff = (full - cached).abs().max().double_value(&[]);
        assert!(diff < 1e-5, "cached and uncached logits differ by {diff}");
    }

    #[test]
    fn fused_projections_compute_the_same() {
        let mut m = tiny(4);
        let ids = Tensor::from_slice(&[3i64, 9, 27, 5]).view([1, 4]);
        let attn = Tensor::ones([1, 4], (Kind::Int64, Device::Cpu));
        let pos = Tensor::arange(4, (Kind::Int64, Device::Cpu)).view([1, 4]);
        let run = |m: &Llama| {
            tch::no_grad(|| m.logits(&m.forward(&ids, &pos, &full_mask(&attn, 4), None)))
        };
        let plain = run(&m);
        m.fuse_for_inference();
        let diff = (plain - run(&m)).abs().max().double_value(&[]);
        assert!(diff < 1e-5, "{diff}");
    }

    #[test]
    fn padding_does_not_change_a_row() {
        let m = tiny(2);
        let a = [5i64, 6, 7, 8];
        // Row 0 alone; row 1 = the same tokens right-padded next to a longer row.
        let ids =
            Tensor::from_slice(&[a[0], a[1], a[2], a[3], 0, 0, 1, 2, 3, 4, 5, 6]).view([2, 6]);
        let attn = Tensor::from_slice(&[1i64, 1, 1, 1, 0, 0, 1, 1, 1, 1, 1, 1]).view([2, 6]);
        let batched = tch::no_grad(|| m.token_logprobs(&ids, &attn));
        let single = tch::no_grad(|| {
            m.token_logprobs(
                &Tensor::from_slice(&a).view([1, 4]),
                &Tensor::ones([1, 4], (Kind::Int64, Device::Cpu)),
            )
        });
        let diff = (batched.get(0).narrow(0, 0, 3) - single.get(0))
            .abs()
            .max()
            .double_value(&[]);
        assert!(diff < 1e-5, "{diff}");
        assert_eq!(
            batched
                .get(0)
                .narrow(0, 3, 2)
                .abs()
                .sum(Kind::Float)
                .double_value(&[]),
            0.0
        );
        assert!(batched.isfinite().all().int64_value(&[]) == 1);
    }

    #[test]
    fn logprobs_are_normalised() {
        let m = tiny(3);
        let ids = Tensor::from_slice(&[1i64, 2, 3]).view([1, 3]);
        let pos = Tensor::arange(3, (Kind::Int64, Device::Cpu)).view([1, 3]);
        let attn = Tensor::ones([1, 3], (Kind::Int64, Device::Cpu));
        let p = tch::no_grad(|| m.logits(&m.forward(&ids, &pos, &full_mask(&attn, 3), None)))
            .softmax(-1, Kind::Float)
            .sum_dim_intlist(-1, false, Kind::Float);
        let diff = (p - 1.0).abs().max().double_value(&[]);
        assert!(diff < 1e-5);
    }
}
