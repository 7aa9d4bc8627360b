//! The SPaR self-play pipeline (§3). So far: judging by vote and the model-backed host of the
//! tree search (`judge`), what the pipeline reads off a searched tree (`tree`), and the replay
//! of the reference tree-search vectors through a search plugin (`replay`).

pub mod judge;
pub mod pipeline;
pub mod replay;
pub mod tree;
