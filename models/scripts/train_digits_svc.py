#!/usr/bin/env python3
"""Train the digits SVC teacher and export it to ONNX with an image-shaped input.

Output: models/teachers/digits_svc.onnx
  input  "input"          float32 [N, 1, 8, 8]
  output "label"          int64   [N]
  output "probabilities"  float32 [N, 10]

skl2onnx only knows the flat [N, 64] feature layout the SVC was fitted on, and
a sklearn reshape step (FunctionTransformer) is not convertible. So the
converted graph is patched afterwards: a new NCHW input feeds a Reshape node
whose output takes over the original flat input's name.
"""
import os
import time
import warnings

import numpy as np
import onnx
from onnx import TensorProto, helper
from skl2onnx import to_onnx
from skl2onnx.common.data_types import FloatTensorType
from sklearn.model_selection import GridSearchCV, StratifiedKFold
from sklearn.svm import SVC

from common import OPSET, TEACHERS_DIR, io_card, load_npz, ort_session, seed_everything, write_teacher_card

ONNX_FILE = "digits_svc.onnx"
SEED = 0


def to_image_input(model):
    graph = model.graph
    assert len(graph.input) == 1
    flat = graph.input[0]
    flat_name = "input_flat"
    # Rename every use of the flat input; the Reshape below produces it instead.
    for node in graph.node:
        for i, name in enumerate(node.input):
            if name == flat.name:
                node.input[i] = flat_name
    shape = helper.make_tensor("flat_shape", TensorProto.INT64, [2], [-1, 64])
    graph.initializer.append(shape)
    reshape = helper.make_node("Reshape", ["input", "flat_shape"], [flat_name], name="flatten_input")
    graph.node.insert(0, reshape)
    new_input = helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 1, 8, 8])
    graph.input.remove(flat)
    graph.input.append(new_input)
    # Give the outputs the same symbolic batch name as the input.
    for out in graph.output:
        dims = out.type.tensor_type.shape.dim
        if len(dims) > 0:
            dims[0].ClearField("dim_value")
            dims[0].dim_param = "N"
    onnx.checker.check_model(model, full_check=True)
    return model


def main():
    # scikit-learn 1.9 deprecates SVC(probability=True) in favour of
    # CalibratedClassifierCV, but skl2onnx converts the SVC's built-in Platt
    # scaling directly; requirements.txt pins a version where it still exists.
    warnings.filterwarnings("ignore", category=FutureWarning, module="sklearn")
    seed_everything(SEED)
    d = load_npz("digits.npz")
    x_train = d["x_train"].reshape(len(d["x_train"]), -1)
    x_test = d["x_test"].reshape(len(d["x_test"]), -1)
    y_train, y_test = d["y_train"], d["y_test"]

    t0 = time.time()
    # Small grid around the usual optimum for [0,1]-scaled digits; chosen by
    # cross-validation on the training split only, so the test split stays unseen.
    grid = GridSearchCV(
        SVC(kernel="rbf"),
        {"C": [1, 3, 10, 30], "gamma": [0.02, 0.04, 0.08, 0.12, 0.16]},
        cv=StratifiedKFold(5, shuffle=True, random_state=SEED),
        n_jobs=2,
    )
    grid.fit(x_train, y_train)
    best = grid.best_params_
    print(f"grid search best {best} cv accuracy {100 * grid.best_score_:.2f} %")
    # probability=True fits Platt scaling with an internal CV; random_state
    # makes that reproducible.
    svc = SVC(kernel="rbf", probability=True, random_state=SEED, **best)
    svc.fit(x_train, y_train)
    train_seconds = time.time() - t0
    sk_acc = (svc.predict(x_test) == y_test).mean()
    print(f"sklearn test accuracy {100 * sk_acc:.2f} % ({train_seconds:.1f} s incl. grid search)")

    onx = to_onnx(
        svc,
        initial_types=[("input", FloatTensorType([None, 64]))],
        options={id(svc): {"zipmap": False}},
        target_opset={"": OPSET, "ai.onnx.ml": 3},
    )
    onx = to_image_input(onx)
    out = os.path.join(TEACHERS_DIR, ONNX_FILE)
    onnx.save_model(onx, out, save_as_external_data=False)

    sess = ort_session(out)
    label, proba = sess.run(["label", "probabilities"], {"input": d["x_test"]})
    ref = svc.predict_proba(x_test)
    max_diff = float(np.abs(proba - ref).max())
    print(f"max |probability diff| vs sklearn predict_proba: {max_diff:.2e}")
    assert max_diff < 1e-4, max_diff
    # predict() uses the one-vs-one votes, predict_proba the Platt-scaled
    # probabilities; they can disagree on a borderline sample, so report both.
    correct = int((label == y_test).sum())
    correct_proba = int((proba.argmax(1) == y_test).sum())
    total = len(y_test)
    print(f"onnxruntime test accuracy {100 * correct / total:.2f} % ({correct}/{total}) from 'label'; "
          f"{100 * correct_proba / total:.2f} % from argmax('probabilities'); "
          f"{os.path.getsize(out)} bytes")
    assert (label == svc.predict(x_test)).all()

    n_sv = int(svc.support_vectors_.shape[0])
    # Parameters: support vectors, their dual coefficients, intercepts and the
    # Platt-scaling pairs (probA/probB).
    n_params = int(svc.support_vectors_.size + svc.dual_coef_.size + svc.intercept_.size
                   + svc.probA_.size + svc.probB_.size)
    inputs, outputs, opsets = io_card(out)
    write_teacher_card(ONNX_FILE, {
        "description": f"scikit-learn SVC, RBF kernel (C={best['C']}, gamma={best['gamma']}), "
                       f"{n_sv} support vectors, Platt-scaled probabilities",
        "dataset": "data/digits.npz",
        "inputs": inputs,
        "outputs": outputs,
        "opsets": opsets,
        "exporter": "skl2onnx to_onnx, input reshaped to NCHW with the onnx helper API",
        "params": n_params,
        "test_accuracy": correct / total,
        "test_correct": correct,
        "test_total": total,
        "test_accuracy_argmax_probabilities": correct_proba / total,
        "script": "models/scripts/train_digits_svc.py",
        "train_seconds": round(train_seconds, 1),
        "notes": (
            "no logits: the outputs are `label` (one-vs-one vote, the accuracy in the table) and "
            "`probabilities` (Platt scaling); argmax of `probabilities` scores "
            f"{100 * correct_proba / total:.2f} %. Uses the `ai.onnx.ml` domain "
            "(SVMClassifier) besides the default opset."
        ),
    })


if __name__ == "__main__":
    main()
