"""The user's side (SweepService) against a real `coordinator serve` (see conftest.py): submit,
list, watch, cancel, retry and export. No worker runs here, so every job stays queued."""

import csv

import grpc
import pytest
from sweep_client import Client, SweepError, sweep_pb2


def builtin(name: str) -> dict:
    return {
        "name": name,
        "variants": ["normal_lr1e-3", "natural_softmax"],
        "seeds": "0..2",
        "epochs": 2,
        "batch_size": 8,
        "data": {"train_limit": 64, "test_limit": 32},
    }


def test_submit_is_idempotent(client: Client):
    assert client.submit(builtin("py")) == (4, 0)
    created, existing = client.submit(builtin("py"))
    assert (created, existing) == (0, 4)
    # A message works as well as a dict.
    spec = sweep_pb2.SweepSpec(
        name="py", variants=["normal_lr1e-3"], seeds=[0, 1, 2], epochs=2, batch_size=8,
        data=sweep_pb2.DataOptions(train_limit=64, test_limit=32),
    )
    assert client.submit(spec).jobs_created == 1


def test_sweeps_and_jobs_are_listed(client: Client):
    client.submit(builtin("py-list"))
    names = [s.spec.name for s in client.sweeps()]
    assert "py-list" in names
    summary = client.sweep("py-list")
    assert (summary.jobs_total, summary.queued, summary.running, summary.succeeded) == (4, 4, 0, 0)
    assert summary.epochs_total == 8 and summary.epochs_done == 0
    assert sorted(summary.spec.variants) == ["natural_softmax", "normal_lr1e-3"]
    jobs = client.jobs("py-list")
    assert len(jobs) == 4
    assert {(j.variant, j.seed) for j in jobs} == {(v, s) for v in ("normal_lr1e-3", "natural_softmax") for s in (0, 1)}
    assert all(j.state == sweep_pb2.JOB_STATE_QUEUED for j in jobs)
    assert len(client.jobs("py-list", state="queued")) == 4
    assert client.jobs("py-list", state=sweep_pb2.JOB_STATE_RUNNING) == []
    assert len(client.jobs("py-list", variant="natural_softmax")) == 2
    detail = client.job(jobs[0].id)
    assert detail.job.id == jobs[0].id and list(detail.epochs) == []
    line = client.status_text("py-list")
    assert line.startswith("py-list ") and "jobs    4" in line and "queued    4" in line and "epochs 0/8" in line
    assert isinstance(client.workers(), list)


def test_errors_carry_the_status_code(client: Client):
    with pytest.raises(SweepError) as e:
        client.submit(dict(builtin("py-bad"), epochs=0))
    assert e.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "epochs" in e.value.message
    with pytest.raises(SweepError) as e:
        client.submit(dict(builtin("py-bad"), variants=["no_such_variant"]))
    assert e.value.code == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(SweepError) as e:
        client.sweep("py-never-submitted")
    assert e.value.code == grpc.StatusCode.NOT_FOUND
    with pytest.raises(SweepError) as e:
        client.job(987654321)
    assert e.value.code == grpc.StatusCode.NOT_FOUND
    assert all(s.spec.name != "py-bad" for s in client.sweeps())


def test_watch_yields_a_snapshot_first(client: Client):
    client.submit(builtin("py-watch"))
    events = client.watch("py-watch", timeout=10)
    first = next(events)
    assert first.kind == "snapshot"
    assert first.value.spec.name == "py-watch" and first.value.jobs_total == 4
    events.close()  # cancels the stream
    with pytest.raises(SweepError) as e:
        next(iter(client.watch("py-never-submitted", timeout=10)))
    assert e.value.code == grpc.StatusCode.NOT_FOUND


def test_cancel_and_retry(client: Client):
    client.submit(builtin("py-cancel"))
    one = client.jobs("py-cancel")[0]
    assert client.cancel_job(one.id) == 1
    assert client.job(one.id).job.state == sweep_pb2.JOB_STATE_CANCELLED
    assert client.cancel_sweep("py-cancel") == 3
    assert len(client.jobs("py-cancel", state="cancelled")) == 4
    assert client.sweep("py-cancel").cancelled == 4
    assert client.retry("py-cancel", failed=True) == 0
    assert client.retry("py-cancel", cancelled=True) == 4
    assert len(client.jobs("py-cancel", state="queued")) == 4
    assert client.cancel_job(one.id) == 1
    assert client.retry(job_id=one.id) == 1
    assert client.job(one.id).job.state == sweep_pb2.JOB_STATE_QUEUED


def test_export_without_epochs(client: Client, tmp_path):
    client.submit(builtin("py-export"))
    jobs, epochs = client.export("py-export")
    assert len(jobs) == 4 and epochs == []
    assert {row["state"] for row in jobs} == {"queued"}
    assert {row["sweep"] for row in jobs} == {"py-export"}
    jobs_csv, epochs_csv = client.export_csv("py-export", tmp_path / "out")
    with jobs_csv.open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 4 and rows[0]["sweep"] == "py-export"
    with epochs_csv.open() as f:
        assert next(csv.reader(f))[:6] == ["job_id", "sweep", "variant", "seed", "attempt", "epoch"]
