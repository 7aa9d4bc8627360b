//! `cargo run -p spar-gemm --example speed`: the kernel on SmolLM2-135M's projection shapes
//! (30 layers, weights streamed from memory), milliseconds per decode step by row count
//! (`-- 128 512` for other row counts, e.g. a prefill's), and GFLOP/s.
use std::time::Instant;

fn main() {
    let shapes = [(960usize, 576usize), (576, 576), (3072, 576), (576, 1536)];
    let mut seed = 1u64;
    let mut rnd = |n: usize| -> Vec<f32> {
        (0..n)
            .map(|_| {
                seed = seed
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((seed >> 40) as f32 / (1u64 << 24) as f32) - 0.5
            })
            .collect()
    };
    let layers: Vec<Vec<spar_gemm::Packed>> = (0..30)
        .map(|_| {
            shapes
                .iter()
                .map(|&(n, k)| spar_gemm::Packed::new(&rnd(n * k), n, k, None))
                .collect()
        })
        .collect();
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let rows = if args.is_empty() {
        vec![1usize, 2, 4, 8, 12, 16, 24, 32, 48, 64]
    } else {
        args
    };
    let flops_per_row: usize = shapes.iter().map(|&(n, k)| 2 * n * k * 30).sum();
    for m in rows {
        let xs: Vec<Vec<f32>> = shapes.iter().map(|&(_, k)| rnd(m * k)).collect();
        let mut ys: Vec<Vec<f32>> = shapes.iter().map(|&(n, _)| vec![0f32; m * n]).collect();
        let mut best = f64::MAX;
        for _ in 0..5 {
            let t = Instant::now();
            for l in &layers {
                for (i, p) in l.iter().enumerate() {
                    p.forward(&xs[i], m, &mut ys[i]);
                }
            }
            best = best.min(t.elapsed().as_secs_f64() * 1e3);
        }
        let gflops = (m * flops_per_row) as f64 / best / 1e6;
        println!("rows {m:>3}: {best:.1} ms per step, {gflops:.0} GFLOP/s");
    }
}
