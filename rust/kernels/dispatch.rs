//! Runtime CPU dispatch: picks the best instruction set once, and lets tests force a lower one.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::OnceLock;

use super::math::ExpConstants;
use super::simd::Simd;
#[cfg(target_arch = "aarch64")]
use super::simd_neon::Neon;
use super::simd_portable::Portable;
#[cfg(target_arch = "x86_64")]
use super::simd_x86::{Avx2, Avx512};

/// An instruction-set level, best first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Avx512,
    Avx2,
    Neon,
    Portable,
}

impl Level {
    pub const ALL: [Level; 4] = [Level::Avx512, Level::Avx2, Level::Neon, Level::Portable];

    pub fn name(self) -> &'static str {
        match self {
            Level::Avx512 => "avx512",
            Level::Avx2 => "avx2",
            Level::Neon => "neon",
            Level::Portable => "portable",
        }
    }

    pub fn parse(name: &str) -> Option<Level> {
        Level::ALL.into_iter().find(|level| level.name() == name)
    }

    /// Whether this CPU can run the level.
    pub fn is_supported(self) -> bool {
        match self {
            #[cfg(target_arch = "x86_64")]
            Level::Avx512 => Avx512::<f32>::detect().is_some(),
            #[cfg(target_arch = "x86_64")]
            Level::Avx2 => Avx2::<f32>::detect().is_some(),
            #[cfg(not(target_arch = "x86_64"))]
            Level::Avx512 | Level::Avx2 => false,
            // Every aarch64 CPU has NEON: the target itself guarantees it.
            Level::Neon => cfg!(target_arch = "aarch64"),
            Level::Portable => true,
        }
    }
}

fn detected_level() -> Level {
    static DETECTED: OnceLock<Level> = OnceLock::new();
    *DETECTED.get_or_init(|| {
        Level::ALL
            .into_iter()
            .find(|level| level.is_supported())
            .unwrap_or(Level::Portable)
    })
}

const NOT_FORCED: u8 = u8::MAX;
static FORCED: AtomicU8 = AtomicU8::new(NOT_FORCED);

/// The level new work runs at: the best detected one, unless a test forced another.
pub fn active_level() -> Level {
    match FORCED.load(Ordering::Relaxed) {
        NOT_FORCED => detected_level(),
        index => Level::ALL[index as usize],
    }
}

/// Forces a level (`None` returns to the detected one). Refuses a level this CPU cannot run.
pub fn force_level(level: Option<Level>) -> Result<(), Level> {
    match level {
        None => FORCED.store(NOT_FORCED, Ordering::Relaxed),
        Some(level) if level.is_supported() => {
            let index = Level::ALL
                .iter()
                .position(|l| *l == level)
                .expect("every level is in Level::ALL");
            FORCED.store(index as u8, Ordering::Relaxed)
        }
        Some(level) => return Err(level),
    }
    Ok(())
}

/// A piece of work written once, generically, for any `Simd` of element type `E`.
pub trait SimdTask<E> {
    type Output;
    fn run<S: Simd<Elem = E>>(self, simd: S) -> Self::Output;
}

/// Element types the kernels are instantiated for.
pub trait DispatchElement: ExpConstants + Sized {
    /// Runs `task` at `level`, which must be supported (else it falls back to portable).
    fn dispatch<T: SimdTask<Self>>(level: Level, task: T) -> T::Output;
}

macro_rules! impl_dispatch {
    ($e:ty) => {
        impl DispatchElement for $e {
            #[inline]
            fn dispatch<T: SimdTask<$e>>(level: Level, task: T) -> T::Output {
                // Each task runs as a function of its own per level, never inlined into the
                // task that dispatched it: a task dispatched from inside a generic one (the
                // layers, from each input type's packing) is then compiled once, not once per
                // caller.
                #[inline(never)]
                fn run_portable<T: SimdTask<$e>>(task: T) -> T::Output {
                    task.run(Portable::<$e>::new())
                }
                #[cfg(target_arch = "x86_64")]
                {
                    #[inline(never)]
                    #[target_feature(enable = "avx512f,avx2,fma,popcnt")]
                    fn run_avx512<T: SimdTask<$e>>(simd: Avx512<$e>, task: T) -> T::Output {
                        task.run(simd)
                    }
                    #[inline(never)]
                    #[target_feature(enable = "avx2,fma,popcnt")]
                    fn run_avx2<T: SimdTask<$e>>(simd: Avx2<$e>, task: T) -> T::Output {
                        task.run(simd)
                    }
                    match level {
                        Level::Avx512 => {
                            if let Some(simd) = Avx512::<$e>::detect() {
                                // SAFETY: the token's existence proves avx512f, avx2, fma and popcnt.
                                return unsafe { run_avx512(simd, task) };
                            }
                        }
                        Level::Avx2 => {
                            if let Some(simd) = Avx2::<$e>::detect() {
                                // SAFETY: the token's existence proves avx2, fma and popcnt are available.
                                return unsafe { run_avx2(simd, task) };
                            }
                        }
                        Level::Neon | Level::Portable => {}
                    }
                }
                #[cfg(target_arch = "aarch64")]
                {
                    // NEON is baseline on aarch64, so no `#[target_feature]` entry point (and no
                    // `unsafe`) is needed: the generic code is already compiled with it.
                    #[inline(never)]
                    fn run_neon<T: SimdTask<$e>>(task: T) -> T::Output {
                        task.run(Neon::<$e>::new())
                    }
                    if level == Level::Neon {
                        return run_neon(task);
                    }
                }
                let _ = level;
                run_portable(task)
            }
        }
    };
}

impl_dispatch!(f32);
impl_dispatch!(f64);
