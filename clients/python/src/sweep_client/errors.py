"""The one exception a failed coordinator call raises: `SweepError`, with the gRPC status code.

A bad argument caught before any call (a malformed spec dict, a metric name) is a `ValueError`
instead; only what the coordinator (or the network) answered becomes a `SweepError`.
"""

from __future__ import annotations

import grpc

__all__ = ["SweepError"]


class SweepError(Exception):
    """A gRPC call to the coordinator failed.

    `code` is the `grpc.StatusCode` (INVALID_ARGUMENT for a spec the coordinator refused,
    NOT_FOUND for an unknown sweep or job, UNAVAILABLE when it cannot be reached,
    UNAUTHENTICATED / PERMISSION_DENIED for a missing or weak token, ...), `message` the
    coordinator's text and `method` the RPC that failed.
    """

    def __init__(self, code: grpc.StatusCode, message: str, method: str = "") -> None:
        self.code = code
        self.message = message
        self.method = method
        where = f"{method}: " if method else ""
        super().__init__(f"{where}{code.name}: {message}")

    @classmethod
    def from_rpc_error(cls, error: grpc.RpcError, method: str = "") -> "SweepError":
        """The SweepError of a failed call (`grpc.RpcError` that is also a `grpc.Call`)."""
        code = error.code() if hasattr(error, "code") else grpc.StatusCode.UNKNOWN
        details = error.details() if hasattr(error, "details") else str(error)
        return cls(code or grpc.StatusCode.UNKNOWN, details or "", method)
