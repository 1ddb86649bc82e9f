//! The calling thread's SSE floating-point status flags (MXCSR), read and cleared for tests.
//!
//! fastmlp never changes the floating-point environment: its kernels avoid subnormal numbers
//! by construction (`kernels::math`), not by flush-to-zero modes, so there is nothing to
//! restore. These functions let the tests prove it on any x86-64 CPU: timing shows the cost of
//! a subnormal only on Intel cores, but the denormal-operand (DE) and underflow (UE) flags are
//! raised on every vendor.

/// The MXCSR status flags, bits 0-5: invalid, denormal operand, divide by zero, overflow,
/// underflow, precision.
pub const STATUS_FLAGS: u32 = 0x3f;

/// The calling thread's MXCSR register (status flags and control bits), or `None` where the
/// architecture has none.
pub fn mxcsr() -> Option<u32> {
    #[cfg(target_arch = "x86_64")]
    {
        let mut value: u32 = 0;
        // SAFETY: `stmxcsr` stores the 4-byte MXCSR to the address given, which is `value`'s,
        // a live, aligned u32 on this stack frame; it changes no register or flag.
        unsafe {
            std::arch::asm!(
                "stmxcsr [{0}]",
                in(reg) &mut value as *mut u32,
                options(nostack, preserves_flags)
            )
        };
        Some(value)
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        None
    }
}

/// Clears the calling thread's MXCSR status flags, keeping every control bit (rounding,
/// exception masks, flush-to-zero and denormals-are-zero) as it was.
pub fn clear_status_flags() {
    #[cfg(target_arch = "x86_64")]
    if let Some(current) = mxcsr() {
        let cleared = current & !STATUS_FLAGS;
        // SAFETY: `ldmxcsr` loads MXCSR from `cleared`, a live aligned u32. Only the sticky
        // status flags change; the control bits the compiled code relies on are rewritten
        // with the values they already had.
        unsafe {
            std::arch::asm!(
                "ldmxcsr [{0}]",
                in(reg) &cleared as *const u32,
                options(nostack, preserves_flags, readonly)
            )
        };
    }
}
