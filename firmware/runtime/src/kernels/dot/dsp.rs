//! Cortex-M4/M7 (`cfg(tinykd_dsp)`): the dot products' whole words through
//! SXTB16 + SMLAD, two multiply-accumulates per instruction; the last
//! `len % 4` values go through the portable code, so both paths give the
//! same bits (see the parent module).

/// Both channels' part of one SMLAD step: a weight word of each run
/// unpacked by SXTB16 into `(w0, w2)` and `(w1, w3)`, against the input
/// pairs `{xl}` = `(x0, x2)` and `{xh}` = `(x1, x3)`.
macro_rules! two_channels {
    () => {
        concat!(
            "ldr {w}, [{ap}], #4\n",
            "sxtb16 {t}, {w}\n",
            "smlad {sa}, {xl}, {t}, {sa}\n",
            "sxtb16 {t}, {w}, ror #8\n",
            "smlad {sa}, {xh}, {t}, {sa}\n",
            "ldr {w}, [{bp}], #4\n",
            "sxtb16 {t}, {w}\n",
            "smlad {sb}, {xl}, {t}, {sb}\n",
            "sxtb16 {t}, {w}, ror #8\n",
            "smlad {sb}, {xh}, {t}, {sb}",
        )
    };
}

/// Words through SMLAD, the last `len % 4` bytes portably.
#[inline(always)]
pub(super) fn dot2(x: &[i8], a: &[i8], b: &[i8]) -> [i32; 2] {
    let n = x.len().min(a.len()).min(b.len());
    let groups = n / 4;
    let head = dot2_words(x, a, b, groups);
    let t = groups * 4;
    let tail = super::dot2_portable(&x[t..n], &a[t..n], &b[t..n]);
    [head[0].wrapping_add(tail[0]), head[1].wrapping_add(tail[1])]
}

/// [`super::dot2_interleaved`]: whole groups of four through SMLAD, the
/// rest (stored in order) portably.
#[inline(always)]
pub(super) fn dot2_interleaved(x: &[i16], a: &[i8], b: &[i8]) -> [i32; 2] {
    let n = x.len().min(a.len()).min(b.len());
    let groups = n / 4;
    let t = groups * 4;
    let tail = super::dot2_wide(&x[t..n], &a[t..n], &b[t..n]);
    if groups == 0 {
        return tail;
    }
    let (mut sa, mut sb) = (tail[0], tail[1]);
    // SAFETY: the loop reads `groups · 4 ≤ n` values from each of `x`,
    // `a`, `b` (`n` is their common length), with word loads (the
    // weights' unaligned, allowed on Armv7-M for LDR); it writes only
    // the listed registers and touches no other memory or the stack.
    #[allow(unsafe_code)]
    unsafe {
        core::arch::asm!(
            "2:",
            "ldr {xl}, [{xp}], #4",
            "ldr {xh}, [{xp}], #4",
            two_channels!(),
            "subs {n}, {n}, #1",
            "bne 2b",
            xp = inout(reg) x.as_ptr() => _,
            ap = inout(reg) a.as_ptr() => _,
            bp = inout(reg) b.as_ptr() => _,
            n = inout(reg) groups => _,
            sa = inout(reg) sa,
            sb = inout(reg) sb,
            xl = out(reg) _,
            xh = out(reg) _,
            w = out(reg) _,
            t = out(reg) _,
            options(nostack, readonly),
        );
    }
    [sa, sb]
}

/// One weight word of the filter `{off}` bytes on from `{fp}` (after
/// the group's post-increment) against the input pairs, into `{s}`.
macro_rules! channel_at {
    ($s:literal, $off:literal) => {
        concat!(
            "ldr {w}, [{fp}, #{",
            $off,
            "}]\n",
            "sxtb16 {t}, {w}\n",
            "smlad {",
            $s,
            "}, {xl}, {t}, {",
            $s,
            "}\n",
            "sxtb16 {t}, {w}, ror #8\n",
            "smlad {",
            $s,
            "}, {xh}, {t}, {",
            $s,
            "}",
        )
    };
}

/// The SMLAD loop of [`dot4_interleaved`] and [`dot1x4`]: `$groups`
/// passes, each putting one input group's pairs in `{xl}`, `{xh}` with
/// `$load_x` (reading from `{xp}`, `$x`'s start) and feeding them to four
/// filters `$w` bytes apart, the first at `{fp}` (`$f`'s start), into the
/// accumulators `$s`. Only the input's form differs between the two.
macro_rules! four_filter_loop {
    ($load_x:literal, $x:expr, $f:expr, $groups:expr, $w:expr, [$s0:ident, $s1:ident, $s2:ident, $s3:ident]) => {
        core::arch::asm!(
            "2:",
            $load_x,
            "ldr {w}, [{fp}], #4",
            "sxtb16 {t}, {w}",
            "smlad {s0}, {xl}, {t}, {s0}",
            "sxtb16 {t}, {w}, ror #8",
            "smlad {s0}, {xh}, {t}, {s0}",
            channel_at!("s1", "b"),
            channel_at!("s2", "c"),
            channel_at!("s3", "d"),
            "subs {n}, {n}, #1",
            "bne 2b",
            xp = inout(reg) $x.as_ptr() => _,
            fp = inout(reg) $f.as_ptr() => _,
            n = inout(reg) $groups => _,
            s0 = inout(reg) $s0,
            s1 = inout(reg) $s1,
            s2 = inout(reg) $s2,
            s3 = inout(reg) $s3,
            xl = out(reg) _,
            xh = out(reg) _,
            w = out(reg) _,
            t = out(reg) _,
            b = const $w.saturating_sub(4),
            c = const (2 * $w).saturating_sub(4),
            d = const (3 * $w).saturating_sub(4),
            options(nostack, readonly),
        )
    };
}

