//! Matrix products for the few rows of a decode step, on CPUs with AVX-512.
//!
//! A decode step multiplies a handful of rows (one per sequence in the batch) by every weight
//! matrix of a model, so it streams all the weights from memory once per step. A GEMM built
//! for large products (MKL in libtorch) reaches neither the memory bandwidth nor the
//! arithmetic peak at 1–32 rows. Here each weight is repacked once into panels of 16 output
//! features, `[N/16][K][16]` — each panel one sequential stream — and a kernel keeps the
//! partial sums of all rows of a panel in registers while it streams the panel, prefetching
//! ahead; the panels are split between the threads of a small pool.
//!
//! Sums run in another order than MKL's, so results differ from libtorch's in the last bits
//! (f32 rounding), as two BLAS libraries do.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

/// Output features per panel: one AVX-512 register of f32.
const LANES: usize = 16;
/// How far ahead (in panel rows of 64 bytes) the kernel prefetches the weights.
const PREFETCH: usize = 32;
/// Rows per register tile.
const TILE_ROWS: usize = 16;

/// Whether this CPU runs the kernel (callers fall back to their GEMM otherwise).
pub fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// A zeroed, 64-byte aligned f32 buffer, on transparent huge pages where the OS allows it
/// (fewer TLB misses while streaming hundreds of MB per step).
struct Buf {
    ptr: *mut f32,
    len: usize,
    layout: std::alloc::Layout,
}

// SAFETY: a plain owned allocation.
unsafe impl Send for Buf {}
unsafe impl Sync for Buf {}

impl Buf {
    fn zeroed(len: usize) -> Self {
        const HUGE: usize = 2 << 20;
        let bytes = (len * 4).max(64);
        let align = if bytes >= HUGE { HUGE } else { 64 };
        let layout = std::alloc::Layout::from_size_align(bytes.next_multiple_of(align), align)
            .expect("buffer layout");
        // SAFETY: the layout has a non-zero size.
        let ptr = unsafe { std::alloc::alloc_zeroed(layout) } as *mut f32;
        if ptr.is_null() {
            std::alloc::handle_alloc_error(layout);
        }
        #[cfg(target_os = "linux")]
        if align == HUGE {
            // Advisory: without it the buffer stays on small pages.
            // SAFETY: exactly the allocation just made.
            unsafe {
                libc::madvise(ptr.cast(), layout.size(), libc::MADV_HUGEPAGE);
            }
        }
        Self { ptr, len, layout }
    }

    fn as_mut_slice(&mut self) -> &mut [f32] {
        // SAFETY: `len` floats were allocated (and zeroed).
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.len) }
    }
}

impl Drop for Buf {
    fn drop(&mut self) {
        // SAFETY: allocated in `zeroed` with this layout.
        unsafe { std::alloc::dealloc(self.ptr.cast(), self.layout) }
    }
}

/// A weight `W` of shape `[N, K]` (as in `y = x · Wᵀ + b`) repacked into panels of 16 output
/// features, with its optional bias.
pub struct Packed {
    n: usize,
    k: usize,
    data: Buf,
    bias: Option<Vec<f32>>,
}

impl Packed {
    /// Pack a row-major `[n, k]` weight and an optional bias of `n` values.
    pub fn new(w: &[f32], n: usize, k: usize, bias: Option<Vec<f32>>) -> Self {
        assert_eq!(w.len(), n * k, "weight of {n}×{k}");
        if let Some(b) = &bias {
            assert_eq!(b.len(), n, "bias of {n}");
        }
        let panels = n.div_ceil(LANES);
        let mut data = Buf::zeroed(panels * k * LANES);
        let out = data.as_mut_slice();
        for p in 0..panels {
            let panel = &mut out[p * k * LANES..(p + 1) * k * LANES];
            for c in 0..LANES.min(n - p * LANES) {
                let row = &w[(p * LANES + c) * k..(p * LANES + c + 1) * k];
                for (i, &v) in row.iter().enumerate() {
                    panel[i * LANES + c] = v;
                }
            }
        }
        Self { n, k, data, bias }
    }

    pub fn in_features(&self) -> usize {
        self.k
    }

    pub fn out_features(&self) -> usize {
        self.n
    }

    /// `y = x · Wᵀ + b` for `m` rows: `x` is `[m, k]`, `y` is `[m, n]`, both row-major.
    pub fn forward(&self, x: &[f32], m: usize, y: &mut [f32]) {
        assert!(available(), "the kernel needs AVX-512");
        assert_eq!(x.len(), m * self.k, "input of {m}×{}", self.k);
        assert_eq!(y.len(), m * self.n, "output of {m}×{}", self.n);
        let (xp, yp) = (x.as_ptr() as usize, y.as_mut_ptr() as usize);
        run_split(self.n.div_ceil(LANES), &|from, to| {
            // SAFETY: sizes checked above; each call writes only its own panels' columns.
            unsafe { self.panels(xp as *const f32, m, yp as *mut f32, from, to) }
        });
    }

