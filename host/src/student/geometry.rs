//! Output sizes and padding, TFLite's rules, shared by training and export so
//! the host's float layers see exactly the windows the device kernels see.

use super::spec::Padding;

/// Output length and leading padding of a window of `k` at `stride` over `input`.
/// `None` when a VALID window does not fit.
pub fn window(input: usize, k: usize, stride: usize, padding: Padding) -> Option<(usize, usize)> {
    match padding {
        Padding::Valid => (input >= k).then(|| ((input - k) / stride + 1, 0)),
        Padding::Same => {
            let out = input.div_ceil(stride);
            let total = ((out - 1) * stride + k).saturating_sub(input);
            Some((out, total / 2))
        }
    }
}

/// Output size `[oh, ow]` and leading padding `[top, left]` of a `kernel`
/// window with strides `[sh, sw]` over the `[H, W]` of `shape`; zeros when
/// it does not fit.
pub fn window2d(shape: Shape, kernel: [usize; 2], stride: [usize; 2], padding: Padding) -> ([usize; 2], [usize; 2]) {
    let (oh, pt) = window(shape[1], kernel[0], stride[0], padding).unwrap_or((0, 0));
    let (ow, pl) = window(shape[2], kernel[1], stride[1], padding).unwrap_or((0, 0));
    ([oh, ow], [pt, pl])
}

/// The outputs `o` in `0..out` whose tap at kernel offset `k` reads inside
/// the input: `0 <= o·stride + k − pad < input`. Walking these ranges instead
/// of testing every tap keeps the inner loops branch-free.
pub fn valid_outputs(out: usize, stride: usize, k: usize, pad: usize, input: usize) -> std::ops::Range<usize> {
    // o·stride ≥ pad − k
    let lo = pad.saturating_sub(k).div_ceil(stride);
    // o·stride ≤ input − 1 + pad − k
    let hi = match (input + pad).checked_sub(k + 1) {
        Some(last) => (last / stride + 1).min(out),
        None => 0,
    };
    lo.min(hi)..hi
}

/// Whether a `kernel` window fits `shape` (SAME always does; VALID needs
/// the kernel no larger than the input).
pub fn fits(shape: Shape, kernel: [usize; 2], stride: [usize; 2], padding: Padding) -> bool {
    window(shape[1], kernel[0], stride[0], padding).is_some()
        && window(shape[2], kernel[1], stride[1], padding).is_some()
}

/// Serde for a per-axis pair (a window's strides) written as one number
/// when both axes agree: the form saved students had before strides per
/// axis, which they keep.
pub mod one_or_two {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer>(v: &[usize; 2], s: S) -> Result<S::Ok, S::Error> {
        if v[0] == v[1] { v[0].serialize(s) } else { v.serialize(s) }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[usize; 2], D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum OneOrTwo {
            One(usize),
            Two([usize; 2]),
        }
        Ok(match OneOrTwo::deserialize(d)? {
            OneOrTwo::One(v) => [v, v],
            OneOrTwo::Two(v) => v,
        })
    }
}

/// A straight run of in-bounds taps of one channel: outputs
/// `out..out + len` (flat `oy·ow + ox`) read inputs `input, input + stride,
/// …` (flat `iy·w + ix`) through kernel tap `tap` (`ky·kw + kx`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TapRun {
    pub tap: usize,
    pub out: usize,
    pub input: usize,
    pub len: usize,
}

/// Every in-bounds tap of a `kernel` window over one `[H, W]` channel of
/// `shape`, as runs (TFLite windows; within a run inputs step by the
/// width's stride; at stride 1 a run may go on into the next rows where
/// both planes do). Convolution, depthwise convolution and their gradients
/// all walk these, computed once per call instead of testing bounds per
/// tap.
pub fn tap_runs(shape: Shape, kernel: [usize; 2], [sh, sw]: [usize; 2], padding: Padding) -> Vec<TapRun> {
    let ([oh, ow], [pt, pl]) = window2d(shape, kernel, [sh, sw], padding);
    let [_, h, w] = shape;
    let mut runs: Vec<TapRun> = Vec::new();
    for ky in 0..kernel[0] {
        for kx in 0..kernel[1] {
            let xs = valid_outputs(ow, sw, kx, pl, w);
            if xs.is_empty() {
                continue;
            }
            for oy in valid_outputs(oh, sh, ky, pt, h) {
                let run = TapRun {
                    tap: ky * kernel[1] + kx,
                    out: oy * ow + xs.start,
                    input: (oy * sh + ky - pt) * w + xs.start * sw + kx - pl,
                    len: xs.len(),
                };
                // Whole rows at stride 1 (a SAME window's centre column) continue
                // into the next row in both planes: one run (a ResNet-8 3×3
                // convolution's im2col has a third fewer copies).
                match runs.last_mut() {
                    Some(last)
                        if sw == 1
                            && last.tap == run.tap
                            && last.out + last.len == run.out
                            && last.input + last.len == run.input =>
                    {
                        last.len += run.len
                    }
                    _ => runs.push(run),
                }
            }
        }
    }
    runs
}

