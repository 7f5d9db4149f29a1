//! A structure-aware mutation fuzzer for `Model::from_bytes` + `Model::run`
//! (and every convolution through a compiled layer's own kernel as well):
//! start from valid `.tkd` blobs, mutate bytes, fields and lengths, fix the
//! CRC most of the time (so the mutation reaches the layer checks and the
//! kernels instead of stopping at the checksum), parse, and run whatever
//! parses on random inputs. Any panic or an iteration slower than
//! `HANG` is a failure. Blobs that still parse join the corpus, so odd but
//! valid models accumulate. No dependencies: its own xorshift generator.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::{Duration, Instant};

use tinykd_runtime::Model;
use tinykd_runtime::format::{self, header};

/// An iteration slower than this is reported as a hang.
pub const HANG: Duration = Duration::from_secs(2);
/// Arenas and inputs larger than this are not allocated (the blob is still parsed).
const MAX_ALLOC: usize = 8 << 20;
/// The corpus stops growing here.
const MAX_CORPUS: usize = 512;

pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    pub fn below(&mut self, n: usize) -> usize {
        if n == 0 { 0 } else { (self.next() % n as u64) as usize }
    }
}

/// What a run found.
#[derive(Debug, Default)]
pub struct Stats {
    pub executions: u64,
    pub parsed: u64,
    pub ran: u64,
    pub corpus: usize,
    pub failure: Option<(String, Vec<u8>)>,
}

const INTERESTING_U32: [u32; 10] = [0, 1, 2, 3, 4, 0x7F, 0x80, 0xFFFF, 0x7FFF_FFFF, 0xFFFF_FFFF];

