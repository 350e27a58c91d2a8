#!/usr/bin/env bash
# docs/rviz.png: sim_camera + dream_node (static mode) + rviz under Xvfb: TF (keypoint link frames
# and the calibrated camera), the RobotModel and dream_node's ~overlay (detections, keypoints
# reprojected with the estimate, keypoint frame axes). Waits for convergence (or WAIT_S), then
# takes the screenshot.  Usage: scripts/rviz_screenshot.sh [out.png]
# Environment: MODEL (model file; default the shipped one), WAIT_S (max wait for convergence, 120).
set -eo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
source scripts/env.sh
OUT="$(realpath -m "${1:-docs/rviz.png}")"; shift || true
WORK=$(mktemp -d /tmp/dream_rviz.XXXX)
export ROS_HOME="$WORK/ros_home" ROS_LOG_DIR="$WORK/ros_home/log"
mkdir -p "$ROS_LOG_DIR"
PORT=$(python -c "import socket; s=socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])")
export ROS_MASTER_URI="http://localhost:$PORT"
DISPLAY_NUM=$(( (PORT % 400) + 100 ))
export DISPLAY=":$DISPLAY_NUM"
# rviz's RobotModel: the URDF with its package:// mesh URIs made absolute (rospack does not find
# pip-installed description packages reliably).
URDF_FILE="$WORK/robot.urdf"
python - "$URDF_FILE" <<'PY'
import re, sys
from dream_ros.resources import resolve_uri
from dream_ros.robot_config import load_robot_config
text = load_robot_config("panda").urdf_path.read_text()
text = re.sub(r'filename="(package://[^"]+)"',
              lambda m: 'filename="file://%s"' % resolve_uri(m.group(1)), text)
open(sys.argv[1], "w").write(text)
PY
MODEL_ARG=()
[ -n "$MODEL" ] && MODEL_ARG=("model:=$(realpath "$MODEL")")

# Our own composition (not demo.launch): static mode with publish_unconverged, so the camera frame
# shows in TF even while a weak model is still converging; rviz without the Displays panel so the
# overlay image gets the left dock.
python - "$WORK" <<'PY'
import sys, yaml
work = sys.argv[1]
params = yaml.safe_load(open("config/dream_node.yaml"))
params["publish_unconverged"] = True
yaml.safe_dump(params, open(work + "/params.yaml", "w"))
rviz = yaml.safe_load(open("config/dream.rviz"))
rviz["Panels"] = [p for p in rviz["Panels"] if p.get("Class") != "rviz/Displays"]
yaml.safe_dump(rviz, open(work + "/shot.rviz", "w"))
open(work + "/shot.launch", "w").write("""<launch>
  <arg name="model" default=""/>
  <include file="$(find dream_ros)/launch/sim_camera.launch">
    <arg name="rate" value="4"/>
    <arg name="camera_position" value="[1.3, 0.6, 0.8]"/>
    <arg name="look_at" value="[0.1, 0.0, 0.45]"/>
  </include>
  <include file="$(find dream_ros)/launch/dream.launch">
    <arg name="model" value="$(arg model)"/>
    <arg name="mode" value="static"/>
    <arg name="image" value="/sim_camera/image_raw"/>
    <arg name="camera_info" value="/sim_camera/camera_info"/>
    <arg name="params" value="%s/params.yaml"/>
  </include>
  <param name="robot_description" textfile="%s/robot.urdf"/>
  <node pkg="robot_state_publisher" type="robot_state_publisher" name="robot_state_publisher"/>
  <node pkg="rviz" type="rviz" name="rviz" args="-d %s/shot.rviz"/>
</launch>
""" % (work, work, work))
PY
Xvfb "$DISPLAY" -screen 0 1280x900x24 >"$WORK/xvfb.log" 2>&1 & XPID=$!
setsid roslaunch -p "$PORT" "$WORK/shot.launch" "${MODEL_ARG[@]}" "$@" >"$WORK/launch.log" 2>&1 & LPID=$!
cleanup() { kill -INT -- -"$LPID" 2>/dev/null || true; sleep 2; kill -KILL -- -"$LPID" 2>/dev/null || true
            kill "$XPID" 2>/dev/null || true; }
trap cleanup EXIT
# Converged? (~pose status), then give rviz a few frames to draw.
python - "${WAIT_S:-120}" <<'PY'
import sys, time, rospy
from dream_ros.msg import PoseEstimate
import rosgraph
deadline = time.time() + float(sys.argv[1])
while not rosgraph.is_master_online():
    if time.time() > deadline + 60:
        sys.exit("no master")
    time.sleep(1)
rospy.init_node("rviz_screenshot_wait", anonymous=True)
got = []
rospy.Subscriber("/dream_node/pose", PoseEstimate, lambda m: got.append(m.status))
while time.time() < deadline and "converged" not in got:
    time.sleep(0.5)
print("last status:", got[-1] if got else "none", file=sys.stderr)
PY
sleep 6
import -display "$DISPLAY" -window root "$OUT.tmp.png"
/usr/bin/convert "$OUT.tmp.png" -trim +repage "$OUT"
rm -f "$OUT.tmp.png"
echo "wrote $OUT (logs in $WORK)"
