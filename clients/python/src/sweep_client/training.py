"""Inside a training script that a worker runs as a command job: `report_epoch` and `job_context`.

A worker runs a command sweep's job as a child process and reads its stdout line by line. A line
that is a JSON object with an integer "epoch" >= 1 is one epoch's metrics, stored in the
coordinator like the built-in CNN's epochs; every other line is only logged. `report_epoch`
writes such a line (and checks it first); `job_context` reads the job's identity and parameters
from the environment the worker gives the child.

    from sweep_client import report_epoch, job_context

    ctx = job_context()                     # None when run by hand
    lr = float(ctx.params["lr"]) if ctx else 1e-3
    for epoch in range(1, epochs + 1):
        ...
        report_epoch(epoch, train_loss=tl, val_acc=va, top5=t5)

This module needs no network and no gRPC.
"""

from __future__ import annotations

import json
import math
import os
import re
import sys
from dataclasses import dataclass, field
from typing import IO, Mapping, Optional

__all__ = ["JobContext", "MAX_METRICS", "METRIC_NAME", "job_context", "report_epoch"]

#: What a metric (or parameter) name must look like: 1 to 64 characters.
METRIC_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,63}")
#: Most metrics one epoch line may carry.
MAX_METRICS = 64


def report_epoch(epoch: int, *, file: Optional[IO[str]] = None, **metrics: float) -> str:
    """Writes one epoch's metrics as a JSON line, `{"epoch": 3, "val_acc": 0.81, ...}`, to
    stdout (or `file`) and flushes it, so the worker running this script stores the epoch.

    `epoch` is 1-based. Metrics are finite numbers under names matching `METRIC_NAME`; the
    worker knows train_loss, train_acc, val_loss, val_acc and images_per_sec (accuracies as
    fractions in [0, 1]), and keeps any other name as a named value. Names that are not Python
    identifiers go through a dict: `report_epoch(3, **{"top-5": 0.93})`.
    Raises ValueError (nothing written) when a value or name is not acceptable.
    Returns the line written (without its newline).
    """
    if not isinstance(epoch, int) or isinstance(epoch, bool) or epoch < 1:
        raise ValueError(f"epoch: expected an integer >= 1, got {epoch!r}")
    if len(metrics) > MAX_METRICS:
        raise ValueError(f"metrics: at most {MAX_METRICS} per epoch, got {len(metrics)}")
    line: dict[str, float] = {"epoch": epoch}
    for name, value in metrics.items():
        if not METRIC_NAME.fullmatch(name):
            raise ValueError(f"{name!r}: a metric name is [A-Za-z_][A-Za-z0-9_.-]*, at most 64 characters")
        # Numbers, and numpy / torch scalars (anything with __float__ that is not text or a bool).
        if isinstance(value, (bool, str, bytes)) or not hasattr(value, "__float__"):
            raise ValueError(f"{name}: expected a number, got {value!r}")
        try:
            number = float(value)
        except (TypeError, ValueError, OverflowError):
            raise ValueError(f"{name}: expected a number, got {value!r}") from None
        if not math.isfinite(number):
            raise ValueError(f"{name}: {value!r} is not finite")
        line[name] = number
    text = json.dumps(line, allow_nan=False)
    out = sys.stdout if file is None else file
    out.write(text + "\n")
    out.flush()
    return text


@dataclass(frozen=True)
class JobContext:
    """The job a worker is running this process for (from its environment)."""

    job_id: int
    seed: int
    attempt: int
    epochs: int
    sweep: str
    #: The job's parameter point, names lower-cased (from SWEEP_PARAM_<NAME>).
    params: Mapping[str, str] = field(default_factory=dict)

    def param(self, name: str, default: Optional[str] = None) -> Optional[str]:
        """Parameter `name` (any case; '.' and '-' match '_'), or `default`."""
        key = name.lower()
        if key in self.params:
            return self.params[key]
        alt = re.sub(r"[.-]", "_", key)
        return self.params.get(alt, default)


def _env_int(env: Mapping[str, str], name: str) -> int:
    text = env.get(name, "")
    try:
        return int(text.strip())
    except ValueError:
        raise ValueError(f"{name}: expected an integer, got {text!r}") from None


def job_context(env: Optional[Mapping[str, str]] = None) -> Optional[JobContext]:
    """The job identity a worker passes to a command job (SWEEP_JOB_ID, SWEEP_SEED,
    SWEEP_ATTEMPT, SWEEP_EPOCHS, SWEEP_SWEEP) and its parameters (SWEEP_PARAM_<NAME>), or None
    when SWEEP_JOB_ID is not set (the script was not started by a worker).

    `env` defaults to `os.environ`. Raises ValueError when a number among them is not one.
    """
    env = os.environ if env is None else env
    if not env.get("SWEEP_JOB_ID"):
        return None
    prefix = "SWEEP_PARAM_"
    params = {key[len(prefix) :].lower(): value for key, value in env.items() if key.startswith(prefix) and len(key) > len(prefix)}
    return JobContext(
        job_id=_env_int(env, "SWEEP_JOB_ID"),
        seed=_env_int(env, "SWEEP_SEED"),
        attempt=_env_int(env, "SWEEP_ATTEMPT"),
        epochs=_env_int(env, "SWEEP_EPOCHS"),
        sweep=env.get("SWEEP_SWEEP", ""),
        params=dict(sorted(params.items())),
    )
