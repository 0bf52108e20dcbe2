#!/usr/bin/env bash
# Runs the experiment's protocol the way a user with GPU machines would: `coordinator serve` and
# one `worker` attached over TCP, on a machine with no Rust toolchain. The SQLite database is
# the sweep's whole state: it is restored from $DB_IN (if present) at `start`, and a consistent
# copy is written to $OUT at every `poll`, so a stopped run continues on another machine.
#
# Bring release binaries (`strip --strip-debug` + xz) in .device/bin/ and CIFAR-10 files (.bin.xz) in
# .device/data/ (see gpu.sh `unpack`), and optionally .device/autotune.tgz (a previous machine's
# autotune results, written to $OUT at every `poll`). Phases (logs and the database copy go to $OUT):
#   warm               autotune the training kernels in the background (`worker bench`, no data
#                      needed) while the data set is still being brought in
#   start              restore the database, start the coordinator and a worker (setsid), submit
#                      the presets in $PRESETS (default: protocol; idempotent: a resubmit adds
#                      nothing, so the queue continues where the last machine stopped), or the
#                      spec files in $SPECS (with $SUBMIT_FLAGS); $WORKER_FLAGS go to the worker
#                      and $EXTRA_PATH before its PATH (the Python that command jobs run)
#   poll SECONDS       print progress of sweep $NAME (default protocol) until it has no queued
#                      or running job, or SECONDS pass; copy the database out
#   kill-worker        SIGKILL the worker (mid-job) and start a new one (it continues the job from
#                      its last checkpoint once the lease expires)
#   stop-worker        SIGTERM the worker (it checkpoints and hands its job back) and start a new one
#   restart-coordinator SIGKILL the coordinator and start it again on the same database
#   report             write sweep $NAME's report and export from the coordinator
set -uo pipefail
OUT=${OUT:-$PWD/gpu-out}
REPO=$PWD
RUN=/root/run
BIN=/root/bin
DATA=/root/cifar10
NAME=${NAME:-protocol}
DB=$RUN/sweep.db
DB_IN=${DB_IN:-$REPO/docs/results/2026-12-03-h200-protocol/sweep.db}
ADDR=127.0.0.1:50051
CACHE=${SWEEP_KERNEL_CACHE:-$HOME/.cache/sweep/cubecl}
export SWEEP_COORDINATOR=http://$ADDR
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
# shellcheck source=worker/bench/cudnn_libs.sh
source "$REPO/worker/bench/cudnn_libs.sh"
export RUST_LOG=${RUST_LOG:-info}
mkdir -p "$OUT" "$RUN"
cd "$RUN" || exit 1

log() { echo "$(date -u +%FT%TZ) $*" | tee -a "$RUN/events.log"; }

start_coordinator() {
  setsid nohup "$BIN/coordinator" serve --listen "$ADDR" --database-url "sqlite://$DB?mode=rwc" \
    >> "$RUN/coordinator.log" 2>&1 < /dev/null &
  for _ in $(seq 1 50); do "$BIN/coordinator" status > /dev/null 2>&1 && return 0; sleep 0.2; done
  log "coordinator did not answer"; return 1
}

start_worker() {
  # shellcheck disable=SC2086 # WORKER_FLAGS is a list of flags
  PATH="${EXTRA_PATH:+$EXTRA_PATH:}$PATH" SWEEP_DATA_DIR="$DATA" setsid nohup "$BIN/worker" --device cuda \
    --worker-id "${WORKER_ID:-h200-$(hostname)}" --checkpoint-dir "$RUN/checkpoints" --checkpoint-every 5 \
    ${WORKER_FLAGS:-} >> "$RUN/worker.log" 2>&1 < /dev/null &
  log "worker started (pid $!)"
}

restore_autotune() {
  if [ -e "$REPO/.device/autotune.tgz" ] && [ ! -e "$CACHE/.restored" ]; then
    mkdir -p "$CACHE" && tar xzf "$REPO/.device/autotune.tgz" -C "$CACHE" && touch "$CACHE/.restored"
    log "autotune results restored"
  fi
}

