"""report_epoch and job_context, as a training script run by a worker uses them."""

import io
import json
import subprocess
import sys

import pytest
from sweep_client import JobContext, job_context, report_epoch


def test_report_epoch_writes_one_json_line_and_flushes(capsys):
    line = report_epoch(3, val_acc=0.81, train_loss=1.25, images_per_sec=1000, **{"top-5": 0.97, "lr.group0": 1e-3})
    out = capsys.readouterr().out
    assert out == line + "\n"
    assert out.count("\n") == 1
    data = json.loads(out)
    assert data == {"epoch": 3, "val_acc": 0.81, "train_loss": 1.25, "images_per_sec": 1000.0, "top-5": 0.97, "lr.group0": 1e-3}
    assert isinstance(data["epoch"], int)
    assert list(data)[0] == "epoch"


def test_report_epoch_to_a_file():
    buf = io.StringIO()
    report_epoch(1, file=buf)
    assert buf.getvalue() == '{"epoch": 1}\n'


def test_report_epoch_reaches_a_parent_reading_a_pipe_line_by_line():
    """The worker reads the child's stdout through a pipe: the line must arrive while the child
    is still running (flushed, not left in a block buffer)."""
    code = (
        "import sys, time\n"
        "from sweep_client import report_epoch\n"
        "report_epoch(1, val_acc=0.5)\n"
        "sys.stdin.readline()\n"  # keeps running until the parent has read the line
    )
    child = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert json.loads(child.stdout.readline()) == {"epoch": 1, "val_acc": 0.5}
    finally:
        child.stdin.write("\n")
        child.stdin.close()
        child.wait(timeout=10)
    assert child.returncode == 0


class FloatLike:
    def __float__(self):
        return 0.25


def test_numpy_like_scalars_are_numbers(capsys):
    report_epoch(2, val_acc=FloatLike())
    assert json.loads(capsys.readouterr().out) == {"epoch": 2, "val_acc": 0.25}


@pytest.mark.parametrize("epoch", [0, -1, 1.0, "1", True, None])
def test_bad_epochs(epoch, capsys):
    with pytest.raises(ValueError, match="^epoch"):
        report_epoch(epoch, val_acc=0.5)
    assert capsys.readouterr().out == ""


@pytest.mark.parametrize(
    "metrics, name",
    [
        ({"val_acc": float("nan")}, "val_acc"),
        ({"val_acc": float("inf")}, "val_acc"),
        ({"val_acc": "0.5"}, "val_acc"),
        ({"val_acc": None}, "val_acc"),
        ({"val_acc": True}, "val_acc"),
        ({"val_acc": [0.5]}, "val_acc"),
        ({"val_acc": 10**400}, "val_acc"),
        ({"1st": 0.5}, "'1st'"),
        ({"top 5": 0.5}, "'top 5'"),
        ({"a/b": 0.5}, "'a/b'"),
        ({"x" * 65: 0.5}, "'x"),
        ({"": 0.5}, "''"),
    ],
)
def test_bad_metrics(metrics, name, capsys):
    with pytest.raises(ValueError, match=f"^{name}"):
        report_epoch(1, **metrics)
    assert capsys.readouterr().out == ""


def test_metric_names_at_the_limits(capsys):
    report_epoch(1, **{"_": 1, "x" * 64: 2, "A.b-c_9": 3})
    assert len(json.loads(capsys.readouterr().out)) == 4


def test_too_many_metrics():
    with pytest.raises(ValueError, match="^metrics"):
        report_epoch(1, **{f"m{i}": 0.0 for i in range(65)})


def test_job_context_outside_a_worker():
    assert job_context({}) is None
    assert job_context({"SWEEP_SEED": "3"}) is None


