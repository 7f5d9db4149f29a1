#!/usr/bin/env python3
"""PyTorch side of `tinykd bench`: trains the same student (same spec, batch
size, epochs, data, KD loss against fixed teacher logits, Adam) and prints
one JSON line with its training throughput.

Supports the spec language as tinykd expands it (blocks and named
architectures arrive as their layers): dense(N), conv1d(C,kK[,sS]
[,same|valid]), conv2d(C,kK|kHxW[,sS|sHxW][,same|valid]), dwconv1d(…),
dwconv2d(…), maxpool(K|HxW[,sS|sHxW]), avgpool(…), bn, relu, relu6,
dropout(P), gap, flatten, res( … ) (the block's input added to its
output, through a 1×1 projection with the body's stride when the shapes
differ). SAME padding is TFLite's (the odd pixel after),
as tinykd trains. 2-D students are timed in PyTorch's default memory
format and in channels-last, and the faster is reported (both are in the
JSON). Needs torch and numpy.
"""
import argparse
import json
import re
import time

import numpy as np
import torch
from torch import nn
import torch.nn.functional as F


def extent(v):
    """`N` or `HxW` as (h, w)."""
    if "x" in v:
        h, w = v.split("x")
        return int(h), int(w)
    return int(v), int(v)


def same_pad(size, k, s):
    """TFLite SAME: (before, after) padding of one axis."""
    out = -(-size // s)
    total = max((out - 1) * s + k - size, 0)
    return total // 2, total - total // 2


def tokens(spec):
    """Whitespace-separated tokens, parentheses kept whole (res( … ) nests)."""
    out, cur, depth = [], "", 0
    for ch in spec:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch.isspace() and depth == 0:
            if cur:
                out.append(cur)
            cur = ""
        else:
            cur += ch
    if cur:
        out.append(cur)
    return out


class Residual(nn.Module):
    def __init__(self, body, projection):
        super().__init__()
        self.body, self.projection = body, projection

    def forward(self, x):
        skip = x if self.projection is None else self.projection(x)
        return self.body(x) + skip


def build(spec, state, two_d):
    """The layers of `spec` from `state` = [c, h, w, flat, stride_h, stride_w]."""
    layers = []
    for tok in tokens(spec):
        name, _, args = tok.partition("(")
        if name == "res":
            before = list(state)
            state[4:6] = [1, 1]
            body = nn.Sequential(*build(args[:-1], state, two_d))
            c, h, w, _, sh, sw = state
            projection = None
            if (c, h, w) != tuple(before[:3]):
                projection = nn.Conv2d(before[0], c, 1, stride=(sh, sw))
            layers.append(Residual(body, projection))
            state[4:6] = [before[4] * sh, before[5] * sw]
            continue
        c, h, w, flat = state[:4]
        args = [a.strip() for a in args.rstrip(")").split(",") if a.strip()]
        if name == "dense":
            if not flat:
                layers.append(nn.Flatten())
                flat, c = True, c * h * w
            layers.append(nn.Linear(c, int(args[0])))
            c = int(args[0])
        elif name in ("conv1d", "conv2d", "dwconv1d", "dwconv2d"):
            depthwise = name.startswith("dw")
            out = c if depthwise else int(args[0])
            (kh, kw), (sh, sw), pad = (1, 1), (1, 1), "same"
            for a in (args if depthwise else args[1:]):
                if a.startswith("k"):
                    kh, kw = extent(a[1:])
                elif a.startswith("s") and a != "same":
                    sh, sw = extent(a[1:])
                elif a in ("same", "valid"):
                    pad = a
            if not two_d:
                kh, sh = 1, 1
            (pt, pb), (pl, pr) = ((same_pad(h, kh, sh), same_pad(w, kw, sw)) if pad == "same" else ((0, 0), (0, 0)))
            groups = c if depthwise else 1
            if pt == pb and pl == pr:
                layers.append(nn.Conv2d(c, out, (kh, kw), stride=(sh, sw), padding=(pt, pl), groups=groups))
            else:
                layers.append(nn.ZeroPad2d((pl, pr, pt, pb)))
                layers.append(nn.Conv2d(c, out, (kh, kw), stride=(sh, sw), groups=groups))
            h, w, c = (h + pt + pb - kh) // sh + 1, (w + pl + pr - kw) // sw + 1, out
            state[4:6] = [state[4] * sh, state[5] * sw]
        elif name in ("maxpool", "avgpool"):
            kh, kw = extent(args[0])
            sh, sw = extent(args[1][1:]) if len(args) > 1 else (kh, kw)
            if not two_d:
                kh, sh = 1, 1
            layers.append((nn.MaxPool2d if name == "maxpool" else nn.AvgPool2d)((kh, kw), stride=(sh, sw)))
            h, w = (h - kh) // sh + 1, (w - kw) // sw + 1
            state[4:6] = [state[4] * sh, state[5] * sw]
        elif name == "bn":
            layers.append(nn.BatchNorm2d(c) if not flat else nn.BatchNorm1d(c))
        elif name == "dropout":
            layers.append(nn.Dropout(float(args[0])))
        elif name == "relu":
            layers.append(nn.ReLU())
        elif name == "relu6":
            layers.append(nn.ReLU6())
        elif name == "gap":
            layers.append(nn.AdaptiveAvgPool2d(1))
            layers.append(nn.Flatten())
            flat = True
        elif name == "flatten":
            layers.append(nn.Flatten())
            flat, c = True, c * h * w
        else:
            raise SystemExit(f"bench_train_pytorch.py: unsupported layer {tok}")
        state[:4] = [c, h, w, flat]
    return layers


def parse(spec, in_shape):
    """The student as an nn.Sequential and its input shape (channels first)."""
    if len(in_shape) == 1:
        shape = (1, 1, in_shape[0])
    elif len(in_shape) == 2:
        shape = (in_shape[0], 1, in_shape[1])
    else:
        shape = tuple(in_shape)
    state = [shape[0], shape[1], shape[2], False, 1, 1]
    return nn.Sequential(*build(spec, state, len(in_shape) == 3)), shape


def train(a, x, y, teacher, channels_last):
    """Seconds for `a.epochs` epochs of KD training from a fresh student."""
    torch.manual_seed(0)
    net, _ = parse(a.student, list(a.in_shape))
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    T = a.temperature

    def step(idx):
        s = net(x[idx])
        soft = F.kl_div(F.log_softmax(s / T, 1), F.softmax(teacher[idx] / T, 1), reduction="batchmean") * T * T
        loss = a.alpha * soft + (1 - a.alpha) * F.cross_entropy(s, y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()

    # Untimed warm-up steps, as tinykd takes: allocator pools and kernel
    # choices settle, so neither side's one-time costs are timed (and the
    # second memory format does not time warmer than the first).
    for i in range(a.warmup_steps):
        step(torch.arange(i * a.batch_size, (i + 1) * a.batch_size) % len(x))
    start = time.perf_counter()
    for _ in range(a.epochs):
        perm = torch.randperm(len(x))
        for i in range(0, len(x), a.batch_size):
            step(perm[i:i + a.batch_size])
    return time.perf_counter() - start, sum(p.numel() for p in net.parameters())


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True)
    ap.add_argument("--student", required=True)
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--warmup-steps", type=int, default=5)
    ap.add_argument("--temperature", type=float, default=4.0)
    ap.add_argument("--alpha", type=float, default=0.9)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    d = np.load(a.data)
    x = torch.from_numpy(d["x_train"].astype(np.float32))
    y = torch.from_numpy(d["y_train"].astype(np.int64))
    classes = int(y.max()) + 1
    a.in_shape = list(x.shape[1:])
    _, shape = parse(a.student, a.in_shape)
    x = x.reshape(len(x), *shape)
    teacher = torch.randn(len(x), classes) * 3  # fixed soft targets, as tinykd's cached ones
    formats = {"default": train(a, x, y, teacher, False)}
    if len(a.in_shape) == 3:
        formats["channels_last"] = train(a, x, y, teacher, True)
    best = min(formats, key=lambda f: formats[f][0])
    seconds, params = formats[best]
    print(json.dumps({"samples_per_second": a.epochs * len(x) / seconds, "seconds": seconds,
                      "parameters": params, "torch": torch.__version__, "threads": a.threads,
                      "memory_format": best,
                      "samples_per_second_by_format": {f: a.epochs * len(x) / t for f, (t, _) in formats.items()}}))


if __name__ == "__main__":
    main()
