#!/usr/bin/env python3
"""PyTorch side of `tinykd bench`: trains the same student (same spec, batch
size, epochs, data, KD loss against fixed teacher logits, Adam) and prints
one JSON line with its training throughput.

Supports the 1-D part of the spec language: dense(N), conv1d(C,kK[,sS]
[,same|valid]), dwconv1d(kK[,sS][,same|valid]), maxpool(K[,sS]),
avgpool(K[,sS]), bn, relu, relu6, dropout(P), gap, flatten. Needs torch and
numpy.
"""
import argparse
import json
import re
import time

import numpy as np
import torch
from torch import nn
import torch.nn.functional as F


def parse(spec, in_shape, classes):
    c, l = (1, in_shape[0]) if len(in_shape) == 1 else in_shape
    layers, flat = [], False
    for tok in re.findall(r"\w+(?:\([^)]*\))?", spec):
        name, _, args = tok.partition("(")
        args = [a.strip() for a in args.rstrip(")").split(",") if a.strip()]
        if name == "dense":
            if not flat:
                layers.append(nn.Flatten())
                flat, c = True, c * l
            layers.append(nn.Linear(c, int(args[0])))
            c = int(args[0])
        elif name in ("conv1d", "dwconv1d"):
            depthwise = name == "dwconv1d"
            out, k, s, pad = (c if depthwise else int(args[0])), 1, 1, "same"
            for a in (args if depthwise else args[1:]):
                if a.startswith("k"):
                    k = int(a[1:])
                elif a.startswith("s") and a != "same":
                    s = int(a[1:])
                elif a in ("same", "valid"):
                    pad = a
            p = (k - 1) // 2 if pad == "same" else 0
            layers.append(nn.Conv1d(c, out, k, stride=s, padding=p, groups=c if depthwise else 1))
            l = (l + 2 * p - k) // s + 1
            c = out
        elif name in ("maxpool", "avgpool"):
            k = int(args[0])
            s = int(args[1][1:]) if len(args) > 1 else k
            layers.append((nn.MaxPool1d if name == "maxpool" else nn.AvgPool1d)(k, stride=s))
            l = (l - k) // s + 1
        elif name == "bn":
            layers.append(nn.BatchNorm1d(c))
        elif name == "dropout":
            layers.append(nn.Dropout(float(args[0])))
        elif name == "relu":
            layers.append(nn.ReLU())
        elif name == "relu6":
            layers.append(nn.ReLU6())
        elif name == "gap":
            layers.append(nn.AdaptiveAvgPool1d(1))
            layers.append(nn.Flatten())
            flat = True
        elif name == "flatten":
            layers.append(nn.Flatten())
            flat, c = True, c * l
        else:
            raise SystemExit(f"bench_train_pytorch.py: unsupported layer {tok}")
    return nn.Sequential(*layers), (1, in_shape[0]) if len(in_shape) == 1 else tuple(in_shape)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True)
    ap.add_argument("--student", required=True)
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--temperature", type=float, default=4.0)
    ap.add_argument("--alpha", type=float, default=0.9)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    d = np.load(a.data)
    x = torch.from_numpy(d["x_train"].astype(np.float32))
    y = torch.from_numpy(d["y_train"].astype(np.int64))
    classes = int(y.max()) + 1
    net, shape = parse(a.student, list(x.shape[1:]), classes)
    x = x.reshape(len(x), *shape)
    teacher = torch.randn(len(x), classes) * 3  # fixed soft targets, as tinykd's cached ones
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    T = a.temperature
    start = time.perf_counter()
    for _ in range(a.epochs):
        perm = torch.randperm(len(x))
        for i in range(0, len(x), a.batch_size):
            idx = perm[i:i + a.batch_size]
            s = net(x[idx])
            soft = F.kl_div(F.log_softmax(s / T, 1), F.softmax(teacher[idx] / T, 1), reduction="batchmean") * T * T
            loss = a.alpha * soft + (1 - a.alpha) * F.cross_entropy(s, y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    seconds = time.perf_counter() - start
    print(json.dumps({"samples_per_second": a.epochs * len(x) / seconds, "seconds": seconds,
                      "parameters": sum(p.numel() for p in net.parameters()), "torch": torch.__version__,
                      "threads": a.threads}))


if __name__ == "__main__":
    main()
