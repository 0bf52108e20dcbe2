"""Python client of the sweep coordinator.

- `Client` (module `client`): submit sweeps, list and watch them, cancel, retry and export, over
  the coordinator's SweepService.
- `report_epoch`, `job_context` (module `training`): for a training script a worker runs as a
  command job: print an epoch's metrics, read the job's seed and parameters.
- `spec_from_dict`, `load_spec`, `parse_seeds` (module `spec`): the JSON spec-file format.
- `SweepError` (module `errors`): a failed call, with its gRPC status code.
- `sweep_pb2`, `sweep_pb2_grpc`: the generated messages and stubs of sweep/v1/sweep.proto
  (module `_gen`), for WorkerService or anything the API above does not cover.
"""

from ._gen import sweep_pb2, sweep_pb2_grpc
from .client import DEFAULT_ADDRESS, Client, Event, SubmitResult, open_channel
from .errors import SweepError
from .rows import summary_line
from .spec import BUILTIN_VARIANTS, load_spec, parse_seeds, spec_from_dict
from .training import JobContext, job_context, report_epoch

__version__ = "0.1.0"

__all__ = [
    "BUILTIN_VARIANTS",
    "DEFAULT_ADDRESS",
    "Client",
    "Event",
    "JobContext",
    "SubmitResult",
    "SweepError",
    "job_context",
    "load_spec",
    "open_channel",
    "parse_seeds",
    "report_epoch",
    "spec_from_dict",
    "summary_line",
    "sweep_pb2",
    "sweep_pb2_grpc",
]
