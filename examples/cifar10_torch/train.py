#!/usr/bin/env python3
"""The experiment as a short PyTorch script: CIFAR-10, the 10-layer Keras-style CNN, and the loss
`normal` (10-class cross-entropy) or `natural_softmax` (cross-entropy + a "natural vs artificial"
term). Run by hand, or by a sweep worker as a command job (see README.md beside this file).

After every epoch it prints one JSON line, {"epoch": 3, "train_loss": ..., "val_acc": ...}, on
stdout (through sweep_client.report_epoch when that package is installed): a worker running
this script stores each such line as the epoch's metrics. Everything else goes to stderr.
With sweep_client installed and a worker that keeps checkpoints (--checkpoint-dir), it saves
the model, optimiser and data order after every epoch and a later attempt of the job continues
from there.

Model and details as in worker/bench/pytorch_peer.py and the Rust worker (Keras defaults):
3 blocks of 3 x [Conv3x3 same -> BatchNorm -> ReLU] with 64/128/256 filters, AvgPool 2x2 after
blocks 1 and 2, global average pool, Dense 10. Glorot-uniform kernels, zero biases, BatchNorm
eps 1e-3 and momentum 0.99 (Keras; 0.01 in PyTorch's convention). Pixels scaled to [0, 1], no
augmentation. Adam (0.9, 0.999, eps 1e-7). Keras' categorical cross-entropy: the prediction
renormalised, clipped to [1e-7, 1 - 1e-7], -sum(t * log o) averaged over the batch.

natural_softmax (worker/src/loss.rs): kcce(y, softmax) + kcce([n, 1 - n], [s, 1 - s]) where
n = 1 for the natural classes 2..=7 (bird, cat, deer, dog, frog, horse) and s is the summed
softmax probability of those classes. Both the training and the validation loss are this loss.

Needs only torch. Example (CPU, seconds):
  python3 examples/cifar10_torch/train.py --loss natural_softmax --epochs 2 --batch-size 64 \\
      --train-limit 256 --test-limit 128 --width 0.125 --data-dir /path/to/cifar-10-batches-bin
"""

from __future__ import annotations

import argparse
import json
import lzma
import math
import os
import random
import sys
import time
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

try:
    from sweep_client import job_context, report_epoch
except ImportError:  # the script needs only torch: print the same line by hand, never resume
    job_context = None

    def report_epoch(epoch: int, **metrics: float) -> str:
        line = json.dumps({"epoch": epoch, **{k: float(v) for k, v in metrics.items()}}, allow_nan=False)
        sys.stdout.write(line + "\n")
        sys.stdout.flush()
        return line


KERAS_EPS = 1e-7
NUM_CLASSES = 10
FIRST_NATURAL, LAST_NATURAL = 2, 7  # bird .. horse, inclusive
TRAIN_FILES = [f"data_batch_{i}" for i in range(1, 6)]
TEST_FILE = "test_batch"
RECORD = 1 + 3 * 32 * 32  # label byte + 32x32 R, G, B planes
FILE_IMAGES = 10_000
EVAL_BATCH = 1000


def log(*args: object) -> None:
    print(*args, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------
# Data: the official binary files (cifar-10-batches-bin), plain or .xz
# ---------------------------------------------------------------------------------------------


def read_records(path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """(images uint8 [N, 3, 32, 32], labels int64 [N]) of one CIFAR-10 binary file."""
    if path.exists():
        raw = path.read_bytes()
    elif path.with_name(path.name + ".xz").exists():
        with lzma.open(path.with_name(path.name + ".xz")) as f:
            raw = f.read()
    else:
        raise FileNotFoundError(path)
    if len(raw) == 0 or len(raw) % RECORD:
        raise ValueError(f"{path}: {len(raw)} bytes is not a whole number of {RECORD}-byte records")
    records = torch.frombuffer(bytearray(raw), dtype=torch.uint8).view(-1, RECORD)
    return records[:, 1:].reshape(-1, 3, 32, 32).clone(), records[:, 0].long()


def load_cifar10(data_dir: Path, train_limit: int, test_limit: int):
    """The first `train_limit` training and `test_limit` test images (0 = all); reads only the
    training files it needs."""
    if (data_dir / "cifar-10-batches-bin").is_dir():
        data_dir = data_dir / "cifar-10-batches-bin"
    needed = TRAIN_FILES[: math.ceil(train_limit / FILE_IMAGES)] if train_limit else TRAIN_FILES
    missing = [n for n in needed + [TEST_FILE] if not any((data_dir / f"{n}.bin{x}").exists() for x in ("", ".xz"))]
    if missing:
        raise SystemExit(
            f"CIFAR-10 binary files missing in {data_dir}: {', '.join(m + '.bin' for m in missing)} "
            "(the official cifar-10-batches-bin; set --data-dir or $SWEEP_DATA_DIR)"
        )
    parts = [read_records(data_dir / f"{n}.bin") for n in needed]
    train_x, train_y = torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])
    test_x, test_y = read_records(data_dir / f"{TEST_FILE}.bin")
    if train_limit:
        train_x, train_y = train_x[:train_limit], train_y[:train_limit]
    if test_limit:
        test_x, test_y = test_x[:test_limit], test_y[:test_limit]
    return train_x, train_y, test_x, test_y


