//! The int8 dot products every weighted kernel is built on: one input run
//! against one or two weight runs (two output channels share each input
//! load). Integer arithmetic wraps like TFLite's int32 accumulator.
//!
//! On Cortex-M4/M7 (`cfg(tinykd_dsp)`, see build.rs) the bulk runs four
//! bytes at a time with SXTB16 + SMLAD: one word load per run, two
//! sign-extensions per word, two MACs per SMLAD — 15 instructions per 8 MACs
//! for [`dot2`] instead of 20. SMLAD's sum wraps modulo 2^32 like the
//! portable code (it only sets the Q flag on overflow), so both paths give
//! the same bits; the tests run the portable one on the host and the
//! emulator harness compares the M4 board with the host on every input.

/// `Σ x·a` over the common length.
#[inline(always)]
pub fn dot(x: &[i8], a: &[i8]) -> i32 {
    let n = x.len().min(a.len());
    let (x, a) = (&x[..n], &a[..n]);
    let mut acc0: i32 = 0;
    let mut acc1: i32 = 0;
    let mut cx = x.chunks_exact(4);
    let mut ca = a.chunks_exact(4);
    for (x, y) in (&mut cx).zip(&mut ca) {
        acc0 = acc0.wrapping_add(x[0] as i32 * y[0] as i32).wrapping_add(x[2] as i32 * y[2] as i32);
        acc1 = acc1.wrapping_add(x[1] as i32 * y[1] as i32).wrapping_add(x[3] as i32 * y[3] as i32);
    }
    for (x, y) in cx.remainder().iter().zip(ca.remainder()) {
        acc0 = acc0.wrapping_add(*x as i32 * *y as i32);
    }
    acc0.wrapping_add(acc1)
}

/// `[Σ x·a, Σ x·b]` over the common length of the three runs, compact (the
/// convolutions inline it at several call sites).
#[inline(always)]
pub fn dot2(x: &[i8], a: &[i8], b: &[i8]) -> [i32; 2] {
    #[cfg(tinykd_dsp)]
    return dsp::dot2(x, a, b);
    #[cfg(not(tinykd_dsp))]
    dot2_portable(x, a, b)
}

/// [`dot2`] unrolled by four on cores without the DSP extension: faster on
/// long runs (fully connected rows) for more code, so used at one call site.
#[inline(always)]
pub fn dot2_unrolled(x: &[i8], a: &[i8], b: &[i8]) -> [i32; 2] {
    #[cfg(tinykd_dsp)]
    return dsp::dot2(x, a, b);
    #[cfg(not(tinykd_dsp))]
    dot2_portable_unrolled(x, a, b)
}

/// `[x0·a, x0·b, x1·a, x1·b]` over the common length: two input runs (two
/// output pixels) against two weight runs (two channels), four
/// multiply-accumulates per four byte loads.
#[inline(always)]
pub fn dot2x2(x0: &[i8], x1: &[i8], a: &[i8], b: &[i8]) -> [i32; 4] {
    #[cfg(any(tinykd_v7m, tinykd_dsp))]
    return v7m::dot2x2(x0, x1, a, b);
    #[cfg(not(any(tinykd_v7m, tinykd_dsp)))]
    dot2x2_portable(x0, x1, a, b)
}

/// `[Σ x·a, Σ x·b]` of 16-bit values `x` (offset inputs, `x − z_in`)
/// against two int8 weight runs, over the common length. Portable: its
/// caller has a constant length, and LLVM unrolls the loop completely.
#[inline(always)]
pub fn dot2_wide(x: &[i16], a: &[i8], b: &[i8]) -> [i32; 2] {
    let [mut s0, mut s1] = [0i32; 2];
    for ((x, a), b) in x.iter().zip(a).zip(b) {
        // |x| ≤ 255 (an offset int8) and |w| ≤ 128: each product fits; the
        // sum wraps like TFLite's int32 accumulator.
        let x = *x as i32;
        s0 = s0.wrapping_add(x * *a as i32);
        s1 = s1.wrapping_add(x * *b as i32);
    }
    [s0, s1]
}

/// Runs shorter than this stay in order for [`dot2_interleaved`]: with a
/// constant length LLVM unrolls the portable loop completely and folds what
/// follows, which beat SMLAD's loop on them (Cortex-M4, conv 8×8×1→8 3×3,
/// 9 values: 6.5 instructions per MAC portable, 10.0 through SMLAD).
pub const INTERLEAVE_MIN: usize = 16;

