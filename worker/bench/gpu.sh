#!/usr/bin/env bash
# Runs this project's GPU measurements on a machine with an NVIDIA GPU and no Rust toolchain.
#
# Bring release binaries (`strip --strip-debug` keeps the symbol table `--host-profile` needs; then
# xz) in .device/bin/ and CIFAR-10 files (.bin.xz) in
# .device/data/, then call the phases in order (each writes logs under $OUT, default ./gpu-out):
#   unpack           binaries -> /root/bin, data -> /root/cifar10 (can be called several times
#                    with different data files: the data set only needs to be complete for `sweep`)
#   bench            the peers (PyTorch eager bf16, torch.compile default and reduce-overhead,
#                    4 models fused under torch.compile, JAX/flax under jax.jit) and `worker
#                    bench` (one process per kernel set, KERNELS; the cuDNN sets find cuDNN
#                    in the Python wheels), then 3 concurrent processes; the
#                    results as rows of docs/results/speed.csv in $OUT/speed.csv (COMMIT=...)
#   profile          per-kernel GPU time of a few steps op by op (cubecl's profiling logger;
#                    it sees neither cuDNN's kernels nor a replayed graph's)
#   ncu              per-kernel GPU time and DRAM traffic of the default step (a replayed graph's
#                    kernels one by one; Nsight Compute, each kernel alone, clocks and caches as
#                    they run) as CSV, and one
#                    step's kernels summed by family (ncu_step.py); the warm-up, where cuDNN
#                    times its algorithms, runs unprofiled (SKIP kernels)
#   verify [FILTER]  the GPU-only tests (`cargo test -p worker --release --lib --no-run`'s binary,
#                    brought as worker-tests), autotuning at its minimum: they compare values
#   train            one job on the full data (`worker train`): start-up to first step + epochs
#   sweep NAME ARGS  start `sweep run` (embedded coordinator on :50051 + local slot) and
#                    EXTRA_WORKERS more worker processes in the background (setsid)
#   status NAME      progress of the background sweep; waits up to WAIT seconds for it to end
#   collect NAME     tar the report and logs into $OUT
set -uo pipefail
OUT=${OUT:-$PWD/gpu-out}
REPO=$PWD
RUN=/root/run
BIN=/root/bin
DATA=/root/cifar10
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
# shellcheck source=worker/bench/cudnn_libs.sh
source "$REPO/worker/bench/cudnn_libs.sh"
export RUST_LOG=${RUST_LOG:-info}
mkdir -p "$OUT" "$RUN" "$BIN" "$DATA"
# Run from a folder with no Cargo.toml above it, so burn's autotune cache lands in ~/.cache.
cd "$RUN" || exit 1