# ---------------------------------------------------------------------------------------------
# Model (worker/bench/pytorch_peer.py's Cnn, one model) and loss (worker/src/loss.rs)
# ---------------------------------------------------------------------------------------------


def conv_bn_relu(c_in: int, c_out: int) -> list[nn.Module]:
    conv = nn.Conv2d(c_in, c_out, 3, padding=1, bias=True)
    nn.init.xavier_uniform_(conv.weight)  # Keras glorot_uniform
    nn.init.zeros_(conv.bias)
    return [conv, nn.BatchNorm2d(c_out, eps=1e-3, momentum=0.01), nn.ReLU(inplace=True)]


class Cnn(nn.Module):
    """Input [N, 3, 32, 32] in [0, 1], logits [N, 10]."""

    def __init__(self, width: float = 1.0) -> None:
        super().__init__()
        f1, f2, f3 = (max(1, round(f * width)) for f in (64, 128, 256))
        layers: list[nn.Module] = []
        for block, (c_in, c_out) in enumerate([(3, f1), (f1, f2), (f2, f3)]):
            for i in range(3):
                layers += conv_bn_relu(c_in if i == 0 else c_out, c_out)
            if block < 2:
                layers.append(nn.AvgPool2d(2))
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(f3, NUM_CLASSES)
        nn.init.xavier_uniform_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).mean(dim=(2, 3)).float())


def kcce(target: torch.Tensor, output: torch.Tensor) -> torch.Tensor:
    """Keras 2 categorical_crossentropy(target, output), batch mean: renormalise, clip, -sum t log o."""
    output = output / output.sum(dim=1, keepdim=True)
    output = output.clamp(KERAS_EPS, 1.0 - KERAS_EPS)
    return -(target * output.log()).sum(dim=1).mean()


def natural_indicator(labels: torch.Tensor) -> torch.Tensor:
    """[is_natural, is_artificial] ([N, 2]) of integer labels."""
    natural = ((labels >= FIRST_NATURAL) & (labels <= LAST_NATURAL)).float().unsqueeze(1)
    return torch.cat([natural, 1.0 - natural], dim=1)


