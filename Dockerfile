# Builds the coordinator, worker and sweep binaries. The worker links no CUDA library at build
# time (cudarc loads libcuda/nvrtc at run time), so one build serves CPU and GPU images.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release -p coordinator -p worker -p sweep \
 && mkdir /out && cp target/release/coordinator target/release/worker target/release/sweep /out/

# Coordinator: small image, SQLite file on a volume; openssl makes docker-compose's private CA.
FROM debian:bookworm-slim AS coordinator
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates git openssl && rm -rf /var/lib/apt/lists/*
COPY --from=build /out/coordinator /usr/local/bin/coordinator
WORKDIR /var/lib/sweep
EXPOSE 50051
ENTRYPOINT ["coordinator"]
# Loopback only without TLS and tokens; see docker-compose.yml for a coordinator others can reach.
CMD ["serve"]

# Worker: CUDA runtime + NVRTC (burn's CUDA backend compiles kernels at run time) + cuDNN 9 (the
# image's libcudnn.so.9 makes `--kernels auto` train on cuDNN's convolutions, the fastest set).
FROM nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04 AS worker
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates cuda-nvrtc-12-8 && rm -rf /var/lib/apt/lists/*
COPY --from=build /out/worker /usr/local/bin/worker
COPY --from=build /out/sweep /usr/local/bin/sweep
ENV LD_LIBRARY_PATH=/usr/local/cuda/lib64
ENTRYPOINT ["worker"]
