//! Armv7-M (Cortex-M3, and M4/M7 for runs too short for SMLAD's words):
//! LLVM spills two of [`super::dot2x2`]'s four
//! accumulators to the stack once it unrolls the loop; written by hand the
//! loop keeps all twelve values in registers: 4 byte loads and 4 `mla` per
//! input byte, unrolled by two: 18 instructions per 8 multiply-accumulates.

/// One input byte of each run: 4 loads, 4 multiply-accumulates.
macro_rules! byte_step {
    () => {
        concat!(
            "ldrsb {p}, [{x0}], #1\n",
            "ldrsb {q}, [{x1}], #1\n",
            "ldrsb {w}, [{a}], #1\n",
            "mla {s0}, {p}, {w}, {s0}\n",
            "mla {s2}, {q}, {w}, {s2}\n",
            "ldrsb {w}, [{b}], #1\n",
            "mla {s1}, {p}, {w}, {s1}\n",
            "mla {s3}, {q}, {w}, {s3}",
        )
    };
}

#[inline(always)]
pub(super) fn dot2x2(x0: &[i8], x1: &[i8], a: &[i8], b: &[i8]) -> [i32; 4] {
    let n = x0.len().min(x1.len()).min(a.len()).min(b.len());
    if n == 0 {
        return [0; 4];
    }
    // SAFETY: `n ≥ 1` bytes are readable from each run (checked above).
    #[allow(unsafe_code)]
    unsafe {
        accumulate(x0.as_ptr(), x1.as_ptr(), a.as_ptr(), b.as_ptr(), n, [0; 4])
    }
}

/// [`super::window2x2`]: the rows' runs through one accumulator set, so
/// the four sums stay in registers from row to row.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub(super) fn window2x2(
    x0: &[i8],
    x1: &[i8],
    x_stride: usize,
    a: &[i8],
    b: &[i8],
    w_stride: usize,
    len: usize,
    rows: usize,
) -> [i32; 4] {
    let (Some(x_span), Some(w_span)) = (super::span(rows, x_stride, len), super::span(rows, w_stride, len)) else {
        return [0; 4];
    };
    if len == 0 || x0.len().min(x1.len()) < x_span || a.len().min(b.len()) < w_span {
        return [0; 4];
    }
    let mut s = [0i32; 4];
    for r in 0..rows {
        let (xo, wo) = (r * x_stride, r * w_stride);
        // SAFETY: row `r` reads bytes `xo..xo + len` of `x0` and `x1` and
        // `wo..wo + len` of `a` and `b`, all below the spans checked above.
        #[allow(unsafe_code)]
        unsafe {
            s = accumulate(x0.as_ptr().add(xo), x1.as_ptr().add(xo), a.as_ptr().add(wo), b.as_ptr().add(wo), len, s);
        }
    }
    s
}

/// One 16-bit value of each of two pixels against two weights.
macro_rules! wide2x2_step {
    () => {
        concat!(
            "ldrsh {p}, [{x0}], #2\n",
            "ldrsh {q}, [{x1}], #2\n",
            "ldrsb {w}, [{a}], #1\n",
            "mla {s0}, {p}, {w}, {s0}\n",
            "mla {s2}, {q}, {w}, {s2}\n",
            "ldrsb {w}, [{b}], #1\n",
            "mla {s1}, {p}, {w}, {s1}\n",
            "mla {s3}, {q}, {w}, {s3}",
        )
    };
}

/// One 16-bit value of each of two pixels against three weights, the
/// second pixel `{x1}` bytes after the first and the filters `{b}` and
/// `{c}` bytes after the first (offsets after the post-increments).
macro_rules! wide2x3_step {
    () => {
        concat!(
            "ldrsh {p}, [{x}], #2\n",
            "ldrsh {q}, [{x}, #{x1}]\n",
            "ldrsb {w}, [{f}], #1\n",
            "mla {s0}, {p}, {w}, {s0}\n",
            "mla {s3}, {q}, {w}, {s3}\n",
            "ldrsb {w}, [{f}, #{b}]\n",
            "mla {s1}, {p}, {w}, {s1}\n",
            "mla {s4}, {q}, {w}, {s4}\n",
            "ldrsb {w}, [{f}, #{c}]\n",
            "mla {s2}, {p}, {w}, {s2}\n",
            "mla {s5}, {q}, {w}, {s5}",
        )
    };
}

