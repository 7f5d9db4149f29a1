//! Max, average and global-average pooling, channels-first. Windows and
//! padding follow TFLite: out-of-bounds taps are skipped, and an average
//! divides by the number of in-bounds taps — what the int8 kernels do.

use anyhow::Result;
use tinykd_runtime::format::{Op, layer::PARAM_COUNT};

use super::geometry::{Shape, fits, window2d};
use super::layer::{Device, LayerKind, Saved, u16p};
use super::onnx::{Builder, Cursor, attr_int, window_attrs};
use super::spec::Padding;

/// Max or average pooling.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PoolKind {
    Max,
    Avg,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Pool {
    /// Serialised as `pool`: a layer's `kind` key is its layer type.
    #[serde(rename = "pool")]
    pub kind: PoolKind,
    pub in_shape: Shape,
    pub size: [usize; 2],
    /// Per axis `[height, width]` (saved as one number when they agree).
    #[serde(with = "super::geometry::one_or_two")]
    pub stride: [usize; 2],
    pub padding: Padding,
}

impl Pool {
    /// `None` when the window does not fit.
    pub fn new(
        kind: PoolKind,
        in_shape: Shape,
        size: [usize; 2],
        stride: [usize; 2],
        padding: Padding,
    ) -> Option<Pool> {
        fits(in_shape, size, stride, padding).then_some(Pool { kind, in_shape, size, stride, padding })
    }

    pub fn geometry(&self) -> (Shape, [usize; 2]) {
        let ([oh, ow], pad) = window2d(self.in_shape, self.size, self.stride, self.padding);
        ([self.in_shape[0], oh, ow], pad)
    }

    pub fn out_shape(&self) -> Shape {
        self.geometry().0
    }

    /// Calls `f(output index, in-bounds input indices)` for every output.
    fn windows(&self, mut f: impl FnMut(usize, &[usize])) {
        let ([c, oh, ow], [pt, pl]) = self.geometry();
        let [_, h, w] = self.in_shape;
        let mut idx = Vec::with_capacity(self.size[0] * self.size[1]);
        for ci in 0..c {
            for oy in 0..oh {
                for ox in 0..ow {
                    idx.clear();
                    for ky in 0..self.size[0] {
                        let iy = (oy * self.stride[0] + ky) as isize - pt as isize;
                        if iy < 0 || iy as usize >= h {
                            continue;
                        }
                        for kx in 0..self.size[1] {
                            let ix = (ox * self.stride[1] + kx) as isize - pl as isize;
                            if ix >= 0 && (ix as usize) < w {
                                idx.push((ci * h + iy as usize) * w + ix as usize);
                            }
                        }
                    }
                    f((ci * oh + oy) * ow + ox, &idx);
                }
            }
        }
    }

    pub fn forward(&self, x: &[f32], n: usize) -> Vec<f32> {
        let in_len: usize = self.in_shape.iter().product();
        let out_len: usize = self.out_shape().iter().product();
        let mut y = vec![0.0; n * out_len];
        for s in 0..n {
            let xs = &x[s * in_len..(s + 1) * in_len];
            let ys = &mut y[s * out_len..(s + 1) * out_len];
            self.windows(|o, idx| {
                ys[o] = match self.kind {
                    PoolKind::Max => idx.iter().map(|&i| xs[i]).fold(f32::NEG_INFINITY, f32::max),
                    PoolKind::Avg => idx.iter().map(|&i| xs[i]).sum::<f32>() / idx.len() as f32,
                }
            });
        }
        y
    }

    pub fn backward(&self, x: &[f32], dy: &[f32], n: usize) -> Vec<f32> {
        let in_len: usize = self.in_shape.iter().product();
        let out_len: usize = self.out_shape().iter().product();
        let mut dx = vec![0.0; n * in_len];
        for s in 0..n {
            let xs = &x[s * in_len..(s + 1) * in_len];
            let dys = &dy[s * out_len..(s + 1) * out_len];
            let dxs = &mut dx[s * in_len..(s + 1) * in_len];
            self.windows(|o, idx| match self.kind {
                PoolKind::Max => {
                    // The first maximum takes the gradient (as the forward picks it).
                    let mut best = idx[0];
                    for &i in idx {
                        if xs[i] > xs[best] {
                            best = i;
                        }
                    }
                    dxs[best] += dys[o];
                }
                PoolKind::Avg => {
                    let g = dys[o] / idx.len() as f32;
                    idx.iter().for_each(|&i| dxs[i] += g);
                }
            });
        }
        dx
    }
}

/// Global average pooling: `[C, H, W]` → `[C]`.
pub fn gap_forward(shape: Shape, x: &[f32], n: usize) -> Vec<f32> {
    let [c, h, w] = shape;
    let p = h * w;
    x.chunks_exact(p).take(n * c).map(|ch| ch.iter().sum::<f32>() / p as f32).collect()
}

pub fn gap_backward(shape: Shape, dy: &[f32], n: usize) -> Vec<f32> {
    let [c, h, w] = shape;
    let p = h * w;
    dy.iter().take(n * c).flat_map(|g| std::iter::repeat_n(*g / p as f32, p)).collect()
}

