//! [`super::conv_gathered`] on the Cortex-M4/M7 in builds for speed: two
//! horizontally adjacent output pixels per pass, packed in one word per
//! value (`dot::packed`: two multiply-accumulates per `smlal`), their
//! window read from packed input rows instead of gathered afresh.
//!
//! Gathering each pair's window writes every input value once per window
//! it falls in (nine times for 3×3): on conv 8×8×16→16 that was 0.27 of
//! the layer's 1.74 instructions per MAC. Here a pair column `(ox, ox + 1)`
//! walks down the output rows and packs each input row of its windows
//! once, into slot `s = row mod kernel_h` of a ring of `kernel_w · in_c`
//! words per slot; a row above or below the input (padding) is a slot of
//! zeros. Slots below `kernel_h − 1` are written twice, at `s` and
//! `s + kernel_h`, so that every window is `kernel_h` consecutive slots
//! laid out like a filter: one straight run, as a gathered window was. The
//! ring (`2·kernel_h − 1` slots used) takes twice the window's buffer on
//! the stack. Windows under 16 values come here only with more than one
//! row (a 1-D window has no rows to share, and the one-pixel pass
//! multiplies by its weights as immediates). An odd width's last column pairs its pixels vertically,
//! each window gathered.

use super::conv_gathered::{gather_packed, packed_pair_channels};
use super::dot::packed::{PACKED_MAX, pack, whole_runs};
use super::window::Taps;
use super::{ChannelTable, ConvParams, Epilogue};

/// The convolution, for a layer [`super::conv_gathered::applies`] accepts
/// with a buffer of `WINDOW` values, and slices whose lengths the caller
/// has checked against `p`.
#[inline(always)]
pub(super) fn conv2d_packed_rows<
    const SINGLE: bool,
    const LAYER: usize,
    const WINDOW: usize,
    C: ChannelTable,
    E: Epilogue,
>(
    p: &ConvParams,
    input: &[i8],
    weights: &[i8],
    channels: C,
    output: &mut [i8],
    epilogue: &E,
) {
    let taps = p.window.kernel_h() * p.window.kernel_w() * p.in_channels;
    // The window in one run when these filters allow it.
    let whole = taps > PACKED_MAX && whole_runs(weights, taps, p.input_zero_point);
    walk_pairs::<WINDOW>(
        p,
        input,
        output,
        #[inline(always)]
        |window, p0, p1| {
            packed_pair_channels::<SINGLE, LAYER, WINDOW, C, E>(
                p, window, taps, whole, weights, channels, p0, p1, epilogue,
            )
        },
    );
}

/// Calls `pair(window, p0, p1)` for every pair of output pixels (`p1` is
/// `None` for an odd last one) with their packed window laid out like a
/// filter, `kernel_h · kernel_w · in_c` values: pair columns down the
/// output rows through the ring, then an odd width's last column in
/// vertical pairs, gathered.
#[inline(always)]
fn walk_pairs<const WINDOW: usize>(
    p: &ConvParams,
    input: &[i8],
    output: &mut [i8],
    mut pair: impl FnMut(&[i32; WINDOW], &mut [i8], Option<&mut [i8]>),
) {
    let win = p.window;
    let (kh, row_len, out_c) = (win.kernel_h(), win.kernel_w() * p.in_channels, p.out_channels);
    let (out_h, out_w, stride, pad_top, in_h) = (win.out_h(), win.out_w(), win.stride_h(), win.pad_top(), win.in_h());
    if kh * row_len > WINDOW || out_c == 0 {
        return;
    }
    // Rows `v` of the input padded at the top (input row `v − pad_top`),
    // each at slots `v mod kh` and, below `kh − 1`, `v mod kh + kh`.
    let mut ring = [[0i32; WINDOW]; 2];
    for ox in (0..out_w / 2).map(|k| 2 * k) {
        let (cols0, cols1) = (win.cols(ox), win.cols(ox + 1));
        // The next padded row to pack (rows the stride skips are not).
        let mut next = 0;
        for oy in 0..out_h {
            let top = oy * stride;
            next = next.max(top);
            while next < top + kh {
                // Its slot, and the copy `kh` slots on (none for the last).
                let slot = next % kh;
                let (lower, upper) = ring.as_flattened_mut().split_at_mut(kh * row_len);
                let at = slot * row_len..(slot + 1) * row_len;
                let Some(row) = lower.get_mut(at.clone()) else { return };
                let copy = if slot + 1 < kh { upper.get_mut(at) } else { None };
                match next.checked_sub(pad_top).filter(|&r| r < in_h) {
                    Some(r) => pack_row(p, r, cols0, cols1, input, row, copy),
                    None => {
                        row.fill(0);
                        if let Some(copy) = copy {
                            copy.fill(0);
                        }
                    }
                }
                next += 1;
            }
            // The window: `kh` slots from the one holding row `top`.
            let first = (top % kh) * row_len;
            let Some(window) = ring.as_flattened().get(first..first + WINDOW) else { return };
            let Ok(window) = <&[i32; WINDOW]>::try_from(window) else { return };
            let at = (oy * out_w + ox) * out_c;
            let Some(pixels) = output.get_mut(at..at + 2 * out_c) else { return };
            let (p0, p1) = pixels.split_at_mut(out_c);
            pair(window, p0, Some(p1));
        }
    }
    if out_w % 2 == 1 {
        // The last column, two rows per pass, each window gathered.
        let (ox, cols, [window, _]) = (out_w - 1, win.cols(out_w - 1), &mut ring);
        for oy in (0..out_h).step_by(2) {
            let at = (oy * out_w + ox) * out_c;
            let Some((head, tail)) = output.split_at_mut_checked(at + out_c) else { return };
            let Some(p0) = head.get_mut(at..) else { return };
            gather_packed(p, win.rows(oy), cols, input, window, false);
            let p1 = if oy + 1 < out_h {
                gather_packed(p, win.rows(oy + 1), cols, input, window, true);
                tail.get_mut((out_w - 1) * out_c..out_w * out_c)
            } else {
                None
            };
            pair(window, p0, p1);
        }
    }
}

