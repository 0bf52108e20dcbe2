"""Epochs end to end without a GPU: the test acts as a worker through WorkerService (register,
lease, stream epochs under the lease's fence, complete), and the user's side (`Client`) sees
them in `job`, `export` and `watch`. Its own coordinator (module fixture): nothing else is
queued there, so the lease gets this module's job."""

import csv
import queue
import socket
import threading

import grpc
import pytest
from sweep_client import Client, SweepError, sweep_pb2, sweep_pb2_grpc

SWEEP = "py-worker"
WORKER_ID = f"pytest-{socket.gethostname()}"


def epoch_metrics(epoch: int, val_acc: float, top5: float) -> sweep_pb2.EpochMetrics:
    return sweep_pb2.EpochMetrics(
        epoch=epoch,
        train_loss=2.0 / epoch,
        train_acc=0.3 * epoch,
        val_loss=2.2 / epoch,
        val_acc=val_acc,
        wall_seconds=1.5,
        images_per_sec=1234.0,
        values={"top5": top5},
    )


@pytest.fixture(scope="module")
def finished_job(coordinator):
    """Runs the one job of SWEEP as a worker would, with a watch open all along; returns
    (job id, the events the watch saw)."""
    with coordinator.client() as c:
        assert c.submit(
            {"name": SWEEP, "variants": ["natural_softmax"], "seeds": [0], "epochs": 2, "batch_size": 8,
             "data": {"train_limit": 64, "test_limit": 32}}
        ) == (1, 0)

        events: "queue.Queue[object]" = queue.Queue()

        def follow() -> None:
            try:
                with coordinator.client() as watcher:
                    for event in watcher.watch(SWEEP, timeout=20):
                        events.put(event)
                        if event.kind == "epoch_recorded" and event.value.metrics.epoch == 2:
                            return
            except SweepError as e:
                events.put(e)

        thread = threading.Thread(target=follow, daemon=True)
        thread.start()
        first = events.get(timeout=10)
        assert getattr(first, "kind", first) == "snapshot"

        worker = sweep_pb2_grpc.WorkerServiceStub(c.channel)
        registered = worker.RegisterWorker(
            sweep_pb2.RegisterWorkerRequest(worker_id=WORKER_ID, hostname=socket.gethostname(), slots=1), timeout=10
        )
        assert registered.lease_ttl_ms > 0
        lease = worker.LeaseJob(
            sweep_pb2.LeaseJobRequest(worker_id=WORKER_ID, slot=0, kinds=[sweep_pb2.JOB_KIND_BUILTIN]), timeout=10
        )
        assert lease.HasField("job"), "nothing leased"
        job = lease.job
        assert (job.sweep, job.variant, job.seed, job.epochs, job.batch_size) == (SWEEP, "natural_softmax", 0, 2, 8)
        fence = job.fence

        reports = [
            sweep_pb2.EpochReport(fence=fence, metrics=epoch_metrics(1, 0.5, 0.9)),
            sweep_pb2.EpochReport(fence=fence, metrics=epoch_metrics(2, 0.625, 0.95)),
            sweep_pb2.EpochReport(fence=fence, metrics=epoch_metrics(2, 0.625, 0.95)),  # a re-send
        ]
        acks = list(worker.ReportEpochs(iter(reports), timeout=10))
        assert [(a.job_id, a.epoch, a.duplicate) for a in acks] == [
            (fence.job_id, 1, False), (fence.job_id, 2, False), (fence.job_id, 2, True),
        ]

        # A write under a stale lease token stores nothing.
        stale = sweep_pb2.Fence(job_id=fence.job_id, attempt=fence.attempt, lease_token="not-the-token")
        with pytest.raises(grpc.RpcError) as e:
            worker.CompleteJob(sweep_pb2.CompleteJobRequest(fence=stale), timeout=10)
        assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION

        done = worker.CompleteJob(sweep_pb2.CompleteJobRequest(fence=fence), timeout=10)
        assert done.job.state == sweep_pb2.JOB_STATE_SUCCEEDED

        thread.join(timeout=20)
        seen = []
        while not events.empty():
            seen.append(events.get())
        return fence.job_id, [first] + seen