impl LayerKind for Pool {
    fn out_shape(&self, _: Shape) -> Shape {
        Pool::out_shape(self)
    }

    fn forward(&self, x: &[f32], n: usize) -> Vec<f32> {
        Pool::forward(self, x, n)
    }

    fn backward(&self, x: &[f32], _: &Saved, d: &mut Vec<f32>, n: usize, _: &mut [Vec<f32>], _: bool) -> Vec<f32> {
        Pool::backward(self, x, d, n)
    }

    fn device(&self) -> Device {
        Device::Unweighted
    }

    fn device_op(&self, [c, h, w]: Shape) -> Result<Option<(Op, [u16; PARAM_COUNT])>> {
        let params = [
            u16p(h, "height")?,
            u16p(w, "width")?,
            u16p(c, "channels")?,
            u16p(self.size[0], "pool")?,
            u16p(self.size[1], "pool")?,
            u16p(self.stride[0], "stride")?,
            (self.padding == Padding::Same) as u16,
            0,
            u16p(self.stride[1], "stride")?,
            0,
            0,
            0,
        ];
        let op = if self.kind == PoolKind::Max { Op::MaxPool2d } else { Op::AvgPool2d };
        Ok(Some((op, params)))
    }

    fn onnx(&self, b: &mut Builder, at: &mut Cursor) -> Result<()> {
        let mut attrs = window_attrs(at.shape, self.size, self.stride, self.padding, at.one_d);
        let op = match self.kind {
            PoolKind::Max => "MaxPool",
            PoolKind::Avg => {
                attrs.push(attr_int("count_include_pad", 0));
                "AveragePool"
            }
        };
        b.op(op, &[], attrs);
        Ok(())
    }
}

/// Global average pooling of a `[C, H, W]` input to `[C]`.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Gap {
    pub shape: Shape,
}

impl LayerKind for Gap {
    fn out_shape(&self, _: Shape) -> Shape {
        [self.shape[0], 1, 1]
    }

    fn forward(&self, x: &[f32], n: usize) -> Vec<f32> {
        gap_forward(self.shape, x, n)
    }

    fn backward(&self, _: &[f32], _: &Saved, d: &mut Vec<f32>, n: usize, _: &mut [Vec<f32>], _: bool) -> Vec<f32> {
        gap_backward(self.shape, d, n)
    }

    fn device(&self) -> Device {
        Device::Unweighted
    }

    fn device_op(&self, [c, h, w]: Shape) -> Result<Option<(Op, [u16; PARAM_COUNT])>> {
        let mut params = [0; PARAM_COUNT];
        params[..3].copy_from_slice(&[u16p(h, "height")?, u16p(w, "width")?, u16p(c, "channels")?]);
        Ok(Some((Op::GlobalAvgPool, params)))
    }

    fn onnx(&self, b: &mut Builder, _: &mut Cursor) -> Result<()> {
        b.op("GlobalAveragePool", &[], vec![]);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::student::testing::check_gradients;

    #[test]
    fn forward_hand_computed() {
        let x = [1.0, 5.0, 2.0, 4.0, 3.0];
        let max = Pool::new(PoolKind::Max, [1, 1, 5], [1, 2], [2, 2], Padding::Same).unwrap();
        // SAME, k 2, s 2 over 5: out 3, total pad 1 → 0 before: [1,5] [2,4] [3].
        assert_eq!(max.forward(&x, 1), vec![5.0, 4.0, 3.0]);
        let avg = Pool::new(PoolKind::Avg, [1, 1, 5], [1, 2], [2, 2], Padding::Same).unwrap();
        assert_eq!(avg.forward(&x, 1), vec![3.0, 3.0, 3.0]); // the edge window averages one tap
        assert_eq!(gap_forward([2, 1, 2], &[1.0, 3.0, -2.0, 0.0], 1), vec![2.0, -1.0]);
    }

    #[test]
    fn gradients_match_finite_differences() {
        for kind in [PoolKind::Max, PoolKind::Avg] {
            for (shape, k, s, pad) in [
                ([2, 1, 9], [1, 2], [2, 2], Padding::Same),
                ([2, 5, 5], [3, 3], [2, 2], Padding::Valid),
                ([1, 4, 5], [2, 2], [1, 1], Padding::Same),
                // KWS's pool in small (25×5 over 25×5), and strides per axis.
                ([2, 5, 3], [5, 3], [5, 3], Padding::Valid),
                ([1, 6, 5], [3, 2], [2, 1], Padding::Valid),
            ] {
                let p = Pool::new(kind, shape, k, s, pad).unwrap();
                let n = 2;
                let in_len: usize = shape.iter().product();
                let out_len: usize = p.out_shape().iter().product();
                check_gradients(
                    n * in_len,
                    n * out_len,
                    vec![],
                    |x, _| p.forward(x, n),
                    |x, _, dy, _| p.backward(x, dy, n),
                );
            }
        }
        let shape = [3, 2, 4];
        check_gradients(
            2 * 24,
            2 * 3,
            vec![],
            |x, _| gap_forward(shape, x, 2),
            |_, _, dy, _| gap_backward(shape, dy, 2),
        );
    }
}