/// `[x0·a, x0·b, x1·a, x1·b]` of two 16-bit runs (two pixels' offset
/// inputs) against two int8 weight runs, over the common length: each
/// weight load feeds both pixels. On Armv7-M a hand-written loop (8
/// instructions per value for 4 MACs) for runs of at least
/// [`INTERLEAVE_MIN`]; portable otherwise.
#[inline(always)]
pub fn dot2x2_wide(x0: &[i16], x1: &[i16], a: &[i8], b: &[i8]) -> [i32; 4] {
    let n = x0.len().min(x1.len()).min(a.len()).min(b.len());
    let (x0, x1, a, b) = (&x0[..n], &x1[..n], &a[..n], &b[..n]);
    #[cfg(any(tinykd_v7m, tinykd_dsp))]
    if n >= INTERLEAVE_MIN {
        return v7m::dot2x2_wide(x0, x1, a, b);
    }
    let [p, q] = [dot2_wide(x0, a, b), dot2_wide(x1, a, b)];
    [p[0], p[1], q[0], q[1]]
}

/// Two pixels' `W` offset inputs (`x[0]`, `x[1]`, contiguous) against
/// three consecutive filters of `W` weights (`f`, at least `3·W` long):
/// `[x0·a, x0·b, x0·c, x1·a, x1·b, x1·c]`. On Armv7-M a hand-written loop
/// for `W` ≥ [`INTERLEAVE_MIN`]: two input loads and three weight loads
/// feed six `mla` (11 instructions per 6 MACs, against [`dot2x2_wide`]'s
/// 8 per 4); the second pixel and the other filters are at constant
/// offsets, so the loop needs one pointer for each and its twelve
/// registers. Zeros if `f` is too short.
#[inline(always)]
pub fn dot2x3_wide<const W: usize>(x: &[[i16; W]; 2], f: &[i8]) -> [i32; 6] {
    let Some(f) = f.get(..3 * W) else { return [0; 6] };
    #[cfg(any(tinykd_v7m, tinykd_dsp))]
    if W >= INTERLEAVE_MIN {
        return v7m::dot2x3_wide::<W>(x, f);
    }
    let (ab, c) = f.split_at(2 * W);
    let (a, b) = ab.split_at(W);
    let [p, q] = [dot2_wide(&x[0], a, b), dot2_wide(&x[1], a, b)];
    let [pc, qc] = [dot2_wide(&x[0], c, c)[0], dot2_wide(&x[1], c, c)[0]];
    [p[0], p[1], pc, q[0], q[1], qc]
}

/// [`dot2_wide`] of values stored in SMLAD's order (`x` is the whole run):
/// on cores with SMLAD, for runs of at least [`INTERLEAVE_MIN`], each whole
/// group of four is stored `x0, x2, x1, x3`, the order SXTB16 unpacks a
/// weight word in (so one word load gives SMLAD the pair `(x0, x2)`, the
/// next `(x1, x3)`), and the last `n % 4` values in order: two SMLAD per
/// weight word and channel, 14 instructions per 8 MACs instead of 20.
/// Elsewhere the values are in order and this is [`dot2_wide`] itself.
#[inline(always)]
pub fn dot2_interleaved(x: &[i16], a: &[i8], b: &[i8]) -> [i32; 2] {
    #[cfg(tinykd_dsp)]
    if x.len() >= INTERLEAVE_MIN {
        return dsp::dot2_interleaved(x, a, b);
    }
    dot2_wide(x, a, b)
}

/// Longest run [`dot1x4`] takes to its hand-written loops: they reach the
/// fourth row at a constant offset of about `3·W` bytes, and Thumb-2 loads
/// take immediate offsets below 4096.
pub const ROW4_MAX: usize = 1365;

