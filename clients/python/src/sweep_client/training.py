"""Inside a training script that a worker runs as a command job: `report_epoch`, `job_context`,
and checkpoints to resume from.

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

To continue where an earlier attempt stopped (a preempted or stopped worker, a crash), save after
every epoch and resume from `ctx.resume_from()`:

    start = 0
    if ctx and (found := ctx.resume_from()):
        start, path = found
        state = torch.load(path)            # ... restore model, optimiser, data order
    for epoch in range(start + 1, epochs + 1):
        ...
        if ctx and ctx.checkpoint_dir:
            with ctx.checkpoint(epoch) as path:
                torch.save(state, path)
        report_epoch(epoch, ...)

This module needs no network and no gRPC.
"""

from __future__ import annotations

import json
import math
import os
import re
import sys
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Iterator, Mapping, Optional

__all__ = ["JobContext", "MAX_METRICS", "METRIC_NAME", "job_context", "report_epoch"]

#: A checkpoint's file name: the epoch it was taken after, zero-padded.
CHECKPOINT_NAME = re.compile(r"epoch-(\d{5,10})\.ckpt")

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
    #: Epochs 1..=epochs_stored are in the coordinator already (from earlier attempts).
    epochs_stored: int = 0
    #: The job's own directory for checkpoints, kept across its attempts (shared between workers
    #: when theirs is); None when the worker keeps no checkpoints.
    checkpoint_dir: Optional[Path] = None

    def resume_from(self) -> Optional[tuple[int, Path]]:
        """The newest checkpoint written with `checkpoint` of an epoch up to `epochs_stored`, as
        (epoch, path), or None (start at epoch 1). A newer one is passed over: its epoch's
        metrics never reached the coordinator, and the worker fails a job that skips epochs."""
        if self.checkpoint_dir is None or not self.checkpoint_dir.is_dir():
            return None
        found = _checkpoints(self.checkpoint_dir)
        usable = [(epoch, path) for epoch, path in found if epoch <= self.epochs_stored]
        return usable[-1] if usable else None

    @contextmanager
    def checkpoint(self, epoch: int, keep: int = 2) -> Iterator[Path]:
        """Yields a temporary path to write the checkpoint taken after `epoch` to; when the block
        ends without an exception it becomes `epoch-NNNNN.ckpt` (atomically: a reader never sees
        half a file) and all but the newest `keep` checkpoints are removed.
        Raises RuntimeError when the worker gave no checkpoint directory."""
        if self.checkpoint_dir is None:
            raise RuntimeError(
                "no SWEEP_JOB_CHECKPOINT_DIR: the worker keeps no checkpoints "
                "(start it with --checkpoint-dir or --checkpoint-to-coordinator)"
            )
        if not isinstance(epoch, int) or isinstance(epoch, bool) or epoch < 1:
            raise ValueError(f"epoch: expected an integer >= 1, got {epoch!r}")
        self.checkpoint_dir.mkdir(parents=True, exist_ok=True)
        final = self.checkpoint_dir / f"epoch-{epoch:05d}.ckpt"
        tmp = self.checkpoint_dir / f".{final.name}.{os.getpid()}.tmp"
        try:
            yield tmp
            os.replace(tmp, final)
        finally:
            tmp.unlink(missing_ok=True)
        for _, old in _checkpoints(self.checkpoint_dir)[: -max(keep, 1)]:
            old.unlink(missing_ok=True)

    def param(self, name: str, default: Optional[str] = None) -> Optional[str]:
        """Parameter `name` (any case; '.' and '-' match '_'), or `default`."""
        key = name.lower()
        if key in self.params:
            return self.params[key]
        alt = re.sub(r"[.-]", "_", key)
        return self.params.get(alt, default)


def _checkpoints(directory: Path) -> list[tuple[int, Path]]:
    """The checkpoints in `directory`, oldest first."""
    found = []
    for path in directory.iterdir():
        match = CHECKPOINT_NAME.fullmatch(path.name)
        if match:
            found.append((int(match.group(1)), path))
    return sorted(found)


def _env_int(env: Mapping[str, str], name: str) -> int:
    text = env.get(name, "")
    try:
        return int(text.strip())
    except ValueError:
        raise ValueError(f"{name}: expected an integer, got {text!r}") from None


def job_context(env: Optional[Mapping[str, str]] = None) -> Optional[JobContext]:
    """The job identity a worker passes to a command job (SWEEP_JOB_ID, SWEEP_SEED,
    SWEEP_ATTEMPT, SWEEP_EPOCHS, SWEEP_SWEEP), its parameters (SWEEP_PARAM_<NAME>) and resume
    state (SWEEP_EPOCHS_STORED, SWEEP_JOB_CHECKPOINT_DIR), or None when SWEEP_JOB_ID is not set (the
    script was not started by a worker).

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
        epochs_stored=_env_int(env, "SWEEP_EPOCHS_STORED") if env.get("SWEEP_EPOCHS_STORED") else 0,
        checkpoint_dir=Path(env["SWEEP_JOB_CHECKPOINT_DIR"]) if env.get("SWEEP_JOB_CHECKPOINT_DIR") else None,
    )
