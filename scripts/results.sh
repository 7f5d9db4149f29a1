#!/usr/bin/env bash
# Reproduces the accuracy table of the README: each row is a `tinykd sweep`
# (α = 0, the labels-only baseline, always in its grid; seeds 0, 1, 2) whose
# sweep.md lands in out/results/<row>/. Takes about 15 minutes on 2 cores
# after the release build. Run from the repository root:
#   bash scripts/results.sh            # every row
#   bash scripts/results.sh cnn2k      # one row (names below)
# Every run of a row, the α = 0 baseline included, trains for the same number
# of optimizer steps (--epochs counts epochs of the whole training set, see
# the README); sweep.md lists the steps. TINYKD=path uses another build of
# the binary (the arithmetic, hence every number, is the same in any profile).
set -euo pipefail
if [[ -z "${TINYKD:-}" ]]; then
    cargo build --release --quiet
fi
tinykd=${TINYKD:-target/release/tinykd}
out=out/results
mnist1d=(--teacher models/teachers/mnist1d_cnn.onnx --data models/data/mnist1d.npz --backend tract)
augment=(--shift 3 --noise 0.05 --views 8 --epochs 150 --seeds 0,1,2)
cnn2k="conv1d(12,k5,s2) relu conv1d(16,k3,s2) relu conv1d(24,k3) relu gap dense(10)"
cnn6k_a="conv1d(24,k5,s2) relu conv1d(32,k3,s2) relu conv1d(32,k3) relu gap dense(10)"
cnn6k_b="conv1d(16,k5,s2) relu conv1d(32,k3,s2) relu conv1d(44,k3) relu gap dense(10)"
digits_cnn="conv2d(12,k3) relu maxpool(2) conv2d(24,k3) relu gap dense(10)"

row() {
    local name=$1
    shift
    if [[ -n "${only:-}" && "$only" != "$name" ]]; then return; fi
    echo "== $name"
    "$tinykd" sweep "$@" --out "$out/$name" 2>/dev/null | grep "^selected"
}

only=${1:-}
# MNIST-1D, ≤ 2,100 parameters, grid T × α.
row cnn2k "${mnist1d[@]}" "${augment[@]}" --student "$cnn2k" --temperatures 1,2,4 --alphas 0,0.5,0.9
# MNIST-1D, ≤ 6,500 parameters, two widths × T × α.
row cnn6k "${mnist1d[@]}" "${augment[@]}" --student "$cnn6k_a" --students "$cnn6k_a;$cnn6k_b" \
    --temperatures 1,2,4 --alphas 0,0.5,0.9
# Label-scarce: 10 % of the labels kept, the rest is the unlabeled transfer set.
row scarce "${mnist1d[@]}" "${augment[@]}" --student "$cnn2k" --labelled-fraction 0.1 \
    --temperatures 2 --alphas 0,1
# Mixup on top of shift and noise (half of the augmented views mixed, Beta(0.4, 0.4)).
row mixup "${mnist1d[@]}" "${augment[@]}" --student "$cnn2k" --mixup 0.4 --temperatures 2 --alphas 0,0.9
# An MLP without augmentation: where KD does not help.
row mlp "${mnist1d[@]}" --epochs 150 --seeds 0,1,2 --student "dense(64) relu dense(32) relu dense(10)" \
    --temperatures 4 --alphas 0,0.9
# Digits, ≤ 3,000 parameters.
row digits --teacher models/teachers/digits_cnn.onnx --data models/data/digits.npz --backend tract \
    --shift 1 --noise 0.02 --views 8 --epochs 200 --seeds 0,1,2 --student "$digits_cnn" \
    --temperatures 1,2,4 --alphas 0,0.5,0.9
