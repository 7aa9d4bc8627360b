//! libtorch tensors through the small-batch kernel of `spar-gemm` (decode steps on CPUs with
//! AVX-512; see that crate for why).

use tch::{Device, Kind, Tensor};

pub use spar_gemm::{available, set_threads};

fn host_f32(t: &Tensor) -> Vec<f32> {
    tch::no_grad(|| {
        Vec::try_from(
            t.to_device(Device::Cpu)
                .to_kind(Kind::Float)
                .contiguous()
                .flatten(0, -1),
        )
    })
    .expect("f32 values")
}

/// A weight `[N, K]` (any strides) and optional bias `[N]`, packed for `x · Wᵀ + b`.
pub struct Packed(spar_gemm::Packed);

impl Packed {
    pub fn new(w: &Tensor, bias: Option<&Tensor>) -> Self {
        let (n, k) = w.size2().expect("a weight matrix");
        Self(spar_gemm::Packed::new(
            &host_f32(w),
            n as usize,
            k as usize,
            bias.map(host_f32),
        ))
    }

    /// `x · Wᵀ + b` for an f32 CPU tensor `x` of shape `[.., K]`; the result is `[.., N]`.
    pub fn forward(&self, x: &Tensor) -> Tensor {
        let k = self.0.in_features();
        let mut shape = x.size();
        assert_eq!(shape.last(), Some(&(k as i64)), "input features");
        assert_eq!(x.kind(), Kind::Float, "f32 input");
        assert_eq!(x.device(), Device::Cpu, "input on the CPU");
        *shape.last_mut().expect("an input row") = self.0.out_features() as i64;
        let y = Tensor::empty(&shape[..], (Kind::Float, Device::Cpu));
        if x.numel() == 0 {
            return y;
        }
        let x = x.contiguous();
        let m = x.numel() / k;
        // SAFETY: both tensors are contiguous f32 on the CPU with m rows of k and N floats;
        // `y` is fresh, so nothing else aliases it.
        let (xs, ys) = unsafe {
            (
                std::slice::from_raw_parts(x.data_ptr() as *const f32, m * k),
                std::slice::from_raw_parts_mut(y.data_ptr() as *mut f32, m * self.0.out_features()),
            )
        };
        self.0.forward(xs, m, ys);
        y
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tensors_through_the_kernel_equal_libtorch() {
        if !available() {
            return;
        }
        tch::manual_seed(7);
        let w = Tensor::randn([100, 577], (Kind::Float, Device::Cpu));
        let b = Tensor::randn([100], (Kind::Float, Device::Cpu));
        // A transposed view as the weight: the packing reads any strides.
        let wt = w.tr().contiguous().tr();
        for (p, bias) in [
            (Packed::new(&w, Some(&b)), Some(&b)),
            (Packed::new(&wt, None), None),
        ] {
            for m in [1, 5, 16, 33] {
                let x = Tensor::randn([m, 1, 577], (Kind::Float, Device::Cpu));
                let got = p.forward(&x);
                let want = x.linear(&w, bias);
                assert_eq!(got.size(), want.size());
                let diff = (got - want).abs().max().double_value(&[]);
                // Sums of 577 products of magnitude ~1 (values ~±70): f32 rounding.
                assert!(diff < 1e-3, "m {m}: {diff}");
            }
        }
    }
}