    /// Rows `0..m` of `y`, output columns of panels `from..to`.
    unsafe fn panels(&self, x: *const f32, m: usize, y: *mut f32, from: usize, to: usize) {
        let k = self.k;
        for p in from..to {
            let tile = Tile {
                k,
                w: self.data.ptr.wrapping_add(p * k * LANES),
                bias: self
                    .bias
                    .as_ref()
                    .map(|b| b.as_ptr().wrapping_add(p * LANES)),
                ldy: self.n,
                cols: (self.n - p * LANES).min(LANES),
            };
            let mut r = 0;
            while r < m {
                let rows = tile_rows(m - r);
                let xr = x.wrapping_add(r * k);
                let yr = y.wrapping_add(r * self.n + p * LANES);
                // SAFETY: rows r..r+rows exist in x and y; the panel holds k * 16 floats.
                unsafe { tile.run(rows, xr, yr) };
                r += rows;
            }
        }
    }
}

/// Rows of the next register tile when `left` rows remain: full tiles, except that no tile
/// of a product of 5 rows or more gets fewer than 5 (the last 17–20 rows go as two tiles), so
/// every row of such a product runs through [`Tile::rows`], whose sums do not depend on the
/// tile's height: a row's result is then the same bits whatever other rows are computed with
/// it (a prompt prefilled whole or after a reused prefix). Products of up to 4 rows use the
/// faster [`Tile::split`] order.
fn tile_rows(left: usize) -> usize {
    match left {
        0..=TILE_ROWS => left,
        l if l - TILE_ROWS <= SPLIT_ROWS => l / 2,
        _ => TILE_ROWS,
    }
}

/// Tiles of up to this many rows sum each row in four interleaved partial sums.
const SPLIT_ROWS: usize = 4;

/// One panel of the weight.
struct Tile {
    k: usize,
    w: *const f32,
    bias: Option<*const f32>,
    ldy: usize,
    cols: usize,
}

#[cfg(target_arch = "x86_64")]
impl Tile {
    unsafe fn run(&self, rows: usize, x: *const f32, y: *mut f32) {
        // SAFETY: as the caller's; `available()` was checked by `forward`.
        unsafe {
            const _: () = assert!(SPLIT_ROWS == 4, "the tiles below split up to 4 rows");
            match rows {
                1 => self.split::<1>(x, y),
                2 => self.split::<2>(x, y),
                3 => self.split::<3>(x, y),
                4 => self.split::<4>(x, y),
                5 => self.rows::<5>(x, y),
                6 => self.rows::<6>(x, y),
                7 => self.rows::<7>(x, y),
                8 => self.rows::<8>(x, y),
                9 => self.rows::<9>(x, y),
                10 => self.rows::<10>(x, y),
                11 => self.rows::<11>(x, y),
                12 => self.rows::<12>(x, y),
                13 => self.rows::<13>(x, y),
                14 => self.rows::<14>(x, y),
                15 => self.rows::<15>(x, y),
                _ => self.rows::<16>(x, y),
            }
        }
    }

    /// `R` rows × 16 columns kept in registers over the whole reduction.
    #[target_feature(enable = "avx512f")]
    unsafe fn rows<const R: usize>(&self, x: *const f32, y: *mut f32) {
        use std::arch::x86_64::*;
        let k = self.k;
        let mut acc = [_mm512_setzero_ps(); R];
        let mut w = self.w;
        // SAFETY: R rows of k floats at x, k * 16 floats at w; the prefetch hints (wrapping
        // arithmetic, possibly past the panel) never fault.
        unsafe {
            for i in 0..k {
                _mm_prefetch::<_MM_HINT_T0>(w.wrapping_add(PREFETCH * LANES) as *const i8);
                let wv = _mm512_loadu_ps(w);
                for (r, a) in acc.iter_mut().enumerate() {
                    *a = _mm512_fmadd_ps(_mm512_set1_ps(*x.add(r * k + i)), wv, *a);
                }
                w = w.add(LANES);
            }
            self.store(&acc, y);
        }
    }

    /// Up to 4 rows: each row's reduction split into 4 interleaved partial sums, so
    /// consecutive FMAs do not wait for each other.
    #[target_feature(enable = "avx512f")]
    unsafe fn split<const R: usize>(&self, x: *const f32, y: *mut f32) {
        use std::arch::x86_64::*;
        let k = self.k;
        let mut acc = [[_mm512_setzero_ps(); 4]; R];
        let mut w = self.w;
        let mut i = 0;
        // SAFETY: as in `rows`.
        unsafe {
            while i + 4 <= k {
                _mm_prefetch::<_MM_HINT_T0>(w.wrapping_add(PREFETCH * LANES) as *const i8);
                _mm_prefetch::<_MM_HINT_T0>(w.wrapping_add((PREFETCH + 2) * LANES) as *const i8);
                let w0 = _mm512_loadu_ps(w);
                let w1 = _mm512_loadu_ps(w.add(LANES));
                let w2 = _mm512_loadu_ps(w.add(2 * LANES));
                let w3 = _mm512_loadu_ps(w.add(3 * LANES));
                for (r, a) in acc.iter_mut().enumerate() {
                    let xr = x.add(r * k + i);
                    a[0] = _mm512_fmadd_ps(_mm512_set1_ps(*xr), w0, a[0]);
                    a[1] = _mm512_fmadd_ps(_mm512_set1_ps(*xr.add(1)), w1, a[1]);
                    a[2] = _mm512_fmadd_ps(_mm512_set1_ps(*xr.add(2)), w2, a[2]);
                    a[3] = _mm512_fmadd_ps(_mm512_set1_ps(*xr.add(3)), w3, a[3]);
                }
                w = w.add(4 * LANES);
                i += 4;
            }
            while i < k {
                let wv = _mm512_loadu_ps(w);
                for (r, a) in acc.iter_mut().enumerate() {
                    a[0] = _mm512_fmadd_ps(_mm512_set1_ps(*x.add(r * k + i)), wv, a[0]);
                }
                w = w.add(LANES);
                i += 1;
            }
            let sums: [__m512; R] = std::array::from_fn(|r| {
                let a = &acc[r];
                _mm512_add_ps(_mm512_add_ps(a[0], a[1]), _mm512_add_ps(a[2], a[3]))
            });
            self.store(&sums, y);
        }
    }

