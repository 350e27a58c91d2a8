#!/usr/bin/env bash
# Export the run's best checkpoint to models/panda_default.pt + model card and commit just those two
# files (only when the exported checkpoint changed). Safe to run any time, e.g. every 30 minutes.
#   scripts/publish_model.sh [RUN_DIR] [--which last] [--extra-metrics file.json]
set -eo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
RUN_DIR="${1:-/work/runs/panda_lite}"; shift || true
MODEL="${MODEL:-models/panda_default.pt}"
CARD="${MODEL%.pt}.md"
source "$ROOT/scripts/env.sh"
export OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-PASSIVE}"
cd "$ROOT"
python -m dream_ros train --export "$RUN_DIR" --to "$MODEL" --card "$CARD" "$@"
chmod 644 "$MODEL" "$CARD"     # temp-file writes are 0600; the model is for everyone
for i in 1 2 3 4 5 6 7 8 9 10; do
  if git add "$MODEL" "$CARD" 2>/dev/null; then break; fi; sleep 3    # index.lock busy: retry
done
if git diff --cached --quiet -- "$MODEL" "$CARD"; then
  echo "model unchanged: nothing to commit"; exit 0
fi
IMAGES=$(python -c "import torch;print(torch.load('$MODEL',weights_only=True)['config']['training']['images_seen'])")
for i in 1 2 3 4 5 6 7 8 9 10; do
  if git diff --quiet HEAD -- "$MODEL" "$CARD"; then echo "model already committed"; exit 0; fi
  if git commit -q -m "models: panda_default after $IMAGES training images" -- "$MODEL" "$CARD"; then
    echo "committed $MODEL ($IMAGES images seen)"; exit 0
  fi
  sleep 3
done
echo "commit failed (index.lock busy?)" >&2; exit 1
