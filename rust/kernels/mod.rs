//! The compute kernels, layered as in BLIS: SIMD vocabulary, math, packing, micro-kernels, the
//! loops around them, and the dispatch that picks an instruction set at run time.

pub mod dispatch;
pub mod elementwise;
pub mod forward;
pub mod math;
pub mod microkernel;
pub mod pack;
pub mod peak;
pub mod simd;

#[cfg(test)]
mod tests;
