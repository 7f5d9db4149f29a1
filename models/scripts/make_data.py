#!/usr/bin/env python3
"""Generate the two datasets used by tinykd's examples and tests.

models/data/mnist1d.npz  MNIST-1D, generated procedurally (never downloaded)
models/data/digits.npz   scikit-learn's bundled 8x8 digits, stratified split

With --mnist1d-samples N --out PATH it writes only a larger MNIST-1D (the
same generator and seed, N samples split 80/20: 50,000 gives 40k train),
e.g. for the residual student's accuracy runs in docs/results.md.

Both files are written with plain (uncompressed) np.savez so that the Rust
.npz reader only needs to handle stored zip entries in the common case.
"""
import argparse
import os

import numpy as np
from mnist1d.data import get_dataset_args, make_dataset
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

HERE = os.path.dirname(os.path.abspath(__file__))
DATA_DIR = os.path.join(HERE, "..", "data")


def make_mnist1d(path, samples=5000):
    # Default args: seed 42, 5000 samples, 80/20 split, length 40.
    # make_dataset() builds the data from templates; get_dataset() would try
    # to download a pickle first, which we avoid on purpose.
    args = get_dataset_args()
    args.num_samples = samples
    ds = make_dataset(args)
    out = {
        "x_train": ds["x"].astype(np.float32),
        "y_train": ds["y"].astype(np.int64),
        "x_test": ds["x_test"].astype(np.float32),
        "y_test": ds["y_test"].astype(np.int64),
    }
    train = samples * 4 // 5
    assert out["x_train"].shape == (train, 40), out["x_train"].shape
    assert out["x_test"].shape == (samples - train, 40), out["x_test"].shape
    np.savez(path, **out)
    return out


def make_digits(path):
    digits = load_digits()
    # Raw pixels are integers 0..16; scale to [0, 1] and add a channel axis
    # so the arrays are NCHW like any image model input.
    x = (digits.images / 16.0).astype(np.float32)[:, None, :, :]
    y = digits.target.astype(np.int64)
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=0.25, stratify=y, random_state=0
    )
    out = {
        "x_train": np.ascontiguousarray(x_train),
        "y_train": np.ascontiguousarray(y_train),
        "x_test": np.ascontiguousarray(x_test),
        "y_test": np.ascontiguousarray(y_test),
    }
    np.savez(path, **out)
    return out


def describe(name, arrays):
    print(name)
    for k, v in arrays.items():
        extra = ""
        if v.dtype == np.int64:
            extra = f" labels {v.min()}..{v.max()} counts {np.bincount(v).tolist()}"
        else:
            extra = f" min {v.min():.3f} max {v.max():.3f} mean {v.mean():.3f}"
        print(f"  {k:8s} {str(v.dtype):8s} {list(v.shape)}{extra}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mnist1d-samples", type=int, help="write only MNIST-1D, with this many samples")
    parser.add_argument("--out", help="where --mnist1d-samples writes its .npz")
    args = parser.parse_args()
    if args.mnist1d_samples:
        if not args.out:
            parser.error("--mnist1d-samples needs --out")
        describe(os.path.basename(args.out), make_mnist1d(args.out, args.mnist1d_samples))
        return
    os.makedirs(DATA_DIR, exist_ok=True)
    m = make_mnist1d(os.path.join(DATA_DIR, "mnist1d.npz"))
    describe("mnist1d.npz", m)
    d = make_digits(os.path.join(DATA_DIR, "digits.npz"))
    describe("digits.npz", d)


if __name__ == "__main__":
    main()
