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

/// One weight word of the row `{off}` bytes on from `{fp}` (after
/// the group's post-increment), for [`dot1x4`], against the input pairs, into `{s}`.
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

/// The input pairs `{xl}` = (x0, x2), `{xh}` = (x1, x3) against a weight
/// word of each of four rows (the first advancing `{fp}`).
macro_rules! four_rows {
    () => {
        concat!(
            "ldr {w}, [{fp}], #4\n",
            "sxtb16 {t}, {w}\n",
            "smlad {s0}, {xl}, {t}, {s0}\n",
            "sxtb16 {t}, {w}, ror #8\n",
            "smlad {s0}, {xh}, {t}, {s0}\n",
            channel_at!("s1", "b"),
            "\n",
            channel_at!("s2", "c"),
            "\n",
            channel_at!("s3", "d"),
            "\n",
        )
    };
}

/// One group of [`dot1x4`]: an input word as the pairs (x0, x2), (x1, x3),
/// against a weight word of each of the four rows.
macro_rules! four_rows_group {
    () => {
        concat!("ldr {xl}, [{xp}], #4\n", "sxtb16 {xh}, {xl}, ror #8\n", "sxtb16 {xl}, {xl}\n", four_rows!(),)
    };
}

/// [`four_rows_group!`] with a fifth row (`{e}` on from the first).
macro_rules! five_rows_group {
    () => {
        concat!(four_rows_group!(), channel_at!("s4", "e"), "\n")
    };
}

/// [`five_rows_group!`] with the input word's pairs already unpacked
/// ([`super::Unpacked`]): one `ldrd` instead of a load and two SXTB16.
macro_rules! five_rows_group_unpacked {
    () => {
        concat!("ldrd {xl}, {xh}, [{xp}], #8\n", four_rows!(), channel_at!("s4", "e"), "\n")
    };
}

/// `asm!` of the loop `$looped!($step)` (passes of two halves, the second
/// labelled `3:`, `{n}` passes) with these operands, entered at the second
/// half when `$halves` is odd, so that the first pass does one.
macro_rules! asm_by_halves {
    ($halves:expr, $looped:ident($step:ident), $($operands:tt)*) => {
        if $halves % 2 == 1 {
            core::arch::asm!("b 3f", $looped!($step), $($operands)*)
        } else {
            core::arch::asm!($looped!($step), $($operands)*)
        }
    };
}

/// An `asm!` loop of `{n}` passes of two `step!()`s (each ending its
/// line), the second labelled `3:`.
macro_rules! two_steps_loop {
    ($step:ident) => {
        concat!("2:\n", $step!(), "3:\n", $step!(), "subs {n}, {n}, #1\nbne 2b")
    };
}

