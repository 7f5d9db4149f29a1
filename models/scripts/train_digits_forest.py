#!/usr/bin/env python3
"""Train the digits tree-ensemble teacher (scikit-learn) and export it to ONNX.

Output: models/teachers/digits_forest.onnx
  input  "input"          float32 [N, 1, 8, 8]
  output "label"          int64   [N]
  output "probabilities"  float32 [N, 10]

A non-neural teacher that both onnxruntime and tract run (ONNX-ML
TreeEnsembleClassifier). The image-shaped input is patched in the same way as
the SVC teacher's (see train_digits_svc.py).
"""
import os
import sys
import time

import numpy as np
import onnx
from skl2onnx import to_onnx
from skl2onnx.common.data_types import FloatTensorType
from sklearn.ensemble import RandomForestClassifier

from common import OPSET, TEACHERS_DIR, io_card, load_npz, ort_session, seed_everything, write_teacher_card
from train_digits_svc import to_image_input

ONNX_FILE = "digits_forest.onnx"
SEED = 0


def main():
    seed_everything(SEED)
    d = load_npz("digits.npz")
    x_train = d["x_train"].reshape(len(d["x_train"]), -1)
    x_test = d["x_test"].reshape(len(d["x_test"]), -1)
    y_train, y_test = d["y_train"], d["y_test"]

    t0 = time.time()
    # Depth-limited trees keep the ONNX file small; 80 of them still give
    # smooth probabilities, which is what a teacher is for.
    forest = RandomForestClassifier(n_estimators=80, max_depth=10, random_state=SEED, n_jobs=1)
    forest.fit(x_train, y_train)
    train_seconds = time.time() - t0

    onx = to_onnx(
        forest,
        initial_types=[("input", FloatTensorType([None, 64]))],
        options={id(forest): {"zipmap": False}},
        target_opset={"": OPSET, "ai.onnx.ml": 3},
    )
    onx = to_image_input(onx)
    out = os.path.join(TEACHERS_DIR, ONNX_FILE)
    onnx.save_model(onx, out, save_as_external_data=False)

    sess = ort_session(out)
    label, proba = sess.run(["label", "probabilities"], {"input": d["x_test"]})
    ref = forest.predict_proba(x_test)
    max_diff = float(np.abs(proba - ref).max())
    print(f"max |probability diff| vs sklearn predict_proba: {max_diff:.2e}")
    assert max_diff < 1e-4, max_diff
    correct = int((proba.argmax(1) == y_test).sum())
    total = len(y_test)
    print(f"onnxruntime test accuracy {100 * correct / total:.2f} % ({correct}/{total}); {os.path.getsize(out)} bytes")

    n_nodes = sum(int(t.tree_.node_count) for t in forest.estimators_)
    inputs, outputs, opsets = io_card(out)
    write_teacher_card(ONNX_FILE, {
        "description": f"scikit-learn random forest, {len(forest.estimators_)} trees of depth <= 10 ({n_nodes} nodes)",
        "dataset": "data/digits.npz",
        "inputs": inputs,
        "outputs": outputs,
        "opsets": opsets,
        "exporter": "skl2onnx to_onnx, input reshaped to NCHW with the onnx helper API",
        "params": n_nodes,
        "test_accuracy": correct / total,
        "test_correct": correct,
        "test_total": total,
        "script": "models/scripts/train_digits_forest.py",
        "train_seconds": round(train_seconds, 1),
        "notes": (
            "`params` counts tree nodes. Probabilities are the trees' mean leaf class frequencies "
            "(TreeEnsembleClassifier in the `ai.onnx.ml` domain), which tract runs as well as onnxruntime."
        ),
    })


if __name__ == "__main__":
    sys.exit(main())
