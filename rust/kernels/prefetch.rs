//! Prefetch hints: the cache lines a kernel asks for while it computes, and the one instruction
//! that asks.

/// Cache lines a kernel asks the memory system for while it computes, one at a time so the
/// requests overlap the arithmetic instead of queueing behind each other. Without it the next
/// chunk's input rows arrive only when packing stalls on them (on a 2-core Zen 3, 15% of a
/// 10,000-row pass). A hint only: prefetching never faults and changes no result.
#[derive(Clone, Copy, Debug)]
pub struct Prefetch {
    first: *const u8,
    lines: usize,
}

// SAFETY: the pointer is never dereferenced, only handed to prefetch hints, which read nothing
// and never fault; any thread may issue them.
unsafe impl Send for Prefetch {}
// SAFETY: as above.
unsafe impl Sync for Prefetch {}

impl Prefetch {
    pub const CACHE_LINE: usize = 64;
    pub const NONE: Prefetch = Prefetch {
        first: std::ptr::null(),
        lines: 0,
    };

    /// Every cache line `data` touches (from the line holding its first byte).
    pub fn of<T>(data: &[T]) -> Prefetch {
        if data.is_empty() {
            return Prefetch::NONE;
        }
        let start = data.as_ptr() as usize;
        let misalignment = start % Self::CACHE_LINE;
        Prefetch {
            first: data.as_ptr().cast::<u8>().wrapping_sub(misalignment),
            lines: (misalignment + std::mem::size_of_val(data)).div_ceil(Self::CACHE_LINE),
        }
    }

    pub fn lines(self) -> usize {
        self.lines
    }

    /// Share `index` of `shares` consecutive shares whose sizes differ by at most one line.
    pub fn share(self, index: usize, shares: usize) -> Prefetch {
        let shares = shares.max(1);
        let start = index.min(shares) * self.lines / shares;
        let end = (index + 1).min(shares) * self.lines / shares;
        Prefetch {
            first: self.first.wrapping_add(start * Self::CACHE_LINE),
            lines: end - start,
        }
    }

    /// Requests line `line`, if it is one of this range's, into L2 rather than L1: the lines
    /// are next read a whole layer later, and a chunk of rows (50-100 KB) outsizes L1.
    #[inline(always)]
    pub fn request(self, line: usize) {
        if line < self.lines {
            prefetch_line_to_l2(self.first.wrapping_add(line * Self::CACHE_LINE));
        }
    }
}

/// Asks for the cache line holding `address` to be brought into L2. A hint: it never faults,
/// whatever the address (so callers may point past the end of their data), and is a no-op off
/// x86-64 and aarch64.
#[inline(always)]
pub fn prefetch_line_to_l2<T>(address: *const T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: PREFETCHT1 is baseline SSE on x86-64; it reads nothing and never faults.
    unsafe {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T1};
        _mm_prefetch::<_MM_HINT_T1>(address.cast());
    }
    #[cfg(target_arch = "aarch64")]
    // SAFETY: PRFM is in the aarch64 base instruction set; a prefetch hint loads nothing into
    // a register, writes no memory or flags, and never faults, whatever the address.
    unsafe {
        std::arch::asm!(
            "prfm pldl2keep, [{0}]",
            in(reg) address,
            options(nostack, preserves_flags, readonly)
        );
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    let _ = address;
}

// ---------------------------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use super::Prefetch;

    #[test]
    fn prefetch_shares_cover_every_line_once_in_order() {
        let buffer = vec![0u8; 50_100];
        let offset = (Prefetch::CACHE_LINE - buffer.as_ptr() as usize % 64) % 64 + 16;
        let data = &buffer[offset..offset + 50_000]; // starts 16 bytes into a line
        let all = Prefetch::of(data);
        assert_eq!(all.first as usize % Prefetch::CACHE_LINE, 0);
        assert_eq!(all.first, data.as_ptr().wrapping_sub(16));
        assert_eq!(
            all.lines(),
            (16 + 50_000usize).div_ceil(Prefetch::CACHE_LINE)
        );
        for shares in [1, 2, 5, 9, 783, 784, 800] {
            let mut next = all.first;
            let mut total = 0;
            for index in 0..shares {
                let share = all.share(index, shares);
                let even = all.lines() / shares;
                assert!(share.lines() == even || share.lines() == even + 1);
                assert_eq!(
                    share.first, next,
                    "{shares} shares: share {index} not contiguous"
                );
                next = share
                    .first
                    .wrapping_add(share.lines() * Prefetch::CACHE_LINE);
                total += share.lines();
            }
            assert_eq!(total, all.lines(), "{shares} shares");
        }
        assert_eq!(Prefetch::of::<f32>(&[]).lines(), 0);
        Prefetch::NONE.request(0); // out of range: a no-op
    }
}