def test_job_context_from_the_workers_environment(monkeypatch):
    env = {
        "SWEEP_JOB_ID": "42",
        "SWEEP_SEED": "7",
        "SWEEP_ATTEMPT": "2",
        "SWEEP_EPOCHS": "100",
        "SWEEP_SWEEP": "torch-natural-softmax",
        "SWEEP_PARAM_LOSS": "natural_softmax",
        "SWEEP_PARAM_LR": "0.001",
        "SWEEP_PARAM_WEIGHT_DECAY": "1e-4",
        "PATH": "/usr/bin",
    }
    ctx = job_context(env)
    assert ctx == JobContext(
        job_id=42,
        seed=7,
        attempt=2,
        epochs=100,
        sweep="torch-natural-softmax",
        params={"loss": "natural_softmax", "lr": "0.001", "weight_decay": "1e-4"},
    )
    assert ctx.param("LR") == "0.001"
    assert ctx.param("weight-decay") == "1e-4"
    assert ctx.param("missing", "d") == "d"
    # The default environment is os.environ.
    for key in list(__import__("os").environ):
        if key.startswith("SWEEP_"):
            monkeypatch.delenv(key)
    assert job_context() is None
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert job_context() == ctx


def test_job_context_refuses_garbage_numbers():
    with pytest.raises(ValueError, match="^SWEEP_SEED"):
        job_context({"SWEEP_JOB_ID": "1", "SWEEP_SEED": "x", "SWEEP_ATTEMPT": "1", "SWEEP_EPOCHS": "2"})


def _resumed(tmp_path, stored: int) -> JobContext:
    env = {"SWEEP_JOB_ID": "1", "SWEEP_SEED": "0", "SWEEP_ATTEMPT": "2", "SWEEP_EPOCHS": "10"}
    env |= {"SWEEP_EPOCHS_STORED": str(stored), "SWEEP_JOB_CHECKPOINT_DIR": str(tmp_path / "job-1")}
    return job_context(env)


def test_resume_state_from_the_workers_environment(tmp_path):
    ctx = _resumed(tmp_path, 4)
    assert (ctx.epochs_stored, ctx.checkpoint_dir) == (4, tmp_path / "job-1")
    plain = job_context({"SWEEP_JOB_ID": "1", "SWEEP_SEED": "0", "SWEEP_ATTEMPT": "1", "SWEEP_EPOCHS": "10"})
    assert (plain.epochs_stored, plain.checkpoint_dir, plain.resume_from()) == (0, None, None)
    with pytest.raises(RuntimeError, match="--checkpoint-dir"):
        with plain.checkpoint(1):
            pass
    with pytest.raises(ValueError, match="^SWEEP_EPOCHS_STORED"):
        _resumed(tmp_path, "x")


def test_checkpoints_are_renamed_into_place_and_pruned(tmp_path):
    ctx = _resumed(tmp_path, 0)
    assert ctx.resume_from() is None, "no directory yet"
    for epoch in (1, 2, 3):
        with ctx.checkpoint(epoch) as path:
            assert not path.name.startswith("epoch-"), "written under a temporary name"
            path.write_text(f"state {epoch}")
    assert sorted(p.name for p in ctx.checkpoint_dir.iterdir()) == ["epoch-00002.ckpt", "epoch-00003.ckpt"]
    # A failed save leaves nothing behind and keeps the older checkpoints.
    with pytest.raises(OSError):
        with ctx.checkpoint(4) as path:
            path.write_text("half")
            raise OSError("disk full")
    assert sorted(p.name for p in ctx.checkpoint_dir.iterdir()) == ["epoch-00002.ckpt", "epoch-00003.ckpt"]


def test_resume_only_from_an_epoch_the_coordinator_has(tmp_path):
    ctx = _resumed(tmp_path, 0)
    for epoch in (2, 3):
        with ctx.checkpoint(epoch) as path:
            path.write_text(f"state {epoch}")
    # Epoch 3's metrics were lost with the worker: resuming after it would skip them.
    epoch, path = _resumed(tmp_path, 2).resume_from()
    assert (epoch, path.read_text()) == (2, "state 2")
    assert _resumed(tmp_path, 3).resume_from()[0] == 3
    assert _resumed(tmp_path, 1).resume_from() is None
