"""Shared fixtures: a real coordinator process for the integration tests.

The binary is $SWEEP_COORDINATOR_BIN, else <repo>/target/debug/coordinator (`cargo build -p
coordinator`); the worker's, for the tests that run one, $SWEEP_WORKER_BIN, else
<repo>/target/debug/worker. When it is missing the integration tests skip, unless SWEEP_REQUIRE_PYTHON_TESTS=1,
then they fail; the same switch turns the other skips (no grpcio-tools for the stubs check) into
failures.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from pathlib import Path
from typing import Iterator, Optional, Sequence

import grpc
import pytest
from sweep_client import Client, SweepError

HERE = Path(__file__).resolve().parent
PACKAGE_ROOT = HERE.parent  # clients/python
REPO_ROOT = PACKAGE_ROOT.parent.parent


def required() -> bool:
    """True when every test must run (SWEEP_REQUIRE_PYTHON_TESTS=1): skips become failures."""
    return os.environ.get("SWEEP_REQUIRE_PYTHON_TESTS", "") == "1"


def skip_or_fail(reason: str) -> None:
    if required():
        pytest.fail(f"{reason} (and SWEEP_REQUIRE_PYTHON_TESTS=1)")
    pytest.skip(reason)


def _binary(name: str, variable: str) -> Path:
    given = os.environ.get(variable)
    # Resolved now: the processes run in their own working directories, where a relative path breaks.
    path = (Path(given) if given else REPO_ROOT / "target" / "debug" / name).resolve()
    if not (path.is_file() and os.access(path, os.X_OK)):
        skip_or_fail(f"no {name} binary at {path} (build it: cargo build -p {name}, or set {variable})")
    return path


def coordinator_binary() -> Path:
    return _binary("coordinator", "SWEEP_COORDINATOR_BIN")


def worker_binary() -> Path:
    return _binary("worker", "SWEEP_WORKER_BIN")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Coordinator:
    """A `coordinator serve` child process on a free loopback port with its own database."""

    def __init__(self, binary: Path, workdir: Path, extra_args: Sequence[str] = (), token: str = "") -> None:
        self.binary = binary
        self.token = token
        self.workdir = workdir
        self.port = _free_port()
        self.address = f"http://127.0.0.1:{self.port}"
        self.log_path = workdir / "coordinator.log"
        help_text = subprocess.run(
            [str(binary), "serve", "--help"], capture_output=True, text=True, timeout=30
        ).stdout
        args = [
            str(binary),
            "serve",
            "--listen",
            f"127.0.0.1:{self.port}",
            "--database-url",
            f"sqlite://{workdir / 'sweep.db'}?mode=rwc",
        ]
        # Tests write faster than a person: lift the per-credential write rate where it exists.
        if "--user-write-rate" in help_text:
            args += ["--user-write-rate", "0"]
        args += list(extra_args)
        # The child must not pick up the developer's SWEEP_* settings (tokens, TLS, listen).
        env = {k: v for k, v in os.environ.items() if not k.startswith("SWEEP_")}
        env.setdefault("RUST_LOG", "info")
        self._log = open(self.log_path, "wb")
        self.process = subprocess.Popen(args, stdout=self._log, stderr=subprocess.STDOUT, env=env, cwd=workdir)

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")[-4000:]

    def client(self, timeout: Optional[float] = 10.0) -> Client:
        # token="" keeps a developer's $SWEEP_TOKEN out of these calls.
        return Client(self.address, token=self.token, timeout=timeout)

    def wait_ready(self, within: float = 30.0) -> None:
        deadline = time.monotonic() + within
        with self.client(timeout=1.0) as c:
            while True:
                if self.process.poll() is not None:
                    raise RuntimeError(f"coordinator exited with {self.process.returncode}:\n{self.log()}")
                try:
                    c.sweeps()
                    return
                except SweepError as e:
                    if e.code not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                        raise
                if time.monotonic() > deadline:
                    raise RuntimeError(f"coordinator did not answer within {within} s:\n{self.log()}")
                time.sleep(0.05)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()


@pytest.fixture(scope="module")
def coordinator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Coordinator]:
    """A fresh coordinator per test module (its own database: modules do not see each other's
    sweeps, and a module acting as a worker leases only its own jobs)."""
    binary = coordinator_binary()
    server = Coordinator(binary, tmp_path_factory.mktemp("coordinator"))
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


@pytest.fixture()
def client(coordinator: Coordinator) -> Iterator[Client]:
    with coordinator.client() as c:
        yield c