/// One input run of `W` int8 values against four consecutive rows of `W`
/// weights (`f`, at least `4·W` long): `[x·a, x·b, x·c, x·d]`, for fully
/// connected layers. Each input load feeds four rows, the other rows at
/// constant offsets: on Armv7-M 9 instructions per 4 MACs (byte loads and
/// `mla`; [`dot2_unrolled`]: 5 per 2 and more loop), with SMLAD 23 per 16
/// (one input word unpacked once for four weight words; [`dot2`]: 13 per
/// 8). Portable elsewhere. Zeros if `f` is too short.
#[inline(always)]
pub fn dot1x4<const W: usize>(x: &[i8; W], f: &[i8]) -> [i32; 4] {
    let Some(f) = f.get(..4 * W) else { return [0; 4] };
    #[cfg(tinykd_dsp)]
    if W <= ROW4_MAX {
        return dsp::dot1x4::<W>(x, f);
    }
    #[cfg(tinykd_v7m)]
    if W <= ROW4_MAX {
        return v7m::dot1x4::<W>(x, f);
    }
    let (ab, cd) = f.split_at(2 * W);
    let ([a, b], [c, d]) = (dot2(x, &ab[..W], &ab[W..]), dot2(x, &cd[..W], &cd[W..]));
    [a, b, c, d]
}

/// Longest run [`dot1x5`] takes: the fifth row is about `4·W` bytes on.
pub const ROW5_MAX: usize = 1024;

/// [`dot1x4`] with a fifth row, on cores with SMLAD (each unpacked input
/// word feeds one more row: FC 512→64 on the M4, 1.54 → 1.49 instructions
/// per MAC); elsewhere portable. Zeros if `f` is too short.
#[inline(always)]
pub fn dot1x5<const W: usize>(x: &[i8; W], f: &[i8]) -> [i32; 5] {
    let Some(f) = f.get(..5 * W) else { return [0; 5] };
    #[cfg(tinykd_dsp)]
    if W <= ROW5_MAX {
        return dsp::dot1x5::<W>(x, f);
    }
    let [a, b, c, d] = dot1x4::<W>(x, &f[..4 * W]);
    [a, b, c, d, dot(x, &f[4 * W..])]
}

/// An input run of `W` int8 values as SMLAD takes them, unpacked once for
/// every row it meets: each whole word `(x0, x1, x2, x3)` as the
/// halfword pairs `(x0, x2)`, `(x1, x3)` (what SXTB16 makes of it); the
/// last `W % 4` values are not used. 8-byte aligned, for `ldrd`.
#[derive(Debug, Clone, Copy)]
#[repr(C, align(8))]
pub struct Unpacked<const W: usize> {
    pub pairs: [i16; W],
}

impl<const W: usize> Unpacked<W> {
    /// Zeros, to be [`Unpacked::fill`]ed in place (returned by value, the
    /// run was copied).
    #[inline(always)]
    pub fn zeroed() -> Unpacked<W> {
        Unpacked { pairs: [0; W] }
    }

    #[inline(always)]
    pub fn fill(&mut self, x: &[i8; W]) {
        for (p, x) in self.pairs.chunks_exact_mut(4).zip(x.chunks_exact(4)) {
            let [even, odd] = unpack_word(u32::from_le_bytes([x[0] as u8, x[1] as u8, x[2] as u8, x[3] as u8]));
            p.copy_from_slice(&[even as i16, (even >> 16) as i16, odd as i16, (odd >> 16) as i16]);
        }
    }
}

/// A word of four int8 values `(v0, v1, v2, v3)` as the halfword pairs
/// `(v0, v2)`, `(v1, v3)`: SXTB16 and SXTB16 with ROR 8 on cores with
/// SMLAD, portable elsewhere.
#[inline(always)]
pub fn unpack_word(v: u32) -> [u32; 2] {
    #[cfg(tinykd_dsp)]
    {
        let (even, odd): (u32, u32);
        // SAFETY: register-only instructions; `e` is written before `v`
        // is read again, so it takes its own register (not `lateout`).
        #[allow(unsafe_code)]
        unsafe {
            core::arch::asm!(
                "sxtb16 {e}, {v}",
                "sxtb16 {o}, {v}, ror #8",
                v = in(reg) v,
                e = out(reg) even,
                o = out(reg) odd,
                options(pure, nomem, nostack),
            );
        }
        [even, odd]
    }
    #[cfg(not(tinykd_dsp))]
    {
        let half = |b: u32| (b as u8 as i8 as i16 as u16) as u32;
        [half(v) | half(v >> 16) << 16, half(v >> 8) | half(v >> 24) << 16]
    }
}

