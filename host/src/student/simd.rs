//! Run-time choice of the CPU's vector instructions.
//!
//! The crate is compiled for baseline x86-64 (SSE2) so one binary runs on
//! any machine. The trainer's plain loops (depthwise taps, BatchNorm,
//! activations) are written for the compiler to vectorise; [`vectorised`]
//! compiles such a loop a second time with AVX2 enabled and runs that copy
//! when the CPU has it: eight lanes where SSE2 has four. The results are the
//! same bit for bit (the same operations on each value in the same order;
//! the compiler does not fuse a multiply and an add on its own).

/// Whether this CPU has AVX2 and FMA (the hand-written kernels' instruction set).
pub(crate) fn avx2_fma() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        static HAS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        *HAS.get_or_init(|| is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma"))
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// `f()`, compiled with AVX2 and run that way when the CPU has it. `f`
/// must be inlined into this function for that to help: mark the function
/// it calls `#[inline(always)]`.
#[inline(always)]
pub(crate) fn vectorised<R>(f: impl FnOnce() -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx2,fma")]
        #[allow(unsafe_code)]
        unsafe fn avx2<R>(f: impl FnOnce() -> R) -> R {
            f()
        }
        if avx2_fma() {
            // SAFETY: the CPU has the features `avx2` was compiled for.
            #[allow(unsafe_code)]
            return unsafe { avx2(f) };
        }
    }
    f()
}
