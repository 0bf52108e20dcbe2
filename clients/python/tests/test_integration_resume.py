"""A training script that uses this package end to end: real worker processes run it as a
command job, it checkpoints with `JobContext.checkpoint` after every epoch, the first worker is
stopped with SIGTERM mid-job (the script gets SIGTERM too and the job is handed back), and a
second worker, on no shared disk, continues it from the checkpoint the coordinator kept
(`JobContext.resume_from`): every epoch stored once, the later ones from the resumed run.
Its own coordinator, started with a checkpoint store."""

import os
import signal
import subprocess
import sys
import time

import pytest
from conftest import Coordinator, coordinator_binary, worker_binary
from sweep_client import spec_from_dict, sweep_pb2

EPOCHS = 6

SCRIPT = """
import time
from sweep_client import job_context, report_epoch

ctx = job_context()
start = 0
found = ctx.resume_from()
if found:
    start, path = found
    assert int(path.read_text()) == start, "the checkpoint's bytes came back"
for epoch in range(start + 1, ctx.epochs + 1):
    time.sleep(0.4)
    with ctx.checkpoint(epoch) as path:
        path.write_text(str(epoch))
    report_epoch(epoch, loss=1.0 / epoch, resumed_from=start, attempt=ctx.attempt)
"""


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("resume")
    server = Coordinator(coordinator_binary(), workdir, ["--checkpoint-store", str(workdir / "store")])
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


def start_worker(server: Coordinator, name: str) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SWEEP_")}
    env["RUST_LOG"] = "info"
    args = [str(worker_binary()), "--coordinator", server.address, "--worker-id", name]
    args += ["--commands-only", "--checkpoint-to-coordinator", "--device", "cpu"]
    log = open(server.workdir / f"{name}.log", "wb")
    return subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=server.workdir)


def wait_until(what, check, within=60.0):
    deadline = time.monotonic() + within
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def test_a_stopped_job_continues_on_another_worker_from_its_checkpoint(served):
    script = served.workdir / "train.py"
    script.write_text(SCRIPT)
    spec = spec_from_dict(
        {
            "name": "resume",
            "seeds": [0],
            "epochs": EPOCHS,
            "command": {"template": f"{sys.executable} {script}", "grid": {"depth": [3]}},
            "objective": {"metric": "loss", "mode": "min"},
        }
    )
    with served.client() as c:
        assert c.submit(spec).jobs_created == 1
        job_id = c.jobs("resume")[0].id
        first = start_worker(served, "worker-a")
        try:
            wait_until("two stored epochs", lambda: c.job(job_id).job.epochs_done >= 2)
            first.send_signal(signal.SIGTERM)
            assert first.wait(timeout=30) == 0, (served.workdir / "worker-a.log").read_text()[-3000:]
        finally:
            first.kill()
        job = c.job(job_id).job
        assert job.state == sweep_pb2.JOB_STATE_QUEUED, "handed back at SIGTERM"
        handed_back = job.epochs_done
        assert 2 <= handed_back < EPOCHS

        second = start_worker(served, "worker-b")
        try:
            wait_until("the job to succeed", lambda: c.sweep("resume").succeeded == 1)
        finally:
            second.send_signal(signal.SIGTERM)
            second.wait(timeout=30)
        detail = c.job(job_id)
        assert detail.job.worker_id == "worker-b"
        assert [e.epoch for e in detail.epochs] == list(range(1, EPOCHS + 1)), "each epoch once"
        for e in detail.epochs:
            expected = 0 if e.epoch <= handed_back else handed_back
            assert e.values["resumed_from"] == expected, (e.epoch, handed_back)
        assert detail.job.best_epoch == EPOCHS, "the objective, minimised"
