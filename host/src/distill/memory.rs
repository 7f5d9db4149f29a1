//! Keeps freed memory in the process between training steps.
//!
//! A training step allocates every layer's activations and gradients (a
//! MobileNet at 96×96 holds megabytes per layer) and frees them at its
//! end. With glibc's defaults, blocks that large are returned to the kernel
//! when freed (`munmap`, or a trimmed heap top), and the next step faults
//! every page back in, zeroed by the kernel: measured at two thirds of a
//! depthwise layer's forward time on 48×48 maps. Raising the thresholds
//! makes freed blocks stay in the heap for the next step.

/// Largest block served from the heap instead of its own mapping: glibc's
/// ceiling on 64-bit (`DEFAULT_MMAP_THRESHOLD_MAX`, 32 MiB); larger values
/// are refused.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const MMAP_THRESHOLD: i32 = 32 << 20;

/// Raises the allocator's thresholds once per process (glibc on Linux; a
/// no-op elsewhere).
pub fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        static ONCE: std::sync::Once = std::sync::Once::new();
        ONCE.call_once(|| {
            // SAFETY: `mallopt` only sets allocator parameters; it is
            // thread-safe (it takes the arena locks) and a refused value
            // leaves the default in place.
            #[allow(unsafe_code)]
            unsafe {
                libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
                libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
                libc::mallopt(libc::M_TOP_PAD, 64 << 20);
            }
        });
    }
}