/// [`dot1x5`] with its input also unpacked ahead ([`Unpacked`]), on
/// cores with SMLAD: each group of four inputs is one `ldrd` instead of
/// a load and two SXTB16 (FC 640→128 on the M4: see the firmware
/// performance notes); elsewhere [`dot1x5`]. Zeros if `f` is too short.
#[inline(always)]
pub fn dot1x5_unpacked<const W: usize>(x: &[i8; W], xu: &Unpacked<W>, f: &[i8]) -> [i32; 5] {
    #[cfg(tinykd_dsp)]
    if W <= ROW5_MAX {
        let Some(f) = f.get(..5 * W) else { return [0; 5] };
        return dsp::dot1x5_unpacked::<W>(x, xu, f);
    }
    let _ = xu;
    dot1x5::<W>(x, f)
}

/// [`dot2x2`] over a 2-D window, `[x0·a, x0·b, x1·a, x1·b]`: `rows` runs of
/// `len` bytes, `x_stride` apart in the two inputs and `w_stride` apart in
/// the two filters, summed. One bounds check for the whole window; zeros if
/// a run would leave a slice. (Callers take one row to [`dot2x2`]
/// themselves: see `conv::window_dot2x2`.)
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub fn window2x2(
    x0: &[i8],
    x1: &[i8],
    x_stride: usize,
    a: &[i8],
    b: &[i8],
    w_stride: usize,
    len: usize,
    rows: usize,
) -> [i32; 4] {
    #[cfg(any(tinykd_v7m, tinykd_dsp))]
    return v7m::window2x2(x0, x1, x_stride, a, b, w_stride, len, rows);
    #[cfg(not(any(tinykd_v7m, tinykd_dsp)))]
    {
        let (Some(x_span), Some(w_span)) = (span(rows, x_stride, len), span(rows, w_stride, len)) else {
            return [0; 4];
        };
        if x0.len().min(x1.len()) < x_span || a.len().min(b.len()) < w_span {
            return [0; 4];
        }
        let mut s = [0i32; 4];
        for r in 0..rows {
            let (xo, wo) = (r * x_stride, r * w_stride);
            let d = dot2x2_portable(&x0[xo..xo + len], &x1[xo..xo + len], &a[wo..wo + len], &b[wo..wo + len]);
            for k in 0..4 {
                s[k] = s[k].wrapping_add(d[k]);
            }
        }
        s
    }
}

/// Bytes `rows` runs of `len`, `stride` apart, reach: `(rows − 1)·stride + len`
/// (0 for no rows; `None` on overflow).
#[inline(always)]
fn span(rows: usize, stride: usize, len: usize) -> Option<usize> {
    match rows {
        0 => Some(0),
        r => (r - 1).checked_mul(stride)?.checked_add(len),
    }
}

#[cfg_attr(any(tinykd_v7m, tinykd_dsp), allow(dead_code))]
#[inline(always)]
fn dot2x2_portable(x0: &[i8], x1: &[i8], a: &[i8], b: &[i8]) -> [i32; 4] {
    let n = x0.len().min(x1.len()).min(a.len()).min(b.len());
    let (x0, x1, a, b) = (&x0[..n], &x1[..n], &a[..n], &b[..n]);
    let [mut s0, mut s1, mut s2, mut s3] = [0i32; 4];
    for i in 0..n {
        let (p, q, u, v) = (x0[i] as i32, x1[i] as i32, a[i] as i32, b[i] as i32);
        s0 = s0.wrapping_add(p * u);
        s1 = s1.wrapping_add(p * v);
        s2 = s2.wrapping_add(q * u);
        s3 = s3.wrapping_add(q * v);
    }
    [s0, s1, s2, s3]
}

/// Four bytes per step, so each load has an immediate offset from one
/// pointer per run.
#[cfg_attr(tinykd_dsp, allow(dead_code))]
#[inline(always)]
fn dot2_portable_unrolled(x: &[i8], a: &[i8], b: &[i8]) -> [i32; 2] {
    // Equal lengths: one trip count for the three runs, no per-run checks.
    let n = x.len().min(a.len()).min(b.len());
    let (x, a, b) = (&x[..n], &a[..n], &b[..n]);
    let [mut s0, mut s1] = [0i32; 2];
    let (mut cx, mut ca, mut cb) = (x.chunks_exact(4), a.chunks_exact(4), b.chunks_exact(4));
    for ((x, a), b) in (&mut cx).zip(&mut ca).zip(&mut cb) {
        for k in 0..4 {
            let x = x[k] as i32;
            s0 = s0.wrapping_add(x * a[k] as i32);
            s1 = s1.wrapping_add(x * b[k] as i32);
        }
    }
    let r = dot2_portable(cx.remainder(), ca.remainder(), cb.remainder());
    [s0.wrapping_add(r[0]), s1.wrapping_add(r[1])]
}