    /// Add the bias and write the tile's columns of each row.
    #[target_feature(enable = "avx512f")]
    unsafe fn store<const R: usize>(&self, acc: &[std::arch::x86_64::__m512; R], y: *mut f32) {
        use std::arch::x86_64::*;
        let mask: __mmask16 = if self.cols >= LANES {
            0xffff
        } else {
            ((1u32 << self.cols) - 1) as u16
        };
        // SAFETY: `cols` valid floats in the bias and in each of the R rows of y.
        unsafe {
            let bias = match self.bias {
                Some(b) => _mm512_maskz_loadu_ps(mask, b),
                None => _mm512_setzero_ps(),
            };
            for (r, a) in acc.iter().enumerate() {
                _mm512_mask_storeu_ps(y.add(r * self.ldy), mask, _mm512_add_ps(*a, bias));
            }
        }
    }
}

#[cfg(not(target_arch = "x86_64"))]
impl Tile {
    unsafe fn run(&self, _rows: usize, _x: *const f32, _y: *mut f32) {
        unreachable!("the kernel runs only where `available()`")
    }
}

/// Run `f` over contiguous ranges covering `0..n` on the threads of the pool. The ranges
/// (about eight per thread) are taken in turn by whichever thread is free, so a thread that
/// started late or runs slower (a core shared with other work, parts of unequal cost such as
/// attention spans of different lengths) leaves its share to the others instead of being
/// waited for.
fn run_split(n: usize, f: &(dyn Fn(usize, usize) + Sync)) {
    let pool = Pool::get();
    let t = pool.threads().min(n.max(1));
    if t <= 1 {
        return f(0, n);
    }
    let chunk = (n / (8 * t)).max(1);
    let next = AtomicUsize::new(0);
    pool.run(t, &|_| {
        loop {
            let from = next.fetch_add(chunk, Ordering::Relaxed);
            if from >= n {
                break;
            }
            f(from, (from + chunk).min(n));
        }
    });
}

/// Set the number of threads (this one included) before the first product; later calls have
/// no effect. Default: `SPAR_GEMM_THREADS`, else the available cores.
pub fn set_threads(threads: usize) {
    let _ = THREADS.set(threads.max(1));
}

static THREADS: OnceLock<usize> = OnceLock::new();

/// Helper threads for the products. Between the products of a decode step (tens of
/// microseconds apart) a helper spins, yielding its core to anything else runnable; after a
/// quiet while it sleeps until a product wakes it.
struct Pool {
    shared: Arc<Shared>,
    helpers: Vec<std::thread::Thread>,
    /// One product at a time; a caller that finds the pool busy computes alone.
    busy: Mutex<()>,
}

struct Shared {
    /// Bumped for each job; a helper runs the job when it sees a new value.
    epoch: AtomicUsize,
    job: Mutex<Option<JobPtr>>,
    /// Helpers not yet done with the current job.
    pending: AtomicUsize,
    /// Helpers parked until `unpark`.
    sleeping: Vec<AtomicBool>,
    /// A helper's part of the current job panicked.
    panicked: AtomicBool,
}

/// The job `f(i)` for threads `i` in `1..t`.
#[derive(Clone, Copy)]
struct JobPtr(*const (dyn Fn(usize) + Sync), usize);
// SAFETY: the pointee is Sync and outlives every use (`Pool::run` waits for all helpers).
unsafe impl Send for JobPtr {}

