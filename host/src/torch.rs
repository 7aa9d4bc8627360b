//! The libtorch runtime as the host sees it.

/// Versions and devices of the linked libtorch, for `spar-host info`.
#[derive(Debug, serde::Serialize)]
pub struct TorchInfo {
    pub cuda: bool,
    pub cuda_devices: i64,
    pub threads: i32,
    /// A small matmul computed through libtorch, proving the library loads and runs.
    pub check: f64,
}

pub fn info() -> TorchInfo {
    let a = tch::Tensor::arange(6, (tch::Kind::Float, tch::Device::Cpu)).view([2, 3]);
    let b = a.transpose(0, 1);
    let check = a.matmul(&b).sum(tch::Kind::Double).double_value(&[]);
    TorchInfo {
        cuda: tch::Cuda::is_available(),
        cuda_devices: tch::Cuda::device_count(),
        threads: tch::get_num_threads(),
        check,
    }
}