/// [`super::dot2x3_wide`] (`f` is `3·W` long), unrolled by four; the
/// last `W % 4` values through the portable loop.
#[inline(always)]
pub(super) fn dot2x3_wide<const W: usize>(x: &[[i16; W]; 2], f: &[i8]) -> [i32; 6] {
    let (quads, t) = (W / 4, W / 4 * 4);
    let f = &f[..3 * W];
    let tail = |x: &[i16; W], k: usize| {
        let w = &f[k * W + t..(k + 1) * W];
        super::dot2_wide(&x[t..], w, w)[0]
    };
    let mut s = [tail(&x[0], 0), tail(&x[0], 1), tail(&x[0], 2), tail(&x[1], 0), tail(&x[1], 1), tail(&x[1], 2)];
    if quads == 0 {
        return s;
    }
    let [mut s0, mut s1, mut s2, mut s3, mut s4, mut s5] = s;
    // SAFETY: the loop reads values `0..4·quads ≤ W` of both pixels
    // (`x` holds `2·W` contiguous values) and weights `0..4·quads` of
    // each of the three filters (`f` is `3·W` long, checked above by
    // slicing); it writes only the listed registers and touches no
    // other memory or the stack.
    #[allow(unsafe_code)]
    unsafe {
        core::arch::asm!(
            four_steps_loop!(wide2x3_step),
            x = inout(reg) x.as_ptr() => _,
            f = inout(reg) f.as_ptr() => _,
            n = inout(reg) quads => _,
            s0 = inout(reg) s0,
            s1 = inout(reg) s1,
            s2 = inout(reg) s2,
            s3 = inout(reg) s3,
            s4 = inout(reg) s4,
            s5 = inout(reg) s5,
            p = out(reg) _,
            q = out(reg) _,
            w = out(reg) _,
            x1 = const (2 * W).saturating_sub(2),
            b = const W.saturating_sub(1),
            c = const (2 * W).saturating_sub(1),
            options(nostack, readonly),
        );
    }
    s = [s0, s1, s2, s3, s4, s5];
    s
}

/// One input byte against four rows, the second to fourth `{b}`, `{c}`,
/// `{d}` bytes after the first (offsets after the post-increment).
#[cfg(tinykd_v7m)]
macro_rules! row4_step {
    () => {
        concat!(
            "ldrsb {p}, [{x}], #1\n",
            "ldrsb {w}, [{f}], #1\n",
            "mla {s0}, {p}, {w}, {s0}\n",
            "ldrsb {w}, [{f}, #{b}]\n",
            "mla {s1}, {p}, {w}, {s1}\n",
            "ldrsb {w}, [{f}, #{c}]\n",
            "mla {s2}, {p}, {w}, {s2}\n",
            "ldrsb {w}, [{f}, #{d}]\n",
            "mla {s3}, {p}, {w}, {s3}",
        )
    };
}

/// [`super::dot1x4`] (`f` is `4·W` long, `W` ≤ [`super::ROW4_MAX`]),
/// unrolled by four; the last `W % 4` bytes through the portable loop.
#[cfg(tinykd_v7m)]
#[inline(always)]
pub(super) fn dot1x4<const W: usize>(x: &[i8; W], f: &[i8]) -> [i32; 4] {
    let (quads, t) = (W / 4, W / 4 * 4);
    let f = &f[..4 * W];
    let tail = |k: usize| super::dot(&x[t..], &f[k * W + t..(k + 1) * W]);
    let [mut s0, mut s1, mut s2, mut s3] = [tail(0), tail(1), tail(2), tail(3)];
    if quads == 0 {
        return [s0, s1, s2, s3];
    }
    // SAFETY: the loop reads bytes `0..4·quads ≤ W` of `x` and of each of
    // the four rows (`f` is `4·W` long, checked above by slicing; the
    // largest offset, `3·W − 1`, fits the load's immediate as `W` ≤
    // `ROW4_MAX`); it writes only the listed registers and touches no
    // other memory or the stack.
    #[allow(unsafe_code)]
    unsafe {
        core::arch::asm!(
            four_steps_loop!(row4_step),
            x = inout(reg) x.as_ptr() => _,
            f = inout(reg) f.as_ptr() => _,
            n = inout(reg) quads => _,
            s0 = inout(reg) s0,
            s1 = inout(reg) s1,
            s2 = inout(reg) s2,
            s3 = inout(reg) s3,
            p = out(reg) _,
            w = out(reg) _,
            b = const W.saturating_sub(1),
            c = const (2 * W).saturating_sub(1),
            d = const (3 * W).saturating_sub(1),
            options(nostack, readonly),
        );
    }
    [s0, s1, s2, s3]
}

