#!/usr/bin/env bash
# Render the synthetic test set of docs/evaluation.md and models/panda_default.md exactly as it was
# first rendered: by commit bee61ba's synth (300 frames, 640x480, seed 1000, --fov 60).
# Today's synth draws other frames from the same seed (the Panda's camera range moved closer in
# b8f5496, a fill light came in c352b48), so the same command on today's code gives another set;
# this script keeps every session's test figures comparable. One worker, as then: bee61ba's scene
# carries some state from frame to frame, so 2 workers gave other frames (PCK 0.7233 / ADD 0.5497).
# Checked in session 9 on a fresh machine: the shipped model scores PCK 0.7251 / ADD 0.5559 on it,
# the figures recorded in session 8.
# Another seed gives a validation set from the test set's generator (never seed 1000 for
# validation): session 19 rendered panda_val_640_old (1001) and panda_val_640_old_b (1002).
# COUNT other than 300 renders training frames from it: panda_train_640_old (1100 10000, session
# 19) and panda_train_640_old_b (1200 10000, session 20).
#   scripts/render_test_set.sh [OUT_DIR] [SEED] [COUNT]  # defaults /work/data/panda_test_640, 1000, 300
set -eo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="${1:-/work/data/panda_test_640}"
SEED="${2:-1000}"
COUNT="${3:-300}"
COMMIT=bee61ba
source "$ROOT/scripts/env.sh"
SRC="$(mktemp -d)"
trap 'rm -rf "$SRC"' EXIT
git -C "$ROOT" archive "$COMMIT" src config | tar -x -C "$SRC"
PYTHONPATH="$SRC/src${PYTHONPATH:+:$PYTHONPATH}" python - <<PY
import dream_ros, sys
assert dream_ros.__file__.startswith("$SRC"), "synth of $COMMIT not first on the path: %s" % dream_ros.__file__
PY
PYTHONPATH="$SRC/src${PYTHONPATH:+:$PYTHONPATH}" python -m dream_ros synth --robot panda --count "$COUNT" \
  --out "$OUT" --seed "$SEED" --width 640 --height 480 --fov 60 --workers 1 2>&1 | grep -v '%|' || true
test "$(ls "$OUT" | grep -c 'rgb.jpg$')" -eq "$COUNT" || { echo "render_test_set: $OUT has not $COUNT frames" >&2; exit 1; }
echo "$COUNT frames (synth of $COMMIT, seed $SEED) in $OUT"