/// Channels-first activation shape `[C, H, W]` (1-D data has H = 1).
pub type Shape = [usize; 3];

/// The `[C, H, W]` view of a sample shape: `[L]` → `[1, 1, L]`, `[C, L]` → `[C, 1, L]`.
pub fn as_chw(sample: &[usize]) -> Option<Shape> {
    match *sample {
        [l] => Some([1, 1, l]),
        [c, l] => Some([c, 1, l]),
        [c, h, w] => Some([c, h, w]),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tflite_same_and_valid() {
        assert_eq!(window(40, 5, 2, Padding::Same), Some((20, 1))); // total 3 → 1 before
        assert_eq!(window(40, 3, 1, Padding::Same), Some((40, 1)));
        assert_eq!(window(40, 4, 2, Padding::Same), Some((20, 1))); // total 2 → 1
        assert_eq!(window(8, 3, 2, Padding::Valid), Some((3, 0)));
        assert_eq!(window(2, 3, 1, Padding::Valid), None);
        assert_eq!(window(7, 2, 2, Padding::Same), Some((4, 0))); // total 1 → 0 before
    }

    /// The runs name every in-bounds (output, input, tap) once, as a
    /// per-tap test over the window finds them; full rows at stride 1
    /// join into one run.
    #[test]
    fn tap_runs_cover_every_in_bounds_tap_once() {
        for (shape, kernel, stride, padding) in [
            ([1, 5, 6], [3, 3], [1, 1], Padding::Same),
            ([1, 7, 5], [3, 2], [2, 1], Padding::Same),
            ([1, 6, 7], [2, 3], [1, 2], Padding::Valid),
            ([1, 1, 9], [1, 4], [1, 1], Padding::Same),
        ] {
            let ([oh, ow], [pt, pl]) = window2d(shape, kernel, stride, padding);
            let mut want = Vec::new();
            for oy in 0..oh {
                for ox in 0..ow {
                    for ky in 0..kernel[0] {
                        for kx in 0..kernel[1] {
                            let (iy, ix) = (
                                (oy * stride[0] + ky) as isize - pt as isize,
                                (ox * stride[1] + kx) as isize - pl as isize,
                            );
                            if (0..shape[1] as isize).contains(&iy) && (0..shape[2] as isize).contains(&ix) {
                                want.push((oy * ow + ox, iy as usize * shape[2] + ix as usize, ky * kernel[1] + kx));
                            }
                        }
                    }
                }
            }
            let runs = tap_runs(shape, kernel, stride, padding);
            let mut got: Vec<_> = runs
                .iter()
                .flat_map(|r| (0..r.len).map(move |j| (r.out + j, r.input + j * stride[1], r.tap)))
                .collect();
            want.sort_unstable();
            got.sort_unstable();
            assert_eq!(got, want, "{shape:?} {kernel:?} {stride:?} {padding:?}");
        }
        // 3×3 SAME over 5×6: the centre column's five rows are one run of 30.
        let runs = tap_runs([1, 5, 6], [3, 3], [1, 1], Padding::Same);
        assert!(runs.iter().any(|r| r.tap == 4 && r.len == 30), "{runs:?}");
    }

    #[test]
    fn valid_outputs_match_a_per_tap_test() {
        for input in 1..12 {
            for k in 0..5 {
                for stride in 1..4 {
                    for pad in 0..4 {
                        for out in 0..10 {
                            let want: Vec<usize> = (0..out)
                                .filter(|o| {
                                    let i = (o * stride + k) as isize - pad as isize;
                                    i >= 0 && (i as usize) < input
                                })
                                .collect();
                            let got: Vec<usize> = valid_outputs(out, stride, k, pad, input).collect();
                            assert_eq!(got, want, "input {input} k {k} stride {stride} pad {pad} out {out}");
                        }
                    }
                }
            }
        }
    }
}
