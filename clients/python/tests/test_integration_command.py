"""Command sweeps end to end on the wire: examples/cifar10_torch/sweep.json submitted from
Python, one of its jobs leased as a command worker would (kinds [JOB_KIND_COMMAND]), its epochs
reported as `report_epoch` lines parse, and the objective ranking them. Its own coordinator."""

import json
import socket

import grpc
import pytest
from conftest import REPO_ROOT
from sweep_client import Client, load_spec, report_epoch, sweep_pb2, sweep_pb2_grpc

SPEC = REPO_ROOT / "examples" / "cifar10_torch" / "sweep.json"
WORKER_ID = f"pytest-cmd-{socket.gethostname()}"


def lines_to_metrics(lines):
    """What a worker makes of `report_epoch` lines: EpochMetrics with the fixed fields set and
    every other name in `values` (the test's stand-in for the worker's parser)."""
    fixed = ("train_loss", "train_acc", "val_loss", "val_acc", "images_per_sec")
    out = []
    for line in lines:
        data = json.loads(line)
        m = sweep_pb2.EpochMetrics(epoch=data.pop("epoch"))
        for name, value in data.items():
            if name in fixed:
                setattr(m, name, value)
            else:
                m.values[name] = value
        out.append(m)
    return out


@pytest.fixture(scope="module")
def command_sweep(coordinator):
    with coordinator.client() as c:
        created, existing = c.submit(load_spec(SPEC))
        assert (created, existing) == (10, 0)
        yield c


def test_the_example_sweep_makes_ten_command_jobs(command_sweep: Client):
    c = command_sweep
    summary = c.sweep("torch-natural-softmax")
    assert summary.jobs_total == 10 and summary.epochs_total == 1000
    assert summary.spec.HasField("command")
    assert summary.spec.objective.metric == "val_acc"
    jobs = c.jobs("torch-natural-softmax")
    assert sorted({j.seed for j in jobs}) == [0, 1, 2, 3, 4]
    assert len({j.variant for j in jobs}) == 2  # one label per parameter point
    assert c.submit(load_spec(SPEC)) == (0, 10)


def test_a_command_worker_runs_a_job(command_sweep: Client, tmp_path):
    c = command_sweep
    worker = sweep_pb2_grpc.WorkerServiceStub(c.channel)
    worker.RegisterWorker(sweep_pb2.RegisterWorkerRequest(worker_id=WORKER_ID, hostname="pytest", slots=1), timeout=10)
    # A slot that runs only the built-in CNN gets nothing from a command sweep.
    builtin = worker.LeaseJob(
        sweep_pb2.LeaseJobRequest(worker_id=WORKER_ID, slot=0, kinds=[sweep_pb2.JOB_KIND_BUILTIN]), timeout=10
    )
    assert not builtin.HasField("job")
    lease = worker.LeaseJob(
        sweep_pb2.LeaseJobRequest(worker_id=WORKER_ID, slot=0, kinds=[sweep_pb2.JOB_KIND_COMMAND]), timeout=10
    )
    assert lease.HasField("job") and lease.job.HasField("command")
    job, command = lease.job, lease.job.command
    argv = list(command.argv)
    assert argv[:2] == ["python3", "examples/cifar10_torch/train.py"]
    flags = dict(zip(argv[2::2], argv[3::2]))  # noqa: B905 (Python 3.9)
    assert flags["--loss"] in ("normal", "natural_softmax") and flags["--lr"] == "0.001"
    assert flags["--seed"] == str(job.seed) and flags["--epochs"] == "100"
    assert dict(command.params) == {"loss": flags["--loss"], "lr": "0.001"}
    assert command.timeout_seconds == 3600

    # The script's stdout, as train.py prints it (val_acc falls, then rises: best is epoch 3).
    out = tmp_path / "stdout"
    with out.open("w") as f:
        for epoch, acc in [(1, 0.40), (2, 0.35), (3, 0.55)]:
            report_epoch(epoch, train_loss=1.0 / epoch, val_acc=acc, images_per_sec=500.0, **{"grad-norm": 2.0}, file=f)
    reports = [sweep_pb2.EpochReport(fence=job.fence, metrics=m) for m in lines_to_metrics(out.read_text().splitlines())]
    acks = list(worker.ReportEpochs(iter(reports), timeout=10))
    assert [a.epoch for a in acks] == [1, 2, 3]
    # 3 of the sweep's 100 epochs: the coordinator refuses to complete the job.
    with pytest.raises(grpc.RpcError) as refused:
        worker.CompleteJob(sweep_pb2.CompleteJobRequest(fence=job.fence), timeout=10)
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION

    detail = c.job(job.fence.job_id)
    assert detail.job.state == sweep_pb2.JOB_STATE_RUNNING
    assert (detail.job.best_epoch, detail.job.best_value) == (3, 0.55)
    assert not detail.epochs[0].HasField("val_loss")  # not reported: unset, not 0
    assert dict(detail.epochs[0].values) == {"grad-norm": 2.0}
    _, epochs = c.export("torch-natural-softmax")
    assert [(r["epoch"], r["val_acc"], r["grad-norm"]) for r in epochs] == [(1, 0.40, 2.0), (2, 0.35, 2.0), (3, 0.55, 2.0)]
    assert all("val_loss" not in r for r in epochs)
