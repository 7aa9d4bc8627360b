//! Benchmarks of instruction following: IFEval (`spar-host eval ifeval`).

pub mod ifeval;