/// [`super::dot4_interleaved`] (`f` is `4·W` long): whole groups of
/// four through SMLAD, the rest (stored in order) portably.
#[inline(always)]
pub(super) fn dot4_interleaved<const W: usize>(x: &[i16; W], f: &[i8]) -> [i32; 4] {
    let (groups, t) = (W / 4, W / 4 * 4);
    let f = &f[..4 * W];
    let tail = |k: usize| {
        let w = &f[k * W + t..(k + 1) * W];
        super::dot2_wide(&x[t..], w, w)[0]
    };
    let [mut s0, mut s1, mut s2, mut s3] = [tail(0), tail(1), tail(2), tail(3)];
    if groups == 0 {
        return [s0, s1, s2, s3];
    }
    // SAFETY: the loop reads values `0..4·groups ≤ W` of `x` and bytes
    // `0..4·groups` of each of the four filters (`f` is `4·W` long,
    // checked by slicing above), with word loads (the weights'
    // unaligned, allowed on Armv7-M for LDR); it writes only the
    // listed registers and touches no other memory or the stack.
    #[allow(unsafe_code)]
    unsafe {
        four_filter_loop!("ldr {xl}, [{xp}], #4\nldr {xh}, [{xp}], #4", x, f, groups, W, [s0, s1, s2, s3]);
    }
    [s0, s1, s2, s3]
}

/// [`super::dot1x4`] (`f` is `4·W` long, `W` ≤ [`super::ROW4_MAX`]):
/// whole words through SMLAD, the last `W % 4` bytes portably.
#[inline(always)]
pub(super) fn dot1x4<const W: usize>(x: &[i8; W], f: &[i8]) -> [i32; 4] {
    let (groups, t) = (W / 4, W / 4 * 4);
    let f = &f[..4 * W];
    let tail = |k: usize| super::dot(&x[t..], &f[k * W + t..(k + 1) * W]);
    let [mut s0, mut s1, mut s2, mut s3] = [tail(0), tail(1), tail(2), tail(3)];
    if groups == 0 {
        return [s0, s1, s2, s3];
    }
    // SAFETY: the loop reads bytes `0..4·groups ≤ W` of `x` and of each
    // of the four rows (`f` is `4·W` long, checked by slicing above), with
    // unaligned word loads (allowed on Armv7-M for LDR); it writes only
    // the listed registers and touches no other memory or the stack.
    #[allow(unsafe_code)]
    unsafe {
        four_filter_loop!(
            "ldr {xl}, [{xp}], #4\nsxtb16 {xh}, {xl}, ror #8\nsxtb16 {xl}, {xl}",
            x,
            f,
            groups,
            W,
            [s0, s1, s2, s3]
        );
    }
    [s0, s1, s2, s3]
}

/// `[Σ x·a, Σ x·b]` over the first `groups · 4` bytes of each run.
#[inline(always)]
pub(super) fn dot2_words(x: &[i8], a: &[i8], b: &[i8], groups: usize) -> [i32; 2] {
    let (mut sa, mut sb) = (0i32, 0i32);
    if groups == 0 || [x.len(), a.len(), b.len()].iter().any(|&l| l < groups * 4) {
        return [0, 0];
    }
    // SAFETY: the loop reads `groups · 4` bytes from each of `x`, `a`,
    // `b`, checked above to be within the slices, with unaligned word
    // loads (allowed on Armv7-M for LDR); it writes only the listed
    // registers and touches no other memory or the stack.
    #[allow(unsafe_code)]
    unsafe {
        core::arch::asm!(
            "2:",
            "ldr {xl}, [{xp}], #4",
            "sxtb16 {xh}, {xl}, ror #8",
            "sxtb16 {xl}, {xl}",
            two_channels!(),
            "subs {n}, {n}, #1",
            "bne 2b",
            xp = inout(reg) x.as_ptr() => _,
            ap = inout(reg) a.as_ptr() => _,
            bp = inout(reg) b.as_ptr() => _,
            n = inout(reg) groups => _,
            sa = inout(reg) sa,
            sb = inout(reg) sb,
            xl = out(reg) _,
            xh = out(reg) _,
            w = out(reg) _,
            t = out(reg) _,
            options(nostack, readonly),
        );
    }
    [sa, sb]
}
