#!/usr/bin/env bash
# Regenerates src/generated.rs from schema/schema.fbs with planus-cli 1.3.0
# (`cargo install planus-cli --version 1.3.0 --locked`). The runtime crate's
# version in Cargo.toml must stay the CLI's.
#
# schema/schema.fbs is TensorFlow Lite's schema
# (tensorflow/compiler/mlir/lite/schema/schema.fbs, tflite-micro commit
# e142972d4f43) with one change: planus does not accept the `(deprecated)`
# attribute on an enum value, a union member or a table, so the three
# REDUCE_WINDOW / ReduceWindowOptions markers are removed. The wire format is
# unchanged (same values, same union tags).
set -euo pipefail
cd "$(dirname "$0")"
planus rust -o src/generated.rs schema/schema.fbs
