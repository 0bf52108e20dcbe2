#!/usr/bin/env python3
"""PyTorch peer of `worker bench`: times the same training step (forward + backward + Adam)
of the experiment's CNN on random data, so burn and PyTorch can be compared on one GPU.

Model (Keras defaults reproduced): 3 blocks of 3 x [Conv3x3 same -> BatchNorm -> ReLU] with
64/128/256 filters (x width), AvgPool 2x2 after blocks 1 and 2, global average pool, Linear 10.
Glorot-uniform kernels, zero biases, BatchNorm eps 1e-3 and momentum 0.01 (torch convention,
= Keras momentum 0.99). Loss: cross-entropy on the softmax with Keras' clipping; Adam
(0.9, 0.999, eps 1e-7), lr 1e-3.

Modes:
  fp32        float32, NCHW, TF32 matmul/conv disabled
  tf32cl      float32 storage with TF32 math allowed, channels_last
  bf16cl      bf16 autocast, channels_last (eager)
  compile     bf16cl with model and optimizer under torch.compile (default mode)
  compile-ro  bf16cl under torch.compile(mode="reduce-overhead"): CUDA graphs

--fuse K trains K models as one (horizontal fusion): every convolution grouped over the models,
BatchNorm per model's channels, the head a batched matmul, each model its own batch; img/s are
then the aggregate over the K models.

Prints e.g.: pytorch mode=fp32 fuse=1 batch=512 img_per_s=17449.3 step_ms=29.34 pipelined_img_per_s=...
"""
import argparse
import statistics
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

KERAS_EPS = 1e-7


def conv_bn_relu(c_in, c_out, models):
    conv = nn.Conv2d(c_in * models, c_out * models, 3, padding=1, bias=True, groups=models)
    # Glorot-uniform per model: the grouped weight holds each model's kernel as its own block.
    for m in range(models):
        nn.init.xavier_uniform_(conv.weight.data.view(models, c_out, c_in, 3, 3)[m])
    nn.init.zeros_(conv.bias)
    return [conv, nn.BatchNorm2d(c_out * models, eps=1e-3, momentum=0.01), nn.ReLU(inplace=True)]


class Cnn(nn.Module):
    """`models` copies of the CNN side by side: input [N, 3·models, 32, 32], logits [models, N, 10]."""

    def __init__(self, width=1.0, models=1):
        super().__init__()
        self.models = models
        f1, f2, f3 = (max(1, round(f * width)) for f in (64, 128, 256))
        layers = []
        for block, (c_in, c_out) in enumerate([(3, f1), (f1, f2), (f2, f3)]):
            for i in range(3):
                layers += conv_bn_relu(c_in if i == 0 else c_out, c_out, models)
            if block < 2:
                layers.append(nn.AvgPool2d(2))
        self.features = nn.Sequential(*layers)
        self.head_weight = nn.Parameter(torch.empty(models, f3, 10))
        for m in range(models):
            nn.init.xavier_uniform_(self.head_weight.data[m].T)
        self.head_bias = nn.Parameter(torch.zeros(models, 1, 10))

    def forward(self, x):
        x = self.features(x).mean(dim=(2, 3))
        x = x.view(x.shape[0], self.models, -1).transpose(0, 1)
        return torch.baddbmm(self.head_bias, x.float(), self.head_weight)


def keras_cce(logits, target_onehot):
    p = F.softmax(logits.float(), dim=1)
    p = p / p.sum(dim=1, keepdim=True)
    p = p.clamp(KERAS_EPS, 1.0 - KERAS_EPS)
    return -(target_onehot * p.log()).sum(dim=1).mean()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mode", choices=["fp32", "bf16cl", "tf32cl", "compile", "compile-ro"], default="fp32")
    ap.add_argument("--fuse", type=int, default=1, help="models trained as one (horizontal fusion)")
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
    channels_last = args.mode != "fp32"
    bf16 = args.mode in ("bf16cl", "compile", "compile-ro")
    fmt = torch.channels_last if channels_last else torch.contiguous_format

    k = args.fuse
    model = Cnn(args.width, k).to(device).to(memory_format=fmt)
    # Adam as the worker runs it: one fused update for all parameters.
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, betas=(0.9, 0.999), eps=1e-7, fused=device.type == "cuda")
    n = args.batch_size
    x = torch.rand(n, 3 * k, 32, 32, device=device).contiguous(memory_format=fmt)
    labels = (torch.arange(n, device=device) * 7) % 10
    y = F.one_hot(labels, 10).float()

    def loss_of(x):
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            logits = model(x)
        # Each model's own loss; their sum gives each its own gradient.
        return sum(keras_cce(logits[m], y) for m in range(k))

    if args.mode.startswith("compile"):
        mode = "reduce-overhead" if args.mode == "compile-ro" else "default"
        # CUDA-graph trees refuse the backward's read of the forward graph's saved outputs here;
        # one plain graph per compiled function replays the same kernels.
        import torch._inductor.config as inductor_config

        inductor_config.triton.cudagraph_trees = False
        loss_of = torch.compile(loss_of, mode=mode)
        # The fused Adam is a few launches already; capturing it as a second graph would
        # overwrite the forward graph's saved outputs before the backward reads them.
        opt_step = opt.step if mode == "reduce-overhead" else torch.compile(opt.step, mode=mode)
    else:
        opt_step = opt.step

    graphs = args.mode == "compile-ro"

    def step():
        if graphs:
            # A new step: CUDA-graph outputs of the last one may be overwritten from here on.
            torch.compiler.cudagraph_mark_step_begin()
        opt.zero_grad(set_to_none=False)
        loss = loss_of(x)
        loss.backward()
        opt_step()
        return loss.detach().clone() if graphs else loss

    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    first_loss = None
    for _ in range(args.warmup):
        loss = step()
        if first_loss is None:
            first_loss = float(loss)
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
        loss = step()
    sync()
    pipelined = k * n * args.steps / (time.perf_counter() - t0)
    print(
        f"pytorch mode={args.mode} fuse={k} batch={n} img_per_s={k * n / med:.1f} step_ms={med * 1e3:.2f} "
        f"pipelined_img_per_s={pipelined:.1f} loss_first={first_loss / k:.4f} loss_last={float(loss) / k:.4f}"
    )


if __name__ == "__main__":
    main()
