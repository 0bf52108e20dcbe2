"""Rows, CSV and the summary line from messages built by hand: no coordinator needed."""

import csv

import grpc
import pytest
from sweep_client import Client, SweepError, summary_line, sweep_pb2
from sweep_client.rows import epoch_columns, epoch_row, job_row, metrics_dict, state_name, write_csv


def job(**kw):
    base = dict(id=7, sweep="s", variant="natural_softmax", seed=3, state=sweep_pb2.JOB_STATE_RUNNING, epochs=2, attempt=1)
    base.update(kw)
    return sweep_pb2.Job(**base)


def test_metrics_dict_keeps_set_fields_and_values():
    m = sweep_pb2.EpochMetrics(epoch=1, val_acc=0.0, train_loss=2.5, values={"top5": 0.9, "lr": 1e-3})
    # val_acc 0.0 is set (an optional field), train_acc is not.
    assert metrics_dict(m) == {"train_loss": 2.5, "val_acc": 0.0, "lr": 1e-3, "top5": 0.9}


def test_epoch_rows_and_columns():
    a = epoch_row(job(), sweep_pb2.EpochMetrics(epoch=1, attempt=1, wall_seconds=3.0, val_acc=0.5, values={"top5": 0.9}))
    b = epoch_row(job(id=8), sweep_pb2.EpochMetrics(epoch=1, attempt=1, train_loss=1.0, values={"lr": 0.1, "seed": 99}))
    assert a == {
        "job_id": 7, "sweep": "s", "variant": "natural_softmax", "seed": 3, "attempt": 1,
        "epoch": 1, "wall_seconds": 3.0, "val_acc": 0.5, "top5": 0.9,
    }
    assert b["seed"] == 3  # a named value never hides an identity column
    assert epoch_columns([a, b]) == [
        "job_id", "sweep", "variant", "seed", "attempt", "epoch", "wall_seconds",
        "train_loss", "val_acc", "lr", "top5",
    ]


def test_job_row():
    row = job_row(job(best_value=0.8, best_epoch=2, worker_id="w"))
    assert row["job_id"] == 7 and row["state"] == "running" and row["best_value"] == 0.8
    assert state_name(sweep_pb2.JOB_STATE_CANCELLED) == "cancelled"
    assert state_name(99) == "?"


def test_csv_cells_cannot_run_formulas(tmp_path):
    path = tmp_path / "t.csv"
    write_csv(path, ["a", "b", "c"], [{"a": "=cmd|' /C calc'!A0", "b": -0.5, "c": "ok\x1b[2J"}, {"a": "x"}])
    rows = list(csv.reader(path.open()))
    assert rows == [["a", "b", "c"], ["'=cmd|' /C calc'!A0", "-0.5", "ok[2J"], ["x", "", ""]]


def test_summary_line_like_the_cli():
    s = sweep_pb2.SweepSummary(
        spec=sweep_pb2.SweepSpec(name="py"), jobs_total=4, queued=2, running=1, succeeded=1,
        epochs_done=3, epochs_total=8, progress_percent=37.5, eta_seconds=3723.4,
    )
    assert summary_line(s) == (
        "py                       jobs    4  queued    2  running   1  succeeded    1  failed   0  "
        "cancelled   0  epochs 3/8 (37.5%)  eta 1h02m03s"
    )
    s.eta_seconds = -1
    assert summary_line(s).endswith("eta unknown")


def test_client_checks_arguments_before_calling():
    # Nothing listens on port 9: argument errors must come before any call.
    with Client("http://127.0.0.1:9", token="", timeout=0.5) as c:
        with pytest.raises(ValueError, match="^epochs"):
            c.submit({"name": "x", "seeds": [0], "epochs": "2"})
        with pytest.raises(ValueError, match="^state"):
            c.jobs("x", state="done")
        with pytest.raises(ValueError, match="^retry"):
            c.retry()
        with pytest.raises(ValueError, match="^retry"):
            c.retry("x", job_id=3)
        with pytest.raises(TypeError):
            c.submit("spec.json")  # type: ignore[arg-type]
        with pytest.raises(SweepError) as e:
            c.sweeps()
        assert e.value.code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
        assert e.value.method == "ListSweeps"


def test_addresses(monkeypatch):
    monkeypatch.setenv("SWEEP_COORDINATOR", "http://127.0.0.1:9")
    with Client(token="") as c:
        assert c.address == "http://127.0.0.1:9"
    with pytest.raises(ValueError, match="^address"):
        Client("grpc://127.0.0.1:9")


def test_https_with_a_missing_ca_file_fails_early(tmp_path):
    with pytest.raises(FileNotFoundError):
        Client("https://127.0.0.1:9", ca_cert=tmp_path / "missing.pem")
