# Source me: activates .venv and the catkin workspace (works without `set -u`, see ROS gotchas).
_DREAM_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$_DREAM_ROOT/.venv/bin/activate"
if [ -f "$_DREAM_ROOT/.catkin_ws/devel/setup.bash" ]; then
  source "$_DREAM_ROOT/.catkin_ws/devel/setup.bash"
fi
# The venv's python first on PATH: a pyenv python3 without rospy may shadow /usr/bin/python3.
export PATH="$_DREAM_ROOT/.venv/bin:$PATH"
export ROS_HOME="${ROS_HOME:-$_DREAM_ROOT/.catkin_ws/.ros_home}"
export ROS_LOG_DIR="${ROS_LOG_DIR:-$ROS_HOME/log}"
export ROS_HOSTNAME="${ROS_HOSTNAME:-localhost}"
export NO_ALBUMENTATIONS_UPDATE=1
export MUJOCO_GL="${MUJOCO_GL:-egl}"
export PYTHONDONTWRITEBYTECODE=1
mkdir -p "$ROS_LOG_DIR"
