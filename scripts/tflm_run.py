#!/usr/bin/env python3
"""Runs int8 inputs through a .tflite model in TensorFlow Lite Micro's interpreter.

    python3 scripts/tflm_run.py MODEL.tflite INPUTS.npy OUTPUTS.npy

INPUTS.npy holds N int8 samples, already quantized with the model's input
scale and zero point, each flat or in the model's input shape (NHWC).
OUTPUTS.npy receives the N int8 output rows ([N, classes]). This is the
reference the test suite holds `tinykd export --format tflite` to: TFLM's
int8 logits must equal tinykd-runtime's byte for byte. Needs the
`tflite-micro` wheel (pip install tflite-micro; it runs offline).
"""
import sys

import numpy as np
from tflite_micro.python.tflite_micro import runtime


def main():
    if len(sys.argv) != 4:
        sys.exit(__doc__.strip().splitlines()[2].strip())
    model, inputs, outputs = sys.argv[1:]
    with open(model, "rb") as f:
        interpreter = runtime.Interpreter.from_bytes(f.read())
    shape = tuple(interpreter.get_input_details(0)["shape"])
    x = np.load(inputs)
    if x.dtype != np.int8:
        sys.exit(f"{inputs}: expected int8 samples, found {x.dtype}")
    per_sample = int(np.prod(shape))
    if x.size % per_sample != 0 or x.size == 0:
        sys.exit(f"{inputs}: {x.size} values is not a whole number of {shape} samples")
    x = x.reshape((-1,) + shape[1:])
    rows = []
    for sample in x:
        interpreter.set_input(sample.reshape(shape), 0)
        interpreter.invoke()
        rows.append(np.array(interpreter.get_output(0), dtype=np.int8).reshape(-1))
    np.save(outputs, np.stack(rows))


if __name__ == "__main__":
    main()