fn mutate(rng: &mut Rng, blob: &mut Vec<u8>, corpus: &[Vec<u8>]) {
    for _ in 0..1 + rng.below(6) {
        let len = blob.len().max(1);
        match rng.below(9) {
            0 => {
                let i = rng.below(len);
                if let Some(b) = blob.get_mut(i) {
                    *b ^= 1 << rng.below(8);
                }
            }
            1 => {
                let i = rng.below(len);
                if let Some(b) = blob.get_mut(i) {
                    *b = [0u8, 1, 0x7F, 0x80, 0xFF][rng.below(5)];
                }
            }
            2 | 3 => {
                // A header or layer-record field: aligned, interesting or off-by-one values.
                let i = rng.below(len) & !3;
                let v = if rng.below(2) == 0 {
                    INTERESTING_U32[rng.below(INTERESTING_U32.len())]
                } else {
                    let old = blob.get(i..i + 4).map_or(0, |b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
                    old.wrapping_add(rng.below(5) as u32).wrapping_sub(2)
                };
                if let Some(dst) = blob.get_mut(i..i + 4) {
                    if rng.below(2) == 0 {
                        dst.copy_from_slice(&v.to_le_bytes());
                    } else {
                        dst[..2].copy_from_slice(&(v as u16).to_le_bytes());
                    }
                }
            }
            4 => blob.truncate(rng.below(len)),
            5 => (0..1 + rng.below(64)).for_each(|_| blob.push(rng.next() as u8)),
            6 => {
                // Splice a piece of another blob over this one.
                let other = &corpus[rng.below(corpus.len())];
                let (from, to) = (rng.below(other.len()), rng.below(len));
                let n = rng.below(256).min(other.len() - from).min(blob.len().saturating_sub(to));
                blob[to..to + n].copy_from_slice(&other[from..from + n]);
            }
            7 => {
                // A layer record's operator parameters (the shapes the kernels trust).
                let layers = blob.get(header::LAYER_COUNT).copied().unwrap_or(0) as usize;
                if layers > 0 {
                    let rec = format::HEADER_LEN + rng.below(layers) * format::LAYER_RECORD_LEN;
                    let at = rec + format::layer::PARAMS + 2 * rng.below(format::layer::PARAM_COUNT);
                    if let Some(dst) = blob.get_mut(at..at + 2) {
                        let v = [0u16, 1, 2, 3, 7, 8, 255, 0xFFFF][rng.below(8)];
                        dst.copy_from_slice(&v.to_le_bytes());
                    }
                }
            }
            _ => {
                // A layer's wiring: the tensors it reads, where it writes.
                let layers = blob.get(header::LAYER_COUNT).copied().unwrap_or(0) as usize;
                if layers > 0 {
                    let rec = format::HEADER_LEN + rng.below(layers) * format::LAYER_RECORD_LEN;
                    let tensor = [0u16, 1, 2, layers as u16, layers as u16 + 1, format::NO_TENSOR][rng.below(6)];
                    let (at, v) = match rng.below(3) {
                        0 => (rec + format::layer::INPUT_TENSOR, tensor as u32),
                        1 => (rec + format::layer::SECOND_TENSOR, tensor as u32),
                        _ => (rec + format::layer::OUTPUT_OFFSET, [0u32, 1, 4, 16, 64, 0xFFFF_FFF0][rng.below(6)]),
                    };
                    let width = if at == rec + format::layer::OUTPUT_OFFSET { 4 } else { 2 };
                    if let Some(dst) = blob.get_mut(at..at + width) {
                        dst.copy_from_slice(&v.to_le_bytes()[..width]);
                    }
                }
            }
        }
    }
}

/// Rewrites the header CRC so the blob passes the checksum.
fn fix_crc(blob: &mut [u8]) {
    let Some(total) = format::read_u32(blob, header::TOTAL_LEN) else { return };
    let total = (total as usize).min(blob.len());
    if total <= format::CRC_START || blob.len() < header::CRC + 4 {
        return;
    }
    let crc = format::CRC.checksum(&blob[format::CRC_START..total]);
    blob[header::CRC..header::CRC + 4].copy_from_slice(&crc.to_le_bytes());
}

/// Parses and (when it parses) runs one blob; `Err` describes a failure.
fn exercise(rng: &mut Rng, blob: &[u8], stats: &mut Stats) -> bool {
    let Ok(model) = Model::from_bytes(blob) else { return false };
    stats.parsed += 1;
    let (len, arena_len) = (model.input_len(), model.arena_bytes());
    if len > MAX_ALLOC || arena_len > MAX_ALLOC {
        return true;
    }
    let input: Vec<i8> = (0..len).map(|_| rng.next() as i8).collect();
    let mut arena = vec![0u8; arena_len];
    let out = model.run(&input, &mut arena).map(|o| o.len());
    if let Ok(n) = out {
        assert_eq!(n, model.class_count(), "run returned {n} logits for {} classes", model.class_count());
    }
    // The checks that guard the kernels: a short input, a short arena.
    if len > 0 {
        assert!(model.run(&input[..len - 1], &mut arena).is_err());
    }
    if arena_len > 0 {
        assert!(model.run(&input, &mut arena[..arena_len - 1]).is_err());
    }
    per_layer_copies_agree(rng, &model);
    stats.ran += 1;
    true
}

/// Runs every weighted layer of the model through a compiled layer's own
/// kernel (`Step::run_layer`: convolutions gather windows of up to
/// `MAX_WINDOW` values, depthwise sums inner windows channel by channel),
/// with its raw channel table and with the table decoded ahead as a
/// specialised model's is, as well as the shared one (`Step::run`), on
/// random inputs: all must write the same outputs.
fn per_layer_copies_agree(rng: &mut Rng, model: &Model<'_>) {
    use tinykd_runtime::kernels::conv_gathered::MAX_WINDOW;
    use tinykd_runtime::kernels::{ChannelTable, PreparedChannel};
    for i in 0..model.layer_count() {
        let Ok(layer) = model.compiled_layer(i) else { continue };
        // As a specialised model's layer function reads it: decoded ahead.
        let decoded = |t: &[u8]| -> Vec<PreparedChannel> { (0..t.count()).filter_map(|o| t.channel(o)).collect() };
        let Some(channels) = layer.step.channels() else { continue };
        let prepared = decoded(channels);
        let ahead = layer.step.with_channels(prepared.as_slice());
        let Ok(record) = model.layer(i) else { continue };
        let (len, output_len) = (record.input_len, record.output_len);
        if len > MAX_ALLOC || output_len > MAX_ALLOC {
            continue;
        }
        let input: Vec<i8> = (0..len).map(|_| rng.next() as i8).collect();
        // A two-input operator computes over its output, which holds its
        // second input: the same for every copy. Others start from
        // different bytes, so an output one copy leaves unwritten shows.
        let second: Vec<i8> = (0..output_len).map(|_| rng.next() as i8).collect();
        let start = |fill: i8| if record.op.inputs() == 2 { second.clone() } else { vec![fill; output_len] };
        for single in [false, true] {
            let (mut shared, mut own) = (start(0), start(1));
            let a = layer.step.run::<{ format::ALL_OPS }>(single, &input, &mut shared);
            let b = layer.step.run_layer::<{ format::ALL_OPS }, 0, MAX_WINDOW>(single, &input, &mut own);
            assert_eq!(a.is_ok(), b.is_ok(), "layer {i}: the shared and per-layer kernels disagree on success");
            if a.is_ok() {
                assert_eq!(shared, own, "layer {i} (single rounding: {single}): per-layer kernel output differs");
            }
            let mut own = start(2);
            let c = ahead.run_layer::<{ format::ALL_OPS }, 0, MAX_WINDOW>(single, &input, &mut own);
            assert_eq!(a.is_ok(), c.is_ok(), "layer {i}: a prepared channel table changes success");
            if a.is_ok() {
                assert_eq!(shared, own, "layer {i} (single rounding: {single}): prepared-table output differs");
            }
        }
    }
}

/// Fuzzes for `budget` (or `max_iterations`), from `seeds`.
pub fn fuzz(seeds: Vec<Vec<u8>>, seed: u64, budget: Duration, max_iterations: u64) -> Stats {
    let mut rng = Rng::new(seed);
    let mut corpus = seeds;
    let mut stats = Stats::default();
    let start = Instant::now();
    while start.elapsed() < budget && stats.executions < max_iterations {
        let mut blob = corpus[rng.below(corpus.len())].clone();
        mutate(&mut rng, &mut blob, &corpus);
        if rng.below(5) != 0 {
            fix_crc(&mut blob);
        }
        let t = Instant::now();
        let result = catch_unwind(AssertUnwindSafe(|| exercise(&mut rng, &blob, &mut stats)));
        stats.executions += 1;
        match result {
            Err(e) => {
                let msg = e
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                stats.failure = Some((format!("panic: {msg}"), blob));
                break;
            }
            Ok(_) if t.elapsed() > HANG => {
                stats.failure = Some((format!("hang: {:.1} s", t.elapsed().as_secs_f64()), blob));
                break;
            }
            Ok(true) if corpus.len() < MAX_CORPUS && rng.below(8) == 0 => corpus.push(blob),
            Ok(_) => {}
        }
    }
    stats.corpus = corpus.len();
    stats
}

/// The committed seed blobs.
pub fn seeds(dir: &std::path::Path) -> Vec<Vec<u8>> {
    let mut files: Vec<_> =
        std::fs::read_dir(dir).map(|d| d.filter_map(|e| e.ok()).map(|e| e.path()).collect()).unwrap_or_default();
    files.sort();
    files.iter().filter_map(|p| std::fs::read(p).ok()).collect()
}
