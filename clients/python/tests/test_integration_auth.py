"""Bearer tokens against a coordinator that requires them (`serve --tokens`): the client sends
`authorization: Bearer <token>` on every call, unary and streaming, from the argument or
$SWEEP_TOKEN / $SWEEP_TOKEN_FILE."""

import subprocess

import grpc
import pytest
from conftest import Coordinator, coordinator_binary
from sweep_client import Client, SweepError


@pytest.fixture(scope="module")
def secured(tmp_path_factory):
    """(coordinator, a user token) with authentication on."""
    binary = coordinator_binary()
    workdir = tmp_path_factory.mktemp("secured")
    tokens = workdir / "tokens.txt"
    made = subprocess.run(
        [str(binary), "token", "create", "--tokens", str(tokens), "--role", "user", "--name", "alice"],
        capture_output=True, text=True, timeout=30,
    )
    assert made.returncode == 0, made.stderr
    token = made.stdout.strip()
    assert token and "\n" not in token
    server = Coordinator(binary, workdir, ["--tokens", str(tokens)], token=token)
    try:
        server.wait_ready()
        yield server, token
    finally:
        server.stop()


def test_calls_without_a_token_are_refused(secured):
    server, _ = secured
    with Client(server.address, token="", timeout=10) as c:
        with pytest.raises(SweepError) as e:
            c.sweeps()
    assert e.value.code == grpc.StatusCode.UNAUTHENTICATED
    with Client(server.address, token="swp_wrong", timeout=10) as c:
        with pytest.raises(SweepError) as e:
            c.sweeps()
    assert e.value.code == grpc.StatusCode.UNAUTHENTICATED


def test_the_token_goes_with_every_call(secured):
    server, token = secured
    spec = {"name": "py-auth", "variants": ["natural_softmax"], "seeds": [0], "epochs": 1, "batch_size": 8}
    with Client(server.address, token=token, timeout=10) as c:
        assert c.submit(spec) == (1, 0)
        assert [s.spec.name for s in c.sweeps()] == ["py-auth"]
        first = next(iter(c.watch("py-auth", timeout=10)))  # a server stream
        assert first.kind == "snapshot"


def test_token_from_the_environment(secured, monkeypatch, tmp_path):
    server, token = secured
    monkeypatch.delenv("SWEEP_TOKEN_FILE", raising=False)
    monkeypatch.setenv("SWEEP_TOKEN", token)
    with Client(server.address, timeout=10) as c:
        c.sweeps()
    monkeypatch.delenv("SWEEP_TOKEN")
    path = tmp_path / "alice.token"
    path.write_text(f"  {token}\n")
    monkeypatch.setenv("SWEEP_TOKEN_FILE", str(path))
    with Client(server.address, timeout=10) as c:
        c.sweeps()
