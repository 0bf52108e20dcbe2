"""Generated gRPC stubs of sweep/v1/sweep.proto (by ../../generate.sh; do not edit).

`sweep_pb2` holds the messages and enums, `sweep_pb2_grpc` the SweepService and WorkerService
stubs.
"""
