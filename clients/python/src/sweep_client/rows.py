"""Plain-data views of the coordinator's messages: job and epoch rows (dicts), the CSV files
`Client.export_csv` writes, and the one-line sweep summary `Client.status_text` returns.

Everything here is pure (no network), so it can be used on messages obtained any other way.
"""

from __future__ import annotations

import csv
import math
import os
from typing import Any, Iterable, Sequence

from ._gen import sweep_pb2

__all__ = [
    "EPOCH_IDENTITY_COLUMNS",
    "FIXED_METRICS",
    "JOB_COLUMNS",
    "epoch_columns",
    "epoch_row",
    "job_row",
    "metrics_dict",
    "state_name",
    "summary_line",
    "write_csv",
]

#: The optional metrics every EpochMetrics may carry as its own fields (the built-in CNN's five).
FIXED_METRICS = ("train_loss", "train_acc", "val_loss", "val_acc", "images_per_sec")
#: Columns of a job row, in order.
JOB_COLUMNS = (
    "job_id",
    "sweep",
    "variant",
    "seed",
    "state",
    "attempt",
    "max_attempts",
    "epochs",
    "epochs_done",
    "learning_rate",
    "best_value",
    "best_epoch",
    "worker_id",
    "last_error",
    "created_at_ms",
    "started_at_ms",
    "finished_at_ms",
)
#: Columns every epoch row starts with; its metrics follow.
EPOCH_IDENTITY_COLUMNS = ("job_id", "sweep", "variant", "seed", "attempt", "epoch", "wall_seconds")


def state_name(state: int) -> str:
    """`JOB_STATE_QUEUED` -> "queued" (as the CLI prints states); "?" for an unknown value."""
    try:
        return sweep_pb2.JobState.Name(state).removeprefix("JOB_STATE_").lower()
    except ValueError:
        return "?"


def metrics_dict(m: sweep_pb2.EpochMetrics) -> dict[str, float]:
    """Every metric of an epoch by name: the fixed fields that are set, then `values`."""
    out = {name: getattr(m, name) for name in FIXED_METRICS if m.HasField(name)}
    for name in sorted(m.values):
        out.setdefault(name, m.values[name])
    return out


def job_row(job: sweep_pb2.Job) -> dict[str, Any]:
    """A job as a dict with `JOB_COLUMNS` keys (state as text)."""
    row = {column: getattr(job, column) for column in JOB_COLUMNS if column not in ("job_id", "state")}
    row["job_id"] = job.id
    row["state"] = state_name(job.state)
    return {column: row[column] for column in JOB_COLUMNS}


def epoch_row(job: sweep_pb2.Job, m: sweep_pb2.EpochMetrics) -> dict[str, Any]:
    """One stored epoch of `job`: `EPOCH_IDENTITY_COLUMNS`, then every metric. A named value
    that clashes with an identity column is left out (the identity wins)."""
    row: dict[str, Any] = {
        "job_id": job.id,
        "sweep": job.sweep,
        "variant": job.variant,
        "seed": job.seed,
        "attempt": m.attempt,
        "epoch": m.epoch,
        "wall_seconds": m.wall_seconds,
    }
    for name, value in metrics_dict(m).items():
        row.setdefault(name, value)
    return row


def epoch_columns(rows: Iterable[dict[str, Any]]) -> list[str]:
    """The union of the rows' keys: identity columns, the fixed metrics present, then the other
    metric names sorted."""
    seen: set[str] = set()
    for row in rows:
        seen.update(row)
    fixed = [c for c in EPOCH_IDENTITY_COLUMNS] + [m for m in FIXED_METRICS if m in seen]
    rest = sorted(seen - set(fixed))
    return fixed + rest


_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def _cell(value: Any) -> Any:
    """A CSV cell: text that a spreadsheet would run as a formula gets a leading quote, control
    characters are dropped (as the CLI's export does); numbers are left alone."""
    if isinstance(value, str):
        value = "".join(c for c in value if c == "\n" or (ord(c) >= 0x20 and ord(c) != 0x7F))
        if value.startswith(_FORMULA_STARTS):
            value = "'" + value
        return value
    if isinstance(value, float) and not math.isfinite(value):
        return ""
    return value


def write_csv(path: "str | os.PathLike[str]", columns: Sequence[str], rows: Iterable[dict[str, Any]]) -> None:
    """Writes `rows` under `columns` (a missing key is an empty cell)."""
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(columns)
        for row in rows:
            writer.writerow([_cell(row.get(c, "")) for c in columns])


def _hms(seconds: float) -> str:
    s = int(math.floor(max(seconds, 0.0) + 0.5))
    return f"{s // 3600}h{s // 60 % 60:02d}m{s % 60:02d}s"


def summary_line(s: sweep_pb2.SweepSummary) -> str:
    """One line of progress, as `coordinator status` prints a sweep."""
    name = s.spec.name if s.HasField("spec") else "?"
    eta = "unknown" if s.eta_seconds < 0 else _hms(s.eta_seconds)
    return (
        f"{name:<24} jobs {s.jobs_total:>4}  queued {s.queued:>4}  running {s.running:>3}  "
        f"succeeded {s.succeeded:>4}  failed {s.failed:>3}  cancelled {s.cancelled:>3}  "
        f"epochs {s.epochs_done}/{s.epochs_total} ({s.progress_percent:.1f}%)  eta {eta}"
    )