impl Pool {
    fn get() -> &'static Pool {
        static POOL: OnceLock<Pool> = OnceLock::new();
        POOL.get_or_init(|| {
            let threads = *THREADS.get_or_init(|| {
                std::env::var("SPAR_GEMM_THREADS")
                    .ok()
                    .and_then(|s| s.parse().ok())
                    .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
                    .max(1)
            });
            let helpers = threads - 1;
            let shared = Arc::new(Shared {
                epoch: AtomicUsize::new(0),
                job: Mutex::new(None),
                pending: AtomicUsize::new(0),
                sleeping: (0..helpers).map(|_| AtomicBool::new(false)).collect(),
                panicked: AtomicBool::new(false),
            });
            let helpers = (0..helpers)
                .map(|h| {
                    let shared = shared.clone();
                    std::thread::Builder::new()
                        .name(format!("spar-gemm-{h}"))
                        .spawn(move || helper(&shared, h))
                        .expect("spawn a GEMM helper thread")
                        .thread()
                        .clone()
                })
                .collect();
            Pool {
                shared,
                helpers,
                busy: Mutex::new(()),
            }
        })
    }

    fn threads(&self) -> usize {
        self.helpers.len() + 1
    }

    /// Run `f(0)` here and `f(1..t)` on helpers; returns when all are done.
    fn run(&self, t: usize, f: &(dyn Fn(usize) + Sync)) {
        let _busy = match self.busy.try_lock() {
            Ok(g) => g,
            // A panic in an earlier product poisoned the lock; the pool itself is intact.
            Err(std::sync::TryLockError::Poisoned(e)) => e.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => {
                (0..t).for_each(f);
                return;
            }
        };
        let s = &self.shared;
        // SAFETY: the lifetime is erased for the helpers, and this function does not return
        // (nor unwind: `Wait` below) before `pending` is 0, i.e. before every helper is done
        // with `f`.
        let f: &'static (dyn Fn(usize) + Sync) = unsafe { std::mem::transmute(f) };
        *s.job.lock().unwrap_or_else(|e| e.into_inner()) = Some(JobPtr(f, t));
        s.pending.store(self.helpers.len(), Ordering::SeqCst);
        s.epoch.fetch_add(1, Ordering::SeqCst);
        for (h, th) in self.helpers.iter().enumerate() {
            if s.sleeping[h].load(Ordering::SeqCst) {
                th.unpark();
            }
        }
        /// Waits for the helpers when dropped, also while unwinding from a panic in `f(0)`.
        struct Wait<'a>(&'a Shared);
        impl Drop for Wait<'_> {
            fn drop(&mut self) {
                let mut spins = 0u32;
                while self.0.pending.load(Ordering::Acquire) > 0 {
                    spins += 1;
                    if spins < 64 {
                        std::hint::spin_loop();
                    } else {
                        std::thread::yield_now();
                    }
                }
            }
        }
        let wait = Wait(s);
        f(0);
        drop(wait);
        if s.panicked.swap(false, Ordering::SeqCst) {
            panic!("a spar-gemm helper thread panicked");
        }
    }
}

