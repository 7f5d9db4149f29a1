//! Peak stack use by painting: fill the free stack with a pattern at boot,
//! later find the lowest word that changed.

const PAINT: u32 = 0xC0DE_C0DE;
/// How far below the current stack pointer the stack is painted at most.
const PAINT_BYTES: usize = 64 * 1024;

unsafe extern "C" {
    /// Top of the stack (cortex-m-rt and riscv-rt both define it).
    static _stack_start: u32;
}

#[cfg(all(target_arch = "arm", feature = "cortex-m"))]
unsafe extern "C" {
    /// Lowest address the stack may reach (cortex-m-rt).
    static _stack_end: u32;
}

#[cfg(all(target_arch = "riscv32", feature = "riscv"))]
unsafe extern "C" {
    /// Lowest address of the stack region (riscv-rt).
    static __estack: u32;
}

fn stack_limit() -> usize {
    #[cfg(all(target_arch = "arm", feature = "cortex-m"))]
    return core::ptr::addr_of!(_stack_end) as usize;
    #[cfg(all(target_arch = "riscv32", feature = "riscv"))]
    return core::ptr::addr_of!(__estack) as usize;
    #[allow(unreachable_code)]
    0
}

#[inline(always)]
fn stack_pointer() -> usize {
    let sp: usize;
    // SAFETY: reads the stack pointer register, nothing else.
    #[cfg(target_arch = "arm")]
    unsafe {
        core::arch::asm!("mov {}, sp", out(reg) sp, options(nomem, nostack, preserves_flags))
    };
    // SAFETY: as above.
    #[cfg(target_arch = "riscv32")]
    unsafe {
        core::arch::asm!("mv {}, sp", out(reg) sp, options(nomem, nostack, preserves_flags))
    };
    #[cfg(not(any(target_arch = "arm", target_arch = "riscv32")))]
    {
        sp = 0;
    }
    sp
}

/// Fills the unused stack below the current frame with a pattern; returns
/// the lowest painted address (0: nothing painted).
#[inline(never)]
pub fn paint() -> usize {
    let sp = stack_pointer();
    let limit = stack_limit();
    if limit == 0 || sp <= limit + 512 {
        return 0;
    }
    let bottom = (sp.saturating_sub(PAINT_BYTES).max(limit) + 3) & !3;
    let top = sp - 256; // leave this function's own frame alone
    let mut p = bottom;
    while p < top {
        // SAFETY: [bottom, sp − 256) is unused stack between the static
        // data and the live frames; nothing else owns it.
        unsafe { core::ptr::write_volatile(p as *mut u32, PAINT) };
        p += 4;
    }
    bottom
}

/// Bytes of stack used at the deepest point since [`paint`] (0 when
/// nothing was painted).
pub fn peak(bottom: usize) -> usize {
    if bottom == 0 {
        return 0;
    }
    let top = core::ptr::addr_of!(_stack_start) as usize;
    let mut p = bottom;
    // SAFETY: reads within the painted region, which is plain RAM.
    while p < top && unsafe { core::ptr::read_volatile(p as *const u32) } == PAINT {
        p += 4;
    }
    top - p
}
