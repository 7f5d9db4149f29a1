"""Helpers shared by the teacher training scripts."""
import json
import os
import random

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
MODELS_DIR = os.path.normpath(os.path.join(HERE, ".."))
DATA_DIR = os.path.join(MODELS_DIR, "data")
TEACHERS_DIR = os.path.join(MODELS_DIR, "teachers")

OPSET = 17


def seed_everything(seed):
    random.seed(seed)
    np.random.seed(seed)
    try:
        import torch
    except ImportError:
        return
    torch.manual_seed(seed)
    # CPU kernels are deterministic already, but ask for an error rather than
    # silent nondeterminism should an op ever fall back to a racy path.
    torch.use_deterministic_algorithms(True)


def load_npz(name):
    with np.load(os.path.join(DATA_DIR, name)) as f:
        return {k: f[k] for k in f.files}


def onnx_io_summary(path):
    """Return [(kind, name, dtype, shape)] for the graph inputs and outputs."""
    import onnx

    model = onnx.load(path)
    rows = []
    for kind, values in (("input", model.graph.input), ("output", model.graph.output)):
        for v in values:
            t = v.type.tensor_type
            dims = [d.dim_param if d.dim_param else d.dim_value for d in t.shape.dim]
            rows.append((kind, v.name, onnx.helper.tensor_dtype_to_np_dtype(t.elem_type).name, dims))
    opsets = {(o.domain or "ai.onnx"): o.version for o in model.opset_import}
    return rows, opsets


def ort_session(path):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 2
    return ort.InferenceSession(path, sess_options=opts, providers=["CPUExecutionProvider"])


def write_teacher_card(onnx_file, card):
    """Store one teacher's metrics next to its .onnx and rebuild the README table.

    Each training script only knows about its own teacher, so the metrics live
    in a small JSON file per teacher and the README is regenerated from all of
    them; re-running one script never loses another teacher's row.
    """
    card = dict(card)
    card["file"] = onnx_file
    stem = os.path.splitext(onnx_file)[0]
    with open(os.path.join(TEACHERS_DIR, stem + ".json"), "w") as f:
        json.dump(card, f, indent=2, sort_keys=True)
        f.write("\n")
    render_teachers_readme()


def render_teachers_readme():
    cards = []
    for name in sorted(os.listdir(TEACHERS_DIR)):
        if name.endswith(".json"):
            with open(os.path.join(TEACHERS_DIR, name)) as f:
                cards.append(json.load(f))

    lines = [
        "# Teacher models",
        "",
        "Pretrained teachers for the distillation examples and tests. Every number",
        "below was measured with onnxruntime on the `.onnx` file itself, on the",
        "held-out test split of the dataset in `models/data/`. The same numbers are",
        "kept machine-readable in the `.json` file next to each model.",
        "",
        "| file | what it is | input | outputs | params | test accuracy (onnxruntime) | made by | training time |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for c in cards:
        inputs = "<br>".join(f"`{i['name']}` {i['dtype']} {fmt_shape(i['shape'])}" for i in c["inputs"])
        outputs = "<br>".join(f"`{o['name']}` {o['dtype']} {fmt_shape(o['shape'])}" for o in c["outputs"])
        lines.append(
            f"| `{c['file']}` | {c['description']} | {inputs} | {outputs} | {c['params']:,} "
            f"| {100 * c['test_accuracy']:.2f} % ({c['test_correct']}/{c['test_total']}) "
            f"| `{c['script']}` | {fmt_seconds(c['train_seconds'])} |"
        )
    lines += [
        "",
        "`N` is a dynamic batch dimension. Every model is a single self-contained",
        "file (no external data). Regenerate with the scripts named above; see",
        "`models/README.md`.",
        "",
        "| file | opsets | exported with |",
        "| --- | --- | --- |",
    ]
    for c in cards:
        opsets = ", ".join(f"{d} {v}" for d, v in sorted(c["opsets"].items()))
        lines.append(f"| `{c['file']}` | {opsets} | {c['exporter']} |")
    lines.append("")
    notes = [c for c in cards if c.get("notes")]
    if notes:
        lines.append("## Notes")
        lines.append("")
        for c in notes:
            lines.append(f"- `{c['file']}`: {c['notes']}")
        lines.append("")
    with open(os.path.join(TEACHERS_DIR, "README.md"), "w") as f:
        f.write("\n".join(lines))


def io_card(path):
    rows, opsets = onnx_io_summary(path)
    inputs = [{"name": n, "dtype": d, "shape": s} for k, n, d, s in rows if k == "input"]
    outputs = [{"name": n, "dtype": d, "shape": s} for k, n, d, s in rows if k == "output"]
    return inputs, outputs, opsets


def fmt_shape(shape):
    return "[" + ", ".join(str(s) for s in shape) + "]"


def fmt_seconds(s):
    if s < 90:
        return f"{s:.0f} s"
    return f"{s / 60:.1f} min"
