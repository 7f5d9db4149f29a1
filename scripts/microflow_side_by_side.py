#!/usr/bin/env python3
"""tinykd and microflow 0.1.3 on the same student, the same QEMU board.

    python3 scripts/microflow_side_by_side.py [--student SPEC] [--data D.npz]
        [--teacher T.onnx] [--steps N] [--samples 200] [--tinykd target/debug/tinykd]

Distils the student (default: microflow's MNIST-1D CNN shape,
`conv1d(8,k5,s2) relu conv1d(16,k3,s2) relu conv1d(16,k3,s2) relu flatten
dense(10)`), quantizes it with per-tensor weight scales (microflow's fully
connected layer takes nothing else), exports it to `.tflite`, and builds
`firmware/peers/side-by-side` for QEMU mps2-an385 (Cortex-M3) twice per
runtime: the smallest image and a measuring image that runs the first N
test samples (instructions per inference under `-icount`, peak stack of the
inference, predicted classes). A third image, the harness with neither
runtime, is what both smallest images share (vector table, start-up code,
`main`, panic handler): an image's flash less that one is its engine +
model. Prints all of it and the ratios tinykd / microflow.

microflow reads the same `.tflite` (its compiler turns it into Rust code);
tinykd runs the `.tkd` it came from. Their outputs need not agree: microflow
requantizes in f32 and places SAME-padded windows at stride 2 differently
from TFLite (its window starts at (K−1)/2, TFLite's at floor(total/2)), so the script reports each one's accuracy on the
samples and how often they agree, not bit-exactness.

Needs: cargo with the thumbv7m-none-eabi target, qemu-system-arm,
llvm-size (or arm-none-eabi-size), numpy. The first microflow build fetches
microflow and nalgebra from crates.io.
"""
import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CRATE = os.path.join(ROOT, "firmware", "peers", "side-by-side")
TARGET = os.path.join(ROOT, "firmware", "boards", "target")
ELF = os.path.join(TARGET, "thumbv7m-none-eabi", "release", "tinykd-peer-side-by-side")
QEMU = ["qemu-system-arm", "-machine", "mps2-an385", "-cpu", "cortex-m3", "-display", "none", "-monitor", "none",
        "-semihosting-config", "enable=on,target=native", "-icount", "shift=0,sleep=off", "-kernel"]
# SysTick runs on the 25 MHz core clock; -icount shift=0 is 1 ns per instruction.
INSTRUCTIONS_PER_TICK = 40


def run(cmd, **kw):
    r = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if r.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed ({r.returncode}):\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
    return r.stdout


def flash_bytes(elf):
    """Bytes the image puts in flash: its allocated sections other than RAM's."""
    size = shutil.which("llvm-size") or shutil.which("arm-none-eabi-size")
    if size is None:
        sys.exit("needs llvm-size or arm-none-eabi-size")
    out = run([size, "-A", elf])
    total = 0
    for line in out.splitlines():
        parts = line.split()
        if len(parts) >= 3 and parts[0] in (".vector_table", ".text", ".rodata", ".data"):
            total += int(parts[1])
    return total


def build(runtime, measure, model, inputs):
    features = runtime + (",measure" if measure else "")
    env = dict(os.environ, TINYKD_MODEL=model, PEER_INPUTS=inputs, CARGO_TARGET_DIR=TARGET)
    # microflow's compiler reads model.tflite without telling cargo: touch
    # the source so a new model is compiled in.
    os.utime(os.path.join(CRATE, "src", "main.rs"))
    run(["cargo", "build", "--release", "--features", features], cwd=CRATE, env=env)
    keep = os.path.join(os.path.dirname(inputs), f"{runtime}{'-measure' if measure else ''}.elf")
    shutil.copy(ELF, keep)
    return keep


