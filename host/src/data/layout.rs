//! Sample layout: channels first (`[C, L]`, `[C, H, W]`, as PyTorch) or
//! channels last (`[T, C]`, `[H, W, C]`, as Keras and most sensor logs).
//!
//! Inside tinykd every sample is channels first, so a conv1d slides along
//! time and `--shift` shifts along time whatever the user's layout. A
//! channels-last dataset is transposed once when it is read; the teacher,
//! which was trained on the stored layout, gets its inputs transposed back
//! (`Dataset::stored_order`). The device's input is channels-last (HWC), so a
//! channels-last dataset is what the firmware eats without any reordering.

use std::borrow::Cow;

/// How the axes of one stored sample are ordered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Layout {
    /// The first axis of a sample is the channel axis: `[C, L]`, `[C, H, W]`.
    #[default]
    ChannelsFirst,
    /// The last axis of a sample is the channel axis: `[T, C]`, `[H, W, C]`.
    ChannelsLast,
}

impl Layout {
    pub fn as_str(self) -> &'static str {
        match self {
            Layout::ChannelsFirst => "channels-first",
            Layout::ChannelsLast => "channels-last",
        }
    }

    /// The channels-first shape of a sample stored with `stored` shape.
    pub fn to_internal_shape(self, stored: &[usize]) -> Vec<usize> {
        match (self, stored.split_last()) {
            (Layout::ChannelsLast, Some((c, rest))) if !rest.is_empty() => {
                std::iter::once(*c).chain(rest.iter().copied()).collect()
            }
            _ => stored.to_vec(),
        }
    }

    /// The stored shape of a sample whose channels-first shape is `internal`.
    pub fn to_stored_shape(self, internal: &[usize]) -> Vec<usize> {
        match (self, internal.split_first()) {
            (Layout::ChannelsLast, Some((c, rest))) if !rest.is_empty() => {
                rest.iter().copied().chain(std::iter::once(*c)).collect()
            }
            _ => internal.to_vec(),
        }
    }

    /// Reorders `x` (whole samples of the `stored` shape) to channels first.
    pub fn to_internal<'a>(self, x: &'a [f32], stored: &[usize]) -> Cow<'a, [f32]> {
        match self.split(stored) {
            Some((spatial, c)) => Cow::Owned(transpose_rows(x, spatial, c)),
            None => Cow::Borrowed(x),
        }
    }

    /// Reorders channels-first samples back to the stored layout (`stored`
    /// is the stored shape of one sample).
    pub fn to_stored<'a>(self, x: &'a [f32], stored: &[usize]) -> Cow<'a, [f32]> {
        match self.split(stored) {
            Some((spatial, c)) => Cow::Owned(transpose_rows(x, c, spatial)),
            None => Cow::Borrowed(x),
        }
    }

    /// `(spatial size, channels)` when samples need reordering.
    fn split(self, stored: &[usize]) -> Option<(usize, usize)> {
        match (self, stored.split_last()) {
            (Layout::ChannelsLast, Some((&c, rest))) if !rest.is_empty() && c > 1 => Some((rest.iter().product(), c)),
            _ => None,
        }
    }

    /// One sentence on how a sample of this stored shape is read, with the
    /// flag that reads it the other way when that would make a difference.
    pub fn describe(self, stored: &[usize]) -> String {
        let Some((last, rest)) = stored.split_last() else { return "scalar samples".into() };
        if rest.is_empty() {
            return format!("samples {stored:?} read as 1 channel × {last} steps");
        }
        let dims = |d: &[usize]| d.iter().map(usize::to_string).collect::<Vec<_>>().join(" × ");
        match self {
            Layout::ChannelsFirst => format!(
                "samples {stored:?} read as {} channels × {} {} (channels first); pass --layout channels-last if the \
                 last axis holds the channels (e.g. [time, features])",
                stored[0],
                dims(&stored[1..]),
                if stored.len() == 2 { "steps" } else { "positions" }
            ),
            Layout::ChannelsLast => format!(
                "samples {stored:?} read as {last} channels × {} {} (channels last)",
                dims(rest),
                if rest.len() == 1 { "steps" } else { "positions" }
            ),
        }
    }
}

/// Transposes every `a × b` row-major block of `x` into `b × a`.
fn transpose_rows(x: &[f32], a: usize, b: usize) -> Vec<f32> {
    let len = a * b;
    let mut out = vec![0.0; x.len()];
    for (src, dst) in x.chunks_exact(len).zip(out.chunks_exact_mut(len)) {
        for i in 0..a {
            for j in 0..b {
                dst[j * a + i] = src[i * b + j];
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channels_last_samples_become_channels_first_and_back() {
        // Two samples of [T = 3, C = 2]: value = 10·t + c (+100 for the second).
        let x: Vec<f32> =
            (0..2).flat_map(|n| (0..3).flat_map(move |t| (0..2).map(move |c| (100 * n + 10 * t + c) as f32))).collect();
        let l = Layout::ChannelsLast;
        assert_eq!(l.to_internal_shape(&[3, 2]), vec![2, 3]);
        assert_eq!(l.to_stored_shape(&[2, 3]), vec![3, 2]);
        assert_eq!(l.to_stored_shape(&[3, 4, 5]), vec![4, 5, 3]);
        let internal = l.to_internal(&x, &[3, 2]);
        assert_eq!(&internal[..6], &[0.0, 10.0, 20.0, 1.0, 11.0, 21.0]);
        assert_eq!(&internal[6..], &[100.0, 110.0, 120.0, 101.0, 111.0, 121.0]);
        assert_eq!(&*l.to_stored(&internal, &[3, 2]), &x[..]);
        // [H, W, C] → [C, H, W].
        assert_eq!(l.to_internal_shape(&[4, 5, 3]), vec![3, 4, 5]);
        let img: Vec<f32> = (0..60).map(|v| v as f32).collect();
        let chw = l.to_internal(&img, &[4, 5, 3]);
        assert_eq!(chw[20], 1.0, "channel 1 starts with pixel (0, 0)");
        assert_eq!(&*l.to_stored(&chw, &[4, 5, 3]), &img[..]);
    }

    #[test]
    fn flat_and_single_channel_samples_are_untouched() {
        let x = [1.0, 2.0, 3.0];
        for shape in [&[3][..], &[3, 1]] {
            assert!(matches!(Layout::ChannelsLast.to_internal(&x, shape), Cow::Borrowed(_)));
        }
        assert_eq!(Layout::ChannelsFirst.to_internal_shape(&[29, 12]), vec![29, 12]);
        assert_eq!(Layout::ChannelsLast.to_internal_shape(&[40]), vec![40]);
    }

    #[test]
    fn describes_how_a_sample_is_read() {
        let d = Layout::ChannelsFirst.describe(&[29, 12]);
        assert!(d.contains("29 channels × 12 steps") && d.contains("--layout channels-last"), "{d}");
        let d = Layout::ChannelsLast.describe(&[29, 12]);
        assert!(d.contains("12 channels × 29 steps"), "{d}");
    }
}
