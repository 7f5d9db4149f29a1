//! Stratified, seeded index splits: validation held out of train, the kept
//! labels of a label-scarce run, the train/test split of a CSV table.

use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;

/// Splits `0..n` into (rest, part) with `fraction` of every label's indices
/// (rounded) in `part`; both sorted. Seeded, so a seed gives the same split.
pub fn stratified_split(labels: Option<&[i64]>, n: usize, fraction: f32, seed: u64) -> (Vec<usize>, Vec<usize>) {
    if fraction <= 0.0 {
        return ((0..n).collect(), Vec::new());
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x5EED_0F5A);
    let mut groups: std::collections::BTreeMap<i64, Vec<usize>> = Default::default();
    for i in 0..n {
        groups.entry(labels.map_or(0, |y| y[i])).or_default().push(i);
    }
    let (mut train, mut val) = (Vec::new(), Vec::new());
    for (_, mut idx) in groups {
        idx.shuffle(&mut rng);
        let k = ((idx.len() as f32) * fraction).round() as usize;
        val.extend_from_slice(&idx[..k]);
        train.extend_from_slice(&idx[k..]);
    }
    train.sort_unstable();
    val.sort_unstable();
    (train, val)
}
