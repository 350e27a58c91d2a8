#!/usr/bin/env bash
# make demo: a live, simulated calibration. A simulated camera (rendered with MuJoCo) watches the
# Panda move from a pose dream_node does not know; dream_node (static mode, shipped model)
# calibrates it; demo_monitor prints each estimate's error against the simulated truth, saves the
# calibration YAML and overlay PNGs to out/demo/ and exits 0 only if the converged error is within
# the bound (30 mm, 2 deg: see src/dream_ros/ros/demo_monitor.py). Headless unless GUI=1 (rviz).
#
# Environment: GUI=1, DEMO_OUT (default out/demo), DEMO_MODEL (default: the robot's shipped model),
# DEMO_TIMEOUT (seconds to wait for convergence, default 110), DEMO_MAX_MM, DEMO_MAX_DEG,
# DEMO_ARGS (extra roslaunch args, e.g. 'camera_position:=[1.3,-0.4,0.9]').
set -eo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
source scripts/env.sh
say() { printf '[demo] %s\n' "$*"; }

OUT="${DEMO_OUT:-$ROOT/out/demo}"
mkdir -p "$OUT"
rm -f "$OUT"/overlay_*.png "$OUT"/calibration.yaml
# Logs of this run stay with its results, not in a shared ~/.ros.
export ROS_HOME="$OUT/ros_home" ROS_LOG_DIR="$OUT/ros_home/log"
mkdir -p "$ROS_LOG_DIR"

MODEL_ARG=()
if [ -n "$DEMO_MODEL" ]; then
  [ -e "$DEMO_MODEL" ] || { say "DEMO_MODEL=$DEMO_MODEL does not exist"; exit 2; }
  MODEL_ARG=("model:=$(realpath "$DEMO_MODEL")")
elif ! python -c "from dream_ros.network.model_file import load_model; load_model('panda')" >/dev/null 2>"$OUT/model_check.log"; then
  say "the shipped Panda model cannot be loaded:"; tail -3 "$OUT/model_check.log"; exit 2
fi

# A free port for this run's master: never talk to someone else's roscore (ROS gotcha 7).
PORT=$(python -c "import socket; s=socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])")
export ROS_MASTER_URI="http://localhost:$PORT"

GUI_ARGS=("gui:=false")
if [ "${GUI:-0}" = "1" ]; then
  if [ -z "$DISPLAY" ]; then
    say "GUI=1 but no DISPLAY: running headless"
  else
    # rviz cannot resolve the pip-installed meshes' package:// URIs (no such ROS package): give it
    # a copy of the URDF with file:// URIs instead.
    python - "$OUT/robot_description.urdf" <<'PY'
import re, sys
from dream_ros.resources import find_package_dir
from dream_ros.robot_config import load_robot_config
text = load_robot_config("panda").urdf_path.read_text()
def to_file(m):
    d = find_package_dir(m.group(1))
    return "file://%s/" % d if d else m.group(0)
open(sys.argv[1], "w").write(re.sub(r"package://([^/]+)/", to_file, text))
PY
    GUI_ARGS=("gui:=true" "urdf_file:=$OUT/robot_description.urdf")
  fi
fi

LAUNCH_PID=""
cleanup() {
  local status=$?
  trap - EXIT INT TERM
  if [ -n "$LAUNCH_PID" ] && kill -0 "$LAUNCH_PID" 2>/dev/null; then
    say "stopping ROS (roslaunch pid $LAUNCH_PID)"
    kill -INT -- "-$LAUNCH_PID" 2>/dev/null || true
    for _ in $(seq 1 150); do kill -0 "$LAUNCH_PID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL -- "-$LAUNCH_PID" 2>/dev/null || true
  fi
  exit $status
}
trap cleanup EXIT
trap 'exit 130' INT TERM

say "starting roscore (port $PORT), sim_camera and dream_node (static mode); log: $OUT/roslaunch.log"
# Own process group (setsid), so cleanup stops roslaunch and every node it started.
setsid roslaunch -p "$PORT" dream_ros demo.launch "${GUI_ARGS[@]}" "${MODEL_ARG[@]}" $DEMO_ARGS \
  > "$OUT/roslaunch.log" 2>&1 &
LAUNCH_PID=$!

rc=0
python -m dream_ros.ros.demo_monitor --out "$OUT" --timeout "${DEMO_TIMEOUT:-110}" \
  --watch-pid "$LAUNCH_PID" \
  ${DEMO_MAX_MM:+--max-translation-mm "$DEMO_MAX_MM"} \
  ${DEMO_MAX_DEG:+--max-rotation-deg "$DEMO_MAX_DEG"} || rc=$?
if [ $rc -ne 0 ] && [ $rc -ne 1 ]; then
  say "last lines of $OUT/roslaunch.log:"
  tail -25 "$OUT/roslaunch.log" | sed 's/^/  /'
fi
exit $rc
