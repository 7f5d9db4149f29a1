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
/// window over the `[H, W]` of `shape`; zeros when it does not fit.
pub fn window2d(shape: Shape, kernel: [usize; 2], stride: usize, padding: Padding) -> ([usize; 2], [usize; 2]) {
    let (oh, pt) = window(shape[1], kernel[0], stride, padding).unwrap_or((0, 0));
    let (ow, pl) = window(shape[2], kernel[1], stride, padding).unwrap_or((0, 0));
    ([oh, ow], [pt, pl])
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
}