def variant_loss(loss: str, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    p = F.softmax(logits.float(), dim=1)
    total = kcce(F.one_hot(labels, NUM_CLASSES).float(), p)
    if loss == "natural_softmax":
        natural = p[:, FIRST_NATURAL : LAST_NATURAL + 1].sum(dim=1, keepdim=True)
        total = total + kcce(natural_indicator(labels), torch.cat([natural, 1.0 - natural], dim=1))
    return total


# ---------------------------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------------------------


def seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)
    try:
        import numpy as np

        np.random.seed(seed % (1 << 32))
    except ImportError:
        pass


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--loss", choices=["normal", "natural_softmax"], default="normal")
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--epochs", type=int, default=100)
    ap.add_argument("--batch-size", type=int, default=512)
    ap.add_argument(
        "--data-dir",
        type=Path,
        default=Path(os.environ.get("SWEEP_DATA_DIR") or "./cifar10"),
        help="the CIFAR-10 binary files (data_batch_1..5.bin, test_batch.bin; plain or .xz) "
        "[default: $SWEEP_DATA_DIR, else ./cifar10]",
    )
    ap.add_argument("--train-limit", type=int, default=0, help="train on the first N images (0 = all 50,000)")
    ap.add_argument("--test-limit", type=int, default=0, help="validate on the first N test images (0 = all 10,000)")
    ap.add_argument("--width", type=float, default=1.0, help="channel width multiplier (1 = 64/128/256 filters)")
    ap.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    ap.add_argument("--bf16", action="store_true", help="bfloat16 autocast (the loss stays float32)")
    args = ap.parse_args(argv)
    for name in ("epochs", "batch_size"):
        if getattr(args, name) < 1:
            ap.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.train_limit < 0 or args.test_limit < 0 or args.seed < 0:
        ap.error("--train-limit, --test-limit and --seed must not be negative")
    if not (math.isfinite(args.lr) and args.lr > 0):
        ap.error("--lr must be a positive number")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.device == "auto":
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        device = torch.device(args.device)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise SystemExit("--device cuda, but torch sees no CUDA device")
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    fmt = torch.channels_last if device.type == "cuda" else torch.contiguous_format

    train_x, train_y, test_x, test_y = load_cifar10(args.data_dir, args.train_limit, args.test_limit)
    train_x, train_y = train_x.to(device), train_y.to(device)
    test_x, test_y = test_x.to(device), test_y.to(device)
    train_n, test_n = len(train_y), len(test_y)

    # One seed fixes the initial weights and the data order: runs of both losses with equal seeds
    # start from the same weights and see the same batches (paired, as the worker's jobs).
    seed_everything(args.seed)
    model = Cnn(args.width).to(device).to(memory_format=fmt)
    opt = torch.optim.Adam(model.parameters(), lr=args.lr, betas=(0.9, 0.999), eps=1e-7)
    order_rng = torch.Generator().manual_seed(args.seed)
    log(
        f"train.py: loss={args.loss} lr={args.lr} seed={args.seed} epochs={args.epochs} batch={args.batch_size} "
        f"train={train_n} test={test_n} width={args.width} device={device} bf16={args.bf16}"
    )

    def images(x: torch.Tensor) -> torch.Tensor:
        return x.float().div_(255.0).contiguous(memory_format=fmt)

    def forward(x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.bf16):
            return model(images(x))

    ctx = job_context() if job_context else None
    first = 1
    if ctx and (found := ctx.resume_from()):
        done, path = found
        state = torch.load(path, map_location=device)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        order_rng.set_state(state["order_rng"])
        first = done + 1
        log(f"train.py: continuing after epoch {done} from {path}")

    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for epoch in range(first, args.epochs + 1):
        started = time.perf_counter()
        model.train()
        perm = torch.randperm(train_n, generator=order_rng).to(device)
        loss_sum = torch.zeros((), device=device)
        correct = torch.zeros((), device=device, dtype=torch.long)
        for start in range(0, train_n, args.batch_size):
            idx = perm[start : start + args.batch_size]
            labels = train_y[idx]
            logits = forward(train_x[idx])
            loss = variant_loss(args.loss, logits, labels)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            loss_sum += loss.detach() * len(idx)
            correct += (logits.detach().argmax(dim=1) == labels).sum()
        sync()
        train_seconds = time.perf_counter() - started
        train_loss, train_acc = loss_sum.item() / train_n, correct.item() / train_n
        if not math.isfinite(train_loss):
            log(f"train.py: the training loss is {train_loss} in epoch {epoch}; stopping")
            return 1

        model.eval()
        val_sum, val_correct = 0.0, 0
        with torch.no_grad():
            for start in range(0, test_n, EVAL_BATCH):
                labels = test_y[start : start + EVAL_BATCH]
                logits = forward(test_x[start : start + EVAL_BATCH])
                val_sum += variant_loss(args.loss, logits, labels).item() * len(labels)
                val_correct += (logits.argmax(dim=1) == labels).sum().item()
        if ctx and ctx.checkpoint_dir:
            # Saved before the epoch is reported: a job resumes only from an epoch the coordinator has.
            with ctx.checkpoint(epoch) as path:
                state = {"model": model.state_dict(), "optimizer": opt.state_dict(), "order_rng": order_rng.get_state()}
                torch.save(state, path)
        report_epoch(
            epoch,
            train_loss=train_loss,
            train_acc=train_acc,
            val_loss=val_sum / test_n,
            val_acc=val_correct / test_n,
            images_per_sec=train_n / max(train_seconds, 1e-9),
        )
        log(f"epoch {epoch}/{args.epochs}: val_acc {val_correct / test_n:.4f} in {time.perf_counter() - started:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
