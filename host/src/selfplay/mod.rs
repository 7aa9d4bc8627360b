//! The SPaR self-play pipeline (§3). So far: what the pipeline reads off a searched tree, and
//! the replay of the reference tree-search vectors through a search plugin.

pub mod replay;
pub mod tree;
