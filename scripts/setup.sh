#!/usr/bin/env bash
# make setup: apt packages, the Python venv and the catkin workspace. Idempotent and quick on a
# second run: every step checks first and does nothing when already done.
set -eo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
VENV="$ROOT/.venv"
WS="$ROOT/.catkin_ws"
say() { printf '[setup] %s\n' "$*"; }

# 1. Debian packages (ROS 1 from Debian's archive; Mesa for offscreen MuJoCo rendering).
mapfile -t APT_PKGS < <(grep -v '^\s*#' scripts/apt-packages.txt | grep -v '^\s*$')
missing=$(dpkg-query -W -f='${Package} ${Status}\n' "${APT_PKGS[@]}" 2>&1 | grep -v ' installed$' | awk '{print $1}' || true)
if [ -n "$missing" ]; then
  say "installing Debian packages: $(echo $missing | tr '\n' ' ')"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${APT_PKGS[@]}"
else
  say "Debian packages present"
fi

# 2. The venv over /usr/bin/python3 (system site packages: rospy, tf2_ros, cv_bridge).
if [ ! -x "$VENV/bin/python" ]; then
  say "creating $VENV"
  /usr/bin/python3 -m venv --system-site-packages "$VENV"
fi
REQ_HASH=$(cat requirements.txt requirements-torch.txt | sha256sum | cut -c1-16)
if [ "$(cat "$VENV/.requirements-hash" 2>/dev/null)" != "$REQ_HASH" ]; then
  say "installing Python requirements"
  # A user who already has a torch build (e.g. CUDA) in the venv keeps it.
  if ! "$VENV/bin/python" -c "import torch" 2>/dev/null; then
    "$VENV/bin/pip" install -q -r requirements-torch.txt 2> >(grep -v "is ignored: it is neither" >&2)
  fi
  "$VENV/bin/pip" install -q -r requirements.txt 2> >(grep -v "is ignored: it is neither" >&2)
  echo "$REQ_HASH" > "$VENV/.requirements-hash"
else
  say "Python requirements present"
fi

# The `dream` console command (catkin's devel space installs no entry points).
if [ ! -x "$VENV/bin/dream" ]; then
  printf '#!/usr/bin/env bash\nexec "%s/bin/python" -m dream_ros "$@"\n' "$VENV" > "$VENV/bin/dream"
  chmod +x "$VENV/bin/dream"
fi

# 3. The catkin workspace (git-ignored) holding this package; messages generated for Python only.
# The package folder holds one link per top-level entry of the repo, not a link to the repo itself:
# the repo contains .catkin_ws, and a link back to it makes a file-system loop that breaks rosrun.
PKG="$WS/src/dream_ros"
if [ -L "$PKG" ]; then rm -f "$PKG"; rm -rf "$WS/build" "$WS/devel"; fi
mkdir -p "$PKG"
for entry in "$ROOT"/*; do
  name=$(basename "$entry")
  case "$name" in out|runs|data) continue ;; esac
  [ "$(readlink "$PKG/$name" 2>/dev/null)" = "$entry" ] || ln -sfn "$entry" "$PKG/$name"
done
for link in "$PKG"/*; do [ -e "$link" ] || rm -f "$link"; done   # entries removed from the repo
source "$VENV/bin/activate"
cd "$WS"
# Rebuild only when the package's build inputs changed.
BUILD_HASH=$(cat "$ROOT"/CMakeLists.txt "$ROOT"/package.xml "$ROOT"/setup.py "$ROOT"/msg/* "$ROOT"/srv/* \
  <(ls "$ROOT"/nodes) | sha256sum | cut -c1-16)
if [ "$(cat "$WS/.build-hash" 2>/dev/null)" != "$BUILD_HASH" ] || [ ! -f "$WS/devel/setup.bash" ]; then
  say "building catkin workspace $WS"
  rm -rf "$WS/build"
  ROS_LANG_DISABLE=genlisp:gencpp:geneus:gennodejs catkin_make \
    -DPYTHON_EXECUTABLE="$VENV/bin/python" -DCMAKE_BUILD_TYPE=Release > "$WS/build.log" 2>&1 \
    || { tail -40 "$WS/build.log"; exit 1; }
  echo "$BUILD_HASH" > "$WS/.build-hash"
else
  say "catkin workspace up to date"
fi
say "done. Use: source scripts/env.sh"