/// Byte by byte: on Cortex-M3 this compiles to 3 loads and 2 `mla` per
/// input byte; unrolling by four measured no faster inside the convolution
/// and cost flash at every call site.
#[inline(always)]
fn dot2_portable(x: &[i8], a: &[i8], b: &[i8]) -> [i32; 2] {
    let [mut s0, mut s1] = [0i32; 2];
    for ((x, a), b) in x.iter().zip(a).zip(b) {
        let x = *x as i32;
        s0 = s0.wrapping_add(x * *a as i32);
        s1 = s1.wrapping_add(x * *b as i32);
    }
    [s0, s1]
}

pub mod packed;

/// An `asm!` loop of `{n}` iterations of four `step!()`s (for the
/// hand-written loops of the submodules below).
#[cfg(any(tinykd_v7m, tinykd_dsp))]
macro_rules! four_steps_loop {
    ($step:ident) => {
        concat!("2:\n", $step!(), "\n", $step!(), "\n", $step!(), "\n", $step!(), "\nsubs {n}, {n}, #1\nbne 2b")
    };
}

#[cfg(any(tinykd_v7m, tinykd_dsp))]
mod v7m;

#[cfg(tinykd_dsp)]
mod dsp;

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn naive(x: &[i8], a: &[i8]) -> i32 {
        x.iter().zip(a).fold(0i32, |s, (x, a)| s.wrapping_add(*x as i32 * *a as i32))
    }

    #[test]
    fn hand_computed() {
        assert_eq!(dot(&[1, -2, 3], &[4, 5, -6]), 4 - 10 - 18);
        assert_eq!(dot2(&[1, -2, 3, 4, 5], &[1, 1, 1, 1, 1], &[-128, 127, 0, 2, -1]), [11, -128 - 254 + 8 - 5]);
        // Lengths differ: the common length counts.
        assert_eq!(dot2(&[2, 2, 2], &[3, 3], &[1, 1, 1, 1]), [12, 4]);
    }

    #[test]
    fn unpacked_pairs_hand_computed() {
        // (v0, v1, v2, v3) -> (v0, v2), (v1, v3) as halfwords, sign kept.
        let v = u32::from_le_bytes([1, 0xFE, 0x80, 0x7F]); // 1, −2, −128, 127
        assert_eq!(unpack_word(v), [0xFF80_0001, 0x007F_FFFE]);
        let mut u = Unpacked::<6>::zeroed();
        u.fill(&[1, -2, -128, 127, 9, 9]);
        // The last `6 % 4` values are not unpacked.
        assert_eq!(u.pairs, [1, -128, -2, 127, 0, 0]);
        // The fallback five-row dot product with the input unpacked.
        let x = [1i8, -2, 3, -4, 5, 6];
        let f: Vec<i8> = (0..30).map(|k| (k as i8) - 15).collect();
        let mut u = Unpacked::<6>::zeroed();
        u.fill(&x);
        let want: [i32; 5] = core::array::from_fn(|r| naive(&x, &f[r * 6..(r + 1) * 6]));
        assert_eq!(dot1x5_unpacked::<6>(&x, &u, &f), want);
    }

    /// [`dot2x3_wide`] against the naive sums for one window length.
    fn check_dot2x3<const W: usize>(v: &[i16], f: &[i8]) -> Result<(), TestCaseError> {
        let mut x = [[0i16; W]; 2];
        for (d, s) in x.iter_mut().flatten().zip(v.iter().cycle()) {
            *d = *s;
        }
        let f: Vec<i8> = f.iter().copied().cycle().take(3 * W).collect();
        let sum = |p: usize, k: usize| {
            x[p].iter().zip(&f[k * W..(k + 1) * W]).fold(0i32, |s, (x, w)| s.wrapping_add(*x as i32 * *w as i32))
        };
        let want = [sum(0, 0), sum(0, 1), sum(0, 2), sum(1, 0), sum(1, 1), sum(1, 2)];
        prop_assert_eq!(dot2x3_wide::<W>(&x, &f), want);
        // A filter slice too short for three filters gives zeros.
        prop_assert_eq!(dot2x3_wide::<W>(&x, &f[..3 * W - 1]), [0; 6]);
        Ok(())
    }

    /// [`dot1x4`] against the naive sums for one run length.
    fn check_dot1x4<const W: usize>(v: &[i8], f: &[i8]) -> Result<(), TestCaseError> {
        let x: [i8; W] = core::array::from_fn(|i| v[i % v.len()]);
        let f: Vec<i8> = f.iter().copied().cycle().take(4 * W).collect();
        let want: [i32; 4] = core::array::from_fn(|k| naive(&x, &f[k * W..(k + 1) * W]));
        prop_assert_eq!(dot1x4::<W>(&x, &f), want);
        prop_assert_eq!(dot1x4::<W>(&x, &f[..4 * W - 1]), [0; 4]);
        Ok(())
    }

    proptest! {
        #[test]
        fn two_pixels_three_filters(
            v in proptest::collection::vec(-255i16..=255, 1..100),
            f in proptest::collection::vec(any::<i8>(), 1..100),
        ) {
            check_dot2x3::<1>(&v, &f)?;
            check_dot2x3::<9>(&v, &f)?;
            check_dot2x3::<16>(&v, &f)?;
            check_dot2x3::<23>(&v, &f)?;
            check_dot2x3::<48>(&v, &f)?;
        }

        #[test]
        fn one_input_four_rows(
            v in proptest::collection::vec(any::<i8>(), 1..100),
            f in proptest::collection::vec(any::<i8>(), 1..100),
        ) {
            check_dot1x4::<1>(&v, &f)?;
            check_dot1x4::<3>(&v, &f)?;
            check_dot1x4::<16>(&v, &f)?;
            check_dot1x4::<42>(&v, &f)?;
            check_dot1x4::<80>(&v, &f)?;
        }

        #[test]
        fn matches_the_naive_sums(
            x in proptest::collection::vec(any::<i8>(), 0..80),
            a in proptest::collection::vec(any::<i8>(), 0..80),
            b in proptest::collection::vec(any::<i8>(), 0..80),
        ) {
            let n = x.len().min(a.len()).min(b.len());
            prop_assert_eq!(dot(&x, &a), naive(&x, &a));
            let want = [naive(&x[..n], &a[..n]), naive(&x[..n], &b[..n])];
            prop_assert_eq!(dot2(&x, &a, &b), want);
            prop_assert_eq!(dot2_unrolled(&x, &a, &b), want);
            let x1: Vec<i8> = x.iter().rev().copied().collect();
            let want4 = [want[0], want[1], naive(&x1[..n], &a[..n]), naive(&x1[..n], &b[..n])];
            prop_assert_eq!(dot2x2(&x, &x1, &a, &b), want4);
            // Offset inputs, as the gathering convolution writes them.
            let wide: Vec<i16> = x.iter().map(|v| *v as i16 * 2 - 1).collect();
            let naive_wide = |w: &[i8]| wide.iter().zip(w).fold(0i32, |s, (x, w)| s.wrapping_add(*x as i32 * *w as i32));
            let want_wide = [naive_wide(&a[..n]), naive_wide(&b[..n])];
            prop_assert_eq!(dot2_wide(&wide, &a, &b), want_wide);
            // SMLAD's order on the cores that have it (see `dot2_interleaved`).
            let slot = |j: usize| {
                if cfg!(tinykd_dsp) && n >= INTERLEAVE_MIN && j < n & !3 { j ^ ((((j >> 1) ^ j) & 1) * 3) } else { j }
            };
            let mut stored = vec![0i16; n];
            for (j, v) in wide[..n].iter().enumerate() {
                stored[slot(j)] = *v;
            }
            prop_assert_eq!(dot2_interleaved(&stored, &a[..n], &b[..n]), want_wide);
            let wide1: Vec<i16> = x1.iter().map(|v| 1 - *v as i16 * 2).collect();
            let naive1 = |w: &[i8]| wide1.iter().zip(w).fold(0i32, |s, (x, w)| s.wrapping_add(*x as i32 * *w as i32));
            let want4 = [want_wide[0], want_wide[1], naive1(&a[..n]), naive1(&b[..n])];
            prop_assert_eq!(dot2x2_wide(&wide, &wide1, &a, &b), want4);
        }
    }
}
