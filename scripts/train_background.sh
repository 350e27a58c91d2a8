#!/usr/bin/env bash
# Start (or resume) the background Panda training run; safe to run again: if the run is already
# going it says so and exits. Resumes RUN_DIR/last.pt, appends to RUN_DIR/train.log.
#   scripts/train_background.sh                 # defaults below
#   RUN_DIR=/work/runs/x DATA="/d1 /d2" ARCH=dream_tiny_s4 EXTRA="--max-minutes 60" scripts/train_background.sh
#   RUN_DIR=/work/runs/ext ROBOT=panda_extended EXTRA="--init models/panda_default.pt" scripts/train_background.sh
set -eo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
RUN_DIR="${RUN_DIR:-/work/runs/panda_lite}"
# DATA, ROBOT, ARCH and EXTRA given once are remembered in RUN_DIR/background.args, so a plain re-run resumes
# with the same data and schedule (an empty EXTRA="" is remembered as well).
if [ -f "$RUN_DIR/background.args" ]; then source "$RUN_DIR/background.args"; fi
DATA="${DATA:-${SAVED_DATA:-/work/data/panda_train_320}}"
EXTRA="${EXTRA-${SAVED_EXTRA:-}}"
ROBOT="${ROBOT:-${SAVED_ROBOT:-panda}}"
ARCH="${ARCH:-${SAVED_ARCH:-dream_tiny_s4}}"
THREADS="${THREADS:-2}"
NICE="${NICE:-5}"
mkdir -p "$RUN_DIR"
PIDFILE="$RUN_DIR/train.pid"
if [ -f "$PIDFILE" ] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; then
  echo "training already running in $RUN_DIR (pid $(cat "$PIDFILE")); log: $RUN_DIR/train.log"
  exit 0
fi
printf 'SAVED_DATA=%q\nSAVED_EXTRA=%q\nSAVED_ROBOT=%q\nSAVED_ARCH=%q\n' "$DATA" "$EXTRA" "$ROBOT" "$ARCH" \
  > "$RUN_DIR/background.args"
source "$ROOT/scripts/env.sh"
# OpenMP threads must sleep, not spin, while they wait: on 2 shared cores spinning wastes half the CPU
export OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-PASSIVE}"
DATA_ARGS=()
for d in $DATA; do DATA_ARGS+=(--data "$d"); done
cd "$ROOT"
echo "=== $(date -u +%FT%TZ) start: robot $ROBOT arch $ARCH data $DATA extra $EXTRA" >> "$RUN_DIR/train.log"
# nice: interactive work keeps some priority over the background run
nohup nice -n "$NICE" python -m dream_ros train "${DATA_ARGS[@]}" --robot "$ROBOT" --arch "$ARCH" \
  --out "$RUN_DIR" --resume --threads "$THREADS" --no-progress $EXTRA \
  >> "$RUN_DIR/train.log" 2>&1 < /dev/null &
echo $! > "$PIDFILE"
echo "training started in $RUN_DIR (pid $!); log: $RUN_DIR/train.log"
