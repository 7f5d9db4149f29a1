//! Sliding-window geometry shared by convolution and pooling.
//!
//! Output sizes and padding follow TensorFlow Lite (`ComputePaddingHeightWidth`)
//! exactly, because bit-exactness with TFLite needs the same windows, not just
//! the same arithmetic:
//!
//! * VALID: `out = (in − k) / stride + 1` (needs `in ≥ k`), no padding;
//! * SAME: `out = ceil(in / stride)`, `total = max((out − 1)·stride + k − in, 0)`,
//!   `pad_before = total / 2`.
//!
//! Taps that fall outside the input are skipped (not read as zeros): for a
//! convolution that is the same as zero-padding the *offset* input `x − z_in`,
//! and for pooling it keeps padding out of the max and the average's count.

/// Padding mode of a sliding-window layer, as stored in its operator parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Padding {
    /// Only windows that lie entirely inside the input.
    Valid = 0,
    /// `ceil(in / stride)` outputs; windows may hang over the edges.
    Same = 1,
}

impl Padding {
    /// Decodes a padding parameter (0 VALID, 1 SAME).
    pub const fn from_u16(v: u16) -> Option<Padding> {
        match v {
            0 => Some(Padding::Valid),
            1 => Some(Padding::Same),
            _ => None,
        }
    }
}

/// Output size and padding before the first element along one axis.
/// `const` (hence `match`, not `?`) so that a model compiled into the
/// firmware gets its windows at compile time.
const fn axis(input: usize, kernel: usize, stride: usize, padding: Padding) -> Result<(usize, usize), &'static str> {
    match padding {
        Padding::Valid => match input.checked_sub(kernel) {
            Some(span) => Ok((span / stride + 1, 0)),
            None => Err("valid padding needs an input at least as large as the window"),
        },
        Padding::Same => {
            let out = input.div_ceil(stride);
            // `input ≥ 1` so `out ≥ 1`, and `(out − 1)·stride < input`: only
            // adding the kernel size can overflow.
            match ((out - 1) * stride).checked_add(kernel) {
                Some(reach) => Ok((out, reach.saturating_sub(input) / 2)),
                None => Err("window size overflows"),
            }
        }
    }
}

/// The in-bounds part of one window along one axis: kernel taps `k0..k1`
/// read input positions `i0..i0 + (k1 − k0)`, all inside the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Taps {
    pub k0: usize,
    pub k1: usize,
    pub i0: usize,
}

impl Taps {
    /// Number of in-bounds taps.
    #[inline(always)]
    pub fn len(self) -> usize {
        self.k1 - self.k0
    }

    /// Kernel index paired with input index, for every in-bounds tap.
    #[inline(always)]
    pub fn iter(self) -> impl Iterator<Item = (usize, usize)> {
        (self.k0..self.k1).zip(self.i0..)
    }
}

/// Taps of output position `o`. Saturating arithmetic: never panics, and the
/// result stays inside `0..kernel` and `0..input` for any window.
#[inline(always)]
fn taps(o: usize, stride: usize, pad: usize, kernel: usize, input: usize) -> Taps {
    let origin = o.saturating_mul(stride);
    let (k0, i0) = if origin >= pad { (0, origin - pad) } else { (pad - origin, 0) };
    let k1 = kernel.min(input.saturating_add(pad).saturating_sub(origin));
    Taps { k0, k1: k1.max(k0), i0 }
}

/// Geometry of a 2-D sliding window (a stride per axis). Built only
/// by [`Window::new`], so the derived output size and padding always agree
/// with the inputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    in_h: usize,
    in_w: usize,
    kernel_h: usize,
    kernel_w: usize,
    stride_h: usize,
    stride_w: usize,
    pad_top: usize,
    pad_left: usize,
    out_h: usize,
    out_w: usize,
}