def test_job_shows_the_reported_epochs(client: Client, finished_job):
    job_id, _ = finished_job
    detail = client.job(job_id)
    assert detail.job.state == sweep_pb2.JOB_STATE_SUCCEEDED
    assert detail.job.epochs_done == 2
    assert (detail.job.best_epoch, detail.job.best_value) == (2, 0.625)
    assert [e.epoch for e in detail.epochs] == [1, 2]
    first = detail.epochs[0]
    assert (first.val_acc, first.train_loss, first.images_per_sec, first.wall_seconds) == (0.5, 2.0, 1234.0, 1.5)
    assert first.attempt == detail.job.attempt
    summary = client.sweep(SWEEP)
    assert (summary.succeeded, summary.epochs_done, summary.epochs_total) == (1, 2, 2)
    assert "succeeded    1" in client.status_text(SWEEP)
    workers = {w.id: w for w in client.workers()}
    assert WORKER_ID in workers


def test_export_has_every_epoch_with_its_metrics(client: Client, finished_job, tmp_path):
    job_id, _ = finished_job
    jobs, epochs = client.export(SWEEP)
    assert [(r["job_id"], r["state"], r["epochs_done"]) for r in jobs] == [(job_id, "succeeded", 2)]
    assert [(r["job_id"], r["epoch"]) for r in epochs] == [(job_id, 1), (job_id, 2)]
    row = epochs[0]
    assert (row["variant"], row["seed"], row["val_acc"], row["train_acc"], row["val_loss"]) == ("natural_softmax", 0, 0.5, 0.3, 2.2)
    _, epochs_csv = client.export_csv(SWEEP, tmp_path)
    with epochs_csv.open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2 and float(rows[1]["val_acc"]) == 0.625
    for column in ("train_loss", "train_acc", "val_loss", "val_acc", "images_per_sec"):
        assert column in rows[0]


def test_details_is_one_call_with_what_job_returns(client: Client, finished_job):
    details = client.details(SWEEP)
    assert details == [client.job(j.id) for j in client.jobs(SWEEP)]
    assert [len(d.epochs) for d in details] == [2]
    with pytest.raises(SweepError) as missing:
        client.details("no-such-sweep")
    assert missing.value.code == grpc.StatusCode.NOT_FOUND


def test_named_values_round_trip(client: Client, finished_job, tmp_path):
    """EpochMetrics.values (named metrics beyond the fixed five) are stored and exported."""
    job_id, _ = finished_job
    detail = client.job(job_id)
    assert [dict(e.values) for e in detail.epochs] == [{"top5": 0.9}, {"top5": 0.95}]
    _, epochs = client.export(SWEEP)
    assert [r.get("top5") for r in epochs] == [0.9, 0.95]
    _, epochs_csv = client.export_csv(SWEEP, tmp_path)
    with epochs_csv.open() as f:
        header = next(csv.reader(f))
    assert header[-1] == "top5"


def test_watch_saw_the_epochs_and_the_job_change(finished_job):
    job_id, events = finished_job
    errors = [e for e in events if isinstance(e, SweepError)]
    assert not errors, errors
    kinds = [e.kind for e in events]
    assert kinds[0] == "snapshot"
    recorded = [e.value for e in events if e.kind == "epoch_recorded"]
    assert [(r.job_id, r.metrics.epoch) for r in recorded] == [(job_id, 1), (job_id, 2)]
    assert recorded[0].variant == "natural_softmax" and recorded[0].metrics.val_acc == 0.5
    changed = [e.value for e in events if e.kind == "job_changed"]
    assert any(j.id == job_id and j.state == sweep_pb2.JOB_STATE_RUNNING for j in changed)
