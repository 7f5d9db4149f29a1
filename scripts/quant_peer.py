#!/usr/bin/env python3
"""onnxruntime's post-training quantization beside tinykd's, on the same student.

    python3 scripts/quant_peer.py STUDENT.ckpt DATA.npz [--tinykd target/release/tinykd] [--samples 1000]
        [--qat-steps 1000]

Exports the float student to ONNX with tinykd, quantizes it with
onnxruntime's `quantize_static` (QDQ, per-channel int8 weights, int8
activations, MinMax calibration on the same evenly spaced train samples
tinykd calibrates on with --calibration-samples), and prints test accuracy
of: the float ONNX, onnxruntime's int8 (run as written, graph optimisations
off, and through onnxruntime's fused integer kernels, which on x86 CPUs
without VNNI saturate and can lose many points), tinykd's post-training int8 with
each calibration method, and tinykd's quantization-aware int8 (QAT with
the checkpoint's own distillation; run from where its teacher path points). Needs the `onnx` and `onnxruntime` Python packages
(models/requirements.txt). Only channels-first data (the default layout).
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

import numpy as np
import onnxruntime as ort
from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                      quantize_static)


class Reader(CalibrationDataReader):
    def __init__(self, name, x):
        self.items = iter([{name: x[i:i + 1]} for i in range(len(x))])

    def get_next(self):
        return next(self.items, None)


def accuracy(path, x, y, optimize=True):
    """Test accuracy of the ONNX model at `path` in onnxruntime. `optimize`
    False: graph optimisations off, so a QDQ model runs as written (float
    operators between QuantizeLinear / DequantizeLinear) instead of through
    onnxruntime's fused integer kernels."""
    so = ort.SessionOptions()
    if not optimize:
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    logits = sess.run(None, {name: x})[0]
    return float((logits.argmax(1) == y).mean())


def tinykd(binary, *args):
    out = subprocess.run([binary, *args], check=True, capture_output=True, text=True)
    return out.stdout


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("checkpoint")
    ap.add_argument("data")
    ap.add_argument("--tinykd", default="target/release/tinykd")
    ap.add_argument("--samples", type=int, default=1000)
    ap.add_argument("--qat-steps", type=int, default=1000,
                    help="steps of tinykd's quantization-aware training (0: skip)")
    a = ap.parse_args()
    d = np.load(a.data)
    x_train = d["x_train"].astype(np.float32)
    if x_train.dtype == np.uint8:
        x_train = x_train / 255.0
    x_test, y_test = d["x_test"].astype(np.float32), d["y_test"]
    n = min(a.samples, len(x_train))
    calib = x_train[[i * len(x_train) // n for i in range(n)]]
    with tempfile.TemporaryDirectory() as tmp:
        float_onnx = os.path.join(tmp, "student.onnx")
        tinykd(a.tinykd, "export", "--model", a.checkpoint, "--format", "onnx", "--out", float_onnx)
        name = ort.InferenceSession(float_onnx, providers=["CPUExecutionProvider"]).get_inputs()[0].name
        int8_onnx = os.path.join(tmp, "student_int8.onnx")
        quantize_static(float_onnx, int8_onnx, Reader(name, calib), quant_format=QuantFormat.QDQ,
                        per_channel=True, activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                        calibrate_method=CalibrationMethod.MinMax)
        fused, as_written = accuracy(int8_onnx, x_test, y_test), accuracy(int8_onnx, x_test, y_test, False)
        rows = [("float (ONNX export, onnxruntime)", accuracy(float_onnx, x_test, y_test)),
                ("onnxruntime quantize_static (QDQ, per-channel, MinMax)", as_written),
                ("  the same, through onnxruntime's integer kernels here", fused)]
        for method in ["auto", "minmax", "percentile", "mse"]:
            tkd = os.path.join(tmp, f"{method}.tkd")
            tinykd(a.tinykd, "quantize", "--student", a.checkpoint, "--data", a.data, "--calibration", method,
                   "--calibration-samples", str(n), "--out", tkd)
            r = json.loads(tinykd(a.tinykd, "eval", "--model", tkd, "--data", a.data, "--json"))
            rows.append((f"tinykd PTQ, {method}", r["accuracy"]))
        if a.qat_steps > 0:
            for method in ["auto", "mse"]:
                tkd = os.path.join(tmp, f"qat_{method}.tkd")
                tinykd(a.tinykd, "quantize", "--student", a.checkpoint, "--data", a.data, "--calibration", method,
                       "--calibration-samples", str(n), "--qat-steps", str(a.qat_steps), "--out", tkd)
                r = json.loads(tinykd(a.tinykd, "eval", "--model", tkd, "--data", a.data, "--json"))
                rows.append((f"tinykd QAT ({a.qat_steps} steps), {method}", r["accuracy"]))
    print(f"{a.checkpoint} on {a.data} ({n} calibration samples), test accuracy:")
    for label, acc in rows:
        print(f"  {label:<58} {acc * 100:6.2f} %")
    if abs(fused - as_written) > 0.01:
        print("onnxruntime's integer kernels lose accuracy on this CPU: on x86 without VNNI they sum int8 byte "
              "pairs in 16 bits with saturation. The comparison is with the QDQ model as written (second row).")


if __name__ == "__main__":
    sys.exit(main())
