//! Finite-difference gradient checking shared by the layer tests.

use rand::{Rng, SeedableRng};

type Forward<'a> = dyn Fn(&[f32], &[Vec<f32>]) -> Vec<f32> + 'a;

/// Checks a layer's analytic gradients against central differences of the
/// scalar `Σ r·y` (fixed random `r`), for every parameter and input value.
/// `backward(x, params, dy, grads) -> dx` must accumulate into `grads`.
pub fn check_gradients(
    x_len: usize,
    y_len: usize,
    params: Vec<Vec<f32>>,
    forward: impl Fn(&[f32], &[Vec<f32>]) -> Vec<f32>,
    backward: impl Fn(&[f32], &[Vec<f32>], &[f32], &mut [Vec<f32>]) -> Vec<f32>,
) {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
    // Distinct inputs at least 0.01 apart (a shuffled ramp): max-pool ties
    // and kinks stay out of reach of the step h.
    let mut x: Vec<f32> = (0..x_len).map(|i| (i as f32 - x_len as f32 / 2.0) * 0.01 + 0.005).collect();
    for i in (1..x.len()).rev() {
        x.swap(i, rng.random_range(0..=i));
    }
    let r: Vec<f32> = (0..y_len).map(|_| rng.random_range(-1.0f32..1.0)).collect();
    let f: &Forward<'_> = &forward;
    let loss = |x: &[f32], p: &[Vec<f32>]| -> f64 { f(x, p).iter().zip(&r).map(|(a, b)| *a as f64 * *b as f64).sum() };
    let mut grads: Vec<Vec<f32>> = params.iter().map(|p| vec![0.0; p.len()]).collect();
    let dx = backward(&x, &params, &r, &mut grads);
    assert_eq!(dx.len(), x_len);
    let h = 2e-3f32;
    let tol = |num: f64, ana: f32| (num - ana as f64).abs() <= 2e-2 * (1.0 + num.abs());
    for (pi, p) in params.iter().enumerate() {
        for i in 0..p.len() {
            let mut plus = params.clone();
            let mut minus = params.clone();
            plus[pi][i] += h;
            minus[pi][i] -= h;
            let num = (loss(&x, &plus) - loss(&x, &minus)) / (2.0 * h as f64);
            assert!(tol(num, grads[pi][i]), "param {pi}[{i}]: numeric {num} vs analytic {}", grads[pi][i]);
        }
    }
    for i in 0..x_len {
        let (mut xp, mut xm) = (x.clone(), x.clone());
        xp[i] += h;
        xm[i] -= h;
        let num = (loss(&xp, &params) - loss(&xm, &params)) / (2.0 * h as f64);
        assert!(tol(num, dx[i]), "dx[{i}]: numeric {num} vs analytic {}", dx[i]);
    }
}

/// Direct-loop convolution with a bounds test per tap: the reference the
/// im2col and run-based kernels are compared with. `groups == channels`
/// gives a depthwise convolution (one filter per channel).
#[allow(clippy::too_many_arguments)]
pub fn direct_conv(
    x: &[f32],
    n: usize,
    in_shape: [usize; 3],
    weight: &[f32],
    bias: &[f32],
    kernel: [usize; 2],
    [sh, sw]: [usize; 2],
    padding: super::spec::Padding,
    depthwise: bool,
) -> Vec<f32> {
    let [c, h, w] = in_shape;
    let ([oh, ow], [pt, pl]) = super::geometry::window2d(in_shape, kernel, [sh, sw], padding);
    let [kh, kw] = kernel;
    let mut y = Vec::with_capacity(n * bias.len() * oh * ow);
    for s in 0..n {
        let xs = &x[s * c * h * w..];
        for (oc, b) in bias.iter().enumerate() {
            for oy in 0..oh {
                for ox in 0..ow {
                    let mut acc = *b as f64;
                    let channels = if depthwise { oc..oc + 1 } else { 0..c };
                    for ci in channels {
                        for ky in 0..kh {
                            for kx in 0..kw {
                                let iy = (oy * sh + ky) as isize - pt as isize;
                                let ix = (ox * sw + kx) as isize - pl as isize;
                                if iy < 0 || ix < 0 || iy as usize >= h || ix as usize >= w {
                                    continue;
                                }
                                let wi = if depthwise {
                                    (oc * kh + ky) * kw + kx
                                } else {
                                    ((oc * c + ci) * kh + ky) * kw + kx
                                };
                                acc += (xs[(ci * h + iy as usize) * w + ix as usize] * weight[wi]) as f64;
                            }
                        }
                    }
                    y.push(acc as f32);
                }
            }
        }
    }
    y
}

/// Input shape, kernel, strides and padding of a test convolution.
pub type ConvGeometry = ([usize; 3], [usize; 2], [usize; 2], super::spec::Padding);

/// Small convolution geometries covering SAME/VALID, strides 1–3, 1-D and
/// 2-D, kernels larger than the input and padding on both sides, and in
/// 2-D rectangular kernels and strides that differ per axis.
pub fn conv_geometries() -> Vec<ConvGeometry> {
    use super::spec::Padding;
    let mut out = Vec::new();
    // Rows of 35 and 37 are wide enough for depthwise layers to run channels-first.
    for (h, w) in [(1, 1), (1, 2), (1, 7), (1, 10), (3, 3), (4, 5), (6, 6), (1, 35), (3, 37)] {
        for k in 1..=4 {
            let kernels: &[[usize; 2]] = if h == 1 { &[[1, k]] } else { &[[k, k], [k, 5 - k]] };
            for &kernel in kernels {
                for stride in 1..=3 {
                    let strides: &[[usize; 2]] =
                        if h == 1 { &[[stride, stride]] } else { &[[stride, stride], [stride, 4 - stride]] };
                    for &stride in strides {
                        for padding in [Padding::Same, Padding::Valid] {
                            if padding == Padding::Valid && (kernel[0] > h || kernel[1] > w) {
                                continue;
                            }
                            out.push(([2, h, w], kernel, stride, padding));
                        }
                    }
                }
            }
        }
    }
    out
}
