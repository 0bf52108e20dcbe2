"""`Client`: the user's side of the coordinator (SweepService) over one gRPC channel.

This module owns the connection (address, TLS, bearer token, per-call deadline), turns every
failed call into a `SweepError`, and offers the SweepService calls as typed methods returning the
generated messages (`sweep_client.sweep_pb2`), plus `export` / `export_csv` (a sweep's jobs and
epochs as rows) and `status_text` (one line of progress).

    from sweep_client import Client

    with Client("http://127.0.0.1:50051") as c:
        created, existing = c.submit({"name": "smoke", "seeds": "0..2", "epochs": 2,
                                      "batch_size": 64, "variants": ["natural_softmax"]})
        for event in c.watch("smoke"):
            print(event.kind, event.value)
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Iterator, NamedTuple, Optional, Union

import grpc

from ._gen import sweep_pb2, sweep_pb2_grpc
from .errors import SweepError
from .rows import (
    JOB_COLUMNS,
    epoch_columns,
    epoch_row,
    job_row,
    summary_line,
    write_csv,
)
from .spec import SpecLike, to_spec

__all__ = ["DEFAULT_ADDRESS", "Client", "Event", "SubmitResult"]

#: Where the coordinator listens by default (`coordinator serve`'s default).
DEFAULT_ADDRESS = "http://127.0.0.1:50051"
#: Largest message the client accepts (a long job's epochs, a big sweep's job list).
_MAX_MESSAGE_BYTES = 64 * 1024 * 1024

StateLike = Union[int, str, None]


class SubmitResult(NamedTuple):
    """What `Client.submit` did: jobs it created and jobs the sweep already had."""

    jobs_created: int
    jobs_existing: int


class Event(NamedTuple):
    """One event of `Client.watch`.

    `kind` is "snapshot" (`value`: a `SweepSummary`, always the first event), "job_changed"
    (`value`: a `Job`) or "epoch_recorded" (`value`: an `EpochRecorded`).
    """

    kind: str
    value: Any


def _state(state: StateLike) -> Optional[int]:
    """A job state from "queued", "JOB_STATE_QUEUED" or `sweep_pb2.JOB_STATE_QUEUED`."""
    if state is None:
        return None
    if isinstance(state, str):
        name = state.upper()
        if not name.startswith("JOB_STATE_"):
            name = "JOB_STATE_" + name
        try:
            return sweep_pb2.JobState.Value(name)
        except ValueError:
            raise ValueError(f"state: unknown job state {state!r}") from None
    if isinstance(state, int) and not isinstance(state, bool) and state in sweep_pb2.JobState.values():
        return state
    raise ValueError(f"state: unknown job state {state!r}")


def _read_pem(ca_cert: Union[bytes, str, "os.PathLike[str]"]) -> bytes:
    if isinstance(ca_cert, bytes):
        return ca_cert
    return Path(ca_cert).read_bytes()


class _Metadata(
    grpc.UnaryUnaryClientInterceptor,
    grpc.UnaryStreamClientInterceptor,
    grpc.StreamUnaryClientInterceptor,
    grpc.StreamStreamClientInterceptor,
):
    """Adds fixed metadata (the bearer token) to every call."""

    def __init__(self, metadata: list[tuple[str, str]]) -> None:
        self._metadata = metadata

    def _details(self, details: grpc.ClientCallDetails) -> grpc.ClientCallDetails:
        return _CallDetails(
            details.method,
            details.timeout,
            list(details.metadata or []) + self._metadata,
            details.credentials,
            getattr(details, "wait_for_ready", None),
            getattr(details, "compression", None),
        )

    def intercept_unary_unary(self, continuation, client_call_details, request):  # type: ignore[no-untyped-def]
        return continuation(self._details(client_call_details), request)

    def intercept_unary_stream(self, continuation, client_call_details, request):  # type: ignore[no-untyped-def]
        return continuation(self._details(client_call_details), request)

    def intercept_stream_unary(self, continuation, client_call_details, request_iterator):  # type: ignore[no-untyped-def]
        return continuation(self._details(client_call_details), request_iterator)

    def intercept_stream_stream(self, continuation, client_call_details, request_iterator):  # type: ignore[no-untyped-def]
        return continuation(self._details(client_call_details), request_iterator)


class _CallDetails(
    NamedTuple(
        "_CallDetails",
        [
            ("method", str),
            ("timeout", Optional[float]),
            ("metadata", Any),
            ("credentials", Any),
            ("wait_for_ready", Any),
            ("compression", Any),
        ],
    ),
    grpc.ClientCallDetails,
):
    pass


def open_channel(
    address: Optional[str] = None,
    token: Optional[str] = None,
    ca_cert: Union[bytes, str, "os.PathLike[str]", None] = None,
) -> grpc.Channel:
    """A channel to the coordinator, as `Client` opens it (also for WorkerService stubs).

    `address`: "http://HOST:PORT" (plaintext), "https://HOST:PORT" (TLS, verified against
    `ca_cert`, a PEM as bytes or a file path, else the system's roots) or a bare "HOST:PORT"
    (plaintext); default $SWEEP_COORDINATOR, else http://127.0.0.1:50051. `token`: sent as
    `authorization: Bearer <token>` on every call; default $SWEEP_TOKEN, else the contents of
    the file $SWEEP_TOKEN_FILE; "" sends none. `ca_cert` defaults to $SWEEP_CA_CERT (a path).
    """
    address = address or os.environ.get("SWEEP_COORDINATOR") or DEFAULT_ADDRESS
    if token is None:
        token = os.environ.get("SWEEP_TOKEN") or None
    if token is None and os.environ.get("SWEEP_TOKEN_FILE"):
        token = Path(os.environ["SWEEP_TOKEN_FILE"]).read_text().strip()
    if ca_cert is None:
        ca_cert = os.environ.get("SWEEP_CA_CERT") or None
    options = [
        ("grpc.max_receive_message_length", _MAX_MESSAGE_BYTES),
        ("grpc.max_send_message_length", _MAX_MESSAGE_BYTES),
    ]
    if address.startswith("https://"):
        target = address[len("https://") :].rstrip("/")
        roots = _read_pem(ca_cert) if ca_cert is not None else None
        channel = grpc.secure_channel(target, grpc.ssl_channel_credentials(root_certificates=roots), options)
    elif address.startswith("http://"):
        channel = grpc.insecure_channel(address[len("http://") :].rstrip("/"), options)
    elif "://" in address:
        raise ValueError(f"address: {address!r} is neither http://HOST:PORT nor https://HOST:PORT")
    else:
        channel = grpc.insecure_channel(address, options)
    if token:
        token = token.strip()
        channel = grpc.intercept_channel(channel, _Metadata([("authorization", f"Bearer {token}")]))
    return channel


class Client:
    """A connection to the coordinator's SweepService.

    `address` ("http://HOST:PORT" or "https://HOST:PORT"), `token` (sent as `authorization:
    Bearer <token>`) and `ca_cert` (PEM bytes or a path, for https) fall back to
    $SWEEP_COORDINATOR (else http://127.0.0.1:50051), $SWEEP_TOKEN / $SWEEP_TOKEN_FILE and
    $SWEEP_CA_CERT, as the `coordinator` CLI's do; see `open_channel`.
    Every method raises `SweepError` when the call fails (see its `code`), and `ValueError`
    for an argument it can tell is wrong before calling. `timeout` is the deadline of each
    unary call in seconds (None: none); `watch` has no deadline unless given one.
    Use as a context manager, or call `close()`.
    """

    def __init__(
        self,
        address: Optional[str] = None,
        token: Optional[str] = None,
        ca_cert: Union[bytes, str, "os.PathLike[str]", None] = None,
        *,
        timeout: Optional[float] = 30.0,
    ) -> None:
        self.address = address or os.environ.get("SWEEP_COORDINATOR") or DEFAULT_ADDRESS
        self.timeout = timeout
        self._channel = open_channel(self.address, token, ca_cert)
        self._stub = sweep_pb2_grpc.SweepServiceStub(self._channel)

    # -- plumbing ------------------------------------------------------------------------------

    @property
    def channel(self) -> grpc.Channel:
        """The underlying channel (e.g. for a `sweep_pb2_grpc.WorkerServiceStub`)."""
        return self._channel

    def close(self) -> None:
        """Closes the channel; ongoing calls are cancelled."""
        self._channel.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, name: str, request: Any, timeout: Optional[float] = None) -> Any:
        method: Callable[..., Any] = getattr(self._stub, name)
        try:
            return method(request, timeout=self.timeout if timeout is None else timeout)
        except grpc.RpcError as e:
            raise SweepError.from_rpc_error(e, name) from None

    # -- SweepService --------------------------------------------------------------------------

    def submit(self, spec: SpecLike) -> SubmitResult:
        """Creates a sweep, or adds its missing jobs (idempotent for the same spec).

        `spec`: a `sweep_pb2.SweepSpec` or a dict in the JSON spec-file format (see
        `sweep_client.spec`); a malformed dict raises ValueError before any call.
        Returns (jobs_created, jobs_existing).
        """
        message = to_spec(spec)
        reply = self._call("SubmitSweep", sweep_pb2.SubmitSweepRequest(spec=message))
        return SubmitResult(reply.jobs_created, reply.jobs_existing)

    def sweeps(self) -> list[sweep_pb2.SweepSummary]:
        """Every sweep's summary."""
        return list(self._call("ListSweeps", sweep_pb2.ListSweepsRequest()).sweeps)

    def sweep(self, name: str) -> sweep_pb2.SweepSummary:
        """One sweep's summary (its spec, job counts, progress, ETA). NOT_FOUND if unknown."""
        return self._call("GetSweep", sweep_pb2.GetSweepRequest(sweep=name))

    def jobs(self, sweep: str, state: StateLike = None, variant: Optional[str] = None) -> list[sweep_pb2.Job]:
        """A sweep's jobs, optionally only those in `state` ("queued", "running", "succeeded",
        "failed", "cancelled" or a `JobState`) and/or of `variant`."""
        fields: dict[str, Any] = {"sweep": sweep}
        wire_state = _state(state)
        if wire_state is not None:
            fields["state"] = wire_state
        if variant is not None:
            fields["variant"] = variant
        return list(self._call("ListJobs", sweep_pb2.ListJobsRequest(**fields)).jobs)

    def job(self, job_id: int) -> sweep_pb2.JobDetail:
        """One job and every epoch stored for it (`.job`, `.epochs`)."""
        return self._call("GetJob", sweep_pb2.GetJobRequest(job_id=job_id))

    def workers(self) -> list[sweep_pb2.Worker]:
        """The workers that registered (including ones gone quiet)."""
        return list(self._call("ListWorkers", sweep_pb2.ListWorkersRequest()).workers)

    def cancel_job(self, job_id: int) -> int:
        """Cancels one job; returns how many were cancelled (0 if it had finished)."""
        return self._call("CancelJob", sweep_pb2.CancelJobRequest(job_id=job_id)).cancelled

    def cancel_sweep(self, sweep: str) -> int:
        """Cancels every queued or running job of a sweep; returns how many."""
        return self._call("CancelSweep", sweep_pb2.CancelSweepRequest(sweep=sweep)).cancelled

    def retry(
        self,
        sweep: Optional[str] = None,
        *,
        job_id: Optional[int] = None,
        failed: bool = False,
        cancelled: bool = False,
    ) -> int:
        """Queues failed or cancelled jobs again, each as a new attempt with a fresh budget of
        attempts: one job (`job_id`), or a sweep's jobs in the states chosen (`failed` and/or
        `cancelled`; neither means its failed jobs, as `coordinator retry --sweep` does).
        Returns how many were queued."""
        if (sweep is None) == (job_id is None):
            raise ValueError("retry: give either a sweep or a job_id")
        if sweep is not None and not (failed or cancelled):
            failed = True
        request = sweep_pb2.RetryJobsRequest(
            job_id=job_id or 0, sweep=sweep or "", failed=failed, cancelled=cancelled
        )
        return self._call("RetryJobs", request).retried

    def watch(self, sweep: str, timeout: Optional[float] = None) -> Iterator[Event]:
        """Follows a sweep: a "snapshot" event first, then every "job_changed" and
        "epoch_recorded" event, until the coordinator ends the stream, `timeout` seconds pass
        (then SweepError DEADLINE_EXCEEDED) or the caller stops iterating (the call is then
        cancelled). `timeout` None: no deadline."""
        call = self._stub.WatchSweep(sweep_pb2.WatchSweepRequest(sweep=sweep), timeout=timeout)
        try:
            for event in call:
                kind = event.WhichOneof("event")
                if kind is None:
                    continue  # an event kind newer than these stubs
                yield Event(kind, getattr(event, kind))
        except grpc.RpcError as e:
            raise SweepError.from_rpc_error(e, "WatchSweep") from None
        finally:
            call.cancel()

    # -- derived views -------------------------------------------------------------------------

    def export(self, sweep: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """A sweep's jobs and every stored epoch as rows (dicts).

        Job rows have the keys `rows.JOB_COLUMNS`; epoch rows job_id, sweep, variant, seed,
        attempt, epoch, wall_seconds, then every metric the epoch carries (train_loss,
        train_acc, val_loss, val_acc, images_per_sec when set, and every named value).
        """
        details = self.details(sweep)
        job_rows = [job_row(d.job) for d in details]
        epoch_rows: list[dict[str, Any]] = []
        for detail in details:
            epoch_rows.extend(epoch_row(detail.job, m) for m in detail.epochs)
        return job_rows, epoch_rows

    def details(self, sweep: str) -> list[sweep_pb2.JobDetail]:
        """Every job of a sweep with its stored epochs, by job id, in one ExportSweep call (one
        GetJob per job from a coordinator without it)."""
        try:
            call = self._stub.ExportSweep(sweep_pb2.ExportSweepRequest(sweep=sweep), timeout=self.timeout)
            return list(call)
        except grpc.RpcError as e:
            if e.code() != grpc.StatusCode.UNIMPLEMENTED:
                raise SweepError.from_rpc_error(e, "ExportSweep") from None
        return [self.job(j.id) for j in self.jobs(sweep)]

    def export_csv(self, sweep: str, out_dir: "Union[str, os.PathLike[str]]") -> tuple[Path, Path]:
        """Writes `jobs.csv` and `epochs.csv` of `export(sweep)` into `out_dir` (created if
        missing); the epoch table's columns are the union of the metric names. Returns the two
        paths."""
        jobs, epochs = self.export(sweep)
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        jobs_path, epochs_path = out / "jobs.csv", out / "epochs.csv"
        write_csv(jobs_path, JOB_COLUMNS, jobs)
        write_csv(epochs_path, epoch_columns(epochs), epochs)
        return jobs_path, epochs_path

    def status_text(self, sweep: str) -> str:
        """One line of progress for a sweep, as `coordinator status` prints it."""
        return summary_line(self.sweep(sweep))
