//! The compute kernels, layered as in BLIS: SIMD vocabulary (one file per instruction set), math,
//! packing, micro-kernels, the loops around them, and the dispatch that picks an instruction set
//! at run time; scratch buffers and prefetch hints beside them.

pub mod dispatch;
pub mod elementwise;
pub mod forward;
pub mod math;
pub mod microkernel;
pub mod pack;
pub mod peak;
pub mod prefetch;
pub mod scratch;
pub mod simd;
pub mod simd_interleaved;
#[cfg(target_arch = "aarch64")]
pub mod simd_neon;
pub mod simd_portable;
#[cfg(target_arch = "x86_64")]
pub mod simd_x86;

#[cfg(test)]
mod tests;