fn helper(s: &Shared, h: usize) {
    let mut seen = 0;
    loop {
        let mut idle = std::time::Instant::now();
        let mut spins = 0u32;
        loop {
            let e = s.epoch.load(Ordering::SeqCst);
            if e != seen {
                seen = e;
                break;
            }
            spins += 1;
            if spins < 64 {
                std::hint::spin_loop();
            } else if idle.elapsed() < std::time::Duration::from_millis(2) {
                std::thread::yield_now();
            } else {
                s.sleeping[h].store(true, Ordering::SeqCst);
                if s.epoch.load(Ordering::SeqCst) == seen {
                    std::thread::park_timeout(std::time::Duration::from_millis(100));
                }
                s.sleeping[h].store(false, Ordering::SeqCst);
                idle = std::time::Instant::now();
                spins = 0;
            }
        }
        let job = *s.job.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(JobPtr(f, t)) = job
            && h + 1 < t
        {
            // SAFETY: see `Pool::run`. A panic is reported to the caller; the helper lives on.
            let run = std::panic::AssertUnwindSafe(|| unsafe { (*f)(h + 1) });
            if std::panic::catch_unwind(run).is_err() {
                s.panicked.store(true, Ordering::SeqCst);
            }
        }
        s.pending.fetch_sub(1, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(super) fn rand(seed: &mut u64, n: usize) -> Vec<f32> {
        (0..n)
            .map(|_| {
                *seed = seed
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((*seed >> 40) as f32 / (1u64 << 24) as f32) - 0.5
            })
            .collect()
    }

    /// Against a plain f64 reference: partial panels, every row count of a tile and several
    /// tiles, reduction lengths not a multiple of 4, with and without a bias.
    #[test]
    fn products_equal_the_definition() {
        assert!(
            !cfg!(target_arch = "x86_64") || available() || std::env::var("CI").is_err(),
            "CI machines run the AVX-512 kernel"
        );
        if !available() {
            return;
        }
        let mut seed = 7;
        for (n, k) in [(40, 33), (16, 64), (100, 577), (7, 5), (48, 3)] {
            let w = rand(&mut seed, n * k);
            let b = rand(&mut seed, n);
            for bias in [Some(b.clone()), None] {
                let p = Packed::new(&w, n, k, bias.clone());
                for m in [1, 2, 3, 4, 5, 8, 9, 16, 17, 40] {
                    let x = rand(&mut seed, m * k);
                    let mut y = vec![f32::NAN; m * n];
                    p.forward(&x, m, &mut y);
                    for r in 0..m {
                        for o in 0..n {
                            let want: f64 = (0..k)
                                .map(|i| x[r * k + i] as f64 * w[o * k + i] as f64)
                                .sum::<f64>()
                                + bias.as_ref().map_or(0.0, |b| b[o] as f64);
                            let got = y[r * n + o] as f64;
                            assert!(
                                (got - want).abs() < 1e-4,
                                "n {n} k {k} m {m} row {r} col {o}: {got} vs {want}"
                            );
                        }
                    }
                }
            }
        }
    }

    /// From 5 rows on, a row's result is the same bits whatever rows come with it: a prompt
    /// prefilled whole equals its prefix and its rest prefilled apart.
    #[test]
    fn rows_of_products_of_5_rows_or_more_do_not_depend_on_their_neighbours() {
        if !available() {
            return;
        }
        let mut seed = 13;
        let (n, k, m) = (40, 70, 60);
        let w = rand(&mut seed, n * k);
        let p = Packed::new(&w, n, k, Some(rand(&mut seed, n)));
        let x = rand(&mut seed, m * k);
        let mut all = vec![0f32; m * n];
        p.forward(&x, m, &mut all);
        let bits = |y: &[f32]| y.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
        for from in 0..m - 5 {
            for rows in (5..=m - from).step_by(3).chain([m - from]) {
                let mut y = vec![f32::NAN; rows * n];
                p.forward(&x[from * k..(from + rows) * k], rows, &mut y);
                assert_eq!(
                    bits(&y),
                    bits(&all[from * n..(from + rows) * n]),
                    "rows {from}..{}",
                    from + rows
                );
            }
        }
        assert!((1..=300).all(|m| {
            let mut left = m;
            let mut tiles = Vec::new();
            while left > 0 {
                tiles.push(tile_rows(left));
                left -= tiles[tiles.len() - 1];
            }
            tiles
                .iter()
                .all(|&t| t <= TILE_ROWS && (m <= SPLIT_ROWS || t > SPLIT_ROWS))
        }));
    }

    #[test]
    fn a_panicking_part_reaches_the_caller_and_the_pool_lives_on() {
        let pool = Pool::get();
        let t = pool.threads();
        for bad in 0..t {
            let r = std::panic::catch_unwind(|| {
                pool.run(t, &|i| assert_ne!(i, bad, "part {i} fails"));
            });
            assert!(r.is_err(), "the failure of part {bad} of {t} is reported");
        }
        let done: Vec<AtomicBool> = (0..t).map(|_| AtomicBool::new(false)).collect();
        pool.run(t, &|i| done[i].store(true, Ordering::SeqCst));
        assert!(done.iter().all(|d| d.load(Ordering::SeqCst)));
    }

    #[test]
    fn concurrent_callers_get_their_own_results() {
        if !available() {
            return;
        }
        let mut seed = 3;
        let (n, k) = (64, 32);
        let w = rand(&mut seed, n * k);
        let p = Packed::new(&w, n, k, None);
        std::thread::scope(|s| {
            for t in 0..4u64 {
                let (p, w) = (&p, &w);
                s.spawn(move || {
                    let mut seed = 100 + t;
                    for _ in 0..50 {
                        let x = rand(&mut seed, 3 * k);
                        let mut y = vec![0.0; 3 * n];
                        p.forward(&x, 3, &mut y);
                        for r in 0..3 {
                            for o in 0..n {
                                let want: f32 = (0..k).map(|i| x[r * k + i] * w[o * k + i]).sum();
                                assert!((y[r * n + o] - want).abs() < 1e-4);
                            }
                        }
                    }
                });
            }
        });
    }
}

/// The shapes of one decode step's attention: every row of the batch has one new query per
/// head and attends over `s` cached positions.
#[derive(Clone, Copy, Debug)]
pub struct AttentionShape {
    pub batch: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    /// Cached positions (columns of the mask).
    pub s: usize,
    /// Element strides of the key and value caches: batch row, head, position (the head
    /// dimension is contiguous).
    pub k_strides: [usize; 3],
    pub v_strides: [usize; 3],
}

/// Columns of one row that hold the same keys and values as columns of another row: the `n`
/// samples of a prompt, or requests with the same prompt, each carry a copy of the prompt's
/// cache. Row `b`'s columns `own_col..own_col + len` are read from row `leader`'s columns
/// `leader_col..leader_col + len` instead, and the rows of a group are computed one after the
/// other, so the shared span comes from memory once and from cache for the others.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Borrowed {
    pub leader: usize,
    pub leader_col: usize,
    pub own_col: usize,
    pub len: usize,
}

/// Attention of one new position per row over cached keys and values, grouped-query:
/// `q` is `[batch, heads, head_dim]`, `mask` is `[batch, s]` (non-zero = visible), `out` is
/// `[batch, heads, head_dim]`; query head `h` reads key/value head `h / (heads / kv_heads)`.
/// Each row reads only the span of columns its mask opens, so the padding of ragged batches
/// costs nothing. Every row must see at least one column.
///
/// # Safety
/// `k` and `v` must be valid for reads at every `b * strides[0] + h * strides[1] + p *
/// strides[2] + 0..head_dim` with `b < batch`, `h < kv_heads`, `p < s`.
pub unsafe fn attend_decode(
    q: &[f32],
    k: *const f32,
    v: *const f32,
    mask: &[u8],
    shape: AttentionShape,
    out: &mut [f32],
) {
    // SAFETY: the caller's contract.
    unsafe { attend_decode_borrowing(q, k, v, mask, shape, &[], out) }
}

/// [`attend_decode`] where rows read spans of their keys and values from another row
/// (`borrowed`: empty, or one entry per row). The result is the same as reading each row's
/// own columns when those hold the same values; that equality is the caller's to keep.
///
/// # Safety
/// As [`attend_decode`].
pub unsafe fn attend_decode_borrowing(
    q: &[f32],
    k: *const f32,
    v: *const f32,
    mask: &[u8],
    shape: AttentionShape,
    borrowed: &[Option<Borrowed>],
    out: &mut [f32],
) {
    let AttentionShape {
        batch,
        heads,
        kv_heads,
        head_dim: d,
        s,
        ..
    } = shape;
    assert!(available(), "the kernel needs AVX-512");
    assert!(d % LANES == 0, "head dimension {d} is a multiple of 16");
    assert!(
        kv_heads > 0 && heads % kv_heads == 0,
        "query heads group the kv heads"
    );
    assert_eq!(q.len(), batch * heads * d, "queries");
    assert_eq!(out.len(), batch * heads * d, "output");
    assert_eq!(mask.len(), batch * s, "mask");
    assert!(
        mask.chunks(s.max(1)).all(|row| row.iter().any(|&m| m != 0)),
        "every row sees at least one column"
    );
    assert!(
        borrowed.is_empty() || borrowed.len() == batch,
        "one borrowed span per row, or none"
    );
    for x in borrowed.iter().flatten() {
        assert!(
            x.leader < batch && x.own_col + x.len <= s && x.leader_col + x.len <= s,
            "borrowed span {x:?} inside the batch and the {s} columns"
        );
    }
    // Rows of a group next to each other, head by head: one task after another reads the
    // leader's span while it is still in cache.
    let mut order: Vec<usize> = (0..batch).collect();
    if !borrowed.is_empty() {
        order.sort_by_key(|&b| (borrowed[b].map_or(b, |x| x.leader), b));
    }
    let (kp, vp, op) = (k as usize, v as usize, out.as_mut_ptr() as usize);
    run_split(batch * kv_heads, &|from, to| {
        for task in from..to {
            let (h, b) = (task / batch, order[task % batch]);
            // SAFETY: by the caller's contract and the checks above; each task writes its own
            // heads of `out`.
            unsafe {
                attend_group(
                    q,
                    kp as *const f32,
                    vp as *const f32,
                    &mask[b * s..(b + 1) * s],
                    &shape,
                    b,
                    h,
                    borrowed.get(b).copied().flatten(),
                    op as *mut f32,
                )
            };
        }
    });
}

/// The query heads of key/value head `h` of row `b`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments)]
unsafe fn attend_group(
    q: &[f32],
    k: *const f32,
    v: *const f32,
    mask: &[u8],
    shape: &AttentionShape,
    b: usize,
    h: usize,
    borrowed: Option<Borrowed>,
    out: *mut f32,
) {
    use std::arch::x86_64::*;
    let d = shape.head_dim;
    let g = shape.heads / shape.kv_heads;
    let lo = mask
        .iter()
        .position(|&m| m != 0)
        .expect("a row sees a column");
    let hi = mask
        .iter()
        .rposition(|&m| m != 0)
        .expect("a row sees a column")
        + 1;
    let n = hi - lo;
    let scale = 1.0 / (d as f32).sqrt();
    let qh = &q[(b * shape.heads + h * g) * d..(b * shape.heads + (h + 1) * g) * d];
    let kb = k.wrapping_add(b * shape.k_strides[0] + h * shape.k_strides[1]);
    let vb = v.wrapping_add(b * shape.v_strides[0] + h * shape.v_strides[1]);
    // Column `pos` of this row: its own, or the leader's for a borrowed span.
    let (lend, lk, lv) = match borrowed {
        Some(x) => (
            x.own_col..x.own_col + x.len,
            k.wrapping_add(x.leader * shape.k_strides[0] + h * shape.k_strides[1]),
            v.wrapping_add(x.leader * shape.v_strides[0] + h * shape.v_strides[1]),
        ),
        None => (0..0, kb, vb),
    };
    let shift = borrowed.map_or(0, |x| x.leader_col.wrapping_sub(x.own_col));
    let krow = |pos: usize| {
        if lend.contains(&pos) {
            lk.wrapping_add(pos.wrapping_add(shift) * shape.k_strides[2])
        } else {
            kb.wrapping_add(pos * shape.k_strides[2])
        }
    };
    let vrow = |pos: usize| {
        if lend.contains(&pos) {
            lv.wrapping_add(pos.wrapping_add(shift) * shape.v_strides[2])
        } else {
            vb.wrapping_add(pos * shape.v_strides[2])
        }
    };
    // Scores, then probabilities, per query head: [g][n].
    let mut p = vec![0f32; g * n];
    // SAFETY: positions lo..hi < s, rows of d floats (caller's contract); q and p in bounds.
    unsafe {
        for (j, pos) in (lo..hi).enumerate() {
            if mask[pos] == 0 {
                for gi in 0..g {
                    p[gi * n + j] = f32::NEG_INFINITY;
                }
                continue;
            }
            let kr = krow(pos);
            for gi in 0..g {
                let qr = qh.as_ptr().add(gi * d);
                let mut acc = _mm512_setzero_ps();
                for c in (0..d).step_by(LANES) {
                    acc = _mm512_fmadd_ps(
                        _mm512_loadu_ps(qr.add(c)),
                        _mm512_loadu_ps(kr.add(c)),
                        acc,
                    );
                }
                p[gi * n + j] = _mm512_reduce_add_ps(acc) * scale;
            }
        }
        for gi in 0..g {
            softmax_in_place(&mut p[gi * n..(gi + 1) * n]);
        }
        let mut acc = vec![0f32; g * d];
        for (j, pos) in (lo..hi).enumerate() {
            if mask[pos] == 0 {
                continue;
            }
            let vr = vrow(pos);
            for gi in 0..g {
                let w = _mm512_set1_ps(p[gi * n + j]);
                let a = acc.as_mut_ptr().add(gi * d);
                for c in (0..d).step_by(LANES) {
                    _mm512_storeu_ps(
                        a.add(c),
                        _mm512_fmadd_ps(w, _mm512_loadu_ps(vr.add(c)), _mm512_loadu_ps(a.add(c))),
                    );
                }
            }
        }
        let o = out.add((b * shape.heads + h * g) * d);
        std::ptr::copy_nonoverlapping(acc.as_ptr(), o, g * d);
    }
}

#[cfg(not(target_arch = "x86_64"))]
#[allow(clippy::too_many_arguments)]
unsafe fn attend_group(
    _: &[f32],
    _: *const f32,
    _: *const f32,
    _: &[u8],
    _: &AttentionShape,
    _: usize,
    _: usize,
    _: Option<Borrowed>,
    _: *mut f32,
) {
    unreachable!("the kernel runs only where `available()`")
}

/// `x ← softmax(x)`; entries of −∞ become 0 (at least one entry is finite).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn softmax_in_place(x: &mut [f32]) {
    use std::arch::x86_64::*;
    let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let n = x.len();
    let mut sum = 0f32;
    let mut i = 0;
    // SAFETY: every access is below n (the tail is masked).
    unsafe {
        let m = _mm512_set1_ps(max);
        while i < n {
            let left = n - i;
            let mask: __mmask16 = if left >= LANES {
                0xffff
            } else {
                ((1u32 << left) - 1) as u16
            };
            let e = exp512(_mm512_sub_ps(
                _mm512_maskz_loadu_ps(mask, x.as_ptr().add(i)),
                m,
            ));
            _mm512_mask_storeu_ps(x.as_mut_ptr().add(i), mask, e);
            sum += _mm512_mask_reduce_add_ps(mask, e);
            i += LANES;
        }
    }
    let inv = 1.0 / sum;
    for v in x.iter_mut() {
        *v *= inv;
    }
}