phase=${1:-}
shift || true
case "$phase" in
unpack)
  for f in "$REPO"/.device/bin/*.xz; do [ -e "$f" ] && xz -dc "$f" > "$BIN/$(basename "$f" .xz)" && chmod +x "$BIN/$(basename "$f" .xz)"; done
  for f in "$REPO"/.device/data/*.xz; do [ -e "$f" ] && xz -dc "$f" > "$DATA/$(basename "$f" .xz)"; done
  ls -la "$BIN" "$DATA" | tee -a "$OUT/unpack.log"
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
  ;;
bench)
  # The peers in the same run: PyTorch eager bf16, torch.compile (default, and reduce-overhead:
  # CUDA graphs), four models fused horizontally under torch.compile, and JAX/flax under jax.jit.
  for mode in ${TORCH_MODES:-bf16cl compile compile-ro}; do
    python3 "$REPO/worker/bench/pytorch_peer.py" --mode "$mode" --steps 30 --warmup 10 2>&1 | tee -a "$OUT/bench.log"
  done
  python3 "$REPO/worker/bench/pytorch_peer.py" --mode compile-ro --fuse 4 --steps 30 --warmup 10 2>&1 | tee -a "$OUT/bench.log"
  python3 "$REPO/worker/bench/jax_peer.py" --mode bf16 --steps 30 --warmup 10 2>&1 | tee -a "$OUT/bench.log"
  # One process per kernel set (auto = the replayed cuDNN step, the same with `dual`, then op by
  # op without and with burn's fusion stream, and CubeCL's convolutions); the first start on a fresh machine
  # also pays for autotuning (kept in $SWEEP_KERNEL_CACHE).
  for kernels in ${KERNELS:-auto fast-bf16-cudnn+dual+direct+graph fast-bf16-cudnn+direct fast-bf16-cudnn fast-bf16}; do
    t0=$(date +%s%N)
    "$BIN/worker" bench --device cuda --steps 30 --warmup 5 --kernels "$kernels" 2>&1 | tee -a "$OUT/bench.log"
    echo "kernels=$kernels process wall_ms=$(( ($(date +%s%N) - t0) / 1000000 ))" | tee -a "$OUT/bench.log"
  done
  for k in 1 2 3; do "$BIN/worker" bench --device cuda --steps 60 --warmup 3 > "$OUT/concurrent-$k.log" 2>&1 & done
  wait
  grep -h "^burn" "$OUT"/concurrent-*.log | sed 's/^/concurrent3 /' | tee -a "$OUT/bench.log"
  card=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1)
  python3 "$REPO/worker/bench/speed_rows.py" --card "$card" --commit "${COMMIT:-unknown}" "$OUT/bench.log" > "$OUT/speed.csv"
  ;;
verify)
  # A cold machine compiles and tunes every small test shape: allow minutes (LIMIT seconds).
  CUBECL_AUTOTUNE_LEVEL=minimal RUST_LOG=warn timeout "${LIMIT:-580}" \
    "$BIN/worker-tests" --ignored --test-threads 1 "${@:-cuda}" 2>&1 | tee "$OUT/verify.log" | grep -E "^test |^test result|panicked|differs|off by"
  ;;
profile)
  rm -f /tmp/cubecl-profile.log
  CUBECL_DEBUG_LOG=/tmp/cubecl-profile.log CUBECL_DEBUG_OPTION=profile \
    "$BIN/worker" bench --device cuda --steps 2 --warmup 2 --kernels "${KERNELS:-fast-bf16-cudnn+direct}" > "$OUT/profile-run.log" 2>&1
  # Keep the last per-kernel table (one is printed at every sync; it covers the 2 pipelined steps).
  n=$(grep -n "^| Name" /tmp/cubecl-profile.log | tail -1 | cut -d: -f1)
  sed -n "${n},\$p" /tmp/cubecl-profile.log | sed 's/  \+/ /g' > "$OUT/profile.txt"
  ;;
ncu)
  ncu=$(command -v ncu || ls /usr/local/cuda/bin/ncu 2>/dev/null | head -1)
  [ -n "$ncu" ] || { echo "ncu not found" >&2; exit 1; }
  "$ncu" --metrics gpu__time_duration.sum,dram__bytes.sum --csv --clock-control none --cache-control none \
    --graph-profiling node --launch-skip "${SKIP:-900}" \
    --launch-count "${COUNT:-400}" --log-file "$OUT/ncu-worker.csv" \
    "$BIN/worker" bench --device cuda --steps 6 --warmup 5 --kernels "${KERNELS:-auto}" > "$OUT/ncu-worker.log" 2>&1
  python3 "$REPO/worker/bench/ncu_step.py" "$OUT/ncu-worker.csv" | tee "$OUT/ncu-step.txt"
  ;;
train)
  "$BIN/worker" train --device cuda --data-dir "$DATA" "$@" 2>&1 | tee -a "$OUT/train.log"
  ;;
sweep)
  name=$1
  shift
  setsid nohup "$BIN/sweep" run --name "$name" --listen 127.0.0.1:50051 --device cuda --data-dir "$DATA" \
    --database-url "sqlite://$RUN/sweep.db?mode=rwc" --out "$RUN/reports/$name" --no-progress "$@" \
    > "$RUN/sweep-$name.log" 2>&1 < /dev/null &
  sleep 20
  for k in $(seq 1 "${EXTRA_WORKERS:-0}"); do
    setsid nohup "$BIN/worker" --coordinator http://127.0.0.1:50051 --device cuda --data-dir "$DATA" \
      --worker-id "extra-$k" > "$RUN/worker-$k.log" 2>&1 < /dev/null &
  done
  sleep 5
  tail -n 5 "$RUN/sweep-$name.log"
  ;;
status)
  name=$1
  deadline=$(( $(date +%s) + ${WAIT:-0} ))
  while :; do
    "$BIN/coordinator" status --coordinator http://127.0.0.1:50051 --sweep "$name" 2>&1 | tail -n 12
    pgrep -f "sweep run --name $name" > /dev/null || break
    [ "$(date +%s)" -lt "$deadline" ] || break
    sleep 30
  done
  ;;
collect)
  name=$1
  tar czf "$OUT/report-$name.tgz" -C "$RUN" "reports/$name" sweep.db $(cd "$RUN" && ls ./*.log 2>/dev/null)
  ls -la "$OUT"
  ;;
*)
  echo "usage: $0 unpack|bench|verify|profile|ncu|train|sweep|status|collect ..." >&2
  exit 2
  ;;
esac
