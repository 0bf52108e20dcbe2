"""The committed stubs in src/sweep_client/_gen/ are what generate.sh makes of the current proto,
and they load with the installed runtime."""

import importlib.metadata
import os
import re
import subprocess
import sys

from conftest import PACKAGE_ROOT, REPO_ROOT, skip_or_fail

GEN = PACKAGE_ROOT / "src" / "sweep_client" / "_gen"
PROTO = REPO_ROOT / "proto" / "proto" / "sweep" / "v1" / "sweep.proto"


def pinned_tools_version() -> str:
    text = (PACKAGE_ROOT / "generate.sh").read_text()
    return re.search(r'^GRPC_TOOLS_VERSION="([^"]+)"', text, re.M).group(1)


def test_generated_stubs_are_current(tmp_path):
    pinned = pinned_tools_version()
    try:
        installed = importlib.metadata.version("grpcio-tools")
    except importlib.metadata.PackageNotFoundError:
        installed = None
    if installed != pinned:
        skip_or_fail(f"needs grpcio-tools=={pinned} to regenerate the stubs (found {installed}): pip install 'grpcio-tools=={pinned}'")
    if not PROTO.exists():
        skip_or_fail(f"no {PROTO}")
    out = tmp_path / "gen"
    env = dict(os.environ, PYTHON=sys.executable)
    run = subprocess.run(["bash", str(PACKAGE_ROOT / "generate.sh"), str(out)], env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    committed = sorted(p.name for p in GEN.iterdir() if p.is_file() and p.suffix in (".py", ".pyi"))
    fresh = sorted(p.name for p in out.iterdir() if p.is_file())
    assert committed == fresh
    stale = [name for name in fresh if (out / name).read_bytes() != (GEN / name).read_bytes()]
    assert not stale, (
        f"{stale} differ from what {PROTO.relative_to(REPO_ROOT)} generates: "
        "run clients/python/generate.sh and commit the result"
    )


def test_runtime_requirements_match_the_generated_version_checks():
    """pyproject's lower bounds are the versions the generated code checks for at import."""
    pb2 = (GEN / "sweep_pb2.py").read_text()
    grpc_py = (GEN / "sweep_pb2_grpc.py").read_text()
    m = re.search(r"ValidateProtobufRuntimeVersion\(\s*_runtime_version\.Domain\.PUBLIC,\s*(\d+),\s*(\d+),\s*(\d+),", pb2)
    assert m, "no protobuf runtime check in sweep_pb2.py"
    protobuf_gen = ".".join(m.groups())
    grpc_gen = re.search(r"GRPC_GENERATED_VERSION = '([^']+)'", grpc_py).group(1)
    pyproject = (PACKAGE_ROOT / "pyproject.toml").read_text()
    assert f'"protobuf>={protobuf_gen},' in pyproject or f'"protobuf>={protobuf_gen}"' in pyproject
    assert f'"grpcio>={grpc_gen}"' in pyproject
    assert grpc_gen == pinned_tools_version()
    assert "from sweep.v1 import" not in grpc_py


def test_stubs_import_inside_the_package():
    from sweep_client import sweep_pb2, sweep_pb2_grpc

    assert sweep_pb2.DESCRIPTOR.name == "sweep/v1/sweep.proto"
    assert sweep_pb2.DESCRIPTOR.package == "sweep.v1"
    assert hasattr(sweep_pb2_grpc, "SweepServiceStub") and hasattr(sweep_pb2_grpc, "WorkerServiceStub")
    services = set(sweep_pb2.DESCRIPTOR.services_by_name)
    assert services == {"SweepService", "WorkerService"}