/// [`super::dot2x2_wide`] over runs of equal length, unrolled by four.
#[inline(always)]
pub(super) fn dot2x2_wide(x0: &[i16], x1: &[i16], a: &[i8], b: &[i8]) -> [i32; 4] {
    let n = x0.len().min(x1.len()).min(a.len()).min(b.len());
    let quads = n / 4;
    let t = quads * 4;
    let tail0 = super::dot2_wide(&x0[t..n], &a[t..n], &b[t..n]);
    let tail1 = super::dot2_wide(&x1[t..n], &a[t..n], &b[t..n]);
    let [mut s0, mut s1, mut s2, mut s3] = [tail0[0], tail0[1], tail1[0], tail1[1]];
    if quads == 0 {
        return [s0, s1, s2, s3];
    }
    // SAFETY: the loop reads `quads · 4 ≤ n` values from each slice (`n`
    // is their common length); it writes only the listed registers and
    // touches no other memory or the stack.
    #[allow(unsafe_code)]
    unsafe {
        core::arch::asm!(
            four_steps_loop!(wide2x2_step),
            x0 = inout(reg) x0.as_ptr() => _,
            x1 = inout(reg) x1.as_ptr() => _,
            a = inout(reg) a.as_ptr() => _,
            b = inout(reg) b.as_ptr() => _,
            n = inout(reg) quads => _,
            s0 = inout(reg) s0,
            s1 = inout(reg) s1,
            s2 = inout(reg) s2,
            s3 = inout(reg) s3,
            p = out(reg) _,
            q = out(reg) _,
            w = out(reg) _,
            options(nostack, readonly),
        );
    }
    [s0, s1, s2, s3]
}

/// Adds `[Σ x0·a, Σ x0·b, Σ x1·a, Σ x1·b]` over `n` bytes to `s`.
///
/// # Safety
/// `n ≥ 1` bytes must be readable from each of the four pointers.
#[inline(always)]
#[allow(unsafe_code)]
unsafe fn accumulate(x0: *const i8, x1: *const i8, a: *const i8, b: *const i8, n: usize, s: [i32; 4]) -> [i32; 4] {
    let [mut s0, mut s1, mut s2, mut s3] = s;
    // SAFETY: the loop reads bytes `0..n` from each pointer (the
    // caller's contract); it writes only the listed registers and
    // touches no other memory or the stack.
    unsafe {
        core::arch::asm!(
            // An odd byte first, then two bytes per iteration.
            "lsrs {n}, {n}, #1",
            "bcc 3f",
            byte_step!(),
            "3:",
            "cmp {n}, #0",
            "beq 4f",
            "2:",
            byte_step!(),
            byte_step!(),
            "subs {n}, {n}, #1",
            "bne 2b",
            "4:",
            x0 = inout(reg) x0 => _,
            x1 = inout(reg) x1 => _,
            a = inout(reg) a => _,
            b = inout(reg) b => _,
            n = inout(reg) n => _,
            s0 = inout(reg) s0,
            s1 = inout(reg) s1,
            s2 = inout(reg) s2,
            s3 = inout(reg) s3,
            p = out(reg) _,
            q = out(reg) _,
            w = out(reg) _,
            options(nostack, readonly),
        );
    }
    [s0, s1, s2, s3]
}
