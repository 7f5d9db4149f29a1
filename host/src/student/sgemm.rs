//! Matrix products for training, `C = A·B (+ C)` on row-major matrices
//! with explicit strides.
//!
//! Most go to `matrixmultiply`, which packs both operands into panels
//! before multiplying. A convolution's products are lopsided: the left
//! operand is the small weight matrix (16 output channels in ResNet-8's
//! first stage), the right one a wide im2col or activation matrix read
//! once. Packing that wide matrix costs as much as multiplying it by 16
//! rows (measured: 26 GFLOP/s for 16×144×1024 against 60–70 for square
//! shapes). So when the right operand's rows are contiguous and wide, and
//! the CPU has AVX2 and FMA, [`gemm`] runs a kernel of its own instead:
//! it streams `B` in place, 16 columns at a time, and broadcasts `A`'s
//! entries (any strides: a transposed weight matrix costs nothing), 6
//! rows of `C` per pass in twelve accumulators.

/// `c = a·b + beta·c` for an `m×k` `a`, a `k×n` `b` and an `m×n` `c`
/// (row stride `n`), `a` and `b` given by row and column strides so
/// transposes are free. `beta` is 0 or 1.
#[allow(clippy::too_many_arguments)]
pub(crate) fn gemm(
    m: usize,
    k: usize,
    n: usize,
    a: &[f32],
    rsa: isize,
    csa: isize,
    b: &[f32],
    rsb: isize,
    csb: isize,
    beta: f32,
    c: &mut [f32],
) {
    assert!(a.len() >= m * k && b.len() >= k * n && c.len() >= m * n);
    debug_assert!(beta == 0.0 || beta == 1.0);
    #[cfg(target_arch = "x86_64")]
    if csb == 1 && rsb >= n as isize && n >= streamed::MIN_COLUMNS && streamed::takes(m, k, n, rsa, csa) {
        let b_rows: Vec<usize> = (0..k).map(|p| p * rsb as usize).collect();
        gemm_gather(m, k, n, a, rsa, csa, b, &b_rows, beta, c);
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if csa == 1
        && rsb == 1
        && rsa >= k as isize
        && csb >= k as isize
        && k >= dots::MIN_DEPTH
        && m > 0
        && n > 0
        && (m.min(n) <= dots::NARROW || k >= dots::DEEP)
        && streamed::available()
    {
        let b_cols: Vec<usize> = (0..n).map(|j| j * csb as usize).collect();
        dots_gather(m, k, n, a, rsa as usize, b, &b_cols, beta, c);
        return;
    }
    packed(m, k, n, a, rsa, csa, b, rsb, csb, beta, c);
}

/// `c = a·b + beta·c` where row `p` of `b` is `b[b_rows[p]..][..n]`: an
/// im2col matrix left implicit, each of its rows a window tap of one
/// input channel read in place from a padded input plane (`b_rows[p]` is
/// the tap's offset). `a` as in [`gemm`].
#[allow(clippy::too_many_arguments)]
pub(crate) fn gemm_gather(
    m: usize,
    k: usize,
    n: usize,
    a: &[f32],
    rsa: isize,
    csa: isize,
    b: &[f32],
    b_rows: &[usize],
    beta: f32,
    c: &mut [f32],
) {
    assert!(b_rows.len() == k && c.len() >= m * n && a.len() >= m * k);
    assert!(b_rows.iter().all(|&r| r.checked_add(n).is_some_and(|end| end <= b.len())));
    #[cfg(target_arch = "x86_64")]
    if streamed::takes(m, k, n, rsa, csa) {
        let (rsa, csa) = (rsa as usize, csa as usize);
        let last = (m - 1).checked_mul(rsa).and_then(|l| l.checked_add((k - 1).checked_mul(csa)?));
        assert!(last.is_some_and(|l| l < a.len()));
        // SAFETY: AVX2 and FMA are present (checked above); the asserts
        // bound every index the kernel reads (a[i·rsa + p·csa],
        // b[b_rows[p] + j]) and writes (c[i·n + j]).
        #[allow(unsafe_code)]
        unsafe {
            streamed::gemm(m, k, n, a, rsa, csa, b, b_rows, beta != 0.0, c);
        }
        return;
    }
    let dense: Vec<f32> = b_rows.iter().flat_map(|&r| &b[r..r + n]).copied().collect();
    packed(m, k, n, a, rsa, csa, &dense, n as isize, 1, beta, c);
}

/// `c[i][j] = Σ_p a[i·rsa + p] · b[b_cols[j] + p] + beta·c[i][j]`: a
/// product whose operands both run along the sum (a weight gradient),
/// `b`'s rows read in place at their offsets (an implicit im2col's).
#[allow(clippy::too_many_arguments)]
pub(crate) fn dots_gather(
    m: usize,
    k: usize,
    n: usize,
    a: &[f32],
    rsa: usize,
    b: &[f32],
    b_cols: &[usize],
    beta: f32,
    c: &mut [f32],
) {
    assert!(b_cols.len() == n && c.len() >= m * n);
    assert!(b_cols.iter().all(|&r| r.checked_add(k).is_some_and(|end| end <= b.len())));
    assert!(m == 0 || (m - 1).checked_mul(rsa).and_then(|l| l.checked_add(k)).is_some_and(|end| end <= a.len()));
    #[cfg(target_arch = "x86_64")]
    if m > 0 && n > 0 && k > 0 && streamed::available() {
        // SAFETY: AVX2 and FMA are present; the asserts bound every index
        // the kernel reads and writes.
        #[allow(unsafe_code)]
        unsafe {
            dots::gemm(m, k, n, a, rsa, b, b_cols, beta != 0.0, c);
        }
        return;
    }
    let bt: Vec<f32> = b_cols.iter().flat_map(|&r| &b[r..r + k]).copied().collect();
    packed(m, k, n, a, rsa as isize, 1, &bt, 1, k as isize, beta, c);
}

/// [`gemm`] by `matrixmultiply` alone (both operands packed, blocked for
/// the caches): the machine's best on large square products.
#[allow(clippy::too_many_arguments)]
pub(crate) fn packed(
    m: usize,
    k: usize,
    n: usize,
    a: &[f32],
    rsa: isize,
    csa: isize,
    b: &[f32],
    rsb: isize,
    csb: isize,
    beta: f32,
    c: &mut [f32],
) {
    assert!(a.len() >= m * k && b.len() >= k * n && c.len() >= m * n);
    // SAFETY: the assert above bounds every index the strides reach: `a` is
    // an m×k and `b` a k×n view of slices at least that large, `c` is m×n.
    #[allow(unsafe_code)]
    unsafe {
        matrixmultiply::sgemm(
            m,
            k,
            n,
            1.0,
            a.as_ptr(),
            rsa,
            csa,
            b.as_ptr(),
            rsb,
            csb,
            beta,
            c.as_mut_ptr(),
            n as isize,
            1,
        );
    }
}

#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
mod streamed {
    use std::arch::x86_64::*;

    /// Narrower products gain nothing from streaming (their columns are
    /// mostly the masked tail).
    pub const MIN_COLUMNS: usize = 32;
    /// The kernel does not block for the caches: a deeper product's panel
    /// of `B` (k × 16) and a larger `A` outgrow them, and `matrixmultiply`
    /// is faster.
    const MAX_DEPTH: usize = 1024;
    const MAX_LEFT: usize = 1 << 16;
    /// Rows of `C` per pass: 6 × 2 accumulators, 2 for `B`, 1 broadcast.
    const ROWS: usize = 6;
    /// Columns of `C` per pass: two 8-wide vectors.
    const COLS: usize = 16;

    /// Whether the kernel runs an `m×k` by `k×n` product with `A` at
    /// strides `rsa`, `csa` (it broadcasts `A` forwards only).
    pub fn takes(m: usize, k: usize, n: usize, rsa: isize, csa: isize) -> bool {
        rsa >= 0 && csa >= 0 && m > 0 && n > 0 && (1..=MAX_DEPTH).contains(&k) && m * k <= MAX_LEFT && available()
    }

    pub fn available() -> bool {
        super::super::simd::avx2_fma()
    }

    /// See [`super::gemm_gather`]: row `p` of `B` at `b[b_rows[p]..]`.
    ///
    /// # Safety
    /// AVX2 and FMA must be available, and every index named in
    /// [`super::gemm_gather`] in bounds.
    #[target_feature(enable = "avx2,fma")]
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn gemm(
        m: usize,
        k: usize,
        n: usize,
        a: &[f32],
        rsa: usize,
        csa: usize,
        b: &[f32],
        b_rows: &[usize],
        accumulate: bool,
        c: &mut [f32],
    ) {
        let full = n - n % COLS;
        // A panel of B (k × 16) is read by every row block while it is in cache.
        for j in (0..full).step_by(COLS) {
            for i in (0..m).step_by(ROWS) {
                // SAFETY: rows i..i + R ≤ m, columns j..j + 16 ≤ n.
                unsafe {
                    let (ap, bp, cp) = (a.as_ptr().add(i * rsa), b.as_ptr().add(j), c.as_mut_ptr().add(i * n + j));
                    rows(m - i, k, ap, rsa, csa, bp, b_rows, cp, n, accumulate);
                }
            }
        }
        if full == n {
            return;
        }
        // The last columns: B's copied into a zero-padded panel, C's
        // computed into a tile and added in.
        let cols = n - full;
        let mut panel = vec![0.0f32; k * COLS];
        for (row, &at) in panel.chunks_exact_mut(COLS).zip(b_rows) {
            row[..cols].copy_from_slice(&b[at + full..at + n]);
        }
        let panel_rows: Vec<usize> = (0..k).map(|p| p * COLS).collect();
        let mut tile = [0.0f32; ROWS * COLS];
        for i in (0..m).step_by(ROWS) {
            let r = ROWS.min(m - i);
            // SAFETY: rows i..i + r ≤ m of A; the panel is k × 16, the tile r × 16.
            unsafe {
                rows(
                    r,
                    k,
                    a.as_ptr().add(i * rsa),
                    rsa,
                    csa,
                    panel.as_ptr(),
                    &panel_rows,
                    tile.as_mut_ptr(),
                    COLS,
                    false,
                )
            };
            for (t, crow) in tile.chunks_exact(COLS).zip(c[i * n..].chunks_mut(n)).take(r) {
                let dst = &mut crow[full..n];
                if accumulate {
                    dst.iter_mut().zip(t).for_each(|(d, v)| *d += v);
                } else {
                    dst.copy_from_slice(&t[..cols]);
                }
            }
        }
    }

    /// [`block`] for `min(left, 6)` rows.
    ///
    /// # Safety
    /// As [`block`].
    #[target_feature(enable = "avx2,fma")]
    #[allow(clippy::too_many_arguments)]
    #[inline]
    unsafe fn rows(
        left: usize,
        k: usize,
        a: *const f32,
        rsa: usize,
        csa: usize,
        b: *const f32,
        b_rows: &[usize],
        c: *mut f32,
        ldc: usize,
        accumulate: bool,
    ) {
        // SAFETY: the caller's.
        unsafe {
            match left.min(ROWS) {
                6 => block::<6>(k, a, rsa, csa, b, b_rows, c, ldc, accumulate),
                5 => block::<5>(k, a, rsa, csa, b, b_rows, c, ldc, accumulate),
                4 => block::<4>(k, a, rsa, csa, b, b_rows, c, ldc, accumulate),
                3 => block::<3>(k, a, rsa, csa, b, b_rows, c, ldc, accumulate),
                2 => block::<2>(k, a, rsa, csa, b, b_rows, c, ldc, accumulate),
                _ => block::<1>(k, a, rsa, csa, b, b_rows, c, ldc, accumulate),
            }
        }
    }

    /// `C[..R][..16] (+)= A[..R][..k] · B[..k][..16]`: `R` rows of `A` from
    /// `a` (strides `rsa`, `csa`), row `p` of `B` at `b + b_rows[p]`,
    /// `R` rows of `C` from `c` (`ldc` apart).
    ///
    /// # Safety
    /// AVX2 and FMA available; every element named in bounds.
    #[target_feature(enable = "avx2,fma")]
    #[allow(clippy::too_many_arguments)]
    #[inline]
    unsafe fn block<const R: usize>(
        k: usize,
        a: *const f32,
        rsa: usize,
        csa: usize,
        b: *const f32,
        b_rows: &[usize],
        c: *mut f32,
        ldc: usize,
        accumulate: bool,
    ) {
        let mut acc = [[_mm256_setzero_ps(); 2]; R];
        // SAFETY (all pointer arithmetic below): the caller's bounds.
        unsafe {
            let mut acol = a;
            for &at in &b_rows[..k] {
                let brow = b.add(at);
                let (b0, b1) = (_mm256_loadu_ps(brow), _mm256_loadu_ps(brow.add(8)));
                for (r, acc) in acc.iter_mut().enumerate() {
                    let av = _mm256_broadcast_ss(&*acol.add(r * rsa));
                    acc[0] = _mm256_fmadd_ps(av, b0, acc[0]);
                    acc[1] = _mm256_fmadd_ps(av, b1, acc[1]);
                }
                acol = acol.add(csa);
            }
            for (r, acc) in acc.iter().enumerate() {
                let crow = c.add(r * ldc);
                let (mut v0, mut v1) = (acc[0], acc[1]);
                if accumulate {
                    v0 = _mm256_add_ps(_mm256_loadu_ps(crow), v0);
                    v1 = _mm256_add_ps(_mm256_loadu_ps(crow.add(8)), v1);
                }
                _mm256_storeu_ps(crow, v0);
                _mm256_storeu_ps(crow.add(8), v1);
            }
        }
    }
}

/// Products whose operands both run along the sum (a weight gradient,
/// `dY · colsᵀ`): every entry of `C` a dot product of two contiguous
/// rows, 4 × 3 of them at once in twelve 8-wide partial sums, the rows
/// taken in chunks that stay in the L1 cache. Packing them first (what
/// `matrixmultiply` does) copies the whole im2col matrix again.
#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
mod dots {
    use std::arch::x86_64::*;

    /// Shallower sums are mostly horizontal additions.
    pub const MIN_DEPTH: usize = 64;
    /// Where the dot products win (measured): one side of `C` at most
    /// this narrow (ResNet-8's first stage, 16 channels: 50–70 GFLOP/s
    /// against 37–44 for 16×1008×144), or sums at least this deep.
    /// Square-ish products of shallow sums pack better (64×256×576:
    /// 48 against 57–61).
    pub const NARROW: usize = 16;
    pub const DEEP: usize = 1024;
    /// Floats of each row per chunk: 7 rows × 2 KiB in L1.
    const CHUNK: usize = 512;

    /// `c[i][j] (+)= Σ_p a[i·rsa + p] · b[b_cols[j] + p]`, `c` of row stride `n`.
    ///
    /// # Safety
    /// AVX2 and FMA available; `a` holds `m` rows of `k` at `rsa`, `b` `n`
    /// rows of `k` at `b_cols`, `c` `m × n`.
    #[target_feature(enable = "avx2,fma")]
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn gemm(
        m: usize,
        k: usize,
        n: usize,
        a: &[f32],
        rsa: usize,
        b: &[f32],
        b_cols: &[usize],
        accumulate: bool,
        c: &mut [f32],
    ) {
        if !accumulate {
            c[..m * n].fill(0.0);
        }
        for p in (0..k).step_by(CHUNK) {
            let len = CHUNK.min(k - p);
            for i in (0..m).step_by(4) {
                for j in (0..n).step_by(3) {
                    // SAFETY: rows i.. of a and j.. of b hold p + len ≤ k floats.
                    unsafe {
                        let ap = a.as_ptr().add(i * rsa + p);
                        let bp = b.as_ptr().add(p);
                        let cols = &b_cols[j..];
                        let cp = c.as_mut_ptr().add(i * n + j);
                        match ((m - i).min(4), (n - j).min(3)) {
                            (4, 3) => tile::<4, 3>(len, ap, rsa, bp, cols, cp, n),
                            (4, 2) => tile::<4, 2>(len, ap, rsa, bp, cols, cp, n),
                            (4, _) => tile::<4, 1>(len, ap, rsa, bp, cols, cp, n),
                            (3, 3) => tile::<3, 3>(len, ap, rsa, bp, cols, cp, n),
                            (3, 2) => tile::<3, 2>(len, ap, rsa, bp, cols, cp, n),
                            (3, _) => tile::<3, 1>(len, ap, rsa, bp, cols, cp, n),
                            (2, 3) => tile::<2, 3>(len, ap, rsa, bp, cols, cp, n),
                            (2, 2) => tile::<2, 2>(len, ap, rsa, bp, cols, cp, n),
                            (2, _) => tile::<2, 1>(len, ap, rsa, bp, cols, cp, n),
                            (_, 3) => tile::<1, 3>(len, ap, rsa, bp, cols, cp, n),
                            (_, 2) => tile::<1, 2>(len, ap, rsa, bp, cols, cp, n),
                            _ => tile::<1, 1>(len, ap, rsa, bp, cols, cp, n),
                        }
                    }
                }
            }
        }
    }

    /// `c[r][s] += Σ_{p < len} a[r·rsa + p] · b[b_cols[s] + p]` for `r < I`, `s < J`.
    ///
    /// # Safety
    /// As [`gemm`], for this tile.
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    unsafe fn tile<const I: usize, const J: usize>(
        len: usize,
        a: *const f32,
        rsa: usize,
        b: *const f32,
        b_cols: &[usize],
        c: *mut f32,
        ldc: usize,
    ) {
        let mut acc = [[_mm256_setzero_ps(); J]; I];
        // SAFETY: the caller's bounds.
        let bs: [*const f32; J] = std::array::from_fn(|s| unsafe { b.add(b_cols[s]) });
        let body = len - len % 8;
        // SAFETY (all pointer arithmetic below): the caller's bounds.
        unsafe {
            for p in (0..body).step_by(8) {
                let bv: [__m256; J] = std::array::from_fn(|s| _mm256_loadu_ps(bs[s].add(p)));
                for (r, acc) in acc.iter_mut().enumerate() {
                    let av = _mm256_loadu_ps(a.add(r * rsa + p));
                    for (acc, bv) in acc.iter_mut().zip(&bv) {
                        *acc = _mm256_fmadd_ps(av, *bv, *acc);
                    }
                }
            }
            for (r, acc) in acc.iter().enumerate() {
                for (s, acc) in acc.iter().enumerate() {
                    let mut sum = horizontal_sum(*acc);
                    for p in body..len {
                        sum += *a.add(r * rsa + p) * *bs[s].add(p);
                    }
                    *c.add(r * ldc + s) += sum;
                }
            }
        }
    }

    #[target_feature(enable = "avx2,fma")]
    #[inline]
    fn horizontal_sum(v: __m256) -> f32 {
        let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
        _mm_cvtss_f32(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every stride combination and ragged size against a plain triple
    /// loop: the streamed kernel (when the CPU has it) and matrixmultiply.
    #[test]
    fn products_match_a_triple_loop() {
        for (m, k, n) in [
            (1, 1, 32),
            (6, 3, 32),
            (7, 5, 33),
            (16, 144, 100),
            (13, 17, 47),
            (5, 9, 3),
            (2, 0, 40),
            (9, 1100, 7),
            (5, 67, 4),
        ] {
            for (at, bt) in [(false, false), (true, false), (false, true), (true, true)] {
                for beta in [0.0, 1.0] {
                    let a: Vec<f32> = (0..m * k).map(|i| ((i * 7919) % 23) as f32 * 0.25 - 2.5).collect();
                    // B as a wider matrix (row stride n + 3) when not transposed: rows apart, not packed.
                    let ldb = if bt { k } else { n + 3 };
                    let b: Vec<f32> = (0..if bt { n * k } else { k * ldb })
                        .map(|i| ((i * 104_729) % 19) as f32 * 0.5 - 4.0)
                        .collect();
                    let (rsa, csa) = if at { (1, m as isize) } else { (k as isize, 1) };
                    let (rsb, csb) = if bt { (1, k as isize) } else { (ldb as isize, 1) };
                    let start: Vec<f32> = (0..m * n).map(|i| (i % 5) as f32).collect();
                    let mut c = start.clone();
                    gemm(m, k, n, &a, rsa, csa, &b, rsb, csb, beta, &mut c);
                    for i in 0..m {
                        for j in 0..n {
                            let mut want = beta * start[i * n + j];
                            for p in 0..k {
                                let av = a[(i as isize * rsa + p as isize * csa) as usize];
                                let bv = b[(p as isize * rsb + j as isize * csb) as usize];
                                want += av * bv;
                            }
                            let got = c[i * n + j];
                            assert!(
                                (got - want).abs() <= 1e-4 * (1.0 + want.abs()),
                                "{m}×{k}×{n} at {at} bt {bt} beta {beta}: [{i}][{j}] {got} vs {want}"
                            );
                        }
                    }
                }
            }
        }
    }
}
