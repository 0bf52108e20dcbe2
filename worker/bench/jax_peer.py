#!/usr/bin/env python3
"""JAX/flax peer of `worker bench`: the same training step (forward + backward + Adam) of the
experiment's CNN on random data, the whole step under one `jax.jit` (XLA fuses what it can).

Model (Keras defaults reproduced, as in pytorch_peer.py): 3 blocks of 3 x [Conv3x3 same ->
BatchNorm -> ReLU] with 64/128/256 filters (x width), AvgPool 2x2 after blocks 1 and 2, global
average pool, Dense 10; Glorot-uniform kernels, zero biases, BatchNorm epsilon 1e-3 and momentum
0.99 (flax uses Keras' convention). Loss: cross-entropy on the softmax with Keras' clipping; Adam
(0.9, 0.999, eps 1e-7), lr 1e-3 (optax). NHWC, the layout XLA prefers on GPUs.

Modes:
  fp32   float32 everywhere
  bf16   bf16 activations and convolutions, float32 parameters, statistics and loss

Prints e.g.: jax mode=bf16 batch=512 img_per_s=120400.0 step_ms=4.25 pipelined_img_per_s=161800.0
"""
import argparse
import statistics
import time

import jax
import jax.numpy as jnp
import flax.linen as nn
import optax

KERAS_EPS = 1e-7


class Cnn(nn.Module):
    width: float = 1.0
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool = True):
        filters = [max(1, round(f * self.width)) for f in (64, 128, 256)]
        x = x.astype(self.dtype)
        for block, f in enumerate(filters):
            for _ in range(3):
                x = nn.Conv(
                    f,
                    (3, 3),
                    padding="SAME",
                    dtype=self.dtype,
                    kernel_init=nn.initializers.glorot_uniform(),
                    bias_init=nn.initializers.zeros,
                )(x)
                x = nn.BatchNorm(use_running_average=not train, momentum=0.99, epsilon=1e-3, dtype=self.dtype)(x)
                x = nn.relu(x)
            if block < 2:
                x = nn.avg_pool(x, (2, 2), strides=(2, 2))
        x = jnp.mean(x.astype(jnp.float32), axis=(1, 2))
        return nn.Dense(10, kernel_init=nn.initializers.glorot_uniform(), bias_init=nn.initializers.zeros)(x)


def keras_cce(logits, onehot):
    p = jax.nn.softmax(logits.astype(jnp.float32), axis=1)
    p = p / jnp.sum(p, axis=1, keepdims=True)
    p = jnp.clip(p, KERAS_EPS, 1.0 - KERAS_EPS)
    return -jnp.mean(jnp.sum(onehot * jnp.log(p), axis=1))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mode", choices=["fp32", "bf16"], default="bf16")
    ap.add_argument("--batch-size", type=int, default=512)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--width", type=float, default=1.0)
    args = ap.parse_args()

    dtype = jnp.bfloat16 if args.mode == "bf16" else jnp.float32
    model = Cnn(width=args.width, dtype=dtype)
    n = args.batch_size
    key = jax.random.PRNGKey(0)
    x = jax.random.uniform(key, (n, 32, 32, 3), jnp.float32)
    labels = (jnp.arange(n) * 7) % 10
    y = jax.nn.one_hot(labels, 10)
    variables = model.init(key, x, train=False)
    params, batch_stats = variables["params"], variables["batch_stats"]
    tx = optax.adam(1e-3, b1=0.9, b2=0.999, eps=1e-7)
    opt_state = tx.init(params)

    def loss_fn(params, batch_stats):
        logits, updates = model.apply({"params": params, "batch_stats": batch_stats}, x, mutable=["batch_stats"])
        return keras_cce(logits, y), updates["batch_stats"]

    @jax.jit
    def step(params, batch_stats, opt_state):
        (loss, batch_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, batch_stats)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), batch_stats, opt_state, loss

    state = (params, batch_stats, opt_state)
    first_loss = None
    for _ in range(args.warmup):
        *state, loss = step(*state)
        if first_loss is None:
            first_loss = float(loss)
    jax.block_until_ready(state)
    times = []
    for _ in range(args.steps):
        t0 = time.perf_counter()
        *state, loss = step(*state)
        jax.block_until_ready(loss)
        times.append(time.perf_counter() - t0)
    med = statistics.median(times)
    t0 = time.perf_counter()
    for _ in range(args.steps):
        *state, loss = step(*state)
    jax.block_until_ready(state)
    pipelined = n * args.steps / (time.perf_counter() - t0)
    print(
        f"jax mode={args.mode} batch={n} img_per_s={n / med:.1f} step_ms={med * 1e3:.2f} "
        f"pipelined_img_per_s={pipelined:.1f} loss_first={first_loss:.4f} loss_last={float(loss):.4f} "
        f"device={jax.devices()[0].device_kind.replace(' ', '_')}"
    )


if __name__ == "__main__":
    main()
