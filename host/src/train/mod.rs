//! Training: the objectives (SFT, DPO with an SFT term) and the optimizer and schedule they
//! share. A tool the pipeline uses; it knows nothing of plugins.

pub mod data;
pub mod loss;
pub mod optim;
pub mod trainer;
