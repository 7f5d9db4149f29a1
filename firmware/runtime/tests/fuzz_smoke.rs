//! A short run of the fuzzer (`examples/fuzz`) in every test run: 20,000
//! mutated blobs from the committed corpus, no panic, no hang. The long run
//! (`cargo run --release -p tinykd-runtime --example fuzz -- 600`) is in the README.

#[path = "../examples/fuzz/engine.rs"]
mod engine;

#[test]
fn twenty_thousand_mutated_blobs_never_panic_or_hang() {
    let seeds = engine::seeds(&std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus"));
    assert!(seeds.len() >= 5, "the corpus is missing");
    let stats = engine::fuzz(seeds, 7, std::time::Duration::from_secs(300), 20_000);
    if let Some((what, _)) = &stats.failure {
        panic!("{what}");
    }
    assert_eq!(stats.executions, 20_000);
    assert!(stats.parsed > 1_000 && stats.ran > 500, "mutations never get past the parser: {stats:?}");
}
