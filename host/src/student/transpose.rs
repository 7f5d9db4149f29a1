//! Batched matrix transposes: the depthwise layer's switch between
//! channels-first activations and the channels-last order its small maps
//! are computed in.
//!
//! Written by hand because a plain loop, even in cache-sized tiles, moves
//! one value per instruction: on MobileNet's 6×6×128 maps the four
//! transposes per layer and step cost as much as the convolution itself.
//! With AVX2, an 8 × 8 tile is eight loads, 24 shuffles and eight stores.

/// Each of `n` row-major `rows × cols` matrices in `x`, transposed.
pub(crate) fn transpose(x: &[f32], n: usize, rows: usize, cols: usize) -> Vec<f32> {
    let size = rows * cols;
    assert!(x.len() >= n * size, "transpose: {} values for {n} matrices of {rows}×{cols}", x.len());
    let mut t = vec![0.0; n * size];
    for (src, dst) in x.chunks_exact(size).zip(t.chunks_exact_mut(size)) {
        one(src, dst, rows, cols);
    }
    t
}

/// `dst` (`cols × rows`) = `src` (`rows × cols`) transposed.
fn one(src: &[f32], dst: &mut [f32], rows: usize, cols: usize) {
    // Whole 8 × 8 tiles by the vector kernel when there is one; the ragged
    // edges (and everything without AVX2) by `tile`, whose 8 × 8 blocks
    // keep a tile's reads and writes within eight cache lines each.
    let (full_rows, full_cols) = if simd::available() { (rows / 8 * 8, cols / 8 * 8) } else { (0, 0) };
    if full_rows > 0 && full_cols > 0 {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: AVX2 is available, and `tiles` reads and writes only the
        // full tiles of `src` and `dst`, whose lengths the chunking fixed.
        #[allow(unsafe_code)]
        unsafe {
            simd::tiles(src, dst, rows, cols, full_rows, full_cols);
        }
    }
    // The right edge of the tiled rows, then the rows below them.
    tile(src, dst, rows, cols, 0..full_rows, full_cols..cols);
    tile(src, dst, rows, cols, full_rows..rows, 0..cols);
}

/// The `rows × cols` block at `rs × cs` transposed value by value, in 8 × 8 tiles.
fn tile(
    src: &[f32],
    dst: &mut [f32],
    rows: usize,
    cols: usize,
    rs: std::ops::Range<usize>,
    cs: std::ops::Range<usize>,
) {
    const TILE: usize = 8;
    for r0 in rs.clone().step_by(TILE) {
        for c0 in cs.clone().step_by(TILE) {
            for r in r0..(r0 + TILE).min(rs.end) {
                let row = &src[r * cols..(r + 1) * cols];
                for c in c0..(c0 + TILE).min(cs.end) {
                    dst[c * rows + r] = row[c];
                }
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
mod simd {
    use std::arch::x86_64::*;

    pub fn available() -> bool {
        super::super::simd::avx2_fma()
    }

    /// The `full_rows × full_cols` top-left block (multiples of 8) of the
    /// `rows × cols` `src` transposed into `dst`, a tile at a time.
    ///
    /// # Safety
    /// AVX2 must be available; `src` and `dst` hold `rows · cols` values,
    /// `full_rows ≤ rows` and `full_cols ≤ cols`.
    #[target_feature(enable = "avx2")]
    pub unsafe fn tiles(src: &[f32], dst: &mut [f32], rows: usize, cols: usize, full_rows: usize, full_cols: usize) {
        debug_assert!(src.len() >= rows * cols && dst.len() >= rows * cols);
        let (s, d) = (src.as_ptr(), dst.as_mut_ptr());
        for r0 in (0..full_rows).step_by(8) {
            for c0 in (0..full_cols).step_by(8) {
                // SAFETY: rows r0..r0 + 8 and columns c0..c0 + 8 are inside
                // both matrices (the caller's bounds).
                unsafe {
                    let row = |i: usize| _mm256_loadu_ps(s.add((r0 + i) * cols + c0));
                    let (r0v, r1, r2, r3, r4, r5, r6, r7) =
                        (row(0), row(1), row(2), row(3), row(4), row(5), row(6), row(7));
                    // Pairs of rows interleaved, then pairs of pairs, then the two halves swapped.
                    let (t0, t1) = (_mm256_unpacklo_ps(r0v, r1), _mm256_unpackhi_ps(r0v, r1));
                    let (t2, t3) = (_mm256_unpacklo_ps(r2, r3), _mm256_unpackhi_ps(r2, r3));
                    let (t4, t5) = (_mm256_unpacklo_ps(r4, r5), _mm256_unpackhi_ps(r4, r5));
                    let (t6, t7) = (_mm256_unpacklo_ps(r6, r7), _mm256_unpackhi_ps(r6, r7));
                    let (u0, u1) = (_mm256_shuffle_ps::<0x44>(t0, t2), _mm256_shuffle_ps::<0xEE>(t0, t2));
                    let (u2, u3) = (_mm256_shuffle_ps::<0x44>(t1, t3), _mm256_shuffle_ps::<0xEE>(t1, t3));
                    let (u4, u5) = (_mm256_shuffle_ps::<0x44>(t4, t6), _mm256_shuffle_ps::<0xEE>(t4, t6));
                    let (u6, u7) = (_mm256_shuffle_ps::<0x44>(t5, t7), _mm256_shuffle_ps::<0xEE>(t5, t7));
                    let out = |j: usize, v: __m256| _mm256_storeu_ps(d.add((c0 + j) * rows + r0), v);
                    out(0, _mm256_permute2f128_ps::<0x20>(u0, u4));
                    out(1, _mm256_permute2f128_ps::<0x20>(u1, u5));
                    out(2, _mm256_permute2f128_ps::<0x20>(u2, u6));
                    out(3, _mm256_permute2f128_ps::<0x20>(u3, u7));
                    out(4, _mm256_permute2f128_ps::<0x31>(u0, u4));
                    out(5, _mm256_permute2f128_ps::<0x31>(u1, u5));
                    out(6, _mm256_permute2f128_ps::<0x31>(u2, u6));
                    out(7, _mm256_permute2f128_ps::<0x31>(u3, u7));
                }
            }
        }
    }
}

#[cfg(not(target_arch = "x86_64"))]
mod simd {
    pub fn available() -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transposes_every_shape_around_the_tile_size() {
        for (rows, cols) in [(1, 1), (3, 5), (8, 8), (8, 16), (16, 8), (9, 17), (36, 128), (128, 36), (7, 64), (64, 7)]
        {
            let n = 3;
            let x: Vec<f32> = (0..n * rows * cols).map(|i| i as f32).collect();
            let t = transpose(&x, n, rows, cols);
            for s in 0..n {
                for r in 0..rows {
                    for c in 0..cols {
                        assert_eq!(
                            t[s * rows * cols + c * rows + r],
                            x[s * rows * cols + r * cols + c],
                            "{rows}×{cols}"
                        );
                    }
                }
            }
            // Twice is the identity.
            assert_eq!(transpose(&t, n, cols, rows), x);
        }
    }
}