impl Window {
    /// A window with the same stride along both axes (see [`Window::with_strides`]).
    pub const fn new(
        in_h: usize,
        in_w: usize,
        kernel_h: usize,
        kernel_w: usize,
        stride: usize,
        padding: Padding,
    ) -> Result<Window, &'static str> {
        Window::with_strides(in_h, in_w, kernel_h, kernel_w, stride, stride, padding)
    }

    /// Computes the output size and padding; the error says which rule the
    /// parameters break (it becomes `Error::Malformed` at model load).
    pub const fn with_strides(
        in_h: usize,
        in_w: usize,
        kernel_h: usize,
        kernel_w: usize,
        stride_h: usize,
        stride_w: usize,
        padding: Padding,
    ) -> Result<Window, &'static str> {
        if in_h == 0 || in_w == 0 {
            return Err("window input height or width is 0");
        }
        if kernel_h == 0 || kernel_w == 0 {
            return Err("window kernel height or width is 0");
        }
        if stride_h == 0 || stride_w == 0 {
            return Err("window stride is 0");
        }
        let (out_h, pad_top) = match axis(in_h, kernel_h, stride_h, padding) {
            Ok(v) => v,
            Err(e) => return Err(e),
        };
        let (out_w, pad_left) = match axis(in_w, kernel_w, stride_w, padding) {
            Ok(v) => v,
            Err(e) => return Err(e),
        };
        Ok(Window { in_h, in_w, kernel_h, kernel_w, stride_h, stride_w, pad_top, pad_left, out_h, out_w })
    }

    pub fn in_h(&self) -> usize {
        self.in_h
    }
    pub fn in_w(&self) -> usize {
        self.in_w
    }
    pub fn kernel_h(&self) -> usize {
        self.kernel_h
    }
    pub fn kernel_w(&self) -> usize {
        self.kernel_w
    }
    pub fn stride_h(&self) -> usize {
        self.stride_h
    }
    pub fn stride_w(&self) -> usize {
        self.stride_w
    }
    pub fn pad_top(&self) -> usize {
        self.pad_top
    }
    pub fn pad_left(&self) -> usize {
        self.pad_left
    }
    pub fn out_h(&self) -> usize {
        self.out_h
    }
    pub fn out_w(&self) -> usize {
        self.out_w
    }

    /// Input elements for `channels` channels (`None` on overflow).
    pub fn input_len(&self, channels: usize) -> Option<usize> {
        self.in_h.checked_mul(self.in_w)?.checked_mul(channels)
    }

    /// Output elements for `channels` channels (`None` on overflow).
    pub fn output_len(&self, channels: usize) -> Option<usize> {
        self.out_h.checked_mul(self.out_w)?.checked_mul(channels)
    }

    /// Kernel taps (`kernel_h · kernel_w`, `None` on overflow).
    pub fn kernel_len(&self) -> Option<usize> {
        self.kernel_h.checked_mul(self.kernel_w)
    }

    /// In-bounds kernel rows of output row `oy`.
    #[inline(always)]
    pub(crate) fn rows(&self, oy: usize) -> Taps {
        taps(oy, self.stride_h, self.pad_top, self.kernel_h, self.in_h)
    }

    /// In-bounds kernel columns of output column `ox`.
    #[inline(always)]
    pub(crate) fn cols(&self, ox: usize) -> Taps {
        taps(ox, self.stride_w, self.pad_left, self.kernel_w, self.in_w)
    }

    /// Output columns whose windows lie entirely inside the input
    /// horizontally (a contiguous range, possibly empty): the interior that
    /// kernels run without per-pixel edge handling.
    pub(crate) fn full_cols(&self) -> core::ops::Range<usize> {
        let first = (0..self.out_w).find(|&ox| self.cols(ox).len() == self.kernel_w).unwrap_or(self.out_w);
        let end = (first..self.out_w).find(|&ox| self.cols(ox).len() != self.kernel_w).unwrap_or(self.out_w);
        first..end
    }

    /// Whether the window of an output position lies entirely inside the input.
    #[inline(always)]
    pub(crate) fn is_full(&self, rows: Taps, cols: Taps) -> bool {
        rows.len() == self.kernel_h && cols.len() == self.kernel_w
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_shapes() {
        // in 7, k 3, stride 2: windows start at 0, 2, 4 -> (7 - 3) / 2 + 1 = 3.
        let w = Window::new(1, 7, 1, 3, 2, Padding::Valid).unwrap();
        assert_eq!((w.out_h(), w.out_w(), w.pad_left()), (1, 3, 0));
        assert_eq!(w.cols(2), Taps { k0: 0, k1: 3, i0: 4 });
        // The trailing element 6 is dropped when the stride does not fit it: in 6, k 3, s 2 -> 2.
        assert_eq!(Window::new(6, 6, 3, 3, 2, Padding::Valid).unwrap().out_h(), 2);
        assert!(Window::new(2, 5, 2, 6, 1, Padding::Valid).is_err());
        assert!(Window::new(2, 5, 3, 5, 1, Padding::Valid).is_err());
    }

    #[test]
    fn same_shapes_match_tflite() {
        // in 5, k 3, s 1: out 5, total pad 2, 1 before (and 1 after).
        let w = Window::new(5, 5, 3, 3, 1, Padding::Same).unwrap();
        assert_eq!((w.out_h(), w.pad_top()), (5, 1));
        assert_eq!(w.rows(0), Taps { k0: 1, k1: 3, i0: 0 }); // tap 0 hangs over the top
        assert_eq!(w.rows(2), Taps { k0: 0, k1: 3, i0: 1 });
        assert_eq!(w.rows(4), Taps { k0: 0, k1: 2, i0: 3 }); // tap 2 hangs over the bottom
        // in 6, k 2, s 2: out 3, total pad max(4 + 2 - 6, 0) = 0.
        let w = Window::new(6, 6, 2, 2, 2, Padding::Same).unwrap();
        assert_eq!((w.out_w(), w.pad_left()), (3, 0));
        // in 7, k 4, s 2: out 4, total pad 6 + 4 - 7 = 3, 1 before (TFLite puts the odd one after).
        let w = Window::new(1, 7, 1, 4, 2, Padding::Same).unwrap();
        assert_eq!((w.out_w(), w.pad_left()), (4, 1));
        assert_eq!(w.cols(3), Taps { k0: 0, k1: 2, i0: 5 });
        // A kernel larger than the input: in 2, k 5, s 1 -> out 2, pad 4 / 2 = 2.
        let w = Window::new(1, 2, 1, 5, 1, Padding::Same).unwrap();
        assert_eq!(w.cols(0), Taps { k0: 2, k1: 4, i0: 0 });
        assert_eq!(w.cols(1), Taps { k0: 1, k1: 3, i0: 0 });
    }

    #[test]
    fn zero_parameters_are_rejected() {
        assert!(Window::new(0, 4, 1, 1, 1, Padding::Same).is_err());
        assert!(Window::new(4, 4, 0, 1, 1, Padding::Same).is_err());
        assert!(Window::new(4, 4, 1, 1, 0, Padding::Same).is_err());
        assert!(Window::new(4, 4, 1, usize::MAX, 1, Padding::Same).is_err());
    }

    #[test]
    fn full_columns_are_the_interior() {
        // in 7, k 3, s 1, SAME: columns 1..6 are full, 0 and 6 hang over.
        assert_eq!(Window::new(1, 7, 1, 3, 1, Padding::Same).unwrap().full_cols(), 1..6);
        // VALID: all full.
        assert_eq!(Window::new(1, 7, 1, 3, 2, Padding::Valid).unwrap().full_cols(), 0..3);
        // A kernel wider than the input: none full.
        assert_eq!(Window::new(1, 2, 1, 5, 1, Padding::Same).unwrap().full_cols(), 2..2);
    }

    proptest::proptest! {
        /// Every output window has at least one in-bounds tap, and the taps
        /// agree with a signed-arithmetic computation of the window.
        #[test]
        fn taps_match_signed_arithmetic(input in 1usize..40, k in 1usize..9, s in 1usize..5, same: bool) {
            let padding = if same { Padding::Same } else { Padding::Valid };
            let Ok(w) = Window::new(1, input, 1, k, s, padding) else {
                proptest::prop_assert!(!same && input < k);
                return Ok(());
            };
            for o in 0..w.out_w() {
                let t = w.cols(o);
                let origin = (o * s) as i64 - w.pad_left() as i64;
                let want: Vec<(usize, usize)> = (0..k as i64)
                    .filter(|kx| (0..input as i64).contains(&(origin + kx)))
                    .map(|kx| (kx as usize, (origin + kx) as usize))
                    .collect();
                proptest::prop_assert!(!want.is_empty());
                proptest::prop_assert_eq!(w.full_cols().contains(&o), want.len() == k);
                proptest::prop_assert_eq!(t.iter().collect::<Vec<_>>(), want);
            }
        }
    }
}
