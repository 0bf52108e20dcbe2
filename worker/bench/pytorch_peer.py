#!/usr/bin/env python3
"""PyTorch peer of `worker bench`: times the same training step (forward + backward + Adam)
of the experiment's CNN on random data, so burn and PyTorch can be compared on one GPU.

Model (Keras defaults reproduced): 3 blocks of 3 x [Conv3x3 same -> BatchNorm -> ReLU] with
64/128/256 filters (x width), AvgPool 2x2 after blocks 1 and 2, global average pool, Linear 10.
Glorot-uniform kernels, zero biases, BatchNorm eps 1e-3 and momentum 0.01 (torch convention,
= Keras momentum 0.99). Loss: cross-entropy on the softmax with Keras' clipping; Adam
(0.9, 0.999, eps 1e-7), lr 1e-3.

Modes:
  fp32    float32, NCHW, TF32 matmul/conv disabled
  tf32cl  float32 storage with TF32 math allowed, channels_last
  bf16cl  bf16 autocast, channels_last

Prints e.g.: pytorch mode=fp32 batch=512 img_per_s=17449.3 step_ms=29.34
"""
import argparse
import statistics
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

KERAS_EPS = 1e-7


def conv_bn_relu(c_in, c_out):
    conv = nn.Conv2d(c_in, c_out, 3, padding=1, bias=True)
    nn.init.xavier_uniform_(conv.weight)
    nn.init.zeros_(conv.bias)
    return [conv, nn.BatchNorm2d(c_out, eps=1e-3, momentum=0.01), nn.ReLU(inplace=True)]


class Cnn(nn.Module):
    def __init__(self, width=1.0):
        super().__init__()
        f1, f2, f3 = (max(1, round(f * width)) for f in (64, 128, 256))
        layers = []
        for block, (c_in, c_out) in enumerate([(3, f1), (f1, f2), (f2, f3)]):
            for i in range(3):
                layers += conv_bn_relu(c_in if i == 0 else c_out, c_out)
            if block < 2:
                layers.append(nn.AvgPool2d(2))
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(f3, 10)
        nn.init.xavier_uniform_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def forward(self, x):
        x = self.features(x).mean(dim=(2, 3))
        return self.head(x)


def keras_cce(logits, target_onehot):
    p = F.softmax(logits.float(), dim=1)
    p = p / p.sum(dim=1, keepdim=True)
    p = p.clamp(KERAS_EPS, 1.0 - KERAS_EPS)
    return -(target_onehot * p.log()).sum(dim=1).mean()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mode", choices=["fp32", "bf16cl", "tf32cl"], default="fp32")
    ap.add_argument("--batch-size", type=int, default=512)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--width", type=float, default=1.0)
    ap.add_argument("--device", default="cuda:0")
    args = ap.parse_args()

    torch.manual_seed(0)
    device = torch.device(args.device)
    tf32 = args.mode == "tf32cl"
    torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.backends.cudnn.allow_tf32 = tf32
    torch.backends.cudnn.benchmark = True
    channels_last = args.mode in ("bf16cl", "tf32cl")
    fmt = torch.channels_last if channels_last else torch.contiguous_format

    model = Cnn(args.width).to(device).to(memory_format=fmt)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, betas=(0.9, 0.999), eps=1e-7)
    n = args.batch_size
    x = torch.rand(n, 3, 32, 32, device=device).contiguous(memory_format=fmt)
    labels = (torch.arange(n, device=device) * 7) % 10
    y = F.one_hot(labels, 10).float()

    def step():
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=args.mode == "bf16cl"):
            logits = model(x)
        loss = keras_cce(logits, y)
        loss.backward()
        opt.step()

    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for _ in range(args.warmup):
        step()
    sync()
    times = []
    for _ in range(args.steps):
        t0 = time.perf_counter()
        step()
        sync()
        times.append(time.perf_counter() - t0)
    med = statistics.median(times)
    t0 = time.perf_counter()
    for _ in range(args.steps):
        step()
    sync()
    pipelined = n * args.steps / (time.perf_counter() - t0)
    print(
        f"pytorch mode={args.mode} batch={n} img_per_s={n / med:.1f} step_ms={med * 1e3:.2f} "
        f"pipelined_img_per_s={pipelined:.1f}"
    )


if __name__ == "__main__":
    main()