/// Defines `$name<W>(x, f) -> [i32; $rows]`: `x` (`W` bytes) against
/// `$rows` consecutive rows of `W` weights (`f`, at least `$rows·W`
/// long), whole words through SMLAD in `$group` (the rows after the first
/// at the offsets `$off`), the last `W % 4` bytes portably. Two groups per
/// pass of the loop (an odd count enters at the second).
macro_rules! rows_dot {
    ($(#[$doc:meta])* $name:ident, $rows:literal, $group:ident, [$($s:ident),+], [$($off:ident = $k:literal),+]) => {
        $(#[$doc])*
        #[inline(always)]
        pub(super) fn $name<const W: usize>(x: &[i8; W], f: &[i8]) -> [i32; $rows] {
            rows_dot!(@body x, x.as_ptr(), f, $rows, $group, [$($s),+], [$($off = $k),+])
        }
    };
    (unpacked $(#[$doc:meta])* $name:ident, $rows:literal, $group:ident, [$($s:ident),+], [$($off:ident = $k:literal),+]) => {
        $(#[$doc])*
        #[inline(always)]
        pub(super) fn $name<const W: usize>(x: &[i8; W], xu: &super::Unpacked<W>, f: &[i8]) -> [i32; $rows] {
            rows_dot!(@body x, xu.pairs.as_ptr(), f, $rows, $group, [$($s),+], [$($off = $k),+])
        }
    };
    (@body $x:ident, $xp:expr, $f:ident, $rows:literal, $group:ident, [$($s:ident),+], [$($off:ident = $k:literal),+]) => {{
            let (x, f) = ($x, $f);
            let (groups, t) = (W / 4, W / 4 * 4);
            let f = &f[..$rows * W];
            let sums: [i32; $rows] = core::array::from_fn(|k| super::dot(&x[t..], &f[k * W + t..(k + 1) * W]));
            if groups == 0 {
                return sums;
            }
            let [$(mut $s),+] = sums;
            // The loop's passes; an odd `groups` enters at the second
            // group, so the first pass does one.
            let passes = groups.div_ceil(2);
            // SAFETY: the loop reads bytes `0..4·groups ≤ W` of `x` (or,
            // unpacked, the same `4·groups` halfwords of `xu.pairs`, `W`
            // long and 8-byte aligned for LDRD) and of each row (`f` is
            // `$rows·W` long, checked by slicing above), with unaligned
            // word loads of `x` and `f` (allowed on Armv7-M for LDR):
            // `passes` passes of two groups, less one when entering at the
            // second. It writes only the listed registers and touches no
            // other memory or the stack.
            #[allow(unsafe_code)]
            unsafe {
                asm_by_halves!(
                    groups,
                    two_steps_loop($group),
                    xp = inout(reg) $xp => _,
                    fp = inout(reg) f.as_ptr() => _,
                    n = inout(reg) passes => _,
                    $($s = inout(reg) $s,)+
                    xl = out(reg) _,
                    xh = out(reg) _,
                    w = out(reg) _,
                    t = out(reg) _,
                    $($off = const ($k * W).saturating_sub(4),)+
                    options(nostack, readonly),
                );
            }
            [$($s),+]
    }};
}

rows_dot!(
    /// [`super::dot1x4`] (`W` ≤ [`super::ROW4_MAX`]): 23 instructions per
    /// 16 MACs and one loop step per 32.
    dot1x4, 4, four_rows_group, [s0, s1, s2, s3], [b = 1, c = 2, d = 3]
);

rows_dot!(
    /// [`super::dot1x5`] (`W` ≤ [`super::ROW5_MAX`]): as [`dot1x4`] with a
    /// fifth row, so each input word, unpacked once, feeds five weight
    /// words: 28 instructions per 20 MACs, one loop step per 40. Every
    /// register the loop can have is taken (five sums, three pointers and
    /// the counter, four scratch).
    dot1x5, 5, five_rows_group, [s0, s1, s2, s3, s4], [b = 1, c = 2, d = 3, e = 4]
);

rows_dot!(
    unpacked
    /// [`dot1x5`] from the input unpacked ahead (its first `W / 4 · 4`
    /// values; the rest from `x`): 26 instructions per 20 MACs.
    dot1x5_unpacked, 5, five_rows_group_unpacked, [s0, s1, s2, s3, s4], [b = 1, c = 2, d = 3, e = 4]
);

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

/// Four `step!()`s, each on its own line.
macro_rules! four_steps {
    ($step:ident) => {
        concat!($step!(), "\n", $step!(), "\n", $step!(), "\n", $step!(), "\n")
    };
}

/// An `asm!` loop of `{n}` passes of eight `step!()`s, labelled `3:` at
/// the fifth so that a `b 3f` before it enters with four (an odd number
/// of fours).
macro_rules! eight_steps_loop {
    ($step:ident) => {
        concat!("2:\n", four_steps!($step), "3:\n", four_steps!($step), "subs {n}, {n}, #1\nbne 2b")
    };
}

/// One packed word of two pixels against three filters, the second and
/// third `{b}`, `{c}` bytes after the first (offsets after the
/// post-increment), into the 64-bit accumulators `{lK}:{hK}`.
macro_rules! packed_step {
    () => {
        concat!(
            "ldr {p}, [{x}], #4\n",
            "ldrsb {w}, [{f}], #1\n",
            "smlal {l0}, {h0}, {w}, {p}\n",
            "ldrsb {w}, [{f}, #{b}]\n",
            "smlal {l1}, {h1}, {w}, {p}\n",
            "ldrsb {w}, [{f}, #{c}]\n",
            "smlal {l2}, {h2}, {w}, {p}",
        )
    };
}

/// One run of [`super::packed::dot2x3_packed`]: `x` (short enough to
/// unpack: `PACKED_MAX` values, or what `whole_runs` allows) against the
/// same stretch of three filters `W` apart from `f`'s start, eight values
/// per pass; the last `len % 4` values portably. Zeros if `f` is too
/// short.
#[inline(always)]
pub(super) fn dot2x3_packed_run<const W: usize>(x: &[i32], f: &[i8]) -> [i64; 3] {
    let n = x.len();
    let Some(f) = f.get(..2 * W + n) else { return [0; 3] };
    let (quads, t) = (n / 4, n / 4 * 4);
    let tail = |k: usize| super::packed::dot_packed_portable(&x[t..], &f[k * W + t..k * W + n]);
    let s = [tail(0), tail(1), tail(2)];
    if quads == 0 {
        return s;
    }
    let ((mut l0, mut h0), (mut l1, mut h1), (mut l2, mut h2)) = (halves(s[0]), halves(s[1]), halves(s[2]));
    // Eight values per pass (loop overhead 2 instructions per 48 MACs
    // instead of 24: conv 8×8×16→16 on the M4 1.57 → 1.53 per MAC); an odd
    // number of fours enters at the second.
    let passes = quads.div_ceil(2);
    // SAFETY: the loop reads words `0..4·quads ≤ n` of `x` and bytes
    // `k·W .. k·W + 4·quads` of `f` for the three filters `k` (`f` is at
    // least `2·W + n` long, checked above by slicing): `passes` passes of
    // eight, less four when entering at the second half. It writes only
    // the listed registers and touches no other memory or the stack.
    #[allow(unsafe_code)]
    unsafe {
        asm_by_halves!(
            quads,
            eight_steps_loop(packed_step),
            x = inout(reg) x.as_ptr() => _,
            f = inout(reg) f.as_ptr() => _,
            n = inout(reg) passes => _,
            l0 = inout(reg) l0,
            h0 = inout(reg) h0,
            l1 = inout(reg) l1,
            h1 = inout(reg) h1,
            l2 = inout(reg) l2,
            h2 = inout(reg) h2,
            p = out(reg) _,
            w = out(reg) _,
            b = const W.saturating_sub(1),
            c = const (2 * W).saturating_sub(1),
            options(nostack, readonly),
        );
    }
    [whole(l0, h0), whole(l1, h1), whole(l2, h2)]
}

/// A 64-bit accumulator as the register pair `smlal` takes, low word first.
#[inline(always)]
fn halves(s: i64) -> (u32, u32) {
    (s as u32, (s >> 32) as u32)
}

/// [`halves`] undone.
#[inline(always)]
fn whole(l: u32, h: u32) -> i64 {
    ((h as u64) << 32 | l as u64) as i64
}

/// One packed word against one filter, into `{l}:{h}`.
macro_rules! packed_one {
    () => {
        concat!("ldr {p}, [{x}], #4\n", "ldrsb {w}, [{f}], #1\n", "smlal {l}, {h}, {w}, {p}")
    };
}

/// [`super::packed::dot_packed_run`] as a loop of eight values per pass (with a
/// window's constant weights LLVM would otherwise unroll it completely
/// into immediates, ~0.5 KB per layer); the last `len % 4` values
/// portably.
#[inline(always)]
pub(super) fn dot_packed_run(x: &[i32], f: &[i8]) -> i64 {
    let n = x.len().min(f.len());
    let (quads, t) = (n / 4, n / 4 * 4);
    let s = super::packed::dot_packed_portable(&x[t..n], &f[t..n]);
    if quads == 0 {
        return s;
    }
    let (mut l, mut h) = halves(s);
    // Eight values per pass, as `dot2x3_packed_run`.
    let passes = quads.div_ceil(2);
    // SAFETY: the loop reads words `0..4·quads ≤ n` of `x` and bytes
    // `0..4·quads` of `f` (`n` is their common length): `passes` passes of
    // eight, less four when entering at the second half. It writes only
    // the listed registers and touches no other memory or the stack.
    #[allow(unsafe_code)]
    unsafe {
        asm_by_halves!(
            quads,
            eight_steps_loop(packed_one),
            x = inout(reg) x.as_ptr() => _,
            f = inout(reg) f.as_ptr() => _,
            n = inout(reg) passes => _,
            l = inout(reg) l,
            h = inout(reg) h,
            p = out(reg) _,
            w = out(reg) _,
            options(nostack, readonly),
        );
    }
    whole(l, h)
}

/// [`super::packed::whole_runs`]'s `Σ |w|`: each word of four weights
/// flipped to excess-128 and summed against 128s by `usada8` (the sum of
/// four absolute differences), the last `len % 4` bytes portably.
#[inline(always)]
pub(super) fn abs_sum(w: &[i8]) -> u32 {
    let words = w.len() / 4;
    let tail: u32 = w[words * 4..].iter().map(|w| w.unsigned_abs() as u32).sum();
    if words == 0 {
        return tail;
    }
    let mut s = tail;
    // SAFETY: the loop reads `words · 4 ≤ w.len()` bytes of `w` with
    // unaligned word loads (allowed on Armv7-M for LDR); it writes only
    // the listed registers and touches no other memory or the stack.
    #[allow(unsafe_code)]
    unsafe {
        core::arch::asm!(
            "2:",
            "ldr {v}, [{p}], #4",
            "eor {v}, {v}, {k}",
            "usada8 {s}, {v}, {k}, {s}",
            "subs {n}, {n}, #1",
            "bne 2b",
            p = inout(reg) w.as_ptr() => _,
            n = inout(reg) words => _,
            s = inout(reg) s,
            k = in(reg) 0x8080_8080u32,
            v = out(reg) _,
            options(nostack, readonly),
        );
    }
    s
}