/// `eˣ` per lane for x ≤ 0 (softmax arguments): 2ⁿ · e^r with n = round(x / ln 2) and a
/// degree-7 polynomial on |r| ≤ ln 2 / 2 (relative error ≈ 1e-7); below −87 the result is 0.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn exp512(x: std::arch::x86_64::__m512) -> std::arch::x86_64::__m512 {
    use std::arch::x86_64::*;
    let tiny = _mm512_cmp_ps_mask::<_CMP_LT_OQ>(x, _mm512_set1_ps(-87.0));
    // This operand order keeps NaN (max returns its second operand when one is NaN).
    let x = _mm512_max_ps(_mm512_set1_ps(-87.0), x);
    let n = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(
        _mm512_mul_ps(x, _mm512_set1_ps(std::f32::consts::LOG2_E)),
    );
    // ln 2 in two parts, so n · ln 2 is subtracted without rounding error.
    let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693_145_75), x);
    let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(1.428_606_8e-6), r);
    let mut p = _mm512_set1_ps(1.0 / 5040.0);
    for c in [
        1.0 / 720.0,
        1.0 / 120.0,
        1.0 / 24.0,
        1.0 / 6.0,
        0.5,
        1.0,
        1.0,
    ] {
        p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(c));
    }
    _mm512_maskz_mov_ps(!tiny, _mm512_scalef_ps(p, n))
}