def measure(elf):
    out = run(QEMU + [elf], timeout=600)
    m = re.search(r"samples (\d+) ticks (\d+) stack (\d+)", out)
    c = re.search(r"classes((?: \d+)*)", out)
    if not m or not c:
        sys.exit(f"unexpected output from {elf}:\n{out}")
    n, ticks, stack = (int(v) for v in m.groups())
    classes = [int(v) for v in c.group(1).split()]
    return ticks * INSTRUCTIONS_PER_TICK / n, stack, classes


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--student", default="conv1d(8,k5,s2) relu conv1d(16,k3,s2) relu conv1d(16,k3,s2) relu "
                                          "flatten dense(10)")
    ap.add_argument("--data", default=os.path.join(ROOT, "models", "data", "mnist1d.npz"))
    ap.add_argument("--teacher", default=os.path.join(ROOT, "models", "teachers", "mnist1d_cnn.onnx"))
    ap.add_argument("--steps", type=int, default=3000, help="distillation steps")
    ap.add_argument("--samples", type=int, default=200, help="test samples the measuring images run")
    ap.add_argument("--tinykd", default=os.path.join(ROOT, "target", "debug", "tinykd"))
    ap.add_argument("--keep", help="keep the student, models and images in this directory")
    a = ap.parse_args()
    if not os.path.exists(a.tinykd):
        run(["cargo", "build", "-p", "tinykd"], cwd=ROOT)

    work = a.keep or tempfile.mkdtemp(prefix="side-by-side-")
    os.makedirs(work, exist_ok=True)
    ckpt, tkd, tflite = (os.path.join(work, f) for f in ("student.ckpt", "student.tkd", "student.tflite"))
    print(f"student {a.student!r}: distilling {a.steps} steps, quantizing (per-tensor weights), exporting")
    run([a.tinykd, "-q", "distill", "--teacher", a.teacher, "--data", a.data, "--student", a.student,
         "--steps", str(a.steps), "--no-baseline", "--out", ckpt])
    run([a.tinykd, "-q", "quantize", "--student", ckpt, "--data", a.data, "--weight-scales", "per-tensor",
         "--out", tkd])
    run([a.tinykd, "-q", "export", "--model", tkd, "--format", "tflite", "--out", tflite])
    shutil.copy(tflite, os.path.join(CRATE, "model.tflite"))

    # The first test samples, quantized with the model's input parameters
    # (.tkd header: scale at byte 36, zero point at 40) in the device's
    # channels-last order.
    blob = open(tkd, "rb").read()
    scale = np.frombuffer(blob[36:40], "<f4")[0]
    zp = np.frombuffer(blob[40:44], "<i4")[0]
    d = np.load(a.data)
    x, y = d["x_test"][:a.samples].astype(np.float32), d["y_test"][:a.samples]
    if x.ndim == 3:  # [N, C, L] → [N, L, C]
        x = x.transpose(0, 2, 1)
    elif x.ndim == 4:  # [N, C, H, W] → [N, H, W, C]
        x = x.transpose(0, 2, 3, 1)
    q = np.clip(np.sign(x / scale) * np.floor(np.abs(x / scale) + 0.5) + zp, -128, 127).astype(np.int8)
    inputs = os.path.join(work, "inputs.bin")
    q.reshape(len(q), -1).tofile(inputs)

    rows = {}
    for runtime in ("tinykd", "microflow"):
        print(f"building {runtime} (footprint and measuring images)")
        flash = flash_bytes(build(runtime, False, tkd, inputs))
        per_inference, stack, classes = measure(build(runtime, True, tkd, inputs))
        accuracy = float(np.mean(np.array(classes) == y[:len(classes)]))
        rows[runtime] = (flash, stack, per_inference, accuracy, classes)

    print("building the harness alone (flash both images share)")
    platform = flash_bytes(build("platform", False, tkd, inputs))

    model_bytes, tflite_bytes = len(blob), os.path.getsize(tflite)
    agree = np.mean(np.array(rows["tinykd"][4]) == np.array(rows["microflow"][4]))
    print(f"\n{a.student} on QEMU mps2-an385 (Cortex-M3), opt-level \"s\", LTO; {len(y)} test samples")
    print(f"model: .tkd {model_bytes} B, .tflite {tflite_bytes} B; the harness alone: {platform} B of flash")
    print(f"{'':<12}{'image flash':>14}{'engine + model':>16}{'peak stack':>12}{'instructions/inference':>24}"
          f"{'accuracy':>10}")
    for name, (flash, stack, per, acc, _) in rows.items():
        print(f"{name:<12}{flash:>12} B{flash - platform:>14} B{stack:>10} B{per:>24.0f}{acc * 100:>9.2f}%")
    t, m = rows["tinykd"], rows["microflow"]
    print(f"{'ratio':<12}{t[0] / m[0]:>14.2f}{(t[0] - platform) / (m[0] - platform):>16.2f}{t[1] / m[1]:>12.2f}"
          f"{t[2] / m[2]:>24.2f}")
    print(f"tinykd and microflow predict the same class on {agree * 100:.1f}% of the samples")
    if not a.keep:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