/// Packs input row `r` for the pixel pair whose columns' taps are `c0`,
/// `c1` into `slot`, and `copy` if any, laid out like one row of a filter
/// (`kernel_w · in_c` values): each value `pack(x0 − z_in, x1 − z_in)`, a
/// pixel's part 0 where its tap is in the padding. Written to both in one
/// pass: a copy afterwards (`memcpy`) cost conv 8×8×16→16 on the M4 2,600
/// more instructions.
#[inline(always)]
fn pack_row(p: &ConvParams, r: usize, c0: Taps, c1: Taps, input: &[i8], slot: &mut [i32], copy: Option<&mut [i32]>) {
    let (kw, in_c, zin) = (p.window.kernel_w(), p.in_channels, p.input_zero_point);
    let row = r * p.window.in_w() * in_c;
    let n = kw * in_c;
    let (Some(slot), mut copy) = (slot.get_mut(..n), copy.and_then(|c| c.get_mut(..n))) else { return };
    // Where tap `kx` of a pixel whose columns' taps are `t` reads (`t`
    // holds `kx`).
    let at = |t: Taps, kx: usize| row + (t.i0 + kx - t.k0) * in_c;
    // Taps both pixels read: one run of the input for each.
    let (k0, k1) = (c0.k0.max(c1.k0), c0.k1.min(c1.k1));
    if k0 < k1 {
        let len = (k1 - k0) * in_c;
        let (a, b) = (at(c0, k0), at(c1, k0));
        let offset = pack(zin, zin);
        let v = |(a, b): (&i8, &i8)| pack(*a as i32, *b as i32).wrapping_sub(offset);
        let span = k0 * in_c..k0 * in_c + len;
        if let (Some(a), Some(b), Some(d)) = (input.get(a..a + len), input.get(b..b + len), slot.get_mut(span.clone()))
        {
            match copy.as_deref_mut().and_then(|c| c.get_mut(span)) {
                Some(e) => {
                    for ((d, e), x) in d.iter_mut().zip(e.iter_mut()).zip(a.iter().zip(b)) {
                        (*d, *e) = (v(x), v(x));
                    }
                }
                None => {
                    for (d, x) in d.iter_mut().zip(a.iter().zip(b)) {
                        *d = v(x);
                    }
                }
            }
        }
    }
    if k0 == 0 && k1 == kw {
        // Both windows inside the input: no edge to fill (conv 8×8×1→8 on
        // the M4, three values a row: 4.79 → 4.71 per MAC).
        return;
    }
    // Taps in the padding for one pixel or both.
    let mut put = |i: usize, v: i32| {
        if let Some(d) = slot.get_mut(i) {
            *d = v;
        }
        if let Some(d) = copy.as_deref_mut().and_then(|c| c.get_mut(i)) {
            *d = v;
        }
    };
    for kx in (0..kw).filter(|kx| !(k0..k1).contains(kx)) {
        let side = |t: Taps| (t.k0..t.k1).contains(&kx).then(|| at(t, kx)).and_then(|i| input.get(i..i + in_c));
        let (a, b) = (side(c0), side(c1));
        let v = |s: Option<&[i8]>, c: usize| s.and_then(|s| s.get(c)).map_or(0, |x| *x as i32 - zin);
        for c in 0..in_c {
            put(kx * in_c + c, pack(v(a, c), v(b, c)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::conv_gathered::MAX_WINDOW;
    use super::super::reference::{self, conv_case_up_to, conv_params, quant, table};
    use super::super::{ChannelQuant, Clamp, Padding, Store, Window};
    use super::*;
    use proptest::prelude::*;

    /// Runs the kernel with a buffer of exactly the filter's length when it
    /// is one of a few (three channels per pass), else of `MAX_WINDOW`.
    fn run(params: &ConvParams, x: &[i8], w: &[i8], t: &[u8], out: &mut [i8], single: bool) {
        let taps = params.window.kernel_h() * params.window.kernel_w() * params.in_channels;
        macro_rules! exact {
            ($($n:literal),*) => {
                match (taps, single) {
                    $(($n, false) => conv2d_packed_rows::<false, 0, $n, &[u8], Store>(params, x, w, t, out, &Store),
                      ($n, true) => conv2d_packed_rows::<true, 0, $n, &[u8], Store>(params, x, w, t, out, &Store),)*
                    (_, false) => conv2d_packed_rows::<false, 0, MAX_WINDOW, &[u8], Store>(params, x, w, t, out, &Store),
                    (_, true) => conv2d_packed_rows::<true, 0, MAX_WINDOW, &[u8], Store>(params, x, w, t, out, &Store),
                }
            };
        }
        exact!(1, 2, 3, 4, 6, 8, 9, 12, 16, 18, 24, 27, 36, 48, 144)
    }

    #[test]
    fn hand_computed_1d_same_two_channels_in_and_out() {
        // `conv`'s hand-computed case (worked there): width 3, so one pair
        // and the odd last column; 2 input channels, kernel 3, SAME.
        let win = Window::new(1, 3, 1, 3, 1, Padding::Same).unwrap();
        let p = ConvParams {
            window: win,
            in_channels: 2,
            out_channels: 2,
            input_zero_point: 1,
            output_zero_point: 10,
            clamp: Clamp { min: -128, max: 127 },
        };
        let t = table(&[
            ChannelQuant { bias: 2, multiplier: 1 << 30, shift: 0 },
            ChannelQuant { bias: -6, multiplier: 1 << 30, shift: 0 },
        ]);
        let w = [1, 0, 0, 1, 1, 1, -1, -1, 2, 0, 0, -2];
        for single in [false, true] {
            let mut out = [0i8; 6];
            run(&p, &[1, 2, 3, 4, 5, 6], &w, &t, &mut out, single);
            // Both roundings take the negative ties −6.5 and −1.5 up.
            assert_eq!(out, [14, 4, 17, 4, 15, 9], "single rounding {single}");
        }
    }

    /// Windows of 3×3 over 16 channels (the buffer's largest, more than one
    /// packed run's worth) and one row of 144: every value at an extreme
    /// in the worst case, odd and even sizes, strides, both paddings.
    fn long_window_case() -> impl Strategy<Value = (reference::Params, Vec<i8>, Vec<i8>, Vec<ChannelQuant>)> {
        let extreme = || prop_oneof![Just(-128i8), Just(127), any::<i8>()];
        (
            prop_oneof![Just((3u16, 3u16, 16u16)), Just((1, 3, 48)), Just((1, 1, 144)), Just((2, 2, 36))],
            1u16..8,
            1u16..8,
            1u16..6,
            1u16..3,
            0u16..2,
        )
            .prop_flat_map(move |((kh, kw, in_c), h, w, out_c, stride, pad)| {
                let (in_h, in_w) = (h.max(kh), w.max(kw));
                let ch = (-200_000i32..200_000, (1i32 << 30)..=i32::MAX, -12i32..=1)
                    .prop_map(|(bias, multiplier, shift)| ChannelQuant { bias, multiplier, shift });
                (
                    Just(reference::conv_record([in_h, in_w, in_c, out_c, kh, kw, stride, pad, stride])),
                    proptest::collection::vec(extreme(), (in_h * in_w * in_c) as usize),
                    proptest::collection::vec(extreme(), (out_c * kh * kw * in_c) as usize),
                    proptest::collection::vec(ch, out_c as usize),
                )
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn long_windows_match_naive_reference((p, x, w, ch) in long_window_case(), q in quant()) {
            let params = conv_params(p, q);
            let want = reference::conv2d(p, &x, &w, &ch, q);
            let mut got = vec![0i8; want.len()];
            if p[4] * p[5] * p[2] == 144 {
                conv2d_packed_rows::<false, 0, 144, &[u8], Store>(&params, &x, &w, &table(&ch), &mut got, &Store);
            } else {
                run(&params, &x, &w, &table(&ch), &mut got, false);
            }
            prop_assert_eq!(&got, &want);
        }
    }

    proptest! {
        /// Against the naive reference on random shapes (odd and even
        /// widths, strides, padding), both roundings.
        #[test]
        fn matches_naive_reference((p, x, w, ch) in conv_case_up_to(false, 1..20, (7, 8)), q in quant()) {
            let params = conv_params(p, q);
            let win = params.window;
            prop_assume!(win.kernel_h() * win.kernel_w() * params.in_channels <= MAX_WINDOW);
            let want = reference::conv2d(p, &x, &w, &ch, q);
            let mut got = vec![0i8; want.len()];
            run(&params, &x, &w, &table(&ch), &mut got, false);
            prop_assert_eq!(&got, &want);
            let mut single = vec![0i8; want.len()];
            super::super::conv::conv2d_rounded::<true>(&params, &x, &w, &table(&ch), &mut single);
            run(&params, &x, &w, &table(&ch), &mut got, true);
            prop_assert_eq!(&got, &single);
        }
    }
}