#[cfg(not(target_arch = "x86_64"))]
unsafe fn softmax_in_place(_: &mut [f32]) {
    unreachable!("the kernel runs only where `available()`")
}

#[cfg(test)]
mod attention_tests {
    use super::*;

    /// Values in [-2, 2): scores large enough that the softmax is far from uniform.
    fn wide(seed: &mut u64, n: usize) -> Vec<f32> {
        tests::rand(seed, n).iter().map(|x| x * 4.0).collect()
    }

    /// Key and value caches of `batch` rows × `kv_heads` × `cols` positions, and the queries
    /// of `heads` per row, all of head size `d`.
    fn inputs(
        seed: u64,
        (batch, heads, kv_heads, d): (usize, usize, usize, usize),
        cols: usize,
    ) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
        let mut seed = seed;
        let kc = wide(&mut seed, batch * kv_heads * cols * d);
        let vc = wide(&mut seed, batch * kv_heads * cols * d);
        (kc, vc, wide(&mut seed, batch * heads * d))
    }

    #[test]
    fn exp_is_accurate() {
        if !available() {
            return;
        }
        let xs: Vec<f32> = (0..2000)
            .map(|i| -(i as f32) * 0.05)
            .chain([-100.0, f32::NEG_INFINITY, 0.0])
            .collect();
        let mut y = xs.clone();
        // Through the softmax: normalised e^(x - 0), compared with f64.
        unsafe { softmax_in_place(&mut y) };
        let total: f64 = xs.iter().map(|&x| (x as f64).exp()).sum();
        for (x, got) in xs.iter().zip(&y) {
            let want = (*x as f64).exp() / total;
            assert!(
                (*got as f64 - want).abs() <= 2e-6 * want + 1e-37,
                "{x}: {got} vs {want}"
            );
        }
    }

    #[test]
    fn borrowed_spans_read_the_leader_and_give_the_same_bits() {
        if !available() {
            return;
        }
        let (batch, heads, kv_heads, d, s, len) = (4, 6, 2, 32, 12, 5);
        let strides = [kv_heads * s * d, s * d, d];
        let (mut kc, mut vc, q) = inputs(5, (batch, heads, kv_heads, d), s);
        // Rows 0, 1 and 2 hold one prompt of `len` columns, at columns 1, 3 and 1; row 3 is
        // on its own. Each row sees from its prompt's first column on.
        let starts = [1usize, 3, 1, 0];
        let mut mask = vec![0u8; batch * s];
        for b in 0..batch {
            mask[b * s + starts[b]..(b + 1) * s].fill(1);
        }
        let span = |b: usize, h: usize, c: usize| b * strides[0] + h * strides[1] + c * d;
        for c in [&mut kc, &mut vc] {
            for h in 0..kv_heads {
                for b in [1, 2] {
                    let (from, to) = (span(0, h, starts[0]), span(b, h, starts[b]));
                    c.copy_within(from..from + len * d, to);
                }
            }
        }
        let shape = AttentionShape {
            batch,
            heads,
            kv_heads,
            head_dim: d,
            s,
            k_strides: strides,
            v_strides: strides,
        };
        let mut want = vec![0f32; batch * heads * d];
        unsafe { attend_decode(&q, kc.as_ptr(), vc.as_ptr(), &mask, shape, &mut want) };
        // The followers' copies poisoned: any read of them would give NaN.
        for c in [&mut kc, &mut vc] {
            for h in 0..kv_heads {
                for b in [1, 2] {
                    c[span(b, h, starts[b])..span(b, h, starts[b]) + len * d].fill(f32::NAN);
                }
            }
        }
        let lend = |b: usize| Borrowed {
            leader: 0,
            leader_col: starts[0],
            own_col: starts[b],
            len,
        };
        let borrowed = [None, Some(lend(1)), Some(lend(2)), None];
        let mut got = vec![f32::NAN; batch * heads * d];
        unsafe {
            attend_decode_borrowing(
                &q,
                kc.as_ptr(),
                vc.as_ptr(),
                &mask,
                shape,
                &borrowed,
                &mut got,
            )
        };
        assert_eq!(
            got.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
            want.iter().map(|x| x.to_bits()).collect::<Vec<_>>()
        );
    }

    #[test]
    fn decode_attention_equals_the_definition() {
        if !available() {
            return;
        }
        let (batch, heads, kv_heads, d, cap, s) = (3, 6, 2, 32, 12, 9);
        // Caches of capacity `cap`, attention over the window 2..2+s (a strided view).
        let (kc, vc, q) = inputs(11, (batch, heads, kv_heads, d), cap);
        // Row 0 sees everything, row 1 a suffix (left padding), row 2 a hole in the middle.
        let mut mask = vec![1u8; batch * s];
        mask[s..s + 4].fill(0);
        mask[2 * s + 3] = 0;
        let strides = [kv_heads * cap * d, cap * d, d];
        let shape = AttentionShape {
            batch,
            heads,
            kv_heads,
            head_dim: d,
            s,
            k_strides: strides,
            v_strides: strides,
        };
        let mut out = vec![f32::NAN; batch * heads * d];
        unsafe {
            attend_decode(
                &q,
                kc.as_ptr().add(2 * d),
                vc.as_ptr().add(2 * d),
                &mask,
                shape,
                &mut out,
            )
        };
        let g = heads / kv_heads;
        for b in 0..batch {
            for hq in 0..heads {
                let h = hq / g;
                let at = |c: &[f32], p: usize, i: usize| {
                    c[b * strides[0] + h * strides[1] + (p + 2) * d + i] as f64
                };
                let scores: Vec<Option<f64>> = (0..s)
                    .map(|p| {
                        (mask[b * s + p] != 0).then(|| {
                            (0..d)
                                .map(|i| q[(b * heads + hq) * d + i] as f64 * at(&kc, p, i))
                                .sum::<f64>()
                                / (d as f64).sqrt()
                        })
                    })
                    .collect();
                let max = scores
                    .iter()
                    .flatten()
                    .fold(f64::NEG_INFINITY, |a, &x| a.max(x));
                let w: Vec<f64> = scores
                    .iter()
                    .map(|x| x.map_or(0.0, |x| (x - max).exp()))
                    .collect();
                let total: f64 = w.iter().sum();
                for i in 0..d {
                    let want: f64 = (0..s).map(|p| w[p] / total * at(&vc, p, i)).sum();
                    let got = out[(b * heads + hq) * d + i] as f64;
                    assert!(
                        (got - want).abs() < 1e-5,
                        "b {b} head {hq} dim {i}: {got} vs {want}"
                    );
                }
            }
        }
    }
}