snapshot() {
  # A consistent copy while the coordinator writes (SQLite's online backup; WAL included).
  python3 - "$DB" "$OUT/sweep.db" <<'EOF'
import sqlite3, sys
src = sqlite3.connect(sys.argv[1]); dst = sqlite3.connect(sys.argv[2])
src.backup(dst); dst.close(); src.close()
EOF
  cp "$RUN"/*.log "$OUT/" 2>/dev/null
  tail -n 400 "$RUN/worker.log" > "$OUT/worker.log" 2>/dev/null
  # Autotune results only: compiled kernels (build-*) belong to one build.
  [ -d "$CACHE" ] && tar czf "$OUT/autotune.tgz" -C "$CACHE" --exclude='build-*' --exclude=.restored .
}

phase=${1:-}
shift || true
case "$phase" in
warm)
  restore_autotune
  setsid nohup "$BIN/worker" bench --device cuda --steps 3 --warmup 2 > "$RUN/warm.log" 2>&1 < /dev/null &
  log "autotuning in the background (pid $!)"
  ;;
start)
  restore_autotune
  # Autotune timings taken while another process trains would pick the wrong kernels.
  while pgrep -f "$BIN/worker bench" > /dev/null; do sleep 2; done
  if [ ! -e "$DB" ] && [ -e "$DB_IN" ]; then cp "$DB_IN" "$DB"; log "database restored from $DB_IN"; fi
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
  start_coordinator || exit 1
  log "coordinator started"
  if [ -n "${SPECS:-}" ]; then
    for spec in $SPECS; do
      case $spec in /*) ;; *) spec=$REPO/$spec ;; esac
      # shellcheck disable=SC2086 # SUBMIT_FLAGS is a list of flags
      "$BIN/coordinator" submit --spec "$spec" ${SUBMIT_FLAGS:-} | tee -a "$RUN/events.log"
    done
  else
    for preset in ${PRESETS:-protocol}; do
      "$BIN/coordinator" submit --preset "$preset" | tee -a "$RUN/events.log"
    done
  fi
  start_worker
  ;;
poll)
  deadline=$(( $(date +%s) + ${1:-0} ))
  while :; do
    s=$("$BIN/coordinator" status --sweep "$NAME" 2>&1)
    log "$(echo "$s" | head -n 1)"
    echo "$s" | grep " running " | sed 's/^/    /'
    echo "$s" | head -n 1 | grep -qE "queued +0  running +0 " && break
    [ "$(date +%s)" -lt "$deadline" ] || break
    sleep 30
  done
  "$BIN/coordinator" status --sweep "$NAME" > "$OUT/status.txt" 2>&1
  snapshot
  ;;
kill-worker)
  pkill -9 -f "$BIN/worker --device" && log "worker SIGKILLed"
  sleep 1
  start_worker
  ;;
stop-worker)
  pkill -TERM -f "$BIN/worker --device" && log "worker sent SIGTERM"
  for _ in $(seq 1 60); do pgrep -f "$BIN/worker --device" > /dev/null || break; sleep 0.5; done
  start_worker
  ;;
restart-coordinator)
  pkill -9 -f "$BIN/coordinator serve" && log "coordinator SIGKILLed"
  sleep 2
  start_coordinator && log "coordinator restarted"
  ;;
report)
  "$BIN/coordinator" report --sweep "$NAME" --out "$RUN/report-$NAME" 2>&1 | tail -n 5
  "$BIN/coordinator" export --sweep "$NAME" --format csv --out "$RUN/report-$NAME/export" 2>&1 | tail -n 2
  tar czf "$OUT/report-$NAME.tgz" -C "$RUN" "report-$NAME"
  snapshot
  ;;
*)
  echo "usage: $0 warm|start|poll SECONDS|kill-worker|stop-worker|restart-coordinator|report" >&2
  exit 2
  ;;
esac
